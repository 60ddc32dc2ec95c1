//! [`VirtioPciDriver`]: the transport half of a virtio-pci modern driver. Register
//! sequences follow the virtio 1.2 spec (3.1 "Device Initialization", 4.1.4/4.1.5) and
//! Linux's `virtio_pci_modern_dev.c` / `virtio_pci_modern.c` / `virtio.c`, including their
//! quirks (queue_select rewritten before every queue register access, 64-bit addresses
//! written as two 32-bit halves low first, vectors read back). Every access goes through
//! [`HostBus`], as a real host's would.

use super::caps::{find_virtio_caps, VirtioCap, VirtioCaps};
use super::error::{DriverError, Result};
use super::queue::{alloc_rings, HostQueue, QueueParams};
use super::spec::*;
use crate::HostBus;
use std::time::{Duration, Instant};

/// Default bound on every wait (reset completion, used buffers).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of the `config_generation` retry loop before giving up.
const CONFIG_READ_ATTEMPTS: usize = 64;

/// A bound virtio-pci modern device, seen from the host.
#[derive(Debug)]
pub struct VirtioPciDriver {
    bus: HostBus,
    caps: VirtioCaps,
    pci_device_id: u16,
    device_type: u16,
    features: u64,
    timeout: Duration,
}

impl VirtioPciDriver {
    /// Binds to the function behind `bus` (like `vp_modern_probe` + `pci_enable_device` +
    /// `pci_set_master`): checks IDs, finds and checks the capabilities, and enables memory
    /// decoding and bus mastering.
    pub fn probe(bus: HostBus) -> Result<Self> {
        let vendor = bus.config_read16(PCI_VENDOR_ID);
        let device = bus.config_read16(PCI_DEVICE_ID);
        if vendor != VIRTIO_PCI_VENDOR_ID
            || !(VIRTIO_PCI_DEVICE_ID_MIN..=VIRTIO_PCI_DEVICE_ID_MAX).contains(&device)
        {
            return Err(DriverError::NotVirtio { vendor, device });
        }
        let device_type = if device < VIRTIO_PCI_MODERN_DEVICE_ID_BASE {
            // Transitional: the subsystem ID is the virtio device type.
            bus.config_read16(PCI_SUBSYSTEM_ID)
        } else {
            device - VIRTIO_PCI_MODERN_DEVICE_ID_BASE
        };
        let caps = find_virtio_caps(&bus)?;
        let cmd = bus.config_read16(PCI_COMMAND);
        bus.config_write16(PCI_COMMAND, cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
        Ok(VirtioPciDriver {
            bus,
            caps,
            pci_device_id: device,
            device_type,
            features: 0,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The bus the device sits on.
    pub fn bus(&self) -> &HostBus {
        &self.bus
    }

    /// The capabilities found at probe time.
    pub fn caps(&self) -> &VirtioCaps {
        &self.caps
    }

    /// The PCI device ID.
    pub fn pci_device_id(&self) -> u16 {
        self.pci_device_id
    }

    /// The virtio device type (1 = net, 2 = block, ...).
    pub fn device_type(&self) -> u16 {
        self.device_type
    }

    /// Features accepted by the last successful negotiation.
    pub fn negotiated_features(&self) -> u64 {
        self.features
    }

    /// The bound used for waits.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the bound used for waits (and inherited by queues set up afterwards).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Enables MSI-X with all vectors unmasked (`pci_alloc_irq_vectors` + `request_irq`).
    /// Returns false if the function has no MSI-X.
    pub fn enable_msix(&self) -> bool {
        self.bus.enable_msix(true)
    }

    // ---- Common configuration registers -------------------------------------------------

    fn common(&self, off: u64) -> (u8, u64) {
        (
            self.caps.common.bar,
            u64::from(self.caps.common.offset) + off,
        )
    }

    /// Reads a byte of the common configuration structure.
    pub fn common_read8(&self, off: u64) -> u8 {
        let (bar, o) = self.common(off);
        self.bus.bar_read8(bar, o)
    }

    /// Reads a u16 of the common configuration structure.
    pub fn common_read16(&self, off: u64) -> u16 {
        let (bar, o) = self.common(off);
        self.bus.bar_read16(bar, o)
    }

    /// Reads a u32 of the common configuration structure.
    pub fn common_read32(&self, off: u64) -> u32 {
        let (bar, o) = self.common(off);
        self.bus.bar_read32(bar, o)
    }

    /// Writes a byte of the common configuration structure.
    pub fn common_write8(&self, off: u64, v: u8) {
        let (bar, o) = self.common(off);
        self.bus.bar_write8(bar, o, v);
    }

    /// Writes a u16 of the common configuration structure.
    pub fn common_write16(&self, off: u64, v: u16) {
        let (bar, o) = self.common(off);
        self.bus.bar_write16(bar, o, v);
    }

    /// Writes a u32 of the common configuration structure.
    pub fn common_write32(&self, off: u64, v: u32) {
        let (bar, o) = self.common(off);
        self.bus.bar_write32(bar, o, v);
    }

    /// `vp_iowrite64_twopart`: low dword, then high dword.
    pub fn common_write64_twopart(&self, off: u64, v: u64) {
        self.common_write32(off, v as u32);
        self.common_write32(off + 4, (v >> 32) as u32);
    }

    // ---- Status, reset, features ----------------------------------------------------------

    /// `device_status`.
    pub fn status(&self) -> u8 {
        self.common_read8(COMMON_DEVICE_STATUS)
    }

    /// Writes `device_status` as is.
    pub fn set_status(&self, status: u8) {
        self.common_write8(COMMON_DEVICE_STATUS, status);
    }

    /// `virtio_add_status`: read, OR in `bits`, write.
    pub fn add_status(&self, bits: u8) {
        let s = self.status();
        self.set_status(s | bits);
    }

    /// Resets the device (`vp_reset`): writes 0 to `device_status` and waits, bounded, for
    /// it to read back 0.
    pub fn reset(&self) -> Result<()> {
        self.set_status(0);
        let deadline = Instant::now() + self.timeout;
        let mut spins = 0u32;
        loop {
            let s = self.status();
            if s == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DriverError::ResetTimeout { status: s });
            }
            spins += 1;
            if spins < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// `device_feature` word `select` (0 and 1 are what Linux reads; higher words of a
    /// device without such features must read 0).
    pub fn device_feature_word(&self, select: u32) -> u32 {
        self.common_write32(COMMON_DEVICE_FEATURE_SELECT, select);
        self.common_read32(COMMON_DEVICE_FEATURE)
    }

    /// The 64 device feature bits (`vp_modern_get_features`).
    pub fn device_features(&self) -> u64 {
        let lo = self.device_feature_word(0);
        let hi = self.device_feature_word(1);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    /// Writes `driver_feature` word `select`.
    pub fn write_driver_feature_word(&self, select: u32, v: u32) {
        self.common_write32(COMMON_DRIVER_FEATURE_SELECT, select);
        self.common_write32(COMMON_DRIVER_FEATURE, v);
    }

    /// Reads back `driver_feature` word `select`.
    pub fn driver_feature_word(&self, select: u32) -> u32 {
        self.common_write32(COMMON_DRIVER_FEATURE_SELECT, select);
        self.common_read32(COMMON_DRIVER_FEATURE)
    }

    /// Writes the 64 driver feature bits (`vp_modern_set_features`).
    pub fn write_driver_features(&self, features: u64) {
        self.write_driver_feature_word(0, features as u32);
        self.write_driver_feature_word(1, (features >> 32) as u32);
    }

    /// Feature negotiation (`virtio_dev_probe` on a freshly reset device): ACKNOWLEDGE,
    /// DRIVER, read the device features, require VERSION_1, accept `wanted & offered` plus
    /// VERSION_1, FEATURES_OK, and check it stuck. Returns the accepted features.
    pub fn negotiate(&mut self, wanted: u64) -> Result<u64> {
        self.add_status(STATUS_ACKNOWLEDGE);
        self.add_status(STATUS_DRIVER);
        let offered = self.device_features();
        if offered & feature(VIRTIO_F_VERSION_1) == 0 {
            self.add_status(STATUS_FAILED);
            return Err(DriverError::NoVersion1);
        }
        self.finish_negotiation((wanted & offered) | feature(VIRTIO_F_VERSION_1))
    }

    /// Like [`negotiate`](Self::negotiate) but writes `driver_features` unchanged, even bits
    /// the device did not offer (to test that the device refuses them).
    pub fn negotiate_forced(&mut self, driver_features: u64) -> Result<u64> {
        self.add_status(STATUS_ACKNOWLEDGE);
        self.add_status(STATUS_DRIVER);
        let _ = self.device_features();
        self.finish_negotiation(driver_features)
    }

    fn finish_negotiation(&mut self, features: u64) -> Result<u64> {
        self.write_driver_features(features);
        self.add_status(STATUS_FEATURES_OK);
        let status = self.status();
        if status & STATUS_FEATURES_OK == 0 {
            self.add_status(STATUS_FAILED);
            return Err(DriverError::FeaturesRefused { features, status });
        }
        self.features = features;
        Ok(features)
    }

    /// Reset followed by [`negotiate`](Self::negotiate).
    pub fn init(&mut self, wanted: u64) -> Result<u64> {
        self.reset()?;
        self.negotiate(wanted)
    }

    /// Sets DRIVER_OK.
    pub fn driver_ok(&self) {
        self.add_status(STATUS_DRIVER_OK);
    }

    // ---- Queues ----------------------------------------------------------------------------

    /// `num_queues`.
    pub fn num_queues(&self) -> u16 {
        self.common_read16(COMMON_NUM_QUEUES)
    }

    /// Selects queue `index` and reads its (maximum) size.
    pub fn queue_size(&self, index: u16) -> u16 {
        self.common_write16(COMMON_QUEUE_SELECT, index);
        self.common_read16(COMMON_QUEUE_SIZE)
    }

    /// Selects queue `index` and reads `queue_enable`.
    pub fn queue_enabled(&self, index: u16) -> bool {
        self.common_write16(COMMON_QUEUE_SELECT, index);
        self.common_read16(COMMON_QUEUE_ENABLE) != 0
    }

    /// Selects queue `index` and writes `queue_enable = 1` (`vp_modern_set_queue_enable`).
    pub fn enable_queue(&self, index: u16) {
        self.common_write16(COMMON_QUEUE_SELECT, index);
        self.common_write16(COMMON_QUEUE_ENABLE, 1);
    }

    /// Selects queue `index`, writes `queue_msix_vector` and reads it back
    /// (`vp_modern_queue_vector`). Fails if it does not read back as written.
    pub fn set_queue_vector(&self, index: u16, vector: u16) -> Result<()> {
        self.common_write16(COMMON_QUEUE_SELECT, index);
        self.common_write16(COMMON_QUEUE_MSIX_VECTOR, vector);
        let read_back = self.common_read16(COMMON_QUEUE_MSIX_VECTOR);
        if read_back != vector {
            return Err(DriverError::VectorRefused {
                what: format!("queue {index}"),
                vector,
                read_back,
            });
        }
        Ok(())
    }

    /// Writes `config_msix_vector` and reads it back (`vp_modern_config_vector`).
    pub fn set_config_vector(&self, vector: u16) -> Result<()> {
        self.common_write16(COMMON_CONFIG_MSIX_VECTOR, vector);
        let read_back = self.common_read16(COMMON_CONFIG_MSIX_VECTOR);
        if read_back != vector {
            return Err(DriverError::VectorRefused {
                what: "config".into(),
                vector,
                read_back,
            });
        }
        Ok(())
    }

    /// `config_msix_vector`.
    pub fn config_vector(&self) -> u16 {
        self.common_read16(COMMON_CONFIG_MSIX_VECTOR)
    }

    /// Sets up queue `index` without enabling it (Linux's `setup_vq` / `vp_active_vq`):
    /// checks it exists and is not enabled, picks `size` (default: the device maximum),
    /// allocates the rings, writes size and addresses, sets and verifies the MSI-X vector
    /// (if any), and locates its notification address.
    pub fn prepare_queue(
        &self,
        index: u16,
        size: Option<u16>,
        msix_vector: Option<u16>,
    ) -> Result<HostQueue> {
        let num_queues = self.num_queues();
        if index >= num_queues {
            return Err(DriverError::NoSuchQueue { index, num_queues });
        }
        let max = self.queue_size(index);
        if max == 0 {
            return Err(DriverError::QueueUnavailable(index));
        }
        if self.queue_enabled(index) {
            return Err(DriverError::QueueAlreadyEnabled(index));
        }
        let size = size.unwrap_or(max);
        let packed = self.features & feature(VIRTIO_F_RING_PACKED) != 0;
        // Split sizes are powers of two; packed ones need not be (spec 2.8).
        if size == 0 || size > max || (!packed && !size.is_power_of_two()) || size > VIRTQ_MAX_SIZE
        {
            return Err(DriverError::BadQueueSize { index, size, max });
        }

        let (desc, avail, used) = alloc_rings(&self.bus, size, packed)?;

        self.common_write16(COMMON_QUEUE_SELECT, index);
        self.common_write16(COMMON_QUEUE_SIZE, size);
        self.common_write16(COMMON_QUEUE_SELECT, index);
        self.common_write64_twopart(COMMON_QUEUE_DESC, desc);
        self.common_write64_twopart(COMMON_QUEUE_DRIVER, avail);
        self.common_write64_twopart(COMMON_QUEUE_DEVICE, used);
        if let Some(v) = msix_vector.filter(|&v| v != VIRTIO_MSI_NO_VECTOR) {
            self.set_queue_vector(index, v)?;
        }

        self.common_write16(COMMON_QUEUE_SELECT, index);
        let notify_off = self.common_read16(COMMON_QUEUE_NOTIFY_OFF);
        let rel = u64::from(notify_off) * u64::from(self.caps.notify_off_multiplier);
        if rel + 2 > u64::from(self.caps.notify.length) {
            return Err(DriverError::NotifyOutOfRange { index, offset: rel });
        }
        let features = self.features;
        HostQueue::new(QueueParams {
            bus: self.bus.clone(),
            index,
            size,
            desc,
            avail,
            used,
            notify_bar: self.caps.notify.bar,
            notify_offset: u64::from(self.caps.notify.offset) + rel,
            msix_vector: msix_vector.filter(|&v| v != VIRTIO_MSI_NO_VECTOR),
            event_idx: features & feature(VIRTIO_F_EVENT_IDX) != 0,
            indirect: features & feature(VIRTIO_F_INDIRECT_DESC) != 0,
            packed,
            notification_data: features & feature(VIRTIO_F_NOTIFICATION_DATA) != 0,
            in_order: features & feature(VIRTIO_F_IN_ORDER) != 0,
            timeout: self.timeout,
        })
    }

    /// [`prepare_queue`](Self::prepare_queue) then [`enable_queue`](Self::enable_queue).
    pub fn setup_queue(
        &self,
        index: u16,
        size: Option<u16>,
        msix_vector: Option<u16>,
    ) -> Result<HostQueue> {
        let q = self.prepare_queue(index, size, msix_vector)?;
        self.enable_queue(index);
        Ok(q)
    }

    // ---- Device configuration, ISR ---------------------------------------------------------

    fn device_cap(&self) -> Result<&VirtioCap> {
        self.caps
            .device
            .as_ref()
            .ok_or(DriverError::MissingCapability("device"))
    }

    fn device_range(&self, offset: u64, len: usize) -> Result<(u8, u64)> {
        let cap = self.device_cap()?;
        let cap_len = u64::from(cap.length);
        if offset.saturating_add(len as u64) > cap_len {
            return Err(DriverError::DeviceConfigRange {
                offset,
                len,
                cap_len,
            });
        }
        Ok((cap.bar, u64::from(cap.offset) + offset))
    }

    /// `config_generation`.
    pub fn config_generation(&self) -> u8 {
        self.common_read8(COMMON_CONFIG_GENERATION)
    }

    /// One device-config read the way `vp_get` does it: a 1-, 2- or 4-byte access, two
    /// 4-byte accesses for 8 bytes, byte accesses otherwise. No generation check.
    pub fn read_config_raw(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let (bar, o) = self.device_range(offset, buf.len())?;
        match buf.len() {
            1 | 2 | 4 => self.bus.bar_read(bar, o, buf),
            8 => {
                let (lo, hi) = buf.split_at_mut(4);
                self.bus.bar_read(bar, o, lo);
                self.bus.bar_read(bar, o + 4, hi);
            }
            _ => {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = self.bus.bar_read8(bar, o + i as u64);
                }
            }
        }
        Ok(())
    }

    /// A consistent device-config read: repeats while `config_generation` changes (bounded).
    pub fn read_config(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut gen = self.config_generation();
        for _ in 0..CONFIG_READ_ATTEMPTS {
            let old = gen;
            self.read_config_raw(offset, buf)?;
            gen = self.config_generation();
            if gen == old {
                return Ok(());
            }
        }
        Err(DriverError::ConfigUnstable)
    }

    /// A device-config write (`vp_set`: access sizes as for reads).
    pub fn write_config(&self, offset: u64, data: &[u8]) -> Result<()> {
        let (bar, o) = self.device_range(offset, data.len())?;
        match data.len() {
            1 | 2 | 4 => self.bus.bar_write(bar, o, data),
            8 => {
                self.bus.bar_write(bar, o, &data[..4]);
                self.bus.bar_write(bar, o + 4, &data[4..]);
            }
            _ => {
                for (i, b) in data.iter().enumerate() {
                    self.bus.bar_write8(bar, o + i as u64, *b);
                }
            }
        }
        Ok(())
    }

    /// Reads (and thereby clears) the ISR status byte.
    pub fn read_isr(&self) -> u8 {
        self.bus
            .bar_read8(self.caps.isr.bar, u64::from(self.caps.isr.offset))
    }

    // ---- PCI configuration access capability -----------------------------------------------

    fn pci_cfg_window(&self, bar: u8, offset: u32, len: usize) -> Result<usize> {
        let cap = self
            .caps
            .pci_cfg
            .ok_or(DriverError::MissingCapability("PCI configuration access"))?;
        if !matches!(len, 1 | 2 | 4) || offset % len as u32 != 0 {
            return Err(DriverError::BadPciCfgAccess(format!(
                "{len}-byte access at {offset:#x}"
            )));
        }
        let c = cap.cap_offset;
        self.bus.config_write8(c + CAP_BAR, bar);
        self.bus.config_write32(c + CAP_OFFSET, offset);
        self.bus.config_write32(c + CAP_LENGTH, len as u32);
        Ok(c + PCI_CFG_CAP_DATA)
    }

    /// Reads BAR `bar` at `offset` through the VIRTIO_PCI_CAP_PCI_CFG window (1, 2 or 4
    /// bytes, naturally aligned).
    pub fn pci_cfg_read(&self, bar: u8, offset: u32, buf: &mut [u8]) -> Result<()> {
        let data = self.pci_cfg_window(bar, offset, buf.len())?;
        self.bus.config_read(data, buf);
        Ok(())
    }

    /// Writes BAR `bar` at `offset` through the VIRTIO_PCI_CAP_PCI_CFG window.
    pub fn pci_cfg_write(&self, bar: u8, offset: u32, data: &[u8]) -> Result<()> {
        let window = self.pci_cfg_window(bar, offset, data.len())?;
        self.bus.config_write(window, data);
        Ok(())
    }
}
