//! How a function presents itself: which register layout, how register accesses and
//! notifications reach the endpoint, and which interrupts it raises. The defaults are the
//! modern layout with trapped registers, doorbell notifications and MSI-X.

/// Register layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// virtio 1.x: five vendor capabilities, selector registers (needs trapping).
    #[default]
    Modern,
    /// virtio 0.9.5 registers in a memory BAR, transitional PCI IDs: for controllers that
    /// cannot add vendor capabilities.
    Legacy,
}

/// How host register accesses reach the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegisterAccess {
    /// Each access is delivered synchronously (the controller traps).
    #[default]
    Trap,
    /// Registers are plain shared memory the function polls (a bare endpoint).
    Poll,
}

/// How queue notifications reach the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyMode {
    /// A host write to the notify area raises an event at the endpoint.
    #[default]
    Doorbell,
    /// The endpoint polls, with adaptive back-off.
    Poll,
}

/// Interrupts raised towards the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IrqMode {
    #[default]
    Msix,
    /// Refused: virtio over PCI defines only MSI-X vectors, and Linux's virtio_pci never
    /// enables plain MSI (it falls back to INTx).
    Msi,
    Intx,
}

/// All presentation options of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FunctionOptions {
    pub layout: Layout,
    pub registers: RegisterAccess,
    pub notify: NotifyMode,
    pub irq: IrqMode,
}
