//! The function's PCI configuration space as the controller presents it: the type-0 header,
//! a capability list, which bytes the host may write, and which ranges are trapped to the
//! function (e.g. the data window of virtio's PCI configuration access capability).

use crate::{BarSpec, EpcError, FunctionSpec, MsixSpec, PciHeader, BAR_COUNT};
use std::ops::Range;

/// Size of a PCIe function's configuration space.
pub const CONFIG_SPACE_SIZE: usize = 4096;
/// Vendor-specific capability ID.
pub const PCI_CAP_ID_VNDR: u8 = 0x09;
/// MSI-X capability ID.
pub const PCI_CAP_ID_MSIX: u8 = 0x11;

const PCI_COMMAND: usize = 0x04;
const PCI_STATUS: usize = 0x06;
const PCI_STATUS_CAP_LIST: u16 = 0x10;
const PCI_CAPABILITY_LIST: usize = 0x34;
const PCI_INTERRUPT_LINE: usize = 0x3c;
const FIRST_CAP: usize = 0x40;
const LEGACY_CONFIG_END: usize = 0x100;

/// A capability a function adds to the list (the controller fills in ID and next pointer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub id: u8,
    /// Bytes following the ID and next-pointer bytes (so `body[0]` is at capability offset 2).
    pub body: Vec<u8>,
    /// Ranges (relative to the capability start) the host may write.
    pub writable: Vec<Range<usize>>,
    /// Ranges (relative to the capability start) whose accesses go to the function instead of
    /// the stored image.
    pub trapped: Vec<Range<usize>>,
}

/// A configuration space image with its write mask and trapped ranges.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: Vec<u8>,
    wmask: Vec<u8>,
    trapped: Vec<Range<usize>>,
    next_cap: usize,
    last_cap_ptr: usize,
    cap_offsets: Vec<(u8, usize)>,
}

impl std::fmt::Debug for ConfigSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSpace")
            .field("caps", &self.cap_offsets)
            .finish()
    }
}

impl ConfigSpace {
    /// Builds the header for `header` and `bars`.
    pub fn new(header: &PciHeader, bars: &[Option<BarSpec>; BAR_COUNT]) -> Self {
        let mut cs = ConfigSpace {
            bytes: vec![0; CONFIG_SPACE_SIZE],
            wmask: vec![0; CONFIG_SPACE_SIZE],
            trapped: Vec::new(),
            next_cap: FIRST_CAP,
            last_cap_ptr: PCI_CAPABILITY_LIST,
            cap_offsets: Vec::new(),
        };
        cs.put16(0x00, header.vendor_id);
        cs.put16(0x02, header.device_id);
        cs.bytes[0x08] = header.revision_id;
        cs.bytes[0x09] = header.class_code as u8;
        cs.bytes[0x0a] = (header.class_code >> 8) as u8;
        cs.bytes[0x0b] = (header.class_code >> 16) as u8;
        cs.put16(0x2c, header.subsystem_vendor_id);
        cs.put16(0x2e, header.subsystem_id);
        cs.bytes[0x3d] = header.interrupt_pin;
        // Memory space, bus master, INTx disable are the host's to set.
        cs.wmask[PCI_COMMAND] = 0x06;
        cs.wmask[PCI_COMMAND + 1] = 0x04;
        cs.wmask[PCI_INTERRUPT_LINE] = 0xff;
        let mut i = 0;
        while i < BAR_COUNT {
            if let Some(bar) = &bars[i] {
                cs.put32(0x10 + 4 * i, bar.type_bits());
                if bar.is_64bit {
                    i += 1;
                }
            }
            i += 1;
        }
        cs
    }

    /// Builds the configuration space every controller presents for `spec`: the header, then
    /// `spec.capabilities` in order from offset 0x40 (see [`capability_offsets`]), then the
    /// MSI-X capability if `spec.msix` is set.
    pub fn from_spec(spec: &FunctionSpec) -> Result<Self, EpcError> {
        let mut cs = ConfigSpace::new(&spec.header, &spec.bars);
        for cap in &spec.capabilities {
            cs.add_capability(cap)?;
        }
        if let Some(msix) = &spec.msix {
            cs.add_msix(msix)?;
        }
        Ok(cs)
    }

    fn put16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn put32(&mut self, off: usize, v: u32) {
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Appends `cap` to the capability list; returns its offset.
    pub fn add_capability(&mut self, cap: &Capability) -> Result<usize, EpcError> {
        let len = (2 + cap.body.len() + 3) & !3;
        let off = self.next_cap;
        if off + len > LEGACY_CONFIG_END {
            return Err(EpcError::Invalid(
                "capabilities do not fit in config space".into(),
            ));
        }
        let cap_len = 2 + cap.body.len();
        for r in cap.writable.iter().chain(&cap.trapped) {
            if r.start >= r.end || r.end > cap_len {
                return Err(EpcError::Invalid(format!(
                    "capability range {r:?} outside its {cap_len} bytes"
                )));
            }
        }
        self.bytes[off] = cap.id;
        self.bytes[off + 1] = 0;
        self.bytes[off + 2..off + cap_len].copy_from_slice(&cap.body);
        for r in &cap.writable {
            for b in &mut self.wmask[off + r.start..off + r.end] {
                *b = 0xff;
            }
        }
        for r in &cap.trapped {
            self.trapped.push(off + r.start..off + r.end);
        }
        self.bytes[self.last_cap_ptr] = off as u8;
        self.last_cap_ptr = off + 1;
        self.next_cap = off + len;
        let status = u16::from_le_bytes([self.bytes[PCI_STATUS], self.bytes[PCI_STATUS + 1]]);
        self.put16(PCI_STATUS, status | PCI_STATUS_CAP_LIST);
        self.cap_offsets.push((cap.id, off));
        Ok(off)
    }

    /// Adds the standard MSI-X capability for `msix`; the enable and function-mask bits are
    /// writable by the host.
    pub fn add_msix(&mut self, msix: &MsixSpec) -> Result<usize, EpcError> {
        if msix.vectors == 0 || msix.vectors > 2048 {
            return Err(EpcError::Invalid(format!("{} MSI-X vectors", msix.vectors)));
        }
        for (bar, off) in [
            (msix.table_bar, msix.table_offset),
            (msix.pba_bar, msix.pba_offset),
        ] {
            if bar as usize >= BAR_COUNT || off % 8 != 0 || off > u32::MAX as u64 {
                return Err(EpcError::Invalid(format!(
                    "MSI-X structure at BAR {bar} offset {off:#x}: BAR must be 0-5 and the offset 8-byte aligned below 4 GiB"
                )));
            }
        }
        let mut body = Vec::with_capacity(10);
        body.extend_from_slice(&(msix.vectors - 1).to_le_bytes());
        body.extend_from_slice(&(msix.table_offset as u32 | msix.table_bar as u32).to_le_bytes());
        body.extend_from_slice(&(msix.pba_offset as u32 | msix.pba_bar as u32).to_le_bytes());
        let off = self.add_capability(&Capability {
            id: PCI_CAP_ID_MSIX,
            body,
            writable: vec![],
            trapped: vec![],
        })?;
        self.wmask[off + 3] = 0xc0;
        Ok(off)
    }

    /// Offsets of the capabilities added so far, as (ID, offset).
    pub fn capabilities(&self) -> &[(u8, usize)] {
        &self.cap_offsets
    }

    /// Whether `[offset, offset+len)` touches a trapped range.
    pub fn is_trapped(&self, offset: usize, len: usize) -> bool {
        let end = offset.saturating_add(len);
        self.trapped.iter().any(|r| offset < r.end && end > r.start)
    }

    /// Reads from the stored image (out-of-range bytes read as 0xff would be wrong for a
    /// present function; they read as zero).
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i)
                .and_then(|o| self.bytes.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Applies a host write through the write mask.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        for (i, v) in data.iter().enumerate() {
            let o = offset.saturating_add(i);
            if o >= CONFIG_SPACE_SIZE {
                break;
            }
            let m = self.wmask[o];
            self.bytes[o] = (self.bytes[o] & !m) | (v & m);
        }
    }

    /// The whole image.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The offsets at which [`ConfigSpace::from_spec`] places `caps`, so a function can locate its
/// own capabilities (e.g. to decode trapped accesses) without asking the controller.
pub fn capability_offsets(caps: &[Capability]) -> Vec<usize> {
    let mut off = FIRST_CAP;
    caps.iter()
        .map(|c| {
            let at = off;
            off += (2 + c.body.len() + 3) & !3;
            at
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // one range per capability field is the point
mod tests {
    use super::*;

    fn empty() -> ConfigSpace {
        ConfigSpace::new(&PciHeader::default(), &Default::default())
    }

    #[test]
    fn capability_ranges_are_checked_and_the_list_is_linked() {
        let mut cs = empty();
        let bad = Capability {
            id: PCI_CAP_ID_VNDR,
            body: vec![0; 6],
            writable: vec![10..12],
            trapped: vec![],
        };
        assert!(cs.add_capability(&bad).is_err());
        let cap = Capability {
            id: PCI_CAP_ID_VNDR,
            body: vec![0; 6],
            writable: vec![4..6],
            trapped: vec![2..3],
        };
        let a = cs.add_capability(&cap).unwrap();
        let b = cs.add_capability(&cap).unwrap();
        assert_eq!((a, b), (0x40, 0x48));
        assert_eq!(cs.bytes()[0x34], 0x40);
        assert_eq!(cs.bytes()[0x41], 0x48);
        assert_eq!(capability_offsets(&[cap.clone(), cap]), vec![0x40, 0x48]);
        cs.write(0x40, &[0xff; 8]);
        assert_eq!(
            &cs.bytes()[0x40..0x48],
            &[PCI_CAP_ID_VNDR, 0x48, 0, 0, 0xff, 0xff, 0, 0]
        );
        assert!(cs.is_trapped(0x42, 1) && !cs.is_trapped(0x43, 1));
        assert!(!cs.is_trapped(usize::MAX, 4));
        let mut b = [1u8; 2];
        cs.read(usize::MAX, &mut b);
        assert_eq!(b, [0, 0]);
        cs.write(usize::MAX, &[1, 2]);
    }

    #[test]
    fn msix_placement_is_validated() {
        let mut cs = empty();
        let m = |table_bar, table_offset| MsixSpec {
            vectors: 4,
            table_bar,
            table_offset,
            pba_bar: 0,
            pba_offset: 0x800,
        };
        assert!(cs.add_msix(&m(6, 0)).is_err());
        assert!(cs.add_msix(&m(2, 4)).is_err());
        assert!(cs.add_msix(&m(2, 1 << 32)).is_err());
        let off = cs.add_msix(&m(2, 0x1000)).unwrap();
        assert_eq!(cs.bytes()[off + 4], 0x02);
        assert_eq!(
            u16::from_le_bytes([cs.bytes()[off + 2], cs.bytes()[off + 3]]),
            3
        );
    }
}
