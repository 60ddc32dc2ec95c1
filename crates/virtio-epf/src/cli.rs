//! Command-line interface: one subcommand per device, common link and operator options.

use clap::{Args, Parser, Subcommand};
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
pub struct Common {
    /// Path of the vfio-user Unix socket to listen on (created; removed on exit).
    #[arg(long = "vfio-user", value_name = "SOCKET")]
    pub vfio_user: PathBuf,

    /// Also write the counters to this file about once a second (replaced atomically).
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,
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
}

impl DeviceCmd {
    pub fn common(&self) -> &Common {
        match self {
            DeviceCmd::Rng { common, .. } | DeviceCmd::Console { common, .. } => common,
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
}
