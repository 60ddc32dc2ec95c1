//! `ring-bench`: the device-side virtqueue engine (`epf-virtqueue`) and the loopback host
//! driver (`epf-loopback`'s `HostQueue`) on the same rings in host RAM, both polling, no
//! notifications or interrupts. Direction `tx`: the driver posts device-readable buffers of
//! the given size (a transmit queue, like DPDK's virtio-user -> vhost-user), the device pops
//! each chain and copies the payload out; `rx`: device-writable buffers the device fills.
//! A device pass publishes its used entries with one `add_used_many`; a driver pass its
//! available buffers with one `avail.idx` store (split; DPDK's virtio driver does the same
//! per burst, Linux per buffer). Used by bench/ring.sh.
//!
//! Modes:
//! * `ring-bench threads FORMAT DIR BYTES BATCH REQUESTS`: two threads, the driver pinned
//!   to CPU 0 and the device to CPU 1 (as DPDK pins its forwarding lcores); prints one line of
//!   `key=value` fields: Mpps, CPU and busy times. The device reaches host memory directly:
//!   this mode is timed, and counting would add two atomic adds per access.
//! * `ring-bench single FORMAT DIR BYTES BATCH REQUESTS`: one thread alternating a driver pass
//!   and a device pass (deterministic: for callgrind, whose `--toggle-collect` on
//!   `device_pass` / `driver_pass` gives instructions per request); also prints the device's
//!   host-memory transactions and bytes per request (ring areas and buffers apart).
//!
//! FORMAT is `split` or `packed`, optionally with `-in-order` (VIRTIO_F_IN_ORDER on both
//! sides: a pass's used entries become one), DIR `tx` or `rx`; the queue has 256 entries.
//! The two-thread mode also reports each thread's CPU time, and the rate per second of the
//! device thread's CPU (`mpps_per_dev_cpu`), which does not count time the machine gave to
//! other work, and the device's busy time per request (`dev_busy_ns`: wall time of the
//! device passes that found work, over the requests; polls of an empty ring are not
//! counted, as DPDK testpmd's `--record-core-cycles` counts only bursts that received
//! packets), with the requests a non-empty pass served on average (`dev_per_pass`). With
//! `RING_BENCH_NO_COUNT=1` the single-thread mode too reaches host memory directly (no
//! counting wrapper), for instruction counts of the engine alone. With
//! `RING_BENCH_MEMORY=vfio-user` the device reaches the same RAM through the vfio-user
//! link's host memory (`epf_vfio_user::DmaTable`, the RAM's memfd mapped as a client's
//! DMA_MAP is) instead of the loopback's arena.

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
    in_order: bool,
    tx: bool,
    bytes: u32,
    batch: usize,
    requests: u64,
}

fn usage() -> ! {
    eprintln!(
        "usage: ring-bench threads|single split|packed[-in-order] tx|rx BYTES BATCH REQUESTS"
    );
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
    let (format, in_order) = match a[1].strip_suffix("-in-order") {
        Some(f) => (f, true),
        None => (a[1].as_str(), false),
    };
    let packed = match format {
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
        in_order,
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
        // Publishes (in order: as batches); nothing to do otherwise.
        q.flush_used().expect("flush_used");
    }
    elems.len()
}

/// The loopback's host RAM as the vfio-user link gives it to a function: the same memfd,
/// mapped again through `epf_vfio_user::DmaTable` as a client's DMA_MAP is, so the device
/// pays that implementation's per-access costs (mapping lookup, lock).
fn vfio_user_memory(c: &LoopbackController) -> Arc<dyn HostMemory> {
    let ram = c.ram();
    let fd = ram.raw_fd().expect("loopback RAM is a memfd");
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor the arena keeps open for its lifetime (and
    // `ram` holds the arena); the result is a new descriptor nobody else owns.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    assert!(dup >= 0, "dup of the RAM memfd failed");
    // SAFETY: `dup` is a fresh, open descriptor owned by nothing else.
    let dup = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dup) };
    Arc::new(
        epf_vfio_user::DmaTable::with_mapping(ram.base(), dup, ram.size())
            .expect("DMA-map the loopback RAM"),
    )
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

/// CPU time the calling thread has used, in seconds.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own and reads nothing else.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
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
    d.q.publish_avail().expect("publish_avail");
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
    hq.set_in_order(args.in_order);
    // One avail.idx store per driver pass (split), as DPDK's virtio-user does per burst.
    hq.set_burst_publish(true);
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
    // Counting costs the device two atomic adds per access (about 20 ns per request at batch
    // 32), so the timed two-thread runs reach memory directly and only the deterministic
    // single-thread mode counts.
    let count = !args.threads && std::env::var_os("RING_BENCH_NO_COUNT").is_none();
    let direct = match std::env::var("RING_BENCH_MEMORY").as_deref() {
        Ok("vfio-user") => vfio_user_memory(&c),
        Ok("loopback") | Err(_) => c.host_memory(),
        Ok(other) => {
            eprintln!("ring-bench: RING_BENCH_MEMORY={other}: expected loopback or vfio-user");
            std::process::exit(2)
        }
    };
    // Counts the accesses to whichever memory was chosen.
    let counting = Arc::new(Counting::new(direct.clone(), (cfg.desc_addr, ring_end)));
    let mem: Arc<dyn HostMemory> = if !count { direct } else { counting.clone() };
    let mut q = if args.packed {
        Queue::new_packed(cfg, mem.clone(), false)
    } else {
        Queue::new(cfg, mem.clone(), false)
    }
    .expect("device queue");
    q.disable_notification().expect("disable_notification");
    q.set_in_order(args.in_order);
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
    // CPU seconds of the device and driver threads (two-thread mode).
    let mut cpu = (f64::NAN, f64::NAN);
    let mut busy_ns = f64::NAN;
    let mut per_pass = f64::NAN;
    if args.threads {
        let done = Arc::new(AtomicBool::new(false));
        let dev_done = done.clone();
        let dev_mem = mem.clone();
        pin(0);
        let device = std::thread::Builder::new()
            .name("device".into())
            .spawn(move || {
                pin(1);
                let mut chain = DescriptorChain::new();
                let mut elems = Vec::with_capacity(batch);
                let mut served = 0u64;
                let cpu0 = thread_cpu_secs();
                let mut busy = std::time::Duration::ZERO;
                let mut passes = 0u64;
                while served < total {
                    let t0 = Instant::now();
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
                    } else {
                        busy += t0.elapsed();
                        passes += 1;
                    }
                    served += n as u64;
                }
                (served, thread_cpu_secs() - cpu0, busy, passes)
            })
            .expect("device thread");
        let cpu0 = thread_cpu_secs();
        while driver.completed < total {
            driver_pass(&mut driver, batch);
        }
        let driver_cpu = thread_cpu_secs() - cpu0;
        done.store(true, Ordering::Relaxed);
        let (served, device_cpu, busy, passes) = device.join().expect("device thread");
        per_pass = served as f64 / passes.max(1) as f64;
        assert_eq!(served, total);
        cpu = (device_cpu, driver_cpu);
        busy_ns = busy.as_nanos() as f64 / total as f64;
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
    let mut line = format!(
        "format={}{} dir={} bytes={} batch={} requests={} mode={} secs={:.3} mpps={:.3} \
         dev_cpu_s={:.3} drv_cpu_s={:.3} mpps_per_dev_cpu={:.3} dev_busy_ns={:.1} dev_per_pass={:.1}",
        if args.packed { "packed" } else { "split" },
        if args.in_order { "-in-order" } else { "" },
        if args.tx { "tx" } else { "rx" },
        args.bytes,
        batch,
        total,
        if args.threads { "threads" } else { "single" },
        secs,
        total as f64 / secs / 1e6,
        cpu.0,
        cpu.1,
        total as f64 / cpu.0 / 1e6,
        busy_ns,
        per_pass,
    );
    if count {
        line += &format!(
            " ring_reads={:.3} ring_read_bytes={:.1} ring_writes={:.3} ring_write_bytes={:.1} \
             data_reads={:.3} data_read_bytes={:.1} data_writes={:.3} data_write_bytes={:.1}",
            per(t.ring_reads, before.ring_reads),
            per(t.ring_read_bytes, before.ring_read_bytes),
            per(t.ring_writes, before.ring_writes),
            per(t.ring_write_bytes, before.ring_write_bytes),
            per(t.data_reads, before.data_reads),
            per(t.data_read_bytes, before.data_read_bytes),
            per(t.data_writes, before.data_writes),
            per(t.data_write_bytes, before.data_write_bytes),
        );
    }
    println!("{line}");
    assert_eq!(c.oob_attempts(), 0);
}
