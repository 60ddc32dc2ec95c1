//! Packed rings (VIRTIO_F_RING_PACKED) end to end on the loopback controller: the real
//! virtio-pci function and rng device driven by the loopback host driver's packed ring.
//! Every malformed-ring rule a host can break puts the device into DEVICE_NEEDS_RESET (with
//! a configuration interrupt, no completion, no access outside host RAM) and a fresh
//! negotiation works again; a reset in the middle of traffic completes nothing stale; the
//! device's event suppression structure follows VIRTIO_F_EVENT_IDX; queue sizes that are
//! not powers of two wrap correctly. (A buffer id made available twice while in flight
//! needs a device that holds buffers at the right moment; the engine's own tests cover it:
//! epf-virtqueue `tests::packed::malformed::buffer_id_already_in_flight`.)

mod common;

use common::*;
use epf_devices::RngDevice;
use epf_loopback::host_driver::spec::*;
use epf_loopback::host_driver::{HostQueue, VirtioPciDriver};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const VECTOR: u16 = 1;
const STATUS_ALL_OK: u8 =
    STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
const N: u16 = VIRTQ_DESC_F_NEXT;
const W: u16 = VIRTQ_DESC_F_WRITE;
const I: u16 = VIRTQ_DESC_F_INDIRECT;

fn up(rig: &Rig, features: u64, size: Option<u16>) -> (VirtioPciDriver, HostQueue) {
    let mut drv = rig.driver();
    assert!(drv.enable_msix());
    let mut qs = bring_up(&mut drv, features, &[(0, size, Some(VECTOR))]);
    let q = qs.remove(0);
    assert!(q.is_packed(), "packed rings not negotiated");
    (drv, q)
}

/// One 64-byte read from the rng, checked.
fn read_once(rig: &Rig, q: &mut HostQueue) {
    let bus = rig.bus();
    let buf = bus.alloc(64, 64).unwrap();
    let head = q.add(&[(buf, 64, true)]).unwrap();
    q.kick().unwrap();
    assert_eq!(wait_used_strict(&bus, q), (head, 64));
}

/// Writes a chain at the driver's next available positions verbatim (`(addr, len, id,
/// flags)` without the AVAIL/USED bits, which are added), first descriptor last, and
/// notifies.
fn publish_raw(q: &mut HostQueue, descs: &[(u64, u32, u16, u16)]) {
    let (pos, _) = q.packed_next_avail().unwrap();
    let size = q.size();
    for (k, &(addr, len, id, flags)) in descs.iter().enumerate().rev() {
        let at = ((u32::from(pos) + k as u32) % u32::from(size)) as u16;
        let flags = flags | q.packed_avail_bits(k as u16);
        q.write_packed_desc_raw(at, addr, len, id, flags).unwrap();
    }
    q.notify();
}

type Inject = fn(&Rig, &mut HostQueue);

/// Healthy traffic, the injection, DEVICE_NEEDS_RESET checks, recovery.
fn case(what: &str, inject: Inject) {
    case_with(what, inject, false)
}

/// [`case`]; `completes`: the injected fault is only seen after the request was served (a
/// bad driver event structure is read when deciding on the interrupt), so one used buffer
/// is expected.
fn case_with(what: &str, inject: Inject, completes: bool) {
    let what = what.to_string();
    bounded(LIMIT, move || {
        let rig = rig(Box::new(RngDevice::new(256)));
        let bus = rig.bus();
        let (mut drv, mut q) = up(&rig, ALL_FEATURES, Some(8));
        for _ in 0..5 {
            read_once(&rig, &mut q);
        }
        bus.wait_msix(CONFIG_VECTOR, Duration::ZERO);
        inject(&rig, &mut q);
        assert!(
            wait_until(WAIT, || drv.status() & NEEDS_RESET != 0),
            "{what}: DEVICE_NEEDS_RESET not set (status {:#x})",
            drv.status()
        );
        assert_eq!(drv.status(), STATUS_ALL_OK | NEEDS_RESET, "{what}");
        assert!(
            bus.wait_msix(CONFIG_VECTOR, WAIT),
            "{what}: no configuration interrupt"
        );
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(
            q.has_used().unwrap(),
            completes,
            "{what}: the device completed part of a malformed ring"
        );
        assert_eq!(rig.c.oob_attempts(), 0, "{what}: access outside host RAM");
        drv.reset().unwrap();
        let (_drv2, mut q2) = {
            let mut qs = bring_up(&mut drv, ALL_FEATURES, &[(0, Some(8), Some(VECTOR))]);
            ((), qs.remove(0))
        };
        for _ in 0..20 {
            read_once(&rig, &mut q2);
        }
        assert_eq!(drv.status(), STATUS_ALL_OK, "{what}: after recovery");
        rig.finish();
    });
}

fn buf(rig: &Rig, len: u64) -> u64 {
    rig.bus().alloc(len, 64).unwrap()
}

#[test]
fn buffer_id_out_of_range() {
    case("id out of range", |rig, q| {
        let b = buf(rig, 64);
        publish_raw(q, &[(b, 64, 8, W)]);
    });
}

#[test]
fn chain_continues_into_an_unavailable_descriptor() {
    case("unavailable continuation", |rig, q| {
        let b = buf(rig, 64);
        let (pos, _) = q.packed_next_avail().unwrap();
        let size = q.size();
        // The second descriptor keeps the bits of a used descriptor of the previous lap.
        q.write_packed_desc_raw((pos + 1) % size, b, 64, 0, W)
            .unwrap();
        let flags = W | N | q.packed_avail_bits(0);
        q.write_packed_desc_raw(pos, b, 64, 0, flags).unwrap();
        q.notify();
    });
}

#[test]
fn chain_without_end() {
    case("NEXT on every descriptor", |rig, q| {
        let b = buf(rig, 64);
        let descs: Vec<_> = (0..q.size()).map(|_| (b, 8, 0, W | N)).collect();
        publish_raw(q, &descs);
    });
}

#[test]
fn buffer_outside_host_ram() {
    case("buffer outside RAM", |_, q| {
        publish_raw(q, &[(1 << 60, 64, 0, W)]);
    });
}

#[test]
fn readable_after_writable() {
    case("readable after writable", |rig, q| {
        let b = buf(rig, 64);
        publish_raw(q, &[(b, 32, 0, W | N), (b + 32, 32, 0, 0)]);
    });
}

#[test]
fn indirect_table_length_not_a_multiple_of_16() {
    case("indirect length", |rig, q| {
        let t = buf(rig, 64);
        publish_raw(q, &[(t, 24, 0, I)]);
    });
}

#[test]
fn indirect_with_next() {
    case("indirect with next", |rig, q| {
        let t = buf(rig, 64);
        publish_raw(q, &[(t, 32, 0, I | N), (t, 32, 0, W)]);
    });
}

#[test]
fn nested_indirect() {
    case("nested indirect", |rig, q| {
        let t = buf(rig, 64);
        let bus = rig.bus();
        // A packed table entry: addr, len, id, flags.
        let mut e = Vec::new();
        e.extend_from_slice(&t.to_le_bytes());
        e.extend_from_slice(&16u32.to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        e.extend_from_slice(&I.to_le_bytes());
        bus.ram_write(t, &e).unwrap();
        publish_raw(q, &[(t, 16, 0, I)]);
    });
}

#[test]
fn indirect_table_outside_host_ram() {
    case("indirect outside RAM", |_, q| {
        publish_raw(q, &[((1 << 60) - 64, 64, 0, I)]);
    });
}

#[test]
fn reserved_driver_event_flags() {
    case_with(
        "driver event flags 3",
        |rig, q| {
            let bus = rig.bus();
            let (_, _) = q.driver_event().unwrap();
            // The driver event suppression structure is at the queue's driver area.
            bus.ram_write_u16(q.avail_addr() + EVENT_FLAGS, 3).unwrap();
            let b = buf(rig, 64);
            q.add(&[(b, 64, true)]).unwrap();
            q.notify();
        },
        true,
    );
}

#[test]
fn driver_event_offset_outside_the_ring() {
    case_with(
        "event offset beyond the ring",
        |rig, q| {
            let bus = rig.bus();
            bus.ram_write_u16(q.avail_addr() + EVENT_OFF_WRAP, 0x8000 | 9)
                .unwrap();
            bus.ram_write_u16(q.avail_addr() + EVENT_FLAGS, RING_EVENT_FLAGS_DESC)
                .unwrap();
            let b = buf(rig, 64);
            q.add(&[(b, 64, true)]).unwrap();
            q.notify();
        },
        true,
    );
}

/// A reset while requests are in flight completes none of them afterwards, and the device
/// works with fresh rings (several times, alternating packed and split).
#[test]
fn reset_mid_traffic() {
    bounded(LIMIT, || {
        let rig = rig(Box::new(RngDevice::new(256)));
        let bus = rig.bus();
        let mut drv = rig.driver();
        assert!(drv.enable_msix());
        for round in 0..6 {
            let features = if round % 3 == 2 {
                SPLIT_FEATURES
            } else {
                ALL_FEATURES
            };
            let mut q = bring_up(&mut drv, features, &[(0, Some(16), Some(VECTOR))]).remove(0);
            assert_eq!(q.is_packed(), features & RING_PACKED != 0);
            for _ in 0..(round * 5) {
                read_once(&rig, &mut q);
            }
            // Fill the ring and reset without waiting.
            let mut bufs = Vec::new();
            while q.num_free() > 0 {
                let b = bus.alloc(4096, 64).unwrap();
                bus.ram_write(b, &[0xee; 4096]).unwrap();
                q.add(&[(b, 4096, true)]).unwrap();
                bufs.push(b);
            }
            q.kick().unwrap();
            drv.reset().unwrap();
            assert_eq!(drv.status(), 0);
            // Whatever was completed before the reset is visible now; nothing changes later.
            let snapshot: Vec<Vec<u8>> = bufs
                .iter()
                .map(|&b| {
                    let mut v = vec![0; 4096];
                    bus.ram_read(b, &mut v).unwrap();
                    v
                })
                .collect();
            std::thread::sleep(Duration::from_millis(30));
            for (b, before) in bufs.iter().zip(&snapshot) {
                let mut v = vec![0; 4096];
                bus.ram_read(*b, &mut v).unwrap();
                assert_eq!(
                    &v, before,
                    "round {round}: a buffer changed after the reset"
                );
            }
        }
        let mut q = bring_up(&mut drv, ALL_FEATURES, &[(0, Some(16), Some(VECTOR))]).remove(0);
        for _ in 0..50 {
            read_once(&rig, &mut q);
        }
        assert_eq!(drv.status(), STATUS_ALL_OK);
        assert_eq!(rig.c.oob_attempts(), 0);
        rig.finish();
    });
}

/// The device's event suppression structure: with EVENT_IDX it asks for a notification at
/// its next available position (DESC); without, it enables notifications (ENABLE), and in
/// both cases it keeps serving kicked requests.
#[test]
fn device_event_suppression() {
    bounded(LIMIT, || {
        for (features, want_flags) in [
            (ALL_FEATURES, RING_EVENT_FLAGS_DESC),
            (RING_PACKED, RING_EVENT_FLAGS_ENABLE),
        ] {
            let rig = rig(Box::new(RngDevice::new(256)));
            let (_drv, mut q) = up(&rig, features, Some(8));
            for i in 0..21 {
                read_once(&rig, &mut q);
                let (off_wrap, flags) = q.device_event().unwrap();
                assert!(
                    wait_until(WAIT, || q.device_event().unwrap().1 == want_flags),
                    "request {i}: device event flags {flags:#x}"
                );
                if want_flags == RING_EVENT_FLAGS_DESC {
                    let (pos, wrap) = q.packed_next_avail().unwrap();
                    let want = pos | (u16::from(wrap) << 15);
                    assert!(
                        wait_until(WAIT, || q.device_event().unwrap().0 == want),
                        "request {i}: off_wrap {off_wrap:#x}, next available {want:#x}"
                    );
                }
            }
            rig.finish();
        }
    });
}

/// Queue sizes that are not powers of two, with chains wrapping mid-ring, direct and
/// indirect.
#[test]
fn odd_queue_sizes_wrap() {
    bounded(LIMIT, || {
        for size in [3u16, 5, 7, 13] {
            let rig = rig(Box::new(RngDevice::new(256)));
            let bus = rig.bus();
            let (_drv, mut q) = up(&rig, ALL_FEATURES, Some(size));
            for i in 0..(6 * usize::from(size)) {
                let a = bus.alloc(16, 64).unwrap();
                let b = bus.alloc(16, 64).unwrap();
                let chain = [(a, 16, true), (b, 16, true)];
                let head = if i % 3 == 0 {
                    q.add_indirect(&chain).unwrap()
                } else {
                    q.add(&chain).unwrap()
                };
                q.kick().unwrap();
                assert_eq!(wait_used_strict(&bus, &mut q), (head, 32), "size {size}");
            }
            assert_eq!(q.num_free(), size);
            rig.finish();
        }
    });
}
