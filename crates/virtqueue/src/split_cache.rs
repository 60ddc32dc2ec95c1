//! What a split ring remembers between pops so that it reads host memory in batches (each
//! read is a PCIe round trip on a real endpoint): a run of available-ring entries fetched in
//! one read, and the descriptor block the last walk read (eight descriptors, which
//! consecutive single-descriptor chains usually share).
//!
//! Both were read after the `avail.idx` the queue knows (the Acquire fence that follows
//! that read orders them), so everything the driver published below that index is in them
//! as it will stay: a driver does not touch available entries or descriptors of buffers it
//! has made available. What lies at or beyond that index may still be written, so the queue
//! forgets both ([`SplitCache::invalidate`]) whenever the index it knows moves: a new
//! `avail.idx` read, notification data taken in its place, or a restored state. A driver
//! that rewrites what it published only hurts itself: every value is validated on use as
//! if freshly read.

use crate::layout;
use crate::walk::BlockCache;
use crate::QueueError;
use epf_epc::HostMemory;

/// Available-ring entries read at once (64 bytes).
pub(crate) const AVAIL_BATCH: usize = 32;

pub(crate) struct SplitCache {
    /// Entries `first .. first + len` (free-running indices) of the available ring.
    entries: [u16; AVAIL_BATCH],
    first: u16,
    len: u16,
    /// The descriptor table block of the last walk.
    pub(crate) descs: BlockCache,
}

impl SplitCache {
    pub(crate) fn new() -> Self {
        SplitCache {
            entries: [0; AVAIL_BATCH],
            first: 0,
            len: 0,
            descs: BlockCache::new(),
        }
    }

    /// Forgets everything read (the known `avail.idx` moved).
    pub(crate) fn invalidate(&mut self) {
        self.len = 0;
        self.descs.invalidate();
    }

    /// The available-ring entry at free-running index `idx` of the ring at `avail_addr`
    /// (`size` entries), which the driver published (`idx` is below `avail_idx`, the index
    /// the queue knows). On a miss, reads from `idx` up to `avail_idx`, at most
    /// [`AVAIL_BATCH`] entries and not past the ring's end, in one read.
    #[inline]
    pub(crate) fn avail_entry(
        &mut self,
        mem: &dyn HostMemory,
        avail_addr: u64,
        size: u16,
        idx: u16,
        avail_idx: u16,
    ) -> Result<u16, QueueError> {
        let off = idx.wrapping_sub(self.first);
        match self.entries.get(usize::from(off)) {
            Some(&e) if off < self.len => Ok(e),
            _ => self.fetch(mem, avail_addr, size, idx, avail_idx),
        }
    }

    /// The miss path of [`avail_entry`](Self::avail_entry): one read of the entries from
    /// `idx`.
    #[inline(never)]
    fn fetch(
        &mut self,
        mem: &dyn HostMemory,
        avail_addr: u64,
        size: u16,
        idx: u16,
        avail_idx: u16,
    ) -> Result<u16, QueueError> {
        let pending = avail_idx.wrapping_sub(idx).max(1);
        let to_end = size - idx % size;
        let n = pending.min(AVAIL_BATCH as u16).min(to_end);
        let mut buf = [0u8; AVAIL_BATCH * 2];
        let bytes = &mut buf[..usize::from(n) * 2];
        mem.read(layout::avail_entry_addr(avail_addr, size, idx), bytes)?;
        for (e, b) in self.entries.iter_mut().zip(bytes.chunks_exact(2)) {
            *e = u16::from_le_bytes([b[0], b[1]]);
        }
        self.first = idx;
        self.len = n;
        Ok(self.entries[0])
    }
}
