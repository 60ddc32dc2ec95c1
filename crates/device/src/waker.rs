//! A handle backend threads use to ask the worker thread to call [`VirtioDevice::wake`].
//!
//! [`VirtioDevice::wake`]: crate::VirtioDevice::wake

use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;

/// Wakes the device's worker thread. Cheap to clone; wake-ups coalesce.
#[derive(Clone)]
pub struct Waker(Arc<EventFd>);

impl Waker {
    /// Wraps the worker's wake eventfd.
    pub fn new(fd: Arc<EventFd>) -> Self {
        Waker(fd)
    }

    /// Requests a call to `wake()` on the worker thread.
    pub fn wake(&self) {
        // An eventfd write only fails when the counter would overflow, in which case a
        // wake-up is already pending: nothing is lost.
        let _ = self.0.write(1);
    }
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waker")
    }
}
