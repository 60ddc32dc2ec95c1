//! The virtio device trait: what an endpoint developer writes to add a device.
//!
//! A device knows nothing of PCI, endpoints or vfio-user. It declares its type, features,
//! queues and configuration space, and reacts to three things: activation (the driver set
//! DRIVER_OK), a queue notification, and a wake-up requested by one of its own backend threads.
//! All three run on the function's worker thread with a [`DeviceContext`] that lends it the
//! activated queues. Handlers must not block: a device that cannot make progress (back-end
//! full, no host buffers) returns and waits for the next notification or wake-up.
//!
//! Returning an error means the device cannot go on with this driver: the transport sets
//! DEVICE_NEEDS_RESET and raises a configuration-change interrupt, as the virtio spec asks.
//!
//! To be served by the `virtio-epf` command a device also has a [`DeviceKind`]: its
//! subcommand, options and IDs (docs/devices.md walks through one).

mod config;
mod context;
mod kind;
mod waker;

pub use config::{ConfigWriteHook, DeviceConfig};
pub use context::DeviceContext;
pub use epf_epc::{CounterSource, Counters};
pub use epf_virtqueue::{
    check_queue_size, ChainReader, ChainWriter, DescriptorChain, Queue, QueueError, QueueSizeError,
    MAX_QUEUE_SIZE,
};
pub use kind::{
    parse_args, BuildError, DeviceInfo, DeviceKind, VIRTIO_PCI_MODERN_DEVICE_BASE,
    VIRTIO_PCI_VENDOR_ID,
};
pub use waker::Waker;

use std::sync::Arc;
use thiserror::Error;

/// Why a device gave up on its current driver.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// The driver broke a virtqueue (malformed ring or descriptors).
    #[error("virtqueue {queue}: {error}")]
    Queue {
        queue: usize,
        #[source]
        error: QueueError,
    },
    /// The driver broke the device protocol (e.g. a malformed request the spec says to fail on).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The device's backend failed irrecoverably: `what` it was doing, and the system's error.
    #[error("backend: {what}: {source}")]
    Backend {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl DeviceError {
    /// Adapter for `map_err`: a [`QueueError`] on queue `queue`.
    pub fn queue(queue: usize) -> impl FnOnce(QueueError) -> DeviceError {
        move |error| DeviceError::Queue { queue, error }
    }

    /// Adapter for `map_err`: the backend failed while doing `what`.
    pub fn backend(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DeviceError {
        move |source| DeviceError::Backend {
            what: what.into(),
            source,
        }
    }
}

/// A virtio device served by an endpoint function.
pub trait VirtioDevice: Send + 'static {
    /// Virtio device ID (1 net, 2 block, 3 console, 4 entropy, ...).
    fn device_type(&self) -> u32;

    /// Device-specific feature bits offered (the transport adds VERSION_1, INDIRECT_DESC,
    /// EVENT_IDX and other ring features itself).
    fn device_features(&self) -> u64;

    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;

    /// Initial contents of the device-specific configuration space.
    fn initial_config(&self) -> Vec<u8>;

    /// The driver set DRIVER_OK: `ctx.features()` holds the negotiated features and
    /// `ctx.queue(i)` the queues it enabled.
    fn activate(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError>;

    /// The driver notified queue `queue`.
    fn queue_notify(
        &mut self,
        queue: usize,
        ctx: &mut DeviceContext<'_>,
    ) -> Result<(), DeviceError>;

    /// A backend thread called [`Waker::wake`]. Only called while active.
    fn wake(&mut self, _ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        Ok(())
    }

    /// The driver reset the device: forget everything tied to the driver (its queues are
    /// already gone). The device must be ready for a new negotiation when this returns.
    fn reset(&mut self);

    /// How driver writes to the device configuration space are applied, for a device with
    /// writable fields (optional: without one the space is read-only). Taken once, when the
    /// function starts.
    fn config_write_hook(&self) -> Option<ConfigWriteHook> {
        None
    }

    /// The device's counters, for operators (optional). Called once, when the function
    /// starts; the transport reports them with its own counters (`--stats-file`, SIGUSR1)
    /// from another thread while the device runs, so they are shared (typically atomics the
    /// device bumps with relaxed ordering), never a view into the device itself.
    fn stats(&self) -> Option<Arc<dyn CounterSource>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn device_errors_keep_their_source() {
        let e = DeviceError::backend("getrandom")(std::io::Error::other("no entropy"));
        assert_eq!(e.to_string(), "backend: getrandom: no entropy");
        let src = e.source().expect("an I/O source");
        assert!(src.downcast_ref::<std::io::Error>().is_some());
        let e = DeviceError::queue(3)(QueueError::BadSize { size: 3 });
        assert_eq!(
            e.source().and_then(|s| s.downcast_ref::<QueueError>()),
            Some(&QueueError::BadSize { size: 3 })
        );
        assert!(DeviceError::Protocol("x".into()).source().is_none());
    }
}
