//! VIRTIO_F_IN_ORDER end to end between the device-side engine and the loopback host driver
//! (`epf-loopback`'s `HostQueue`, written from the spec independently): batches published
//! with one used entry, skipped buffers taken as used completely, a short completion ending
//! a batch, completions that overtake older buffers held back, wrap-around at several queue
//! sizes, direct, chained and indirect buffers, split and packed rings; and the driver
//! always gets back exactly what the device reported, in order.

use epf_epc::{EndpointController, HostMemory};
use epf_loopback::host_driver::{DriverError, HostQueue};
use epf_loopback::{HostBus, LoopbackController, LoopbackOptions};
use epf_virtqueue::{DescriptorChain, Queue, QueueConfig};
use std::collections::VecDeque;
use std::sync::Arc;

struct Pair {
    c: LoopbackController,
    bus: HostBus,
    drv: HostQueue,
    dev: Queue,
    mem: Arc<dyn HostMemory>,
}

fn pair(size: u16, packed: bool, indirect: bool) -> Pair {
    let c = LoopbackController::new(LoopbackOptions::default().with_ram_size(16 << 20))
        .expect("loopback controller");
    let bus = c.host();
    let mut drv = HostQueue::standalone(bus.clone(), size, packed, false, indirect).unwrap();
    drv.set_in_order(true);
    let cfg = QueueConfig {
        size,
        desc_addr: drv.desc_addr(),
        avail_addr: drv.avail_addr(),
        used_addr: drv.used_addr(),
    };
    let mem = c.host_memory();
    let mut dev = if packed {
        Queue::new_packed(cfg, mem.clone(), false)
    } else {
        Queue::new(cfg, mem.clone(), false)
    }
    .unwrap();
    dev.set_in_order(true);
    Pair {
        c,
        bus,
        drv,
        dev,
        mem,
    }
}

fn pop(dev: &mut Queue) -> DescriptorChain {
    let mut c = DescriptorChain::default();
    assert!(dev.pop(&mut c).unwrap(), "a chain was available");
    c
}

#[test]
fn a_batch_of_transmit_buffers_is_one_used_entry() {
    for packed in [false, true] {
        let mut p = pair(64, packed, false);
        let buf = p.bus.alloc(64, 8).unwrap();
        let heads: Vec<u16> = (0..32)
            .map(|_| p.drv.add(&[(buf, 64, false)]).unwrap())
            .collect();
        let popped: Vec<(u16, u32)> = (0..32).map(|_| (pop(&mut p.dev).head(), 0)).collect();
        p.dev.add_used_many(&popped).unwrap();
        p.dev.flush_used().unwrap();
        assert_eq!(p.dev.stats().used_elided, 31, "packed={packed}");
        if packed {
            // One used descriptor, over the batch's first, with the last buffer's id.
            let flags = p.mem.read_u16(p.drv.desc_addr() + 14).unwrap();
            assert_eq!(flags & 0x8080, 0x8080, "AVAIL and USED set (wrap 1)");
            let id = p.mem.read_u16(p.drv.desc_addr() + 12).unwrap();
            assert_eq!(id, heads[31]);
            let second = p.mem.read_u16(p.drv.desc_addr() + 16 + 14).unwrap();
            assert_eq!(
                second & 0x8000,
                0,
                "the second position was not written as used"
            );
        } else {
            assert_eq!(p.drv.used_idx().unwrap(), 32);
            assert_eq!(p.drv.used_entry(0).unwrap(), (u32::from(heads[31]), 0));
        }
        for (i, &h) in heads.iter().enumerate() {
            assert_eq!(p.drv.get_used().unwrap(), Some((h, 0)), "buffer {i}");
        }
        assert_eq!(p.drv.get_used().unwrap(), None);
        assert_eq!(p.drv.num_free(), 64);
        assert_eq!(p.c.oob_attempts(), 0);
    }
}

#[test]
fn a_short_receive_completion_ends_a_batch() {
    for packed in [false, true] {
        let mut p = pair(16, packed, false);
        let buf = p.bus.alloc(100, 8).unwrap();
        let heads: Vec<u16> = (0..6)
            .map(|_| p.drv.add(&[(buf, 100, true)]).unwrap())
            .collect();
        let lens = [100, 100, 40, 100, 100, 0];
        let done: Vec<(u16, u32)> = lens.iter().map(|&l| (pop(&mut p.dev).head(), l)).collect();
        p.dev.add_used_many(&done).unwrap();
        p.dev.flush_used().unwrap();
        // Entries end at the 40 and at the 0: 4 of 6 skipped.
        assert_eq!(p.dev.stats().used_elided, 4, "packed={packed}");
        for (i, &h) in heads.iter().enumerate() {
            assert_eq!(
                p.drv.get_used().unwrap(),
                Some((h, lens[i])),
                "buffer {i}, packed={packed}"
            );
        }
        assert_eq!(p.c.oob_attempts(), 0);
    }
}

#[test]
fn a_completion_that_overtakes_an_older_buffer_waits_for_it() {
    for packed in [false, true] {
        let mut p = pair(8, packed, false);
        let buf = p.bus.alloc(16, 8).unwrap();
        let a = p.drv.add(&[(buf, 16, true)]).unwrap();
        let b = p.drv.add(&[(buf, 16, true)]).unwrap();
        let (ca, cb) = (pop(&mut p.dev), pop(&mut p.dev));
        p.dev.add_used(cb.head(), 16).unwrap();
        p.dev.flush_used().unwrap();
        assert!(!p.drv.has_used().unwrap(), "b is held until a completes");
        assert!(!p.dev.needs_interrupt().unwrap() || packed);
        p.dev.add_used(ca.head(), 7).unwrap();
        assert!(!p.drv.has_used().unwrap(), "published by the flush only");
        p.dev.flush_used().unwrap();
        assert_eq!(p.drv.get_used().unwrap(), Some((a, 7)));
        assert_eq!(p.drv.get_used().unwrap(), Some((b, 16)));
        // An id that is not outstanding is refused and changes nothing.
        assert!(p.dev.add_used(a, 1).is_err());
        assert_eq!(p.drv.get_used().unwrap(), None);
    }
}

#[test]
fn undo_pop_forgets_the_buffer_until_it_is_popped_again() {
    for packed in [false, true] {
        let mut p = pair(8, packed, false);
        let buf = p.bus.alloc(16, 8).unwrap();
        let a = p.drv.add(&[(buf, 16, false)]).unwrap();
        let b = p.drv.add(&[(buf, 16, false)]).unwrap();
        let ca = pop(&mut p.dev);
        let _ = pop(&mut p.dev);
        p.dev.undo_pop();
        p.dev.add_used(ca.head(), 0).unwrap();
        p.dev.flush_used().unwrap();
        assert_eq!(p.drv.get_used().unwrap(), Some((a, 0)));
        let cb = pop(&mut p.dev);
        assert_eq!(cb.head(), b);
        p.dev.add_used(cb.head(), 0).unwrap();
        assert!(p.dev.needs_interrupt().is_ok(), "publishes too");
        assert_eq!(p.drv.get_used().unwrap(), Some((b, 0)));
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random traffic: chains of 1-3 descriptors (some indirect), full or short completions,
/// completion order shuffled within what is popped, batches of random size; many laps
/// around the ring. The driver must get back every buffer in order with the device's
/// length (or, where skipped, the buffer's whole writable size, which is what the device
/// reported then).
fn random_traffic(size: u16, packed: bool, seed: u64, buffers: u64) {
    let mut p = pair(size, packed, true);
    let mut rng = Rng(seed | 1);
    let data = p.bus.alloc(4096, 8).unwrap();
    // Driver side: (id, expected used length) in submission order.
    let mut expect: VecDeque<(u16, u32)> = VecDeque::new();
    // Device side: popped and not completed, with the length it will report.
    let mut popped: Vec<(u16, u32)> = Vec::new();
    let (mut added, mut got) = (0u64, 0u64);
    while got < buffers {
        // Driver: add a few.
        for _ in 0..rng.below(6) {
            if added >= buffers {
                break;
            }
            let n = 1 + rng.below(3) as usize;
            let bufs: Vec<(u64, u32, bool)> = (0..n)
                .map(|k| {
                    let len = 1 + rng.below(64) as u32;
                    // Readable descriptors first, then writable ones.
                    (data + 64 * k as u64, len, k + 1 == n && rng.below(2) == 0)
                })
                .collect();
            let indirect = rng.below(4) == 0;
            let r = if indirect {
                p.drv.add_indirect(&bufs)
            } else {
                p.drv.add(&bufs)
            };
            match r {
                Ok(id) => {
                    added += 1;
                    expect.push_back((id, bufs.iter().filter(|b| b.2).map(|b| b.1).sum()));
                }
                Err(DriverError::QueueFull { .. }) => break,
                Err(e) => panic!("add: {e}"),
            }
        }
        // Device: pop a few, complete a random subset in random order.
        for _ in 0..rng.below(5) {
            let mut c = DescriptorChain::default();
            if !p.dev.pop(&mut c).unwrap() {
                break;
            }
            let w = c.writable_len() as u32;
            let len = if w > 0 && rng.below(3) == 0 {
                rng.below(u64::from(w)) as u32
            } else {
                w
            };
            popped.push((c.head(), len));
        }
        let mut done = Vec::new();
        for _ in 0..rng.below(popped.len() as u64 + 1) {
            let k = rng.below(popped.len() as u64) as usize;
            done.push(popped.swap_remove(k));
        }
        if rng.below(2) == 0 {
            p.dev.add_used_many(&done).unwrap();
        } else {
            for &(h, l) in &done {
                p.dev.add_used(h, l).unwrap();
            }
        }
        if rng.below(4) != 0 {
            p.dev.flush_used().unwrap();
        }
        // The lengths the device reported (a skipped buffer's is its writable size, which
        // is then what the device reported).
        for &(h, l) in &done {
            if let Some(e) = expect.iter_mut().find(|e| e.0 == h) {
                e.1 = l;
            }
        }
        // Driver: reap some.
        for _ in 0..rng.below(8) {
            match p.drv.get_used().unwrap() {
                Some((id, len)) => {
                    let (eid, elen) = expect.pop_front().expect("a buffer was outstanding");
                    assert_eq!(
                        (id, len),
                        (eid, elen),
                        "buffer {got}, size {size}, packed={packed}"
                    );
                    got += 1;
                }
                None => break,
            }
        }
    }
    assert!(expect.is_empty() && popped.is_empty());
    assert_eq!(p.drv.num_free(), size);
    assert!(size == 1 || p.dev.stats().used_elided > 0);
    assert_eq!(p.c.oob_attempts(), 0);
}

#[test]
fn random_in_order_traffic_split() {
    for (size, seed) in [(1u16, 1u64), (2, 2), (8, 3), (64, 4), (256, 5)] {
        random_traffic(size, false, seed, 3000);
    }
}

#[test]
fn random_in_order_traffic_packed() {
    for (size, seed) in [(1u16, 11u64), (3, 12), (7, 13), (64, 14), (255, 15)] {
        random_traffic(size, true, seed, 3000);
    }
}

#[test]
fn split_used_index_wraps_past_65535() {
    random_traffic(4, false, 99, 70_000);
}

/// The loopback driver's burst publication (ring-bench's driver, like DPDK's virtio PMD):
/// buffers added are invisible to the device until one `avail.idx` store covers them all.
#[test]
fn burst_publication_shows_a_burst_with_one_index_store() {
    let mut p = pair(16, false, false);
    p.drv.set_burst_publish(true);
    let buf = p.bus.alloc(16, 8).unwrap();
    let heads: Vec<u16> = (0..5)
        .map(|_| p.drv.add(&[(buf, 16, false)]).unwrap())
        .collect();
    let mut c = DescriptorChain::default();
    assert!(!p.dev.pop(&mut c).unwrap(), "nothing published yet");
    p.drv.publish_avail().unwrap();
    for &h in &heads {
        assert_eq!(pop(&mut p.dev).head(), h);
    }
    assert!(!p.dev.pop(&mut c).unwrap());
}

/// A driver that makes a descriptor available again while it is in flight (re-posting a
/// head through the raw helpers) cannot grow the in-order bookkeeping past the queue size:
/// the pop that would exceed it fails (DEVICE_NEEDS_RESET for the transport), and nothing
/// outside host memory was touched.
#[test]
fn re_posted_heads_cannot_grow_the_in_order_state_past_the_queue_size() {
    let mut p = pair(4, false, false);
    let buf = p.bus.alloc(16, 8).unwrap();
    let head = p.drv.add(&[(buf, 16, true)]).unwrap();
    // Pop everything the driver makes available, completing nothing but the newest, so
    // the oldest holds everything back.
    let mut popped = 0;
    let err = loop {
        let mut c = DescriptorChain::default();
        match p.dev.pop(&mut c) {
            Ok(true) => popped += 1,
            Ok(false) => p.drv.push_avail_raw(head).unwrap(),
            Err(e) => break e,
        }
        assert!(popped <= 4, "popped {popped} on a queue of 4");
    };
    assert!(
        matches!(err, epf_virtqueue::QueueError::InOrderOverrun { size: 4 }),
        "{err}"
    );
    assert_eq!(popped, 4);
    assert_eq!(p.c.oob_attempts(), 0);
}
