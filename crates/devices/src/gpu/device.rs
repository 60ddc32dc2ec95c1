//! [`GpuDevice`]: the control queue (2D commands) and the cursor queue, executed on the
//! worker thread. Every command is read by copy, validated, and answered with the spec's
//! response; nothing the host sends makes the device fail except a broken ring.

use super::counters::{bump, GpuCounters};
use super::display::{Display, CURSOR_SIZE};
use super::edid::edid;
use super::protocol::*;
use super::resources::Resources;
use super::scanout::{self, Scanout};
use epf_device::{
    ConfigWriteHook, CounterSource, DescriptorChain, DeviceContext, DeviceError, VirtioDevice,
    Waker,
};
use epf_epc::{sync, HostMemory};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use virtio_bindings::virtio_ids::VIRTIO_ID_GPU;

const CONTROLQ: usize = 0;
const CURSORQ: usize = 1;
const QUEUE_SIZE: u16 = 256;
/// Configuration space: events_read, events_clear, num_scanouts, num_capsets.
const CONFIG_LEN: usize = 16;
const EVENTS_READ: usize = 0;
const EVENTS_CLEAR: usize = 4;
/// Longest fixed part of a command (TRANSFER_TO_HOST_2D, UPDATE_CURSOR).
const MAX_FIXED: usize = 56;
/// Largest side of a scanout (what viewers and PNG files are asked to hold; Linux's driver
/// stops at 8192).
pub const MAX_SCANOUT_SIDE: u32 = 16384;
/// Backing entries read per step of an ATTACH_BACKING.
const ENTRY_BATCH: usize = 256;

/// How the device is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuConfig {
    /// Outputs (scanouts), 1 to 16.
    pub outputs: u32,
    /// Every output's native mode.
    pub width: u32,
    pub height: u32,
    /// Resource memory the driver may use at most, in bytes.
    pub max_memory: u64,
}

/// An output's mode as the driver is told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mode {
    width: u32,
    height: u32,
    enabled: bool,
}

/// Changes to the outputs asked for from outside the worker (a resize, a connect), applied by
/// the device on its next wake-up with a display-change event to the driver.
#[derive(Debug, Default)]
pub struct DisplayControl {
    pending: Mutex<Vec<(usize, u32, u32, bool)>>,
    waker: Mutex<Option<Waker>>,
}

impl DisplayControl {
    /// The changes not yet applied (taken: a test's view of what was asked).
    pub fn pending(&self) -> Vec<(usize, u32, u32, bool)> {
        std::mem::take(&mut *sync::lock(&self.pending))
    }

    /// Output `output` becomes `width` x `height`, connected or not.
    pub fn set_mode(&self, output: usize, width: u32, height: u32, enabled: bool) {
        sync::lock(&self.pending).push((output, width, height, enabled));
        if let Some(w) = sync::lock(&self.waker).as_ref() {
            w.wake();
        }
    }
}

/// The virtio-gpu device (2D).
pub struct GpuDevice {
    cfg: GpuConfig,
    modes: Vec<Mode>,
    scanouts: Vec<Option<Scanout>>,
    resources: Resources,
    display: Arc<Display>,
    control: Arc<DisplayControl>,
    counters: Arc<GpuCounters>,
    chain: DescriptorChain,
}

impl GpuDevice {
    /// A device with `cfg.outputs` outputs at `cfg.width` x `cfg.height`.
    pub fn new(cfg: GpuConfig) -> GpuDevice {
        let n = cfg.outputs.clamp(1, MAX_SCANOUTS as u32) as usize;
        GpuDevice {
            cfg,
            modes: vec![
                Mode {
                    width: cfg.width,
                    height: cfg.height,
                    enabled: true,
                };
                n
            ],
            scanouts: vec![None; n],
            resources: Resources::new(cfg.max_memory),
            display: Arc::new(Display::new(n, cfg.width, cfg.height)),
            control: Arc::default(),
            counters: Arc::default(),
            chain: DescriptorChain::default(),
        }
    }

    /// What the outputs show (for snapshots and viewers).
    pub fn display(&self) -> Arc<Display> {
        self.display.clone()
    }

    /// The handle that resizes or (dis)connects outputs at run time.
    pub fn control(&self) -> Arc<DisplayControl> {
        self.control.clone()
    }

    /// The counters (also handed to the transport by `stats`).
    pub fn counters(&self) -> Arc<GpuCounters> {
        self.counters.clone()
    }

    fn update_resource_counters(&self) {
        self.counters
            .resources
            .store(self.resources.count() as u64, Ordering::Relaxed);
        self.counters
            .resource_bytes
            .store(self.resources.used(), Ordering::Relaxed);
    }

    fn scanout_index(&self, id: u32) -> Result<usize, GpuError> {
        let i = id as usize;
        if i < self.scanouts.len() {
            Ok(i)
        } else {
            Err(GpuError::InvalidScanoutId)
        }
    }

    /// Turns off every output showing resource `id`.
    fn drop_scanouts_of(&mut self, id: u32) {
        for i in 0..self.scanouts.len() {
            if self.scanouts[i].is_some_and(|s| s.resource_id == id) {
                self.scanouts[i] = None;
                let m = self.modes[i];
                scanout::blank(&self.display, i, m.width, m.height);
            }
        }
    }

    /// Executes one control command; returns the response (header and payload).
    fn control_command(
        &mut self,
        hdr: &Header,
        body: &[u8],
        r: &mut epf_device::ChainReader<'_>,
        mem: &dyn HostMemory,
    ) -> Result<Vec<u8>, GpuError> {
        let c = &self.counters;
        match hdr.kind {
            CMD_GET_DISPLAY_INFO => {
                bump(&c.get_display_info);
                let mut out = hdr.response(RESP_OK_DISPLAY_INFO).to_vec();
                for i in 0..MAX_SCANOUTS {
                    let m = self.modes.get(i).copied().unwrap_or(Mode {
                        width: 0,
                        height: 0,
                        enabled: false,
                    });
                    let (w, h) = if m.enabled {
                        (m.width, m.height)
                    } else {
                        (0, 0)
                    };
                    Rect {
                        x: 0,
                        y: 0,
                        width: w,
                        height: h,
                    }
                    .encode(&mut out);
                    out.extend_from_slice(&u32::from(m.enabled).to_le_bytes());
                    out.extend_from_slice(&0u32.to_le_bytes());
                }
                Ok(out)
            }
            CMD_GET_EDID => {
                bump(&c.get_edid);
                let i = self
                    .scanout_index(u32_at(body, 0))
                    .map_err(|_| GpuError::InvalidParameter)?;
                let m = self.modes[i];
                let e = edid(i as u32, m.width, m.height);
                let mut out = hdr.response(RESP_OK_EDID).to_vec();
                out.extend_from_slice(&(e.len() as u32).to_le_bytes());
                out.extend_from_slice(&0u32.to_le_bytes());
                out.extend_from_slice(&e);
                out.resize(HDR_LEN + 8 + EDID_MAX, 0);
                Ok(out)
            }
            CMD_RESOURCE_CREATE_2D => {
                bump(&c.create_2d);
                self.resources.create(
                    u32_at(body, 0),
                    u32_at(body, 4),
                    u32_at(body, 8),
                    u32_at(body, 12),
                )?;
                self.update_resource_counters();
                Ok(hdr.response(RESP_OK_NODATA).to_vec())
            }
            CMD_RESOURCE_UNREF => {
                bump(&c.unref);
                let id = u32_at(body, 0);
                self.resources.unref(id)?;
                self.drop_scanouts_of(id);
                self.update_resource_counters();
                Ok(hdr.response(RESP_OK_NODATA).to_vec())
            }
            CMD_SET_SCANOUT => {
                bump(&c.set_scanout);
                let rect = Rect::parse(body, 0);
                let i = self.scanout_index(u32_at(body, 16))?;
                let id = u32_at(body, 20);
                if id == 0 {
                    self.scanouts[i] = None;
                    let m = self.modes[i];
                    scanout::blank(&self.display, i, m.width, m.height);
                    return Ok(hdr.response(RESP_OK_NODATA).to_vec());
                }
                let res = self.resources.get(id)?;
                if rect.is_empty()
                    || !rect.within(res.width, res.height)
                    || rect.width > MAX_SCANOUT_SIDE
                    || rect.height > MAX_SCANOUT_SIDE
                {
                    return Err(GpuError::InvalidParameter);
                }
                scanout::show(&self.display, i, res, rect);
                self.scanouts[i] = Some(Scanout {
                    resource_id: id,
                    rect,
                });
                Ok(hdr.response(RESP_OK_NODATA).to_vec())
            }
            CMD_RESOURCE_FLUSH => {
                bump(&c.flush);
                let rect = Rect::parse(body, 0);
                let id = u32_at(body, 16);
                let res = self.resources.get(id)?;
                if !rect.within(res.width, res.height) {
                    return Err(GpuError::InvalidParameter);
                }
                for (i, s) in self.scanouts.iter().enumerate() {
                    if let Some(s) = s.filter(|s| s.resource_id == id) {
                        if scanout::flush(&self.display, i, res, &s, &rect) {
                            bump(&c.frames_flushed);
                        }
                    }
                }
                Ok(hdr.response(RESP_OK_NODATA).to_vec())
            }
            CMD_TRANSFER_TO_HOST_2D => {
                bump(&c.transfer_2d);
                let rect = Rect::parse(body, 0);
                let offset = u64_at(body, 16);
                let id = u32_at(body, 24);
                let n = self.resources.transfer(id, rect, offset, mem)?;
                c.bytes_transferred.fetch_add(n, Ordering::Relaxed);
                Ok(hdr.response(RESP_OK_NODATA).to_vec())
            }
            CMD_RESOURCE_ATTACH_BACKING => {
                bump(&c.attach_backing);
                let id = u32_at(body, 0);
                let nr = u32_at(body, 4);
                self.resources.check_attach(id, nr)?;
                let nr = nr as usize;
                if r.remaining() < nr * 16 {
                    return Err(GpuError::InvalidParameter);
                }
                let mut entries = Vec::with_capacity(nr);
                let mut raw = [0u8; 16 * ENTRY_BATCH];
                while entries.len() < nr {
                    let k = (nr - entries.len()).min(ENTRY_BATCH);
                    r.read_exact(&mut raw[..k * 16])
                        .map_err(|_| GpuError::InvalidParameter)?;
                    for e in raw[..k * 16].chunks_exact(16) {
                        entries.push((u64_at(e, 0), u32_at(e, 8)));
                    }
                }
                self.resources.attach(id, entries, mem)?;
                self.update_resource_counters();
                Ok(hdr.response(RESP_OK_NODATA).to_vec())
            }
            CMD_RESOURCE_DETACH_BACKING => {
                bump(&c.detach_backing);
                self.resources.detach(u32_at(body, 0))?;
                self.update_resource_counters();
                Ok(hdr.response(RESP_OK_NODATA).to_vec())
            }
            _ => {
                bump(&c.unsupported);
                Err(GpuError::Unspec)
            }
        }
    }

    /// Executes one cursor command (they have no response).
    fn cursor_command(&mut self, hdr: &Header, body: &[u8]) -> Result<(), GpuError> {
        let scanout = u32_at(body, 0);
        let (x, y) = (u32_at(body, 4), u32_at(body, 8));
        let id = u32_at(body, 16);
        let (hot_x, hot_y) = (u32_at(body, 20), u32_at(body, 24));
        match hdr.kind {
            CMD_MOVE_CURSOR => bump(&self.counters.move_cursor),
            CMD_UPDATE_CURSOR => bump(&self.counters.update_cursor),
            _ => {}
        }
        self.scanout_index(scanout)?;
        let image = match hdr.kind {
            CMD_MOVE_CURSOR => None,
            CMD_UPDATE_CURSOR => {
                if id == 0 {
                    Some(None)
                } else {
                    let res = self.resources.get(id)?;
                    if res.width != CURSOR_SIZE || res.height != CURSOR_SIZE {
                        return Err(GpuError::InvalidParameter);
                    }
                    let px = res
                        .pixels
                        .chunks_exact(BYTES_PER_PIXEL as usize)
                        .map(|p| res.format.to_argb(p))
                        .collect();
                    Some(Some(px))
                }
            }
            _ => {
                bump(&self.counters.unsupported);
                return Err(GpuError::Unspec);
            }
        };
        let mut s = self.display.lock();
        let cur = &mut s.cursor;
        cur.scanout = scanout;
        cur.x = x;
        cur.y = y;
        if let Some(image) = image {
            cur.hot_x = hot_x.min(CURSOR_SIZE - 1);
            cur.hot_y = hot_y.min(CURSOR_SIZE - 1);
            cur.image = image;
        }
        cur.serial += 1;
        let visible = cur.image.is_some();
        drop(s);
        self.display.notify();
        let c = &self.counters;
        c.cursor_scanout
            .store(u64::from(scanout), Ordering::Relaxed);
        c.cursor_x.store(u64::from(x), Ordering::Relaxed);
        c.cursor_y.store(u64::from(y), Ordering::Relaxed);
        c.cursor_visible
            .store(u64::from(visible), Ordering::Relaxed);
        Ok(())
    }

    fn process(&mut self, q: usize, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        let mem = ctx.memory().clone();
        loop {
            let queue = ctx.queue(q)?;
            if !queue.pop(&mut self.chain).map_err(DeviceError::queue(q))? {
                return Ok(());
            }
            let chain = std::mem::take(&mut self.chain);
            let mut r = chain.reader(mem.as_ref());
            let mut head = [0u8; HDR_LEN];
            let n = r.read(&mut head).map_err(DeviceError::queue(q))?;
            let hdr = Header::parse(&head);
            let mut body = [0u8; MAX_FIXED - HDR_LEN];
            let body_len = r.read(&mut body).map_err(DeviceError::queue(q))?;
            let fixed = body_len + n;
            let result = if n < HDR_LEN || fixed < fixed_len(hdr.kind) {
                Err(GpuError::Unspec)
            } else {
                // Re-position the reader after the fixed part (attach's entries follow it).
                let mut r = chain.reader(mem.as_ref());
                r.skip(fixed_len(hdr.kind));
                if q == CONTROLQ {
                    self.control_command(&hdr, &body, &mut r, mem.as_ref())
                } else {
                    self.cursor_command(&hdr, &body).map(|()| Vec::new())
                }
            };
            let resp = match result {
                Ok(resp) => resp,
                Err(e) => {
                    bump(&self.counters.errors);
                    log::debug!("gpu command {:#x}: {e:?}", hdr.kind);
                    if q == CONTROLQ {
                        hdr.response(e.response()).to_vec()
                    } else {
                        Vec::new()
                    }
                }
            };
            let mut w = chain.writer(mem.as_ref());
            let fit = resp.len().min(w.remaining());
            w.write_all(&resp[..fit]).map_err(DeviceError::queue(q))?;
            let written = w.written();
            self.chain = chain;
            ctx.queue(q)?
                .add_used(self.chain.head(), written)
                .map_err(DeviceError::queue(q))?;
        }
    }

    /// Applies pending output changes and raises a display event for them.
    fn apply_display_changes(&mut self, ctx: &mut DeviceContext<'_>) {
        let pending = self.control.pending();
        if pending.is_empty() {
            return;
        }
        for (i, w, h, enabled) in pending {
            if let Some(m) = self.modes.get_mut(i) {
                *m = Mode {
                    width: w,
                    height: h,
                    enabled,
                };
            }
        }
        let mut ev = [0u8; 4];
        ctx.config().read(EVENTS_READ as u64, &mut ev);
        let events = u32::from_le_bytes(ev) | EVENT_DISPLAY;
        ctx.config().update(EVENTS_READ, &events.to_le_bytes());
        bump(&self.counters.display_events);
    }
}

/// Bytes of the fixed part of each command (header included); unknown commands need just
/// the header.
fn fixed_len(kind: u32) -> usize {
    HDR_LEN
        + match kind {
            CMD_GET_EDID | CMD_RESOURCE_UNREF | CMD_RESOURCE_DETACH_BACKING => 8,
            CMD_RESOURCE_CREATE_2D => 16,
            CMD_SET_SCANOUT | CMD_RESOURCE_FLUSH => 24,
            CMD_TRANSFER_TO_HOST_2D | CMD_UPDATE_CURSOR | CMD_MOVE_CURSOR => 32,
            CMD_RESOURCE_ATTACH_BACKING => 8,
            _ => 0,
        }
}

impl VirtioDevice for GpuDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_GPU
    }

    fn device_features(&self) -> u64 {
        1 << F_EDID
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; 2]
    }

    fn initial_config(&self) -> Vec<u8> {
        let mut c = vec![0u8; CONFIG_LEN];
        c[8..12].copy_from_slice(&(self.scanouts.len() as u32).to_le_bytes());
        c
    }

    fn config_write_hook(&self) -> Option<ConfigWriteHook> {
        Some(Box::new(|bytes, offset, data| {
            // events_clear: each 1 bit written clears that event in events_read.
            if !(EVENTS_CLEAR..EVENTS_CLEAR + 4).contains(&offset) || bytes.len() < CONFIG_LEN {
                return;
            }
            for (k, &b) in data.iter().enumerate() {
                let at = offset - EVENTS_CLEAR + k;
                if at < 4 {
                    bytes[EVENTS_READ + at] &= !b;
                }
            }
        }))
    }

    fn activate(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        *sync::lock(&self.control.waker) = Some(ctx.waker());
        self.apply_display_changes(ctx);
        Ok(())
    }

    fn queue_notify(&mut self, q: usize, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        match q {
            CONTROLQ | CURSORQ => self.process(q, ctx),
            _ => Ok(()),
        }
    }

    fn wake(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        self.apply_display_changes(ctx);
        Ok(())
    }

    fn reset(&mut self) {
        self.resources.clear();
        for i in 0..self.scanouts.len() {
            self.scanouts[i] = None;
            let m = self.modes[i];
            scanout::blank(&self.display, i, m.width, m.height);
        }
        let mut s = self.display.lock();
        s.cursor.image = None;
        s.cursor.serial += 1;
        drop(s);
        self.counters.cursor_visible.store(0, Ordering::Relaxed);
        self.update_resource_counters();
    }

    fn stats(&self) -> Option<Arc<dyn CounterSource>> {
        Some(self.counters.clone())
    }
}

impl GpuDevice {
    /// The configuration it was built with.
    pub fn config(&self) -> GpuConfig {
        self.cfg
    }
}
