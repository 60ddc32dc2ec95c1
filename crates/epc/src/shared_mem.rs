//! A mapping of memory shared with the host: endpoint BAR memory (memfd we create) or host
//! RAM handed to us as a file descriptor. All accesses are bounds checked and volatile, since
//! the other side changes the memory concurrently. Host RAM is mapped with
//! [`SharedMemory::map_foreign`], which guards it against the host truncating the file under
//! us ([`crate::fault_guard`]): accesses then fail with [`HostMemError::Lost`] instead of
//! killing the process.

use crate::fault_guard::{self, Guard};
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
    /// Set for foreign mappings: tells whether the host took pages away.
    guard: Option<Guard>,
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
            guard: None,
        })
    }

    /// Like [`SharedMemory::map`], for a file the host owns and may truncate at any time: a
    /// page that disappears is replaced by a zero page and the mapping reports itself lost
    /// ([`HostMemError::Lost`] from then on) instead of the process dying of SIGBUS.
    pub fn map_foreign(
        fd: OwnedFd,
        offset: u64,
        len: usize,
        writable: bool,
    ) -> std::io::Result<Self> {
        let mut m = Self::map(fd, offset, len, writable)?;
        m.guard = Some(fault_guard::register(m.ptr.as_ptr() as usize, len)?);
        Ok(m)
    }

    /// Address of byte `off` of the mapping, for system calls that access it in place;
    /// `None` if `off + len` is out of bounds. Dereferencing it is up to the caller (the
    /// memory is shared with the host, which changes it concurrently).
    pub fn ptr_at(&self, off: u64, len: usize) -> Option<*mut u8> {
        let o = self.check(off, len).ok()?;
        // SAFETY: `o + len <= self.len` (checked), so the result stays inside the mapping.
        Some(unsafe { self.ptr.as_ptr().add(o) })
    }

    /// Whether the host took pages of this mapping away (only foreign mappings can tell).
    pub fn is_lost(&self) -> bool {
        self.guard.as_ref().is_some_and(Guard::lost)
    }

    /// Called after every access: an access that touched a lost page returns an error, so
    /// nothing is built on the zeros it may have read.
    #[inline]
    fn intact(&self, off: u64) -> Result<(), HostMemError> {
        if self.is_lost() {
            return Err(HostMemError::Lost { addr: off });
        }
        Ok(())
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
        self.intact(off)
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
        self.intact(off)
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
        let v = u16::from_le(a.load(Ordering::Acquire));
        self.intact(off).map(|()| v)
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
        self.intact(off)
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
        let v = u32::from_le(a.load(Ordering::Acquire));
        self.intact(off).map(|()| v)
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
        self.intact(off)
    }
}

impl SharedMemory {
    /// Loads one byte (acquire: later loads are not hoisted above it).
    pub fn load_u8(&self, off: u64) -> Result<u8, HostMemError> {
        let o = self.check(off, 1)?;
        // SAFETY: in bounds; AtomicU8 has the layout of u8 and no alignment requirement.
        let a = unsafe { &*(self.ptr.as_ptr().add(o) as *const AtomicU8) };
        let v = a.load(Ordering::Acquire);
        self.intact(off).map(|()| v)
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
        let done = a
            .compare_exchange(old.to_le(), new.to_le(), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        self.intact(off).map(|()| done)
    }

    /// Atomically replaces the aligned u32 at `off` with `new` if it still holds `old`.
    pub fn compare_exchange_u32(&self, off: u64, old: u32, new: u32) -> Result<bool, HostMemError> {
        let o = self.check(off, 4)?;
        if o % 4 != 0 {
            return Err(HostMemError::OutOfRange { addr: off, len: 4 });
        }
        // SAFETY: in bounds and 4-byte aligned; AtomicU32 has the layout of u32.
        let a = unsafe { &*(self.ptr.as_ptr().add(o) as *const AtomicU32) };
        let done = a
            .compare_exchange(old.to_le(), new.to_le(), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        self.intact(off).map(|()| done)
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // Unguard first: once unmapped, the range may be reused by anything.
        drop(self.guard.take());
        // SAFETY: `ptr`/`len` describe a mapping created by `map` and not yet unmapped; no
        // reference into it can outlive `self` (accessors copy).
        if unsafe { libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len) } != 0 {
            // Cannot happen for a mapping we made; if it does, the range stays mapped (and
            // unused) rather than being reused under someone's feet.
            log::error!(
                "munmap of {:#x} bytes failed: {}",
                self.len,
                std::io::Error::last_os_error()
            );
        }
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

    /// A host that truncates its RAM file under a foreign mapping makes accesses fail with
    /// `Lost`; the process survives (without the guard this test dies of SIGBUS).
    #[test]
    fn truncated_foreign_memory_is_lost_not_fatal() {
        let host = SharedMemory::memfd("host-ram", 4 * 4096).unwrap();
        let fd = {
            // SAFETY: duplicating a descriptor we own.
            let raw = unsafe { libc::dup(host.raw_fd().unwrap()) };
            assert!(raw >= 0);
            // SAFETY: `raw` is a fresh descriptor we own.
            unsafe { OwnedFd::from_raw_fd(raw) }
        };
        let m = SharedMemory::map_foreign(fd, 0, 4 * 4096, true).unwrap();
        m.write(0x100, b"ring").unwrap();
        let mut b = [0u8; 4];
        m.read(0x100, &mut b).unwrap();
        assert_eq!(&b, b"ring");
        assert!(!m.is_lost());
        // The host shrinks the file to one page.
        // SAFETY: ftruncate on a descriptor we own.
        assert_eq!(unsafe { libc::ftruncate(host.raw_fd().unwrap(), 4096) }, 0);
        // The first page is still there, and the mapping not yet known lost.
        m.read(0x100, &mut b).unwrap();
        assert_eq!(&b, b"ring");
        // Touching a page past the end: an error, not a crash; every access fails after.
        assert!(matches!(
            m.read(2 * 4096, &mut b),
            Err(HostMemError::Lost { .. })
        ));
        assert!(m.is_lost());
        assert!(matches!(m.load_u16(0x100), Err(HostMemError::Lost { .. })));
        assert!(matches!(
            m.write(3 * 4096, b"x"),
            Err(HostMemError::Lost { .. })
        ));
        assert!(m.compare_exchange_u32(0, 0, 1).is_err());
        drop(m);
        // A new guarded mapping starts intact (slots are reused cleanly).
        let fd2 = {
            // SAFETY: as above.
            let raw = unsafe { libc::dup(host.raw_fd().unwrap()) };
            // SAFETY: as above.
            unsafe { OwnedFd::from_raw_fd(raw) }
        };
        let m2 = SharedMemory::map_foreign(fd2, 0, 4096, true).unwrap();
        m2.read(0x100, &mut b).unwrap();
        assert_eq!(&b, b"ring");
        assert!(!m2.is_lost());
    }

    /// The guard hides nothing else: a fault outside guarded mappings still kills the process
    /// with SIGBUS (checked in a child process running this same test).
    #[test]
    fn faults_outside_guarded_memory_still_kill_the_process() {
        const CHILD: &str = "EPF_FAULT_GUARD_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let host = SharedMemory::memfd("guarded", 4096).unwrap();
            // SAFETY: duplicating a descriptor we own.
            let raw = unsafe { libc::dup(host.raw_fd().unwrap()) };
            // SAFETY: `raw` is a fresh descriptor we own.
            let _guarded =
                SharedMemory::map_foreign(unsafe { OwnedFd::from_raw_fd(raw) }, 0, 4096, true)
                    .unwrap();
            let plain = SharedMemory::memfd("unguarded", 2 * 4096).unwrap();
            // SAFETY: ftruncate on a descriptor we own.
            assert_eq!(unsafe { libc::ftruncate(plain.raw_fd().unwrap(), 0) }, 0);
            let mut b = [0u8; 1];
            let _ = plain.read(4096, &mut b);
            // The copy's result is otherwise unused, and a release build would drop it.
            std::hint::black_box(&b);
            // SAFETY: a byte inside the live mapping (whose file was truncated: this faults).
            let _ = unsafe { std::ptr::read_volatile(plain.ptr_at(4096, 1).unwrap()) };
            // Reaching this line means the fault was swallowed.
            std::process::exit(0);
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "shared_mem::tests::faults_outside_guarded_memory_still_kill_the_process",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{out:?}");
    }

    #[test]
    fn the_guard_stays_after_a_sigbus_someone_sends() {
        const CHILD: &str = "EPF_FAULT_GUARD_RAISE_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let host = SharedMemory::memfd("guarded", 4096).unwrap();
            // SAFETY: duplicating a descriptor we own.
            let raw = unsafe { libc::dup(host.raw_fd().unwrap()) };
            // SAFETY: `raw` is a fresh descriptor we own.
            let _guarded =
                SharedMemory::map_foreign(unsafe { OwnedFd::from_raw_fd(raw) }, 0, 4096, true)
                    .unwrap();
            // SAFETY: raising a signal at ourselves. Rust's own SIGBUS handler (installed
            // before ours) takes it and returns, as it would without the guard.
            unsafe { libc::raise(libc::SIGBUS) };
            // The guard must still be there: the host now truncates its file.
            // SAFETY: ftruncate on a descriptor we own.
            assert_eq!(unsafe { libc::ftruncate(host.raw_fd().unwrap(), 0) }, 0);
            // SAFETY: a byte of the live guarded mapping (whose file is gone: this faults).
            let _ = unsafe { std::ptr::read_volatile(_guarded.ptr_at(0, 1).unwrap()) };
            std::process::exit(if _guarded.is_lost() { 0 } else { 3 });
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "shared_mem::tests::the_guard_stays_after_a_sigbus_someone_sends",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
}
