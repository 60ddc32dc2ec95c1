//! [`Link`]: the simulated controller's behaviour. The EP VM's register accesses and aperture
//! accesses arrive here (through [`EpHandler`]); so do the host VM's accesses to trapped
//! pages, its configuration writes and its coming and going (through [`HostHandler`]). The
//! link keeps the register file, lays out the host-side device when the EP starts the
//! function, translates the aperture through the windows, runs DMA transfers and raises
//! interrupts both ways.
//!
//! Locks: `host` (the host-side device) is taken before `regs` when both are needed; handlers
//! of the host-side device take only `regs`, so shutting down an old host side (which joins
//! its thread) never waits on a lock that thread needs. No lock is held while memory is
//! copied for DMA.

use crate::layout::HostLayout;
use crate::regs::*;
use crate::state::{half, set_half, Regs};
use crate::stats::{self, add, bump, Stats};
use epf_epc::sync::lock;
use epf_epc::{
    AreaKind, BarArea, BarSpec, EndpointController, EpcError, FunctionHandler, FunctionSpec,
    HostMemory, Irq, MsixSpec, PciHeader, SharedMemory, BAR_COUNT,
};
use epf_vfio_user::VfioUserController;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::JoinHandle;

/// What the link needs of the EP side: the EP VM's RAM and the controller's interrupts.
pub trait EpPort: Send + Sync {
    /// EP RAM, by EP-physical address.
    fn ram(&self) -> Arc<dyn HostMemory>;
    /// A mapping of `[addr, addr+len)` of EP RAM backed by the EP VM's own descriptor.
    fn share(&self, addr: u64, len: u64) -> Result<SharedMemory, EpcError>;
    /// Raises the controller's MSI-X vector `vector` in the EP VM.
    fn interrupt(&self, vector: u16);
}

impl EpPort for VfioUserController {
    fn ram(&self) -> Arc<dyn HostMemory> {
        self.host_memory()
    }

    fn share(&self, addr: u64, len: u64) -> Result<SharedMemory, EpcError> {
        self.share_client_memory(addr, len)
    }

    fn interrupt(&self, vector: u16) {
        // Without MSI-X enabled by the EP driver the event stays pending in EVENT_STATUS.
        if let Err(e) = self.raise_irq(Irq::Msix(vector)) {
            log::debug!("link: EP interrupt {vector} not delivered: {e}");
        }
    }
}

/// The host-side device currently laid out.
struct HostSide {
    ctl: Arc<VfioUserController>,
    thread: Option<JoinHandle<Result<(), epf_vfio_user::VfioUserError>>>,
    layout: HostLayout,
    /// The EP was reset since this device was laid out: its BAR mappings may point at memory
    /// of an EP VM that is gone, so it is never reused.
    stale: bool,
}

impl HostSide {
    fn stop(mut self) {
        self.ctl.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// PCI identity of the simulated controller in the EP VM.
pub const EPC_VENDOR: u16 = 0x1af4;
pub const EPC_DEVICE: u16 = 0x10fe;

/// The simulated controller.
pub struct Link {
    regs: Mutex<Regs>,
    ep: OnceLock<Arc<dyn EpPort>>,
    host: Mutex<Option<HostSide>>,
    host_socket: PathBuf,
    aperture_size: u64,
    me: Weak<Link>,
    pub stats: Stats,
}

/// Vectors to raise in the EP VM for the events in `bits` that `mask` lets through.
fn vectors_for(bits: u32, mask: u32) -> Vec<u16> {
    let bits = bits & mask;
    let mut v = Vec::new();
    if bits & EV_LINK_MASK != 0 {
        v.push(VEC_EVENTS);
    }
    if bits & (0xff << 8) != 0 {
        v.push(VEC_DMA);
    }
    if bits & EV_DOORBELL != 0 {
        v.push(VEC_DOORBELL);
    }
    v
}

/// A piece of a DMA transfer: memory, address in it, length.
type Piece = (Arc<dyn HostMemory>, u64, u64);

/// Errno values of `IRQ_RESULT`.
const EINVAL: u32 = 22;
const ENODEV: u32 = 19;
const EAGAIN: u32 = 11;
const EIO: u32 = 5;

impl Link {
    /// A link whose host-side device will listen on `host_socket` once the EP starts the
    /// function, with an aperture of `aperture_size` bytes.
    pub fn new(host_socket: PathBuf, aperture_size: u64) -> Arc<Link> {
        Arc::new_cyclic(|me| Link {
            regs: Mutex::new(Regs::default()),
            ep: OnceLock::new(),
            host: Mutex::new(None),
            host_socket,
            aperture_size,
            me: me.clone(),
            stats: Stats::default(),
        })
    }

    /// Connects the EP side. Call once, before the EP VM can access the controller.
    pub fn attach_ep(&self, ep: Arc<dyn EpPort>) {
        if self.ep.set(ep).is_err() {
            log::warn!("link: EP side attached twice; keeping the first");
        }
    }

    /// The function the EP VM's QEMU presents: the controller itself.
    pub fn controller_spec(aperture_size: u64) -> FunctionSpec {
        let trapped = |size| BarArea {
            offset: 0,
            size,
            kind: AreaKind::Trapped,
        };
        let mut bars: [Option<BarSpec>; BAR_COUNT] = Default::default();
        bars[0] = Some(BarSpec {
            size: 4096,
            is_64bit: false,
            prefetchable: false,
            areas: vec![trapped(4096)],
        });
        bars[2] = Some(BarSpec {
            size: aperture_size,
            is_64bit: true,
            prefetchable: false,
            areas: vec![trapped(aperture_size)],
        });
        bars[4] = Some(BarSpec {
            size: 4096,
            is_64bit: false,
            prefetchable: false,
            areas: vec![
                BarArea {
                    offset: 0,
                    size: u64::from(EP_VECTORS) * 16,
                    kind: AreaKind::MsixTable,
                },
                BarArea {
                    offset: 0x800,
                    size: 8,
                    kind: AreaKind::MsixPba,
                },
            ],
        });
        FunctionSpec {
            header: PciHeader {
                vendor_id: EPC_VENDOR,
                device_id: EPC_DEVICE,
                revision_id: 1,
                class_code: 0xff_0000,
                subsystem_vendor_id: EPC_VENDOR,
                subsystem_id: EPC_DEVICE,
                interrupt_pin: 0,
            },
            capabilities: vec![],
            bars,
            msix: Some(MsixSpec {
                vectors: EP_VECTORS,
                table_bar: 4,
                table_offset: 0,
                pba_bar: 4,
                pba_offset: 0x800,
            }),
        }
    }

    fn ep(&self) -> Option<&Arc<dyn EpPort>> {
        self.ep.get()
    }

    fn regs(&self) -> MutexGuard<'_, Regs> {
        lock(&self.regs)
    }

    fn host_ctl(&self) -> Option<Arc<VfioUserController>> {
        lock(&self.host).as_ref().map(|h| Arc::clone(&h.ctl))
    }

    fn host_mem(&self) -> Option<Arc<dyn HostMemory>> {
        self.host_ctl().map(|c| c.host_memory())
    }

    /// The host-side device's counters, if one is laid out.
    pub fn host_stats(&self) -> Option<epf_vfio_user::Stats> {
        self.host_ctl().map(|c| c.stats())
    }

    /// Posts events to the EP: sets them in `EVENT_STATUS` and raises the vectors the mask
    /// lets through. Call without the regs lock.
    fn post(&self, bits: u32) {
        if bits == 0 {
            return;
        }
        let mask = {
            let mut r = self.regs();
            r.event_status |= bits;
            r.event_mask
        };
        bump(&self.stats.events);
        if let Some(ep) = self.ep() {
            for v in vectors_for(bits, mask) {
                ep.interrupt(v);
            }
        }
    }

    fn reject(&self, r: &mut Regs, code: ErrorCode) {
        log::debug!("link: EP register write rejected: {code:?}");
        bump(&self.stats.rejected_writes);
        r.reject(code);
    }

    // ------------------------------------------------------------------ EP register file

    /// A 32-bit register read by the EP driver.
    pub fn reg_read(&self, off: u64) -> u32 {
        bump(&self.stats.register_reads);
        let host = self.host_ctl();
        let r = self.regs();
        let field = |base: u64, stride: u64, n: usize| {
            let rel = off - base;
            ((rel / stride) as usize, rel % stride, n)
        };
        match off {
            MAGIC => MAGIC_VALUE,
            VERSION => VERSION_VALUE,
            CAPS => CAP_MSI | CAP_MSIX | CAP_INTX | CAP_DMA | CAP_DOORBELLS,
            NUM_WINDOWS => WINDOWS as u32,
            WINDOW_ALIGN => ALIGN as u32,
            NUM_DMA => DMA_CHANNELS as u32,
            NUM_DOORBELLS => DOORBELLS as u32,
            MAX_MSI => MAX_MSI_VECTORS,
            MAX_MSIX => MAX_MSIX_VECTORS,
            APERTURE_SIZE_LO => half(self.aperture_size, false),
            APERTURE_SIZE_HI => half(self.aperture_size, true),
            LINK_CTRL => r.started as u32,
            LINK_STATUS => {
                let (msi, msix) = match (&host, r.link_up()) {
                    (Some(h), true) => (h.msi_vectors_enabled(), h.msix_vectors_enabled()),
                    _ => (0, 0),
                };
                let bit = |on: bool, b: u32| if on { b } else { 0 };
                bit(r.host_attached, STATUS_HOST_ATTACHED)
                    | bit(r.link_up(), STATUS_LINK_UP)
                    | bit(r.bme, STATUS_BME)
                    | bit(msi > 0, STATUS_MSI)
                    | bit(msix > 0, STATUS_MSIX)
            }
            EVENT_STATUS => r.event_status,
            EVENT_MASK => r.event_mask,
            ERROR => r.error,
            ERROR_COUNT => r.error_count,
            APERTURE_BASE_LO => half(r.aperture_base, false),
            APERTURE_BASE_HI => half(r.aperture_base, true),
            IRQ_RESULT => r.irq_result,
            MSI_ENABLED => match (&host, r.link_up()) {
                (Some(h), true) => u32::from(h.msi_vectors_enabled()),
                _ => 0,
            },
            MSIX_ENABLED => match (&host, r.link_up()) {
                (Some(h), true) => u32::from(h.msix_vectors_enabled()),
                _ => 0,
            },
            DOORBELL_PENDING => r.doorbell_pending,
            HDR_ID..=HDR_INTX => r.hdr[((off - HDR_ID) / 4) as usize],
            MSI_VECTORS => r.msi_vectors,
            MSIX_VECTORS => r.msix_vectors,
            MSIX_TABLE => r.msix_table,
            MSIX_PBA => r.msix_pba,
            o if (BAR_BASE..BAR_BASE + 6 * BAR_STRIDE).contains(&o) => {
                let (n, f, _) = field(BAR_BASE, BAR_STRIDE, 6);
                let b = &r.bars[n];
                match f {
                    BAR_PHYS_LO => half(b.phys, false),
                    BAR_PHYS_HI => half(b.phys, true),
                    BAR_SIZE_LO => half(b.size, false),
                    BAR_SIZE_HI => half(b.size, true),
                    BAR_FLAGS => b.flags,
                    BAR_CTRL => b.enabled as u32,
                    _ => 0,
                }
            }
            o if (WIN_BASE..WIN_BASE + WINDOWS as u64 * WIN_STRIDE).contains(&o) => {
                let (w, f, _) = field(WIN_BASE, WIN_STRIDE, WINDOWS);
                let win = &r.windows[w];
                match f {
                    WIN_AP_LO => half(win.ap_offset, false),
                    WIN_AP_HI => half(win.ap_offset, true),
                    WIN_SIZE_LO => half(win.size, false),
                    WIN_SIZE_HI => half(win.size, true),
                    WIN_PCI_LO => half(win.pci_addr, false),
                    WIN_PCI_HI => half(win.pci_addr, true),
                    WIN_CTRL => win.enabled as u32,
                    _ => 0,
                }
            }
            o if (DMA_BASE..DMA_BASE + DMA_CHANNELS as u64 * DMA_STRIDE).contains(&o) => {
                let (c, f, _) = field(DMA_BASE, DMA_STRIDE, DMA_CHANNELS);
                let d = &r.dma[c];
                match f {
                    DMA_SRC_LO => half(d.src, false),
                    DMA_SRC_HI => half(d.src, true),
                    DMA_DST_LO => half(d.dst, false),
                    DMA_DST_HI => half(d.dst, true),
                    DMA_LEN => d.len,
                    DMA_CTRL => d.ctrl,
                    DMA_STATUS => d.status,
                    DMA_DONE_COUNT => d.done,
                    _ => 0,
                }
            }
            o if (DB_BASE..DB_BASE + DOORBELLS as u64 * DB_STRIDE).contains(&o) => {
                let (d, f, _) = field(DB_BASE, DB_STRIDE, DOORBELLS);
                let db = &r.doorbells[d];
                match f {
                    DB_BAR => db.bar,
                    DB_OFFSET => db.offset,
                    DB_CTRL => db.enabled as u32,
                    DB_DATA => db.data,
                    _ => 0,
                }
            }
            _ => {
                bump(&self.stats.bad_register_accesses);
                0
            }
        }
    }

    /// A 32-bit register write by the EP driver.
    pub fn reg_write(&self, off: u64, v: u32) {
        bump(&self.stats.register_writes);
        match off {
            LINK_CTRL => return self.set_started(v & LINK_START != 0),
            IRQ_RAISE => return self.raise_host_irq(v),
            EVENT_MASK => {
                let pending = {
                    let mut r = self.regs();
                    r.event_mask = v;
                    r.event_status & v
                };
                // Events that were waiting for the mask interrupt now.
                if let Some(ep) = self.ep() {
                    for vec in vectors_for(pending, v) {
                        ep.interrupt(vec);
                    }
                }
                return;
            }
            o if (DMA_BASE..DMA_BASE + DMA_CHANNELS as u64 * DMA_STRIDE).contains(&o)
                && (o - DMA_BASE) % DMA_STRIDE == DMA_CTRL =>
            {
                let c = ((o - DMA_BASE) / DMA_STRIDE) as usize;
                self.regs().dma[c].ctrl = v & !DMA_START;
                if v & DMA_START != 0 {
                    self.run_dma(c);
                }
                return;
            }
            _ => {}
        }
        let mut guard = self.regs();
        let r = &mut *guard;
        match off {
            EVENT_STATUS => r.event_status &= !v,
            ERROR => r.error = 0,
            APERTURE_BASE_LO | APERTURE_BASE_HI => {
                set_half(&mut r.aperture_base, off == APERTURE_BASE_HI, v)
            }
            DOORBELL_PENDING => r.doorbell_pending &= !v,
            HDR_ID..=HDR_INTX => r.hdr[((off - HDR_ID) / 4) as usize] = v,
            MSI_VECTORS => r.msi_vectors = v,
            MSIX_VECTORS => r.msix_vectors = v,
            MSIX_TABLE => r.msix_table = v,
            MSIX_PBA => r.msix_pba = v,
            o if (BAR_BASE..BAR_BASE + 6 * BAR_STRIDE).contains(&o) => {
                let n = ((o - BAR_BASE) / BAR_STRIDE) as usize;
                let f = (o - BAR_BASE) % BAR_STRIDE;
                self.bar_write(r, n, f, v);
            }
            o if (WIN_BASE..WIN_BASE + WINDOWS as u64 * WIN_STRIDE).contains(&o) => {
                let w = ((o - WIN_BASE) / WIN_STRIDE) as usize;
                let f = (o - WIN_BASE) % WIN_STRIDE;
                self.window_write(r, w, f, v);
            }
            o if (DMA_BASE..DMA_BASE + DMA_CHANNELS as u64 * DMA_STRIDE).contains(&o) => {
                let d = &mut r.dma[((o - DMA_BASE) / DMA_STRIDE) as usize];
                match (o - DMA_BASE) % DMA_STRIDE {
                    DMA_SRC_LO => set_half(&mut d.src, false, v),
                    DMA_SRC_HI => set_half(&mut d.src, true, v),
                    DMA_DST_LO => set_half(&mut d.dst, false, v),
                    DMA_DST_HI => set_half(&mut d.dst, true, v),
                    DMA_LEN => d.len = v,
                    DMA_STATUS => d.status = DMA_IDLE,
                    _ => bump(&self.stats.bad_register_accesses),
                }
            }
            o if (DB_BASE..DB_BASE + DOORBELLS as u64 * DB_STRIDE).contains(&o) => {
                let d = ((o - DB_BASE) / DB_STRIDE) as usize;
                let f = (o - DB_BASE) % DB_STRIDE;
                self.doorbell_write(r, d, f, v);
            }
            _ => bump(&self.stats.bad_register_accesses),
        }
    }

    fn bar_write(&self, r: &mut Regs, n: usize, f: u64, v: u32) {
        if f == BAR_CTRL {
            if v & 1 == 0 {
                if r.bars[n].enabled && r.link_up() {
                    // The host keeps the mapping it was given (nothing in vfio-user revokes
                    // it); on silicon the inbound translation would stop here.
                    log::warn!("link: BAR {n} cleared while the host has it mapped");
                    bump(&self.stats.bars_cleared_while_mapped);
                }
                r.bars[n].enabled = false;
                return;
            }
            if r.link_up() {
                return self.reject(r, ErrorCode::Busy);
            }
            if let Err(code) = r.check_bar(n) {
                return self.reject(r, code);
            }
            let b = r.bars[n];
            let in_ram = self
                .ep()
                .is_some_and(|ep| ep.ram().check_range(b.phys, b.backing_len()).is_ok());
            if !in_ram {
                return self.reject(r, ErrorCode::NotEpRam);
            }
            r.bars[n].enabled = true;
            return;
        }
        if r.bars[n].enabled {
            return self.reject(r, ErrorCode::Busy);
        }
        let b = &mut r.bars[n];
        match f {
            BAR_PHYS_LO => set_half(&mut b.phys, false, v),
            BAR_PHYS_HI => set_half(&mut b.phys, true, v),
            BAR_SIZE_LO => set_half(&mut b.size, false, v),
            BAR_SIZE_HI => set_half(&mut b.size, true, v),
            BAR_FLAGS => b.flags = v,
            _ => bump(&self.stats.bad_register_accesses),
        }
    }

    fn window_write(&self, r: &mut Regs, w: usize, f: u64, v: u32) {
        if f == WIN_CTRL {
            if v & 1 == 0 {
                r.windows[w].enabled = false;
                return;
            }
            if let Err(code) = r.check_window(w, self.aperture_size) {
                return self.reject(r, code);
            }
            r.windows[w].enabled = true;
            return;
        }
        if r.windows[w].enabled {
            return self.reject(r, ErrorCode::Busy);
        }
        let win = &mut r.windows[w];
        match f {
            WIN_AP_LO => set_half(&mut win.ap_offset, false, v),
            WIN_AP_HI => set_half(&mut win.ap_offset, true, v),
            WIN_SIZE_LO => set_half(&mut win.size, false, v),
            WIN_SIZE_HI => set_half(&mut win.size, true, v),
            WIN_PCI_LO => set_half(&mut win.pci_addr, false, v),
            WIN_PCI_HI => set_half(&mut win.pci_addr, true, v),
            _ => bump(&self.stats.bad_register_accesses),
        }
    }

    fn doorbell_write(&self, r: &mut Regs, d: usize, f: u64, v: u32) {
        if f == DB_DATA {
            return bump(&self.stats.bad_register_accesses);
        }
        if r.link_up() {
            // Doorbells shape which host pages are trapped: fixed while a host sees them.
            return self.reject(r, ErrorCode::Busy);
        }
        match f {
            DB_CTRL if v & 1 == 0 => r.doorbells[d].enabled = false,
            DB_CTRL => match r.check_doorbell(d) {
                Ok(()) => r.doorbells[d].enabled = true,
                Err(code) => self.reject(r, code),
            },
            _ if r.doorbells[d].enabled => self.reject(r, ErrorCode::Busy),
            DB_BAR => r.doorbells[d].bar = v,
            DB_OFFSET => r.doorbells[d].offset = v,
            _ => bump(&self.stats.bad_register_accesses),
        }
    }

    // ------------------------------------------------------------------ start / stop

    fn set_started(&self, start: bool) {
        if !start {
            let was_up = {
                let mut r = self.regs();
                let up = r.link_up();
                r.started = false;
                up
            };
            if let Some(h) = self.host_ctl() {
                h.set_link_up(false);
            }
            if was_up {
                self.post(EV_LINK_DOWN);
            }
            return;
        }
        let mut host = lock(&self.host);
        let layout = {
            let mut r = self.regs();
            if r.started {
                return;
            }
            match HostLayout::from_regs(&r) {
                Ok(l) => l,
                Err(code) => return self.reject(&mut r, code),
            }
        };
        let reuse = host
            .as_ref()
            .is_some_and(|h| !h.stale && h.layout == layout);
        if !reuse {
            if host.is_some() && self.regs().host_attached {
                let mut r = self.regs();
                return self.reject(&mut r, ErrorCode::Busy);
            }
            if let Some(old) = host.take() {
                old.stop();
            }
            match self.lay_out(layout) {
                Ok(side) => *host = Some(side),
                Err((code, why)) => {
                    log::warn!("link: cannot present the function to the host: {why}");
                    let mut r = self.regs();
                    return self.reject(&mut r, code);
                }
            }
        }
        if let Some(h) = host.as_ref() {
            h.ctl.set_link_up(true);
        }
        drop(host);
        let up = {
            let mut r = self.regs();
            r.started = true;
            r.link_up()
        };
        if up {
            self.post(EV_LINK_UP);
        }
    }

    /// Builds and starts a host-side device for `layout`.
    fn lay_out(&self, layout: HostLayout) -> Result<HostSide, (ErrorCode, String)> {
        let ep = self
            .ep()
            .ok_or((ErrorCode::NotEpRam, "no EP side".to_string()))?;
        let spec = layout.spec();
        let mut backing: [Option<Arc<SharedMemory>>; BAR_COUNT] = Default::default();
        for (n, b) in layout.bars.iter().enumerate() {
            let Some(b) = b else { continue };
            let mem = ep
                .share(b.phys, b.backing_len())
                .map_err(|e| (ErrorCode::NotEpRam, format!("BAR {n}: {e}")))?;
            backing[n] = Some(Arc::new(mem));
        }
        let ctl = VfioUserController::new(&self.host_socket)
            .map_err(|e| (ErrorCode::Busy, format!("host socket: {e}")))?;
        let handler: Arc<dyn FunctionHandler> = Arc::new(HostHandler(self.me.clone()));
        ctl.start_backed(spec, handler, backing)
            .map_err(|e| (ErrorCode::BadHeader, format!("host-side function: {e}")))?;
        let thread = ctl
            .spawn()
            .map_err(|e| (ErrorCode::Busy, format!("host-side thread: {e}")))?;
        bump(&self.stats.host_layouts);
        log::info!(
            "link: function {:04x}:{:04x} presented on {}",
            layout.hdr[0] & 0xffff,
            layout.hdr[0] >> 16,
            self.host_socket.display()
        );
        Ok(HostSide {
            ctl,
            thread: Some(thread),
            layout,
            stale: false,
        })
    }

    // ------------------------------------------------------------------ interrupts to the host

    fn raise_host_irq(&self, v: u32) {
        let num = (v & 0xffff) as u16;
        let kind = (v >> 16) & 0xf;
        let host = self.host_ctl();
        let up = self.regs().link_up();
        let irq = match kind {
            IRQ_MSI if num > 0 => Some(Irq::Msi(num - 1)),
            IRQ_MSIX if num > 0 => Some(Irq::Msix(num - 1)),
            IRQ_INTX_ASSERT => Some(Irq::Intx(true)),
            IRQ_INTX_DEASSERT => Some(Irq::Intx(false)),
            _ => None,
        };
        let result = match (irq, host, up) {
            (None, _, _) => EINVAL,
            (_, None, _) | (_, _, false) => ENODEV,
            (Some(irq), Some(h), true) => match h.raise_irq(irq) {
                Ok(()) => {
                    bump(match irq {
                        Irq::Msi(_) => &self.stats.irqs_msi,
                        Irq::Msix(_) => &self.stats.irqs_msix,
                        Irq::Intx(_) => &self.stats.irqs_intx,
                    });
                    0
                }
                Err(EpcError::LinkDown) => ENODEV,
                Err(EpcError::IrqNotEnabled(_)) => EAGAIN,
                Err(EpcError::Unsupported(_)) | Err(EpcError::Invalid(_)) => EINVAL,
                Err(_) => EIO,
            },
        };
        if result != 0 {
            bump(&self.stats.irqs_refused);
        }
        let mut r = self.regs();
        r.irq_result = result;
        if result == EINVAL {
            self.reject(&mut r, ErrorCode::BadIrq);
        }
    }

    // ------------------------------------------------------------------ aperture and DMA

    /// Splits `[off, off+len)` of the aperture into host ranges, `None` if any byte is
    /// outside every window.
    fn aperture_ranges(&self, off: u64, len: u64) -> Option<Vec<(u64, u64)>> {
        let r = self.regs();
        let mut v = Vec::new();
        let mut cur = off;
        let end = off.checked_add(len)?;
        while cur < end {
            let (addr, left) = r.translate(cur)?;
            let n = left.min(end - cur);
            v.push((addr, n));
            cur += n;
        }
        Some(v)
    }

    /// An EP access to the aperture (BAR 2 of the controller).
    pub fn aperture_read(&self, off: u64, data: &mut [u8]) {
        bump(&self.stats.aperture_reads);
        let ok = self
            .aperture_ranges(off, data.len() as u64)
            .and_then(|ranges| {
                let mem = self.host_mem()?;
                let mut pos = 0;
                for (addr, n) in ranges {
                    mem.read(addr, &mut data[pos..pos + n as usize]).ok()?;
                    pos += n as usize;
                }
                Some(())
            });
        if ok.is_some() {
            add(&self.stats.aperture_bytes, data.len() as u64);
        } else {
            bump(&self.stats.aperture_unmapped);
            data.fill(0xff);
        }
    }

    /// An EP write to the aperture.
    pub fn aperture_write(&self, off: u64, data: &[u8]) {
        bump(&self.stats.aperture_writes);
        let ok = self
            .aperture_ranges(off, data.len() as u64)
            .and_then(|ranges| {
                let mem = self.host_mem()?;
                for &(addr, n) in &ranges {
                    mem.check_range(addr, n).ok()?;
                }
                let mut pos = 0;
                for (addr, n) in ranges {
                    mem.write(addr, &data[pos..pos + n as usize]).ok()?;
                    pos += n as usize;
                }
                Some(())
            });
        if ok.is_some() {
            add(&self.stats.aperture_bytes, data.len() as u64);
        } else {
            bump(&self.stats.aperture_unmapped);
        }
    }

    /// The pieces of a DMA address range: (memory, address, length). EP-physical addresses in
    /// the aperture go through the windows to host memory.
    fn dma_pieces(&self, addr: u64, len: u64, host_addr: bool) -> Option<Vec<Piece>> {
        if host_addr {
            return Some(vec![(self.host_mem()?, addr, len)]);
        }
        let base = self.regs().aperture_base;
        let end = addr.checked_add(len)?;
        if base != 0 && addr < base + self.aperture_size && end > base {
            if addr < base || end > base + self.aperture_size {
                return None;
            }
            let host = self.host_mem()?;
            let ranges = self.aperture_ranges(addr - base, len)?;
            return Some(
                ranges
                    .into_iter()
                    .map(|(a, n)| (Arc::clone(&host), a, n))
                    .collect(),
            );
        }
        Some(vec![(self.ep()?.ram(), addr, len)])
    }

    fn run_dma(&self, c: usize) {
        let d = self.regs().dma[c];
        let result = self.transfer(d.src, d.dst, d.len, d.ctrl);
        {
            let mut r = self.regs();
            let ch = &mut r.dma[c];
            ch.done = ch.done.wrapping_add(1);
            ch.status = match result {
                Ok(()) => DMA_DONE,
                Err(code) => DMA_FAILED | (code as u32) << 8,
            };
            if let Err(code) = result {
                self.reject(&mut r, code);
            }
        }
        match result {
            Ok(()) => {
                bump(&self.stats.dma_transfers);
                add(&self.stats.dma_bytes, u64::from(d.len));
            }
            Err(_) => bump(&self.stats.dma_errors),
        }
        self.post(ev_dma(c));
    }

    /// Copies `len` bytes: all of them, or none.
    fn transfer(&self, src: u64, dst: u64, len: u32, ctrl: u32) -> Result<(), ErrorCode> {
        if len == 0 || len > MAX_DMA_LEN {
            return Err(ErrorCode::BadDma);
        }
        let n = u64::from(len);
        let from = self
            .dma_pieces(src, n, ctrl & DMA_SRC_HOST != 0)
            .ok_or(ErrorCode::BadDma)?;
        let to = self
            .dma_pieces(dst, n, ctrl & DMA_DST_HOST != 0)
            .ok_or(ErrorCode::BadDma)?;
        for (mem, a, l) in &to {
            mem.check_range(*a, *l).map_err(|_| ErrorCode::BadDma)?;
        }
        let mut buf = vec![0u8; len as usize];
        let mut pos = 0;
        for (mem, a, l) in &from {
            mem.read(*a, &mut buf[pos..pos + *l as usize])
                .map_err(|_| ErrorCode::BadDma)?;
            pos += *l as usize;
        }
        pos = 0;
        for (mem, a, l) in &to {
            mem.write(*a, &buf[pos..pos + *l as usize])
                .map_err(|_| ErrorCode::BadDma)?;
            pos += *l as usize;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ EP resets

    /// The EP VM reset the controller or went away: everything it programmed is forgotten and
    /// the host sees no function until the EP starts one again.
    pub fn ep_reset(&self) {
        let was_started = {
            let mut r = self.regs();
            let s = r.started;
            r.reset();
            s
        };
        if let Some(h) = lock(&self.host).as_mut() {
            h.ctl.set_link_up(false);
            h.stale = true;
        }
        if was_started {
            log::info!("link: EP reset; the function is stopped");
        }
    }

    /// Stops the host-side device (process shutdown).
    pub fn shutdown(&self) {
        if let Some(h) = lock(&self.host).take() {
            h.stop();
        }
    }

    /// All counters as `name value` lines.
    pub fn report(&self, ep: Option<&epf_vfio_user::Stats>) -> String {
        let mut out = String::new();
        self.stats.format(&mut out, "link.");
        if let Some(s) = ep {
            stats::format_vfio(&mut out, "ep.", s);
        }
        if let Some(s) = self.host_stats() {
            stats::format_vfio(&mut out, "host.", &s);
        }
        out
    }

    // ------------------------------------------------------------------ host-side accesses

    fn host_bar_access(&self, bar: u8, off: u64, read: Option<&mut [u8]>, write: Option<&[u8]>) {
        let (b, up, dbs) = {
            let r = self.regs();
            let dbs: Vec<(usize, u64)> = r
                .doorbells
                .iter()
                .enumerate()
                .filter(|(_, d)| d.enabled && d.bar == u32::from(bar))
                .map(|(i, d)| (i, u64::from(d.offset)))
                .collect();
            (r.bars[bar as usize % BAR_COUNT], r.link_up(), dbs)
        };
        let Some(ep) = self.ep() else { return };
        if !up || !b.enabled {
            bump(&self.stats.host_while_down);
            if let Some(d) = read {
                d.fill(0xff);
            }
            return;
        }
        bump(&self.stats.host_forwarded);
        let Some(addr) = b.phys.checked_add(off) else {
            return;
        };
        if let Some(d) = read {
            if ep.ram().read(addr, d).is_err() {
                d.fill(0xff);
            }
            return;
        }
        let Some(data) = write else { return };
        if ep.ram().write(addr, data).is_err() {
            return;
        }
        let end = off + data.len() as u64;
        let mut rung = 0u32;
        for (i, db_off) in dbs {
            if off < db_off + 4 && db_off < end {
                let v = ep.ram().read_u32(b.phys + db_off).unwrap_or(0);
                let mut r = self.regs();
                r.doorbells[i].data = v;
                r.doorbell_pending |= 1 << i;
                rung += 1;
            }
        }
        if rung > 0 {
            add(&self.stats.doorbells, u64::from(rung));
            self.post(EV_DOORBELL);
        }
    }
}

/// The EP VM's side: the controller's BARs.
pub struct EpHandler(pub Arc<Link>);

impl FunctionHandler for EpHandler {
    fn bar_read(&self, bar: u8, offset: u64, data: &mut [u8]) {
        match bar {
            0 if data.len() == 4 && offset % 4 == 0 => {
                data.copy_from_slice(&self.0.reg_read(offset).to_le_bytes())
            }
            0 => bump(&self.0.stats.bad_register_accesses),
            2 => self.0.aperture_read(offset, data),
            _ => {}
        }
    }

    fn bar_write(&self, bar: u8, offset: u64, data: &[u8]) {
        match bar {
            0 if data.len() == 4 && offset % 4 == 0 => self.0.reg_write(
                offset,
                u32::from_le_bytes([data[0], data[1], data[2], data[3]]),
            ),
            0 => bump(&self.0.stats.bad_register_accesses),
            2 => self.0.aperture_write(offset, data),
            _ => {}
        }
    }

    fn link_reset(&self) {
        self.0.ep_reset();
    }
}

/// The host VM's side: trapped pages of the function's BARs, configuration writes, the host
/// coming and going.
struct HostHandler(Weak<Link>);

impl FunctionHandler for HostHandler {
    fn bar_read(&self, bar: u8, offset: u64, data: &mut [u8]) {
        if let Some(l) = self.0.upgrade() {
            l.host_bar_access(bar, offset, Some(data), None);
        }
    }

    fn bar_write(&self, bar: u8, offset: u64, data: &[u8]) {
        if let Some(l) = self.0.upgrade() {
            l.host_bar_access(bar, offset, None, Some(data));
        }
    }

    fn config_written(&self, offset: usize, data: &[u8]) {
        const PCI_COMMAND: usize = 4;
        const PCI_COMMAND_MASTER: u8 = 4;
        let Some(l) = self.0.upgrade() else { return };
        if offset <= PCI_COMMAND && PCI_COMMAND < offset + data.len() {
            let on = data[PCI_COMMAND - offset] & PCI_COMMAND_MASTER != 0;
            let rose = {
                let mut r = l.regs();
                let rose = on && !r.bme;
                r.bme = on;
                rose
            };
            if rose {
                l.post(EV_BME);
            }
        }
    }

    fn link_reset(&self) {
        if let Some(l) = self.0.upgrade() {
            l.regs().bme = false;
            l.post(EV_HOST_RESET);
        }
    }

    fn host_connected(&self, connected: bool) {
        let Some(l) = self.0.upgrade() else { return };
        let started = {
            let mut r = l.regs();
            r.host_attached = connected;
            if !connected {
                r.bme = false;
            }
            r.started
        };
        log::info!(
            "link: host {}",
            if connected { "attached" } else { "detached" }
        );
        if started {
            l.post(if connected { EV_LINK_UP } else { EV_LINK_DOWN });
        }
    }
}
