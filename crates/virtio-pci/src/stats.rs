//! Counters an operator can read while the function runs: per queue (chains, descriptors,
//! bytes, notifications, interrupts) and per function (resets, errors, trapped accesses).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Per-queue counters, cumulative over resets.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub notifications: AtomicU64,
    pub interrupts: AtomicU64,
    pub chains: AtomicU64,
    pub descriptors: AtomicU64,
    pub bytes: AtomicU64,
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

    /// A human-readable multi-line summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "function: bar_reads={} bar_writes={} activations={} resets={} needs_reset={} config_irqs={}\n",
            get(&self.bar_reads),
            get(&self.bar_writes),
            get(&self.activations),
            get(&self.resets),
            get(&self.needs_reset),
            get(&self.config_interrupts)
        );
        for (i, q) in self.queues.iter().enumerate() {
            let _ = writeln!(
                s,
                "queue {i}: chains={} descriptors={} bytes={} notifications={} interrupts={}",
                get(&q.chains),
                get(&q.descriptors),
                get(&q.bytes),
                get(&q.notifications),
                get(&q.interrupts)
            );
        }
        s
    }
}
