//! The packed-ring half of [`HostQueue`] (virtio 1.2 section 2.8), used when
//! VIRTIO_F_RING_PACKED was negotiated, written from the spec in the manner of Linux's
//! `virtio_ring.c` packed code: buffer ids from a shadow free list, a chain's descriptors
//! written at consecutive ring positions with the first one's flags stored last (after a
//! write barrier), the driver's two wrap counters, used descriptors validated like
//! `BAD_RING` (an id not in flight breaks the queue), and both event suppression structures
//! (`kick_prepare` reads the device's; `enable_cb`/`disable_cb`/`get_used` write the
//! driver's).

use super::error::{DriverError, Result};
use super::queue::{Buf, HostQueue};
use super::spec::*;
use std::sync::atomic::{fence, Ordering};

/// Driver-side packed ring state.
#[derive(Debug)]
pub(crate) struct PackedState {
    pub next_avail: u16,
    pub avail_wrap: bool,
    pub last_used: u16,
    pub used_wrap: bool,
    /// Free buffer ids (a stack).
    pub free_ids: Vec<u16>,
    /// Ring descriptors of each in-flight id (0: free).
    pub ndesc: Vec<u16>,
    /// Our last write of the driver event suppression flags.
    pub event_flags: u16,
}

impl PackedState {
    pub fn new(size: u16) -> PackedState {
        PackedState {
            next_avail: 0,
            avail_wrap: true,
            last_used: 0,
            used_wrap: true,
            free_ids: (0..size).rev().collect(),
            ndesc: vec![0; usize::from(size)],
            event_flags: RING_EVENT_FLAGS_ENABLE,
        }
    }
}

/// The AVAIL/USED bits of an available descriptor written with wrap counter `wrap`.
fn avail_bits(wrap: bool) -> u16 {
    if wrap {
        VIRTQ_DESC_F_AVAIL
    } else {
        VIRTQ_DESC_F_USED
    }
}

/// Whether `flags` mark a descriptor used for a driver whose used wrap counter is `wrap`.
fn is_used(flags: u16, wrap: bool) -> bool {
    (flags & VIRTQ_DESC_F_AVAIL != 0) == wrap && (flags & VIRTQ_DESC_F_USED != 0) == wrap
}

fn off_wrap(pos: u16, wrap: bool) -> u16 {
    pos | (u16::from(wrap) << 15)
}

impl HostQueue {
    fn pk(&self) -> &PackedState {
        self.packed.as_ref().expect("packed queue")
    }

    fn pk_mut(&mut self) -> &mut PackedState {
        self.packed.as_mut().expect("packed queue")
    }

    fn packed_desc(&self, pos: u16) -> u64 {
        self.desc + DESC_SIZE * u64::from(pos)
    }

    /// Writes `bufs` (direct descriptors, or one INDIRECT descriptor when `indirect` is the
    /// table's (address, length)) at the next available positions and publishes them.
    pub(crate) fn packed_add(&mut self, bufs: &[Buf], indirect: Option<(u64, u32)>) -> Result<u16> {
        let n = if indirect.is_some() { 1 } else { bufs.len() };
        if n > usize::from(self.num_free) || self.pk().free_ids.is_empty() {
            return Err(DriverError::QueueFull {
                needed: n,
                free: self.num_free,
            });
        }
        let id = self.pk_mut().free_ids.pop().expect("checked");
        let size = self.size;
        let (mut pos, mut wrap) = (self.pk().next_avail, self.pk().avail_wrap);
        let mut head_flags = 0;
        let head_pos = pos;
        let desc_at = |k: usize| match indirect {
            Some((table, len)) => (table, len, VIRTQ_DESC_F_INDIRECT),
            None => {
                let (a, l, w) = bufs[k];
                (a, l, if w { VIRTQ_DESC_F_WRITE } else { 0 })
            }
        };
        for k in 0..n {
            let (addr, len, mut flags) = desc_at(k);
            if k + 1 < n {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            flags |= avail_bits(wrap);
            let mut d = [0u8; DESC_SIZE as usize];
            d[0..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&id.to_le_bytes());
            if k == 0 {
                // The first descriptor's flags go last.
                head_flags = flags;
                self.bus.ram_write(self.packed_desc(pos), &d[..14])?;
            } else {
                d[14..16].copy_from_slice(&flags.to_le_bytes());
                self.bus.ram_write(self.packed_desc(pos), &d)?;
            }
            pos += 1;
            if pos == size {
                pos = 0;
                wrap = !wrap;
            }
        }
        // virtio_wmb: the chain before the first descriptor's flags.
        fence(Ordering::Release);
        self.bus
            .ram_write_u16(self.packed_desc(head_pos) + PACKED_DESC_FLAGS, head_flags)?;
        let st = self.pk_mut();
        st.next_avail = pos;
        st.avail_wrap = wrap;
        st.ndesc[usize::from(id)] = n as u16;
        self.num_free -= n as u16;
        self.num_added = self.num_added.wrapping_add(n as u16);
        Ok(id)
    }

    /// `virtqueue_kick_prepare_packed`.
    pub(crate) fn packed_kick_prepare(&mut self) -> Result<bool> {
        // virtio_mb: expose the descriptors before reading the device's event structure.
        fence(Ordering::SeqCst);
        let added = self.num_added;
        self.num_added = 0;
        let flags = self.bus.ram_read_u16(self.used + EVENT_FLAGS)?;
        Ok(match flags {
            RING_EVENT_FLAGS_DISABLE => false,
            RING_EVENT_FLAGS_DESC if self.event_idx => {
                fence(Ordering::Acquire);
                let ow = self.bus.ram_read_u16(self.used + EVENT_OFF_WRAP)?;
                let (event, ewrap) = (ow & 0x7fff, ow & 0x8000 != 0);
                let st = self.pk();
                // Moving back one ring for an event on the other lap, like Linux.
                let event = if ewrap == st.avail_wrap {
                    event
                } else {
                    event.wrapping_sub(self.size)
                };
                let new = st.next_avail;
                vring_need_event(event, new, new.wrapping_sub(added))
            }
            // ENABLE, and anything else (a driver notifies rather than risk a stall).
            _ => true,
        })
    }

    /// Whether the descriptor at the driver's used position was marked used.
    pub(crate) fn packed_has_used(&self) -> Result<bool> {
        let st = self.pk();
        let flags = self
            .bus
            .ram_read_u16(self.packed_desc(st.last_used) + PACKED_DESC_FLAGS)?;
        Ok(is_used(flags, st.used_wrap))
    }

    /// `virtqueue_get_buf_ctx_packed`.
    pub(crate) fn packed_get_used(&mut self) -> Result<Option<(u16, u32)>> {
        let (id, len) = if self.batch_last.is_some() {
            // The next buffer of a batch: no ring read.
            self.next_in_batch()?
        } else {
            if !self.packed_has_used()? {
                return Ok(None);
            }
            // virtio_rmb: id and len only after the flags.
            fence(Ordering::Acquire);
            let at = self.packed_desc(self.pk().last_used);
            let len = self.bus.ram_read_u32(at + PACKED_DESC_LEN)?;
            let id = self.bus.ram_read_u16(at + PACKED_DESC_ID)?;
            if id >= self.size {
                return Err(self.bad_ring(format!("id {id} out of range")));
            }
            if self.in_order.is_some() {
                self.start_batch(id, len, self.size)?
            } else {
                (id, len)
            }
        };
        let n = self.pk().ndesc[usize::from(id)];
        if n == 0 {
            return Err(self.bad_ring(format!("id {id} is not in flight")));
        }
        let size = self.size;
        let event_idx = self.event_idx;
        let st = self.pk_mut();
        st.ndesc[usize::from(id)] = 0;
        st.free_ids.push(id);
        let mut p = st.last_used + n;
        if p >= size {
            p -= size;
            st.used_wrap = !st.used_wrap;
        }
        st.last_used = p;
        let (flags, ow) = (st.event_flags, off_wrap(st.last_used, st.used_wrap));
        self.num_free += n;
        if event_idx && flags == RING_EVENT_FLAGS_DESC {
            // virtio_store_mb(off_wrap = last used position)
            self.bus.ram_write_u16(self.avail + EVENT_OFF_WRAP, ow)?;
            fence(Ordering::SeqCst);
        }
        Ok(Some((id, len)))
    }

    fn packed_write_event_flags(&mut self, flags: u16) -> Result<()> {
        if self.pk().event_flags != flags {
            self.bus.ram_write_u16(self.avail + EVENT_FLAGS, flags)?;
            self.pk_mut().event_flags = flags;
        }
        Ok(())
    }

    /// `virtqueue_disable_cb_packed`.
    pub(crate) fn packed_disable_cb(&mut self) -> Result<()> {
        self.packed_write_event_flags(RING_EVENT_FLAGS_DISABLE)
    }

    /// `virtqueue_enable_cb_prepare_packed` + poll: returns false if used buffers are pending.
    pub(crate) fn packed_enable_cb(&mut self) -> Result<bool> {
        if self.event_idx {
            let st = self.pk();
            let ow = off_wrap(st.last_used, st.used_wrap);
            self.bus.ram_write_u16(self.avail + EVENT_OFF_WRAP, ow)?;
            // virtio_wmb: off_wrap before flags.
            fence(Ordering::Release);
            self.packed_write_event_flags(RING_EVENT_FLAGS_DESC)?;
        } else {
            self.packed_write_event_flags(RING_EVENT_FLAGS_ENABLE)?;
        }
        fence(Ordering::SeqCst);
        Ok(!self.packed_has_used()?)
    }

    // ---- Raw access for adversarial tests (packed) ------------------------------------------

    /// Writes ring descriptor `pos` of a packed ring verbatim: (addr, len, id, flags).
    pub fn write_packed_desc_raw(
        &self,
        pos: u16,
        addr: u64,
        len: u32,
        id: u16,
        flags: u16,
    ) -> Result<()> {
        if self.packed.is_none() || pos >= self.size {
            return Err(DriverError::FeatureNotNegotiated("VIRTIO_F_RING_PACKED"));
        }
        let mut d = [0u8; DESC_SIZE as usize];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&id.to_le_bytes());
        d[14..16].copy_from_slice(&flags.to_le_bytes());
        Ok(self.bus.ram_write(self.packed_desc(pos), &d)?)
    }

    /// The AVAIL/USED bits the driver's next available descriptor (plus `k` positions)
    /// would carry.
    pub fn packed_avail_bits(&self, k: u16) -> u16 {
        let st = self.pk();
        let laps = (u32::from(st.next_avail) + u32::from(k)) / u32::from(self.size);
        avail_bits(st.avail_wrap ^ (laps % 2 == 1))
    }

    /// The driver's next available position and wrap counter (packed rings).
    pub fn packed_next_avail(&self) -> Option<(u16, bool)> {
        self.packed.as_ref().map(|s| (s.next_avail, s.avail_wrap))
    }

    /// The device event suppression structure: (off_wrap, flags) (packed rings).
    pub fn device_event(&self) -> Result<(u16, u16)> {
        Ok((
            self.bus.ram_read_u16(self.used + EVENT_OFF_WRAP)?,
            self.bus.ram_read_u16(self.used + EVENT_FLAGS)?,
        ))
    }

    /// The driver event suppression structure: (off_wrap, flags) (packed rings).
    pub fn driver_event(&self) -> Result<(u16, u16)> {
        Ok((
            self.bus.ram_read_u16(self.avail + EVENT_OFF_WRAP)?,
            self.bus.ram_read_u16(self.avail + EVENT_FLAGS)?,
        ))
    }
}
