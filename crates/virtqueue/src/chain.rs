//! A popped descriptor chain: the validated list of its buffers ([`Segment`]s), split into the
//! device-readable part and the device-writable part, plus the [`ChainReader`] and
//! [`ChainWriter`] cursors that copy from / to those buffers through [`HostMemory`].
//!
//! A [`DescriptorChain`] is filled by [`Queue::pop`](crate::Queue::pop) and meant to be
//! reused: its vectors keep their capacity, so a warm chain pops without allocating.
//! Zero-length descriptors are legal; they take part in validation (ordering, loop and length
//! checks) but are not kept as segments, so every segment has `len > 0`.

use crate::QueueError;
use epf_epc::HostMemory;

/// One buffer of a chain: `len` bytes at host address `addr`, checked to be inside host memory
/// (and `addr + len` not to overflow) when the chain was popped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub addr: u64,
    pub len: u32,
}

/// A validated descriptor chain.
///
/// Its contents are only meaningful after a successful [`Queue::pop`](crate::Queue::pop)
/// returned `Ok(true)`; after an error they are unspecified (but harmless).
#[derive(Default, Debug)]
pub struct DescriptorChain {
    head: u16,
    readable: Vec<Segment>,
    writable: Vec<Segment>,
    readable_len: u64,
    writable_len: u64,
    descriptors: u32,
}

impl DescriptorChain {
    /// An empty chain (equivalent to `Default::default()`).
    pub fn new() -> DescriptorChain {
        DescriptorChain::default()
    }

    /// Index of the chain's head descriptor: the id to give [`Queue::add_used`](crate::Queue::add_used).
    pub fn head(&self) -> u16 {
        self.head
    }

    /// The device-readable buffers, in chain order.
    pub fn readable(&self) -> &[Segment] {
        &self.readable
    }

    /// The device-writable buffers, in chain order.
    pub fn writable(&self) -> &[Segment] {
        &self.writable
    }

    /// Total length of the readable buffers.
    pub fn readable_len(&self) -> u64 {
        self.readable_len
    }

    /// Total length of the writable buffers.
    pub fn writable_len(&self) -> u64 {
        self.writable_len
    }

    /// Number of descriptors the chain consisted of, including zero-length ones and the
    /// descriptor pointing to an indirect table.
    pub fn descriptor_count(&self) -> u32 {
        self.descriptors
    }

    /// A cursor copying out of the readable buffers.
    pub fn reader<'a>(&'a self, mem: &'a dyn HostMemory) -> ChainReader<'a> {
        ChainReader {
            cursor: Cursor::new(&self.readable, self.readable_len),
            mem,
        }
    }

    /// A cursor copying into the writable buffers.
    pub fn writer<'a>(&'a self, mem: &'a dyn HostMemory) -> ChainWriter<'a> {
        ChainWriter {
            cursor: Cursor::new(&self.writable, self.writable_len),
            mem,
        }
    }

    /// Empties the chain (keeping capacity) and sets its head.
    pub(crate) fn reset(&mut self, head: u16) {
        self.head = head;
        self.readable.clear();
        self.writable.clear();
        self.readable_len = 0;
        self.writable_len = 0;
        self.descriptors = 0;
    }

    /// Sets the head (the packed ring learns the buffer id at the end of the walk).
    pub(crate) fn set_head(&mut self, head: u16) {
        self.head = head;
    }

    /// Counts one more descriptor.
    pub(crate) fn count_descriptor(&mut self) {
        self.descriptors += 1;
    }

    /// Appends a validated, non-empty buffer.
    #[inline]
    pub(crate) fn push(&mut self, seg: Segment, writable: bool) {
        if writable {
            self.writable.push(seg);
            self.writable_len += u64::from(seg.len);
        } else {
            self.readable.push(seg);
            self.readable_len += u64::from(seg.len);
        }
    }
}

/// Position inside a list of segments.
#[derive(Debug, Clone)]
struct Cursor<'a> {
    segs: &'a [Segment],
    /// Index of the current segment.
    idx: usize,
    /// Offset inside the current segment (always `< segs[idx].len` when `idx` is valid).
    off: u32,
    /// Bytes left from the current position to the end of the last segment.
    remaining: u64,
    /// Bytes passed so far.
    done: u64,
}

impl<'a> Cursor<'a> {
    fn new(segs: &'a [Segment], total: u64) -> Self {
        Cursor {
            segs,
            idx: 0,
            off: 0,
            remaining: total,
            done: 0,
        }
    }

    /// The current contiguous piece: host address and length (at most `max`), or `None` at the
    /// end.
    fn piece(&mut self, max: usize) -> Option<(u64, usize)> {
        loop {
            let seg = self.segs.get(self.idx)?;
            let left = seg.len - self.off;
            if left == 0 {
                // Only reachable for an empty segment, which chains never contain; skip it.
                self.idx += 1;
                self.off = 0;
                continue;
            }
            // `addr + len` was checked not to overflow when the chain was popped.
            let n = (left as usize).min(max);
            return Some((seg.addr + u64::from(self.off), n));
        }
    }

    /// The whole of a `len`-byte access, if it lies in the current segment: its host
    /// address. The common case (a request's header or payload in one buffer) takes this
    /// path, without the piece loop.
    #[inline]
    fn within_segment(&self, len: usize) -> Option<u64> {
        let seg = self.segs.get(self.idx)?;
        let left = (seg.len - self.off) as usize;
        (len <= left).then(|| seg.addr + u64::from(self.off))
    }

    /// Moves forward by `n` bytes of the current piece.
    #[inline]
    fn advance(&mut self, n: usize) {
        self.off += n as u32;
        self.remaining -= n as u64;
        self.done += n as u64;
        if self.off == self.segs[self.idx].len {
            self.idx += 1;
            self.off = 0;
        }
    }

    fn skip(&mut self, n: usize) -> usize {
        let mut skipped = 0;
        while skipped < n {
            let Some((_, len)) = self.piece(n - skipped) else {
                break;
            };
            self.advance(len);
            skipped += len;
        }
        skipped
    }

    fn remaining(&self) -> usize {
        usize::try_from(self.remaining).unwrap_or(usize::MAX)
    }
}

/// Copies bytes out of a chain's readable buffers, front to back, across segment boundaries
/// (like crosvm's `Reader`).
///
/// If a host-memory access fails, the error is returned and the cursor stays after the last
/// segment piece that was copied completely.
#[derive(Clone)]
pub struct ChainReader<'a> {
    cursor: Cursor<'a>,
    mem: &'a dyn HostMemory,
}

impl std::fmt::Debug for ChainReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainReader")
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl ChainReader<'_> {
    /// Copies as many bytes as are available (up to `buf.len()`) into `buf`; returns how many.
    #[inline]
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, QueueError> {
        if let Some(addr) = self.cursor.within_segment(buf.len()) {
            self.mem.read(addr, buf)?;
            self.cursor.advance(buf.len());
            return Ok(buf.len());
        }
        self.read_pieces(buf)
    }

    /// [`read`](Self::read) across segment boundaries.
    #[inline(never)]
    fn read_pieces(&mut self, buf: &mut [u8]) -> Result<usize, QueueError> {
        let mut n = 0;
        while n < buf.len() {
            let Some((addr, len)) = self.cursor.piece(buf.len() - n) else {
                break;
            };
            self.mem.read(addr, &mut buf[n..n + len])?;
            self.cursor.advance(len);
            n += len;
        }
        Ok(n)
    }

    /// Fills `buf` entirely, or fails with [`QueueError::ChainTooShort`] without consuming
    /// anything.
    pub fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), QueueError> {
        if buf.len() > self.remaining() {
            return Err(QueueError::ChainTooShort {
                needed: buf.len() as u64,
                available: self.cursor.remaining,
            });
        }
        self.read(buf).map(|_| ())
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.cursor.remaining()
    }

    /// Bytes read (or skipped) so far.
    pub fn consumed(&self) -> u64 {
        self.cursor.done
    }

    /// Skips up to `n` bytes without reading them; returns how many were skipped.
    pub fn skip(&mut self, n: usize) -> usize {
        self.cursor.skip(n)
    }
}

/// Copies bytes into a chain's writable buffers, front to back, across segment boundaries
/// (like crosvm's `Writer`). [`written`](ChainWriter::written) is the length to report in the
/// used ring.
///
/// If a host-memory access fails, the error is returned and the cursor stays after the last
/// segment piece that was copied completely.
#[derive(Clone)]
pub struct ChainWriter<'a> {
    cursor: Cursor<'a>,
    mem: &'a dyn HostMemory,
}

impl std::fmt::Debug for ChainWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainWriter")
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl ChainWriter<'_> {
    /// Copies as much of `data` as fits; returns how many bytes were written.
    #[inline]
    pub fn write(&mut self, data: &[u8]) -> Result<usize, QueueError> {
        if let Some(addr) = self.cursor.within_segment(data.len()) {
            self.mem.write(addr, data)?;
            self.cursor.advance(data.len());
            return Ok(data.len());
        }
        self.write_pieces(data)
    }

    /// [`write`](Self::write) across segment boundaries.
    #[inline(never)]
    fn write_pieces(&mut self, data: &[u8]) -> Result<usize, QueueError> {
        let mut n = 0;
        while n < data.len() {
            let Some((addr, len)) = self.cursor.piece(data.len() - n) else {
                break;
            };
            self.mem.write(addr, &data[n..n + len])?;
            self.cursor.advance(len);
            n += len;
        }
        Ok(n)
    }

    /// Writes all of `data`, or fails with [`QueueError::ChainTooShort`] without writing
    /// anything.
    pub fn write_all(&mut self, data: &[u8]) -> Result<(), QueueError> {
        if data.len() > self.remaining() {
            return Err(QueueError::ChainTooShort {
                needed: data.len() as u64,
                available: self.cursor.remaining,
            });
        }
        self.write(data).map(|_| ())
    }

    /// Bytes written so far. Fits in `u32` because a chain's total length does.
    pub fn written(&self) -> u32 {
        self.cursor.done as u32
    }

    /// Space left.
    pub fn remaining(&self) -> usize {
        self.cursor.remaining()
    }
}
