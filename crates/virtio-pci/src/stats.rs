//! Counters an operator can read while the function runs: per queue (chains, descriptors,
//! bytes, notifications, interrupts) and per function (resets, errors, trapped accesses).

use epf_epc::{CounterSource, Counters};
use std::sync::atomic::{AtomicU64, Ordering};

/// Per-queue counters, cumulative over resets.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub notifications: AtomicU64,
    pub interrupts: AtomicU64,
    pub chains: AtomicU64,
    pub descriptors: AtomicU64,
    pub bytes: AtomicU64,
    /// Ring reads that notification data made unnecessary (VIRTIO_F_NOTIFICATION_DATA).
    pub ring_reads_saved: AtomicU64,
    /// Used entries not written under VIRTIO_F_IN_ORDER (a batch's entry stood for them).
    pub used_elided: AtomicU64,
}

/// Per-function counters.
#[derive(Debug, Default)]
pub struct FunctionStats {
    pub queues: Vec<QueueStats>,
    pub bar_reads: AtomicU64,
    pub bar_writes: AtomicU64,
    pub config_interrupts: AtomicU64,
    pub activations: AtomicU64,
    pub resets: AtomicU64,
    pub needs_reset: AtomicU64,
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl FunctionStats {
    pub fn new(num_queues: usize) -> Self {
        FunctionStats {
            queues: (0..num_queues).map(|_| QueueStats::default()).collect(),
            ..Default::default()
        }
    }
}

/// `function: bar_reads=.. bar_writes=.. activations=.. resets=.. needs_reset=.. config_irqs=..`,
/// then `queue N: chains=.. descriptors=.. bytes=.. notifications=.. interrupts=..
/// ring_reads_saved=.. used_elided=..` per queue.
impl CounterSource for FunctionStats {
    fn report(&self, out: &mut Counters) {
        out.line("function")
            .field("bar_reads", get(&self.bar_reads))
            .field("bar_writes", get(&self.bar_writes))
            .field("activations", get(&self.activations))
            .field("resets", get(&self.resets))
            .field("needs_reset", get(&self.needs_reset))
            .field("config_irqs", get(&self.config_interrupts));
        for (i, q) in self.queues.iter().enumerate() {
            out.line(format_args!("queue {i}"))
                .field("chains", get(&q.chains))
                .field("descriptors", get(&q.descriptors))
                .field("bytes", get(&q.bytes))
                .field("notifications", get(&q.notifications))
                .field("interrupts", get(&q.interrupts))
                .field("ring_reads_saved", get(&q.ring_reads_saved))
                .field("used_elided", get(&q.used_elided));
        }
    }
}
