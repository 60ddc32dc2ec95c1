//! The virtio-pci endpoint function: binds a [`VirtioDevice`] to an [`EndpointController`],
//! serves the host's register accesses and hands the device to its worker thread.

use crate::caps::PCI_CFG_DATA;
use crate::common_cfg;
use crate::interrupt::Interrupt;
use crate::layout::{ModernLayout, Region, REGS_BAR};
use crate::legacy_cfg::{self, LegacyRead, LegacyWrite};
use crate::legacy_layout::{self, LegacyLayout};
use crate::legacy_poll::{LegacyPollEngine, PollStats};
use crate::options::{FunctionOptions, IrqMode, Layout, NotifyMode, RegisterAccess};
use crate::pci_cfg_window::{PciCfgWindow, WindowAccess};
use crate::registers::{Effect, Registers};
use crate::stats::FunctionStats;
use crate::worker::{Control, WorkerHandle};
use epf_device::{DeviceConfig, VirtioDevice};
use epf_epc::sync;
use epf_epc::{
    capability_offsets, EndpointController, EpcError, FunctionHandler, HostMemory, SharedMemory,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use thiserror::Error;
use virtio_bindings::virtio_config::{VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_F_VERSION_1};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// Transport feature bits this function implements for every device.
pub const TRANSPORT_FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_INDIRECT_DESC) | (1 << VIRTIO_RING_F_EVENT_IDX);

/// Why a function could not be created.
#[derive(Debug, Error)]
pub enum FunctionError {
    #[error("the endpoint controller cannot host this function: {0}")]
    Controller(#[from] EpcError),
    #[error("{0}")]
    Options(String),
    #[error("device declares {0} queues (1..=1024 supported)")]
    QueueCount(usize),
    #[error("queue {0} maximum size {1} is not a power of two in 1..=32768")]
    QueueSize(usize, u16),
    #[error("cannot start the device worker: {0}")]
    Worker(#[from] std::io::Error),
}

/// State shared by the register engine and the worker.
pub struct Shared {
    pub(crate) regs: Mutex<Registers>,
    pub(crate) config: DeviceConfig,
    pub(crate) interrupt: Interrupt,
    pub(crate) stats: FunctionStats,
    pub(crate) epc: Arc<dyn EndpointController>,
    /// Signalled by the worker when a reset completes.
    pub(crate) reset_done: Condvar,
}

impl Shared {
    /// Locks the register file (a poisoned lock is still usable: the state is plain data).
    pub(crate) fn regs(&self) -> MutexGuard<'_, Registers> {
        sync::lock(&self.regs)
    }
}

/// How the function's registers are presented.
enum Transport {
    Modern {
        layout: ModernLayout,
        pci_cfg: Mutex<PciCfgWindow>,
        pci_cfg_offset: usize,
    },
    Legacy,
}

/// A virtio device presented to the host as a virtio-pci function.
pub struct VirtioPciFunction {
    shared: Arc<Shared>,
    transport: Transport,
    options: FunctionOptions,
    worker: Mutex<WorkerHandle>,
    device_type: u32,
    poller: Mutex<Option<std::thread::JoinHandle<()>>>,
    stop_polling: AtomicBool,
    poll_stats: Mutex<PollStats>,
}

/// How long a reset may take before the register engine gives up waiting for the worker.
const RESET_WAIT: Duration = Duration::from_secs(2);

fn check_options(o: &FunctionOptions, f: &epf_epc::EpcFeatures) -> Result<(), FunctionError> {
    let err = |m: &str| Err(FunctionError::Options(m.to_string()));
    match (o.layout, o.registers) {
        (Layout::Modern, RegisterAccess::Poll) => {
            return err("the modern layout cannot be polled: the host reads device_feature, queue_size and the other selector registers right after writing the selector, which only a trap can answer; use --layout legacy with --registers poll")
        }
        (Layout::Modern, _) if !f.vendor_capabilities => {
            return err("this controller cannot add vendor capabilities, which the modern layout needs; use --layout legacy")
        }
        (_, RegisterAccess::Trap) if !f.trapped_access => {
            return err("this controller cannot trap register accesses; use --registers poll (with --layout legacy)")
        }
        (_, RegisterAccess::Poll) if !f.shared_memory => {
            return err("this controller cannot share BAR memory for polling")
        }
        _ => {}
    }
    if o.layout == Layout::Legacy && o.registers == RegisterAccess::Poll {
        if o.notify == NotifyMode::Doorbell {
            return err("--notify doorbell needs a doorbell at QUEUE_NOTIFY, which the legacy layout keeps inside the polled register page; use --notify poll (or --registers trap)");
        }
        if o.irq == IrqMode::Intx {
            return err("--irq intx needs the ISR register to clear on read, which polled memory cannot do; use --irq msix or --registers trap");
        }
    }
    if o.layout == Layout::Modern && o.notify == NotifyMode::Poll {
        return err("--notify poll is implemented for the legacy layout (--layout legacy --registers poll); the modern layout uses a doorbell or trapped notify area");
    }
    match o.irq {
        IrqMode::Msix if f.irq.msix_vectors == 0 => err("this controller has no MSI-X; use --irq intx"),
        // The virtio PCI transport has vectors only for MSI-X (msix_config, queue_msix_vector)
        // and Linux's virtio_pci asks for MSI-X alone (vp_request_msix_vectors: PCI_IRQ_MSIX)
        // before falling back to INTx: a plain MSI capability would never be enabled.
        IrqMode::Msi => err("the virtio PCI transport has no MSI (only MSI-X vectors), and Linux's virtio_pci uses MSI-X or else INTx; a controller with only MSI must use --irq intx"),
        IrqMode::Intx if !f.irq.intx => err("this controller has no INTx"),
        _ => Ok(()),
    }
}

impl VirtioPciFunction {
    /// Lays out `device` as a modern virtio-pci function on `epc` (trapped registers,
    /// MSI-X), starts its worker and presents it to the host.
    pub fn start(
        epc: Arc<dyn EndpointController>,
        device: Box<dyn VirtioDevice>,
    ) -> Result<Arc<Self>, FunctionError> {
        Self::start_with(epc, device, FunctionOptions::default())
    }

    /// Like [`start`](Self::start), with explicit presentation options.
    pub fn start_with(
        epc: Arc<dyn EndpointController>,
        device: Box<dyn VirtioDevice>,
        options: FunctionOptions,
    ) -> Result<Arc<Self>, FunctionError> {
        let features = epc.features();
        check_options(&options, &features)?;
        let mut sizes = device.queue_max_sizes();
        if sizes.is_empty() || sizes.len() > 1024 {
            return Err(FunctionError::QueueCount(sizes.len()));
        }
        if let Some((i, &s)) = sizes
            .iter()
            .enumerate()
            .find(|(_, &s)| !s.is_power_of_two() || s > 32768)
        {
            return Err(FunctionError::QueueSize(i, s));
        }
        let device_type = device.device_type();
        let config = DeviceConfig::new(device.initial_config());
        let offered = device.device_features() | TRANSPORT_FEATURES;
        let num_queues = sizes.len() as u16;
        let vectors = match options.irq {
            IrqMode::Msix => num_queues.saturating_add(1).min(features.irq.msix_vectors),
            _ => 0,
        };
        let (transport, spec, regs) = match options.layout {
            Layout::Modern => {
                let mut layout = ModernLayout::new(num_queues, &features);
                layout.msix_vectors = vectors;
                let spec = layout.function_spec(device_type);
                let pci_cfg_offset = *capability_offsets(&spec.capabilities)
                    .last()
                    .expect("the modern layout has capabilities");
                let regs = Registers::new(offered, &sizes, vectors);
                let t = Transport::Modern {
                    layout,
                    pci_cfg: Mutex::new(PciCfgWindow::default()),
                    pci_cfg_offset,
                };
                (t, spec, regs)
            }
            Layout::Legacy => {
                if options.registers == RegisterAccess::Poll {
                    // QUEUE_NUM is memory: one size for every queue.
                    let min = *sizes.iter().min().expect("at least one queue");
                    sizes.iter_mut().for_each(|s| *s = min);
                }
                let layout = LegacyLayout {
                    num_queues,
                    msix_vectors: vectors,
                    registers: options.registers,
                };
                let spec = layout.function_spec(device_type).ok_or_else(|| {
                    FunctionError::Options(format!(
                        "virtio device type {device_type} has no transitional PCI ID, so no legacy layout"
                    ))
                })?;
                let regs = Registers::new_legacy(offered, &sizes, vectors);
                (Transport::Legacy, spec, regs)
            }
        };
        let shared = Arc::new(Shared {
            regs: Mutex::new(regs),
            config,
            interrupt: Interrupt::new(epc.clone()),
            stats: FunctionStats::new(sizes.len()),
            epc: epc.clone(),
            reset_done: Condvar::new(),
        });
        let worker = WorkerHandle::spawn(device, shared.clone(), sizes.len())?;
        let f = Arc::new(VirtioPciFunction {
            shared,
            transport,
            options,
            worker: Mutex::new(worker),
            device_type,
            poller: Mutex::new(None),
            stop_polling: AtomicBool::new(false),
            poll_stats: Mutex::new(PollStats::default()),
        });
        epc.start(spec, f.clone())?;
        if options.layout == Layout::Legacy && options.registers == RegisterAccess::Poll {
            let page = epc
                .bar_memory(legacy_layout::REGS_BAR)
                .ok_or(EpcError::Unsupported("shared memory behind BAR 0"))?;
            let mut engine =
                LegacyPollEngine::new((offered & 0xffff_ffff) as u32, num_queues, sizes[0]);
            // Before the host can look: what it reads must already be there.
            engine
                .prime(&page)
                .map_err(|e| FunctionError::Options(e.to_string()))?;
            let me = f.clone();
            let h = std::thread::Builder::new()
                .name("epf-poll".into())
                .spawn(move || me.poll_loop(page, engine))?;
            *sync::lock(&f.poller) = Some(h);
        }
        Ok(f)
    }

    /// The virtio device type.
    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// The presentation options.
    pub fn options(&self) -> FunctionOptions {
        self.options
    }

    /// Live counters.
    pub fn stats(&self) -> &FunctionStats {
        &self.shared.stats
    }

    /// Counters of the polled register engine (zero unless registers are polled).
    pub fn poll_stats(&self) -> PollStats {
        *sync::lock(&self.poll_stats)
    }

    /// The device status as the driver would read it through a trap.
    pub fn status(&self) -> u8 {
        self.shared.regs().status()
    }

    /// Stops the poller and the worker thread (the function stops serving queues).
    pub fn stop(&self) {
        self.stop_polling.store(true, Ordering::Release);
        if let Some(h) = sync::lock(&self.poller).take() {
            let _ = h.join();
        }
        self.worker().stop();
    }

    fn worker(&self) -> MutexGuard<'_, WorkerHandle> {
        sync::lock(&self.worker)
    }

    fn apply(&self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::Activate(a) => self.worker().send(Control::Activate(a)),
            Effect::Reset { epoch } => {
                self.worker().send(Control::Reset { epoch });
                if self.options.layout == Layout::Legacy {
                    // A legacy driver does not wait for the reset to finish before its next
                    // register access: finish it before serving that access.
                    self.wait_reset();
                }
            }
        }
    }

    /// Waits (bounded) until the worker has completed the pending reset.
    fn wait_reset(&self) {
        let deadline = Instant::now() + RESET_WAIT;
        let mut regs = self.shared.regs();
        while regs.reset_pending() {
            let now = Instant::now();
            if now >= deadline {
                log::error!("device reset did not complete within {RESET_WAIT:?}");
                return;
            }
            regs = sync::wait_timeout(&self.shared.reset_done, regs, deadline - now).0;
        }
    }

    fn common_write(&self, off: u64, data: &[u8]) {
        let mut regs = self.shared.regs();
        match common_cfg::write(&mut regs, off, data) {
            Some(effect) => {
                self.shared
                    .interrupt
                    .set_config_vector(regs.config_msix_vector());
                if regs.status() == 0 && !regs.reset_pending() {
                    self.shared.interrupt.reset();
                }
                drop(regs);
                self.apply(effect);
            }
            None => log::debug!(
                "ignored common cfg write of {} bytes at {off:#x}",
                data.len()
            ),
        }
    }

    fn kick(&self, q: usize) {
        if !self.worker().kick(q) {
            log::debug!("ignored notification of queue {q}");
        }
    }

    fn notify(&self, off: u64) {
        let m = crate::layout::NOTIFY_OFF_MULTIPLIER as u64;
        if off % m != 0 {
            log::debug!("ignored notification at {off:#x}");
            return;
        }
        self.kick((off / m) as usize);
    }

    fn legacy_read(&self, offset: u64, data: &mut [u8]) {
        let msix = self.shared.epc.msix_enabled();
        let regs = self.shared.regs();
        match legacy_cfg::read(&regs, msix, offset, data) {
            LegacyRead::Done => {}
            LegacyRead::Isr => data[0] = self.shared.interrupt.read_isr(),
            LegacyRead::Config(off) => self.shared.config.read(off, data),
        }
    }

    fn legacy_write(&self, offset: u64, data: &[u8]) {
        let msix = self.shared.epc.msix_enabled();
        let mut regs = self.shared.regs();
        match legacy_cfg::write(&mut regs, msix, offset, data) {
            LegacyWrite::Effect(effect) => {
                self.shared
                    .interrupt
                    .set_config_vector(regs.config_msix_vector());
                drop(regs);
                self.apply(effect);
            }
            LegacyWrite::Notify(q) => {
                drop(regs);
                self.kick(q as usize);
            }
            LegacyWrite::Ignored => log::debug!(
                "ignored legacy register write of {} bytes at {offset:#x}",
                data.len()
            ),
        }
    }

    /// The polled register engine's thread: passes over the legacy register page, spinning
    /// while the host is active and backing off (sleeps up to `MAX_IDLE_SLEEP`, and up to
    /// `DEEP_IDLE_SLEEP` once the host has been quiet for `DEEP_IDLE_AFTER`) while it is
    /// idle, so an idle device does not burn a core. The rings are also looked at on every
    /// back-off step, since a polled QUEUE_NOTIFY can merge two notifications.
    fn poll_loop(self: Arc<Self>, page: Arc<SharedMemory>, mut engine: LegacyPollEngine) {
        // After host activity the poller spins this long before it starts sleeping: the next
        // notification of a burst usually follows within it. Time, not passes: a pass costs
        // about 0.1 us natively and 3 us in a TCG guest, and on a single-core endpoint every
        // microsecond spun is taken from the worker serving the notification (20,000 passes
        // spun for 70 ms in the rig's EP VM and left the virtio-net worker a tenth of the
        // CPU: 80 KB/s).
        const SPIN_AFTER_ACTIVITY: Duration = Duration::from_micros(50);
        const MAX_IDLE_SLEEP: Duration = Duration::from_micros(200);
        // A device the host has not touched for a while (no traffic at all, not merely
        // between two packets) is woken less often: ~1,000 instead of ~5,000 times a second.
        const DEEP_IDLE_AFTER: Duration = Duration::from_millis(500);
        const DEEP_IDLE_SLEEP: Duration = Duration::from_millis(1);
        // While a driver is part-way through the setup sequence the poller never sleeps: the
        // host's next queue check may come a few microseconds after a PFN write (even a 1 us
        // nanosleep costs tens of microseconds), and under a guest's allocations the gaps
        // between its accesses can exceed any spin budget. A driver that stalls part-way
        // (status ACKNOWLEDGE and no driver module, say) releases the core after this long.
        const SETUP_SPIN_LIMIT: Duration = Duration::from_secs(10);
        let num_queues = self.shared.stats.queues.len();
        let mut was_active = true;
        let mut sleep = Duration::from_micros(1);
        let mut last_activity = Instant::now();
        let mut last_publish = Instant::now();
        let mut status_seen = (engine.status(), Instant::now());
        let mut rings = IdleRings::new(self.shared.epc.host_memory(), num_queues);
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
        let vectors = self.options.irq == IrqMode::Msix;
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
        if let Err(e) = engine.rehearse(&self.config_bytes()) {
            log::debug!("legacy poll: rehearsal failed: {e}");
        }
        while !self.stop_polling.load(Ordering::Acquire) {
            realtime.set(engine.probing() && status_seen.1.elapsed() < SETUP_SPIN_LIMIT);
            let r = {
                let mut regs = self.shared.regs();
                // After the pass: a PFN it consumed moves the configuration to 0x18 at once.
                engine.poll(&page, &mut regs, vectors).and_then(|pass| {
                    engine
                        .sync_config(
                            &page,
                            vectors && (engine.msix_in_use() || self.shared.epc.msix_enabled()),
                            self.shared.config.generation(),
                            || self.config_bytes(),
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
                self.shared.interrupt.reset();
                self.apply(effect);
                // The page's read-only registers stay valid across resets; the device
                // configuration copy is rewritten for the next driver.
                let _ = engine.prime(&page);
            }
            if let Some(effect) = pass.activate {
                {
                    let regs = self.shared.regs();
                    self.shared
                        .interrupt
                        .set_config_vector(regs.config_msix_vector());
                }
                self.apply(effect);
            }
            if let Some(q) = pass.notify {
                self.kick(q as usize);
                // Let the worker run now if it shares this core (a no-op otherwise).
                std::thread::yield_now();
            }
            if last_publish.elapsed() > Duration::from_millis(100) {
                *sync::lock(&self.poll_stats) = engine.stats;
                last_publish = Instant::now();
            }
            if engine.status() != status_seen.0 {
                status_seen = (engine.status(), Instant::now());
            }
            if pass.activity {
                was_active = true;
                sleep = Duration::from_micros(1);
                continue;
            }
            if was_active {
                was_active = false;
                last_activity = Instant::now();
            }
            let setting_up = engine.negotiating() && status_seen.1.elapsed() < SETUP_SPIN_LIMIT;
            if setting_up || last_activity.elapsed() < SPIN_AFTER_ACTIVITY {
                std::hint::spin_loop();
                continue;
            }
            // Idle: two notifications can merge in QUEUE_NOTIFY, so look at the rings
            // themselves; then sleep a little longer each time.
            rings.check(&self);
            std::thread::sleep(sleep);
            let cap = if last_activity.elapsed() > DEEP_IDLE_AFTER {
                DEEP_IDLE_SLEEP
            } else {
                MAX_IDLE_SLEEP
            };
            sleep = (sleep * 2).min(cap);
        }
        realtime.set(false);
        *sync::lock(&self.poll_stats) = engine.stats;
    }

    fn config_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; self.shared.config.len()];
        self.shared.config.read(0, &mut b);
        b
    }
}

impl FunctionHandler for VirtioPciFunction {
    fn bar_read(&self, bar: u8, offset: u64, data: &mut [u8]) {
        self.shared.stats.bar_reads.fetch_add(1, Ordering::Relaxed);
        if bar != REGS_BAR {
            return;
        }
        let layout = match &self.transport {
            Transport::Modern { layout, .. } => layout,
            Transport::Legacy => return self.legacy_read(offset, data),
        };
        match layout.region_at(offset) {
            Some((Region::Common, off)) => {
                let regs = self.shared.regs();
                common_cfg::read(&regs, self.shared.config.generation(), off, data)
            }
            Some((Region::Isr, 0)) => {
                if let Some(b) = data.first_mut() {
                    *b = self.shared.interrupt.read_isr();
                }
            }
            Some((Region::Device, off)) => self.shared.config.read(off, data),
            _ => {}
        }
        log::trace!("bar{bar} read {offset:#x} -> {data:02x?}");
    }

    fn bar_write(&self, bar: u8, offset: u64, data: &[u8]) {
        self.shared.stats.bar_writes.fetch_add(1, Ordering::Relaxed);
        log::trace!("bar{bar} write {offset:#x} <- {data:02x?}");
        if bar != REGS_BAR {
            return;
        }
        let layout = match &self.transport {
            Transport::Modern { layout, .. } => layout,
            Transport::Legacy => return self.legacy_write(offset, data),
        };
        match layout.region_at(offset) {
            Some((Region::Common, off)) => self.common_write(off, data),
            Some((Region::Notify, off)) => self.notify(off),
            Some((Region::Device, off)) => {
                log::debug!("ignored write to read-only device config at {off:#x}")
            }
            _ => {}
        }
    }

    fn config_read(&self, offset: usize, data: &mut [u8]) {
        let Some((window, rel)) = self.pci_cfg_window(offset) else {
            return;
        };
        let w = *sync::lock(window);
        if let WindowAccess::Bar { bar, offset, len } = w.read(rel, data) {
            self.bar_read(bar, offset, &mut data[..len]);
        }
    }

    fn config_write(&self, offset: usize, data: &[u8]) {
        let Some((window, rel)) = self.pci_cfg_window(offset) else {
            return;
        };
        let access = sync::lock(window).write(rel, data);
        if let WindowAccess::Bar { bar, offset, len } = access {
            debug_assert!(rel == PCI_CFG_DATA);
            self.bar_write(bar, offset, &data[..len]);
        }
    }

    fn link_reset(&self) {
        let effect = self.shared.regs().reset();
        self.shared.interrupt.reset();
        if let Transport::Modern { pci_cfg, .. } = &self.transport {
            *sync::lock(pci_cfg) = PciCfgWindow::default();
        }
        self.apply(effect);
    }
}

impl VirtioPciFunction {
    /// The PCI-configuration-access window and the offset into its capability of a trapped
    /// config-space access at `offset` (modern layout only: the legacy one has none).
    fn pci_cfg_window(&self, offset: usize) -> Option<(&Mutex<PciCfgWindow>, usize)> {
        let Transport::Modern {
            pci_cfg,
            pci_cfg_offset,
            ..
        } = &self.transport
        else {
            return None;
        };
        Some((pci_cfg, offset.checked_sub(*pci_cfg_offset)?))
    }
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

    fn check(&mut self, f: &VirtioPciFunction) {
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
