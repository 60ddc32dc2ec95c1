//! The virtio-net device: queue layout, activation and reset, and the scheduling of the
//! receive, transmit and control work on the worker thread.
//!
//! Queues: receiveq *p* is `2p`, transmitq *p* is `2p+1`, the control queue is `2N` where N is
//! `max_virtqueue_pairs` with MQ negotiated and 1 without. Queue pair *p* is TAP queue *p*.
//! Only the pairs the driver enabled with VQ_PAIRS_SET (1 after activation) receive: the other
//! TAP queues are detached, so the endpoint's kernel spreads flows over the ones in use only.
//!
//! Nothing here blocks. Work arrives three ways:
//! * a notification of a transmit queue: transmit; then read whatever the TAP already has for
//!   that pair (typically the replies), which saves a trip through the poller;
//! * a notification of a receive queue: only matters if that pair waits for buffers;
//! * a wake-up from the poller (a TAP queue became readable or writable) or from ourselves
//!   (a pass stopped at its budget so other queues get their turn).
//!
//! After each pass a pair's TAP queue is re-armed for what it waits for: input unless its host
//! has no receive buffers, output if the TAP refused a packet. Pairs are independent: a full
//! TAP queue or a host that stops posting receive buffers stalls only that pair and direction.

use super::config::{config_space, NetOptions, OptionsError, MAX_MTU, MIN_MTU};
use super::ctrl::{self, CtrlAction, CtrlError};
use super::features::{self, has, tun_offloads, GUEST_OFFLOADS};
use super::filter::RxFilter;
use super::mac::MacAddr;
use super::poller::Poller;
use super::rx::{RxEnv, RxOutcome, RxPath};
use super::stats::{add, NetCounters};
use super::tap::{Tap, TapError};
use super::tx::{TxEnv, TxOutcome, TxPath};
use epf_device::{CounterSource, DescriptorChain, DeviceContext, DeviceError, VirtioDevice, Waker};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use thiserror::Error;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_ERR, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_OK,
};

/// Packets one receive pass reads at most, chains one transmit pass takes at most.
const RX_BUDGET: usize = 256;
const TX_BUDGET: usize = 256;

/// Why the device could not be created (one line each).
#[derive(Debug, Error)]
pub enum NetError {
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("cannot start the TAP poller thread: {0}")]
    Poller(#[source] std::io::Error),
}

/// What a receive queue waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum RxWait {
    /// Packets on the TAP queue (armed for input).
    #[default]
    Tap,
    /// Buffers from the host (a packet is pending).
    Buffers,
}

/// Scheduling state of one queue pair.
#[derive(Debug, Clone, Copy, Default)]
struct PairState {
    /// What the TAP queue is armed for in the poller (input, output), as far as we know: an
    /// event disarms it.
    armed: (bool, bool),
    rx_wait: RxWait,
    /// A receive / transmit pass stopped at its budget: a wake-up is pending.
    rx_more: bool,
    tx_more: bool,
    /// The TAP refused a packet for lack of room: armed for output.
    tx_blocked: bool,
    /// The TAP queue failed; it is no longer read.
    failed: bool,
}

/// A virtio-net device whose wire is a TAP device.
pub struct NetDevice {
    // Declared before `tap`: the poller thread stops before the descriptors close.
    poller: Poller,
    tap: Tap,
    mac: MacAddr,
    mtu: u16,
    max_pairs: u16,
    queue_size: u16,
    counters: Arc<NetCounters>,
    // State tied to the current driver.
    active: bool,
    features: u64,
    /// Receive offloads in effect (feature bits).
    offloads: u64,
    pairs_in_use: u16,
    ctrl_queue: usize,
    filter: RxFilter,
    waker: Option<Waker>,
    pair: Vec<PairState>,
    rx: Vec<RxPath>,
    tx: TxPath,
    ctrl_chain: DescriptorChain,
}

impl NetDevice {
    /// Validates `opts`, attaches to the TAP and starts the poller.
    pub fn new(opts: &NetOptions) -> Result<NetDevice, NetError> {
        opts.validate()?;
        let tap = Tap::open(&opts.tap, opts.queue_pairs)?;
        let tap_mtu = tap.mtu().ok();
        let mtu = match opts.mtu {
            Some(m) => m,
            None => tap_mtu.unwrap_or(1500).clamp(MIN_MTU, MAX_MTU),
        };
        if let Some(t) = tap_mtu.filter(|&t| t < mtu) {
            log::warn!(
                "net: TAP {} has MTU {t}, less than the {mtu} offered to the host: frames from the endpoint side stay at most {t} bytes",
                opts.tap
            );
        }
        let mac = opts.mac.unwrap_or_else(|| MacAddr::derived(&opts.tap));
        let fds: Vec<_> = (0..tap.queues()).map(|i| tap.fd(i)).collect();
        let poller = Poller::start(&fds).map_err(NetError::Poller)?;
        let pairs = usize::from(opts.queue_pairs);
        log::info!(
            "net: TAP {} ({} queue(s){}), MAC {mac}, MTU {mtu}",
            opts.tap,
            tap.queues(),
            if tap.is_multi_queue() {
                ", multi-queue"
            } else {
                ""
            }
        );
        Ok(NetDevice {
            poller,
            tap,
            mac,
            mtu: mtu as u16,
            max_pairs: opts.queue_pairs,
            queue_size: opts.queue_size,
            counters: Arc::new(NetCounters::new(&opts.tap, opts.queue_pairs)),
            active: false,
            features: 0,
            offloads: 0,
            pairs_in_use: 0,
            ctrl_queue: 2,
            filter: RxFilter::new(mac),
            waker: None,
            pair: vec![PairState::default(); pairs],
            rx: (0..pairs).map(|_| RxPath::new()).collect(),
            tx: TxPath::new(),
            ctrl_chain: DescriptorChain::default(),
        })
    }

    /// The counters, to print while the device runs on the worker.
    pub fn counters(&self) -> Arc<NetCounters> {
        self.counters.clone()
    }

    /// The station address offered.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    fn wake_self(&self) {
        if let Some(w) = &self.waker {
            w.wake();
        }
    }

    /// Sets the TAP's offloads for the receive offloads `offloads`.
    fn apply_offloads(&mut self, offloads: u64) -> std::io::Result<()> {
        let t = tun_offloads(offloads);
        self.tap.set_offload(t)?;
        self.offloads = offloads;
        self.counters
            .tap_offloads
            .store(u64::from(t), Ordering::Relaxed);
        Ok(())
    }

    /// Arms pair `p`'s TAP queue for what it waits for now, if that changed.
    fn arm(&mut self, p: usize) {
        let s = self.pair[p];
        let input = !s.failed
            && p < usize::from(self.pairs_in_use)
            && s.rx_wait == RxWait::Tap
            && !s.rx_more;
        let want = (input, s.tx_blocked && !s.failed);
        if want != s.armed {
            self.poller.arm(p, want.0, want.1);
            self.pair[p].armed = want;
        }
    }

    /// Stops watching pair `p`'s TAP queue for input while we read it ourselves (a transmit
    /// pass is followed by a read of the replies): a reply landing during the pass then does
    /// not wake the poller and, through it, the worker a second time.
    fn quiet(&mut self, p: usize) {
        let s = self.pair[p];
        if s.armed.0 {
            self.poller.arm(p, false, s.armed.1);
            self.pair[p].armed.0 = false;
        }
    }

    fn service_rx(&mut self, p: usize, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        if self.pair[p].failed {
            return Ok(());
        }
        let mem = ctx.memory().clone();
        let Some(q) = ctx.try_queue(2 * p) else {
            return Ok(());
        };
        let env = RxEnv {
            tap: &self.tap,
            pair: p,
            queue_index: 2 * p,
            mem: mem.as_ref(),
            filter: &self.filter,
            offloads: self.offloads,
            mrg: has(self.features, VIRTIO_NET_F_MRG_RXBUF),
            counters: &self.counters.pairs[p],
        };
        let out = self.rx[p].run(q, &env, RX_BUDGET)?;
        let s = &mut self.pair[p];
        s.rx_more = false;
        match out {
            RxOutcome::Drained => s.rx_wait = RxWait::Tap,
            RxOutcome::NoBuffers => s.rx_wait = RxWait::Buffers,
            RxOutcome::Budget => {
                s.rx_wait = RxWait::Tap;
                s.rx_more = true;
                self.wake_self();
            }
            RxOutcome::Failed => s.failed = true,
        }
        Ok(())
    }

    fn service_tx(&mut self, p: usize, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        let mem = ctx.memory().clone();
        let Some(q) = ctx.try_queue(2 * p + 1) else {
            return Ok(());
        };
        // A pair no longer in use has its TAP queue detached: send its last packets through
        // queue 0, without waiting for room there.
        let in_use = p < usize::from(self.pairs_in_use);
        let env = TxEnv {
            tap: &self.tap,
            tap_queue: if in_use { p } else { 0 },
            queue_index: 2 * p + 1,
            mem: mem.as_ref(),
            features: self.features,
            drop_if_blocked: !in_use,
            counters: &self.counters.pairs[p],
        };
        let out = self.tx.run(q, &env, TX_BUDGET)?;
        let s = &mut self.pair[p];
        s.tx_more = false;
        match out {
            TxOutcome::Empty => s.tx_blocked = false,
            TxOutcome::Blocked => s.tx_blocked = true,
            TxOutcome::Budget => {
                s.tx_blocked = false;
                s.tx_more = true;
                self.wake_self();
            }
        }
        Ok(())
    }

    /// Switches the TAP to `n` queue pairs: detaches the queues of pairs no longer used and
    /// attaches the others. Returns the previous count, for [`start_pairs`](Self::start_pairs).
    fn switch_pairs(&mut self, n: u16) -> Result<u16, DeviceError> {
        let old = self.pairs_in_use;
        for p in 0..usize::from(self.max_pairs) {
            let want = p < usize::from(n);
            self.tap
                .set_queue_enabled(p, want)
                .map_err(DeviceError::backend(format!(
                    "cannot {} TAP queue {p}",
                    if want { "attach" } else { "detach" }
                )))?;
        }
        self.pairs_in_use = n;
        self.counters
            .active_pairs
            .store(u64::from(n), Ordering::Relaxed);
        for p in usize::from(n)..usize::from(self.max_pairs) {
            let s = &mut self.pair[p];
            s.rx_more = false;
            s.rx_wait = RxWait::Tap;
            self.arm(p);
        }
        Ok(old)
    }

    /// Starts receiving on the pairs from `old` up to the number in use (reads what their TAP
    /// queues hold, then arms them).
    fn start_pairs(&mut self, old: u16, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        for p in usize::from(old)..usize::from(self.pairs_in_use) {
            self.pair[p].rx_wait = RxWait::Tap;
            self.service_rx(p, ctx)?;
            self.arm(p);
        }
        Ok(())
    }

    /// Serves the control queue.
    fn control(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        let mem = ctx.memory().clone();
        let qi = self.ctrl_queue;
        loop {
            let Some(q) = ctx.try_queue(qi) else {
                return Ok(());
            };
            if !q
                .pop(&mut self.ctrl_chain)
                .map_err(DeviceError::queue(qi))?
            {
                return Ok(());
            }
            let res = {
                let mut r = self.ctrl_chain.reader(mem.as_ref());
                ctrl::handle(&mut r, self.features, self.max_pairs, &mut self.filter)
            };
            let ok = match res {
                Ok(CtrlAction::Done) => true,
                Ok(CtrlAction::SetPairs(n)) => match self.switch_pairs(n) {
                    Ok(old) => {
                        self.start_pairs(old, ctx)?;
                        true
                    }
                    Err(e) => {
                        log::warn!("net: {e}");
                        false
                    }
                },
                Ok(CtrlAction::SetOffloads(v)) => match self.apply_offloads(v) {
                    Ok(()) => true,
                    Err(e) => {
                        log::warn!("net: TUNSETOFFLOAD on TAP {} failed: {e}", self.tap.name());
                        false
                    }
                },
                Err(CtrlError::Queue(error)) => {
                    return Err(DeviceError::Queue { queue: qi, error })
                }
                Err(e) => {
                    log::info!("net: control command refused: {e}");
                    false
                }
            };
            let c = &self.counters;
            c.promisc.store(self.filter.promisc, Ordering::Relaxed);
            c.allmulti.store(self.filter.allmulti, Ordering::Relaxed);
            let ack = if ok { VIRTIO_NET_OK } else { VIRTIO_NET_ERR } as u8;
            let mut w = self.ctrl_chain.writer(mem.as_ref());
            let len = if w.remaining() > 0 {
                w.write_all(&[ack]).map_err(DeviceError::queue(qi))?;
                1
            } else {
                log::info!("net: control command without room for its ack");
                0
            };
            add(
                if ok && len == 1 {
                    &c.ctrl_ok
                } else {
                    &c.ctrl_err
                },
                1,
            );
            let head = self.ctrl_chain.head();
            if let Some(q) = ctx.try_queue(qi) {
                q.add_used(head, len).map_err(DeviceError::queue(qi))?;
            }
        }
    }
}

impl VirtioDevice for NetDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn device_features(&self) -> u64 {
        features::offered(self.max_pairs)
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![self.queue_size; 2 * usize::from(self.max_pairs) + 1]
    }

    fn initial_config(&self) -> Vec<u8> {
        config_space(self.mac, self.max_pairs, self.mtu)
    }

    fn activate(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        self.reset();
        self.features = ctx.features();
        self.ctrl_queue = if has(self.features, VIRTIO_NET_F_MQ) {
            2 * usize::from(self.max_pairs)
        } else {
            2
        };
        self.apply_offloads(self.features & GUEST_OFFLOADS)
            .map_err(DeviceError::backend(format!(
                "TUNSETOFFLOAD on TAP {}",
                self.tap.name()
            )))?;
        let w = ctx.waker();
        self.poller.set_waker(w.clone());
        self.waker = Some(w);
        for p in 0..usize::from(self.max_pairs) {
            let size = ctx.try_queue(2 * p).map_or(0, |q| q.size());
            self.rx[p].prepare(size);
        }
        self.active = true;
        let old = self.switch_pairs(1)?;
        self.start_pairs(old, ctx)
    }

    fn queue_notify(&mut self, q: usize, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        if !self.active {
            return Ok(());
        }
        if q == self.ctrl_queue {
            return self.control(ctx);
        }
        let p = q / 2;
        if p >= usize::from(self.max_pairs) {
            return Ok(());
        }
        let in_use = p < usize::from(self.pairs_in_use);
        if q % 2 == 0 {
            if in_use && self.pair[p].rx_wait == RxWait::Buffers {
                self.service_rx(p, ctx)?;
                self.arm(p);
            }
        } else {
            if in_use {
                self.quiet(p);
            }
            self.service_tx(p, ctx)?;
            if in_use {
                let s = self.pair[p];
                if s.rx_wait == RxWait::Tap && !s.rx_more {
                    self.service_rx(p, ctx)?;
                }
                self.arm(p);
            }
        }
        Ok(())
    }

    fn wake(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        if !self.active {
            return Ok(());
        }
        for p in 0..usize::from(self.max_pairs) {
            let readable = self.poller.take_readable(p);
            let writable = self.poller.take_writable(p);
            if readable || writable {
                // The event disarmed the queue.
                self.pair[p].armed = (false, false);
            }
            let s = self.pair[p];
            let in_use = p < usize::from(self.pairs_in_use);
            let mut touched = false;
            if s.tx_more || (writable && s.tx_blocked) {
                self.service_tx(p, ctx)?;
                touched = true;
            }
            let s = self.pair[p];
            if in_use && (readable || s.rx_more) && s.rx_wait == RxWait::Tap {
                self.service_rx(p, ctx)?;
                touched = true;
            }
            if touched || readable || writable {
                self.arm(p);
            }
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.active = false;
        self.features = 0;
        self.pairs_in_use = 0;
        self.ctrl_queue = 2;
        if let Err(e) = self.apply_offloads(0) {
            log::warn!("net: TUNSETOFFLOAD on TAP {} failed: {e}", self.tap.name());
        }
        self.filter = RxFilter::new(self.mac);
        for (p, (s, rx)) in self.pair.iter_mut().zip(&mut self.rx).enumerate() {
            if s.armed != (false, false) {
                self.poller.arm(p, false, false);
            }
            *s = PairState::default();
            rx.reset();
        }
        let c = &self.counters;
        c.active_pairs.store(0, Ordering::Relaxed);
        c.promisc.store(true, Ordering::Relaxed);
        c.allmulti.store(false, Ordering::Relaxed);
    }

    fn stats(&self) -> Option<Arc<dyn CounterSource>> {
        Some(self.counters.clone())
    }
}
