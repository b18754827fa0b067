#!/usr/bin/env python3
"""A one-name DNS server for deploy/image-test.sh: answers A queries for NAME with 127.0.0.1 and
NXDOMAIN for everything else, on 127.0.0.1:PORT (UDP). Usage: fake-dns.py NAME PORTFILE"""
import socket
import struct
import sys

name = sys.argv[1].rstrip(".").lower()
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
with open(sys.argv[2], "w") as f:
    f.write(str(sock.getsockname()[1]))
while True:
    data, peer = sock.recvfrom(1500)
    if len(data) < 12:
        continue
    ident, flags, qdcount = struct.unpack("!HHH", data[:6])
    labels, i = [], 12
    while i < len(data) and data[i] != 0:
        n = data[i]
        labels.append(data[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    question = data[12:i + 5]
    qtype = struct.unpack("!H", data[i + 1:i + 3])[0] if i + 3 <= len(data) else 0
    found = ".".join(labels).lower() == name
    rcode = 0 if found else 3
    answers = b""
    if found and qtype == 1:
        answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
    header = struct.pack("!HHHHHH", ident, 0x8180 | rcode | (flags & 0x0100), 1,
                         1 if answers else 0, 0, 0)
    sock.sendto(header + question + answers, peer)
