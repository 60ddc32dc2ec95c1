//! The packed ring's wire formats (virtio 1.2 section 2.8): the descriptor
//! (`struct pvirtq_desc`, used for available and used descriptors and for indirect tables),
//! its flags and wrap-counter bits, the event suppression structure
//! (`struct pvirtq_event_suppress`) and the event-offset test. Pure data and arithmetic;
//! nothing here touches memory.

use crate::descriptor::{Descriptor, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use crate::layout::DESC_SIZE;

/// Feature bit VIRTIO_F_RING_PACKED.
pub const VIRTIO_F_RING_PACKED: u32 = 34;

/// Descriptor flag: the driver's available bit (equal to its wrap counter when it makes the
/// descriptor available).
pub const VIRTQ_DESC_F_AVAIL: u16 = 1 << 7;
/// Descriptor flag: the used bit (the device sets both bits to its wrap counter when it
/// marks a descriptor used).
pub const VIRTQ_DESC_F_USED: u16 = 1 << 15;

/// Event suppression flags: notifications/interrupts enabled.
pub const RING_EVENT_FLAGS_ENABLE: u16 = 0;
/// Event suppression flags: disabled.
pub const RING_EVENT_FLAGS_DISABLE: u16 = 1;
/// Event suppression flags: only for the descriptor named by `off_wrap` (needs
/// VIRTIO_F_EVENT_IDX).
pub const RING_EVENT_FLAGS_DESC: u16 = 2;

/// Offset of `flags` inside a packed descriptor.
pub const FLAGS_OFFSET: u64 = 14;
/// Offset of `len` inside a packed descriptor (`len`, `id` and `flags` follow each other).
pub const LEN_OFFSET: u64 = 8;
/// Offset of `flags` inside the event suppression structure (`off_wrap` is at 0).
pub const EVENT_FLAGS_OFFSET: u64 = 2;

/// One packed descriptor as laid out in memory (all fields little endian).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackedDescriptor {
    pub addr: u64,
    pub len: u32,
    /// Buffer ID (meaningful in the last descriptor of a chain and in used descriptors).
    pub id: u16,
    pub flags: u16,
}

impl PackedDescriptor {
    /// Decodes a descriptor from its 16 wire bytes.
    pub fn from_bytes(b: &[u8; DESC_SIZE as usize]) -> PackedDescriptor {
        PackedDescriptor {
            addr: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            id: u16::from_le_bytes([b[12], b[13]]),
            flags: u16::from_le_bytes([b[14], b[15]]),
        }
    }

    /// Encodes this descriptor into its 16 wire bytes.
    pub fn to_bytes(&self) -> [u8; DESC_SIZE as usize] {
        let mut b = [0; DESC_SIZE as usize];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.id.to_le_bytes());
        b[14..16].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    /// The fields the chain walk judges, as a split descriptor (NEXT, WRITE and INDIRECT
    /// have the same values in both formats; `next` is unused).
    pub(crate) fn as_split(&self) -> Descriptor {
        Descriptor {
            addr: self.addr,
            len: self.len,
            flags: self.flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_INDIRECT),
            next: 0,
        }
    }
}

/// Whether a descriptor with `flags` is available to a device expecting the driver's wrap
/// counter `wrap`: AVAIL equals it and USED differs from it.
pub const fn is_available(flags: u16, wrap: bool) -> bool {
    (flags & VIRTQ_DESC_F_AVAIL != 0) == wrap && (flags & VIRTQ_DESC_F_USED != 0) != wrap
}

/// Whether a descriptor with `flags` was marked used by a device whose wrap counter was
/// `wrap`: AVAIL and USED both equal it.
pub const fn is_used(flags: u16, wrap: bool) -> bool {
    (flags & VIRTQ_DESC_F_AVAIL != 0) == wrap && (flags & VIRTQ_DESC_F_USED != 0) == wrap
}

/// The AVAIL and USED bits a device with wrap counter `wrap` writes into a used descriptor.
pub const fn used_flags(wrap: bool) -> u16 {
    if wrap {
        VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED
    } else {
        0
    }
}

/// The AVAIL and USED bits a driver with wrap counter `wrap` writes into an available
/// descriptor.
pub const fn avail_flags(wrap: bool) -> u16 {
    if wrap {
        VIRTQ_DESC_F_AVAIL
    } else {
        VIRTQ_DESC_F_USED
    }
}

/// `off_wrap` for ring position `pos` and wrap counter `wrap`.
pub const fn off_wrap(pos: u16, wrap: bool) -> u16 {
    pos | ((wrap as u16) << 15)
}

/// Splits `off_wrap` into (position, wrap counter).
pub const fn split_off_wrap(v: u16) -> (u16, bool) {
    (v & 0x7fff, v & 0x8000 != 0)
}

/// The event-offset test for a packed ring of `size` descriptors: whether moving a ring
/// position from `old` to `new` (`new` in `0..size` with wrap counter `wrap`; `old` may be
/// "negative", i.e. `new - moved` modulo 2^16) passed the event position `event` (in
/// `0..size`) whose wrap bit is `event_wrap`. An event from the other lap is moved back by
/// one ring, as in the split ring's `vring_need_event` but over ring positions.
pub const fn packed_need_event(
    size: u16,
    event: u16,
    event_wrap: bool,
    new: u16,
    wrap: bool,
    moved: u16,
) -> bool {
    let event = if event_wrap == wrap {
        event
    } else {
        event.wrapping_sub(size)
    };
    let old = new.wrapping_sub(moved);
    crate::layout::vring_need_event(event, new, old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_and_bits() {
        let d = PackedDescriptor {
            addr: 0x1122_3344_5566_7788,
            len: 0x99aa_bbcc,
            id: 0x1234,
            flags: VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_NEXT,
        };
        let b = d.to_bytes();
        assert_eq!(&b[12..16], &[0x34, 0x12, 0x81, 0x00]);
        assert_eq!(PackedDescriptor::from_bytes(&b), d);
        assert_eq!((VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED), (0x80, 0x8000));
        // Zeroed memory is never available (first lap: wrap counter 1).
        assert!(!is_available(0, true));
        assert!(is_available(avail_flags(true), true));
        assert!(is_available(avail_flags(false), false));
        assert!(!is_available(used_flags(true), true));
        assert!(!is_available(used_flags(true), false));
        assert!(!is_available(avail_flags(true), false));
        assert!(is_used(used_flags(true), true) && is_used(used_flags(false), false));
        assert!(!is_used(avail_flags(true), true));
        assert_eq!(split_off_wrap(off_wrap(0x1234, true)), (0x1234, true));
    }

    #[test]
    fn need_event_over_ring_positions() {
        // Ring of 8: moved from 2 to 5 in the same lap passes 2, 3 and 4.
        assert!(packed_need_event(8, 2, true, 5, true, 3));
        assert!(packed_need_event(8, 4, true, 5, true, 3));
        assert!(!packed_need_event(8, 5, true, 5, true, 3));
        assert!(!packed_need_event(8, 1, true, 5, true, 3));
        // Moved from 6 (previous lap) to 1 (wrap flipped): passes 6, 7 (old lap) and 0.
        assert!(packed_need_event(8, 6, true, 1, false, 3));
        assert!(packed_need_event(8, 7, true, 1, false, 3));
        assert!(packed_need_event(8, 0, false, 1, false, 3));
        assert!(!packed_need_event(8, 1, false, 1, false, 3));
        assert!(!packed_need_event(8, 5, true, 1, false, 3));
    }
}
