//! Batched host-memory access of the split ring (`split_cache.rs`): available entries and
//! descriptor blocks read once for many pops, used elements published in one write, and
//! never a stale descriptor or entry after the driver published more.

use super::{assert_no_oob, setup};
use crate::testing::Buf;
use crate::DescriptorChain;

#[test]
fn a_batch_of_chains_costs_a_few_reads_and_one_used_write() {
    let (mut drv, mut q) = setup(64, 1 << 16, true);
    let chains: Vec<_> = (0..32u8)
        .map(|i| drv.add_chain(&[Buf::Readable(vec![i; 8])]))
        .collect();
    let mem = drv.memory().clone();
    let before = mem.accesses();
    let mut c = DescriptorChain::default();
    let mut used = Vec::new();
    for t in &chains {
        assert!(q.pop(&mut c).unwrap());
        assert_eq!(c.head(), t.head);
        assert_eq!(c.readable()[0].addr, t.readable[0].addr);
        used.push((c.head(), 0));
    }
    assert!(!q.pop(&mut c).unwrap());
    let reads = mem.accesses() - before;
    // avail.idx twice (the first pop, the last look), the 32 entries once, and the 32
    // descriptors in blocks of 8: 7 reads where one per entry and descriptor took 66.
    assert_eq!(reads, 7);
    let before = mem.accesses();
    q.add_used_many(&used).unwrap();
    // The 32 elements, then used.idx.
    assert_eq!(mem.accesses() - before, 2);
    for (i, t) in chains.iter().enumerate() {
        assert_eq!(drv.pop_used(), Some((u32::from(t.head), 0)), "element {i}");
    }
    assert_no_oob(&drv);
}

#[test]
fn used_elements_wrap_around_the_ring_in_two_writes() {
    let (mut drv, mut q) = setup(8, 1 << 16, true);
    // Move both indices to 5, so 6 elements wrap after 3.
    let mut c = DescriptorChain::default();
    for _ in 0..5 {
        drv.add_chain(&[Buf::Writable(4)]);
        assert!(q.pop(&mut c).unwrap());
        q.add_used(c.head(), 4).unwrap();
        drv.pop_used().unwrap();
    }
    let mut used = Vec::new();
    for _ in 0..6 {
        drv.add_chain(&[Buf::Writable(4)]);
    }
    while q.pop(&mut c).unwrap() {
        used.push((c.head(), 4));
    }
    assert_eq!(used.len(), 6);
    let mem = drv.memory().clone();
    let before = mem.accesses();
    q.add_used_many(&used).unwrap();
    assert_eq!(mem.accesses() - before, 3, "two runs and used.idx");
    for &(h, len) in &used {
        assert_eq!(drv.pop_used(), Some((u32::from(h), len)));
    }
    assert_eq!(drv.used_idx(), 11);
    assert_no_oob(&drv);
}

/// The block read for the first chain also held descriptors the driver had not written yet;
/// once it publishes them, the engine reads them again, as it does entries past the end of
/// a batch.
#[test]
fn descriptors_and_entries_published_later_are_read_again() {
    let (mut drv, mut q) = setup(16, 1 << 16, true);
    let mut c = DescriptorChain::default();
    let first = drv.add_chain(&[Buf::Readable(vec![1; 8])]);
    assert!(q.pop(&mut c).unwrap());
    assert_eq!(c.readable()[0].addr, first.readable[0].addr);
    assert!(!q.pop(&mut c).unwrap());
    // Descriptors 1.. and entries 1.. are written only now, after the engine's block read.
    for round in 0..40u8 {
        let t = drv.add_chain(&[Buf::Readable(vec![round; 8])]);
        assert!(q.pop(&mut c).unwrap(), "round {round}");
        assert_eq!(
            (c.head(), c.readable()[0].addr),
            (t.head, t.readable[0].addr)
        );
        let mut data = vec![0; 8];
        c.reader(drv.memory().as_ref())
            .read_exact(&mut data)
            .unwrap();
        assert_eq!(data, vec![round; 8]);
        q.add_used(c.head(), 0).unwrap();
        drv.pop_used().unwrap();
        assert!(!q.pop(&mut c).unwrap());
    }
    assert_no_oob(&drv);
}
