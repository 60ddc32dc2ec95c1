//! Hostile and broken clients: the daemon must never panic, must answer malformed commands
//! with errors or hang up, and must serve a proper client afterwards.

mod common;

use common::client::*;
use common::*;
use std::os::fd::AsRawFd;
use vfio_bindings::bindings::vfio as vb;

/// A proper client still gets served.
fn still_serves(s: &Setup) {
    let mut c = Client::connect_negotiated(&s.path);
    let d = c.device_info().ok();
    assert_eq!((d.u32(8), d.u32(12)), (9, 5));
    let r = c.region_read(7, 0, 2).ok();
    assert_eq!(u16::from_le_bytes([r.body[16], r.body[17]]), VENDOR);
}

#[test]
fn framing_errors_end_the_connection_but_not_the_server() {
    let s = Setup::new();
    let mut resets = 0;
    let mut next = |s: &Setup| {
        resets += 1;
        s.wait_resets(resets);
    };

    // Garbage, then hang up.
    let c = Client::connect(&s.path);
    let garbage: Vec<u8> = (0..200u32).map(|i| (i * 37 + 11) as u8).collect();
    c.send_raw(&garbage, &[]);
    drop(c);
    next(&s);

    // A truncated header.
    let c = Client::connect(&s.path);
    c.send_raw(&[1, 0, 1, 0, 32, 0], &[]);
    drop(c);
    next(&s);

    // A header announcing fewer bytes than a header: error reply, then hang-up.
    let c = Client::connect(&s.path);
    let mut h = Client::message(1, VERSION, 0, &[]);
    h[4..8].copy_from_slice(&8u32.to_ne_bytes());
    c.send_raw(&h, &[]);
    let m = c.recv().unwrap();
    m.err(libc::EINVAL);
    assert!(c.closed_by_server());
    next(&s);

    // An absurd size.
    let c = Client::connect(&s.path);
    let mut h = Client::message(2, REGION_WRITE, 0, &[]);
    h[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    c.send_raw(&h, &[]);
    c.recv().unwrap().err(libc::E2BIG);
    assert!(c.closed_by_server());
    next(&s);

    // A body cut short by the client leaving.
    let c = Client::connect_negotiated(&s.path);
    let mut m = Client::message(3, REGION_WRITE, 0, &[0; 64]);
    m.truncate(40);
    c.send_raw(&m, &[]);
    drop(c);
    next(&s);

    // The wrong major version.
    let mut c = Client::connect(&s.path);
    let body = Bytes::default().u16(1).u16(0).raw(b"{}\0").0;
    c.request(VERSION, &body, &[]).err(libc::ENOTSUP);
    assert!(c.closed_by_server());
    next(&s);

    // Malformed capabilities.
    let mut c = Client::connect(&s.path);
    c.version("{\"capabilities\": [").err(libc::EINVAL);
    assert!(c.closed_by_server());
    next(&s);

    still_serves(&s);
    assert!(s.ctl.stats().protocol_errors >= 5);
}

#[test]
fn malformed_commands_get_error_replies_and_the_session_continues() {
    let s = Setup::new();
    let mut c = Client::connect_negotiated(&s.path);

    // A second VERSION.
    c.version(QEMU_CAPS).err(libc::EINVAL);
    // Unknown and server-to-client commands.
    c.request(99, &[], &[]).err(libc::ENOSYS);
    c.request(0, &[], &[]).err(libc::ENOSYS);
    c.request(16, &Bytes::default().u32(8).u32(0x40001).0, &[])
        .err(libc::ENOTTY);
    c.request(DMA_READ, &Bytes::default().u64(0).u64(8).0, &[])
        .err(libc::EINVAL);
    // Short bodies.
    c.request(DMA_MAP, &[0; 8], &[]).err(libc::EINVAL);
    c.request(DMA_UNMAP, &[0; 20], &[]).err(libc::EINVAL);
    c.request(DEVICE_GET_INFO, &[], &[]).err(libc::EINVAL);
    c.request(DEVICE_GET_REGION_INFO, &[0; 4], &[])
        .err(libc::EINVAL);
    c.request(DEVICE_GET_IRQ_INFO, &[0; 8], &[])
        .err(libc::EINVAL);
    c.request(DEVICE_SET_IRQS, &[0; 12], &[]).err(libc::EINVAL);
    c.request(REGION_READ, &[0; 15], &[]).err(libc::EINVAL);
    c.request(REGION_WRITE_MULTI, &[0; 4], &[])
        .err(libc::EINVAL);
    // A write whose count exceeds its data, a read beyond the transfer limit.
    let mut body = Client::region_write_body(0, 0, &[1, 2, 3, 4]);
    body[12..16].copy_from_slice(&100u32.to_ne_bytes());
    c.request(REGION_WRITE, &body, &[]).err(libc::EINVAL);
    c.region_read(7, 0, 2 << 20).err(libc::E2BIG);
    // WRITE_MULTI with too many entries, an oversized entry, or a short array.
    c.request(REGION_WRITE_MULTI, &Bytes::default().u64(201).0, &[])
        .err(libc::EINVAL);
    let bad = Bytes::default().u64(1).u64(0).u32(0).u32(9).raw(&[0; 8]).0;
    c.request(REGION_WRITE_MULTI, &bad, &[]).err(libc::EINVAL);
    c.request(
        REGION_WRITE_MULTI,
        &Bytes::default().u64(2).raw(&[0; 24]).0,
        &[],
    )
    .err(libc::EINVAL);

    // Descriptors where none belong are refused (and closed); too many are refused.
    let (e, _) = eventfd();
    let id = c.send(
        DEVICE_GET_INFO,
        0,
        &Bytes::default().u32(16).raw(&[0; 12]).0,
        &[e.as_raw_fd()],
    );
    let m = c.recv().unwrap();
    assert_eq!(m.id, id);
    m.err(libc::EINVAL);
    let many: Vec<i32> = (0..20).map(|_| e.as_raw_fd()).collect();
    let set = Bytes::default()
        .u32(20)
        .u32(vb::VFIO_IRQ_SET_DATA_EVENTFD | vb::VFIO_IRQ_SET_ACTION_TRIGGER)
        .u32(2)
        .u32(0)
        .u32(4)
        .0;
    c.request(DEVICE_SET_IRQS, &set, &many).err(libc::EINVAL);
    let ram = memfd(0x1000);
    let map = Bytes::default().u32(32).u32(3).u64(0).u64(0).u64(0x1000).0;
    c.request(DMA_MAP, &map, &[ram.as_raw_fd(), ram.as_raw_fd()])
        .err(libc::EINVAL);
    // A map at a file offset the descriptor cannot back.
    let map = Bytes::default()
        .u32(32)
        .u32(3)
        .u64(0x123)
        .u64(0)
        .u64(0x1000)
        .0;
    assert!(c.request(DMA_MAP, &map, &[ram.as_raw_fd()]).is_error());

    // A message of unknown type gets an error; a stray reply is ignored.
    let mut m = Client::message(
        0x77,
        DEVICE_GET_INFO,
        0x7,
        &Bytes::default().u32(16).raw(&[0; 12]).0,
    );
    c.send_raw(&m, &[]);
    let r = c.recv().unwrap();
    assert_eq!(r.id, 0x77);
    r.err(libc::EINVAL);
    m[8..12].copy_from_slice(&FLAG_REPLY.to_ne_bytes());
    c.send_raw(&m, &[]);
    // NO_REPLY commands get no reply even when they fail.
    c.send(99, FLAG_NO_REPLY, &[], &[]);

    // The session is still in order: the next reply is for the next request.
    let d = c.device_info().ok();
    assert_eq!(d.u32(12), 5);
    drop(c);
    s.wait_resets(1);
    still_serves(&s);
}

#[test]
fn random_messages_never_break_the_daemon() {
    let s = Setup::new();
    // A deterministic xorshift generator: reproducible "fuzzing" of well-framed messages.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut c = Client::connect_negotiated(&s.path);
    for i in 0..2000u32 {
        let command = (rnd() % 20) as u16;
        if command == VERSION || command == DEVICE_RESET {
            continue;
        }
        let len = (rnd() % 64) as usize;
        let mut body: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        // Keep region numbers and counts plausible half of the time to reach deeper code.
        if body.len() >= 16 && rnd() % 2 == 0 {
            body[8..12].copy_from_slice(&((rnd() % 9) as u32).to_ne_bytes());
            body[12..16].copy_from_slice(&((rnd() % 16) as u32).to_ne_bytes());
            body[0..8].copy_from_slice(&(rnd() % 0x5000).to_ne_bytes());
        }
        let id = c.send(command, 0, &body, &[]);
        let r = c.recv().unwrap_or_else(|e| panic!("message {i}: {e}"));
        assert_eq!(r.id, id);
    }
    drop(c);
    s.wait_resets(1);
    still_serves(&s);
}
