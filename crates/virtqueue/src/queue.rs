//! The device side of one virtqueue: the ring indices it owns, popping available chains,
//! publishing used elements, and both directions of notification suppression
//! (VRING_AVAIL_F_NO_INTERRUPT / VRING_USED_F_NO_NOTIFY, or VIRTIO_F_EVENT_IDX). This module
//! implements the split ring; a queue created with [`Queue::new_packed`] delegates every
//! operation to the packed ring of [`crate::packed`], behind the same API.
//!
//! Split ring memory ordering:
//! (virtio 1.2 section 2.7.13 and Linux's virtio_ring/vhost):
//! * `avail.idx` is read with a single-copy atomic `read_u16`, followed by an Acquire fence
//!   before ring entries and descriptors are read;
//! * a used element is written, then a Release fence, then `used.idx`;
//! * between publishing `used.idx` and reading `used_event` / `avail.flags`, and between
//!   writing `avail_event` / `used.flags` and re-reading `avail.idx`, a SeqCst fence.
//!
//! Notification data (VIRTIO_F_NOTIFICATION_DATA, section 2.9): [`Queue::note_notification`]
//! hands the queue the driver's next available index (split) or position (packed) from a
//! notification. It stands in for the read of `avail.idx` (split) or of the next
//! descriptor's flags (packed) that would otherwise start the pass, and, once the
//! announced buffers are popped, for the read that would find nothing more: the driver
//! wrote everything it announced before notifying. It is only a hint: a value outside the
//! window the ring allows is ignored, the re-check after re-enabling notifications
//! ([`Queue::enable_notification`]) always reads the ring, so an understated hint delays
//! nothing, and an overstated one is caught as a malformed ring (split: the next
//! `avail.idx` lies behind what was popped; packed: the descriptor flags, still checked,
//! show nothing available).

use crate::in_order::InOrder;
use crate::layout::{self, Ring};
use crate::packed::PackedRing;
use crate::split_cache::SplitCache;
use crate::walk::walk_chain;
use crate::{DescriptorChain, QueueError};
use epf_epc::{HostMemError, HostMemory};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use virtio_bindings::virtio_ring;

/// `avail.flags`: the driver does not want interrupts.
pub const VRING_AVAIL_F_NO_INTERRUPT: u16 = virtio_ring::VRING_AVAIL_F_NO_INTERRUPT as u16;
/// `used.flags`: the device does not want notifications.
pub const VRING_USED_F_NO_NOTIFY: u16 = virtio_ring::VRING_USED_F_NO_NOTIFY as u16;

/// Where the driver placed a queue's three areas, and its size. For a packed ring,
/// `desc_addr` is the descriptor ring, `avail_addr` the driver event suppression structure
/// ("Driver Area") and `used_addr` the device event suppression structure ("Device Area").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct QueueConfig {
    pub size: u16,
    pub desc_addr: u64,
    pub avail_addr: u64,
    pub used_addr: u64,
}

/// Counters of a queue's activity since it was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Chains successfully popped (minus undone pops).
    pub chains_popped: u64,
    /// Descriptors those chains consisted of (see [`DescriptorChain::descriptor_count`]).
    pub descriptors: u64,
    /// Readable plus writable bytes of those chains.
    pub bytes: u64,
    /// Used elements added.
    pub used_added: u64,
    /// Calls to [`Queue::needs_interrupt`] that returned true.
    pub interrupts_suggested: u64,
    /// Ring reads not made thanks to notification data (see [`Queue::note_notification`]):
    /// `avail.idx` reads (split) or reads of the next descriptor's flags (packed).
    pub ring_reads_saved: u64,
    /// Used entries not written under VIRTIO_F_IN_ORDER: buffers published by the entry of
    /// a later buffer of the same batch (see [`Queue::set_in_order`]).
    pub used_elided: u64,
}

/// The device side of a split or packed virtqueue.
pub struct Queue {
    /// The packed ring's state when VIRTIO_F_RING_PACKED is in use (the split fields below
    /// are then unused, except `cfg`, `mem`, `event_idx` and `stats`).
    packed: Option<Box<PackedRing>>,
    cfg: QueueConfig,
    mem: Arc<dyn HostMemory>,
    event_idx: bool,
    next_avail: u16,
    next_used: u16,
    /// The last validated value of `avail.idx`; entries up to it can be popped without reading
    /// `avail.idx` again. Equal to `next_avail` when nothing is known to be pending.
    avail_idx: u16,
    /// The driver's next available index from the last notification's data, until the pops
    /// reach it (or it is found outside the window and dropped).
    announced: Option<u16>,
    /// Our copy of `used.flags` (only the device writes it).
    used_flags: u16,
    /// Used elements added since `needs_interrupt` last returned true (saturating).
    unsignalled: u32,
    /// Descriptors and bytes of the last pop, for `undo_pop`.
    last_pop: Option<(u32, u64)>,
    /// Available entries and descriptors read in batches (split ring).
    cache: Box<SplitCache>,
    /// The buffers popped and not yet published, when VIRTIO_F_IN_ORDER is in use.
    in_order: Option<Box<InOrder>>,
    stats: QueueStats,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("cfg", &self.cfg)
            .field("packed", &self.packed)
            .field("event_idx", &self.event_idx)
            .field("next_avail", &self.next_avail)
            .field("next_used", &self.next_used)
            .field("avail_idx", &self.avail_idx)
            .field("used_flags", &self.used_flags)
            .field("unsignalled", &self.unsignalled)
            .field("in_order", &self.in_order)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

pub(crate) fn check_ring(
    mem: &dyn HostMemory,
    ring: Ring,
    addr: u64,
    size: u16,
) -> Result<(), QueueError> {
    if addr % ring.align() != 0 {
        return Err(QueueError::Misaligned { ring, addr });
    }
    let len = ring.area_size(size);
    let out_of_range = QueueError::RingOutOfRange { ring, addr, len };
    if addr.checked_add(len).is_none() {
        return Err(out_of_range);
    }
    match mem.check_range(addr, len) {
        Ok(()) => Ok(()),
        Err(HostMemError::OutOfRange { .. } | HostMemError::Overflow { .. }) => Err(out_of_range),
        Err(e) => Err(e.into()),
    }
}

impl Queue {
    /// Validates `cfg` (size a power of two in `1..=32768`; descriptor table 16-byte, available
    /// ring 2-byte, used ring 4-byte aligned; all three areas, event fields included, entirely
    /// inside host memory according to [`HostMemory::check_range`]) and creates the
    /// device-side state with `next_avail = next_used = 0`. Does not access ring memory.
    pub fn new(
        cfg: QueueConfig,
        mem: Arc<dyn HostMemory>,
        event_idx: bool,
    ) -> Result<Queue, QueueError> {
        if !layout::valid_size(cfg.size) {
            return Err(QueueError::BadSize { size: cfg.size });
        }
        check_ring(&*mem, Ring::Descriptors, cfg.desc_addr, cfg.size)?;
        check_ring(&*mem, Ring::Avail, cfg.avail_addr, cfg.size)?;
        check_ring(&*mem, Ring::Used, cfg.used_addr, cfg.size)?;
        Ok(Queue {
            packed: None,
            cfg,
            mem,
            event_idx,
            next_avail: 0,
            next_used: 0,
            avail_idx: 0,
            announced: None,
            used_flags: 0,
            unsignalled: 0,
            last_pop: None,
            cache: Box::new(SplitCache::new()),
            in_order: None,
            stats: QueueStats::default(),
        })
    }

    /// A packed-ring queue (VIRTIO_F_RING_PACKED): validates `cfg` (size in `1..=32768`, not
    /// necessarily a power of two; descriptor ring 16-byte aligned, event suppression
    /// structures 4-byte aligned, all inside host memory) and creates the device-side state
    /// at ring position 0 with both wrap counters set. Does not access ring memory.
    pub fn new_packed(
        cfg: QueueConfig,
        mem: Arc<dyn HostMemory>,
        event_idx: bool,
    ) -> Result<Queue, QueueError> {
        let packed = PackedRing::new(
            &*mem,
            cfg.size,
            cfg.desc_addr,
            cfg.avail_addr,
            cfg.used_addr,
            event_idx,
        )?;
        Ok(Queue {
            packed: Some(Box::new(packed)),
            cfg,
            mem,
            event_idx,
            next_avail: 0,
            next_used: 0,
            avail_idx: 0,
            announced: None,
            used_flags: 0,
            unsignalled: 0,
            last_pop: None,
            cache: Box::new(SplitCache::new()),
            in_order: None,
            stats: QueueStats::default(),
        })
    }

    /// Whether this is a packed ring.
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// The queue size.
    pub fn size(&self) -> u16 {
        self.cfg.size
    }

    /// The configuration the queue was created with.
    pub fn config(&self) -> QueueConfig {
        self.cfg
    }

    /// Whether VIRTIO_F_EVENT_IDX is in use.
    pub fn event_idx(&self) -> bool {
        self.event_idx
    }

    /// Uses buffers in order (VIRTIO_F_IN_ORDER negotiated, virtio 1.2 section 2.7.9 / 2.8.14):
    /// used entries are published in the order the chains were popped, a completion that
    /// overtakes an older buffer waiting for it, and a run of completions is published with
    /// the one used entry of its last buffer wherever the driver may take the others as used
    /// completely (each skipped one wrote all of its device-writable bytes, or it has none).
    /// Call it before the first pop; it forgets what was popped before.
    pub fn set_in_order(&mut self, on: bool) {
        self.in_order = on.then(Box::default);
    }

    /// Whether buffers are used in order (see [`set_in_order`](Self::set_in_order)).
    pub fn in_order(&self) -> bool {
        self.in_order.is_some()
    }

    /// The host memory the rings live in.
    pub fn memory(&self) -> &Arc<dyn HostMemory> {
        &self.mem
    }

    /// Index (free running, mod 2^16) of the next available-ring entry to pop. Packed ring:
    /// the next ring position with the wrap counter in bit 15 (the `off_wrap` encoding).
    pub fn next_avail(&self) -> u16 {
        match &self.packed {
            Some(p) => p.next_avail(),
            None => self.next_avail,
        }
    }

    /// Index (free running, mod 2^16) of the next used-ring element to write. Packed ring:
    /// the next used position in the `off_wrap` encoding.
    pub fn next_used(&self) -> u16 {
        match &self.packed {
            Some(p) => p.next_used(),
            None => self.next_used,
        }
    }

    /// Sets the next available index (restoring saved state, or tests of 16-bit wrap-around).
    /// Forgets what is known about `avail.idx`. Packed ring: `off_wrap` encoding.
    pub fn set_next_avail(&mut self, idx: u16) {
        if let Some(o) = &mut self.in_order {
            o.clear();
        }
        if let Some(p) = &mut self.packed {
            p.set_next_avail(idx);
            self.last_pop = None;
            return;
        }
        self.next_avail = idx;
        self.avail_idx = idx;
        self.cache.invalidate();
        self.announced = None;
        self.last_pop = None;
    }

    /// Notification data (VIRTIO_F_NOTIFICATION_DATA): `next` is the upper half of the
    /// 32-bit value the driver wrote to this queue's notification address, i.e. its next
    /// available index (split: `next_idx`) or position (packed: `next_off` in bits 0-14,
    /// `next_wrap` in bit 15). The next pops trust it instead of reading the ring's index or
    /// flags (see the module documentation for how a wrong value is contained). Replaces an
    /// earlier value. Accesses no memory.
    pub fn note_notification(&mut self, next: u16) {
        match &mut self.packed {
            Some(p) => p.note_notification(next),
            None => self.announced = Some(next),
        }
    }

    /// Sets the next used index. The caller keeps `used.idx` in memory consistent with it.
    /// Packed ring: `off_wrap` encoding; forgets the buffers in flight.
    pub fn set_next_used(&mut self, idx: u16) {
        if let Some(o) = &mut self.in_order {
            o.clear();
        }
        if let Some(p) = &mut self.packed {
            p.set_next_used(idx);
            return;
        }
        self.next_used = idx;
        self.unsignalled = 0;
    }

    /// Activity counters.
    pub fn stats(&self) -> QueueStats {
        let mut s = self.stats;
        if let Some(p) = &self.packed {
            s.ring_reads_saved = p.ring_reads_saved();
        }
        if let Some(o) = &self.in_order {
            s.used_elided = o.elided;
        }
        s
    }

    /// Reads and validates `avail.idx`, then orders later ring reads after it.
    fn refresh_avail_idx(&mut self) -> Result<(), QueueError> {
        let idx = self
            .mem
            .read_u16(layout::avail_idx_addr(self.cfg.avail_addr))?;
        fence(Ordering::Acquire);
        if idx.wrapping_sub(self.next_avail) > self.cfg.size {
            return Err(QueueError::AvailIdxJump {
                old: self.next_avail,
                new: idx,
                size: self.cfg.size,
            });
        }
        if idx != self.avail_idx {
            self.cache.invalidate();
        }
        self.avail_idx = idx;
        Ok(())
    }

    /// True if the available ring has entries not yet popped. Reads `avail.idx` only when
    /// everything seen so far was popped and no notification data says otherwise (see
    /// [`note_notification`](Self::note_notification)). Fails with
    /// [`QueueError::AvailIdxJump`] like `pop`.
    pub fn has_available(&mut self) -> Result<bool, QueueError> {
        if let Some(p) = &mut self.packed {
            return p.has_available(&*self.mem);
        }
        if self.avail_idx == self.next_avail {
            match self.announced {
                // Everything the driver announced was popped: nothing more until the
                // re-check after notifications are re-enabled, which reads.
                Some(next) if next == self.next_avail => {
                    self.announced = None;
                    self.stats.ring_reads_saved += 1;
                    return Ok(false);
                }
                // The driver wrote these entries (and avail.idx) before notifying; the
                // Acquire pairs with the notification's delivery like the avail.idx read's.
                Some(next) if next.wrapping_sub(self.next_avail) <= self.cfg.size => {
                    fence(Ordering::Acquire);
                    if next != self.avail_idx {
                        self.cache.invalidate();
                    }
                    self.avail_idx = next;
                    self.stats.ring_reads_saved += 1;
                }
                // Behind what was popped (a stale notification) or beyond the ring.
                Some(_) => {
                    self.announced = None;
                    self.refresh_avail_idx()?;
                }
                None => self.refresh_avail_idx()?,
            }
        }
        Ok(self.avail_idx != self.next_avail)
    }

    /// Pops the next available chain into `chain`, reusing its buffers. `Ok(false)` when the
    /// ring is empty. Every host-provided value is validated (see the `walk` module); on `Err`
    /// the queue is broken and the caller puts the device into DEVICE_NEEDS_RESET (the queue's
    /// state is left unchanged, so popping again fails the same way).
    pub fn pop(&mut self, chain: &mut DescriptorChain) -> Result<bool, QueueError> {
        if let Some(p) = &mut self.packed {
            if !p.pop(&*self.mem, chain)? {
                return Ok(false);
            }
        } else {
            // Entries known to be pending need no look at the ring or the hint.
            if self.avail_idx == self.next_avail && !self.has_available()? {
                return Ok(false);
            }
            let size = self.cfg.size;
            if self
                .in_order
                .as_ref()
                .is_some_and(|o| o.outstanding() >= usize::from(size))
            {
                return Err(QueueError::InOrderOverrun { size });
            }
            let head = self.cache.avail_entry(
                &*self.mem,
                self.cfg.avail_addr,
                size,
                self.next_avail,
                self.avail_idx,
            )?;
            walk_chain(
                &*self.mem,
                self.cfg.desc_addr,
                size,
                head,
                chain,
                &mut self.cache.descs,
            )?;
            self.next_avail = self.next_avail.wrapping_add(1);
        }
        let descs = chain.descriptor_count();
        let bytes = chain.readable_len() + chain.writable_len();
        if let Some(o) = &mut self.in_order {
            let span = match &self.packed {
                Some(p) => p.span_of(chain.head()),
                None => 1,
            };
            o.popped(chain.head(), chain.writable_len(), span);
        }
        self.last_pop = Some((descs, bytes));
        self.stats.chains_popped += 1;
        self.stats.descriptors += u64::from(descs);
        self.stats.bytes += bytes;
        Ok(true)
    }

    /// Returns the last popped chain to the ring (`next_avail -= 1`), e.g. when the device
    /// cannot serve it yet; the next `pop` yields it again. Only the most recent pop can be
    /// undone: without a successful pop since the last `undo_pop` / `set_next_avail` this does
    /// nothing (and logs a warning).
    pub fn undo_pop(&mut self) {
        let Some((descs, bytes)) = self.last_pop.take() else {
            log::warn!("virtqueue: undo_pop without a preceding pop");
            return;
        };
        if let Some(o) = &mut self.in_order {
            o.undo_pop();
        }
        match &mut self.packed {
            Some(p) => {
                p.undo_pop();
            }
            None => self.next_avail = self.next_avail.wrapping_sub(1),
        }
        self.stats.chains_popped -= 1;
        self.stats.descriptors -= u64::from(descs);
        self.stats.bytes -= bytes;
    }

    /// Writes the used element `{ id: head, len }` and publishes it by storing the new
    /// `used.idx` (after a Release fence).
    ///
    /// Packed ring: writes the used descriptor `{ id: head, len }` at the next used position,
    /// then its flags, and advances by the number of ring descriptors the buffer took;
    /// `head` must be in flight ([`QueueError::UsedIdNotInFlight`] otherwise).
    pub fn add_used(&mut self, head: u16, len: u32) -> Result<(), QueueError> {
        if self.in_order.is_some() {
            return self.add_used_in_order(&[(head, len)]);
        }
        if let Some(p) = &mut self.packed {
            p.add_used(&*self.mem, head, len)?;
            self.last_pop = None;
            self.stats.used_added += 1;
            return Ok(());
        }
        let size = self.cfg.size;
        if head >= size {
            return Err(QueueError::UsedIdOutOfRange { id: head, size });
        }
        let mut elem = [0u8; layout::USED_ELEM_SIZE as usize];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        self.mem.write(
            layout::used_elem_addr(self.cfg.used_addr, size, self.next_used),
            &elem,
        )?;
        let new = self.next_used.wrapping_add(1);
        fence(Ordering::Release);
        self.mem
            .write_u16(layout::used_idx_addr(self.cfg.used_addr), new)?;
        self.next_used = new;
        self.unsignalled = self.unsignalled.saturating_add(1);
        self.stats.used_added += 1;
        Ok(())
    }

    /// Writes the used elements `elems` (`(head, len)` in order) and publishes all of them with
    /// a single `used.idx` store (after a Release fence), so the driver sees either none or all
    /// of them. virtio-net needs this for a packet spread over several merged receive buffers
    /// (VIRTIO_NET_F_MRG_RXBUF): a driver that saw only the first buffer would find the others
    /// missing (vhost's `vhost_add_used_n`, QEMU's `virtqueue_fill` + `virtqueue_flush`).
    /// Every id is checked before anything is written; more elements than the queue size is
    /// refused the same way (the ring cannot hold them).
    ///
    /// Packed ring: every id must be in flight and appear once; all descriptors but the first
    /// are written whole, then the first one's flags publish them all.
    pub fn add_used_many(&mut self, elems: &[(u16, u32)]) -> Result<(), QueueError> {
        if self.in_order.is_some() {
            return self.add_used_in_order(elems);
        }
        if let Some(p) = &mut self.packed {
            p.add_used_many(&*self.mem, elems)?;
            if !elems.is_empty() {
                self.last_pop = None;
            }
            self.stats.used_added += elems.len() as u64;
            return Ok(());
        }
        let size = self.cfg.size;
        if let Some(&(id, _)) = elems.iter().find(|&&(h, _)| h >= size) {
            return Err(QueueError::UsedIdOutOfRange { id, size });
        }
        if elems.len() > usize::from(size) {
            return Err(QueueError::UsedIdOutOfRange {
                id: u16::try_from(elems.len()).unwrap_or(u16::MAX),
                size,
            });
        }
        if elems.is_empty() {
            return Ok(());
        }
        // Consecutive elements in one write each run: up to the ring's end, at most
        // USED_BATCH at a time.
        const USED_BATCH: usize = 32;
        const ELEM: usize = layout::USED_ELEM_SIZE as usize;
        let mut idx = self.next_used;
        let mut rest = elems;
        while !rest.is_empty() {
            let to_end = usize::from(size - idx % size);
            let (run, tail) = rest.split_at(rest.len().min(USED_BATCH).min(to_end));
            let mut buf = [0u8; USED_BATCH * ELEM];
            for (&(head, len), e) in run.iter().zip(buf.chunks_exact_mut(ELEM)) {
                e[..4].copy_from_slice(&u32::from(head).to_le_bytes());
                e[4..].copy_from_slice(&len.to_le_bytes());
            }
            self.mem.write(
                layout::used_elem_addr(self.cfg.used_addr, size, idx),
                &buf[..run.len() * ELEM],
            )?;
            idx = idx.wrapping_add(run.len() as u16);
            rest = tail;
        }
        fence(Ordering::Release);
        self.mem
            .write_u16(layout::used_idx_addr(self.cfg.used_addr), idx)?;
        self.next_used = idx;
        let n = elems.len() as u32;
        self.unsignalled = self.unsignalled.saturating_add(n);
        self.stats.used_added += u64::from(n);
        Ok(())
    }

    /// `add_used` / `add_used_many` under VIRTIO_F_IN_ORDER: marks the completions; they
    /// are published by the next [`flush_used`](Self::flush_used).
    fn add_used_in_order(&mut self, elems: &[(u16, u32)]) -> Result<(), QueueError> {
        let Some(o) = self.in_order.as_mut() else {
            return Ok(());
        };
        o.complete(elems)?;
        self.stats.used_added += elems.len() as u64;
        if !elems.is_empty() {
            self.last_pop = None;
        }
        Ok(())
    }

    /// Under VIRTIO_F_IN_ORDER ([`set_in_order`](Self::set_in_order)), `add_used` and
    /// `add_used_many` only record completions, so that a device pass's completions go out
    /// together; this publishes the completed buffers at the front of the queue in batches
    /// (see the `in_order` module), and [`needs_interrupt`](Self::needs_interrupt) calls it
    /// first. Split ring: each batch's element is written where its first buffer's would
    /// be, then one `used.idx` store covers them all. Packed ring: each batch's used
    /// descriptor overwrites its batch's first descriptor, the first batch's flags last.
    /// Without in-order use, buffers are published as they are added and this does nothing.
    pub fn flush_used(&mut self) -> Result<(), QueueError> {
        let Some(o) = self.in_order.as_mut() else {
            return Ok(());
        };
        o.take_ready();
        if o.batches.is_empty() {
            return Ok(());
        }
        if let Some(p) = &mut self.packed {
            return p.add_used_batches(&*self.mem, &o.batches, &o.retired);
        }
        let size = self.cfg.size;
        let mut idx = self.next_used;
        for b in &o.batches {
            let mut elem = [0u8; layout::USED_ELEM_SIZE as usize];
            elem[..4].copy_from_slice(&u32::from(b.id).to_le_bytes());
            elem[4..].copy_from_slice(&b.len.to_le_bytes());
            self.mem
                .write(layout::used_elem_addr(self.cfg.used_addr, size, idx), &elem)?;
            idx = idx.wrapping_add(b.count);
        }
        fence(Ordering::Release);
        self.mem
            .write_u16(layout::used_idx_addr(self.cfg.used_addr), idx)?;
        let n = o.retired.len() as u32;
        self.next_used = idx;
        self.unsignalled = self.unsignalled.saturating_add(n);
        Ok(())
    }

    /// Whether the driver must be interrupted for the used elements added since the last call
    /// that returned true. With VIRTIO_F_EVENT_IDX: whether `used_event` lies among those
    /// elements (`vring_need_event(used_event, next_used, next_used - added)`); otherwise:
    /// whether `avail.flags` lacks VRING_AVAIL_F_NO_INTERRUPT. Returns false, without
    /// accessing memory, if nothing was added.
    ///
    /// Packed ring: the driver event suppression structure decides (ENABLE, DISABLE, or DESC
    /// with VIRTIO_F_EVENT_IDX: whether the used position passed its `off_wrap`).
    pub fn needs_interrupt(&mut self) -> Result<bool, QueueError> {
        self.flush_used()?;
        if let Some(p) = &mut self.packed {
            let need = p.needs_interrupt(&*self.mem)?;
            if need {
                self.stats.interrupts_suggested += 1;
            }
            return Ok(need);
        }
        if self.unsignalled == 0 {
            return Ok(false);
        }
        // Order the used.idx store before the reads of used_event / avail.flags, pairing with
        // the driver's barrier between writing used_event and re-reading used.idx.
        fence(Ordering::SeqCst);
        let need = if self.event_idx {
            let event = self
                .mem
                .read_u16(layout::used_event_addr(self.cfg.avail_addr, self.cfg.size))?;
            if self.unsignalled > u32::from(u16::MAX) {
                // More than 2^16 - 1 elements since the last interrupt: the 16-bit window
                // cannot express that; any event index has been passed.
                true
            } else {
                let old = self.next_used.wrapping_sub(self.unsignalled as u16);
                layout::vring_need_event(event, self.next_used, old)
            }
        } else {
            let flags = self
                .mem
                .read_u16(layout::avail_flags_addr(self.cfg.avail_addr))?;
            flags & VRING_AVAIL_F_NO_INTERRUPT == 0
        };
        if need {
            self.unsignalled = 0;
            self.stats.interrupts_suggested += 1;
        }
        Ok(need)
    }

    fn write_used_flags(&mut self, flags: u16) -> Result<(), QueueError> {
        self.mem
            .write_u16(layout::used_flags_addr(self.cfg.used_addr), flags)?;
        self.used_flags = flags;
        Ok(())
    }

    /// Asks the driver for notifications again: without EVENT_IDX clears
    /// VRING_USED_F_NO_NOTIFY, with EVENT_IDX writes `avail_event = next_avail`. Returns
    /// `Ok(true)` if buffers are available (possibly made available before the driver saw the
    /// change, so it may not notify for them): the caller must process the queue again.
    ///
    /// Packed ring: device event suppression flags ENABLE, or with EVENT_IDX `off_wrap` = the
    /// next available position and flags DESC.
    ///
    /// The re-check reads the ring whatever notification data said: buffers made available
    /// after the last notification are only found this way.
    pub fn enable_notification(&mut self) -> Result<bool, QueueError> {
        if let Some(p) = &mut self.packed {
            return p.enable_notification(&*self.mem);
        }
        self.announced = None;
        if self.event_idx {
            self.mem.write_u16(
                layout::avail_event_addr(self.cfg.used_addr, self.cfg.size),
                self.next_avail,
            )?;
        } else {
            self.write_used_flags(self.used_flags & !VRING_USED_F_NO_NOTIFY)?;
        }
        // Order the store above before the re-read of avail.idx (pairs with the driver's
        // barrier between writing avail.idx and reading used.flags / avail_event).
        fence(Ordering::SeqCst);
        self.has_available()
    }

    /// Asks the driver not to notify: sets VRING_USED_F_NO_NOTIFY without EVENT_IDX; a no-op
    /// with EVENT_IDX (the driver only notifies when passing `avail_event`, which is not
    /// advanced until the next [`enable_notification`](Queue::enable_notification)).
    ///
    /// Packed ring: device event suppression flags DISABLE (a no-op with EVENT_IDX, likewise).
    pub fn disable_notification(&mut self) -> Result<(), QueueError> {
        if let Some(p) = &mut self.packed {
            return p.disable_notification(&*self.mem);
        }
        if self.event_idx {
            return Ok(());
        }
        self.write_used_flags(self.used_flags | VRING_USED_F_NO_NOTIFY)
    }
}
