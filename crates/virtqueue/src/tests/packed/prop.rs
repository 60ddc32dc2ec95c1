//! Packed ring property tests: random (mostly malformed) rings, indirect tables, event
//! structures and device calls never make the engine panic, hang, or touch memory outside
//! host memory, and every chain it accepts lies inside memory; random well-formed chains
//! completed in random order round-trip exactly at several queue sizes.

use crate::packed::format::{PackedDescriptor, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED};
use crate::testing::{Buf, PackedDriverRing, TestMemory};
use crate::tests::prop::{
    addr_strategy, chain_spec, check_chain, len_strategy, ChainSpec, MEM_SIZE, TABLE_ENTRIES,
    TABLE_OFFSETS,
};
use crate::{DescriptorChain, Queue, QueueError};
use proptest::prelude::*;
use std::sync::Arc;

/// NEXT often, WRITE sometimes, INDIRECT rarely, AVAIL/USED mostly "available on lap 1";
/// occasionally any bits.
fn flags_strategy() -> impl Strategy<Value = u16> {
    let wrap_bits = prop_oneof![
        6 => Just(VIRTQ_DESC_F_AVAIL),
        1 => Just(VIRTQ_DESC_F_USED),
        1 => Just(0),
        1 => Just(VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED),
    ];
    prop_oneof![
        8 => (prop::bool::weighted(0.4), prop::bool::weighted(0.4), prop::bool::weighted(0.1), wrap_bits)
            .prop_map(|(n, w, i, b)| u16::from(n) | (u16::from(w) << 1) | (u16::from(i) << 2) | b),
        1 => any::<u16>(),
    ]
}

fn id_strategy() -> impl Strategy<Value = u16> {
    prop_oneof![8 => 0u16..16, 1 => any::<u16>()]
}

fn desc_strategy() -> impl Strategy<Value = PackedDescriptor> {
    let b = crate::testing::TEST_MEMORY_BASE;
    let table = prop_oneof![
        3 => prop::sample::select(TABLE_OFFSETS.map(|o| b + o).to_vec()),
        1 => addr_strategy(),
    ];
    prop_oneof![
        6 => (addr_strategy(), len_strategy(), id_strategy(), flags_strategy())
            .prop_map(|(addr, len, id, flags)| PackedDescriptor { addr, len, id, flags }),
        1 => (table, (1u32..=TABLE_ENTRIES as u32 + 1).prop_map(|k| 16 * k), id_strategy(), flags_strategy())
            .prop_map(|(addr, len, id, flags)| PackedDescriptor {
                addr,
                len,
                id,
                flags: flags | crate::VIRTQ_DESC_F_INDIRECT,
            }),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Pop,
    UndoPop,
    WriteDesc(u16, PackedDescriptor),
    WriteTableEntry(usize, usize, PackedDescriptor),
    /// Marks used the n-th popped buffer (modulo their number), or a random id.
    AddUsed(usize, Option<u16>, u32),
    AddUsedMany(usize),
    NeedsInterrupt,
    EnableNotification,
    DisableNotification,
    DriverEvent(u16, u16),
    SetNextAvail(u16),
    /// Notification data (any value: a driver's data is only a hint).
    NoteNotification(u16),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => Just(Op::Pop),
        1 => Just(Op::UndoPop),
        3 => (0u16..16, desc_strategy()).prop_map(|(i, d)| Op::WriteDesc(i, d)),
        1 => (0usize..2, 0..TABLE_ENTRIES, desc_strategy())
            .prop_map(|(t, i, d)| Op::WriteTableEntry(t, i, d)),
        3 => (any::<usize>(), prop::option::weighted(0.2, any::<u16>()), any::<u32>())
            .prop_map(|(n, id, l)| Op::AddUsed(n, id, l)),
        1 => (0usize..6).prop_map(Op::AddUsedMany),
        1 => Just(Op::NeedsInterrupt),
        1 => Just(Op::EnableNotification),
        1 => Just(Op::DisableNotification),
        1 => (any::<u16>(), prop_oneof![4 => 0u16..3, 1 => any::<u16>()])
            .prop_map(|(o, f)| Op::DriverEvent(o, f)),
        1 => any::<u16>().prop_map(Op::SetNextAvail),
        2 => any::<u16>().prop_map(Op::NoteNotification),
    ]
}

#[derive(Debug, Clone)]
struct RandomRing {
    size: u16,
    event_idx: bool,
    descs: Vec<PackedDescriptor>,
    tables: Vec<Vec<PackedDescriptor>>,
    ops: Vec<Op>,
}

fn random_ring() -> impl Strategy<Value = RandomRing> {
    (
        prop::sample::select(vec![1u16, 2, 3, 4, 5, 8, 13, 16]),
        any::<bool>(),
        prop::collection::vec(desc_strategy(), 16),
        prop::collection::vec(prop::collection::vec(desc_strategy(), TABLE_ENTRIES), 2),
        prop::collection::vec(op_strategy(), 1..64),
    )
        .prop_map(|(size, event_idx, descs, tables, ops)| RandomRing {
            size,
            event_idx,
            descs,
            tables,
            ops,
        })
}

fn run_random(r: &RandomRing) -> Result<(), TestCaseError> {
    let mem = Arc::new(TestMemory::new(MEM_SIZE));
    let drv = PackedDriverRing::new(mem.clone(), r.size);
    for i in 0..r.size {
        drv.write_desc(i, r.descs[usize::from(i)]);
    }
    for (t, entries) in r.tables.iter().enumerate() {
        drv.write_table(mem.base() + TABLE_OFFSETS[t], entries);
    }
    let mut q = Queue::new_packed(drv.config(), drv.host_memory(), r.event_idx)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut c = DescriptorChain::default();
    let mut popped: Vec<u16> = Vec::new();
    let mut errors: Vec<QueueError> = Vec::new();
    for op in &r.ops {
        match *op {
            Op::Pop => match q.pop(&mut c) {
                Ok(true) => {
                    check_chain(&c, &q, &mem)?;
                    prop_assert!(!popped.contains(&c.head()), "id popped twice in flight");
                    popped.push(c.head());
                }
                Ok(false) => {}
                Err(e) => errors.push(e),
            },
            Op::UndoPop => {
                let before = q.stats().chains_popped;
                q.undo_pop();
                if q.stats().chains_popped < before {
                    popped.pop();
                }
            }
            Op::WriteDesc(i, d) => drv.write_desc(i % r.size, d),
            Op::WriteTableEntry(t, i, d) => {
                drv.write_table(mem.base() + TABLE_OFFSETS[t] + 16 * i as u64, &[d])
            }
            Op::AddUsed(n, id, len) => match id {
                Some(id) if !popped.contains(&id) => {
                    prop_assert!(q.add_used(id, len).is_err());
                }
                _ if popped.is_empty() => {}
                _ => {
                    let id = popped.remove(n % popped.len());
                    q.add_used(id, len)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
            },
            Op::AddUsedMany(k) => {
                let k = k.min(popped.len());
                let elems: Vec<_> = popped.drain(..k).map(|id| (id, 1)).collect();
                q.add_used_many(&elems)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            Op::NeedsInterrupt => {
                let _ = q.needs_interrupt().map_err(|e| errors.push(e));
            }
            Op::EnableNotification => {
                let _ = q.enable_notification().map_err(|e| errors.push(e));
            }
            Op::DisableNotification => {
                let _ = q.disable_notification().map_err(|e| errors.push(e));
            }
            Op::DriverEvent(o, f) => drv.set_driver_event(o, f),
            Op::NoteNotification(v) => q.note_notification(v),
            Op::SetNextAvail(v) => {
                // Like a device restoring state: only while nothing is in flight.
                if popped.is_empty() {
                    q.set_next_avail(v);
                }
            }
        }
    }
    for e in &errors {
        prop_assert!(!matches!(e, QueueError::Memory(_)), "{e}");
    }
    prop_assert_eq!(mem.oob_attempts(), 0, "out-of-range access attempted");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    #[test]
    fn random_packed_rings_are_handled_safely(r in random_ring()) {
        run_random(&r)?;
    }
}

fn run_round_trip(
    size: u16,
    event_idx: bool,
    notification_data: bool,
    batches: &[(Vec<ChainSpec>, Vec<usize>)],
) -> Result<(), TestCaseError> {
    let mem = Arc::new(TestMemory::new(MEM_SIZE));
    let mut drv = PackedDriverRing::new(mem.clone(), size);
    let mut q = Queue::new_packed(drv.config(), drv.host_memory(), event_idx)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let hm: Arc<dyn epf_epc::HostMemory> = mem.clone();
    let mut c = DescriptorChain::default();
    let mut seed = 0u8;
    for (batch, order) in batches {
        let mut expected = Vec::new();
        for spec in batch {
            let ring_descs = if spec.indirect {
                1
            } else {
                spec.readable.len() + spec.writable.len()
            };
            if ring_descs > usize::from(drv.free_descs()) {
                continue;
            }
            let mut bufs = Vec::new();
            for &l in &spec.readable {
                seed = seed.wrapping_add(1);
                bufs.push(Buf::Readable(vec![seed; l as usize]));
            }
            bufs.extend(spec.writable.iter().map(|&l| Buf::Writable(l)));
            let tc = if spec.indirect {
                drv.add_indirect_chain(&bufs)
            } else {
                drv.add_chain(&bufs)
            };
            expected.push(tc);
        }
        if notification_data {
            // What a driver with VIRTIO_F_NOTIFICATION_DATA sends with its kick.
            q.note_notification(drv.avail_off_wrap());
        }
        let mut done = Vec::new();
        for tc in &expected {
            prop_assert!(q
                .pop(&mut c)
                .map_err(|e| TestCaseError::fail(e.to_string()))?);
            prop_assert_eq!(c.head(), tc.head);
            let nonempty = |s: &Vec<crate::Segment>| {
                s.iter().copied().filter(|s| s.len > 0).collect::<Vec<_>>()
            };
            prop_assert_eq!(c.readable(), &nonempty(&tc.readable)[..]);
            prop_assert_eq!(c.writable(), &nonempty(&tc.writable)[..]);
            let out: Vec<u8> = (0..c.writable_len()).map(|i| i as u8 ^ 0xa5).collect();
            let mut w = c.writer(&*hm);
            w.write_all(&out)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            done.push((c.head(), w.written()));
        }
        prop_assert!(!q
            .pop(&mut c)
            .map_err(|e| TestCaseError::fail(e.to_string()))?);
        // Complete in a random order, half the time as one batch.
        let mut order_done = Vec::new();
        let mut left = done.clone();
        for &k in order {
            if left.is_empty() {
                break;
            }
            order_done.push(left.remove(k % left.len()));
        }
        order_done.append(&mut left);
        if order.len() % 2 == 0 {
            q.add_used_many(&order_done)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        } else {
            for &(id, len) in &order_done {
                q.add_used(id, len)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
        }
        for &(id, len) in &order_done {
            prop_assert_eq!(drv.pop_used(), Some((id, len)));
        }
        prop_assert_eq!(drv.pop_used(), None);
        prop_assert_eq!(q.next_used(), drv.used_off_wrap());
    }
    prop_assert_eq!(mem.oob_attempts(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn well_formed_packed_chains_round_trip(
        size in prop::sample::select(vec![4u16, 7, 8, 13, 16]),
        event_idx in any::<bool>(),
        notification_data in any::<bool>(),
        batches in prop::collection::vec(
            (prop::collection::vec(chain_spec(), 1..=4), prop::collection::vec(any::<usize>(), 0..4)),
            1..=12,
        ),
    ) {
        run_round_trip(size, event_idx, notification_data, &batches)?;
    }
}
