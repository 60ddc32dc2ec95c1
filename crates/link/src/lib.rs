//! The link of the endpoint-side rig: a simulated PCIe endpoint controller.
//!
//! Two VMs are clients of one process. The **EP VM** sees a PCI device, the controller
//! (`1af4:10fe`), whose registers let an EPC driver (kernel/sim-epc) do what a
//! DesignWare-class controller does: write the function's header, MSI and MSI-X
//! capabilities, program BARs backed by EP memory, outbound windows over an aperture, DMA
//! transfers, doorbells, raise interrupts to the host and learn of host events. The **host
//! VM** sees the endpoint function the EP programmed, with its BARs mapped straight onto the
//! EP VM's RAM. The register map is in docs/sim-epc.md.
//!
//! Module map: `regs` (register map), `state` (register file and checks), `layout` (the
//! host-side device), `link` (behaviour: [`Link`], [`EpHandler`]), `stats` (counters).

mod layout;
mod link;
pub mod regs;
mod state;
mod stats;

pub use link::{EpHandler, EpPort, Link, EPC_DEVICE, EPC_VENDOR};
pub use stats::Stats;
