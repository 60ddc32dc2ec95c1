//! Transmit: chains of one transmit queue to one TAP queue.
//!
//! Each chain's readable part (header plus frame) is copied out of host memory with a
//! [`ChainReader`] into this path's reusable buffer — the one copy we make — checked
//! ([`check_tx`]), and handed to the TAP in one `write`. Used elements have length 0.
//!
//! Bad input is dropped and counted, and the chain completed, so the ring keeps moving: a
//! chain larger than any packet, a malformed header, a packet the TAP refuses. A TAP that has
//! no room (`EAGAIN`) leaves the chain in the ring ([`Queue::undo_pop`]) and the path reports
//! [`TxOutcome::Blocked`]: the device waits for the TAP queue to become writable, and nothing
//! else waits for it.

use super::header::{check_tx, HDR_LEN};
use super::stats::{add, PairCounters};
use super::tap::Tap;
use epf_device::{DescriptorChain, DeviceError, Queue};
use epf_epc::HostMemory;
use std::sync::atomic::Ordering;

/// Largest chain we transmit: header plus a 64 KiB segment plus Ethernet and VLAN headers.
pub const TX_BUF: usize = HDR_LEN + 65536 + 1024;

/// Why a transmit pass stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxOutcome {
    /// The ring is empty (notifications re-enabled).
    Empty,
    /// The TAP has no room; the chain stays in the ring.
    Blocked,
    /// The pass used its budget; more chains may wait.
    Budget,
}

/// What a transmit pass works with.
pub struct TxEnv<'a> {
    pub tap: &'a Tap,
    /// The TAP queue to write.
    pub tap_queue: usize,
    /// Virtqueue index, for errors.
    pub queue_index: usize,
    pub mem: &'a dyn HostMemory,
    /// Negotiated features.
    pub features: u64,
    /// Drop a packet the TAP has no room for instead of waiting (for a queue pair no longer
    /// in use, whose TAP queue is not watched).
    pub drop_if_blocked: bool,
    pub counters: &'a PairCounters,
}

/// Transmit state: one buffer and one chain, shared by all queue pairs (passes do not overlap).
pub struct TxPath {
    buf: Box<[u8]>,
    chain: DescriptorChain,
}

impl Default for TxPath {
    fn default() -> Self {
        Self::new()
    }
}

impl TxPath {
    pub fn new() -> Self {
        TxPath {
            buf: vec![0u8; TX_BUF].into_boxed_slice(),
            chain: DescriptorChain::default(),
        }
    }

    /// Transmits chains from `q` until it is empty, the TAP has no room, or `budget` chains
    /// were taken.
    pub fn run(
        &mut self,
        q: &mut Queue,
        env: &TxEnv<'_>,
        budget: usize,
    ) -> Result<TxOutcome, DeviceError> {
        let qi = env.queue_index;
        let c = env.counters;
        q.disable_notification().map_err(DeviceError::queue(qi))?;
        let mut done = 0;
        loop {
            if done >= budget {
                return Ok(TxOutcome::Budget);
            }
            if !q.pop(&mut self.chain).map_err(DeviceError::queue(qi))? {
                if q.enable_notification().map_err(DeviceError::queue(qi))? {
                    continue;
                }
                return Ok(TxOutcome::Empty);
            }
            done += 1;
            let head = self.chain.head();
            let len = self.chain.readable_len();
            if len > self.buf.len() as u64 {
                add(&c.tx_oversize, 1);
                q.add_used(head, 0).map_err(DeviceError::queue(qi))?;
                continue;
            }
            let len = len as usize;
            self.chain
                .reader(env.mem)
                .read_exact(&mut self.buf[..len])
                .map_err(DeviceError::queue(qi))?;
            let h = match check_tx(&self.buf[..len], env.features) {
                Ok(h) => h,
                Err(e) => {
                    log::debug!("net: transmit queue {qi}: dropping packet: {e}");
                    add(&c.tx_malformed, 1);
                    q.add_used(head, 0).map_err(DeviceError::queue(qi))?;
                    continue;
                }
            };
            loop {
                match env.tap.write(env.tap_queue, &self.buf[..len]) {
                    Ok(_) => {
                        let frame = (len - HDR_LEN) as u64;
                        add(&c.tx_packets, 1);
                        add(&c.tx_bytes, frame);
                        if h.is_gso() {
                            add(&c.tx_gso, 1);
                        }
                        c.tx_max_frame.fetch_max(frame, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock && !env.drop_if_blocked =>
                    {
                        add(&c.tx_blocked, 1);
                        q.undo_pop();
                        return Ok(TxOutcome::Blocked);
                    }
                    Err(e) => {
                        log::debug!(
                            "net: TAP {} refused a {len}-byte packet: {e}",
                            env.tap.name()
                        );
                        add(&c.tx_errors, 1);
                    }
                }
                break;
            }
            q.add_used(head, 0).map_err(DeviceError::queue(qi))?;
        }
    }
}
