#!/usr/bin/env python3
"""Endpoint-side peers for bench/vsock.sh: the same services over a Unix socket (what
`virtio-epf vsock` connects host connections to) and over TCP (the virtio-net comparison).

  serve echo|sink ADDR     serve ADDR until killed: echo every byte back, or discard them
  source ADDR SECONDS      connect to ADDR, write zeros for SECONDS, close
ADDR: unix:PATH (listen or connect there), uds:PATH:PORT (connect to the vsock device's
socket PATH and ask for host port PORT with `CONNECT PORT`), or tcp:IP:PORT.
"""
import os
import socket
import sys
import threading
import time


def open_listener(addr):
    kind, rest = addr.split(":", 1)
    if kind == "unix":
        if os.path.exists(rest):
            os.unlink(rest)
        l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        l.bind(rest)
    elif kind == "tcp":
        ip, port = rest.rsplit(":", 1)
        l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind((ip, int(port)))
    else:
        sys.exit(f"cannot listen on {addr}")
    l.listen(64)
    return l


def open_conn(addr):
    kind, rest = addr.split(":", 1)
    if kind == "tcp":
        ip, port = rest.rsplit(":", 1)
        s = socket.create_connection((ip, int(port)), timeout=60)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s
    if kind == "uds":
        path, port = rest.rsplit(":", 1)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(f"CONNECT {port}\n".encode())
        line = b""
        while not line.endswith(b"\n"):
            b = s.recv(1)
            if not b:
                sys.exit("vsock device closed the connection")
            line += b
        if not line.startswith(b"OK "):
            sys.exit(f"CONNECT {port}: {line!r}")
        return s
    sys.exit(f"cannot connect to {addr}")


def handle(kind, c):
    if isinstance(c.getsockname(), tuple):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        b = c.recv(1 << 16)
        if not b:
            break
        if kind == "echo":
            c.sendall(b)
    c.close()


def serve(kind, addr):
    l = open_listener(addr)
    while True:
        c, _ = l.accept()
        threading.Thread(target=handle, args=(kind, c), daemon=True).start()


def source(addr, seconds):
    s = open_conn(addr)
    buf = b"\0" * (1 << 16)
    t = time.monotonic()
    n = 0
    while time.monotonic() - t < seconds:
        s.sendall(buf)
        n += len(buf)
    s.close()
    print(f"source {n} bytes in {time.monotonic() - t:.2f} s")


def main():
    a = sys.argv[1:]
    if a[:1] == ["serve"] and len(a) == 3:
        serve(a[1], a[2])
    elif a[:1] == ["source"] and len(a) == 3:
        source(a[1], float(a[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
