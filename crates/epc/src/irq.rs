//! Interrupts an endpoint raises towards its host.

/// An interrupt to raise (what `pci_epc_raise_irq()` takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Irq {
    /// MSI-X vector number.
    Msix(u16),
    /// MSI vector number.
    Msi(u16),
    /// Legacy INTx: assert (`true`) or deassert the level.
    Intx(bool),
}

/// Interrupt mechanisms a controller offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IrqSupport {
    /// Maximum MSI-X vectors (0: none).
    pub msix_vectors: u16,
    /// Maximum MSI vectors (0: none).
    pub msi_vectors: u16,
    pub intx: bool,
}
