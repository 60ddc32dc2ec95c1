//! Counters of host activity seen by the loopback controller, so tests can assert how a
//! device is reached (e.g. zero trapped accesses when a device runs in poll mode).

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! stats {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// A snapshot of the controller's counters. Each host access (or each piece of an
        /// access that spans several BAR areas) counts once.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct LoopbackStats {
            $($(#[$doc])* pub $name: u64,)*
        }

        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $name: AtomicU64,)*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> LoopbackStats {
                LoopbackStats {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

stats! {
    /// Host reads of trapped BAR areas (each one a `FunctionHandler::bar_read` call).
    trapped_bar_reads,
    /// Host writes to trapped BAR areas (each one a `FunctionHandler::bar_write` call).
    trapped_bar_writes,
    /// Host writes to doorbell areas (each one a `FunctionHandler::bar_write` call).
    doorbell_writes,
    /// Host reads of doorbell areas (answered with zeros, no callback).
    doorbell_reads,
    /// Host reads of shared-memory BAR areas.
    memory_bar_reads,
    /// Host writes to shared-memory BAR areas.
    memory_bar_writes,
    /// Host accesses to the MSI-X table or PBA.
    msix_table_accesses,
    /// Host BAR accesses hitting no area, a missing BAR, or beyond a BAR's end.
    unclaimed_bar_accesses,
    /// Host configuration reads (any).
    config_reads,
    /// Host configuration writes (any).
    config_writes,
    /// Host configuration reads forwarded to `FunctionHandler::config_read`.
    trapped_config_reads,
    /// Host configuration writes forwarded to `FunctionHandler::config_write`.
    trapped_config_writes,
    /// MSI-X messages delivered to the host.
    msix_delivered,
    /// MSI-X messages left pending because the vector or function was masked.
    msix_pended,
    /// `raise_irq` calls refused (not enabled, bad vector, unsupported).
    irqs_refused,
    /// INTx assertions (transitions from deasserted to asserted).
    intx_asserts,
    /// Function-level resets issued by the host.
    function_resets,
}

impl Counters {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
