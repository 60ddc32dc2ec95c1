//! Receive: packets from one TAP queue into the host's buffers of one receive queue.
//!
//! A packet is read from the TAP (header and frame, in one `read`) into this path's reusable
//! buffer, checked ([`fit_rx`]: it must suit the driver's current offloads), passed through the
//! receive filter, then copied into host buffers with [`ChainWriter`]s: that copy is the only
//! one we make (the TAP's `read` is the kernel handing us the packet). With MRG_RXBUF a packet
//! may span several buffers (chains): they are collected until they hold it, filled
//! completely except the last, `num_buffers` is set in the header, and all used elements of
//! the packets of one pass are published together with one `used.idx` store, so the driver
//! never sees part of a packet ([`Queue::add_used_many`]). Without MRG_RXBUF a packet must fit
//! in one chain.
//!
//! Bad input never blocks or corrupts the stream: a packet larger than the host's buffers can
//! hold (one chain without MRG_RXBUF; every buffer of the ring with it) is dropped and
//! counted, and the buffers stay for the next packet; it is never truncated into the next one.
//! When the host has no buffers the packet waits here, reading from this TAP queue stops (the
//! TAP's own queue then fills and the endpoint's kernel drops), and nothing else waits: the
//! device is told [`RxOutcome::NoBuffers`] and resumes on the next notification of this queue.
//!
//! No allocation per packet: the packet buffer, the chains and the used-element list are
//! sized once (at construction and activation) and reused.

use super::filter::RxFilter;
use super::header::{fit_rx, set_num_buffers, ETH_HLEN, HDR_LEN};
use super::stats::{add, PairCounters};
use super::tap::Tap;
use epf_device::{DescriptorChain, DeviceError, Queue};
use epf_epc::HostMemory;

/// Packet buffer: header plus the largest frame a TAP hands out (a 64 KiB segment or a
/// 65521-byte MTU frame, plus Ethernet and VLAN headers).
pub const PKT_BUF: usize = HDR_LEN + 65536 + 1024;

/// Why a receive pass stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOutcome {
    /// The TAP queue is empty: wait until it is readable.
    Drained,
    /// A packet waits for host buffers: wait for a notification of the receive queue.
    NoBuffers,
    /// The pass used its budget with more possibly queued: come back soon.
    Budget,
    /// The TAP queue failed (e.g. the TAP was deleted); logged.
    Failed,
}

/// What a receive pass works with.
pub struct RxEnv<'a> {
    pub tap: &'a Tap,
    /// The TAP queue (= queue pair) to read.
    pub pair: usize,
    /// Virtqueue index, for errors.
    pub queue_index: usize,
    pub mem: &'a dyn HostMemory,
    pub filter: &'a RxFilter,
    /// Receive offloads in effect (feature bits).
    pub offloads: u64,
    /// VIRTIO_NET_F_MRG_RXBUF negotiated.
    pub mrg: bool,
    pub counters: &'a PairCounters,
}

enum Gather {
    /// The first `k` held chains hold the packet.
    Ready(usize),
    /// No number of host buffers can hold it.
    Oversize,
    NoBuffers,
}

/// The receive state of one queue pair.
pub struct RxPath {
    buf: Box<[u8]>,
    /// Length of the packet in `buf` waiting for buffers (0: none).
    pending: usize,
    pending_gso: bool,
    /// Popped chains not yet used: `chains[..held]`, holding `held_bytes`.
    chains: Vec<DescriptorChain>,
    held: usize,
    held_bytes: u64,
    /// Used elements of this pass, published together.
    used: Vec<(u16, u32)>,
}

impl Default for RxPath {
    fn default() -> Self {
        Self::new()
    }
}

impl RxPath {
    pub fn new() -> Self {
        RxPath {
            buf: vec![0u8; PKT_BUF].into_boxed_slice(),
            pending: 0,
            pending_gso: false,
            chains: Vec::new(),
            held: 0,
            held_bytes: 0,
            used: Vec::new(),
        }
    }

    /// Forgets the packet and chains of the previous driver.
    pub fn reset(&mut self) {
        self.pending = 0;
        self.held = 0;
        self.held_bytes = 0;
        self.used.clear();
    }

    /// Sizes the chain pool and used list for a receive queue of `size` entries (allocates
    /// only when it grows).
    pub fn prepare(&mut self, size: u16) {
        self.reset();
        let n = usize::from(size);
        if self.chains.len() < n {
            self.chains.resize_with(n, DescriptorChain::default);
        }
        self.used.reserve(n);
    }

    /// Moves packets from the TAP queue into `q` until the TAP is empty, the host has no more
    /// buffers, or `budget` packets were read.
    pub fn run(
        &mut self,
        q: &mut Queue,
        env: &RxEnv<'_>,
        budget: usize,
    ) -> Result<RxOutcome, DeviceError> {
        let r = self.pass(q, env, budget);
        // Publish what was delivered even if the pass failed later.
        let f = self.flush(q, env.queue_index);
        let out = r?;
        f?;
        Ok(out)
    }

    fn flush(&mut self, q: &mut Queue, qi: usize) -> Result<(), DeviceError> {
        if !self.used.is_empty() {
            q.add_used_many(&self.used)
                .map_err(DeviceError::queue(qi))?;
            self.used.clear();
        }
        Ok(())
    }

    fn pass(
        &mut self,
        q: &mut Queue,
        env: &RxEnv<'_>,
        budget: usize,
    ) -> Result<RxOutcome, DeviceError> {
        let c = env.counters;
        let mut reads = 0;
        loop {
            if self.pending == 0 {
                if reads >= budget {
                    return Ok(RxOutcome::Budget);
                }
                let n = match env.tap.read(env.pair, &mut self.buf) {
                    Ok(0) => {
                        log::warn!(
                            "net: TAP {} queue {} returned end of file",
                            env.tap.name(),
                            env.pair
                        );
                        return Ok(RxOutcome::Failed);
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        return Ok(RxOutcome::Drained)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::error!(
                            "net: reading TAP {} queue {} failed: {e}",
                            env.tap.name(),
                            env.pair
                        );
                        return Ok(RxOutcome::Failed);
                    }
                };
                reads += 1;
                if n > self.buf.len() {
                    // The TAP reports the full length of a packet it had to truncate.
                    add(&c.rx_oversize, 1);
                    continue;
                }
                if n < HDR_LEN + ETH_HLEN {
                    add(&c.rx_bad, 1);
                    continue;
                }
                let Some(h) = fit_rx(&mut self.buf[..n], env.offloads) else {
                    add(&c.rx_bad, 1);
                    continue;
                };
                if !env.filter.accepts(&self.buf[HDR_LEN..n]) {
                    add(&c.rx_filtered, 1);
                    continue;
                }
                self.pending = n;
                self.pending_gso = h.is_gso();
            }
            match self.gather(q, env)? {
                Gather::Ready(k) => self.deliver(k, q, env)?,
                Gather::Oversize => {
                    add(&c.rx_oversize, 1);
                    self.pending = 0;
                }
                Gather::NoBuffers => {
                    add(&c.rx_no_buffers, 1);
                    return Ok(RxOutcome::NoBuffers);
                }
            }
        }
    }

    /// Pops chains until the held ones can take the pending packet.
    fn gather(&mut self, q: &mut Queue, env: &RxEnv<'_>) -> Result<Gather, DeviceError> {
        let need = self.pending as u64;
        let qi = env.queue_index;
        loop {
            if self.held > 0 && self.held_bytes >= need {
                let mut k = 0;
                let mut sum = 0u64;
                while sum < need {
                    sum += self.chains[k].writable_len();
                    k += 1;
                }
                return Ok(Gather::Ready(k));
            }
            if (!env.mrg && self.held >= 1) || self.held >= usize::from(q.size()) {
                return Ok(Gather::Oversize);
            }
            if self.held >= self.chains.len() {
                // Not prepared for this queue size (cannot happen after `prepare`).
                self.chains.push(DescriptorChain::default());
            }
            if !q
                .pop(&mut self.chains[self.held])
                .map_err(DeviceError::queue(qi))?
            {
                if q.enable_notification().map_err(DeviceError::queue(qi))? {
                    continue;
                }
                return Ok(Gather::NoBuffers);
            }
            let w = self.chains[self.held].writable_len();
            if w < HDR_LEN as u64 {
                return Err(DeviceError::Protocol(format!(
                    "receive queue {qi}: buffer of {w} bytes cannot hold the {HDR_LEN}-byte virtio-net header"
                )));
            }
            self.held += 1;
            self.held_bytes += w;
        }
    }

    /// Copies the pending packet into the first `k` held chains.
    fn deliver(&mut self, k: usize, q: &mut Queue, env: &RxEnv<'_>) -> Result<(), DeviceError> {
        let qi = env.queue_index;
        let n = self.pending;
        set_num_buffers(&mut self.buf, if env.mrg { k as u16 } else { 1 });
        if self.used.len() + k > self.used.capacity() {
            self.flush(q, qi)?;
        }
        let mut pos = 0;
        let mut taken = 0u64;
        for chain in &self.chains[..k] {
            let mut w = chain.writer(env.mem);
            let len = (n - pos).min(w.remaining());
            w.write_all(&self.buf[pos..pos + len])
                .map_err(DeviceError::queue(qi))?;
            self.used.push((chain.head(), len as u32));
            taken += chain.writable_len();
            pos += len;
        }
        self.chains[..self.held].rotate_left(k);
        self.held -= k;
        self.held_bytes -= taken;
        self.pending = 0;
        let c = env.counters;
        add(&c.rx_packets, 1);
        add(&c.rx_bytes, (n - HDR_LEN) as u64);
        add(&c.rx_buffers, k as u64);
        if self.pending_gso {
            add(&c.rx_gso, 1);
        }
        Ok(())
    }
}
