//! The modern virtio-pci transport, end to end: the real [`VirtioPciFunction`] with a tiny
//! test device on the loopback controller, driven only through the loopback host driver
//! (configuration space, BAR accesses, host RAM), like a real host.

mod common;

use common::*;
use epf_epc::PCI_CAP_ID_MSIX;
use epf_loopback::host_driver::spec::*;
use epf_loopback::host_driver::{walk_capabilities, DriverError, HostQueue, VirtioPciDriver};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(5);
const STATUS_ALL_OK: u8 =
    STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
/// Features the transport offers for every device (packed rings with the default options).
const TRANSPORT: u64 = feature(VIRTIO_F_VERSION_1)
    | feature(VIRTIO_F_INDIRECT_DESC)
    | feature(VIRTIO_F_EVENT_IDX)
    | feature(VIRTIO_F_RING_PACKED)
    | feature(VIRTIO_F_NOTIFICATION_DATA);
const CONFIG_VECTOR: u16 = 0;

/// MSI-X on, everything offered accepted, config vector 0, queue `i` on vector `i + 1`.
fn negotiated(rig: &Rig) -> (VirtioPciDriver, Vec<HostQueue>) {
    let mut drv = rig.driver();
    assert!(drv.enable_msix());
    drv.init(u64::MAX).unwrap();
    drv.set_config_vector(CONFIG_VECTOR).unwrap();
    let q0 = drv.setup_queue(0, None, Some(1)).unwrap();
    let q1 = drv.setup_queue(1, None, Some(2)).unwrap();
    drv.driver_ok();
    (drv, vec![q0, q1])
}

/// Posts one writable buffer of `len` bytes on queue 0, notifies, and checks the device
/// filled it entirely.
fn fill_request(rig: &Rig, q: &mut HostQueue, len: u32) {
    let bus = rig.c.host();
    let buf = bus.alloc(u64::from(len), 8).unwrap();
    let head = q.add(&[(buf, len, true)]).unwrap();
    q.notify();
    let (id, used_len) = q.wait_used_for(WAIT).unwrap();
    assert_eq!((id, used_len), (head, len));
    let mut data = vec![0; len as usize];
    bus.ram_read(buf, &mut data).unwrap();
    assert!(data.iter().all(|&b| b == FILL_BYTE), "buffer not filled");
}

/// Posts one readable chain carrying `bytes` on queue 1 (the device copies them into its
/// configuration space) and waits for it.
fn config_request(rig: &Rig, q: &mut HostQueue, bytes: [u8; 4]) {
    let bus = rig.c.host();
    let buf = bus.alloc(4, 8).unwrap();
    bus.ram_write(buf, &bytes).unwrap();
    let head = q.add(&[(buf, 4, false)]).unwrap();
    q.notify();
    assert_eq!(q.wait_used_for(WAIT).unwrap(), (head, 0));
}

#[test]
fn probe_finds_the_five_vendor_capabilities_and_msix() {
    bounded(LIMIT, || {
        let (dev, _) = TestDevice::boxed();
        let rig = rig(dev);
        let bus = rig.c.host();
        let drv = rig.driver();
        assert_eq!(bus.config_read16(PCI_VENDOR_ID), VIRTIO_PCI_VENDOR_ID);
        assert_eq!(drv.pci_device_id(), 0x1040 + TEST_DEVICE_TYPE as u16);
        assert_eq!(drv.device_type(), TEST_DEVICE_TYPE as u16);
        assert!(
            bus.config_read8(PCI_REVISION_ID) >= 1,
            "modern devices: revision >= 1"
        );

        let caps = drv.caps();
        let mut types: Vec<u8> = caps.all.iter().map(|c| c.cfg_type).collect();
        types.sort_unstable();
        assert_eq!(
            types,
            vec![
                VIRTIO_PCI_CAP_COMMON_CFG,
                VIRTIO_PCI_CAP_NOTIFY_CFG,
                VIRTIO_PCI_CAP_ISR_CFG,
                VIRTIO_PCI_CAP_DEVICE_CFG,
                VIRTIO_PCI_CAP_PCI_CFG
            ],
            "exactly one vendor capability of each of the five types"
        );
        assert!(caps.device.is_some() && caps.pci_cfg.is_some());
        assert!(caps.common.length >= COMMON_CFG_SIZE);
        assert_eq!(
            walk_capabilities(&bus)
                .iter()
                .filter(|(id, _)| *id == PCI_CAP_ID_MSIX)
                .count(),
            1,
            "one MSI-X capability"
        );
        // One vector per queue plus one for configuration changes.
        assert_eq!(bus.msix_vectors(), TEST_QUEUE_MAX.len() as u16 + 1);
        assert_eq!(drv.num_queues(), TEST_QUEUE_MAX.len() as u16);
        for (i, &max) in TEST_QUEUE_MAX.iter().enumerate() {
            assert_eq!(drv.queue_size(i as u16), max);
        }
        assert_eq!(
            drv.queue_size(7),
            0,
            "a queue that does not exist has size 0"
        );
        rig.finish();
    });
}

#[test]
fn feature_words_and_features_ok_refusal() {
    bounded(LIMIT, || {
        let (dev, probe) = TestDevice::boxed();
        let rig = rig(dev);
        let mut drv = rig.driver();
        drv.reset().unwrap();
        assert_eq!(drv.device_features(), TRANSPORT | DEV_F_A | DEV_F_B);
        for select in [2, 3, 4, 0x8000_0000, u32::MAX] {
            assert_eq!(drv.device_feature_word(select), 0, "feature word {select}");
        }

        // A feature the device did not offer.
        let err = drv
            .negotiate_forced(feature(VIRTIO_F_VERSION_1) | DEV_F_A | DEV_F_UNOFFERED)
            .unwrap_err();
        assert!(matches!(err, DriverError::FeaturesRefused { .. }), "{err}");
        assert_eq!(drv.status() & STATUS_FEATURES_OK, 0);
        // A driver that goes on anyway must not get an active device.
        drv.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(rig.f.stats().activations.load(Ordering::SeqCst), 0);
        assert_eq!(probe.activations.load(Ordering::SeqCst), 0);

        // Offered features only, but without VERSION_1.
        drv.reset().unwrap();
        let err = drv.negotiate_forced(DEV_F_A | DEV_F_B).unwrap_err();
        assert!(matches!(err, DriverError::FeaturesRefused { .. }), "{err}");

        // A bit beyond 63 (feature word 2).
        drv.reset().unwrap();
        drv.add_status(STATUS_ACKNOWLEDGE);
        drv.add_status(STATUS_DRIVER);
        drv.write_driver_features(feature(VIRTIO_F_VERSION_1));
        drv.write_driver_feature_word(2, 1);
        drv.add_status(STATUS_FEATURES_OK);
        assert_eq!(
            drv.status() & STATUS_FEATURES_OK,
            0,
            "bit 64 must be refused"
        );

        // A transport feature the driver does not want is fine; the words read back.
        drv.reset().unwrap();
        let accepted = drv
            .negotiate_forced(feature(VIRTIO_F_VERSION_1) | DEV_F_B)
            .unwrap();
        assert_eq!(drv.driver_feature_word(0), accepted as u32);
        assert_eq!(drv.driver_feature_word(1), (accepted >> 32) as u32);
        assert_ne!(drv.status() & STATUS_FEATURES_OK, 0);
        // Features are frozen once FEATURES_OK is set.
        drv.write_driver_feature_word(0, DEV_F_A as u32);
        assert_eq!(drv.driver_feature_word(0), accepted as u32);
        rig.finish();
    });
}

#[test]
fn reset_writes_zero_polls_zero_and_restores_every_register() {
    bounded(LIMIT, || {
        let (dev, probe) = TestDevice::boxed();
        let rig = rig(dev);
        let mut drv = rig.driver();
        assert!(drv.enable_msix());
        // A reset of a device never activated completes at once.
        drv.set_status(0);
        assert_eq!(drv.status(), 0);

        drv.init(u64::MAX).unwrap();
        drv.set_config_vector(CONFIG_VECTOR).unwrap();
        let mut q0 = drv.setup_queue(0, Some(128), Some(1)).unwrap();
        drv.driver_ok();
        assert_eq!(drv.status(), STATUS_ALL_OK);
        fill_request(&rig, &mut q0, 100);
        assert!(wait_until(WAIT, || probe
            .activations
            .load(Ordering::SeqCst)
            == 1));

        drv.reset().unwrap();
        assert_eq!(drv.status(), 0);
        assert_eq!(probe.resets.load(Ordering::SeqCst), 1, "device reset ran");
        assert_eq!(
            drv.queue_size(0),
            TEST_QUEUE_MAX[0],
            "queue size back to maximum"
        );
        assert!(!drv.queue_enabled(0));
        drv.common_write16(COMMON_QUEUE_SELECT, 0);
        assert_eq!(
            drv.common_read16(COMMON_QUEUE_MSIX_VECTOR),
            VIRTIO_MSI_NO_VECTOR
        );
        for reg in [COMMON_QUEUE_DESC, COMMON_QUEUE_DRIVER, COMMON_QUEUE_DEVICE] {
            assert_eq!(drv.common_read32(reg), 0);
            assert_eq!(drv.common_read32(reg + 4), 0);
        }
        assert_eq!(drv.config_vector(), VIRTIO_MSI_NO_VECTOR);
        assert_eq!(drv.driver_feature_word(0), 0);
        assert_eq!(drv.driver_feature_word(1), 0);
        assert_eq!(drv.device_features(), TRANSPORT | DEV_F_A | DEV_F_B);

        // And the device works again.
        let (_drv, mut qs) = negotiated(&rig);
        fill_request(&rig, &mut qs[0], 4096);
        assert_eq!(probe.activations.load(Ordering::SeqCst), 2);
        rig.finish();
    });
}

#[test]
fn status_reads_old_value_until_a_slow_device_reset_is_done() {
    bounded(LIMIT, || {
        let (dev, probe) = TestDevice::boxed();
        let rig = rig(dev);
        let (drv, _qs) = negotiated(&rig);
        assert!(wait_until(WAIT, || probe
            .activations
            .load(Ordering::SeqCst)
            == 1));
        probe.reset_delay_ms.store(150, Ordering::SeqCst);

        let start = Instant::now();
        drv.set_status(0);
        assert_eq!(
            drv.status(),
            STATUS_ALL_OK,
            "half-reset device must not read 0"
        );
        // Writes while the reset is pending are ignored.
        drv.set_status(STATUS_ACKNOWLEDGE);
        loop {
            let s = drv.status();
            if s == 0 {
                break;
            }
            assert_eq!(s, STATUS_ALL_OK);
            assert!(start.elapsed() < WAIT, "reset never completed");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(start.elapsed() >= Duration::from_millis(150));
        assert_eq!(
            probe.resets.load(Ordering::SeqCst),
            1,
            "status read 0 before the device was reset"
        );
        assert_eq!(drv.status(), 0, "the write during the reset was ignored");
        rig.finish();
    });
}

/// A function-level reset that arrives while a driver-initiated reset is still waiting for a
/// slow device must not leave the function stuck in the pending reset.
#[test]
fn function_reset_while_a_driver_reset_is_pending() {
    bounded(LIMIT, || {
        let (dev, probe) = TestDevice::boxed();
        let rig = rig(dev);
        let bus = rig.c.host();
        let (drv, _qs) = negotiated(&rig);
        assert!(wait_until(WAIT, || probe
            .activations
            .load(Ordering::SeqCst)
            == 1));
        probe.reset_delay_ms.store(200, Ordering::SeqCst);
        drv.set_status(0);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            drv.status(),
            STATUS_ALL_OK,
            "the slow reset is still pending"
        );
        bus.function_reset();
        let mut drv = rig.driver();
        assert!(
            wait_until(WAIT, || drv.status() == 0),
            "status stuck at {:#x} after the function reset",
            drv.status()
        );
        probe.reset_delay_ms.store(0, Ordering::SeqCst);
        assert!(drv.enable_msix());
        drv.init(u64::MAX).unwrap();
        drv.set_config_vector(CONFIG_VECTOR).unwrap();
        let mut q0 = drv.setup_queue(0, None, Some(1)).unwrap();
        drv.driver_ok();
        fill_request(&rig, &mut q0, 512);
        assert_eq!(probe.activations.load(Ordering::SeqCst), 2);
        rig.finish_after_flr();
    });
}

/// A driver may write a feature word beyond bit 63 and then clear it again; what counts at
/// FEATURES_OK is what the words hold then.
#[test]
fn features_beyond_bit_63_count_as_last_written() {
    bounded(LIMIT, || {
        let (dev, _) = TestDevice::boxed();
        let rig = rig(dev);
        let drv = rig.driver();
        let attempt = |words: &[(u32, u32)]| {
            drv.reset().unwrap();
            drv.add_status(STATUS_ACKNOWLEDGE);
            drv.add_status(STATUS_DRIVER);
            drv.write_driver_features(feature(VIRTIO_F_VERSION_1));
            for &(select, v) in words {
                drv.write_driver_feature_word(select, v);
            }
            drv.add_status(STATUS_FEATURES_OK);
            drv.status() & STATUS_FEATURES_OK != 0
        };
        assert!(
            !attempt(&[(2, 1), (3, 0x8000_0000), (2, 0)]),
            "word 3 still has a bit set"
        );
        assert!(!attempt(&[(100, 4)]), "a bit far beyond 63");
        assert!(
            attempt(&[(2, 1), (3, 0x8000_0000), (2, 0), (3, 0)]),
            "refused although no bit beyond 63 is set any more"
        );
        assert!(attempt(&[(2, 0), (7, 0)]), "zero words beyond 63");
        rig.finish();
    });
}

#[test]
fn queue_size_can_be_lowered_but_not_raised_and_freezes_when_enabled() {
    bounded(LIMIT, || {
        let (dev, _) = TestDevice::boxed();
        let rig = rig(dev);
        let mut drv = rig.driver();
        assert!(drv.enable_msix());
        // Split rings: sizes are powers of two (packed rings: any size, see below).
        drv.init(!feature(VIRTIO_F_RING_PACKED)).unwrap();
        drv.set_config_vector(CONFIG_VECTOR).unwrap();
        let max = TEST_QUEUE_MAX[0];
        let write_size = |v: u16| {
            drv.common_write16(COMMON_QUEUE_SELECT, 0);
            drv.common_write16(COMMON_QUEUE_SIZE, v);
            drv.common_read16(COMMON_QUEUE_SIZE)
        };
        assert_eq!(write_size(max * 2), max, "raised above the maximum");
        assert_eq!(write_size(100), max, "not a power of two");
        assert_eq!(write_size(0), max, "zero");
        assert_eq!(write_size(64), 64);
        assert_eq!(write_size(max * 2), 64);
        assert_eq!(write_size(1), 1);
        assert_eq!(write_size(max), max, "back up to the maximum is allowed");

        // Run a queue of 16 (lowered) through several ring wraps: the device must use 16
        // for the ring layout.
        let mut q0 = drv.setup_queue(0, Some(16), Some(1)).unwrap();
        assert_eq!(drv.queue_size(0), 16);
        // Queue registers are frozen once the queue is enabled.
        drv.common_write16(COMMON_QUEUE_SELECT, 0);
        drv.common_write16(COMMON_QUEUE_SIZE, 8);
        drv.common_write64_twopart(COMMON_QUEUE_DESC, 0x1234_0000);
        assert_eq!(drv.queue_size(0), 16);
        drv.common_write16(COMMON_QUEUE_SELECT, 0);
        assert_eq!(
            u64::from(drv.common_read32(COMMON_QUEUE_DESC))
                | u64::from(drv.common_read32(COMMON_QUEUE_DESC + 4)) << 32,
            q0.desc_addr()
        );
        drv.driver_ok();
        for i in 0..40 {
            fill_request(&rig, &mut q0, 1 + i * 7);
        }
        assert_eq!(q0.last_used_idx(), 40);
        rig.finish();
    });
}

#[test]
fn packed_queue_sizes_need_not_be_powers_of_two() {
    bounded(LIMIT, || {
        let (dev, _) = TestDevice::boxed();
        let rig = rig(dev);
        let mut drv = rig.driver();
        assert!(drv.enable_msix());
        let features = drv.init(u64::MAX).unwrap();
        assert_ne!(
            features & feature(VIRTIO_F_RING_PACKED),
            0,
            "packed offered by default"
        );
        drv.set_config_vector(CONFIG_VECTOR).unwrap();
        drv.common_write16(COMMON_QUEUE_SELECT, 0);
        drv.common_write16(COMMON_QUEUE_SIZE, 0);
        assert_eq!(
            drv.common_read16(COMMON_QUEUE_SIZE),
            TEST_QUEUE_MAX[0],
            "zero"
        );
        // A ring of 13 through several wraps (chains of one descriptor, then of two).
        let mut q0 = drv.setup_queue(0, Some(13), Some(1)).unwrap();
        assert!(q0.is_packed());
        assert_eq!(drv.queue_size(0), 13);
        drv.driver_ok();
        for i in 0..40 {
            fill_request(&rig, &mut q0, 1 + i * 7);
        }
        let bus = rig.c.host();
        for _ in 0..20 {
            let a = bus.alloc(8, 8).unwrap();
            let b = bus.alloc(8, 8).unwrap();
            let head = q0.add(&[(a, 8, true), (b, 8, true)]).unwrap();
            q0.notify();
            assert_eq!(q0.wait_used_for(WAIT).unwrap(), (head, 16));
        }
        assert_eq!(q0.num_free(), 13);
        rig.finish();
    });
}

#[test]
fn queue_msix_vector_read_back() {
    bounded(LIMIT, || {
        let (dev, _) = TestDevice::boxed();
        let rig = rig(dev);
        let mut drv = rig.driver();
        assert!(drv.enable_msix());
        drv.init(u64::MAX).unwrap();
        let vectors = rig.c.host().msix_vectors();
        assert_eq!(vectors, 3);

        drv.set_queue_vector(0, 2).unwrap();
        drv.set_queue_vector(1, 0).unwrap();
        let err = drv.set_queue_vector(0, vectors).unwrap_err();
        assert_eq!(
            err,
            DriverError::VectorRefused {
                what: "queue 0".into(),
                vector: vectors,
                read_back: VIRTIO_MSI_NO_VECTOR
            }
        );
        assert!(matches!(
            drv.set_queue_vector(1, 0x7ff),
            Err(DriverError::VectorRefused {
                read_back: 0xffff,
                ..
            })
        ));
        // NO_VECTOR itself is accepted.
        drv.set_queue_vector(1, VIRTIO_MSI_NO_VECTOR).unwrap();
        drv.set_config_vector(2).unwrap();
        assert!(matches!(
            drv.set_config_vector(vectors),
            Err(DriverError::VectorRefused {
                read_back: 0xffff,
                ..
            })
        ));
        drv.set_config_vector(CONFIG_VECTOR).unwrap();

        // The vectors the driver set are the ones used.
        let mut q0 = drv.setup_queue(0, None, Some(2)).unwrap();
        drv.driver_ok();
        let bus = rig.c.host();
        let before = (bus.msix_count(1), bus.msix_count(2));
        fill_request(&rig, &mut q0, 64);
        assert!(wait_until(WAIT, || bus.msix_count(2) > before.1));
        assert_eq!(
            bus.msix_count(1),
            before.0,
            "interrupt on a vector not assigned"
        );
        rig.finish();
    });
}

#[test]
fn queue_notify_off_and_multiplier_address_each_queue() {
    bounded(LIMIT, || {
        let (dev, probe) = TestDevice::boxed();
        let rig = rig(dev);
        let (drv, mut qs) = negotiated(&rig);
        let caps = drv.caps().clone();
        assert!(caps.notify_off_multiplier >= 2 && caps.notify_off_multiplier % 2 == 0);
        for (i, q) in qs.iter().enumerate() {
            drv.common_write16(COMMON_QUEUE_SELECT, i as u16);
            let off = drv.common_read16(COMMON_QUEUE_NOTIFY_OFF);
            assert_eq!(
                q.notify_location(),
                (
                    caps.notify.bar,
                    u64::from(caps.notify.offset)
                        + u64::from(off) * u64::from(caps.notify_off_multiplier)
                )
            );
        }
        assert_ne!(qs[0].notify_location(), qs[1].notify_location());
        let stats = rig.f.stats();
        let notes = |i: usize| stats.queues[i].notifications.load(Ordering::SeqCst);
        // Wait for activation to settle.
        assert!(wait_until(WAIT, || probe
            .activations
            .load(Ordering::SeqCst)
            == 1));
        let base = (notes(0), notes(1));

        config_request(&rig, &mut qs[1], [1, 2, 3, 4]);
        assert!(wait_until(WAIT, || notes(1) == base.1 + 1));
        assert_eq!(notes(0), base.0, "queue 1's address notified queue 0");
        fill_request(&rig, &mut qs[0], 8);
        assert!(wait_until(WAIT, || notes(0) == base.0 + 1));
        assert_eq!(notes(1), base.1 + 1);

        // Misaligned offsets and queues that do not exist are ignored.
        let bus = rig.c.host();
        let (bar, off) = qs[0].notify_location();
        bus.bar_write16(bar, off + 2, 0);
        bus.bar_write16(bar, off + 64 * u64::from(caps.notify_off_multiplier), 0);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!((notes(0), notes(1)), (base.0 + 1, base.1 + 1));
        assert_eq!(drv.status(), STATUS_ALL_OK);
        rig.finish();
    });
}

#[test]
fn device_config_change_bumps_generation_and_raises_the_config_vector() {
    bounded(LIMIT, || {
        let (dev, _) = TestDevice::boxed();
        let rig = rig(dev);
        let bus = rig.c.host();
        let (drv, mut qs) = negotiated(&rig);
        let mut b = [0u8; 4];
        drv.read_config(0, &mut b).unwrap();
        assert_eq!(u32::from_le_bytes(b), CONFIG_MAGIC);
        let gen0 = drv.config_generation();
        // Queue activity alone is not a configuration change.
        fill_request(&rig, &mut qs[0], 16);
        assert!(!bus.wait_msix(CONFIG_VECTOR, Duration::from_millis(50)));
        assert_eq!(drv.config_generation(), gen0);

        for (round, bytes) in [[1u8, 2, 3, 4], [0xde, 0xad, 0xbe, 0xef]]
            .iter()
            .enumerate()
        {
            config_request(&rig, &mut qs[1], *bytes);
            assert!(
                bus.wait_msix(CONFIG_VECTOR, WAIT),
                "no configuration interrupt"
            );
            assert_eq!(drv.config_generation(), gen0.wrapping_add(round as u8 + 1));
            drv.read_config(4, &mut b).unwrap();
            assert_eq!(b, *bytes);
        }
        // The config vector only fires for config changes.
        fill_request(&rig, &mut qs[0], 16);
        assert!(!bus.wait_msix(CONFIG_VECTOR, Duration::from_millis(50)));
        // The device configuration is read-only for the driver.
        drv.write_config(4, &[9, 9, 9, 9]).unwrap();
        drv.read_config(4, &mut b).unwrap();
        assert_eq!(b, [0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(bus.stats().intx_asserts, 0, "INTx while MSI-X is enabled");
        rig.finish();
    });
}

#[test]
fn config_vector_is_used_as_read_back_whenever_it_was_written() {
    bounded(LIMIT, || {
        let (dev, _) = TestDevice::boxed();
        let rig = rig(dev);
        let bus = rig.c.host();
        let mut drv = rig.driver();
        assert!(drv.enable_msix());
        drv.reset().unwrap();
        // Written while the status is still 0 (before ACKNOWLEDGE): the register reads it
        // back, so configuration changes must be signalled on it.
        drv.set_config_vector(CONFIG_VECTOR).unwrap();
        drv.negotiate(u64::MAX).unwrap();
        assert_eq!(drv.config_vector(), CONFIG_VECTOR);
        let _q0 = drv.setup_queue(0, None, Some(1)).unwrap();
        let mut q1 = drv.setup_queue(1, None, Some(2)).unwrap();
        drv.driver_ok();
        config_request(&rig, &mut q1, [1, 1, 1, 1]);
        assert!(
            bus.wait_msix(CONFIG_VECTOR, WAIT),
            "config change not signalled on the vector the register reads back"
        );
        rig.finish();
    });
}

#[test]
fn isr_is_read_to_clear_and_drives_intx_without_msix() {
    bounded(LIMIT, || {
        let (dev, _) = TestDevice::boxed();
        let rig = rig(dev);
        let bus = rig.c.host();
        let mut drv = rig.driver();
        // MSI-X never enabled: INTx + ISR.
        assert!(!bus.msix_enabled());
        drv.init(u64::MAX).unwrap();
        let mut q0 = drv.setup_queue(0, None, None).unwrap();
        let mut q1 = drv.setup_queue(1, None, None).unwrap();
        drv.driver_ok();
        assert_eq!(drv.read_isr(), 0);
        assert!(!bus.intx_asserted());

        let buf = bus.alloc(32, 8).unwrap();
        q0.add(&[(buf, 32, true)]).unwrap();
        q0.notify();
        assert!(
            wait_until(WAIT, || bus.intx_asserted()),
            "INTx not asserted"
        );
        assert!(bus.intx_level());
        assert!(q0.get_used().unwrap().is_some());
        let isr = drv.read_isr();
        assert_eq!(isr & ISR_QUEUE, ISR_QUEUE, "isr {isr:#x}");
        assert_eq!(isr & ISR_CONFIG, 0, "isr {isr:#x}");
        assert!(!bus.intx_asserted(), "reading the ISR must deassert INTx");
        assert_eq!(drv.read_isr(), 0, "the ISR is read-to-clear");

        // A configuration change sets the config bit.
        let gen0 = drv.config_generation();
        let data = bus.alloc(4, 8).unwrap();
        bus.ram_write(data, &[5, 6, 7, 8]).unwrap();
        q1.add(&[(data, 4, false)]).unwrap();
        q1.notify();
        assert!(wait_until(WAIT, || drv.config_generation() != gen0));
        let mut seen = 0;
        assert!(wait_until(WAIT, || {
            if bus.intx_asserted() {
                seen |= drv.read_isr();
            }
            seen & ISR_CONFIG != 0
        }));
        assert!(!bus.intx_asserted());
        assert_eq!(drv.read_isr(), 0);
        assert!(q1.get_used().unwrap().is_some());
        assert_eq!(bus.stats().msix_delivered, 0);
        rig.finish();
    });
}

/// A device reset with a used-buffer interrupt still pending (the driver never read the ISR)
/// must not leave INTx asserted with an ISR of 0: the host's handler would find nothing to
/// clear and the line would stay asserted (an interrupt storm, "nobody cared").
#[test]
fn reset_deasserts_a_pending_intx() {
    bounded(LIMIT, || {
        let (dev, _) = TestDevice::boxed();
        let rig = rig(dev);
        let bus = rig.c.host();
        let mut drv = rig.driver();
        drv.init(u64::MAX).unwrap();
        let mut q0 = drv.setup_queue(0, None, None).unwrap();
        drv.driver_ok();
        let buf = bus.alloc(32, 8).unwrap();
        q0.add(&[(buf, 32, true)]).unwrap();
        q0.notify();
        assert!(
            wait_until(WAIT, || bus.intx_asserted()),
            "INTx not asserted"
        );
        drv.reset().unwrap();
        assert_eq!(drv.read_isr(), 0, "the ISR survived the reset");
        assert!(
            !bus.intx_asserted(),
            "INTx still asserted after the reset, with nothing in the ISR"
        );
        // And the next interrupt works as usual.
        drv.init(u64::MAX).unwrap();
        let mut q0 = drv.setup_queue(0, None, None).unwrap();
        drv.driver_ok();
        q0.add(&[(buf, 32, true)]).unwrap();
        q0.notify();
        assert!(wait_until(WAIT, || bus.intx_asserted()));
        assert_eq!(drv.read_isr() & ISR_QUEUE, ISR_QUEUE);
        assert!(!bus.intx_asserted());
        rig.finish();
    });
}

#[test]
fn pci_cfg_access_capability_reaches_the_common_and_device_config() {
    bounded(LIMIT, || {
        let (dev, _) = TestDevice::boxed();
        let rig = rig(dev);
        let drv = rig.driver();
        drv.reset().unwrap();
        let common = drv.caps().common;
        let device = drv.caps().device.unwrap();
        let status_at = common.offset + COMMON_DEVICE_STATUS as u32;
        let mut b1 = [0u8; 1];
        let mut b2 = [0u8; 2];
        let mut b4 = [0u8; 4];

        drv.add_status(STATUS_ACKNOWLEDGE);
        drv.pci_cfg_read(common.bar, status_at, &mut b1).unwrap();
        assert_eq!(b1[0], STATUS_ACKNOWLEDGE);
        drv.pci_cfg_write(common.bar, status_at, &[STATUS_ACKNOWLEDGE | STATUS_DRIVER])
            .unwrap();
        assert_eq!(drv.status(), STATUS_ACKNOWLEDGE | STATUS_DRIVER);

        for select in 0..3u32 {
            drv.pci_cfg_write(
                common.bar,
                common.offset + COMMON_DEVICE_FEATURE_SELECT as u32,
                &select.to_le_bytes(),
            )
            .unwrap();
            drv.pci_cfg_read(
                common.bar,
                common.offset + COMMON_DEVICE_FEATURE as u32,
                &mut b4,
            )
            .unwrap();
            let expect = match select {
                0 => (TRANSPORT | DEV_F_A | DEV_F_B) as u32,
                1 => ((TRANSPORT | DEV_F_A | DEV_F_B) >> 32) as u32,
                _ => 0,
            };
            assert_eq!(u32::from_le_bytes(b4), expect, "feature word {select}");
        }
        drv.pci_cfg_read(
            common.bar,
            common.offset + COMMON_NUM_QUEUES as u32,
            &mut b2,
        )
        .unwrap();
        assert_eq!(u16::from_le_bytes(b2), TEST_QUEUE_MAX.len() as u16);
        drv.pci_cfg_read(device.bar, device.offset, &mut b4)
            .unwrap();
        assert_eq!(u32::from_le_bytes(b4), CONFIG_MAGIC);

        // The window and the BAR agree after a full negotiation through the BAR.
        drv.reset().unwrap();
        let (drv, _qs) = negotiated(&rig);
        drv.pci_cfg_read(common.bar, status_at, &mut b1).unwrap();
        assert_eq!(b1[0], STATUS_ALL_OK);
        rig.finish();
    });
}

/// A driver that adds buffers while the device is finishing its passes, without notifying
/// (as a driver that read `avail_event` before the device re-armed it would): the worker must
/// keep re-arming and looking until the ring is really empty, or those buffers are stranded.
#[test]
fn buffers_added_during_rearm_are_not_stranded() {
    bounded(Duration::from_secs(30), || {
        let (dev, probe) = TestDevice::boxed();
        let rig = rig(dev);
        let (_drv, queues) = negotiated(&rig);
        let mut it = queues.into_iter();
        let mut first = it.next().unwrap();
        // One full round trip first, so the activation pass is over before hooks are set.
        fill_request(&rig, &mut first, 16);
        let q0 = std::sync::Arc::new(std::sync::Mutex::new(first));
        let bus = rig.c.host();
        let bufs: Vec<u64> = (0..3).map(|_| bus.alloc(64, 8).unwrap()).collect();
        // The 2nd and 3rd buffers appear, unannounced, at the end of the 1st and 2nd passes.
        for &b in &bufs[1..] {
            let q = q0.clone();
            probe.on_empty.lock().unwrap().push(Box::new(move || {
                q.lock().unwrap().add(&[(b, 64, true)]).unwrap();
            }));
        }
        let head0 = q0.lock().unwrap().add(&[(bufs[0], 64, true)]).unwrap();
        q0.lock().unwrap().notify();
        let mut done = Vec::new();
        let t = std::time::Instant::now();
        while done.len() < 3 && t.elapsed() < WAIT {
            if let Some((id, len)) = q0.lock().unwrap().get_used().unwrap() {
                assert_eq!(len, 64);
                done.push(id);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(done.len(), 3, "buffers stranded: completed {done:?}");
        assert_eq!(done[0], head0);
        assert_eq!(probe.chains[0].load(Ordering::SeqCst), 4);
        assert!(probe.on_empty.lock().unwrap().is_empty());
        drop(q0);
        rig.finish();
    });
}

/// VIRTIO_F_NOTIFICATION_DATA on both ring formats: the driver's 32-bit kicks carry its next
/// available index (split) or position and wrap counter (packed); the device uses it in
/// place of a ring read (counted) and still completes every request. A stale value, or one
/// naming another queue, costs the hint only: the ring decides. (A value ahead of what the
/// driver made available is the driver corrupting its own queue; the engine's tests show
/// it ends in DEVICE_NEEDS_RESET, never outside host memory.)
#[test]
fn notification_data_saves_ring_reads_and_a_wrong_value_is_only_a_hint() {
    for packed in [false, true] {
        bounded(LIMIT, move || {
            let (dev, _probe) = TestDevice::boxed();
            let rig = rig(dev);
            let mut drv = rig.driver();
            assert!(drv.enable_msix());
            let want = if packed {
                u64::MAX
            } else {
                !feature(VIRTIO_F_RING_PACKED)
            };
            let features = drv.init(want).unwrap();
            assert_ne!(features & feature(VIRTIO_F_NOTIFICATION_DATA), 0);
            drv.set_config_vector(CONFIG_VECTOR).unwrap();
            let mut q0 = drv.setup_queue(0, None, Some(1)).unwrap();
            let _q1 = drv.setup_queue(1, None, Some(2)).unwrap();
            drv.driver_ok();
            // Past the ring's end more than once (queue size 256), so wrap counters and the
            // 16-bit index wrap are both exercised.
            for _ in 0..600 {
                fill_request(&rig, &mut q0, 16);
            }
            let saved = rig.f.stats().queues[0]
                .ring_reads_saved
                .load(Ordering::Relaxed);
            assert!(saved >= 600, "packed={packed}: {saved} ring reads saved");
            // A stale value (what was announced before this buffer was added: the device
            // has popped up to it) and data naming queue 1 at queue 0's address: neither
            // hides the new buffer, which the re-check after re-enabling notifications reads.
            let (bar, off) = q0.notify_location();
            let bus = rig.c.host();
            let buf = bus.alloc(16, 8).unwrap();
            let stale = q0.notification_next();
            let head = q0.add(&[(buf, 16, true)]).unwrap();
            bus.bar_write32(bar, off, u32::from(stale) << 16);
            assert_eq!(q0.wait_used_for(WAIT).unwrap(), (head, 16));
            let head = q0.add(&[(buf, 16, true)]).unwrap();
            bus.bar_write32(bar, off, u32::from(q0.notification_next()) << 16 | 1);
            assert_eq!(q0.wait_used_for(WAIT).unwrap(), (head, 16));
            fill_request(&rig, &mut q0, 16);
            assert_eq!(rig.f.stats().needs_reset.load(Ordering::Relaxed), 0);
            rig.finish();
        });
    }
}

/// Polled notifications on the modern layout: the notify area is plain memory with a slot
/// per queue; the host's kicks are memory writes (no trapped access), which the notify page
/// poller finds and hands to the worker with their notification data.
#[test]
fn a_polled_notify_page_takes_kicks_without_a_trapped_access() {
    bounded(LIMIT, || {
        let (dev, probe) = TestDevice::boxed();
        let rig = Rig::with_function_options(
            epf_loopback::LoopbackOptions::default(),
            dev,
            epf_virtio_pci::FunctionOptions {
                notify: epf_virtio_pci::NotifyMode::Poll,
                ..Default::default()
            },
        );
        let (_drv, mut queues) = negotiated(&rig);
        let trapped = rig.f.stats().bar_writes.load(Ordering::Relaxed);
        for _ in 0..300 {
            fill_request(&rig, &mut queues[0], 16);
        }
        config_request(&rig, &mut queues[1], [1, 2, 3, 4]);
        let st = rig.f.stats();
        assert_eq!(
            st.bar_writes.load(Ordering::Relaxed),
            trapped,
            "a kick was trapped"
        );
        // Kicks the worker took (a notification can be served by the pass before it, and
        // two host writes before the poller looks are one kick, so not one per request).
        assert!(st.queues[0].notifications.load(Ordering::Relaxed) > 0);
        assert!(st.queues[0].ring_reads_saved.load(Ordering::Relaxed) > 0);
        assert_eq!(probe.chains[0].load(Ordering::SeqCst), 300);
        assert_eq!(probe.chains[1].load(Ordering::SeqCst), 1);
        let text = epf_epc::Counters::new().add(&*rig.f).text().to_string();
        let kicks = text
            .lines()
            .find_map(|l| l.strip_prefix("notify_poll: "))
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|kv| kv.strip_prefix("kicks="))
            })
            .and_then(|v| v.parse::<u64>().ok());
        assert!(kicks.is_some_and(|k| k > 0), "{text}");
        rig.finish();
    });
}
