//! The raw split-ring descriptor (`struct virtq_desc`, virtio 1.2 section 2.7.5): its wire
//! format and flags. No validation happens here; [`Queue::pop`](crate::Queue::pop) judges
//! descriptors as it walks a chain.

use crate::layout::DESC_SIZE;
use crate::QueueError;
use epf_epc::HostMemory;
use virtio_bindings::virtio_ring;

/// The buffer continues via the `next` field.
pub const VIRTQ_DESC_F_NEXT: u16 = virtio_ring::VRING_DESC_F_NEXT as u16;
/// The buffer is device write-only (otherwise device read-only).
pub const VIRTQ_DESC_F_WRITE: u16 = virtio_ring::VRING_DESC_F_WRITE as u16;
/// The buffer holds a table of descriptors.
pub const VIRTQ_DESC_F_INDIRECT: u16 = virtio_ring::VRING_DESC_F_INDIRECT as u16;

/// One descriptor as laid out in memory (all fields little endian).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// Guest-physical (host bus) address of the buffer.
    pub addr: u64,
    /// Length of the buffer in bytes.
    pub len: u32,
    /// `VIRTQ_DESC_F_*` bits. Unknown bits are ignored.
    pub flags: u16,
    /// Index of the next descriptor when `flags` has NEXT.
    pub next: u16,
}

impl Descriptor {
    /// Decodes a descriptor from its 16 wire bytes.
    pub fn from_bytes(b: &[u8; DESC_SIZE as usize]) -> Descriptor {
        Descriptor {
            addr: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            flags: u16::from_le_bytes([b[12], b[13]]),
            next: u16::from_le_bytes([b[14], b[15]]),
        }
    }

    /// Encodes this descriptor into its 16 wire bytes.
    pub fn to_bytes(&self) -> [u8; DESC_SIZE as usize] {
        let mut b = [0; DESC_SIZE as usize];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..16].copy_from_slice(&self.next.to_le_bytes());
        b
    }

    /// Reads the descriptor at host address `addr`. The caller has checked the range.
    pub fn read_from(mem: &dyn HostMemory, addr: u64) -> Result<Descriptor, QueueError> {
        let mut b = [0; DESC_SIZE as usize];
        mem.read(addr, &mut b)?;
        Ok(Descriptor::from_bytes(&b))
    }

    /// NEXT is set.
    pub fn has_next(&self) -> bool {
        self.flags & VIRTQ_DESC_F_NEXT != 0
    }

    /// WRITE is set: the buffer is device write-only.
    pub fn is_write_only(&self) -> bool {
        self.flags & VIRTQ_DESC_F_WRITE != 0
    }

    /// INDIRECT is set: the buffer is a descriptor table.
    pub fn is_indirect(&self) -> bool {
        self.flags & VIRTQ_DESC_F_INDIRECT != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_round_trips() {
        let d = Descriptor {
            addr: 0x1122_3344_5566_7788,
            len: 0x99aa_bbcc,
            flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
            next: 0xeeff,
        };
        let b = d.to_bytes();
        assert_eq!(
            b,
            [
                0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xcc, 0xbb, 0xaa, 0x99, 3, 0, 0xff,
                0xee
            ]
        );
        assert_eq!(Descriptor::from_bytes(&b), d);
        assert!(d.has_next() && d.is_write_only() && !d.is_indirect());
        assert_eq!(
            (VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT),
            (1, 2, 4)
        );
    }
}
