#!/usr/bin/env python3
"""Send COUNT Ethernet frames out of IFACE, each from a distinct source MAC (a MAC-table flood).

usage: flood.py [--blast] IFACE COUNT [DST_MAC]   (run inside a container namespace, as root)

Frames go in chunks; a chunk during which the interface counted a transmit drop (the switch
did not read fast enough and the kernel's queue overflowed) is sent again, so every one of the
COUNT source MACs reaches the switch at least once. Prints COUNT and the frames sent in all.
With --blast, as an attacker would: every frame is sent once, as fast as the socket takes it,
whatever the interface drops; prints COUNT and the transmit drops the interface counted.
"""
import socket
import struct
import sys
import time

args = sys.argv[1:]
blast = "--blast" in args
args = [a for a in args if a != "--blast"]
iface, count = args[0], int(args[1])
dst = bytes.fromhex(args[2].replace(":", "")) if len(args) > 2 else bytes.fromhex("020000000001")
CHUNK = 256


def tx_dropped():
    with open(f"/sys/class/net/{iface}/statistics/tx_dropped") as f:
        return int(f.read())


s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
payload = b"vswitch-flood".ljust(46, b"\0")
frames = [dst + b"\x02\xf1" + struct.pack(">I", i) + b"\x88\xb5" + payload for i in range(count)]
sent = 0
if blast:
    before = tx_dropped()
    for frame in frames:
        try:
            s.send(frame)
        except OSError as e:
            if e.errno != 105:
                raise
    print(count, tx_dropped() - before)
    sys.exit(0)
for start in range(0, count, CHUNK):
    for attempt in range(2000):
        if attempt:
            time.sleep(0.002)  # the switch is behind: let it drain the queue
        before = tx_dropped()
        for frame in frames[start:start + CHUNK]:
            while True:
                try:
                    s.send(frame)
                    sent += 1
                    break
                except OSError as e:  # ENOBUFS: the qdisc is full; try again
                    if e.errno != 105:
                        raise
        if tx_dropped() == before:
            break
    else:
        sys.exit(f"chunk at {start} kept being dropped")
print(count, sent)
