//! `virtio-epf gpu`: the display adapter's subcommand and how it is built from it. Limits are
//! the library's check functions, used as the options' value parsers.

use super::device::{GpuConfig, GpuDevice};
use super::snapshot;
use clap::builder::TypedValueParser as _;
use epf_device::{parse_args, BuildError, DeviceInfo, DeviceKind, VirtioDevice};
use std::path::PathBuf;
use virtio_bindings::virtio_ids::VIRTIO_ID_GPU;

/// Outputs a device may have (the spec's `VIRTIO_GPU_MAX_SCANOUTS`).
pub fn check_outputs(n: u32) -> Result<u32, String> {
    if (1..=super::protocol::MAX_SCANOUTS as u32).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{n} outputs: expected 1 to {}",
            super::protocol::MAX_SCANOUTS
        ))
    }
}

/// A resolution `WxH`, each side 16 to 4095 (what an EDID detailed timing holds).
pub fn check_resolution(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?}: expected WIDTHxHEIGHT, e.g. 1280x800");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    let max = super::edid::MAX_DIMENSION;
    if !(16..=max).contains(&w) || !(16..=max).contains(&h) {
        return Err(format!("{w}x{h}: each side must be 16 to {max} pixels"));
    }
    Ok((w, h))
}

/// Resource memory in MiB: 1 to 16384.
pub fn check_max_memory(mib: u64) -> Result<u64, String> {
    if (1..=16384).contains(&mib) {
        Ok(mib)
    } else {
        Err(format!("{mib} MiB: expected 1 to 16384"))
    }
}

/// The options of `virtio-epf gpu`.
#[derive(Debug, clap::Args)]
pub struct GpuArgs {
    /// Outputs (scanouts), 1 to 16.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).try_map(check_outputs))]
    pub outputs: u32,
    /// Native mode of every output (reported in the display info and the EDID), WxH.
    #[arg(long, default_value = "1024x768", value_parser = check_resolution)]
    pub resolution: (u32, u32),
    /// Resource memory the host's driver may use at most, in MiB; beyond it resource
    /// creation fails with ERR_OUT_OF_MEMORY.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).try_map(check_max_memory))]
    pub max_memory: u64,
    /// Where SIGUSR2 writes a PNG snapshot of each output (output N>0 gets `-N` before the
    /// extension).
    #[arg(long)]
    pub screenshot: Option<PathBuf>,
    /// Serve the outputs to VNC viewers (RFB 3.8): output N on ADDR:PORT+N.
    #[arg(long, value_name = "ADDR:PORT")]
    pub vnc: Option<std::net::SocketAddr>,
}

/// The display adapter, as the command serves it.
pub struct Gpu;

impl DeviceKind for Gpu {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            name: "gpu",
            about: "virtio-gpu (2D display adapter): scanouts, EDID, cursor, VNC, PNG snapshots; \
                    modern layout only (virtio-gpu has no legacy form)",
            virtio_type: VIRTIO_ID_GPU,
            legacy_pci_id: None,
        }
    }

    fn args(&self, cmd: clap::Command) -> clap::Command {
        <GpuArgs as clap::Args>::augment_args(cmd)
    }

    fn build(&self, args: &clap::ArgMatches) -> Result<Box<dyn VirtioDevice>, BuildError> {
        let a: GpuArgs = parse_args(args)?;
        let dev = GpuDevice::new(GpuConfig {
            outputs: a.outputs,
            width: a.resolution.0,
            height: a.resolution.1,
            max_memory: a.max_memory << 20,
        });
        if let Some(path) = a.screenshot {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if !dir.is_dir() {
                return Err(BuildError::new(format!(
                    "screenshot directory {} does not exist",
                    dir.display()
                ))
                .hint("--screenshot"));
            }
            snapshot::spawn_on_signal(dev.display(), path, dev.counters())
                .map_err(|e| BuildError::new(e).hint("SIGUSR2 handler for --screenshot"))?;
        }
        if let Some(addr) = a.vnc {
            let shared = super::vnc::Shared {
                display: dev.display(),
                counters: dev.counters(),
                control: Some(dev.control()),
                // The hook for virtio-input, once there is one.
                input: None,
            };
            let bound = super::vnc::start(addr, a.outputs as usize, shared)
                .map_err(|e| BuildError::new(e).hint(format!("--vnc {addr}")))?;
            for (i, b) in bound.iter().enumerate() {
                log::info!("gpu: output {i} on vnc://{b}");
            }
        }
        Ok(Box::new(dev))
    }
}
