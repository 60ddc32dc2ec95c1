//! The virtio-pci endpoint function: binds a [`VirtioDevice`] to an [`EndpointController`],
//! checks the presentation options against the controller, lays the function out, serves
//! the host's trapped register accesses, and starts the worker (and, with polled registers,
//! the poller).

use crate::caps::PCI_CFG_DATA;
use crate::common_cfg;
use crate::dispatch::Dispatcher;
use crate::interrupt::Interrupt;
use crate::layout::{ModernLayout, Region, REGS_BAR};
use crate::legacy_cfg::{self, LegacyRead, LegacyWrite};
use crate::legacy_layout::{self, LegacyLayout};
use crate::legacy_poll::{LegacyPollEngine, PollStats};
use crate::notify_data::NotifyData;
use crate::notify_poll::{self, NotifyPoller};
use crate::options::{
    FunctionOptions, IrqMode, Layout, NotifyMode, OptionsError, RegisterAccess, RingFormat,
};
use crate::pci_cfg_window::{PciCfgWindow, WindowAccess};
use crate::poller::Poller;
use crate::registers::Registers;
use crate::shared::Shared;
use crate::stats::FunctionStats;
use crate::worker::WorkerHandle;
use epf_device::{DeviceConfig, VirtioDevice};
use epf_epc::sync;
use epf_epc::{
    capability_offsets, CounterSource, Counters, EndpointController, EpcError, FunctionHandler,
    HostMemError,
};
use epf_virtqueue::{check_queue_size, QueueSizeError};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use thiserror::Error;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// Transport feature bits this function implements for every device.
pub const TRANSPORT_FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_INDIRECT_DESC) | (1 << VIRTIO_RING_F_EVENT_IDX);

/// VIRTIO_F_RING_PACKED, offered with the modern layout unless
/// [`RingFormat::Split`](crate::RingFormat::Split) is chosen.
pub const RING_PACKED_FEATURE: u64 = 1 << epf_virtqueue::packed::format::VIRTIO_F_RING_PACKED;

/// VIRTIO_F_IN_ORDER (bit 35): offered by devices that use buffers in order (they put it in
/// their device features; the legacy layout's 32 feature bits cannot carry it). With it
/// negotiated every queue publishes in order and batches its used entries
/// (`Queue::set_in_order`).
pub const IN_ORDER_FEATURE: u64 = 1 << 35;

/// VIRTIO_F_NOTIFICATION_DATA (bit 38), offered with the modern layout: see `notify_data`.
pub const NOTIFICATION_DATA_FEATURE: u64 = 1 << 38;

/// Most queues a function has.
const MAX_QUEUES: usize = 1024;

/// Why a function could not be created.
#[derive(Debug, Error)]
pub enum FunctionError {
    #[error("the endpoint controller cannot host this function: {0}")]
    Controller(#[from] EpcError),
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error("device declares {0} queues (1..={MAX_QUEUES} supported)")]
    QueueCount(usize),
    #[error("queue {queue}: {error}")]
    QueueSize {
        queue: usize,
        #[source]
        error: QueueSizeError,
    },
    #[error("cannot prepare the polled register page: {0}")]
    RegisterPage(#[source] HostMemError),
    #[error("cannot start the device worker: {0}")]
    Worker(#[from] std::io::Error),
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
    dispatch: Arc<Dispatcher>,
    transport: Transport,
    options: FunctionOptions,
    device_type: u32,
    /// The poller, with polled registers.
    poller: OnceLock<Poller>,
    /// The notify page poller, with polled notifications on the modern layout.
    notify_poller: OnceLock<NotifyPoller>,
    /// The device's own counters, if it has any.
    device_stats: Option<Arc<dyn CounterSource>>,
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
        options.check(&features)?;
        let mut sizes = device.queue_max_sizes();
        if sizes.is_empty() || sizes.len() > MAX_QUEUES {
            return Err(FunctionError::QueueCount(sizes.len()));
        }
        for (queue, &s) in sizes.iter().enumerate() {
            check_queue_size(s).map_err(|error| FunctionError::QueueSize { queue, error })?;
        }
        let device_type = device.device_type();
        let device_stats = device.stats();
        let config = DeviceConfig::new(device.initial_config());
        if let Some(hook) = device.config_write_hook() {
            config.set_write_hook(hook);
        }
        let mut offered = device.device_features() | TRANSPORT_FEATURES;
        if options.layout == Layout::Modern && options.rings == RingFormat::Packed {
            offered |= RING_PACKED_FEATURE;
        }
        if options.layout == Layout::Modern {
            offered |= NOTIFICATION_DATA_FEATURE;
        }
        let num_queues = sizes.len() as u16;
        let vectors = match options.irq {
            IrqMode::Msix => num_queues.saturating_add(1).min(features.irq.msix_vectors),
            _ => 0,
        };
        let (transport, spec, regs) = match options.layout {
            Layout::Modern => {
                let mut layout = ModernLayout::new(num_queues, &features);
                layout.msix_vectors = vectors;
                layout.notify_polled = options.notify == NotifyMode::Poll;
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
                let spec = layout
                    .function_spec(device_type)
                    .ok_or(OptionsError::NoTransitionalId(device_type))?;
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
            notify_data: NotifyData::new(sizes.len()),
        });
        let worker = WorkerHandle::spawn(device, shared.clone(), sizes.len())?;
        let dispatch = Arc::new(Dispatcher::new(
            shared.clone(),
            worker,
            options.layout == Layout::Legacy,
        ));
        let f = Arc::new(VirtioPciFunction {
            shared,
            dispatch,
            transport,
            options,
            device_type,
            poller: OnceLock::new(),
            notify_poller: OnceLock::new(),
            device_stats,
        });
        epc.start(spec, f.clone())?;
        if options.layout == Layout::Legacy && options.registers == RegisterAccess::Poll {
            let page = epc
                .bar_memory(legacy_layout::REGS_BAR)
                .ok_or(EpcError::Unsupported("shared memory behind BAR 0"))?;
            let mut engine =
                LegacyPollEngine::new((offered & 0xffff_ffff) as u32, num_queues, sizes[0]);
            // Before the host can look: what it reads must already be there.
            engine.prime(&page).map_err(FunctionError::RegisterPage)?;
            let poller = Poller::start(f.dispatch.clone(), page, engine, options.irq)?;
            let _ = f.poller.set(poller);
        }
        if options.layout == Layout::Modern && options.notify == NotifyMode::Poll {
            let page = epc
                .bar_memory(REGS_BAR)
                .ok_or(EpcError::Unsupported("shared memory behind BAR 0"))?;
            let base = crate::layout::NOTIFY_OFFSET;
            notify_poll::prime(&page, base, sizes.len()).map_err(FunctionError::RegisterPage)?;
            let poller = NotifyPoller::start(f.dispatch.clone(), page, base, sizes.len())?;
            let _ = f.notify_poller.set(poller);
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

    /// Live counters of the transport (the device's are in [`report`](CounterSource::report)).
    pub fn stats(&self) -> &FunctionStats {
        &self.shared.stats
    }

    /// Counters of the polled register engine (zero unless registers are polled).
    pub fn poll_stats(&self) -> PollStats {
        self.poller.get().map(Poller::stats).unwrap_or_default()
    }

    /// The device status as the driver would read it through a trap.
    pub fn status(&self) -> u8 {
        self.shared.regs().status()
    }

    /// Stops the poller and the worker thread (the function stops serving queues).
    pub fn stop(&self) {
        if let Some(p) = self.poller.get() {
            p.stop();
        }
        if let Some(p) = self.notify_poller.get() {
            p.stop();
        }
        self.dispatch.stop();
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
                self.dispatch.apply(effect);
            }
            None => log::debug!(
                "ignored common cfg write of {} bytes at {off:#x}",
                data.len()
            ),
        }
    }

    /// A write of `data` to the notify area at `off`: a kick of the queue whose address it
    /// is, with its notification data (kept before the kick, which the worker takes after)
    /// when the write is the 32 bits VIRTIO_F_NOTIFICATION_DATA makes it.
    fn notify(&self, off: u64, data: &[u8]) {
        let m = crate::layout::NOTIFY_OFF_MULTIPLIER as u64;
        if off % m != 0 {
            log::debug!("ignored notification at {off:#x}");
            return;
        }
        let q = (off / m) as usize;
        if let Ok(v) = <[u8; 4]>::try_from(data) {
            self.shared.notify_data.store(q, u32::from_le_bytes(v));
        }
        self.dispatch.kick(q);
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
                self.dispatch.apply(effect);
            }
            LegacyWrite::Notify(q) => {
                drop(regs);
                self.dispatch.kick(q as usize);
            }
            LegacyWrite::Ignored => log::debug!(
                "ignored legacy register write of {} bytes at {offset:#x}",
                data.len()
            ),
        }
    }
}

/// The function's counters, then the pollers' (with polled registers or notifications), then
/// the device's.
impl CounterSource for VirtioPciFunction {
    fn report(&self, out: &mut Counters) {
        out.add(&self.shared.stats);
        if let Some(p) = self.poller.get() {
            out.add(&p.stats());
        }
        if let Some(p) = self.notify_poller.get() {
            out.add(p.stats.as_ref());
        }
        if let Some(d) = &self.device_stats {
            out.add(d.as_ref());
        }
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
            Some((Region::Notify, off)) => self.notify(off, data),
            Some((Region::Device, off)) if !self.shared.config.write(off, data) => {
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
        self.dispatch.apply(effect);
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
