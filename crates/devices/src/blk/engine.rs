//! The I/O engine interface: how the device (on the worker thread) hands requests to
//! whatever performs them and gets completions back, without ever blocking.
//!
//! Two engines implement it: [`PoolEngine`](super::pool::PoolEngine), a pool of threads doing
//! blocking `pread`/`pwrite`, and [`UringEngine`](super::uring::UringEngine), io_uring driven
//! from the worker thread itself. Either keeps many requests in flight per queue; completions
//! that arrive while the worker is elsewhere are announced through the device's
//! [`Waker`], and the worker collects all of them in one `wake()` call, so one interrupt per
//! queue covers the whole batch. docs/blk.md has the measurements behind the default.

use super::request::{Completion, Request};
use epf_device::Waker;
use epf_epc::sync;
use std::sync::Mutex;

/// Which engine to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// A thread pool with blocking positional I/O.
    Threads,
    /// io_uring, submitted and reaped by the worker thread (small requests; large ones,
    /// flushes and discards go to the thread pool).
    #[value(name = "io-uring", alias = "io_uring")]
    IoUring,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Threads => "threads",
            EngineKind::IoUring => "io-uring",
        })
    }
}

/// An I/O engine. All methods are called on the worker thread.
pub trait Engine: Send {
    /// Where to announce completions that arrive asynchronously.
    fn set_waker(&mut self, waker: Waker);

    /// Starts `req` (possibly only queued until [`commit`](Engine::commit)). Never blocks.
    fn submit(&mut self, req: Request);

    /// Starts everything submitted since the last call. Never blocks.
    fn commit(&mut self) {}

    /// Moves the completions available now into `out`. Never blocks.
    fn reap(&mut self, out: &mut Vec<Completion>);

    /// Blocks until no request is in flight any more (their completions stay available to
    /// [`reap`](Engine::reap)). Used on device reset only: afterwards nothing touches the
    /// old driver's memory.
    fn drain(&mut self);

    /// Requests submitted and not yet reaped.
    fn in_flight(&self) -> usize;
}

/// The device's waker, shared with engine threads; empty until the first activation.
#[derive(Default)]
pub struct WakerCell(Mutex<Option<Waker>>);

impl WakerCell {
    /// Stores the waker (the worker's; the same for every activation).
    pub fn set(&self, w: Waker) {
        *sync::lock(&self.0) = Some(w);
    }

    /// Asks the worker to call `wake()` (nothing before the first activation).
    pub fn wake(&self) {
        if let Some(w) = sync::lock(&self.0).as_ref() {
            w.wake();
        }
    }
}
