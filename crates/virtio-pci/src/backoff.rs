//! How a polling thread spends the CPU between host accesses: it spins for a while after
//! each one (the next access of a burst usually follows within it), then sleeps a little
//! longer each idle pass, up to `MAX_IDLE_SLEEP`, and up to `DEEP_IDLE_SLEEP` once the host
//! has been quiet for `DEEP_IDLE_AFTER`, so an idle device does not burn a core. Shared by
//! the polled register engine's thread (`poller.rs`) and the notify page poller
//! (`notify_poll.rs`); docs/design.md has the measurements behind the numbers.

use std::time::{Duration, Instant};

/// Spin this long after host activity before sleeping. Time, not passes: a pass costs about
/// 0.1 us natively and 3 us in a TCG guest, and on a single-core endpoint every microsecond
/// spun is taken from the worker serving the notification (20,000 passes spun for 70 ms in
/// the rig's EP VM and left the virtio-net worker a tenth of the CPU: 80 KB/s).
const SPIN_AFTER_ACTIVITY: Duration = Duration::from_micros(50);
const MIN_SLEEP: Duration = Duration::from_micros(1);
const MAX_IDLE_SLEEP: Duration = Duration::from_micros(200);
/// A device the host has not touched for a while (no traffic at all, not merely between two
/// packets) is woken less often: ~1,000 instead of ~5,000 times a second.
const DEEP_IDLE_AFTER: Duration = Duration::from_millis(500);
const DEEP_IDLE_SLEEP: Duration = Duration::from_millis(1);

/// The spin/sleep state of one polling thread.
pub(crate) struct Backoff {
    sleep: Duration,
    last_activity: Instant,
    was_active: bool,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            sleep: MIN_SLEEP,
            last_activity: Instant::now(),
            was_active: true,
        }
    }

    /// The pass found host activity: the next idle stretch starts over.
    pub(crate) fn activity(&mut self) {
        self.was_active = true;
        self.sleep = MIN_SLEEP;
    }

    /// The pass found nothing: whether the thread should still spin (the last activity is
    /// less than `SPIN_AFTER_ACTIVITY` ago, counted from the first idle pass after it).
    pub(crate) fn spinning(&mut self) -> bool {
        if self.was_active {
            self.was_active = false;
            self.last_activity = Instant::now();
        }
        self.last_activity.elapsed() < SPIN_AFTER_ACTIVITY
    }

    /// Sleeps the current step, then lengthens it (doubling, up to the idle cap).
    pub(crate) fn sleep(&mut self) {
        std::thread::sleep(self.sleep);
        let cap = if self.last_activity.elapsed() > DEEP_IDLE_AFTER {
            DEEP_IDLE_SLEEP
        } else {
            MAX_IDLE_SLEEP
        };
        self.sleep = (self.sleep * 2).min(cap);
    }
}
