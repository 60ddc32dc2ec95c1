//! What the host VM is shown: the function's configuration header, MSI and MSI-X
//! capabilities and BARs as the EP programmed them, and how each BAR's pages reach the host
//! (mapped EP memory, or trapped where QEMU emulates MSI-X or a doorbell must be noticed).

use crate::regs::*;
use crate::state::{BarReg, Regs};
use epf_epc::{
    AreaKind, BarArea, BarSpec, Capability, FunctionSpec, MsixSpec, PciHeader, BAR_COUNT, PAGE_SIZE,
};

/// The part of the register file that shapes the host-side device. Two equal layouts give
/// the host the same device, so a stopped function can be restarted under a running host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLayout {
    pub hdr: [u32; 4],
    pub msi_vectors: u32,
    pub msix: Option<MsixSpec>,
    pub bars: [Option<BarReg>; BAR_COUNT],
    pub doorbells: Vec<(u8, u64)>,
}

const PCI_CAP_ID_MSI: u8 = 0x05;
const PCI_MSI_FLAGS_64BIT: u16 = 1 << 7;
const MSIX_ENTRY_SIZE: u64 = 16;

fn bir_offset(v: u32) -> (u8, u64) {
    ((v & 7) as u8, u64::from(v & !7))
}

impl HostLayout {
    /// The layout the registers describe, or the error code why it cannot be shown.
    pub fn from_regs(r: &Regs) -> Result<Self, ErrorCode> {
        let msi = r.msi_vectors;
        if msi != 0 && (!msi.is_power_of_two() || msi > MAX_MSI_VECTORS) {
            return Err(ErrorCode::BadHeader);
        }
        let mut bars = [None; BAR_COUNT];
        for (n, b) in r.bars.iter().enumerate() {
            if b.enabled {
                bars[n] = Some(*b);
            }
        }
        let msix = match r.msix_vectors {
            0 => None,
            v if v > MAX_MSIX_VECTORS => return Err(ErrorCode::BadHeader),
            v => {
                let (table_bar, table_offset) = bir_offset(r.msix_table);
                let (pba_bar, pba_offset) = bir_offset(r.msix_pba);
                let table_len = u64::from(v) * MSIX_ENTRY_SIZE;
                let pba_len = u64::from(v).div_ceil(64) * 8;
                for (bar, off, len) in [
                    (table_bar, table_offset, table_len),
                    (pba_bar, pba_offset, pba_len),
                ] {
                    let fits = bars
                        .get(bar as usize)
                        .and_then(|b| *b)
                        .is_some_and(|b| off + len <= b.size);
                    if !fits {
                        return Err(ErrorCode::BadHeader);
                    }
                }
                if table_bar == pba_bar
                    && table_offset < pba_offset + pba_len
                    && pba_offset < table_offset + table_len
                {
                    return Err(ErrorCode::BadHeader);
                }
                Some(MsixSpec {
                    vectors: v as u16,
                    table_bar,
                    table_offset,
                    pba_bar,
                    pba_offset,
                })
            }
        };
        if r.hdr[0] & 0xffff == 0xffff || r.hdr[0] & 0xffff == 0 || r.hdr[3] & 0xff > 4 {
            return Err(ErrorCode::BadHeader);
        }
        let doorbells = r
            .doorbells
            .iter()
            .filter(|d| d.enabled)
            .map(|d| (d.bar as u8, u64::from(d.offset)))
            .collect();
        Ok(HostLayout {
            hdr: r.hdr,
            msi_vectors: msi,
            msix,
            bars,
            doorbells,
        })
    }

    /// The function the host VM's vfio-user device presents.
    pub fn spec(&self) -> FunctionSpec {
        let header = PciHeader {
            vendor_id: self.hdr[0] as u16,
            device_id: (self.hdr[0] >> 16) as u16,
            revision_id: self.hdr[1] as u8,
            class_code: self.hdr[1] >> 8,
            subsystem_vendor_id: self.hdr[2] as u16,
            subsystem_id: (self.hdr[2] >> 16) as u16,
            interrupt_pin: self.hdr[3] as u8,
        };
        let mut capabilities = Vec::new();
        if self.msi_vectors > 0 {
            // 64-bit MSI without per-vector masking; QEMU emulates the capability itself and
            // only reads its flags from us.
            let mmc = self.msi_vectors.trailing_zeros() as u16;
            let ctrl = PCI_MSI_FLAGS_64BIT | (mmc << 1);
            let mut body = ctrl.to_le_bytes().to_vec();
            body.extend_from_slice(&[0; 10]);
            capabilities.push(Capability {
                id: PCI_CAP_ID_MSI,
                body,
                writable: std::iter::once(2..14).collect(),
                trapped: vec![],
            });
        }
        let mut bars: [Option<BarSpec>; BAR_COUNT] = Default::default();
        for (n, b) in self.bars.iter().enumerate() {
            let Some(b) = b else { continue };
            bars[n] = Some(BarSpec {
                size: b.size,
                is_64bit: b.is_64bit(),
                prefetchable: b.prefetchable(),
                areas: self.areas(n as u8, b.size),
            });
        }
        FunctionSpec {
            header,
            capabilities,
            bars,
            msix: self.msix,
        }
    }

    /// Byte ranges of BAR `bar` that QEMU emulates (MSI-X table and PBA).
    fn msix_ranges(&self, bar: u8) -> Vec<(u64, u64, AreaKind)> {
        let mut v = Vec::new();
        if let Some(m) = &self.msix {
            let n = u64::from(m.vectors);
            if m.table_bar == bar {
                v.push((
                    m.table_offset,
                    m.table_offset + n * MSIX_ENTRY_SIZE,
                    AreaKind::MsixTable,
                ));
            }
            if m.pba_bar == bar {
                v.push((
                    m.pba_offset,
                    m.pba_offset + n.div_ceil(64) * 8,
                    AreaKind::MsixPba,
                ));
            }
        }
        v.sort_unstable_by_key(|r| r.0);
        v
    }

    /// Whether page `page` of BAR `bar` (or the whole BAR, if it is smaller than a page)
    /// must be trapped: it holds MSI-X structures or a doorbell.
    fn page_trapped(&self, bar: u8, start: u64, end: u64) -> bool {
        self.msix_ranges(bar)
            .iter()
            .any(|&(s, e, _)| s < end && start < e)
            || self
                .doorbells
                .iter()
                .any(|&(b, off)| b == bar && off >= start && off < end)
    }

    /// The areas of BAR `bar`: memory pages mapped into the host, trapped pages around the
    /// MSI-X structures and doorbells.
    pub fn areas(&self, bar: u8, size: u64) -> Vec<BarArea> {
        let page = PAGE_SIZE.min(size);
        let mut coarse: Vec<BarArea> = Vec::new();
        let mut off = 0;
        while off < size {
            let kind = if self.page_trapped(bar, off, off + page) {
                AreaKind::Trapped
            } else {
                AreaKind::Memory
            };
            match coarse.last_mut() {
                Some(a) if a.kind == kind => a.size += page,
                _ => coarse.push(BarArea {
                    offset: off,
                    size: page,
                    kind,
                }),
            }
            off += page;
        }
        // Carve the MSI-X structures out of the trapped areas.
        let mut areas = Vec::new();
        for a in coarse {
            if a.kind == AreaKind::Memory {
                areas.push(a);
                continue;
            }
            let mut pos = a.offset;
            let end = a.offset + a.size;
            for (s, e, kind) in self.msix_ranges(bar) {
                if e <= pos || s >= end {
                    continue;
                }
                if s > pos {
                    areas.push(BarArea {
                        offset: pos,
                        size: s - pos,
                        kind: AreaKind::Trapped,
                    });
                }
                let s = s.max(pos);
                let e = e.min(end);
                areas.push(BarArea {
                    offset: s,
                    size: e - s,
                    kind,
                });
                pos = e;
            }
            if pos < end {
                areas.push(BarArea {
                    offset: pos,
                    size: end - pos,
                    kind: AreaKind::Trapped,
                });
            }
        }
        areas
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs() -> Regs {
        let mut r = Regs {
            hdr: [0xedda_16c3, 0xff00_0000, 0, 1],
            ..Default::default()
        };
        r.bars[0] = BarReg {
            phys: 0x1000,
            size: 512,
            flags: 0,
            enabled: true,
        };
        r.bars[1] = BarReg {
            phys: 0x10_0000,
            size: 0x4000,
            flags: 0,
            enabled: true,
        };
        r
    }

    #[test]
    fn plain_bars_are_memory_and_msix_pages_are_trapped() {
        let mut r = regs();
        let l = HostLayout::from_regs(&r).unwrap();
        let s = l.spec();
        assert_eq!(s.header.vendor_id, 0x16c3);
        assert_eq!(s.header.device_id, 0xedda);
        assert_eq!(s.header.class_code, 0xff0000);
        for b in s.bars.iter().flatten() {
            b.validate().unwrap();
            assert!(b.areas.iter().all(|a| a.kind == AreaKind::Memory));
        }

        // MSI-X table in BAR 0 right after 128 bytes of registers, as pci-epf-test does.
        r.msix_vectors = 8;
        r.msix_table = 128;
        r.msix_pba = 128 + 8 * 16;
        r.msi_vectors = 4;
        let l = HostLayout::from_regs(&r).unwrap();
        let s = l.spec();
        let b0 = s.bars[0].as_ref().unwrap();
        b0.validate().unwrap();
        assert_eq!(
            b0.areas
                .iter()
                .map(|a| (a.offset, a.kind))
                .collect::<Vec<_>>(),
            vec![
                (0, AreaKind::Trapped),
                (128, AreaKind::MsixTable),
                (256, AreaKind::MsixPba),
                (264, AreaKind::Trapped)
            ]
        );
        assert_eq!(s.capabilities[0].id, PCI_CAP_ID_MSI);
        assert_eq!(s.capabilities[0].body[0], 2 << 1 | 0x80);

        // A doorbell traps only its page.
        r.doorbells[0] = crate::state::DbReg {
            bar: 1,
            offset: 0x2004,
            enabled: true,
            data: 0,
        };
        let l = HostLayout::from_regs(&r).unwrap();
        let b1 = l.spec().bars[1].clone().unwrap();
        b1.validate().unwrap();
        assert_eq!(
            b1.areas
                .iter()
                .map(|a| (a.offset, a.size, a.kind))
                .collect::<Vec<_>>(),
            vec![
                (0, 0x2000, AreaKind::Memory),
                (0x2000, 0x1000, AreaKind::Trapped),
                (0x3000, 0x1000, AreaKind::Memory)
            ]
        );
    }

    #[test]
    fn bad_programming_is_refused() {
        let mut r = regs();
        r.msix_vectors = 8;
        r.msix_table = 3 | 0x100; // BAR 3 is not enabled
        assert_eq!(HostLayout::from_regs(&r), Err(ErrorCode::BadHeader));
        r.msix_table = 0x100;
        r.msix_pba = 0x100;
        assert_eq!(HostLayout::from_regs(&r), Err(ErrorCode::BadHeader));
        r.msix_pba = 0x400; // beyond the 512-byte BAR 0
        assert_eq!(HostLayout::from_regs(&r), Err(ErrorCode::BadHeader));
        r.msix_vectors = 0;
        r.msi_vectors = 3;
        assert_eq!(HostLayout::from_regs(&r), Err(ErrorCode::BadHeader));
        r.msi_vectors = 64;
        assert_eq!(HostLayout::from_regs(&r), Err(ErrorCode::BadHeader));
        r.msi_vectors = 0;
        r.hdr[0] = 0xffff;
        assert_eq!(HostLayout::from_regs(&r), Err(ErrorCode::BadHeader));
    }
}
