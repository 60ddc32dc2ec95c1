//! End-to-end protocol tests: a vfio-user client (tests/common/client.rs) talks to a
//! `VfioUserController` serving a recording fake function over a real Unix socket.

mod common;

use common::client::*;
use common::*;
use epf_epc::{EndpointController, EpcError, HostMemError, Irq, SharedMemory};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use vfio_bindings::bindings::vfio as vb;

#[test]
fn version_and_device_info_match_what_qemu_expects() {
    let s = Setup::new();
    let mut c = Client::connect(&s.path);
    let v = c.version(QEMU_CAPS).ok();
    assert_eq!((v.u16(0), v.u16(2)), (0, 0), "version 0.0");
    // QEMU checks that the capabilities string is NUL terminated.
    assert_eq!(*v.body.last().unwrap(), 0);
    let caps = std::str::from_utf8(&v.body[4..v.body.len() - 1]).unwrap();
    assert!(caps.starts_with("{\"capabilities\":{"), "{caps}");
    assert!(caps.contains("\"max_msg_fds\":16"));
    assert!(caps.contains("\"max_data_xfer_size\":1048576"));
    assert!(caps.contains("\"pgsizes\":4096"));
    assert!(caps.contains("\"write_multiple\":true"));
    assert!(!caps.contains("migration"));

    let d = c.device_info().ok();
    assert_eq!(d.body.len(), 16);
    assert_eq!(d.u32(0), 16);
    assert_eq!(
        d.u32(4),
        vb::VFIO_DEVICE_FLAGS_PCI | vb::VFIO_DEVICE_FLAGS_RESET
    );
    assert_eq!(d.u32(8), 9, "regions");
    assert_eq!(d.u32(12), 5, "irq indexes");

    let intx = c.irq_info(vb::VFIO_PCI_INTX_IRQ_INDEX).ok();
    assert_eq!(intx.u32(12), 1);
    assert_ne!(intx.u32(4) & vb::VFIO_IRQ_INFO_EVENTFD, 0);
    let msix = c.irq_info(vb::VFIO_PCI_MSIX_IRQ_INDEX).ok();
    assert_eq!((msix.u32(0), msix.u32(8), msix.u32(12)), (16, 2, 4));
    assert_eq!(msix.u32(4) & vb::VFIO_IRQ_INFO_NORESIZE, 0, "no NORESIZE");
    assert_eq!(c.irq_info(vb::VFIO_PCI_MSI_IRQ_INDEX).ok().u32(12), 0);
    assert_eq!(c.irq_info(vb::VFIO_PCI_ERR_IRQ_INDEX).ok().u32(12), 1);
    assert_eq!(c.irq_info(vb::VFIO_PCI_REQ_IRQ_INDEX).ok().u32(12), 1);
    c.irq_info(5).err(libc::EINVAL);

    let st = s.ctl.stats();
    assert_eq!(st.command(1), 1);
    assert_eq!(st.command(7), 6);
    assert_eq!(st.clients, 1);
}

#[test]
fn region_info_sparse_mmap_and_shared_bar_memory() {
    let s = Setup::new();
    let mut c = Client::connect_negotiated(&s.path);

    // As QEMU: first with argsz 32, which cannot hold the capability.
    let small = c.region_info(0, 32).ok();
    assert_eq!(small.body.len(), 32);
    assert_eq!(small.u32(0), 32 + 16 + 16, "argsz needed");
    assert_eq!(small.u32(4) & vb::VFIO_REGION_INFO_FLAG_CAPS, 0);
    assert!(small.fds.is_empty());

    let full = c.region_info(0, small.u32(0)).ok();
    let flags = full.u32(4);
    assert_eq!(
        flags,
        vb::VFIO_REGION_INFO_FLAG_READ
            | vb::VFIO_REGION_INFO_FLAG_WRITE
            | vb::VFIO_REGION_INFO_FLAG_MMAP
            | vb::VFIO_REGION_INFO_FLAG_CAPS
    );
    assert_eq!(full.u32(8), 0, "index");
    assert_eq!(full.u64(16), 0x4000, "size");
    let cap = full.u32(12) as usize;
    assert_eq!(cap, 32);
    assert_eq!(full.u16(cap), vb::VFIO_REGION_INFO_CAP_SPARSE_MMAP as u16);
    assert_eq!(full.u16(cap + 2), 1, "cap version");
    assert_eq!(full.u32(cap + 4), 0, "next");
    assert_eq!(full.u32(cap + 8), 1, "nr_areas");
    let (area_off, area_len) = (full.u64(cap + 16), full.u64(cap + 24));
    assert_eq!((area_off, area_len), (0x2000, 0x1000));
    assert_eq!(full.fds.len(), 1, "the BAR's memfd comes with the reply");

    // Map the area like QEMU (fd offset = region offset + area offset) and share data.
    let region_offset = full.u64(24);
    let fd = full.fds.into_iter().next().unwrap();
    let mine = SharedMemory::map(fd, region_offset + area_off, area_len as usize, true).unwrap();
    let bar = s.ctl.bar_memory(0).unwrap();
    mine.write(0x10, &[1, 2, 3, 4]).unwrap();
    let mut b = [0; 4];
    bar.read(0x2010, &mut b).unwrap();
    assert_eq!(b, [1, 2, 3, 4]);
    bar.write(0x2ff0, &[9, 8]).unwrap();
    mine.read(0xff0, &mut b[..2]).unwrap();
    assert_eq!(&b[..2], &[9, 8]);

    // The 64-bit BAR2 is all memory; its upper half (BAR3), BAR1, BAR4/5 and the ROM are empty.
    let bar2 = c.region_info_full(2);
    assert_eq!(bar2.u64(16), 0x2000);
    assert_eq!(bar2.fds.len(), 1);
    for empty in [1, 3, 4, 5, 6, 8] {
        let r = c.region_info(empty, 32).ok();
        assert_eq!(r.u64(16), 0, "region {empty} size");
        assert!(r.fds.is_empty());
    }
    let cfg = c.region_info(7, 32).ok();
    assert_eq!(cfg.u64(16), 4096);
    assert_eq!(
        cfg.u32(4),
        vb::VFIO_REGION_INFO_FLAG_READ | vb::VFIO_REGION_INFO_FLAG_WRITE
    );
    assert_eq!(cfg.u32(0), 32);
    c.region_info(9, 32).err(libc::EINVAL);
    c.region_info(0, 16).err(libc::EINVAL);
}

#[test]
fn config_space_reads_header_and_forwards_trapped_ranges() {
    let s = Setup::new();
    let mut c = Client::connect_negotiated(&s.path);
    // QEMU reads the whole configuration space in one go.
    let r = c.region_read(7, 0, 4096).ok();
    assert_eq!((r.u64(0), r.u32(8), r.u32(12)), (0, 7, 4096));
    let cfg = &r.body[16..];
    assert_eq!(u16::from_le_bytes([cfg[0], cfg[1]]), VENDOR);
    assert_eq!(u16::from_le_bytes([cfg[2], cfg[3]]), DEVICE);
    assert_eq!(cfg[0x3d], 1, "interrupt pin");
    assert_ne!(cfg[6] & 0x10, 0, "capability list");
    // BAR type bits: BAR0 32-bit memory, BAR2 64-bit prefetchable.
    assert_eq!(cfg[0x10] & 0xf, 0);
    assert_eq!(cfg[0x18] & 0xf, 0b1100);
    // Walk the capability list: the function's capabilities where `capability_offsets` says
    // (the function computes trapped offsets from it), then MSI-X.
    let vndr = cfg[0x34] as usize;
    assert_eq!(vndr, epf_epc::capability_offsets(&spec().capabilities)[0]);
    assert_eq!(cfg[vndr], 0x09);
    let msix = cfg[vndr + 1] as usize;
    assert_eq!(cfg[msix], 0x11);
    let ctrl = u16::from_le_bytes([cfg[msix + 2], cfg[msix + 3]]);
    assert_eq!(ctrl & 0x7ff, MSIX_VECTORS - 1);
    let table = u32::from_le_bytes(cfg[msix + 4..msix + 8].try_into().unwrap());
    assert_eq!(table, 0x3000);
    let pba = u32::from_le_bytes(cfg[msix + 8..msix + 12].try_into().unwrap());
    assert_eq!(pba, 0x3800);
    assert_eq!(cfg[msix + 1], 0, "MSI-X ends the list");
    assert_eq!(cfg[vndr + 2], 14);
    assert_eq!(
        &cfg[vndr + 4..vndr + 8],
        &[CONFIG_PATTERN; 4],
        "trapped bytes"
    );
    assert_eq!(
        cfg[vndr + 8],
        0,
        "bytes after the trapped range come from the image"
    );
    assert_eq!(
        *s.fake.config_reads.lock().unwrap(),
        vec![(vndr + 4, 4)],
        "one trapped read of exactly the range"
    );

    // A read straddling the trapped range's start.
    let r = c.region_read(7, (vndr + 2) as u64, 4).ok();
    assert_eq!(&r.body[16..], &[14, 1, CONFIG_PATTERN, CONFIG_PATTERN]);

    // Writes: the command register through its mask, trapped bytes to the function.
    c.region_write(7, 4, &[0xff, 0xff]).ok();
    let r = c.region_read(7, 4, 2).ok();
    assert_eq!(&r.body[16..], &[0x06, 0x04]);
    c.region_write(7, (vndr + 4) as u64, &[1, 2, 3, 4]).ok();
    assert_eq!(
        *s.fake.config_writes.lock().unwrap(),
        vec![(vndr + 4, vec![1, 2, 3, 4])]
    );
    // Out of range.
    c.region_read(7, 4095, 2).err(libc::EINVAL);
    c.region_write(7, 4096, &[0]).err(libc::EINVAL);

    // DEVICE_RESET: the function is told and config registers return to their reset values.
    c.request(DEVICE_RESET, &[], &[]).ok();
    assert_eq!(s.fake.resets.load(Ordering::SeqCst), 1);
    let r = c.region_read(7, 4, 2).ok();
    assert_eq!(&r.body[16..], &[0, 0]);
    assert!(s.ctl.stats().config_reads >= 3);
}

#[test]
fn bar_accesses_are_dispatched_by_area_kind() {
    let s = Setup::new();
    let mut c = Client::connect_negotiated(&s.path);

    // Trapped.
    let r = c.region_read(0, 0x10, 4).ok();
    let expect: Vec<u8> = (0x10..0x14).map(bar_pattern).collect();
    assert_eq!(&r.body[16..], &expect[..]);
    let w = c.region_write(0, 0x20, &[0xde, 0xad]).ok();
    assert_eq!(w.body.len(), 16);
    assert_eq!((w.u64(0), w.u32(8), w.u32(12)), (0x20, 0, 2));

    // Doorbell: writes reach the function, reads are zero.
    c.region_write(0, 0x1000, &7u32.to_le_bytes()).ok();
    let r = c.region_read(0, 0x1000, 4).ok();
    assert_eq!(&r.body[16..], &[0; 4]);

    // Memory through messages lands in the BAR memory.
    c.region_write(0, 0x2100, &[5, 6, 7, 8, 9, 10, 11, 12]).ok();
    let mut b = [0; 8];
    s.ctl.bar_memory(0).unwrap().read(0x2100, &mut b).unwrap();
    assert_eq!(b, [5, 6, 7, 8, 9, 10, 11, 12]);
    assert_eq!(&c.region_read(0, 0x2100, 8).ok().body[16..], &b);

    // MSI-X PBA (QEMU forwards PBA reads): nothing pending. Gaps read zero.
    assert_eq!(&c.region_read(0, 0x3800, 8).ok().body[16..], &[0; 8]);
    assert_eq!(&c.region_read(0, 0x500, 4).ok().body[16..], &[0; 4]);
    c.region_write(0, 0x500, &[1]).ok();

    // Out of range and absent BARs.
    c.region_read(0, 0x3ffe, 4).err(libc::EINVAL);
    c.region_read(0, u64::MAX, 4).err(libc::EINVAL);
    c.region_read(1, 0, 4).err(libc::EINVAL);
    c.region_write(3, 0, &[0]).err(libc::EINVAL);
    c.region_read(6, 0, 4).err(libc::EINVAL);

    // A posted (NO_REPLY) write gets no reply and is carried out before the next command.
    let body = Client::region_write_body(0, 0x30, &[0x42]);
    c.send(REGION_WRITE, FLAG_NO_REPLY, &body, &[]);
    let r = c.region_read(0, 0x10, 1).ok();
    assert_eq!(r.body[16], bar_pattern(0x10));

    // REGION_WRITE_MULTI as QEMU builds it: 24-byte entries with 8 data bytes each.
    let mut multi = Bytes::default().u64(2);
    for (off, data) in [(0x40u64, [1u8, 2]), (0x1000, [3, 4])] {
        let mut d = [0u8; 8];
        d[..2].copy_from_slice(&data);
        multi = multi.u64(off).u32(0).u32(2).raw(&d);
    }
    let m = c.request(REGION_WRITE_MULTI, &multi.0, &[]).ok();
    assert_eq!(m.u64(0), 2);

    let writes = s.fake.bar_writes.lock().unwrap().clone();
    assert_eq!(
        writes,
        vec![
            (0, 0x20, vec![0xde, 0xad]),
            (0, 0x1000, 7u32.to_le_bytes().to_vec()),
            (0, 0x30, vec![0x42]),
            (0, 0x40, vec![1, 2]),
            (0, 0x1000, vec![3, 4]),
        ]
    );
    let st = s.ctl.stats();
    assert_eq!(st.trapped_reads, 2);
    assert_eq!(st.trapped_writes, 3);
    assert_eq!(st.doorbells, 2);
}

#[test]
fn dma_maps_back_host_memory_until_unmapped() {
    let s = Setup::new();
    let mut c = Client::connect_negotiated(&s.path);
    let hm = s.ctl.host_memory();
    let rw = vb::VFIO_DMA_MAP_FLAG_READ | vb::VFIO_DMA_MAP_FLAG_WRITE;

    // Guest RAM as QEMU shares it: a memfd mapped at a file offset.
    let ram = memfd(0x8000);
    let guest = SharedMemory::map(ram.try_clone().unwrap(), 0, 0x8000, true).unwrap();
    c.dma_map(0x10_0000, 0x4000, 0x4000, rw, Some(ram.as_raw_fd()))
        .ok();
    guest.write(0x4000 + 0x100, b"virtqueue").unwrap();
    let mut b = [0u8; 9];
    hm.read(0x10_0100, &mut b).unwrap();
    assert_eq!(&b, b"virtqueue");
    hm.write(0x10_0200, b"used").unwrap();
    hm.write_u16(0x10_0300, 0xbeef).unwrap();
    let mut g = [0u8; 4];
    guest.read(0x4200, &mut g).unwrap();
    assert_eq!(&g, b"used");
    assert_eq!(guest.load_u16(0x4300).unwrap(), 0xbeef);
    assert_eq!(hm.read_u16(0x10_0300).unwrap(), 0xbeef);
    assert!(hm.read(0x10_3fff, &mut b).is_err(), "runs past the map");

    // Overlaps are refused; fd-less maps are accepted but not accessible; read-only is enforced.
    c.dma_map(0x10_2000, 0x4000, 0, rw, Some(ram.as_raw_fd()))
        .err(libc::EEXIST);
    c.dma_map(0x20_0000, 0x1000, 0, rw, None).ok();
    assert!(hm.read_u16(0x20_0000).is_err());
    c.dma_map(
        0x30_0000,
        0x1000,
        0,
        vb::VFIO_DMA_MAP_FLAG_READ,
        Some(ram.as_raw_fd()),
    )
    .ok();
    assert_eq!(hm.read_u16(0x30_0000).unwrap(), 0);
    assert!(hm.write_u16(0x30_0000, 1).is_err());
    c.dma_map(0x40_0000, 0, 0, rw, None).err(libc::EINVAL);
    c.dma_map(0x40_0000, 0x1000, 0, rw | 0x100, None)
        .err(libc::EINVAL);
    assert_eq!(s.ctl.dma_map_count(), 3);

    // Unmap: the reply echoes the request; later accesses fail.
    let u = c.dma_unmap(0x10_0000, 0x4000, 0).ok();
    assert_eq!(
        (u.u32(0), u.u32(4), u.u64(8), u.u64(16)),
        (24, 0, 0x10_0000, 0x4000)
    );
    assert!(hm.read(0x10_0100, &mut b).is_err());
    c.dma_unmap(0x30_0800, 0x100, 0).err(libc::EINVAL);
    c.dma_unmap(0, 0x1000, vb::VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP)
        .err(libc::EINVAL);
    c.dma_unmap(0x1000, 0, vb::VFIO_DMA_UNMAP_FLAG_ALL)
        .err(libc::EINVAL);
    // UNMAP_ALL as QEMU sends it (iova 0, size 0).
    c.dma_unmap(0, 0, vb::VFIO_DMA_UNMAP_FLAG_ALL).ok();
    assert_eq!(s.ctl.dma_map_count(), 0);
    assert!(hm.read_u16(0x30_0000).is_err());
    let st = s.ctl.stats();
    assert_eq!((st.dma_maps, st.dma_unmaps), (3, 3));
}

#[test]
fn unmap_waits_for_accesses_in_flight() {
    let s = Setup::new();
    let mut c = Client::connect_negotiated(&s.path);
    let ram = memfd(0x10_0000);
    let rw = vb::VFIO_DMA_MAP_FLAG_READ | vb::VFIO_DMA_MAP_FLAG_WRITE;
    c.dma_map(0, 0x10_0000, 0, rw, Some(ram.as_raw_fd())).ok();
    let hm = s.ctl.host_memory();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 0x10_0000];
            let mut ok = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Either the whole copy happens or none; never a fault on unmapped memory.
                if hm.read(0, &mut buf).is_ok() {
                    ok += 1;
                }
            }
            ok
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    c.dma_unmap(0, 0x10_0000, 0).ok();
    stop.store(true, Ordering::Relaxed);
    assert!(worker.join().unwrap() > 0);
}

#[test]
fn irqs_follow_set_irqs() {
    let s = Setup::new();
    let mut c = Client::connect_negotiated(&s.path);
    let trigger_eventfd = vb::VFIO_IRQ_SET_DATA_EVENTFD | vb::VFIO_IRQ_SET_ACTION_TRIGGER;
    let msix = vb::VFIO_PCI_MSIX_IRQ_INDEX;

    assert!(!s.ctl.msix_enabled());
    assert!(matches!(
        s.ctl.raise_irq(Irq::Msix(0)),
        Err(EpcError::IrqNotEnabled(_))
    ));
    // QEMU enables MSI-X with no vector: one entry, fd -1 => no descriptor sent.
    c.set_irqs(trigger_eventfd, msix, 0, 1, &[], &[]).ok();
    assert!(!s.ctl.msix_enabled());

    let (v1, v1_reader) = eventfd();
    let changes = s.fake.irq_changes.load(Ordering::SeqCst);
    c.set_irqs(trigger_eventfd, msix, 1, 1, &[], &[v1.as_raw_fd()])
        .ok();
    assert!(s.ctl.msix_enabled());
    assert!(s.fake.irq_changes.load(Ordering::SeqCst) > changes);
    s.ctl.raise_irq(Irq::Msix(1)).unwrap();
    assert_eq!(eventfd_count(&v1_reader), 1);
    assert!(s.ctl.raise_irq(Irq::Msix(0)).is_err());
    assert!(s.ctl.raise_irq(Irq::Msix(9)).is_err());
    assert!(matches!(
        s.ctl.raise_irq(Irq::Msi(0)),
        Err(EpcError::Unsupported(_))
    ));

    // Several vectors in one message; a count/descriptor mismatch is refused.
    let (a, a_r) = eventfd();
    let (b, b_r) = eventfd();
    c.set_irqs(
        trigger_eventfd,
        msix,
        2,
        2,
        &[],
        &[a.as_raw_fd(), b.as_raw_fd()],
    )
    .ok();
    s.ctl.raise_irq(Irq::Msix(3)).unwrap();
    assert_eq!((eventfd_count(&a_r), eventfd_count(&b_r)), (0, 1));
    c.set_irqs(trigger_eventfd, msix, 0, 2, &[], &[a.as_raw_fd()])
        .err(libc::EINVAL);
    c.set_irqs(
        trigger_eventfd,
        msix,
        3,
        2,
        &[],
        &[a.as_raw_fd(), b.as_raw_fd()],
    )
    .err(libc::EINVAL);

    // DATA_BOOL trigger from the client side fires the selected vectors.
    let trigger_bool = vb::VFIO_IRQ_SET_DATA_BOOL | vb::VFIO_IRQ_SET_ACTION_TRIGGER;
    c.set_irqs(trigger_bool, msix, 1, 3, &[1, 0, 1], &[]).ok();
    assert_eq!(eventfd_count(&v1_reader), 1);
    assert_eq!(eventfd_count(&a_r), 0);
    assert_eq!(eventfd_count(&b_r), 1);
    c.set_irqs(trigger_bool, msix, 1, 3, &[1], &[])
        .err(libc::EINVAL);

    // Disable the whole index: DATA_NONE, count 0.
    let none = vb::VFIO_IRQ_SET_DATA_NONE | vb::VFIO_IRQ_SET_ACTION_TRIGGER;
    c.set_irqs(none, msix, 0, 0, &[], &[]).ok();
    assert!(!s.ctl.msix_enabled());
    assert!(s.ctl.raise_irq(Irq::Msix(1)).is_err());

    // INTx: level triggered, automasked, unmasked by the client.
    let (ix, ix_r) = eventfd();
    c.set_irqs(trigger_eventfd, 0, 0, 1, &[], &[ix.as_raw_fd()])
        .ok();
    s.ctl.raise_irq(Irq::Intx(true)).unwrap();
    assert_eq!(eventfd_count(&ix_r), 1);
    s.ctl.raise_irq(Irq::Intx(true)).unwrap();
    assert_eq!(eventfd_count(&ix_r), 0, "masked until unmasked");
    let unmask = vb::VFIO_IRQ_SET_DATA_NONE | vb::VFIO_IRQ_SET_ACTION_UNMASK;
    c.set_irqs(unmask, 0, 0, 1, &[], &[]).ok();
    assert_eq!(eventfd_count(&ix_r), 1, "level still high: fires again");
    s.ctl.raise_irq(Irq::Intx(false)).unwrap();
    c.set_irqs(unmask, 0, 0, 1, &[], &[]).ok();
    assert_eq!(eventfd_count(&ix_r), 0);
    // Resampling eventfds (KVM) are refused; bad flag combinations too.
    let (r, _) = eventfd();
    c.set_irqs(
        vb::VFIO_IRQ_SET_DATA_EVENTFD | vb::VFIO_IRQ_SET_ACTION_UNMASK,
        0,
        0,
        1,
        &[],
        &[r.as_raw_fd()],
    )
    .err(libc::EINVAL);
    c.set_irqs(
        vb::VFIO_IRQ_SET_DATA_NONE | vb::VFIO_IRQ_SET_DATA_BOOL | vb::VFIO_IRQ_SET_ACTION_TRIGGER,
        0,
        0,
        1,
        &[1],
        &[],
    )
    .err(libc::EINVAL);
    c.set_irqs(none, 7, 0, 0, &[], &[]).err(libc::EINVAL);
    // ERR and REQ notifiers (QEMU registers them) are accepted.
    let (e, _) = eventfd();
    c.set_irqs(trigger_eventfd, 3, 0, 1, &[], &[e.as_raw_fd()])
        .ok();
    assert!(s.ctl.stats().irqs_raised >= 5);
}

#[test]
fn disconnect_cleans_up_and_next_client_starts_fresh() {
    let s = Setup::new();
    let rw = vb::VFIO_DMA_MAP_FLAG_READ | vb::VFIO_DMA_MAP_FLAG_WRITE;
    {
        let mut c = Client::connect_negotiated(&s.path);
        let ram = memfd(0x1000);
        c.dma_map(0x1000, 0x1000, 0, rw, Some(ram.as_raw_fd())).ok();
        let (v, _r) = eventfd();
        c.set_irqs(
            vb::VFIO_IRQ_SET_DATA_EVENTFD | vb::VFIO_IRQ_SET_ACTION_TRIGGER,
            2,
            0,
            1,
            &[],
            &[v.as_raw_fd()],
        )
        .ok();
        c.region_write(7, 4, &[0x06]).ok();
        assert!(s.ctl.msix_enabled());
        assert_eq!(s.ctl.host_memory().read_u16(0x1000).unwrap(), 0);
    }
    s.wait_resets(1);
    assert_eq!(s.ctl.dma_map_count(), 0);
    assert!(!s.ctl.msix_enabled());
    assert!(s.ctl.host_memory().read_u16(0x1000).is_err());

    let mut c = Client::connect(&s.path);
    // Nothing but VERSION is accepted before the handshake.
    c.device_info().err(libc::EINVAL);
    c.version(QEMU_CAPS).ok();
    assert_eq!(c.device_info().ok().u32(8), 9);
    assert_eq!(
        &c.region_read(7, 4, 1).ok().body[16..],
        &[0],
        "fresh config"
    );
    assert_eq!(s.ctl.stats().clients, 2);
}

#[test]
fn shutdown_removes_the_socket_and_the_path_can_be_reused() {
    let mut s = Setup::new();
    let c = Client::connect_negotiated(&s.path);
    s.stop();
    assert!(!s.path.exists());
    assert!(c.closed_by_server());
    assert!(s.fake.resets.load(Ordering::SeqCst) >= 1);
    let again = epf_vfio_user::VfioUserController::new(&s.path).unwrap();
    assert!(s.path.exists());
    drop(again);
    assert!(
        !s.path.exists(),
        "dropping the controller removes its socket"
    );
}

#[test]
fn socket_path_problems_are_reported() {
    use epf_vfio_user::{VfioUserController, VfioUserError};
    let s = Setup::new();
    // A live server on the path.
    assert!(matches!(
        VfioUserController::new(&s.path),
        Err(VfioUserError::InUse(_))
    ));
    // A stale socket file is replaced.
    let stale = s.dir.as_path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let ctl = VfioUserController::new(&stale).unwrap();
    drop(ctl);
    // Not a socket.
    let file = s.dir.as_path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        VfioUserController::new(&file),
        Err(VfioUserError::NotASocket(_))
    ));
    assert!(file.exists());
    // Missing directory.
    let e = VfioUserController::new(s.dir.as_path().join("no/such/dir.sock")).unwrap_err();
    assert!(matches!(e, VfioUserError::Socket { .. }));
    assert!(e.to_string().contains("no/such/dir.sock"), "{e}");
}

#[test]
fn bar_memory_cannot_be_resized_by_the_client_and_dma_maps_must_fit_their_file() {
    let s = Setup::new();
    let mut c = Client::connect_negotiated(&s.path);
    let r = c.region_info_full(0);
    let fd = &r.fds[0];
    // SAFETY: ftruncate on a descriptor we own.
    let shrunk = unsafe { libc::ftruncate(fd.as_raw_fd(), 0) };
    assert_eq!(shrunk, -1, "the BAR memfd is sealed");
    let ram = memfd(0x1000);
    let rw = vb::VFIO_DMA_MAP_FLAG_READ | vb::VFIO_DMA_MAP_FLAG_WRITE;
    c.dma_map(0, 0x2000, 0, rw, Some(ram.as_raw_fd()))
        .err(libc::EINVAL);
    c.dma_map(0, 0x1000, 0x1000, rw, Some(ram.as_raw_fd()))
        .err(libc::EINVAL);
    c.dma_map(0, 0x1000, 0, rw, Some(ram.as_raw_fd())).ok();
}

/// A hostile client truncates the guest-RAM file it mapped: the endpoint's accesses fail with
/// a clear error (the device then sets DEVICE_NEEDS_RESET) instead of the process dying of
/// SIGBUS, and the session goes on with fresh mappings.
#[test]
fn a_client_truncating_mapped_ram_gets_errors_not_a_dead_endpoint() {
    let s = Setup::new();
    let mut c = Client::connect_negotiated(&s.path);
    let hm = s.ctl.host_memory();
    let rw = vb::VFIO_DMA_MAP_FLAG_READ | vb::VFIO_DMA_MAP_FLAG_WRITE;
    let ram = memfd(0x4000);
    c.dma_map(0x10_0000, 0x4000, 0, rw, Some(ram.as_raw_fd()))
        .ok();
    hm.write(0x10_2000, b"desc").unwrap();
    // SAFETY: ftruncate on a descriptor we own (the client's RAM file).
    assert_eq!(unsafe { libc::ftruncate(ram.as_raw_fd(), 0x1000) }, 0);
    let mut b = [0u8; 4];
    assert_eq!(
        hm.read(0x10_2000, &mut b),
        Err(HostMemError::Lost { addr: 0x10_2000 })
    );
    // The whole mapping is unusable from then on, even its surviving first page.
    assert!(matches!(
        hm.read_u16(0x10_0000),
        Err(HostMemError::Lost { .. })
    ));
    assert!(hm.write_u32(0x10_3000, 1).is_err());
    // The session goes on.
    let d = c.device_info().ok();
    assert_eq!(d.u32(12), 5, "device info after the truncation");
    // Unmapped and mapped afresh, memory works again.
    c.dma_unmap(0x10_0000, 0x4000, 0).ok();
    let ram2 = memfd(0x4000);
    c.dma_map(0x10_0000, 0x4000, 0, rw, Some(ram2.as_raw_fd()))
        .ok();
    hm.write_u16(0x10_2000, 7).unwrap();
    assert_eq!(hm.read_u16(0x10_2000).unwrap(), 7);
}

#[test]
fn serving_waits_for_start() {
    let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/epf-vfio-user-test").unwrap();
    let path = dir.as_path().join("late.sock");
    let ctl = epf_vfio_user::VfioUserController::new(&path).unwrap();
    let thread = ctl.spawn().unwrap();
    let mut c = Client::connect(&path);
    let mut body = Bytes::default().u16(0).u16(0).raw(QEMU_CAPS.as_bytes()).0;
    body.push(0);
    let id = c.send(VERSION, 0, &body, &[]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    ctl.start(spec(), std::sync::Arc::new(Fake::default()))
        .unwrap();
    let r = c.recv().unwrap();
    assert_eq!(r.id, id);
    r.ok();
    assert!(matches!(
        ctl.start(spec(), std::sync::Arc::new(Fake::default())),
        Err(EpcError::Invalid(_))
    ));
    assert!(matches!(
        ctl.serve(),
        Err(epf_vfio_user::VfioUserError::AlreadyServing)
    ));
    ctl.shutdown();
    thread.join().unwrap().unwrap();
}

#[test]
fn start_validates_the_spec() {
    use epf_epc::{AreaKind, BarArea, BarSpec};
    let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/epf-vfio-user-test").unwrap();
    let ctl = epf_vfio_user::VfioUserController::new(dir.as_path().join("v.sock")).unwrap();
    let fake = std::sync::Arc::new(Fake::default());
    let f = ctl.features();
    assert!(f.vendor_capabilities && f.trapped_access && f.doorbells && f.shared_memory);
    assert_eq!(f.irq.msix_vectors, 64);

    let mut bad = spec();
    bad.msix.as_mut().unwrap().table_offset = 0x2000; // inside the memory area
    assert!(ctl.start(bad, fake.clone()).is_err());
    let mut bad = spec();
    bad.msix.as_mut().unwrap().vectors = 65;
    assert!(matches!(
        ctl.start(bad, fake.clone()),
        Err(EpcError::Unsupported(_))
    ));
    let mut bad = spec();
    bad.msix.as_mut().unwrap().pba_bar = 1; // no BAR1
    assert!(ctl.start(bad, fake.clone()).is_err());
    let mut bad = spec();
    bad.msix.as_mut().unwrap().pba_offset = 0x3008; // overlaps the table
    assert!(ctl.start(bad, fake.clone()).is_err());
    let mut bad = spec();
    bad.bars[3] = bad.bars[0].clone(); // upper half of 64-bit BAR2
    assert!(ctl.start(bad, fake.clone()).is_err());
    let mut bad = spec();
    bad.bars[5] = Some(BarSpec {
        size: 0x1000,
        is_64bit: true,
        prefetchable: false,
        areas: vec![BarArea {
            offset: 0,
            size: 0x1000,
            kind: AreaKind::Trapped,
        }],
    });
    assert!(ctl.start(bad, fake.clone()).is_err());
    let mut bad = spec();
    bad.capabilities[0].trapped[0] = 10..20;
    assert!(ctl.start(bad, fake.clone()).is_err());
    let mut bad = spec();
    bad.bars[0].as_mut().unwrap().areas[2].offset = 0x2100; // unaligned memory area
    assert!(ctl.start(bad, fake.clone()).is_err());

    assert!(ctl.bar_memory(0).is_none());
    ctl.start(spec(), fake).unwrap();
    assert_eq!(ctl.bar_memory(0).unwrap().len(), 0x4000);
    assert_eq!(ctl.bar_memory(2).unwrap().len(), 0x2000);
    assert!(ctl.bar_memory(1).is_none());
    assert!(ctl.bar_memory(200).is_none());
}
