//! Test fixtures for loopback tests of functions and devices (feature `testing`): a rig that
//! runs the real [`VirtioPciFunction`] on an in-process [`LoopbackController`], with the
//! end-of-test checks every such test makes, and a watchdog that turns hangs into failures.

use crate::VirtioPciFunction;
use epf_device::VirtioDevice;
use epf_epc::EndpointController;
use epf_loopback::host_driver::VirtioPciDriver;
use epf_loopback::{HostBus, LoopbackController, LoopbackOptions};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `body` on its own thread and fails the test if it does not finish within `limit`
/// (a hang becomes a failure instead of a stuck test run).
pub fn bounded<F: FnOnce() + Send + 'static>(limit: Duration, body: F) {
    let (tx, rx) = channel();
    let t = std::thread::Builder::new()
        .name("test-body".into())
        .spawn(move || {
            body();
            let _ = tx.send(());
        })
        .expect("spawn the test body");
    match rx.recv_timeout(limit) {
        Ok(()) => t.join().expect("test body"),
        Err(RecvTimeoutError::Disconnected) => {
            // The body panicked: re-raise its panic here.
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(RecvTimeoutError::Timeout) => panic!("test did not finish within {limit:?} (hang)"),
    }
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A loopback controller with the real virtio-pci function on it; the function stops when
/// the rig is dropped.
pub struct Rig {
    pub c: Arc<LoopbackController>,
    pub f: Arc<VirtioPciFunction>,
}

impl Rig {
    /// `device` on a loopback controller with `opts`.
    pub fn with_options(opts: LoopbackOptions, device: Box<dyn VirtioDevice>) -> Rig {
        let c = Arc::new(LoopbackController::new(opts).expect("loopback controller"));
        let epc: Arc<dyn EndpointController> = c.clone();
        let f = VirtioPciFunction::start(epc, device).expect("start the function");
        Rig { c, f }
    }

    /// `device` presented with `options` on a loopback controller with `opts`.
    pub fn with_function_options(
        opts: LoopbackOptions,
        device: Box<dyn VirtioDevice>,
        options: crate::FunctionOptions,
    ) -> Rig {
        let c = Arc::new(LoopbackController::new(opts).expect("loopback controller"));
        let epc: Arc<dyn EndpointController> = c.clone();
        let f = VirtioPciFunction::start_with(epc, device, options).expect("start the function");
        Rig { c, f }
    }

    /// The host's view of the link.
    pub fn bus(&self) -> HostBus {
        self.c.host()
    }

    /// A freshly probed host driver (like a host binding its driver).
    pub fn driver(&self) -> VirtioPciDriver {
        VirtioPciDriver::probe(self.c.host()).expect("probe the function")
    }

    /// End-of-test checks: no host-memory access outside host RAM ever happened, and no
    /// interrupt was raised that the host had not enabled.
    pub fn finish(self) {
        assert_eq!(
            self.c.oob_attempts(),
            0,
            "the endpoint attempted host-memory accesses outside host RAM"
        );
        assert_eq!(
            self.c.stats().irqs_refused,
            0,
            "the function raised interrupts the host had not enabled"
        );
    }

    /// End-of-test check after function-level resets, which may race with interrupts the
    /// device raises: only the host-memory check applies.
    pub fn finish_after_flr(self) {
        assert_eq!(
            self.c.oob_attempts(),
            0,
            "the endpoint attempted host-memory accesses outside host RAM"
        );
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.f.stop();
    }
}
