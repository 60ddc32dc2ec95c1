//! A bump allocator over the host RAM arena: how the host-side driver gets DMA memory for
//! rings and buffers. Nothing is ever freed individually; [`BumpAllocator::reset`] starts
//! over (e.g. between test phases, after a device reset).

use crate::LoopbackError;

/// Hands out ranges of `[base, base + size)`.
#[derive(Debug, Clone)]
pub struct BumpAllocator {
    base: u64,
    size: u64,
    next: u64,
}

impl BumpAllocator {
    /// An allocator for `[base, base + size)`.
    pub fn new(base: u64, size: u64) -> Self {
        BumpAllocator {
            base,
            size,
            next: 0,
        }
    }

    /// Allocates `size` bytes aligned (as a bus address) to `align`, a power of two.
    /// A zero-size request still returns a distinct aligned address.
    pub fn alloc(&mut self, size: u64, align: u64) -> Result<u64, LoopbackError> {
        if !align.is_power_of_two() {
            return Err(LoopbackError::BadAlignment(align));
        }
        let oom = LoopbackError::OutOfMemory { size, align };
        let start = (self.base + self.next)
            .checked_next_multiple_of(align)
            .ok_or(oom.clone())?;
        let off = start - self.base;
        let end = off.checked_add(size.max(1)).ok_or(oom.clone())?;
        if end > self.size {
            return Err(oom);
        }
        self.next = end;
        Ok(start)
    }

    /// Forgets every allocation.
    pub fn reset(&mut self) {
        self.next = 0;
    }

    /// Bytes handed out so far (including alignment padding).
    pub fn used(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_disjoint_and_bounded() {
        let mut a = BumpAllocator::new(0x1_0000_0000, 0x3000);
        let x = a.alloc(10, 8).unwrap();
        let y = a.alloc(16, 4096).unwrap();
        assert_eq!(x, 0x1_0000_0000);
        assert_eq!(y, 0x1_0000_1000);
        assert!(a.alloc(0x2000, 1).is_err());
        assert_eq!(a.alloc(0x1000, 4096).unwrap(), 0x1_0000_2000);
        assert!(a.alloc(1, 1).is_err());
        assert_eq!(a.alloc(1, 3), Err(LoopbackError::BadAlignment(3)));
        a.reset();
        assert_eq!(a.alloc(1, 1).unwrap(), 0x1_0000_0000);
    }
}
