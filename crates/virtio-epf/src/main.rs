//! `virtio-epf`: serve one virtio device as a PCIe endpoint function over a vfio-user socket.
//!
//! The process builds the device named by the subcommand, wraps it in a modern virtio-pci
//! function on a vfio-user endpoint controller, and serves hosts (QEMU `vfio-user-pci`
//! clients) one after the other until SIGINT/SIGTERM, which remove the socket and exit 0.

mod cli;

use clap::Parser;
use cli::{Cli, ConsoleBackendArg, DeviceCmd};
use epf_device::VirtioDevice;
use epf_devices::blk::BlkDevice;
use epf_devices::console::{Backend, DEFAULT_PIPE_BYTES};
use epf_devices::{ConsoleDevice, RngDevice};
use epf_epc::{CounterSource, Counters, EndpointController, OutboundWindows, WindowLimited};
use epf_linux_epf::{EpfController, EpfOptions, LinuxEpfController};
use epf_vfio_user::VfioUserController;
use epf_virtio_pci::{FunctionOptions, Layout, NotifyMode, RegisterAccess, VirtioPciFunction};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn build_device(cmd: &DeviceCmd) -> Result<Box<dyn VirtioDevice>, String> {
    Ok(match cmd {
        DeviceCmd::Rng { queue_size, .. } => Box::new(RngDevice::new(*queue_size)),
        DeviceCmd::Console { backend, .. } => {
            let b = match backend {
                ConsoleBackendArg::Stdio => Backend::stdio(),
                ConsoleBackendArg::Unix(p) => Backend::unix_listener(p)
                    .map_err(|e| format!("cannot listen on console socket {}: {e}", p.display()))?,
            };
            Box::new(
                ConsoleDevice::new(b, DEFAULT_PIPE_BYTES)
                    .map_err(|e| format!("cannot start console backend: {e}"))?,
            )
        }
        DeviceCmd::Blk { blk, .. } => {
            let dev = BlkDevice::open(&blk.options()).map_err(|e| e.to_string())?;
            log::info!(
                "blk: image {} ({} bytes{}), engine {}",
                blk.image.display(),
                dev.capacity_bytes(),
                if blk.read_only { ", read-only" } else { "" },
                dev.engine_kind()
            );
            Box::new(dev)
        }
        DeviceCmd::Net { net, .. } => {
            let dev =
                epf_devices::net::NetDevice::new(&net.options()?).map_err(|e| e.to_string())?;
            Box::new(dev)
        }
    })
}

/// What is served: the function, the controller it is served on, and the outbound windows
/// when `--host-windows` limits them. Their counters are the operator's view.
#[derive(Clone)]
struct Served {
    function: Arc<VirtioPciFunction>,
    link: Arc<dyn CounterSource>,
    windows: Option<Arc<OutboundWindows>>,
}

impl Served {
    /// Every counter, in one format: the function's (with the poller's and the device's),
    /// the link's, the windows'.
    fn counters(&self) -> String {
        let mut c = Counters::new();
        c.add(self.function.as_ref()).add(self.link.as_ref());
        if let Some(w) = &self.windows {
            c.add(w.as_ref());
        }
        c.into_text()
    }
}

fn write_stats_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
        log::warn!("cannot write stats file {}: {e}", path.display());
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let common = cli.device.common();
    if let Some(name) = &common.epf {
        return run_epf(&cli, name);
    }
    let socket = common
        .vfio_user
        .clone()
        .ok_or("one of --vfio-user or --epf is required")?;
    // Check the socket location before starting anything else, for a clear error.
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(format!("socket directory {} does not exist", dir.display()));
        }
    }
    // The device first: a bad image (or other device argument) is reported before the
    // socket is created.
    let device = build_device(&cli.device)?;
    let controller = VfioUserController::new(&socket).map_err(|e| e.to_string())?;
    let mode = &common.endpoint;
    let mut windows = None;
    let epc: Arc<dyn EndpointController> = if mode.host_windows > 0 {
        let w = WindowLimited::new(controller.clone(), mode.host_windows, mode.window_size)
            .map_err(|e| {
                controller.shutdown();
                e.to_string()
            })?;
        windows = Some(w.windows().clone());
        Arc::new(w)
    } else {
        controller.clone()
    };
    let function =
        VirtioPciFunction::start_with(epc, device, mode.function_options()).map_err(|e| {
            controller.shutdown();
            e.to_string()
        })?;
    let server = controller
        .spawn()
        .map_err(|e| format!("cannot start the vfio-user server thread: {e}"))?;
    log::info!(
        "serving virtio device type {} on {}",
        function.device_type(),
        socket.display()
    );

    let served = Served {
        function: function.clone(),
        link: controller.clone(),
        windows,
    };
    let done = Arc::new(AtomicBool::new(false));
    spawn_stats_file(common, &served, &done)?;
    serve_until_signalled(&served)?;
    done.store(true, Ordering::Release);
    controller.shutdown();
    match server.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::warn!("vfio-user server: {e}"),
        Err(_) => log::error!("vfio-user server thread panicked"),
    }
    function.stop();
    if let Some(path) = &common.stats_file {
        write_stats_file(path, &served.counters());
    }
    Ok(())
}

/// Writes the counters to `--stats-file` every 500 ms until `done`.
fn spawn_stats_file(
    common: &cli::Common,
    served: &Served,
    done: &Arc<AtomicBool>,
) -> Result<(), String> {
    let Some(path) = common.stats_file.clone() else {
        return Ok(());
    };
    let (served, done) = (served.clone(), done.clone());
    std::thread::Builder::new()
        .name("stats".into())
        .spawn(move || {
            while !done.load(Ordering::Acquire) {
                write_stats_file(&path, &served.counters());
                std::thread::sleep(Duration::from_millis(500));
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the stats thread: {e}"))
}

/// Prints the counters on SIGUSR1; returns on SIGINT or SIGTERM.
fn serve_until_signalled(served: &Served) -> Result<(), String> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGUSR1])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    for sig in signals.forever() {
        match sig {
            SIGUSR1 => eprint!("{}", served.counters()),
            _ => {
                log::info!("signal {sig}: shutting down");
                break;
            }
        }
    }
    Ok(())
}

/// Serves the device through Linux's PCI endpoint subsystem (`--epf NAME`).
fn run_epf(cli: &Cli, name: &str) -> Result<(), String> {
    let common = cli.device.common();
    let device = build_device(&cli.device)?;
    let ctl = LinuxEpfController::open(
        &epf_linux_epf::device_path(name),
        EpfOptions {
            dma_threshold: common.dma_threshold,
            ..EpfOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let epc = EpfController(ctl);
    let mut options = common.endpoint.function_options();
    let f = epc.features();
    if !f.vendor_capabilities && !f.trapped_access && options == FunctionOptions::default() {
        // What a controller without traps or vendor capabilities can serve.
        options = FunctionOptions {
            layout: Layout::Legacy,
            registers: RegisterAccess::Poll,
            notify: NotifyMode::Poll,
            ..options
        };
        log::info!(
            "epf: no trapped accesses, no vendor capabilities: legacy layout, polled registers"
        );
    }
    let function = VirtioPciFunction::start_with(Arc::new(epc.clone()), device, options)
        .map_err(|e| e.to_string())?;
    log::info!(
        "serving virtio device type {} on pci_epf_user function {name}",
        function.device_type()
    );
    let served = Served {
        function: function.clone(),
        link: epc.0.clone(),
        windows: None,
    };
    let done = Arc::new(AtomicBool::new(false));
    spawn_stats_file(common, &served, &done)?;
    serve_until_signalled(&served)?;
    done.store(true, Ordering::Release);
    function.stop();
    if let Some(path) = &common.stats_file {
        write_stats_file(path, &served.counters());
    }
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("virtio-epf: {e}");
            ExitCode::FAILURE
        }
    }
}
