//! The poller: the thread of a function with polled registers. It passes over the legacy
//! register page ([`LegacyPollEngine`]), hands what the host did to the worker through the
//! [`Dispatcher`], and decides how it spends the CPU while doing so: it spins for a while
//! after each host access and all the while a driver is setting the device up, runs with
//! realtime priority while a driver probes, backs off to sleeps when the host is idle, and
//! then looks at the rings itself (a polled QUEUE_NOTIFY can merge two notifications).
//! docs/design.md has the timing bounds this policy serves and the measurements behind it.

use crate::backoff::Backoff;
use crate::dispatch::Dispatcher;
use crate::legacy_poll::{LegacyPollEngine, PollStats};
use crate::options::IrqMode;
use epf_epc::{sync, HostMemory, SharedMemory};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_DRIVER_OK;

/// The running poller of one function.
pub(crate) struct Poller {
    stop: Arc<AtomicBool>,
    /// The engine's counters, published every 100 ms and when the poller stops.
    stats: Arc<Mutex<PollStats>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Poller {
    /// Starts polling `page` with `engine` (primed: the host may already be reading it).
    pub(crate) fn start(
        d: Arc<Dispatcher>,
        page: Arc<SharedMemory>,
        engine: LegacyPollEngine,
        irq: IrqMode,
    ) -> std::io::Result<Poller> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(PollStats::default()));
        let (s, p) = (stop.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("epf-poll".into())
            .spawn(move || poll_loop(d, page, engine, irq, &s, &p))?;
        Ok(Poller {
            stop,
            stats,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The engine's counters as last published.
    pub(crate) fn stats(&self) -> PollStats {
        *sync::lock(&self.stats)
    }

    /// Stops the thread and waits for it (its final counters stay readable).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = sync::lock(&self.thread).take() {
            let _ = h.join();
        }
    }
}

/// The polled register engine's thread: passes over the legacy register page, spinning
/// while the host is active and backing off while it is idle ([`Backoff`]), so an idle
/// device does not burn a core. The rings are also looked at on every
/// back-off step, since a polled QUEUE_NOTIFY can merge two notifications.
fn poll_loop(
    d: Arc<Dispatcher>,
    page: Arc<SharedMemory>,
    mut engine: LegacyPollEngine,
    irq: IrqMode,
    stop: &AtomicBool,
    published: &Mutex<PollStats>,
) {
    // While a driver is part-way through the setup sequence the poller never sleeps: the
    // host's next queue check may come a few microseconds after a PFN write (even a 1 us
    // nanosleep costs tens of microseconds), and under a guest's allocations the gaps
    // between its accesses can exceed any spin budget. A driver that stalls part-way
    // (status ACKNOWLEDGE and no driver module, say) releases the core after this long.
    const SETUP_SPIN_LIMIT: Duration = Duration::from_secs(10);
    let num_queues = d.shared.stats.queues.len();
    let mut backoff = Backoff::new();
    let mut last_publish = Instant::now();
    let mut status_seen = (engine.status(), Instant::now());
    let mut rings = IdleRings::new(d.shared.epc.host_memory(), num_queues);
    // Polled registers come with MSI-X (INTx is refused). The driver enables MSI-X before
    // it sets queues up, so the vector registers are live whenever queues are being set
    // up: track them regardless of our own view of the host's MSI-X state, which (vectors
    // wired by the link) can lag behind the driver's register writes. Device
    // configuration moves from 0x14 to 0x18 when MSI-X comes on; the driver reads it at
    // 0x14 before (e.g. virtio_net's MAC in probe). It moves to 0x18 on the page's own
    // evidence (LegacyPollEngine::msix_in_use: the first PFN), which is immediate, or
    // when the controller says MSI-X is on; it moves back only when neither says so: a
    // driver being removed resets the device *before* it writes NO_VECTOR to the
    // configuration vector at 0x14 and disables MSI-X, and a copy moved back at the
    // reset was overwritten there (the next probe read a MAC starting ff:ff). The
    // controller is asked only between a reset and the first PFN, where no timing
    // bound runs (on a board that is a register read, cached for a few ms).
    let vectors = irq == IrqMode::Msix;
    // The poller's reaction time is the timing bound of this mode (docs/design.md): ask
    // the scheduler not to preempt it for ordinary work (needs CAP_SYS_NICE; without it
    // the thread keeps the default priority).
    // SAFETY: setpriority on this thread's own id; no memory is passed.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -10) };
    if r != 0 {
        log::debug!(
            "poller keeps its default priority: {}",
            std::io::Error::last_os_error()
        );
    }
    // While a driver's probe runs, the timing bounds matter most: the poller asks for
    // realtime scheduling (SCHED_FIFO) so that ordinary threads cannot preempt it in the
    // few microseconds between a host write and the host's next check; it returns to
    // normal scheduling when the probe ends (or stalls).
    let mut realtime = Realtime::default();
    if let Err(e) = engine.rehearse(&d.shared.config_bytes()) {
        log::debug!("legacy poll: rehearsal failed: {e}");
    }
    while !stop.load(Ordering::Acquire) {
        realtime.set(engine.probing() && status_seen.1.elapsed() < SETUP_SPIN_LIMIT);
        let r = {
            let mut regs = d.shared.regs();
            // After the pass: a PFN it consumed moves the configuration to 0x18 at once.
            engine.poll(&page, &mut regs, vectors).and_then(|pass| {
                engine
                    .sync_config(
                        &page,
                        vectors && (engine.msix_in_use() || d.shared.epc.msix_enabled()),
                        d.shared.config.generation(),
                        || d.shared.config_bytes(),
                    )
                    .map(|()| pass)
            })
        };
        let pass = match r {
            Ok(p) => p,
            Err(e) => {
                log::error!("legacy poll: register page access failed: {e}");
                return;
            }
        };
        if let Some(effect) = pass.reset {
            d.shared.interrupt.reset();
            d.apply(effect);
            // The page's read-only registers stay valid across resets; the device
            // configuration copy is rewritten for the next driver.
            let _ = engine.prime(&page);
        }
        if let Some(effect) = pass.activate {
            {
                let regs = d.shared.regs();
                d.shared
                    .interrupt
                    .set_config_vector(regs.config_msix_vector());
            }
            d.apply(effect);
        }
        if let Some(q) = pass.notify {
            d.kick(q as usize);
            // Let the worker run now if it shares this core (a no-op otherwise).
            std::thread::yield_now();
        }
        if last_publish.elapsed() > Duration::from_millis(100) {
            *sync::lock(published) = engine.stats;
            last_publish = Instant::now();
        }
        if engine.status() != status_seen.0 {
            status_seen = (engine.status(), Instant::now());
        }
        if pass.activity {
            backoff.activity();
            continue;
        }
        let spinning = backoff.spinning();
        let setting_up = engine.negotiating() && status_seen.1.elapsed() < SETUP_SPIN_LIMIT;
        if setting_up || spinning {
            std::hint::spin_loop();
            continue;
        }
        // Idle: two notifications can merge in QUEUE_NOTIFY, so look at the rings
        // themselves; then sleep a little longer each time.
        rings.check(&d);
        backoff.sleep();
    }
    realtime.set(false);
    *sync::lock(published) = engine.stats;
}

/// The poller's look at the rings when the host is idle: each live queue's available index,
/// compared with the one seen last time, so that the worker is woken only for a queue that
/// received buffers whose notification the poller never saw (an idle device then costs the
/// poller's wake-ups alone).
struct IdleRings {
    memory: Arc<dyn HostMemory>,
    /// Per queue: (available-ring address, index) at the last look.
    seen: Vec<Option<(u64, u16)>>,
    /// Available-ring addresses of live queues (reused: no allocation per look).
    live: Vec<Option<u64>>,
}

impl IdleRings {
    fn new(memory: Arc<dyn HostMemory>, num_queues: usize) -> Self {
        IdleRings {
            memory,
            seen: vec![None; num_queues],
            live: Vec::with_capacity(num_queues),
        }
    }

    fn check(&mut self, f: &Dispatcher) {
        self.live.clear();
        {
            let regs = f.shared.regs();
            let running = regs.status() & VIRTIO_CONFIG_S_DRIVER_OK as u8 != 0;
            self.live.extend((0..self.seen.len()).map(|q| {
                regs.queue(q)
                    .filter(|r| running && r.enabled)
                    .map(|r| r.driver)
            }));
        }
        for (q, ring) in self.live.iter().enumerate() {
            let Some(avail) = *ring else {
                self.seen[q] = None;
                continue;
            };
            match self.memory.read_u16(avail.wrapping_add(2)) {
                Ok(idx) if self.seen[q] == Some((avail, idx)) => {}
                Ok(idx) => {
                    self.seen[q] = Some((avail, idx));
                    f.kick(q);
                }
                // The worker meets the same error and reports it (DEVICE_NEEDS_RESET).
                Err(_) => f.kick(q),
            }
        }
    }
}

/// The calling thread's realtime scheduling, switched on and off (system calls only on a
/// change). Without CAP_SYS_NICE the request fails once, is logged, and not retried.
#[derive(Default)]
struct Realtime {
    on: bool,
    unavailable: bool,
}

impl Realtime {
    fn set(&mut self, on: bool) {
        if on == self.on || (on && self.unavailable) {
            return;
        }
        let (policy, priority) = if on {
            (libc::SCHED_FIFO, 1)
        } else {
            (libc::SCHED_OTHER, 0)
        };
        let param = libc::sched_param {
            sched_priority: priority,
        };
        // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
        if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
            self.on = on;
        } else if on {
            self.unavailable = true;
            log::info!(
                "poller runs without realtime scheduling during driver setup: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
