//! The endpoint controller interface (the analogue of Linux's `struct pci_epc_ops` plus
//! `struct pci_epc_event_ops`): what a function asks of its controller, and the callbacks
//! through which the controller reports host activity to the function.

use crate::BAR_COUNT;
use crate::{BarSpec, Capability, EpcError, HostMemory, Irq, IrqSupport, PciHeader, SharedMemory};
use std::sync::Arc;

/// How the endpoint reaches host memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAccess {
    /// All host memory the host exposes is directly addressable (a model, or a large window).
    Direct,
    /// At most `count` outbound windows of `size` bytes (aligned to `size`) at a time.
    Windows { count: usize, size: u64 },
}

/// What a controller can do. The function reads this and picks a layout that fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpcFeatures {
    /// The controller can add vendor-specific capabilities to config space (modern virtio-pci
    /// needs five of them). DesignWare controllers driven through Linux's EPC API cannot.
    pub vendor_capabilities: bool,
    /// BAR areas may be [`Trapped`](crate::AreaKind::Trapped) (host reads are answered
    /// synchronously by the function), and so may configuration-space ranges
    /// ([`Capability::trapped`](crate::Capability::trapped)).
    pub trapped_access: bool,
    /// BAR areas may be [`Doorbell`](crate::AreaKind::Doorbell)s.
    pub doorbells: bool,
    /// BAR areas may be [`Memory`](crate::AreaKind::Memory) the function polls.
    pub shared_memory: bool,
    pub irq: IrqSupport,
    pub host_access: HostAccess,
}

/// MSI-X placement (what `pci_epc_set_msix()` takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixSpec {
    pub vectors: u16,
    pub table_bar: u8,
    pub table_offset: u64,
    pub pba_bar: u8,
    pub pba_offset: u64,
}

/// Everything the host will see of a function.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub header: PciHeader,
    /// Capabilities besides MSI/MSI-X (which the controller adds from `msix`).
    pub capabilities: Vec<Capability>,
    pub bars: [Option<BarSpec>; BAR_COUNT],
    pub msix: Option<MsixSpec>,
}

/// Callbacks from the controller to the function. They run on the controller's thread and
/// must not block for long: a real host is waiting on the bus.
pub trait FunctionHandler: Send + Sync {
    /// A host read of a trapped BAR area. `data` is pre-zeroed; fill it.
    fn bar_read(&self, bar: u8, offset: u64, data: &mut [u8]);

    /// A host write to a trapped BAR area or a doorbell.
    fn bar_write(&self, bar: u8, offset: u64, data: &[u8]);

    /// A host read of a trapped configuration-space range (see [`Capability::trapped`]).
    fn config_read(&self, _offset: usize, _data: &mut [u8]) {}

    /// A host write to a trapped configuration-space range.
    fn config_write(&self, _offset: usize, _data: &[u8]) {}

    /// The host reset the function (function-level reset), or the link went down and the next
    /// host will see a fresh function. All host memory mappings are gone when this is called.
    fn link_reset(&self);

    /// The host changed interrupt enablement (e.g. enabled MSI-X vectors).
    fn irqs_changed(&self) {}

    /// A host write to a configuration-space range that is not trapped, after it was applied
    /// to the image (e.g. the command register: bus master enable).
    fn config_written(&self, _offset: usize, _data: &[u8]) {}

    /// A host attached to the link (`true`) or went away (`false`).
    fn host_connected(&self, _connected: bool) {}
}

/// An endpoint controller serving one physical function.
pub trait EndpointController: Send + Sync {
    /// What this controller supports.
    fn features(&self) -> EpcFeatures;

    /// Presents `spec` to the host and starts delivering host activity to `handler`.
    /// Fails with [`EpcError::Unsupported`] if `spec` needs something the controller lacks.
    fn start(&self, spec: FunctionSpec, handler: Arc<dyn FunctionHandler>) -> Result<(), EpcError>;

    /// The shared memory behind BAR `bar` (covering the whole BAR; only its
    /// [`Memory`](crate::AreaKind::Memory) areas are visible to the host), if it has any.
    fn bar_memory(&self, bar: u8) -> Option<Arc<SharedMemory>>;

    /// Host memory as currently exposed to the endpoint.
    fn host_memory(&self) -> Arc<dyn HostMemory>;

    /// Raises an interrupt towards the host.
    fn raise_irq(&self, irq: Irq) -> Result<(), EpcError>;

    /// Whether the host has enabled MSI-X on this function. The answer may be a recent one
    /// reused (asking can be a PCIe round trip): good for decisions that are taken again and
    /// again, such as a poller's view of the register layout.
    fn msix_enabled(&self) -> bool;

    /// Whether the host has enabled MSI-X on this function, asked now. Interrupt delivery
    /// asks this before it raises INTx instead of MSI-X: a reused "off" from the moment a
    /// driver was rebinding would lose the interrupt the new driver waits for.
    fn msix_enabled_now(&self) -> bool {
        self.msix_enabled()
    }
}
