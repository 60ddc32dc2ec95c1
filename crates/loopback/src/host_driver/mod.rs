//! A host-side virtio-pci **modern** driver, written from the virtio 1.2 specification
//! (section 4.1) and mirroring the register sequences of Linux's
//! `drivers/virtio/virtio_pci_modern_dev.c`, `virtio_pci_modern.c` and the split and packed
//! rings of `virtio_ring.c`. It reaches the device only through [`HostBus`](crate::HostBus) —
//! configuration space, BAR accesses and host RAM — exactly like a real host, so it can
//! exercise a device implementation end to end. It shares no code or constants with the
//! device side on purpose.
//!
//! Typical use:
//! ```text
//! let mut drv = VirtioPciDriver::probe(controller.host())?;
//! drv.enable_msix();
//! drv.init(wanted_features)?;              // reset, ACK, DRIVER, features, FEATURES_OK
//! let mut q = drv.setup_queue(0, None, Some(1))?;
//! drv.driver_ok();
//! let head = q.add(&[(buf, 64, false), (resp, 16, true)])?;
//! q.kick()?;
//! let (id, len) = q.wait_used()?;
//! ```

mod caps;
mod error;
mod packed;
mod queue;
pub mod spec;
mod transport;

pub use caps::{find_virtio_caps, walk_capabilities, VirtioCap, VirtioCaps};
pub use error::{DriverError, Result};
pub use queue::{Buf, HostQueue, INDIRECT_SLOT_DESCS};
pub use transport::{VirtioPciDriver, DEFAULT_TIMEOUT};
