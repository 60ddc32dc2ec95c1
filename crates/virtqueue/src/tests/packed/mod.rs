//! Tests of the packed ring (VIRTIO_F_RING_PACKED) behind [`Queue::new_packed`]: normal
//! operation and wrap-around at several sizes, one test per malformed-ring rule, event
//! suppression in both directions, and property tests over random rings. All against
//! [`TestMemory`], asserting no out-of-range access was attempted.

mod events;
mod malformed;
mod normal;
mod prop;

use crate::testing::{PackedDriverRing, TestMemory};
use crate::Queue;
use std::sync::Arc;

/// A packed ring of `size` at the start of `mem_size` bytes, and a queue on it.
fn setup(size: u16, mem_size: usize, event_idx: bool) -> (PackedDriverRing, Queue) {
    let mem = Arc::new(TestMemory::new(mem_size));
    let drv = PackedDriverRing::new(mem, size);
    let q = Queue::new_packed(drv.config(), drv.host_memory(), event_idx).expect("valid queue");
    (drv, q)
}

fn assert_no_oob(drv: &PackedDriverRing) {
    assert_eq!(
        drv.memory().oob_attempts(),
        0,
        "out-of-range host memory access attempted"
    );
}
