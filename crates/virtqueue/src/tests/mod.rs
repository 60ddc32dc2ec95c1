//! The crate's tests: normal operation, notification logic, one test per malformed-ring rule,
//! and property tests over random rings. All of them run against [`TestMemory`] and assert
//! that no out-of-range access was ever attempted.

mod events;
mod malformed;
mod normal;
mod notification_data;
mod packed;
mod prop;
mod split_batch;

use crate::testing::{DriverRing, TestMemory};
use crate::{DescriptorChain, Queue};
use std::sync::Arc;

/// Rings of `size` entries at the start of `mem_size` bytes of test memory, and a queue on them.
fn setup(size: u16, mem_size: usize, event_idx: bool) -> (DriverRing, Queue) {
    let mem = Arc::new(TestMemory::new(mem_size));
    let drv = DriverRing::new(mem, size);
    let q = Queue::new(drv.config(), drv.host_memory(), event_idx).expect("valid queue");
    (drv, q)
}

/// Pops one chain, which must be there.
fn pop_one(q: &mut Queue) -> DescriptorChain {
    let mut c = DescriptorChain::default();
    assert!(q.pop(&mut c).expect("pop"), "ring unexpectedly empty");
    c
}

/// Asserts the engine never attempted an access outside test memory.
fn assert_no_oob(drv: &DriverRing) {
    assert_eq!(
        drv.memory().oob_attempts(),
        0,
        "out-of-range host memory access attempted"
    );
}
