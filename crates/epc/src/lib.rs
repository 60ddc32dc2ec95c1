//! The endpoint controller (EPC) layer.
//!
//! This crate owns the vocabulary shared between a PCIe *endpoint function* (for us: a
//! virtio-pci device) and the *endpoint controller* that connects it to a PCIe host. It is
//! modelled on Linux's `struct pci_epc_ops`: a function describes its configuration header,
//! capabilities, BARs and interrupts ([`FunctionSpec`]), hands it to a controller
//! ([`EndpointController::start`]), and from then on
//!
//! * reaches host memory through [`HostMemory`] (outbound windows or a DMA engine behind it),
//! * raises MSI-X / MSI / INTx through [`EndpointController::raise_irq`],
//! * learns about host register accesses either synchronously ([`FunctionHandler`] callbacks
//!   for *trapped* BAR areas and doorbells) or by polling shared BAR memory ([`BarMemory`]).
//!
//! A controller states what it can do in [`EpcFeatures`]; the function adapts (for instance,
//! a controller that cannot add vendor capabilities forces the legacy virtio layout).
//!
//! Implementations live in other crates: `epf-loopback` (an in-process host model used by the
//! unit tests), `epf-vfio-user` (a real Linux host in QEMU over the vfio-user protocol) and
//! `epf-linux-epf` (Linux's PCI endpoint subsystem on a board).
//!
//! Two small things every layer shares live here too: [`counters`], the one format of the
//! counters an operator reads, and [`sync`], the poison-tolerant lock helpers.

mod bar;
mod config_space;
mod controller;
pub mod counters;
mod error;
pub mod fault_guard;
mod header;
mod host_memory;
mod irq;
mod outbound_windows;
mod shared_mem;
pub mod sync;

pub use bar::{AreaKind, BarArea, BarSpec, BAR_COUNT, MIN_BAR_SIZE, PAGE_SIZE};
pub use config_space::{
    capability_offsets, Capability, ConfigSpace, CONFIG_SPACE_SIZE, PCI_CAP_ID_MSIX,
    PCI_CAP_ID_VNDR,
};
pub use controller::{
    EndpointController, EpcFeatures, FunctionHandler, FunctionSpec, HostAccess, MsixSpec,
};
pub use counters::{CounterSource, Counters};
pub use error::{EpcError, HostMemError};
pub use header::PciHeader;
pub use host_memory::{region_offset, HostMemory, IN_PLACE_MAX_RANGES};
pub use irq::{Irq, IrqSupport};
pub use outbound_windows::{OutboundWindows, WindowLimited, WindowStats};
pub use shared_mem::SharedMemory;
