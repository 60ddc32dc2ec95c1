//! Access to host memory from the endpoint.
//!
//! A real endpoint reaches host memory through a few outbound address-translation windows
//! or a DMA engine; neither hands out long-lived references, so this interface is copy based:
//! every access names a host bus address and a length and either completes entirely or fails
//! with nothing transferred. A window-limited implementation maps windows on demand inside
//! `read`/`write`; a DMA-engine implementation queues a transfer and waits.
//!
//! Ordering: implementations copy with volatile-like semantics and no ordering of their own;
//! callers that publish data (virtqueue rings) place the fences they need.

use crate::HostMemError;

/// Most ranges one [`HostMemory::in_place`] call hands to `f`: the kernel's `IOV_MAX`, the
/// most iovecs `preadv`/`pwritev` take. Implementations return `None` for more.
pub const IN_PLACE_MAX_RANGES: usize = 1024;

/// Host memory as seen from the endpoint.
pub trait HostMemory: Send + Sync {
    /// Copies `buf.len()` bytes from host address `addr` into `buf`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), HostMemError>;

    /// Copies `data` to host address `addr`.
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), HostMemError>;

    /// Checks that `[addr, addr+len)` is accessible, without accessing it.
    fn check_range(&self, addr: u64, len: u64) -> Result<(), HostMemError>;

    /// Reads a little-endian u16. For a 2-byte aligned `addr` this must be a single-copy
    /// atomic access (ring indices are updated concurrently by the host and a torn value
    /// would look like a malformed ring).
    fn read_u16(&self, addr: u64) -> Result<u16, HostMemError>;

    /// Reads a little-endian u32.
    fn read_u32(&self, addr: u64) -> Result<u32, HostMemError> {
        let mut b = [0; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads a little-endian u64.
    fn read_u64(&self, addr: u64) -> Result<u64, HostMemError> {
        let mut b = [0; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian u16; single-copy atomic when `addr` is 2-byte aligned.
    fn write_u16(&self, addr: u64, v: u16) -> Result<(), HostMemError>;

    /// Writes a little-endian u32.
    fn write_u32(&self, addr: u64, v: u32) -> Result<(), HostMemError> {
        self.write(addr, &v.to_le_bytes())
    }

    /// Zero-copy access for system calls that move data straight between a file and the
    /// host's buffers (`preadv`/`pwritev`): runs `f` with `ranges` (host address, length)
    /// as iovecs pointing into this process's mapping of host memory, which stays mapped
    /// (an unmap waits) while `f` runs. `write` is whether `f` writes the memory.
    ///
    /// Returns `None` when the implementation cannot expose the memory in place (outbound
    /// windows, a DMA engine, memory not mapped, a range split across mappings, or more
    /// than [`IN_PLACE_MAX_RANGES`] ranges, what one system call takes): the caller copies
    /// instead. The default does so.
    fn in_place(
        &self,
        ranges: &[(u64, u32)],
        write: bool,
        f: &mut dyn FnMut(&mut [libc::iovec]) -> std::io::Result<()>,
    ) -> Option<std::io::Result<()>> {
        let _ = (ranges, write, f);
        None
    }
}

/// Returns the end of `[addr, addr+len)` or the overflow error.
pub(crate) fn range_end(addr: u64, len: u64) -> Result<u64, HostMemError> {
    addr.checked_add(len)
        .ok_or(HostMemError::Overflow { addr, len })
}

/// Helper for implementations backed by a set of directly mapped regions: finds the region
/// `[base, base+size)` that contains the whole access and returns the offset into it.
pub fn region_offset(
    base: u64,
    size: u64,
    addr: u64,
    len: u64,
) -> Result<Option<u64>, HostMemError> {
    let end = range_end(addr, len)?;
    if addr >= base && end <= base.saturating_add(size) {
        Ok(Some(addr - base))
    } else {
        Ok(None)
    }
}
