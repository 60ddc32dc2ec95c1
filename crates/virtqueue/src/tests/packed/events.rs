//! Packed ring event suppression, both directions: the driver's structure deciding
//! interrupts (ENABLE, DISABLE, DESC with VIRTIO_F_EVENT_IDX, invalid values) and the
//! device's structure asking for notifications.

use super::{assert_no_oob, setup};
use crate::packed::format::{
    off_wrap, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE,
};
use crate::testing::Buf;
use crate::{DescriptorChain, Queue, QueueError};

/// Pops everything available and marks it used, one add_used each.
fn serve_all(q: &mut Queue) -> usize {
    let mut c = DescriptorChain::default();
    let mut n = 0;
    while q.pop(&mut c).unwrap() {
        q.add_used(c.head(), 0).unwrap();
        n += 1;
    }
    n
}

#[test]
fn interrupts_follow_driver_flags() {
    let (mut drv, mut q) = setup(8, 1 << 16, false);
    // Nothing used yet: never an interrupt, no memory read.
    assert!(!q.needs_interrupt().unwrap());
    drv.add_chain(&[Buf::Writable(1)]);
    serve_all(&mut q);
    assert!(q.needs_interrupt().unwrap(), "ENABLE (zeroed) interrupts");
    assert!(!q.needs_interrupt().unwrap(), "nothing new since");
    drv.set_driver_event(0, RING_EVENT_FLAGS_DISABLE);
    drv.add_chain(&[Buf::Writable(1)]);
    serve_all(&mut q);
    assert!(!q.needs_interrupt().unwrap());
    drv.set_driver_event(0, RING_EVENT_FLAGS_ENABLE);
    assert!(
        q.needs_interrupt().unwrap(),
        "still unsignalled from before"
    );
    assert_eq!(q.stats().interrupts_suggested, 2);
    // DESC without EVENT_IDX and the reserved value are refused.
    for flags in [RING_EVENT_FLAGS_DESC, 3, 0xffff] {
        drv.set_driver_event(0, flags);
        drv.add_chain(&[Buf::Writable(1)]);
        serve_all(&mut q);
        assert_eq!(
            q.needs_interrupt(),
            Err(QueueError::BadEventFlags { flags })
        );
        drv.set_driver_event(0, RING_EVENT_FLAGS_ENABLE);
        assert!(q.needs_interrupt().unwrap());
    }
    assert_no_oob(&drv);
}

#[test]
fn interrupts_follow_the_event_offset_across_laps() {
    let (mut drv, mut q) = setup(4, 1 << 16, true);
    // Ask for an interrupt when the used position passes 2 on the first lap.
    drv.set_driver_event(off_wrap(2, true), RING_EVENT_FLAGS_DESC);
    let mut results = Vec::new();
    for _ in 0..4 {
        let tc = drv.add_chain(&[Buf::Writable(1)]);
        serve_all(&mut q);
        assert_eq!(drv.pop_used().map(|u| u.0), Some(tc.head));
        results.push(q.needs_interrupt().unwrap());
    }
    // Positions used: 0, 1, 2, 3: only the third passes 2.
    assert_eq!(results, [false, false, true, false]);
    // Event at position 1 of the second lap (wrap counter 0): chains at 0 then 1.
    drv.set_driver_event(off_wrap(1, false), RING_EVENT_FLAGS_DESC);
    let mut results = Vec::new();
    for _ in 0..2 {
        drv.add_chain(&[Buf::Writable(1)]);
        serve_all(&mut q);
        drv.pop_used();
        results.push(q.needs_interrupt().unwrap());
    }
    assert_eq!(results, [false, true]);
    // Several used descriptors at once across the wrap, the event in the old lap: passed.
    drv.set_driver_event(off_wrap(3, false), RING_EVENT_FLAGS_DESC);
    for _ in 0..3 {
        drv.add_chain(&[Buf::Writable(1)]);
    }
    assert_eq!(serve_all(&mut q), 3); // positions 2, 3 (lap 2), 0 (lap 3)
    assert!(q.needs_interrupt().unwrap());
    // An offset outside the ring is refused.
    drv.set_driver_event(off_wrap(4, true), RING_EVENT_FLAGS_DESC);
    drv.add_chain(&[Buf::Writable(1)]);
    serve_all(&mut q);
    assert_eq!(
        q.needs_interrupt(),
        Err(QueueError::EventOffsetOutOfRange { off: 4, size: 4 })
    );
    assert_no_oob(&drv);
}

#[test]
fn a_whole_ring_since_the_last_interrupt_always_passes_the_event() {
    let (mut drv, mut q) = setup(4, 1 << 16, true);
    drv.set_driver_event(off_wrap(3, false), RING_EVENT_FLAGS_DESC);
    let mut c = DescriptorChain::default();
    for _ in 0..4 {
        drv.add_chain(&[Buf::Writable(1)]);
        assert!(q.pop(&mut c).unwrap());
        q.add_used(c.head(), 0).unwrap();
        drv.pop_used();
    }
    // Four positions moved in a ring of 4: whatever the event says, it was passed.
    drv.set_driver_event(off_wrap(2, true), RING_EVENT_FLAGS_DESC);
    assert!(q.needs_interrupt().unwrap());
    assert_no_oob(&drv);
}

#[test]
fn notifications_via_device_flags() {
    let (mut drv, mut q) = setup(8, 1 << 16, false);
    q.disable_notification().unwrap();
    assert_eq!(drv.device_event().1, RING_EVENT_FLAGS_DISABLE);
    assert!(!q.enable_notification().unwrap());
    assert_eq!(drv.device_event().1, RING_EVENT_FLAGS_ENABLE);
    // Buffers made available before re-enabling are reported.
    q.disable_notification().unwrap();
    drv.add_chain(&[Buf::Writable(1)]);
    assert!(q.enable_notification().unwrap());
    assert_eq!(serve_all(&mut q), 1);
    assert_no_oob(&drv);
}

#[test]
fn notifications_via_device_event_offset() {
    let (mut drv, mut q) = setup(4, 1 << 16, true);
    assert!(!q.enable_notification().unwrap());
    assert_eq!(
        drv.device_event(),
        (off_wrap(0, true), RING_EVENT_FLAGS_DESC)
    );
    // Disabling is a no-op with EVENT_IDX.
    q.disable_notification().unwrap();
    assert_eq!(drv.device_event().1, RING_EVENT_FLAGS_DESC);
    for _ in 0..3 {
        drv.add_chain(&[Buf::Writable(1)]);
    }
    assert!(q.enable_notification().unwrap());
    assert_eq!(serve_all(&mut q), 3);
    while drv.pop_used().is_some() {}
    drv.add_chain(&[Buf::Writable(1)]);
    assert_eq!(serve_all(&mut q), 1);
    // Next available: position 0 of lap 2.
    assert!(!q.enable_notification().unwrap());
    assert_eq!(
        drv.device_event(),
        (off_wrap(0, false), RING_EVENT_FLAGS_DESC)
    );
    assert_no_oob(&drv);
}
