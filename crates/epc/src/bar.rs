//! Base Address Registers: how a function lays out each BAR and what kind of endpoint
//! resource stands behind each area of it.

use crate::EpcError;

/// Number of BARs of a type-0 function.
pub const BAR_COUNT: usize = 6;

/// What stands behind an area of a BAR, i.e. how host accesses to it reach the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AreaKind {
    /// Every host read and write is delivered synchronously to
    /// [`FunctionHandler::bar_read`](crate::FunctionHandler::bar_read) /
    /// [`bar_write`](crate::FunctionHandler::bar_write). Real controllers rarely can do this.
    Trapped,
    /// Host writes raise an event at the endpoint ([`FunctionHandler::bar_write`] is called
    /// and may not be answered synchronously); host reads return zero. This is the
    /// "RC-to-EP doorbell" of real controllers.
    ///
    /// [`FunctionHandler::bar_write`]: crate::FunctionHandler::bar_write
    Doorbell,
    /// Plain endpoint memory, shared with the host: host accesses change memory and nothing
    /// else. The function sees it through [`EndpointController::bar_memory`] and polls.
    ///
    /// [`EndpointController::bar_memory`]: crate::EndpointController::bar_memory
    Memory,
    /// The MSI-X table, owned and emulated by the controller.
    MsixTable,
    /// The MSI-X pending-bit array, owned and emulated by the controller.
    MsixPba,
}

/// One area of a BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarArea {
    pub offset: u64,
    pub size: u64,
    pub kind: AreaKind,
}

/// Layout of one BAR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BarSpec {
    /// Size in bytes; a power of two, at least [`MIN_BAR_SIZE`]. A BAR smaller than a page
    /// holds at most one memory area, covering all of it (the host maps the page it sits in).
    pub size: u64,
    pub is_64bit: bool,
    pub prefetchable: bool,
    /// Non-overlapping areas; bytes outside any area read as zero and ignore writes.
    pub areas: Vec<BarArea>,
}

/// The page size memory areas are aligned to (host mappings are page granular).
pub const PAGE_SIZE: u64 = 4096;

/// The smallest BAR a function may have (`pci_epf_alloc_space` rounds smaller ones up to it).
pub const MIN_BAR_SIZE: u64 = 128;

impl BarSpec {
    /// The area holding `offset`, if any.
    pub fn area_at(&self, offset: u64) -> Option<&BarArea> {
        self.areas
            .iter()
            .find(|a| offset >= a.offset && offset - a.offset < a.size)
    }

    /// Checks the layout: size, alignment of memory areas, overlaps.
    pub fn validate(&self) -> Result<(), EpcError> {
        if !self.size.is_power_of_two() || self.size < MIN_BAR_SIZE {
            return Err(EpcError::Invalid(format!(
                "BAR size {:#x} must be a power of two >= 128 bytes",
                self.size
            )));
        }
        if !self.is_64bit && self.size > (1 << 31) {
            return Err(EpcError::Invalid("32-bit BAR larger than 2 GiB".into()));
        }
        let mut areas: Vec<_> = self.areas.clone();
        areas.sort_by_key(|a| a.offset);
        let mut end = 0u64;
        for a in &areas {
            let a_end = a
                .offset
                .checked_add(a.size)
                .ok_or_else(|| EpcError::Invalid("BAR area overflows".into()))?;
            if a.size == 0 || a_end > self.size {
                return Err(EpcError::Invalid(format!(
                    "BAR area {:#x}+{:#x} outside BAR of {:#x}",
                    a.offset, a.size, self.size
                )));
            }
            if a.offset < end {
                return Err(EpcError::Invalid(format!(
                    "BAR areas overlap at {:#x}",
                    a.offset
                )));
            }
            let whole_small_bar = self.size < PAGE_SIZE && a.offset == 0 && a.size == self.size;
            if a.kind == AreaKind::Memory
                && !whole_small_bar
                && (a.offset % PAGE_SIZE != 0 || a.size % PAGE_SIZE != 0)
            {
                return Err(EpcError::Invalid(format!(
                    "memory area {:#x}+{:#x} is not page aligned",
                    a.offset, a.size
                )));
            }
            end = a_end;
        }
        Ok(())
    }

    /// The 32-bit value of the BAR register's low dword type bits (memory space).
    pub fn type_bits(&self) -> u32 {
        let mut v = 0;
        if self.is_64bit {
            v |= 0b100;
        }
        if self.prefetchable {
            v |= 0b1000;
        }
        v
    }
}
