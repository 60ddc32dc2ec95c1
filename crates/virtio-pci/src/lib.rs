//! The virtio-pci endpoint function: the transport between a [`VirtioDevice`] and an
//! [`EndpointController`].
//!
//! * `layout` (modern) and [`legacy_layout`] decide what the host sees (header, vendor
//!   capabilities, BARs, MSI-X);
//! * [`registers`] is the register file and device status machine, written in terms of
//!   *operations* (select a queue, set a ring address, write the status), fed by trapped
//!   accesses (`common_cfg` and `legacy_cfg` decode them) or by polled snapshots of the
//!   legacy register page ([`legacy_poll`]);
//! * `worker` runs the device on its own thread with its queues; `poller` is the thread that
//!   drives [`legacy_poll`] when registers are polled; `dispatch` carries what the register
//!   engines decide (activate, reset, notify) to the worker; `shared` is the state they share;
//! * `interrupt` turns "this queue has used buffers" into MSI-X or INTx plus ISR;
//! * `function` ties them together: [`VirtioPciFunction`] is the [`FunctionHandler`] the
//!   controller calls.
//!
//! [`VirtioDevice`]: epf_device::VirtioDevice
//! [`EndpointController`]: epf_epc::EndpointController
//! [`FunctionHandler`]: epf_epc::FunctionHandler

mod backoff;
mod caps;
mod common_cfg;
mod dispatch;
mod function;
mod interrupt;
mod layout;
mod legacy_cfg;
pub mod legacy_layout;
pub mod legacy_poll;
mod notify_data;
mod notify_poll;
mod options;
mod pci_cfg_window;
mod poller;
pub mod registers;
mod shared;
mod stats;
#[cfg(feature = "testing")]
pub mod testing;
mod worker;

pub use function::{FunctionError, VirtioPciFunction};
pub use legacy_poll::PollStats;
pub use options::{
    FunctionOptions, IrqMode, Layout, NotifyMode, OptionsError, RegisterAccess, RingFormat,
};
pub use stats::{FunctionStats, QueueStats};

/// "No MSI-X vector" in queue_msix_vector / config_msix_vector.
pub const NO_VECTOR: u16 = 0xffff;
