//! The virtio vendor-specific PCI capabilities (virtio 1.2 section 4.1.4): `struct
//! virtio_pci_cap` and its notify and PCI-configuration-access variants.

use epf_epc::{Capability, PCI_CAP_ID_VNDR};

/// `cfg_type` values.
pub const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
pub const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
pub const VIRTIO_PCI_CAP_ISR_CFG: u8 = 3;
pub const VIRTIO_PCI_CAP_DEVICE_CFG: u8 = 4;
pub const VIRTIO_PCI_CAP_PCI_CFG: u8 = 5;

/// Length of `struct virtio_pci_cap`.
pub const CAP_LEN: u8 = 16;
/// Offsets inside `struct virtio_pci_cfg_cap` (relative to the capability start).
pub const PCI_CFG_BAR: usize = 4;
pub const PCI_CFG_OFFSET: usize = 8;
pub const PCI_CFG_LENGTH: usize = 12;
pub const PCI_CFG_DATA: usize = 16;

/// Builds the body (bytes from `cap_len` on) of a `virtio_pci_cap`.
fn cap_body(cfg_type: u8, len: u8, bar: u8, offset: u32, length: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(len as usize - 2);
    b.push(len); // cap_len
    b.push(cfg_type);
    b.push(bar);
    b.push(0); // id
    b.extend_from_slice(&[0, 0]); // padding
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&length.to_le_bytes());
    b
}

/// A common/ISR/device configuration capability pointing at `bar`+`offset`.
pub fn region_cap(cfg_type: u8, bar: u8, offset: u32, length: u32) -> Capability {
    Capability {
        id: PCI_CAP_ID_VNDR,
        body: cap_body(cfg_type, CAP_LEN, bar, offset, length),
        writable: vec![],
        trapped: vec![],
    }
}

/// The notification capability (`struct virtio_pci_notify_cap`).
pub fn notify_cap(bar: u8, offset: u32, length: u32, multiplier: u32) -> Capability {
    let mut body = cap_body(VIRTIO_PCI_CAP_NOTIFY_CFG, CAP_LEN + 4, bar, offset, length);
    body.extend_from_slice(&multiplier.to_le_bytes());
    Capability {
        id: PCI_CAP_ID_VNDR,
        body,
        writable: vec![],
        trapped: vec![],
    }
}

/// The PCI configuration access capability (`struct virtio_pci_cfg_cap`). Its bar, offset,
/// length and data fields are trapped: the function keeps them and performs the BAR access.
pub fn pci_cfg_cap() -> Capability {
    let mut body = cap_body(VIRTIO_PCI_CAP_PCI_CFG, CAP_LEN + 4, 0, 0, 0);
    body.extend_from_slice(&[0; 4]); // pci_cfg_data
    Capability {
        id: PCI_CAP_ID_VNDR,
        body,
        writable: vec![],
        trapped: vec![
            PCI_CFG_BAR..PCI_CFG_BAR + 1,
            PCI_CFG_OFFSET..PCI_CFG_DATA + 4,
        ],
    }
}
