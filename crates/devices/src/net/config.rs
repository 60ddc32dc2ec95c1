//! What an operator chooses for a virtio-net function (TAP, MAC, queue pairs, MTU, ring size),
//! its validation, and the device configuration space built from it (virtio 1.2 5.1.4:
//! `mac`, `status`, `max_virtqueue_pairs`, `mtu`).

use super::mac::MacAddr;
use epf_device::{check_queue_size, QueueSizeError};
use thiserror::Error;
use virtio_bindings::virtio_net::VIRTIO_NET_S_LINK_UP;

/// Smallest MTU Linux accepts from a virtio-net device (`MIN_MTU`, i.e. ETH_MIN_MTU).
pub const MIN_MTU: u32 = 68;
/// Largest MTU a TAP device can carry (`MAX_MTU - ETH_HLEN` in tun.c).
pub const MAX_MTU: u32 = 65521;
/// Most queue pairs: a multi-queue TAP has at most 256 queues (`MAX_TAP_QUEUES`).
pub const MAX_QUEUE_PAIRS: u16 = 256;
/// Default virtqueue size (QEMU's default for virtio-net too).
pub const DEFAULT_QUEUE_SIZE: u16 = 256;

/// The operator's choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetOptions {
    /// Name of an existing TAP device in the daemon's network namespace.
    pub tap: String,
    /// The station address the host sees; default [`MacAddr::derived`] from the TAP name.
    pub mac: Option<MacAddr>,
    /// Queue pairs (1 = no multi-queue).
    pub queue_pairs: u16,
    /// MTU offered to the host; default: the TAP's MTU.
    pub mtu: Option<u32>,
    /// Size of every virtqueue.
    pub queue_size: u16,
}

impl NetOptions {
    /// Options for `tap` with every default.
    pub fn new(tap: &str) -> Self {
        NetOptions {
            tap: tap.into(),
            mac: None,
            queue_pairs: 1,
            mtu: None,
            queue_size: DEFAULT_QUEUE_SIZE,
        }
    }

    /// Checks everything that can be checked without the TAP; the message is one line.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.queue_pairs == 0 || self.queue_pairs > MAX_QUEUE_PAIRS {
            return Err(OptionsError::QueuePairs(self.queue_pairs));
        }
        if let Some(m) = self.mtu {
            check_mtu(m)?;
        }
        check_queue_size(self.queue_size)?;
        Ok(())
    }
}

/// Why options were refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OptionsError {
    #[error(
        "queue pairs {0} is out of range (1..={MAX_QUEUE_PAIRS}, the most a multi-queue TAP has)"
    )]
    QueuePairs(u16),
    #[error("MTU {0} is impossible (a TAP carries {MIN_MTU}..={MAX_MTU})")]
    Mtu(u32),
    #[error(transparent)]
    QueueSize(#[from] QueueSizeError),
}

/// Whether `mtu` can be offered: Linux refuses less than 68 and a TAP carries at most 65521.
pub fn check_mtu(mtu: u32) -> Result<(), OptionsError> {
    if (MIN_MTU..=MAX_MTU).contains(&mtu) {
        Ok(())
    } else {
        Err(OptionsError::Mtu(mtu))
    }
}

/// Byte offsets of the configuration fields.
pub const CFG_MAC: usize = 0;
pub const CFG_STATUS: usize = 6;
pub const CFG_MAX_PAIRS: usize = 8;
pub const CFG_MTU: usize = 10;
/// Length of the configuration space we present.
pub const CFG_LEN: usize = 12;

/// The configuration space: `mac`, `status` (link up), `max_virtqueue_pairs`, `mtu`.
pub fn config_space(mac: MacAddr, max_pairs: u16, mtu: u16) -> Vec<u8> {
    let mut c = vec![0u8; CFG_LEN];
    c[CFG_MAC..CFG_MAC + 6].copy_from_slice(&mac.0);
    c[CFG_STATUS..CFG_STATUS + 2].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
    c[CFG_MAX_PAIRS..CFG_MAX_PAIRS + 2].copy_from_slice(&max_pairs.to_le_bytes());
    c[CFG_MTU..CFG_MTU + 2].copy_from_slice(&mtu.to_le_bytes());
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let mut o = NetOptions::new("tap0");
        assert!(o.validate().is_ok());
        o.queue_pairs = 0;
        assert_eq!(o.validate(), Err(OptionsError::QueuePairs(0)));
        o.queue_pairs = 257;
        assert!(o.validate().is_err());
        o.queue_pairs = 256;
        o.mtu = Some(67);
        assert!(o
            .validate()
            .unwrap_err()
            .to_string()
            .contains("MTU 67 is impossible"));
        o.mtu = Some(65522);
        assert!(o.validate().is_err());
        o.mtu = Some(9000);
        assert!(o.validate().is_ok());
        o.queue_size = 100;
        assert!(o.validate().is_err());
    }

    #[test]
    fn layout() {
        let c = config_space(MacAddr([2, 1, 2, 3, 4, 5]), 4, 9000);
        assert_eq!(c, [2, 1, 2, 3, 4, 5, 1, 0, 4, 0, 0x28, 0x23]);
    }
}
