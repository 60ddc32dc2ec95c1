//! The building blocks both I/O engines execute requests with: page-aligned bounce buffers,
//! copies between a request's host buffers and a bounce buffer, and the blocking system
//! calls (positional read/write, `fdatasync`, `fallocate`) with their retry and fallback
//! rules.
//!
//! Host memory is reached only through the copy-based [`HostMemory`] interface, so every
//! request's data passes through a bounce buffer in endpoint memory. The buffers are aligned
//! to 4096 bytes so that the same buffer serves O_DIRECT.

use super::image::{Image, RangeOp};
use epf_epc::{HostMemError, HostMemory};
use epf_virtqueue::Segment;
use std::alloc::Layout;
use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;

/// Largest piece of a request moved by one system call (requests larger than this are done
/// in consecutive chunks through the same buffer).
pub const CHUNK: usize = 1 << 20;
/// Alignment of bounce buffers.
pub const BUF_ALIGN: usize = 4096;

/// A zero-initialised, 4096-byte aligned heap buffer.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is plain owned memory with no thread affinity.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// A buffer of `len` bytes (at least 1; rounded up to the alignment).
    pub fn new(len: usize) -> AlignedBuf {
        let len = len.max(1).div_ceil(BUF_ALIGN) * BUF_ALIGN;
        let layout = Self::layout(len);
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(p) else {
            std::alloc::handle_alloc_error(layout)
        };
        AlignedBuf { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        // A non-zero multiple of a power-of-two alignment never fails to form a layout short
        // of isize::MAX, which `len` (at most a few MiB) is far from.
        Layout::from_size_align(len, BUF_ALIGN).unwrap_or(Layout::new::<u8>())
    }

    /// Capacity in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true (buffers have at least one alignment unit).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `n` bytes (`n <= len`).
    pub fn slice(&self, n: usize) -> &[u8] {
        let n = n.min(self.len);
        // SAFETY: `ptr` points to `len` initialised bytes we own; `n <= len`; the shared
        // borrow of `self` keeps them alive and unmodified.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), n) }
    }

    /// The first `n` bytes, mutable (`n <= len`).
    pub fn slice_mut(&mut self, n: usize) -> &mut [u8] {
        let n = n.min(self.len);
        // SAFETY: as in `slice`, and the unique borrow of `self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), n) }
    }

    /// Raw pointer for a system call or an io_uring submission.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout and not freed before.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

/// Recycles bounce buffers by power-of-two size class (4 KiB to [`CHUNK`]), so a request
/// costs no allocation, zeroing or page faults once the pool is warm.
#[derive(Default)]
pub struct BufPool {
    classes: Vec<Vec<AlignedBuf>>,
}

/// Buffers kept per size class.
const POOL_KEEP: usize = 64;

impl BufPool {
    fn class(len: usize) -> (usize, usize) {
        let size = len.clamp(BUF_ALIGN, CHUNK).next_power_of_two();
        (size.trailing_zeros() as usize, size)
    }

    /// A buffer of at least `len.min(CHUNK)` bytes.
    pub fn get(&mut self, len: usize) -> AlignedBuf {
        let (c, size) = Self::class(len);
        self.classes
            .get_mut(c)
            .and_then(|v| v.pop())
            .unwrap_or_else(|| AlignedBuf::new(size))
    }

    /// Returns a buffer for reuse.
    pub fn put(&mut self, buf: AlignedBuf) {
        let (c, size) = Self::class(buf.len());
        if size != buf.len() {
            return;
        }
        if self.classes.len() <= c {
            self.classes.resize_with(c + 1, Vec::new);
        }
        if self.classes[c].len() < POOL_KEEP {
            self.classes[c].push(buf);
        }
    }
}

/// Walks `segs` from data offset `skip`, calling `f(host_addr, range_in_buf)` for each
/// contiguous piece covering `len` bytes.
fn for_pieces(
    segs: &[Segment],
    skip: u64,
    len: usize,
    mut f: impl FnMut(u64, std::ops::Range<usize>) -> Result<(), HostMemError>,
) -> Result<(), HostMemError> {
    let mut pos = 0u64; // data offset of the current segment's start
    let mut done = 0usize;
    for s in segs {
        if done == len {
            break;
        }
        let seg_len = u64::from(s.len);
        let seg_end = pos + seg_len;
        let want = skip + done as u64;
        if want < seg_end {
            let off = want - pos;
            let n = ((seg_len - off) as usize).min(len - done);
            f(s.addr + off, done..done + n)?;
            done += n;
        }
        pos = seg_end;
    }
    if done == len {
        Ok(())
    } else {
        Err(HostMemError::OutOfRange {
            addr: 0,
            len: len as u64,
        })
    }
}

/// Copies `buf.len()` bytes of the request data starting at data offset `skip` out of host
/// memory.
pub fn copy_from_host(
    mem: &dyn HostMemory,
    segs: &[Segment],
    skip: u64,
    buf: &mut [u8],
) -> Result<(), HostMemError> {
    let len = buf.len();
    for_pieces(segs, skip, len, |addr, r| mem.read(addr, &mut buf[r]))
}

/// Copies `buf` into the request data at data offset `skip` in host memory.
pub fn copy_to_host(
    mem: &dyn HostMemory,
    segs: &[Segment],
    skip: u64,
    buf: &[u8],
) -> Result<(), HostMemError> {
    for_pieces(segs, skip, buf.len(), |addr, r| mem.write(addr, &buf[r]))
}

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Reads exactly `buf.len()` bytes at `offset` (retrying short reads and EINTR).
pub fn pread_full(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: pread(2) writes at most `rest.len()` bytes into `rest`, a live mutable
        // slice.
        let r = unsafe {
            libc::pread(
                fd,
                rest.as_mut_ptr().cast(),
                rest.len(),
                (offset + done as u64) as libc::off_t,
            )
        };
        match cvt(r) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes all of `buf` at `offset`; with `dsync` each write is durable when it returns
/// (`pwritev2(RWF_DSYNC)`).
pub fn pwrite_full(fd: RawFd, buf: &[u8], offset: u64, dsync: bool) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &buf[done..];
        let iov = libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        };
        let flags = if dsync { libc::RWF_DSYNC } else { 0 };
        // SAFETY: pwritev2(2) reads `iov_len` bytes from `iov_base`, which points into the
        // live slice `rest`; one iovec is passed.
        let r =
            unsafe { libc::pwritev2(fd, &iov, 1, (offset + done as u64) as libc::off_t, flags) };
        match cvt(r) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Drops the first `n` bytes of `iov` (after a short transfer).
fn advance(mut iov: &mut [libc::iovec], mut n: usize) -> &mut [libc::iovec] {
    while let Some(first) = iov.first_mut() {
        if n < first.iov_len {
            // SAFETY: `n < iov_len`, so the new base stays inside the same buffer.
            first.iov_base = unsafe { first.iov_base.cast::<u8>().add(n) }.cast();
            first.iov_len -= n;
            break;
        }
        n -= first.iov_len;
        iov = &mut iov[1..];
    }
    iov
}

/// Runs `op(iovecs, offset)` (a `preadv`/`pwritev`-like call returning bytes moved or -1)
/// until the iovecs are done, retrying short transfers and EINTR; 0 bytes moved is `zero`.
fn iov_full(
    mut iov: &mut [libc::iovec],
    mut offset: u64,
    zero: io::ErrorKind,
    mut op: impl FnMut(&[libc::iovec], u64) -> isize,
) -> io::Result<()> {
    while !iov.is_empty() {
        match cvt(op(iov, offset)) {
            Ok(0) => return Err(zero.into()),
            Ok(n) => {
                offset += n as u64;
                iov = advance(iov, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads exactly the iovecs' total length at `offset` straight into them (host buffers in
/// place).
pub fn preadv_full(fd: RawFd, iov: &mut [libc::iovec], offset: u64) -> io::Result<()> {
    iov_full(iov, offset, io::ErrorKind::UnexpectedEof, |iov, at| {
        // SAFETY: the iovecs point to memory the caller keeps mapped and writable for the
        // call (HostMemory::in_place); at most IOV_MAX of them (checked there).
        unsafe {
            libc::preadv(
                fd,
                iov.as_ptr(),
                iov.len() as libc::c_int,
                at as libc::off_t,
            )
        }
    })
}

/// Writes the iovecs' contents at `offset` straight from them (host buffers in place);
/// with `dsync` the data is durable when this returns.
pub fn pwritev_full(
    fd: RawFd,
    iov: &mut [libc::iovec],
    offset: u64,
    dsync: bool,
) -> io::Result<()> {
    let flags = if dsync { libc::RWF_DSYNC } else { 0 };
    iov_full(iov, offset, io::ErrorKind::WriteZero, |iov, at| {
        // SAFETY: the iovecs point to memory the caller keeps mapped and readable for the
        // call (HostMemory::in_place).
        unsafe {
            libc::pwritev2(
                fd,
                iov.as_ptr(),
                iov.len() as libc::c_int,
                at as libc::off_t,
                flags,
            )
        }
    })
}

/// `fdatasync(2)`, retried on EINTR.
pub fn fdatasync(fd: RawFd) -> io::Result<()> {
    loop {
        // SAFETY: fdatasync(2) on a descriptor; no memory is passed.
        if unsafe { libc::fdatasync(fd) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `fallocate(2)`, retried on EINTR.
pub fn fallocate(fd: RawFd, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    loop {
        // SAFETY: fallocate(2) on a descriptor; no memory is passed.
        let r = unsafe { libc::fallocate(fd, mode, offset as libc::off_t, len as libc::off_t) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether an error means "this file system / device cannot do that fallocate mode".
pub fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
    )
}

/// Discards or zeroes `len` bytes at `offset` of `image`, blocking. Zeroing falls back to
/// writing zeroes where the file system cannot zero ranges; a discard the image cannot do
/// is a successful no-op (discarding is advisory).
pub fn range_op(image: &Image, op: RangeOp, offset: u64, len: u64) -> io::Result<()> {
    match fallocate(image.fd(), image.fallocate_mode(op), offset, len) {
        Ok(()) => Ok(()),
        Err(e) if is_unsupported(&e) => match op {
            RangeOp::Discard => Ok(()),
            RangeOp::Zero | RangeOp::ZeroUnmap => {
                let zeroes = AlignedBuf::new(CHUNK.min(len as usize));
                let mut done = 0u64;
                while done < len {
                    let n = (len - done).min(zeroes.len() as u64) as usize;
                    pwrite_full(image.fd(), zeroes.slice(n), offset + done, false)?;
                    done += n as u64;
                }
                Ok(())
            }
        },
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use epf_virtqueue::testing::TestMemory;

    #[test]
    fn copies_cross_segment_boundaries_from_any_offset() {
        let mem = TestMemory::new(4096);
        let b = mem.base();
        let segs = [
            Segment { addr: b, len: 3 },
            Segment {
                addr: b + 100,
                len: 5,
            },
            Segment {
                addr: b + 200,
                len: 4,
            },
        ];
        let data: Vec<u8> = (1..=12).collect();
        copy_to_host(&mem, &segs, 0, &data).unwrap();
        assert_eq!(mem.peek(b, 3), [1, 2, 3]);
        assert_eq!(mem.peek(b + 100, 5), [4, 5, 6, 7, 8]);
        assert_eq!(mem.peek(b + 200, 4), [9, 10, 11, 12]);
        let mut out = [0u8; 6];
        copy_from_host(&mem, &segs, 2, &mut out).unwrap();
        assert_eq!(out, [3, 4, 5, 6, 7, 8]);
        let mut out = [0u8; 2];
        copy_from_host(&mem, &segs, 10, &mut out).unwrap();
        assert_eq!(out, [11, 12]);
        // Past the end: an error, not a panic or a write elsewhere.
        let mut out = [0u8; 3];
        assert!(copy_from_host(&mem, &segs, 10, &mut out).is_err());
        assert_eq!(mem.oob_attempts(), 0);
    }

    #[test]
    fn aligned_buffers_are_aligned_and_zeroed() {
        let mut b = AlignedBuf::new(5000);
        assert_eq!(b.len(), 8192);
        assert_eq!(b.as_mut_ptr() as usize % BUF_ALIGN, 0);
        assert!(b.slice(8192).iter().all(|&x| x == 0));
        b.slice_mut(3).copy_from_slice(&[1, 2, 3]);
        assert_eq!(b.slice(4), [1, 2, 3, 0]);
    }
}
