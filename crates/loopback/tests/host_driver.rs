//! Tests of the host-side virtio-pci driver: transport sequences against a register-file
//! mock, and the split-ring code against a device side played by hand through the
//! endpoint's `HostMemory` view (so address translation is exercised too).

#[path = "support/mock_virtio.rs"]
mod mock_virtio;

use epf_epc::{EndpointController, HostMemory, Irq};
use epf_loopback::host_driver::spec::*;
use epf_loopback::host_driver::{DriverError, HostQueue, VirtioPciDriver};
use epf_loopback::LoopbackController;
use mock_virtio::{mock, virtio_cap, MockOptions, MockQueue, MockVirtio};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Rig {
    c: LoopbackController,
    dev: Arc<MockVirtio>,
}

fn rig_with(opts: &MockOptions) -> Rig {
    let c = LoopbackController::with_defaults().unwrap();
    let (spec, dev) = mock(opts);
    c.start(spec, dev.clone()).unwrap();
    Rig { c, dev }
}

fn rig() -> Rig {
    rig_with(&MockOptions::default())
}

impl Drop for Rig {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_eq!(
                self.c.oob_attempts(),
                0,
                "endpoint touched memory outside host RAM"
            );
        }
    }
}

fn driver(r: &Rig) -> VirtioPciDriver {
    VirtioPciDriver::probe(r.c.host()).unwrap()
}

/// A driver with features negotiated and queue `index` set up.
fn with_queue(
    r: &Rig,
    wanted: u64,
    index: u16,
    vector: Option<u16>,
) -> (VirtioPciDriver, HostQueue) {
    let mut d = driver(r);
    d.init(wanted).unwrap();
    let q = d.setup_queue(index, None, vector).unwrap();
    d.driver_ok();
    (d, q)
}

// ---- The device's side of a split ring, played by hand through HostMemory -------------------

/// A chain as the device sees it: (addr, len, flags) per descriptor.
type Chain = Vec<(u64, u32, u16)>;

struct DeviceRing {
    mem: Arc<dyn HostMemory>,
    q: MockQueue,
    last_avail: u16,
}

impl DeviceRing {
    fn new(r: &Rig, index: usize) -> Self {
        DeviceRing {
            mem: r.c.host_memory(),
            q: r.dev.st().queues[index],
            last_avail: 0,
        }
    }

    fn avail_idx(&self) -> u16 {
        self.mem.read_u16(self.q.driver + 2).unwrap()
    }

    /// Reads descriptor `i` of table `table`: (addr, len, flags, next).
    fn desc(&self, table: u64, i: u16) -> (u64, u32, u16, u16) {
        let a = table + 16 * u64::from(i);
        (
            self.mem.read_u64(a).unwrap(),
            self.mem.read_u32(a + 8).unwrap(),
            self.mem.read_u16(a + 12).unwrap(),
            self.mem.read_u16(a + 14).unwrap(),
        )
    }

    /// Takes the next available head and returns it with its chain (following NEXT, and
    /// one level of INDIRECT).
    fn pop(&mut self) -> Option<(u16, Chain)> {
        if self.avail_idx() == self.last_avail {
            return None;
        }
        fence(Ordering::Acquire);
        let slot = self.last_avail % self.q.size;
        let head = self
            .mem
            .read_u16(self.q.driver + 4 + 2 * u64::from(slot))
            .unwrap();
        self.last_avail = self.last_avail.wrapping_add(1);
        let mut out = Vec::new();
        let (mut table, mut i) = (self.q.desc, head);
        for _ in 0..64 {
            let (addr, len, flags, next) = self.desc(table, i);
            if flags & VIRTQ_DESC_F_INDIRECT != 0 {
                assert_eq!(len % 16, 0);
                table = addr;
                i = 0;
                continue;
            }
            out.push((addr, len, flags));
            if flags & VIRTQ_DESC_F_NEXT == 0 {
                break;
            }
            i = next;
        }
        Some((head, out))
    }

    /// Publishes a used element (id, len).
    fn push_used(&self, id: u32, len: u32) {
        let idx = self.mem.read_u16(self.q.device + 2).unwrap();
        let e = self.q.device + 4 + 8 * u64::from(idx % self.q.size);
        self.mem.write_u32(e, id).unwrap();
        self.mem.write_u32(e + 4, len).unwrap();
        fence(Ordering::Release);
        self.mem
            .write_u16(self.q.device + 2, idx.wrapping_add(1))
            .unwrap();
    }

    fn set_used_idx(&self, v: u16) {
        self.mem.write_u16(self.q.device + 2, v).unwrap();
    }

    fn set_used_flags(&self, v: u16) {
        self.mem.write_u16(self.q.device, v).unwrap();
    }

    fn set_avail_event(&self, v: u16) {
        let a = self.q.device + 4 + 8 * u64::from(self.q.size);
        self.mem.write_u16(a, v).unwrap();
    }

    fn used_event(&self) -> u16 {
        self.mem
            .read_u16(self.q.driver + 4 + 2 * u64::from(self.q.size))
            .unwrap()
    }

    fn avail_flags(&self) -> u16 {
        self.mem.read_u16(self.q.driver).unwrap()
    }
}

// ---- Probe ------------------------------------------------------------------------------------

#[test]
fn probe_finds_the_capabilities_and_enables_the_device() {
    let r = rig();
    let d = driver(&r);
    assert_eq!(d.device_type(), 4);
    assert_eq!(d.pci_device_id(), 0x1044);
    let caps = d.caps();
    assert_eq!((caps.common.bar, caps.common.offset), (0, 0));
    assert_eq!(caps.notify.offset as u64, mock_virtio::NOTIFY);
    assert_eq!(caps.notify_off_multiplier, mock_virtio::NOTIFY_MULT);
    assert_eq!(caps.isr.offset as u64, mock_virtio::ISR);
    assert_eq!(caps.device.unwrap().length, mock_virtio::DEVICE_LEN);
    assert_eq!(caps.pci_cfg.unwrap().cap_offset, r.dev.pci_cfg_cap);
    assert_eq!(caps.all.len(), 5);
    let cmd = r.c.host().config_read16(PCI_COMMAND);
    assert_eq!(cmd & 6, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
}

#[test]
fn probe_rejects_what_linux_rejects() {
    let err = |o: MockOptions| VirtioPciDriver::probe(rig_with(&o).c.host()).unwrap_err();

    let absent = LoopbackController::with_defaults().unwrap();
    assert_eq!(
        VirtioPciDriver::probe(absent.host()).unwrap_err(),
        DriverError::NotVirtio {
            vendor: 0xffff,
            device: 0xffff
        }
    );
    let o = MockOptions {
        vendor_id: 0x8086,
        ..Default::default()
    };
    assert!(matches!(err(o), DriverError::NotVirtio { .. }));
    let o = MockOptions {
        device_id: 0x1080,
        ..Default::default()
    };
    assert!(matches!(err(o), DriverError::NotVirtio { .. }));

    // Missing notify.
    let mut o = MockOptions::default();
    o.caps.remove(1);
    assert_eq!(err(o), DriverError::MissingCapability("notify"));
    // Missing common / ISR.
    let mut o = MockOptions::default();
    o.caps.remove(0);
    assert_eq!(err(o), DriverError::MissingCapability("common"));
    let mut o = MockOptions::default();
    o.caps.remove(2);
    assert_eq!(err(o), DriverError::MissingCapability("ISR"));
    // A capability naming a missing BAR is skipped like in Linux, so common goes missing.
    let mut o = MockOptions::default();
    o.caps[0][2] = 3;
    assert_eq!(err(o), DriverError::MissingCapability("common"));

    // Common structure too short, misaligned, beyond the BAR.
    let mut o = MockOptions::default();
    o.caps[0] = virtio_cap(1, 0, 0x30, &[]);
    assert!(matches!(
        err(o),
        DriverError::BadCapability { cfg_type: 1, .. }
    ));
    let mut o = MockOptions::default();
    o.caps[0] = virtio_cap(1, 2, 0x38, &[]);
    assert!(matches!(
        err(o),
        DriverError::BadCapability { cfg_type: 1, .. }
    ));
    let mut o = MockOptions::default();
    o.caps[3] = virtio_cap(4, 0x3ff0, 0x20, &[]);
    assert!(matches!(
        err(o),
        DriverError::BadCapability { cfg_type: 4, .. }
    ));
    // Notify capability too short to hold the multiplier; odd multiplier.
    let mut o = MockOptions::default();
    o.caps[1] = virtio_cap(2, 0x1000, 0x1000, &[]);
    assert!(matches!(
        err(o),
        DriverError::BadCapability { cfg_type: 2, .. }
    ));
    let mut o = MockOptions::default();
    o.caps[1] = virtio_cap(2, 0x1000, 0x1000, &3u32.to_le_bytes());
    assert!(matches!(
        err(o),
        DriverError::BadCapability { cfg_type: 2, .. }
    ));

    // A transitional device ID is accepted, the type comes from the subsystem ID.
    let o = MockOptions {
        device_id: 0x1005,
        ..Default::default()
    };
    let r = rig_with(&o);
    assert_eq!(
        VirtioPciDriver::probe(r.c.host()).unwrap().device_type(),
        0x40
    );
}

// ---- Reset and features ---------------------------------------------------------------------

#[test]
fn reset_waits_for_status_zero_and_is_bounded() {
    let r = rig();
    let mut d = driver(&r);
    d.set_status(STATUS_ACKNOWLEDGE);
    r.dev.st().reset_delay = 5;
    d.reset().unwrap();
    assert_eq!(d.status(), 0);
    assert_eq!(r.dev.st().resets, 1);

    d.set_status(STATUS_ACKNOWLEDGE);
    r.dev.st().never_reset = true;
    d.set_timeout(Duration::from_millis(50));
    let t = Instant::now();
    assert_eq!(
        d.reset().unwrap_err(),
        DriverError::ResetTimeout {
            status: STATUS_ACKNOWLEDGE
        }
    );
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn negotiation_follows_the_linux_sequence() {
    let r = rig();
    let mut d = driver(&r);
    d.reset().unwrap();
    r.dev.st().common_log.clear();
    let wanted = feature(VIRTIO_F_EVENT_IDX) | (1 << 5) | 1;
    let got = d.negotiate(wanted).unwrap();
    assert_eq!(
        got,
        feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_F_EVENT_IDX) | 1
    );
    assert_eq!(d.negotiated_features(), got);
    assert_eq!(
        d.status(),
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK
    );
    assert_eq!(r.dev.st().driver_features, got);
    let writes: Vec<_> = r
        .dev
        .st()
        .common_log
        .iter()
        .filter(|a| a.0)
        .map(|a| (a.1, a.3))
        .collect();
    assert_eq!(
        writes,
        vec![
            (COMMON_DEVICE_STATUS, 1),
            (COMMON_DEVICE_STATUS, 3),
            (COMMON_DEVICE_FEATURE_SELECT, 0),
            (COMMON_DEVICE_FEATURE_SELECT, 1),
            (COMMON_DRIVER_FEATURE_SELECT, 0),
            (COMMON_DRIVER_FEATURE, got & 0xffff_ffff),
            (COMMON_DRIVER_FEATURE_SELECT, 1),
            (COMMON_DRIVER_FEATURE, got >> 32),
            (COMMON_DEVICE_STATUS, 0xb),
        ]
    );
    // Feature words beyond 64 bits read 0; driver features read back.
    assert_eq!(d.device_feature_word(2), 0);
    assert_eq!(d.device_feature_word(3), 0);
    assert_eq!(d.driver_feature_word(1), 1);
    d.driver_ok();
    assert_eq!(d.status(), 0xf);
}

#[test]
fn negotiation_failures() {
    let r = rig();
    let mut d = driver(&r);
    d.reset().unwrap();
    let forced = feature(VIRTIO_F_VERSION_1) | (1 << 7);
    match d.negotiate_forced(forced).unwrap_err() {
        DriverError::FeaturesRefused { features, status } => {
            assert_eq!(features, forced);
            assert_eq!(status & STATUS_FEATURES_OK, 0);
        }
        e => panic!("{e:?}"),
    }
    assert_ne!(d.status() & STATUS_FAILED, 0);

    let r = rig_with(&MockOptions {
        offered: 1,
        ..Default::default()
    });
    let mut d = driver(&r);
    assert_eq!(d.init(1).unwrap_err(), DriverError::NoVersion1);
}

// ---- Queues ---------------------------------------------------------------------------------

#[test]
fn setup_queue_programs_the_device_like_linux() {
    let r = rig();
    let mut d = driver(&r);
    d.init(0).unwrap();
    assert!(d.enable_msix());
    d.set_config_vector(0).unwrap();
    r.dev.st().common_log.clear();
    let q = d.setup_queue(1, Some(2), Some(3)).unwrap();
    let mq = r.dev.st().queues[1];
    assert_eq!(mq.size, 2);
    assert_eq!(mq.vector, 3);
    assert_eq!(mq.enable, 1);
    assert_eq!(mq.desc, q.desc_addr());
    assert_eq!(mq.driver, q.avail_addr());
    assert_eq!(mq.device, q.used_addr());
    assert_eq!(q.desc_addr() % 4096, 0);
    assert_eq!(q.avail_addr(), q.desc_addr() + 32);
    assert_eq!(q.used_addr() % 64, 0);
    assert!(q.desc_addr() >= r.c.host().ram_base());
    assert_eq!(q.notify_location(), (0, mock_virtio::NOTIFY + 4));

    // Addresses as two 32-bit halves, low first, each group after a queue_select.
    let writes: Vec<_> = r
        .dev
        .st()
        .common_log
        .iter()
        .filter(|a| a.0)
        .map(|a| (a.1, a.2))
        .collect();
    let i = writes
        .iter()
        .position(|&w| w == (COMMON_QUEUE_DESC, 4))
        .unwrap();
    assert_eq!(writes[i - 1], (COMMON_QUEUE_SELECT, 2));
    assert_eq!(
        &writes[i..i + 6],
        &[
            (COMMON_QUEUE_DESC, 4),
            (COMMON_QUEUE_DESC + 4, 4),
            (COMMON_QUEUE_DRIVER, 4),
            (COMMON_QUEUE_DRIVER + 4, 4),
            (COMMON_QUEUE_DEVICE, 4),
            (COMMON_QUEUE_DEVICE + 4, 4),
        ]
    );
    assert_eq!(writes.last(), Some(&(COMMON_QUEUE_ENABLE, 2)));
}

#[test]
fn setup_queue_errors() {
    let r = rig();
    let mut d = driver(&r);
    d.init(0).unwrap();
    assert_eq!(
        d.setup_queue(3, None, None).unwrap_err(),
        DriverError::NoSuchQueue {
            index: 3,
            num_queues: 3
        }
    );
    assert_eq!(
        d.setup_queue(2, None, None).unwrap_err(),
        DriverError::QueueUnavailable(2)
    );
    assert!(matches!(
        d.setup_queue(1, Some(8), None),
        Err(DriverError::BadQueueSize {
            size: 8,
            max: 4,
            ..
        })
    ));
    assert!(matches!(
        d.setup_queue(0, Some(12), None),
        Err(DriverError::BadQueueSize { size: 12, .. })
    ));
    match d.setup_queue(0, None, Some(9)).unwrap_err() {
        DriverError::VectorRefused {
            vector, read_back, ..
        } => assert_eq!((vector, read_back), (9, 0xffff)),
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        d.set_config_vector(8),
        Err(DriverError::VectorRefused { .. })
    ));
    d.setup_queue(0, None, None).unwrap();
    assert_eq!(
        d.setup_queue(0, None, None).unwrap_err(),
        DriverError::QueueAlreadyEnabled(0)
    );
    // prepare_queue leaves the queue disabled.
    let _q = d.prepare_queue(1, None, None).unwrap();
    assert!(!d.queue_enabled(1));
    d.enable_queue(1);
    assert!(d.queue_enabled(1));
}

// ---- Device config, ISR, PCI_CFG window --------------------------------------------------------

#[test]
fn device_config_reads_retry_on_generation_change() {
    let r = rig();
    let d = driver(&r);
    let mut b = [0u8; 8];
    d.read_config(4, &mut b).unwrap();
    assert_eq!(b, [0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b]);

    r.dev.st().common_log.clear();
    r.dev.st().generation_flips = 2;
    let mut b = [0u8; 2];
    d.read_config(0, &mut b).unwrap();
    assert_eq!(b, [0x10, 0x11]);
    let gen_reads = r
        .dev
        .st()
        .common_log
        .iter()
        .filter(|a| !a.0 && a.1 == COMMON_CONFIG_GENERATION)
        .count();
    assert_eq!(
        gen_reads, 3,
        "changed before, changed after the first read, stable"
    );

    r.dev.st().generation_flips = u32::MAX;
    assert_eq!(
        d.read_config(0, &mut b).unwrap_err(),
        DriverError::ConfigUnstable
    );
    r.dev.st().generation_flips = 0;

    assert!(matches!(
        d.read_config(15, &mut b),
        Err(DriverError::DeviceConfigRange { .. })
    ));
    d.write_config(2, &[0xaa, 0xbb]).unwrap();
    assert_eq!(r.dev.st().config[2..4], [0xaa, 0xbb]);
}

#[test]
fn isr_reads_clear_and_pci_cfg_window_reaches_the_bar() {
    let r = rig();
    let d = driver(&r);
    r.dev.st().isr = ISR_QUEUE;
    assert_eq!(d.read_isr(), ISR_QUEUE);
    assert_eq!(d.read_isr(), 0);

    let before = r.c.stats();
    let mut b = [0u8; 2];
    d.pci_cfg_read(0, COMMON_NUM_QUEUES as u32, &mut b).unwrap();
    assert_eq!(u16::from_le_bytes(b), 3);
    let after = r.c.stats();
    assert_eq!(after.trapped_config_reads - before.trapped_config_reads, 1);
    assert_eq!(
        after.trapped_config_writes - before.trapped_config_writes,
        3
    );
    assert!(matches!(
        d.pci_cfg_read(0, 1, &mut b),
        Err(DriverError::BadPciCfgAccess(_))
    ));
}

// ---- Split ring against a hand-played device ---------------------------------------------------

#[test]
fn chains_round_trip_and_free_their_descriptors() {
    let r = rig();
    let (d, mut q) = with_queue(&r, 0, 0, None);
    let h = d.bus();
    let buf = h.alloc(4096, 16).unwrap();
    let head = q
        .add(&[
            (buf, 16, false),
            (buf + 16, 32, false),
            (buf + 64, 100, true),
        ])
        .unwrap();
    assert_eq!(q.num_free(), 253);
    let mut dev = DeviceRing::new(&r, 0);
    let (h2, chain) = dev.pop().unwrap();
    assert_eq!(h2, head);
    assert_eq!(
        chain,
        vec![
            (buf, 16, VIRTQ_DESC_F_NEXT),
            (buf + 16, 32, VIRTQ_DESC_F_NEXT),
            (buf + 64, 100, VIRTQ_DESC_F_WRITE),
        ]
    );
    assert!(dev.pop().is_none());
    assert_eq!(q.get_used().unwrap(), None);
    dev.push_used(u32::from(head), 42);
    assert_eq!(q.get_used().unwrap(), Some((head, 42)));
    assert_eq!(q.num_free(), 256);
    assert_eq!(dev.used_event(), 1);
    assert_eq!(q.get_used().unwrap(), None);

    // Empty chains and overfull queues.
    assert_eq!(q.add(&[]).unwrap_err(), DriverError::EmptyChain);
    let many = vec![(buf, 1, false); 257];
    assert!(matches!(
        q.add(&many),
        Err(DriverError::QueueFull { needed: 257, .. })
    ));
}

#[test]
fn ring_wraps_and_completes_out_of_order() {
    let r = rig();
    let (d, mut q) = with_queue(&r, 0, 1, None);
    assert_eq!(q.size(), 4);
    let buf = d.bus().alloc(4096, 16).unwrap();
    let mut dev = DeviceRing::new(&r, 1);
    for round in 0..40u32 {
        let a = q.add(&[(buf, round, false), (buf + 8, 8, true)]).unwrap();
        let b = q.add(&[(buf + 16, 4, true), (buf + 32, 4, true)]).unwrap();
        assert_eq!(q.num_free(), 0);
        assert!(matches!(
            q.add(&[(buf, 1, false)]),
            Err(DriverError::QueueFull { .. })
        ));
        let (ha, ca) = dev.pop().unwrap();
        let (hb, _) = dev.pop().unwrap();
        assert_eq!((ha, hb), (a, b));
        assert_eq!(ca[0].1, round);
        // Complete b first.
        dev.push_used(u32::from(b), 2);
        dev.push_used(u32::from(a), 1);
        assert_eq!(q.get_used().unwrap(), Some((b, 2)));
        assert_eq!(q.get_used().unwrap(), Some((a, 1)));
        assert_eq!(q.num_free(), 4);
    }
    assert_eq!(q.avail_idx(), 80);
    assert_eq!(q.last_used_idx(), 80);
}

#[test]
fn indirect_chains() {
    let r = rig();
    let (d, mut q) = with_queue(&r, feature(VIRTIO_F_INDIRECT_DESC), 0, None);
    let buf = d.bus().alloc(4096, 16).unwrap();
    let bufs: Vec<_> = (0..20u64).map(|i| (buf + i * 8, 8, i >= 10)).collect();
    // Short (pooled) and long (own allocation) tables.
    let h1 = q.add_indirect(&bufs[..3]).unwrap();
    let h2 = q.add_indirect(&bufs).unwrap();
    assert_eq!(q.num_free(), 254);
    let (addr, len, flags, _) = q.read_desc(h1).unwrap();
    assert_eq!((len, flags), (48, VIRTQ_DESC_F_INDIRECT));
    assert!(addr >= d.bus().ram_base());
    let mut dev = DeviceRing::new(&r, 0);
    let (_, c1) = dev.pop().unwrap();
    let (_, c2) = dev.pop().unwrap();
    assert_eq!(c1.len(), 3);
    assert_eq!(c2.len(), 20);
    assert_eq!(c2[19], (buf + 19 * 8, 8, VIRTQ_DESC_F_WRITE));
    assert_eq!(c2[0], (buf, 8, VIRTQ_DESC_F_NEXT));
    dev.push_used(u32::from(h2), 0);
    dev.push_used(u32::from(h1), 0);
    assert_eq!(q.get_used().unwrap(), Some((h2, 0)));
    assert_eq!(q.get_used().unwrap(), Some((h1, 0)));
    assert_eq!(q.num_free(), 256);

    let (_, mut q) = with_queue(&rig(), 0, 0, None);
    assert!(matches!(
        q.add_indirect(&bufs[..2]),
        Err(DriverError::FeatureNotNegotiated(_))
    ));
}

#[test]
fn kick_notifies_the_queue_index_unless_suppressed() {
    let r = rig();
    let (d, mut q) = with_queue(&r, 0, 1, None);
    let buf = d.bus().alloc(64, 16).unwrap();
    q.add(&[(buf, 8, false)]).unwrap();
    assert!(q.kick().unwrap());
    assert_eq!(
        r.dev.st().notifies,
        vec![(mock_virtio::NOTIFY + 4, vec![1, 0])]
    );
    // Without EVENT_IDX, VIRTQ_USED_F_NO_NOTIFY suppresses.
    let dev = DeviceRing::new(&r, 1);
    dev.set_used_flags(VIRTQ_USED_F_NO_NOTIFY);
    q.add(&[(buf, 8, false)]).unwrap();
    assert!(!q.kick().unwrap());
    assert_eq!(r.dev.st().notifies.len(), 1);
    dev.set_used_flags(0);
    // Nothing added since the last kick_prepare: old == new, yet Linux still kicks without
    // EVENT_IDX (flags only).
    assert!(q.kick().unwrap());
    assert_eq!(r.c.stats().doorbell_writes, 2);
}

#[test]
fn event_idx_suppression_mirrors_virtqueue_kick_prepare() {
    let r = rig();
    let (d, mut q) = with_queue(&r, feature(VIRTIO_F_EVENT_IDX), 0, None);
    assert!(q.event_idx());
    let buf = d.bus().alloc(64, 16).unwrap();
    let dev = DeviceRing::new(&r, 0);
    // avail_event 0: the first buffer (0 -> 1) crosses it.
    q.add(&[(buf, 8, false)]).unwrap();
    assert!(q.kick().unwrap());
    // Device asks to be notified when avail idx passes 3 (i.e. reaches 4).
    dev.set_avail_event(3);
    q.add(&[(buf, 8, false)]).unwrap();
    assert!(!q.kick().unwrap()); // 1 -> 2
    q.add(&[(buf, 8, false)]).unwrap();
    assert!(!q.kick().unwrap()); // 2 -> 3
    q.add(&[(buf, 8, false)]).unwrap();
    q.add(&[(buf, 8, false)]).unwrap();
    assert!(q.kick().unwrap()); // 3 -> 5 crosses 3
    assert_eq!(r.dev.st().notifies.len(), 2);
    // The used flags are ignored with EVENT_IDX.
    dev.set_used_flags(VIRTQ_USED_F_NO_NOTIFY);
    dev.set_avail_event(5);
    q.add(&[(buf, 8, false)]).unwrap();
    assert!(q.kick().unwrap());
}

#[test]
fn interrupt_suppression_fields() {
    let r = rig();
    let (d, mut q) = with_queue(&r, 0, 0, None);
    let buf = d.bus().alloc(64, 16).unwrap();
    let mut dev = DeviceRing::new(&r, 0);
    q.disable_cb().unwrap();
    assert_eq!(dev.avail_flags(), VIRTQ_AVAIL_F_NO_INTERRUPT);
    let h = q.add(&[(buf, 8, true)]).unwrap();
    dev.pop().unwrap();
    dev.push_used(u32::from(h), 8);
    // Pending used buffer: enable_cb says "don't wait, process".
    assert!(!q.enable_cb().unwrap());
    assert_eq!(dev.avail_flags(), 0);
    assert_eq!(q.get_used().unwrap(), Some((h, 8)));
    assert!(q.enable_cb().unwrap());

    let r = rig();
    let (d, mut q) = with_queue(&r, feature(VIRTIO_F_EVENT_IDX), 0, None);
    let buf = d.bus().alloc(64, 16).unwrap();
    let mut dev = DeviceRing::new(&r, 0);
    let h = q.add(&[(buf, 8, true)]).unwrap();
    dev.pop().unwrap();
    dev.push_used(u32::from(h), 8);
    q.get_used().unwrap().unwrap();
    assert_eq!(dev.used_event(), 1);
    q.disable_cb().unwrap();
    assert_eq!(dev.avail_flags(), 0, "flags untouched with EVENT_IDX");
    assert_eq!(dev.used_event(), 0);
    let h = q.add(&[(buf, 8, true)]).unwrap();
    dev.pop().unwrap();
    dev.push_used(u32::from(h), 8);
    q.get_used().unwrap().unwrap();
    assert_eq!(
        dev.used_event(),
        0,
        "not re-armed while callbacks are disabled"
    );
    assert!(q.enable_cb().unwrap());
    assert_eq!(dev.used_event(), 2);
}

#[test]
fn bad_used_rings_break_the_queue() {
    // Id out of range.
    let r = rig();
    let (d, mut q) = with_queue(&r, 0, 1, None);
    let buf = d.bus().alloc(64, 16).unwrap();
    q.add(&[(buf, 8, false)]).unwrap();
    let dev = DeviceRing::new(&r, 1);
    dev.push_used(4, 0);
    assert!(matches!(q.get_used(), Err(DriverError::BadRing(_))));
    assert!(q.is_broken());
    assert_eq!(q.get_used().unwrap_err(), DriverError::Broken);
    assert_eq!(q.add(&[(buf, 8, false)]).unwrap_err(), DriverError::Broken);

    // Id that is not a head (free descriptor).
    let r = rig();
    let (d, mut q) = with_queue(&r, 0, 1, None);
    let buf = d.bus().alloc(64, 16).unwrap();
    let h = q.add(&[(buf, 8, false)]).unwrap();
    DeviceRing::new(&r, 1).push_used(u32::from(h) + 1, 0);
    assert!(matches!(q.get_used(), Err(DriverError::BadRing(_))));

    // The same head completed twice.
    let r = rig();
    let (d, mut q) = with_queue(&r, 0, 1, None);
    let buf = d.bus().alloc(64, 16).unwrap();
    let h = q.add(&[(buf, 8, false)]).unwrap();
    let dev = DeviceRing::new(&r, 1);
    dev.push_used(u32::from(h), 0);
    dev.push_used(u32::from(h), 0);
    assert!(q.get_used().unwrap().is_some());
    assert!(matches!(q.get_used(), Err(DriverError::BadRing(_))));

    // Used index far ahead.
    let r = rig();
    let (_d, mut q) = with_queue(&r, 0, 1, None);
    DeviceRing::new(&r, 1).set_used_idx(5);
    assert!(matches!(q.get_used(), Err(DriverError::BadRing(_))));
}

#[test]
fn raw_helpers_write_malformed_rings() {
    let r = rig();
    let (d, mut q) = with_queue(&r, 0, 1, None);
    let buf = d.bus().alloc(64, 16).unwrap();
    let mut dev = DeviceRing::new(&r, 1);
    // A descriptor loop: 0 -> 1 -> 0.
    q.write_raw_desc(0, buf, 8, VIRTQ_DESC_F_NEXT, 1).unwrap();
    q.write_raw_desc(1, u64::MAX - 4, 8, VIRTQ_DESC_F_NEXT, 0)
        .unwrap();
    assert!(q.write_raw_desc(4, 0, 0, 0, 0).is_err());
    assert_eq!(
        q.read_desc(1).unwrap(),
        (u64::MAX - 4, 8, VIRTQ_DESC_F_NEXT, 0)
    );
    q.push_avail_raw(0).unwrap();
    q.push_avail_raw(77).unwrap();
    assert_eq!(dev.avail_idx(), 2);
    let mem = r.c.host_memory();
    assert_eq!(mem.read_u16(dev.q.driver + 4 + 2).unwrap(), 77);
    q.set_avail_ring_raw(5, 9).unwrap(); // slot 5 % 4 == 1
    assert_eq!(mem.read_u16(dev.q.driver + 4 + 2).unwrap(), 9);
    q.set_avail_idx_raw(1000).unwrap();
    assert_eq!(dev.avail_idx(), 1000);
    assert_eq!(q.avail_idx(), 1000);
    q.set_avail_flags_raw(0xffff).unwrap();
    assert_eq!(dev.avail_flags(), 0xffff);
    q.set_used_event_raw(0x1234).unwrap();
    assert_eq!(q.used_event().unwrap(), 0x1234);

    // Raw completions are consumed without validation.
    dev.last_avail = 0;
    dev.push_used(77, 5);
    assert_eq!(q.get_used_raw().unwrap(), Some((77, 5)));
    assert_eq!(q.get_used_raw().unwrap(), None);
    assert_eq!(q.used_entry(0).unwrap(), (77, 5));
    assert_eq!(q.used_flags().unwrap(), 0);
    dev.set_avail_event(7);
    assert_eq!(q.avail_event().unwrap(), 7);
}

#[test]
fn wait_used_sleeps_on_msix_and_times_out() {
    let r = rig();
    let mut d = driver(&r);
    d.init(0).unwrap();
    assert!(d.enable_msix());
    let mut q = d.setup_queue(0, None, Some(2)).unwrap();
    d.driver_ok();
    let buf = d.bus().alloc(64, 16).unwrap();
    let h = q.add(&[(buf, 8, true)]).unwrap();
    q.kick().unwrap();

    let mut dev = DeviceRing::new(&r, 0);
    let c = &r.c;
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            let (head, _) = dev.pop().unwrap();
            dev.push_used(u32::from(head), 8);
            c.raise_irq(Irq::Msix(2)).unwrap();
        });
        assert_eq!(q.wait_used().unwrap(), (h, 8));
    });
    assert_eq!(r.c.host().msix_count(2), 1);

    let t = Instant::now();
    assert_eq!(
        q.wait_used_for(Duration::from_millis(30)).unwrap_err(),
        DriverError::Timeout("a used buffer")
    );
    assert!(t.elapsed() >= Duration::from_millis(30));

    // Polling mode (no vector).
    let r = rig();
    let (d, mut q) = with_queue(&r, 0, 1, None);
    let buf = d.bus().alloc(64, 16).unwrap();
    let h = q.add(&[(buf, 8, true)]).unwrap();
    let mut dev = DeviceRing::new(&r, 1);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(10));
            dev.pop().unwrap();
            dev.push_used(u32::from(h), 3);
        });
        assert_eq!(q.wait_used().unwrap(), (h, 3));
    });
}

#[test]
fn function_reset_resets_the_mock_and_msix() {
    let r = rig();
    let mut d = driver(&r);
    d.init(0).unwrap();
    d.enable_msix();
    d.bus().function_reset();
    assert_eq!(d.status(), 0);
    assert!(!d.bus().msix_enabled());
    assert_eq!(r.dev.st().resets, 2, "init() reset, then the FLR");
}
