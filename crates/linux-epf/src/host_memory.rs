//! Host memory through the endpoint controller: small accesses through a few cached outbound
//! windows (mapped into the process, so a load is one PCIe read), bulk through the
//! controller's DMA engine (one ioctl moves up to 16 MiB), chosen by size. Without a DMA
//! engine everything goes through the windows.
//!
//! The endpoint cannot know which host addresses are backed: an access the kernel refuses
//! (no window, a DMA error) fails with [`HostMemError`], which the virtqueue engine turns into
//! DEVICE_NEEDS_RESET. Accesses are split at window boundaries; windows are replaced least
//! recently used first.

use crate::device::EpfDevice;
use epf_epc::counters::Line;
use epf_epc::sync;
use epf_epc::{HostMemError, HostMemory, SharedMemory};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Counters of the two paths.
#[derive(Debug, Default)]
pub struct HostMemStats {
    pub window_maps: AtomicU64,
    pub window_unmaps: AtomicU64,
    pub window_hits: AtomicU64,
    pub window_misses: AtomicU64,
    pub window_bytes: AtomicU64,
    pub dma_transfers: AtomicU64,
    pub dma_bytes: AtomicU64,
    pub dma_errors: AtomicU64,
    pub window_errors: AtomicU64,
}

impl HostMemStats {
    /// `name value` lines.
    /// Adds the counters as fields of `line`.
    pub fn fields(&self, line: &mut Line<'_>) {
        for (n, v) in [
            ("window_maps", &self.window_maps),
            ("window_unmaps", &self.window_unmaps),
            ("window_hits", &self.window_hits),
            ("window_misses", &self.window_misses),
            ("window_bytes", &self.window_bytes),
            ("window_errors", &self.window_errors),
            ("dma_transfers", &self.dma_transfers),
            ("dma_bytes", &self.dma_bytes),
            ("dma_errors", &self.dma_errors),
        ] {
            line.field(n, v.load(Ordering::Relaxed));
        }
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// One mapped window: host `[base, base + len)` at `mem[off..]`.
struct Window {
    id: u32,
    base: u64,
    len: u64,
    off: u64,
    mem: SharedMemory,
    last_use: u64,
}

struct Windows {
    open: Vec<Window>,
    clock: u64,
}

/// How host memory is reached.
#[derive(Debug, Clone, Copy)]
pub struct AccessPolicy {
    /// Windows kept mapped at once.
    pub windows: usize,
    /// Bytes each window covers (a power of two; accesses are aligned to it).
    pub window_size: u64,
    /// Accesses of at least this many bytes go through DMA (when there is an engine).
    pub dma_threshold: usize,
    pub dma: bool,
}

/// [`HostMemory`] over the pci_epf_user device.
pub struct EpfHostMemory {
    dev: Arc<EpfDevice>,
    policy: AccessPolicy,
    windows: Mutex<Windows>,
    pub stats: HostMemStats,
}

impl EpfHostMemory {
    pub fn new(dev: Arc<EpfDevice>, policy: AccessPolicy) -> EpfHostMemory {
        EpfHostMemory {
            dev,
            policy,
            windows: Mutex::new(Windows {
                open: Vec::new(),
                clock: 0,
            }),
            stats: HostMemStats::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Windows> {
        sync::lock(&self.windows)
    }

    /// Unmaps every window (the host went away: its addresses mean nothing now).
    pub fn unmap_all(&self) {
        let mut w = self.lock();
        for win in w.open.drain(..) {
            drop(win.mem);
            if self.dev.unmap_window(win.id).is_ok() {
                bump(&self.stats.window_unmaps, 1);
            }
        }
    }

    /// The window holding `addr`, mapping one (and evicting the oldest) if needed; returns
    /// its index and how many bytes from `addr` it covers.
    fn window_for(&self, w: &mut Windows, addr: u64) -> Result<(usize, u64), HostMemError> {
        w.clock += 1;
        let now = w.clock;
        if let Some(i) = w
            .open
            .iter()
            .position(|x| addr >= x.base && addr - x.base < x.len)
        {
            w.open[i].last_use = now;
            bump(&self.stats.window_hits, 1);
            let x = &w.open[i];
            return Ok((i, x.base + x.len - addr));
        }
        bump(&self.stats.window_misses, 1);
        if w.open.len() >= self.policy.windows.max(1) {
            let oldest = (0..w.open.len())
                .min_by_key(|&i| w.open[i].last_use)
                .unwrap_or(0);
            let old = w.open.swap_remove(oldest);
            let id = old.id;
            drop(old.mem);
            let _ = self.dev.unmap_window(id);
            bump(&self.stats.window_unmaps, 1);
        }
        let size = self.policy.window_size;
        let base = addr & !(size - 1);
        let m = self.dev.map_window(base, size).map_err(|e| {
            bump(&self.stats.window_errors, 1);
            log::debug!("epf: no window for {addr:#x}: {e}");
            HostMemError::NoWindow { addr }
        })?;
        if m.size == 0 || m.mmap_size == 0 {
            let _ = self.dev.unmap_window(m.id);
            return Err(HostMemError::NoWindow { addr });
        }
        let mem = match usize::try_from(m.mmap_size)
            .map_err(std::io::Error::other)
            .and_then(|len| self.dev.map(m.mmap_offset, len))
        {
            Ok(mem) => mem,
            Err(e) => {
                let _ = self.dev.unmap_window(m.id);
                bump(&self.stats.window_errors, 1);
                log::warn!("epf: cannot mmap window for {base:#x}: {e}");
                return Err(HostMemError::NoWindow { addr });
            }
        };
        bump(&self.stats.window_maps, 1);
        let len = m
            .size
            .min(m.mmap_size.saturating_sub(u64::from(m.offset_in_map)));
        w.open.push(Window {
            id: m.id,
            base,
            len,
            off: u64::from(m.offset_in_map),
            mem,
            last_use: now,
        });
        if addr - base >= len {
            return Err(HostMemError::NoWindow { addr });
        }
        Ok((w.open.len() - 1, base + len - addr))
    }

    /// Runs `f(window memory, offset, range of the buffer)` for each window piece of
    /// `[addr, addr+len)`.
    fn each_piece(
        &self,
        addr: u64,
        len: usize,
        mut f: impl FnMut(&SharedMemory, u64, std::ops::Range<usize>) -> Result<(), HostMemError>,
    ) -> Result<(), HostMemError> {
        let end = addr.checked_add(len as u64).ok_or(HostMemError::Overflow {
            addr,
            len: len as u64,
        })?;
        let mut w = self.lock();
        let mut cur = addr;
        while cur < end {
            let (i, avail) = self.window_for(&mut w, cur)?;
            let n = avail.min(end - cur);
            let x = &w.open[i];
            let pos = (cur - addr) as usize;
            f(&x.mem, x.off + (cur - x.base), pos..pos + n as usize)?;
            cur += n;
        }
        bump(&self.stats.window_bytes, len as u64);
        Ok(())
    }

    fn use_dma(&self, len: usize) -> bool {
        self.policy.dma && len >= self.policy.dma_threshold
    }

    fn dma(&self, addr: u64, buf: &mut [u8], to_host: bool) -> Result<(), HostMemError> {
        addr.checked_add(buf.len() as u64)
            .ok_or(HostMemError::Overflow {
                addr,
                len: buf.len() as u64,
            })?;
        for (i, chunk) in buf.chunks_mut(crate::uapi::MAX_DMA).enumerate() {
            let a = addr + (i * crate::uapi::MAX_DMA) as u64;
            if let Err(e) = self.dev.dma(chunk, a, to_host) {
                bump(&self.stats.dma_errors, 1);
                log::warn!("epf: DMA of {} bytes at {a:#x} failed: {e}", chunk.len());
                return Err(HostMemError::OutOfRange {
                    addr: a,
                    len: chunk.len() as u64,
                });
            }
            bump(&self.stats.dma_transfers, 1);
            bump(&self.stats.dma_bytes, chunk.len() as u64);
        }
        Ok(())
    }
}

impl HostMemory for EpfHostMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
        if self.use_dma(buf.len()) {
            return self.dma(addr, buf, false);
        }
        self.each_piece(addr, buf.len(), |m, off, r| m.read(off, &mut buf[r]))
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), HostMemError> {
        if self.use_dma(data.len()) {
            // The ioctl takes a mutable buffer for both directions.
            let mut copy = data.to_vec();
            return self.dma(addr, &mut copy, true);
        }
        self.each_piece(addr, data.len(), |m, off, r| m.write(off, &data[r]))
    }

    fn check_range(&self, addr: u64, len: u64) -> Result<(), HostMemError> {
        // Which host addresses are backed is the host's business; only wrapping is ours.
        addr.checked_add(len)
            .map(|_| ())
            .ok_or(HostMemError::Overflow { addr, len })
    }

    fn read_u16(&self, addr: u64) -> Result<u16, HostMemError> {
        if addr % 2 != 0 {
            let mut b = [0; 2];
            self.read(addr, &mut b)?;
            return Ok(u16::from_le_bytes(b));
        }
        let mut v = 0;
        self.each_piece(addr, 2, |m, off, _| {
            v = m.load_u16(off)?;
            Ok(())
        })?;
        Ok(v)
    }

    fn write_u16(&self, addr: u64, v: u16) -> Result<(), HostMemError> {
        if addr % 2 != 0 {
            return self.write(addr, &v.to_le_bytes());
        }
        self.each_piece(addr, 2, |m, off, _| m.store_u16(off, v))
    }
}
