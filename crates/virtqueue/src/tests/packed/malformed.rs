//! Packed ring: one test per rule a driver (or hostile host) can break, each asserting the
//! exact [`QueueError`], that popping again fails the same way (state unchanged), and that
//! no out-of-range access was attempted.

use super::{assert_no_oob, setup};
use crate::packed::format::PackedDescriptor;
use crate::testing::{Buf, PackedDriverRing};
use crate::{DescriptorChain, Queue, QueueError, MAX_CHAIN_DESCRIPTORS};

const N: u16 = crate::VIRTQ_DESC_F_NEXT;
const W: u16 = crate::VIRTQ_DESC_F_WRITE;
const I: u16 = crate::VIRTQ_DESC_F_INDIRECT;

fn d(addr: u64, len: u32, id: u16, flags: u16) -> PackedDescriptor {
    PackedDescriptor {
        addr,
        len,
        id,
        flags,
    }
}

/// A ring of 8 on 1 MiB, a data address well inside memory; `build` publishes descriptors.
fn ring8(build: impl FnOnce(&mut PackedDriverRing, u64)) -> (PackedDriverRing, Queue) {
    let (mut drv, q) = setup(8, 1 << 20, false);
    let data = drv.alloc(0x1000);
    build(&mut drv, data);
    (drv, q)
}

fn expect_pop_err(drv: &PackedDriverRing, q: &mut Queue, expected: QueueError) {
    let mut c = DescriptorChain::default();
    let before = q.next_avail();
    assert_eq!(q.pop(&mut c), Err(expected));
    assert_eq!(q.next_avail(), before);
    assert_eq!(q.pop(&mut c), Err(expected));
    assert_no_oob(drv);
}

#[test]
fn chain_continuing_into_an_unavailable_descriptor() {
    // Head with NEXT, the following descriptor never made available.
    let (drv, mut q) = ring8(|drv, a| {
        drv.write_desc(1, d(a, 4, 0, 0)); // AVAIL/USED bits 0: not available on lap 1.
        let flags = N | drv.avail_bits_at(0);
        drv.write_desc(0, d(a, 4, 0, flags));
    });
    expect_pop_err(
        &drv,
        &mut q,
        QueueError::PackedChainUnavailable { pos: 0, at: 1 },
    );
}

#[test]
fn chain_wrapping_with_the_old_wrap_counter() {
    // A chain from position 7 to 0 whose second descriptor keeps lap 1's bits.
    let (mut drv, mut q) = setup(8, 1 << 20, false);
    for _ in 0..7 {
        drv.add_chain(&[Buf::Writable(1)]);
    }
    let mut c = DescriptorChain::default();
    let mut used = Vec::new();
    while q.pop(&mut c).unwrap() {
        used.push((c.head(), 0));
    }
    q.add_used_many(&used).unwrap();
    while drv.pop_used().is_some() {}
    let a = drv.alloc(64);
    // Position 0 still holds lap 1's used descriptor (AVAIL = USED = 1), so it is not
    // available on lap 2: a driver must write it with the new wrap counter.
    let flags = N | drv.avail_bits_at(0);
    drv.write_desc(7, d(a, 4, 0, flags));
    expect_pop_err(
        &drv,
        &mut q,
        QueueError::PackedChainUnavailable { pos: 7, at: 0 },
    );
}

#[test]
fn chain_without_end() {
    let (drv, mut q) = ring8(|drv, a| {
        let descs: Vec<_> = (0..8).map(|i| d(a + 8 * i, 4, 0, N)).collect();
        drv.publish_raw(&descs);
    });
    expect_pop_err(
        &drv,
        &mut q,
        QueueError::PackedChainTooLong { pos: 0, size: 8 },
    );
}

#[test]
fn buffer_id_out_of_range() {
    for id in [8u16, 9, 0x7fff, 0xffff] {
        let (drv, mut q) = ring8(|drv, a| drv.publish_raw(&[d(a, 4, id, 0)]));
        expect_pop_err(&drv, &mut q, QueueError::BufferIdOutOfRange { id, size: 8 });
    }
}

#[test]
fn buffer_id_already_in_flight() {
    let (drv, mut q) = ring8(|drv, a| drv.publish_raw(&[d(a, 4, 3, 0), d(a, 4, 3, 0)]));
    let mut c = DescriptorChain::default();
    assert!(q.pop(&mut c).unwrap());
    assert_eq!(c.head(), 3);
    expect_pop_err(&drv, &mut q, QueueError::BufferIdInUse { id: 3 });
    // Once used, the id may come again.
    q.add_used(3, 0).unwrap();
    assert!(q.pop(&mut c).unwrap());
}

#[test]
fn ring_overrun() {
    // Seven single descriptors in flight, then a chain of two at positions 7 and 0 (lap 2
    // bits): position 0 is still the device's, so the ring would hold nine.
    let (mut drv, mut q) = ring8(|_, _| {});
    let a = drv.alloc(64);
    let descs: Vec<_> = (0..7).map(|i| d(a, 4, i, 0)).collect();
    drv.publish_raw(&descs);
    let mut c = DescriptorChain::default();
    for _ in 0..7 {
        assert!(q.pop(&mut c).unwrap());
    }
    drv.publish_raw(&[d(a, 4, 7, N), d(a, 4, 7, 0)]);
    expect_pop_err(
        &drv,
        &mut q,
        QueueError::PackedRingOverrun {
            in_flight: 7,
            chain: 2,
            size: 8,
        },
    );
}

#[test]
fn buffer_out_of_range() {
    let (drv, mut q) = ring8(|drv, _| {
        let end = drv.memory().end();
        drv.publish_raw(&[d(end - 2, 4, 0, 0)]);
    });
    let end = drv.memory().end();
    expect_pop_err(
        &drv,
        &mut q,
        QueueError::BufferOutOfRange {
            addr: end - 2,
            len: 4,
        },
    );
    let (drv, mut q) = ring8(|drv, _| drv.publish_raw(&[d(u64::MAX - 1, 4, 0, W)]));
    expect_pop_err(
        &drv,
        &mut q,
        QueueError::BufferOutOfRange {
            addr: u64::MAX - 1,
            len: 4,
        },
    );
}

#[test]
fn readable_after_writable() {
    let (drv, mut q) = ring8(|drv, a| drv.publish_raw(&[d(a, 4, 0, N | W), d(a, 4, 0, 0)]));
    expect_pop_err(&drv, &mut q, QueueError::WritableBeforeReadable { head: 0 });
}

#[test]
fn length_overflow() {
    // The total is checked before the second buffer's range.
    let (drv, mut q) =
        ring8(|drv, a| drv.publish_raw(&[d(a, 16, 0, N), d(a, u32::MAX - 15, 0, 0)]));
    expect_pop_err(&drv, &mut q, QueueError::LengthOverflow { head: 0 });
}

/// Publishes a malformed chain given a data address.
type Build = Box<dyn Fn(&mut PackedDriverRing, u64)>;

#[test]
fn indirect_rules() {
    let cases: Vec<(Build, QueueError)> = vec![
        (
            Box::new(|drv, a| drv.publish_raw(&[d(a, 32, 0, I | N), d(a, 4, 0, 0)])),
            QueueError::IndirectWithNext { head: 0 },
        ),
        (
            Box::new(|drv, a| drv.publish_raw(&[d(a, 0, 0, I)])),
            QueueError::IndirectTableLen { head: 0, len: 0 },
        ),
        (
            Box::new(|drv, a| drv.publish_raw(&[d(a, 24, 0, I)])),
            QueueError::IndirectTableLen { head: 0, len: 24 },
        ),
        (
            Box::new(|drv, a| drv.publish_raw(&[d(a, 16 * 32769, 0, I)])),
            QueueError::IndirectTableTooLarge {
                head: 0,
                len: 16 * 32769,
            },
        ),
        (
            Box::new(|drv, _| {
                let end = drv.memory().end();
                drv.publish_raw(&[d(end - 16, 32, 0, I)]);
            }),
            QueueError::IndirectTableOutOfRange {
                head: 0,
                addr: 0, // patched below
                len: 32,
            },
        ),
    ];
    for (build, mut expected) in cases {
        let (drv, mut q) = ring8(|drv, a| build(drv, a));
        if let QueueError::IndirectTableOutOfRange { addr, .. } = &mut expected {
            *addr = drv.memory().end() - 16;
        }
        expect_pop_err(&drv, &mut q, expected);
    }
}

#[test]
fn indirect_entry_out_of_range_and_too_many_descriptors() {
    let (drv, mut q) = ring8(|drv, a| {
        let end = drv.memory().end();
        drv.write_table(a, &[d(a + 64, 4, 0, 0), d(end, 1, 0, W)]);
        drv.publish_raw(&[d(a, 32, 0, I)]);
    });
    let end = drv.memory().end();
    expect_pop_err(
        &drv,
        &mut q,
        QueueError::BufferOutOfRange { addr: end, len: 1 },
    );
    // A direct prefix plus a full-size indirect table: more data descriptors than allowed.
    let (drv, mut q) = ring8(|drv, a| {
        let table = drv.alloc(16 * 32768);
        drv.write_table(table, &vec![d(a, 0, 0, 0); 32768]);
        drv.publish_raw(&[d(a, 0, 0, N), d(table, 16 * 32768, 0, I)]);
    });
    expect_pop_err(
        &drv,
        &mut q,
        QueueError::ChainTooLong {
            head: 0,
            max: MAX_CHAIN_DESCRIPTORS,
        },
    );
}
