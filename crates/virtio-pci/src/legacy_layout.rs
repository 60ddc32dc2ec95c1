//! The legacy (virtio 0.9.5) layout, as a transitional device: the register block at the
//! start of BAR 0 (a memory BAR: an endpoint has no I/O space), transitional PCI device IDs
//! (0x1000 + an ID per type, subsystem device ID = virtio type), revision 0, no vendor
//! capabilities. Linux's virtio_pci finds no common capability, "leaves for the legacy
//! driver", and drives these registers (virtio 1.2 section 4.1.4.8):
//!
//! | offset | register | | offset | register |
//! |---|---|---|---|---|
//! | 0x00 | HOST_FEATURES (u32, RO) | | 0x10 | QUEUE_NOTIFY (u16) |
//! | 0x04 | GUEST_FEATURES (u32) | | 0x12 | STATUS (u8) |
//! | 0x08 | QUEUE_PFN (u32) | | 0x13 | ISR (u8, read clears) |
//! | 0x0c | QUEUE_NUM (u16, RO) | | 0x14 | MSI_CONFIG_VECTOR (u16, MSI-X only) |
//! | 0x0e | QUEUE_SEL (u16) | | 0x16 | MSI_QUEUE_VECTOR (u16, MSI-X only) |
//!
//! Device configuration follows at 0x18 while MSI-X is enabled, at 0x14 otherwise.

use crate::layout::{class_code, VIRTIO_PCI_VENDOR_ID};
use crate::options::RegisterAccess;
use epf_epc::{AreaKind, BarArea, BarSpec, FunctionSpec, MsixSpec, PciHeader};

pub const HOST_FEATURES: u64 = 0x00;
pub const GUEST_FEATURES: u64 = 0x04;
pub const QUEUE_PFN: u64 = 0x08;
pub const QUEUE_NUM: u64 = 0x0c;
pub const QUEUE_SEL: u64 = 0x0e;
pub const QUEUE_NOTIFY: u64 = 0x10;
pub const STATUS: u64 = 0x12;
pub const ISR: u64 = 0x13;
pub const MSI_CONFIG_VECTOR: u64 = 0x14;
pub const MSI_QUEUE_VECTOR: u64 = 0x16;

/// Where device configuration starts.
pub fn config_offset(msix_enabled: bool) -> u64 {
    if msix_enabled {
        0x18
    } else {
        0x14
    }
}

/// BAR holding the registers.
pub const REGS_BAR: u8 = 0;
const MSIX_BAR: u8 = 2;
const PAGE: u64 = 4096;

/// Transitional PCI device ID of a virtio device type (virtio 1.2 section 4.1.2.1).
pub fn transitional_device_id(device_type: u32) -> Option<u16> {
    Some(match device_type {
        1 => 0x1000, // network
        2 => 0x1001, // block
        5 => 0x1002, // memory balloon
        3 => 0x1003, // console
        8 => 0x1004, // SCSI host
        4 => 0x1005, // entropy source
        9 => 0x1009, // 9P transport
        _ => return None,
    })
}

/// A legacy layout for one device.
#[derive(Debug, Clone)]
pub struct LegacyLayout {
    pub num_queues: u16,
    pub msix_vectors: u16,
    pub registers: RegisterAccess,
}

impl LegacyLayout {
    /// Everything the host sees; `None` if the type has no transitional ID.
    pub fn function_spec(&self, device_type: u32) -> Option<FunctionSpec> {
        let header = PciHeader {
            vendor_id: VIRTIO_PCI_VENDOR_ID,
            device_id: transitional_device_id(device_type)?,
            revision_id: 0, // Linux's legacy driver insists on ABI version 0
            class_code: class_code(device_type),
            subsystem_vendor_id: VIRTIO_PCI_VENDOR_ID,
            subsystem_id: device_type as u16,
            // Polled registers need MSI-X (the ISR byte cannot clear on read): without a pin,
            // a host whose MSI-X setup failed gives up instead of binding INTx.
            interrupt_pin: u8::from(self.registers == RegisterAccess::Trap),
        };
        let kind = match self.registers {
            RegisterAccess::Trap => AreaKind::Trapped,
            RegisterAccess::Poll => AreaKind::Memory,
        };
        let mut bars: [Option<BarSpec>; 6] = Default::default();
        bars[REGS_BAR as usize] = Some(BarSpec {
            size: PAGE,
            is_64bit: false,
            prefetchable: false,
            areas: vec![BarArea {
                offset: 0,
                size: PAGE,
                kind,
            }],
        });
        let msix = (self.msix_vectors > 0).then(|| {
            bars[MSIX_BAR as usize] = Some(BarSpec {
                size: PAGE,
                is_64bit: false,
                prefetchable: false,
                areas: vec![
                    BarArea {
                        offset: 0,
                        size: 2048,
                        kind: AreaKind::MsixTable,
                    },
                    BarArea {
                        offset: 2048,
                        size: 256,
                        kind: AreaKind::MsixPba,
                    },
                ],
            });
            MsixSpec {
                vectors: self.msix_vectors,
                table_bar: MSIX_BAR,
                table_offset: 0,
                pba_bar: MSIX_BAR,
                pba_offset: 2048,
            }
        });
        Some(FunctionSpec {
            header,
            capabilities: vec![],
            bars,
            msix,
        })
    }
}
