//! `virtio-epf console`: the console's subcommand (where its port's bytes go) and how the
//! device is built from it.

use super::{Backend, ConsoleDevice, DEFAULT_PIPE_BYTES};
use epf_device::{parse_args, BuildError, DeviceInfo, DeviceKind, VirtioDevice};
use std::path::PathBuf;
use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;

/// The options of `virtio-epf console`.
#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    /// Where the port's bytes go: `stdio`, or `unix:PATH` (a socket we listen on; one
    /// client at a time; output waits while no client is connected).
    #[arg(long, value_name = "stdio|unix:PATH", value_parser = parse_backend)]
    pub backend: BackendArg,
}

/// The backend named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendArg {
    Stdio,
    Unix(PathBuf),
}

fn parse_backend(s: &str) -> Result<BackendArg, String> {
    match s {
        "stdio" => Ok(BackendArg::Stdio),
        _ => match s.strip_prefix("unix:") {
            Some(p) if !p.is_empty() => Ok(BackendArg::Unix(PathBuf::from(p))),
            _ => Err(format!("expected `stdio` or `unix:PATH`, got `{s}`")),
        },
    }
}

/// The console, as the command serves it.
pub struct Console;

impl DeviceKind for Console {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            name: "console",
            about: "virtio-console: one port connected to a byte stream",
            virtio_type: VIRTIO_ID_CONSOLE,
            legacy_pci_id: Some(0x1003),
        }
    }

    fn args(&self, cmd: clap::Command) -> clap::Command {
        <ConsoleArgs as clap::Args>::augment_args(cmd)
    }

    fn build(&self, args: &clap::ArgMatches) -> Result<Box<dyn VirtioDevice>, BuildError> {
        let a: ConsoleArgs = parse_args(args)?;
        let backend = match &a.backend {
            BackendArg::Stdio => Backend::stdio(),
            BackendArg::Unix(p) => Backend::unix_listener(p).map_err(|e| {
                BuildError::new(format!(
                    "cannot listen on console socket {}: {e}",
                    p.display()
                ))
            })?,
        };
        let dev = ConsoleDevice::new(backend, DEFAULT_PIPE_BYTES)
            .map_err(|e| BuildError::new(format!("cannot start console backend: {e}")))?;
        Ok(Box::new(dev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends() {
        assert_eq!(parse_backend("stdio"), Ok(BackendArg::Stdio));
        assert_eq!(
            parse_backend("unix:/tmp/c"),
            Ok(BackendArg::Unix("/tmp/c".into()))
        );
        for bad in ["unix:", "tcp:1", ""] {
            assert!(parse_backend(bad).is_err(), "{bad}");
        }
    }
}
