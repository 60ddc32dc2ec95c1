//! virtio-console end to end: the real [`ConsoleDevice`] with an in-memory backend behind the
//! real virtio-pci function on the loopback controller, driven only through the loopback host
//! driver. Receive queue 0 carries backend input to the host, transmit queue 1 host output to
//! the backend.

mod common;

use common::*;
use epf_devices::console::DEFAULT_PIPE_BYTES;
use epf_devices::ConsoleDevice;
use epf_loopback::host_driver::spec::*;
use epf_loopback::host_driver::{HostQueue, VirtioPciDriver};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);
const RX_VECTOR: u16 = 1;
const TX_VECTOR: u16 = 2;
const MIB: usize = 1 << 20;

fn console_up(rig: &Rig, features: u64) -> (VirtioPciDriver, HostQueue, HostQueue) {
    let mut drv = rig.driver();
    assert!(drv.enable_msix());
    let mut qs = bring_up(
        &mut drv,
        features,
        &[(0, None, Some(RX_VECTOR)), (1, None, Some(TX_VECTOR))],
    );
    let tx = qs.pop().unwrap();
    let rx = qs.pop().unwrap();
    (drv, rx, tx)
}

#[test]
fn console_moves_a_mebibyte_each_way_concurrently() {
    bounded(LIMIT, || {
        let (backend, ends) = chan_backend(Stall::default());
        let rig = rig(Box::new(
            ConsoleDevice::new(backend, DEFAULT_PIPE_BYTES).unwrap(),
        ));
        let (drv, mut rx, mut tx) = console_up(&rig, ALL_FEATURES);
        let mut rng = Prng::new(42);
        let to_backend = rng.bytes(MIB);
        let to_host = rng.bytes(MIB);

        let start = Instant::now();
        let feeder = {
            let input = ends.input.clone();
            let data = to_host.clone();
            std::thread::spawn(move || {
                let mut rng = Prng::new(7);
                let mut pos = 0;
                while pos < data.len() {
                    let n = (rng.range(1, 70_000) as usize).min(data.len() - pos);
                    input.send(data[pos..pos + n].to_vec()).unwrap();
                    pos += n;
                }
            })
        };
        let stream = |seed| Stream {
            max_chain: 16 * 1024,
            depth: 64,
            indirect: true,
            seed,
        };
        let ((got, rx_time), out, tx_time) = std::thread::scope(|s| {
            let r = s.spawn(|| {
                let t = Instant::now();
                let got = receive(&rig, &mut rx, MIB, stream(1));
                (got, t.elapsed())
            });
            let t = Instant::now();
            transmit(&rig, &mut tx, &to_backend, stream(2));
            let out = collect_output(&ends.output, MIB, WAIT);
            let tx_time = t.elapsed();
            (r.join().unwrap(), out, tx_time)
        });
        feeder.join().unwrap();
        assert_eq!(
            first_difference(&out, &to_backend),
            None,
            "host -> backend stream differs"
        );
        assert_eq!(
            first_difference(&got, &to_host),
            None,
            "backend -> host stream differs"
        );
        eprintln!(
            "console: host->backend 1 MiB in {:.3}s ({:.1} MiB/s), backend->host 1 MiB in {:.3}s ({:.1} MiB/s), total {:.3}s",
            tx_time.as_secs_f64(),
            1.0 / tx_time.as_secs_f64(),
            rx_time.as_secs_f64(),
            1.0 / rx_time.as_secs_f64(),
            start.elapsed().as_secs_f64()
        );
        // Nothing more arrives.
        assert!(drain_output(&ends.output, Duration::from_millis(20)).is_empty());
        assert_eq!(rx.get_used().unwrap(), None);
        assert_eq!(drv.status() & NEEDS_RESET, 0);
        rig.finish();
    });
}

/// A backend that blocks entirely for a while, then writes slowly (20 ms every 64 KiB) and in
/// short writes, behind 4 KiB pipes: nothing is lost, the order is kept, the device holds
/// transmit chains back instead of buffering without bound, and it does not spin meanwhile.
#[test]
fn console_stalling_backend_loses_nothing_and_keeps_order() {
    bounded(LIMIT, || {
        let gate = Gate::closed();
        let (backend, ends) = chan_backend(Stall {
            every: 64 * 1024,
            sleep: Duration::from_millis(20),
            max_write: 3000,
            gate: Some(gate.clone()),
        });
        let pipe = 4096;
        let rig = rig(Box::new(ConsoleDevice::new(backend, pipe).unwrap()));
        let (drv, _rx, mut tx) = console_up(&rig, ALL_FEATURES);
        let bus = rig.bus();
        let data = Prng::new(99).bytes(MIB);
        let start = Instant::now();

        // Phase 1: the backend is blocked. Fill the ring.
        let max_chain = 8 * 1024u32;
        let mut pool = SlotPool::new(bus.clone(), 64, max_chain);
        let mut rng = Prng::new(5);
        let mut sent = 0usize;
        while pool.has_free() {
            let n = rng.range(1, u64::from(max_chain)) as usize;
            let shape = Shape::pick(&mut rng, true);
            pool.post_readable(&mut tx, &mut rng, &data[sent..sent + n], shape);
            sent += n;
        }
        tx.kick().unwrap();
        std::thread::sleep(Duration::from_millis(150));
        let reads_before = rig.c.ram().endpoint_reads();
        std::thread::sleep(Duration::from_millis(150));
        let reads_during = rig.c.ram().endpoint_reads() - reads_before;
        assert!(
            reads_during < 100,
            "the device kept reading host memory ({reads_during} reads) while stalled: busy loop"
        );
        let mut taken = 0usize;
        while let Some((head, len)) = tx.get_used().unwrap() {
            assert_eq!(len, 0);
            taken += pool.capacity(head) as usize;
            pool.complete(head, 0);
        }
        // Taken: what the output thread holds plus a full pipe, each at most one chain over.
        assert!(
            taken <= 2 * (pipe + max_chain as usize),
            "{taken} bytes taken from the ring while the backend was blocked"
        );
        assert!(
            pool.in_flight() > 0,
            "every chain was taken although the backend is blocked"
        );
        assert!(drain_output(&ends.output, Duration::ZERO).is_empty());

        // Phase 2: the backend slowly writes; drain phase 1 and send the rest.
        gate.open();
        while pool.in_flight() > 0 {
            let (head, len) = wait_used_strict(&bus, &mut tx);
            assert_eq!(len, 0);
            pool.complete(head, 0);
        }
        transmit(
            &rig,
            &mut tx,
            &data[sent..],
            Stream {
                max_chain,
                depth: 32,
                indirect: true,
                seed: 6,
            },
        );
        let out = collect_output(&ends.output, MIB, Duration::from_secs(20));
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(first_difference(&out, &data), None, "stream differs");
        assert!(drain_output(&ends.output, Duration::from_millis(20)).is_empty());
        assert!(
            secs >= 0.3 + 15.0 * 0.02,
            "the stalls did not happen ({secs:.3}s)"
        );
        eprintln!("console, stalling backend: 1 MiB in {secs:.3}s");
        assert_eq!(drv.status() & NEEDS_RESET, 0);
        rig.finish();
    });
}

/// Input produced while the host has no receive buffers posted waits (the device neither
/// drops it nor spins), and arrives intact once buffers are posted.
fn input_waits_for_receive_buffers(features: u64) {
    {
        let (backend, ends) = chan_backend(Stall::default());
        let rig = rig(Box::new(ConsoleDevice::new(backend, 4096).unwrap()));
        let (drv, mut rx, _tx) = console_up(&rig, features);
        let bus = rig.bus();
        let data = Prng::new(1234).bytes(256 * 1024);
        for chunk in data.chunks(10_000) {
            ends.input.send(chunk.to_vec()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        let reads_before = rig.c.ram().endpoint_reads();
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            rig.c.ram().endpoint_reads() - reads_before < 100,
            "busy loop while waiting for receive buffers"
        );
        assert!(!rx.has_used().unwrap());

        // One small buffer takes exactly the first bytes.
        let buf = bus.alloc(100, 8).unwrap();
        let head = rx.add(&[(buf, 100, true)]).unwrap();
        rx.kick().unwrap();
        assert_eq!(wait_used_strict(&bus, &mut rx), (head, 100));
        let mut first = vec![0; 100];
        bus.ram_read(buf, &mut first).unwrap();
        assert_eq!(first, data[..100]);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(rx.get_used().unwrap(), None, "used without a posted buffer");

        let rest = receive(
            &rig,
            &mut rx,
            data.len() - 100,
            Stream {
                max_chain: 4096,
                depth: 16,
                indirect: features & feature(VIRTIO_F_INDIRECT_DESC) != 0,
                seed: 3,
            },
        );
        assert_eq!(
            first_difference(&rest, &data[100..]),
            None,
            "stream differs"
        );
        assert_eq!(drv.status() & NEEDS_RESET, 0);
        rig.finish();
    }
}

#[test]
fn console_input_waits_for_receive_buffers_without_ring_features() {
    bounded(LIMIT, || input_waits_for_receive_buffers(NO_RING_FEATURES));
}

#[test]
fn console_input_waits_for_receive_buffers_with_event_idx() {
    bounded(LIMIT, || input_waits_for_receive_buffers(ALL_FEATURES));
}

/// The same streams over a Unix socket pair as backend (real blocking file descriptors).
#[test]
fn console_over_a_unix_socket_pair() {
    bounded(LIMIT, || {
        use std::io::{Read, Write};
        use std::os::unix::net::UnixStream;
        let (ours, theirs) = UnixStream::pair().unwrap();
        let backend = epf_devices::console::Backend {
            input: Box::new(theirs.try_clone().unwrap()),
            output: Box::new(theirs),
        };
        let rig = rig(Box::new(ConsoleDevice::new(backend, 16 * 1024).unwrap()));
        let (drv, mut rx, mut tx) = console_up(&rig, ALL_FEATURES);
        let mut rng = Prng::new(77);
        let (to_backend, to_host) = (rng.bytes(256 * 1024), rng.bytes(256 * 1024));
        let mut writer = ours.try_clone().unwrap();
        let mut reader = ours;
        std::thread::scope(|s| {
            let w = s.spawn(|| writer.write_all(&to_host).unwrap());
            let r = s.spawn(|| {
                let mut got = vec![0; to_backend.len()];
                reader.read_exact(&mut got).unwrap();
                got
            });
            let rcv = s.spawn(|| {
                receive(
                    &rig,
                    &mut rx,
                    to_host.len(),
                    Stream {
                        max_chain: 2048,
                        depth: 32,
                        indirect: true,
                        seed: 8,
                    },
                )
            });
            transmit(
                &rig,
                &mut tx,
                &to_backend,
                Stream {
                    max_chain: 32 * 1024,
                    depth: 8,
                    indirect: true,
                    seed: 9,
                },
            );
            w.join().unwrap();
            assert_eq!(first_difference(&r.join().unwrap(), &to_backend), None);
            assert_eq!(first_difference(&rcv.join().unwrap(), &to_host), None);
        });
        assert_eq!(drv.status() & NEEDS_RESET, 0);
        rig.finish();
    });
}

/// A transmit chain whose descriptors alias one buffer claims far more than the host spent:
/// the device holds at most its pipe of it at a time, moving the chain in pieces as the
/// backend drains, and the whole of it still arrives.
#[test]
fn an_aliased_giant_chain_is_moved_in_pieces_within_the_pipe_bound() {
    bounded(LIMIT, || {
        let gate = Gate::closed();
        let (backend, ends) = chan_backend(Stall {
            gate: Some(gate.clone()),
            ..Stall::default()
        });
        let pipe = 4096;
        let rig = rig(Box::new(ConsoleDevice::new(backend, pipe).unwrap()));
        let (drv, _rx, mut tx) = console_up(&rig, ALL_FEATURES);
        let bus = rig.bus();
        let chunk = Prng::new(3).bytes(64 * 1024);
        let alias = bus.alloc(chunk.len() as u64, 64).unwrap();
        bus.ram_write(alias, &chunk).unwrap();
        let copies = 200;
        let bufs = vec![(alias, chunk.len() as u32, false); copies];
        tx.add_indirect(&bufs).unwrap();
        let reads = rig.c.ram().endpoint_reads();
        tx.kick().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let reads = rig.c.ram().endpoint_reads() - reads;
        // The pipe plus what the blocked output thread holds, in 4 KiB reads.
        assert!(
            reads < 64,
            "{reads} host reads of a 12.5 MiB chain while the backend is blocked"
        );
        assert!(!tx.has_used().unwrap(), "completed before it was moved");
        gate.open();
        let out = collect_output(&ends.output, copies * chunk.len(), Duration::from_secs(30));
        assert_eq!(out.len(), copies * chunk.len());
        for (i, piece) in out.chunks(chunk.len()).enumerate() {
            assert!(piece == &chunk[..], "copy {i} differs");
        }
        let (_, len) = wait_used_strict(&bus, &mut tx);
        assert_eq!(len, 0);
        assert_eq!(drv.status() & NEEDS_RESET, 0);
        rig.finish();
    });
}
