//! The virtio-pci endpoint function: binds a [`VirtioDevice`] to an [`EndpointController`],
//! serves the host's register accesses and hands the device to its worker thread.

use crate::caps::PCI_CFG_DATA;
use crate::common_cfg;
use crate::interrupt::Interrupt;
use crate::layout::{ModernLayout, Region, REGS_BAR};
use crate::pci_cfg_window::{PciCfgWindow, WindowAccess};
use crate::registers::{Effect, Registers};
use crate::stats::FunctionStats;
use crate::worker::{Control, WorkerHandle};
use epf_device::{DeviceConfig, VirtioDevice};
use epf_epc::{capability_offsets, EndpointController, EpcError, FunctionHandler};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use thiserror::Error;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// Transport feature bits this function implements for every device.
pub const TRANSPORT_FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_INDIRECT_DESC) | (1 << VIRTIO_RING_F_EVENT_IDX);

/// Why a function could not be created.
#[derive(Debug, Error)]
pub enum FunctionError {
    #[error("the endpoint controller cannot host a modern virtio-pci function: {0}")]
    Controller(#[from] EpcError),
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
}

impl Shared {
    /// Locks the register file (a poisoned lock is still usable: the state is plain data).
    pub(crate) fn regs(&self) -> MutexGuard<'_, Registers> {
        self.regs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A virtio device presented to the host as a modern virtio-pci function.
pub struct VirtioPciFunction {
    shared: Arc<Shared>,
    layout: ModernLayout,
    worker: Mutex<WorkerHandle>,
    pci_cfg: Mutex<PciCfgWindow>,
    pci_cfg_offset: usize,
    device_type: u32,
}

impl VirtioPciFunction {
    /// Lays out `device` as a modern virtio-pci function on `epc`, starts its worker and
    /// presents it to the host.
    pub fn start(
        epc: Arc<dyn EndpointController>,
        device: Box<dyn VirtioDevice>,
    ) -> Result<Arc<Self>, FunctionError> {
        let features = epc.features();
        if !features.vendor_capabilities {
            return Err(
                EpcError::Unsupported("vendor capabilities (needed by the modern layout)").into(),
            );
        }
        if !features.trapped_access {
            return Err(EpcError::Unsupported(
                "trapped register access (needed by the modern layout)",
            )
            .into());
        }
        let sizes = device.queue_max_sizes();
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
        let layout = ModernLayout::new(sizes.len() as u16, &features);
        let spec = layout.function_spec(device_type);
        let pci_cfg_offset = *capability_offsets(&spec.capabilities)
            .last()
            .expect("the modern layout has capabilities");
        let offered = device.device_features() | TRANSPORT_FEATURES;
        let shared = Arc::new(Shared {
            regs: Mutex::new(Registers::new(offered, &sizes, layout.msix_vectors)),
            config,
            interrupt: Interrupt::new(epc.clone()),
            stats: FunctionStats::new(sizes.len()),
            epc: epc.clone(),
        });
        let worker = WorkerHandle::spawn(device, shared.clone(), sizes.len())?;
        let f = Arc::new(VirtioPciFunction {
            shared,
            layout,
            worker: Mutex::new(worker),
            pci_cfg: Mutex::new(PciCfgWindow::default()),
            pci_cfg_offset,
            device_type,
        });
        epc.start(spec, f.clone())?;
        Ok(f)
    }

    /// The virtio device type.
    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// Live counters.
    pub fn stats(&self) -> &FunctionStats {
        &self.shared.stats
    }

    /// The device status as the driver would read it.
    pub fn status(&self) -> u8 {
        self.shared.regs().status()
    }

    /// Stops the worker thread (the function stops serving queues).
    pub fn stop(&self) {
        self.worker().stop();
    }

    fn worker(&self) -> MutexGuard<'_, WorkerHandle> {
        self.worker.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::Activate(a) => self.worker().send(Control::Activate(a)),
            Effect::Reset { epoch } => self.worker().send(Control::Reset { epoch }),
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

    fn notify(&self, off: u64) {
        let q = off / crate::layout::NOTIFY_OFF_MULTIPLIER as u64;
        if off % crate::layout::NOTIFY_OFF_MULTIPLIER as u64 != 0 || !self.worker().kick(q as usize)
        {
            log::debug!("ignored notification at {off:#x}");
        }
    }
}

impl FunctionHandler for VirtioPciFunction {
    fn bar_read(&self, bar: u8, offset: u64, data: &mut [u8]) {
        self.shared.stats.bar_reads.fetch_add(1, Ordering::Relaxed);
        if bar != REGS_BAR {
            return;
        }
        match self.layout.region_at(offset) {
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
        match self.layout.region_at(offset) {
            Some((Region::Common, off)) => self.common_write(off, data),
            Some((Region::Notify, off)) => self.notify(off),
            Some((Region::Device, off)) => {
                log::debug!("ignored write to read-only device config at {off:#x}")
            }
            _ => {}
        }
    }

    fn config_read(&self, offset: usize, data: &mut [u8]) {
        let Some(rel) = offset.checked_sub(self.pci_cfg_offset) else {
            return;
        };
        let w = *self.pci_cfg.lock().unwrap_or_else(|e| e.into_inner());
        if let WindowAccess::Bar { bar, offset, len } = w.read(rel, data) {
            self.bar_read(bar, offset, &mut data[..len]);
        }
    }

    fn config_write(&self, offset: usize, data: &[u8]) {
        let Some(rel) = offset.checked_sub(self.pci_cfg_offset) else {
            return;
        };
        let access = self
            .pci_cfg
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(rel, data);
        if let WindowAccess::Bar { bar, offset, len } = access {
            debug_assert!(rel == PCI_CFG_DATA);
            self.bar_write(bar, offset, &data[..len]);
        }
    }

    fn link_reset(&self) {
        let effect = self.shared.regs().reset();
        self.shared.interrupt.reset();
        *self.pci_cfg.lock().unwrap_or_else(|e| e.into_inner()) = PciCfgWindow::default();
        self.apply(effect);
    }
}
