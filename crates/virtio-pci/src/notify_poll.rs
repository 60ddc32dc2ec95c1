//! The notify page poller: with polled notifications on the modern layout, the notify area
//! is plain memory (mapped straight into a vfio-user host, no trap), one 32-bit slot per
//! queue (`notify_off_multiplier` 4). The endpoint marks every slot idle; a driver's
//! notification overwrites its queue's slot with the queue index (16 bits) or the index and
//! its notification data (32 bits); this thread finds the slot changed, takes it back to
//! idle by compare-and-swap (so two notifications before it looks become one kick, never
//! none), keeps the data and kicks the worker. This is how SPDK's vfio-user virtio devices
//! take notifications: the host pays a memory write per kick instead of a trapped access.
//!
//! The spin/back-off policy is the legacy poller's ([`Backoff`]).

use crate::backoff::Backoff;
use crate::dispatch::Dispatcher;
use epf_epc::{sync, CounterSource, Counters, HostMemError, SharedMemory};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What an idle slot holds (written by the endpoint; no notification is all ones: its low
/// half would name queue 0xffff, beyond the 1024 queues a function has).
pub(crate) const NOTIFY_IDLE: u32 = u32::MAX;

/// Counters: `notify_poll: passes=.. kicks=..`.
#[derive(Debug, Default)]
pub(crate) struct NotifyPollStats {
    passes: AtomicU64,
    kicks: AtomicU64,
}

impl CounterSource for NotifyPollStats {
    fn report(&self, out: &mut Counters) {
        out.line("notify_poll")
            .field("passes", self.passes.load(Ordering::Relaxed))
            .field("kicks", self.kicks.load(Ordering::Relaxed));
    }
}

/// The running notify page poller of one function.
pub(crate) struct NotifyPoller {
    stop: Arc<AtomicBool>,
    pub(crate) stats: Arc<NotifyPollStats>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Marks the `queues` slots at `base` of `page` idle (before the host can notify).
pub(crate) fn prime(page: &SharedMemory, base: u64, queues: usize) -> Result<(), HostMemError> {
    for q in 0..queues as u64 {
        page.store_u32(base + 4 * q, NOTIFY_IDLE)?;
    }
    Ok(())
}

impl NotifyPoller {
    /// Starts polling the `queues` slots at `base` of `page` (primed with [`prime`]).
    pub(crate) fn start(
        d: Arc<Dispatcher>,
        page: Arc<SharedMemory>,
        base: u64,
        queues: usize,
    ) -> std::io::Result<NotifyPoller> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(NotifyPollStats::default());
        let (s, st) = (stop.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("epf-notify-poll".into())
            .spawn(move || poll_loop(&d, &page, base, queues, &s, &st))?;
        Ok(NotifyPoller {
            stop,
            stats,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops the thread and waits for it.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = sync::lock(&self.thread).take() {
            let _ = h.join();
        }
    }
}

/// One pass over the slots: takes every notification found and kicks its queue. Returns
/// whether there was one.
fn pass(
    d: &Dispatcher,
    page: &SharedMemory,
    base: u64,
    queues: usize,
    stats: &NotifyPollStats,
) -> Result<bool, HostMemError> {
    let mut found = false;
    for q in 0..queues {
        let off = base + 4 * q as u64;
        let v = page.load_u32(off)?;
        if v == NOTIFY_IDLE || !page.compare_exchange_u32(off, v, NOTIFY_IDLE)? {
            // Changed under us: the next pass takes the newer value.
            continue;
        }
        // A 16-bit write leaves the idle upper half: no notification data.
        if v >> 16 != 0xffff {
            d.shared.notify_data.store(q, v);
        }
        d.kick(q);
        stats.kicks.fetch_add(1, Ordering::Relaxed);
        found = true;
    }
    stats.passes.fetch_add(1, Ordering::Relaxed);
    Ok(found)
}

fn poll_loop(
    d: &Dispatcher,
    page: &SharedMemory,
    base: u64,
    queues: usize,
    stop: &AtomicBool,
    stats: &NotifyPollStats,
) {
    let mut backoff = Backoff::new();
    while !stop.load(Ordering::Acquire) {
        match pass(d, page, base, queues, stats) {
            Ok(true) => {
                backoff.activity();
                // Let the worker run now if it shares this core (a no-op otherwise).
                std::thread::yield_now();
                continue;
            }
            Ok(false) => {}
            Err(e) => {
                log::error!("notify poll: notify page access failed: {e}");
                return;
            }
        }
        if backoff.spinning() {
            std::hint::spin_loop();
            continue;
        }
        backoff.sleep();
    }
}
