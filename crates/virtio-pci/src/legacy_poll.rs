//! The polled legacy register engine: drives the [`Registers`] state machine from snapshots of
//! the legacy register page when it is plain shared memory (a bare endpoint: no trap, no
//! synchronous answer to any host read).
//!
//! # What it relies on, and what it checks
//!
//! Host reads are answered by memory, so everything the host reads must already be there:
//! HOST_FEATURES and QUEUE_NUM are pre-filled (one size for every queue), QUEUE_PFN reads 0
//! for a queue not yet set up, and the MSI-X vector registers read back what the host wrote.
//! Host writes are seen only by polling, with three sources of certainty:
//!
//! 1. **The QUEUE_PFN handshake.** Linux reads QUEUE_PFN after selecting a queue and refuses
//!    the device ("already active", probe fails with -ENOENT) unless it reads 0. The engine
//!    consumes each PFN write by compare-and-swap to 0, so every value it sees is exactly one
//!    host write, and a host that runs ahead of it fails its own check instead of overwriting
//!    an unseen PFN. Detected, never misattributed.
//! 2. **The order of queue setup.** Linux sets queues up in index order 0, 1, 2, ... (one
//!    PFN write each, after the previous one's vector). The k-th PFN consumed since a reset
//!    belongs to queue k; QUEUE_SEL, read in the same pass, must be k or k+1 (the host already
//!    moved on), anything else is an order violation: the device refuses to activate, sets
//!    DEVICE_NEEDS_RESET, and counts it.
//! 3. **Status transitions.** Status bits only accumulate between resets, so a status with
//!    fewer bits than the last one seen, or a QUEUE_PFN write while the device is active,
//!    proves a reset happened even if the 0 itself was never seen.
//!
//! Vectors: Linux writes MSI_QUEUE_VECTOR for queue k right after its PFN, then selects queue
//! k+1; queue k+1's vector comes only after queue k+1's PFN, which the host can write only
//! once the engine has consumed queue k's. So a vector read in a pass that then finds
//! QUEUE_PFN empty, or still holding queue k's unconsumed PFN, is at most queue k's; it is
//! at least queue k's when either
//!
//! * the same pass read QUEUE_SEL == k+1 (or STATUS with DRIVER_OK) first: both are written
//!   after queue k's vector; or
//! * it differs from what the register held before queue k's vector write (the previous
//!   queue's vector, or for queue 0 the value read in the last pass before its PFN) and is
//!   not NO_VECTOR (Linux writes NO_VECTOR only when it tears queues down): queue k's vector
//!   write is the only host write to the register in between. This catches the vector in
//!   the very pass that consumes the PFN when the host wrote both before the engine looked,
//!   and any time until queue k+1's PFN.
//!
//! If neither happened before queue k+1's PFN appears, the two vectors cannot be told apart
//! from the register alone: the engine does not take that PFN. It leaves it unconsumed, so a
//! host with more queues fails its own "already active" check (and Linux tries its next
//! vector policy, from queue 0: the engine follows that restart). If queue k+1 was the last
//! one, DRIVER_OK comes next, and queue k+1's vector is then certain (written before it).
//! Linux hands vectors out in increasing order from the configuration vector's: with
//! per-queue vectors each queue with a callback takes the next one, otherwise all share
//! one, and queues without a callback take NO_VECTOR. So when queue k+1's vector is two
//! above the highest vector assigned before queue k (the configuration vector's included),
//! queue k's can only be the one in between: the engine takes it, takes the PFN and
//! activates (counted as `deduced_vectors`). Anything else (one above: queue k shared it or
//! had NO_VECTOR) it cannot tell, and the device answers DRIVER_OK with
//! DEVICE_NEEDS_RESET and stays inactive. Counted as `uncertain_vectors`.
//!
//! 4. **Linux's retries.** When a queue setup fails (its check, or a vector refused),
//!    virtio_pci deletes the queues it set up (vector NO_VECTOR, QUEUE_PFN 0: writes of 0
//!    over consumed PFNs, invisible in memory), sets the configuration vector to NO_VECTOR,
//!    and starts again with its next vector policy (per queue, then shared-slow, then one
//!    shared vector): the configuration vector again, then queue 0, 1, ... Neither QUEUE_SEL
//!    nor the queue vector tells that restart apart from the old attempt going on, if the
//!    engine was held up through it. The configuration vector does: Linux writes it only
//!    where attempts begin and end, and reads it only right after writing it, comparing
//!    against NO_VECTOR. So from an attempt's first PFN on (MSI-X is on by then: before it
//!    0x14 may be device configuration) until DRIVER_OK, the engine takes every value the
//!    host writes there and replaces it with [`ATTEMPT_MARK`] (by compare-and-swap). Any
//!    value but the mark, read after a PFN in the same pass, is a boundary the host crossed
//!    before writing that PFN: if queues were consumed, the engine forgets the abandoned
//!    attempt and takes the PFN as queue 0. Counted as `restarts`. (Without this, the new
//!    attempt's queue 0 would be taken as the old attempt's next queue, and a ring the host
//!    had freed attached to the device.)
//!
//! Timing bound (stated in docs/design.md and measured by the tests): correct whenever each
//! PFN write is consumed before the host's next queue check, which Linux performs at least 5
//! register accesses (plus a ring allocation) later; vectors are certain whenever one poll
//! pass falls between the host's write of queue k's vector and its write of queue k+1's PFN
//! (a ring allocation and, with per-queue vectors, an interrupt request apart).

use crate::legacy_layout::*;
use crate::registers::{Effect, Registers};
use crate::NO_VECTOR;
use epf_epc::{CounterSource, Counters, HostMemError, SharedMemory};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED,
    VIRTIO_CONFIG_S_NEEDS_RESET,
};

const DRIVER_OK: u8 = VIRTIO_CONFIG_S_DRIVER_OK as u8;
const DRIVER: u8 = VIRTIO_CONFIG_S_DRIVER as u8;
const FAILED: u8 = VIRTIO_CONFIG_S_FAILED as u8;
/// QUEUE_NOTIFY value meaning "no notification pending" (written by the endpoint).
pub const NOTIFY_IDLE: u16 = 0xffff;
/// What the endpoint writes over MSI_CONFIG_VECTOR while a queue setup attempt is under way
/// (see the module documentation). Linux writes only 0..nvectors and NO_VECTOR there.
pub const ATTEMPT_MARK: u16 = 0xfffe;

/// Counters of the polled engine.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollStats {
    pub passes: u64,
    pub pfns: u64,
    pub resets: u64,
    /// Resets inferred without seeing the 0 (status lost bits, or a PFN while active).
    pub inferred_resets: u64,
    pub activations: u64,
    pub notifies: u64,
    pub uncertain_vectors: u64,
    pub order_violations: u64,
    /// Queue setups Linux started again from queue 0 (its next vector policy).
    pub restarts: u64,
    /// Missed vectors of the second-to-last queue, known from the order Linux assigns them.
    pub deduced_vectors: u64,
}

/// `poll: passes=.. pfns=.. resets=.. inferred_resets=.. activations=.. notifies=..
/// uncertain_vectors=.. order_violations=.. restarts=.. deduced_vectors=..`.
impl CounterSource for PollStats {
    fn report(&self, out: &mut Counters) {
        out.line("poll")
            .field("passes", self.passes)
            .field("pfns", self.pfns)
            .field("resets", self.resets)
            .field("inferred_resets", self.inferred_resets)
            .field("activations", self.activations)
            .field("notifies", self.notifies)
            .field("uncertain_vectors", self.uncertain_vectors)
            .field("order_violations", self.order_violations)
            .field("restarts", self.restarts)
            .field("deduced_vectors", self.deduced_vectors);
    }
}

/// What one pass found for the caller to act on.
#[derive(Debug, Default)]
pub struct Pass {
    /// A reset to complete before the next pass.
    pub reset: Option<Effect>,
    /// An activation to hand to the worker.
    pub activate: Option<Effect>,
    /// A queue the host notified.
    pub notify: Option<u16>,
    /// Whether the host did anything at all.
    pub activity: bool,
}

/// Vector capture for the most recently configured queue.
#[derive(Debug, Default, Clone, Copy)]
struct VecTrack {
    queue: Option<u16>,
    /// What the vector register held before this queue's vector write, when known.
    before: Option<u16>,
    certain: Option<u16>,
}

impl VecTrack {
    /// Takes `vec` as the queue's vector if the pass that read it proves it is (see the
    /// module documentation): `after_write` when the pass read QUEUE_SEL == k+1 or
    /// DRIVER_OK first. The caller guarantees the pass then found no newer PFN.
    fn observe(&mut self, vec: u16, after_write: bool) {
        let changed = self.before.is_some_and(|b| b != vec) && vec != NO_VECTOR;
        if self.queue.is_some() && (after_write || changed) {
            self.certain = Some(vec);
        }
    }
}

/// The engine's memory of what it has seen.
#[derive(Debug)]
pub struct LegacyPollEngine {
    host_features: u32,
    queue_size: u16,
    num_queues: u16,
    last_status: u8,
    last_features: u32,
    consumed: u16,
    track: VecTrack,
    /// The vector register as read by the last pass that found QUEUE_PFN empty (what queue
    /// 0's vector write will replace), unless the engine itself rewrote it since.
    vec_before_pfn: Option<u16>,
    /// The vector assigned to the last queue whose setup is complete.
    last_vector: Option<u16>,
    /// The highest vector (not NO_VECTOR) assigned since the attempt began: the
    /// configuration vector's and the queues'.
    max_vector: Option<u16>,
    /// The queue whose vector was missed, when that is why the setup was refused.
    missed: Option<u16>,
    /// The configuration vector of the current attempt, taken when [`ATTEMPT_MARK`]
    /// replaced it.
    config_vector: Option<u16>,
    broken: bool,
    /// (msix enabled, generation) of the device configuration copy in the page.
    config_written: Option<(bool, u8)>,
    /// Whether the driver has set a queue up since the last reset: proof that it enabled
    /// MSI-X (see [`LegacyPollEngine::msix_in_use`]).
    queues_set_up: bool,
    pub stats: PollStats,
    /// The last distinct register snapshots, for the log when a setup is refused.
    seen: Seen,
}

/// The last few distinct (status, QUEUE_SEL, vector, QUEUE_PFN) a pass read, with the pass
/// number and the time: what an operator needs to see why a setup was refused.
#[derive(Debug)]
struct Seen {
    at: [(u64, std::time::Instant, u8, u16, u16, u32); 8],
    next: usize,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            at: [(0, std::time::Instant::now(), 0, 0, 0, 0); 8],
            next: 0,
        }
    }

    fn record(&mut self, pass: u64, status: u8, sel: u16, vec: u16, pfn: u32) {
        let last = self.at[(self.next + 7) % 8];
        if (last.2, last.3, last.4, last.5) != (status, sel, vec, pfn) {
            self.at[self.next] = (pass, std::time::Instant::now(), status, sel, vec, pfn);
            self.next = (self.next + 1) % 8;
        }
    }

    fn log(&self) {
        let now = std::time::Instant::now();
        for i in 0..8 {
            let (pass, t, status, sel, vec, pfn) = self.at[(self.next + i) % 8];
            if pass > 0 {
                log::warn!(
                    "  pass {pass} ({:?} ago): status {status:#x} QUEUE_SEL {sel} vector {vec:#x} QUEUE_PFN {pfn:#x}",
                    now - t
                );
            }
        }
    }
}

type R<T> = Result<T, HostMemError>;

impl LegacyPollEngine {
    /// An engine for a device offering `host_features` with `num_queues` queues of
    /// `queue_size`.
    pub fn new(host_features: u32, num_queues: u16, queue_size: u16) -> Self {
        LegacyPollEngine {
            host_features,
            queue_size,
            num_queues,
            last_status: 0,
            last_features: 0,
            consumed: 0,
            track: VecTrack::default(),
            vec_before_pfn: None,
            last_vector: None,
            max_vector: None,
            missed: None,
            config_vector: None,
            broken: false,
            config_written: None,
            queues_set_up: false,
            stats: PollStats::default(),
            seen: Seen::new(),
        }
    }

    /// Fills the registers the host reads but never writes (at start and after resets).
    pub fn prime(&mut self, page: &SharedMemory) -> R<()> {
        page.store_u32(HOST_FEATURES, self.host_features)?;
        page.store_u16(QUEUE_NUM, self.queue_size)?;
        page.store_u16(QUEUE_NOTIFY, NOTIFY_IDLE)?;
        page.store_u8(ISR, 0)
    }

    /// Keeps the device configuration copy in the page current: at 0x18 while MSI-X is
    /// enabled (never touching the vector registers at 0x14..0x18), at 0x14 otherwise.
    /// `bytes` is called only when the copy must be rewritten (the poller runs millions of
    /// passes a second; the configuration changes rarely).
    pub fn sync_config(
        &mut self,
        page: &SharedMemory,
        msix: bool,
        gen: u8,
        bytes: impl FnOnce() -> Vec<u8>,
    ) -> R<()> {
        if self.config_written == Some((msix, gen)) {
            return Ok(());
        }
        let bytes = bytes();
        let off = config_offset(msix);
        let room = (page.len() as u64 - off) as usize;
        page.write(off, &bytes[..bytes.len().min(room)])?;
        if !msix {
            // The copy covers the vector register: what it held is no host write.
            self.vec_before_pfn = None;
        }
        self.config_written = Some((msix, gen));
        Ok(())
    }

    fn reset(&mut self, regs: &mut Registers, inferred: bool) -> Effect {
        self.consumed = 0;
        self.track = VecTrack::default();
        self.last_vector = None;
        self.max_vector = None;
        self.missed = None;
        self.config_vector = None;
        self.broken = false;
        self.queues_set_up = false;
        self.last_status = 0;
        self.last_features = 0;
        self.stats.resets += 1;
        if inferred {
            self.stats.inferred_resets += 1;
        }
        regs.reset()
    }

    /// Assigns the tracked queue's vector if it was captured for certain. Returns false if
    /// it was not (the caller refuses the setup).
    fn finish_vector(&mut self, regs: &mut Registers) -> bool {
        let Some(q) = self.track.queue else {
            return true;
        };
        match self.track.certain {
            Some(v) => {
                regs.set_queue_msix_vector_at(q, v);
                self.last_vector = Some(v);
                self.note_vector(v);
                self.track = VecTrack::default();
                true
            }
            None => false,
        }
    }

    /// Records `v` as assigned in this attempt.
    fn note_vector(&mut self, v: u16) {
        if v != NO_VECTOR && v != ATTEMPT_MARK {
            self.max_vector = Some(self.max_vector.map_or(v, |m| m.max(v)));
        }
    }

    /// At DRIVER_OK after queue `k`'s vector was missed and queue k+1's PFN (`pfn`) left in
    /// place: `vec`, read after DRIVER_OK, is queue k+1's vector. If it is two above every
    /// vector assigned before queue k, queue k's is the one in between (see the module
    /// documentation): both queues are set up and the refusal withdrawn. Returns whether
    /// that happened.
    fn deduce_missed(
        &mut self,
        page: &SharedMemory,
        regs: &mut Registers,
        pfn: u32,
        vec: u16,
    ) -> R<bool> {
        let (Some(k), Some(base)) = (self.missed, self.max_vector) else {
            return Ok(false);
        };
        let next = k.wrapping_add(1);
        if self.consumed != next || next >= self.num_queues || vec == NO_VECTOR {
            return Ok(false);
        }
        if base.checked_add(2) != Some(vec) {
            return Ok(false);
        }
        if !page.compare_exchange_u32(QUEUE_PFN, pfn, 0)? {
            return Ok(false);
        }
        regs.set_queue_msix_vector_at(k, base + 1);
        regs.set_queue_pfn_at(next, pfn);
        regs.set_queue_msix_vector_at(next, vec);
        self.last_vector = Some(vec);
        self.note_vector(vec);
        self.consumed = next.wrapping_add(1);
        self.stats.pfns += 1;
        self.stats.deduced_vectors += 1;
        self.track = VecTrack::default();
        self.missed = None;
        self.broken = false;
        log::info!(
            "legacy poll: queue {k}'s vector deduced as {}, between {base} and queue {next}'s {vec}",
            base + 1
        );
        Ok(true)
    }

    /// Consumes a PFN the pass read (compare-and-swap to 0), returning QUEUE_SEL as read
    /// after the PFN: the queue the host selected to write it, or the next one if it has
    /// moved on (Linux selects queue k before writing its PFN, and cannot write queue k+1's
    /// before this one is consumed). QUEUE_SEL read earlier in the pass can be older than
    /// the PFN if the poller was held up between the two reads.
    fn take_pfn(&mut self, page: &SharedMemory, pfn: u32) -> R<Option<u16>> {
        let sel = page.load_u16(QUEUE_SEL)?;
        Ok(page.compare_exchange_u32(QUEUE_PFN, pfn, 0)?.then_some(sel))
    }

    /// Linux abandoned its queue setup and starts again from queue 0 (see the module
    /// documentation): the queues of the abandoned attempt are forgotten.
    fn restart(&mut self, regs: &mut Registers) {
        for q in 0..self.consumed.min(self.num_queues) {
            regs.set_queue_pfn_at(q, 0);
            regs.set_queue_msix_vector_at(q, NO_VECTOR);
        }
        self.consumed = 0;
        self.track = VecTrack::default();
        self.last_vector = None;
        self.max_vector = None;
        self.missed = None;
        self.config_vector = None;
        // Read before the restart: not what queue 0's vector write replaced.
        self.vec_before_pfn = None;
        self.broken = false;
        self.stats.restarts += 1;
    }

    /// One pass over the page. `msix` is whether the host enabled MSI-X.
    pub fn poll(&mut self, page: &SharedMemory, regs: &mut Registers, msix: bool) -> R<Pass> {
        let mut pass = Pass::default();
        self.stats.passes += 1;
        // Read order matters (see the module documentation): STATUS, QUEUE_SEL, vector, PFN.
        let status = page.load_u8(STATUS)?;
        let sel = page.load_u16(QUEUE_SEL)?;
        let vec = if msix {
            page.load_u16(MSI_QUEUE_VECTOR)?
        } else {
            NO_VECTOR
        };
        let pfn = page.load_u32(QUEUE_PFN)?;
        self.seen.record(self.stats.passes, status, sel, vec, pfn);

        // A reset: the 0 itself, or bits lost since the last status.
        if status != self.last_status && (status == 0 || self.last_status & !status != 0) {
            pass.activity = true;
            pass.reset = Some(self.reset(regs, status != 0));
            return Ok(pass);
        }
        if pfn != 0 && self.last_status & DRIVER_OK != 0 {
            // Queues are set up before DRIVER_OK: a PFN now means we missed a reset.
            pass.activity = true;
            pass.reset = Some(self.reset(regs, true));
            return Ok(pass);
        }

        // Vector capture for the queue set up last.
        if let Some(q) = self.track.queue {
            if pfn == 0 {
                self.track
                    .observe(vec, sel == q.wrapping_add(1) || status & DRIVER_OK != 0);
            }
        }
        if pfn == 0 {
            self.vec_before_pfn = Some(vec);
        }

        // Linux writes QUEUE_PFN only with DRIVER set (and not FAILED). A PFN seen with a
        // status that says otherwise is either stale (left by a failed probe, which Linux
        // clears itself when deleting its queues) or raced ahead of the status we read: leave
        // it for the next pass rather than guess.
        let setting_up = status & DRIVER != 0 && status & FAILED == 0;
        let mut pfn_left = pfn != 0;
        if msix && setting_up && status & DRIVER_OK == 0 && (self.queues_set_up || pfn != 0) {
            // Attempt boundaries (module documentation): read after the PFN, before it is
            // consumed.
            let cfg = page.load_u16(MSI_CONFIG_VECTOR)?;
            if cfg != ATTEMPT_MARK {
                if self.consumed > 0 {
                    self.restart(regs);
                }
                if page.compare_exchange_u16(MSI_CONFIG_VECTOR, cfg, ATTEMPT_MARK)? {
                    self.config_vector = Some(cfg);
                    self.note_vector(cfg);
                }
            }
        }
        if pfn != 0 && setting_up && !self.broken {
            // The previous queue's setup (PFN, then vector) is complete now; its vector must
            // have been captured, or we cannot tell it from this queue's.
            if msix && !self.finish_vector(regs) {
                log::warn!(
                    "legacy poll: missed the MSI-X vector of queue {:?} (endpoint too slow); refusing this setup; last register snapshots:",
                    self.track.queue
                );
                self.seen.log();
                self.stats.uncertain_vectors += 1;
                // Leave this PFN in place: a host with more queues fails its own
                // "already active" check; otherwise DRIVER_OK may deduce the vector, or
                // finds the device refusing.
                self.broken = true;
                self.missed = self.track.queue;
            } else if let Some(sel) = self.take_pfn(page, pfn)? {
                pfn_left = false;
                pass.activity = true;
                self.queues_set_up = true;
                self.stats.pfns += 1;
                let k = self.consumed;
                if (sel != k && sel != k.wrapping_add(1)) || k >= self.num_queues {
                    log::warn!(
                        "legacy poll: QUEUE_PFN write while QUEUE_SEL={sel}, expected queue {k}: not in Linux's setup order"
                    );
                    self.stats.order_violations += 1;
                    self.broken = true;
                } else {
                    regs.set_queue_pfn_at(k, pfn);
                    self.track = VecTrack {
                        queue: Some(k),
                        before: if k == 0 {
                            self.vec_before_pfn
                        } else {
                            self.last_vector
                        },
                        certain: None,
                    };
                    // Read before this PFN, which was still unconsumed: at most queue k's
                    // vector. DRIVER_OK (read first) comes after it.
                    self.track.observe(vec, status & DRIVER_OK != 0);
                }
                self.consumed = k.wrapping_add(1);
            }
        }

        let features = page.load_u32(GUEST_FEATURES)?;
        if features != self.last_features {
            pass.activity = true;
            regs.set_driver_feature_select(0);
            regs.set_driver_feature_word(features);
            self.last_features = features;
        }

        if status != self.last_status {
            pass.activity = true;
            if status & DRIVER_OK != 0 && self.last_status & DRIVER_OK == 0 {
                if pfn_left && !self.broken {
                    // The last queue's PFN arrived with DRIVER_OK: take it next pass first.
                    return Ok(pass);
                }
                if msix {
                    let cfg = match self.config_vector {
                        Some(v) => v,
                        None => page.load_u16(MSI_CONFIG_VECTOR)?,
                    };
                    regs.set_config_msix_vector(cfg);
                    if !self.broken && !self.finish_vector(regs) {
                        self.stats.uncertain_vectors += 1;
                        self.broken = true;
                    }
                    if self.broken && pfn_left && self.deduce_missed(page, regs, pfn, vec)? {
                        pfn_left = false;
                        // Counted when refused; the setup stands after all.
                        self.stats.uncertain_vectors -= 1;
                    }
                }
                if self.broken {
                    // Refuse to run with a setup we could not follow. A PFN left in place to
                    // fail the host's check has done its work: the host does not look at it
                    // again, and left there it would read as a reset we never saw.
                    if pfn_left {
                        page.compare_exchange_u32(QUEUE_PFN, pfn, 0)?;
                    }
                    page.store_u8(STATUS, status | VIRTIO_CONFIG_S_NEEDS_RESET as u8)?;
                    regs.set_status(status);
                    self.last_status = status;
                    return Ok(pass);
                }
                self.stats.activations += 1;
            }
            pass.activate = Some(regs.set_status(status));
            self.last_status = status;
        }

        let n = page.load_u16(QUEUE_NOTIFY)?;
        if n != NOTIFY_IDLE && page.compare_exchange_u16(QUEUE_NOTIFY, n, NOTIFY_IDLE)? {
            pass.activity = true;
            self.stats.notifies += 1;
            pass.notify = Some(n);
        }
        Ok(pass)
    }

    /// Runs Linux's setup sequences (a refused attempt, its retry, DRIVER_OK, a reset) once
    /// through a scratch engine and page, so that every path the poller takes while a
    /// driver sets the device up has run before a host does it. The first execution of a
    /// code path is the slow one: page faults on the binary's text on a board, translation
    /// in a TCG guest, where the pass consuming the first PFN after start took 0.4 ms and
    /// missed queue 0's vector in the two-VM rig.
    /// Returns the scratch engine's counters.
    pub fn rehearse(&self, config: &[u8]) -> R<PollStats> {
        let page = SharedMemory::memfd("legacy-rehearsal", 4096)
            .map_err(|_| HostMemError::OutOfRange { addr: 0, len: 4096 })?;
        let queues = self.num_queues.clamp(1, 3);
        let sizes = vec![self.queue_size; usize::from(queues)];
        let mut regs = Registers::new_legacy(u64::from(self.host_features), &sizes, queues + 1);
        let mut engine = LegacyPollEngine::new(self.host_features, queues, self.queue_size);
        engine.prime(&page)?;
        let pass = |engine: &mut LegacyPollEngine, regs: &mut Registers| -> R<()> {
            let p = engine.poll(&page, regs, true)?;
            if let Some(Effect::Reset { epoch }) = p.reset {
                regs.reset_complete(epoch);
                engine.prime(&page)?;
            }
            engine.sync_config(&page, engine.msix_in_use(), 0, || config.to_vec())
        };
        pass(&mut engine, &mut regs)?;
        page.store_u8(STATUS, DRIVER | 1)?;
        for attempt in 0..2u16 {
            page.store_u16(MSI_CONFIG_VECTOR, 0)?;
            pass(&mut engine, &mut regs)?;
            for q in 0..queues {
                page.store_u16(QUEUE_SEL, q)?;
                pass(&mut engine, &mut regs)?;
                page.store_u32(QUEUE_PFN, 0x100 + u32::from(q))?;
                pass(&mut engine, &mut regs)?;
                page.store_u16(MSI_QUEUE_VECTOR, q + 1)?;
                pass(&mut engine, &mut regs)?;
            }
            if attempt == 0 {
                // The host gives this attempt up and deletes its queues.
                for q in 0..queues {
                    page.store_u16(QUEUE_SEL, q)?;
                    page.store_u16(MSI_QUEUE_VECTOR, NO_VECTOR)?;
                    page.store_u32(QUEUE_PFN, 0)?;
                }
                page.store_u16(MSI_CONFIG_VECTOR, NO_VECTOR)?;
                pass(&mut engine, &mut regs)?;
            }
        }
        page.store_u8(STATUS, DRIVER_OK | DRIVER | 1)?;
        for _ in 0..3 {
            pass(&mut engine, &mut regs)?;
        }
        page.store_u16(QUEUE_NOTIFY, 0)?;
        pass(&mut engine, &mut regs)?;
        page.store_u8(STATUS, 0)?;
        pass(&mut engine, &mut regs)?;
        Ok(engine.stats)
    }

    /// Whether the host's device configuration now sits at 0x18 (MSI-X on) rather than 0x14,
    /// as far as the page shows: from the first queue set up after a reset until the next
    /// reset. Linux enables MSI-X before it sets queues up (polled registers refuse INTx, the
    /// only setup without it) and disables it only after a reset (removal resets the device
    /// before it frees the vectors), and it reads configuration at 0x14 before its queues
    /// (virtio_net's MAC, virtio_blk's seg_max) and at 0x18 after them (virtio_blk's block
    /// size, right after find_vqs). The controller's own MSI-X state is no substitute: on a
    /// bare endpoint it is one more register read away and may lag by milliseconds, while
    /// this moves in the same pass as the PFN, within the PFN handshake's timing bound.
    pub fn msix_in_use(&self) -> bool {
        self.queues_set_up
    }

    /// Whether the engine refused the current setup.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The last status seen, as the host wrote it.
    pub fn status(&self) -> u8 {
        self.last_status
    }

    /// Whether a driver is on its way through the setup sequence (some status bit set, no
    /// DRIVER_OK yet, not FAILED): the phase whose timing bounds the poller must keep, so it
    /// must not sleep.
    pub fn negotiating(&self) -> bool {
        let s = self.last_status;
        s != 0 && s & (DRIVER_OK | FAILED) == 0
    }

    /// Whether a driver's probe is running: DRIVER set, no DRIVER_OK, not FAILED. Its queue
    /// setup follows within moments (unlike ACKNOWLEDGE alone, which lasts until a driver
    /// is loaded at all).
    pub fn probing(&self) -> bool {
        self.negotiating() && self.last_status & DRIVER != 0
    }
}
