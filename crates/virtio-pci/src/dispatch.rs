//! What the register engines (trapped accesses on the link thread, the poller for polled
//! registers) hand to the worker: activations, resets and queue notifications. A reset of a
//! legacy function is waited for here, since a legacy driver does not wait for it itself.

use crate::registers::Effect;
use crate::shared::Shared;
use crate::worker::{Control, WorkerHandle};
use epf_epc::sync;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a reset may take before the register engine gives up waiting for the worker.
const RESET_WAIT: Duration = Duration::from_secs(2);

/// The register engines' way to the worker.
pub(crate) struct Dispatcher {
    pub(crate) shared: Arc<Shared>,
    worker: Mutex<WorkerHandle>,
    /// Whether a reset must be complete before the register engine serves the host again
    /// (the legacy layout).
    wait_for_reset: bool,
}

impl Dispatcher {
    pub(crate) fn new(shared: Arc<Shared>, worker: WorkerHandle, wait_for_reset: bool) -> Self {
        Dispatcher {
            shared,
            worker: Mutex::new(worker),
            wait_for_reset,
        }
    }

    fn worker(&self) -> MutexGuard<'_, WorkerHandle> {
        sync::lock(&self.worker)
    }

    /// Carries out what a register access caused.
    pub(crate) fn apply(&self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::Activate(a) => self.worker().send(Control::Activate(a)),
            Effect::Reset { epoch } => {
                self.worker().send(Control::Reset { epoch });
                if self.wait_for_reset {
                    // A legacy driver does not wait for the reset to finish before its next
                    // register access: finish it before serving that access.
                    self.wait_reset();
                }
            }
        }
    }

    /// Waits (bounded) until the worker has completed the pending reset.
    fn wait_reset(&self) {
        let deadline = Instant::now() + RESET_WAIT;
        let mut regs = self.shared.regs();
        while regs.reset_pending() {
            let now = Instant::now();
            if now >= deadline {
                log::error!("device reset did not complete within {RESET_WAIT:?}");
                return;
            }
            regs = sync::wait_timeout(&self.shared.reset_done, regs, deadline - now).0;
        }
    }

    /// Notifies queue `q`'s worker.
    pub(crate) fn kick(&self, q: usize) {
        if !self.worker().kick(q) {
            log::debug!("ignored notification of queue {q}");
        }
    }

    /// Stops the worker thread.
    pub(crate) fn stop(&self) {
        self.worker().stop();
    }
}
