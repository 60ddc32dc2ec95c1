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
use epf_virtio_pci::legacy_poll::{LegacyPollEngine, PollStats};
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
    /// Set up by the attempt with this vector policy (see [`POLICIES`]).
    Ok(usize),
    /// The host's own check caught the endpoint lagging ("already active") in every attempt.
    Detected,
}

/// Linux's vector policies in the order vp_find_vqs tries them (6.12): one vector per queue,
/// then "shared slow path" (for queues like these, all with callbacks, the same vectors), then
/// one vector shared by every queue. The vector of queue `k` under policy `p`.
const POLICIES: usize = 3;
fn policy_vector(p: usize, k: u16) -> u16 {
    if p < 2 {
        k + 1
    } else {
        1
    }
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
    'attempt: for policy in 0..POLICIES {
        w16(MSI_CONFIG_VECTOR, 0);
        // vp_request_msix_vectors refuses only NO_VECTOR (the endpoint's attempt mark may
        // already be there: legacy_poll's module documentation).
        assert_ne!(r16(MSI_CONFIG_VECTOR), NO_VECTOR);
        for (k, &pfn) in pfns.iter().enumerate() {
            let k = k as u16;
            w16(QUEUE_SEL, k);
            assert_eq!(r16(QUEUE_NUM), QSIZE, "QUEUE_NUM must be pre-filled");
            w16(QUEUE_SEL, k);
            if r32(QUEUE_PFN) != 0 {
                // setup_vq: "already active" -> -ENOENT. vp_del_vqs deletes the queues set
                // up so far (del_vq: vector NO_VECTOR, ISR read, PFN 0) and frees the
                // vectors (config vector NO_VECTOR); vp_find_vqs tries its next policy.
                for j in 0..k {
                    w16(QUEUE_SEL, j);
                    w16(MSI_QUEUE_VECTOR, NO_VECTOR);
                    let _ = r16(MSI_QUEUE_VECTOR);
                    let _ = page.load_u8(ISR);
                    w16(QUEUE_SEL, j);
                    w32(QUEUE_PFN, 0);
                }
                w16(MSI_CONFIG_VECTOR, NO_VECTOR);
                continue 'attempt;
            }
            spin(alloc);
            w16(QUEUE_SEL, k);
            spin(gap);
            written_at.store(t0.elapsed().as_nanos() as u64, Ordering::Release);
            page.store_u32(QUEUE_PFN, pfn).unwrap();
            w16(QUEUE_SEL, k);
            let v = policy_vector(policy, k);
            w16(MSI_QUEUE_VECTOR, v);
            assert_eq!(r16(MSI_QUEUE_VECTOR), v, "vector read-back is memory");
            if policy < 2 {
                // request_irq for the queue's own vector (an allocation, like the ring's).
                spin(alloc);
            }
        }
        w8(STATUS, 7);
        return Outcome::Ok(policy);
    }
    // Every policy failed: the probe fails and the core adds FAILED.
    w8(STATUS, 0x83);
    Outcome::Detected
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
            Outcome::Ok(policy) => {
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
                        "run {run}: queue {k} misattributed or lost; pfns {pfns:x?}, activation {a:x?}"
                    );
                    assert_eq!(
                        a.queue_vectors[k],
                        policy_vector(policy, k as u16),
                        "run {run}: queue {k} vector (policy {policy})"
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

/// The device configuration copy sits at 0x14 until the first queue is set up (Linux reads
/// it there before find_vqs, with MSI-X off), moves to 0x18 in the very pass that consumes
/// that PFN (virtio_blk reads its block size at 0x18 right after find_vqs), never touches
/// the vector registers again while queues are live, and returns to 0x14 after a reset.
#[test]
fn the_configuration_copy_follows_the_queue_setup_not_the_controller() {
    let page = Arc::new(SharedMemory::memfd("legacy-page", 4096).unwrap());
    let mut regs = Registers::new_legacy(0, &[QSIZE], 2);
    let mut engine = LegacyPollEngine::new(0, 1, QSIZE);
    engine.prime(&page).unwrap();
    let cfg = [0xa1u8, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6];
    let pass = |engine: &mut LegacyPollEngine, regs: &mut Registers| {
        let p = engine.poll(&page, regs, true).unwrap();
        if let Some(Effect::Reset { epoch }) = p.reset {
            regs.reset_complete(epoch);
        }
        engine
            .sync_config(&page, engine.msix_in_use(), 0, || cfg.to_vec())
            .unwrap();
        p
    };
    let at = |off: u64| {
        let mut b = [0u8; 6];
        page.read(off, &mut b).unwrap();
        b
    };
    pass(&mut engine, &mut regs);
    assert!(!engine.msix_in_use());
    assert_eq!(at(0x14), cfg, "before the queues: at 0x14");
    // The driver enables MSI-X, writes its config vector over the copy, sets queue 0 up.
    page.store_u8(STATUS, 3).unwrap();
    page.store_u16(MSI_CONFIG_VECTOR, 0).unwrap();
    pass(&mut engine, &mut regs);
    page.store_u32(QUEUE_PFN, 0x100).unwrap();
    pass(&mut engine, &mut regs);
    assert!(engine.msix_in_use(), "the PFN proves MSI-X");
    assert_eq!(at(0x18), cfg, "moved to 0x18 in the same pass");
    page.store_u16(MSI_QUEUE_VECTOR, 1).unwrap();
    page.store_u8(STATUS, 7).unwrap();
    for _ in 0..3 {
        pass(&mut engine, &mut regs);
    }
    // The configuration vector register holds the engine's attempt mark (the vector itself
    // was taken); the queue vector is the host's.
    assert_eq!(
        page.load_u16(MSI_CONFIG_VECTOR).unwrap(),
        epf_virtio_pci::legacy_poll::ATTEMPT_MARK
    );
    assert_eq!(regs.config_msix_vector(), 0);
    assert_eq!(
        page.load_u16(MSI_QUEUE_VECTOR).unwrap(),
        1,
        "vectors untouched"
    );
    // Removal: reset, then the next probe reads at 0x14 again.
    page.store_u8(STATUS, 0).unwrap();
    assert!(pass(&mut engine, &mut regs).reset.is_some());
    assert!(!engine.msix_in_use());
    assert_eq!(at(0x14), cfg, "back at 0x14 after the reset");
}

/// A pass right after the host wrote queue 0's PFN *and* its vector, then nothing until the
/// host has set queue 1 up and written DRIVER_OK (the endpoint held up for the whole of it,
/// as seen in the two-VM rig): queue 0's vector differs from what the register held before
/// its PFN, so it is certain in the pass that consumes that PFN; queue 1's is certain at
/// DRIVER_OK. Both queues activate with their own vectors.
#[test]
fn a_vector_written_before_the_endpoint_looked_is_still_certain() {
    let page = Arc::new(SharedMemory::memfd("legacy-page", 4096).unwrap());
    let mut regs = Registers::new_legacy(0, &[QSIZE; 2], 3);
    let mut engine = LegacyPollEngine::new(0, 2, QSIZE);
    engine.prime(&page).unwrap();
    let mut activation = None;
    let mut poll = |engine: &mut LegacyPollEngine, regs: &mut Registers| {
        let p = engine.poll(&page, regs, true).unwrap();
        if let Some(Effect::Activate(a)) = p.activate {
            activation = Some(a);
        }
    };
    page.store_u16(MSI_QUEUE_VECTOR, NO_VECTOR).unwrap();
    page.store_u8(STATUS, 3).unwrap();
    page.store_u16(MSI_CONFIG_VECTOR, 0).unwrap();
    poll(&mut engine, &mut regs);
    // Queue 0: SEL, PFN, SEL, vector; then the endpoint looks once.
    page.store_u16(QUEUE_SEL, 0).unwrap();
    page.store_u32(QUEUE_PFN, 0x100).unwrap();
    page.store_u16(MSI_QUEUE_VECTOR, 1).unwrap();
    poll(&mut engine, &mut regs);
    assert_eq!(
        page.load_u32(QUEUE_PFN).unwrap(),
        0,
        "queue 0's PFN consumed"
    );
    // Queue 1 and DRIVER_OK before the next look.
    page.store_u16(QUEUE_SEL, 1).unwrap();
    page.store_u32(QUEUE_PFN, 0x200).unwrap();
    page.store_u16(MSI_QUEUE_VECTOR, 2).unwrap();
    page.store_u8(STATUS, 7).unwrap();
    for _ in 0..3 {
        poll(&mut engine, &mut regs);
    }
    assert_eq!(engine.stats.uncertain_vectors, 0);
    let a = activation.expect("activated");
    assert_eq!(a.queues[0], Some(legacy_queue_config(0x100, QSIZE)));
    assert_eq!(a.queues[1], Some(legacy_queue_config(0x200, QSIZE)));
    assert_eq!(a.queue_vectors, vec![1, 2]);
    assert_eq!(
        page.load_u8(STATUS).unwrap() & 0x40,
        0,
        "no DEVICE_NEEDS_RESET"
    );
}

/// The endpoint looked after queue 0's PFN and *before* its vector, then not again until
/// the host had set queue 1 up (vector `q1_vector`) and written DRIVER_OK: queue 0's vector
/// was overwritten unseen. Returns (activation, stats, DEVICE_NEEDS_RESET shown).
fn queue_0_vector_missed(q1_vector: u16) -> (Option<Activation>, PollStats, bool) {
    let page = Arc::new(SharedMemory::memfd("legacy-page", 4096).unwrap());
    let mut regs = Registers::new_legacy(0, &[QSIZE; 2], 3);
    let mut engine = LegacyPollEngine::new(0, 2, QSIZE);
    engine.prime(&page).unwrap();
    page.store_u16(MSI_QUEUE_VECTOR, NO_VECTOR).unwrap();
    page.store_u8(STATUS, 3).unwrap();
    page.store_u16(MSI_CONFIG_VECTOR, 0).unwrap();
    engine.poll(&page, &mut regs, true).unwrap();
    page.store_u32(QUEUE_PFN, 0x100).unwrap();
    engine.poll(&page, &mut regs, true).unwrap();
    page.store_u16(MSI_QUEUE_VECTOR, 1).unwrap();
    page.store_u16(QUEUE_SEL, 1).unwrap();
    page.store_u32(QUEUE_PFN, 0x200).unwrap();
    page.store_u16(MSI_QUEUE_VECTOR, q1_vector).unwrap();
    page.store_u8(STATUS, 7).unwrap();
    let mut activation = None;
    for _ in 0..3 {
        if let Some(Effect::Activate(a)) = engine.poll(&page, &mut regs, true).unwrap().activate {
            activation = Some(a);
        }
    }
    let needs_reset = page.load_u8(STATUS).unwrap() & 0x40 != 0;
    (activation, engine.stats, needs_reset)
}

/// Per-queue vectors (configuration 0, queue 1 took 2): queue 0's can only be 1, as Linux
/// hands vectors out in order. The engine deduces it and activates with both queues.
#[test]
fn a_vector_overwritten_unseen_is_deduced_from_the_order_linux_assigns_them() {
    let (a, st, needs_reset) = queue_0_vector_missed(2);
    let a = a.expect("activated");
    assert_eq!(a.queues[0], Some(legacy_queue_config(0x100, QSIZE)));
    assert_eq!(a.queues[1], Some(legacy_queue_config(0x200, QSIZE)));
    assert_eq!(a.queue_vectors, vec![1, 2]);
    assert_eq!((st.deduced_vectors, st.uncertain_vectors), (1, 0));
    assert!(!needs_reset, "no DEVICE_NEEDS_RESET");
}

/// Queue 1 took vector 1: queue 0 either shared it or had none (no callback). The engine
/// cannot tell, so it refuses (DEVICE_NEEDS_RESET at DRIVER_OK), never guesses.
#[test]
fn an_ambiguous_vector_overwritten_unseen_is_refused_not_guessed() {
    let (a, st, needs_reset) = queue_0_vector_missed(1);
    assert!(a.is_none(), "must not activate with a guessed vector");
    assert_eq!((st.deduced_vectors, st.uncertain_vectors), (0, 1));
    assert!(needs_reset, "DEVICE_NEEDS_RESET shown");
}

/// Linux's retry: queue 0 consumed, then the endpoint misses queue 1's PFN until the host's
/// check of queue 2 has failed; virtio_pci deletes its queues (vector NO_VECTOR, PFN 0) and
/// starts again from queue 0 with its next policy. The engine follows the restart and
/// activates with the second attempt's rings and vectors only.
#[test]
fn linux_starting_its_queue_setup_again_is_followed() {
    let page = Arc::new(SharedMemory::memfd("legacy-page", 4096).unwrap());
    let mut regs = Registers::new_legacy(0, &[QSIZE; 3], 4);
    let mut engine = LegacyPollEngine::new(0, 3, QSIZE);
    engine.prime(&page).unwrap();
    let mut activation = None;
    let mut poll = |engine: &mut LegacyPollEngine, regs: &mut Registers| {
        let p = engine.poll(&page, regs, true).unwrap();
        if let Some(Effect::Activate(a)) = p.activate {
            activation = Some(a);
        }
    };
    let sel = |q: u16| page.store_u16(QUEUE_SEL, q).unwrap();
    page.store_u16(MSI_QUEUE_VECTOR, NO_VECTOR).unwrap();
    page.store_u8(STATUS, 3).unwrap();
    page.store_u16(MSI_CONFIG_VECTOR, 0).unwrap();
    poll(&mut engine, &mut regs);
    // Attempt 1: queue 0 seen and consumed, queue 1 not.
    sel(0);
    page.store_u32(QUEUE_PFN, 0x100).unwrap();
    page.store_u16(MSI_QUEUE_VECTOR, 1).unwrap();
    poll(&mut engine, &mut regs);
    sel(1);
    page.store_u32(QUEUE_PFN, 0x200).unwrap();
    page.store_u16(MSI_QUEUE_VECTOR, 2).unwrap();
    sel(2);
    assert_ne!(
        page.load_u32(QUEUE_PFN).unwrap(),
        0,
        "the host's check fails"
    );
    for j in 0..2 {
        sel(j);
        page.store_u16(MSI_QUEUE_VECTOR, NO_VECTOR).unwrap();
        page.store_u32(QUEUE_PFN, 0).unwrap();
    }
    page.store_u16(MSI_CONFIG_VECTOR, NO_VECTOR).unwrap();
    poll(&mut engine, &mut regs);
    // Attempt 2, one shared vector, the endpoint keeping up.
    page.store_u16(MSI_CONFIG_VECTOR, 0).unwrap();
    for (q, pfn) in [(0u16, 0x400u32), (1, 0x500), (2, 0x600)] {
        sel(q);
        poll(&mut engine, &mut regs);
        page.store_u32(QUEUE_PFN, pfn).unwrap();
        poll(&mut engine, &mut regs);
        page.store_u16(MSI_QUEUE_VECTOR, 1).unwrap();
        poll(&mut engine, &mut regs);
    }
    page.store_u8(STATUS, 7).unwrap();
    for _ in 0..3 {
        poll(&mut engine, &mut regs);
    }
    assert_eq!(engine.stats.restarts, 1);
    assert_eq!(engine.stats.order_violations, 0);
    let a = activation.expect("activated by the second attempt");
    for (q, pfn) in [0x400u32, 0x500, 0x600].into_iter().enumerate() {
        assert_eq!(
            a.queues[q],
            Some(legacy_queue_config(pfn, QSIZE)),
            "queue {q}"
        );
    }
    assert_eq!(a.queue_vectors, vec![1, 1, 1]);
}

/// The rehearsal the poller runs before serving goes through a refused attempt's restart,
/// an activation, a notification and a reset on its own page, leaving the real one alone.
#[test]
fn the_rehearsal_takes_every_setup_path_on_its_own_page() {
    let page = Arc::new(SharedMemory::memfd("legacy-page", 4096).unwrap());
    let mut engine = LegacyPollEngine::new(1 << 28, 3, QSIZE);
    engine.prime(&page).unwrap();
    let before = page.load_u32(HOST_FEATURES).unwrap();
    let st = engine.rehearse(&[1, 2, 3, 4, 5, 6]).unwrap();
    assert_eq!(st.activations, 1, "{st:?}");
    assert_eq!(st.restarts, 1, "{st:?}");
    assert_eq!(st.pfns, 6, "{st:?}");
    assert_eq!(st.notifies, 1, "{st:?}");
    assert_eq!(st.uncertain_vectors + st.order_violations, 0, "{st:?}");
    assert!(st.resets >= 1, "{st:?}");
    assert_eq!(
        engine.stats,
        Default::default(),
        "the real engine is untouched"
    );
    assert_eq!(page.load_u32(HOST_FEATURES).unwrap(), before);
    assert_eq!(page.load_u8(STATUS).unwrap(), 0);
}
