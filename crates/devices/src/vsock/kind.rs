//! `virtio-epf vsock`: the socket device's subcommand and how it is built from it.

use super::{check_conn_buffer, check_guest_cid, VsockConfig, VsockDevice};
use clap::builder::TypedValueParser as _;
use epf_device::{check_queue_size, parse_args, BuildError, DeviceInfo, DeviceKind, VirtioDevice};
use std::path::PathBuf;

/// The virtio device ID of the socket device (virtio 1.2 section 5.10).
pub const VIRTIO_ID_VSOCK: u32 = 19;

/// The options of `virtio-epf vsock`.
#[derive(Debug, clap::Args)]
pub struct VsockArgs {
    /// The host's context ID (3 .. 2^32-2): the address host applications bind to.
    #[arg(long, value_parser = clap::value_parser!(u64).try_map(check_guest_cid))]
    pub guest_cid: u64,
    /// Unix socket endpoint applications connect to (then write `CONNECT <port>\n`); a host
    /// connection to port P reaches the endpoint's socket `PATH_P`.
    #[arg(long, value_name = "PATH")]
    pub uds_path: PathBuf,
    /// Buffer per connection for host-to-endpoint data (the credit advertised; bytes,
    /// 4096 .. 16 MiB).
    #[arg(long, default_value_t = 256 * 1024, value_parser = clap::value_parser!(u32).try_map(check_conn_buffer))]
    pub conn_buffer: u32,
    /// Most connections at once (both directions together).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_connections: u32,
    /// Size of each of the three queues (a power of two, at most 32768).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).try_map(check_queue_size))]
    pub queue_size: u16,
}

/// The socket device, as the command serves it.
pub struct Vsock;

impl DeviceKind for Vsock {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            name: "vsock",
            about: "virtio-vsock: host AF_VSOCK stream sockets to endpoint Unix sockets",
            virtio_type: VIRTIO_ID_VSOCK,
            legacy_pci_id: None,
        }
    }

    fn args(&self, cmd: clap::Command) -> clap::Command {
        <VsockArgs as clap::Args>::augment_args(cmd)
    }

    fn build(&self, args: &clap::ArgMatches) -> Result<Box<dyn VirtioDevice>, BuildError> {
        let a: VsockArgs = parse_args(args)?;
        let cfg = VsockConfig {
            guest_cid: a.guest_cid,
            uds_path: a.uds_path.clone(),
            conn_buf: a.conn_buffer,
            max_conns: a.max_connections as usize,
            queue_size: a.queue_size,
            connect_timeout: super::muxer::CONNECT_TIMEOUT,
        };
        let dev = VsockDevice::new(cfg).map_err(|e| {
            let in_use = e.kind() == std::io::ErrorKind::AddrInUse;
            let b = BuildError::new(format!("cannot listen on {}: {e}", a.uds_path.display()));
            if in_use {
                b.hint("a live socket or another file is there: choose another --uds-path")
            } else {
                b
            }
        })?;
        Ok(Box::new(dev))
    }
}
