//! The command line, built from the [`Registry`]: one subcommand per registered device, each
//! with the device's own options and the options every device takes (the link, the counters
//! file, the endpoint mode). Parsing yields an [`Invocation`]: the device kind named, its
//! options, and the common ones.

use crate::error::Error;
use crate::registry::Registry;
use clap::{ArgMatches, Args, FromArgMatches};
use epf_device::{DeviceKind, VirtioDevice};
use epf_epc::EndpointController;
use epf_virtio_pci::{
    FunctionOptions, IrqMode, Layout, NotifyMode, RegisterAccess, RingFormat, VirtioPciFunction,
};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

/// The help above the subcommands.
const ABOUT: &str =
    "Serve a virtio device from a PCIe endpoint. The host binds its stock virtio drivers.";
const LONG_ABOUT: &str =
    "Serve a virtio device from a PCIe endpoint. The host binds its stock virtio drivers.

The PCIe link is a vfio-user socket: start `virtio-epf`, then point QEMU's `vfio-user-pci` \
device at the socket. Log levels follow RUST_LOG (error, warn, info, debug, trace; default \
info). Send SIGUSR1 to print the counters on stderr.";

/// The whole command line for the devices of `registry`.
pub fn command(registry: &Registry) -> clap::Command {
    let mut cmd = clap::Command::new("virtio-epf")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .about(ABOUT)
        .long_about(LONG_ABOUT)
        .subcommand_required(true)
        .arg_required_else_help(true);
    for kind in registry.kinds() {
        let info = kind.info();
        // The device's options first: the common ones end under their own headings. The
        // help is set last (deriving `Args` sets the struct's documentation as help).
        let sub = Common::augment_args(kind.args(clap::Command::new(info.name)))
            .about(info.help())
            .long_about(clap::builder::Resettable::Reset);
        cmd = cmd.subcommand(sub);
    }
    cmd
}

/// What the command line asked for.
pub struct Invocation {
    /// The device to serve.
    pub kind: &'static dyn DeviceKind,
    /// The options every device takes.
    pub common: Common,
    /// The device's subcommand, for [`DeviceKind::build`].
    pub args: ArgMatches,
}

impl Invocation {
    /// Parses `args` (the program name first) against `registry`'s devices.
    pub fn parse_from<I, T>(registry: &Registry, args: I) -> Result<Invocation, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut cmd = command(registry);
        let matches = cmd.try_get_matches_from_mut(args)?;
        let (name, sub) = matches.subcommand().ok_or_else(|| {
            cmd.error(
                clap::error::ErrorKind::MissingSubcommand,
                "a device is required",
            )
        })?;
        let kind = registry.find(name).ok_or_else(|| {
            cmd.error(
                clap::error::ErrorKind::InvalidSubcommand,
                format!("no device `{name}`"),
            )
        })?;
        let common = Common::from_arg_matches(sub)?;
        Ok(Invocation {
            kind,
            common,
            args: sub.clone(),
        })
    }

    /// Builds the device (before any link exists: a bad option or backend is reported before
    /// the host can see anything).
    pub fn build_device(&self) -> Result<Box<dyn VirtioDevice>, Error> {
        let info = self.kind.info();
        let device = self.kind.build(&self.args)?;
        if device.device_type() != info.virtio_type {
            return Err(Error::DeviceType {
                name: info.name,
                declared: info.virtio_type,
                built: device.device_type(),
            });
        }
        Ok(device)
    }

    /// Builds the device and starts it as a function on `epc` with `options`.
    pub fn start(
        &self,
        epc: Arc<dyn EndpointController>,
        options: FunctionOptions,
    ) -> Result<Arc<VirtioPciFunction>, Error> {
        let device = self.build_device()?;
        Ok(VirtioPciFunction::start_with(epc, device, options)?)
    }
}

/// Options every device subcommand takes.
#[derive(Debug, Args)]
#[group(id = "link", required = true, multiple = false, args = ["vfio_user", "epf"])]
pub struct Common {
    /// Path of the vfio-user Unix socket to listen on (created; removed on exit).
    #[arg(long = "vfio-user", value_name = "SOCKET")]
    pub vfio_user: Option<PathBuf>,

    /// Serve through Linux's PCI endpoint subsystem instead: the pci_epf_user function
    /// NAME (configfs functions/pci_epf_user/NAME, device /dev/epf-user-NAME), bound to a
    /// controller. Without trapped accesses or vendor capabilities the device uses the
    /// legacy layout with polled registers unless told otherwise.
    #[arg(long, value_name = "NAME")]
    pub epf: Option<String>,

    /// With --epf: host-memory accesses of at least this many bytes use the controller's
    /// DMA engine (smaller ones go through an outbound window).
    #[arg(long, value_name = "BYTES", default_value_t = 256, requires = "epf")]
    pub dma_threshold: usize,

    /// Also write the counters to this file every 500 ms and at exit (replaced atomically).
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,

    #[command(flatten)]
    pub endpoint: EndpointArgs,
}

/// What the endpoint controller can do: these model a bare controller (no traps, few
/// outbound windows, polling) so the device is tested the way real hardware will run it.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Endpoint mode")]
pub struct EndpointArgs {
    /// Register layout.
    #[arg(long, value_enum, default_value_t = Layout::Modern)]
    pub layout: Layout,
    /// How register accesses reach the endpoint.
    #[arg(long, value_enum, default_value_t = RegisterAccess::Trap)]
    pub registers: RegisterAccess,
    /// How queue notifications reach the endpoint [default: poll with --registers poll,
    /// doorbell otherwise].
    #[arg(long, value_enum)]
    pub notify: Option<NotifyMode>,
    /// Interrupts towards the host (msi is refused with the reason: the virtio PCI transport
    /// has only MSI-X vectors, and Linux's virtio_pci falls back from MSI-X to INTx, never
    /// to MSI).
    #[arg(long, value_enum, default_value_t = IrqMode::Msix)]
    pub irq: IrqMode,
    /// Reach host memory through at most N outbound windows at a time (mapped on demand,
    /// LRU); 0 means unlimited.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub host_windows: usize,
    /// Size (and alignment) of each outbound window, a power of two >= 4096.
    #[arg(long, value_name = "BYTES", default_value_t = 65536)]
    pub window_size: u64,
    /// Virtqueue format offered with the modern layout (packed: VIRTIO_F_RING_PACKED, which
    /// the driver may still decline; the legacy layout always uses split rings).
    #[arg(long, value_enum, default_value_t = RingFormat::Packed)]
    pub rings: RingFormat,
}

impl EndpointArgs {
    /// The function options these arguments select.
    pub fn function_options(&self) -> FunctionOptions {
        FunctionOptions {
            layout: self.layout,
            registers: self.registers,
            notify: self.notify.unwrap_or(NotifyMode::natural(self.registers)),
            irq: self.irq,
            rings: self.rings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use epf_devices::blk::engine::EngineKind;
    use epf_devices::blk::BlkArgs;
    use epf_devices::console::{BackendArg, ConsoleArgs};
    use epf_devices::rng::RngArgs;

    fn parse(args: &[&str]) -> Result<Invocation, clap::Error> {
        Invocation::parse_from(&Registry::builtin(), args)
    }

    #[test]
    fn parses_subcommands_and_rejects_bad_values() {
        let inv = parse(&["virtio-epf", "rng", "--vfio-user", "/tmp/x.sock"]).unwrap();
        assert_eq!(inv.kind.info().name, "rng");
        let rng = RngArgs::from_arg_matches(&inv.args).unwrap();
        assert_eq!(rng.queue_size, 256);
        assert_eq!(inv.common.vfio_user, Some("/tmp/x.sock".into()));
        assert_eq!(
            inv.common.endpoint.function_options(),
            FunctionOptions::default()
        );
        let inv = parse(&[
            "virtio-epf",
            "console",
            "--vfio-user",
            "/tmp/x",
            "--backend",
            "unix:/tmp/c",
        ])
        .unwrap();
        let con = ConsoleArgs::from_arg_matches(&inv.args).unwrap();
        assert_eq!(con.backend, BackendArg::Unix("/tmp/c".into()));
        for bad in [
            &[
                "virtio-epf",
                "console",
                "--vfio-user",
                "/x",
                "--backend",
                "tcp:1",
            ][..],
            &[
                "virtio-epf",
                "rng",
                "--vfio-user",
                "/x",
                "--queue-size",
                "100",
            ],
            &[
                "virtio-epf",
                "rng",
                "--vfio-user",
                "/x",
                "--queue-size",
                "65536",
            ],
            &["virtio-epf", "rng"],
            &["virtio-epf", "rng", "--vfio-user", "/x", "--epf", "f0"],
            &["virtio-epf", "floppy", "--vfio-user", "/x"],
            &["virtio-epf"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn endpoint_modes_are_typed() {
        let inv = parse(&[
            "virtio-epf",
            "rng",
            "--vfio-user",
            "/x",
            "--layout",
            "legacy",
            "--registers",
            "poll",
        ])
        .unwrap();
        assert_eq!(
            inv.common.endpoint.function_options(),
            FunctionOptions {
                layout: Layout::Legacy,
                registers: RegisterAccess::Poll,
                notify: NotifyMode::Poll,
                irq: IrqMode::Msix,
                rings: RingFormat::Packed,
            }
        );
        let e = parse(&["virtio-epf", "rng", "--vfio-user", "/x", "--irq", "msi-x"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("[possible values: msix, msi, intx]"), "{e}");
    }

    #[test]
    fn parses_blk_options_within_the_library_limits() {
        let inv = parse(&[
            "virtio-epf",
            "blk",
            "--vfio-user",
            "/x",
            "--image",
            "/img",
            "--read-only",
            "--serial",
            "S1",
            "--queues",
            "4",
            "--direct",
        ])
        .unwrap();
        let o = BlkArgs::from_arg_matches(&inv.args).unwrap().options();
        assert_eq!(o.image.path, std::path::Path::new("/img"));
        assert!(o.image.read_only && o.image.direct);
        assert_eq!(
            (o.serial.as_deref(), o.num_queues, o.queue_size),
            (Some("S1"), 4, 256)
        );
        assert_eq!(o.engine, EngineKind::IoUring);
        let base = ["virtio-epf", "blk", "--vfio-user", "/x", "--image", "/i"];
        for (bad, why) in [
            (&["--serial", "123456789012345678901"][..], "at most 20 fit"),
            (&["--queues", "65"], "1..=64"),
            (&["--queue-size", "2"], "4..=1024"),
            (&["--queue-size", "2048"], "4..=1024"),
            (&["--io-threads", "0"], "1..=256"),
            (&["--engine", "spdk"], "possible values: threads, io-uring"),
        ] {
            let args: Vec<&str> = base.iter().chain(bad.iter()).copied().collect();
            let e = parse(&args).err().unwrap().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        for ok in [&["--queue-size", "1024"][..], &["--engine", "io_uring"]] {
            let args: Vec<&str> = base.iter().chain(ok.iter()).copied().collect();
            assert!(parse(&args).is_ok(), "{ok:?}");
        }
        assert!(parse(&["virtio-epf", "blk", "--vfio-user", "/x"]).is_err());
    }
}
