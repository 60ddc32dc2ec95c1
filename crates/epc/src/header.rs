//! The standard type-0 configuration header a function asks its controller to present
//! (the fields `pci_epc_write_header()` takes in Linux).

/// Identity of a PCI function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PciHeader {
    pub vendor_id: u16,
    pub device_id: u16,
    pub revision_id: u8,
    /// Programming interface, sub-class and base class (low to high byte).
    pub class_code: u32,
    pub subsystem_vendor_id: u16,
    pub subsystem_id: u16,
    /// INTx pin (0 = none, 1 = INTA#).
    pub interrupt_pin: u8,
}
