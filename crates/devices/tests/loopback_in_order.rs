//! VIRTIO_F_IN_ORDER through the real virtio-pci function and rng device on the loopback
//! controller: the device offers it on the modern layout, the loopback host driver takes
//! it on split and packed rings, a burst of requests comes back in order with every byte
//! accounted for while the device wrote fewer used entries than it completed buffers; a
//! driver that declines it gets one used entry per buffer.

mod common;

use common::*;
use epf_devices::RngDevice;
use epf_loopback::host_driver::spec::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const VECTOR: u16 = 1;

/// Posts `n` 64-byte requests, kicks once, and takes them back in order; returns the
/// function's `used_elided` count for queue 0.
fn burst(features: u64, n: usize) -> (u64, u64) {
    let rig = rig(Box::new(RngDevice::new(256)));
    let bus = rig.bus();
    let mut drv = rig.driver();
    assert!(drv.enable_msix());
    let mut qs = bring_up(&mut drv, features, &[(0, Some(64), Some(VECTOR))]);
    let q = &mut qs[0];
    let negotiated = drv.negotiated_features();
    assert_eq!(q.in_order(), negotiated & feature(VIRTIO_F_IN_ORDER) != 0);
    for round in 0..4 {
        let bufs: Vec<u64> = (0..n).map(|_| bus.alloc(64, 8).unwrap()).collect();
        let heads: Vec<u16> = bufs
            .iter()
            .map(|&b| q.add(&[(b, 64, true)]).unwrap())
            .collect();
        q.kick().unwrap();
        for (i, &h) in heads.iter().enumerate() {
            assert_eq!(
                wait_used_strict(&bus, q),
                (h, 64),
                "round {round}, request {i}"
            );
        }
        for &b in &bufs {
            let mut data = [0u8; 64];
            bus.ram_read(b, &mut data).unwrap();
            assert_ne!(data, [0u8; 64], "round {round}: a buffer was not filled");
        }
    }
    let st = rig.f.stats();
    assert_eq!(st.needs_reset.load(Ordering::Relaxed), 0);
    assert_eq!(rig.c.oob_attempts(), 0);
    (negotiated, st.queues[0].used_elided.load(Ordering::Relaxed))
}

#[test]
fn a_burst_comes_back_in_order_with_fewer_used_entries_on_both_ring_formats() {
    for features in [ALL_FEATURES, SPLIT_FEATURES] {
        bounded(LIMIT, move || {
            let (negotiated, elided) = burst(features, 32);
            assert_ne!(negotiated & feature(VIRTIO_F_IN_ORDER), 0);
            assert_eq!(
                negotiated & feature(VIRTIO_F_RING_PACKED) != 0,
                features == ALL_FEATURES
            );
            // The device serves a kick's 32 requests in one pass or a few: most entries go.
            assert!(elided >= 64, "{elided} used entries elided of 128 requests");
        });
    }
}

#[test]
fn a_driver_that_declines_in_order_gets_an_entry_per_buffer() {
    bounded(LIMIT, || {
        let (negotiated, elided) = burst(SPLIT_FEATURES & !feature(VIRTIO_F_IN_ORDER), 32);
        assert_eq!(negotiated & feature(VIRTIO_F_IN_ORDER), 0);
        assert_eq!(elided, 0);
    });
}
