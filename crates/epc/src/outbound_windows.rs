//! Outbound address-translation windows: host memory reached through at most `count` windows
//! of `size` bytes (aligned to `size`) at a time, like the outbound ATU of a real endpoint
//! controller (Linux: `pci_epc_mem_alloc_addr` + `pci_epc_map_addr`).
//!
//! [`OutboundWindows`] wraps any [`HostMemory`]: each access is split at window boundaries,
//! each piece goes through a window mapped on demand, and when all windows are in use the
//! least recently used one is remapped. Mapping is what costs on hardware, so the cache and
//! its counters (maps, unmaps, hits, misses) are the point; the data path is the inner memory.
//! [`WindowLimited`] applies it to a whole controller.

use crate::counters::{CounterSource, Counters};
use crate::sync;
use crate::{
    EndpointController, EpcError, EpcFeatures, FunctionHandler, FunctionSpec, HostAccess,
    HostMemError, HostMemory, Irq, SharedMemory,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Counters of window activity.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WindowStats {
    /// Windows programmed.
    pub maps: u64,
    /// Windows torn down to make room.
    pub unmaps: u64,
    /// Accesses (pieces) served by an already mapped window.
    pub hits: u64,
    /// Accesses (pieces) that needed a window to be mapped.
    pub misses: u64,
}

#[derive(Debug)]
struct Window {
    base: u64,
    last_use: u64,
}

#[derive(Debug, Default)]
struct State {
    windows: Vec<Window>,
    clock: u64,
}

/// Host memory behind a bounded set of outbound windows.
pub struct OutboundWindows {
    inner: Arc<dyn HostMemory>,
    count: usize,
    size: u64,
    state: Mutex<State>,
    maps: AtomicU64,
    unmaps: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl OutboundWindows {
    /// `count` windows of `size` bytes (a power of two, at least 4 KiB) over `inner`.
    pub fn new(inner: Arc<dyn HostMemory>, count: usize, size: u64) -> Result<Self, EpcError> {
        if count == 0 || !size.is_power_of_two() || size < 4096 {
            return Err(EpcError::Invalid(format!(
                "{count} outbound windows of {size} bytes: need at least one window of a power-of-two size >= 4096"
            )));
        }
        Ok(OutboundWindows {
            inner,
            count,
            size,
            state: Mutex::new(State::default()),
            maps: AtomicU64::new(0),
            unmaps: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Current counters.
    pub fn stats(&self) -> WindowStats {
        WindowStats {
            maps: self.maps.load(Ordering::Relaxed),
            unmaps: self.unmaps.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Windows currently mapped.
    pub fn mapped(&self) -> usize {
        self.lock().windows.len()
    }

    /// Tears every window down (the host went away).
    pub fn unmap_all(&self) {
        let mut st = self.lock();
        self.unmaps
            .fetch_add(st.windows.len() as u64, Ordering::Relaxed);
        st.windows.clear();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        sync::lock(&self.state)
    }

    /// Makes sure the window holding `addr` is mapped.
    fn window_for(&self, st: &mut State, addr: u64) {
        let base = addr & !(self.size - 1);
        st.clock += 1;
        let now = st.clock;
        if let Some(w) = st.windows.iter_mut().find(|w| w.base == base) {
            w.last_use = now;
            self.hits.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        if st.windows.len() == self.count {
            // Evict the least recently used window.
            if let Some((i, _)) = st
                .windows
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| w.last_use)
            {
                st.windows.swap_remove(i);
                self.unmaps.fetch_add(1, Ordering::Relaxed);
            }
        }
        st.windows.push(Window {
            base,
            last_use: now,
        });
        self.maps.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `f(addr, range)` for each window-sized piece of `[addr, addr+len)` after mapping
    /// its window. The range is checked first, so nothing is mapped for a bad access.
    fn each_piece(
        &self,
        addr: u64,
        len: usize,
        mut f: impl FnMut(u64, std::ops::Range<usize>) -> Result<(), HostMemError>,
    ) -> Result<(), HostMemError> {
        self.inner.check_range(addr, len as u64)?;
        let mut st = self.lock();
        let mut done = 0usize;
        while done < len {
            let a = addr + done as u64;
            let room = (self.size - (a & (self.size - 1))) as usize;
            let n = room.min(len - done);
            self.window_for(&mut st, a);
            f(a, done..done + n)?;
            done += n;
        }
        Ok(())
    }
}

impl HostMemory for OutboundWindows {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
        let len = buf.len();
        self.each_piece(addr, len, |a, r| self.inner.read(a, &mut buf[r]))
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), HostMemError> {
        self.each_piece(addr, data.len(), |a, r| self.inner.write(a, &data[r]))
    }

    fn check_range(&self, addr: u64, len: u64) -> Result<(), HostMemError> {
        self.inner.check_range(addr, len)
    }

    fn read_u16(&self, addr: u64) -> Result<u16, HostMemError> {
        if addr % 2 != 0 {
            // May straddle two windows: byte-wise, each piece through its own window.
            let mut b = [0; 2];
            self.read(addr, &mut b)?;
            return Ok(u16::from_le_bytes(b));
        }
        let mut v = 0;
        // An aligned u16 never crosses a window (windows are >= 4 KiB and aligned).
        self.each_piece(addr, 2, |a, _| {
            v = self.inner.read_u16(a)?;
            Ok(())
        })?;
        Ok(v)
    }

    fn write_u16(&self, addr: u64, v: u16) -> Result<(), HostMemError> {
        if addr % 2 != 0 {
            return self.write(addr, &v.to_le_bytes());
        }
        self.each_piece(addr, 2, |a, _| self.inner.write_u16(a, v))
    }
}

/// A controller whose host memory is reached only through outbound windows.
pub struct WindowLimited {
    inner: Arc<dyn EndpointController>,
    windows: Arc<OutboundWindows>,
}

impl WindowLimited {
    /// Wraps `inner`, limiting host access to `count` windows of `size` bytes.
    pub fn new(
        inner: Arc<dyn EndpointController>,
        count: usize,
        size: u64,
    ) -> Result<Self, EpcError> {
        let windows = Arc::new(OutboundWindows::new(inner.host_memory(), count, size)?);
        Ok(WindowLimited { inner, windows })
    }

    /// The window set (for its counters).
    pub fn windows(&self) -> &Arc<OutboundWindows> {
        &self.windows
    }
}

/// Passes callbacks through, unmapping all windows when the host goes away.
struct ResetWindows {
    inner: Arc<dyn FunctionHandler>,
    windows: Arc<OutboundWindows>,
}

impl FunctionHandler for ResetWindows {
    fn bar_read(&self, bar: u8, offset: u64, data: &mut [u8]) {
        self.inner.bar_read(bar, offset, data)
    }
    fn bar_write(&self, bar: u8, offset: u64, data: &[u8]) {
        self.inner.bar_write(bar, offset, data)
    }
    fn config_read(&self, offset: usize, data: &mut [u8]) {
        self.inner.config_read(offset, data)
    }
    fn config_write(&self, offset: usize, data: &[u8]) {
        self.inner.config_write(offset, data)
    }
    fn link_reset(&self) {
        self.windows.unmap_all();
        self.inner.link_reset()
    }
    fn irqs_changed(&self) {
        self.inner.irqs_changed()
    }
}

impl EndpointController for WindowLimited {
    fn features(&self) -> EpcFeatures {
        let mut f = self.inner.features();
        f.host_access = HostAccess::Windows {
            count: self.windows.count,
            size: self.windows.size,
        };
        f
    }

    fn start(&self, spec: FunctionSpec, handler: Arc<dyn FunctionHandler>) -> Result<(), EpcError> {
        self.inner.start(
            spec,
            Arc::new(ResetWindows {
                inner: handler,
                windows: self.windows.clone(),
            }),
        )
    }

    fn bar_memory(&self, bar: u8) -> Option<Arc<SharedMemory>> {
        self.inner.bar_memory(bar)
    }

    fn host_memory(&self) -> Arc<dyn HostMemory> {
        self.windows.clone()
    }

    fn raise_irq(&self, irq: Irq) -> Result<(), EpcError> {
        self.inner.raise_irq(irq)
    }

    fn msix_enabled(&self) -> bool {
        self.inner.msix_enabled()
    }

    fn msix_enabled_now(&self) -> bool {
        self.inner.msix_enabled_now()
    }
}

/// `windows: mapped=.. maps=.. unmaps=.. hits=.. misses=..`.
impl CounterSource for OutboundWindows {
    fn report(&self, out: &mut Counters) {
        let s = self.stats();
        out.line("windows")
            .field("mapped", self.mapped())
            .field("maps", s.maps)
            .field("unmaps", s.unmaps)
            .field("hits", s.hits)
            .field("misses", s.misses);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flat memory at 0x10000 of 1 MiB that records every access.
    struct Flat {
        mem: Mutex<Vec<u8>>,
        accesses: Mutex<Vec<(u64, usize)>>,
    }

    impl Flat {
        fn new() -> Arc<Self> {
            Arc::new(Flat {
                mem: Mutex::new(vec![0; 1 << 20]),
                accesses: Mutex::new(Vec::new()),
            })
        }
        fn off(&self, addr: u64, len: usize) -> Result<usize, HostMemError> {
            self.check_range(addr, len as u64)?;
            self.accesses.lock().unwrap().push((addr, len));
            Ok((addr - 0x10000) as usize)
        }
    }

    impl HostMemory for Flat {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
            let o = self.off(addr, buf.len())?;
            buf.copy_from_slice(&self.mem.lock().unwrap()[o..o + buf.len()]);
            Ok(())
        }
        fn write(&self, addr: u64, data: &[u8]) -> Result<(), HostMemError> {
            let o = self.off(addr, data.len())?;
            self.mem.lock().unwrap()[o..o + data.len()].copy_from_slice(data);
            Ok(())
        }
        fn check_range(&self, addr: u64, len: u64) -> Result<(), HostMemError> {
            let end = addr
                .checked_add(len)
                .ok_or(HostMemError::Overflow { addr, len })?;
            if addr < 0x10000 || end > 0x10000 + (1 << 20) {
                return Err(HostMemError::OutOfRange { addr, len });
            }
            Ok(())
        }
        fn read_u16(&self, addr: u64) -> Result<u16, HostMemError> {
            let mut b = [0; 2];
            self.read(addr, &mut b)?;
            Ok(u16::from_le_bytes(b))
        }
        fn write_u16(&self, addr: u64, v: u16) -> Result<(), HostMemError> {
            self.write(addr, &v.to_le_bytes())
        }
    }

    #[test]
    fn accesses_are_split_at_window_boundaries_and_cached_lru() {
        let flat = Flat::new();
        let w = OutboundWindows::new(flat.clone(), 2, 4096).unwrap();
        let data: Vec<u8> = (0..10000u32).map(|i| i as u8).collect();
        // 0x10ff0 + 10000 bytes touches windows 0x10000, 0x11000, 0x12000, 0x13000.
        w.write(0x10ff0, &data).unwrap();
        let pieces = flat.accesses.lock().unwrap().clone();
        assert_eq!(
            pieces,
            vec![
                (0x10ff0, 16),
                (0x11000, 4096),
                (0x12000, 4096),
                (0x13000, 1792)
            ]
        );
        let s = w.stats();
        assert_eq!((s.maps, s.unmaps, s.misses, s.hits), (4, 2, 4, 0));
        assert_eq!(w.mapped(), 2);
        let mut back = vec![0u8; 10000];
        w.read(0x10ff0, &mut back).unwrap();
        assert_eq!(back, data);
        // Window 0x13000 is the most recently used: touching it again is a hit.
        w.read_u16(0x13002).unwrap();
        let before = w.stats();
        w.read_u16(0x13004).unwrap();
        assert_eq!(w.stats().hits, before.hits + 1);
        assert_eq!(w.stats().misses, before.misses);
    }

    #[test]
    fn an_odd_u16_across_a_window_boundary_reads_both_windows() {
        let flat = Flat::new();
        let w = OutboundWindows::new(flat.clone(), 2, 4096).unwrap();
        w.write(0x10fff, &[0x34, 0x12]).unwrap();
        assert_eq!(w.read_u16(0x10fff).unwrap(), 0x1234);
        w.write_u16(0x11fff, 0xbeef).unwrap();
        let mut b = [0; 2];
        flat.read(0x11fff, &mut b).unwrap();
        assert_eq!(u16::from_le_bytes(b), 0xbeef);
        assert_eq!(w.read_u16(0x11fff).unwrap(), 0xbeef);
    }

    #[test]
    fn bad_accesses_map_nothing() {
        let flat = Flat::new();
        let w = OutboundWindows::new(flat.clone(), 4, 65536).unwrap();
        assert!(w.read(0x0, &mut [0; 4]).is_err());
        assert!(w.write(u64::MAX - 1, &[0; 4]).is_err());
        assert_eq!(w.stats(), WindowStats::default());
        assert!(flat.accesses.lock().unwrap().is_empty());
        assert!(OutboundWindows::new(flat.clone(), 0, 4096).is_err());
        assert!(OutboundWindows::new(flat, 1, 5000).is_err());
    }
}
