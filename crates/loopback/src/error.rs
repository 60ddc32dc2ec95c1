//! Errors of the loopback host model's host-side services (RAM allocation and access).

use epf_epc::HostMemError;
use thiserror::Error;

/// A host-side request to the loopback model that could not be carried out.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LoopbackError {
    /// The bump allocator has no room left for `size` bytes aligned to `align`.
    #[error("host RAM arena exhausted: cannot allocate {size:#x} bytes aligned to {align:#x}")]
    OutOfMemory { size: u64, align: u64 },
    /// The requested alignment is not a power of two.
    #[error("alignment {0:#x} is not a power of two")]
    BadAlignment(u64),
    /// A host RAM access outside the arena.
    #[error(transparent)]
    Ram(#[from] HostMemError),
}
