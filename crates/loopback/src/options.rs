//! Construction options of the loopback controller: the host RAM arena and the controller
//! capabilities ([`EpcFeatures`]) it advertises, so tests can model weaker controllers.

use epf_epc::{EpcFeatures, HostAccess, IrqSupport};

/// Default size of the host RAM arena.
pub const DEFAULT_RAM_SIZE: u64 = 16 << 20;
/// Default bus address of the first byte of the host RAM arena. Deliberately nonzero and
/// above 4 GiB so that confusing bus addresses with arena offsets, or truncating them to 32
/// bits, shows up immediately.
pub const DEFAULT_RAM_BASE: u64 = 0x1_0000_0000;
/// Default number of MSI-X vectors the controller supports.
pub const DEFAULT_MSIX_VECTORS: u16 = 64;

/// How to build a [`LoopbackController`](crate::LoopbackController).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopbackOptions {
    /// Size in bytes of the host RAM arena (rounded up to a page).
    pub ram_size: u64,
    /// Host bus address of the arena's first byte.
    pub ram_base: u64,
    /// What the controller advertises and enforces in
    /// [`start`](epf_epc::EndpointController::start).
    pub features: EpcFeatures,
    /// Create an [`EventFd`](vmm_sys_util::eventfd::EventFd) per MSI-X vector that is
    /// signalled on every delivered interrupt (like a KVM irqfd the host side can poll).
    pub msix_eventfds: bool,
}

impl LoopbackOptions {
    /// The features of a fully capable controller: vendor capabilities, trapped BAR areas,
    /// doorbells, shared memory, 64 MSI-X vectors, INTx, direct host-memory access.
    pub fn full_features() -> EpcFeatures {
        EpcFeatures {
            vendor_capabilities: true,
            trapped_access: true,
            doorbells: true,
            shared_memory: true,
            irq: IrqSupport {
                msix_vectors: DEFAULT_MSIX_VECTORS,
                msi_vectors: 0,
                intx: true,
            },
            host_access: HostAccess::Direct,
        }
    }

    /// Same options with other features.
    pub fn with_features(mut self, features: EpcFeatures) -> Self {
        self.features = features;
        self
    }

    /// Same options with another arena size.
    pub fn with_ram_size(mut self, size: u64) -> Self {
        self.ram_size = size;
        self
    }

    /// Same options with another arena base address.
    pub fn with_ram_base(mut self, base: u64) -> Self {
        self.ram_base = base;
        self
    }
}

impl Default for LoopbackOptions {
    fn default() -> Self {
        LoopbackOptions {
            ram_size: DEFAULT_RAM_SIZE,
            ram_base: DEFAULT_RAM_BASE,
            features: Self::full_features(),
            msix_eventfds: true,
        }
    }
}
