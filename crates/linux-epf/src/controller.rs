//! [`LinuxEpfController`]: an [`EndpointController`] over Linux's PCI endpoint subsystem,
//! through the pci_epf_user function (kernel/epf-user). What it can do is what the kernel's
//! EPC says: no trapped accesses and no vendor capabilities (the EPC API writes only the
//! standard header, MSI and MSI-X), BAR memory the host writes into without a trap (so a
//! virtio function uses the legacy layout with polled registers), MSI/MSI-X/INTx as the
//! controller offers them, host memory through windows and DMA.
//!
//! An event thread turns the kernel's link events into [`FunctionHandler`] calls: link down
//! and EPC teardown reset the function (the host is gone; its addresses mean nothing), link
//! up and bus-master enable tell it interrupts may have changed.

use crate::device::EpfDevice;
use crate::host_memory::{AccessPolicy, EpfHostMemory};
use crate::uapi;
use epf_epc::{
    AreaKind, CounterSource, Counters, EndpointController, EpcError, EpcFeatures, FunctionHandler,
    FunctionSpec, HostAccess, HostMemory, Irq, IrqSupport, SharedMemory, BAR_COUNT,
};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Most MSI-X vectors we use (bounds the function's tables).
const MAX_MSIX: u16 = 64;

/// Options of the host-memory paths.
#[derive(Debug, Clone, Copy)]
pub struct EpfOptions {
    /// Accesses of at least this many bytes use DMA when the controller has an engine.
    pub dma_threshold: usize,
    /// Outbound windows kept mapped, and the size of each (`None`: derived from the
    /// controller's outbound address space, see [`auto_window_size`]).
    pub windows: usize,
    pub window_size: Option<u64>,
}

impl Default for EpfOptions {
    fn default() -> Self {
        EpfOptions {
            dma_threshold: 256,
            windows: 4,
            window_size: None,
        }
    }
}

/// Smallest and largest window [`auto_window_size`] chooses.
const MIN_AUTO_WINDOW: u64 = 64 * 1024;
const MAX_AUTO_WINDOW: u64 = 4 * 1024 * 1024;

/// The window size used when none is asked for: half the controller's outbound address space
/// shared by `windows` windows (the other half stays for the kernel's own mappings, e.g. DMA
/// through windows), as a power of two between 64 KiB and 4 MiB. Every miss costs a window
/// reprogramming (an ATU update and an mmap), so windows as large as the space allows keep
/// a ring and the buffers near it in one window: in the rig, 64 KiB windows were remapped
/// 5,150 times for 9 MB of network traffic.
pub fn auto_window_size(space: u64, windows: usize) -> u64 {
    let share = space / (2 * windows.max(1) as u64);
    if share < MIN_AUTO_WINDOW {
        return MIN_AUTO_WINDOW;
    }
    (1u64 << (63 - share.leading_zeros())).min(MAX_AUTO_WINDOW)
}

/// The controller.
pub struct LinuxEpfController {
    dev: Arc<EpfDevice>,
    kfeatures: uapi::Features,
    mem: Arc<EpfHostMemory>,
    bars: OnceLock<[Option<Arc<SharedMemory>>; BAR_COUNT]>,
    handler: OnceLock<Arc<dyn FunctionHandler>>,
    events: AtomicU64,
    /// Whether the host enabled MSI-X, as last asked (bit 0), and when (ms since `epoch`,
    /// above): asking is a register read of the controller, a PCIe round trip on silicon
    /// and a vfio-user one in the rig, and the polled function asks on every pass.
    msix: AtomicU64,
    epoch: std::time::Instant,
}

/// How long an answer about MSI-X enablement is reused.
const MSIX_STATE_TTL_MS: u64 = 5;

impl std::fmt::Debug for LinuxEpfController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxEpfController")
            .field("device", &self.dev.path())
            .finish()
    }
}

fn os(what: &str) -> impl Fn(std::io::Error) -> EpcError + '_ {
    move |e| EpcError::Os(format!("{what}: {e}"))
}

impl LinuxEpfController {
    /// Opens `/dev/epf-user-NAME` (or `path`) and reads what the controller offers.
    pub fn open(path: &Path, opts: EpfOptions) -> Result<Arc<Self>, EpcError> {
        let dev = Arc::new(EpfDevice::open(path).map_err(|e| {
            EpcError::Os(format!(
                "{}: {e} (is pci-epf-user loaded and the function bound to a controller?)",
                path.display()
            ))
        })?);
        let kfeatures = dev
            .features()
            .map_err(os("reading the controller's features"))?;
        let dma =
            kfeatures.flags & (uapi::FEAT_DMA_TX | uapi::FEAT_DMA_RX | uapi::FEAT_DMA_MEMCPY) != 0;
        let asked = opts
            .window_size
            .unwrap_or_else(|| auto_window_size(kfeatures.window_size, opts.windows));
        let window_size = if kfeatures.window_size > 0 {
            asked.min(kfeatures.window_size.next_power_of_two())
        } else {
            asked
        }
        .max(4096)
        .next_power_of_two();
        let windows = match kfeatures.num_windows {
            0 => opts.windows,
            n => opts.windows.min(n as usize / 2).max(1),
        };
        let mem = Arc::new(EpfHostMemory::new(
            dev.clone(),
            AccessPolicy {
                windows,
                window_size,
                dma_threshold: opts.dma_threshold,
                dma,
            },
        ));
        log::info!(
            "epf: {}: flags {:#x}, align {:#x}, {} windows of {:#x} bytes, DMA {}",
            path.display(),
            kfeatures.flags,
            kfeatures.align,
            kfeatures.num_windows,
            kfeatures.window_size,
            if dma { "yes" } else { "no" }
        );
        Ok(Arc::new(LinuxEpfController {
            dev,
            kfeatures,
            mem,
            bars: OnceLock::new(),
            handler: OnceLock::new(),
            events: AtomicU64::new(0),
            msix: AtomicU64::new(u64::MAX),
            epoch: std::time::Instant::now(),
        }))
    }

    fn program(
        &self,
        spec: &FunctionSpec,
    ) -> Result<[Option<Arc<SharedMemory>>; BAR_COUNT], EpcError> {
        if !spec.capabilities.is_empty() {
            return Err(EpcError::Unsupported(
                "capabilities besides MSI/MSI-X: the EPC API writes only the standard header",
            ));
        }
        let h = &spec.header;
        self.dev
            .set_header(&uapi::Header {
                vendor_id: h.vendor_id,
                device_id: h.device_id,
                revision_id: h.revision_id,
                progif_code: h.class_code as u8,
                subclass_code: (h.class_code >> 8) as u8,
                baseclass_code: (h.class_code >> 16) as u8,
                subsys_vendor_id: h.subsystem_vendor_id,
                subsys_id: h.subsystem_id,
                interrupt_pin: h.interrupt_pin,
                pad: [0; 3],
            })
            .map_err(os("writing the header"))?;
        let mut bars: [Option<Arc<SharedMemory>>; BAR_COUNT] = Default::default();
        for (n, b) in spec.bars.iter().enumerate() {
            let Some(b) = b else { continue };
            b.validate()?;
            if b.areas
                .iter()
                .any(|a| matches!(a.kind, AreaKind::Trapped | AreaKind::Doorbell))
            {
                return Err(EpcError::Unsupported(
                    "trapped BAR areas: host accesses to BAR memory are not seen by the endpoint",
                ));
            }
            let mut flags = 0;
            if b.is_64bit || self.kfeatures.bar_only_64bit & (1 << n) != 0 {
                flags |= uapi::BAR_64BIT;
            }
            if b.prefetchable {
                flags |= uapi::BAR_PREFETCH;
            }
            let got = self
                .dev
                .set_bar(n as u8, b.size, flags)
                .map_err(os(&format!("BAR {n}")))?;
            let len = usize::try_from(got.mmap_size)
                .map_err(|_| EpcError::Invalid(format!("BAR {n}: mmap size")))?;
            if (len as u64) < b.size {
                return Err(EpcError::Invalid(format!(
                    "BAR {n}: the kernel gave {len:#x} bytes for {:#x}",
                    b.size
                )));
            }
            let mem = self
                .dev
                .map(uapi::bar_offset(n as u8), len)
                .map_err(os(&format!("mapping BAR {n}")))?;
            bars[n] = Some(Arc::new(mem));
        }
        let (msix_vectors, msix_bar, msix_offset) = match &spec.msix {
            Some(m) => {
                let offset = u32::try_from(m.table_offset)
                    .map_err(|_| EpcError::Invalid("MSI-X table offset".into()))?;
                (u32::from(m.vectors), u32::from(m.table_bar), offset)
            }
            None => (0, 0, 0),
        };
        self.dev
            .set_irqs(&uapi::Irqs {
                msi_vectors: 0,
                msix_vectors,
                msix_bar,
                msix_offset,
            })
            .map_err(os("setting up interrupts"))?;
        Ok(bars)
    }

    fn spawn_events(self: &Arc<Self>) -> Result<(), EpcError> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("epf-events".into())
            .spawn(move || loop {
                let e = match me.dev.next_event() {
                    Ok(e) => e,
                    Err(e) => {
                        log::error!("epf: reading events: {e}; no more host events");
                        return;
                    }
                };
                me.events.fetch_add(1, Ordering::Relaxed);
                if e.dropped > 0 {
                    log::warn!("epf: {} events were dropped", e.dropped);
                }
                // Whatever changed, the next question about MSI-X goes to the controller.
                me.msix.store(u64::MAX, Ordering::Release);
                let Some(h) = me.handler.get() else { continue };
                match e.kind {
                    uapi::EV_LINK_DOWN | uapi::EV_EPC_DEINIT => {
                        log::info!("epf: link down: the function is reset");
                        me.mem.unmap_all();
                        h.link_reset();
                        h.host_connected(false);
                    }
                    uapi::EV_LINK_UP => {
                        log::info!("epf: link up");
                        h.host_connected(true);
                        h.irqs_changed();
                    }
                    uapi::EV_BME | uapi::EV_EPC_INIT => h.irqs_changed(),
                    other => log::debug!("epf: event {other}"),
                }
            })
            .map(|_| ())
            .map_err(os("starting the event thread"))
    }

    /// Starts the function (the [`EndpointController::start`] of an `Arc`).
    fn start_arc(
        self: &Arc<Self>,
        spec: FunctionSpec,
        handler: Arc<dyn FunctionHandler>,
    ) -> Result<(), EpcError> {
        if self.handler.set(handler).is_err() {
            return Err(EpcError::Invalid("function already started".into()));
        }
        let bars = self.program(&spec)?;
        let _ = self.bars.set(bars);
        self.spawn_events()?;
        self.dev.start().map_err(os("starting the function"))
    }
}

/// A handle that implements [`EndpointController`] (the start path needs the `Arc`).
#[derive(Debug, Clone)]
pub struct EpfController(pub Arc<LinuxEpfController>);

impl EndpointController for EpfController {
    fn features(&self) -> EpcFeatures {
        let k = &self.0.kfeatures;
        EpcFeatures {
            vendor_capabilities: false,
            trapped_access: false,
            doorbells: false,
            shared_memory: true,
            irq: IrqSupport {
                msix_vectors: if k.flags & uapi::FEAT_MSIX != 0 {
                    u16::try_from(k.max_msix).unwrap_or(u16::MAX).min(MAX_MSIX)
                } else {
                    0
                },
                msi_vectors: if k.flags & uapi::FEAT_MSI != 0 {
                    u16::try_from(k.max_msi).unwrap_or(32)
                } else {
                    0
                },
                intx: true,
            },
            host_access: HostAccess::Direct,
        }
    }

    fn start(&self, spec: FunctionSpec, handler: Arc<dyn FunctionHandler>) -> Result<(), EpcError> {
        self.0.start_arc(spec, handler)
    }

    fn bar_memory(&self, bar: u8) -> Option<Arc<SharedMemory>> {
        self.0.bars.get()?.get(bar as usize)?.clone()
    }

    fn host_memory(&self) -> Arc<dyn HostMemory> {
        self.0.mem.clone()
    }

    fn raise_irq(&self, irq: Irq) -> Result<(), EpcError> {
        let (kind, number) = match irq {
            Irq::Msix(v) => (uapi::IRQ_MSIX, u32::from(v) + 1),
            Irq::Msi(v) => (uapi::IRQ_MSI, u32::from(v) + 1),
            // The EPC raises INTx as a pulse; there is nothing to lower.
            Irq::Intx(false) => return Ok(()),
            Irq::Intx(true) => (uapi::IRQ_INTX, 0),
        };
        self.0
            .dev
            .raise_irq(kind, number)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINVAL) => {
                    EpcError::IrqNotEnabled(format!("{irq:?}"))
                }
                Some(libc::ENODEV) | Some(libc::ENOLINK) => EpcError::LinkDown,
                _ => EpcError::Os(format!("raising {irq:?}: {e}")),
            })
    }

    fn msix_enabled(&self) -> bool {
        let c = &self.0;
        let now = c.epoch.elapsed().as_millis() as u64;
        let last = c.msix.load(Ordering::Acquire);
        if last != u64::MAX && now.saturating_sub(last >> 1) < MSIX_STATE_TTL_MS {
            return last & 1 != 0;
        }
        self.msix_enabled_now()
    }

    fn msix_enabled_now(&self) -> bool {
        let c = &self.0;
        let on = c.dev.irq_state().is_ok_and(|s| s.msix > 0);
        let now = c.epoch.elapsed().as_millis() as u64;
        c.msix.store((now << 1) | u64::from(on), Ordering::Release);
        on
    }
}

/// `epf: window_maps=.. ... dma_errors=.. events=..`: the host-memory paths (outbound windows
/// and DMA) and the link events of the kernel function.
impl CounterSource for LinuxEpfController {
    fn report(&self, out: &mut Counters) {
        let mut line = out.line("epf");
        self.mem.stats.fields(&mut line);
        line.field("events", self.events.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::auto_window_size;

    #[test]
    fn windows_share_half_the_outbound_space_within_bounds() {
        // The rig's 32 MiB aperture, four windows: 4 MiB each.
        assert_eq!(auto_window_size(32 << 20, 4), 4 << 20);
        // A 1 MiB space: 128 KiB each; rounding is down to a power of two.
        assert_eq!(auto_window_size(1 << 20, 4), 128 << 10);
        assert_eq!(auto_window_size(300 << 10, 1), 128 << 10);
        // Unknown or tiny spaces: the smallest; huge ones: the largest.
        assert_eq!(auto_window_size(0, 4), 64 << 10);
        assert_eq!(auto_window_size(100 << 10, 4), 64 << 10);
        assert_eq!(auto_window_size(4 << 30, 4), 4 << 20);
        assert_eq!(auto_window_size(32 << 20, 0), 4 << 20);
    }
}
