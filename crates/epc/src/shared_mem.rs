//! A mapping of memory shared with the host: endpoint BAR memory (memfd we create) or host
//! RAM handed to us as a file descriptor. All accesses are bounds checked and volatile, since
//! the other side changes the memory concurrently.

use crate::HostMemError;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU8, Ordering};

/// A shared memory mapping.
pub struct SharedMemory {
    ptr: NonNull<u8>,
    len: usize,
    fd: Option<OwnedFd>,
    fd_offset: u64,
}

// SAFETY: the mapping is plain memory owned by this object until drop; every access goes
// through bounds-checked volatile/atomic operations, which are sound to perform concurrently
// from several threads (the memory is shared with another process anyway).
unsafe impl Send for SharedMemory {}
// SAFETY: see above; `&SharedMemory` only allows bounds-checked volatile/atomic accesses.
unsafe impl Sync for SharedMemory {}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory")
            .field("len", &self.len)
            .finish()
    }
}

impl SharedMemory {
    /// Creates `len` bytes of zeroed anonymous shared memory backed by a memfd, whose fd can
    /// be passed to the host side.
    pub fn memfd(name: &str, len: usize) -> std::io::Result<Self> {
        let cname = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
        // SAFETY: `cname` is a valid NUL-terminated string; memfd_create has no other inputs.
        let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: `fd` is a valid descriptor.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Self::map(fd, 0, len, true)
    }

    /// Maps `len` bytes of `fd` at `offset`, shared.
    pub fn map(fd: OwnedFd, offset: u64, len: usize, writable: bool) -> std::io::Result<Self> {
        if len == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "zero-length mapping",
            ));
        }
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh shared mapping chosen by the kernel; it overlaps nothing we own.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let Some(ptr) = NonNull::new(p as *mut u8) else {
            return Err(std::io::Error::other("mmap returned NULL"));
        };
        Ok(SharedMemory {
            ptr,
            len,
            fd: Some(fd),
            fd_offset: offset,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never true for a successful mapping).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The backing descriptor, to hand to the host side.
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }

    /// Offset of this mapping inside its file.
    pub fn fd_offset(&self) -> u64 {
        self.fd_offset
    }

    fn check(&self, off: u64, len: usize) -> Result<usize, HostMemError> {
        let end = off.checked_add(len as u64).ok_or(HostMemError::Overflow {
            addr: off,
            len: len as u64,
        })?;
        if end > self.len as u64 {
            return Err(HostMemError::OutOfRange {
                addr: off,
                len: len as u64,
            });
        }
        Ok(off as usize)
    }

    /// Copies bytes out of the mapping at `off`.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
        let o = self.check(off, buf.len())?;
        // SAFETY: `o + buf.len() <= self.len` was checked, the mapping is live, and `buf` is a
        // distinct Rust buffer. A concurrent writer can only make us read a torn value, which
        // callers validate like any other host input.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(o), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    /// Copies bytes into the mapping at `off`.
    pub fn write(&self, off: u64, data: &[u8]) -> Result<(), HostMemError> {
        let o = self.check(off, data.len())?;
        // SAFETY: bounds checked above; the mapping is live and writable (a read-only mapping
        // is only created for host memory the host declared read-only and which we never
        // write: HostMemory implementations check that first).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(o), data.len())
        };
        Ok(())
    }

    /// Atomically loads an aligned u16 (acquire: later loads are not hoisted above it).
    pub fn load_u16(&self, off: u64) -> Result<u16, HostMemError> {
        let o = self.check(off, 2)?;
        if o % 2 != 0 {
            let mut b = [0; 2];
            self.read(off, &mut b)?;
            return Ok(u16::from_le_bytes(b));
        }
        // SAFETY: in bounds and 2-byte aligned (the mapping is page aligned); AtomicU16 has the
        // layout of u16.
        let a = unsafe { &*(self.ptr.as_ptr().add(o) as *const AtomicU16) };
        Ok(u16::from_le(a.load(Ordering::Acquire)))
    }

    /// Atomically stores an aligned u16 (relaxed; callers add fences).
    pub fn store_u16(&self, off: u64, v: u16) -> Result<(), HostMemError> {
        let o = self.check(off, 2)?;
        if o % 2 != 0 {
            return self.write(off, &v.to_le_bytes());
        }
        // SAFETY: as in `load_u16`.
        let a = unsafe { &*(self.ptr.as_ptr().add(o) as *const AtomicU16) };
        a.store(v.to_le(), Ordering::Relaxed);
        Ok(())
    }

    /// Atomically loads an aligned u32 (acquire).
    pub fn load_u32(&self, off: u64) -> Result<u32, HostMemError> {
        let o = self.check(off, 4)?;
        if o % 4 != 0 {
            let mut b = [0; 4];
            self.read(off, &mut b)?;
            return Ok(u32::from_le_bytes(b));
        }
        // SAFETY: in bounds and 4-byte aligned; AtomicU32 has the layout of u32.
        let a = unsafe { &*(self.ptr.as_ptr().add(o) as *const AtomicU32) };
        Ok(u32::from_le(a.load(Ordering::Acquire)))
    }

    /// Atomically stores an aligned u32 (relaxed).
    pub fn store_u32(&self, off: u64, v: u32) -> Result<(), HostMemError> {
        let o = self.check(off, 4)?;
        if o % 4 != 0 {
            return self.write(off, &v.to_le_bytes());
        }
        // SAFETY: as in `load_u32`.
        let a = unsafe { &*(self.ptr.as_ptr().add(o) as *const AtomicU32) };
        a.store(v.to_le(), Ordering::Relaxed);
        Ok(())
    }
}

impl SharedMemory {
    /// Loads one byte (acquire: later loads are not hoisted above it).
    pub fn load_u8(&self, off: u64) -> Result<u8, HostMemError> {
        let o = self.check(off, 1)?;
        // SAFETY: in bounds; AtomicU8 has the layout of u8 and no alignment requirement.
        let a = unsafe { &*(self.ptr.as_ptr().add(o) as *const AtomicU8) };
        Ok(a.load(Ordering::Acquire))
    }

    /// Stores one byte.
    pub fn store_u8(&self, off: u64, v: u8) -> Result<(), HostMemError> {
        self.write(off, &[v])
    }

    /// Atomically replaces the aligned u16 at `off` with `new` if it still holds `old`
    /// (SeqCst). Returns whether it did. This is how a poller consumes a host write without
    /// losing one that lands at the same moment.
    pub fn compare_exchange_u16(&self, off: u64, old: u16, new: u16) -> Result<bool, HostMemError> {
        let o = self.check(off, 2)?;
        if o % 2 != 0 {
            return Err(HostMemError::OutOfRange { addr: off, len: 2 });
        }
        // SAFETY: in bounds and 2-byte aligned; AtomicU16 has the layout of u16.
        let a = unsafe { &*(self.ptr.as_ptr().add(o) as *const AtomicU16) };
        Ok(
            a.compare_exchange(old.to_le(), new.to_le(), Ordering::SeqCst, Ordering::SeqCst)
                .is_ok(),
        )
    }

    /// Atomically replaces the aligned u32 at `off` with `new` if it still holds `old`.
    pub fn compare_exchange_u32(&self, off: u64, old: u32, new: u32) -> Result<bool, HostMemError> {
        let o = self.check(off, 4)?;
        if o % 4 != 0 {
            return Err(HostMemError::OutOfRange { addr: off, len: 4 });
        }
        // SAFETY: in bounds and 4-byte aligned; AtomicU32 has the layout of u32.
        let a = unsafe { &*(self.ptr.as_ptr().add(o) as *const AtomicU32) };
        Ok(
            a.compare_exchange(old.to_le(), new.to_le(), Ordering::SeqCst, Ordering::SeqCst)
                .is_ok(),
        )
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping created by `map` and not yet unmapped; no
        // reference into it can outlive `self` (accessors copy).
        unsafe { libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let m = SharedMemory::memfd("t", 4096).unwrap();
        m.write(4090, &[1, 2, 3, 4, 5, 6]).unwrap();
        assert!(m.write(4091, &[0; 6]).is_err());
        assert!(m.read(u64::MAX, &mut [0; 2]).is_err());
        assert_eq!(m.load_u16(4090).unwrap(), 0x0201);
        m.store_u32(4092, 0xdead_beef).unwrap();
        assert_eq!(m.load_u32(4092).unwrap(), 0xdead_beef);
        assert!(m.load_u32(4094).is_err());
    }
}
