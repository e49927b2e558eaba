#!/usr/bin/env python3
"""Ask SERVER for NAME (type A) over UDP, one query at a time, until STOPFILE exists.

usage: dnsloop.py SERVER NAME EXPECTED_IP STOPFILE
Prints "sent answered lost wrong". A query is lost when no answer with its id comes within 2 s.
"""
import os
import random
import socket
import struct
import sys

server, name, expected, stopfile = sys.argv[1:5]
qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2.0)
sent = answered = lost = wrong = 0
while not os.path.exists(stopfile) or sent == 0:
    qid = random.randrange(65536)
    s.sendto(struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + b"\0\1\0\1", (server, 53))
    sent += 1
    while True:
        try:
            data = s.recv(4096)
        except socket.timeout:
            lost += 1
            break
        if len(data) < 12 or struct.unpack(">H", data[:2])[0] != qid:
            continue
        answered += 1
        if socket.inet_aton(expected) not in data:
            wrong += 1
        break
print(sent, answered, lost, wrong)
