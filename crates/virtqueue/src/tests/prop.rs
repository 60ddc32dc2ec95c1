//! Property tests: random (mostly malformed) rings never make the engine panic, hang or touch
//! memory outside host memory; random well-formed chains round-trip exactly.

use crate::testing::{Buf, DriverRing, TestMemory};
use crate::{Descriptor, DescriptorChain, Queue, QueueError, MAX_INDIRECT_ENTRIES};
use proptest::prelude::*;
use std::sync::Arc;

pub(super) const MEM_SIZE: usize = 1 << 16;
/// Offsets (from the memory base) of the two random indirect tables.
pub(super) const TABLE_OFFSETS: [u64; 2] = [0x2000, 0x3000];
pub(super) const TABLE_ENTRIES: usize = 8;

fn base() -> u64 {
    crate::testing::TEST_MEMORY_BASE
}

pub(super) fn addr_strategy() -> impl Strategy<Value = u64> {
    let (b, e) = (base(), base() + MEM_SIZE as u64);
    prop_oneof![
        30 => (b + 0x1000)..(e - 4096),
        2 => b..e,
        2 => prop::sample::select(TABLE_OFFSETS.map(|o| b + o).to_vec()),
        1 => (e - 64)..(e + 64),
        1 => (1u64..=TABLE_ENTRIES as u64 + 1).prop_map(move |k| e - 16 * k),
        1 => (b - 64)..(b + 64),
        1 => any::<u64>(),
        1 => (u64::MAX - 64)..=u64::MAX,
        1 => Just(0u64),
    ]
}

pub(super) fn len_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![
        20 => 0u32..=64,
        2 => (0u32..=TABLE_ENTRIES as u32 + 1).prop_map(|k| k * 16),
        1 => 0u32..=(MEM_SIZE as u32 + 16),
        1 => any::<u32>(),
        1 => (u32::MAX - 64)..=u32::MAX,
    ]
}

/// NEXT often, WRITE sometimes, INDIRECT rarely; occasionally any bits.
fn flags_strategy() -> impl Strategy<Value = u16> {
    prop_oneof![
        8 => (prop::bool::weighted(0.6), prop::bool::weighted(0.4), prop::bool::weighted(0.15))
            .prop_map(|(n, w, i)| u16::from(n) | (u16::from(w) << 1) | (u16::from(i) << 2)),
        1 => any::<u16>(),
    ]
}

/// Descriptor indices: mostly small (valid for most queue sizes), sometimes anything.
fn index_strategy() -> impl Strategy<Value = u16> {
    prop_oneof![8 => 0u16..8, 3 => 0u16..40, 1 => any::<u16>()]
}

/// A descriptor meant to point to an indirect table: one of the random tables, or a table
/// near / outside the edges of memory.
fn indirect_desc_strategy() -> impl Strategy<Value = Descriptor> {
    let (b, e) = (base(), base() + MEM_SIZE as u64);
    let entries = 1u64..=TABLE_ENTRIES as u64 + 1;
    (
        prop_oneof![
            4 => prop::sample::select(TABLE_OFFSETS.map(|o| b + o).to_vec()),
            1 => entries.clone().prop_map(move |k| e - 16 * k),
            1 => entries.prop_map(move |k| b - 16 * k),
            1 => any::<u64>(),
        ],
        prop_oneof![8 => (1u32..=TABLE_ENTRIES as u32).prop_map(|k| 16 * k), 1 => len_strategy()],
        prop_oneof![8 => Just(crate::VIRTQ_DESC_F_INDIRECT), 1 => flags_strategy()],
        index_strategy(),
    )
        .prop_map(|(addr, len, flags, next)| Descriptor {
            addr,
            len,
            flags,
            next,
        })
}

fn desc_strategy() -> impl Strategy<Value = Descriptor> {
    prop_oneof![
        6 => (addr_strategy(), len_strategy(), flags_strategy(), index_strategy())
            .prop_map(|(addr, len, flags, next)| Descriptor { addr, len, flags, next }),
        1 => indirect_desc_strategy(),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Pop,
    UndoPop,
    PushAvail(u16),
    /// Moves `avail.idx` by this much (wrapping) without writing ring entries.
    MoveAvailIdx(u16),
    WriteDesc(u16, Descriptor),
    WriteTableEntry(usize, usize, Descriptor),
    AddUsed(u16, u32),
    NeedsInterrupt,
    EnableNotification,
    DisableNotification,
    SetUsedEvent(u16),
    /// Notification data (any value: a driver's data is only a hint).
    NoteNotification(u16),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => Just(Op::Pop),
        1 => Just(Op::UndoPop),
        2 => index_strategy().prop_map(Op::PushAvail),
        1 => prop_oneof![4 => 0u16..=34, 1 => any::<u16>()].prop_map(Op::MoveAvailIdx),
        2 => (0u16..32, desc_strategy()).prop_map(|(i, d)| Op::WriteDesc(i, d)),
        1 => (0usize..2, 0..TABLE_ENTRIES, desc_strategy())
            .prop_map(|(t, i, d)| Op::WriteTableEntry(t, i, d)),
        1 => (index_strategy(), any::<u32>()).prop_map(|(h, l)| Op::AddUsed(h, l)),
        1 => Just(Op::NeedsInterrupt),
        1 => Just(Op::EnableNotification),
        1 => Just(Op::DisableNotification),
        1 => any::<u16>().prop_map(Op::SetUsedEvent),
        2 => any::<u16>().prop_map(Op::NoteNotification),
    ]
}

#[derive(Debug, Clone)]
struct RandomRing {
    size: u16,
    event_idx: bool,
    start_avail: u16,
    start_used: u16,
    avail_delta: u16,
    descs: Vec<Descriptor>,
    avail: Vec<u16>,
    tables: Vec<Vec<Descriptor>>,
    ops: Vec<Op>,
}

fn random_ring() -> impl Strategy<Value = RandomRing> {
    (
        prop::sample::select(vec![1u16, 2, 4, 8, 16, 32]),
        any::<bool>(),
        prop_oneof![Just(0u16), 65500u16..=65535, any::<u16>()],
        any::<u16>(),
        prop_oneof![20 => 0u16..=34, 1 => any::<u16>()],
        prop::collection::vec(desc_strategy(), 32),
        prop::collection::vec(index_strategy(), 32),
        prop::collection::vec(prop::collection::vec(desc_strategy(), TABLE_ENTRIES), 2),
        prop::collection::vec(op_strategy(), 1..48),
    )
        .prop_map(
            |(size, event_idx, start_avail, start_used, avail_delta, descs, avail, tables, ops)| {
                RandomRing {
                    size,
                    event_idx,
                    start_avail,
                    start_used,
                    avail_delta,
                    descs,
                    avail,
                    tables,
                    ops,
                }
            },
        )
}

/// Checks a successfully popped chain and moves data through it.
pub(super) fn check_chain(
    c: &DescriptorChain,
    q: &Queue,
    mem: &TestMemory,
) -> Result<u32, TestCaseError> {
    prop_assert!(c.head() < q.size());
    let (b, e) = (mem.base(), mem.end());
    for (segs, total) in [
        (c.readable(), c.readable_len()),
        (c.writable(), c.writable_len()),
    ] {
        let mut sum = 0u64;
        for s in segs {
            prop_assert!(s.len > 0);
            prop_assert!(s.addr >= b && s.addr + u64::from(s.len) <= e, "{s:x?}");
            sum += u64::from(s.len);
        }
        prop_assert_eq!(sum, total);
    }
    prop_assert!(c.readable_len() + c.writable_len() <= u64::from(u32::MAX));
    prop_assert!(c.descriptor_count() <= u32::from(q.size()) + MAX_INDIRECT_ENTRIES);

    let hm: &dyn epf_epc::HostMemory = mem;
    let mut r = c.reader(hm);
    let mut buf = vec![0u8; 4096];
    let mut got = 0usize;
    for _ in 0..2 {
        got += r
            .read(&mut buf)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    let rest = r.remaining();
    prop_assert_eq!(r.skip(usize::MAX), rest);
    prop_assert_eq!(got as u64 + rest as u64, c.readable_len());

    let mut w = c.writer(hm);
    let n = w
        .write(&buf[..4096])
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(n as u64, c.writable_len().min(4096));
    prop_assert_eq!(w.written() as usize, n);
    Ok(w.written())
}

fn run_random(r: &RandomRing) -> Result<(), TestCaseError> {
    // Small deltas are taken modulo size + 2: mostly legal, sometimes one too many.
    let small = |d: u16| if d < 0x100 { d % (r.size + 2) } else { d };
    // Descriptor indices below 8 are taken modulo the size (always valid), larger ones as
    // they are (8..40: invalid for small queues; or anything).
    let index = |i: u16| if i < 8 { i % r.size } else { i };
    let table_desc = |d: Descriptor| Descriptor {
        next: index(d.next),
        ..d
    };
    let mem = Arc::new(TestMemory::new(MEM_SIZE));
    let mut drv = DriverRing::new(mem.clone(), r.size);
    drv.set_indices(r.start_avail, r.start_used);
    for i in 0..r.size {
        drv.write_desc(i, table_desc(r.descs[i as usize]));
        drv.set_avail_entry(r.start_avail.wrapping_add(i), index(r.avail[i as usize]));
    }
    for (t, entries) in r.tables.iter().enumerate() {
        drv.write_table(mem.base() + TABLE_OFFSETS[t], entries);
    }
    drv.set_avail_idx(r.start_avail.wrapping_add(small(r.avail_delta)));
    let mut q = Queue::new(drv.config(), drv.host_memory(), r.event_idx)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    q.set_next_avail(r.start_avail);
    q.set_next_used(r.start_used);

    let mut c = DescriptorChain::default();
    let mut errors: Vec<QueueError> = Vec::new();
    for op in &r.ops {
        match *op {
            Op::Pop => match q.pop(&mut c) {
                Ok(true) => {
                    let written = check_chain(&c, &q, &mem)?;
                    // The device's own add_used cannot fail for a popped head.
                    q.add_used(c.head(), written)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                Ok(false) => {}
                Err(e) => errors.push(e),
            },
            Op::UndoPop => q.undo_pop(),
            Op::PushAvail(h) => drv.push_avail(index(h)),
            Op::MoveAvailIdx(d) => drv.set_avail_idx(drv.avail_idx().wrapping_add(small(d))),
            Op::WriteDesc(i, d) => drv.write_desc(i % r.size, table_desc(d)),
            Op::WriteTableEntry(t, i, d) => {
                drv.write_table(mem.base() + TABLE_OFFSETS[t] + 16 * i as u64, &[d])
            }
            Op::AddUsed(h, l) => {
                let h = index(h);
                if let Err(e) = q.add_used(h, l) {
                    prop_assert_eq!(
                        e,
                        QueueError::UsedIdOutOfRange {
                            id: h,
                            size: r.size
                        }
                    );
                }
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
            Op::SetUsedEvent(v) => drv.set_used_event(v),
            Op::NoteNotification(v) => q.note_notification(v),
        }
    }
    // Host memory errors would mean an access outside memory was attempted.
    for e in &errors {
        prop_assert!(!matches!(e, QueueError::Memory(_)), "{e}");
    }
    prop_assert_eq!(mem.oob_attempts(), 0, "out-of-range access attempted");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_rings_are_handled_safely(r in random_ring()) {
        run_random(&r)?;
    }
}

/// A well-formed chain: direct or indirect, readable buffer lengths, writable buffer lengths.
#[derive(Debug, Clone)]
pub(super) struct ChainSpec {
    pub(super) indirect: bool,
    pub(super) readable: Vec<u32>,
    pub(super) writable: Vec<u32>,
}

pub(super) fn chain_spec() -> impl Strategy<Value = ChainSpec> {
    let len = prop_oneof![1 => Just(0u32), 4 => 1u32..300];
    (
        any::<bool>(),
        prop::collection::vec(len.clone(), 0..=2),
        prop::collection::vec(len, 0..=2),
    )
        .prop_filter("chains have at least one buffer", |(_, r, w)| {
            !r.is_empty() || !w.is_empty()
        })
        .prop_map(|(indirect, readable, writable)| ChainSpec {
            indirect,
            readable,
            writable,
        })
}

fn run_round_trip(
    start: u16,
    event_idx: bool,
    batches: &[Vec<ChainSpec>],
) -> Result<(), TestCaseError> {
    const SIZE: u16 = 16;
    let mem = Arc::new(TestMemory::new(MEM_SIZE));
    let mut drv = DriverRing::new(mem.clone(), SIZE);
    drv.set_indices(start, start);
    let mut q = Queue::new(drv.config(), drv.host_memory(), event_idx)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    q.set_next_avail(start);
    q.set_next_used(start);
    let hm: Arc<dyn epf_epc::HostMemory> = mem.clone();
    let mut c = DescriptorChain::default();
    let mut seed = 0u8;
    for batch in batches {
        let mut expected = Vec::new();
        for spec in batch {
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
            let data: Vec<u8> = bufs
                .iter()
                .filter_map(|b| match b {
                    Buf::Readable(d) => Some(d.clone()),
                    Buf::Writable(_) => None,
                })
                .flatten()
                .collect();
            expected.push((tc, data));
        }
        for (tc, data) in &expected {
            prop_assert!(q
                .pop(&mut c)
                .map_err(|e| TestCaseError::fail(e.to_string()))?);
            prop_assert_eq!(c.head(), tc.head);
            let nonempty = |s: &Vec<crate::Segment>| {
                s.iter().copied().filter(|s| s.len > 0).collect::<Vec<_>>()
            };
            prop_assert_eq!(c.readable(), &nonempty(&tc.readable)[..]);
            prop_assert_eq!(c.writable(), &nonempty(&tc.writable)[..]);
            let mut got = vec![0u8; c.readable_len() as usize];
            c.reader(&*hm)
                .read_exact(&mut got)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&got, data);
            let out: Vec<u8> = (0..c.writable_len()).map(|i| i as u8 ^ 0x5a).collect();
            let mut w = c.writer(&*hm);
            w.write_all(&out)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut back = Vec::new();
            for s in c.writable() {
                back.extend(mem.peek(s.addr, s.len as usize));
            }
            prop_assert_eq!(back, out);
            q.add_used(c.head(), w.written())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        prop_assert!(!q
            .pop(&mut c)
            .map_err(|e| TestCaseError::fail(e.to_string()))?);
        for (tc, _) in &expected {
            let total: u32 = tc.writable.iter().map(|s| s.len).sum();
            prop_assert_eq!(drv.pop_used(), Some((u32::from(tc.head), total)));
        }
        prop_assert_eq!(drv.pop_used(), None);
    }
    prop_assert_eq!(mem.oob_attempts(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn well_formed_chains_round_trip(
        start in prop_oneof![Just(0u16), 65520u16..=65535, any::<u16>()],
        event_idx in any::<bool>(),
        // At most 4 chains of at most 4 descriptors per batch: never more than 16 outstanding.
        batches in prop::collection::vec(prop::collection::vec(chain_spec(), 1..=4), 1..=6),
    ) {
        run_round_trip(start, event_idx, &batches)?;
    }
}
