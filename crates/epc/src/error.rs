//! Errors reported by endpoint controllers and by host-memory accesses.

use thiserror::Error;

/// Why a controller refused a request from the function.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EpcError {
    /// The controller has no such feature (e.g. it cannot add vendor capabilities, or trap).
    #[error("endpoint controller does not support {0}")]
    Unsupported(&'static str),
    /// The request is malformed (overlapping BAR areas, too many vectors, ...).
    #[error("invalid endpoint configuration: {0}")]
    Invalid(String),
    /// The interrupt cannot be delivered: the host has not enabled it (a masked MSI-X vector
    /// is not an error: the controller keeps it pending, as PCI requires).
    #[error("interrupt {0} not enabled by the host")]
    IrqNotEnabled(String),
    /// The link to the host is down.
    #[error("link to the host is down")]
    LinkDown,
    /// An OS-level failure.
    #[error("{0}")]
    Os(String),
}

/// A host-memory access that could not be carried out. Nothing was read or written.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum HostMemError {
    /// `[addr, addr+len)` is not (entirely) inside memory the host exposed to us.
    #[error("host address range {addr:#x}+{len:#x} is not mapped")]
    OutOfRange { addr: u64, len: u64 },
    /// `addr + len` overflows the 64-bit address space.
    #[error("host address range {addr:#x}+{len:#x} overflows")]
    Overflow { addr: u64, len: u64 },
    /// No outbound window could be set up for the access.
    #[error("no outbound window available for {addr:#x}")]
    NoWindow { addr: u64 },
    /// The host took the memory away (truncated the file behind a mapping); see
    /// [`crate::fault_guard`]. The mapping stays unusable until the host maps memory again.
    #[error("host memory at {addr:#x} is gone (the host truncated the file behind it)")]
    Lost { addr: u64 },
}
