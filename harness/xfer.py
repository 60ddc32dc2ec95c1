"""Checksummed bulk transfers between a guest and its peer (the e2e network tests).

    xfer.py connect PEER PORT N   send N random bytes to PEER:PORT, then receive what the
                                  peer sends on a second connection; prints `guest-sent` and
                                  `guest-recv` lines
    xfer.py serve ADDR PORT N     on ADDR:PORT, receive one connection's bytes, then send N
                                  random bytes on the next; prints `peer-recv` and `peer-sent`

Each line reads `NAME bytes=B sha256=H secs=S`; the test compares the two ends' checksums.
"""
import hashlib
import os
import socket
import sys
import time

CHUNK = 1 << 20


def send(sock, n):
    h, left = hashlib.sha256(), n
    while left:
        b = os.urandom(min(left, CHUNK))
        h.update(b)
        sock.sendall(b)
        left -= len(b)
    return h


def receive(sock):
    h, got = hashlib.sha256(), 0
    while True:
        b = sock.recv(CHUNK)
        if not b:
            return h, got
        h.update(b)
        got += len(b)


def report(name, n, h, t):
    print(f"{name} bytes={n} sha256={h.hexdigest()} secs={time.time() - t:.3f}", flush=True)


def connect(peer, port, n):
    def dial():
        for _ in range(100):
            try:
                return socket.create_connection((peer, port), timeout=120)
            except OSError:
                time.sleep(0.2)
        raise SystemExit("cannot connect to the peer")

    s, t = dial(), time.time()
    h = send(s, n)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    s.close()
    report("guest-sent", n, h, t)
    s, t = dial(), time.time()
    h, got = receive(s)
    s.close()
    report("guest-recv", got, h, t)


def serve(addr, port, n):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port))
    ls.listen(2)
    ls.settimeout(600)
    c, _ = ls.accept()
    c.settimeout(120)
    t = time.time()
    h, got = receive(c)
    c.close()
    report("peer-recv", got, h, t)
    c, _ = ls.accept()
    c.settimeout(120)
    t = time.time()
    h = send(c, n)
    c.close()
    report("peer-sent", n, h, t)


if __name__ == "__main__":
    mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    {"connect": connect, "serve": serve}[mode](host, port, n)
