//! A register-file mock of a virtio-pci modern device, only as much as the host driver's
//! tests need: it stores what the driver writes and answers reads, with knobs for
//! misbehaviour (slow or stuck reset, unstable config generation). It processes no
//! virtqueues: the tests play the device's ring side by hand through `HostMemory`.
//! This is a test fixture, not a device implementation.

#![allow(dead_code, clippy::single_range_in_vec_init)]

use epf_epc::{
    AreaKind, BarArea, BarSpec, Capability, FunctionHandler, FunctionSpec, MsixSpec, PciHeader,
    PCI_CAP_ID_VNDR,
};
use std::sync::{Arc, Mutex};

pub const BAR_SIZE: u64 = 0x4000;
pub const COMMON: u64 = 0x000;
pub const ISR: u64 = 0x100;
pub const DEVICE: u64 = 0x200;
pub const DEVICE_LEN: u32 = 0x10;
pub const NOTIFY: u64 = 0x1000;
pub const NOTIFY_MULT: u32 = 4;
pub const TABLE: u64 = 0x2000;
pub const PBA: u64 = 0x3000;
pub const VECTORS: u16 = 8;
pub const NO_VECTOR: u16 = 0xffff;
pub const VERSION_1: u64 = 1 << 32;
pub const EVENT_IDX: u64 = 1 << 29;
pub const INDIRECT: u64 = 1 << 28;
/// Queue maxima: queue 2 is not available.
pub const QUEUE_MAX: [u16; 3] = [256, 4, 0];

#[derive(Debug, Clone, Copy, Default)]
pub struct MockQueue {
    pub size: u16,
    pub vector: u16,
    pub enable: u16,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

/// One access to the common configuration structure: (write?, offset, size, value).
pub type Access = (bool, u64, usize, u64);

#[derive(Debug)]
pub struct State {
    pub offered: u64,
    pub device_feature_select: u32,
    pub driver_feature_select: u32,
    pub driver_features: u64,
    pub status: u8,
    pub config_vector: u16,
    pub queue_select: u16,
    pub queues: Vec<MockQueue>,
    pub generation: u8,
    pub config: [u8; DEVICE_LEN as usize],
    pub isr: u8,
    pub notifies: Vec<(u64, Vec<u8>)>,
    pub common_log: Vec<Access>,
    pub pci_cfg: (u8, u32, u32),
    /// Status keeps reading its old value for this many reads after a reset.
    pub reset_delay: u32,
    pending_reset_reads: u32,
    /// Status never reads 0 after a reset.
    pub never_reset: bool,
    /// The generation changes on each of the next N generation reads.
    pub generation_flips: u32,
    pub resets: u32,
}

impl State {
    fn new(offered: u64) -> Self {
        State {
            offered,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            config_vector: NO_VECTOR,
            queue_select: 0,
            queues: QUEUE_MAX
                .iter()
                .map(|&m| MockQueue {
                    size: m,
                    vector: NO_VECTOR,
                    ..Default::default()
                })
                .collect(),
            generation: 0,
            config: std::array::from_fn(|i| 0x10 + i as u8),
            isr: 0,
            notifies: Vec::new(),
            common_log: Vec::new(),
            pci_cfg: (0, 0, 0),
            reset_delay: 0,
            pending_reset_reads: 0,
            never_reset: false,
            generation_flips: 0,
            resets: 0,
        }
    }

    fn reset(&mut self) {
        let keep = State {
            reset_delay: self.reset_delay,
            never_reset: self.never_reset,
            generation_flips: self.generation_flips,
            notifies: std::mem::take(&mut self.notifies),
            common_log: std::mem::take(&mut self.common_log),
            resets: self.resets + 1,
            generation: self.generation,
            ..State::new(self.offered)
        };
        *self = keep;
    }

    fn queue(&mut self) -> Option<&mut MockQueue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    fn common_image(&mut self) -> [u8; 0x38] {
        let mut b = [0u8; 0x38];
        let df = match self.device_feature_select {
            0 => self.offered as u32,
            1 => (self.offered >> 32) as u32,
            _ => 0,
        };
        let drf = match self.driver_feature_select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        };
        b[0..4].copy_from_slice(&self.device_feature_select.to_le_bytes());
        b[4..8].copy_from_slice(&df.to_le_bytes());
        b[8..12].copy_from_slice(&self.driver_feature_select.to_le_bytes());
        b[12..16].copy_from_slice(&drf.to_le_bytes());
        b[0x10..0x12].copy_from_slice(&self.config_vector.to_le_bytes());
        b[0x12..0x14].copy_from_slice(&(self.queues.len() as u16).to_le_bytes());
        b[0x14] = self.status;
        b[0x15] = self.generation;
        b[0x16..0x18].copy_from_slice(&self.queue_select.to_le_bytes());
        let sel = self.queue_select;
        if let Some(q) = self.queue().copied() {
            b[0x18..0x1a].copy_from_slice(&q.size.to_le_bytes());
            b[0x1a..0x1c].copy_from_slice(&q.vector.to_le_bytes());
            b[0x1c..0x1e].copy_from_slice(&q.enable.to_le_bytes());
            b[0x1e..0x20].copy_from_slice(&sel.to_le_bytes());
            b[0x20..0x28].copy_from_slice(&q.desc.to_le_bytes());
            b[0x28..0x30].copy_from_slice(&q.driver.to_le_bytes());
            b[0x30..0x38].copy_from_slice(&q.device.to_le_bytes());
        }
        b
    }

    fn common_read(&mut self, off: u64, data: &mut [u8]) {
        // Side effects of reading.
        if off == 0x14 && self.pending_reset_reads > 0 {
            self.pending_reset_reads -= 1;
            if self.pending_reset_reads == 0 && !self.never_reset {
                self.status = 0;
            }
        }
        if off == 0x15 && self.generation_flips > 0 {
            self.generation_flips -= 1;
            self.generation = self.generation.wrapping_add(1);
        }
        let img = self.common_image();
        for (i, b) in data.iter_mut().enumerate() {
            *b = img.get(off as usize + i).copied().unwrap_or(0);
        }
        let mut v = [0u8; 8];
        v[..data.len().min(8)].copy_from_slice(&data[..data.len().min(8)]);
        self.common_log
            .push((false, off, data.len(), u64::from_le_bytes(v)));
    }

    fn common_write(&mut self, off: u64, data: &[u8]) {
        let mut v8 = [0u8; 8];
        v8[..data.len().min(8)].copy_from_slice(&data[..data.len().min(8)]);
        let v = u64::from_le_bytes(v8);
        self.common_log.push((true, off, data.len(), v));
        let set_half = |x: &mut u64, hi: bool, v: u32| {
            if hi {
                *x = (*x & 0xffff_ffff) | (u64::from(v) << 32);
            } else {
                *x = (*x & !0xffff_ffff) | u64::from(v);
            }
        };
        match (off, data.len()) {
            (0x00, 4) => self.device_feature_select = v as u32,
            (0x08, 4) => self.driver_feature_select = v as u32,
            (0x0c, 4) => match self.driver_feature_select {
                0 => set_half(&mut self.driver_features, false, v as u32),
                1 => set_half(&mut self.driver_features, true, v as u32),
                _ => {}
            },
            (0x10, 2) => {
                self.config_vector = if (v as u16) < VECTORS {
                    v as u16
                } else {
                    NO_VECTOR
                }
            }
            (0x14, 1) => {
                let s = v as u8;
                if s == 0 {
                    let old = self.status;
                    let (delay, never) = (self.reset_delay, self.never_reset);
                    self.reset();
                    if never || delay > 0 {
                        self.status = old;
                        self.pending_reset_reads = if never { u32::MAX } else { delay };
                    }
                } else if s & 8 != 0 && self.status & 8 == 0 {
                    let ok = self.driver_features & !self.offered == 0
                        && self.driver_features & VERSION_1 != 0;
                    self.status = if ok { s } else { s & !8 };
                } else {
                    self.status = s;
                }
            }
            (0x16, 2) => self.queue_select = v as u16,
            (0x18, 2) => {
                if let Some(q) = self.queue() {
                    q.size = v as u16
                }
            }
            (0x1a, 2) => {
                if let Some(q) = self.queue() {
                    q.vector = if (v as u16) < VECTORS {
                        v as u16
                    } else {
                        NO_VECTOR
                    }
                }
            }
            (0x1c, 2) => {
                if let Some(q) = self.queue() {
                    q.enable = v as u16
                }
            }
            (o @ 0x20..=0x37, 4) if o % 4 == 0 => {
                if let Some(q) = self.queue() {
                    let field = match o & !7 {
                        0x20 => &mut q.desc,
                        0x28 => &mut q.driver,
                        _ => &mut q.device,
                    };
                    set_half(field, o % 8 == 4, v as u32);
                }
            }
            (o @ (0x20 | 0x28 | 0x30), 8) => {
                if let Some(q) = self.queue() {
                    match o {
                        0x20 => q.desc = v,
                        0x28 => q.driver = v,
                        _ => q.device = v,
                    }
                }
            }
            _ => {}
        }
    }
}

/// The mock's handler.
pub struct MockVirtio {
    pub state: Mutex<State>,
    /// Config-space offset of the PCI configuration access capability.
    pub pci_cfg_cap: usize,
}

impl MockVirtio {
    pub fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn read(&self, off: u64, data: &mut [u8]) {
        let mut s = self.st();
        match off {
            o if o < ISR => s.common_read(o - COMMON, data),
            o if o < DEVICE => {
                if o == ISR {
                    data[0] = s.isr;
                    s.isr = 0;
                }
            }
            o => {
                let i = (o - DEVICE) as usize;
                for (k, b) in data.iter_mut().enumerate() {
                    *b = s.config.get(i + k).copied().unwrap_or(0);
                }
            }
        }
    }
}

impl FunctionHandler for MockVirtio {
    fn bar_read(&self, _bar: u8, offset: u64, data: &mut [u8]) {
        self.read(offset, data);
    }

    fn bar_write(&self, _bar: u8, offset: u64, data: &[u8]) {
        let mut s = self.st();
        if offset >= NOTIFY {
            s.notifies.push((offset, data.to_vec()));
        } else if offset < ISR {
            s.common_write(offset - COMMON, data);
        } else if offset >= DEVICE {
            let i = (offset - DEVICE) as usize;
            for (k, b) in data.iter().enumerate() {
                if let Some(c) = s.config.get_mut(i + k) {
                    *c = *b;
                }
            }
        }
    }

    fn config_read(&self, offset: usize, data: &mut [u8]) {
        let rel = offset - self.pci_cfg_cap;
        let (bar, off, len) = self.st().pci_cfg;
        let mut regs = [0u8; 20];
        regs[4] = bar;
        regs[8..12].copy_from_slice(&off.to_le_bytes());
        regs[12..16].copy_from_slice(&len.to_le_bytes());
        if rel >= 16 && bar == 0 && matches!(len, 1 | 2 | 4) {
            let mut w = [0u8; 4];
            self.read(u64::from(off), &mut w[..len as usize]);
            regs[16..20].copy_from_slice(&w);
        }
        for (i, b) in data.iter_mut().enumerate() {
            *b = regs.get(rel + i).copied().unwrap_or(0);
        }
    }

    fn config_write(&self, offset: usize, data: &[u8]) {
        let rel = offset - self.pci_cfg_cap;
        let mut s = self.st();
        let mut regs = [0u8; 20];
        regs[4] = s.pci_cfg.0;
        regs[8..12].copy_from_slice(&s.pci_cfg.1.to_le_bytes());
        regs[12..16].copy_from_slice(&s.pci_cfg.2.to_le_bytes());
        for (i, b) in data.iter().enumerate() {
            if let Some(r) = regs.get_mut(rel + i) {
                *r = *b;
            }
        }
        s.pci_cfg = (
            regs[4],
            u32::from_le_bytes(regs[8..12].try_into().unwrap()),
            u32::from_le_bytes(regs[12..16].try_into().unwrap()),
        );
    }

    fn link_reset(&self) {
        self.st().reset();
    }
}

/// A virtio_pci_cap body (everything after cap_vndr and cap_next).
pub fn virtio_cap(cfg_type: u8, offset: u32, length: u32, extra: &[u8]) -> Vec<u8> {
    let mut b = vec![(16 + extra.len()) as u8, cfg_type, 0, 0, 0, 0];
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&length.to_le_bytes());
    b.extend_from_slice(extra);
    b
}

/// Knobs for building the mock function.
#[derive(Clone)]
pub struct MockOptions {
    pub vendor_id: u16,
    pub device_id: u16,
    pub offered: u64,
    /// Capability bodies (cfg_type, body) in list order; the PCI_CFG one gets trapped.
    pub caps: Vec<Vec<u8>>,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            vendor_id: 0x1af4,
            device_id: 0x1044,
            offered: VERSION_1 | EVENT_IDX | INDIRECT | 1,
            caps: vec![
                virtio_cap(1, COMMON as u32, 0x38, &[]),
                virtio_cap(2, NOTIFY as u32, 0x1000, &NOTIFY_MULT.to_le_bytes()),
                virtio_cap(3, ISR as u32, 4, &[]),
                virtio_cap(4, DEVICE as u32, DEVICE_LEN, &[]),
                virtio_cap(5, 0, 0, &[0; 4]),
            ],
        }
    }
}

/// Builds the function spec and handler.
pub fn mock(opts: &MockOptions) -> (FunctionSpec, Arc<MockVirtio>) {
    let mut capabilities = Vec::new();
    let mut pos = 0x40usize;
    let mut pci_cfg_cap = 0;
    for body in &opts.caps {
        let is_pci_cfg = body[1] == 5;
        if is_pci_cfg {
            pci_cfg_cap = pos;
        }
        capabilities.push(Capability {
            id: PCI_CAP_ID_VNDR,
            body: body.clone(),
            writable: vec![],
            trapped: if is_pci_cfg { vec![4..20] } else { vec![] },
        });
        // ConfigSpace places capabilities back to back, dword aligned.
        pos += (2 + body.len() + 3) & !3;
    }
    let area = |offset, size, kind| BarArea { offset, size, kind };
    let spec = FunctionSpec {
        header: PciHeader {
            vendor_id: opts.vendor_id,
            device_id: opts.device_id,
            revision_id: 1,
            class_code: 0xff_00_00,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x40,
            interrupt_pin: 1,
        },
        capabilities,
        bars: [
            Some(BarSpec {
                size: BAR_SIZE,
                is_64bit: false,
                prefetchable: false,
                areas: vec![
                    area(0, 0x400, AreaKind::Trapped),
                    area(NOTIFY, 0x1000, AreaKind::Doorbell),
                    area(TABLE, 0x100, AreaKind::MsixTable),
                    area(PBA, 8, AreaKind::MsixPba),
                ],
            }),
            None,
            None,
            None,
            None,
            None,
        ],
        msix: Some(MsixSpec {
            vectors: VECTORS,
            table_bar: 0,
            table_offset: TABLE,
            pba_bar: 0,
            pba_offset: PBA,
        }),
    };
    let handler = Arc::new(MockVirtio {
        state: Mutex::new(State::new(opts.offered)),
        pci_cfg_cap,
    });
    (spec, handler)
}
