//! `virtio-epf`: serve one virtio device as a PCIe endpoint function, over a vfio-user socket
//! (QEMU's `vfio-user-pci` as the host) or through Linux's PCI endpoint subsystem (`--epf`).
//!
//! * [`registry`]: the devices the command serves, one line each;
//! * [`cli`]: the command line built from the registry, parsed into an [`Invocation`];
//! * [`serve`]: serving an invocation until SIGINT/SIGTERM;
//! * [`served`]: what is served, and its counters in one format;
//! * [`error`]: why serving failed, one line each.

pub mod cli;
pub mod error;
pub mod registry;
pub mod serve;
pub mod served;

pub use cli::{command, Invocation};
pub use error::Error;
pub use registry::{Registry, DEVICES};
pub use served::Served;
