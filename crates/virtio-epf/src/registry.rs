//! The devices the command serves. Each is a [`DeviceKind`] from its own module (its
//! subcommand, options, IDs and how it is built); adding a device is that module and one line
//! in [`DEVICES`]. The command line and `main` only iterate the registry.

use epf_device::DeviceKind;

/// Every device `virtio-epf` serves, one line each, in the order of `--help`.
pub const DEVICES: &[&dyn DeviceKind] = &[
    &epf_devices::rng::Rng,
    &epf_devices::console::Console,
    &epf_devices::blk::Blk,
    &epf_devices::net::Net,
    &epf_devices::vsock::Vsock,
    &epf_devices::gpu::Gpu,
];

/// A set of device kinds the command line is built from.
#[derive(Clone)]
pub struct Registry {
    kinds: Vec<&'static dyn DeviceKind>,
}

impl Registry {
    /// The devices of [`DEVICES`].
    pub fn builtin() -> Registry {
        Registry {
            kinds: DEVICES.to_vec(),
        }
    }

    /// The registry with `kind` added (after the others).
    pub fn with(mut self, kind: &'static dyn DeviceKind) -> Registry {
        self.kinds.push(kind);
        self
    }

    /// The registered kinds, in order.
    pub fn kinds(&self) -> &[&'static dyn DeviceKind] {
        &self.kinds
    }

    /// The kind whose subcommand is `name`.
    pub fn find(&self, name: &str) -> Option<&'static dyn DeviceKind> {
        self.kinds.iter().copied().find(|k| k.info().name == name)
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::builtin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use epf_virtio_pci::legacy_layout::transitional_device_id;

    #[test]
    fn builtin_devices_have_unique_names_and_the_spec_ids() {
        let r = Registry::builtin();
        let names: Vec<_> = r.kinds().iter().map(|k| k.info().name).collect();
        assert_eq!(names, ["rng", "console", "blk", "net", "vsock", "gpu"]);
        for k in r.kinds() {
            let i = k.info();
            assert_eq!(r.find(i.name).map(|k| k.info()), Some(i));
            // What a kind declares is what the transport presents.
            assert_eq!(
                i.legacy_pci_id,
                transitional_device_id(i.virtio_type),
                "{}",
                i.name
            );
            assert_eq!(i.pci_id(), 0x1040 + i.virtio_type as u16, "{}", i.name);
        }
        assert!(r.find("floppy").is_none());
    }
}
