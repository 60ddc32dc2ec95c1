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
//! k+1. A pass that reads QUEUE_SEL == k+1 (or STATUS with DRIVER_OK), *then* the vector,
//! *then* QUEUE_PFN == 0 has read queue k's vector for certain (it was written before that
//! selection, and queue k+1's vector comes only after its PFN, which the pass found absent).
//! If no such pass happened before queue k+1's PFN appears, the two vectors cannot be told
//! apart: the engine refuses the setup rather than guess. It leaves that PFN unconsumed, so a
//! host with more queues fails its own "already active" check; otherwise the device answers
//! DRIVER_OK with DEVICE_NEEDS_RESET and stays inactive. Counted as `uncertain_vectors`.
//!
//! Timing bound (stated in docs/design.md and measured by the tests): correct whenever each
//! PFN write is consumed before the host's next queue check, which Linux performs at least 5
//! register accesses (plus a ring allocation) later; vectors are certain whenever one poll
//! pass falls between the host selecting queue k+1 and writing its PFN.

use crate::legacy_layout::*;
use crate::registers::{Effect, Registers};
use crate::NO_VECTOR;
use epf_epc::{HostMemError, SharedMemory};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED,
    VIRTIO_CONFIG_S_NEEDS_RESET,
};

const DRIVER_OK: u8 = VIRTIO_CONFIG_S_DRIVER_OK as u8;
const DRIVER: u8 = VIRTIO_CONFIG_S_DRIVER as u8;
const FAILED: u8 = VIRTIO_CONFIG_S_FAILED as u8;
/// QUEUE_NOTIFY value meaning "no notification pending" (written by the endpoint).
pub const NOTIFY_IDLE: u16 = 0xffff;

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
    certain: Option<u16>,
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
    broken: bool,
    /// (msix enabled, generation) of the device configuration copy in the page.
    config_written: Option<(bool, u8)>,
    pub stats: PollStats,
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
            broken: false,
            config_written: None,
            stats: PollStats::default(),
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
        self.config_written = Some((msix, gen));
        Ok(())
    }

    fn reset(&mut self, regs: &mut Registers, inferred: bool) -> Effect {
        self.consumed = 0;
        self.track = VecTrack::default();
        self.broken = false;
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
                self.track = VecTrack::default();
                true
            }
            None => false,
        }
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
            if pfn == 0 && (sel == q.wrapping_add(1) || status & DRIVER_OK != 0) {
                self.track.certain = Some(vec);
            }
        }

        // Linux writes QUEUE_PFN only with DRIVER set (and not FAILED). A PFN seen with a
        // status that says otherwise is either stale (left by a failed probe, which Linux
        // clears itself when deleting its queues) or raced ahead of the status we read: leave
        // it for the next pass rather than guess.
        let setting_up = status & DRIVER != 0 && status & FAILED == 0;
        let mut pfn_left = pfn != 0;
        if pfn != 0 && setting_up && !self.broken {
            // The previous queue's setup (PFN, then vector) is complete now; its vector must
            // have been captured, or we cannot tell it from this queue's.
            if msix && !self.finish_vector(regs) {
                log::warn!(
                    "legacy poll: missed the MSI-X vector of queue {:?} (endpoint too slow); refusing this setup",
                    self.track.queue
                );
                self.stats.uncertain_vectors += 1;
                // Leave this PFN in place: a host with more queues fails its own
                // "already active" check; otherwise DRIVER_OK finds the device refusing.
                self.broken = true;
            } else if page.compare_exchange_u32(QUEUE_PFN, pfn, 0)? {
                pfn_left = false;
                pass.activity = true;
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
                        ..VecTrack::default()
                    };
                    if status & DRIVER_OK != 0 {
                        // DRIVER_OK (read first) comes after this queue's vector.
                        self.track.certain = Some(vec);
                    }
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
                    regs.set_config_msix_vector(page.load_u16(MSI_CONFIG_VECTOR)?);
                    if !self.finish_vector(regs) {
                        self.stats.uncertain_vectors += 1;
                        self.broken = true;
                    }
                }
                if self.broken {
                    // Refuse to run with a setup we could not follow.
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
