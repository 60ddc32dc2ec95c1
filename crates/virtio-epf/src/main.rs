//! The `virtio-epf` command: parses the command line built from the device registry and
//! serves the device it names until SIGINT/SIGTERM (exit 0). A usage error exits 2 with
//! clap's message; a failure to serve exits 1 with one line, `virtio-epf: MESSAGE`.

use std::process::ExitCode;
use virtio_epf::{Invocation, Registry};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let inv = Invocation::parse_from(&Registry::builtin(), std::env::args_os())
        .unwrap_or_else(|e| e.exit());
    match virtio_epf::serve::run(&inv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("virtio-epf: {e}");
            ExitCode::FAILURE
        }
    }
}
