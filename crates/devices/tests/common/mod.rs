//! Shared fixtures of the devices' loopback tests: a rig running the real
//! [`VirtioPciFunction`] on the loopback controller, a watchdog bounding every test in time,
//! a deterministic PRNG, and in-memory console backends (channel-fed input, channel-draining
//! output that can stall).

#![allow(dead_code)]

use epf_device::VirtioDevice;
use epf_devices::console::Backend;
use epf_epc::EndpointController;
use epf_loopback::host_driver::spec::*;
use epf_loopback::host_driver::{HostQueue, VirtioPciDriver};
use epf_loopback::{HostBus, LoopbackController, LoopbackOptions};
use epf_virtio_pci::VirtioPciFunction;
use std::io::{Read, Write};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(5);
pub const CONFIG_VECTOR: u16 = 0;
pub const NEEDS_RESET: u8 = STATUS_DEVICE_NEEDS_RESET;
pub const ALL_FEATURES: u64 = u64::MAX;
pub const NO_RING_FEATURES: u64 = 0;

/// Runs `body` on its own thread and fails the test if it does not finish within `limit`.
pub fn bounded<F: FnOnce() + Send + 'static>(limit: Duration, body: F) {
    let (tx, rx) = channel();
    let t = std::thread::Builder::new()
        .name("test-body".into())
        .spawn(move || {
            body();
            let _ = tx.send(());
        })
        .unwrap();
    match rx.recv_timeout(limit) {
        Ok(()) => t.join().unwrap(),
        Err(RecvTimeoutError::Disconnected) => {
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(RecvTimeoutError::Timeout) => panic!("test did not finish within {limit:?} (hang)"),
    }
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
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

/// A loopback controller with the real virtio-pci function on it.
pub struct Rig {
    pub c: Arc<LoopbackController>,
    pub f: Arc<VirtioPciFunction>,
}

impl Rig {
    pub fn new(device: Box<dyn VirtioDevice>) -> Rig {
        Self::with_options(LoopbackOptions::default().with_ram_size(64 << 20), device)
    }

    pub fn with_options(opts: LoopbackOptions, device: Box<dyn VirtioDevice>) -> Rig {
        let c = Arc::new(LoopbackController::new(opts).unwrap());
        let epc: Arc<dyn EndpointController> = c.clone();
        let f = VirtioPciFunction::start(epc, device).unwrap();
        Rig { c, f }
    }

    pub fn bus(&self) -> HostBus {
        self.c.host()
    }

    /// A freshly probed host driver.
    pub fn driver(&self) -> VirtioPciDriver {
        VirtioPciDriver::probe(self.c.host()).unwrap()
    }

    /// End-of-test check: no host-memory access outside host RAM ever happened.
    pub fn finish(self) {
        assert_eq!(
            self.c.oob_attempts(),
            0,
            "the endpoint attempted host-memory accesses outside host RAM"
        );
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.f.stop();
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
