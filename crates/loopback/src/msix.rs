//! MSI-X as the host sees it: the controller-owned vector table and pending-bit array, the
//! enable/function-mask bits (mirrored from the capability's message control), and delivery
//! to the host model as per-vector counters, eventfds and a waitable condition.
//!
//! Semantics follow the PCI spec: vectors start masked; raising a masked vector (or any
//! vector while the function is masked) sets its pending bit and delivers it when unmasked;
//! raising anything while MSI-X is disabled, or a vector beyond the table, is refused.

use crate::stats::Counters;
use epf_epc::sync::{self, lock};
use epf_epc::EpcError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Size of one MSI-X table entry.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// Offset of the vector-control dword in a table entry.
const ENTRY_VECTOR_CTRL: usize = 12;
/// Vector-control mask bit.
const ENTRY_CTRL_MASKBIT: u8 = 1;

/// What happened to a raised vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    Delivered,
    Pended,
}

struct Inner {
    enabled: bool,
    function_masked: bool,
    table: Vec<u8>,
    pending: Vec<bool>,
}

impl Inner {
    fn masked(&self, v: usize) -> bool {
        self.table[v * MSIX_ENTRY_SIZE as usize + ENTRY_VECTOR_CTRL] & ENTRY_CTRL_MASKBIT != 0
    }

    fn deliverable(&self, v: usize) -> bool {
        self.enabled && !self.function_masked && !self.masked(v)
    }
}

/// The MSI-X state of one function.
pub(crate) struct MsixState {
    vectors: u16,
    inner: Mutex<Inner>,
    counts: Vec<AtomicU64>,
    eventfds: Vec<EventFd>,
    /// Per vector, the delivery count already consumed by [`MsixState::wait`].
    consumed: Mutex<Vec<u64>>,
    delivered: Condvar,
    stats: Arc<Counters>,
}

impl MsixState {
    pub(crate) fn new(
        vectors: u16,
        eventfds: bool,
        stats: Arc<Counters>,
    ) -> Result<Self, EpcError> {
        let n = vectors as usize;
        let eventfds = if eventfds {
            (0..n)
                .map(|_| EventFd::new(EFD_NONBLOCK))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| EpcError::Os(format!("eventfd: {e}")))?
        } else {
            Vec::new()
        };
        let s = MsixState {
            vectors,
            inner: Mutex::new(Inner {
                enabled: false,
                function_masked: false,
                table: vec![0; n * MSIX_ENTRY_SIZE as usize],
                pending: vec![false; n],
            }),
            counts: (0..n).map(|_| AtomicU64::new(0)).collect(),
            eventfds,
            consumed: Mutex::new(vec![0; n]),
            delivered: Condvar::new(),
            stats,
        };
        s.reset();
        Ok(s)
    }

    /// Number of vectors in the table.
    pub(crate) fn vectors(&self) -> u16 {
        self.vectors
    }

    /// Back to the power-on state: disabled, all vectors masked, nothing pending.
    /// Delivery counts are kept (they are cumulative host-side observations).
    pub(crate) fn reset(&self) {
        let mut g = lock(&self.inner);
        g.enabled = false;
        g.function_masked = false;
        g.table.fill(0);
        for v in 0..self.vectors as usize {
            g.table[v * MSIX_ENTRY_SIZE as usize + ENTRY_VECTOR_CTRL] = ENTRY_CTRL_MASKBIT;
        }
        g.pending.fill(false);
    }

    /// Whether MSI-X is enabled.
    pub(crate) fn enabled(&self) -> bool {
        lock(&self.inner).enabled
    }

    /// Mirrors the capability's enable and function-mask bits; delivers pending vectors
    /// that became deliverable. Returns whether anything changed.
    pub(crate) fn set_control(&self, enabled: bool, function_masked: bool) -> bool {
        let mut g = lock(&self.inner);
        let changed = g.enabled != enabled || g.function_masked != function_masked;
        g.enabled = enabled;
        g.function_masked = function_masked;
        self.flush_pending(&mut g);
        changed
    }

    /// Programs every entry the way an OS does when it allocates and requests all vectors:
    /// message data = vector number, and unmasks them. Returns whether any mask changed.
    pub(crate) fn program_all_unmasked(&self) -> bool {
        let mut g = lock(&self.inner);
        let mut changed = false;
        for v in 0..self.vectors as usize {
            let e = v * MSIX_ENTRY_SIZE as usize;
            changed |= g.masked(v);
            g.table[e..e + 4].copy_from_slice(&0xfee0_0000u32.to_le_bytes());
            g.table[e + 4..e + 8].fill(0);
            g.table[e + 8..e + 12].copy_from_slice(&(v as u32).to_le_bytes());
            g.table[e + 12..e + 16].fill(0);
        }
        self.flush_pending(&mut g);
        changed
    }

    fn flush_pending(&self, g: &mut Inner) {
        for v in 0..self.vectors as usize {
            if g.pending[v] && g.deliverable(v) {
                g.pending[v] = false;
                self.deliver(v);
            }
        }
    }

    fn deliver(&self, v: usize) {
        Counters::inc(&self.stats.msix_delivered);
        {
            let _g = lock(&self.consumed);
            self.counts[v].fetch_add(1, Ordering::SeqCst);
        }
        self.delivered.notify_all();
        if let Some(fd) = self.eventfds.get(v) {
            if let Err(e) = fd.write(1) {
                log::warn!("loopback: MSI-X eventfd {v}: {e}");
            }
        }
    }

    /// The endpoint raises vector `v`.
    pub(crate) fn raise(&self, v: u16) -> Result<Delivery, EpcError> {
        if v >= self.vectors {
            return Err(EpcError::IrqNotEnabled(format!(
                "MSI-X vector {v} (the table has {} vectors)",
                self.vectors
            )));
        }
        let mut g = lock(&self.inner);
        if !g.enabled {
            return Err(EpcError::IrqNotEnabled(format!(
                "MSI-X vector {v} (MSI-X is disabled)"
            )));
        }
        let v = v as usize;
        if g.deliverable(v) {
            self.deliver(v);
            Ok(Delivery::Delivered)
        } else {
            g.pending[v] = true;
            Counters::inc(&self.stats.msix_pended);
            Ok(Delivery::Pended)
        }
    }

    /// Host read of the table at byte offset `off` (relative to the table start).
    pub(crate) fn table_read(&self, off: u64, data: &mut [u8]) {
        let g = lock(&self.inner);
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(off + i as u64)
                .ok()
                .and_then(|o| g.table.get(o).copied())
                .unwrap_or(0);
        }
    }

    /// Host write to the table; returns whether a vector's mask bit changed.
    pub(crate) fn table_write(&self, off: u64, data: &[u8]) -> bool {
        let mut g = lock(&self.inner);
        let before: Vec<bool> = (0..self.vectors as usize).map(|v| g.masked(v)).collect();
        for (i, b) in data.iter().enumerate() {
            if let Some(slot) = usize::try_from(off + i as u64)
                .ok()
                .and_then(|o| g.table.get_mut(o))
            {
                *slot = *b;
            }
        }
        let changed = (0..self.vectors as usize).any(|v| g.masked(v) != before[v]);
        self.flush_pending(&mut g);
        changed
    }

    /// Host read of the pending-bit array at byte offset `off` (relative to its start).
    pub(crate) fn pba_read(&self, off: u64, data: &mut [u8]) {
        let g = lock(&self.inner);
        for (i, b) in data.iter_mut().enumerate() {
            let byte = off + i as u64;
            *b = (0..8u64)
                .filter(|bit| {
                    usize::try_from(byte * 8 + bit)
                        .ok()
                        .and_then(|v| g.pending.get(v).copied())
                        .unwrap_or(false)
                })
                .fold(0u8, |acc, bit| acc | (1 << bit));
        }
    }

    /// Whether vector `v` is masked in the table (true for a nonexistent vector).
    pub(crate) fn masked(&self, v: u16) -> bool {
        v >= self.vectors || lock(&self.inner).masked(v as usize)
    }

    /// Whether vector `v` has its pending bit set.
    pub(crate) fn pending(&self, v: u16) -> bool {
        lock(&self.inner)
            .pending
            .get(v as usize)
            .copied()
            .unwrap_or(false)
    }

    /// Messages delivered on vector `v` so far.
    pub(crate) fn count(&self, v: u16) -> u64 {
        self.counts
            .get(v as usize)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }

    /// A clone of vector `v`'s eventfd, if eventfds were requested.
    pub(crate) fn eventfd(&self, v: u16) -> Option<EventFd> {
        self.eventfds
            .get(v as usize)
            .and_then(|fd| fd.try_clone().ok())
    }

    /// Waits until vector `v` has a delivery not yet consumed by an earlier `wait`, and
    /// consumes all of them. Returns false on timeout (or for a nonexistent vector).
    pub(crate) fn wait(&self, v: u16, timeout: Duration) -> bool {
        let v = v as usize;
        if v >= self.counts.len() {
            return false;
        }
        let deadline = Instant::now() + timeout;
        let mut consumed = lock(&self.consumed);
        loop {
            let c = self.counts[v].load(Ordering::SeqCst);
            if c > consumed[v] {
                consumed[v] = c;
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            consumed = sync::wait_timeout(&self.delivered, consumed, deadline - now).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: u16) -> MsixState {
        MsixState::new(n, true, Arc::new(Counters::default())).unwrap()
    }

    #[test]
    fn refused_while_disabled_or_out_of_range() {
        let m = state(4);
        assert!(matches!(m.raise(0), Err(EpcError::IrqNotEnabled(_))));
        m.set_control(true, false);
        assert!(matches!(m.raise(4), Err(EpcError::IrqNotEnabled(_))));
    }

    #[test]
    fn masked_vectors_pend_and_deliver_on_unmask() {
        let m = state(4);
        m.set_control(true, false);
        // Power-on state: masked.
        assert!(m.masked(2));
        assert_eq!(m.raise(2).unwrap(), Delivery::Pended);
        assert!(m.pending(2));
        let mut pba = [0u8; 8];
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 0b100);
        assert_eq!(m.count(2), 0);
        // Unmask vector 2 via its vector-control dword.
        assert!(m.table_write(2 * 16 + 12, &0u32.to_le_bytes()));
        assert!(!m.pending(2));
        assert_eq!(m.count(2), 1);
        assert!(m.wait(2, Duration::ZERO));
        assert!(!m.wait(2, Duration::from_millis(1)));
        assert_eq!(m.eventfd(2).unwrap().read().unwrap(), 1);

        // Function mask pends too.
        m.set_control(true, true);
        assert_eq!(m.raise(2).unwrap(), Delivery::Pended);
        m.set_control(true, false);
        assert_eq!(m.count(2), 2);
    }

    #[test]
    fn wait_wakes_on_delivery_from_another_thread() {
        let m = Arc::new(state(2));
        m.set_control(true, false);
        m.program_all_unmasked();
        let m2 = m.clone();
        let t = std::thread::spawn(move || m2.wait(1, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(10));
        m.raise(1).unwrap();
        assert!(t.join().unwrap());
    }
}
