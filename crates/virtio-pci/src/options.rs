//! How a function presents itself: which register layout, how register accesses and
//! notifications reach the endpoint, and which interrupts it raises, and which combinations a
//! controller can serve. The defaults are the modern layout with trapped registers, doorbell
//! notifications and MSI-X.
//!
//! Each option is a `clap::ValueEnum`, so a command offers exactly these values (with the
//! documentation below as their help); the checks and their reasons live here, once.

use epf_epc::EpcFeatures;
use thiserror::Error;

/// Register layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Layout {
    /// virtio 1.x: five vendor capabilities, selector registers (needs trapped registers).
    #[default]
    Modern,
    /// virtio 0.9.5 registers in a memory BAR, transitional PCI IDs: for controllers that
    /// cannot add vendor capabilities.
    Legacy,
}

/// How host register accesses reach the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RegisterAccess {
    /// Each access is delivered synchronously (the controller traps).
    #[default]
    Trap,
    /// Registers are plain shared memory the function polls (a bare endpoint).
    Poll,
}

/// How queue notifications reach the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum NotifyMode {
    /// A host write to the notify area raises an event at the endpoint.
    #[default]
    Doorbell,
    /// The endpoint polls, with adaptive back-off: QUEUE_NOTIFY in the legacy layout's
    /// polled register page, or with the modern layout a notify page of plain memory (one
    /// slot per queue; the host's kicks cost a memory write, not a trapped access).
    Poll,
}

impl NotifyMode {
    /// The mode that goes with `registers` when none is chosen: polled with polled registers
    /// (a doorbell would need a trap inside the polled page), a doorbell otherwise.
    pub fn natural(registers: RegisterAccess) -> NotifyMode {
        match registers {
            RegisterAccess::Poll => NotifyMode::Poll,
            RegisterAccess::Trap => NotifyMode::Doorbell,
        }
    }
}

/// Interrupts raised towards the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum IrqMode {
    /// MSI-X, one vector per queue plus one for configuration changes.
    #[default]
    Msix,
    /// Refused: virtio over PCI defines only MSI-X vectors, and Linux's virtio_pci never
    /// enables plain MSI (it falls back to INTx).
    Msi,
    /// The legacy interrupt pin, with the ISR register (not with polled registers).
    Intx,
}

/// Which virtqueue format the function offers (modern layout only; the legacy layout has
/// only split rings, as VIRTIO_F_RING_PACKED needs VIRTIO_F_VERSION_1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RingFormat {
    /// Offer VIRTIO_F_RING_PACKED; the driver chooses (Linux takes it).
    #[default]
    Packed,
    /// Offer split rings only.
    Split,
}

/// All presentation options of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FunctionOptions {
    pub layout: Layout,
    pub registers: RegisterAccess,
    pub notify: NotifyMode,
    pub irq: IrqMode,
    pub rings: RingFormat,
}

/// Why a combination of options cannot be served (on this controller, or at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OptionsError {
    #[error("the modern layout cannot be polled: the host reads device_feature, queue_size and the other selector registers right after writing the selector, which only a trap can answer; use the legacy layout with polled registers")]
    ModernPolled,
    #[error("this controller cannot add vendor capabilities, which the modern layout needs; use the legacy layout")]
    NoVendorCapabilities,
    #[error("this controller cannot trap register accesses; use polled registers (with the legacy layout)")]
    NoTraps,
    #[error("this controller cannot share BAR memory for polling")]
    NoSharedMemory,
    #[error("doorbell notifications need a doorbell at QUEUE_NOTIFY, which the legacy layout keeps inside the polled register page; use polled notifications (or trapped registers)")]
    PolledDoorbell,
    #[error("INTx needs the ISR register to clear on read, which polled memory cannot do; use MSI-X or trapped registers")]
    PolledIntx,
    #[error("this controller has no MSI-X; use INTx")]
    NoMsix,
    // The virtio PCI transport has vectors only for MSI-X (msix_config, queue_msix_vector)
    // and Linux's virtio_pci asks for MSI-X alone (vp_request_msix_vectors: PCI_IRQ_MSIX)
    // before falling back to INTx: a plain MSI capability would never be enabled.
    #[error("the virtio PCI transport has no MSI (only MSI-X vectors), and Linux's virtio_pci uses MSI-X or else INTx; a controller with only MSI must use INTx")]
    Msi,
    #[error("this controller has no INTx")]
    NoIntx,
    #[error("virtio device type {0} has no transitional PCI ID, so no legacy layout")]
    NoTransitionalId(u32),
}

impl FunctionOptions {
    /// Whether a controller with features `f` can serve a function presented this way.
    pub fn check(&self, f: &EpcFeatures) -> Result<(), OptionsError> {
        match (self.layout, self.registers) {
            (Layout::Modern, RegisterAccess::Poll) => return Err(OptionsError::ModernPolled),
            (Layout::Modern, _) if !f.vendor_capabilities => {
                return Err(OptionsError::NoVendorCapabilities)
            }
            (_, RegisterAccess::Trap) if !f.trapped_access => return Err(OptionsError::NoTraps),
            (_, RegisterAccess::Poll) if !f.shared_memory => {
                return Err(OptionsError::NoSharedMemory)
            }
            _ => {}
        }
        if self.layout == Layout::Legacy && self.registers == RegisterAccess::Poll {
            if self.notify == NotifyMode::Doorbell {
                return Err(OptionsError::PolledDoorbell);
            }
            if self.irq == IrqMode::Intx {
                return Err(OptionsError::PolledIntx);
            }
        }
        if self.layout == Layout::Modern && self.notify == NotifyMode::Poll && !f.shared_memory {
            return Err(OptionsError::NoSharedMemory);
        }
        match self.irq {
            IrqMode::Msix if f.irq.msix_vectors == 0 => Err(OptionsError::NoMsix),
            IrqMode::Msi => Err(OptionsError::Msi),
            IrqMode::Intx if !f.irq.intx => Err(OptionsError::NoIntx),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;
    use epf_epc::{HostAccess, IrqSupport};

    fn bare() -> EpcFeatures {
        EpcFeatures {
            vendor_capabilities: false,
            trapped_access: false,
            doorbells: false,
            shared_memory: true,
            irq: IrqSupport {
                msix_vectors: 64,
                msi_vectors: 0,
                intx: true,
            },
            host_access: HostAccess::Direct,
        }
    }

    fn names<T: ValueEnum>() -> Vec<String> {
        T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|p| p.get_name().to_string())
            .collect()
    }

    #[test]
    fn values_are_the_documented_words() {
        assert_eq!(names::<Layout>(), ["modern", "legacy"]);
        assert_eq!(names::<RegisterAccess>(), ["trap", "poll"]);
        assert_eq!(names::<NotifyMode>(), ["doorbell", "poll"]);
        assert_eq!(names::<IrqMode>(), ["msix", "msi", "intx"]);
        assert_eq!(names::<RingFormat>(), ["packed", "split"]);
    }

    #[test]
    fn a_bare_controller_serves_exactly_legacy_polled_msix() {
        let f = bare();
        let polled = FunctionOptions {
            layout: Layout::Legacy,
            registers: RegisterAccess::Poll,
            notify: NotifyMode::natural(RegisterAccess::Poll),
            irq: IrqMode::Msix,
            rings: RingFormat::Split,
        };
        assert_eq!(polled.check(&f), Ok(()));
        for (o, e) in [
            (
                FunctionOptions::default(),
                OptionsError::NoVendorCapabilities,
            ),
            (
                FunctionOptions {
                    registers: RegisterAccess::Poll,
                    ..FunctionOptions::default()
                },
                OptionsError::ModernPolled,
            ),
            (
                FunctionOptions {
                    registers: RegisterAccess::Trap,
                    ..polled
                },
                OptionsError::NoTraps,
            ),
            (
                FunctionOptions {
                    notify: NotifyMode::Doorbell,
                    ..polled
                },
                OptionsError::PolledDoorbell,
            ),
            (
                FunctionOptions {
                    irq: IrqMode::Intx,
                    ..polled
                },
                OptionsError::PolledIntx,
            ),
            (
                FunctionOptions {
                    irq: IrqMode::Msi,
                    ..polled
                },
                OptionsError::Msi,
            ),
        ] {
            assert_eq!(o.check(&f), Err(e), "{o:?}");
            // A library names options, not a command's flags.
            assert!(!e.to_string().contains("--"), "{e}");
        }
    }

    #[test]
    fn a_polled_notify_page_on_the_modern_layout_needs_shared_memory() {
        let modern = EpcFeatures {
            vendor_capabilities: true,
            trapped_access: true,
            doorbells: true,
            ..bare()
        };
        let o = FunctionOptions {
            notify: NotifyMode::Poll,
            ..FunctionOptions::default()
        };
        assert_eq!(o.check(&modern), Ok(()));
        let no_memory = EpcFeatures {
            shared_memory: false,
            ..modern
        };
        assert_eq!(o.check(&no_memory), Err(OptionsError::NoSharedMemory));
        assert_eq!(FunctionOptions::default().check(&no_memory), Ok(()));
    }
}
