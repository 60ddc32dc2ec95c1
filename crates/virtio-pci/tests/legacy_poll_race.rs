//! Adversarial tests of the polled legacy register engine: a host thread replays Linux's
//! legacy virtio_pci sequences (reset, features, per-queue SEL/NUM/PFN-check/PFN/vector with
//! read-back, DRIVER_OK) on a shared-memory register page with no trap at all, while the
//! endpoint thread polls with random injected delays. Every run must either configure every
//! queue exactly right or fail in a way the host detects (its "queue already active" check)
//! — never attach a ring to the wrong queue, lose a queue, or keep a stale one.
//!
//! The reaction time (host PFN write to endpoint consumption) is measured and printed.

use epf_epc::SharedMemory;
use epf_virtio_pci::legacy_layout::*;
use epf_virtio_pci::legacy_poll::LegacyPollEngine;
use epf_virtio_pci::registers::{legacy_queue_config, Activation, Effect, Registers};
use epf_virtio_pci::NO_VECTOR;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

const QUEUES: u16 = 3;
const QSIZE: u16 = 64;

/// A tiny deterministic PRNG (xorshift64*).
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

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// The endpoint: polls the page, completes resets at once, reports activations and the
/// moment each PFN write was consumed.
struct Endpoint {
    stop: Arc<AtomicBool>,
    activations: Receiver<Activation>,
    handle: Option<std::thread::JoinHandle<(LegacyPollEngine, Vec<u64>)>>,
    /// Nanoseconds since `t0` at which the host last wrote a PFN.
    written_at: Arc<AtomicU64>,
}

fn start_endpoint(
    page: Arc<SharedMemory>,
    max_delay_us: u64,
    delay_per_mille: u64,
    seed: u64,
    t0: Instant,
) -> Endpoint {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = channel();
    let written_at = Arc::new(AtomicU64::new(0));
    let (s, w) = (stop.clone(), written_at.clone());
    let mut engine = LegacyPollEngine::new(1 << 28, QUEUES, QSIZE);
    engine.prime(&page).unwrap();
    let handle = std::thread::spawn(move || {
        let mut rng = Rng(seed | 1);
        let mut regs = Registers::new_legacy(1 << 28, &[QSIZE; QUEUES as usize], QUEUES + 1);
        let mut reactions = Vec::new();
        while !s.load(Ordering::Acquire) {
            let before = engine.stats.pfns;
            let pass = engine.poll(&page, &mut regs, true).unwrap();
            if engine.stats.pfns != before {
                let now = t0.elapsed().as_nanos() as u64;
                reactions.push(now.saturating_sub(w.load(Ordering::Acquire)));
            }
            if let Some(Effect::Reset { epoch }) = pass.reset {
                regs.reset_complete(epoch);
                engine.prime(&page).unwrap();
            }
            if let Some(Effect::Activate(a)) = pass.activate {
                let _ = tx.send(a);
            }
            if max_delay_us > 0 && rng.below(1000) < delay_per_mille {
                // Short holds spin (a sleep would last far longer than asked); long ones
                // model the endpoint being descheduled.
                let d = Duration::from_micros(rng.below(max_delay_us));
                if d < Duration::from_micros(100) {
                    spin(d);
                } else {
                    std::thread::sleep(d);
                }
            }
        }
        (engine, reactions)
    });
    Endpoint {
        stop,
        activations: rx,
        handle: Some(handle),
        written_at,
    }
}

impl Endpoint {
    fn finish(mut self) -> (LegacyPollEngine, Vec<u64>) {
        self.stop.store(true, Ordering::Release);
        self.handle.take().unwrap().join().unwrap()
    }
}

/// What one host probe ended with.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// The host's own check caught the endpoint lagging ("already active").
    Detected,
}

/// Linux's legacy probe sequence with `gap` between register accesses and `alloc` for
/// each ring allocation. Returns the outcome and, per queue, the PFN-write instants.
fn linux_legacy_probe(
    page: &SharedMemory,
    pfns: &[u32],
    gap: Duration,
    alloc: Duration,
    written_at: &AtomicU64,
    t0: Instant,
) -> Outcome {
    let w8 = |o, v| {
        spin(gap);
        page.store_u8(o, v).unwrap()
    };
    let w16 = |o, v| {
        spin(gap);
        page.store_u16(o, v).unwrap()
    };
    let w32 = |o, v| {
        spin(gap);
        page.store_u32(o, v).unwrap()
    };
    let r16 = |o| {
        spin(gap);
        page.load_u16(o).unwrap()
    };
    let r32 = |o| {
        spin(gap);
        page.load_u32(o).unwrap()
    };
    // vp_legacy_set_status(0) + flush read, then ACKNOWLEDGE | DRIVER.
    w8(STATUS, 0);
    let _ = page.load_u8(STATUS);
    w8(STATUS, 1);
    w8(STATUS, 3);
    let _ = r32(HOST_FEATURES);
    w32(GUEST_FEATURES, 1 << 28);
    w16(MSI_CONFIG_VECTOR, 0);
    assert_eq!(r16(MSI_CONFIG_VECTOR), 0);
    for (k, &pfn) in pfns.iter().enumerate() {
        let k = k as u16;
        w16(QUEUE_SEL, k);
        assert_eq!(r16(QUEUE_NUM), QSIZE, "QUEUE_NUM must be pre-filled");
        w16(QUEUE_SEL, k);
        if r32(QUEUE_PFN) != 0 {
            // virtio_pci_legacy setup_vq: "already active" -> -ENOENT, probe fails; vp_del_vqs
            // deactivates the queues it set up (SEL, PFN=0) and the core adds FAILED.
            for j in 0..k {
                w16(QUEUE_SEL, j);
                w32(QUEUE_PFN, 0);
            }
            w8(STATUS, 0x83);
            return Outcome::Detected;
        }
        spin(alloc);
        w16(QUEUE_SEL, k);
        spin(gap);
        written_at.store(t0.elapsed().as_nanos() as u64, Ordering::Release);
        page.store_u32(QUEUE_PFN, pfn).unwrap();
        w16(QUEUE_SEL, k);
        w16(MSI_QUEUE_VECTOR, k + 1);
        assert_eq!(r16(MSI_QUEUE_VECTOR), k + 1, "vector read-back is memory");
    }
    w8(STATUS, 7);
    Outcome::Ok
}

/// Campaigns spin two threads each: run them one at a time, or they only measure each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `runs` probes; returns (ok, detected, reaction times in ns).
fn campaign(
    runs: usize,
    gap: Duration,
    alloc: Duration,
    max_delay_us: u64,
    per_mille: u64,
    seed: u64,
) -> (usize, usize, Vec<u64>) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let page = Arc::new(SharedMemory::memfd("legacy-page", 4096).unwrap());
    let t0 = Instant::now();
    let ep = start_endpoint(page.clone(), max_delay_us, per_mille, seed, t0);
    let mut rng = Rng(seed.wrapping_mul(31) | 1);
    let (mut ok, mut detected, mut refused) = (0, 0, 0);
    for run in 0..runs {
        let pfns: Vec<u32> = (0..QUEUES)
            .map(|_| 0x1000 + rng.below(0xf_0000) as u32)
            .collect();
        match linux_legacy_probe(&page, &pfns, gap, alloc, &ep.written_at, t0) {
            Outcome::Detected => {
                detected += 1;
                // Any activation from this attempt would be a bug: DRIVER_OK was never
                // written. The next run starts with a reset, as a rebind would.
                std::thread::sleep(Duration::from_micros(200));
                assert!(
                    ep.activations.try_recv().is_err(),
                    "run {run}: activated after a failed probe"
                );
            }
            Outcome::Ok => {
                // Either the device activates, or it refuses visibly (DEVICE_NEEDS_RESET).
                let t = Instant::now();
                let a = loop {
                    if let Ok(a) = ep.activations.recv_timeout(Duration::from_micros(100)) {
                        break Some(a);
                    }
                    if page.load_u8(STATUS).unwrap() & 0x40 != 0 {
                        break None;
                    }
                    assert!(
                        t.elapsed() < Duration::from_secs(5),
                        "run {run}: neither activated nor refused"
                    );
                };
                let Some(a) = a else {
                    refused += 1;
                    continue;
                };
                for (k, &pfn) in pfns.iter().enumerate() {
                    assert_eq!(
                        a.queues[k],
                        Some(legacy_queue_config(pfn, QSIZE)),
                        "run {run}: queue {k} misattributed or lost"
                    );
                    assert_eq!(
                        a.queue_vectors[k],
                        k as u16 + 1,
                        "run {run}: queue {k} vector"
                    );
                }
                ok += 1;
            }
        }
        // Between runs the host resets (the next probe starts with STATUS=0).
    }
    let (engine, reaction) = ep.finish();
    println!(
        "gap {gap:?} alloc {alloc:?} endpoint delays <= {max_delay_us} us at {per_mille}/1000: {ok} ok, {detected} failed the host's check, {refused} refused by the device, stats {:?}",
        engine.stats
    );
    // Order "violations" here are the engine noticing a probe the host already abandoned
    // (Linux deactivating its queues after a failed check): refusals, never misattributions.
    (ok, detected + refused, reaction)
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p) as usize]
}

#[test]
fn ten_thousand_linux_sequences_at_the_claimed_spacing_never_misattribute() {
    // The claimed operating point: host register accesses 1 us apart (a PCIe MMIO round
    // trip), a ring allocation of 5 us; the endpoint is sometimes held up to 2 us.
    let (ok, detected, mut r) = campaign(
        10_000,
        Duration::from_micros(1),
        Duration::from_micros(5),
        2,
        5,
        7,
    );
    let med = percentile(&mut r, 0.5);
    let worst = percentile(&mut r, 1.0);
    let p99 = percentile(&mut r, 0.99);
    println!(
        "reaction (host PFN write to endpoint consumption) over {} writes: median {med} ns, p99 {p99} ns, worst {worst} ns",
        r.len()
    );
    assert_eq!(ok + detected, 10_000);
    // How often the endpoint keeps up depends on the machine's load (it is measured and
    // printed, not asserted); that the successful path works at all is asserted.
    assert!(ok > 0, "no probe succeeded");
}

#[test]
fn below_the_bound_every_run_is_right_or_detected() {
    // No spacing at all and long endpoint stalls: many probes fail, but only detectably.
    let (ok, detected, _) = campaign(3_000, Duration::ZERO, Duration::ZERO, 200, 50, 11);
    assert_eq!(ok + detected, 3_000);
    assert!(
        detected > 0,
        "stalls this long must sometimes make the host's check fail"
    );
}

#[test]
fn a_reset_the_endpoint_never_saw_is_inferred() {
    let page = Arc::new(SharedMemory::memfd("legacy-page", 4096).unwrap());
    let mut regs = Registers::new_legacy(0, &[QSIZE], 2);
    let mut engine = LegacyPollEngine::new(0, 1, QSIZE);
    engine.prime(&page).unwrap();
    let poll = |engine: &mut LegacyPollEngine, regs: &mut Registers| {
        let p = engine.poll(&page, regs, true).unwrap();
        if let Some(Effect::Reset { epoch }) = p.reset {
            regs.reset_complete(epoch);
        }
        p
    };
    // A one-queue device fully set up, seen by the endpoint.
    page.store_u8(STATUS, 3).unwrap();
    page.store_u32(QUEUE_PFN, 0x100).unwrap();
    page.store_u16(MSI_QUEUE_VECTOR, 1).unwrap();
    page.store_u8(STATUS, 7).unwrap();
    let p = poll(&mut engine, &mut regs);
    assert!(matches!(p.activate, Some(Effect::Activate(_))));
    // The host resets and sets the device up again entirely between two polls.
    page.store_u8(STATUS, 0).unwrap();
    page.store_u8(STATUS, 3).unwrap();
    page.store_u32(QUEUE_PFN, 0x200).unwrap();
    page.store_u8(STATUS, 7).unwrap();
    // Same status as before, but a PFN while active proves the reset.
    let p = poll(&mut engine, &mut regs);
    assert!(p.reset.is_some(), "the reset must be inferred");
    let mut activation = None;
    for _ in 0..4 {
        if let Some(Effect::Activate(a)) = poll(&mut engine, &mut regs).activate {
            activation = Some(a);
        }
    }
    let a = activation.expect("re-activation with the new setup");
    assert_eq!(
        a.queues[0],
        Some(legacy_queue_config(0x200, QSIZE)),
        "no stale ring kept"
    );
    assert_eq!(engine.stats.inferred_resets, 1);
    // Status losing bits without a visible 0 is a reset too.
    page.store_u8(STATUS, 1).unwrap();
    assert!(poll(&mut engine, &mut regs).reset.is_some());
    assert_eq!(regs.status(), 0);
    let _ = NO_VECTOR;
}

#[test]
fn out_of_order_setup_is_refused_not_misattributed() {
    let page = Arc::new(SharedMemory::memfd("legacy-page", 4096).unwrap());
    let mut regs = Registers::new_legacy(0, &[QSIZE; 3], 4);
    let mut engine = LegacyPollEngine::new(0, 3, QSIZE);
    engine.prime(&page).unwrap();
    page.store_u8(STATUS, 3).unwrap();
    // A driver that sets queue 2 up first (not Linux's order).
    page.store_u16(QUEUE_SEL, 2).unwrap();
    page.store_u32(QUEUE_PFN, 0x300).unwrap();
    engine.poll(&page, &mut regs, true).unwrap();
    assert_eq!(engine.stats.order_violations, 1);
    assert!(engine.is_broken());
    page.store_u8(STATUS, 7).unwrap();
    let p = engine.poll(&page, &mut regs, true).unwrap();
    assert!(
        !matches!(p.activate, Some(Effect::Activate(_))),
        "must not activate"
    );
    assert_ne!(
        page.load_u8(STATUS).unwrap() & 0x40,
        0,
        "DEVICE_NEEDS_RESET shown"
    );
}
