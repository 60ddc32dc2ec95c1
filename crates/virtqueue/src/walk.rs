//! Walking a descriptor chain from its head and applying every validation rule of the split
//! ring (virtio 1.2 sections 2.7.5 and 2.7.5.3) to it, producing a [`DescriptorChain`].
//!
//! All descriptor fields are untrusted. Work is bounded: a direct chain visits at most
//! `queue size` descriptors, an indirect table at most its entry count (itself at most
//! [`MAX_INDIRECT_ENTRIES`]), and only one indirect table per chain is possible because it
//! must end the chain and cannot nest. No memory is read before its range is known to be
//! valid: the descriptor table was checked by [`Queue::new`](crate::Queue::new), an indirect
//! table and every buffer are checked with [`HostMemory::check_range`] here.
//!
//! Rules and the error each produces:
//! * head / next outside the (direct or indirect) table: [`QueueError::HeadOutOfRange`],
//!   [`QueueError::NextOutOfRange`];
//! * more descriptors than the table holds: [`QueueError::DescriptorLoop`];
//! * more than [`MAX_CHAIN_DESCRIPTORS`] data descriptors in all (a direct prefix followed by
//!   a large indirect table): [`QueueError::ChainTooLong`];
//! * INDIRECT with NEXT: [`QueueError::IndirectWithNext`]; INDIRECT inside an indirect table:
//!   [`QueueError::NestedIndirect`]; table length zero or not a multiple of 16:
//!   [`QueueError::IndirectTableLen`]; more than [`MAX_INDIRECT_ENTRIES`] entries:
//!   [`QueueError::IndirectTableTooLarge`]; table outside memory:
//!   [`QueueError::IndirectTableOutOfRange`];
//! * a readable descriptor after a writable one (zero-length ones included):
//!   [`QueueError::WritableBeforeReadable`];
//! * total length above `u32::MAX`: [`QueueError::LengthOverflow`];
//! * a non-empty buffer outside memory: [`QueueError::BufferOutOfRange`].
//!
//! The WRITE flag of a descriptor pointing to an indirect table is ignored, as the spec
//! requires. An indirect descriptor may appear anywhere in a direct chain, but since it cannot
//! have NEXT it is necessarily the last one.

use crate::descriptor::{Descriptor, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT};
use crate::layout::{self, DESC_SIZE};
use crate::{DescriptorChain, QueueError, Segment};
use epf_epc::{HostMemError, HostMemory};

/// Most entries an indirect table may have (the spec bounds a chain by the queue size, whose
/// maximum is 32768).
pub const MAX_INDIRECT_ENTRIES: u32 = layout::MAX_QUEUE_SIZE as u32;

/// Most data descriptors (direct plus indirect, not counting the descriptor that points to the
/// indirect table) a chain may have.
pub const MAX_CHAIN_DESCRIPTORS: u32 = layout::MAX_QUEUE_SIZE as u32;

/// Descriptors fetched per host-memory read. Drivers mostly chain neighbouring descriptors, so
/// fetching a small aligned block saves transfers on window- or DMA-based endpoints.
const BLOCK: u32 = 8;

/// A descriptor table whose whole range is known to be inside host memory.
#[derive(Clone, Copy)]
pub(crate) struct Table {
    pub(crate) base: u64,
    pub(crate) entries: u32,
}

/// A cache of one aligned block of a table's descriptors.
pub(crate) struct BlockCache {
    /// Index of the first cached entry, or `u32::MAX` when empty.
    first: u32,
    count: u32,
    buf: [u8; (BLOCK as usize) * DESC_SIZE as usize],
}

impl BlockCache {
    pub(crate) fn new() -> Self {
        BlockCache {
            first: u32::MAX,
            count: 0,
            buf: [0; (BLOCK as usize) * DESC_SIZE as usize],
        }
    }

    pub(crate) fn invalidate(&mut self) {
        self.first = u32::MAX;
        self.count = 0;
    }

    /// Descriptor `idx` (`< table.entries`) of `table`, in the split format.
    fn get(
        &mut self,
        mem: &dyn HostMemory,
        table: Table,
        idx: u32,
    ) -> Result<Descriptor, QueueError> {
        self.get_raw(mem, table, idx)
            .map(|raw| Descriptor::from_bytes(&raw))
    }

    /// The 16 wire bytes of descriptor `idx` (`< table.entries`) of `table`.
    #[inline]
    pub(crate) fn get_raw(
        &mut self,
        mem: &dyn HostMemory,
        table: Table,
        idx: u32,
    ) -> Result<[u8; DESC_SIZE as usize], QueueError> {
        debug_assert!(idx < table.entries);
        if idx < self.first || idx - self.first >= self.count {
            self.fill(mem, table, idx)?;
        }
        let off = ((idx - self.first) as usize) * DESC_SIZE as usize;
        let mut raw = [0; DESC_SIZE as usize];
        if let Some(b) = self.buf.get(off..off + DESC_SIZE as usize) {
            raw.copy_from_slice(b);
        }
        Ok(raw)
    }

    /// Reads the aligned block holding descriptor `idx` (the miss path of `get_raw`).
    #[inline(never)]
    fn fill(&mut self, mem: &dyn HostMemory, table: Table, idx: u32) -> Result<(), QueueError> {
        {
            let first = idx - idx % BLOCK;
            let count = BLOCK.min(table.entries - first);
            let bytes = (count as usize) * DESC_SIZE as usize;
            // In range: `first + count <= entries` and the table range was checked.
            mem.read(
                table.base + u64::from(first) * DESC_SIZE,
                &mut self.buf[..bytes],
            )?;
            self.first = first;
            self.count = count;
        }
        Ok(())
    }
}

/// Running state of one walk (shared with the packed ring's walk).
pub(crate) struct Walk<'a> {
    mem: &'a dyn HostMemory,
    head: u16,
    seen_writable: bool,
    total_len: u32,
    data_descriptors: u32,
}

/// Whether a `check_range` failure means "not in host memory" (as opposed to a transient
/// failure such as no free outbound window, reported as [`QueueError::Memory`]).
pub(crate) fn is_range_error(e: &HostMemError) -> bool {
    matches!(
        e,
        HostMemError::OutOfRange { .. } | HostMemError::Overflow { .. }
    )
}

impl<'a> Walk<'a> {
    /// A walk of the chain `head` names in errors.
    pub(crate) fn new(mem: &'a dyn HostMemory, head: u16) -> Walk<'a> {
        Walk {
            mem,
            head,
            seen_writable: false,
            total_len: 0,
            data_descriptors: 0,
        }
    }

    /// The chain's name in errors.
    pub(crate) fn head(&self) -> u16 {
        self.head
    }

    /// Validates one data (non-indirect) descriptor and records it.
    #[inline(always)]
    pub(crate) fn data(
        &mut self,
        d: &Descriptor,
        chain: &mut DescriptorChain,
    ) -> Result<(), QueueError> {
        let head = self.head;
        self.data_descriptors += 1;
        if self.data_descriptors > MAX_CHAIN_DESCRIPTORS {
            return Err(QueueError::ChainTooLong {
                head,
                max: MAX_CHAIN_DESCRIPTORS,
            });
        }
        let writable = d.is_write_only();
        if writable {
            self.seen_writable = true;
        } else if self.seen_writable {
            return Err(QueueError::WritableBeforeReadable { head });
        }
        self.total_len = self
            .total_len
            .checked_add(d.len)
            .ok_or(QueueError::LengthOverflow { head })?;
        if d.len == 0 {
            return Ok(());
        }
        let out_of_range = QueueError::BufferOutOfRange {
            addr: d.addr,
            len: d.len,
        };
        if d.addr.checked_add(u64::from(d.len)).is_none() {
            return Err(out_of_range);
        }
        match self.mem.check_range(d.addr, u64::from(d.len)) {
            Ok(()) => {}
            Err(e) if is_range_error(&e) => return Err(out_of_range),
            Err(e) => return Err(e.into()),
        }
        chain.push(
            Segment {
                addr: d.addr,
                len: d.len,
            },
            writable,
        );
        Ok(())
    }

    /// Validates the descriptor `d` pointing to an indirect table (no NEXT, length a
    /// non-zero multiple of 16 of at most [`MAX_INDIRECT_ENTRIES`] entries, inside host
    /// memory) and returns the table.
    pub(crate) fn indirect_table(&self, d: &Descriptor) -> Result<Table, QueueError> {
        let head = self.head;
        if d.has_next() {
            return Err(QueueError::IndirectWithNext { head });
        }
        if d.len == 0 || u64::from(d.len) % DESC_SIZE != 0 {
            return Err(QueueError::IndirectTableLen { head, len: d.len });
        }
        let entries = d.len / DESC_SIZE as u32;
        if entries > MAX_INDIRECT_ENTRIES {
            return Err(QueueError::IndirectTableTooLarge { head, len: d.len });
        }
        let out_of_range = QueueError::IndirectTableOutOfRange {
            head,
            addr: d.addr,
            len: d.len,
        };
        if d.addr.checked_add(u64::from(d.len)).is_none() {
            return Err(out_of_range);
        }
        match self.mem.check_range(d.addr, u64::from(d.len)) {
            Ok(()) => {}
            Err(e) if is_range_error(&e) => return Err(out_of_range),
            Err(e) => return Err(e.into()),
        }
        Ok(Table {
            base: d.addr,
            entries,
        })
    }

    /// Validates the indirect table `d` points to and walks it.
    fn indirect(
        &mut self,
        d: &Descriptor,
        cache: &mut BlockCache,
        chain: &mut DescriptorChain,
    ) -> Result<(), QueueError> {
        let head = self.head;
        let table = self.indirect_table(d)?;
        let entries = table.entries;
        cache.invalidate();
        let mut idx = 0u32;
        let mut visited = 0u32;
        loop {
            if visited >= entries {
                return Err(QueueError::DescriptorLoop { head });
            }
            visited += 1;
            chain.count_descriptor();
            let d = cache.get(self.mem, table, idx)?;
            if d.is_indirect() {
                return Err(QueueError::NestedIndirect { head });
            }
            self.data(&d, chain)?;
            if !d.has_next() {
                return Ok(());
            }
            if u32::from(d.next) >= entries {
                return Err(QueueError::NextOutOfRange {
                    head,
                    next: d.next,
                    // `entries <= 32768`.
                    limit: entries as u16,
                });
            }
            idx = u32::from(d.next);
        }
    }
}

/// Walks the chain starting at descriptor `head` of the table at `desc_table` (`size` entries,
/// range already checked) into `chain`. `cache` holds a block of that table the caller
/// knows is current for this chain (see `split_cache`), or nothing.
pub(crate) fn walk_chain(
    mem: &dyn HostMemory,
    desc_table: u64,
    size: u16,
    head: u16,
    chain: &mut DescriptorChain,
    cache: &mut BlockCache,
) -> Result<(), QueueError> {
    chain.reset(head);
    if head >= size {
        return Err(QueueError::HeadOutOfRange { head, size });
    }
    let table = Table {
        base: desc_table,
        entries: u32::from(size),
    };
    let mut walk = Walk::new(mem, head);
    let mut d = cache.get(mem, table, u32::from(head))?;
    chain.count_descriptor();
    if d.flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT) == 0 {
        // The common chain: one buffer.
        return walk.data(&d, chain);
    }
    let mut visited = 1u32;
    loop {
        if d.is_indirect() {
            // The indirect table gets a cache of its own: the direct table's block stays.
            return walk.indirect(&d, &mut BlockCache::new(), chain);
        }
        walk.data(&d, chain)?;
        if !d.has_next() {
            return Ok(());
        }
        if d.next >= size {
            return Err(QueueError::NextOutOfRange {
                head,
                next: d.next,
                limit: size,
            });
        }
        if visited >= u32::from(size) {
            return Err(QueueError::DescriptorLoop { head });
        }
        visited += 1;
        chain.count_descriptor();
        d = cache.get(mem, table, u32::from(d.next))?;
    }
}
