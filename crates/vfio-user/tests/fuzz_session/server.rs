//! The server under test: the real [`VfioUserController`] serving the test fixture's function
//! spec (`common::spec`) to a handler that records nothing (a long campaign must not grow the
//! test's own memory), plus a thread raising interrupts all the while, as a function would,
//! so SET_IRQS races with `raise_irq` and a `raise_irq` that blocks is caught.

use super::common::spec;
use epf_epc::{EndpointController, FunctionHandler, Irq};
use epf_vfio_user::VfioUserController;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vmm_sys_util::tempdir::TempDir;

/// Longest a `raise_irq` may take: it must never block on the client's descriptors.
pub const RAISE_LIMIT: Duration = Duration::from_secs(1);

/// A function that answers trapped reads with a pattern and counts what it is told.
#[derive(Default)]
pub struct Sink {
    pub accesses: AtomicU64,
    pub resets: AtomicU64,
    pub disconnects: AtomicU64,
}

impl FunctionHandler for Sink {
    fn bar_read(&self, _bar: u8, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset as u8).wrapping_add(i as u8) ^ 0xa5;
        }
        self.accesses.fetch_add(1, Ordering::Relaxed);
    }

    fn bar_write(&self, _bar: u8, _offset: u64, _data: &[u8]) {
        self.accesses.fetch_add(1, Ordering::Relaxed);
    }

    fn config_read(&self, _offset: usize, data: &mut [u8]) {
        data.fill(0x5a);
    }

    fn link_reset(&self) {
        self.resets.fetch_add(1, Ordering::Relaxed);
    }

    fn host_connected(&self, connected: bool) {
        if !connected {
            self.disconnects.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The controller on its thread, and the interrupt raiser.
pub struct Server {
    _dir: TempDir,
    pub path: PathBuf,
    pub ctl: Arc<VfioUserController>,
    pub sink: Arc<Sink>,
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    raiser: Option<JoinHandle<()>>,
    /// Longest `raise_irq` so far, in microseconds.
    pub slowest_raise_us: Arc<AtomicU64>,
    pub raises: Arc<AtomicU64>,
}

impl Server {
    pub fn start() -> Server {
        let dir = TempDir::new_with_prefix("/tmp/epf-vfio-user-fuzz").expect("temporary dir");
        let path = dir.as_path().join("fuzz.sock");
        let ctl = VfioUserController::new(&path).expect("controller");
        let sink = Arc::new(Sink::default());
        ctl.start(spec(), sink.clone()).expect("start the function");
        let c = ctl.clone();
        let thread = std::thread::Builder::new()
            .name("vfio-user-server".into())
            .spawn(move || {
                c.serve().expect("the server failed");
            })
            .expect("spawn the server");
        let stop = Arc::new(AtomicBool::new(false));
        let slowest = Arc::new(AtomicU64::new(0));
        let raises = Arc::new(AtomicU64::new(0));
        let (c, s, sl, n) = (ctl.clone(), stop.clone(), slowest.clone(), raises.clone());
        let raiser = std::thread::Builder::new()
            .name("irq-raiser".into())
            .spawn(move || {
                let mut k = 0u16;
                while !s.load(Ordering::Relaxed) {
                    let irq = match k % 6 {
                        4 => Irq::Intx(true),
                        5 => Irq::Intx(false),
                        v => Irq::Msix(v),
                    };
                    let t = Instant::now();
                    let _ = c.raise_irq(irq);
                    sl.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                    n.fetch_add(1, Ordering::Relaxed);
                    k = k.wrapping_add(1);
                    std::thread::sleep(Duration::from_micros(500));
                }
            })
            .expect("spawn the interrupt raiser");
        // The campaign asserts interrupts were raised: make sure the raiser is running.
        while raises.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        Server {
            _dir: dir,
            path,
            ctl,
            sink,
            thread: Some(thread),
            stop,
            raiser: Some(raiser),
            slowest_raise_us: slowest,
            raises,
        }
    }

    /// Waits until the server has cleaned up after `n` clients in all.
    pub fn wait_disconnects(&self, n: u64) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.sink.disconnects.load(Ordering::SeqCst) < n {
            if Instant::now() > deadline {
                return Err(format!(
                    "the server did not finish with client {n} within 10 s"
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    pub fn check_raises(&self) -> Result<(), String> {
        let us = self.slowest_raise_us.load(Ordering::Relaxed);
        if us > RAISE_LIMIT.as_micros() as u64 {
            return Err(format!("raise_irq took {us} us: it blocked"));
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.raiser.take() {
            let _ = t.join();
        }
        self.ctl.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
