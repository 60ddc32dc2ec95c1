//! Notification data (VIRTIO_F_NOTIFICATION_DATA) on both ring formats: the reads it saves
//! (counted by [`TestMemory`]), and that understated, overstated, stale and out-of-range
//! values lose no buffer, hang nothing and never reach outside the rings.

use crate::testing::{Buf, DriverRing, PackedDriverRing, TestMemory};
use crate::{DescriptorChain, Queue, QueueError};
use std::sync::Arc;

fn split(size: u16) -> (DriverRing, Queue) {
    let mem = Arc::new(TestMemory::new(1 << 16));
    let drv = DriverRing::new(mem, size);
    let q = Queue::new(drv.config(), drv.host_memory(), true).expect("valid queue");
    (drv, q)
}

fn packed(size: u16) -> (PackedDriverRing, Queue) {
    let mem = Arc::new(TestMemory::new(1 << 16));
    let drv = PackedDriverRing::new(mem, size);
    let q = Queue::new_packed(drv.config(), drv.host_memory(), true).expect("valid queue");
    (drv, q)
}

/// Pops until the queue says empty; the heads popped.
fn drain(q: &mut Queue) -> Vec<u16> {
    let mut c = DescriptorChain::default();
    let mut heads = Vec::new();
    while q.pop(&mut c).expect("pop") {
        heads.push(c.head());
        assert!(
            heads.len() <= usize::from(q.size()),
            "popped more than the ring holds"
        );
    }
    heads
}

/// Host-memory accesses made by `f`.
fn accesses(mem: &TestMemory, f: impl FnOnce()) -> u64 {
    let before = mem.accesses();
    f();
    mem.accesses() - before
}

#[test]
fn split_data_replaces_both_avail_idx_reads_of_a_pass() {
    let run = |hint: bool| {
        let (mut drv, mut q) = split(16);
        let heads: Vec<u16> = (0..4)
            .map(|i| drv.add_chain(&[Buf::Readable(vec![i; 8])]).head)
            .collect();
        if hint {
            q.note_notification(drv.avail_idx());
        }
        let mem = drv.memory().clone();
        let mut got = Vec::new();
        let n = accesses(&mem, || got = drain(&mut q));
        assert_eq!(got, heads);
        // The re-check after re-enabling notifications reads avail.idx either way.
        assert!(!q.enable_notification().unwrap());
        assert_eq!(mem.oob_attempts(), 0);
        (n, q.stats().ring_reads_saved)
    };
    let (plain, saved0) = run(false);
    let (hinted, saved) = run(true);
    assert_eq!(saved0, 0);
    assert_eq!(saved, 2, "the pass's first and last avail.idx reads");
    assert_eq!(plain - hinted, 2);
}

#[test]
fn split_understated_data_loses_nothing() {
    let (mut drv, mut q) = split(8);
    let heads: Vec<u16> = (0u8..5)
        .map(|i| drv.add_chain(&[Buf::Writable(4 + u32::from(i))]).head)
        .collect();
    q.note_notification(drv.avail_idx().wrapping_sub(3));
    assert_eq!(drain(&mut q), heads[..2]);
    // The re-check reads the ring and finds the rest.
    assert!(q.enable_notification().unwrap());
    assert_eq!(drain(&mut q), heads[2..]);
    assert_eq!(drv.memory().oob_attempts(), 0);
}

#[test]
fn split_stale_or_out_of_window_data_is_ignored() {
    let (mut drv, mut q) = split(8);
    for _ in 0..3 {
        drv.add_chain(&[Buf::Writable(4)]);
    }
    assert_eq!(drain(&mut q).len(), 3);
    let h = drv.add_chain(&[Buf::Writable(4)]).head;
    // Behind what was popped (a late notification), then further ahead than the ring.
    for stale in [
        drv.avail_idx().wrapping_sub(3),
        drv.avail_idx().wrapping_add(9),
    ] {
        q.note_notification(stale);
        let saved = q.stats().ring_reads_saved;
        let got = drain(&mut q);
        assert_eq!(q.stats().ring_reads_saved, saved, "{stale}: read avail.idx");
        if !got.is_empty() {
            assert_eq!(got, [h]);
        }
    }
    assert_eq!(q.stats().chains_popped, 4);
    assert_eq!(drv.memory().oob_attempts(), 0);
}

#[test]
fn split_overstated_data_is_a_malformed_ring_not_a_crash() {
    let (mut drv, mut q) = split(8);
    drv.add_chain(&[Buf::Writable(4)]);
    drv.add_chain(&[Buf::Writable(4)]);
    q.note_notification(drv.avail_idx().wrapping_add(3));
    // Stale entries beyond avail.idx are walked (and validated) like any other.
    assert_eq!(drain(&mut q).len(), 5);
    // The ring's own avail.idx then lies behind what was popped.
    assert!(matches!(
        q.enable_notification(),
        Err(QueueError::AvailIdxJump { .. })
    ));
    assert_eq!(drv.memory().oob_attempts(), 0);
}

#[test]
fn packed_data_saves_the_flags_reads_and_the_evidence_re_read() {
    let run = |hint: bool| {
        let (mut drv, mut q) = packed(16);
        let heads: Vec<u16> = (0..8)
            .map(|i| drv.add_chain(&[Buf::Readable(vec![i; 8])]).head)
            .collect();
        if hint {
            q.note_notification(drv.avail_off_wrap());
        }
        let mem = drv.memory().clone();
        let mut got = Vec::new();
        let n = accesses(&mem, || got = drain(&mut q));
        assert_eq!(got, heads);
        assert!(!q.enable_notification().unwrap());
        assert_eq!(mem.oob_attempts(), 0);
        (n, q.stats().ring_reads_saved)
    };
    let (plain, saved0) = run(false);
    let (hinted, saved) = run(true);
    assert_eq!(saved0, 0);
    assert_eq!(saved, 2, "the first and the last flags read of the pass");
    // Without data: flags read, block read (evidence), block re-read, flags read. With it:
    // one block read.
    assert_eq!((plain, hinted), (4, 1));
}

#[test]
fn packed_understated_data_loses_nothing() {
    let (mut drv, mut q) = packed(8);
    let heads: Vec<u16> = (0u8..5)
        .map(|i| drv.add_chain(&[Buf::Writable(4 + u32::from(i))]).head)
        .collect();
    let (pos, wrap) = drv.avail_position();
    let w = u16::from(wrap) << 15;
    // Announcing nothing new: the pass ends without a read...
    q.note_notification(w);
    assert!(drain(&mut q).is_empty());
    // ...and the re-check, which reads, finds the buffers.
    assert!(q.enable_notification().unwrap());
    // Two announced: the block read that trusts them is evidence for the other three.
    q.note_notification((pos - 3) | w);
    assert_eq!(drain(&mut q), heads);
    assert!(!q.enable_notification().unwrap());
    assert_eq!(drv.memory().oob_attempts(), 0);
}

#[test]
fn packed_overstated_stale_or_out_of_range_data_is_contained() {
    let (mut drv, mut q) = packed(8);
    let a = drv.add_chain(&[Buf::Writable(4)]).head;
    let b = drv.add_chain(&[Buf::Writable(4), Buf::Writable(2)]).head;
    let (pos, wrap) = drv.avail_position();
    let w = u16::from(wrap) << 15;
    // Three more than were made available: the flags still decide.
    q.note_notification((pos + 3) | w);
    assert_eq!(drain(&mut q), [a, b]);
    assert!(!q.pop(&mut DescriptorChain::default()).unwrap());
    // An offset beyond the ring, and the position a lap behind (wrap counter flipped).
    for bad in [8 | w, pos | (w ^ 0x8000), 0x7fff] {
        q.note_notification(bad);
        assert!(drain(&mut q).is_empty(), "{bad:#x}");
    }
    // Everything still works: complete, add more, pop with correct data.
    q.add_used(a, 0).unwrap();
    q.add_used(b, 0).unwrap();
    assert!(drv.pop_used().is_some() && drv.pop_used().is_some());
    let c = drv.add_chain(&[Buf::Writable(4)]).head;
    q.note_notification(drv.avail_off_wrap());
    assert_eq!(drain(&mut q), [c]);
    assert_eq!(drv.memory().oob_attempts(), 0);
}

/// Rounds of 1..=size chains (some of two or three descriptors, some indirect), each
/// announced by notification data, around the ring many times at several sizes: every
/// chain is popped once, in order, and the pass ends without reading the ring.
#[test]
fn packed_data_across_wrap_around_at_several_sizes() {
    for size in [1u16, 2, 3, 5, 8, 13, 32, 64] {
        let (mut drv, mut q) = packed(size);
        let mut seed = u32::from(size) * 7919;
        for round in 0..200 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let mut expect = Vec::new();
            while drv.free_descs() > 0 && drv.free_ids() > 0 {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let len = 1 + (seed >> 16) % 3;
                if expect.len() == 1 + (seed >> 20) as usize % usize::from(size) {
                    break;
                }
                let h = if len == 3 {
                    drv.add_indirect_chain(&[Buf::Writable(4), Buf::Writable(4)])
                } else if u16::try_from(len).unwrap() <= drv.free_descs() {
                    let bufs: Vec<Buf> = (0..len).map(|_| Buf::Writable(8)).collect();
                    drv.add_chain(&bufs)
                } else {
                    break;
                };
                expect.push(h.head);
            }
            q.note_notification(drv.avail_off_wrap());
            let reads = q.stats().ring_reads_saved;
            assert_eq!(drain(&mut q), expect, "size {size} round {round}");
            assert!(q.stats().ring_reads_saved > reads);
            let used: Vec<(u16, u32)> = expect.iter().map(|&h| (h, 1)).collect();
            q.add_used_many(&used).unwrap();
            for &h in &expect {
                assert_eq!(drv.pop_used(), Some((h, 1)));
            }
            assert!(!q.enable_notification().unwrap());
        }
        assert_eq!(drv.memory().oob_attempts(), 0);
    }
}
