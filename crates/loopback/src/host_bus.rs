//! [`HostBus`]: the host's view of the loopback link. It performs what a root complex and
//! an OS's PCI core would: configuration reads/writes (trapped ranges forwarded to the
//! function), BAR reads/writes dispatched by the kind of area they hit, MSI-X and INTx as
//! seen by the host, function-level reset, and access to host RAM plus a DMA allocator.
//!
//! Dispatch of a BAR access (split at area boundaries if it spans several):
//! * [`Trapped`](AreaKind::Trapped): synchronous `FunctionHandler::bar_read`/`bar_write`,
//!   with the offset relative to the BAR;
//! * [`Doorbell`](AreaKind::Doorbell): writes call `FunctionHandler::bar_write`, reads
//!   return zeros;
//! * [`Memory`](AreaKind::Memory): the BAR's shared memory, no callback (aligned 2- and
//!   4-byte accesses are single-copy atomic);
//! * MSI-X table / PBA: emulated here;
//! * holes inside a BAR read as zero, writes are dropped; accesses beyond a BAR (or to a
//!   missing BAR, or before the function is started) read as all-ones, like an
//!   unsupported request.

use crate::controller::{Function, Shared, MSIX_CTRL_ENABLE, PCI_COMMAND_INTX_DISABLE};
use crate::stats::{Counters, LoopbackStats};
use crate::LoopbackError;
use epf_epc::sync::lock;
use epf_epc::{AreaKind, BarArea, HostMemError, CONFIG_SPACE_SIZE};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use vmm_sys_util::eventfd::EventFd;

/// Handle to the host side of a [`LoopbackController`](crate::LoopbackController).
#[derive(Clone)]
pub struct HostBus {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HostBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBus").finish_non_exhaustive()
    }
}

/// Where one piece of a BAR access lands.
enum Target {
    Area(BarArea),
    Hole,
    Unclaimed,
}

/// Splits `[off, off+len)` of a BAR into pieces by target. Ranges are relative to the access.
fn segments(f: Option<&Function>, bar: u8, off: u64, len: usize) -> Vec<(Range<usize>, Target)> {
    let spec = f.and_then(|f| f.spec.bars.get(bar as usize)?.as_ref());
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < len {
        let rest = len - pos;
        let o = match off.checked_add(pos as u64) {
            Some(o) if spec.is_some_and(|s| o < s.size) => o,
            _ => {
                out.push((pos..len, Target::Unclaimed));
                break;
            }
        };
        let spec = spec.expect("checked above");
        let to_bar_end = spec.size - o;
        let (n, target) = match spec.area_at(o) {
            Some(a) => (a.offset + a.size - o, Target::Area(*a)),
            None => {
                let next = spec
                    .areas
                    .iter()
                    .filter(|a| a.offset > o)
                    .map(|a| a.offset)
                    .min()
                    .unwrap_or(spec.size);
                (next - o, Target::Hole)
            }
        };
        let n = n.min(to_bar_end).min(rest as u64) as usize;
        out.push((pos..pos + n, target));
        pos += n;
    }
    out
}

impl HostBus {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        HostBus { shared }
    }

    fn function(&self) -> Option<&Function> {
        self.shared.function.get()
    }

    fn counters(&self) -> &Counters {
        &self.shared.stats
    }

    /// Whether a function is present (the endpoint has started).
    pub fn is_present(&self) -> bool {
        self.function().is_some()
    }

    /// A snapshot of the controller's activity counters.
    pub fn stats(&self) -> LoopbackStats {
        self.shared.stats.snapshot()
    }

    // ---- Configuration space -------------------------------------------------------------

    /// Runs of `[off, off+len)` as (range relative to the access, trapped?), clipped to the
    /// config space; bytes beyond it are not included.
    fn config_runs(f: &Function, off: usize, len: usize) -> Vec<(Range<usize>, bool)> {
        let cs = lock(&f.config);
        let mut runs: Vec<(Range<usize>, bool)> = Vec::new();
        for i in 0..len {
            let Some(o) = off.checked_add(i).filter(|&o| o < CONFIG_SPACE_SIZE) else {
                break;
            };
            let t = cs.is_trapped(o, 1);
            match runs.last_mut() {
                Some((r, lt)) if *lt == t => r.end = i + 1,
                _ => runs.push((i..i + 1, t)),
            }
        }
        runs
    }

    /// A configuration read. Without a function, or beyond the 4 KiB space, bytes read
    /// as 0xff.
    pub fn config_read(&self, off: usize, data: &mut [u8]) {
        Counters::inc(&self.counters().config_reads);
        data.fill(0xff);
        let Some(f) = self.function() else { return };
        for (r, trapped) in Self::config_runs(f, off, data.len()) {
            let o = off + r.start;
            if trapped {
                Counters::inc(&self.counters().trapped_config_reads);
                data[r.clone()].fill(0);
                f.handler.config_read(o, &mut data[r]);
            } else {
                lock(&f.config).read(o, &mut data[r]);
            }
        }
    }

    /// A configuration write (through the write mask; trapped ranges go to the function).
    /// Changes to MSI-X enable/function-mask or INTx-disable call `irqs_changed`.
    pub fn config_write(&self, off: usize, data: &[u8]) {
        Counters::inc(&self.counters().config_writes);
        let Some(f) = self.function() else { return };
        let mut irqs_changed = false;
        for (r, trapped) in Self::config_runs(f, off, data.len()) {
            let o = off + r.start;
            if trapped {
                Counters::inc(&self.counters().trapped_config_writes);
                f.handler.config_write(o, &data[r]);
            } else {
                let mut cs = lock(&f.config);
                let before = f.irq_control(&cs);
                cs.write(o, &data[r]);
                let after = f.irq_control(&cs);
                f.apply_msix_control(after.0);
                irqs_changed |=
                    before.0 != after.0 || (before.1 ^ after.1) & PCI_COMMAND_INTX_DISABLE != 0;
            }
        }
        if irqs_changed {
            f.handler.irqs_changed();
        }
    }

    /// Reads a config byte.
    pub fn config_read8(&self, off: usize) -> u8 {
        let mut b = [0; 1];
        self.config_read(off, &mut b);
        b[0]
    }

    /// Reads a little-endian config word.
    pub fn config_read16(&self, off: usize) -> u16 {
        let mut b = [0; 2];
        self.config_read(off, &mut b);
        u16::from_le_bytes(b)
    }

    /// Reads a little-endian config dword.
    pub fn config_read32(&self, off: usize) -> u32 {
        let mut b = [0; 4];
        self.config_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    /// Writes a config byte.
    pub fn config_write8(&self, off: usize, v: u8) {
        self.config_write(off, &[v]);
    }

    /// Writes a little-endian config word.
    pub fn config_write16(&self, off: usize, v: u16) {
        self.config_write(off, &v.to_le_bytes());
    }

    /// Writes a little-endian config dword.
    pub fn config_write32(&self, off: usize, v: u32) {
        self.config_write(off, &v.to_le_bytes());
    }

    // ---- BARs ------------------------------------------------------------------------------

    /// Size of BAR `bar` as the host would find by sizing it (`None` if not implemented).
    pub fn bar_size(&self, bar: u8) -> Option<u64> {
        Some(self.function()?.spec.bars.get(bar as usize)?.as_ref()?.size)
    }

    /// A host read of BAR `bar` at `off`.
    pub fn bar_read(&self, bar: u8, off: u64, data: &mut [u8]) {
        let f = self.function();
        for (r, target) in segments(f, bar, off, data.len()) {
            let o = off + r.start as u64;
            let buf = &mut data[r];
            let Target::Area(area) = target else {
                Counters::inc(&self.counters().unclaimed_bar_accesses);
                buf.fill(if matches!(target, Target::Hole) {
                    0
                } else {
                    0xff
                });
                continue;
            };
            let f = f.expect("an area implies a function");
            buf.fill(0);
            match area.kind {
                AreaKind::Trapped => {
                    Counters::inc(&self.counters().trapped_bar_reads);
                    f.handler.bar_read(bar, o, buf);
                }
                AreaKind::Doorbell => Counters::inc(&self.counters().doorbell_reads),
                AreaKind::Memory => {
                    Counters::inc(&self.counters().memory_bar_reads);
                    if let Some(mem) = &f.bar_mem[bar as usize] {
                        let res = match buf.len() {
                            2 if o % 2 == 0 => mem
                                .load_u16(o)
                                .map(|v| buf.copy_from_slice(&v.to_le_bytes())),
                            4 if o % 4 == 0 => mem
                                .load_u32(o)
                                .map(|v| buf.copy_from_slice(&v.to_le_bytes())),
                            _ => mem.read(o, buf),
                        };
                        if let Err(e) = res {
                            log::error!("loopback: BAR {bar} memory read: {e}");
                        }
                    }
                }
                AreaKind::MsixTable | AreaKind::MsixPba => {
                    Counters::inc(&self.counters().msix_table_accesses);
                    self.msix_area_read(f, bar, o, area.kind, buf);
                }
            }
        }
    }

    /// A host write to BAR `bar` at `off`.
    pub fn bar_write(&self, bar: u8, off: u64, data: &[u8]) {
        let f = self.function();
        for (r, target) in segments(f, bar, off, data.len()) {
            let o = off + r.start as u64;
            let buf = &data[r];
            let Target::Area(area) = target else {
                Counters::inc(&self.counters().unclaimed_bar_accesses);
                continue;
            };
            let f = f.expect("an area implies a function");
            match area.kind {
                AreaKind::Trapped => {
                    Counters::inc(&self.counters().trapped_bar_writes);
                    f.handler.bar_write(bar, o, buf);
                }
                AreaKind::Doorbell => {
                    Counters::inc(&self.counters().doorbell_writes);
                    f.handler.bar_write(bar, o, buf);
                }
                AreaKind::Memory => {
                    Counters::inc(&self.counters().memory_bar_writes);
                    if let Some(mem) = &f.bar_mem[bar as usize] {
                        let res = match buf.len() {
                            2 if o % 2 == 0 => {
                                mem.store_u16(o, u16::from_le_bytes([buf[0], buf[1]]))
                            }
                            4 if o % 4 == 0 => mem
                                .store_u32(o, u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]])),
                            _ => mem.write(o, buf),
                        };
                        if let Err(e) = res {
                            log::error!("loopback: BAR {bar} memory write: {e}");
                        }
                    }
                }
                AreaKind::MsixTable => {
                    Counters::inc(&self.counters().msix_table_accesses);
                    let changed = match (&f.msix, f.spec.msix) {
                        (Some(m), Some(spec)) if spec.table_bar == bar => o
                            .checked_sub(spec.table_offset)
                            .is_some_and(|t| m.table_write(t, buf)),
                        _ => false,
                    };
                    if changed {
                        f.handler.irqs_changed();
                    }
                }
                // The PBA is read-only.
                AreaKind::MsixPba => Counters::inc(&self.counters().msix_table_accesses),
            }
        }
    }

    fn msix_area_read(&self, f: &Function, bar: u8, o: u64, kind: AreaKind, buf: &mut [u8]) {
        let (Some(m), Some(spec)) = (&f.msix, f.spec.msix) else {
            return;
        };
        let (tbar, base) = if kind == AreaKind::MsixTable {
            (spec.table_bar, spec.table_offset)
        } else {
            (spec.pba_bar, spec.pba_offset)
        };
        if tbar != bar {
            return;
        }
        // Bytes before the table/PBA start (inside its area) read as zero.
        let skip = base.saturating_sub(o).min(buf.len() as u64) as usize;
        let start = (o + skip as u64) - base;
        if kind == AreaKind::MsixTable {
            m.table_read(start, &mut buf[skip..]);
        } else {
            m.pba_read(start, &mut buf[skip..]);
        }
    }

    /// Reads a byte from a BAR.
    pub fn bar_read8(&self, bar: u8, off: u64) -> u8 {
        let mut b = [0; 1];
        self.bar_read(bar, off, &mut b);
        b[0]
    }

    /// Reads a little-endian u16 from a BAR (one access).
    pub fn bar_read16(&self, bar: u8, off: u64) -> u16 {
        let mut b = [0; 2];
        self.bar_read(bar, off, &mut b);
        u16::from_le_bytes(b)
    }

    /// Reads a little-endian u32 from a BAR (one access).
    pub fn bar_read32(&self, bar: u8, off: u64) -> u32 {
        let mut b = [0; 4];
        self.bar_read(bar, off, &mut b);
        u32::from_le_bytes(b)
    }

    /// Reads a little-endian u64 from a BAR (one 8-byte access).
    pub fn bar_read64(&self, bar: u8, off: u64) -> u64 {
        let mut b = [0; 8];
        self.bar_read(bar, off, &mut b);
        u64::from_le_bytes(b)
    }

    /// Writes a byte to a BAR.
    pub fn bar_write8(&self, bar: u8, off: u64, v: u8) {
        self.bar_write(bar, off, &[v]);
    }

    /// Writes a little-endian u16 to a BAR (one access).
    pub fn bar_write16(&self, bar: u8, off: u64, v: u16) {
        self.bar_write(bar, off, &v.to_le_bytes());
    }

    /// Writes a little-endian u32 to a BAR (one access).
    pub fn bar_write32(&self, bar: u8, off: u64, v: u32) {
        self.bar_write(bar, off, &v.to_le_bytes());
    }

    /// Writes a little-endian u64 to a BAR (one 8-byte access).
    pub fn bar_write64(&self, bar: u8, off: u64, v: u64) {
        self.bar_write(bar, off, &v.to_le_bytes());
    }

    // ---- Interrupts -----------------------------------------------------------------------

    /// What an OS does to use MSI-X (`pci_alloc_irq_vectors` + `request_irq` on every
    /// vector): when enabling, program and unmask every table entry, then set the enable
    /// bit; when disabling, clear it. Calls `irqs_changed` if anything changed. Returns
    /// false (doing nothing) if the function has no MSI-X capability.
    pub fn enable_msix(&self, on: bool) -> bool {
        let Some(f) = self.function() else {
            return false;
        };
        let (Some(cap), Some(m)) = (f.msix_cap, &f.msix) else {
            return false;
        };
        let changed = {
            let mut cs = lock(&f.config);
            let (before, _) = f.irq_control(&cs);
            let unmasked = on && m.program_all_unmasked();
            let after = if on {
                before | MSIX_CTRL_ENABLE
            } else {
                before & !MSIX_CTRL_ENABLE
            };
            cs.write(cap + 3, &[(after >> 8) as u8]);
            let (after, _) = f.irq_control(&cs);
            f.apply_msix_control(after);
            unmasked || before != after
        };
        if changed {
            f.handler.irqs_changed();
        }
        true
    }

    /// Whether MSI-X is enabled.
    pub fn msix_enabled(&self) -> bool {
        self.function()
            .and_then(|f| f.msix.as_ref())
            .is_some_and(|m| m.enabled())
    }

    /// Number of MSI-X vectors (0 without MSI-X).
    pub fn msix_vectors(&self) -> u16 {
        self.function()
            .and_then(|f| f.msix.as_ref())
            .map_or(0, |m| m.vectors())
    }

    /// MSI-X messages delivered on vector `v` so far.
    pub fn msix_count(&self, v: u16) -> u64 {
        self.function()
            .and_then(|f| f.msix.as_ref())
            .map_or(0, |m| m.count(v))
    }

    /// Whether vector `v` is masked in the MSI-X table.
    pub fn msix_masked(&self, v: u16) -> bool {
        self.function()
            .and_then(|f| f.msix.as_ref())
            .is_none_or(|m| m.masked(v))
    }

    /// Whether vector `v`'s pending bit is set.
    pub fn msix_pending(&self, v: u16) -> bool {
        self.function()
            .and_then(|f| f.msix.as_ref())
            .is_some_and(|m| m.pending(v))
    }

    /// An eventfd signalled on every message delivered on vector `v` (if the controller
    /// was built with [`msix_eventfds`](crate::LoopbackOptions::msix_eventfds)).
    pub fn msix_eventfd(&self, v: u16) -> Option<EventFd> {
        self.function()?.msix.as_ref()?.eventfd(v)
    }

    /// Waits up to `timeout` for a message on vector `v` not yet consumed by an earlier
    /// `wait_msix`, consuming all such messages. Independent of the eventfd.
    pub fn wait_msix(&self, v: u16, timeout: Duration) -> bool {
        match self.function().and_then(|f| f.msix.as_ref()) {
            Some(m) => m.wait(v, timeout),
            None => false,
        }
    }

    /// The INTx line level the host sees: asserted by the function, not disabled by the
    /// command register's INTx-disable bit, and MSI-X off.
    pub fn intx_level(&self) -> bool {
        let Some(f) = self.function() else {
            return false;
        };
        let cmd = self.config_read16_quiet(f, crate::controller::PCI_COMMAND);
        f.intx_asserted.load(Ordering::SeqCst)
            && cmd & PCI_COMMAND_INTX_DISABLE == 0
            && !f.msix.as_ref().is_some_and(|m| m.enabled())
    }

    /// Whether the function asserts INTx, regardless of masking.
    pub fn intx_asserted(&self) -> bool {
        self.function()
            .is_some_and(|f| f.intx_asserted.load(Ordering::SeqCst))
    }

    fn config_read16_quiet(&self, f: &Function, off: usize) -> u16 {
        let mut b = [0; 2];
        lock(&f.config).read(off, &mut b);
        u16::from_le_bytes(b)
    }

    /// Function-level reset: config space back to its initial image (MSI-X off, command
    /// register cleared), MSI-X vectors masked and nothing pending, INTx deasserted, then
    /// `FunctionHandler::link_reset`. Host RAM and BAR memory are left as they are.
    pub fn function_reset(&self) {
        Counters::inc(&self.counters().function_resets);
        let Some(f) = self.function() else { return };
        {
            let mut cs = lock(&f.config);
            *cs = f.pristine.clone();
            if let Some(m) = &f.msix {
                m.reset();
            }
        }
        f.intx_asserted.store(false, Ordering::SeqCst);
        f.handler.link_reset();
    }

    // ---- Host RAM --------------------------------------------------------------------------

    /// Bus address of the host RAM arena.
    pub fn ram_base(&self) -> u64 {
        self.shared.ram.base()
    }

    /// Size of the host RAM arena.
    pub fn ram_size(&self) -> u64 {
        self.shared.ram.size()
    }

    /// Reads host RAM at bus address `addr`.
    pub fn ram_read(&self, addr: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
        self.shared.ram.host_read(addr, buf)
    }

    /// Writes host RAM at bus address `addr`.
    pub fn ram_write(&self, addr: u64, data: &[u8]) -> Result<(), HostMemError> {
        self.shared.ram.host_write(addr, data)
    }

    /// Reads a byte of host RAM.
    pub fn ram_read_u8(&self, addr: u64) -> Result<u8, HostMemError> {
        let mut b = [0; 1];
        self.ram_read(addr, &mut b)?;
        Ok(b[0])
    }

    /// Reads a little-endian u16 of host RAM (single-copy atomic when aligned).
    pub fn ram_read_u16(&self, addr: u64) -> Result<u16, HostMemError> {
        self.shared.ram.host_load_u16(addr)
    }

    /// Reads a little-endian u32 of host RAM (single-copy atomic when aligned).
    pub fn ram_read_u32(&self, addr: u64) -> Result<u32, HostMemError> {
        self.shared.ram.host_load_u32(addr)
    }

    /// Reads a little-endian u64 of host RAM.
    pub fn ram_read_u64(&self, addr: u64) -> Result<u64, HostMemError> {
        let mut b = [0; 8];
        self.ram_read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a byte of host RAM.
    pub fn ram_write_u8(&self, addr: u64, v: u8) -> Result<(), HostMemError> {
        self.ram_write(addr, &[v])
    }

    /// Writes a little-endian u16 of host RAM (single-copy atomic when aligned).
    pub fn ram_write_u16(&self, addr: u64, v: u16) -> Result<(), HostMemError> {
        self.shared.ram.host_store_u16(addr, v)
    }

    /// Writes a little-endian u32 of host RAM (single-copy atomic when aligned).
    pub fn ram_write_u32(&self, addr: u64, v: u32) -> Result<(), HostMemError> {
        self.shared.ram.host_store_u32(addr, v)
    }

    /// Writes a little-endian u64 of host RAM.
    pub fn ram_write_u64(&self, addr: u64, v: u64) -> Result<(), HostMemError> {
        self.ram_write(addr, &v.to_le_bytes())
    }

    /// Allocates `size` zeroed bytes of host RAM aligned to `align` (a power of two);
    /// returns the bus address.
    pub fn alloc(&self, size: u64, align: u64) -> Result<u64, LoopbackError> {
        let addr = lock(&self.shared.alloc).alloc(size, align)?;
        let len = usize::try_from(size).expect("allocation fits the arena");
        self.ram_write(addr, &vec![0; len])?;
        Ok(addr)
    }

    /// Forgets every allocation (the next `alloc` starts at the arena's base again).
    pub fn reset_alloc(&self) {
        lock(&self.shared.alloc).reset();
    }

    /// Bytes of host RAM allocated so far.
    pub fn allocated(&self) -> u64 {
        lock(&self.shared.alloc).used()
    }
}
