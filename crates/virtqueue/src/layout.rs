//! Split-virtqueue memory layout (virtio 1.2 section 2.7): sizes, alignments and the address of
//! every field of the three ring areas, plus the sizes of the packed ring's event suppression
//! areas ([`Ring::DriverEvent`], [`Ring::DeviceEvent`]; the packed descriptor format is in
//! [`crate::packed::format`]). Pure arithmetic; nothing here touches memory.
//!
//! All functions take a queue size that [`Queue::new`](crate::Queue::new) has validated
//! (a power of two in `1..=MAX_QUEUE_SIZE`) and ring base addresses whose whole area was
//! checked to be inside host memory, so none of the additions below can overflow.

use std::fmt;

/// Largest queue size the split ring allows (virtio 1.2 section 2.7: "Queue Size ... maximum
/// 32768").
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Size of one descriptor (`struct virtq_desc`).
pub const DESC_SIZE: u64 = 16;
/// Size of one used-ring element (`struct virtq_used_elem`).
pub const USED_ELEM_SIZE: u64 = 8;

/// Required alignment of the descriptor table.
pub const DESC_ALIGN: u64 = 16;
/// Required alignment of the available (driver) ring.
pub const AVAIL_ALIGN: u64 = 2;
/// Required alignment of the used (device) ring.
pub const USED_ALIGN: u64 = 4;

/// Size of a packed ring's event suppression structure (`struct pvirtq_event_suppress`).
pub const EVENT_SUPPRESS_SIZE: u64 = 4;
/// Required alignment of a packed ring's event suppression structures.
pub const EVENT_SUPPRESS_ALIGN: u64 = 4;

/// One of the three areas of a split virtqueue, or of a packed one (whose descriptor ring
/// is [`Ring::Descriptors`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ring {
    /// The descriptor table ("Descriptor Area").
    Descriptors,
    /// The available ring ("Driver Area").
    Avail,
    /// The used ring ("Device Area").
    Used,
    /// The packed ring's driver event suppression structure ("Driver Area").
    DriverEvent,
    /// The packed ring's device event suppression structure ("Device Area").
    DeviceEvent,
}

impl fmt::Display for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ring::Descriptors => "descriptor table",
            Ring::Avail => "available ring",
            Ring::Used => "used ring",
            Ring::DriverEvent => "driver event suppression area",
            Ring::DeviceEvent => "device event suppression area",
        })
    }
}

impl Ring {
    /// Required alignment of this area.
    pub const fn align(self) -> u64 {
        match self {
            Ring::Descriptors => DESC_ALIGN,
            Ring::Avail => AVAIL_ALIGN,
            Ring::Used => USED_ALIGN,
            Ring::DriverEvent | Ring::DeviceEvent => EVENT_SUPPRESS_ALIGN,
        }
    }

    /// Size in bytes of this area for a queue of `size` entries, including the event fields
    /// (`used_event` / `avail_event`), which the spec counts whether or not
    /// VIRTIO_F_EVENT_IDX is negotiated.
    pub const fn area_size(self, size: u16) -> u64 {
        match self {
            Ring::Descriptors => desc_table_size(size),
            Ring::Avail => avail_ring_size(size),
            Ring::Used => used_ring_size(size),
            Ring::DriverEvent | Ring::DeviceEvent => EVENT_SUPPRESS_SIZE,
        }
    }
}

/// Descriptor table size: `16 * size`.
pub const fn desc_table_size(size: u16) -> u64 {
    DESC_SIZE * size as u64
}

/// Available ring size: `flags + idx + ring[size] + used_event` = `6 + 2 * size`.
pub const fn avail_ring_size(size: u16) -> u64 {
    6 + 2 * size as u64
}

/// Used ring size: `flags + idx + ring[size] + avail_event` = `6 + 8 * size`.
pub const fn used_ring_size(size: u16) -> u64 {
    6 + USED_ELEM_SIZE * size as u64
}

/// Whether `size` is a valid split-queue size.
pub const fn valid_size(size: u16) -> bool {
    size != 0 && size <= MAX_QUEUE_SIZE && size.is_power_of_two()
}

/// `size` if it is a valid split-queue size.
pub fn check_size(size: u16) -> Result<u16, crate::QueueSizeError> {
    if valid_size(size) {
        Ok(size)
    } else {
        Err(crate::QueueSizeError(size))
    }
}

/// Address of descriptor `index` in a table at `table`.
pub const fn desc_addr(table: u64, index: u16) -> u64 {
    table + DESC_SIZE * index as u64
}

/// Address of `avail.flags`.
pub const fn avail_flags_addr(avail: u64) -> u64 {
    avail
}

/// Address of `avail.idx`.
pub const fn avail_idx_addr(avail: u64) -> u64 {
    avail + 2
}

/// Address of `avail.ring[idx % size]` (`idx` is a free-running 16-bit ring index).
pub const fn avail_entry_addr(avail: u64, size: u16, idx: u16) -> u64 {
    avail + 4 + 2 * (idx % size) as u64
}

/// Address of `used_event` (after the last available-ring entry).
pub const fn used_event_addr(avail: u64, size: u16) -> u64 {
    avail + 4 + 2 * size as u64
}

/// Address of `used.flags`.
pub const fn used_flags_addr(used: u64) -> u64 {
    used
}

/// Address of `used.idx`.
pub const fn used_idx_addr(used: u64) -> u64 {
    used + 2
}

/// Address of `used.ring[idx % size]`.
pub const fn used_elem_addr(used: u64, size: u16, idx: u16) -> u64 {
    used + 4 + USED_ELEM_SIZE * (idx % size) as u64
}

/// Address of `avail_event` (after the last used-ring element).
pub const fn avail_event_addr(used: u64, size: u16) -> u64 {
    used + 4 + USED_ELEM_SIZE * size as u64
}

/// The event-index test of the spec (`vring_need_event`): whether moving an index from `old`
/// to `new` passed `event`, i.e. `event` lies in `[old, new)` modulo 2^16.
pub const fn vring_need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_spec() {
        assert_eq!(desc_table_size(256), 4096);
        assert_eq!(avail_ring_size(256), 518);
        assert_eq!(used_ring_size(256), 2054);
        assert_eq!(used_ring_size(MAX_QUEUE_SIZE), 6 + 8 * 32768);
        assert_eq!(used_event_addr(0x1000, 4), 0x1000 + 12);
        assert_eq!(avail_event_addr(0x2000, 4), 0x2000 + 36);
        assert_eq!(used_elem_addr(0x2000, 4, 5), 0x2000 + 4 + 8);
        assert_eq!(avail_entry_addr(0x1000, 4, 65535), 0x1000 + 4 + 6);
    }

    #[test]
    fn sizes_validated() {
        for s in [1u16, 2, 4, 256, 32768] {
            assert!(valid_size(s), "{s}");
        }
        for s in [0u16, 3, 6, 255, 32767, 65535] {
            assert!(!valid_size(s), "{s}");
        }
    }

    #[test]
    fn need_event() {
        // Passing event 5 when going from 3 to 7.
        assert!(vring_need_event(5, 7, 3));
        assert!(vring_need_event(3, 4, 3));
        assert!(!vring_need_event(4, 4, 3));
        assert!(!vring_need_event(2, 7, 3));
        // Across the 16-bit wrap.
        assert!(vring_need_event(65535, 2, 65534));
        assert!(vring_need_event(0, 2, 65534));
        assert!(!vring_need_event(2, 2, 65534));
        assert!(!vring_need_event(65533, 2, 65534));
    }
}
