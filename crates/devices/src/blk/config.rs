//! What the block device offers its driver: feature bits and the `virtio_blk_config` space
//! (virtio 1.2 section 5.2.4), derived from the image and the command line.
//!
//! Limits are the ones the device actually enforces: `seg_max` is the queue size minus the
//! header and status descriptors (a request of `seg_max` data segments fits the ring even
//! without indirect descriptors), `size_max` is the segment size up to which the data path
//! is exercised by the tests, and the discard / write-zeroes limits are the ones
//! [`request`](super::request) checks.

use super::image::{Image, SECTOR_SIZE};
use std::mem::offset_of;
use virtio_bindings::virtio_blk::*;

/// Largest data segment the driver should use (1 MiB); requests are copied in chunks, so
/// the limit only keeps a single descriptor's copy bounded.
pub const SIZE_MAX: u32 = 1 << 20;
/// Most sectors one discard or write-zeroes segment may cover (2 GiB).
pub const MAX_RANGE_SECTORS: u32 = 1 << 22;
/// Most segments one discard or write-zeroes request may carry.
pub const MAX_RANGE_SEGMENTS: u32 = 32;
/// Length of a `virtio_blk_discard_write_zeroes` segment.
pub const RANGE_SEGMENT_LEN: usize = 16;

/// Everything the device decided about what to offer.
#[derive(Clone, Debug)]
pub struct BlkParams {
    pub capacity_sectors: u64,
    pub read_only: bool,
    pub num_queues: u16,
    pub queue_size: u16,
    pub logical_block: u32,
    pub physical_block: u32,
    pub min_io: u32,
    pub opt_io: u32,
    pub discard: bool,
    /// Discard granularity in bytes.
    pub discard_granularity: u32,
}

impl BlkParams {
    /// The parameters for `image` served with `num_queues` queues of `queue_size` entries.
    pub fn new(image: &Image, num_queues: u16, queue_size: u16) -> Self {
        let (min_io, opt_io) = image.io_hints();
        BlkParams {
            capacity_sectors: image.sectors(),
            read_only: image.read_only(),
            num_queues: num_queues.max(1),
            queue_size,
            logical_block: image.logical_block(),
            physical_block: image.physical_block(),
            min_io,
            opt_io,
            discard: image.can_discard(),
            discard_granularity: image.physical_block(),
        }
    }

    /// `seg_max`: data segments per request.
    pub fn seg_max(&self) -> u32 {
        u32::from(self.queue_size).saturating_sub(2).max(1)
    }

    /// The device feature bits.
    pub fn features(&self) -> u64 {
        let mut f = (1u64 << VIRTIO_BLK_F_SIZE_MAX)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_BLK_SIZE)
            | (1 << VIRTIO_BLK_F_TOPOLOGY)
            | (1 << VIRTIO_BLK_F_FLUSH);
        if self.read_only {
            f |= 1 << VIRTIO_BLK_F_RO;
        }
        if self.num_queues > 1 {
            f |= 1 << VIRTIO_BLK_F_MQ;
        }
        if self.discard {
            f |= 1 << VIRTIO_BLK_F_DISCARD;
        }
        if !self.read_only {
            f |= 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        }
        f
    }

    /// The configuration space bytes (through `write_zeroes_may_unmap` and its padding).
    pub fn config_bytes(&self) -> Vec<u8> {
        let len = offset_of!(virtio_blk_config, max_secure_erase_sectors);
        let mut b = vec![0u8; len];
        let mut put = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(
            offset_of!(virtio_blk_config, capacity),
            &self.capacity_sectors.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, size_max),
            &SIZE_MAX.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, seg_max),
            &self.seg_max().to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, blk_size),
            &self.logical_block.to_le_bytes(),
        );
        let exp = (self.physical_block / self.logical_block.max(1))
            .max(1)
            .trailing_zeros();
        put(
            offset_of!(virtio_blk_config, physical_block_exp),
            &[exp as u8],
        );
        // min_io_size / opt_io_size are in logical blocks.
        let lb = self.logical_block.max(1);
        let min_io = u16::try_from(self.min_io / lb).unwrap_or(0);
        put(
            offset_of!(virtio_blk_config, min_io_size),
            &min_io.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, opt_io_size),
            &(self.opt_io / lb).to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, num_queues),
            &self.num_queues.to_le_bytes(),
        );
        if self.discard {
            put(
                offset_of!(virtio_blk_config, max_discard_sectors),
                &MAX_RANGE_SECTORS.to_le_bytes(),
            );
            put(
                offset_of!(virtio_blk_config, max_discard_seg),
                &MAX_RANGE_SEGMENTS.to_le_bytes(),
            );
            let align = (self.discard_granularity as u64 / SECTOR_SIZE).max(1) as u32;
            put(
                offset_of!(virtio_blk_config, discard_sector_alignment),
                &align.to_le_bytes(),
            );
        }
        if !self.read_only {
            put(
                offset_of!(virtio_blk_config, max_write_zeroes_sectors),
                &MAX_RANGE_SECTORS.to_le_bytes(),
            );
            put(
                offset_of!(virtio_blk_config, max_write_zeroes_seg),
                &MAX_RANGE_SEGMENTS.to_le_bytes(),
            );
            put(offset_of!(virtio_blk_config, write_zeroes_may_unmap), &[1]);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BlkParams {
        BlkParams {
            capacity_sectors: 2048,
            read_only: false,
            num_queues: 2,
            queue_size: 256,
            logical_block: 512,
            physical_block: 4096,
            min_io: 4096,
            opt_io: 0,
            discard: true,
            discard_granularity: 4096,
        }
    }

    fn le32(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn config_layout_matches_the_spec_struct() {
        let b = params().config_bytes();
        assert_eq!(b.len(), 60);
        assert_eq!(u64::from_le_bytes(b[0..8].try_into().unwrap()), 2048);
        assert_eq!(le32(&b, 8), SIZE_MAX);
        assert_eq!(le32(&b, 12), 254);
        assert_eq!(le32(&b, 20), 512);
        assert_eq!(b[24], 3, "physical_block_exp: 4096 = 512 << 3");
        assert_eq!(u16::from_le_bytes([b[26], b[27]]), 8);
        assert_eq!(u16::from_le_bytes([b[34], b[35]]), 2);
        assert_eq!(le32(&b, 36), MAX_RANGE_SECTORS);
        assert_eq!(le32(&b, 40), MAX_RANGE_SEGMENTS);
        assert_eq!(le32(&b, 44), 8);
        assert_eq!(le32(&b, 48), MAX_RANGE_SECTORS);
        assert_eq!(le32(&b, 52), MAX_RANGE_SEGMENTS);
        assert_eq!(b[56], 1);
    }

    #[test]
    fn features_follow_the_options() {
        let p = params();
        let f = p.features();
        for bit in [
            VIRTIO_BLK_F_SIZE_MAX,
            VIRTIO_BLK_F_SEG_MAX,
            VIRTIO_BLK_F_BLK_SIZE,
            VIRTIO_BLK_F_TOPOLOGY,
            VIRTIO_BLK_F_FLUSH,
            VIRTIO_BLK_F_MQ,
            VIRTIO_BLK_F_DISCARD,
            VIRTIO_BLK_F_WRITE_ZEROES,
        ] {
            assert_ne!(f & (1 << bit), 0, "bit {bit}");
        }
        assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
        let ro = BlkParams {
            read_only: true,
            discard: false,
            num_queues: 1,
            ..p
        };
        let f = ro.features();
        assert_ne!(f & (1 << VIRTIO_BLK_F_RO), 0);
        assert_eq!(f & (1 << VIRTIO_BLK_F_MQ), 0);
        assert_eq!(f & (1 << VIRTIO_BLK_F_DISCARD), 0);
        assert_eq!(f & (1 << VIRTIO_BLK_F_WRITE_ZEROES), 0);
        let b = ro.config_bytes();
        assert_eq!(le32(&b, 36), 0);
        assert_eq!(le32(&b, 48), 0);
    }
}
