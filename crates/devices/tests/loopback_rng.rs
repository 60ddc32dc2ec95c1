//! virtio-rng end to end: the real [`RngDevice`] behind the real virtio-pci function on the
//! loopback controller, driven only through the loopback host driver.

mod common;

use common::*;

/// Split rings unless a test says otherwise: several tests check split-ring indices
/// (`used_idx`, `last_used_idx`); the packed variants below use `common::ALL_FEATURES`.
const ALL_FEATURES: u64 = SPLIT_FEATURES;
use epf_devices::RngDevice;
use epf_loopback::host_driver::spec::*;
use epf_loopback::host_driver::{HostQueue, VirtioPciDriver};
use epf_loopback::HostBus;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);
const RNG_VECTOR: u16 = 1;
/// Bytes the device hands out per request at most.
const MAX_REQUEST: u32 = 64 * 1024;
/// Fill of buffers and of the guard bytes around them.
const POISON: u8 = 0xcc;
const GUARD: u64 = 16;

/// A buffer area posted to the device: segments separated by poisoned guard bytes.
struct Posted {
    slot: usize,
    segs: Vec<(u64, u32)>,
    total: u32,
}

/// The host side of an rng queue: a pool of slots (each big enough for a maximal request
/// plus guards), a pipeline of outstanding requests, and checks of every completion.
struct RngHost {
    bus: HostBus,
    slots: Vec<u64>,
    slot_len: u64,
    free: Vec<usize>,
    posted: HashMap<u16, Posted>,
    pub bytes: u64,
    pub requests: u64,
}

impl RngHost {
    fn new(bus: HostBus, slots: usize, max_request: u32) -> Self {
        // Up to 8 segments, each with a guard before it, plus a trailing guard.
        let slot_len = u64::from(max_request) + 9 * GUARD;
        let slots: Vec<u64> = (0..slots)
            .map(|_| bus.alloc(slot_len, 64).unwrap())
            .collect();
        RngHost {
            bus,
            free: (0..slots.len()).rev().collect(),
            slots,
            slot_len,
            posted: HashMap::new(),
            bytes: 0,
            requests: 0,
        }
    }

    fn in_flight(&self) -> usize {
        self.posted.len()
    }

    /// Posts a request of `total` bytes shaped `shape` split into `nsegs` segments.
    fn post(&mut self, q: &mut HostQueue, rng: &mut Prng, total: u32, shape: Shape) {
        let slot = self.free.pop().expect("a free slot");
        let base = self.slots[slot];
        self.bus
            .ram_write(base, &vec![POISON; self.slot_len as usize])
            .unwrap();
        let nsegs = match shape {
            Shape::Single => 1,
            _ => rng.range(1, 8.min(u64::from(total)).max(1)) as usize,
        };
        let nsegs = if shape == Shape::Multi {
            nsegs.min(q.num_free() as usize).max(1)
        } else {
            nsegs
        };
        // Split `total` at random cut points (segments may be empty for Multi/Indirect
        // chains of more than one descriptor).
        let mut cuts: Vec<u32> = (1..nsegs)
            .map(|_| rng.range(0, u64::from(total)) as u32)
            .collect();
        cuts.push(0);
        cuts.push(total);
        cuts.sort_unstable();
        let mut segs = Vec::with_capacity(nsegs);
        let mut at = base + GUARD;
        for w in cuts.windows(2) {
            let len = w[1] - w[0];
            segs.push((at, len));
            at += u64::from(len) + GUARD;
        }
        assert!(at <= base + self.slot_len);
        let bufs: Vec<(u64, u32, bool)> = segs.iter().map(|&(a, l)| (a, l, true)).collect();
        let head = match shape {
            Shape::Indirect => q.add_indirect(&bufs).unwrap(),
            _ => q.add(&bufs).unwrap(),
        };
        assert!(self
            .posted
            .insert(head, Posted { slot, segs, total })
            .is_none());
    }

    /// Checks a completion: used length, every segment written, every guard intact.
    fn complete(&mut self, head: u16, len: u32) -> Vec<u8> {
        let p = self
            .posted
            .remove(&head)
            .expect("used id is an outstanding head");
        assert_eq!(len, p.total, "used length of head {head}");
        let base = self.slots[p.slot];
        let mut area = vec![0; self.slot_len as usize];
        self.bus.ram_read(base, &mut area).unwrap();
        let mut data = Vec::with_capacity(p.total as usize);
        let mut pos = 0usize;
        for &(a, l) in &p.segs {
            let off = (a - base) as usize;
            assert!(
                area[pos..off].iter().all(|&b| b == POISON),
                "guard before segment at {a:#x} overwritten"
            );
            let seg = &area[off..off + l as usize];
            if l >= 16 {
                assert!(
                    seg.iter().any(|&b| b != POISON) && seg.iter().any(|&b| b != 0),
                    "segment of {l} bytes at {a:#x} not filled"
                );
            }
            data.extend_from_slice(seg);
            pos = off + l as usize;
        }
        assert!(
            area[pos..].iter().all(|&b| b == POISON),
            "device wrote past the last segment"
        );
        self.free.push(p.slot);
        self.bytes += u64::from(len);
        self.requests += 1;
        data
    }
}

/// A request size: a mix of tiny, odd, page-sized and maximal sizes.
fn pick_size(rng: &mut Prng, max: u32) -> u32 {
    const SIZES: [u32; 18] = [
        1, 2, 3, 15, 16, 17, 100, 511, 512, 1000, 4095, 4096, 4097, 10000, 16384, 32768, 65535,
        65536,
    ];
    let s = if rng.range(0, 3) == 0 {
        rng.range(1, u64::from(max)) as u32
    } else {
        SIZES[rng.range(0, SIZES.len() as u64 - 1) as usize]
    };
    s.min(max)
}

/// Brings up an rng with `features`, MSI-X, the queue at `size`.
fn rng_up(rig: &Rig, features: u64, size: Option<u16>) -> (VirtioPciDriver, HostQueue) {
    let mut drv = rig.driver();
    assert!(drv.enable_msix());
    let mut qs = bring_up(&mut drv, features, &[(0, size, Some(RNG_VECTOR))]);
    (drv, qs.remove(0))
}

/// How much to read and how.
struct Plan {
    /// Read at least this many bytes...
    bytes: u64,
    /// ...in at least this many requests.
    requests: u64,
    /// Largest request.
    max_size: u32,
    /// Requests outstanding at most.
    depth: usize,
    /// Whether indirect chains may be used (VIRTIO_F_INDIRECT_DESC negotiated).
    indirect: bool,
}

/// Reads according to `plan`, kicking like Linux (`virtqueue_kick`, honouring suppression)
/// and requiring an interrupt whenever it waits.
fn read_entropy(rig: &Rig, q: &mut HostQueue, host: &mut RngHost, rng: &mut Prng, plan: &Plan) {
    let bus = rig.bus();
    let (start_bytes, start_reqs) = (host.bytes, host.requests);
    let (mut posted_bytes, mut posted_reqs) = (0u64, 0u64);
    loop {
        let mut added = false;
        while (posted_bytes < plan.bytes || posted_reqs < plan.requests)
            && host.in_flight() < plan.depth
            && q.num_free() > 0
        {
            let size = pick_size(rng, plan.max_size);
            let shape = Shape::pick(rng, plan.indirect);
            host.post(q, rng, size, shape);
            posted_bytes += u64::from(size);
            posted_reqs += 1;
            added = true;
        }
        if added {
            q.kick().unwrap();
        }
        if host.in_flight() == 0 {
            break;
        }
        let (head, len) = wait_used_strict(&bus, q);
        host.complete(head, len);
        while let Some((head, len)) = q.get_used().unwrap() {
            host.complete(head, len);
        }
    }
    assert!(host.bytes - start_bytes >= plan.bytes);
    assert!(host.requests - start_reqs >= plan.requests);
}

fn read_one_mib(features: u64, seed: u64) {
    let rig = rig(Box::new(RngDevice::new(256)));
    let (drv, mut q) = rng_up(&rig, features, None);
    let negotiated = drv.negotiated_features();
    assert_eq!(q.event_idx(), negotiated & feature(VIRTIO_F_EVENT_IDX) != 0);
    assert_eq!(q.is_packed(), features & RING_PACKED != 0);
    let mut host = RngHost::new(rig.bus(), 32, MAX_REQUEST);
    let mut rng = Prng::new(seed);

    // Two small reads differ.
    let mut two = Vec::new();
    for _ in 0..2 {
        host.post(&mut q, &mut rng, 64, Shape::Single);
        q.kick().unwrap();
        let (head, len) = wait_used_strict(&rig.bus(), &mut q);
        two.push(host.complete(head, len));
    }
    assert_ne!(two[0], two[1], "two reads returned the same bytes");

    let start = Instant::now();
    let plan = Plan {
        bytes: 1 << 20,
        requests: 64,
        max_size: MAX_REQUEST,
        depth: 32,
        indirect: negotiated & feature(VIRTIO_F_INDIRECT_DESC) != 0,
    };
    read_entropy(&rig, &mut q, &mut host, &mut rng, &plan);
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "rng (features {negotiated:#x}): {} requests, {} bytes in {:.3}s = {:.1} MiB/s",
        host.requests,
        host.bytes,
        secs,
        host.bytes as f64 / (1 << 20) as f64 / secs
    );
    assert_eq!(drv.status() & NEEDS_RESET, 0);
    // The device's counters reach the operator with the function's, through one report
    // (the device counts a request just after completing it: wait for the last one).
    let report = || {
        epf_device::Counters::new()
            .add(rig.f.as_ref())
            .text()
            .to_string()
    };
    let count = |text: &str, line: &str, key: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(line))?
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    let expected = |t: &str| {
        count(t, "rng:", "bytes") == Some(host.bytes)
            && count(t, "rng:", "requests") == Some(host.requests)
            && count(t, "queue 0:", "chains") == Some(host.requests)
    };
    assert!(
        wait_until(Duration::from_secs(5), || expected(&report())),
        "host read {} bytes in {} requests; the counters say:\n{}",
        host.bytes,
        host.requests,
        report()
    );
    rig.finish();
}

#[test]
fn rng_reads_a_mebibyte_with_event_idx_and_indirect() {
    bounded(LIMIT, || read_one_mib(ALL_FEATURES, 1));
}

#[test]
fn rng_reads_a_mebibyte_with_packed_rings_event_idx_and_indirect() {
    bounded(LIMIT, || read_one_mib(common::ALL_FEATURES, 11));
}

#[test]
fn rng_reads_a_mebibyte_with_packed_rings_only() {
    bounded(LIMIT, || read_one_mib(RING_PACKED, 12));
}

#[test]
fn rng_reads_a_mebibyte_without_ring_features() {
    bounded(LIMIT, || read_one_mib(NO_RING_FEATURES, 2));
}

#[test]
fn rng_reads_a_mebibyte_with_indirect_without_event_idx() {
    bounded(LIMIT, || read_one_mib(feature(VIRTIO_F_INDIRECT_DESC), 3));
}

/// Buffers posted (and notified) before DRIVER_OK are not consumed before it, and are not
/// lost either: the device serves them once the driver sets DRIVER_OK.
#[test]
fn rng_buffers_posted_before_driver_ok_complete_after_it() {
    bounded(LIMIT, || {
        let rig = rig(Box::new(RngDevice::new(256)));
        let bus = rig.bus();
        let mut drv = rig.driver();
        assert!(drv.enable_msix());
        drv.init(ALL_FEATURES).unwrap();
        drv.set_config_vector(CONFIG_VECTOR).unwrap();
        let mut q = drv.setup_queue(0, None, Some(RNG_VECTOR)).unwrap();
        let mut heads = Vec::new();
        for _ in 0..4 {
            let b = bus.alloc(256, 64).unwrap();
            heads.push(q.add(&[(b, 256, true)]).unwrap());
        }
        q.notify();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            q.used_idx().unwrap(),
            0,
            "buffers consumed before DRIVER_OK"
        );
        drv.driver_ok();
        for head in heads {
            assert_eq!(wait_used_strict(&bus, &mut q), (head, 256));
        }
        rig.finish();
    });
}

/// The driver's interrupt suppression is honoured: VRING_AVAIL_F_NO_INTERRUPT without
/// EVENT_IDX, `used_event` with it (Linux's `virtqueue_disable_cb`), and interrupts resume
/// after `virtqueue_enable_cb`.
fn suppression(features: u64) {
    let rig = rig(Box::new(RngDevice::new(256)));
    let bus = rig.bus();
    let (_drv, mut q) = rng_up(&rig, features, None);
    let buf = bus.alloc(64, 64).unwrap();
    let one = |q: &mut HostQueue| {
        let head = q.add(&[(buf, 64, true)]).unwrap();
        q.kick().unwrap();
        head
    };
    // Move the indices past 0 first (with EVENT_IDX, disable_cb parks used_event at 0).
    for _ in 0..3 {
        let head = one(&mut q);
        assert_eq!(wait_used_strict(&bus, &mut q), (head, 64));
    }
    // Consume interrupts of those completions that arrived after their used entries.
    bus.wait_msix(RNG_VECTOR, Duration::from_millis(20));
    q.disable_cb().unwrap();
    let before = bus.msix_count(RNG_VECTOR);
    for _ in 0..50 {
        let head = one(&mut q);
        let mut got = None;
        assert!(wait_until(WAIT, || {
            got = q.get_used().unwrap();
            got.is_some()
        }));
        assert_eq!(got, Some((head, 64)));
    }
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(
        bus.msix_count(RNG_VECTOR),
        before,
        "interrupts while the driver suppressed them"
    );
    assert!(q.enable_cb().unwrap());
    let head = one(&mut q);
    assert!(
        bus.wait_msix(RNG_VECTOR, WAIT),
        "no interrupt after enable_cb"
    );
    assert_eq!(q.get_used().unwrap(), Some((head, 64)));
    rig.finish();
}

#[test]
fn rng_interrupt_suppression_with_event_idx() {
    bounded(LIMIT, || suppression(ALL_FEATURES));
}

#[test]
fn rng_interrupt_suppression_packed_with_event_idx() {
    bounded(LIMIT, || suppression(common::ALL_FEATURES));
}

#[test]
fn rng_interrupt_suppression_packed_without_event_idx() {
    bounded(LIMIT, || suppression(RING_PACKED));
}

#[test]
fn rng_interrupt_suppression_without_event_idx() {
    bounded(LIMIT, || suppression(NO_RING_FEATURES));
}

/// A chain of direct writable descriptors continued by an indirect table (legal: the
/// indirect descriptor ends the chain) is filled front to back across both.
#[test]
fn rng_fills_a_direct_prefix_followed_by_an_indirect_table() {
    bounded(LIMIT, || {
        let rig = rig(Box::new(RngDevice::new(256)));
        let bus = rig.bus();
        let (_drv, mut q) = rng_up(&rig, ALL_FEATURES, Some(16));
        let area = bus.alloc(8192, 64).unwrap();
        bus.ram_write(area, &[POISON; 8192]).unwrap();
        let table = bus.alloc(64, 16).unwrap();
        // Direct: 100 bytes at +0, 0 bytes, then the table: 300 bytes at +1024, 7 at +2048.
        write_table(
            &bus,
            table,
            &[
                (area + 1024, 300, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1),
                (area + 2048, 7, VIRTQ_DESC_F_WRITE, 0),
            ],
        );
        let flags = VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT;
        q.write_raw_desc(5, area, 100, flags, 9).unwrap();
        q.write_raw_desc(9, area + 4000, 0, flags, 2).unwrap();
        q.write_raw_desc(2, table, 32, VIRTQ_DESC_F_INDIRECT, 0)
            .unwrap();
        q.push_avail_raw(5).unwrap();
        q.notify();
        assert!(wait_until(WAIT, || q.used_idx().unwrap() == 1));
        assert_eq!(q.get_used_raw().unwrap(), Some((5, 407)));
        let mut b = vec![0; 8192];
        bus.ram_read(area, &mut b).unwrap();
        for (start, len) in [(0, 100), (1024, 300), (2048, 7)] {
            assert!(b[start..start + len].iter().any(|&x| x != POISON));
            b[start..start + len].fill(POISON);
        }
        assert!(b.iter().all(|&x| x == POISON), "written outside the chain");
        rig.finish();
    });
}

/// Throughput of 64 KiB requests, 32 outstanding (debug builds measure the code paths, not
/// the hardware).
#[test]
fn rng_throughput_of_64k_requests() {
    bounded(LIMIT, || {
        let rig = rig(Box::new(RngDevice::new(256)));
        let bus = rig.bus();
        let (_drv, mut q) = rng_up(&rig, ALL_FEATURES, None);
        let bufs: Vec<u64> = (0..32).map(|_| bus.alloc(65536, 64).unwrap()).collect();
        let mut by_head = HashMap::new();
        let total = 16u64 << 20;
        let (mut posted, mut done) = (0u64, 0u64);
        let start = Instant::now();
        for &b in &bufs {
            by_head.insert(q.add(&[(b, 65536, true)]).unwrap(), b);
            posted += 65536;
        }
        q.kick().unwrap();
        while done < total {
            let (head, len) = wait_used_strict(&bus, &mut q);
            assert_eq!(len, 65536);
            done += u64::from(len);
            if posted < total {
                let b = by_head.remove(&head).unwrap();
                by_head.insert(q.add(&[(b, 65536, true)]).unwrap(), b);
                posted += 65536;
                q.kick().unwrap();
            }
        }
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "rng throughput: 16 MiB in 64 KiB requests in {secs:.3}s = {:.0} MiB/s",
            16.0 / secs
        );
        rig.finish();
    });
}

#[test]
fn rng_large_buffers_are_capped_per_request() {
    bounded(LIMIT, || {
        let rig = rig(Box::new(RngDevice::new(256)));
        let (_drv, mut q) = rng_up(&rig, ALL_FEATURES, None);
        let bus = rig.bus();
        let len = 3 * MAX_REQUEST;
        let buf = bus.alloc(u64::from(len), 64).unwrap();
        bus.ram_write(buf, &vec![POISON; len as usize]).unwrap();
        let head = q.add(&[(buf, len, true)]).unwrap();
        q.kick().unwrap();
        let (id, used) = wait_used_strict(&bus, &mut q);
        assert_eq!(id, head);
        assert!(used > 0 && used <= len);
        let mut data = vec![0; len as usize];
        bus.ram_read(buf, &mut data).unwrap();
        assert!(
            data[used as usize..].iter().all(|&b| b == POISON),
            "bytes beyond the used length were written"
        );
        rig.finish();
    });
}

/// 2000 requests of random sizes and shapes over every queue size from 1 to 1024, with and
/// without EVENT_IDX, renegotiating (fresh rings) for each size.
#[test]
fn rng_stress_2000_random_requests_over_queue_sizes_1_to_1024() {
    bounded(LIMIT, || {
        let rig = rig(Box::new(RngDevice::new(1024)));
        let mut drv = rig.driver();
        assert!(drv.enable_msix());
        let mut host = RngHost::new(rig.bus(), 64, 16 * 1024);
        let mut rng = Prng::new(0x5eed);
        let sizes: Vec<u16> = (0..=10).map(|s| 1u16 << s).collect();
        let per_size = 2000u64.div_ceil(sizes.len() as u64);
        let start = Instant::now();
        for (i, &size) in sizes.iter().enumerate() {
            let features = if i % 2 == 0 {
                ALL_FEATURES
            } else {
                NO_RING_FEATURES
            };
            let mut q =
                bring_up(&mut drv, features, &[(0, Some(size), Some(RNG_VECTOR))]).remove(0);
            assert_eq!(q.size(), size);
            let plan = Plan {
                bytes: 0,
                requests: per_size,
                max_size: 16 * 1024,
                depth: (size as usize).min(64),
                indirect: i % 2 == 0,
            };
            read_entropy(&rig, &mut q, &mut host, &mut rng, &plan);
            assert_eq!(drv.status() & NEEDS_RESET, 0, "queue size {size}");
        }
        assert!(host.requests >= 2000);
        eprintln!(
            "rng stress: {} requests, {} bytes in {:.3}s",
            host.requests,
            host.bytes,
            start.elapsed().as_secs_f64()
        );
        rig.finish();
    });
}

/// Runs one queue through more than 2^16 requests so the free-running 16-bit avail/used
/// indices (and EVENT_IDX's used_event/avail_event) wrap. In `lockstep` mode (one request at
/// a time) every kick must be wanted (the device rearmed avail_event / cleared NO_NOTIFY) and
/// every completion must interrupt; in batch mode up to a full ring of requests is in flight
/// across the wrap and every wait must still end with an interrupt.
fn wrap_indices(features: u64, seed: u64, lockstep: bool) {
    let rig = rig(Box::new(RngDevice::new(256)));
    let (drv, mut q) = rng_up(&rig, features, Some(256));
    let bus = rig.bus();
    let mut rng = Prng::new(seed);
    let bufs: Vec<u64> = (0..256).map(|_| bus.alloc(64, 64).unwrap()).collect();
    let mut lens: HashMap<u16, u32> = HashMap::new();
    let total: u32 = 65536 + 1000;
    let mut done: u32 = 0;
    let start = Instant::now();
    while done < total {
        if lockstep {
            let len = rng.range(1, 64) as u32;
            let head = q.add(&[(bufs[0], len, true)]).unwrap();
            assert!(
                q.kick().unwrap(),
                "device did not ask for a notification at index {done}"
            );
            assert!(
                bus.wait_msix(RNG_VECTOR, WAIT),
                "no interrupt for the completion at index {done}"
            );
            assert_eq!(q.get_used().unwrap(), Some((head, len)), "at index {done}");
            done += 1;
            continue;
        }
        let n = rng.range(1, 256).min(u64::from(total - done)) as usize;
        for buf in &bufs[..n] {
            let len = rng.range(1, 64) as u32;
            let head = q.add(&[(*buf, len, true)]).unwrap();
            lens.insert(head, len);
        }
        q.kick().unwrap();
        for _ in 0..n {
            let (head, len) = wait_used_strict(&bus, &mut q);
            assert_eq!(lens.remove(&head), Some(len));
        }
        done += n as u32;
    }
    assert_eq!(q.last_used_idx(), (total % 65536) as u16);
    assert_eq!(q.used_idx().unwrap(), (total % 65536) as u16);
    assert_eq!(drv.status() & NEEDS_RESET, 0);
    eprintln!(
        "rng index wrap (features {:#x}, lockstep {lockstep}): {total} requests in {:.3}s",
        drv.negotiated_features(),
        start.elapsed().as_secs_f64()
    );
    rig.finish();
}

#[test]
fn rng_event_idx_indices_wrap_around_16_bits_lockstep() {
    bounded(LIMIT, || wrap_indices(ALL_FEATURES, 7, true));
}

#[test]
fn rng_event_idx_indices_wrap_around_16_bits_batched() {
    bounded(LIMIT, || wrap_indices(ALL_FEATURES, 8, false));
}

#[test]
fn rng_indices_wrap_around_16_bits_without_event_idx_lockstep() {
    bounded(LIMIT, || wrap_indices(NO_RING_FEATURES, 9, true));
}

#[test]
fn rng_indices_wrap_around_16_bits_without_event_idx_batched() {
    bounded(LIMIT, || wrap_indices(NO_RING_FEATURES, 10, false));
}
