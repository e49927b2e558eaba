#!/usr/bin/env python3
"""Send COUNT Ethernet frames out of IFACE, each from a distinct source MAC (a MAC-table flood).

usage: flood.py IFACE COUNT [DST_MAC]   (run inside a container namespace, as root)
"""
import socket
import struct
import sys

iface, count = sys.argv[1], int(sys.argv[2])
dst = bytes.fromhex(sys.argv[3].replace(":", "")) if len(sys.argv) > 3 else bytes.fromhex("020000000001")
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
payload = b"vswitch-flood".ljust(46, b"\0")
sent = 0
for i in range(count):
    src = b"\x02\xf1" + struct.pack(">I", i)
    while True:
        try:
            s.send(dst + src + b"\x88\xb5" + payload)
            break
        except BlockingIOError:
            pass
        except OSError as e:  # ENOBUFS: the qdisc is full; try again
            if e.errno != 105:
                raise
    sent += 1
print(sent)
