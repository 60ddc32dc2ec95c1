//! `ring-bench`: the device-side virtqueue engine (`epf-virtqueue`) and the loopback host
//! driver (`epf-loopback`'s `HostQueue`) on the same rings in host RAM, both polling, no
//! notifications or interrupts. Direction `tx`: the driver posts device-readable buffers of
//! the given size (a transmit queue, like DPDK's virtio-user -> vhost-user), the device pops
//! each chain and copies the payload out; `rx`: device-writable buffers the device fills.
//! A device pass publishes its used entries with one `add_used_many`. Used by bench/ring.sh.
//!
//! Modes:
//! * `ring-bench threads FORMAT DIR BYTES BATCH REQUESTS`: two threads, the driver pinned
//!   to CPU 0 and the device to CPU 1 (as DPDK pins its forwarding lcores); prints one line of
//!   `key=value` fields: Mpps, and the device's host-memory transactions and bytes per
//!   request (ring areas and buffers apart).
//! * `ring-bench single FORMAT DIR BYTES BATCH REQUESTS`: one thread alternating a driver pass
//!   and a device pass (deterministic: for callgrind, whose `--toggle-collect` on
//!   `device_pass` / `driver_pass` gives instructions per request).
//!
//! FORMAT is `split` or `packed`, DIR `tx` or `rx`; the queue has 256 entries. With
//! `RING_BENCH_NO_COUNT=1` the device reaches host memory directly (no counting wrapper),
//! for instruction counts of the engine alone.

mod counting;

use counting::Counting;
use epf_epc::{EndpointController, HostMemory};
use epf_loopback::host_driver::HostQueue;
use epf_loopback::{LoopbackController, LoopbackOptions};
use epf_virtqueue::{DescriptorChain, Queue, QueueConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

const QUEUE_SIZE: u16 = 256;

struct Args {
    threads: bool,
    packed: bool,
    tx: bool,
    bytes: u32,
    batch: usize,
    requests: u64,
}

fn usage() -> ! {
    eprintln!("usage: ring-bench threads|single split|packed tx|rx BYTES BATCH REQUESTS");
    std::process::exit(2)
}

fn parse() -> Args {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 6 {
        usage()
    }
    let threads = match a[0].as_str() {
        "threads" => true,
        "single" => false,
        _ => usage(),
    };
    let packed = match a[1].as_str() {
        "packed" => true,
        "split" => false,
        _ => usage(),
    };
    let tx = match a[2].as_str() {
        "tx" => true,
        "rx" => false,
        _ => usage(),
    };
    let num = |s: &str| s.parse::<u64>().unwrap_or_else(|_| usage());
    let batch = num(&a[4]) as usize;
    if batch == 0 || batch > usize::from(QUEUE_SIZE) {
        usage()
    }
    Args {
        threads,
        packed,
        tx,
        bytes: num(&a[3]) as u32,
        batch,
        requests: num(&a[5]),
    }
}

/// One device pass: pops up to `batch` chains, copies each one's payload out (`tx`) or
/// writes `payload` into it, publishes them all with one `add_used_many`. Returns how many
/// it served.
#[inline(never)]
fn device_pass(
    q: &mut Queue,
    mem: &dyn HostMemory,
    chain: &mut DescriptorChain,
    payload: &mut [u8],
    tx: bool,
    batch: usize,
    elems: &mut Vec<(u16, u32)>,
) -> usize {
    elems.clear();
    while elems.len() < batch {
        match q.pop(chain) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => panic!("device: {e}"),
        }
        if tx {
            let n = chain.reader(mem).read(payload).expect("payload read");
            debug_assert_eq!(n, payload.len());
            elems.push((chain.head(), 0));
        } else {
            let mut w = chain.writer(mem);
            w.write(payload).expect("payload write");
            elems.push((chain.head(), w.written()));
        }
    }
    if !elems.is_empty() {
        q.add_used_many(elems).expect("add_used_many");
    }
    elems.len()
}

/// Pins the calling thread to `cpu` (best effort: a machine with fewer CPUs, or a refused
/// call, leaves it unpinned, and the run says so on stderr).
fn pin(cpu: usize) {
    // SAFETY: `cpu_set_t` is plain data for which all-zero is the empty set; CPU_SET and
    // sched_setaffinity only read and write the set we own, for the calling thread (0).
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    if !ok {
        eprintln!("ring-bench: could not pin a thread to CPU {cpu}; running unpinned");
    }
}

/// Driver side state.
struct Driver {
    q: HostQueue,
    bufs: Vec<u64>,
    bytes: u32,
    tx: bool,
    next_buf: usize,
    posted: u64,
    completed: u64,
    target: u64,
}

/// One driver pass: reaps every used buffer, then posts up to `batch` new ones.
#[inline(never)]
fn driver_pass(d: &mut Driver, batch: usize) {
    while let Some((_, len)) = d.q.get_used().expect("get_used") {
        debug_assert_eq!(len, if d.tx { 0 } else { d.bytes });
        d.completed += 1;
    }
    let mut n = 0;
    while n < batch && d.posted < d.target && d.q.num_free() > 0 {
        let buf = d.bufs[d.next_buf];
        d.next_buf = (d.next_buf + 1) % d.bufs.len();
        d.q.add(&[(buf, d.bytes, !d.tx)]).expect("add");
        d.posted += 1;
        n += 1;
    }
}

fn main() {
    let args = parse();
    let c = LoopbackController::new(LoopbackOptions::default().with_ram_size(64 << 20))
        .expect("loopback controller");
    let bus = c.host();
    let mut hq = HostQueue::standalone(bus.clone(), QUEUE_SIZE, args.packed, false, false)
        .expect("host queue");
    // Polling on both sides: the driver asks for no interrupts, the device for no kicks.
    hq.disable_cb().expect("disable_cb");
    let cfg = QueueConfig {
        size: QUEUE_SIZE,
        desc_addr: hq.desc_addr(),
        avail_addr: hq.avail_addr(),
        used_addr: hq.used_addr(),
    };
    let bufs: Vec<u64> = (0..QUEUE_SIZE)
        .map(|_| bus.alloc(u64::from(args.bytes.max(1)), 64).expect("buffer"))
        .collect();
    let ring_end = bufs[0];
    let counting = Arc::new(Counting::new(c.host_memory(), (cfg.desc_addr, ring_end)));
    let mem: Arc<dyn HostMemory> = if std::env::var_os("RING_BENCH_NO_COUNT").is_some() {
        c.host_memory()
    } else {
        counting.clone()
    };
    let mut q = if args.packed {
        Queue::new_packed(cfg, mem.clone(), false)
    } else {
        Queue::new(cfg, mem.clone(), false)
    }
    .expect("device queue");
    q.disable_notification().expect("disable_notification");
    let before = counting.tally();
    let mut payload = vec![0x5au8; args.bytes as usize];
    let mut driver = Driver {
        q: hq,
        bufs,
        bytes: args.bytes,
        tx: args.tx,
        next_buf: 0,
        posted: 0,
        completed: 0,
        target: args.requests,
    };
    let total = args.requests;
    let batch = args.batch;
    let tx = args.tx;
    let start = Instant::now();
    if args.threads {
        let done = Arc::new(AtomicBool::new(false));
        let dev_done = done.clone();
        let dev_mem = mem.clone();
        pin(0);
        let device = std::thread::spawn(move || {
            pin(1);
            let mut chain = DescriptorChain::new();
            let mut elems = Vec::with_capacity(batch);
            let mut served = 0u64;
            while served < total {
                let n = device_pass(
                    &mut q,
                    &*dev_mem,
                    &mut chain,
                    &mut payload,
                    tx,
                    batch,
                    &mut elems,
                );
                if n == 0 {
                    if dev_done.load(Ordering::Relaxed) {
                        break;
                    }
                    std::hint::spin_loop();
                }
                served += n as u64;
            }
            served
        });
        while driver.completed < total {
            driver_pass(&mut driver, batch);
        }
        done.store(true, Ordering::Relaxed);
        assert_eq!(device.join().expect("device thread"), total);
    } else {
        let mut chain = DescriptorChain::new();
        let mut elems = Vec::with_capacity(batch);
        while driver.completed < total {
            driver_pass(&mut driver, batch);
            device_pass(
                &mut q,
                &*mem,
                &mut chain,
                &mut payload,
                tx,
                batch,
                &mut elems,
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let t = counting.tally();
    let per = |a: u64, b: u64| (a - b) as f64 / total as f64;
    println!(
        "format={} dir={} bytes={} batch={} requests={} mode={} secs={:.3} mpps={:.3} \
         ring_reads={:.3} ring_read_bytes={:.1} ring_writes={:.3} ring_write_bytes={:.1} \
         data_reads={:.3} data_read_bytes={:.1} data_writes={:.3} data_write_bytes={:.1}",
        if args.packed { "packed" } else { "split" },
        if args.tx { "tx" } else { "rx" },
        args.bytes,
        batch,
        total,
        if args.threads { "threads" } else { "single" },
        secs,
        total as f64 / secs / 1e6,
        per(t.ring_reads, before.ring_reads),
        per(t.ring_read_bytes, before.ring_read_bytes),
        per(t.ring_writes, before.ring_writes),
        per(t.ring_write_bytes, before.ring_write_bytes),
        per(t.data_reads, before.data_reads),
        per(t.data_read_bytes, before.data_read_bytes),
        per(t.data_writes, before.data_writes),
        per(t.data_write_bytes, before.data_write_bytes),
    );
    assert_eq!(c.oob_attempts(), 0);
}
