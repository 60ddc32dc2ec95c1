//! Serving an [`Invocation`] until SIGINT or SIGTERM: on a vfio-user socket (hosts served one
//! after the other; the socket is removed at the end) or on a `pci_epf_user` function of
//! Linux's endpoint subsystem (`--epf`). Meanwhile the counters are written to `--stats-file`
//! every 500 ms and printed on SIGUSR1.

use crate::cli::{Common, Invocation};
use crate::error::Error;
use crate::served::Served;
use epf_epc::{EndpointController, WindowLimited};
use epf_linux_epf::{EpfController, EpfOptions, LinuxEpfController};
use epf_vfio_user::VfioUserController;
use epf_virtio_pci::{FunctionOptions, Layout, NotifyMode, RegisterAccess};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Serves `inv` until SIGINT or SIGTERM.
pub fn run(inv: &Invocation) -> Result<(), Error> {
    // Before anything is created: a signal during start-up is then a clean shutdown once
    // serving begins, not the default action (which would leave the socket behind).
    let signals = Signals::new([SIGINT, SIGTERM, SIGUSR1]).map_err(Error::Signals)?;
    match &inv.common.epf {
        Some(name) => run_epf(inv, name, signals),
        None => run_vfio_user(inv, signals),
    }
}

fn run_vfio_user(inv: &Invocation, signals: Signals) -> Result<(), Error> {
    let common = &inv.common;
    // The command line requires one of --vfio-user and --epf.
    let socket = common.vfio_user.clone().unwrap_or_default();
    // Check the socket location before starting anything else, for a clear error.
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(Error::SocketDirectory(dir.to_path_buf()));
        }
    }
    // The device first: a bad image (or other device argument) is reported before the
    // socket is created.
    let device = inv.build_device()?;
    let controller = VfioUserController::new(&socket)?;
    let mode = &common.endpoint;
    let mut windows = None;
    let epc: Arc<dyn EndpointController> = if mode.host_windows > 0 {
        let w = WindowLimited::new(controller.clone(), mode.host_windows, mode.window_size)
            .inspect_err(|_| controller.shutdown())?;
        windows = Some(w.windows().clone());
        Arc::new(w)
    } else {
        controller.clone()
    };
    let function =
        epf_virtio_pci::VirtioPciFunction::start_with(epc, device, mode.function_options())
            .inspect_err(|_| controller.shutdown())?;
    let server = controller.spawn().map_err(|source| Error::Thread {
        what: "vfio-user server",
        source,
    })?;
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
    serve_until_signalled(signals, &served);
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

/// Serves the device through Linux's PCI endpoint subsystem (`--epf NAME`).
fn run_epf(inv: &Invocation, name: &str, signals: Signals) -> Result<(), Error> {
    let common = &inv.common;
    let device = inv.build_device()?;
    let ctl = LinuxEpfController::open(
        &epf_linux_epf::device_path(name),
        EpfOptions {
            dma_threshold: common.dma_threshold,
            ..EpfOptions::default()
        },
    )?;
    let epc = EpfController(ctl);
    let mut options = common.endpoint.function_options();
    let f = epc.features();
    let defaults = FunctionOptions {
        rings: options.rings,
        ..FunctionOptions::default()
    };
    if !f.vendor_capabilities && !f.trapped_access && options == defaults {
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
    let function =
        epf_virtio_pci::VirtioPciFunction::start_with(Arc::new(epc.clone()), device, options)?;
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
    serve_until_signalled(signals, &served);
    done.store(true, Ordering::Release);
    function.stop();
    if let Some(path) = &common.stats_file {
        write_stats_file(path, &served.counters());
    }
    Ok(())
}

fn write_stats_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
        log::warn!("cannot write stats file {}: {e}", path.display());
    }
}

/// Writes the counters to `--stats-file` every 500 ms until `done`.
fn spawn_stats_file(common: &Common, served: &Served, done: &Arc<AtomicBool>) -> Result<(), Error> {
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
        .map_err(|source| Error::Thread {
            what: "stats",
            source,
        })
}

/// Prints the counters on SIGUSR1; returns on SIGINT or SIGTERM.
fn serve_until_signalled(mut signals: Signals, served: &Served) {
    for sig in signals.forever() {
        match sig {
            SIGUSR1 => eprint!("{}", served.counters()),
            _ => {
                log::info!("signal {sig}: shutting down");
                break;
            }
        }
    }
}
