//! Unit tests of the connection table against real Unix sockets: both connection
//! directions, flow control, shutdown, and hostile headers (every one answered with RST or
//! dropped, none taking the device down), with the bounds on what is kept.

use super::header::*;
use super::muxer::{Muxer, MuxerConfig, MAX_PENDING_RST};
use super::stats::VsockCounters;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CID: u64 = 3;
const ROOM: usize = 4096;

struct T {
    dir: PathBuf,
    m: Muxer,
    counters: Arc<VsockCounters>,
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vsock-unit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl T {
    fn new(name: &str, max_conns: usize, conn_buf: u32) -> T {
        let dir = scratch(name);
        let counters = Arc::new(VsockCounters::default());
        let m = Muxer::new(
            MuxerConfig {
                guest_cid: CID,
                uds_path: dir.join("v.sock"),
                conn_buf,
                max_conns,
                connect_timeout: Duration::from_millis(300),
            },
            counters.clone(),
        )
        .unwrap();
        T { dir, m, counters }
    }

    fn listen(&self, port: u32) -> UnixListener {
        UnixListener::bind(self.dir.join(format!("v.sock_{port}"))).unwrap()
    }

    fn host(&mut self, h: Header, payload: &[u8]) {
        self.m.host_packet(&h, payload.len(), payload);
    }

    /// Everything the muxer has for the host right now.
    fn drain(&mut self) -> Vec<(Header, Vec<u8>)> {
        self.m.service();
        let mut out = Vec::new();
        let mut buf = vec![0u8; MAX_PAYLOAD as usize];
        while let Some(h) = self.m.next_for_host(ROOM, &mut buf) {
            out.push((h, buf[..h.len as usize].to_vec()));
        }
        out
    }

    /// Waits (up to 5 s, servicing the sockets) for a packet matching `pred`; returns it and
    /// everything before it.
    fn wait_for(&mut self, pred: impl Fn(&Header) -> bool) -> Vec<(Header, Vec<u8>)> {
        let t = Instant::now();
        let mut seen = Vec::new();
        loop {
            let got = self.drain();
            let hit = got.iter().any(|(h, _)| pred(h));
            seen.extend(got);
            if hit {
                return seen;
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "no such packet; saw {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn count(&self, f: impl Fn(&VsockCounters) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.counters).load(Ordering::Relaxed)
    }
}

/// A header from the host (port `src`) to the endpoint (port `dst`).
fn from_host(op: u16, src: u32, dst: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: ENDPOINT_CID,
        src_port: src,
        dst_port: dst,
        ty: TYPE_STREAM,
        op,
        buf_alloc: 65536,
        ..Header::default()
    }
}

fn rw(src: u32, dst: u32, data: &[u8]) -> Header {
    Header {
        len: data.len() as u32,
        ..from_host(OP_RW, src, dst)
    }
}

fn is(op: u16, src: u32, dst: u32) -> impl Fn(&Header) -> bool {
    move |h| h.op == op && h.src_port == src && h.dst_port == dst
}

/// Opens host port 1000 -> endpoint port 5000 and accepts it at the service.
fn host_connect(t: &mut T, l: &UnixListener) -> UnixStream {
    t.host(from_host(OP_REQUEST, 1000, 5000), &[]);
    let (s, _) = l.accept().unwrap();
    let p = t.drain();
    assert_eq!(p.len(), 1, "{p:?}");
    let h = p[0].0;
    assert!(is(OP_RESPONSE, 5000, 1000)(&h), "{h:?}");
    assert_eq!(
        (h.src_cid, h.dst_cid, h.ty),
        (ENDPOINT_CID, CID, TYPE_STREAM)
    );
    s
}

#[test]
fn host_connects_sends_and_closes() {
    let mut t = T::new("host-connect", 16, 256 * 1024);
    let l = t.listen(5000);
    let mut s = host_connect(&mut t, &l);
    let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    for chunk in data.chunks(4096) {
        t.host(rw(1000, 5000, chunk), chunk);
    }
    let mut got = vec![0u8; data.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, data);
    // 100 000 bytes forwarded of 256 KiB: more than a quarter, so the host hears of it.
    let p = t.drain();
    assert!(
        p.iter()
            .any(|(h, _)| h.op == OP_CREDIT_UPDATE && h.fwd_cnt == 100_000),
        "{p:?}"
    );
    // The host asks for credit: it gets it.
    t.host(from_host(OP_CREDIT_REQUEST, 1000, 5000), &[]);
    let p = t.drain();
    assert!(is(OP_CREDIT_UPDATE, 5000, 1000)(&p[0].0), "{p:?}");
    // The endpoint answers; the host reads it.
    s.write_all(b"pong").unwrap();
    let p = t.wait_for(is(OP_RW, 5000, 1000));
    let (h, d) = p.last().unwrap();
    assert_eq!((h.len, d.as_slice()), (4, &b"pong"[..]));
    // The host closes both ways: the endpoint sees EOF and the host gets its RST.
    t.host(
        Header {
            flags: SHUTDOWN_BOTH,
            ..from_host(OP_SHUTDOWN, 1000, 5000)
        },
        &[],
    );
    let p = t.wait_for(is(OP_RST, 5000, 1000));
    assert_eq!(p.len(), 1, "{p:?}");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert_eq!(t.m.len(), 0);
    assert_eq!(t.count(|c| &c.to_endpoint_bytes), 100_000);
    assert_eq!(t.count(|c| &c.to_host_bytes), 4);
    assert_eq!(t.count(|c| &c.host_connects), 1);
    assert_eq!(t.count(|c| &c.protocol_errors), 0);
}

#[test]
fn endpoint_connects_with_a_connect_line_and_respects_host_credit() {
    let mut t = T::new("endpoint-connect", 16, 65536);
    let mut app = UnixStream::connect(t.dir.join("v.sock")).unwrap();
    // The line, with data right behind it: the data is not eaten by the line parser.
    app.write_all(b"CONNECT 7000\nhello").unwrap();
    let p = t.wait_for(|h| h.op == OP_REQUEST);
    let req = p.last().unwrap().0;
    assert_eq!((req.dst_port, req.dst_cid), (7000, CID));
    let local = req.src_port;
    // The host accepts with a 10-byte buffer.
    t.host(
        Header {
            buf_alloc: 10,
            ..from_host(OP_RESPONSE, 7000, local)
        },
        &[],
    );
    let mut line = [0u8; 64];
    let want = format!("OK {local}\n");
    app.read_exact(&mut line[..want.len()]).unwrap();
    assert_eq!(&line[..want.len()], want.as_bytes());
    app.write_all(b" world, more than ten bytes").unwrap();
    let p = t.wait_for(|h| h.op == OP_RW);
    let sent: usize = p.iter().map(|(h, _)| h.len as usize).sum();
    assert!(sent <= 10 && sent > 0, "{p:?}");
    // Out of credit: nothing more, a stall is counted and credit asked for.
    std::thread::sleep(Duration::from_millis(20));
    let p = t.drain();
    let more: usize = p
        .iter()
        .filter(|(h, _)| h.op == OP_RW)
        .map(|(h, _)| h.len as usize)
        .sum();
    assert_eq!(sent + more, 10, "{p:?}");
    assert!(t.count(|c| &c.stalls_to_host) >= 1);
    // The host consumed it all and grants more: the rest arrives, in order.
    t.host(
        Header {
            buf_alloc: 65536,
            fwd_cnt: 10,
            ..from_host(OP_CREDIT_UPDATE, 7000, local)
        },
        &[],
    );
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 32 - 10 && Instant::now() < deadline {
        for (h, d) in t.drain() {
            if h.op == OP_RW {
                got.extend(d);
            }
        }
    }
    // The first 10 bytes went before the update; the rest follows, in order, once.
    std::thread::sleep(Duration::from_millis(20));
    for (h, d) in t.drain() {
        if h.op == OP_RW {
            got.extend(d);
        }
    }
    assert_eq!(got, &b"hello world, more than ten bytes"[10..]);
    assert_eq!(t.count(|c| &c.endpoint_connects), 1);
}

#[test]
fn refused_and_unknown_connections_get_rst() {
    let mut t = T::new("refused", 1, 65536);
    // Nobody listens on port 5001.
    t.host(from_host(OP_REQUEST, 1000, 5001), &[]);
    let p = t.drain();
    assert!(is(OP_RST, 5001, 1000)(&p[0].0), "{p:?}");
    assert_eq!(t.count(|c| &c.refused), 1);
    // Data, shutdown and a response for connections that do not exist.
    t.host(rw(1000, 5002, b"x"), b"x");
    t.host(from_host(OP_SHUTDOWN, 1000, 5003), &[]);
    t.host(from_host(OP_RESPONSE, 1000, 5004), &[]);
    let p = t.drain();
    assert_eq!(p.len(), 3);
    assert!(p.iter().all(|(h, _)| h.op == OP_RST));
    // An RST is never answered.
    t.host(from_host(OP_RST, 1000, 5005), &[]);
    assert!(t.drain().is_empty());
    // One connection at most: the second is refused.
    let l = t.listen(5000);
    let _s = host_connect(&mut t, &l);
    t.host(from_host(OP_REQUEST, 1001, 5000), &[]);
    let p = t.drain();
    assert!(is(OP_RST, 5000, 1001)(&p[0].0), "{p:?}");
    assert_eq!(t.count(|c| &c.refused), 2);
}

#[test]
fn hostile_headers_are_reset_or_dropped_never_fatal() {
    let mut t = T::new("hostile", 16, 65536);
    let l = t.listen(5000);
    let s = host_connect(&mut t, &l);
    // A length beyond the chain: the connection it names is reset, its socket closed.
    let mut h = rw(1000, 5000, b"abc");
    h.len = 100;
    t.m.host_packet(&h, 3, b"abc");
    let p = t.drain();
    assert!(is(OP_RST, 5000, 1000)(&p[0].0), "{p:?}");
    assert_eq!(t.m.len(), 0);
    let mut rest = Vec::new();
    (&s).read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "no byte of the bad packet reached the endpoint"
    );
    let bad = [
        Header {
            op: 0,
            ..from_host(OP_RW, 1, 5000)
        },
        Header {
            op: 99,
            ..from_host(OP_RW, 2, 5000)
        },
        Header {
            ty: 2,
            ..from_host(OP_REQUEST, 3, 5000)
        },
        Header {
            len: 5,
            ..from_host(OP_REQUEST, 4, 5000)
        },
        Header {
            len: MAX_PAYLOAD + 1,
            ..from_host(OP_RW, 5, 5000)
        },
    ];
    for h in bad {
        t.m.host_packet(&h, usize::MAX, &[]);
    }
    let p = t.drain();
    assert_eq!(p.len(), 5, "{p:?}");
    assert!(p.iter().all(|(h, _)| h.op == OP_RST && h.dst_cid == CID));
    // A wrong CID is not ours to answer.
    t.host(
        Header {
            src_cid: 9,
            ..from_host(OP_REQUEST, 6, 5000)
        },
        &[],
    );
    t.host(
        Header {
            dst_cid: 9,
            ..from_host(OP_REQUEST, 7, 5000)
        },
        &[],
    );
    assert!(t.drain().is_empty());
    assert_eq!(t.count(|c| &c.bad_headers), 1 + 5 + 2);
    assert_eq!(t.m.len(), 0, "no connection was made by a bad header");
}

#[test]
fn protocol_violations_reset_the_connection() {
    let mut t = T::new("violations", 16, 4096);
    let l = t.listen(5000);
    // Credit overflow: more than the 4096 bytes advertised while the endpoint reads nothing.
    let s = host_connect(&mut t, &l);
    let big = vec![7u8; 4096];
    // Fill the socket's own buffer first so that our buffer fills.
    let mut sent = 0;
    let mut reset = false;
    for _ in 0..10_000 {
        t.host(rw(1000, 5000, &big), &big);
        sent += big.len();
        if t.drain().iter().any(|(h, _)| is(OP_RST, 5000, 1000)(h)) {
            reset = true;
            break;
        }
    }
    assert!(reset, "{sent} bytes past a 4096-byte credit were taken");
    assert!(t.count(|c| &c.stalls_to_endpoint) >= 1);
    assert!(t.count(|c| &c.protocol_errors) >= 1);
    drop(s);
    // A duplicate REQUEST resets the live connection.
    let _s = host_connect(&mut t, &l);
    t.host(from_host(OP_REQUEST, 1000, 5000), &[]);
    let p = t.drain();
    assert!(is(OP_RST, 5000, 1000)(&p[0].0), "{p:?}");
    assert_eq!(t.m.len(), 0);
    // fwd_cnt claiming bytes we never sent.
    let _s = host_connect(&mut t, &l);
    t.host(
        Header {
            fwd_cnt: 1,
            ..from_host(OP_CREDIT_UPDATE, 1000, 5000)
        },
        &[],
    );
    let p = t.drain();
    assert!(is(OP_RST, 5000, 1000)(&p[0].0), "{p:?}");
    // Data after the host said it sends no more; a RESPONSE to nothing.
    let _s = host_connect(&mut t, &l);
    t.host(
        Header {
            flags: SHUTDOWN_SEND,
            ..from_host(OP_SHUTDOWN, 1000, 5000)
        },
        &[],
    );
    t.host(rw(1000, 5000, b"late"), b"late");
    let p = t.drain();
    assert!(p.iter().any(|(h, _)| is(OP_RST, 5000, 1000)(h)), "{p:?}");
    let _s = host_connect(&mut t, &l);
    t.host(from_host(OP_RESPONSE, 1000, 5000), &[]);
    let p = t.drain();
    assert!(is(OP_RST, 5000, 1000)(&p[0].0), "{p:?}");
    assert_eq!(t.m.len(), 0);
}

#[test]
fn resets_waiting_for_buffers_are_bounded() {
    let mut t = T::new("rst-flood", 16, 4096);
    for i in 0..(MAX_PENDING_RST as u32 + 500) {
        t.host(rw(i, 9, b"x"), b"x");
    }
    assert_eq!(t.drain().len(), MAX_PENDING_RST);
    assert_eq!(t.count(|c| &c.rst_dropped), 500);
}

#[test]
fn bad_connect_lines_are_refused() {
    let mut t = T::new("bad-line", 16, 4096);
    for line in [&b"HELLO 1\n"[..], b"CONNECT x\n", &[b'C'; 40]] {
        let mut app = UnixStream::connect(t.dir.join("v.sock")).unwrap();
        app.write_all(line).unwrap();
        app.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut reply = Vec::new();
        while Instant::now() < deadline {
            assert!(t.drain().is_empty(), "no packet for a bad line");
            let mut b = [0u8; 64];
            app.set_nonblocking(true).unwrap();
            match app.read(&mut b) {
                Ok(0) => break,
                Ok(n) => reply.extend_from_slice(&b[..n]),
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        assert!(
            reply.starts_with(b"ERR"),
            "{:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    assert_eq!(t.count(|c| &c.bad_connect_lines), 3);
    assert_eq!(t.m.len(), 0);
}

#[test]
fn clear_closes_every_endpoint_socket() {
    let mut t = T::new("clear", 16, 4096);
    let l = t.listen(5000);
    let mut s = host_connect(&mut t, &l);
    t.m.clear();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(t.m.len(), 0);
    assert!(t.drain().is_empty());
}

#[test]
fn a_reset_line_drops_every_connection() {
    let mut t = T::new("reset-line", 16, 4096);
    let l = t.listen(5000);
    let mut s = host_connect(&mut t, &l);
    let mut sup = UnixStream::connect(t.dir.join("v.sock")).unwrap();
    sup.write_all(b"RESET\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !t.m.take_reset_request() {
        assert!(Instant::now() < deadline, "RESET not seen");
        t.m.service();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(t.m.is_empty());
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let mut reply = String::new();
    sup.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "OK RESET\n");
}

#[test]
fn a_service_with_a_full_backlog_is_refused_without_blocking() {
    use super::muxer::connect_nonblocking;
    let mut t = T::new("backlog", 4096, 4096);
    let _l = t.listen(5000);
    let path = t.dir.join("v.sock_5000");
    // Fill the listen backlog of a service that never accepts.
    let mut held = Vec::new();
    loop {
        match connect_nonblocking(&path) {
            Ok(s) => held.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        assert!(held.len() < 100_000, "backlog never filled");
    }
    let start = Instant::now();
    t.host(from_host(OP_REQUEST, 1000, 5000), &[]);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "the worker blocked"
    );
    let p = t.drain();
    assert!(is(OP_RST, 5000, 1000)(&p[0].0), "{p:?}");
    assert_eq!(t.count(|c| &c.refused), 1);
}

#[test]
fn an_unanswered_request_times_out() {
    let mut t = T::new("timeout", 16, 4096);
    let mut app = UnixStream::connect(t.dir.join("v.sock")).unwrap();
    app.write_all(b"CONNECT 7000\n").unwrap();
    let p = t.wait_for(|h| h.op == OP_REQUEST);
    let local = p.last().unwrap().0.src_port;
    // The host says nothing: after the timeout the application is told and the host reset.
    let p = t.wait_for(is(OP_RST, local, 7000));
    assert_eq!(p.len(), 1, "{p:?}");
    let mut reply = String::new();
    app.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "ERR timeout\n");
    assert_eq!(t.count(|c| &c.connect_timeouts), 1);
    assert!(t.m.is_empty());
}

/// xorshift: reproducible random headers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// One of a few interesting values, or anything.
    fn pick(&mut self, interesting: &[u64]) -> u64 {
        let r = self.next();
        if r % 64 == 0 {
            self.next()
        } else {
            interesting[(r >> 8) as usize % interesting.len()]
        }
    }
}

#[test]
fn random_headers_keep_every_bound_and_never_panic() {
    const BUF: u32 = 8192;
    let mut t = T::new("random", 8, BUF);
    // Services that never read: whatever the host sends stays with us, as far as allowed.
    let listeners: Vec<_> = (5000..5004).map(|p| t.listen(p)).collect();
    let mut rng = Rng(0x5eed);
    let payload = vec![0xabu8; MAX_PAYLOAD as usize];
    let mut out = vec![0u8; MAX_PAYLOAD as usize];
    let mut accepted = Vec::new();
    for i in 0..20_000 {
        let op = rng.pick(&[1, 1, 2, 3, 4, 5, 5, 5, 5, 5, 5, 5, 5, 6, 7, 0, 8]) as u16;
        let len = if op == OP_RW {
            rng.pick(&[0, 1, 100, 4096, 4096, 8192, 65536, 65537]) as u32
        } else {
            rng.pick(&[0, 0, 0, 0, 0, 0, 0, 1]) as u32
        };
        let room = rng.pick(&[len as u64, len as u64, len as u64, 0, 65536]) as usize;
        let h = Header {
            src_cid: rng.pick(&[CID, CID, CID, CID, CID, CID, CID, 2, 0]),
            dst_cid: rng.pick(&[ENDPOINT_CID; 8]),
            src_port: rng.pick(&[1000, 1001, 1002]) as u32,
            dst_port: rng.pick(&[5000, 5001, 5002, 5003, 6000]) as u32,
            len,
            ty: rng.pick(&[1, 1, 1, 1, 1, 1, 1, 2]) as u16,
            op,
            flags: rng.pick(&[0, 1, 2, 3, 0xffff_ffff]) as u32,
            buf_alloc: rng.pick(&[0, 4096, 1 << 20, 1 << 20, u32::MAX as u64]) as u32,
            fwd_cnt: rng.pick(&[0, 0, 0, 0, 0, 0, 0, 1, 4096, u32::MAX as u64]) as u32,
        };
        let n = (len as usize).min(room).min(payload.len());
        t.m.host_packet(&h, room, &payload[..n]);
        let (most, rsts) = t.m.held();
        assert!(
            most <= BUF as usize,
            "step {i}: {most} bytes held for one connection"
        );
        assert!(rsts <= MAX_PENDING_RST, "step {i}: {rsts} resets waiting");
        assert!(t.m.len() <= 8, "step {i}: {} connections", t.m.len());
        // The host takes some packets now and then; every one it gets is well formed.
        if rng.next() % 3 == 0 {
            t.m.service();
            for _ in 0..rng.next() % 8 {
                let Some(p) = t.m.next_for_host(ROOM, &mut out) else {
                    break;
                };
                assert_eq!(
                    (p.src_cid, p.dst_cid, p.ty),
                    (ENDPOINT_CID, CID, TYPE_STREAM)
                );
                assert!((OP_REQUEST..=OP_CREDIT_REQUEST).contains(&p.op), "{p:?}");
                assert!(p.len as usize <= ROOM);
            }
        }
        // Accept what connected, so services do not run out of backlog.
        for l in &listeners {
            l.set_nonblocking(true).unwrap();
            while let Ok((s, _)) = l.accept() {
                accepted.push(s);
            }
        }
    }
    assert!(t.count(|c| &c.bad_headers) > 0);
    assert!(t.count(|c| &c.protocol_errors) > 0);
    assert!(t.count(|c| &c.host_connects) > 0);
    println!(
        "rw {} bytes {} connects {}",
        t.count(|c| &c.to_endpoint_packets),
        t.count(|c| &c.to_endpoint_bytes),
        t.count(|c| &c.host_connects)
    );
    assert!(
        t.count(|c| &c.to_endpoint_bytes) > 0,
        "no data path reached"
    );
    println!(
        "{} services' connections; {} bad headers, {} protocol errors",
        accepted.len(),
        t.count(|c| &c.bad_headers),
        t.count(|c| &c.protocol_errors)
    );
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
    let dir = scratch("stale");
    let path = dir.join("v.sock");
    let cfg = MuxerConfig {
        guest_cid: CID,
        uds_path: path.clone(),
        conn_buf: 4096,
        max_conns: 4,
        connect_timeout: Duration::from_secs(1),
    };
    let counters = Arc::new(VsockCounters::default());
    // A socket file nobody listens on any more (its listener is gone).
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let m = Muxer::new(cfg.clone(), counters.clone()).expect("stale socket replaced");
    UnixStream::connect(&path).expect("the new listener accepts");
    // A live one (ours) is not taken over.
    let e = Muxer::new(cfg.clone(), counters.clone())
        .err()
        .expect("live socket taken");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    drop(m);
    // Nor is a file that is not a socket.
    std::fs::write(&path, b"data").unwrap();
    let e = Muxer::new(cfg, counters)
        .err()
        .expect("regular file replaced");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
}
