//! `virtio-epf blk`: the block device's subcommand and how the device is built from it. The
//! limits are the library's ([`check_queues`] and the others), checked while parsing so that a
//! value out of range is a usage error.

use super::engine::EngineKind;
use super::{
    check_queue_size, check_queues, check_serial, check_threads, BlkDevice, BlkError, BlkOptions,
    ImageError, DEFAULT_QUEUE_SIZE,
};
use clap::builder::TypedValueParser as _;
use epf_device::{parse_args, BuildError, DeviceInfo, DeviceKind, VirtioDevice};
use std::path::PathBuf;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;

/// The options of `virtio-epf blk`.
#[derive(Debug, clap::Args)]
pub struct BlkArgs {
    /// The raw image: a regular file or a block device; its size (a multiple of 512) is the
    /// disk's size.
    #[arg(long, value_name = "PATH")]
    pub image: PathBuf,
    /// Serve the image read-only (the host sees a read-only disk; writes fail).
    #[arg(long)]
    pub read_only: bool,
    /// Identifier the host reads as the disk's serial (GET_ID; at most 20 bytes).
    #[arg(long, value_name = "ID", value_parser = check_serial)]
    pub serial: Option<String>,
    /// Request queues offered (the host uses one per CPU, up to this many), 1..=64.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).try_map(check_queues))]
    pub queues: u16,
    /// Bypass the endpoint's page cache (O_DIRECT) for aligned I/O, like QEMU's cache=none.
    #[arg(long)]
    pub direct: bool,
    /// Entries per request queue (a power of two, 4..=1024).
    #[arg(long, default_value_t = DEFAULT_QUEUE_SIZE, value_parser = clap::value_parser!(u16).try_map(check_queue_size))]
    pub queue_size: u16,
    /// I/O engine. io-uring falls back to threads where the kernel refuses it.
    #[arg(long, value_enum, default_value_t = EngineKind::IoUring)]
    pub engine: EngineKind,
    /// I/O threads (blocking requests in flight at once), 1..=256.
    #[arg(long, default_value_t = super::pool::DEFAULT_THREADS, value_parser = clap::value_parser!(u64).try_map(threads))]
    pub io_threads: usize,
}

impl BlkArgs {
    /// The device options these arguments describe.
    pub fn options(&self) -> BlkOptions {
        let mut o = BlkOptions::new(&self.image);
        o.image.read_only = self.read_only;
        o.image.direct = self.direct;
        o.serial = self.serial.clone();
        o.num_queues = self.queues;
        o.queue_size = self.queue_size;
        o.engine = self.engine;
        o.threads = self.io_threads;
        o
    }
}

/// `--io-threads`, within the library's limit.
fn threads(n: u64) -> Result<usize, BlkError> {
    check_threads(usize::try_from(n).unwrap_or(usize::MAX))
}

/// The block device, as the command serves it.
pub struct Blk;

impl DeviceKind for Blk {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            name: "blk",
            about: "virtio-blk: a raw disk image (regular file or block device) the host sees as /dev/vdX",
            virtio_type: VIRTIO_ID_BLOCK,
            legacy_pci_id: Some(0x1001),
        }
    }

    fn args(&self, cmd: clap::Command) -> clap::Command {
        <BlkArgs as clap::Args>::augment_args(cmd)
    }

    fn build(&self, args: &clap::ArgMatches) -> Result<Box<dyn VirtioDevice>, BuildError> {
        let a: BlkArgs = parse_args(args)?;
        let dev = BlkDevice::open(&a.options()).map_err(|e| {
            let read_only = matches!(
                e,
                BlkError::Image(ImageError::WriteProtected { .. } | ImageError::NotWritable { .. })
            );
            let e = BuildError::new(e);
            if read_only {
                e.hint("pass --read-only to serve it read-only")
            } else {
                e
            }
        })?;
        log::info!(
            "blk: image {} ({} bytes{}), engine {}",
            a.image.display(),
            dev.capacity_bytes(),
            if a.read_only { ", read-only" } else { "" },
            dev.engine_kind()
        );
        Ok(Box::new(dev))
    }
}
