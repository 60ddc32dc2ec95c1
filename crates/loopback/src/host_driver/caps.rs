//! Discovery of the virtio-pci capabilities in configuration space, as Linux's
//! `virtio_pci_find_capability` and `vp_modern_map_capability` do it: walk the capability
//! list (bounded against loops), take the first vendor capability of each type whose BAR
//! exists, and check each structure's alignment and that it fits in its BAR.

use super::error::{DriverError, Result};
use super::spec::*;
use crate::HostBus;

/// One `struct virtio_pci_cap` as read from config space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioCap {
    /// Offset of the capability in configuration space.
    pub cap_offset: usize,
    pub cap_len: u8,
    pub cfg_type: u8,
    pub bar: u8,
    pub id: u8,
    /// Offset of the structure within the BAR.
    pub offset: u32,
    /// Length of the structure as the capability states it.
    pub length: u32,
}

impl VirtioCap {
    fn read(bus: &HostBus, pos: usize) -> Self {
        VirtioCap {
            cap_offset: pos,
            cap_len: bus.config_read8(pos + CAP_LEN),
            cfg_type: bus.config_read8(pos + CAP_CFG_TYPE),
            bar: bus.config_read8(pos + CAP_BAR),
            id: bus.config_read8(pos + CAP_ID),
            offset: bus.config_read32(pos + CAP_OFFSET),
            length: bus.config_read32(pos + CAP_LENGTH),
        }
    }

    fn bad(&self, reason: String) -> DriverError {
        DriverError::BadCapability {
            cfg_type: self.cfg_type,
            cap_offset: self.cap_offset,
            reason,
        }
    }
}

/// The virtio structures a modern driver uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioCaps {
    pub common: VirtioCap,
    pub notify: VirtioCap,
    /// `notify_off_multiplier` of the notify capability.
    pub notify_off_multiplier: u32,
    pub isr: VirtioCap,
    pub device: Option<VirtioCap>,
    /// The PCI configuration access capability (optional for Linux; mandatory for devices).
    pub pci_cfg: Option<VirtioCap>,
    /// Every vendor-specific capability in list order (including ones not used).
    pub all: Vec<VirtioCap>,
}

/// Offsets of all capabilities as `(id, offset)`, following next pointers from 0x34 like
/// `pci_find_capability`: pointers are masked to dword alignment, a pointer below 0x40 ends
/// the list, and at most [`PCI_FIND_CAP_TTL`] entries are visited.
pub fn walk_capabilities(bus: &HostBus) -> Vec<(u8, usize)> {
    let mut out = Vec::new();
    if bus.config_read16(PCI_STATUS) & PCI_STATUS_CAP_LIST == 0 {
        return out;
    }
    let mut pos = (bus.config_read8(PCI_CAPABILITY_LIST) & !3) as usize;
    for _ in 0..PCI_FIND_CAP_TTL {
        if pos < 0x40 {
            break;
        }
        let id = bus.config_read8(pos + CAP_VNDR);
        if id == 0xff {
            break;
        }
        out.push((id, pos));
        pos = (bus.config_read8(pos + CAP_NEXT) & !3) as usize;
    }
    out
}

/// Checks that the structure of `cap` is usable: like `vp_modern_map_capability` with
/// `minlen` and `align`, and additionally (stricter than Linux, which clips) that the whole
/// stated length fits in the BAR. Returns the usable length.
fn check_structure(bus: &HostBus, cap: &VirtioCap, minlen: u32, align: u32) -> Result<u32> {
    let bar_len = bus
        .bar_size(cap.bar)
        .ok_or_else(|| cap.bad(format!("BAR {} is not implemented", cap.bar)))?;
    if cap.length == 0 {
        return Err(cap.bad("zero length".into()));
    }
    if cap.length < minlen {
        return Err(cap.bad(format!("length {} < {minlen}", cap.length)));
    }
    if cap.offset % align != 0 {
        return Err(cap.bad(format!("offset {:#x} not aligned to {align}", cap.offset)));
    }
    let end = u64::from(cap.offset) + u64::from(cap.length);
    if end > bar_len {
        return Err(cap.bad(format!(
            "{:#x}+{:#x} outside BAR {} of {bar_len:#x} bytes",
            cap.offset, cap.length, cap.bar
        )));
    }
    Ok(cap.length)
}

/// Finds and checks the virtio capabilities.
pub fn find_virtio_caps(bus: &HostBus) -> Result<VirtioCaps> {
    let all: Vec<VirtioCap> = walk_capabilities(bus)
        .into_iter()
        .filter(|&(id, _)| id == PCI_CAP_ID_VNDR)
        .map(|(_, pos)| VirtioCap::read(bus, pos))
        .collect();
    // Like virtio_pci_find_capability: the first of the type whose BAR is valid and present.
    let find = |t: u8| {
        all.iter()
            .find(|c| c.cfg_type == t && c.bar < PCI_STD_NUM_BARS && bus.bar_size(c.bar).is_some())
            .copied()
    };
    let common = find(VIRTIO_PCI_CAP_COMMON_CFG).ok_or(DriverError::MissingCapability("common"))?;
    let isr = find(VIRTIO_PCI_CAP_ISR_CFG).ok_or(DriverError::MissingCapability("ISR"))?;
    let notify = find(VIRTIO_PCI_CAP_NOTIFY_CFG).ok_or(DriverError::MissingCapability("notify"))?;
    let device = find(VIRTIO_PCI_CAP_DEVICE_CFG);
    let pci_cfg = all
        .iter()
        .find(|c| c.cfg_type == VIRTIO_PCI_CAP_PCI_CFG)
        .copied();

    for c in [
        Some(&common),
        Some(&isr),
        Some(&notify),
        device.as_ref(),
        pci_cfg.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if (c.cap_len as usize) < VIRTIO_PCI_CAP_SIZE {
            return Err(c.bad(format!("cap_len {} < {VIRTIO_PCI_CAP_SIZE}", c.cap_len)));
        }
    }
    for c in [Some(&notify), pci_cfg.as_ref()].into_iter().flatten() {
        if (c.cap_len as usize) < VIRTIO_PCI_NOTIFY_CAP_SIZE {
            return Err(c.bad(format!(
                "cap_len {} < {VIRTIO_PCI_NOTIFY_CAP_SIZE}",
                c.cap_len
            )));
        }
    }

    check_structure(bus, &common, COMMON_CFG_SIZE, 4)?;
    check_structure(bus, &isr, 1, 1)?;
    check_structure(bus, &notify, 2, 2)?;
    if let Some(d) = &device {
        check_structure(bus, d, 1, 4)?;
    }
    let notify_off_multiplier = bus.config_read32(notify.cap_offset + NOTIFY_CAP_MULTIPLIER);
    if notify_off_multiplier % 2 != 0 {
        // Spec 4.1.4.4: an even multiplier (or 0), so that every notify address is
        // 2-byte aligned.
        return Err(notify.bad(format!(
            "notify_off_multiplier {notify_off_multiplier} is odd"
        )));
    }
    Ok(VirtioCaps {
        common,
        notify,
        notify_off_multiplier,
        isr,
        device,
        pci_cfg,
        all,
    })
}
