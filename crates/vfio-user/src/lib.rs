//! An [`EndpointController`](epf_epc::EndpointController) whose PCIe link is the vfio-user
//! protocol.
//!
//! For testing without endpoint hardware, the "PCIe host" is a Linux guest in QEMU (>= 10.1)
//! with a `vfio-user-pci` device connected to our Unix socket. QEMU is the vfio-user *client*;
//! this crate is the *server*: it presents the function's configuration space, BARs and
//! interrupts as a vfio-user PCI device, maps guest RAM the client shares for DMA, and turns
//! guest register accesses into [`FunctionHandler`](epf_epc::FunctionHandler) callbacks.
//!
//! What the host sees, by [`AreaKind`](epf_epc::AreaKind) of each BAR area:
//! * `Memory` areas are backed by a memfd per BAR, sent to the client with a sparse-mmap
//!   region capability; QEMU maps them straight into the guest (guest accesses never reach us,
//!   the function polls [`bar_memory`](epf_epc::EndpointController::bar_memory)).
//! * `Trapped` areas and `Doorbell`s arrive as REGION_READ/REGION_WRITE messages and are
//!   delivered synchronously to the handler (doorbells read as zero).
//! * The MSI-X table and PBA are emulated by QEMU; we receive one eventfd per vector.
//!
//! We implement the protocol ourselves rather than using the rust-vmm `vfio_user` crate
//! (0.1.x): its server handles a single connection on a single thread with fixed capabilities
//! (`max_msg_fds` 1), has no DMA_READ/DMA_WRITE, sends a region's descriptor only along with
//! sparse areas, and its DMA_UNMAP flag names do not match `<linux/vfio.h>` (bit 1 is
//! `VFIO_DMA_UNMAP_FLAG_ALL`, which QEMU sends). We also need to survive a client going away
//! and serve the next one, which QEMU's client (no reconnect) relies on after a restart.
//!
//! Protocol references: QEMU `docs/interop/vfio-user.rst` and the client in
//! `hw/vfio-user/` (`proxy.c`, `device.c`, `container.c`, `pci.c`); structure layouts from
//! `<linux/vfio.h>` (via `vfio-bindings`).
//!
//! Module map: [`protocol`] (wire format), `caps` (VERSION capabilities), `socket` (bytes and
//! descriptors over the socket), `session` (one client's commands), `function` (the started
//! function), `region` (region info), `access` (region reads/writes), `dma` (DMA maps and
//! [`HostMemory`](epf_epc::HostMemory)), `irq` (interrupt eventfds), `stats` (counters),
//! `controller` (accept loop and the `EndpointController` implementation).

mod access;
mod caps;
mod controller;
mod dma;
mod error;
mod function;
mod irq;
pub mod protocol;
mod region;
mod session;
mod socket;
mod stats;

pub use controller::{VfioUserController, MAX_MSIX_VECTORS};
pub use dma::DmaTable;
pub use error::VfioUserError;
pub use stats::Stats;
