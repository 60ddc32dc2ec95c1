//! Activity counters of a vfio-user controller: lock-free atomics bumped on the serving thread
//! (and by `raise_irq` callers), read as a consistent-enough [`Stats`] snapshot.

use crate::protocol::cmd;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the controller's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Commands received, indexed by command number (index 0 and unknown commands are counted
    /// in `unknown_commands` instead).
    pub commands: [u64; cmd::COUNT],
    /// Commands with a number we do not know.
    pub unknown_commands: u64,
    /// Clients accepted.
    pub clients: u64,
    /// Malformed messages and other protocol violations.
    pub protocol_errors: u64,
    /// Host reads of trapped BAR areas delivered to the function.
    pub trapped_reads: u64,
    /// Host writes to trapped BAR areas delivered to the function.
    pub trapped_writes: u64,
    /// Host writes to doorbell areas.
    pub doorbells: u64,
    /// Host accesses to BAR memory areas that arrived as messages (not through the mapping).
    pub memory_accesses: u64,
    /// Configuration space reads.
    pub config_reads: u64,
    /// Configuration space writes.
    pub config_writes: u64,
    /// Successful DMA_MAP commands.
    pub dma_maps: u64,
    /// DMA mappings removed (by DMA_UNMAP or client disconnect).
    pub dma_unmaps: u64,
    /// Interrupts signalled to the host.
    pub irqs_raised: u64,
    /// `raise_irq` calls refused because the host had not enabled the interrupt.
    pub irqs_refused: u64,
    /// Function resets delivered (DEVICE_RESET and disconnects).
    pub resets: u64,
}

impl Stats {
    /// Number of commands `c` received.
    pub fn command(&self, c: u16) -> u64 {
        self.commands.get(c as usize).copied().unwrap_or(0)
    }
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    commands: [AtomicU64; cmd::COUNT],
    pub unknown_commands: AtomicU64,
    pub clients: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub trapped_reads: AtomicU64,
    pub trapped_writes: AtomicU64,
    pub doorbells: AtomicU64,
    pub memory_accesses: AtomicU64,
    pub config_reads: AtomicU64,
    pub config_writes: AtomicU64,
    pub dma_maps: AtomicU64,
    pub dma_unmaps: AtomicU64,
    pub irqs_raised: AtomicU64,
    pub irqs_refused: AtomicU64,
    pub resets: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Counts a received command.
    pub fn command(&self, c: u16) {
        match self.commands.get(c as usize) {
            Some(a) if c != 0 => bump(a),
            _ => bump(&self.unknown_commands),
        }
    }

    /// Takes a snapshot.
    pub fn snapshot(&self) -> Stats {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut commands = [0; cmd::COUNT];
        for (d, s) in commands.iter_mut().zip(&self.commands) {
            *d = ld(s);
        }
        Stats {
            commands,
            unknown_commands: ld(&self.unknown_commands),
            clients: ld(&self.clients),
            protocol_errors: ld(&self.protocol_errors),
            trapped_reads: ld(&self.trapped_reads),
            trapped_writes: ld(&self.trapped_writes),
            doorbells: ld(&self.doorbells),
            memory_accesses: ld(&self.memory_accesses),
            config_reads: ld(&self.config_reads),
            config_writes: ld(&self.config_writes),
            dma_maps: ld(&self.dma_maps),
            dma_unmaps: ld(&self.dma_unmaps),
            irqs_raised: ld(&self.irqs_raised),
            irqs_refused: ld(&self.irqs_refused),
            resets: ld(&self.resets),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_commands() {
        let c = Counters::default();
        c.command(cmd::VERSION);
        c.command(cmd::VERSION);
        c.command(0);
        c.command(999);
        let s = c.snapshot();
        assert_eq!(s.command(cmd::VERSION), 2);
        assert_eq!(s.unknown_commands, 2);
        assert_eq!(s.command(999), 0);
    }
}
