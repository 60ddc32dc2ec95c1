//! An [`EndpointController`](epf_epc::EndpointController) over Linux's PCI endpoint
//! subsystem: the function's resources come from the pci_epf_user endpoint function
//! (`kernel/epf-user`), which hands one process its BAR memory, outbound windows, DMA,
//! interrupts and link events through `/dev/epf-user-NAME`. This is what runs on a board.
//!
//! Module map: `uapi` (the kernel ABI, mirrored), `device` (the character device),
//! `host_memory` (windows and DMA as [`HostMemory`](epf_epc::HostMemory)), `controller`
//! ([`EpfController`]).

mod controller;
mod device;
mod host_memory;
pub mod uapi;

pub use controller::{EpfController, EpfOptions, LinuxEpfController};
pub use device::device_path;
pub use host_memory::HostMemStats;
