//! The device side of a packed virtqueue (virtio 1.2 section 2.8): the ring positions and
//! wrap counters it owns, popping available chains (direct and indirect), writing used
//! descriptors, and both directions of event suppression. [`Queue`](crate::Queue) holds one
//! of these when VIRTIO_F_RING_PACKED was negotiated and delegates to it.
//!
//! Memory ordering (section 2.8.21 and Linux's virtio_ring packed code):
//! * the flags of the descriptor at the next ring position are read with a single-copy
//!   atomic `read_u16`, then an Acquire fence, then the chain's descriptors are read (the
//!   driver writes a chain's first flags last, after a write barrier);
//! * a used descriptor's `len` and `id` are written, then a Release fence, then its flags;
//!   with several used descriptors at once, the first one's flags are written last;
//! * SeqCst fences between publishing used descriptors and reading the driver's event
//!   suppression, and between writing ours and re-reading the next available flags.
//!
//! Validation (each an error, i.e. DEVICE_NEEDS_RESET): every rule of the shared chain walk
//! ([`crate::walk`]) plus a chain continuing into a descriptor that is not available, a chain
//! with no end within the ring, a buffer ID outside the queue or already in flight, more
//! descriptors in flight than the ring holds, and driver event suppression flags that are
//! reserved (or DESC without VIRTIO_F_EVENT_IDX) or an event offset outside the ring.
//! Work per pop is bounded by the queue size plus one indirect table's entries. Errors name
//! the ring position of the chain's first descriptor where the split ring names its head.

pub mod format;
mod prefetch;

use crate::in_order::UsedBatch;
use crate::layout::{self, Ring, DESC_SIZE};
use crate::walk::{BlockCache, Table, Walk};
use crate::{DescriptorChain, QueueError};
use epf_epc::HostMemory;
use format::{
    is_available, off_wrap, packed_need_event, split_off_wrap, used_flags, PackedDescriptor,
    EVENT_FLAGS_OFFSET, FLAGS_OFFSET, LEN_OFFSET, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE,
    RING_EVENT_FLAGS_ENABLE,
};
use prefetch::{Prefetch, PREFETCH};
use std::sync::atomic::{fence, Ordering};

/// Marks an id during [`PackedRing::add_used_many`]'s duplicate check (`in_flight` counts are
/// at most the queue size, 32768, so this bit is otherwise clear).
const MARK: u32 = 1 << 31;

/// Ring position and wrap counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    pub pos: u16,
    pub wrap: bool,
}

impl Position {
    const START: Position = Position { pos: 0, wrap: true };

    /// Moves forward by `n` (`<= size`) descriptors, flipping the wrap counter on wrapping.
    fn advance(&mut self, n: u16, size: u16) {
        let p = u32::from(self.pos) + u32::from(n);
        if p >= u32::from(size) {
            self.pos = (p - u32::from(size)) as u16;
            self.wrap = !self.wrap;
        } else {
            self.pos = p as u16;
        }
    }

    /// `off_wrap` encoding.
    pub fn encode(self) -> u16 {
        off_wrap(self.pos, self.wrap)
    }
}

/// What the last pop took, for `undo_pop`.
#[derive(Clone, Copy, Debug)]
struct LastPop {
    start: Position,
    id: u16,
}

/// The device-side state of one packed ring.
#[derive(Debug)]
pub(crate) struct PackedRing {
    size: u16,
    desc: u64,
    driver_event: u64,
    device_event: u64,
    event_idx: bool,
    avail: Position,
    used: Position,
    /// Batched reads of available descriptors (see the `prefetch` module).
    prefetch: Prefetch,
    /// Per buffer id: ring descriptors of the in-flight buffer, 0 when not in flight.
    in_flight: Vec<u32>,
    in_flight_descs: u32,
    /// Our last write of the device event suppression flags (None: not written yet).
    device_flags: Option<u16>,
    /// Ring positions passed by used descriptors since the last interrupt (saturating).
    unsignalled: u32,
    last_pop: Option<LastPop>,
    /// The driver's next available position from the last notification's data
    /// (VIRTIO_F_NOTIFICATION_DATA), until the pops reach it or it is found invalid.
    announced: Option<Position>,
    /// Flags reads not made thanks to `announced`.
    reads_saved: u64,
}

/// Checks a packed-ring area's alignment and range (`len` bytes).
fn check_area(mem: &dyn HostMemory, ring: Ring, addr: u64, size: u16) -> Result<(), QueueError> {
    crate::queue::check_ring(mem, ring, addr, size)
}

impl PackedRing {
    /// Validates the three areas (descriptor ring 16-byte aligned and `16 * size` bytes;
    /// event suppression structures 4-byte aligned, 4 bytes; all inside host memory) of a
    /// queue of `size` (any value in `1..=32768`).
    pub fn new(
        mem: &dyn HostMemory,
        size: u16,
        desc: u64,
        driver_event: u64,
        device_event: u64,
        event_idx: bool,
    ) -> Result<PackedRing, QueueError> {
        if size == 0 || size > layout::MAX_QUEUE_SIZE {
            return Err(QueueError::BadSize { size });
        }
        check_area(mem, Ring::Descriptors, desc, size)?;
        check_area(mem, Ring::DriverEvent, driver_event, size)?;
        check_area(mem, Ring::DeviceEvent, device_event, size)?;
        Ok(PackedRing {
            size,
            desc,
            driver_event,
            device_event,
            event_idx,
            avail: Position::START,
            used: Position::START,
            prefetch: Prefetch::new(),
            in_flight: vec![0; usize::from(size)],
            in_flight_descs: 0,
            device_flags: None,
            unsignalled: 0,
            last_pop: None,
            announced: None,
            reads_saved: 0,
        })
    }

    fn desc_addr(&self, pos: u16) -> u64 {
        // In range: `pos < size` and the ring was checked.
        self.desc + DESC_SIZE * u64::from(pos)
    }

    /// The next available position (`off_wrap` encoding).
    pub fn next_avail(&self) -> u16 {
        self.avail.encode()
    }

    /// The next used position (`off_wrap` encoding).
    pub fn next_used(&self) -> u16 {
        self.used.encode()
    }

    /// Sets the next available position from its `off_wrap` encoding (position taken modulo
    /// the size). Forgets what was seen there.
    pub fn set_next_avail(&mut self, v: u16) {
        let (pos, wrap) = split_off_wrap(v);
        self.avail = Position {
            pos: pos % self.size,
            wrap,
        };
        self.prefetch.clear();
        self.last_pop = None;
        self.announced = None;
    }

    /// Notification data: the driver's next available position in `off_wrap` encoding (see
    /// [`Queue::note_notification`](crate::Queue::note_notification)). An offset outside
    /// the ring is ignored.
    pub fn note_notification(&mut self, next: u16) {
        let (pos, wrap) = split_off_wrap(next);
        self.announced = (pos < self.size).then_some(Position { pos, wrap });
    }

    /// Flags reads not made thanks to notification data.
    pub fn ring_reads_saved(&self) -> u64 {
        self.reads_saved
    }

    /// How many descriptors from the next available position the driver announced in its
    /// last notification: 0 when none, when the pops reached the announced position, or
    /// when it is further ahead than the descriptors not in flight (a stale or wrong value,
    /// which is then dropped).
    fn announced_ahead(&mut self) -> u16 {
        let Some(end) = self.announced else {
            return 0;
        };
        let size = u32::from(self.size);
        let lin = |p: Position| u32::from(p.pos) + if p.wrap { 0 } else { size };
        let ahead = (lin(end) + 2 * size - lin(self.avail)) % (2 * size);
        if ahead == 0 || ahead + self.in_flight_descs > size {
            self.announced = None;
            return 0;
        }
        // `ahead <= size <= 32768`.
        ahead as u16
    }

    /// Sets the next used position from its `off_wrap` encoding, forgetting every buffer in
    /// flight.
    pub fn set_next_used(&mut self, v: u16) {
        let (pos, wrap) = split_off_wrap(v);
        self.used = Position {
            pos: pos % self.size,
            wrap,
        };
        self.in_flight.fill(0);
        self.in_flight_descs = 0;
        self.unsignalled = 0;
    }

    /// Whether the descriptor at the next available position is available. Reads its flags
    /// unless an earlier read showed it available.
    /// With notification data, the announced descriptors stand in for that read, and so
    /// does reaching the announced position (nothing more until the re-check after
    /// notifications are re-enabled, which reads).
    pub fn has_available(&mut self, mem: &dyn HostMemory) -> Result<bool, QueueError> {
        if !self.prefetch.known_available() {
            if let Some(end) = self.announced {
                if end == self.avail {
                    self.announced = None;
                    self.reads_saved += 1;
                    return Ok(false);
                }
                if self.announced_ahead() > 0 {
                    self.reads_saved += 1;
                    return Ok(true);
                }
            }
            let flags = mem.read_u16(self.desc_addr(self.avail.pos) + FLAGS_OFFSET)?;
            if !is_available(flags, self.avail.wrap) {
                return Ok(false);
            }
            self.prefetch.saw_head();
        }
        Ok(true)
    }

    /// Makes the descriptor at the next available position trusted in the prefetch buffer:
    /// Acquire fence, then one block read from there (which is also the evidence for the
    /// heads after it).
    ///
    /// Descriptors the driver announced (notification data) were written before its
    /// notification, so their contents in this read (which follows it) are usable as soon
    /// as their flags show them available.
    fn fetch(&mut self, mem: &dyn HostMemory) -> Result<(), QueueError> {
        let announced = self.announced_ahead();
        fence(Ordering::Acquire);
        let room = self.size - self.avail.pos;
        let n = self.prefetch.want().max(announced).min(PREFETCH).min(room);
        let at = self.desc_addr(self.avail.pos);
        mem.read(at, self.prefetch.target(n))?;
        self.prefetch.filled(n, self.avail.wrap, announced);
        Ok(())
    }

    /// Pops the next available chain; see [`Queue::pop`](crate::Queue::pop). Its contents
    /// come from a block read made after its first descriptor was seen available (see the
    /// `prefetch` module).
    pub fn pop(
        &mut self,
        mem: &dyn HostMemory,
        chain: &mut DescriptorChain,
    ) -> Result<bool, QueueError> {
        if self.prefetch.trusted == 0 {
            if !self.has_available(mem)? {
                return Ok(false);
            }
            self.fetch(mem)?;
            if self.prefetch.trusted == 0 {
                // Announced by notification data, but the flags say otherwise: the data
                // was wrong; drop it (the ring decides).
                self.announced = None;
                return Ok(false);
            }
        }
        let start = self.avail;
        // `fetch` left the descriptor at `start` trusted.
        let (first, rest) = self.prefetch.head().unwrap_or((&[0; 16], &[]));
        let (id, n) = self.walk(mem, start, first, rest, chain)?;
        if id >= self.size {
            return Err(QueueError::BufferIdOutOfRange {
                id,
                size: self.size,
            });
        }
        if self.in_flight[usize::from(id)] != 0 {
            return Err(QueueError::BufferIdInUse { id });
        }
        if self.in_flight_descs + u32::from(n) > u32::from(self.size) {
            return Err(QueueError::PackedRingOverrun {
                in_flight: self.in_flight_descs,
                chain: u32::from(n),
                size: self.size,
            });
        }
        chain.set_head(id);
        self.in_flight[usize::from(id)] = u32::from(n);
        self.in_flight_descs += u32::from(n);
        self.avail.advance(n, self.size);
        self.prefetch.consumed(n);
        self.last_pop = Some(LastPop { start, id });
        Ok(true)
    }

    /// Walks the chain starting at `start` (whose first descriptor is trusted in the
    /// prefetch buffer) into `chain`; returns its buffer id and the number of ring
    /// descriptors it occupies.
    fn walk(
        &self,
        mem: &dyn HostMemory,
        start: Position,
        first: &[u8],
        mut rest: &[u8],
        chain: &mut DescriptorChain,
    ) -> Result<(u16, u16), QueueError> {
        chain.reset(0);
        let size = self.size;
        let mut walk = Walk::new(mem, start.pos);
        let ring = Table {
            base: self.desc,
            entries: u32::from(size),
        };
        // Only chains longer than what was prefetched need it (not zeroed per pop).
        let mut cache: Option<BlockCache> = None;
        let mut at = start;
        let mut n = 0u16;
        // The first descriptor and the members that were read with it come from the
        // prefetch buffer (read after its head was seen available); further ones from the
        // ring, block by block.
        let mut raw = [0u8; DESC_SIZE as usize];
        raw.copy_from_slice(first);
        loop {
            let d = PackedDescriptor::from_bytes(&raw);
            if !is_available(d.flags, at.wrap) {
                return Err(QueueError::PackedChainUnavailable {
                    pos: start.pos,
                    at: at.pos,
                });
            }
            chain.count_descriptor();
            n += 1;
            at.advance(1, size);
            let s = d.as_split();
            if s.is_indirect() {
                let table = walk.indirect_table(&s)?;
                walk_indirect(mem, &mut walk, table, chain)?;
                return Ok((d.id, n));
            }
            walk.data(&s, chain)?;
            if !s.has_next() {
                return Ok((d.id, n));
            }
            if n == size {
                return Err(QueueError::PackedChainTooLong {
                    pos: start.pos,
                    size,
                });
            }
            if at.pos != 0 && rest.len() >= DESC_SIZE as usize {
                raw.copy_from_slice(&rest[..DESC_SIZE as usize]);
                rest = &rest[DESC_SIZE as usize..];
            } else {
                rest = &[];
                raw = cache.get_or_insert_with(BlockCache::new).get_raw(
                    mem,
                    ring,
                    u32::from(at.pos),
                )?;
            }
        }
    }

    /// Returns the last popped chain to the ring; see [`Queue::undo_pop`](crate::Queue::undo_pop).
    pub fn undo_pop(&mut self) -> bool {
        let Some(last) = self.last_pop.take() else {
            return false;
        };
        let n = std::mem::take(&mut self.in_flight[usize::from(last.id)]);
        self.in_flight_descs -= n;
        self.avail = last.start;
        self.prefetch.clear();
        true
    }

    /// The ring descriptors of in-flight buffer `id`, or the error `add_used` reports.
    fn in_flight_of(&self, id: u16) -> Result<u32, QueueError> {
        if id >= self.size {
            return Err(QueueError::UsedIdOutOfRange {
                id,
                size: self.size,
            });
        }
        match self.in_flight[usize::from(id)] {
            0 => Err(QueueError::UsedIdNotInFlight { id }),
            n => Ok(n),
        }
    }

    /// Writes the used descriptor `{ id, len }` at the next used position and publishes it.
    pub fn add_used(&mut self, mem: &dyn HostMemory, id: u16, len: u32) -> Result<(), QueueError> {
        let n = self.in_flight_of(id)?;
        let at = self.desc_addr(self.used.pos);
        let mut b = [0u8; 6];
        b[..4].copy_from_slice(&len.to_le_bytes());
        b[4..].copy_from_slice(&id.to_le_bytes());
        mem.write(at + LEN_OFFSET, &b)?;
        fence(Ordering::Release);
        mem.write_u16(at + FLAGS_OFFSET, used_flags(self.used.wrap))?;
        self.retire(id, n);
        Ok(())
    }

    fn retire(&mut self, id: u16, n: u32) {
        self.in_flight[usize::from(id)] = 0;
        self.in_flight_descs -= n;
        // `n <= size <= 32768`.
        self.used.advance(n as u16, self.size);
        self.unsignalled = self.unsignalled.saturating_add(n);
    }

    /// The ring descriptors in-flight buffer `id` occupies (0 if it is not in flight).
    pub fn span_of(&self, id: u16) -> u16 {
        self.in_flight
            .get(usize::from(id))
            .map_or(0, |&n| (n & !MARK) as u16)
    }

    /// In-order publication (VIRTIO_F_IN_ORDER): one used descriptor per batch, written over
    /// the batch's first ring position, then the position skips the batch's span. Batches
    /// after the first are written whole, then (Release) the first one's flags publish them
    /// all. `retired` lists every buffer the batches stand for; the caller checked that each
    /// is in flight.
    pub fn add_used_batches(
        &mut self,
        mem: &dyn HostMemory,
        batches: &[UsedBatch],
        retired: &[u16],
    ) -> Result<(), QueueError> {
        let Some((first, rest)) = batches.split_first() else {
            return Ok(());
        };
        let start = self.used;
        let mut pos = start;
        // `span <= size` (the batch's buffers are in flight at once).
        pos.advance(first.span as u16, self.size);
        for b in rest {
            let mut d = [0u8; 8];
            d[..4].copy_from_slice(&b.len.to_le_bytes());
            d[4..6].copy_from_slice(&b.id.to_le_bytes());
            d[6..].copy_from_slice(&used_flags(pos.wrap).to_le_bytes());
            mem.write(self.desc_addr(pos.pos) + LEN_OFFSET, &d)?;
            pos.advance(b.span as u16, self.size);
        }
        let at = self.desc_addr(start.pos);
        let mut d = [0u8; 6];
        d[..4].copy_from_slice(&first.len.to_le_bytes());
        d[4..].copy_from_slice(&first.id.to_le_bytes());
        mem.write(at + LEN_OFFSET, &d)?;
        fence(Ordering::Release);
        mem.write_u16(at + FLAGS_OFFSET, used_flags(start.wrap))?;
        for &id in retired {
            let n = self.in_flight[usize::from(id)];
            self.retire(id, n);
        }
        Ok(())
    }

    /// Writes the used descriptors `elems` and publishes them together: every one but the
    /// first is written whole, then (after a Release fence) the first one's flags. Every id
    /// is checked (in flight, not repeated) before anything is written.
    pub fn add_used_many(
        &mut self,
        mem: &dyn HostMemory,
        elems: &[(u16, u32)],
    ) -> Result<(), QueueError> {
        // Validate, marking ids to find repeats; unmark before returning either way.
        let mut bad = None;
        let mut marked = 0;
        for &(id, _) in elems {
            match self.in_flight_of(id) {
                Ok(n) if n & MARK == 0 => {
                    self.in_flight[usize::from(id)] |= MARK;
                    marked += 1;
                }
                Ok(_) => {
                    bad = Some(QueueError::UsedIdNotInFlight { id });
                    break;
                }
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
        for &(id, _) in &elems[..marked] {
            self.in_flight[usize::from(id)] &= !MARK;
        }
        if let Some(e) = bad {
            return Err(e);
        }
        let Some((&(first_id, first_len), rest)) = elems.split_first() else {
            return Ok(());
        };
        let first = self.used;
        if self.write_used_run(mem, elems)? {
            for &(id, _) in elems {
                self.retire(id, 1);
            }
            return Ok(());
        }
        let mut pos = first;
        pos.advance(self.in_flight[usize::from(first_id)] as u16, self.size);
        for &(id, len) in rest {
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&len.to_le_bytes());
            b[4..6].copy_from_slice(&id.to_le_bytes());
            b[6..].copy_from_slice(&used_flags(pos.wrap).to_le_bytes());
            mem.write(self.desc_addr(pos.pos) + LEN_OFFSET, &b)?;
            pos.advance(self.in_flight[usize::from(id)] as u16, self.size);
        }
        let at = self.desc_addr(first.pos);
        let mut b = [0u8; 6];
        b[..4].copy_from_slice(&first_len.to_le_bytes());
        b[4..].copy_from_slice(&first_id.to_le_bytes());
        mem.write(at + LEN_OFFSET, &b)?;
        fence(Ordering::Release);
        mem.write_u16(at + FLAGS_OFFSET, used_flags(first.wrap))?;
        for &(id, _) in elems {
            let n = self.in_flight[usize::from(id)];
            self.retire(id, n);
        }
        Ok(())
    }

    /// The common case of [`add_used_many`](Self::add_used_many): single-descriptor buffers
    /// whose used descriptors are consecutive without wrapping. Writes descriptors 2.. whole
    /// in one write, the first one's `len` and `id`, then (Release) its flags: three writes
    /// for the pass. Returns false (writing nothing) when the case does not apply.
    fn write_used_run(
        &self,
        mem: &dyn HostMemory,
        elems: &[(u16, u32)],
    ) -> Result<bool, QueueError> {
        let k = elems.len();
        if k < 3
            || usize::from(self.used.pos) + k > usize::from(self.size)
            || elems
                .iter()
                .any(|&(id, _)| self.in_flight[usize::from(id)] != 1)
        {
            return Ok(false);
        }
        let flags = used_flags(self.used.wrap).to_le_bytes();
        let mut run = [0u8; (DESC_SIZE as usize) * 64];
        let mut start = 1;
        while start < k {
            // At most 64 descriptors per write.
            let end = (start + 64).min(k);
            let bytes = &mut run[..(end - start) * DESC_SIZE as usize];
            for (i, &(id, len)) in elems[start..end].iter().enumerate() {
                let d = &mut bytes[i * DESC_SIZE as usize..(i + 1) * DESC_SIZE as usize];
                d[..8].fill(0);
                d[8..12].copy_from_slice(&len.to_le_bytes());
                d[12..14].copy_from_slice(&id.to_le_bytes());
                d[14..16].copy_from_slice(&flags);
            }
            let at = self.desc_addr(self.used.pos + start as u16);
            mem.write(at, bytes)?;
            start = end;
        }
        let (id, len) = elems[0];
        let at = self.desc_addr(self.used.pos);
        let mut b = [0u8; 6];
        b[..4].copy_from_slice(&len.to_le_bytes());
        b[4..].copy_from_slice(&id.to_le_bytes());
        mem.write(at + LEN_OFFSET, &b)?;
        fence(Ordering::Release);
        mem.write_u16(at + FLAGS_OFFSET, used_flags(self.used.wrap))?;
        Ok(true)
    }

    /// Whether the driver wants an interrupt for the used descriptors written since the
    /// last call that returned true (driver event suppression: ENABLE, DISABLE, or DESC with
    /// VIRTIO_F_EVENT_IDX: whether the used position passed `off_wrap`).
    pub fn needs_interrupt(&mut self, mem: &dyn HostMemory) -> Result<bool, QueueError> {
        if self.unsignalled == 0 {
            return Ok(false);
        }
        // Order the used flags stores before the reads of the driver's event structure.
        fence(Ordering::SeqCst);
        let flags = mem.read_u16(self.driver_event + EVENT_FLAGS_OFFSET)?;
        let need = match flags {
            RING_EVENT_FLAGS_ENABLE => true,
            RING_EVENT_FLAGS_DISABLE => false,
            RING_EVENT_FLAGS_DESC if self.event_idx => {
                // The driver writes off_wrap before flags.
                fence(Ordering::Acquire);
                let (off, wrap) = split_off_wrap(mem.read_u16(self.driver_event)?);
                if off >= self.size {
                    return Err(QueueError::EventOffsetOutOfRange {
                        off,
                        size: self.size,
                    });
                }
                self.unsignalled >= u32::from(self.size)
                    || packed_need_event(
                        self.size,
                        off,
                        wrap,
                        self.used.pos,
                        self.used.wrap,
                        self.unsignalled as u16,
                    )
            }
            flags => return Err(QueueError::BadEventFlags { flags }),
        };
        if need {
            self.unsignalled = 0;
        }
        Ok(need)
    }

    fn write_device_flags(&mut self, mem: &dyn HostMemory, flags: u16) -> Result<(), QueueError> {
        if self.device_flags != Some(flags) {
            mem.write_u16(self.device_event + EVENT_FLAGS_OFFSET, flags)?;
            self.device_flags = Some(flags);
        }
        Ok(())
    }

    /// Asks the driver for notifications again (ENABLE, or with VIRTIO_F_EVENT_IDX
    /// `off_wrap` = the next available position and DESC); returns whether buffers are
    /// available.
    pub fn enable_notification(&mut self, mem: &dyn HostMemory) -> Result<bool, QueueError> {
        if self.event_idx {
            mem.write_u16(self.device_event, self.avail.encode())?;
            fence(Ordering::Release);
            self.write_device_flags(mem, RING_EVENT_FLAGS_DESC)?;
        } else {
            self.write_device_flags(mem, RING_EVENT_FLAGS_ENABLE)?;
        }
        // Order the stores above before re-reading the next descriptor's flags, which are
        // read whatever notification data said.
        fence(Ordering::SeqCst);
        self.prefetch.clear();
        self.announced = None;
        self.has_available(mem)
    }

    /// Asks the driver not to notify: DISABLE; a no-op with VIRTIO_F_EVENT_IDX (the event
    /// offset is not advanced until the next `enable_notification`).
    pub fn disable_notification(&mut self, mem: &dyn HostMemory) -> Result<(), QueueError> {
        if self.event_idx {
            return Ok(());
        }
        self.write_device_flags(mem, RING_EVENT_FLAGS_DISABLE)
    }
}

/// Walks a packed indirect table: its entries in order (NEXT and the buffer id are ignored,
/// INDIRECT is refused as nesting), each validated like a direct descriptor.
fn walk_indirect(
    mem: &dyn HostMemory,
    walk: &mut Walk<'_>,
    table: Table,
    chain: &mut DescriptorChain,
) -> Result<(), QueueError> {
    let mut cache = BlockCache::new();
    for i in 0..table.entries {
        chain.count_descriptor();
        let d = PackedDescriptor::from_bytes(&cache.get_raw(mem, table, i)?);
        let mut s = d.as_split();
        if s.is_indirect() {
            return Err(QueueError::NestedIndirect { head: walk.head() });
        }
        s.flags &= crate::VIRTQ_DESC_F_WRITE;
        walk.data(&s, chain)?;
    }
    Ok(())
}
