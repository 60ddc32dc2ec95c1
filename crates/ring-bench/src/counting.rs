//! [`Counting`]: a [`HostMemory`] wrapper counting the device's host-memory transactions
//! and bytes, separately for the ring areas (descriptors, driver and device areas) and for
//! buffers (payload), so a run can print what a PCIe link would carry per request.

use epf_epc::{HostMemError, HostMemory};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Transactions and bytes, by direction and area.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    pub ring_reads: u64,
    pub ring_read_bytes: u64,
    pub ring_writes: u64,
    pub ring_write_bytes: u64,
    pub data_reads: u64,
    pub data_read_bytes: u64,
    pub data_writes: u64,
    pub data_write_bytes: u64,
}

#[derive(Default)]
struct Counters {
    v: [AtomicU64; 8],
}

/// Counts every access to `inner`; addresses in `rings` (start, end) count as ring traffic.
pub struct Counting {
    inner: Arc<dyn HostMemory>,
    rings: (u64, u64),
    c: Counters,
}

impl Counting {
    pub fn new(inner: Arc<dyn HostMemory>, rings: (u64, u64)) -> Counting {
        Counting {
            inner,
            rings,
            c: Counters::default(),
        }
    }

    fn add(&self, addr: u64, len: usize, write: bool) {
        let ring = addr >= self.rings.0 && addr < self.rings.1;
        let i = usize::from(ring) * 4 + usize::from(write) * 2;
        self.c.v[i].fetch_add(1, Ordering::Relaxed);
        self.c.v[i + 1].fetch_add(len as u64, Ordering::Relaxed);
    }

    pub fn tally(&self) -> Tally {
        let g = |i: usize| self.c.v[i].load(Ordering::Relaxed);
        Tally {
            data_reads: g(0),
            data_read_bytes: g(1),
            data_writes: g(2),
            data_write_bytes: g(3),
            ring_reads: g(4),
            ring_read_bytes: g(5),
            ring_writes: g(6),
            ring_write_bytes: g(7),
        }
    }
}

impl HostMemory for Counting {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
        self.add(addr, buf.len(), false);
        self.inner.read(addr, buf)
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), HostMemError> {
        self.add(addr, data.len(), true);
        self.inner.write(addr, data)
    }

    fn check_range(&self, addr: u64, len: u64) -> Result<(), HostMemError> {
        self.inner.check_range(addr, len)
    }

    fn read_u16(&self, addr: u64) -> Result<u16, HostMemError> {
        self.add(addr, 2, false);
        self.inner.read_u16(addr)
    }

    fn read_u32(&self, addr: u64) -> Result<u32, HostMemError> {
        self.add(addr, 4, false);
        self.inner.read_u32(addr)
    }

    fn write_u16(&self, addr: u64, v: u16) -> Result<(), HostMemError> {
        self.add(addr, 2, true);
        self.inner.write_u16(addr, v)
    }

    fn write_u32(&self, addr: u64, v: u32) -> Result<(), HostMemError> {
        self.add(addr, 4, true);
        self.inner.write_u32(addr, v)
    }
}
