#!/usr/bin/env python3
"""AF_VSOCK tools for the guest (the PCIe host) in the vsock end-to-end tests and benchmark.

  send PORT FILE            connect to CID 2 PORT, send FILE, shut down writing, read to EOF
  recv PORT TAG             listen on PORT, touch TAG.listening, accept one, read to EOF;
                            the bytes' sha256 goes to TAG.sha256
  echo-many N PORT BYTES    N concurrent connections to CID 2 PORT, each sends BYTES bytes of
                            its own pattern, shuts down writing and expects them echoed back
  half PORT FILE BYTES      connect, send the first BYTES of FILE, then close abruptly
  hold PORT TAG             connect, touch TAG.connected, read until the connection ends;
                            prints "reset" (ECONNRESET or ENOTCONN) or "eof"
  rr PORT COUNT SIZE        COUNT round trips of SIZE bytes; prints microseconds per round trip
  stream-recv PORT TAG      listen, touch TAG.listening, accept one, read to EOF; prints MB/s
  stream-send PORT SECONDS  connect to CID 2 PORT, write for SECONDS; prints MB/s
PORT may also be IP:PORT: the same over TCP (the comparison with virtio-net in
bench/vsock.sh). Exit status 0 only if everything checked out.
"""
import errno
import hashlib
import os
import socket
import sys
import threading
import time

HOST = 2  # VMADDR_CID_HOST: the endpoint


def parse(port):
    """(family, address to connect to, address to listen on) of PORT or IP:PORT."""
    if ":" in str(port):
        ip, p = str(port).rsplit(":", 1)
        return socket.AF_INET, (ip, int(p)), ("0.0.0.0", int(p))
    return socket.AF_VSOCK, (HOST, int(port)), (socket.VMADDR_CID_ANY, int(port))


def connect(port):
    fam, addr, _ = parse(port)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(600)
    s.connect(addr)
    if fam == socket.AF_INET:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def listen(port):
    fam, _, addr = parse(port)
    l = socket.socket(fam, socket.SOCK_STREAM)
    if fam == socket.AF_INET:
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(addr)
    l.listen(16)
    return l


def pattern(n, seed):
    out = bytearray()
    h = seed.to_bytes(8, "little")
    while len(out) < n:
        h = hashlib.sha256(h).digest()
        out += h
    return bytes(out[:n])


def read_to_eof(s, sink=None):
    total = 0
    while True:
        b = s.recv(1 << 16)
        if not b:
            return total
        total += len(b)
        if sink is not None:
            sink(b)


def send(port, path):
    s = connect(port)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 16)
            if not b:
                break
            s.sendall(b)
            h.update(b)
    s.shutdown(socket.SHUT_WR)
    read_to_eof(s)
    s.close()
    print(f"sent {os.path.getsize(path)} bytes sha256 {h.hexdigest()}")


def recv(port, tag):
    l = listen(port)
    open(tag + ".listening", "w").close()
    c, peer = l.accept()
    c.settimeout(600)
    h = hashlib.sha256()
    n = read_to_eof(c, h.update)
    c.close()
    with open(tag + ".sha256", "w") as f:
        f.write(h.hexdigest() + "\n")
    print(f"received {n} bytes from {peer} sha256 {h.hexdigest()}")


def echo_many(n, port, size):
    errors = []

    def one(i):
        try:
            data = pattern(size, i)
            s = connect(port)
            got = bytearray()
            t = threading.Thread(target=lambda: read_to_eof(s, got.extend))
            t.start()
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            t.join()
            s.close()
            if bytes(got) != data:
                errors.append(f"connection {i}: {len(got)} bytes back, differ")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"connection {i}: {e!r}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        print(e)
    print(f"{n - len(errors)} of {n} connections echoed {size} bytes")
    sys.exit(1 if errors else 0)


def half(port, path, nbytes):
    s = connect(port)
    with open(path, "rb") as f:
        s.sendall(f.read(nbytes))
    s.close()
    print(f"sent {nbytes} bytes then closed")


def hold(port, tag):
    s = connect(port)
    open(tag + ".connected", "w").close()
    try:
        read_to_eof(s)
        print("eof")
    except ConnectionResetError:
        print("reset")
    except OSError as e:
        # After a TRANSPORT_RESET Linux marks the socket unconnected: ENOTCONN.
        if e.errno != errno.ENOTCONN:
            raise
        print("reset")


def rr(port, count, size):
    s = connect(port)
    msg = b"x" * size
    t = time.monotonic()
    for _ in range(count):
        s.sendall(msg)
        got = 0
        while got < size:
            b = s.recv(size - got)
            if not b:
                sys.exit("peer closed")
            got += len(b)
    dt = time.monotonic() - t
    s.close()
    print(f"rr {count} x {size} B: {dt / count * 1e6:.1f} us per round trip")
    print(f"RESULT rr_us={dt / count * 1e6:.1f}")


def stream_send(port, seconds):
    s = connect(port)
    buf = b"\0" * (1 << 16)
    n = 0
    t = time.monotonic()
    while time.monotonic() - t < seconds:
        s.sendall(buf)
        n += len(buf)
    dt = time.monotonic() - t
    s.close()
    print(f"stream-send {n} bytes in {dt:.2f} s: {n / dt / 1e6:.1f} MB/s")
    print(f"RESULT send_mbs={n / dt / 1e6:.1f}")


def stream_recv(port, out):
    l = listen(port)
    open(out + ".listening", "w").close()
    c, _ = l.accept()
    t = time.monotonic()
    n = read_to_eof(c)
    dt = time.monotonic() - t
    print(f"stream-recv {n} bytes in {dt:.2f} s: {n / dt / 1e6:.1f} MB/s")
    print(f"RESULT recv_mbs={n / dt / 1e6:.1f}")


def main():
    a = sys.argv[1:]
    cmd = a[0] if a else ""
    if cmd == "send":
        send(a[1], a[2])
    elif cmd == "recv":
        recv(a[1], a[2])
    elif cmd == "echo-many":
        echo_many(int(a[1]), a[2], int(a[3]))
    elif cmd == "half":
        half(a[1], a[2], int(a[3]))
    elif cmd == "hold":
        hold(a[1], a[2])
    elif cmd == "rr":
        rr(a[1], int(a[2]), int(a[3]))
    elif cmd == "stream-send":
        stream_send(a[1], float(a[2]))
    elif cmd == "stream-recv":
        stream_recv(a[1], a[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
