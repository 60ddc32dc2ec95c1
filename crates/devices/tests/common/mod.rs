//! Shared fixtures of the devices' loopback tests: a rig running the real
//! [`VirtioPciFunction`] on the loopback controller, a watchdog bounding every test in time,
//! a deterministic PRNG, and in-memory console backends (channel-fed input, channel-draining
//! output that can stall).

#![allow(dead_code)]

use epf_device::VirtioDevice;
use epf_devices::console::Backend;
use epf_loopback::host_driver::spec::*;
use epf_loopback::host_driver::{HostQueue, VirtioPciDriver};
use epf_loopback::{HostBus, LoopbackOptions};
// Each test binary uses a subset of the shared fixtures.
#[allow(unused_imports)]
pub use epf_virtio_pci::testing::{bounded, wait_until, Rig};
use std::io::{Read, Write};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(5);
pub const CONFIG_VECTOR: u16 = 0;
pub const NEEDS_RESET: u8 = STATUS_DEVICE_NEEDS_RESET;
pub const ALL_FEATURES: u64 = u64::MAX;
/// VIRTIO_F_RING_PACKED (offered by default on the modern layout).
pub const RING_PACKED: u64 = 1 << 34;
/// Everything offered but packed rings: for tests that write or inspect split-ring fields
/// with the host driver's raw helpers.
pub const SPLIT_FEATURES: u64 = ALL_FEATURES & !RING_PACKED;
pub const NO_RING_FEATURES: u64 = 0;

/// The devices' rig: the function on a loopback host with 64 MiB of RAM (room for the
/// mebibyte transfers).
pub fn rig(device: Box<dyn VirtioDevice>) -> Rig {
    Rig::with_options(LoopbackOptions::default().with_ram_size(64 << 20), device)
}

/// xorshift64*: deterministic test data and choices without extra dependencies.
#[derive(Clone)]
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        Prng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Resets (write 0, poll 0), negotiates `features`, sets the config vector, sets up
/// `queues` as (index, size, vector) with fresh rings, and sets DRIVER_OK. MSI-X must have
/// been enabled by the caller if vectors are used.
pub fn bring_up(
    drv: &mut VirtioPciDriver,
    features: u64,
    queues: &[(u16, Option<u16>, Option<u16>)],
) -> Vec<HostQueue> {
    drv.init(features).unwrap();
    drv.set_config_vector(CONFIG_VECTOR).unwrap();
    let qs = queues
        .iter()
        .map(|&(i, size, vector)| drv.setup_queue(i, size, vector).unwrap())
        .collect();
    drv.driver_ok();
    qs
}

/// Waits for the next used buffer on `q`, requiring an MSI-X message on its vector when
/// nothing is pending yet: a lost interrupt fails instead of being papered over by polling.
pub fn wait_used_strict(bus: &HostBus, q: &mut HostQueue) -> (u16, u32) {
    let v = q.msix_vector().expect("strict waits need an MSI-X vector");
    loop {
        if let Some(u) = q.get_used().unwrap() {
            return u;
        }
        assert!(
            bus.wait_msix(v, WAIT),
            "no interrupt on vector {v} while a used buffer is outstanding (queue {})",
            q.index()
        );
    }
}

/// Writes a whole descriptor table (addr, len, flags, next) at `at` in one host write.
pub fn write_table(bus: &HostBus, at: u64, descs: &[(u64, u32, u16, u16)]) {
    let mut raw = Vec::with_capacity(descs.len() * 16);
    for &(addr, len, flags, next) in descs {
        raw.extend_from_slice(&addr.to_le_bytes());
        raw.extend_from_slice(&len.to_le_bytes());
        raw.extend_from_slice(&flags.to_le_bytes());
        raw.extend_from_slice(&next.to_le_bytes());
    }
    bus.ram_write(at, &raw).unwrap();
}

// ---- Console backends -----------------------------------------------------------------------

/// Console input read from a channel; end of file when every sender is gone.
pub struct ChanInput {
    rx: Receiver<Vec<u8>>,
    pending: Vec<u8>,
    pos: usize,
}

impl Read for ChanInput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.pending.len() {
            match self.rx.recv() {
                Ok(v) => {
                    self.pending = v;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A gate a stalled writer waits at.
#[derive(Default)]
pub struct Gate {
    closed: Mutex<bool>,
    cond: Condvar,
}

impl Gate {
    pub fn closed() -> Arc<Gate> {
        Arc::new(Gate {
            closed: Mutex::new(true),
            cond: Condvar::new(),
        })
    }

    pub fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.cond.notify_all();
    }

    pub fn close(&self) {
        *self.closed.lock().unwrap() = true;
    }

    fn pass(&self) {
        let mut g = self.closed.lock().unwrap();
        while *g {
            g = self.cond.wait(g).unwrap();
        }
    }
}

/// How the output writer misbehaves.
#[derive(Clone, Default)]
pub struct Stall {
    /// Sleep `sleep` every `every` bytes (0: never).
    pub every: usize,
    pub sleep: Duration,
    /// Accept at most this many bytes per write call (0: all): short writes.
    pub max_write: usize,
    /// Every write waits here first (a writer that blocks entirely while it is closed).
    pub gate: Option<Arc<Gate>>,
}

/// Console output forwarded into a channel.
pub struct ChanOutput {
    tx: Sender<Vec<u8>>,
    stall: Stall,
    since_sleep: usize,
}

impl Write for ChanOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(g) = &self.stall.gate {
            g.pass();
        }
        let mut n = buf.len();
        if self.stall.max_write > 0 {
            n = n.min(self.stall.max_write);
        }
        if self.stall.every > 0 {
            n = n.min(self.stall.every - self.since_sleep);
        }
        let _ = self.tx.send(buf[..n].to_vec());
        if self.stall.every > 0 {
            self.since_sleep += n;
            if self.since_sleep == self.stall.every {
                self.since_sleep = 0;
                std::thread::sleep(self.stall.sleep);
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The test's ends of an in-memory console backend.
pub struct ConsoleEnds {
    /// Feed backend input (towards the host).
    pub input: Sender<Vec<u8>>,
    /// Backend output (from the host), in write order.
    pub output: Receiver<Vec<u8>>,
}

/// An in-memory backend and the test's ends of it.
pub fn chan_backend(stall: Stall) -> (Backend, ConsoleEnds) {
    let (in_tx, in_rx) = channel();
    let (out_tx, out_rx) = channel();
    (
        Backend {
            input: Box::new(ChanInput {
                rx: in_rx,
                pending: Vec::new(),
                pos: 0,
            }),
            output: Box::new(ChanOutput {
                tx: out_tx,
                stall,
                since_sleep: 0,
            }),
        },
        ConsoleEnds {
            input: in_tx,
            output: out_rx,
        },
    )
}

/// Collects `n` bytes of backend output (failing after `timeout`).
pub fn collect_output(rx: &Receiver<Vec<u8>>, n: usize, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) => out.extend_from_slice(&v),
            Err(e) => panic!("backend output: got {} of {n} bytes: {e}", out.len()),
        }
    }
    out
}

/// Whatever backend output arrives within `d`.
pub fn drain_output(rx: &Receiver<Vec<u8>>, d: Duration) -> Vec<u8> {
    let deadline = Instant::now() + d;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) => out.extend_from_slice(&v),
            Err(_) => return out,
        }
    }
}

/// First index where `a` and `b` differ (for readable assertion messages).
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then_some(a.len().min(b.len())))
}

// ---- Host-side buffer pools for streaming queues ---------------------------------------------

/// How a chain's buffer is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One descriptor.
    Single,
    /// Several descriptors (some possibly empty) in the ring's table.
    Multi,
    /// An indirect table.
    Indirect,
}

impl Shape {
    pub fn pick(rng: &mut Prng, indirect: bool) -> Shape {
        match rng.range(0, 2) {
            0 => Shape::Single,
            1 => Shape::Multi,
            _ if indirect => Shape::Indirect,
            _ => Shape::Multi,
        }
    }
}

/// A pool of fixed host-RAM slots backing the chains a queue has outstanding, so that a long
/// stream reuses memory. Each chain gets one slot; its segments lie in the slot with gaps.
pub struct SlotPool {
    pub bus: HostBus,
    slots: Vec<u64>,
    slot_len: u64,
    free: Vec<usize>,
    posted: std::collections::HashMap<u16, (usize, Vec<(u64, u32)>)>,
}

impl SlotPool {
    pub fn new(bus: HostBus, count: usize, max_chain: u32) -> Self {
        let slot_len = u64::from(max_chain) + 8 * 16;
        let slots: Vec<u64> = (0..count)
            .map(|_| bus.alloc(slot_len, 64).unwrap())
            .collect();
        SlotPool {
            bus,
            free: (0..count).rev().collect(),
            slots,
            slot_len,
            posted: Default::default(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.posted.len()
    }

    pub fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    /// The slots' bus addresses and length (e.g. to poison and check them).
    pub fn slots(&self) -> (&[u64], u64) {
        (&self.slots, self.slot_len)
    }

    /// Splits `total` bytes into segments of a free slot according to `shape`.
    fn layout(
        &mut self,
        q: &HostQueue,
        rng: &mut Prng,
        total: u32,
        shape: Shape,
    ) -> (usize, Vec<(u64, u32)>) {
        let slot = self.free.pop().expect("a free slot");
        let base = self.slots[slot];
        let nsegs = match shape {
            Shape::Single => 1,
            Shape::Multi => (rng.range(1, 4) as usize).min(q.num_free() as usize).max(1),
            Shape::Indirect => rng.range(1, 6) as usize,
        };
        let mut cuts: Vec<u32> = (1..nsegs)
            .map(|_| rng.range(0, u64::from(total)) as u32)
            .collect();
        cuts.push(0);
        cuts.push(total);
        cuts.sort_unstable();
        let mut segs = Vec::with_capacity(nsegs);
        let mut at = base + 16;
        for w in cuts.windows(2) {
            segs.push((at, w[1] - w[0]));
            at += u64::from(w[1] - w[0]) + 16;
        }
        assert!(at <= base + self.slot_len);
        (slot, segs)
    }

    fn add(
        &mut self,
        q: &mut HostQueue,
        slot: usize,
        segs: Vec<(u64, u32)>,
        writable: bool,
        shape: Shape,
    ) -> u16 {
        let bufs: Vec<(u64, u32, bool)> = segs.iter().map(|&(a, l)| (a, l, writable)).collect();
        let head = match shape {
            Shape::Indirect => q.add_indirect(&bufs).unwrap(),
            _ => q.add(&bufs).unwrap(),
        };
        assert!(self.posted.insert(head, (slot, segs)).is_none());
        head
    }

    /// Posts `data` as a device-readable chain (transmit).
    pub fn post_readable(
        &mut self,
        q: &mut HostQueue,
        rng: &mut Prng,
        data: &[u8],
        shape: Shape,
    ) -> u16 {
        let (slot, segs) = self.layout(q, rng, data.len() as u32, shape);
        let mut pos = 0;
        for &(a, l) in &segs {
            self.bus.ram_write(a, &data[pos..pos + l as usize]).unwrap();
            pos += l as usize;
        }
        self.add(q, slot, segs, false, shape)
    }

    /// Posts a device-writable chain of `len` bytes (receive), poisoned with `poison`.
    pub fn post_writable(
        &mut self,
        q: &mut HostQueue,
        rng: &mut Prng,
        len: u32,
        shape: Shape,
        poison: u8,
    ) -> u16 {
        let (slot, segs) = self.layout(q, rng, len, shape);
        for &(a, l) in &segs {
            self.bus.ram_write(a, &vec![poison; l as usize]).unwrap();
        }
        self.add(q, slot, segs, true, shape)
    }

    /// Total length of the outstanding chain `head`.
    pub fn capacity(&self, head: u16) -> u32 {
        self.posted
            .get(&head)
            .map_or(0, |(_, segs)| segs.iter().map(|s| s.1).sum())
    }

    /// Completes `head`: returns the first `len` bytes of its buffers (in chain order) and
    /// frees its slot. Panics if `head` is not outstanding or `len` exceeds the chain.
    pub fn complete(&mut self, head: u16, len: u32) -> Vec<u8> {
        let (slot, segs) = self
            .posted
            .remove(&head)
            .unwrap_or_else(|| panic!("used id {head} is not an outstanding head"));
        let cap: u32 = segs.iter().map(|s| s.1).sum();
        assert!(
            len <= cap,
            "used length {len} exceeds the chain's {cap} bytes"
        );
        let mut out = Vec::with_capacity(len as usize);
        let mut left = len as usize;
        for &(a, l) in &segs {
            let n = left.min(l as usize);
            let mut b = vec![0; n];
            self.bus.ram_read(a, &mut b).unwrap();
            out.extend_from_slice(&b);
            left -= n;
        }
        self.free.push(slot);
        out
    }
}

// ---- Streaming through a queue ------------------------------------------------------------------

/// Poison of receive buffers.
pub const RX_POISON: u8 = 0xee;

/// Sends `data` through the transmit queue in chains of random sizes (up to `max_chain`) and
/// shapes, with up to `depth` chains outstanding. Every used length must be 0 (the device
/// writes nothing into transmit buffers).
pub fn transmit(rig: &Rig, q: &mut HostQueue, data: &[u8], s: Stream) {
    let bus = rig.bus();
    let mut pool = SlotPool::new(bus.clone(), s.depth, s.max_chain);
    let mut rng = Prng::new(s.seed);
    let mut sent = 0usize;
    loop {
        let mut added = false;
        while sent < data.len() && pool.has_free() && q.num_free() > 0 {
            let n = (rng.range(1, u64::from(s.max_chain)) as usize).min(data.len() - sent);
            let shape = Shape::pick(&mut rng, s.indirect);
            pool.post_readable(q, &mut rng, &data[sent..sent + n], shape);
            sent += n;
            added = true;
        }
        if added {
            q.kick().unwrap();
        }
        if pool.in_flight() == 0 {
            return;
        }
        let (head, len) = wait_used_strict(&bus, q);
        assert_eq!(len, 0, "transmit used length");
        pool.complete(head, 0);
        while let Some((head, len)) = q.get_used().unwrap() {
            assert_eq!(len, 0, "transmit used length");
            pool.complete(head, 0);
        }
    }
}

/// Receives exactly `n` bytes through the receive queue, posting buffers of random sizes (up
/// to `max_chain`) and shapes, up to `depth` at a time. Returns the bytes in used-ring order.
pub fn receive(rig: &Rig, q: &mut HostQueue, n: usize, s: Stream) -> Vec<u8> {
    let bus = rig.bus();
    let mut pool = SlotPool::new(bus.clone(), s.depth, s.max_chain);
    let mut rng = Prng::new(s.seed);
    let mut out = Vec::with_capacity(n);
    // Room of the buffers outstanding: never more than the bytes still expected, so the
    // stream ends with no buffer left behind.
    let mut room = 0usize;
    let take = |pool: &mut SlotPool, out: &mut Vec<u8>, room: &mut usize, head, len| {
        *room -= pool.capacity(head) as usize;
        out.extend(pool.complete(head, len));
    };
    while out.len() < n {
        let mut added = false;
        while out.len() + room < n && pool.has_free() && q.num_free() > 0 {
            let len = (rng.range(1, u64::from(s.max_chain)) as usize).min(n - out.len() - room);
            let shape = Shape::pick(&mut rng, s.indirect);
            pool.post_writable(q, &mut rng, len as u32, shape, RX_POISON);
            room += len;
            added = true;
        }
        if added {
            q.kick().unwrap();
        }
        let (head, len) = wait_used_strict(&bus, q);
        take(&mut pool, &mut out, &mut room, head, len);
        while let Some((head, len)) = q.get_used().unwrap() {
            take(&mut pool, &mut out, &mut room, head, len);
        }
    }
    assert_eq!(out.len(), n, "received more than was sent");
    out
}

/// Parameters of a stream of chains.
#[derive(Clone, Copy)]
pub struct Stream {
    pub max_chain: u32,
    pub depth: usize,
    pub indirect: bool,
    pub seed: u64,
}
