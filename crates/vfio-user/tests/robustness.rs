//! Hostile and broken clients: the daemon must never panic, must answer malformed commands
//! with errors or hang up, and must serve a proper client afterwards.

mod common;

use common::client::*;
use common::*;
use epf_epc::EndpointController;
use std::os::fd::AsRawFd;
use vfio_bindings::bindings::vfio as vb;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

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

/// Open descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn descriptors_of_one_message_are_bounded_while_it_arrives() {
    let s = Setup::new();
    let c = Client::connect_negotiated(&s.path);
    let (fd, _keep) = eventfd();
    let before = open_fds();
    // One DMA_MAP announcing a 64 KiB body, sent in 200 pieces of 16 bytes that each carry
    // 8 descriptors: the server must not hold 1600 of them while the message arrives.
    let body = vec![0u8; 64 * 1024];
    let msg = Client::message(0x55, DMA_MAP, 0, &body);
    c.send_raw(&msg[..16], &[]);
    let fds = [fd.as_raw_fd(); 8];
    for piece in msg[16..16 + 200 * 16].chunks(16) {
        c.sock.send_with_fds(&[piece], &fds).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let held = open_fds().saturating_sub(before);
    assert!(
        held <= 16 + 2,
        "the server holds {held} descriptors of one message"
    );
    c.send_raw(&msg[16 + 200 * 16..], &[]);
    let reply = c.recv().unwrap();
    assert!(
        reply.is_error(),
        "a message that lost descriptors is refused"
    );
    drop(c);
    still_serves(&s);
}

#[test]
fn write_multi_needs_negotiation_and_applies_nothing_if_any_entry_is_bad() {
    let s = Setup::new();
    let entry = |b: Bytes, off: u64| b.u64(off).u32(0).u32(2).raw(&[7, 7, 0, 0, 0, 0, 0, 0]);
    // A client that did not propose write_multiple.
    let mut c = Client::connect(&s.path);
    c.version(r#"{"capabilities":{"max_msg_fds":16}}"#).ok();
    let one = entry(Bytes::default().u64(1), 0x40).0;
    c.request(REGION_WRITE_MULTI, &one, &[]).err(libc::EINVAL);
    drop(c);
    s.wait_resets(1);
    // A negotiated client: the second entry is beyond BAR 0, so the first is not applied.
    let mut c = Client::connect_negotiated(&s.path);
    let two = entry(entry(Bytes::default().u64(2), 0x40), 1 << 40).0;
    c.request(REGION_WRITE_MULTI, &two, &[]).err(libc::EINVAL);
    assert!(
        s.fake.bar_writes.lock().unwrap().is_empty(),
        "an entry was applied before a bad one was found"
    );
    c.request(REGION_WRITE_MULTI, &one, &[]).ok();
    assert_eq!(s.fake.bar_writes.lock().unwrap().len(), 1);
}

#[test]
fn dma_map_refuses_descriptors_that_are_not_memory_and_sparse_giants() {
    let s = Setup::new();
    let mut c = Client::connect_negotiated(&s.path);
    let rw = vb::VFIO_DMA_MAP_FLAG_READ | vb::VFIO_DMA_MAP_FLAG_WRITE;
    // A pipe (a hostile client's way to stall a fault) is not memory.
    let mut p = [0i32; 2];
    // SAFETY: pipe fills two descriptors we then own.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
    c.dma_map(0x10_0000, 0x1000, 0, rw, Some(p[0]))
        .err(libc::EINVAL);
    // SAFETY: closing the pipe we created.
    unsafe {
        libc::close(p[0]);
        libc::close(p[1]);
    }
    // A device (mappable, but not memory anyone shares with us), and a file on a file system
    // that is not tmpfs, hugetlbfs or a local disk (sysfs here; FUSE or NFS in an attack).
    let zero = std::fs::File::open("/dev/zero").unwrap();
    c.dma_map(0x10_0000, 0x1000, 0, rw, Some(zero.as_raw_fd()))
        .err(libc::EINVAL);
    let sysfs = std::fs::File::open("/sys/kernel/mm/transparent_hugepage/enabled").unwrap();
    c.dma_map(0x10_0000, 0x1000, 0, rw, Some(sysfs.as_raw_fd()))
        .err(libc::EINVAL);
    // A sparse 1 TiB memfd costs the client nothing: mapping all of it is refused, and so is
    // reaching the limit with several smaller maps.
    let huge = memfd(0);
    // SAFETY: resizing a memfd we own.
    assert_eq!(unsafe { libc::ftruncate(huge.as_raw_fd(), 1 << 40) }, 0);
    c.dma_map(0x1_0000_0000, 1 << 40, 0, rw, Some(huge.as_raw_fd()))
        .err(libc::ENOSPC);
    for i in 0..2u64 {
        c.dma_map(
            (i + 1) << 40,
            128 << 30,
            i * (128 << 30),
            rw,
            Some(huge.as_raw_fd()),
        )
        .ok();
    }
    c.dma_map(3 << 40, 4096, 0, rw, Some(huge.as_raw_fd()))
        .err(libc::ENOSPC);
    // Unmapping makes room again.
    c.dma_unmap(1 << 40, 128 << 30, 0).ok();
    c.dma_map(3 << 40, 4096, 0, rw, Some(huge.as_raw_fd())).ok();
    drop(c);
    still_serves(&s);
}

#[test]
fn interrupt_descriptors_must_be_eventfds_and_never_block_the_endpoint() {
    let s = Setup::new();
    let mut c = Client::connect_negotiated(&s.path);
    let trigger = vb::VFIO_IRQ_SET_DATA_EVENTFD | vb::VFIO_IRQ_SET_ACTION_TRIGGER;
    let msix = vb::VFIO_PCI_MSIX_IRQ_INDEX;
    // A pipe could fill up and block a write: refused.
    let mut p = [0i32; 2];
    // SAFETY: pipe fills two descriptors we then own.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
    c.set_irqs(trigger, msix, 0, 1, &[], &[p[1]])
        .err(libc::EINVAL);
    // An eventfd whose counter the client drives to its maximum, and on whose shared file
    // description it clears O_NONBLOCK after handing it over.
    // SAFETY: eventfd creates a descriptor we own.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(efd >= 0);
    let max: u64 = u64::MAX - 1;
    // SAFETY: writes 8 bytes from a live u64.
    assert_eq!(
        unsafe { libc::write(efd, (&max as *const u64).cast(), 8) },
        8
    );
    c.set_irqs(trigger, msix, 0, 1, &[], &[efd]).ok();
    // SAFETY: fcntl on our own descriptor.
    unsafe {
        let fl = libc::fcntl(efd, libc::F_GETFL);
        libc::fcntl(efd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
    }
    let ctl = s.ctl.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(ctl.raise_irq(epf_epc::Irq::Msix(0)).is_ok());
    });
    let raised = rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("raise_irq blocked on the client's eventfd");
    assert!(raised, "a saturated counter means the interrupt is pending");
    // SAFETY: closing descriptors we own.
    unsafe {
        libc::close(p[0]);
        libc::close(p[1]);
        libc::close(efd);
    }
    drop(c);
    still_serves(&s);
}
