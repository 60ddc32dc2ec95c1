//! The virtio-pci register file and device status machine, independent of how register
//! accesses arrive.
//!
//! Everything here is an *operation* on the state (write the status, select a queue, set its
//! size, ...), never a raw offset, so that the decoders of trapped accesses (`common_cfg` for
//! the modern layout, `legacy_cfg` for the legacy one) and the polled legacy engine
//! ([`crate::legacy_poll`], fed by snapshots of BAR memory) drive exactly the same machine. Operations return an [`Effect`]
//! the function carries out outside the lock (activate or reset the device worker).
//!
//! Reset is two-phase: when the driver writes 0 while the device is active, the registers go
//! back to their initial values at once, but `device_status` keeps reading the old value
//! until the worker has quiesced the device and called [`Registers::reset_complete`]. A driver
//! polls for 0 (Linux does), so it never sees a half-reset device.

use crate::NO_VECTOR;
use epf_virtqueue::QueueConfig;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1,
};

const DRIVER_OK: u8 = VIRTIO_CONFIG_S_DRIVER_OK as u8;
const FEATURES_OK: u8 = VIRTIO_CONFIG_S_FEATURES_OK as u8;
const NEEDS_RESET: u8 = VIRTIO_CONFIG_S_NEEDS_RESET as u8;
const FAILED: u8 = VIRTIO_CONFIG_S_FAILED as u8;

/// Driver feature words beyond the first two that are kept as registers.
const HIGH_FEATURE_WORDS: usize = 6;

/// Per-queue registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRegs {
    pub max_size: u16,
    pub size: u16,
    pub msix_vector: u16,
    pub enabled: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

impl QueueRegs {
    fn new(max_size: u16) -> Self {
        QueueRegs {
            max_size,
            size: max_size,
            msix_vector: NO_VECTOR,
            enabled: false,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }
}

/// Which ring address of the selected queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingAddr {
    Desc,
    Driver,
    Device,
}

/// Which part of a 64-bit register a write covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Low,
    High,
    Full,
}

/// What the driver's negotiation produced, handed to the worker at DRIVER_OK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub epoch: u64,
    pub features: u64,
    /// `Some` for each queue the driver enabled.
    pub queues: Vec<Option<QueueConfig>>,
    pub queue_vectors: Vec<u16>,
}

/// Work the function must do after an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    Activate(Activation),
    /// Quiesce and reset the device, then call [`Registers::reset_complete`] with `epoch`.
    Reset {
        epoch: u64,
    },
}

/// The register file.
#[derive(Debug)]
pub struct Registers {
    device_features: u64,
    num_vectors: u16,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    /// Driver feature words 2..=7 (bits 64..=255) as last written. We offer none of them, so
    /// any bit set here refuses FEATURES_OK; a word written back to 0 no longer counts.
    driver_features_high: [u32; HIGH_FEATURE_WORDS],
    /// The driver set a bit in a feature word past those (sticky until reset, so that the
    /// state stays bounded whatever selectors a driver writes).
    driver_features_beyond: bool,
    config_msix_vector: u16,
    status: u8,
    queue_select: u16,
    queues: Vec<QueueRegs>,
    /// Bumped on every reset; ties worker reports to the negotiation they belong to.
    epoch: u64,
    /// `Some(old status)` while a reset waits for the worker.
    reset_pending: Option<u8>,
    /// An activation was handed to the worker since the last reset.
    active: bool,
    /// Legacy (virtio 0.9.5) semantics: one 32-bit feature word, no FEATURES_OK, no
    /// VERSION_1, queues configured by page frame number.
    legacy: bool,
}

/// Legacy interface: ring addresses are page frame numbers of this shift...
pub const LEGACY_QUEUE_ADDR_SHIFT: u32 = 12;
/// ...and the used ring starts at the next multiple of this alignment.
pub const LEGACY_VRING_ALIGN: u64 = 4096;

/// The split-ring layout a legacy driver uses for a queue of `size` at page frame `pfn`
/// (virtio 0.9.5 / virtio 1.2 section 2.7.2 "Legacy Interfaces: A Note on Virtqueue Layout").
pub fn legacy_queue_config(pfn: u32, size: u16) -> QueueConfig {
    let desc = (pfn as u64) << LEGACY_QUEUE_ADDR_SHIFT;
    let avail = desc + 16 * size as u64;
    let avail_end = avail + 6 + 2 * size as u64;
    QueueConfig {
        size,
        desc_addr: desc,
        avail_addr: avail,
        used_addr: avail_end.div_ceil(LEGACY_VRING_ALIGN) * LEGACY_VRING_ALIGN,
    }
}

impl Registers {
    /// A device offering `device_features` with queues of the given maximum sizes and
    /// `num_vectors` MSI-X vectors.
    pub fn new(device_features: u64, queue_max_sizes: &[u16], num_vectors: u16) -> Self {
        Registers {
            device_features,
            num_vectors,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            driver_features_high: [0; HIGH_FEATURE_WORDS],
            driver_features_beyond: false,
            config_msix_vector: NO_VECTOR,
            status: 0,
            queue_select: 0,
            queues: queue_max_sizes.iter().map(|&m| QueueRegs::new(m)).collect(),
            epoch: 0,
            reset_pending: None,
            active: false,
            legacy: false,
        }
    }

    /// The same device behind the legacy interface: only the low 32 feature bits exist.
    pub fn new_legacy(device_features: u64, queue_max_sizes: &[u16], num_vectors: u16) -> Self {
        let mut r = Self::new(device_features & 0xffff_ffff, queue_max_sizes, num_vectors);
        r.legacy = true;
        r
    }

    fn clear(&mut self) {
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.driver_features_high = [0; HIGH_FEATURE_WORDS];
        self.driver_features_beyond = false;
        self.config_msix_vector = NO_VECTOR;
        self.status = 0;
        self.queue_select = 0;
        for q in &mut self.queues {
            *q = QueueRegs::new(q.max_size);
        }
    }

    /// The features offered.
    pub fn device_features(&self) -> u64 {
        self.device_features
    }

    /// The features the driver accepted so far.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    pub fn device_feature_select(&self) -> u32 {
        self.device_feature_select
    }

    pub fn set_device_feature_select(&mut self, v: u32) {
        self.device_feature_select = v;
    }

    /// The 32-bit feature word selected by `device_feature_select`; words past 64 bits are 0.
    pub fn device_feature_word(&self) -> u32 {
        match self.device_feature_select {
            0 => self.device_features as u32,
            1 => (self.device_features >> 32) as u32,
            _ => 0,
        }
    }

    pub fn driver_feature_select(&self) -> u32 {
        self.driver_feature_select
    }

    pub fn set_driver_feature_select(&mut self, v: u32) {
        self.driver_feature_select = v;
    }

    /// The selected word of the driver's features.
    pub fn driver_feature_word(&self) -> u32 {
        match self.driver_feature_select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            s => self
                .driver_features_high
                .get(s as usize - 2)
                .copied()
                .unwrap_or(0),
        }
    }

    /// Writes the selected word of the driver's features. Ignored once FEATURES_OK is set.
    pub fn set_driver_feature_word(&mut self, v: u32) {
        if self.writes_blocked() || self.status & FEATURES_OK != 0 {
            return;
        }
        match self.driver_feature_select {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v as u64,
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | ((v as u64) << 32),
            s => match self.driver_features_high.get_mut(s as usize - 2) {
                Some(w) => *w = v,
                None => self.driver_features_beyond |= v != 0,
            },
        }
    }

    pub fn config_msix_vector(&self) -> u16 {
        self.config_msix_vector
    }

    /// Sets the configuration vector; a vector we don't have reads back as NO_VECTOR.
    pub fn set_config_msix_vector(&mut self, v: u16) {
        if !self.writes_blocked() {
            self.config_msix_vector = self.valid_vector(v);
        }
    }

    fn valid_vector(&self, v: u16) -> u16 {
        if v < self.num_vectors {
            v
        } else {
            NO_VECTOR
        }
    }

    pub fn num_queues(&self) -> u16 {
        self.queues.len() as u16
    }

    /// `device_status` as the driver reads it.
    pub fn status(&self) -> u8 {
        self.reset_pending.unwrap_or(self.status)
    }

    /// Whether a reset is waiting for the worker.
    pub fn reset_pending(&self) -> bool {
        self.reset_pending.is_some()
    }

    fn writes_blocked(&self) -> bool {
        self.reset_pending.is_some()
    }

    /// Whether the driver's feature set is acceptable.
    fn features_acceptable(&self) -> bool {
        !self.driver_features_beyond
            && self.driver_features_high.iter().all(|&w| w == 0)
            && self.driver_features & !self.device_features == 0
            && (self.legacy || self.driver_features & (1 << VIRTIO_F_VERSION_1) != 0)
    }

    /// The driver writes `device_status`.
    pub fn set_status(&mut self, v: u8) -> Effect {
        if self.writes_blocked() {
            return Effect::None;
        }
        if v == 0 {
            return self.reset();
        }
        let old = self.status;
        let mut new = v | (old & NEEDS_RESET);
        if new & FEATURES_OK != 0 && old & FEATURES_OK == 0 && !self.features_acceptable() {
            // Spec 3.1.1: the driver re-reads the status to learn the features were refused.
            new &= !FEATURES_OK;
        }
        self.status = new;
        // A legacy driver has no FEATURES_OK: its features are final at DRIVER_OK, and are
        // checked there (a legacy device has no way to refuse them; it stays inactive).
        let features_final = new & FEATURES_OK != 0 || (self.legacy && self.features_acceptable());
        if new & DRIVER_OK != 0
            && old & DRIVER_OK == 0
            && features_final
            && new & (NEEDS_RESET | FAILED) == 0
            && !self.active
        {
            self.active = true;
            return Effect::Activate(self.activation());
        }
        Effect::None
    }

    fn activation(&self) -> Activation {
        Activation {
            epoch: self.epoch,
            features: self.driver_features,
            queues: self
                .queues
                .iter()
                .map(|q| {
                    q.enabled.then_some(QueueConfig {
                        size: q.size,
                        desc_addr: q.desc,
                        avail_addr: q.driver,
                        used_addr: q.device,
                    })
                })
                .collect(),
            queue_vectors: self.queues.iter().map(|q| q.msix_vector).collect(),
        }
    }

    /// Resets the function (driver wrote 0, or the host went away). If the worker has been
    /// activated the status keeps its old value until [`reset_complete`](Self::reset_complete).
    /// A reset while another one is still pending (a function-level reset arriving while the
    /// worker quiesces the device after the driver wrote 0) supersedes it: the worker is asked
    /// again with the new epoch, since its completion of the older epoch is ignored.
    pub fn reset(&mut self) -> Effect {
        let was_active = self.active || self.reset_pending.is_some();
        let old = self.reset_pending.unwrap_or(self.status);
        self.clear();
        self.epoch += 1;
        self.active = false;
        if was_active {
            self.reset_pending = Some(old);
            Effect::Reset { epoch: self.epoch }
        } else {
            Effect::None
        }
    }

    /// The worker finished the reset of `epoch`.
    pub fn reset_complete(&mut self, epoch: u64) {
        if epoch == self.epoch {
            self.reset_pending = None;
        }
    }

    /// The device hit an unrecoverable error while serving `epoch`: sets DEVICE_NEEDS_RESET
    /// if that negotiation is still current. Returns whether it was.
    pub fn set_needs_reset(&mut self, epoch: u64) -> bool {
        if epoch != self.epoch || self.reset_pending.is_some() {
            return false;
        }
        self.status |= NEEDS_RESET;
        true
    }

    pub fn queue_select(&self) -> u16 {
        self.queue_select
    }

    pub fn set_queue_select(&mut self, v: u16) {
        if !self.writes_blocked() {
            self.queue_select = v;
        }
    }

    fn selected(&self) -> Option<&QueueRegs> {
        self.queues.get(self.queue_select as usize)
    }

    /// The selected queue, if it exists and may still be configured.
    fn selected_configurable(&mut self) -> Option<&mut QueueRegs> {
        if self.writes_blocked() || self.status & DRIVER_OK != 0 {
            return None;
        }
        self.queues
            .get_mut(self.queue_select as usize)
            .filter(|q| !q.enabled)
    }

    /// queue_size of the selected queue (0 if it does not exist).
    pub fn queue_size(&self) -> u16 {
        self.selected().map_or(0, |q| q.size)
    }

    /// Sets the selected queue's size: a power of two no larger than the maximum (spec 2.7:
    /// split queue sizes are powers of two), or with VIRTIO_F_RING_PACKED negotiated any
    /// non-zero value up to the maximum (spec 2.8). Other values are ignored.
    pub fn set_queue_size(&mut self, v: u16) {
        let packed = self.driver_features & crate::function::RING_PACKED_FEATURE != 0;
        if let Some(q) = self.selected_configurable() {
            if (v.is_power_of_two() || (packed && v != 0)) && v <= q.max_size {
                q.size = v;
            }
        }
    }

    pub fn queue_msix_vector(&self) -> u16 {
        self.selected().map_or(NO_VECTOR, |q| q.msix_vector)
    }

    /// Sets the selected queue's vector; refused (reads NO_VECTOR) if we don't have it.
    pub fn set_queue_msix_vector(&mut self, v: u16) {
        if self.legacy {
            // Legacy drivers assign the vector after writing QUEUE_PFN (which enables).
            return self.set_queue_msix_vector_at(self.queue_select, v);
        }
        let v = self.valid_vector(v);
        if let Some(q) = self.selected_configurable() {
            q.msix_vector = v;
        }
    }

    pub fn queue_enable(&self) -> u16 {
        self.selected().map_or(0, |q| q.enabled as u16)
    }

    /// Enables the selected queue (writing 0 is not allowed by the spec and ignored).
    pub fn set_queue_enable(&mut self, v: u16) {
        if v != 1 {
            return;
        }
        if let Some(q) = self.selected_configurable() {
            q.enabled = true;
        }
    }

    /// queue_notify_off: queue i notifies at i * multiplier.
    pub fn queue_notify_off(&self) -> u16 {
        if self.selected().is_some() {
            self.queue_select
        } else {
            0
        }
    }

    pub fn queue_addr(&self, which: RingAddr) -> u64 {
        self.selected().map_or(0, |q| match which {
            RingAddr::Desc => q.desc,
            RingAddr::Driver => q.driver,
            RingAddr::Device => q.device,
        })
    }

    /// Writes (part of) a ring address of the selected queue.
    pub fn set_queue_addr(&mut self, which: RingAddr, half: Half, v: u64) {
        if let Some(q) = self.selected_configurable() {
            let r = match which {
                RingAddr::Desc => &mut q.desc,
                RingAddr::Driver => &mut q.driver,
                RingAddr::Device => &mut q.device,
            };
            *r = match half {
                Half::Low => (*r & !0xffff_ffff) | (v & 0xffff_ffff),
                Half::High => (*r & 0xffff_ffff) | (v << 32),
                Half::Full => v,
            };
        }
    }

    /// Legacy QUEUE_PFN of the selected queue (0 when not configured).
    pub fn queue_pfn(&self) -> u32 {
        self.selected()
            .filter(|q| q.enabled)
            .map_or(0, |q| (q.desc >> LEGACY_QUEUE_ADDR_SHIFT) as u32)
    }

    /// Legacy QUEUE_PFN write for the selected queue.
    pub fn set_queue_pfn(&mut self, pfn: u32) {
        self.set_queue_pfn_at(self.queue_select, pfn)
    }

    /// Legacy QUEUE_PFN write for queue `index` (the polled engine attributes writes itself):
    /// a non-zero frame configures and enables the queue at its fixed size, zero disables it.
    pub fn set_queue_pfn_at(&mut self, index: u16, pfn: u32) {
        if self.writes_blocked() || self.status & DRIVER_OK != 0 {
            return;
        }
        if let Some(q) = self.queues.get_mut(index as usize) {
            if pfn == 0 {
                q.enabled = false;
                return;
            }
            let c = legacy_queue_config(pfn, q.size);
            q.desc = c.desc_addr;
            q.driver = c.avail_addr;
            q.device = c.used_addr;
            q.enabled = true;
        }
    }

    /// The polled engine assigns queue `index`'s vector directly.
    pub fn set_queue_msix_vector_at(&mut self, index: u16, v: u16) {
        let v = self.valid_vector(v);
        if self.writes_blocked() || self.status & DRIVER_OK != 0 {
            return;
        }
        if let Some(q) = self.queues.get_mut(index as usize) {
            q.msix_vector = v;
        }
    }

    /// Read access to a queue's registers (for tests and stats).
    pub fn queue(&self, i: usize) -> Option<&QueueRegs> {
        self.queues.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: u64 = 1 << 32;

    fn negotiated(r: &mut Registers, features: u64) {
        r.set_status(1);
        r.set_status(3);
        r.set_driver_feature_select(0);
        r.set_driver_feature_word(features as u32);
        r.set_driver_feature_select(1);
        r.set_driver_feature_word((features >> 32) as u32);
        r.set_status(3 | FEATURES_OK);
    }

    #[test]
    fn feature_words_beyond_64_bits_read_zero() {
        let mut r = Registers::new(V1 | 0b101, &[8], 2);
        r.set_device_feature_select(0);
        assert_eq!(r.device_feature_word(), 0b101);
        r.set_device_feature_select(1);
        assert_eq!(r.device_feature_word(), 1);
        for s in [2, 3, 1000, u32::MAX] {
            r.set_device_feature_select(s);
            assert_eq!(r.device_feature_word(), 0);
        }
    }

    #[test]
    fn features_ok_refused_for_unoffered_features() {
        let mut r = Registers::new(V1 | 1, &[8], 2);
        negotiated(&mut r, V1 | 2);
        assert_eq!(r.status() & FEATURES_OK, 0);
        let mut r = Registers::new(V1 | 1, &[8], 2);
        r.set_status(3);
        r.set_driver_feature_select(2);
        r.set_driver_feature_word(1);
        r.set_driver_feature_select(1);
        r.set_driver_feature_word(1);
        r.set_status(3 | FEATURES_OK);
        assert_eq!(r.status() & FEATURES_OK, 0, "bit beyond 64 must be refused");
        let mut r = Registers::new(V1 | 1, &[8], 2);
        negotiated(&mut r, 1);
        assert_eq!(r.status() & FEATURES_OK, 0, "VERSION_1 is required");
        let mut r = Registers::new(V1 | 1, &[8], 2);
        negotiated(&mut r, V1 | 1);
        assert_ne!(r.status() & FEATURES_OK, 0);
    }

    #[test]
    fn queue_size_may_shrink_but_not_grow_and_vectors_are_validated() {
        let mut r = Registers::new(V1, &[256, 64], 2);
        r.set_queue_select(1);
        assert_eq!(r.queue_size(), 64);
        r.set_queue_size(128);
        assert_eq!(r.queue_size(), 64);
        r.set_queue_size(48);
        assert_eq!(r.queue_size(), 64);
        r.set_queue_size(16);
        assert_eq!(r.queue_size(), 16);
        r.set_queue_msix_vector(1);
        assert_eq!(r.queue_msix_vector(), 1);
        r.set_queue_msix_vector(2);
        assert_eq!(r.queue_msix_vector(), NO_VECTOR);
        r.set_queue_select(7);
        assert_eq!(r.queue_size(), 0);
        r.set_queue_size(4);
        assert_eq!(r.queue_enable(), 0);
    }

    #[test]
    fn activation_carries_enabled_queues_and_reset_is_two_phase() {
        let mut r = Registers::new(V1, &[8, 8], 3);
        negotiated(&mut r, V1);
        r.set_queue_select(1);
        r.set_queue_addr(RingAddr::Desc, Half::Low, 0x1000);
        r.set_queue_addr(RingAddr::Desc, Half::High, 0x1);
        r.set_queue_addr(RingAddr::Driver, Half::Full, 0x2000);
        r.set_queue_addr(RingAddr::Device, Half::Full, 0x3000);
        r.set_queue_enable(1);
        r.set_queue_size(4); // ignored once enabled
        let Effect::Activate(a) = r.set_status(0xf) else {
            panic!("DRIVER_OK must activate")
        };
        assert_eq!(a.queues[0], None);
        assert_eq!(
            a.queues[1],
            Some(QueueConfig {
                size: 8,
                desc_addr: 0x1_0000_1000,
                avail_addr: 0x2000,
                used_addr: 0x3000
            })
        );
        assert_eq!(r.set_status(0), Effect::Reset { epoch: 1 });
        assert_eq!(
            r.status(),
            0xf,
            "status reads old value until the worker is done"
        );
        r.set_status(1); // ignored while pending
        r.reset_complete(1);
        assert_eq!(r.status(), 0);
        r.set_queue_select(1);
        assert_eq!(r.queue_addr(RingAddr::Desc), 0);
        assert_eq!(r.queue_enable(), 0);
    }

    #[test]
    fn high_feature_words_count_as_last_written() {
        let mut r = Registers::new(V1, &[8], 2);
        r.set_status(3);
        r.set_driver_feature_select(1);
        r.set_driver_feature_word(1);
        r.set_driver_feature_select(3);
        r.set_driver_feature_word(0x10);
        assert_eq!(r.driver_feature_word(), 0x10);
        r.set_driver_feature_word(0);
        r.set_status(3 | FEATURES_OK);
        assert_ne!(r.status() & FEATURES_OK, 0, "word 3 was cleared again");
        let mut r = Registers::new(V1, &[8], 2);
        r.set_status(3);
        r.set_driver_feature_select(1);
        r.set_driver_feature_word(1);
        r.set_driver_feature_select(u32::MAX);
        r.set_driver_feature_word(1);
        r.set_driver_feature_word(0);
        r.set_status(3 | FEATURES_OK);
        assert_eq!(r.status() & FEATURES_OK, 0, "far words are sticky");
    }

    #[test]
    fn a_reset_while_one_is_pending_supersedes_it() {
        let mut r = Registers::new(V1, &[8], 1);
        negotiated(&mut r, V1);
        assert!(matches!(r.set_status(0xf), Effect::Activate(_)));
        assert_eq!(r.set_status(0), Effect::Reset { epoch: 1 });
        // A function-level reset before the worker completed epoch 1.
        assert_eq!(r.reset(), Effect::Reset { epoch: 2 });
        assert_eq!(r.status(), 0xf);
        r.reset_complete(1);
        assert_eq!(r.status(), 0xf, "epoch 1 is stale");
        r.reset_complete(2);
        assert_eq!(r.status(), 0);
        // An idle function resets at once.
        assert_eq!(r.reset(), Effect::None);
        assert_eq!(r.status(), 0);
    }

    #[test]
    fn legacy_activates_at_driver_ok_with_pfn_configured_rings() {
        let mut r = Registers::new_legacy((1 << 32) | (1 << 28) | 1, &[256, 256], 3);
        assert_eq!(
            r.device_features(),
            (1 << 28) | 1,
            "legacy has one feature word"
        );
        r.set_status(1);
        r.set_status(3);
        r.set_driver_feature_word(1 << 28);
        r.set_queue_select(1);
        r.set_queue_pfn(0x12345);
        assert_eq!(r.queue_pfn(), 0x12345);
        r.set_queue_select(0);
        assert_eq!(r.queue_pfn(), 0);
        let Effect::Activate(a) = r.set_status(7) else {
            panic!("legacy DRIVER_OK must activate without FEATURES_OK")
        };
        assert_eq!(a.queues[0], None);
        let c = a.queues[1].unwrap();
        assert_eq!(c.desc_addr, 0x12345000);
        assert_eq!(c.avail_addr, 0x12345000 + 4096);
        // avail ends at +4096 + 6 + 512 = 0x1206; used is page aligned after it.
        assert_eq!(c.used_addr, 0x12345000 + 0x2000);
        let mut r = Registers::new_legacy(1, &[8], 1);
        r.set_driver_feature_word(2);
        assert_eq!(
            r.set_status(7),
            Effect::None,
            "unoffered legacy features: no activation"
        );
    }

    #[test]
    fn needs_reset_is_sticky_and_epoch_bound() {
        let mut r = Registers::new(V1, &[8], 1);
        negotiated(&mut r, V1);
        assert!(matches!(r.set_status(0xf), Effect::Activate(_)));
        assert!(!r.set_needs_reset(7));
        assert!(r.set_needs_reset(0));
        r.set_status(0xf);
        assert_ne!(r.status() & NEEDS_RESET, 0);
        assert_eq!(r.set_status(0), Effect::Reset { epoch: 1 });
        assert!(!r.set_needs_reset(0), "stale epoch");
        r.reset_complete(1);
        assert_eq!(r.status(), 0);
    }
}
