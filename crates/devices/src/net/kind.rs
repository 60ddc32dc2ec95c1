//! `virtio-epf net`: the NIC's subcommand and how the device is built from it. MAC, MTU and
//! queue pairs are checked when the device is built (by [`NetOptions::validate`] and the
//! TAP), so a bad value is a one-line error like a missing TAP.

use super::config::{NetOptions, DEFAULT_QUEUE_SIZE};
use super::device::NetDevice;
use super::mac::MacAddr;
use clap::builder::TypedValueParser as _;
use epf_device::{check_queue_size, parse_args, BuildError, DeviceInfo, DeviceKind, VirtioDevice};
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;

/// The options of `virtio-epf net`.
#[derive(Debug, clap::Args)]
pub struct NetArgs {
    /// The TAP device (must exist in this network namespace; create it with
    /// `ip tuntap add dev NAME mode tap [multi_queue]`, multi_queue for --queues > 1).
    #[arg(long, value_name = "NAME")]
    pub tap: String,
    /// Station address the host sees (default: 02:xx:xx:xx:xx:xx derived from the TAP name).
    #[arg(long, value_name = "MAC")]
    pub mac: Option<String>,
    /// Queue pairs (the host's `ethtool -L combined` chooses how many it uses), 1..=256.
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
    /// MTU offered to the host, 68..=65521 (default: the TAP's MTU).
    #[arg(long)]
    pub mtu: Option<u32>,
    /// Entries per virtqueue (a power of two, at most 32768).
    #[arg(long, default_value_t = DEFAULT_QUEUE_SIZE, value_parser = clap::value_parser!(u16).try_map(check_queue_size))]
    pub queue_size: u16,
}

impl NetArgs {
    /// The device options these arguments describe; a bad MAC is a one-line error.
    pub fn options(&self) -> Result<NetOptions, BuildError> {
        let mut o = NetOptions::new(&self.tap);
        o.mac = self
            .mac
            .as_deref()
            .map(str::parse::<MacAddr>)
            .transpose()
            .map_err(BuildError::new)?;
        o.queue_pairs = self.queues;
        o.mtu = self.mtu;
        o.queue_size = self.queue_size;
        Ok(o)
    }
}

/// The NIC, as the command serves it.
pub struct Net;

impl DeviceKind for Net {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            name: "net",
            about: "virtio-net: the host's network interface, whose wire on the endpoint is an existing TAP device",
            virtio_type: VIRTIO_ID_NET,
            legacy_pci_id: Some(0x1000),
        }
    }

    fn args(&self, cmd: clap::Command) -> clap::Command {
        <NetArgs as clap::Args>::augment_args(cmd)
    }

    fn build(&self, args: &clap::ArgMatches) -> Result<Box<dyn VirtioDevice>, BuildError> {
        let a: NetArgs = parse_args(args)?;
        let dev = NetDevice::new(&a.options()?).map_err(BuildError::new)?;
        Ok(Box::new(dev))
    }
}
