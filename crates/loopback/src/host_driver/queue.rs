//! [`HostQueue`]: the driver side of a virtqueue in host RAM. With VIRTIO_F_RING_PACKED
//! negotiated it is a packed ring (module `packed`); otherwise a split ring, following
//! virtio 1.2 section 2.7 and Linux's `virtio_ring.c` (split ring): a shadow free list (never trusting
//! device-writable memory for it), descriptors published before the available index with a
//! write barrier, `virtqueue_kick_prepare` semantics for notification suppression
//! (`avail_event` with VIRTIO_F_EVENT_IDX, `VIRTQ_USED_F_NO_NOTIFY` without), used-ring
//! validation like `BAD_RING`, and `used_event` updates.
//!
//! Raw helpers (`write_raw_desc`, `push_avail_raw`, ...) write arbitrary, possibly malformed
//! ring contents for adversarial device tests; they bypass the bookkeeping, so a queue used
//! that way should be consumed with [`HostQueue::get_used_raw`]. They are split-ring only
//! (on a packed queue they fail with `FeatureNotNegotiated`); packed rings have their own
//! (`write_packed_desc_raw`).

use super::error::{DriverError, Result};
use super::packed::PackedState;
use super::spec::*;
use crate::HostBus;
use std::collections::VecDeque;
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

/// Descriptors per pre-allocated indirect table (one table per head); longer indirect
/// chains get their own allocation.
pub const INDIRECT_SLOT_DESCS: usize = 16;

/// One buffer of a chain: (bus address, length, device-writable).
pub type Buf = (u64, u32, bool);

/// What [`VirtioPciDriver::prepare_queue`](super::VirtioPciDriver::prepare_queue) hands over.
pub(crate) struct QueueParams {
    pub bus: HostBus,
    pub index: u16,
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub notify_bar: u8,
    pub notify_offset: u64,
    pub msix_vector: Option<u16>,
    pub event_idx: bool,
    pub indirect: bool,
    pub packed: bool,
    /// VIRTIO_F_NOTIFICATION_DATA: notifications carry the next available index/position.
    pub notification_data: bool,
    /// VIRTIO_F_IN_ORDER: descriptors in ring order, used entries may stand for batches.
    pub in_order: bool,
    pub timeout: Duration,
}

/// Allocates a queue's rings in host RAM: `(descriptors, driver area, device area)`. Split:
/// one block like Linux's `vring_size(num, SMP_CACHE_BYTES)` (descriptor table, available
/// ring, used ring at the next 64-byte boundary). Packed: the descriptor ring, then the
/// driver and device event suppression structures.
pub(crate) fn alloc_rings(bus: &HostBus, size: u16, packed: bool) -> Result<(u64, u64, u64)> {
    if packed {
        let ring = desc_table_size(size);
        let desc = bus.alloc(ring + 2 * EVENT_SUPPRESS_SIZE, 4096)?;
        return Ok((desc, desc + ring, desc + ring + EVENT_SUPPRESS_SIZE));
    }
    let avail_off = desc_table_size(size);
    let used_off = (avail_off + avail_ring_size(size)).next_multiple_of(VRING_USED_ALIGN);
    let total = used_off + used_ring_size(size);
    let desc = bus.alloc(total, 4096)?;
    Ok((desc, desc + avail_off, desc + used_off))
}

#[derive(Debug, Clone, Copy)]
struct Chain {
    /// Descriptors of the ring's table the chain occupies.
    ndesc: u16,
}

/// A buffer made available and not yet used, under VIRTIO_F_IN_ORDER.
#[derive(Debug, Clone, Copy)]
pub(super) struct Outstanding {
    /// Head (split) or buffer id (packed).
    pub id: u16,
    /// Its device-writable bytes: the used length of a buffer the device skipped.
    pub in_len: u32,
}

/// The driver side of one virtqueue (split, or packed when negotiated). For a packed ring
/// the "avail" and "used" addresses are the driver and device event suppression structures.
#[derive(Debug)]
pub struct HostQueue {
    pub(super) bus: HostBus,
    index: u16,
    pub(super) size: u16,
    pub(super) desc: u64,
    pub(super) avail: u64,
    pub(super) used: u64,
    notify_bar: u8,
    notify_offset: u64,
    msix_vector: Option<u16>,
    pub(super) event_idx: bool,
    indirect: bool,
    notification_data: bool,
    timeout: Duration,
    /// Shadow of each descriptor's `next` (the free list and chain links).
    next: Vec<u16>,
    chains: Vec<Option<Chain>>,
    free_head: u16,
    pub(super) num_free: u16,
    avail_idx_shadow: u16,
    avail_flags_shadow: u16,
    last_used_idx: u16,
    pub(super) num_added: u16,
    indirect_pool: Option<u64>,
    broken: bool,
    /// The packed ring's state, when VIRTIO_F_RING_PACKED was negotiated.
    pub(super) packed: Option<PackedState>,
    /// VIRTIO_F_IN_ORDER: the buffers made available and not yet used, oldest first.
    pub(super) in_order: Option<VecDeque<Outstanding>>,
    /// The used entry (id, len) of the batch being consumed: the buffers before `id` were
    /// skipped by the device and are used completely.
    pub(super) batch_last: Option<(u16, u32)>,
    /// Split rings: `avail.idx` is stored by [`publish_avail`](HostQueue::publish_avail)
    /// only, once per burst (as DPDK's virtio driver does), not by every `add`.
    burst_publish: bool,
}

impl HostQueue {
    pub(crate) fn new(p: QueueParams) -> Result<Self> {
        let n = p.size as usize;
        let q = HostQueue {
            bus: p.bus,
            index: p.index,
            size: p.size,
            desc: p.desc,
            avail: p.avail,
            used: p.used,
            notify_bar: p.notify_bar,
            notify_offset: p.notify_offset,
            msix_vector: p.msix_vector,
            event_idx: p.event_idx,
            indirect: p.indirect,
            notification_data: p.notification_data,
            timeout: p.timeout,
            next: (1..=n).map(|i| (i % n) as u16).collect(),
            chains: vec![None; n],
            free_head: 0,
            num_free: p.size,
            avail_idx_shadow: 0,
            avail_flags_shadow: 0,
            last_used_idx: 0,
            num_added: 0,
            indirect_pool: None,
            broken: false,
            packed: p.packed.then(|| PackedState::new(p.size)),
            in_order: p.in_order.then(VecDeque::new),
            batch_last: None,
            burst_publish: false,
        };
        if q.packed.is_some() {
            // Driver event suppression: interrupts enabled, offset 0.
            q.bus
                .ram_write(q.avail, &[0; EVENT_SUPPRESS_SIZE as usize])?;
            return Ok(q);
        }
        // Rings come zeroed from the allocator; make the initial state explicit anyway.
        q.bus.ram_write_u16(q.avail + AVAIL_FLAGS, 0)?;
        q.bus.ram_write_u16(q.avail + AVAIL_IDX, 0)?;
        q.bus.ram_write_u16(q.used_event_addr(), 0)?;
        Ok(q)
    }

    /// A queue of `size` (a power of two for split rings) with fresh rings in `bus`'s RAM,
    /// attached to no device: no notification address (never call
    /// [`notify`](Self::notify) / [`kick`](Self::kick)) and no vector. For benchmarks that
    /// run the device side of the same rings in-process and poll both sides.
    pub fn standalone(
        bus: HostBus,
        size: u16,
        packed: bool,
        event_idx: bool,
        indirect: bool,
    ) -> Result<Self> {
        if size == 0 || size > VIRTQ_MAX_SIZE || (!packed && !size.is_power_of_two()) {
            return Err(DriverError::BadQueueSize {
                index: 0,
                size,
                max: VIRTQ_MAX_SIZE,
            });
        }
        let (desc, avail, used) = alloc_rings(&bus, size, packed)?;
        HostQueue::new(QueueParams {
            bus,
            index: 0,
            size,
            desc,
            avail,
            used,
            notify_bar: u8::MAX,
            notify_offset: 0,
            msix_vector: None,
            notification_data: false,
            in_order: false,
            event_idx,
            indirect,
            packed,
            timeout: Duration::from_secs(10),
        })
    }

    // ---- Layout and state accessors -----------------------------------------------------

    /// Queue index.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Queue size (descriptors).
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Bus address of the descriptor table.
    pub fn desc_addr(&self) -> u64 {
        self.desc
    }

    /// Bus address of the available (driver) ring.
    pub fn avail_addr(&self) -> u64 {
        self.avail
    }

    /// Bus address of the used (device) ring.
    pub fn used_addr(&self) -> u64 {
        self.used
    }

    /// Where [`notify`](Self::notify) writes: (BAR, offset).
    pub fn notify_location(&self) -> (u8, u64) {
        (self.notify_bar, self.notify_offset)
    }

    /// The MSI-X vector assigned at setup, if any.
    pub fn msix_vector(&self) -> Option<u16> {
        self.msix_vector
    }

    /// Whether this is a packed ring (VIRTIO_F_RING_PACKED negotiated).
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// Whether VIRTIO_F_EVENT_IDX was negotiated.
    pub fn event_idx(&self) -> bool {
        self.event_idx
    }

    /// Free descriptors.
    pub fn num_free(&self) -> u16 {
        self.num_free
    }

    /// The driver's copy of the available index.
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx_shadow
    }

    /// Used entries consumed so far (mod 2^16).
    pub fn last_used_idx(&self) -> u16 {
        self.last_used_idx
    }

    /// Whether a bad used ring was detected.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The bound on [`wait_used`](Self::wait_used).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn desc_entry(&self, i: u16) -> u64 {
        self.desc + DESC_SIZE * u64::from(i)
    }

    fn avail_slot(&self, slot: u16) -> u64 {
        self.avail + AVAIL_RING + 2 * u64::from(slot % self.size)
    }

    fn used_event_addr(&self) -> u64 {
        self.avail + AVAIL_RING + 2 * u64::from(self.size)
    }

    fn avail_event_addr(&self) -> u64 {
        self.used + USED_RING + USED_ELEM_SIZE * u64::from(self.size)
    }

    fn used_elem(&self, slot: u16) -> u64 {
        self.used + USED_RING + USED_ELEM_SIZE * u64::from(slot % self.size)
    }

    /// Fails for the split-only raw helpers on a packed queue.
    fn check_split(&self) -> Result<()> {
        if self.packed.is_some() {
            Err(DriverError::FeatureNotNegotiated(
                "split ring (this queue is packed)",
            ))
        } else {
            Ok(())
        }
    }

    fn check_usable(&self) -> Result<()> {
        if self.broken {
            Err(DriverError::Broken)
        } else {
            Ok(())
        }
    }

    // ---- Adding buffers -----------------------------------------------------------------

    fn write_desc(&self, at: u64, addr: u64, len: u32, flags: u16, next: u16) -> Result<()> {
        let mut d = [0u8; DESC_SIZE as usize];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.bus.ram_write(at, &d)?;
        Ok(())
    }

    /// Adds a chain of direct descriptors; returns its head. Does not notify.
    pub fn add(&mut self, bufs: &[Buf]) -> Result<u16> {
        let id = self.add_direct(bufs)?;
        self.note_added(id, bufs);
        Ok(id)
    }

    /// Adds a chain as one INDIRECT descriptor pointing at a table in host RAM; returns its
    /// head. Needs VIRTIO_F_INDIRECT_DESC.
    pub fn add_indirect(&mut self, bufs: &[Buf]) -> Result<u16> {
        let id = self.add_indirect_table(bufs)?;
        self.note_added(id, bufs);
        Ok(id)
    }

    /// Under VIRTIO_F_IN_ORDER, remembers the buffer as the newest outstanding one.
    fn note_added(&mut self, id: u16, bufs: &[Buf]) {
        if let Some(o) = &mut self.in_order {
            let in_len = bufs
                .iter()
                .filter(|b| b.2)
                .fold(0u32, |a, b| a.saturating_add(b.1));
            o.push_back(Outstanding { id, in_len });
        }
    }

    /// Uses descriptors in ring order and takes batched used entries (VIRTIO_F_IN_ORDER),
    /// for queues made with [`standalone`](Self::standalone); a negotiated queue gets it from
    /// the features. Only before the first buffer is added.
    pub fn set_in_order(&mut self, on: bool) {
        self.in_order = on.then(VecDeque::new);
        self.batch_last = None;
    }

    /// Whether VIRTIO_F_IN_ORDER is in use.
    pub fn in_order(&self) -> bool {
        self.in_order.is_some()
    }

    fn add_direct(&mut self, bufs: &[Buf]) -> Result<u16> {
        self.check_usable()?;
        if bufs.is_empty() {
            return Err(DriverError::EmptyChain);
        }
        if self.packed.is_some() {
            return self.packed_add(bufs, None);
        }
        if bufs.len() > self.num_free as usize {
            return Err(DriverError::QueueFull {
                needed: bufs.len(),
                free: self.num_free,
            });
        }
        let head = self.free_head;
        let mut i = head;
        for (k, &(addr, len, writable)) in bufs.iter().enumerate() {
            let mut flags = if writable { VIRTQ_DESC_F_WRITE } else { 0 };
            if k + 1 < bufs.len() {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            self.write_desc(self.desc_entry(i), addr, len, flags, self.next[i as usize])?;
            i = self.next[i as usize];
        }
        self.free_head = i;
        self.num_free -= bufs.len() as u16;
        self.chains[head as usize] = Some(Chain {
            ndesc: bufs.len() as u16,
        });
        self.publish(head)?;
        Ok(head)
    }

    fn add_indirect_table(&mut self, bufs: &[Buf]) -> Result<u16> {
        self.check_usable()?;
        if !self.indirect {
            return Err(DriverError::FeatureNotNegotiated("VIRTIO_F_INDIRECT_DESC"));
        }
        if bufs.is_empty() {
            return Err(DriverError::EmptyChain);
        }
        if self.num_free == 0 {
            return Err(DriverError::QueueFull { needed: 1, free: 0 });
        }
        // Packed: the table slot goes with the buffer id the packed ring will take.
        let head = match &self.packed {
            Some(p) => *p
                .free_ids
                .last()
                .ok_or(DriverError::QueueFull { needed: 1, free: 0 })?,
            None => self.free_head,
        };
        let slot_bytes = INDIRECT_SLOT_DESCS as u64 * DESC_SIZE;
        let table = if bufs.len() <= INDIRECT_SLOT_DESCS {
            let pool = match self.indirect_pool {
                Some(p) => p,
                None => {
                    let p = self.bus.alloc(u64::from(self.size) * slot_bytes, 16)?;
                    self.indirect_pool = Some(p);
                    p
                }
            };
            pool + u64::from(head) * slot_bytes
        } else {
            self.bus.alloc(bufs.len() as u64 * DESC_SIZE, 16)?
        };
        let packed = self.packed.is_some();
        for (k, &(addr, len, writable)) in bufs.iter().enumerate() {
            let mut flags = if writable { VIRTQ_DESC_F_WRITE } else { 0 };
            let at = table + k as u64 * DESC_SIZE;
            if packed {
                // Packed tables: entries in order, only WRITE is meaningful, id unused.
                self.write_desc(at, addr, len, 0, flags)?;
                continue;
            }
            if k + 1 < bufs.len() {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            self.write_desc(at, addr, len, flags, (k + 1) as u16)?;
        }
        let table_len =
            u32::try_from(bufs.len() as u64 * DESC_SIZE).map_err(|_| DriverError::QueueFull {
                needed: bufs.len(),
                free: self.num_free,
            })?;
        if packed {
            return self.packed_add(&[], Some((table, table_len)));
        }
        self.write_desc(
            self.desc_entry(head),
            table,
            table_len,
            VIRTQ_DESC_F_INDIRECT,
            self.next[head as usize],
        )?;
        self.free_head = self.next[head as usize];
        self.num_free -= 1;
        self.chains[head as usize] = Some(Chain { ndesc: 1 });
        self.publish(head)?;
        Ok(head)
    }

    /// Puts `head` in the next available slot and publishes it (`virtqueue_add_split`).
    fn publish(&mut self, head: u16) -> Result<()> {
        self.bus
            .ram_write_u16(self.avail_slot(self.avail_idx_shadow), head)?;
        // virtio_wmb: descriptors and the ring entry before the index.
        fence(Ordering::Release);
        self.avail_idx_shadow = self.avail_idx_shadow.wrapping_add(1);
        if !self.burst_publish {
            self.bus
                .ram_write_u16(self.avail + AVAIL_IDX, self.avail_idx_shadow)?;
        }
        self.num_added = self.num_added.wrapping_add(1);
        if self.num_added == u16::MAX {
            // Linux: "very unlikely, but theoretically possible. Kick just in case."
            self.kick()?;
        }
        Ok(())
    }

    /// Split rings: with `on`, `add` writes the descriptors and the available-ring entry but
    /// leaves `avail.idx` to [`publish_avail`](Self::publish_avail), one store per burst like
    /// DPDK's virtio driver (Linux stores it per buffer). For benchmarks of the device side.
    pub fn set_burst_publish(&mut self, on: bool) {
        self.burst_publish = on && self.packed.is_none();
    }

    /// Stores `avail.idx` for everything added (after a Release fence); a no-op unless
    /// [`set_burst_publish`](Self::set_burst_publish) is on.
    pub fn publish_avail(&mut self) -> Result<()> {
        if self.burst_publish {
            fence(Ordering::Release);
            self.bus
                .ram_write_u16(self.avail + AVAIL_IDX, self.avail_idx_shadow)?;
        }
        Ok(())
    }

    // ---- Notifications --------------------------------------------------------------------

    /// `virtqueue_kick_prepare`: whether the device wants a notification for what was added
    /// since the last call.
    pub fn kick_prepare(&mut self) -> Result<bool> {
        self.publish_avail()?;
        if self.packed.is_some() {
            return self.packed_kick_prepare();
        }
        // virtio_mb: expose the available entries before reading the event index/flags.
        fence(Ordering::SeqCst);
        let new = self.avail_idx_shadow;
        let old = new.wrapping_sub(self.num_added);
        self.num_added = 0;
        Ok(if self.event_idx {
            let event = self.bus.ram_read_u16(self.avail_event_addr())?;
            vring_need_event(event, new, old)
        } else {
            let flags = self.bus.ram_read_u16(self.used + USED_FLAGS)?;
            flags & VIRTQ_USED_F_NO_NOTIFY == 0
        })
    }

    /// Writes the queue index (16 bits) to the queue's notification address, or with
    /// VIRTIO_F_NOTIFICATION_DATA 32 bits: the index, and above it the next available index
    /// (split) or position with the wrap counter in bit 15 (packed), spec 4.1.5.2.
    pub fn notify(&self) {
        if self.notification_data {
            self.bus.bar_write32(
                self.notify_bar,
                self.notify_offset,
                u32::from(self.index) | u32::from(self.notification_next()) << 16,
            );
        } else {
            self.bus
                .bar_write16(self.notify_bar, self.notify_offset, self.index);
        }
    }

    /// What a notification with data announces: the next available index (split) or
    /// position | wrap counter << 15 (packed).
    pub fn notification_next(&self) -> u16 {
        match &self.packed {
            Some(p) => p.next_avail | u16::from(p.avail_wrap) << 15,
            None => self.avail_idx_shadow,
        }
    }

    /// `virtqueue_kick`: notifies if [`kick_prepare`](Self::kick_prepare) says so; returns
    /// whether it did.
    pub fn kick(&mut self) -> Result<bool> {
        let needed = self.kick_prepare()?;
        if needed {
            self.notify();
        }
        Ok(needed)
    }

    // ---- Used buffers ---------------------------------------------------------------------

    /// The device's used index (split rings).
    pub fn used_idx(&self) -> Result<u16> {
        self.check_split()?;
        Ok(self.bus.ram_read_u16(self.used + USED_IDX)?)
    }

    /// Whether the used ring has entries not yet consumed.
    pub fn has_used(&self) -> Result<bool> {
        if self.batch_last.is_some() {
            return Ok(true);
        }
        if self.packed.is_some() {
            return self.packed_has_used();
        }
        Ok(self.used_idx()? != self.last_used_idx)
    }

    pub(super) fn bad_ring(&mut self, msg: String) -> DriverError {
        log::warn!("host driver: queue {}: bad ring: {msg}", self.index);
        self.broken = true;
        DriverError::BadRing(msg)
    }

    /// `virtqueue_get_buf`: the next used (head, written length), freeing its descriptors.
    /// An impossible used entry breaks the queue (like Linux's `BAD_RING`).
    pub fn get_used(&mut self) -> Result<Option<(u16, u32)>> {
        self.check_usable()?;
        if self.packed.is_some() {
            return self.packed_get_used();
        }
        if self.batch_last.is_some() {
            // The next buffer of a batch: no ring read.
            let (head, len) = self.next_in_batch()?;
            return self.detach_split(head, len).map(Some);
        }
        let used_idx = self.used_idx()?;
        if used_idx == self.last_used_idx {
            return Ok(None);
        }
        let pending = used_idx.wrapping_sub(self.last_used_idx);
        if pending > self.size {
            return Err(self.bad_ring(format!(
                "used idx {used_idx} is {pending} ahead of {} (size {})",
                self.last_used_idx, self.size
            )));
        }
        // virtio_rmb: read the entry only after seeing the index.
        fence(Ordering::Acquire);
        let elem = self.used_elem(self.last_used_idx);
        let id = self.bus.ram_read_u32(elem)?;
        let len = self.bus.ram_read_u32(elem + 4)?;
        if id >= u32::from(self.size) {
            return Err(self.bad_ring(format!("id {id} out of range")));
        }
        let head = id as u16;
        if self.in_order.is_some() {
            let (head, len) = self.start_batch(head, len, pending)?;
            return self.detach_split(head, len).map(Some);
        }
        self.detach_split(head, len).map(Some)
    }

    /// Under VIRTIO_F_IN_ORDER: the used entry `(id, len)` stands for every outstanding
    /// buffer up to `id` (at most `pending`, what the used index covers); returns the oldest
    /// with its length. An id that is not outstanding breaks the queue.
    pub(super) fn start_batch(&mut self, id: u16, len: u32, pending: u16) -> Result<(u16, u32)> {
        let o = self.in_order.as_ref().expect("in-order queue");
        let Some(k) = o.iter().position(|b| b.id == id) else {
            return Err(self.bad_ring(format!("in-order used id {id} is not outstanding")));
        };
        if k >= usize::from(pending) {
            return Err(self.bad_ring(format!(
                "in-order used id {id} stands for {} buffers, the used index for {pending}",
                k + 1
            )));
        }
        if k > 0 {
            self.batch_last = Some((id, len));
            return self.next_in_batch();
        }
        self.in_order.as_mut().expect("in-order queue").pop_front();
        Ok((id, len))
    }

    /// The oldest outstanding buffer of the current batch and its used length: the batch's
    /// own for its last buffer, the whole device-writable size for the skipped ones.
    pub(super) fn next_in_batch(&mut self) -> Result<(u16, u32)> {
        let Some((last, last_len)) = self.batch_last else {
            return Err(self.bad_ring("no batch in progress".into()));
        };
        let Some(b) = self.in_order.as_mut().and_then(|o| o.pop_front()) else {
            return Err(self.bad_ring("batch without outstanding buffers".into()));
        };
        if b.id == last {
            self.batch_last = None;
            return Ok((b.id, last_len));
        }
        Ok((b.id, b.in_len))
    }

    /// Frees split chain `head` (detach_buf_split, from the shadow links only) and advances
    /// the used index: `(head, len)`.
    fn detach_split(&mut self, head: u16, len: u32) -> Result<(u16, u32)> {
        let Some(chain) = self.chains[head as usize].take() else {
            return Err(self.bad_ring(format!("id {head} is not a head")));
        };
        if self.in_order.is_none() {
            let mut last = head;
            for _ in 1..chain.ndesc {
                last = self.next[last as usize];
            }
            self.next[last as usize] = self.free_head;
            self.free_head = head;
        }
        // In order, the links stay the ring order and chains come back oldest first, so the
        // free list is the ring from `free_head` on.
        self.num_free += chain.ndesc;
        self.last_used_idx = self.last_used_idx.wrapping_add(1);
        if self.avail_flags_shadow & VIRTQ_AVAIL_F_NO_INTERRUPT == 0 {
            // virtio_store_mb(used_event = last_used_idx)
            self.bus
                .ram_write_u16(self.used_event_addr(), self.last_used_idx)?;
            fence(Ordering::SeqCst);
        }
        Ok((head, len))
    }

    /// Consumes the next used entry without any validation or bookkeeping: (id, len).
    /// For queues filled with the raw helpers.
    pub fn get_used_raw(&mut self) -> Result<Option<(u32, u32)>> {
        if self.used_idx()? == self.last_used_idx {
            return Ok(None);
        }
        fence(Ordering::Acquire);
        let elem = self.used_elem(self.last_used_idx);
        let id = self.bus.ram_read_u32(elem)?;
        let len = self.bus.ram_read_u32(elem + 4)?;
        self.last_used_idx = self.last_used_idx.wrapping_add(1);
        Ok(Some((id, len)))
    }

    /// Waits (bounded by the queue's timeout) for the next used buffer: sleeps on the
    /// queue's MSI-X vector when MSI-X is enabled, otherwise polls.
    pub fn wait_used(&mut self) -> Result<(u16, u32)> {
        self.wait_used_for(self.timeout)
    }

    /// [`wait_used`](Self::wait_used) with an explicit bound.
    pub fn wait_used_for(&mut self, timeout: Duration) -> Result<(u16, u32)> {
        let deadline = Instant::now() + timeout;
        let mut spins = 0u32;
        loop {
            if let Some(u) = self.get_used()? {
                return Ok(u);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(DriverError::Timeout("a used buffer"));
            }
            let slice = (deadline - now).min(Duration::from_millis(10));
            match self.msix_vector.filter(|_| self.bus.msix_enabled()) {
                Some(v) => {
                    self.bus.wait_msix(v, slice);
                }
                None => {
                    spins += 1;
                    if spins < 64 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(slice.min(Duration::from_micros(100)));
                    }
                }
            }
        }
    }

    // ---- Interrupt suppression -------------------------------------------------------------

    /// `virtqueue_disable_cb`: asks the device not to interrupt (avail flags without
    /// EVENT_IDX; Linux's `used_event = 0` with it).
    pub fn disable_cb(&mut self) -> Result<()> {
        if self.packed.is_some() {
            return self.packed_disable_cb();
        }
        if self.avail_flags_shadow & VIRTQ_AVAIL_F_NO_INTERRUPT == 0 {
            self.avail_flags_shadow |= VIRTQ_AVAIL_F_NO_INTERRUPT;
            if self.event_idx {
                self.bus.ram_write_u16(self.used_event_addr(), 0)?;
            } else {
                self.bus
                    .ram_write_u16(self.avail + AVAIL_FLAGS, self.avail_flags_shadow)?;
            }
        }
        Ok(())
    }

    /// `virtqueue_enable_cb`: re-enables interrupts; returns false if used buffers are
    /// already pending (the caller should process them instead of waiting).
    pub fn enable_cb(&mut self) -> Result<bool> {
        if self.packed.is_some() {
            return self.packed_enable_cb();
        }
        if self.avail_flags_shadow & VIRTQ_AVAIL_F_NO_INTERRUPT != 0 {
            self.avail_flags_shadow &= !VIRTQ_AVAIL_F_NO_INTERRUPT;
            if !self.event_idx {
                self.bus
                    .ram_write_u16(self.avail + AVAIL_FLAGS, self.avail_flags_shadow)?;
            }
        }
        self.bus
            .ram_write_u16(self.used_event_addr(), self.last_used_idx)?;
        fence(Ordering::SeqCst);
        Ok(!self.has_used()?)
    }

    // ---- Raw access for adversarial tests ---------------------------------------------------

    /// Writes descriptor `i` of the table verbatim (any flags/next/addr/len).
    pub fn write_raw_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) -> Result<()> {
        self.check_split()?;
        if i >= self.size {
            return Err(DriverError::BadQueueSize {
                index: self.index,
                size: i,
                max: self.size,
            });
        }
        self.write_desc(self.desc_entry(i), addr, len, flags, next)
    }

    /// Reads descriptor `i` back: (addr, len, flags, next).
    pub fn read_desc(&self, i: u16) -> Result<(u64, u32, u16, u16)> {
        let at = self.desc_entry(i % self.size);
        Ok((
            self.bus.ram_read_u64(at)?,
            self.bus.ram_read_u32(at + 8)?,
            self.bus.ram_read_u16(at + 12)?,
            self.bus.ram_read_u16(at + 14)?,
        ))
    }

    /// Writes a descriptor table entry anywhere in host RAM (e.g. building an indirect
    /// table by hand).
    pub fn write_desc_at(&self, at: u64, addr: u64, len: u32, flags: u16, next: u16) -> Result<()> {
        self.write_desc(at, addr, len, flags, next)
    }

    /// Publishes `head` (any value) in the next available slot, with the usual barrier,
    /// without touching the free list.
    pub fn push_avail_raw(&mut self, head: u16) -> Result<()> {
        self.check_split()?;
        self.publish(head)
    }

    /// Writes available ring slot `slot` (mod size) verbatim, without publishing.
    pub fn set_avail_ring_raw(&self, slot: u16, head: u16) -> Result<()> {
        self.check_split()?;
        Ok(self.bus.ram_write_u16(self.avail_slot(slot), head)?)
    }

    /// Sets the available index to `idx` (also the driver's copy), e.g. far ahead of the
    /// entries actually written.
    pub fn set_avail_idx_raw(&mut self, idx: u16) -> Result<()> {
        self.check_split()?;
        fence(Ordering::Release);
        self.avail_idx_shadow = idx;
        Ok(self.bus.ram_write_u16(self.avail + AVAIL_IDX, idx)?)
    }

    /// Writes the available ring's flags verbatim.
    pub fn set_avail_flags_raw(&mut self, flags: u16) -> Result<()> {
        self.check_split()?;
        self.avail_flags_shadow = flags;
        Ok(self.bus.ram_write_u16(self.avail + AVAIL_FLAGS, flags)?)
    }

    /// Writes `used_event` verbatim.
    pub fn set_used_event_raw(&self, v: u16) -> Result<()> {
        self.check_split()?;
        Ok(self.bus.ram_write_u16(self.used_event_addr(), v)?)
    }

    /// The driver's `used_event`.
    pub fn used_event(&self) -> Result<u16> {
        Ok(self.bus.ram_read_u16(self.used_event_addr())?)
    }

    /// The device's `avail_event`.
    pub fn avail_event(&self) -> Result<u16> {
        Ok(self.bus.ram_read_u16(self.avail_event_addr())?)
    }

    /// The device's used-ring flags.
    pub fn used_flags(&self) -> Result<u16> {
        Ok(self.bus.ram_read_u16(self.used + USED_FLAGS)?)
    }

    /// Used ring entry `slot` (mod size): (id, len).
    pub fn used_entry(&self, slot: u16) -> Result<(u32, u32)> {
        let e = self.used_elem(slot);
        Ok((self.bus.ram_read_u32(e)?, self.bus.ram_read_u32(e + 4)?))
    }
}
