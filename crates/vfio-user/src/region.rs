//! Region descriptions for VFIO_USER_DEVICE_GET_REGION_INFO.
//!
//! Regions 0-5 are the BARs, 6 the expansion ROM (absent: size 0), 7 the configuration space,
//! 8 VGA (absent). A BAR with [`AreaKind::Memory`] areas is reported mappable
//! (`VFIO_REGION_INFO_FLAG_MMAP`) with a `VFIO_REGION_INFO_CAP_SPARSE_MMAP` capability listing
//! exactly those areas, and the BAR's memfd travels with the reply; QEMU maps the areas into
//! the guest and everything else of the BAR arrives as REGION_READ/WRITE. Memory areas are page
//! aligned and never overlap the MSI-X table or PBA (checked when the function starts), so the
//! client keeps emulating those.
//!
//! Layout of the reply (`struct vfio_region_info` followed by the capability chain, offsets
//! relative to the start of the info): the sparse capability starts at `cap_offset` = 32 with a
//! `vfio_info_cap_header` {id = 1, version = 1, next = 0}, then `nr_areas`, a reserved u32 and
//! `nr_areas` {offset, size} pairs. If the client's `argsz` is too small for the capability,
//! the reply carries only the fixed part with `argsz` set to the size needed and no CAPS flag
//! (QEMU's client rejects CAPS with a `cap_offset` outside its buffer) and no descriptor; QEMU
//! then asks again with a larger `argsz`.

use crate::function::Function;
use crate::protocol::{BodyBuilder, CONFIG_REGION, NUM_REGIONS, REGION_INFO_SIZE};
use epf_epc::{AreaKind, CONFIG_SPACE_SIZE};
use std::os::fd::RawFd;
use vfio_bindings::bindings::vfio as vb;

/// Version of the sparse mmap capability (vfio-user.rst "VFIO sparse mmap cap header").
const SPARSE_MMAP_VERSION: u16 = 1;
/// Size of `vfio_info_cap_header` plus `nr_areas` and `reserved`.
const SPARSE_HEADER_SIZE: usize = 16;
/// Size of one `vfio_region_sparse_mmap_area`.
const SPARSE_AREA_SIZE: usize = 16;

/// What we report about one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegionInfo {
    pub flags: u32,
    pub size: u64,
    /// The mmap offset of the region in its descriptor.
    pub offset: u64,
    /// Mappable areas (offset, size) inside the region.
    pub sparse: Vec<(u64, u64)>,
    /// Descriptor to mmap the areas from.
    pub fd: Option<RawFd>,
}

impl Function {
    /// The size of region `index` (0 for absent regions).
    pub fn region_size(&self, index: u32) -> u64 {
        match index {
            0..=5 => self.spec.bars[index as usize]
                .as_ref()
                .map_or(0, |b| b.size),
            CONFIG_REGION => CONFIG_SPACE_SIZE as u64,
            _ => 0,
        }
    }

    /// Describes region `index` (`None` if there is no such index). `allow_mmap` is false when
    /// the client cannot receive a descriptor.
    pub fn region_info(&self, index: u32, allow_mmap: bool) -> Option<RegionInfo> {
        if index >= NUM_REGIONS {
            return None;
        }
        let size = self.region_size(index);
        let mut info = RegionInfo {
            flags: if size > 0 {
                vb::VFIO_REGION_INFO_FLAG_READ | vb::VFIO_REGION_INFO_FLAG_WRITE
            } else {
                0
            },
            size,
            offset: 0,
            sparse: Vec::new(),
            fd: None,
        };
        if index < 6 && allow_mmap {
            if let (Some(bar), Some(mem)) = (
                &self.spec.bars[index as usize],
                &self.bar_mem[index as usize],
            ) {
                let mut areas: Vec<(u64, u64)> = bar
                    .areas
                    .iter()
                    .filter(|a| a.kind == AreaKind::Memory)
                    .map(|a| (a.offset, a.size))
                    .collect();
                areas.sort_unstable();
                // Merge touching areas: fewer mappings on the client side.
                let mut merged: Vec<(u64, u64)> = Vec::with_capacity(areas.len());
                for (off, len) in areas {
                    match merged.last_mut() {
                        Some((o, l)) if *o + *l == off => *l += len,
                        _ => merged.push((off, len)),
                    }
                }
                if let (false, Some(fd)) = (merged.is_empty(), mem.raw_fd()) {
                    info.flags |= vb::VFIO_REGION_INFO_FLAG_MMAP;
                    info.offset = mem.fd_offset();
                    info.sparse = merged;
                    info.fd = Some(fd);
                }
            }
        }
        Some(info)
    }
}

/// Encodes the reply body for region `index` given the client's `argsz`. Returns the body and
/// the descriptor to send with it.
pub(crate) fn encode_region_info(
    index: u32,
    info: &RegionInfo,
    argsz: u32,
) -> (Vec<u8>, Option<RawFd>) {
    let caps_len = if info.sparse.is_empty() {
        0
    } else {
        SPARSE_HEADER_SIZE + SPARSE_AREA_SIZE * info.sparse.len()
    };
    let needed = REGION_INFO_SIZE + caps_len;
    let fits = argsz as usize >= needed;
    let mut flags = info.flags;
    let mut cap_offset = 0;
    if caps_len > 0 && fits {
        flags |= vb::VFIO_REGION_INFO_FLAG_CAPS;
        cap_offset = REGION_INFO_SIZE as u32;
    }
    let mut b = BodyBuilder::with_capacity(needed)
        .u32(needed as u32)
        .u32(flags)
        .u32(index)
        .u32(cap_offset)
        .u64(info.size)
        .u64(info.offset);
    if caps_len > 0 && fits {
        b = b
            .u16(vb::VFIO_REGION_INFO_CAP_SPARSE_MMAP as u16)
            .u16(SPARSE_MMAP_VERSION)
            .u32(0)
            .u32(info.sparse.len() as u32)
            .u32(0);
        for (off, len) in &info.sparse {
            b = b.u64(*off).u64(*len);
        }
    }
    let fd = if fits { info.fd } else { None };
    (b.build(), fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Body;

    #[test]
    fn sparse_capability_layout() {
        let info = RegionInfo {
            flags: vb::VFIO_REGION_INFO_FLAG_READ
                | vb::VFIO_REGION_INFO_FLAG_WRITE
                | vb::VFIO_REGION_INFO_FLAG_MMAP,
            size: 0x4000,
            offset: 0,
            sparse: vec![(0x1000, 0x2000)],
            fd: Some(42),
        };
        let (b, fd) = encode_region_info(0, &info, 32);
        assert_eq!(b.len(), 32);
        assert_eq!(fd, None);
        let body = Body(&b);
        assert_eq!(body.u32(0), Some(64));
        assert_eq!(body.u32(4).unwrap() & vb::VFIO_REGION_INFO_FLAG_CAPS, 0);
        assert_eq!(body.u32(12), Some(0));

        let (b, fd) = encode_region_info(0, &info, 64);
        assert_eq!(fd, Some(42));
        let body = Body(&b);
        assert_eq!(b.len(), 64);
        assert_ne!(body.u32(4).unwrap() & vb::VFIO_REGION_INFO_FLAG_CAPS, 0);
        assert_eq!(body.u32(12), Some(32));
        assert_eq!(body.u16(32), Some(1));
        assert_eq!(body.u16(34), Some(1));
        assert_eq!(body.u32(36), Some(0));
        assert_eq!(body.u32(40), Some(1));
        assert_eq!(body.u64(48), Some(0x1000));
        assert_eq!(body.u64(56), Some(0x2000));
    }
}
