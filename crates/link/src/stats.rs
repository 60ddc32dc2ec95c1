//! The link's counters: what the EP driver did to the controller and what crossed the link.
//! Lock-free atomics, printed as `name value` lines with the two vfio-user controllers'
//! counters.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// The live counters.
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        impl Stats {
            /// Appends `prefix.name value` lines.
            pub fn format(&self, out: &mut String, prefix: &str) {
                $(let _ = writeln!(out, "{prefix}{} {}", stringify!($name),
                    self.$name.load(Ordering::Relaxed));)*
            }
        }
    };
}

counters! {
    /// Register reads by the EP driver.
    register_reads,
    /// Register writes by the EP driver.
    register_writes,
    /// Register accesses that were not aligned dwords, or outside every register.
    bad_register_accesses,
    /// Register writes refused (each also set `ERROR`).
    rejected_writes,
    /// EP accesses to the outbound aperture that reached host memory.
    aperture_reads,
    aperture_writes,
    /// Bytes moved by those accesses.
    aperture_bytes,
    /// Aperture accesses outside every window or to host memory the host did not map.
    aperture_unmapped,
    /// DMA transfers finished, failed, and bytes moved.
    dma_transfers,
    dma_errors,
    dma_bytes,
    /// Host accesses to trapped pages of plain BAR memory (next to the MSI-X table or a
    /// doorbell), forwarded to EP memory.
    host_forwarded,
    /// Host accesses to a BAR while the function was stopped (all-ones / dropped).
    host_while_down,
    /// Doorbells the host rang.
    doorbells,
    /// Interrupts raised to the host, by type, and refused raises.
    irqs_msi,
    irqs_msix,
    irqs_intx,
    irqs_refused,
    /// Events posted to the EP (link up/down, BME, reset, DMA, doorbell).
    events,
    /// Host-side devices laid out (one per new layout).
    host_layouts,
    /// BARs cleared while a host had them mapped.
    bars_cleared_while_mapped,
}

/// Adds one.
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n`.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Appends a vfio-user controller's counters that matter here.
pub fn format_vfio(out: &mut String, prefix: &str, s: &epf_vfio_user::Stats) {
    for (name, v) in [
        ("clients", s.clients),
        ("protocol_errors", s.protocol_errors),
        ("trapped_reads", s.trapped_reads),
        ("trapped_writes", s.trapped_writes),
        ("memory_accesses", s.memory_accesses),
        ("config_reads", s.config_reads),
        ("config_writes", s.config_writes),
        ("dma_maps", s.dma_maps),
        ("irqs_raised", s.irqs_raised),
        ("resets", s.resets),
    ] {
        let _ = writeln!(out, "{prefix}{name} {v}");
    }
}
