//! The PCI configuration access window (`struct virtio_pci_cfg_cap`, virtio 1.2 section
//! 4.1.4.9): the driver writes a BAR, offset and length into the capability, then reads or
//! writes `pci_cfg_data` to access that BAR location through configuration space. Firmware
//! uses it before BARs are mapped.

use crate::caps::{PCI_CFG_BAR, PCI_CFG_DATA, PCI_CFG_LENGTH, PCI_CFG_OFFSET};

/// The window's programmable fields.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PciCfgWindow {
    pub bar: u8,
    pub offset: u32,
    pub length: u32,
}

/// What a trapped config access to the capability means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowAccess {
    /// Access to the fields themselves; already served.
    Fields,
    /// Access `len` bytes of BAR `bar` at `offset` (data window).
    Bar { bar: u8, offset: u64, len: usize },
    /// A data-window access whose length does not match the programmed length: ignored.
    Invalid,
}

impl PciCfgWindow {
    fn field_bytes(&self) -> [u8; PCI_CFG_DATA] {
        let mut b = [0u8; PCI_CFG_DATA];
        b[PCI_CFG_BAR] = self.bar;
        b[PCI_CFG_OFFSET..PCI_CFG_OFFSET + 4].copy_from_slice(&self.offset.to_le_bytes());
        b[PCI_CFG_LENGTH..PCI_CFG_LENGTH + 4].copy_from_slice(&self.length.to_le_bytes());
        b
    }

    fn data_access(&self, rel: usize, len: usize) -> WindowAccess {
        if rel == PCI_CFG_DATA && len as u32 == self.length && matches!(len, 1 | 2 | 4) {
            WindowAccess::Bar {
                bar: self.bar,
                offset: self.offset as u64,
                len,
            }
        } else {
            WindowAccess::Invalid
        }
    }

    /// A read at `rel` (relative to the capability start). Field bytes are filled into `data`.
    pub fn read(&self, rel: usize, data: &mut [u8]) -> WindowAccess {
        if rel >= PCI_CFG_DATA {
            return self.data_access(rel, data.len());
        }
        let f = self.field_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = f.get(rel + i).copied().unwrap_or(0);
        }
        WindowAccess::Fields
    }

    /// A write at `rel`.
    pub fn write(&mut self, rel: usize, data: &[u8]) -> WindowAccess {
        if rel >= PCI_CFG_DATA {
            return self.data_access(rel, data.len());
        }
        let mut f = self.field_bytes();
        for (i, v) in data.iter().enumerate() {
            if let o @ (PCI_CFG_BAR | PCI_CFG_OFFSET..PCI_CFG_DATA) = rel + i {
                f[o] = *v;
            }
        }
        self.bar = f[PCI_CFG_BAR];
        self.offset = u32::from_le_bytes(
            f[PCI_CFG_OFFSET..PCI_CFG_OFFSET + 4]
                .try_into()
                .unwrap_or_default(),
        );
        self.length = u32::from_le_bytes(
            f[PCI_CFG_LENGTH..PCI_CFG_LENGTH + 4]
                .try_into()
                .unwrap_or_default(),
        );
        WindowAccess::Fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_then_access() {
        let mut w = PciCfgWindow::default();
        w.write(PCI_CFG_BAR, &[0, 0xaa, 0xbb, 0xcc]);
        w.write(PCI_CFG_OFFSET, &0x14u32.to_le_bytes());
        w.write(PCI_CFG_LENGTH, &1u32.to_le_bytes());
        let mut b = [0u8; 4];
        w.read(PCI_CFG_BAR, &mut b);
        assert_eq!(b, [0, 0, 0, 0], "id and padding are read-only zero");
        assert_eq!(
            w.read(PCI_CFG_DATA, &mut [0u8; 1]),
            WindowAccess::Bar {
                bar: 0,
                offset: 0x14,
                len: 1
            }
        );
        assert_eq!(w.read(PCI_CFG_DATA, &mut [0u8; 4]), WindowAccess::Invalid);
    }
}
