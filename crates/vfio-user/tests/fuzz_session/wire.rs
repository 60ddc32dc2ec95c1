//! The vfio-user wire constants and layouts the fuzzer's generator and model use, written
//! from the specification (QEMU `docs/interop/vfio-user.rst`, `<linux/vfio.h>`), not taken
//! from the server's code, so a mistake there is not mirrored here. Integers are in host
//! byte order.

pub const HEADER: usize = 16;
/// Largest message the server accepts: a 1 MiB REGION_WRITE with its prefix and header.
pub const MAX_DATA: usize = 1 << 20;
pub const MAX_MESSAGE: usize = HEADER + 16 + MAX_DATA;
pub const MAX_FDS: usize = 16;
/// Total bytes the server maps for one client, at most.
pub const MAX_DMA_BYTES: u64 = 256 << 30;

pub const VERSION: u16 = 1;
pub const DMA_MAP: u16 = 2;
pub const DMA_UNMAP: u16 = 3;
pub const DEVICE_GET_INFO: u16 = 4;
pub const GET_REGION_INFO: u16 = 5;
pub const GET_REGION_IO_FDS: u16 = 6;
pub const GET_IRQ_INFO: u16 = 7;
pub const SET_IRQS: u16 = 8;
pub const REGION_READ: u16 = 9;
pub const REGION_WRITE: u16 = 10;
pub const DMA_READ: u16 = 11;
pub const DMA_WRITE: u16 = 12;
pub const DEVICE_RESET: u16 = 13;
pub const DIRTY_PAGES: u16 = 14;
pub const REGION_WRITE_MULTI: u16 = 15;
pub const DEVICE_FEATURE: u16 = 16;
pub const MIG_DATA_READ: u16 = 17;
pub const MIG_DATA_WRITE: u16 = 18;

/// Header flags.
pub const TYPE_MASK: u32 = 0xf;
pub const TYPE_COMMAND: u32 = 0;
pub const TYPE_REPLY: u32 = 1;
pub const NO_REPLY: u32 = 0x10;
pub const ERROR: u32 = 0x20;

pub const MAP_READ: u32 = 1;
pub const MAP_WRITE: u32 = 2;
pub const UNMAP_ALL: u32 = 2;

pub const IRQ_DATA_NONE: u32 = 1;
pub const IRQ_DATA_BOOL: u32 = 2;
pub const IRQ_DATA_EVENTFD: u32 = 4;
pub const IRQ_ACTION_MASK: u32 = 8;
pub const IRQ_ACTION_UNMASK: u32 = 16;
pub const IRQ_ACTION_TRIGGER: u32 = 32;

pub const WRITE_MULTI_MAX: u64 = 200;
pub const WRITE_MULTI_ENTRY: usize = 24;
pub const WRITE_MULTI_DATA: usize = 8;

/// Regions and interrupt indexes of a PCI device.
pub const NUM_REGIONS: u32 = 9;
pub const CONFIG_REGION: u32 = 7;
pub const NUM_IRQS: u32 = 5;

/// A header.
pub fn header(id: u16, command: u16, size: u32, flags: u32, error: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..2].copy_from_slice(&id.to_ne_bytes());
    h[2..4].copy_from_slice(&command.to_ne_bytes());
    h[4..8].copy_from_slice(&size.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&error.to_ne_bytes());
    h
}

/// Reads host-order integers at offsets, `None` past the end.
pub fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Appends host-order integers.
#[derive(Default)]
pub struct Body(pub Vec<u8>);

impl Body {
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
}
