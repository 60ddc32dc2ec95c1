//! Command-line interface: one subcommand per device, common link and operator options.

use clap::{Args, Parser, Subcommand};
use epf_virtio_pci::{FunctionOptions, IrqMode, Layout, NotifyMode, RegisterAccess};
use std::path::PathBuf;

/// Serve a virtio device from a PCIe endpoint. The host binds its stock virtio drivers.
///
/// The PCIe link is a vfio-user socket: start `virtio-epf`, then point QEMU's
/// `vfio-user-pci` device at the socket. Log levels follow RUST_LOG (error, warn, info,
/// debug, trace; default info). Send SIGUSR1 to print per-queue counters on stderr.
#[derive(Debug, Parser)]
#[command(name = "virtio-epf", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub device: DeviceCmd,
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

    /// Also write the counters to this file about once a second (replaced atomically).
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
}

impl EndpointArgs {
    /// The function options these arguments select.
    pub fn function_options(&self) -> FunctionOptions {
        FunctionOptions {
            layout: self.layout,
            registers: self.registers,
            notify: self.notify.unwrap_or(NotifyMode::natural(self.registers)),
            irq: self.irq,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// virtio-rng (entropy, device ID 4, PCI 1af4:1044): buffers filled from the OS CSPRNG.
    Rng {
        #[command(flatten)]
        common: Common,
        /// Request queue size (power of two, at most 32768).
        #[arg(long, default_value_t = 256, value_parser = queue_size)]
        queue_size: u16,
    },
    /// virtio-console (device ID 3, PCI 1af4:1043): one port connected to a byte stream.
    Console {
        #[command(flatten)]
        common: Common,
        /// Where the port's bytes go: `stdio`, or `unix:PATH` (a socket we listen on; one
        /// client at a time; output waits while no client is connected).
        #[arg(long, value_name = "stdio|unix:PATH", value_parser = backend)]
        backend: ConsoleBackendArg,
    },
    /// virtio-blk (block device, device ID 2, PCI 1af4:1042): a raw disk image (regular file
    /// or block device) the host sees as /dev/vdX.
    Blk {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        blk: BlkArgs,
    },
    /// virtio-net (NIC, device ID 1, PCI 1af4:1041): the host's network interface, whose wire
    /// on the endpoint is an existing TAP device.
    Net {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        net: NetArgs,
    },
}

impl DeviceCmd {
    pub fn common(&self) -> &Common {
        match self {
            DeviceCmd::Rng { common, .. }
            | DeviceCmd::Console { common, .. }
            | DeviceCmd::Blk { common, .. }
            | DeviceCmd::Net { common, .. } => common,
        }
    }
}

/// The console backend named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleBackendArg {
    Stdio,
    Unix(PathBuf),
}

fn backend(s: &str) -> Result<ConsoleBackendArg, String> {
    match s {
        "stdio" => Ok(ConsoleBackendArg::Stdio),
        _ => match s.strip_prefix("unix:") {
            Some(p) if !p.is_empty() => Ok(ConsoleBackendArg::Unix(PathBuf::from(p))),
            _ => Err(format!("expected `stdio` or `unix:PATH`, got `{s}`")),
        },
    }
}

fn queue_size(s: &str) -> Result<u16, String> {
    let v: u16 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_power_of_two() && v <= 32768 {
        Ok(v)
    } else {
        Err(format!("{v} is not a power of two in 1..=32768"))
    }
}

/// Options of the `blk` subcommand.
#[derive(Debug, Args)]
pub struct BlkArgs {
    /// The raw image: a regular file or a block device; its size (a multiple of 512) is the
    /// disk's size.
    #[arg(long, value_name = "PATH")]
    pub image: PathBuf,
    /// Serve the image read-only (the host sees a read-only disk; writes fail).
    #[arg(long)]
    pub read_only: bool,
    /// Identifier the host reads as the disk's serial (GET_ID; at most 20 bytes).
    #[arg(long, value_name = "ID", value_parser = blk_serial)]
    pub serial: Option<String>,
    /// Request queues offered (the host uses one per CPU, up to this many).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub queues: u16,
    /// Bypass the endpoint's page cache (O_DIRECT) for aligned I/O, like QEMU's cache=none.
    #[arg(long)]
    pub direct: bool,
    /// Entries per request queue (power of two, 4..=1024).
    #[arg(long, default_value_t = 256, value_parser = blk_queue_size)]
    pub queue_size: u16,
    /// I/O engine: `io-uring` (small requests submitted from the device thread, large ones,
    /// flushes and discards on a thread pool), or `threads` (a pool doing blocking I/O for
    /// everything). io-uring falls back to threads where the kernel refuses it.
    #[arg(long, default_value = "io-uring", value_name = "io-uring|threads")]
    pub engine: epf_devices::blk::engine::EngineKind,
    /// I/O threads (blocking requests in flight at once).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub io_threads: u16,
}

impl BlkArgs {
    /// The device options these arguments describe.
    pub fn options(&self) -> epf_devices::blk::BlkOptions {
        let mut o = epf_devices::blk::BlkOptions::new(&self.image);
        o.image.read_only = self.read_only;
        o.image.direct = self.direct;
        o.serial = self.serial.clone();
        o.num_queues = self.queues;
        o.queue_size = self.queue_size;
        o.engine = self.engine;
        o.threads = usize::from(self.io_threads);
        o
    }
}

fn blk_serial(s: &str) -> Result<String, String> {
    if s.len() <= 20 {
        Ok(s.to_string())
    } else {
        Err(format!("{} bytes long, at most 20 fit", s.len()))
    }
}

fn blk_queue_size(s: &str) -> Result<u16, String> {
    let v: u16 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_power_of_two() && (4..=1024).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a power of two in 4..=1024"))
    }
}

/// Options of the `net` subcommand. MAC and MTU are checked when the device is built, so a
/// bad value is a one-line error like a missing TAP.
#[derive(Debug, Args)]
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
    /// Entries per virtqueue (power of two, at most 32768).
    #[arg(long, default_value_t = 256, value_parser = queue_size)]
    pub queue_size: u16,
}

impl NetArgs {
    /// The device options these arguments describe; a bad MAC is a one-line error.
    pub fn options(&self) -> Result<epf_devices::net::NetOptions, String> {
        let mut o = epf_devices::net::NetOptions::new(&self.tap);
        o.mac = self
            .mac
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: epf_devices::net::MacError| e.to_string())?;
        o.queue_pairs = self.queues;
        o.mtu = self.mtu;
        o.queue_size = self.queue_size;
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_subcommands_and_rejects_bad_values() {
        let c = Cli::try_parse_from(["virtio-epf", "rng", "--vfio-user", "/tmp/x.sock"]).unwrap();
        assert!(matches!(
            c.device,
            DeviceCmd::Rng {
                queue_size: 256,
                ..
            }
        ));
        let c = Cli::try_parse_from([
            "virtio-epf",
            "console",
            "--vfio-user",
            "/tmp/x",
            "--backend",
            "unix:/tmp/c",
        ])
        .unwrap();
        match c.device {
            DeviceCmd::Console { backend, .. } => {
                assert_eq!(backend, ConsoleBackendArg::Unix("/tmp/c".into()))
            }
            _ => panic!(),
        }
        assert!(Cli::try_parse_from([
            "virtio-epf",
            "console",
            "--vfio-user",
            "/x",
            "--backend",
            "tcp:1"
        ])
        .is_err());
        assert!(Cli::try_parse_from([
            "virtio-epf",
            "rng",
            "--vfio-user",
            "/x",
            "--queue-size",
            "100"
        ])
        .is_err());
        assert!(Cli::try_parse_from(["virtio-epf", "rng"]).is_err());
    }

    #[test]
    fn parses_blk_options() {
        let c = Cli::try_parse_from([
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
        let DeviceCmd::Blk { blk, .. } = c.device else {
            panic!("not blk")
        };
        let o = blk.options();
        assert_eq!(o.image.path, std::path::Path::new("/img"));
        assert!(o.image.read_only && o.image.direct);
        assert_eq!(
            (o.serial.as_deref(), o.num_queues, o.queue_size),
            (Some("S1"), 4, 256)
        );
        assert_eq!(o.engine, epf_devices::blk::engine::EngineKind::IoUring);
        let base = ["virtio-epf", "blk", "--vfio-user", "/x", "--image", "/i"];
        for bad in [
            &["--serial", "123456789012345678901"][..],
            &["--queues", "65"],
            &["--queue-size", "2"],
            &["--engine", "spdk"],
        ] {
            let args: Vec<&str> = base.iter().chain(bad.iter()).copied().collect();
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
        assert!(Cli::try_parse_from(["virtio-epf", "blk", "--vfio-user", "/x"]).is_err());
    }
}
