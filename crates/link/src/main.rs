//! `epf-link`: serves the simulated endpoint controller to an EP VM and the function it
//! programs to a host VM, both over vfio-user (see docs/sim-epc.md).

use clap::Parser;
use epf_epc::EndpointController;
use epf_link::{EpHandler, EpPort, Link};
use epf_vfio_user::VfioUserController;
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The link of the endpoint-side rig: a simulated PCIe endpoint controller.
///
/// The EP VM's QEMU connects to --ep-socket (device vfio-user-pci) and sees the controller.
/// Once the EP starts its function, --host-socket appears and the host VM's QEMU can connect
/// to it and see that function, its BARs mapped onto the EP VM's RAM.
#[derive(Parser, Debug)]
#[command(name = "epf-link", version)]
struct Args {
    /// vfio-user socket for the EP VM (the controller).
    #[arg(long, value_name = "PATH")]
    ep_socket: PathBuf,
    /// vfio-user socket for the host VM (the endpoint function); created when the EP starts
    /// the function.
    #[arg(long, value_name = "PATH")]
    host_socket: PathBuf,
    /// Size of the outbound aperture (BAR 2 of the controller) in MiB: a power of two.
    #[arg(long, value_name = "MIB", default_value_t = 32)]
    aperture_mib: u64,
    /// Write the counters to PATH every 200 ms and at exit (also printed on SIGUSR1).
    #[arg(long, value_name = "PATH")]
    stats_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("epf-link: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    if !args.aperture_mib.is_power_of_two() || args.aperture_mib > 1024 {
        return Err(format!(
            "--aperture-mib {} must be a power of two up to 1024",
            args.aperture_mib
        ));
    }
    let aperture = args.aperture_mib << 20;
    let ep = VfioUserController::new(&args.ep_socket).map_err(|e| e.to_string())?;
    let link = Link::new(args.host_socket.clone(), aperture);
    link.attach_ep(Arc::clone(&ep) as Arc<dyn EpPort>);
    ep.start(
        Link::controller_spec(aperture),
        Arc::new(EpHandler(Arc::clone(&link))),
    )
    .map_err(|e| format!("controller: {e}"))?;
    let thread = ep.spawn().map_err(|e| e.to_string())?;

    let stop = Arc::new(AtomicBool::new(false));
    let usr1 = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    signal_hook::flag::register(SIGUSR1, Arc::clone(&usr1)).map_err(|e| e.to_string())?;

    let write_stats = || {
        if let Some(p) = &args.stats_file {
            let tmp = p.with_extension("tmp");
            let report = link.report(Some(&ep.stats()));
            if std::fs::write(&tmp, report).is_ok() {
                let _ = std::fs::rename(&tmp, p);
            }
        }
    };
    while !stop.load(Ordering::Acquire) && !thread.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
        if usr1.swap(false, Ordering::AcqRel) {
            eprint!("{}", link.report(Some(&ep.stats())));
        }
        write_stats();
    }
    log::info!("epf-link: shutting down");
    ep.shutdown();
    let r = thread.join();
    // The counters of the host side too, before it goes.
    write_stats();
    link.shutdown();
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the controller thread panicked".into()),
    }
}
