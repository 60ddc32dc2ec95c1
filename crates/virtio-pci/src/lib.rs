//! The virtio-pci endpoint function: the transport between a [`VirtioDevice`] and an
//! [`EndpointController`].
//!
//! * [`layout`] decides what the host sees (header, vendor capabilities, BARs, MSI-X);
//! * [`registers`] is the register file and device status machine, written in terms of
//!   *operations* (select a queue, set a ring address, write the status), so that trapped
//!   accesses ([`common_cfg`] decodes them) and, later, polled snapshots of BAR memory can feed
//!   the same state machine;
//! * [`worker`] runs the device on its own thread with its queues;
//! * [`interrupt`] turns "this queue has used buffers" into MSI-X or INTx plus ISR;
//! * [`function`] ties them together and is the [`FunctionHandler`] the controller calls.
//!
//! [`VirtioDevice`]: epf_device::VirtioDevice
//! [`EndpointController`]: epf_epc::EndpointController
//! [`FunctionHandler`]: epf_epc::FunctionHandler

pub mod caps;
pub mod common_cfg;
pub mod function;
pub mod interrupt;
pub mod layout;
pub mod legacy_cfg;
pub mod legacy_layout;
pub mod legacy_poll;
pub mod options;
pub mod pci_cfg_window;
pub mod registers;
pub mod stats;
#[cfg(feature = "testing")]
pub mod testing;
pub mod worker;

pub use function::{FunctionError, VirtioPciFunction};
pub use legacy_poll::PollStats;
pub use options::{FunctionOptions, IrqMode, Layout, NotifyMode, RegisterAccess};
pub use stats::{FunctionStats, QueueStats};

/// "No MSI-X vector" in queue_msix_vector / config_msix_vector.
pub const NO_VECTOR: u16 = 0xffff;
