//! Why the host-side virtio-pci driver gave up. Each variant corresponds to a check a real
//! driver (Linux's virtio_pci_modern / virtio_ring) makes, so a test can tell which rule a
//! device broke.

use crate::LoopbackError;
use epf_epc::HostMemError;
use thiserror::Error;

/// A host-driver failure.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DriverError {
    /// No function answers config reads, or it is not a virtio device.
    #[error("not a virtio-pci device (vendor {vendor:#06x}, device {device:#06x})")]
    NotVirtio { vendor: u16, device: u16 },
    /// A mandatory virtio capability is missing (common, notify or ISR).
    #[error("missing virtio {0} capability")]
    MissingCapability(&'static str),
    /// A capability is malformed or does not fit its BAR.
    #[error("bad virtio capability (type {cfg_type}) at config {cap_offset:#x}: {reason}")]
    BadCapability {
        cfg_type: u8,
        cap_offset: usize,
        reason: String,
    },
    /// `device_status` did not read back 0 after a reset.
    #[error("device did not complete reset (status still {status:#04x})")]
    ResetTimeout { status: u8 },
    /// The device does not offer VIRTIO_F_VERSION_1.
    #[error("device uses the modern interface but does not offer VIRTIO_F_VERSION_1")]
    NoVersion1,
    /// FEATURES_OK did not stick.
    #[error("device refuses features {features:#x} (status {status:#04x})")]
    FeaturesRefused { features: u64, status: u8 },
    /// Queue index beyond `num_queues`.
    #[error("queue {index} does not exist (device has {num_queues})")]
    NoSuchQueue { index: u16, num_queues: u16 },
    /// `queue_size` reads 0.
    #[error("queue {0} is not available (size 0)")]
    QueueUnavailable(u16),
    /// `queue_enable` already reads 1 before setup.
    #[error("queue {0} is already enabled")]
    QueueAlreadyEnabled(u16),
    /// The requested or offered queue size cannot be used.
    #[error("queue {index}: bad size {size} (device maximum {max})")]
    BadQueueSize { index: u16, size: u16, max: u16 },
    /// An MSI-X vector did not read back as written.
    #[error("{what}: vector {vector} refused (reads back {read_back:#06x})")]
    VectorRefused {
        what: String,
        vector: u16,
        read_back: u16,
    },
    /// The queue's notification address is outside the notify capability.
    #[error("queue {index}: notify offset {offset:#x} outside the notify capability")]
    NotifyOutOfRange { index: u16, offset: u64 },
    /// A device-config access outside the device capability.
    #[error("device config access {offset:#x}+{len} outside the {cap_len}-byte capability")]
    DeviceConfigRange {
        offset: u64,
        len: usize,
        cap_len: u64,
    },
    /// `config_generation` kept changing.
    #[error("device config kept changing (config_generation unstable)")]
    ConfigUnstable,
    /// A PCI configuration access capability access the spec does not allow.
    #[error("bad VIRTIO_PCI_CAP_PCI_CFG access: {0}")]
    BadPciCfgAccess(String),
    /// An operation needs a feature that was not negotiated.
    #[error("{0} not negotiated")]
    FeatureNotNegotiated(&'static str),
    /// `add` with no buffers.
    #[error("empty buffer chain")]
    EmptyChain,
    /// Not enough free descriptors.
    #[error("queue full: need {needed} descriptors, {free} free")]
    QueueFull { needed: usize, free: u16 },
    /// The device wrote something impossible to the used ring (Linux's BAD_RING); the queue
    /// is broken from then on.
    #[error("bad used ring: {0}")]
    BadRing(String),
    /// A queue operation after an earlier [`DriverError::BadRing`].
    #[error("queue is broken")]
    Broken,
    /// A bounded wait ran out.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// Allocating host RAM failed.
    #[error(transparent)]
    Alloc(#[from] LoopbackError),
    /// A host RAM access failed (a driver bug: its own rings are in the arena).
    #[error(transparent)]
    Ram(#[from] HostMemError),
}

/// Result of host-driver operations.
pub type Result<T> = std::result::Result<T, DriverError>;
