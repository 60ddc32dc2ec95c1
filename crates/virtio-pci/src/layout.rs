//! What the host sees of a modern (virtio 1.x) virtio-pci function: the PCI header, the five
//! vendor capabilities, and the BAR map.
//!
//! BAR 0 (32-bit memory, non-prefetchable) holds, one 4 KiB page each so that any of them can
//! later become polled shared memory on its own:
//!
//! | offset  | area                          |
//! |---------|-------------------------------|
//! | 0x0000  | common configuration          |
//! | 0x1000  | ISR status                    |
//! | 0x2000  | device-specific configuration |
//! | 0x3000  | notifications (4 bytes/queue) |
//!
//! BAR 2 holds the MSI-X table (offset 0) and PBA (second half), emulated by the controller.

use crate::caps::{
    notify_cap, pci_cfg_cap, region_cap, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_DEVICE_CFG,
    VIRTIO_PCI_CAP_ISR_CFG,
};
use epf_epc::{AreaKind, BarArea, BarSpec, EpcFeatures, FunctionSpec, MsixSpec, PciHeader};

pub use epf_device::{VIRTIO_PCI_MODERN_DEVICE_BASE, VIRTIO_PCI_VENDOR_ID};

/// BAR holding the virtio structures.
pub const REGS_BAR: u8 = 0;
/// BAR holding the MSI-X table and PBA.
pub const MSIX_BAR: u8 = 2;

pub const COMMON_OFFSET: u64 = 0x0000;
/// Size of `struct virtio_pci_common_cfg` in virtio 1.2 (with queue_notify_data/queue_reset).
pub const COMMON_LEN: u64 = 0x3c;
pub const ISR_OFFSET: u64 = 0x1000;
pub const ISR_LEN: u64 = 1;
pub const DEVICE_OFFSET: u64 = 0x2000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Bytes between two queues' notification addresses.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
const PAGE: u64 = 0x1000;

/// The part of BAR 0 an access falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    Common,
    Isr,
    Device,
    Notify,
}

/// A concrete modern layout for one device.
#[derive(Debug, Clone)]
pub struct ModernLayout {
    pub num_queues: u16,
    pub msix_vectors: u16,
    /// Whether notifications arrive as doorbells (posted writes) rather than trapped writes.
    pub notify_doorbell: bool,
    /// Whether the notify area is plain memory the endpoint polls (`notify_poll.rs`).
    pub notify_polled: bool,
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

impl ModernLayout {
    /// Picks a layout for a device with `num_queues` queues on a controller with `epc` features: one MSI-X vector per queue plus one
    /// for configuration changes, as many as the controller allows.
    pub fn new(num_queues: u16, epc: &EpcFeatures) -> Self {
        let wanted = num_queues.saturating_add(1);
        ModernLayout {
            num_queues,
            msix_vectors: wanted.min(epc.irq.msix_vectors),
            notify_doorbell: epc.doorbells,
            notify_polled: false,
        }
    }

    fn notify_len(&self) -> u64 {
        round_up(
            (self.num_queues.max(1) as u64) * NOTIFY_OFF_MULTIPLIER as u64,
            PAGE,
        )
    }

    fn regs_bar_size(&self) -> u64 {
        (NOTIFY_OFFSET + self.notify_len()).next_power_of_two()
    }

    /// Which region of BAR 0 holds `offset`, and the offset inside it.
    pub fn region_at(&self, offset: u64) -> Option<(Region, u64)> {
        match offset {
            o if (COMMON_OFFSET..COMMON_OFFSET + PAGE).contains(&o) => {
                Some((Region::Common, o - COMMON_OFFSET))
            }
            o if (ISR_OFFSET..ISR_OFFSET + PAGE).contains(&o) => {
                Some((Region::Isr, o - ISR_OFFSET))
            }
            o if (DEVICE_OFFSET..DEVICE_OFFSET + PAGE).contains(&o) => {
                Some((Region::Device, o - DEVICE_OFFSET))
            }
            o if o >= NOTIFY_OFFSET && o - NOTIFY_OFFSET < self.notify_len() => {
                Some((Region::Notify, o - NOTIFY_OFFSET))
            }
            _ => None,
        }
    }

    /// The PCI header of a modern device of type `device_type`.
    pub fn header(device_type: u32) -> PciHeader {
        PciHeader {
            vendor_id: VIRTIO_PCI_VENDOR_ID,
            device_id: VIRTIO_PCI_MODERN_DEVICE_BASE.wrapping_add(device_type as u16),
            // Spec 4.1.2.1: non-transitional devices SHOULD have a revision ID of 1 or higher.
            revision_id: 1,
            class_code: class_code(device_type),
            subsystem_vendor_id: VIRTIO_PCI_VENDOR_ID,
            // Spec 4.1.2.1: modern devices MAY use any subsystem ID; 0x40 + type is our choice.
            subsystem_id: 0x40u16.wrapping_add(device_type as u16),
            interrupt_pin: 1,
        }
    }

    /// Everything the host will see of the function.
    pub fn function_spec(&self, device_type: u32) -> FunctionSpec {
        let notify_kind = if self.notify_polled {
            AreaKind::Memory
        } else if self.notify_doorbell {
            AreaKind::Doorbell
        } else {
            AreaKind::Trapped
        };
        let regs = BarSpec {
            size: self.regs_bar_size(),
            is_64bit: false,
            prefetchable: false,
            areas: vec![
                BarArea {
                    offset: COMMON_OFFSET,
                    size: PAGE,
                    kind: AreaKind::Trapped,
                },
                BarArea {
                    offset: ISR_OFFSET,
                    size: PAGE,
                    kind: AreaKind::Trapped,
                },
                BarArea {
                    offset: DEVICE_OFFSET,
                    size: PAGE,
                    kind: AreaKind::Trapped,
                },
                BarArea {
                    offset: NOTIFY_OFFSET,
                    size: self.notify_len(),
                    kind: notify_kind,
                },
            ],
        };
        let capabilities = vec![
            region_cap(
                VIRTIO_PCI_CAP_COMMON_CFG,
                REGS_BAR,
                COMMON_OFFSET as u32,
                COMMON_LEN as u32,
            ),
            notify_cap(
                REGS_BAR,
                NOTIFY_OFFSET as u32,
                self.num_queues.max(1) as u32 * NOTIFY_OFF_MULTIPLIER,
                NOTIFY_OFF_MULTIPLIER,
            ),
            region_cap(
                VIRTIO_PCI_CAP_ISR_CFG,
                REGS_BAR,
                ISR_OFFSET as u32,
                ISR_LEN as u32,
            ),
            // The whole page, as QEMU does: Linux refuses a device capability of length 0
            // ("bad capability len 0"), which a device without configuration would have.
            region_cap(
                VIRTIO_PCI_CAP_DEVICE_CFG,
                REGS_BAR,
                DEVICE_OFFSET as u32,
                PAGE as u32,
            ),
            pci_cfg_cap(),
        ];
        let mut bars: [Option<BarSpec>; 6] = Default::default();
        bars[REGS_BAR as usize] = Some(regs);
        let msix = (self.msix_vectors > 0).then(|| {
            let table = round_up(self.msix_vectors as u64 * 16, 8);
            let pba = round_up((self.msix_vectors as u64).div_ceil(64) * 8, 8);
            let size = (table.max(pba) * 2).max(PAGE).next_power_of_two();
            let half = size / 2;
            bars[MSIX_BAR as usize] = Some(BarSpec {
                size,
                is_64bit: false,
                prefetchable: false,
                areas: vec![
                    BarArea {
                        offset: 0,
                        size: table,
                        kind: AreaKind::MsixTable,
                    },
                    BarArea {
                        offset: half,
                        size: pba,
                        kind: AreaKind::MsixPba,
                    },
                ],
            });
            MsixSpec {
                vectors: self.msix_vectors,
                table_bar: MSIX_BAR,
                table_offset: 0,
                pba_bar: MSIX_BAR,
                pba_offset: half,
            }
        });
        FunctionSpec {
            header: Self::header(device_type),
            capabilities,
            bars,
            msix,
        }
    }
}

/// PCI class code for a virtio device type (what QEMU's virtio-pci devices report).
pub fn class_code(device_type: u32) -> u32 {
    match device_type {
        1 => 0x02_00_00, // network controller, ethernet
        2 => 0x01_80_00, // mass storage, other
        3 => 0x07_80_00, // simple communication controller, other
        _ => 0x00_ff_00, // unclassified
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use epf_epc::{ConfigSpace, HostAccess, IrqSupport};

    fn epc() -> EpcFeatures {
        EpcFeatures {
            vendor_capabilities: true,
            trapped_access: true,
            doorbells: false,
            shared_memory: true,
            irq: IrqSupport {
                msix_vectors: 8,
                msi_vectors: 0,
                intx: true,
            },
            host_access: HostAccess::Direct,
        }
    }

    #[test]
    fn spec_is_valid_and_regions_decode() {
        let l = ModernLayout::new(3, &epc());
        assert_eq!(l.msix_vectors, 4);
        let spec = l.function_spec(4);
        assert_eq!(spec.header.device_id, 0x1044);
        for b in spec.bars.iter().flatten() {
            b.validate().unwrap();
        }
        let cs = ConfigSpace::from_spec(&spec).unwrap();
        assert_eq!(cs.capabilities().len(), 6);
        assert_eq!(l.region_at(0x14), Some((Region::Common, 0x14)));
        assert_eq!(l.region_at(0x3008), Some((Region::Notify, 8)));
        assert_eq!(l.region_at(0x4000), None);
    }

    #[test]
    fn vectors_are_capped_by_the_controller() {
        let mut f = epc();
        f.irq.msix_vectors = 2;
        assert_eq!(ModernLayout::new(9, &f).msix_vectors, 2);
        f.irq.msix_vectors = 0;
        let l = ModernLayout::new(9, &f);
        assert!(l.function_spec(3).msix.is_none());
    }
}
