#!/usr/bin/env python3
"""VNC probe of bench/gpu.sh: one RFB 3.8 viewer (Raw encoding, 32-bit native pixels) per
server, plus a tail of the guest's serial console. Every time the top-left pixel of a server's
screen changes, the viewer records (host time, colour); every `MARK name i colour` / `START
name` / `STOP name` line the guest prints on its console is recorded with the host time it
appeared. At the end (the console prints `BENCH-DONE`) it prints, per server, the full-screen
updates per second the viewer received between START and STOP, and the latency from each
MARK to the first update showing that colour (median, p90, max).

Usage: gpu_probe.py CONSOLE_LOG NAME=HOST:PORT [NAME=HOST:PORT ...]
"""
import socket, struct, sys, threading, time

def recv_exact(s, n, buf=None):
    view = memoryview(bytearray(n)) if buf is None else buf[:n]
    got = 0
    while got < n:
        k = s.recv_into(view[got:], n - got)
        if k == 0:
            raise EOFError("server closed")
        got += k
    return view

def viewer(name, host, port, events, stop):
    deadline = time.time() + 120
    while True:
        try:
            s = socket.create_connection((host, port))
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    recv_exact(s, 12)
    s.sendall(b"RFB 003.008\n")
    n = recv_exact(s, 1)[0]
    types = bytes(recv_exact(s, n))
    assert 1 in types, f"{name}: no security type None ({list(types)})"
    s.sendall(b"\x01")
    assert bytes(recv_exact(s, 4)) == b"\0\0\0\0", f"{name}: security failed"
    s.sendall(b"\x01")
    init = bytes(recv_exact(s, 24))
    w, h = struct.unpack(">HH", init[:4])
    recv_exact(s, struct.unpack(">I", init[20:24])[0])
    # 32 bpp, depth 24, little-endian, true colour, 0x00RRGGBB.
    pf = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
    s.sendall(b"\x00\x00\x00\x00" + pf)
    s.sendall(struct.pack(">BBHi", 2, 0, 1, 0))  # Raw only
    req = lambda inc: s.sendall(struct.pack(">BBHHHH", 3, inc, 0, 0, w, h))
    req(0)
    big = memoryview(bytearray(w * h * 4))
    last = None
    while not stop.is_set():
        hdr = bytes(recv_exact(s, 4))
        if hdr[0] != 0:
            raise RuntimeError(f"{name}: unexpected server message {hdr[0]}")
        t = time.time()
        (nrects,) = struct.unpack(">H", hdr[2:4])
        for _ in range(nrects):
            x, y, rw, rh, enc = struct.unpack(">HHHHi", bytes(recv_exact(s, 12)))
            if enc == 0:
                data = recv_exact(s, rw * rh * 4, big)
                if x == 0 and y == 0 and rw and rh:
                    px = bytes(data[:4])
                    colour = px[2] << 16 | px[1] << 8 | px[0]
                    if colour != last:
                        events.append((t, name, "pixel", colour))
                        last = colour
            elif enc == -223:
                w, h = rw, rh
                big = memoryview(bytearray(w * h * 4))
            else:
                raise RuntimeError(f"{name}: unexpected encoding {enc}")
        req(1)

def console(path, events, stop):
    pos = 0
    partial = b""
    while not stop.is_set():
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read()
        except FileNotFoundError:
            data = b""
        if data:
            t = time.time()
            pos += len(data)
            partial += data
            *lines, partial = partial.split(b"\n")
            for l in lines:
                l = l.decode(errors="replace").strip()
                if l.startswith(("MARK ", "START ", "STOP ")):
                    events.append((t, l.split()[1], *l.split()[0:1], l))
                if l.startswith("BENCH-DONE"):
                    stop.set()
        time.sleep(0.0005)

def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]

def main():
    path, servers = sys.argv[1], sys.argv[2:]
    events, stop = [], threading.Event()
    threads = [threading.Thread(target=console, args=(path, events, stop), daemon=True)]
    for s in servers:
        name, addr = s.split("=")
        host, port = addr.rsplit(":", 1)
        threads.append(threading.Thread(target=viewer, args=(name, host, int(port), events, stop), daemon=True))
    for t in threads:
        t.start()
    threads[0].join()
    events.sort(key=lambda e: e[0])
    for s in servers:
        name = s.split("=")[0]
        ev = [e for e in events if e[1] == name]
        start = next((e[0] for e in ev if e[2] == "START"), None)
        end = next((e[0] for e in ev if e[2] == "STOP"), None)
        pixels = [e for e in ev if e[2] == "pixel"]
        ups = None
        if start and end:
            n = sum(1 for e in pixels if start <= e[0] <= end)
            ups = n / (end - start)
        lat = []
        for e in ev:
            if e[2] != "MARK":
                continue
            colour = int(e[3].split()[3], 16)
            hit = next((p[0] for p in pixels if p[0] >= e[0] and p[3] == colour), None)
            if hit is not None:
                lat.append((hit - e[0]) * 1000)
        marks = sum(1 for e in ev if e[2] == "MARK")
        print(f"{name} updates_per_s={ups:.1f}" if ups is not None else f"{name} updates_per_s=n/a", end=" ")
        if lat:
            print(f"latency_ms_median={pct(lat, 50):.1f} latency_ms_p90={pct(lat, 90):.1f} "
                  f"latency_ms_max={max(lat):.1f} marks={marks} seen={len(lat)}")
        else:
            print(f"latency=n/a marks={marks} seen=0")

main()
