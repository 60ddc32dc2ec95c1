//! The host's RAM as modelled by the loopback controller: one memfd-backed arena at a
//! nonzero bus address. The endpoint reaches it through [`HostMemory`] (bounds checked, with
//! every out-of-range attempt counted so tests can assert a device never tried one); the
//! host side (the driver in [`host_driver`](crate::host_driver)) uses the same bytes
//! through [`HostBus`](crate::HostBus) without being counted.

use epf_epc::{
    region_offset, HostMemError, HostMemory, SharedMemory, IN_PLACE_MAX_RANGES, PAGE_SIZE,
};
use std::sync::atomic::{AtomicU64, Ordering};

/// Host RAM arena `[base, base + size)`, shared between the host model and the endpoint.
pub struct ArenaMemory {
    mem: SharedMemory,
    base: u64,
    size: u64,
    counts: EndpointCounts,
}

/// What the endpoint's accesses are counted in. On a cache line of its own: the endpoint's
/// threads bump these on every access while the host side (another thread in a benchmark)
/// reads `mem`, `base` and `size` on every one of its own; sharing a line would move it
/// between the cores at every access, a cost no real host and endpoint pay.
#[repr(align(64))]
#[derive(Default)]
struct EndpointCounts {
    oob_attempts: AtomicU64,
    failed_checks: AtomicU64,
    endpoint_reads: AtomicU64,
    endpoint_writes: AtomicU64,
}

impl std::fmt::Debug for ArenaMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArenaMemory")
            .field("base", &format_args!("{:#x}", self.base))
            .field("size", &format_args!("{:#x}", self.size))
            .field("oob_attempts", &self.oob_attempts())
            .finish()
    }
}

impl ArenaMemory {
    /// Creates a zeroed arena of `size` bytes (rounded up to a page) at bus address `base`.
    pub fn new(base: u64, size: u64) -> std::io::Result<Self> {
        let size = size
            .max(PAGE_SIZE)
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or_else(|| std::io::Error::other("arena size overflows"))?;
        if base.checked_add(size).is_none() {
            return Err(std::io::Error::other("arena end overflows the bus"));
        }
        let len = usize::try_from(size).map_err(std::io::Error::other)?;
        Ok(ArenaMemory {
            mem: SharedMemory::memfd("epf-loopback-ram", len)?,
            base,
            size,
            counts: EndpointCounts::default(),
        })
    }

    /// The arena's memfd, to hand to another mapper of the same RAM (as QEMU hands guest
    /// RAM to a vfio-user server).
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.mem.raw_fd()
    }

    /// Bus address of the first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Endpoint reads/writes attempted (at least partly) outside the arena, including
    /// address overflows. A correct device validates addresses first and keeps this at 0.
    pub fn oob_attempts(&self) -> u64 {
        self.counts.oob_attempts.load(Ordering::Relaxed)
    }

    /// [`HostMemory::check_range`] calls that failed (not counted as attempts: checking is
    /// what a device should do with untrusted addresses).
    pub fn failed_checks(&self) -> u64 {
        self.counts.failed_checks.load(Ordering::Relaxed)
    }

    /// Successful endpoint read accesses (each call counts once).
    pub fn endpoint_reads(&self) -> u64 {
        self.counts.endpoint_reads.load(Ordering::Relaxed)
    }

    /// Successful endpoint write accesses (each call counts once).
    pub fn endpoint_writes(&self) -> u64 {
        self.counts.endpoint_writes.load(Ordering::Relaxed)
    }

    /// Offset into the arena of `[addr, addr+len)`, without counting anything.
    fn offset(&self, addr: u64, len: u64) -> Result<u64, HostMemError> {
        match region_offset(self.base, self.size, addr, len)? {
            Some(off) => Ok(off),
            None => Err(HostMemError::OutOfRange { addr, len }),
        }
    }

    /// Offset for an endpoint access; counts a failure as an out-of-range attempt.
    fn endpoint_offset(&self, addr: u64, len: u64) -> Result<u64, HostMemError> {
        self.offset(addr, len).inspect_err(|e| {
            self.counts.oob_attempts.fetch_add(1, Ordering::Relaxed);
            log::debug!("loopback: endpoint host-memory access out of range: {e}");
        })
    }

    fn count_read(&self) {
        self.counts.endpoint_reads.fetch_add(1, Ordering::Relaxed);
    }

    fn count_write(&self) {
        self.counts.endpoint_writes.fetch_add(1, Ordering::Relaxed);
    }

    // Host-side accesses: bounds checked, not counted.

    pub(crate) fn host_read(&self, addr: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
        let off = self.offset(addr, buf.len() as u64)?;
        self.mem.read(off, buf)
    }

    pub(crate) fn host_write(&self, addr: u64, data: &[u8]) -> Result<(), HostMemError> {
        let off = self.offset(addr, data.len() as u64)?;
        self.mem.write(off, data)
    }

    pub(crate) fn host_load_u16(&self, addr: u64) -> Result<u16, HostMemError> {
        self.mem.load_u16(self.offset(addr, 2)?)
    }

    pub(crate) fn host_store_u16(&self, addr: u64, v: u16) -> Result<(), HostMemError> {
        self.mem.store_u16(self.offset(addr, 2)?, v)
    }

    pub(crate) fn host_load_u32(&self, addr: u64) -> Result<u32, HostMemError> {
        self.mem.load_u32(self.offset(addr, 4)?)
    }

    pub(crate) fn host_store_u32(&self, addr: u64, v: u32) -> Result<(), HostMemError> {
        self.mem.store_u32(self.offset(addr, 4)?, v)
    }
}

impl HostMemory for ArenaMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
        let off = self.endpoint_offset(addr, buf.len() as u64)?;
        self.mem.read(off, buf)?;
        self.count_read();
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), HostMemError> {
        let off = self.endpoint_offset(addr, data.len() as u64)?;
        self.mem.write(off, data)?;
        self.count_write();
        Ok(())
    }

    /// In place, like a controller whose host memory is mapped (counted as one endpoint
    /// access of the kind `f` performs). An out-of-range range gives `None`: the caller's
    /// copy path then meets (and counts) the error. So do more ranges than one system call
    /// takes.
    fn in_place(
        &self,
        ranges: &[(u64, u32)],
        write: bool,
        f: &mut dyn FnMut(&mut [libc::iovec]) -> std::io::Result<()>,
    ) -> Option<std::io::Result<()>> {
        if ranges.len() > IN_PLACE_MAX_RANGES {
            return None;
        }
        let mut iov = Vec::with_capacity(ranges.len());
        for &(addr, len) in ranges {
            let off = self.offset(addr, len as u64).ok()?;
            iov.push(libc::iovec {
                iov_base: self.mem.ptr_at(off, len as usize)?.cast(),
                iov_len: len as usize,
            });
        }
        let r = f(&mut iov);
        if write {
            self.count_write();
        } else {
            self.count_read();
        }
        Some(r)
    }

    fn check_range(&self, addr: u64, len: u64) -> Result<(), HostMemError> {
        self.offset(addr, len).map(|_| ()).inspect_err(|_| {
            self.counts.failed_checks.fetch_add(1, Ordering::Relaxed);
        })
    }

    fn read_u16(&self, addr: u64) -> Result<u16, HostMemError> {
        let off = self.endpoint_offset(addr, 2)?;
        let v = self.mem.load_u16(off)?;
        self.count_read();
        Ok(v)
    }

    fn read_u32(&self, addr: u64) -> Result<u32, HostMemError> {
        let off = self.endpoint_offset(addr, 4)?;
        let v = self.mem.load_u32(off)?;
        self.count_read();
        Ok(v)
    }

    fn write_u16(&self, addr: u64, v: u16) -> Result<(), HostMemError> {
        let off = self.endpoint_offset(addr, 2)?;
        self.mem.store_u16(off, v)?;
        self.count_write();
        Ok(())
    }

    fn write_u32(&self, addr: u64, v: u32) -> Result<(), HostMemError> {
        let off = self.endpoint_offset(addr, 4)?;
        self.mem.store_u32(off, v)?;
        self.count_write();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x1_0000_0000;

    #[test]
    fn endpoint_accesses_are_bounds_checked_and_counted() {
        let m = ArenaMemory::new(BASE, 8192).unwrap();
        m.write(BASE + 8190, &[1, 2]).unwrap();
        assert_eq!(m.read_u16(BASE + 8190).unwrap(), 0x0201);
        assert_eq!(m.oob_attempts(), 0);

        // Arena offsets mistaken for bus addresses.
        assert!(m.read(0, &mut [0; 4]).is_err());
        assert!(m.write(8190, &[0; 2]).is_err());
        // Straddling the end, and overflowing.
        assert!(m.read_u16(BASE + 8191).is_err());
        assert!(m.read(u64::MAX, &mut [0; 2]).is_err());
        assert!(m.write_u32(BASE - 2, 0).is_err());
        assert_eq!(m.oob_attempts(), 5);

        // Checking is not an attempt.
        assert!(m.check_range(BASE, 8193).is_err());
        assert!(m.check_range(BASE, 8192).is_ok());
        assert_eq!(m.oob_attempts(), 5);
        assert_eq!(m.failed_checks(), 1);

        // Host-side accesses are not counted either.
        assert!(m.host_read(0, &mut [0; 1]).is_err());
        assert_eq!(m.oob_attempts(), 5);
        assert_eq!(m.endpoint_reads(), 1);
        assert_eq!(m.endpoint_writes(), 1);
    }

    /// Found by the device fuzzer: a 2049-segment blk write (an aliased indirect table, a
    /// valid request) failed with IOERR on the loopback, whose in-place access handed
    /// pwritev more iovecs than the kernel takes (EINVAL).
    #[test]
    fn in_place_takes_at_most_one_system_call_of_ranges() {
        let m = ArenaMemory::new(BASE, 8192).unwrap();
        let calls = |n: usize| {
            let ranges = vec![(BASE, 512u32); n];
            let mut got = 0;
            let r = m.in_place(&ranges, false, &mut |iov| {
                got = iov.len();
                Ok(())
            });
            (r.is_some(), got)
        };
        assert_eq!(calls(IN_PLACE_MAX_RANGES), (true, IN_PLACE_MAX_RANGES));
        assert_eq!(calls(IN_PLACE_MAX_RANGES + 1), (false, 0));
    }

    #[test]
    fn host_and_endpoint_see_the_same_bytes() {
        let m = ArenaMemory::new(BASE, 4096).unwrap();
        m.host_store_u16(BASE + 6, 0xbeef).unwrap();
        assert_eq!(m.read_u16(BASE + 6).unwrap(), 0xbeef);
        m.write_u32(BASE + 8, 0x1234_5678).unwrap();
        assert_eq!(m.host_load_u32(BASE + 8).unwrap(), 0x1234_5678);
        let mut b = [0; 2];
        m.host_read(BASE + 8, &mut b).unwrap();
        assert_eq!(b, [0x78, 0x56]);
    }

    #[test]
    fn endpoint_counters_do_not_share_a_cache_line_with_the_arena_fields() {
        // The endpoint bumps the counters on every access, the host side reads the arena's
        // fields on every access of its own: on one line, the two threads of a benchmark
        // would move it between their cores at every access (measured: 160 ns per request
        // against 42 without).
        assert_eq!(std::mem::align_of::<EndpointCounts>(), 64);
        assert_eq!(std::mem::size_of::<EndpointCounts>(), 64);
        assert_eq!(std::mem::offset_of!(ArenaMemory, counts) % 64, 0);
    }
}
