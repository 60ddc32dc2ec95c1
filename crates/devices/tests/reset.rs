//! Resets in the middle of traffic, by the driver (write 0 to device_status, poll for 0) and by
//! the link (function-level reset): buffers posted before the reset are never completed after
//! it, the old rings and buffers are never touched again, and after a renegotiation with new
//! ring memory data flows again starting exactly where it should.

mod common;

use common::*;
use epf_devices::{ConsoleDevice, RngDevice};
use epf_loopback::host_driver::spec::*;
use epf_loopback::host_driver::{HostQueue, VirtioPciDriver};
use epf_loopback::HostBus;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const STATUS_ALL_OK: u8 =
    STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
/// What the host writes over memory it abandoned at a reset.
const STALE: u8 = 0x5a;

/// A host-RAM range the device must not touch any more.
struct Abandoned(Vec<(u64, u64)>);

impl Abandoned {
    fn new() -> Self {
        Abandoned(Vec::new())
    }

    /// The three ring areas of `q`.
    fn add_rings(&mut self, q: &HostQueue) {
        let n = u64::from(q.size());
        self.0.push((q.desc_addr(), 16 * n));
        self.0.push((q.avail_addr(), 6 + 2 * n));
        self.0.push((q.used_addr(), 6 + 8 * n));
    }

    fn add(&mut self, addr: u64, len: u64) {
        self.0.push((addr, len));
    }

    /// Overwrites every range with [`STALE`].
    fn poison(&self, bus: &HostBus) {
        for &(a, l) in &self.0 {
            bus.ram_write(a, &vec![STALE; l as usize]).unwrap();
        }
    }

    /// Checks every range still holds [`STALE`].
    fn check(&self, bus: &HostBus, what: &str) {
        for &(a, l) in &self.0 {
            let mut b = vec![0; l as usize];
            bus.ram_read(a, &mut b).unwrap();
            if let Some(i) = b.iter().position(|&x| x != STALE) {
                panic!(
                    "{what}: the device wrote abandoned memory at {:#x} (range {a:#x}+{l:#x}) after the reset",
                    a + i as u64
                );
            }
        }
    }
}

fn console(pipe: usize, stall: Stall) -> (Rig, ConsoleEnds) {
    let (backend, ends) = chan_backend(stall);
    (
        rig(Box::new(ConsoleDevice::new(backend, pipe).unwrap())),
        ends,
    )
}

fn console_up(drv: &mut VirtioPciDriver) -> (HostQueue, HostQueue) {
    let mut qs = bring_up(drv, ALL_FEATURES, &[(0, None, Some(1)), (1, None, Some(2))]);
    let tx = qs.pop().unwrap();
    (qs.pop().unwrap(), tx)
}

fn stream(seed: u64) -> Stream {
    Stream {
        max_chain: 4096,
        depth: 32,
        indirect: true,
        seed,
    }
}

/// Receive buffers posted before a reset with no input yet. Input that arrives between the
/// reset and the renegotiation (waking the device) must not go into the old buffers; after
/// the renegotiation with new rings it lands in the new buffers from byte 0.
#[test]
fn reset_with_receive_buffers_outstanding() {
    bounded(LIMIT, || {
        let (rig, ends) = console(64 * 1024, Stall::default());
        let bus = rig.bus();
        let mut drv = rig.driver();
        assert!(drv.enable_msix());
        let (mut rx, _tx) = console_up(&mut drv);
        let mut old_bufs = Abandoned::new();
        for _ in 0..8 {
            let b = bus.alloc(4096, 64).unwrap();
            old_bufs.add(b, 4096);
        }
        old_bufs.poison(&bus);
        for &(b, l) in &old_bufs.0 {
            rx.add(&[(b, l as u32, true)]).unwrap();
        }
        rx.kick().unwrap();
        std::thread::sleep(Duration::from_millis(20));

        drv.reset().unwrap();
        assert_eq!(drv.status(), 0);
        let data = Prng::new(3).bytes(64 * 1024);
        ends.input.send(data[..16 * 1024].to_vec()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !rx.has_used().unwrap(),
            "old receive buffer completed after the reset"
        );
        old_bufs.check(&bus, "receive buffers before renegotiation");
        let mut old = Abandoned::new();
        old.add_rings(&rx);
        old.poison(&bus);

        let (mut rx, _tx) = console_up(&mut drv);
        ends.input.send(data[16 * 1024..].to_vec()).unwrap();
        let got = receive(&rig, &mut rx, data.len(), stream(4));
        assert_eq!(first_difference(&got, &data), None);
        std::thread::sleep(Duration::from_millis(20));
        old.check(&bus, "receive rings");
        old_bufs.check(&bus, "receive buffers");
        assert_eq!(drv.status(), STATUS_ALL_OK);
        rig.finish();
    });
}

/// A transmit stalled on a blocked backend, reset with chains still in the ring: the backend
/// gets exactly the chains completed before the reset, then the new data; the chains left in
/// the old ring are never transmitted.
fn stalled_transmit_then(flr: bool, reset: fn(&Rig, &mut VirtioPciDriver)) {
    let gate = Gate::closed();
    let (rig, ends) = console(
        4096,
        Stall {
            gate: Some(gate.clone()),
            ..Stall::default()
        },
    );
    let bus = rig.bus();
    let mut drv = rig.driver();
    assert!(drv.enable_msix());
    let (_rx, mut tx) = console_up(&mut drv);
    let mut old = Abandoned::new();
    old.add_rings(&tx);

    let old_data = Prng::new(21).bytes(256 * 1024);
    let mut pool = SlotPool::new(bus.clone(), 48, 4096);
    let (slots, slot_len) = pool.slots();
    for &s in slots {
        old.add(s, slot_len);
    }
    let mut rng = Prng::new(22);
    let mut order = Vec::new();
    let mut sent = 0usize;
    while pool.has_free() {
        let n = rng.range(1, 4096) as usize;
        let head = pool.post_readable(&mut tx, &mut rng, &old_data[sent..sent + n], Shape::Single);
        order.push((head, sent + n));
        sent += n;
    }
    tx.kick().unwrap();
    std::thread::sleep(Duration::from_millis(50));

    reset(&rig, &mut drv);
    // Whatever the old used ring says now is final: completions are a prefix of the posted
    // chains, in order.
    let mut completed = 0usize;
    let mut k = 0;
    while let Some((head, len)) = tx.get_used().unwrap() {
        assert_eq!(len, 0);
        assert_eq!(head, order[k].0, "transmit completed out of order");
        completed = order[k].1;
        k += 1;
    }
    assert!(k > 0, "the device took nothing before the reset");
    assert!(
        k < order.len(),
        "the device took everything although blocked"
    );
    // The backend drains what was taken before the reset, waking the device before the
    // driver renegotiates: the chains left in the old ring must stay there.
    gate.open();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        tx.get_used().unwrap(),
        None,
        "old transmit chain completed after the reset"
    );
    assert_eq!(
        collect_output(&ends.output, completed, WAIT),
        old_data[..completed],
        "backend stream before the renegotiation"
    );
    old.poison(&bus);

    let (_rx, mut tx) = console_up(&mut drv);
    let new_data = Prng::new(23).bytes(64 * 1024);
    transmit(&rig, &mut tx, &new_data, stream(24));
    let out = collect_output(&ends.output, new_data.len(), WAIT);
    assert_eq!(
        first_difference(&out, &new_data),
        None,
        "backend stream after the reset"
    );
    assert!(
        drain_output(&ends.output, Duration::from_millis(50)).is_empty(),
        "chains left in the old ring were transmitted after the reset"
    );
    old.check(&bus, "transmit");
    assert_eq!(drv.status(), STATUS_ALL_OK);
    if flr {
        rig.finish_after_flr();
    } else {
        rig.finish();
    }
}

#[test]
fn driver_reset_during_a_stalled_transmit() {
    bounded(LIMIT, || {
        stalled_transmit_then(false, |_, drv| {
            drv.reset().unwrap();
            assert_eq!(drv.status(), 0);
        })
    });
}

#[test]
fn function_reset_during_a_stalled_transmit() {
    bounded(LIMIT, || {
        stalled_transmit_then(true, |rig, drv| {
            let bus = rig.bus();
            bus.function_reset();
            assert!(!bus.msix_enabled(), "MSI-X survived the function reset");
            // A new host driver binds: probe, MSI-X, and the register file is at reset values
            // once the status polls to 0.
            *drv = rig.driver();
            // The function reset itself resets the device: the status reaches 0 without the
            // driver writing it, and the register file is back at its reset values.
            assert!(
                wait_until(WAIT, || drv.status() == 0),
                "status {:#x} after a function reset",
                drv.status()
            );
            assert_eq!(drv.config_vector(), VIRTIO_MSI_NO_VECTOR);
            for i in 0..2 {
                assert!(!drv.queue_enabled(i));
                assert_eq!(drv.queue_size(i), 256);
            }
            assert_eq!(drv.driver_feature_word(1), 0);
            assert!(drv.enable_msix());
        })
    });
}

/// Many resets while the rng writes large buffers: once the status reads 0 the old rings and
/// buffers are never written again, and the device keeps working.
#[test]
fn resets_during_heavy_rng_traffic() {
    bounded(LIMIT, || {
        let rig = rig(Box::new(RngDevice::new(256)));
        let bus = rig.bus();
        let mut drv = rig.driver();
        assert!(drv.enable_msix());
        let bufs: Vec<u64> = (0..32).map(|_| bus.alloc(64 * 1024, 64).unwrap()).collect();
        let mut rng = Prng::new(77);
        for round in 0..20 {
            let mut q = bring_up(&mut drv, ALL_FEATURES, &[(0, None, Some(1))]).remove(0);
            for &b in &bufs {
                q.add(&[(b, 64 * 1024, true)]).unwrap();
            }
            q.kick().unwrap();
            if round % 2 == 1 {
                std::thread::sleep(Duration::from_micros(rng.range(0, 2000)));
            }
            if round % 4 == 3 {
                bus.function_reset();
                drv = rig.driver();
                assert!(drv.enable_msix());
            }
            drv.reset().unwrap();
            let mut old = Abandoned::new();
            old.add_rings(&q);
            for &b in &bufs {
                old.add(b, 64 * 1024);
            }
            old.poison(&bus);
            std::thread::sleep(Duration::from_millis(5));
            old.check(&bus, &format!("round {round}"));
        }
        let mut q = bring_up(&mut drv, ALL_FEATURES, &[(0, None, Some(1))]).remove(0);
        let head = q.add(&[(bufs[0], 4096, true)]).unwrap();
        q.kick().unwrap();
        assert_eq!(wait_used_strict(&bus, &mut q), (head, 4096));
        assert_eq!(drv.status(), STATUS_ALL_OK);
        rig.finish_after_flr();
    });
}

/// Backend input streams in while the driver resets again and again with receive buffers
/// outstanding. What each incarnation of the driver received (including what its used ring
/// holds once the reset completed), concatenated, is exactly the input stream: nothing lost,
/// duplicated or written into abandoned buffers.
#[test]
fn console_input_stream_survives_repeated_resets() {
    bounded(LIMIT, || {
        let (rig, ends) = console(4096, Stall::default());
        let bus = rig.bus();
        let input = Prng::new(555).bytes(512 * 1024);
        let feeder = {
            let tx = ends.input.clone();
            let data = input.clone();
            std::thread::spawn(move || {
                for c in data.chunks(4096) {
                    tx.send(c.to_vec()).unwrap();
                }
            })
        };
        let mut drv = rig.driver();
        assert!(drv.enable_msix());
        let mut got = Vec::new();
        let mut rng = Prng::new(556);
        let mut old = Abandoned::new();
        for round in 0..8 {
            let (mut rx, _tx) = console_up(&mut drv);
            let mut pool = SlotPool::new(bus.clone(), 16, 2048);
            for _ in 0..16 {
                let len = rng.range(1, 2048) as u32;
                let shape = Shape::pick(&mut rng, true);
                pool.post_writable(&mut rx, &mut rng, len, shape, RX_POISON);
            }
            rx.kick().unwrap();
            let want = rng.range(1, 16) as usize;
            for _ in 0..want {
                let (head, len) = wait_used_strict(&bus, &mut rx);
                got.extend(pool.complete(head, len));
            }
            drv.reset().unwrap();
            // Final: whatever the old used ring holds now.
            while let Some((head, len)) = rx.get_used().unwrap() {
                got.extend(pool.complete(head, len));
            }
            old.add_rings(&rx);
            let (slots, slot_len) = pool.slots();
            for &s in slots {
                old.add(s, slot_len);
            }
            old.poison(&bus);
            assert!(got.len() < input.len(), "round {round} took everything");
        }
        let (mut rx, _tx) = console_up(&mut drv);
        got.extend(receive(&rig, &mut rx, input.len() - got.len(), stream(557)));
        feeder.join().unwrap();
        assert_eq!(
            first_difference(&got, &input),
            None,
            "input stream across resets"
        );
        old.check(&bus, "receive buffers of earlier incarnations");
        assert_eq!(drv.status(), STATUS_ALL_OK);
        rig.finish();
    });
}
