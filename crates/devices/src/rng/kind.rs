//! `virtio-epf rng`: the entropy device's subcommand and how it is built from it.

use super::RngDevice;
use clap::builder::TypedValueParser as _;
use epf_device::{check_queue_size, parse_args, BuildError, DeviceInfo, DeviceKind, VirtioDevice};
use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

/// The options of `virtio-epf rng`.
#[derive(Debug, clap::Args)]
pub struct RngArgs {
    /// Request queue size (a power of two, at most 32768).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).try_map(check_queue_size))]
    pub queue_size: u16,
}

/// The entropy device, as the command serves it.
pub struct Rng;

impl DeviceKind for Rng {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            name: "rng",
            about: "virtio-rng (entropy): buffers filled from the OS CSPRNG",
            virtio_type: VIRTIO_ID_RNG,
            legacy_pci_id: Some(0x1005),
        }
    }

    fn args(&self, cmd: clap::Command) -> clap::Command {
        <RngArgs as clap::Args>::augment_args(cmd)
    }

    fn build(&self, args: &clap::ArgMatches) -> Result<Box<dyn VirtioDevice>, BuildError> {
        let a: RngArgs = parse_args(args)?;
        Ok(Box::new(RngDevice::new(a.queue_size)))
    }
}
