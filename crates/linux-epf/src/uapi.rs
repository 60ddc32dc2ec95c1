//! The ABI of `kernel/epf-user/pci-epf-user.h`, mirrored field for field (version 1):
//! structures, flags and ioctl numbers. Layout tests pin the sizes the C header implies.

#![allow(dead_code)] // the ABI is mirrored whole, also where we use only part of it

use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr, ioctl_iowr_nr};

pub const ABI_VERSION: u32 = 1;
pub const NUM_BARS: usize = 6;

pub const FEAT_LINKUP_NOTIFIER: u32 = 1 << 0;
pub const FEAT_MSI: u32 = 1 << 1;
pub const FEAT_MSIX: u32 = 1 << 2;
pub const FEAT_INTX: u32 = 1 << 3;
pub const FEAT_DMA_TX: u32 = 1 << 4;
pub const FEAT_DMA_RX: u32 = 1 << 5;
pub const FEAT_DMA_MEMCPY: u32 = 1 << 6;
pub const FEAT_DOORBELL: u32 = 1 << 7;

pub const BAR_PROGRAMMABLE: u8 = 0;
pub const BAR_FIXED: u8 = 1;
pub const BAR_RESIZABLE: u8 = 2;
pub const BAR_RESERVED: u8 = 3;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Features {
    pub abi_version: u32,
    pub flags: u32,
    pub align: u64,
    pub window_size: u64,
    pub window_page: u32,
    pub num_windows: u32,
    pub bar_type: [u8; NUM_BARS],
    pub bar_only_64bit: u8,
    pub pad0: u8,
    pub bar_fixed_size: [u64; NUM_BARS],
    pub max_msi: u32,
    pub max_msix: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Header {
    pub vendor_id: u16,
    pub device_id: u16,
    pub revision_id: u8,
    pub progif_code: u8,
    pub subclass_code: u8,
    pub baseclass_code: u8,
    pub subsys_vendor_id: u16,
    pub subsys_id: u16,
    pub interrupt_pin: u8,
    pub pad: [u8; 3],
}

pub const BAR_64BIT: u32 = 1 << 2;
pub const BAR_PREFETCH: u32 = 1 << 3;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Bar {
    pub bar: u32,
    pub flags: u32,
    pub size: u64,
    pub mmap_size: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Irqs {
    pub msi_vectors: u32,
    pub msix_vectors: u32,
    pub msix_bar: u32,
    pub msix_offset: u32,
}

pub const IRQ_INTX: u32 = 1;
pub const IRQ_MSI: u32 = 2;
pub const IRQ_MSIX: u32 = 3;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Irq {
    pub kind: u32,
    pub number: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IrqState {
    pub msi: i32,
    pub msix: i32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Window {
    pub pci_addr: u64,
    pub size: u64,
    pub mmap_offset: u64,
    pub mmap_size: u64,
    pub offset_in_map: u32,
    pub id: u32,
}

pub const DMA_TO_HOST: u32 = 1;
pub const DMA_FROM_HOST: u32 = 2;
pub const DMA_USED_DMA: u32 = 1 << 8;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Dma {
    pub user: u64,
    pub pci_addr: u64,
    pub len: u32,
    pub flags: u32,
}

pub const EV_LINK_UP: u32 = 1;
pub const EV_LINK_DOWN: u32 = 2;
pub const EV_BME: u32 = 3;
pub const EV_EPC_INIT: u32 = 4;
pub const EV_EPC_DEINIT: u32 = 5;
pub const EV_DOORBELL: u32 = 6;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Event {
    pub kind: u32,
    pub dropped: u32,
    pub data: u64,
}

/// The mmap offset of BAR `bar`.
pub fn bar_offset(bar: u8) -> u64 {
    u64::from(bar) << 40
}

/// The mmap offset at which windows start.
pub const WINDOW_OFFSET: u64 = 8 << 40;

/// Most bytes one DMA request may move.
pub const MAX_DMA: usize = 16 << 20;

const MAGIC: u32 = 0xe9;
ioctl_ior_nr!(GET_FEATURES, MAGIC, 0, Features);
ioctl_iow_nr!(SET_HEADER, MAGIC, 1, Header);
ioctl_iowr_nr!(SET_BAR, MAGIC, 2, Bar);
ioctl_iow_nr!(SET_IRQS, MAGIC, 3, Irqs);
ioctl_io_nr!(START, MAGIC, 4);
ioctl_io_nr!(STOP, MAGIC, 5);
ioctl_iow_nr!(RAISE_IRQ, MAGIC, 6, Irq);
ioctl_ior_nr!(GET_IRQ_STATE, MAGIC, 7, IrqState);
ioctl_iowr_nr!(MAP_WINDOW, MAGIC, 8, Window);
ioctl_iow_nr!(UNMAP_WINDOW, MAGIC, 9, Window);
ioctl_iowr_nr!(DMA, MAGIC, 10, Dma);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_c_header() {
        assert_eq!(
            std::mem::size_of::<Features>(),
            4 + 4 + 8 + 8 + 4 + 4 + 8 + 48 + 8
        );
        assert_eq!(std::mem::size_of::<Header>(), 16);
        assert_eq!(std::mem::size_of::<Bar>(), 24);
        assert_eq!(std::mem::size_of::<Irqs>(), 16);
        assert_eq!(std::mem::size_of::<Window>(), 40);
        assert_eq!(std::mem::size_of::<Dma>(), 24);
        assert_eq!(std::mem::size_of::<Event>(), 16);
        // _IOR('\xe9', 0, 96 bytes) = 2 << 30 | 96 << 16 | 0xe9 << 8 | 0.
        assert_eq!(GET_FEATURES(), (2 << 30) | (96 << 16) | (0xe9 << 8));
        assert_eq!(START(), 0xe9 << 8 | 4);
    }
}
