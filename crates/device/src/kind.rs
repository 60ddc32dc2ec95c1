//! How a device joins the command: its subcommand, the options of that subcommand, how the
//! device is built from them, and what the host will see (virtio and PCI IDs). One
//! [`DeviceKind`] per device, registered with one line in the command's registry; the command
//! builds its interface from the registered kinds and serves whichever one is named.
//!
//! The options are clap arguments (`#[derive(clap::Args)]` on a struct, usually); the command
//! adds its own (link, counters, endpoint mode) to every subcommand, so a device must not
//! reuse their names (`--vfio-user`, `--epf`, `--dma-threshold`, `--stats-file`, `--layout`,
//! `--registers`, `--notify`, `--irq`, `--host-windows`, `--window-size`).

use crate::VirtioDevice;
use std::error::Error;
use std::fmt;

/// The vendor ID of every virtio PCI function.
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1af4;
/// Modern PCI device IDs are this plus the virtio device type (virtio 1.2 section 4.1.2.1).
pub const VIRTIO_PCI_MODERN_DEVICE_BASE: u16 = 0x1040;

/// What a device is, for the command line and the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The subcommand that serves it (`rng`).
    pub name: &'static str,
    /// One line for `--help` (the IDs are added to it).
    pub about: &'static str,
    /// The virtio device ID (virtio 1.2 section 5: 1 net, 2 block, 3 console, 4 entropy, ...);
    /// the built device's [`VirtioDevice::device_type`] must be this.
    pub virtio_type: u32,
    /// The transitional PCI device ID the legacy layout presents (virtio 1.2 section
    /// 4.1.2.1: only the device types of virtio 0.9.5 have one), or `None`.
    pub legacy_pci_id: Option<u16>,
}

impl DeviceInfo {
    /// The PCI device ID in the modern layout: 0x1040 + the virtio device type.
    pub fn pci_id(&self) -> u16 {
        VIRTIO_PCI_MODERN_DEVICE_BASE.wrapping_add(self.virtio_type as u16)
    }

    /// `about` followed by the IDs, for the subcommand's help.
    pub fn help(&self) -> String {
        let mut s = format!(
            "{} (virtio device ID {}, PCI {VIRTIO_PCI_VENDOR_ID:04x}:{:04x}",
            self.about,
            self.virtio_type,
            self.pci_id()
        );
        if let Some(l) = self.legacy_pci_id {
            s += &format!(", legacy {VIRTIO_PCI_VENDOR_ID:04x}:{l:04x}");
        }
        s + ")"
    }
}

/// A device the command can serve.
pub trait DeviceKind: Sync {
    /// Its name, help and IDs.
    fn info(&self) -> DeviceInfo;

    /// Adds the device's options to `cmd`, its subcommand (`Args::augment_args` of a derived
    /// struct).
    fn args(&self, cmd: clap::Command) -> clap::Command;

    /// Builds the device from the parsed subcommand (read the options back with
    /// [`parse_args`]). Runs before the link exists, so a bad option or backend is reported
    /// before the host can see anything.
    fn build(&self, args: &clap::ArgMatches) -> Result<Box<dyn VirtioDevice>, BuildError>;
}

/// Reads a device's derived options back from its subcommand's matches.
pub fn parse_args<A: clap::FromArgMatches>(args: &clap::ArgMatches) -> Result<A, BuildError> {
    A::from_arg_matches(args).map_err(BuildError::new)
}

/// Why a device could not be built: the device's own error (kept as the source), and, from
/// the device's command-line side, a hint naming the option that would help.
#[derive(Debug)]
pub struct BuildError {
    source: Box<dyn Error + Send + Sync>,
    hint: Option<String>,
}

impl BuildError {
    /// The device's error.
    pub fn new(source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        BuildError {
            source: source.into(),
            hint: None,
        }
    }

    /// Adds a hint for the operator (`pass --read-only to serve it read-only`).
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.hint {
            Some(h) => write!(f, "{} ({h})", self.source),
            None => write!(f, "{}", self.source),
        }
    }
}

impl Error for BuildError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.source.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_names_the_ids() {
        let rng = DeviceInfo {
            name: "rng",
            about: "virtio-rng",
            virtio_type: 4,
            legacy_pci_id: Some(0x1005),
        };
        assert_eq!(rng.pci_id(), 0x1044);
        assert_eq!(
            rng.help(),
            "virtio-rng (virtio device ID 4, PCI 1af4:1044, legacy 1af4:1005)"
        );
        let gpu = DeviceInfo {
            virtio_type: 16,
            legacy_pci_id: None,
            ..rng
        };
        assert_eq!(
            gpu.help(),
            "virtio-rng (virtio device ID 16, PCI 1af4:1050)"
        );
    }

    #[test]
    fn build_errors_keep_their_source_and_add_a_hint() {
        let e = BuildError::new(std::io::Error::other("image is read-only")).hint("pass --x");
        assert_eq!(e.to_string(), "image is read-only (pass --x)");
        assert!(e
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some());
    }
}
