//! Notification suppression in both directions, with and without VIRTIO_F_EVENT_IDX.

use super::{assert_no_oob, pop_one, setup};
use crate::testing::Buf;
use crate::{DescriptorChain, VRING_AVAIL_F_NO_INTERRUPT, VRING_USED_F_NO_NOTIFY};

#[test]
fn interrupts_follow_avail_flags_without_event_idx() {
    let (mut drv, mut q) = setup(8, 1 << 16, false);
    assert!(!q.needs_interrupt().unwrap(), "nothing added yet");
    drv.add_chain(&[Buf::Writable(4)]);
    let c = pop_one(&mut q);
    q.add_used(c.head(), 4).unwrap();
    assert!(q.needs_interrupt().unwrap());
    assert!(
        !q.needs_interrupt().unwrap(),
        "nothing added since the last interrupt"
    );

    drv.set_avail_flags(VRING_AVAIL_F_NO_INTERRUPT);
    drv.add_chain(&[Buf::Writable(4)]);
    let c = pop_one(&mut q);
    q.add_used(c.head(), 4).unwrap();
    assert!(
        !q.needs_interrupt().unwrap(),
        "driver suppressed interrupts"
    );
    // Re-enabled: the element added while suppressed still warrants one interrupt.
    drv.set_avail_flags(0);
    assert!(q.needs_interrupt().unwrap());
    assert!(!q.needs_interrupt().unwrap());
    assert_eq!(q.stats().interrupts_suggested, 2);
    assert_no_oob(&drv);
}

#[test]
fn interrupts_follow_used_event() {
    let (mut drv, mut q) = setup(8, 1 << 16, true);
    // The flag is meaningless with EVENT_IDX.
    drv.set_avail_flags(VRING_AVAIL_F_NO_INTERRUPT);
    drv.set_used_event(2);
    let mut c = DescriptorChain::default();
    for _ in 0..5 {
        drv.add_chain(&[Buf::Writable(1)]);
    }
    let mut results = Vec::new();
    for _ in 0..5 {
        assert!(q.pop(&mut c).unwrap());
        q.add_used(c.head(), 1).unwrap();
        results.push(q.needs_interrupt().unwrap());
    }
    // used_event = 2: interrupt when element 2 is published (used.idx goes 2 -> 3).
    assert_eq!(results, [false, false, true, false, false]);

    // Batched: three elements added, event among them.
    drv.set_used_event(6);
    for _ in 0..3 {
        drv.add_chain(&[Buf::Writable(1)]);
        assert!(q.pop(&mut c).unwrap());
        q.add_used(c.head(), 1).unwrap();
    }
    assert!(q.needs_interrupt().unwrap());

    // Event already behind us: none.
    drv.set_used_event(3);
    drv.add_chain(&[Buf::Writable(1)]);
    assert!(q.pop(&mut c).unwrap());
    q.add_used(c.head(), 1).unwrap();
    assert!(!q.needs_interrupt().unwrap());
    // The driver moves used_event back to an element added since the last interrupt.
    drv.set_used_event(8);
    assert!(q.needs_interrupt().unwrap());
    assert_no_oob(&drv);
}

#[test]
fn used_event_across_index_wrap() {
    let (mut drv, mut q) = setup(4, 1 << 16, true);
    drv.set_indices(65533, 65533);
    q.set_next_avail(65533);
    q.set_next_used(65533);
    drv.set_used_event(0);
    let mut c = DescriptorChain::default();
    let mut results = Vec::new();
    for _ in 0..5 {
        drv.add_chain(&[Buf::Writable(1)]);
        assert!(q.pop(&mut c).unwrap());
        q.add_used(c.head(), 1).unwrap();
        results.push((q.next_used(), q.needs_interrupt().unwrap()));
    }
    assert_eq!(
        results,
        [
            (65534, false),
            (65535, false),
            (0, false),
            (1, true),
            (2, false)
        ]
    );
    // Event 65535 with a batch spanning the wrap.
    drv.set_used_event(65535u16.wrapping_add(4));
    for _ in 0..3 {
        drv.add_chain(&[Buf::Writable(1)]);
        assert!(q.pop(&mut c).unwrap());
        q.add_used(c.head(), 1).unwrap();
    }
    assert_eq!(q.next_used(), 5);
    assert!(q.needs_interrupt().unwrap());
    assert_no_oob(&drv);
}

#[test]
fn more_than_65535_unsignalled_elements_interrupt() {
    let (mut drv, mut q) = setup(1, 1 << 16, true);
    drv.set_used_event(0);
    let mut c = DescriptorChain::default();
    drv.add_chain(&[Buf::Writable(1)]);
    assert!(q.pop(&mut c).unwrap());
    q.add_used(0, 0).unwrap();
    assert!(q.needs_interrupt().unwrap());
    // Event 0 again, never updated by the driver: the next 65535 elements (indices 1..=65535)
    // do not include element 0 ...
    for _ in 0..65535 {
        q.add_used(0, 0).unwrap();
    }
    assert_eq!(q.next_used(), 0);
    assert!(!q.needs_interrupt().unwrap());
    q.add_used(0, 0).unwrap();
    // ... but the 65536th is element 0 again; the 16-bit window alone could not tell.
    assert!(q.needs_interrupt().unwrap(), "element 0 passed");
    // 65536 more without any check in between: the window covers the whole index space.
    drv.set_used_event(12345);
    for _ in 0..65536 {
        q.add_used(0, 0).unwrap();
    }
    assert!(q.needs_interrupt().unwrap());
    assert_no_oob(&drv);
}

#[test]
fn notifications_via_used_flags_without_event_idx() {
    let (mut drv, mut q) = setup(8, 1 << 16, false);
    q.disable_notification().unwrap();
    assert_eq!(drv.used_flags(), VRING_USED_F_NO_NOTIFY);
    assert!(!q.enable_notification().unwrap());
    assert_eq!(drv.used_flags(), 0);
    q.disable_notification().unwrap();
    drv.add_chain(&[Buf::Writable(1)]);
    // Buffers arrived while disabled: enable reports them.
    assert!(q.enable_notification().unwrap());
    assert_eq!(drv.used_flags(), 0);
    let _ = pop_one(&mut q);
    assert!(!q.enable_notification().unwrap());
    assert_eq!(
        drv.avail_event(),
        0,
        "avail_event untouched without EVENT_IDX"
    );
    assert_no_oob(&drv);
}

#[test]
fn notifications_via_avail_event() {
    let (mut drv, mut q) = setup(8, 1 << 16, true);
    q.disable_notification().unwrap();
    assert_eq!(drv.used_flags(), 0, "used.flags untouched with EVENT_IDX");
    assert!(!q.enable_notification().unwrap());
    assert_eq!(drv.avail_event(), 0);
    drv.add_chain(&[Buf::Writable(1)]);
    drv.add_chain(&[Buf::Writable(1)]);
    assert!(q.enable_notification().unwrap());
    let _ = pop_one(&mut q);
    assert!(q.enable_notification().unwrap(), "one left");
    assert_eq!(drv.avail_event(), 1);
    let _ = pop_one(&mut q);
    assert!(!q.enable_notification().unwrap());
    assert_eq!(drv.avail_event(), 2);
    // disable is a no-op: avail_event stays.
    q.disable_notification().unwrap();
    assert_eq!(drv.avail_event(), 2);
    assert_eq!(drv.used_flags(), 0);
    assert_no_oob(&drv);
}

#[test]
fn avail_event_across_index_wrap() {
    let (mut drv, mut q) = setup(4, 1 << 16, true);
    drv.set_indices(65535, 0);
    q.set_next_avail(65535);
    assert!(!q.enable_notification().unwrap());
    assert_eq!(drv.avail_event(), 65535);
    drv.add_chain(&[Buf::Writable(1)]);
    assert!(q.has_available().unwrap());
    let _ = pop_one(&mut q);
    assert!(!q.enable_notification().unwrap());
    assert_eq!(drv.avail_event(), 0);
    assert_no_oob(&drv);
}

use std::sync::Arc;

/// Host memory that counts the stores to one address (the used index), to show that
/// `add_used_many` publishes a batch with a single store.
struct CountingMemory {
    inner: Arc<crate::testing::TestMemory>,
    watch: u64,
    stores: std::sync::atomic::AtomicU32,
}

impl epf_epc::HostMemory for CountingMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), epf_epc::HostMemError> {
        self.inner.read(addr, buf)
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), epf_epc::HostMemError> {
        self.inner.write(addr, data)
    }
    fn check_range(&self, addr: u64, len: u64) -> Result<(), epf_epc::HostMemError> {
        self.inner.check_range(addr, len)
    }
    fn read_u16(&self, addr: u64) -> Result<u16, epf_epc::HostMemError> {
        self.inner.read_u16(addr)
    }
    fn write_u16(&self, addr: u64, v: u16) -> Result<(), epf_epc::HostMemError> {
        if addr == self.watch {
            self.stores
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.inner.write_u16(addr, v)
    }
}

#[test]
fn add_used_many_publishes_once_and_counts_every_element() {
    use crate::{Queue, QueueError};
    let (mut drv, _) = setup(8, 1 << 16, true);
    let mem = Arc::new(CountingMemory {
        inner: drv.memory().clone(),
        watch: crate::layout::used_idx_addr(drv.config().used_addr),
        stores: Default::default(),
    });
    let mut q = Queue::new(drv.config(), mem.clone(), true).unwrap();
    let mut heads = Vec::new();
    let mut c = DescriptorChain::default();
    for _ in 0..4 {
        drv.add_chain(&[Buf::Writable(8)]);
        assert!(q.pop(&mut c).unwrap());
        heads.push(c.head());
    }
    // The driver wants an interrupt for the first element of the batch, which a queue
    // counting only the last element would miss.
    drv.set_used_event(0);
    let elems: Vec<(u16, u32)> = heads.iter().map(|&h| (h, 8)).collect();
    // An id outside the queue, or more elements than the ring holds: nothing is written.
    assert_eq!(
        q.add_used_many(&[(heads[0], 1), (8, 1)]),
        Err(QueueError::UsedIdOutOfRange { id: 8, size: 8 })
    );
    assert!(q.add_used_many(&[(0, 0); 9]).is_err());
    assert_eq!(drv.used_idx(), 0);
    q.add_used_many(&elems).unwrap();
    assert_eq!(mem.stores.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(drv.used_idx(), 4);
    for (i, &h) in heads.iter().enumerate() {
        assert_eq!(drv.used_elem(i as u16), (u32::from(h), 8));
    }
    assert_eq!(q.next_used(), 4);
    assert_eq!(q.stats().used_added, 4);
    assert!(q.needs_interrupt().unwrap());
    q.add_used_many(&[]).unwrap();
    assert!(!q.needs_interrupt().unwrap());
    assert_eq!(mem.stores.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_no_oob(&drv);
}
