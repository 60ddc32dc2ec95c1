//! What is being served and the operator's view of it: the function (with its poller and
//! device), the controller it is served on, and the outbound windows when they are limited.
//! Their counters go out in one format (`epf_epc::counters`) to `--stats-file` and, on
//! SIGUSR1, to stderr.

use epf_epc::{CounterSource, Counters, OutboundWindows};
use epf_virtio_pci::VirtioPciFunction;
use std::sync::Arc;

/// A served function and the sources of its counters.
#[derive(Clone)]
pub struct Served {
    pub function: Arc<VirtioPciFunction>,
    /// The controller (`link:` for vfio-user, `epf:` for Linux's endpoint subsystem).
    pub link: Arc<dyn CounterSource>,
    /// With `--host-windows`.
    pub windows: Option<Arc<OutboundWindows>>,
}

impl Served {
    /// Every counter: the function's (with the poller's and the device's), the link's, the
    /// windows'.
    pub fn counters(&self) -> String {
        let mut c = Counters::new();
        c.add(self.function.as_ref()).add(self.link.as_ref());
        if let Some(w) = &self.windows {
            c.add(w.as_ref());
        }
        c.into_text()
    }
}
