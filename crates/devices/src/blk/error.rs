//! Why a block device could not be built: options out of their limits, or an image that cannot
//! be served. Each message is one line naming the value or the image; the system's error, if
//! any, is kept as the source.

use super::image::SECTOR_SIZE;
use super::{ID_BYTES, MAX_QUEUES, MAX_QUEUE_SIZE, MAX_THREADS, MIN_QUEUE_SIZE};
use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// Why [`BlkDevice::open`](super::BlkDevice::open) failed.
#[derive(Debug, Error)]
pub enum BlkError {
    #[error("serial `{serial}` is {} bytes long, at most {ID_BYTES} fit", .serial.len())]
    Serial { serial: String },
    #[error("{0} request queues is not in 1..={MAX_QUEUES}")]
    Queues(u16),
    #[error("queue size {0} is not a power of two in {MIN_QUEUE_SIZE}..={MAX_QUEUE_SIZE}")]
    QueueSize(u16),
    #[error("{0} I/O threads is not in 1..={MAX_THREADS}")]
    Threads(usize),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("cannot start the I/O threads: {0}")]
    Pool(#[source] io::Error),
}

/// Why an image cannot be served.
#[derive(Debug, Error)]
pub enum ImageError {
    #[error("cannot open image {}: {}", .path.display(), plain(.source))]
    Open { path: PathBuf, source: io::Error },
    #[error("image {} is neither a regular file nor a block device", .path.display())]
    Kind { path: PathBuf },
    #[error("image {} is read-only (mode {mode:o})", .path.display())]
    WriteProtected { path: PathBuf, mode: u32 },
    #[error("image {} is not writable ({})", .path.display(), plain(.source))]
    NotWritable { path: PathBuf, source: io::Error },
    #[error("image {} is in use by another process (locked)", .path.display())]
    Locked { path: PathBuf },
    #[error("cannot lock image {}: {}", .path.display(), plain(.source))]
    Lock { path: PathBuf, source: io::Error },
    #[error("cannot get the size of {}: {}", .path.display(), plain(.source))]
    Size { path: PathBuf, source: io::Error },
    #[error("image {} is {size} bytes, not a multiple of {SECTOR_SIZE}", .path.display())]
    Unaligned { path: PathBuf, size: u64 },
    #[error("image {} is {size} bytes, not a multiple of its block size {block}", .path.display())]
    BlockUnaligned {
        path: PathBuf,
        size: u64,
        block: u32,
    },
    #[error("cannot open image {} with O_DIRECT: {}", .path.display(), plain(.source))]
    Direct { path: PathBuf, source: io::Error },
}

/// An `io::Error` as text without the "(os error N)" suffix.
fn plain(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Checks a GET_ID serial (at most [`ID_BYTES`] bytes).
pub fn check_serial(serial: &str) -> Result<String, BlkError> {
    if serial.len() <= ID_BYTES {
        Ok(serial.to_string())
    } else {
        Err(BlkError::Serial {
            serial: serial.to_string(),
        })
    }
}

/// Checks a number of request queues (1..=[`MAX_QUEUES`]).
pub fn check_queues(n: u16) -> Result<u16, BlkError> {
    if (1..=MAX_QUEUES).contains(&n) {
        Ok(n)
    } else {
        Err(BlkError::Queues(n))
    }
}

/// Checks a request queue size (a power of two in
/// [`MIN_QUEUE_SIZE`]..=[`MAX_QUEUE_SIZE`]).
pub fn check_queue_size(n: u16) -> Result<u16, BlkError> {
    if n.is_power_of_two() && (MIN_QUEUE_SIZE..=MAX_QUEUE_SIZE).contains(&n) {
        Ok(n)
    } else {
        Err(BlkError::QueueSize(n))
    }
}

/// Checks a number of I/O threads (1..=[`MAX_THREADS`]).
pub fn check_threads(n: usize) -> Result<usize, BlkError> {
    if (1..=MAX_THREADS).contains(&n) {
        Ok(n)
    } else {
        Err(BlkError::Threads(n))
    }
}
