//! Why the command could not serve: each message is one line for the operator, printed as
//! `virtio-epf: MESSAGE` with exit status 1.

use epf_device::BuildError;
use epf_epc::EpcError;
use epf_vfio_user::VfioUserError;
use epf_virtio_pci::FunctionError;
use std::path::PathBuf;
use thiserror::Error;

/// A failure to start or to keep serving.
#[derive(Debug, Error)]
pub enum Error {
    #[error("socket directory {} does not exist", .0.display())]
    SocketDirectory(PathBuf),
    #[error(transparent)]
    Device(#[from] BuildError),
    #[error("the {name} device declares virtio device type {declared} but built type {built}")]
    DeviceType {
        name: &'static str,
        declared: u32,
        built: u32,
    },
    #[error(transparent)]
    VfioUser(#[from] VfioUserError),
    #[error(transparent)]
    Controller(#[from] EpcError),
    #[error(transparent)]
    Function(#[from] FunctionError),
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}
