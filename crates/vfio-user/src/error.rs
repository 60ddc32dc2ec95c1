//! Errors of the vfio-user controller itself (socket setup and serving); errors reported to
//! the function use `epf_epc::EpcError`.

use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// Why the controller could not be created or could not serve.
#[derive(Debug, Error)]
pub enum VfioUserError {
    /// The socket path cannot be used (bad directory, too long, permissions, ...).
    #[error("cannot listen on vfio-user socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Another server is listening on the socket path.
    #[error("vfio-user socket {0} is in use: a server is listening on it")]
    InUse(PathBuf),
    /// The path exists and is not a socket; we do not remove it.
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    /// `serve()` is already running (on another thread).
    #[error("the vfio-user controller is already serving")]
    AlreadyServing,
    /// Waiting for or accepting clients failed.
    #[error("vfio-user: {0}")]
    Io(#[from] io::Error),
}
