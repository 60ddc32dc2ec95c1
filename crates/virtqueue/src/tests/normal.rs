//! Normal operation: direct and indirect chains, cursors, used ring, wrap-around, extreme
//! queue sizes, queue creation checks.

use super::{assert_no_oob, pop_one, setup};
use crate::testing::{Buf, DriverRing, TestMemory, TEST_MEMORY_BASE};
use crate::{
    Descriptor, DescriptorChain, Queue, QueueConfig, QueueError, Ring, Segment, VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
};
use epf_epc::{HostMemError, HostMemory};
use std::sync::Arc;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

#[test]
fn direct_chain_segments_and_copying() {
    let (mut drv, mut q) = setup(8, 1 << 16, false);
    let a = pattern(5, 1);
    let b = pattern(7, 2);
    let tc = drv.add_chain(&[
        Buf::Readable(a.clone()),
        Buf::Readable(b.clone()),
        Buf::Writable(3),
        Buf::Writable(10),
    ]);
    let c = pop_one(&mut q);
    assert_eq!(c.head(), tc.head);
    assert_eq!(c.readable(), &tc.readable[..]);
    assert_eq!(c.writable(), &tc.writable[..]);
    assert_eq!((c.readable_len(), c.writable_len()), (12, 13));
    assert_eq!(c.descriptor_count(), 4);

    // Read in 3-byte pieces, crossing the segment boundary at 5.
    let mem = q.memory().clone();
    let mut r = c.reader(&*mem);
    let mut got = Vec::new();
    let mut piece = [0u8; 3];
    loop {
        let n = r.read(&mut piece).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&piece[..n]);
    }
    let mut expected = a.clone();
    expected.extend_from_slice(&b);
    assert_eq!(got, expected);
    assert_eq!(r.remaining(), 0);
    assert_eq!(r.consumed(), 12);

    // Write 11 bytes across the 3/10 boundary.
    let data = pattern(11, 9);
    let mut w = c.writer(&*mem);
    assert_eq!(w.remaining(), 13);
    assert_eq!(w.write(&data[..2]).unwrap(), 2);
    w.write_all(&data[2..]).unwrap();
    assert_eq!(w.written(), 11);
    assert_eq!(w.remaining(), 2);
    assert_eq!(drv.memory().peek(tc.writable[0].addr, 3), data[..3]);
    assert_eq!(drv.memory().peek(tc.writable[1].addr, 10)[..8], data[3..]);
    // A write larger than what is left is cut short.
    assert_eq!(w.write(&[0xee; 5]).unwrap(), 2);
    assert_eq!(w.written(), 13);

    q.add_used(c.head(), w.written()).unwrap();
    assert_eq!(drv.used_idx(), 1);
    assert_eq!(drv.pop_used(), Some((u32::from(tc.head), 13)));
    assert!(!q.pop(&mut DescriptorChain::default()).unwrap());
    assert_no_oob(&drv);
}

#[test]
fn indirect_chain_segments_and_copying() {
    let (mut drv, mut q) = setup(4, 1 << 16, false);
    let tc = drv.add_indirect_chain(&[
        Buf::Readable(pattern(16, 1)),
        Buf::Readable(pattern(1, 2)),
        Buf::Readable(pattern(33, 3)),
        Buf::Writable(4),
        Buf::Writable(64),
    ]);
    let c = pop_one(&mut q);
    assert_eq!(c.head(), tc.head);
    assert_eq!(c.readable(), &tc.readable[..]);
    assert_eq!(c.writable(), &tc.writable[..]);
    assert_eq!(
        c.descriptor_count(),
        6,
        "5 entries plus the indirect descriptor"
    );
    let mem = q.memory().clone();
    let mut all = vec![0; 50];
    c.reader(&*mem).read_exact(&mut all).unwrap();
    let mut expected = pattern(16, 1);
    expected.extend(pattern(1, 2));
    expected.extend(pattern(33, 3));
    assert_eq!(all, expected);
    let mut w = c.writer(&*mem);
    w.write_all(&pattern(68, 4)).unwrap();
    assert_eq!(
        drv.memory().peek(tc.writable[1].addr, 64),
        pattern(68, 4)[4..]
    );
    q.add_used(c.head(), w.written()).unwrap();
    assert_eq!(drv.pop_used(), Some((u32::from(tc.head), 68)));
    assert_no_oob(&drv);
}

#[test]
fn indirect_descriptor_at_end_of_direct_chain() {
    // Two direct readable descriptors followed by an indirect one with a writable entry.
    let (drv, mut q) = setup(8, 1 << 16, false);
    let base = drv.config().used_addr + 0x1000;
    drv.write_desc(
        5,
        Descriptor {
            addr: base,
            len: 8,
            flags: VIRTQ_DESC_F_NEXT,
            next: 2,
        },
    );
    drv.write_desc(
        2,
        Descriptor {
            addr: base + 8,
            len: 8,
            flags: VIRTQ_DESC_F_NEXT,
            next: 7,
        },
    );
    drv.write_table(
        base + 0x100,
        &[Descriptor {
            addr: base + 16,
            len: 32,
            flags: VIRTQ_DESC_F_WRITE,
            next: 0,
        }],
    );
    drv.write_desc(
        7,
        // WRITE on the indirect descriptor itself must be ignored.
        Descriptor {
            addr: base + 0x100,
            len: 16,
            flags: crate::VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE,
            next: 0,
        },
    );
    let mut drv = drv;
    drv.push_avail(5);
    let c = pop_one(&mut q);
    assert_eq!(
        c.readable(),
        &[
            Segment { addr: base, len: 8 },
            Segment {
                addr: base + 8,
                len: 8
            }
        ]
    );
    assert_eq!(
        c.writable(),
        &[Segment {
            addr: base + 16,
            len: 32
        }]
    );
    assert_eq!(c.descriptor_count(), 4);
    assert_no_oob(&drv);
}

#[test]
fn reader_exact_skip_and_short_chain() {
    let (mut drv, mut q) = setup(4, 1 << 16, false);
    drv.add_chain(&[
        Buf::Readable(pattern(4, 0)),
        Buf::Readable(pattern(4, 4)),
        Buf::Readable(pattern(4, 8)),
    ]);
    let c = pop_one(&mut q);
    let mem = q.memory().clone();
    let mut r = c.reader(&*mem);
    let mut big = [0u8; 13];
    assert_eq!(
        r.read_exact(&mut big),
        Err(QueueError::ChainTooShort {
            needed: 13,
            available: 12
        })
    );
    assert_eq!(r.remaining(), 12, "a failed read_exact consumes nothing");
    assert_eq!(r.skip(6), 6);
    let mut two = [0u8; 2];
    r.read_exact(&mut two).unwrap();
    assert_eq!(two.to_vec(), pattern(4, 4)[2..]);
    assert_eq!(r.skip(100), 4);
    assert_eq!(r.remaining(), 0);
    assert_eq!(r.read(&mut two).unwrap(), 0);
    // A chain without writable buffers has a writer of zero capacity.
    let mut w = c.writer(&*mem);
    assert_eq!(w.remaining(), 0);
    assert_eq!(w.write(&[1]).unwrap(), 0);
    assert_eq!(
        w.write_all(&[1]),
        Err(QueueError::ChainTooShort {
            needed: 1,
            available: 0
        })
    );
    assert_eq!(w.written(), 0);
    assert_no_oob(&drv);
}

#[test]
fn writer_write_all_too_long_writes_nothing() {
    let (mut drv, mut q) = setup(4, 1 << 16, false);
    let tc = drv.add_chain(&[Buf::Writable(4), Buf::Writable(4)]);
    let c = pop_one(&mut q);
    let mem = q.memory().clone();
    let mut w = c.writer(&*mem);
    assert!(matches!(
        w.write_all(&[0xff; 9]),
        Err(QueueError::ChainTooShort {
            needed: 9,
            available: 8
        })
    ));
    assert_eq!(w.written(), 0);
    assert_eq!(drv.memory().peek(tc.writable[0].addr, 4), vec![0; 4]);
    assert_eq!(drv.memory().peek(tc.writable[1].addr, 4), vec![0; 4]);
    assert_no_oob(&drv);
}

#[test]
fn zero_length_descriptors_are_skipped() {
    let (mut drv, mut q) = setup(8, 1 << 16, false);
    let tc = drv.add_chain(&[
        Buf::Readable(vec![]),
        Buf::Readable(pattern(3, 0)),
        Buf::Writable(0),
        Buf::Writable(2),
        Buf::Writable(0),
    ]);
    let c = pop_one(&mut q);
    assert_eq!(c.readable(), &tc.readable[1..]);
    assert_eq!(c.writable(), &tc.writable[1..2]);
    assert_eq!(c.descriptor_count(), 5);
    assert_eq!((c.readable_len(), c.writable_len()), (3, 2));
    assert_no_oob(&drv);
}

#[test]
fn empty_ring() {
    let (drv, mut q) = setup(4, 1 << 16, false);
    let mut c = DescriptorChain::default();
    assert!(!q.pop(&mut c).unwrap());
    assert!(!q.has_available().unwrap());
    assert_eq!(q.next_avail(), 0);
    assert_eq!(q.stats(), Default::default());
    assert_no_oob(&drv);
}

#[test]
fn out_of_order_completion_fills_used_ring_in_order() {
    let (mut drv, mut q) = setup(8, 1 << 16, false);
    let heads: Vec<u16> = (0..4)
        .map(|i| drv.add_chain(&[Buf::Writable(8 + i)]).head)
        .collect();
    let mut popped = Vec::new();
    let mut c = DescriptorChain::default();
    while q.pop(&mut c).unwrap() {
        popped.push((c.head(), c.writable_len() as u32));
    }
    assert_eq!(popped.iter().map(|p| p.0).collect::<Vec<_>>(), heads);
    for &(h, len) in popped.iter().rev() {
        q.add_used(h, len).unwrap();
    }
    assert_eq!(drv.used_idx(), 4);
    for (i, &(h, len)) in popped.iter().rev().enumerate() {
        assert_eq!(drv.used_elem(i as u16), (u32::from(h), len));
    }
    assert_eq!(q.next_used(), 4);
    assert_no_oob(&drv);
}

#[test]
fn wrap_around_single_chains() {
    let (mut drv, mut q) = setup(4, 1 << 16, false);
    drv.set_indices(65530, 65533);
    q.set_next_avail(65530);
    q.set_next_used(65533);
    let mut c = DescriptorChain::default();
    for i in 0..70_000u32 {
        let len = i % 61 + 1;
        let tc = drv.add_chain(&[Buf::Readable(vec![i as u8; len as usize]), Buf::Writable(4)]);
        assert!(q.pop(&mut c).unwrap(), "iteration {i}");
        assert_eq!(c.head(), tc.head);
        assert_eq!(c.readable(), &tc.readable[..]);
        let mem = q.memory().clone();
        let mut buf = [0u8; 64];
        assert_eq!(c.reader(&*mem).read(&mut buf).unwrap(), len as usize);
        assert!(buf[..len as usize].iter().all(|&b| b == i as u8));
        q.add_used(c.head(), len).unwrap();
        assert_eq!(
            drv.pop_used(),
            Some((u32::from(tc.head), len)),
            "iteration {i}"
        );
        assert!(!q.pop(&mut c).unwrap());
    }
    assert_eq!(q.next_avail(), 65530u16.wrapping_add(70_000u32 as u16));
    assert_eq!(drv.used_idx(), 65533u16.wrapping_add(70_000u32 as u16));
    assert_eq!(q.stats().chains_popped, 70_000);
    assert_eq!(q.stats().used_added, 70_000);
    assert_no_oob(&drv);
}

#[test]
fn wrap_around_full_batches() {
    let (mut drv, mut q) = setup(8, 1 << 16, false);
    drv.set_indices(65531, 65531);
    q.set_next_avail(65531);
    q.set_next_used(65531);
    let mut c = DescriptorChain::default();
    for round in 0..9000u32 {
        // Fill the ring completely (avail.idx - next_avail == size is legal).
        let heads: Vec<u16> = (0..8)
            .map(|_| drv.add_chain(&[Buf::Writable(1)]).head)
            .collect();
        for &h in &heads {
            assert!(q.pop(&mut c).unwrap(), "round {round}");
            assert_eq!(c.head(), h);
            q.add_used(h, round).unwrap();
        }
        for &h in &heads {
            assert_eq!(drv.pop_used(), Some((u32::from(h), round)));
        }
    }
    assert_no_oob(&drv);
}

#[test]
fn queue_size_32768() {
    let size = crate::MAX_QUEUE_SIZE;
    let (mut drv, mut q) = setup(size, 2 << 20, true);
    // Every slot of the available ring used once, each a one-descriptor chain.
    let mut heads = Vec::new();
    for _ in 0..size {
        heads.push(drv.add_chain(&[Buf::Writable(1)]).head);
    }
    assert_eq!(drv.avail_idx(), size);
    let mut c = DescriptorChain::default();
    for &h in &heads {
        assert!(q.pop(&mut c).unwrap());
        assert_eq!(c.head(), h);
        q.add_used(h, 1).unwrap();
    }
    assert!(!q.pop(&mut c).unwrap());
    assert_eq!(drv.used_idx(), size);
    assert_eq!(drv.used_elem(size - 1), (u32::from(size - 1), 1));

    // The longest legal direct chain: all 32768 descriptors.
    let bufs: Vec<Buf> = (0..size).map(|_| Buf::Readable(vec![1])).collect();
    let tc = drv.add_chain(&bufs);
    assert!(q.pop(&mut c).unwrap());
    assert_eq!(c.head(), tc.head);
    assert_eq!(c.descriptor_count(), 32768);
    assert_eq!(c.readable().len(), 32768);
    assert_eq!(c.readable_len(), 32768);
    // avail_event lives after the 32768th used element.
    assert!(!q.enable_notification().unwrap());
    assert_eq!(drv.avail_event(), size.wrapping_add(1));
    assert_no_oob(&drv);
}

#[test]
fn queue_size_1() {
    let (mut drv, mut q) = setup(1, 1 << 16, false);
    let mut c = DescriptorChain::default();
    for i in 0..100u32 {
        let tc = drv.add_chain(&[Buf::Readable(vec![i as u8; 3])]);
        assert_eq!(tc.head, 0);
        assert!(q.pop(&mut c).unwrap());
        assert_eq!(c.readable(), &tc.readable[..]);
        // Only one entry may be outstanding.
        assert!(!q.pop(&mut c).unwrap());
        q.add_used(0, i).unwrap();
        assert_eq!(drv.pop_used(), Some((0, i)));
    }
    assert_no_oob(&drv);
}

#[test]
fn undo_pop_returns_the_chain() {
    let (mut drv, mut q) = setup(4, 1 << 16, false);
    let a = drv.add_chain(&[Buf::Readable(vec![1; 10])]);
    let b = drv.add_chain(&[Buf::Writable(20)]);
    let mut c = DescriptorChain::default();
    assert!(q.pop(&mut c).unwrap());
    assert_eq!(c.head(), a.head);
    let before = q.stats();
    assert!(q.pop(&mut c).unwrap());
    assert_eq!(c.head(), b.head);
    q.undo_pop();
    assert_eq!(q.next_avail(), 1);
    assert_eq!(q.stats(), before, "undo reverts the counters");
    // A second undo without a pop in between is ignored.
    q.undo_pop();
    assert_eq!(q.next_avail(), 1);
    assert!(q.pop(&mut c).unwrap());
    assert_eq!(c.head(), b.head);
    assert_eq!(c.writable_len(), 20);
    assert!(!q.pop(&mut c).unwrap());
    assert_no_oob(&drv);
}

#[test]
fn stats_count_chains_descriptors_bytes() {
    let (mut drv, mut q) = setup(8, 1 << 16, true);
    drv.add_chain(&[Buf::Readable(vec![0; 10]), Buf::Writable(20)]);
    drv.add_indirect_chain(&[
        Buf::Readable(vec![0; 1]),
        Buf::Readable(vec![]),
        Buf::Writable(5),
    ]);
    let mut c = DescriptorChain::default();
    while q.pop(&mut c).unwrap() {
        q.add_used(c.head(), 0).unwrap();
    }
    drv.set_used_event(1);
    assert!(q.needs_interrupt().unwrap());
    let s = q.stats();
    assert_eq!(s.chains_popped, 2);
    assert_eq!(s.descriptors, 2 + 4);
    assert_eq!(s.bytes, 30 + 6);
    assert_eq!(s.used_added, 2);
    assert_eq!(s.interrupts_suggested, 1);
    assert_no_oob(&drv);
}

#[test]
fn warm_chain_reuses_its_buffers() {
    let (mut drv, mut q) = setup(8, 1 << 16, false);
    let mut c = DescriptorChain::default();
    drv.add_chain(&[
        Buf::Readable(vec![1; 4]),
        Buf::Readable(vec![1; 4]),
        Buf::Writable(4),
    ]);
    assert!(q.pop(&mut c).unwrap());
    q.add_used(c.head(), 0).unwrap();
    let (rp, wp) = (c.readable().as_ptr(), c.writable().as_ptr());
    for _ in 0..20 {
        drv.add_chain(&[Buf::Readable(vec![1; 4]), Buf::Writable(4)]);
        assert!(q.pop(&mut c).unwrap());
        assert_eq!((c.readable().as_ptr(), c.writable().as_ptr()), (rp, wp));
        q.add_used(c.head(), 0).unwrap();
    }
    assert_no_oob(&drv);
}

#[test]
fn new_validates_size() {
    let mem: Arc<dyn HostMemory> = Arc::new(TestMemory::new(1 << 20));
    for size in [0u16, 3, 6, 100, 32767, 32769, 65535] {
        let cfg = QueueConfig {
            size,
            desc_addr: TEST_MEMORY_BASE,
            avail_addr: TEST_MEMORY_BASE + 0x8_0000,
            used_addr: TEST_MEMORY_BASE + 0x9_0000,
        };
        assert_eq!(
            Queue::new(cfg, mem.clone(), false).err(),
            Some(QueueError::BadSize { size })
        );
    }
}

#[test]
fn new_validates_alignment() {
    let tm = Arc::new(TestMemory::new(1 << 16));
    let mem: Arc<dyn HostMemory> = tm.clone();
    let b = TEST_MEMORY_BASE;
    let good = QueueConfig {
        size: 16,
        desc_addr: b,
        avail_addr: b + 0x1000,
        used_addr: b + 0x2000,
    };
    Queue::new(good, mem.clone(), false).unwrap();
    for (cfg, ring, addr) in [
        (
            QueueConfig {
                desc_addr: b + 8,
                ..good
            },
            Ring::Descriptors,
            b + 8,
        ),
        (
            QueueConfig {
                avail_addr: b + 0x1001,
                ..good
            },
            Ring::Avail,
            b + 0x1001,
        ),
        (
            QueueConfig {
                used_addr: b + 0x2002,
                ..good
            },
            Ring::Used,
            b + 0x2002,
        ),
    ] {
        assert_eq!(
            Queue::new(cfg, mem.clone(), false).err(),
            Some(QueueError::Misaligned { ring, addr })
        );
    }
    assert_eq!(tm.oob_attempts(), 0);
}

#[test]
fn new_validates_ranges_including_event_fields() {
    let tm = Arc::new(TestMemory::new(1 << 16));
    let mem: Arc<dyn HostMemory> = tm.clone();
    let b = TEST_MEMORY_BASE;
    let end = tm.end();
    let size = 16u16;
    let good = QueueConfig {
        size,
        desc_addr: b,
        avail_addr: b + 0x1000,
        used_addr: b + 0x2000,
    };
    // Areas ending exactly at the end of memory are fine.
    let at_end = QueueConfig {
        desc_addr: end - 16 * 16,
        avail_addr: end - (6 + 2 * 16),
        used_addr: end - (6 + 8 * 16) - 2,
        ..good
    };
    Queue::new(at_end, mem.clone(), true).unwrap();
    let cases = [
        // One byte too far: the event field would be outside.
        (
            QueueConfig {
                avail_addr: end - (6 + 2 * 16) + 2,
                ..good
            },
            Ring::Avail,
            38,
        ),
        (
            QueueConfig {
                used_addr: end - (6 + 8 * 16) + 2,
                ..good
            },
            Ring::Used,
            134,
        ),
        (
            QueueConfig {
                desc_addr: end - 16 * 15,
                ..good
            },
            Ring::Descriptors,
            256,
        ),
        (
            QueueConfig {
                desc_addr: b - 0x1000,
                ..good
            },
            Ring::Descriptors,
            256,
        ),
        (
            QueueConfig {
                used_addr: 0,
                ..good
            },
            Ring::Used,
            134,
        ),
        (
            QueueConfig {
                avail_addr: u64::MAX - 1,
                ..good
            },
            Ring::Avail,
            38,
        ),
        (
            QueueConfig {
                used_addr: u64::MAX - 3,
                ..good
            },
            Ring::Used,
            134,
        ),
    ];
    for (cfg, ring, len) in cases {
        let addr = match ring {
            Ring::Descriptors => cfg.desc_addr,
            Ring::Avail => cfg.avail_addr,
            Ring::Used | Ring::DriverEvent | Ring::DeviceEvent => cfg.used_addr,
        };
        assert_eq!(
            Queue::new(cfg, mem.clone(), false).err(),
            Some(QueueError::RingOutOfRange { ring, addr, len }),
            "{cfg:x?}"
        );
    }
    assert_eq!(tm.oob_attempts(), 0);
}

/// A memory whose `check_range` and reads fail with a non-range error (no outbound window).
struct NoWindowMemory(TestMemory, bool);

impl HostMemory for NoWindowMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
        if self.1 {
            return Err(HostMemError::NoWindow { addr });
        }
        self.0.read(addr, buf)
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), HostMemError> {
        self.0.write(addr, data)
    }
    fn check_range(&self, addr: u64, _len: u64) -> Result<(), HostMemError> {
        if self.1 {
            return Ok(());
        }
        Err(HostMemError::NoWindow { addr })
    }
    fn read_u16(&self, addr: u64) -> Result<u16, HostMemError> {
        let mut b = [0; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    fn write_u16(&self, addr: u64, v: u16) -> Result<(), HostMemError> {
        self.0.write_u16(addr, v)
    }
}

#[test]
fn memory_failures_are_reported_as_memory_errors() {
    let b = TEST_MEMORY_BASE;
    let cfg = QueueConfig {
        size: 4,
        desc_addr: b,
        avail_addr: b + 0x100,
        used_addr: b + 0x200,
    };
    let m = Arc::new(NoWindowMemory(TestMemory::new(4096), false));
    assert_eq!(
        Queue::new(cfg, m, false).err(),
        Some(QueueError::Memory(HostMemError::NoWindow { addr: b }))
    );
    let m = Arc::new(NoWindowMemory(TestMemory::new(4096), true));
    let mut q = Queue::new(cfg, m, false).unwrap();
    assert_eq!(
        q.pop(&mut DescriptorChain::default()),
        Err(QueueError::Memory(HostMemError::NoWindow {
            addr: b + 0x102
        }))
    );
}

#[test]
fn driver_ring_at_custom_addresses() {
    // Rings in a different order than DriverRing::new uses, at a non-default base.
    let mem = Arc::new(TestMemory::with_base(0x8000_0000, 1 << 16));
    let cfg = QueueConfig {
        size: 2,
        desc_addr: 0x8000_3000,
        avail_addr: 0x8000_1002,
        used_addr: 0x8000_0004,
    };
    let mut drv = DriverRing::with_config(mem, cfg, 0x8000_4000);
    let mut q = Queue::new(cfg, drv.host_memory(), false).unwrap();
    let tc = drv.add_chain(&[Buf::Readable(vec![5; 5]), Buf::Writable(5)]);
    let c = pop_one(&mut q);
    assert_eq!(c.readable(), &tc.readable[..]);
    assert_eq!(c.writable(), &tc.writable[..]);
    q.add_used(c.head(), 5).unwrap();
    assert_eq!(drv.pop_used(), Some((u32::from(tc.head), 5)));
    assert_no_oob(&drv);
}
