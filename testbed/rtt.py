#!/usr/bin/env python3
"""Round trips of one request at a time, INTERVAL seconds apart, COUNT of them; prints each
one's time in ms on a line of its own (a lost one prints nothing).

usage: rtt.py dns SERVER NAME COUNT INTERVAL      a DNS A query for NAME over UDP to SERVER:53,
                                                  timed until its answer (any rcode)
       rtt.py connect HOST PORT COUNT INTERVAL    a TCP connect to HOST:PORT, timed until the
                                                  handshake completes (then closed)
       rtt.py serve HOST PORT                     accepts and closes connections until killed
"""
import random
import socket
import struct
import sys
import time


def dns(server, name, count, interval):
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    for _ in range(count):
        qid = random.randrange(65536)
        query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + b"\0\1\0\1"
        t0 = time.perf_counter()
        s.sendto(query, (server, 53))
        try:
            while True:
                data = s.recv(4096)
                if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid:
                    print("%.3f" % ((time.perf_counter() - t0) * 1000))
                    break
        except socket.timeout:
            pass
        time.sleep(interval)


def connect(host, port, count, interval):
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(1.0)
        t0 = time.perf_counter()
        try:
            s.connect((host, port))
            print("%.3f" % ((time.perf_counter() - t0) * 1000))
        except OSError:
            pass
        s.close()
        time.sleep(interval)


def serve(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(128)
    while True:
        c, _ = s.accept()
        c.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    if len(sys.argv) != 6 or sys.argv[1] not in ("dns", "connect"):
        sys.exit(__doc__)
    kind, a, b, count, interval = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    if kind == "dns":
        dns(a, b, count, interval)
    else:
        connect(a, int(b), count, interval)
    sys.stdout.flush()
