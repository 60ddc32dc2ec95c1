//! The controller's register file: what the EP driver programmed, and the checks each write
//! must pass. Pure state; the effects of a write (starting the host side, raising interrupts,
//! copying memory) are carried out by [`crate::link::Link`].

use crate::regs::*;

/// One function BAR as the EP programmed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BarReg {
    pub phys: u64,
    pub size: u64,
    pub flags: u32,
    pub enabled: bool,
}

impl BarReg {
    pub fn is_64bit(&self) -> bool {
        (self.flags >> 1) & 3 == 2
    }

    pub fn prefetchable(&self) -> bool {
        self.flags & 8 != 0
    }

    /// Bytes of EP memory behind the BAR (a BAR smaller than a page sits in a whole page).
    pub fn backing_len(&self) -> u64 {
        self.size.max(ALIGN)
    }
}

/// One outbound window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WinReg {
    pub ap_offset: u64,
    pub size: u64,
    pub pci_addr: u64,
    pub enabled: bool,
}

impl WinReg {
    /// The host address of aperture offset `off`, if the window covers it.
    pub fn translate(&self, off: u64) -> Option<u64> {
        if self.enabled && off >= self.ap_offset && off - self.ap_offset < self.size {
            self.pci_addr.checked_add(off - self.ap_offset)
        } else {
            None
        }
    }
}

/// One DMA channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DmaReg {
    pub src: u64,
    pub dst: u64,
    pub len: u32,
    pub ctrl: u32,
    pub status: u32,
    pub done: u32,
}

/// One doorbell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbReg {
    pub bar: u32,
    pub offset: u32,
    pub enabled: bool,
    pub data: u32,
}

/// The whole register file.
#[derive(Debug, Clone, Default)]
pub struct Regs {
    pub started: bool,
    pub host_attached: bool,
    pub bme: bool,
    pub event_status: u32,
    pub event_mask: u32,
    pub error: u32,
    pub error_count: u32,
    pub aperture_base: u64,
    pub irq_result: u32,
    pub doorbell_pending: u32,
    /// `HDR_ID`, `HDR_CLASS_REV`, `HDR_SUBSYS`, `HDR_INTX`.
    pub hdr: [u32; 4],
    pub msi_vectors: u32,
    pub msix_vectors: u32,
    pub msix_table: u32,
    pub msix_pba: u32,
    pub bars: [BarReg; 6],
    pub windows: [WinReg; WINDOWS],
    pub dma: [DmaReg; DMA_CHANNELS],
    pub doorbells: [DbReg; DOORBELLS],
}

/// Replaces the low or high half of `v`.
pub fn set_half(v: &mut u64, high: bool, x: u32) {
    if high {
        *v = (*v & 0xffff_ffff) | (u64::from(x) << 32);
    } else {
        *v = (*v & !0xffff_ffff) | u64::from(x);
    }
}

/// The low or high half of `v`.
pub fn half(v: u64, high: bool) -> u32 {
    if high {
        (v >> 32) as u32
    } else {
        v as u32
    }
}

impl Regs {
    /// Records a rejected write.
    pub fn reject(&mut self, code: ErrorCode) {
        self.error = code as u32;
        self.error_count = self.error_count.wrapping_add(1);
    }

    /// Whether the host can see the function now.
    pub fn link_up(&self) -> bool {
        self.started && self.host_attached
    }

    /// Checks BAR `n` for enabling: size, flags, its 64-bit partner. Where its memory is (EP
    /// RAM or not) is checked by the caller, which can see EP RAM.
    pub fn check_bar(&self, n: usize) -> Result<(), ErrorCode> {
        let b = &self.bars[n];
        if b.flags & 1 != 0
            || !b.size.is_power_of_two()
            || b.size < epf_epc::MIN_BAR_SIZE
            || b.size > MAX_BAR_SIZE
            || b.phys % ALIGN != 0
            || (!b.is_64bit() && b.size > 1 << 31)
            || (b.flags >> 1) & 3 == 1
            || (b.flags >> 1) & 3 == 3
        {
            return Err(ErrorCode::BadBar);
        }
        if b.is_64bit() && (n >= 5 || self.bars[n + 1].enabled) {
            return Err(ErrorCode::BadBar);
        }
        if n > 0 && self.bars[n - 1].enabled && self.bars[n - 1].is_64bit() {
            return Err(ErrorCode::BadBar);
        }
        b.phys
            .checked_add(b.backing_len())
            .ok_or(ErrorCode::BadBar)?;
        Ok(())
    }

    /// Checks window `w` for enabling against the aperture size and the other windows.
    pub fn check_window(&self, w: usize, aperture_size: u64) -> Result<(), ErrorCode> {
        let win = &self.windows[w];
        let end = win
            .ap_offset
            .checked_add(win.size)
            .ok_or(ErrorCode::BadWindow)?;
        if win.size == 0
            || win.ap_offset % ALIGN != 0
            || end > aperture_size
            || win.pci_addr.checked_add(win.size).is_none()
        {
            return Err(ErrorCode::BadWindow);
        }
        let overlaps = self.windows.iter().enumerate().any(|(i, o)| {
            i != w && o.enabled && o.ap_offset < end && win.ap_offset < o.ap_offset + o.size
        });
        if overlaps {
            return Err(ErrorCode::BadWindow);
        }
        Ok(())
    }

    /// Checks doorbell `d` for enabling: a dword inside an enabled BAR.
    pub fn check_doorbell(&self, d: usize) -> Result<(), ErrorCode> {
        let db = &self.doorbells[d];
        let bar = self
            .bars
            .get(db.bar as usize)
            .filter(|b| b.enabled)
            .ok_or(ErrorCode::BadDoorbell)?;
        if db.offset % 4 != 0 || u64::from(db.offset) + 4 > bar.size {
            return Err(ErrorCode::BadDoorbell);
        }
        Ok(())
    }

    /// The host address behind aperture offset `off`, through the enabled windows.
    pub fn translate(&self, off: u64) -> Option<(u64, u64)> {
        self.windows
            .iter()
            .find_map(|w| w.translate(off).map(|a| (a, w.ap_offset + w.size - off)))
    }

    /// Resets everything the EP programmed (EP reset or a new EP VM).
    pub fn reset(&mut self) {
        let host_attached = self.host_attached;
        let bme = self.bme;
        *self = Regs {
            host_attached,
            bme,
            ..Regs::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_checked() {
        let mut r = Regs::default();
        r.bars[0] = BarReg {
            phys: 0x10_0000,
            size: 512,
            flags: 0,
            enabled: false,
        };
        assert_eq!(r.check_bar(0), Ok(()));
        r.bars[0].size = 100;
        assert_eq!(r.check_bar(0), Err(ErrorCode::BadBar));
        r.bars[0].size = 4096;
        r.bars[0].flags = 1; // I/O space
        assert_eq!(r.check_bar(0), Err(ErrorCode::BadBar));
        r.bars[0].flags = 4; // 64-bit
        r.bars[1].enabled = true;
        assert_eq!(r.check_bar(0), Err(ErrorCode::BadBar));
        r.bars[1].enabled = false;
        assert_eq!(r.check_bar(0), Ok(()));
        r.bars[5] = BarReg {
            phys: 0,
            size: 4096,
            flags: 4,
            enabled: false,
        };
        assert_eq!(r.check_bar(5), Err(ErrorCode::BadBar));
        r.bars[2] = BarReg {
            phys: 0x1001,
            size: 4096,
            flags: 0,
            enabled: false,
        };
        assert_eq!(r.check_bar(2), Err(ErrorCode::BadBar));
        r.bars[2].phys = !0xfff;
        assert_eq!(r.check_bar(2), Err(ErrorCode::BadBar));
    }

    #[test]
    fn windows_stay_in_the_aperture_and_apart() {
        let mut r = Regs::default();
        r.windows[0] = WinReg {
            ap_offset: 0x1000,
            size: 0x2000,
            pci_addr: 0x8000_0010,
            enabled: false,
        };
        assert_eq!(r.check_window(0, 0x10_0000), Ok(()));
        assert_eq!(r.check_window(0, 0x2000), Err(ErrorCode::BadWindow));
        r.windows[0].enabled = true;
        r.windows[1] = WinReg {
            ap_offset: 0x2000,
            size: 0x1000,
            pci_addr: 0,
            enabled: false,
        };
        assert_eq!(r.check_window(1, 0x10_0000), Err(ErrorCode::BadWindow));
        r.windows[1].ap_offset = 0x3000;
        assert_eq!(r.check_window(1, 0x10_0000), Ok(()));
        r.windows[1].ap_offset = 0x3001;
        assert_eq!(r.check_window(1, 0x10_0000), Err(ErrorCode::BadWindow));
        r.windows[1].ap_offset = !0xfff;
        assert_eq!(r.check_window(1, u64::MAX), Err(ErrorCode::BadWindow));
        assert_eq!(r.translate(0x1000), Some((0x8000_0010, 0x2000)));
        assert_eq!(r.translate(0x2fff), Some((0x8000_200f, 1)));
        assert_eq!(r.translate(0x3000), None);
        assert_eq!(r.translate(0xfff), None);
    }
}
