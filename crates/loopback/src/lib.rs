//! An in-process PCIe host model for testing endpoint functions, and a host-side virtio-pci
//! driver that uses it.
//!
//! * [`LoopbackController`] implements [`epf_epc::EndpointController`]: the function under
//!   test starts on it exactly as on a real controller. Its advertised
//!   [`EpcFeatures`](epf_epc::EpcFeatures) are configurable ([`LoopbackOptions`]) and
//!   enforced, so tests can model weaker controllers.
//! * [`HostBus`] is the host side: config and BAR accesses, host RAM (an arena at a nonzero
//!   bus address, [`ArenaMemory`]) with a DMA allocator, MSI-X/INTx observation and
//!   function-level reset.
//! * [`host_driver`] is a virtio-pci *modern* driver written from the virtio 1.2 spec and
//!   Linux's register sequences, driving a device only through [`HostBus`].

mod bump;
mod controller;
mod error;
mod host_bus;
pub mod host_driver;
mod host_ram;
mod msix;
mod options;
mod spec_check;
mod stats;

pub use bump::BumpAllocator;
pub use controller::LoopbackController;
pub use error::LoopbackError;
pub use host_bus::HostBus;
pub use host_ram::ArenaMemory;
pub use msix::MSIX_ENTRY_SIZE;
pub use options::{LoopbackOptions, DEFAULT_MSIX_VECTORS, DEFAULT_RAM_BASE, DEFAULT_RAM_SIZE};
pub use stats::LoopbackStats;
