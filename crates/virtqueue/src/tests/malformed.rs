//! One test per rule of the split ring a driver (or a hostile host) can break. Each asserts
//! the exact [`QueueError`] and that no out-of-range access was attempted.

use super::{assert_no_oob, setup};
use crate::testing::{DriverRing, TestMemory};
use crate::{
    Descriptor, DescriptorChain, Queue, QueueError, MAX_CHAIN_DESCRIPTORS, VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
};
use std::sync::Arc;

const N: u16 = VIRTQ_DESC_F_NEXT;
const W: u16 = VIRTQ_DESC_F_WRITE;
const I: u16 = VIRTQ_DESC_F_INDIRECT;

fn desc(addr: u64, len: u32, flags: u16, next: u16) -> Descriptor {
    Descriptor {
        addr,
        len,
        flags,
        next,
    }
}

/// A queue of 8 on 64 KiB; `build` sets up descriptors and available entries.
fn ring8(build: impl FnOnce(&mut DriverRing, u64)) -> (DriverRing, Queue) {
    let (mut drv, q) = setup(8, 1 << 16, false);
    // A data area well clear of the rings.
    let data = drv.config().used_addr + 0x1000;
    build(&mut drv, data);
    (drv, q)
}

/// Pops and expects `expected`; checks that popping again fails the same way (the queue's
/// state is unchanged) and that no access went out of range.
fn expect_pop_err(drv: &DriverRing, q: &mut Queue, expected: QueueError) {
    let mut c = DescriptorChain::default();
    let before = q.next_avail();
    assert_eq!(q.pop(&mut c), Err(expected));
    assert_eq!(q.next_avail(), before);
    assert_eq!(q.pop(&mut c), Err(expected));
    assert_eq!(q.stats().chains_popped, 0);
    assert_no_oob(drv);
}

#[test]
fn avail_idx_jump() {
    let (mut drv, mut q) = ring8(|_, _| {});
    drv.set_avail_idx(9);
    expect_pop_err(
        &drv,
        &mut q,
        QueueError::AvailIdxJump {
            old: 0,
            new: 9,
            size: 8,
        },
    );
    assert_eq!(
        q.has_available(),
        Err(QueueError::AvailIdxJump {
            old: 0,
            new: 9,
            size: 8
        })
    );
    assert_eq!(
        q.enable_notification(),
        Err(QueueError::AvailIdxJump {
            old: 0,
            new: 9,
            size: 8
        })
    );
    // Exactly `size` entries are fine (all-zero descriptors: zero-length, readable).
    drv.set_avail_idx(8);
    assert!(q.pop(&mut DescriptorChain::default()).unwrap());
}

#[test]
fn avail_idx_moving_backwards_is_a_jump() {
    let (mut drv, mut q) = ring8(|_, _| {});
    drv.set_indices(5, 5);
    q.set_next_avail(5);
    drv.set_avail_idx(4);
    expect_pop_err(
        &drv,
        &mut q,
        QueueError::AvailIdxJump {
            old: 5,
            new: 4,
            size: 8,
        },
    );
}

#[test]
fn avail_idx_jump_across_wrap() {
    let (mut drv, mut q) = ring8(|_, _| {});
    q.set_next_avail(65530);
    drv.set_avail_idx(65530u16.wrapping_add(9));
    expect_pop_err(
        &drv,
        &mut q,
        QueueError::AvailIdxJump {
            old: 65530,
            new: 3,
            size: 8,
        },
    );
    drv.set_avail_idx(65530u16.wrapping_add(8));
    let mut c = DescriptorChain::default();
    for _ in 0..8 {
        assert!(q.pop(&mut c).unwrap());
    }
    assert!(!q.pop(&mut c).unwrap());
    assert_eq!(q.next_avail(), 2);
}

#[test]
fn head_out_of_range() {
    for head in [8u16, 9, 0x8000, 0xffff] {
        let (mut drv, mut q) = ring8(|d, _| d.push_avail(head));
        expect_pop_err(&drv, &mut q, QueueError::HeadOutOfRange { head, size: 8 });
        drv.set_avail_idx(1);
    }
}

#[test]
fn next_out_of_range() {
    let (drv, mut q) = ring8(|d, a| {
        d.write_desc(3, desc(a, 4, N, 1));
        d.write_desc(1, desc(a, 4, N, 8));
        d.push_avail(3);
    });
    expect_pop_err(
        &drv,
        &mut q,
        QueueError::NextOutOfRange {
            head: 3,
            next: 8,
            limit: 8,
        },
    );
}

#[test]
fn descriptor_loop() {
    let (drv, mut q) = ring8(|d, a| {
        d.write_desc(0, desc(a, 4, N, 1));
        d.write_desc(1, desc(a, 4, N, 2));
        d.write_desc(2, desc(a, 4, N, 0));
        d.push_avail(1);
    });
    expect_pop_err(&drv, &mut q, QueueError::DescriptorLoop { head: 1 });
}

#[test]
fn descriptor_loop_through_the_whole_table() {
    // 0 -> 1 -> ... -> 7 -> 0: eight descriptors are legal, the ninth reveals the loop.
    let (drv, mut q) = ring8(|d, a| {
        for i in 0..8 {
            d.write_desc(i, desc(a, 1, N, (i + 1) % 8));
        }
        d.push_avail(0);
    });
    expect_pop_err(&drv, &mut q, QueueError::DescriptorLoop { head: 0 });
}

#[test]
fn descriptor_self_loop_queue_size_1() {
    let (mut drv, mut q) = setup(1, 1 << 16, false);
    let a = drv.config().used_addr + 0x100;
    drv.write_desc(0, desc(a, 1, N, 0));
    drv.push_avail(0);
    expect_pop_err(&drv, &mut q, QueueError::DescriptorLoop { head: 0 });
}

#[test]
fn indirect_loop() {
    let (drv, mut q) = ring8(|d, a| {
        d.write_table(
            a,
            &[
                desc(a + 0x100, 4, N, 2),
                desc(a + 0x100, 4, N, 0),
                desc(a, 4, N, 1),
            ],
        );
        d.write_desc(6, desc(a, 48, I, 0));
        d.push_avail(6);
    });
    expect_pop_err(&drv, &mut q, QueueError::DescriptorLoop { head: 6 });
}

#[test]
fn indirect_next_out_of_range() {
    let (drv, mut q) = ring8(|d, a| {
        // `next` = 2 is inside the queue size but outside the 2-entry table.
        d.write_table(a, &[desc(a + 0x100, 4, N, 1), desc(a + 0x100, 4, N, 2)]);
        d.write_desc(0, desc(a, 32, I, 0));
        d.push_avail(0);
    });
    expect_pop_err(
        &drv,
        &mut q,
        QueueError::NextOutOfRange {
            head: 0,
            next: 2,
            limit: 2,
        },
    );
}

#[test]
fn nested_indirect() {
    let (drv, mut q) = ring8(|d, a| {
        d.write_table(a, &[desc(a + 0x100, 4, N, 1), desc(a + 0x200, 16, I, 0)]);
        d.write_table(a + 0x200, &[desc(a + 0x100, 4, 0, 0)]);
        d.write_desc(2, desc(a, 32, I, 0));
        d.push_avail(2);
    });
    expect_pop_err(&drv, &mut q, QueueError::NestedIndirect { head: 2 });
}

#[test]
fn indirect_with_next() {
    let (drv, mut q) = ring8(|d, a| {
        d.write_table(a, &[desc(a + 0x100, 4, 0, 0)]);
        d.write_desc(0, desc(a, 16, I | N, 1));
        d.write_desc(1, desc(a + 0x100, 4, 0, 0));
        d.push_avail(0);
    });
    expect_pop_err(&drv, &mut q, QueueError::IndirectWithNext { head: 0 });
}

#[test]
fn indirect_table_len() {
    for len in [0u32, 8, 24, 17, u32::MAX] {
        let (drv, mut q) = ring8(|d, a| {
            d.write_desc(4, desc(a, len, I, 0));
            d.push_avail(4);
        });
        expect_pop_err(&drv, &mut q, QueueError::IndirectTableLen { head: 4, len });
    }
}

#[test]
fn indirect_table_too_large() {
    for len in [16 * 32769u32, 0xffff_fff0] {
        let (drv, mut q) = ring8(|d, a| {
            d.write_desc(0, desc(a, len, I, 0));
            d.push_avail(0);
        });
        expect_pop_err(
            &drv,
            &mut q,
            QueueError::IndirectTableTooLarge { head: 0, len },
        );
    }
    // The largest table size passes the size check (and here fails the range check).
    let len = 16 * 32768;
    let (drv, mut q) = ring8(|d, a| {
        d.write_desc(0, desc(a, len, I, 0));
        d.push_avail(0);
    });
    let addr = drv.config().used_addr + 0x1000;
    expect_pop_err(
        &drv,
        &mut q,
        QueueError::IndirectTableOutOfRange { head: 0, addr, len },
    );
}

#[test]
fn indirect_table_out_of_range() {
    let probe = TestMemory::new(1 << 16);
    let (base, end) = (probe.base(), probe.end());
    for (addr, len) in [
        (end - 16, 32),      // straddles the end
        (end, 16),           // just beyond
        (base - 16, 16),     // just below
        (base - 8, 16),      // straddles the start
        (0, 16),             // far away
        (u64::MAX - 15, 16), // addr + len overflows
        (u64::MAX - 31, 16), // ends exactly at u64::MAX, still outside
    ] {
        let (drv, mut q) = ring8(|d, _| {
            d.write_desc(3, desc(addr, len, I, 0));
            d.push_avail(3);
        });
        expect_pop_err(
            &drv,
            &mut q,
            QueueError::IndirectTableOutOfRange { head: 3, addr, len },
        );
    }
}

#[test]
fn writable_before_readable_direct() {
    let (drv, mut q) = ring8(|d, a| {
        d.write_desc(0, desc(a, 4, N, 1));
        d.write_desc(1, desc(a, 4, W | N, 2));
        d.write_desc(2, desc(a, 4, 0, 0));
        d.push_avail(0);
    });
    expect_pop_err(&drv, &mut q, QueueError::WritableBeforeReadable { head: 0 });
}

#[test]
fn writable_before_readable_zero_length() {
    let (drv, mut q) = ring8(|d, a| {
        d.write_desc(0, desc(a, 4, W | N, 1));
        d.write_desc(1, desc(a, 0, 0, 0));
        d.push_avail(0);
    });
    expect_pop_err(&drv, &mut q, QueueError::WritableBeforeReadable { head: 0 });
}

#[test]
fn writable_before_readable_across_indirect() {
    let (drv, mut q) = ring8(|d, a| {
        d.write_table(a, &[desc(a + 0x100, 4, 0, 0)]);
        d.write_desc(5, desc(a + 0x100, 4, W | N, 6));
        d.write_desc(6, desc(a, 16, I, 0));
        d.push_avail(5);
    });
    expect_pop_err(&drv, &mut q, QueueError::WritableBeforeReadable { head: 5 });
}

#[test]
fn writable_before_readable_inside_indirect() {
    let (drv, mut q) = ring8(|d, a| {
        d.write_table(a, &[desc(a + 0x100, 4, W | N, 1), desc(a + 0x100, 4, 0, 0)]);
        d.write_desc(5, desc(a, 32, I, 0));
        d.push_avail(5);
    });
    expect_pop_err(&drv, &mut q, QueueError::WritableBeforeReadable { head: 5 });
}

/// 16 MiB of memory; an indirect table of 256 entries, each covering the whole memory except
/// that the last one is `last_len` long. Lengths add up to `255 * 2^24 + last_len`.
fn big_chain(last_len: u32) -> (DriverRing, Queue) {
    let mem = Arc::new(TestMemory::new(16 << 20));
    let (base, size) = (mem.base(), mem.size() as u32);
    let mut drv = DriverRing::new(mem, 8);
    let table = drv.config().used_addr + 0x1000;
    let entries: Vec<Descriptor> = (0..256u16)
        .map(|i| {
            if i == 255 {
                desc(base, last_len, 0, 0)
            } else {
                desc(base, size, N, i + 1)
            }
        })
        .collect();
    drv.write_table(table, &entries);
    drv.write_desc(0, desc(table, 256 * 16, I, 0));
    drv.push_avail(0);
    let q = Queue::new(drv.config(), drv.host_memory(), false).unwrap();
    (drv, q)
}

#[test]
fn length_overflow() {
    let (drv, mut q) = big_chain(1 << 24);
    expect_pop_err(&drv, &mut q, QueueError::LengthOverflow { head: 0 });
}

#[test]
fn length_up_to_u32_max_is_fine() {
    let (drv, mut q) = big_chain((1 << 24) - 1);
    let mut c = DescriptorChain::default();
    assert!(q.pop(&mut c).unwrap());
    assert_eq!(c.readable_len(), u64::from(u32::MAX));
    assert_eq!(c.readable().len(), 256);
    assert_no_oob(&drv);
}

#[test]
fn buffer_out_of_range() {
    let probe = TestMemory::new(1 << 16);
    let (base, end) = (probe.base(), probe.end());
    for (addr, len) in [
        (end - 1, 2),
        (end, 1),
        (base - 1, 2),
        (base - 16, 16),
        (0, 1),
        (base, (1 << 16) + 1),
        (base, u32::MAX),
        (u64::MAX, 1),
        (u64::MAX - 3, 16),
    ] {
        for indirect in [false, true] {
            for writable in [false, true] {
                let flags = if writable { W } else { 0 };
                // A readable prefix, unless the total length would overflow first.
                let pre = if len > u32::MAX - 4 { 0 } else { 4 };
                let (drv, mut q) = ring8(|d, a| {
                    if indirect {
                        d.write_table(a, &[desc(a + 0x100, pre, N, 1), desc(addr, len, flags, 0)]);
                        d.write_desc(7, desc(a, 32, I, 0));
                    } else {
                        d.write_desc(7, desc(a + 0x100, pre, N, 2));
                        d.write_desc(2, desc(addr, len, flags, 0));
                    }
                    d.push_avail(7);
                });
                expect_pop_err(&drv, &mut q, QueueError::BufferOutOfRange { addr, len });
            }
        }
    }
}

#[test]
fn zero_length_buffer_anywhere_is_accepted() {
    // A zero-length descriptor transfers nothing, so its address is not checked.
    let (drv, mut q) = ring8(|d, a| {
        d.write_desc(0, desc(u64::MAX, 0, N, 1));
        d.write_desc(1, desc(a, 4, W, 0));
        d.push_avail(0);
    });
    let mut c = DescriptorChain::default();
    assert!(q.pop(&mut c).unwrap());
    assert!(c.readable().is_empty());
    assert_eq!(c.writable_len(), 4);
    assert_no_oob(&drv);
}

#[test]
fn used_id_out_of_range() {
    let (drv, mut q) = ring8(|_, _| {});
    for id in [8u16, 9, 0xffff] {
        assert_eq!(
            q.add_used(id, 0),
            Err(QueueError::UsedIdOutOfRange { id, size: 8 })
        );
    }
    assert_eq!(drv.used_idx(), 0);
    assert_eq!(drv.used_elem(0), (0, 0));
    assert_eq!(q.next_used(), 0);
    assert!(!q.needs_interrupt().unwrap());
    assert_no_oob(&drv);
}

/// A queue of 8 whose descriptor 1 points to an indirect table of 32768 chained one-byte
/// readable entries; descriptor 0 is a one-byte readable descriptor chained to it.
fn max_indirect() -> (DriverRing, Queue) {
    let mem = Arc::new(TestMemory::new(1 << 20));
    let drv = DriverRing::new(mem, 8);
    let a = drv.config().used_addr + 0x1000;
    let table = a + 0x1000;
    let n = MAX_CHAIN_DESCRIPTORS as usize;
    let entries: Vec<Descriptor> = (0..n)
        .map(|i| desc(a, 1, if i + 1 < n { N } else { 0 }, (i + 1) as u16))
        .collect();
    drv.write_table(table, &entries);
    drv.write_desc(0, desc(a, 1, N, 1));
    drv.write_desc(1, desc(table, 16 * n as u32, I, 0));
    let q = Queue::new(drv.config(), drv.host_memory(), false).unwrap();
    (drv, q)
}

#[test]
fn chain_too_long() {
    let (mut drv, mut q) = max_indirect();
    drv.push_avail(0);
    expect_pop_err(
        &drv,
        &mut q,
        QueueError::ChainTooLong {
            head: 0,
            max: 32768,
        },
    );
}

#[test]
fn chain_of_max_length_via_indirect_is_fine() {
    let (mut drv, mut q) = max_indirect();
    drv.push_avail(1);
    let mut c = DescriptorChain::default();
    assert!(q.pop(&mut c).unwrap());
    assert_eq!(c.readable().len(), 32768);
    assert_eq!(c.descriptor_count(), 32769);
    assert_no_oob(&drv);
}
