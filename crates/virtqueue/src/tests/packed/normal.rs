//! Packed ring, normal operation: chains, indirect tables, out-of-order completion, batches,
//! wrap-around at several queue sizes (including non-powers of two), undo, creation checks.

use super::{assert_no_oob, setup};
use crate::packed::format::{PackedDescriptor, VIRTQ_DESC_F_AVAIL};
use crate::testing::{Buf, PackedDriverRing, TestMemory};
use crate::{DescriptorChain, Queue, QueueConfig, QueueError, Ring};
use std::sync::Arc;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

fn pop_one(q: &mut Queue) -> DescriptorChain {
    let mut c = DescriptorChain::default();
    assert!(q.pop(&mut c).expect("pop"), "ring unexpectedly empty");
    c
}

#[test]
fn direct_chain_round_trip() {
    let (mut drv, mut q) = setup(8, 1 << 16, false);
    assert!(q.is_packed());
    let a = pattern(5, 1);
    let tc = drv.add_chain(&[
        Buf::Readable(a.clone()),
        Buf::Writable(3),
        Buf::Writable(10),
    ]);
    assert!(q.has_available().unwrap());
    let c = pop_one(&mut q);
    assert_eq!(c.head(), tc.head);
    assert_eq!(c.readable(), &tc.readable[..]);
    assert_eq!(c.writable(), &tc.writable[..]);
    assert_eq!(c.descriptor_count(), 3);
    let mem = q.memory().clone();
    let mut got = vec![0; 5];
    c.reader(&*mem).read_exact(&mut got).unwrap();
    assert_eq!(got, a);
    let mut w = c.writer(&*mem);
    w.write_all(&pattern(13, 7)).unwrap();
    assert!(!q.pop(&mut DescriptorChain::default()).unwrap());
    assert_eq!(drv.pop_used(), None);
    q.add_used(c.head(), w.written()).unwrap();
    assert_eq!(drv.pop_used(), Some((tc.head, 13)));
    assert_eq!(
        drv.memory().peek(tc.writable[1].addr, 10),
        pattern(13, 7)[3..]
    );
    // The used descriptor sits at position 0 and the next one at 3 (the chain's length).
    assert_eq!(q.next_used(), 3 | 0x8000);
    assert_eq!(q.next_avail(), 3 | 0x8000);
    assert_eq!(q.stats().chains_popped, 1);
    assert_eq!(q.stats().used_added, 1);
    assert_no_oob(&drv);
}

#[test]
fn indirect_chain_round_trip() {
    let (mut drv, mut q) = setup(4, 1 << 16, false);
    let tc = drv.add_indirect_chain(&[
        Buf::Readable(pattern(16, 1)),
        Buf::Readable(pattern(3, 2)),
        Buf::Writable(8),
    ]);
    let c = pop_one(&mut q);
    assert_eq!(c.head(), tc.head);
    assert_eq!(c.readable(), &tc.readable[..]);
    assert_eq!(c.writable(), &tc.writable[..]);
    // The ring descriptor and three table entries.
    assert_eq!(c.descriptor_count(), 4);
    q.add_used(c.head(), 8).unwrap();
    assert_eq!(drv.pop_used(), Some((tc.head, 8)));
    // An indirect buffer takes one ring descriptor.
    assert_eq!(q.next_used(), 1 | 0x8000);
    assert_no_oob(&drv);
}

#[test]
fn indirect_table_ignores_next_and_ids_and_refuses_nesting() {
    let (mut drv, mut q) = setup(4, 1 << 16, false);
    let data = drv.alloc(64);
    let table = drv.alloc(48);
    // NEXT and ids inside the table mean nothing: all three entries are used in order.
    drv.write_table(
        table,
        &[
            PackedDescriptor {
                addr: data,
                len: 4,
                id: 77,
                flags: 1,
            },
            PackedDescriptor {
                addr: data + 8,
                len: 4,
                id: 0,
                flags: 0,
            },
            PackedDescriptor {
                addr: data + 16,
                len: 4,
                id: 5,
                flags: 2 | 1,
            },
        ],
    );
    drv.publish_raw(&[PackedDescriptor {
        addr: table,
        len: 48,
        id: 2,
        flags: 4,
    }]);
    let c = pop_one(&mut q);
    assert_eq!(c.head(), 2);
    assert_eq!(c.readable().len(), 2);
    assert_eq!(c.writable().len(), 1);
    // A nested indirect entry is refused.
    drv.write_table(
        table,
        &[PackedDescriptor {
            addr: table,
            len: 16,
            id: 0,
            flags: 4,
        }],
    );
    drv.publish_raw(&[PackedDescriptor {
        addr: table,
        len: 16,
        id: 3,
        flags: 4,
    }]);
    assert_eq!(
        q.pop(&mut DescriptorChain::default()),
        Err(QueueError::NestedIndirect { head: 1 })
    );
    assert_no_oob(&drv);
}

#[test]
fn out_of_order_completion_and_batches() {
    let (mut drv, mut q) = setup(8, 1 << 16, false);
    let a = drv.add_chain(&[Buf::Writable(4), Buf::Writable(4)]);
    let b = drv.add_chain(&[Buf::Writable(4)]);
    let c = drv.add_chain(&[
        Buf::Readable(vec![1; 4]),
        Buf::Writable(4),
        Buf::Writable(1),
    ]);
    let ca = pop_one(&mut q);
    let cb = pop_one(&mut q);
    let cc = pop_one(&mut q);
    assert_eq!((ca.head(), cb.head(), cc.head()), (a.head, b.head, c.head));
    // Used in the order c, a, b: used descriptors go to positions 0, 3 (c had 3), 5.
    q.add_used(c.head, 5).unwrap();
    q.add_used_many(&[(a.head, 8), (b.head, 4)]).unwrap();
    assert_eq!(drv.pop_used(), Some((c.head, 5)));
    assert_eq!(drv.pop_used(), Some((a.head, 8)));
    assert_eq!(drv.pop_used(), Some((b.head, 4)));
    assert_eq!(drv.pop_used(), None);
    assert_eq!(drv.read_desc(3).id, a.head);
    assert_eq!(drv.read_desc(5).id, b.head);
    assert_eq!(q.next_used(), 6 | 0x8000);
    assert_eq!(q.stats().used_added, 3);
    // Ids no longer in flight, repeated or out of range are refused before any write.
    let d = drv.add_chain(&[Buf::Writable(1)]);
    pop_one(&mut q);
    let before = drv.memory().peek(drv.desc_addr(6), 32);
    assert_eq!(
        q.add_used_many(&[(d.head, 1), (d.head, 1)]),
        Err(QueueError::UsedIdNotInFlight { id: d.head })
    );
    assert_eq!(
        q.add_used_many(&[(d.head, 1), (a.head, 1)]),
        Err(QueueError::UsedIdNotInFlight { id: a.head })
    );
    assert_eq!(
        q.add_used(8, 1),
        Err(QueueError::UsedIdOutOfRange { id: 8, size: 8 })
    );
    assert_eq!(drv.memory().peek(drv.desc_addr(6), 32), before);
    q.add_used_many(&[(d.head, 1)]).unwrap();
    assert_eq!(drv.pop_used(), Some((d.head, 1)));
    q.add_used_many(&[]).unwrap();
    assert_no_oob(&drv);
}

/// Runs `rounds` batches of mixed chains through a ring of `size`, completing each batch in
/// reverse order, so positions and both wrap counters go around several times (including
/// chains that wrap in the middle).
fn wrap_around(size: u16, rounds: usize) {
    let (mut drv, mut q) = setup(size, 1 << 20, false);
    let mut c = DescriptorChain::default();
    let mut served = 0;
    for round in 0..rounds {
        let mut heads = Vec::new();
        loop {
            let n = 1 + (round + heads.len()) % 3;
            let n = n.min(usize::from(size));
            if drv.free_descs() < n as u16 || drv.free_ids() == 0 {
                break;
            }
            let mut bufs = vec![Buf::Readable(pattern(3, round as u8))];
            bufs.extend((1..n).map(|_| Buf::Writable(2)));
            let tc = if n == 2 && size > 1 && round % 4 == 1 {
                drv.add_indirect_chain(&bufs)
            } else {
                drv.add_chain(&bufs)
            };
            heads.push(tc);
            if heads.len() == 2 {
                break;
            }
        }
        let mut popped = Vec::new();
        while q.pop(&mut c).unwrap() {
            let tc = &heads[popped.len()];
            assert_eq!(c.head(), tc.head);
            assert_eq!(c.readable(), &tc.readable[..]);
            assert_eq!(c.writable(), &tc.writable[..]);
            popped.push(c.head());
        }
        assert_eq!(popped.len(), heads.len(), "round {round}");
        for &h in popped.iter().rev() {
            q.add_used(h, u32::from(h)).unwrap();
        }
        for &h in popped.iter().rev() {
            assert_eq!(drv.pop_used(), Some((h, u32::from(h))));
        }
        served += popped.len();
        assert_eq!(drv.used_position(), drv.avail_position());
    }
    assert!(served >= rounds);
    assert_eq!(q.next_avail(), drv.avail_off_wrap());
    assert_eq!(q.next_used(), drv.used_off_wrap());
    assert_no_oob(&drv);
}

#[test]
fn wrap_around_at_several_sizes() {
    for size in [1u16, 2, 3, 4, 5, 8, 13, 64, 256] {
        wrap_around(size, 4 * usize::from(size) + 7);
    }
}

#[test]
fn full_ring_then_wrap() {
    for size in [4u16, 7, 16] {
        let (mut drv, mut q) = setup(size, 1 << 18, true);
        for lap in 0..5 {
            let tcs: Vec<_> = (0..size)
                .map(|_| drv.add_chain(&[Buf::Writable(1)]))
                .collect();
            let mut c = DescriptorChain::default();
            let mut elems = Vec::new();
            for tc in &tcs {
                assert!(q.pop(&mut c).unwrap(), "lap {lap}");
                assert_eq!(c.head(), tc.head);
                elems.push((c.head(), 1));
            }
            // The ring is full: what is at the next position is from this lap.
            assert!(!q.pop(&mut c).unwrap());
            q.add_used_many(&elems).unwrap();
            for tc in &tcs {
                assert_eq!(drv.pop_used(), Some((tc.head, 1)));
            }
        }
        assert_no_oob(&drv);
    }
}

#[test]
fn queue_size_32768() {
    let (mut drv, mut q) = setup(32768, 1 << 20, false);
    q.set_next_avail(32766 | 0x8000);
    q.set_next_used(32766 | 0x8000);
    // Move the driver to the same place by filling and draining the ring once.
    for _ in 0..32766 {
        drv.publish_raw(&[PackedDescriptor {
            addr: 0,
            len: 0,
            id: 0,
            flags: 0,
        }]);
    }
    let tc = drv.add_chain(&[Buf::Readable(vec![1]), Buf::Writable(1), Buf::Writable(1)]);
    let c = pop_one(&mut q);
    assert_eq!(c.head(), tc.head);
    assert_eq!(q.next_avail(), 1);
    assert_no_oob(&drv);
}

#[test]
fn undo_pop_returns_the_chain() {
    let (mut drv, mut q) = setup(4, 1 << 16, false);
    let tc = drv.add_chain(&[Buf::Readable(vec![1, 2]), Buf::Writable(2)]);
    let c = pop_one(&mut q);
    q.undo_pop();
    assert_eq!(q.stats().chains_popped, 0);
    assert_eq!(q.next_avail(), 0x8000);
    // Not in flight any more.
    assert_eq!(
        q.add_used(tc.head, 0),
        Err(QueueError::UsedIdNotInFlight { id: tc.head })
    );
    let again = pop_one(&mut q);
    assert_eq!((again.head(), again.readable()), (c.head(), c.readable()));
    q.undo_pop();
    q.undo_pop(); // Only one undo: the second does nothing.
    let again = pop_one(&mut q);
    q.add_used(again.head(), 2).unwrap();
    assert_eq!(drv.pop_used(), Some((tc.head, 2)));
    assert_no_oob(&drv);
}

#[test]
fn new_packed_validates_size_alignment_and_ranges() {
    let mem = Arc::new(TestMemory::new(1 << 16));
    let base = mem.base();
    let cfg = |size, desc, driver, device| QueueConfig {
        size,
        desc_addr: desc,
        avail_addr: driver,
        used_addr: device,
    };
    let new = |c| Queue::new_packed(c, mem.clone(), false).map(|_| ());
    assert_eq!(
        new(cfg(0, base, base + 0x1000, base + 0x1004)),
        Err(QueueError::BadSize { size: 0 })
    );
    assert_eq!(
        new(cfg(32769, base, base + 0x1000, base + 0x1004)),
        Err(QueueError::BadSize { size: 32769 })
    );
    // Not a power of two: fine for a packed ring.
    new(cfg(3, base, base + 0x1000, base + 0x1004)).unwrap();
    assert_eq!(
        new(cfg(4, base + 8, base + 0x1000, base + 0x1004)),
        Err(QueueError::Misaligned {
            ring: Ring::Descriptors,
            addr: base + 8
        })
    );
    assert_eq!(
        new(cfg(4, base, base + 0x1002, base + 0x1004)),
        Err(QueueError::Misaligned {
            ring: Ring::DriverEvent,
            addr: base + 0x1002
        })
    );
    assert_eq!(
        new(cfg(4, base, base + 0x1000, base + 0x1006)),
        Err(QueueError::Misaligned {
            ring: Ring::DeviceEvent,
            addr: base + 0x1006
        })
    );
    let end = mem.end();
    assert_eq!(
        new(cfg(4, end - 48, base + 0x1000, base + 0x1004)),
        Err(QueueError::RingOutOfRange {
            ring: Ring::Descriptors,
            addr: end - 48,
            len: 64
        })
    );
    assert_eq!(
        new(cfg(4, base, end, base + 0x1004)),
        Err(QueueError::RingOutOfRange {
            ring: Ring::DriverEvent,
            addr: end,
            len: 4
        })
    );
    assert_eq!(
        new(cfg(4, base, base + 0x1000, u64::MAX - 3)),
        Err(QueueError::RingOutOfRange {
            ring: Ring::DeviceEvent,
            addr: u64::MAX - 3,
            len: 4
        })
    );
    new(cfg(4, base, end - 8, end - 4)).unwrap();
    assert_eq!(mem.oob_attempts(), 0);
}

#[test]
fn zeroed_ring_is_empty_and_stale_laps_are_not_available() {
    let (drv, mut q) = setup(4, 1 << 16, false);
    let mut c = DescriptorChain::default();
    assert!(!q.pop(&mut c).unwrap());
    // AVAIL set on the first lap but USED also set: a used descriptor, not available.
    drv.write_desc(
        0,
        PackedDescriptor {
            addr: 0,
            len: 0,
            id: 0,
            flags: VIRTQ_DESC_F_AVAIL | 0x8000,
        },
    );
    assert!(!q.pop(&mut c).unwrap());
    assert!(!q.has_available().unwrap());
    let _ = PackedDriverRing::new(drv.memory().clone(), 4);
    assert_no_oob(&drv);
}

/// Batched reads: a run of available single-descriptor chains costs one flags read and
/// about two block reads per 32 descriptors (one whose flags are the evidence, one whose
/// contents are used), descriptors published while the device is in
/// the middle of a run are picked up in order, and a pass's used descriptors take three
/// writes.
#[test]
fn runs_are_read_in_blocks_and_published_in_three_writes() {
    let (mut drv, mut q) = setup(256, 1 << 20, false);
    let mut tcs: Vec<_> = (0..64)
        .map(|_| drv.add_chain(&[Buf::Writable(8)]))
        .collect();
    let mem = drv.memory().clone();
    let before = mem.accesses();
    let mut c = DescriptorChain::default();
    let mut elems = Vec::new();
    for tc in &tcs[..40] {
        assert!(q.pop(&mut c).unwrap());
        assert_eq!(c.head(), tc.head);
        assert_eq!(c.writable(), &tc.writable[..]);
        elems.push((c.head(), 8));
    }
    // The flags at 0, then blocks at 0 (evidence for 1..32), 1 (contents of 1..32, evidence
    // for 32), 32 and 33: five reads where one per descriptor would be 80.
    let reads = mem.accesses() - before;
    assert_eq!(reads, 5, "reads for 40 chains");
    // More published mid-run: found in order after the first 64.
    tcs.extend((0..10).map(|_| drv.add_chain(&[Buf::Writable(8)])));
    for tc in &tcs[40..] {
        assert!(q.pop(&mut c).unwrap());
        assert_eq!(c.head(), tc.head);
        elems.push((c.head(), 8));
    }
    assert!(!q.pop(&mut c).unwrap());
    let before = mem.accesses();
    q.add_used_many(&elems[..32]).unwrap();
    assert_eq!(
        mem.accesses() - before,
        3,
        "three writes for 32 used descriptors"
    );
    q.add_used_many(&elems[32..]).unwrap();
    for &(id, len) in &elems {
        assert_eq!(drv.pop_used(), Some((id, len)));
    }
    assert_eq!(drv.pop_used(), None);
    assert_no_oob(&drv);
}
