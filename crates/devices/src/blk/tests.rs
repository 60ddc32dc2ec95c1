//! Device-level tests of virtio-blk: a driver-side ring in test memory, a real image file in
//! a scratch directory, both I/O engines. Each test checks statuses, data in host memory and
//! the image file itself.

use super::engine::EngineKind;
use super::request::{S_IOERR, S_OK, S_UNSUPP};
use super::*;
use epf_device::{DeviceConfig, Queue, Waker};
use epf_epc::HostMemory;
use epf_virtqueue::testing::{Buf, DriverRing, TestChain, TestMemory};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const ENGINES: [EngineKind; 2] = [EngineKind::Threads, EngineKind::IoUring];
const EVENT_IDX: u32 = virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
const ALL: u64 =
    (1 << VIRTIO_BLK_F_FLUSH) | (1 << VIRTIO_BLK_F_DISCARD) | (1 << VIRTIO_BLK_F_WRITE_ZEROES);

fn scratch_image(name: &str, len: usize, fill: impl Fn(usize) -> u8) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let p = std::env::temp_dir().join(format!(
        "epf-blk-test-{}-{}-{name}.img",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&p, (0..len).map(fill).collect::<Vec<u8>>()).unwrap();
    p
}

struct Rig {
    dev: BlkDevice,
    ring: DriverRing,
    queues: Vec<Option<Queue>>,
    config: DeviceConfig,
    waker: Waker,
    wake_fd: Arc<EventFd>,
    mem: Arc<dyn HostMemory>,
    tmem: Arc<TestMemory>,
    features: u64,
    path: PathBuf,
}

impl Rig {
    fn new(
        engine: EngineKind,
        image_len: usize,
        features: u64,
        tweak: impl FnOnce(&mut BlkOptions),
    ) -> Rig {
        let path = scratch_image("rig", image_len, |i| (i / 512) as u8);
        let mut opts = BlkOptions::new(&path);
        opts.engine = engine;
        opts.threads = 4;
        opts.serial = Some("EPF-SERIAL-1".into());
        tweak(&mut opts);
        let dev = BlkDevice::open(&opts).unwrap();
        assert_eq!(dev.engine_kind(), engine, "engine fell back");
        let tmem = Arc::new(TestMemory::new(16 << 20));
        let ring = DriverRing::new(tmem.clone(), 256);
        let mem: Arc<dyn HostMemory> = tmem.clone();
        let event_idx = features & (1 << EVENT_IDX) != 0;
        let q = Queue::new(ring.config(), mem.clone(), event_idx).unwrap();
        let wake_fd = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let waker = Waker::new(wake_fd.clone());
        let config = DeviceConfig::new(dev.initial_config());
        let mut rig = Rig {
            dev,
            ring,
            queues: vec![Some(q)],
            config,
            waker,
            wake_fd,
            mem,
            tmem,
            features,
            path,
        };
        let (dev, mut ctx) = rig.split();
        dev.activate(&mut ctx).unwrap();
        rig
    }

    fn split(&mut self) -> (&mut BlkDevice, DeviceContext<'_>) {
        (
            &mut self.dev,
            DeviceContext::new(
                self.features,
                &mut self.queues,
                &self.config,
                &self.waker,
                &self.mem,
            ),
        )
    }

    fn notify(&mut self) -> Result<(), DeviceError> {
        let (dev, mut ctx) = self.split();
        dev.queue_notify(0, &mut ctx)
    }

    /// Waits for the device's wake-ups and calls `wake` (as the worker does) until `n` used
    /// elements are published; returns them. Fails if a completion is never announced.
    fn collect(&mut self, n: usize) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        let t = Instant::now();
        loop {
            while let Some(e) = self.ring.pop_used() {
                out.push(e);
            }
            if out.len() >= n {
                return out;
            }
            let mut pfd = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(self.wake_fd.as_ref()),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll(2) on one live pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, 100) };
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "only {} of {n} completions (poll {r})",
                out.len()
            );
            if r == 1 {
                let _ = self.wake_fd.read();
                let (dev, mut ctx) = self.split();
                dev.wake(&mut ctx).unwrap();
            }
        }
    }

    /// Adds a request: header, `out` data buffers, `inb` writable data buffers, status.
    fn request(&mut self, rtype: u32, sector: u64, out: &[Vec<u8>], inb: &[u32]) -> TestChain {
        let mut bufs = vec![Buf::Readable(header(rtype, sector))];
        bufs.extend(out.iter().map(|d| Buf::Readable(d.clone())));
        bufs.extend(inb.iter().map(|&l| Buf::Writable(l)));
        bufs.push(Buf::Writable(1));
        self.ring.add_chain(&bufs)
    }

    /// Runs one request to completion; returns (status, used_len, chain).
    fn run(
        &mut self,
        rtype: u32,
        sector: u64,
        out: &[Vec<u8>],
        inb: &[u32],
    ) -> (u8, u32, TestChain) {
        let c = self.request(rtype, sector, out, inb);
        self.notify().unwrap();
        let used = self.collect(1);
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].0, u32::from(c.head));
        (self.status(&c), used[0].1, c)
    }

    fn status(&self, c: &TestChain) -> u8 {
        let s = c.writable.last().unwrap();
        self.tmem.peek(s.addr + u64::from(s.len) - 1, 1)[0]
    }

    /// The data read into the writable buffers of `c` (without the status byte).
    fn read_data(&self, c: &TestChain) -> Vec<u8> {
        let n = c.writable.len() - 1;
        c.writable[..n]
            .iter()
            .flat_map(|s| self.tmem.peek(s.addr, s.len as usize))
            .collect()
    }

    fn image(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn header(rtype: u32, sector: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(16);
    h.extend_from_slice(&rtype.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&sector.to_le_bytes());
    h
}

fn range_seg(sector: u64, num: u32, flags: u32) -> Vec<u8> {
    let mut s = Vec::with_capacity(16);
    s.extend_from_slice(&sector.to_le_bytes());
    s.extend_from_slice(&num.to_le_bytes());
    s.extend_from_slice(&flags.to_le_bytes());
    s
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn write_then_read_across_segments_with_both_engines() {
    for engine in ENGINES {
        let mut r = Rig::new(engine, 1 << 20, ALL, |_| {});
        let a = pattern(1000, 1);
        let b = pattern(536, 2);
        let (st, len, _) = r.run(VIRTIO_BLK_T_OUT, 3, &[a.clone(), b.clone()], &[]);
        assert_eq!((st, len), (S_OK, 1), "{engine}");
        let img = r.image();
        assert_eq!(&img[3 * 512..3 * 512 + 1000], &a[..]);
        assert_eq!(&img[3 * 512 + 1000..6 * 512], &b[..]);
        assert_eq!(img[6 * 512], 6, "the sector after the write is untouched");
        assert_eq!(
            img[3 * 512 - 1],
            2,
            "the sector before the write is untouched"
        );

        let (st, len, c) = r.run(VIRTIO_BLK_T_IN, 2, &[], &[100, 1948]);
        assert_eq!((st, len), (S_OK, 2049), "{engine}");
        let got = r.read_data(&c);
        assert_eq!(&got[..512], &vec![2u8; 512][..]);
        assert_eq!(&got[512..1512], &a[..]);
        assert_eq!(&got[1512..], &b[..]);
        assert_eq!(r.tmem.oob_attempts(), 0);
    }
}

#[test]
fn requests_larger_than_a_chunk_are_copied_piecewise() {
    for engine in ENGINES {
        let mut r = Rig::new(engine, 4 << 20, ALL, |_| {});
        let data = pattern(io::CHUNK * 2 + 4096, 9);
        let parts: Vec<Vec<u8>> = data.chunks(700 * 1024).map(|c| c.to_vec()).collect();
        let (st, _, _) = r.run(VIRTIO_BLK_T_OUT, 8, &parts, &[]);
        assert_eq!(st, S_OK);
        assert_eq!(&r.image()[4096..4096 + data.len()], &data[..]);
        let lens: Vec<u32> = data.chunks(900 * 1024).map(|c| c.len() as u32).collect();
        let (st, _, c) = r.run(VIRTIO_BLK_T_IN, 8, &[], &lens);
        assert_eq!(st, S_OK);
        assert!(r.read_data(&c) == data, "{engine}: read back differs");
    }
}

/// Host memory the controller maps (vfio-user): large requests on the page cache move
/// straight between the image and the host's buffers (preadv/pwritev on the host's pages,
/// across many segments), with the same results as the copying path.
#[test]
fn large_requests_go_in_place_when_host_memory_is_mapped() {
    for engine in ENGINES {
        let mut r = Rig::new(engine, 4 << 20, ALL, |_| {});
        r.tmem.set_in_place(true);
        let data = pattern(io::CHUNK * 2 + 4096, 11);
        // Odd segment sizes: preadv/pwritev must continue correctly across segment
        // boundaries.
        let parts: Vec<Vec<u8>> = data.chunks(4096 * 5 + 512).map(|c| c.to_vec()).collect();
        let (st, _, _) = r.run(VIRTIO_BLK_T_OUT, 8, &parts, &[]);
        assert_eq!(st, S_OK, "{engine}");
        assert_eq!(&r.image()[4096..4096 + data.len()], &data[..], "{engine}");
        let lens: Vec<u32> = data.chunks(21_000).map(|c| c.len() as u32).collect();
        let (st, _, c) = r.run(VIRTIO_BLK_T_IN, 8, &[], &lens);
        assert_eq!(st, S_OK, "{engine}");
        assert!(r.read_data(&c) == data, "{engine}: read back differs");
        assert_eq!(
            r.tmem.in_place_calls(),
            2,
            "{engine}: one in-place call each way"
        );
        assert_eq!(r.tmem.oob_attempts(), 0);
    }
}

/// Found by the device fuzzer: a request with more data segments than one system call takes
/// (here 1100, through an indirect table; valid, the device does not enforce `seg_max`)
/// failed with IOERR where host memory is mapped: the loopback and test memories handed
/// pwritev more iovecs than IOV_MAX. Such a request is copied instead, and succeeds.
#[test]
fn requests_with_more_segments_than_one_system_call_takes_succeed() {
    for engine in ENGINES {
        let mut r = Rig::new(engine, 1 << 20, ALL, |_| {});
        r.tmem.set_in_place(true);
        let data = pattern(1100 * 512, 5);
        let mut bufs = vec![Buf::Readable(header(VIRTIO_BLK_T_OUT, 0))];
        bufs.extend(data.chunks(512).map(|c| Buf::Readable(c.to_vec())));
        bufs.push(Buf::Writable(1));
        let c = r.ring.add_indirect_chain(&bufs);
        r.notify().unwrap();
        assert_eq!(r.collect(1)[0].0, u32::from(c.head));
        assert_eq!(r.status(&c), S_OK, "{engine}: write");
        assert_eq!(&r.image()[..data.len()], &data[..], "{engine}");
        let mut bufs = vec![Buf::Readable(header(VIRTIO_BLK_T_IN, 0))];
        bufs.extend((0..1100).map(|_| Buf::Writable(512)));
        bufs.push(Buf::Writable(1));
        let c = r.ring.add_indirect_chain(&bufs);
        r.notify().unwrap();
        assert_eq!(r.collect(1)[0].0, u32::from(c.head));
        assert_eq!(r.status(&c), S_OK, "{engine}: read");
        assert!(r.read_data(&c) == data, "{engine}: read back differs");
    }
}

#[test]
fn many_requests_in_flight_complete_in_batches() {
    for engine in ENGINES {
        let mut r = Rig::new(engine, 1 << 20, ALL, |_| {});
        let chains: Vec<TestChain> = (0..64)
            .map(|i| r.request(VIRTIO_BLK_T_IN, i * 8, &[], &[4096]))
            .collect();
        r.notify().unwrap();
        let used = r.collect(64);
        assert_eq!(used.len(), 64);
        for c in &chains {
            assert_eq!(r.status(c), S_OK);
            let d = r.read_data(c);
            let sector = (c.head as usize / 3) * 8;
            assert!(d
                .chunks(512)
                .enumerate()
                .all(|(i, s)| s.iter().all(|&b| b == (sector + i) as u8)));
        }
        assert_eq!(r.dev.stats.reads.load(Ordering::Relaxed), 64);
    }
}

#[test]
fn notifications_are_rearmed_after_every_pass_with_event_idx() {
    for engine in ENGINES {
        let mut r = Rig::new(engine, 1 << 20, ALL | (1 << EVENT_IDX), |_| {});
        for round in 1..=3u16 {
            for i in 0..5 {
                r.request(VIRTIO_BLK_T_IN, i * 8, &[], &[4096]);
            }
            r.notify().unwrap();
            // The ring was emptied and avail_event points at the next buffer: the driver's
            // next buffer is sure to be notified.
            assert_eq!(r.ring.avail_event(), 5 * round, "{engine}");
            assert_eq!(r.collect(5).len(), 5);
        }
    }
}

#[test]
fn flush_and_writes_without_flush_negotiated_complete() {
    for engine in ENGINES {
        let mut r = Rig::new(engine, 1 << 20, ALL, |_| {});
        let (st, len, _) = r.run(VIRTIO_BLK_T_FLUSH, 0, &[], &[]);
        assert_eq!((st, len), (S_OK, 1));
        assert_eq!(r.dev.stats.flushes.load(Ordering::Relaxed), 1);
        // Without FLUSH every write is synchronous (RWF_DSYNC); it must still work.
        let mut r = Rig::new(engine, 1 << 20, 0, |_| {});
        let (st, _, _) = r.run(VIRTIO_BLK_T_OUT, 0, &[vec![0xab; 4096]], &[]);
        assert_eq!(st, S_OK);
        assert_eq!(&r.image()[..4096], &[0xab; 4096][..]);
    }
}

#[test]
fn out_of_range_and_odd_lengths_fail_without_touching_the_image() {
    let mut r = Rig::new(EngineKind::IoUring, 64 * 1024, ALL, |_| {});
    let before = r.image();
    let cap = 128u64;
    for (t, sector, out, inb) in [
        (VIRTIO_BLK_T_OUT, cap, vec![vec![1u8; 512]], vec![]),
        (VIRTIO_BLK_T_OUT, cap - 1, vec![vec![1u8; 1024]], vec![]),
        (VIRTIO_BLK_T_OUT, u64::MAX, vec![vec![1u8; 512]], vec![]),
        (
            VIRTIO_BLK_T_OUT,
            u64::MAX / 512 + 1,
            vec![vec![1u8; 512]],
            vec![],
        ),
        (VIRTIO_BLK_T_OUT, 0, vec![vec![1u8; 100]], vec![]),
        (VIRTIO_BLK_T_IN, cap, vec![], vec![512]),
        (VIRTIO_BLK_T_IN, 0, vec![], vec![700]),
        // Data segments the wrong way round.
        (VIRTIO_BLK_T_IN, 0, vec![vec![1u8; 512]], vec![512]),
        (VIRTIO_BLK_T_OUT, 0, vec![vec![1u8; 512]], vec![512]),
    ] {
        let (st, _, _) = r.run(t, sector, &out, &inb);
        assert_eq!(st, S_IOERR, "type {t} sector {sector}");
    }
    assert!(r.image() == before, "image modified by a refused request");
    assert_eq!(std::fs::metadata(&r.path).unwrap().len(), 64 * 1024);
    // The last sector itself is fine.
    let (st, _, _) = r.run(VIRTIO_BLK_T_OUT, cap - 1, &[vec![7u8; 512]], &[]);
    assert_eq!(st, S_OK);
    assert_eq!(r.image()[64 * 1024 - 1], 7);
}

#[test]
fn malformed_requests_get_ioerr_or_need_a_reset() {
    let mut r = Rig::new(EngineKind::Threads, 64 * 1024, ALL, |_| {});
    // Header too short (but a status byte to answer in).
    let c = r
        .ring
        .add_chain(&[Buf::Readable(vec![0; 10]), Buf::Writable(1)]);
    r.notify().unwrap();
    r.collect(1);
    assert_eq!(r.status(&c), S_IOERR);
    // Header split over two descriptors is fine.
    let h = header(VIRTIO_BLK_T_IN, 1);
    let c = r.ring.add_chain(&[
        Buf::Readable(h[..5].to_vec()),
        Buf::Readable(h[5..].to_vec()),
        Buf::Writable(513),
    ]);
    r.notify().unwrap();
    r.collect(1);
    assert_eq!(r.status(&c), S_OK);
    assert_eq!(r.tmem.peek(c.writable[0].addr, 512), vec![1u8; 512]);
    // No writable byte at all: nowhere to put a status, the device gives up.
    r.ring
        .add_chain(&[Buf::Readable(header(VIRTIO_BLK_T_IN, 0))]);
    assert!(matches!(r.notify(), Err(DeviceError::Protocol(_))));
}

#[test]
fn unsupported_types_and_unnegotiated_features_answer_unsupp() {
    let mut r = Rig::new(
        EngineKind::IoUring,
        64 * 1024,
        1 << VIRTIO_BLK_F_FLUSH,
        |_| {},
    );
    for t in [
        VIRTIO_BLK_T_SECURE_ERASE,
        10,
        99,
        VIRTIO_BLK_T_ZONE_REPORT,
        u32::MAX,
    ] {
        let (st, _, _) = r.run(t, 0, &[], &[]);
        assert_eq!(st, S_UNSUPP, "type {t}");
    }
    let (st, _, _) = r.run(VIRTIO_BLK_T_DISCARD, 0, &[range_seg(0, 8, 0)], &[]);
    assert_eq!(st, S_UNSUPP, "discard not negotiated");
    let (st, _, _) = r.run(VIRTIO_BLK_T_WRITE_ZEROES, 0, &[range_seg(0, 8, 0)], &[]);
    assert_eq!(st, S_UNSUPP, "write zeroes not negotiated");
}

#[test]
fn get_id_returns_the_serial() {
    let mut r = Rig::new(EngineKind::IoUring, 4096, ALL, |_| {});
    let (st, len, c) = r.run(VIRTIO_BLK_T_GET_ID, 0, &[], &[20]);
    assert_eq!((st, len), (S_OK, 21));
    let mut want = b"EPF-SERIAL-1".to_vec();
    want.resize(20, 0);
    assert_eq!(r.read_data(&c), want);
    let (st, _, _) = r.run(VIRTIO_BLK_T_GET_ID, 0, &[], &[]);
    assert_eq!(st, S_IOERR, "no room for the id");
}

#[test]
fn read_only_images_refuse_writes() {
    for engine in ENGINES {
        let mut r = Rig::new(engine, 64 * 1024, ALL, |o| o.image.read_only = true);
        let f = r.dev.device_features();
        assert_ne!(f & (1 << VIRTIO_BLK_F_RO), 0);
        assert_eq!(f & (1 << VIRTIO_BLK_F_WRITE_ZEROES), 0);
        let before = r.image();
        let (st, _, _) = r.run(VIRTIO_BLK_T_OUT, 0, &[vec![9u8; 512]], &[]);
        assert_eq!(st, S_IOERR);
        let (st, _, _) = r.run(VIRTIO_BLK_T_WRITE_ZEROES, 0, &[range_seg(0, 8, 0)], &[]);
        assert_eq!(st, S_IOERR);
        let (st, _, _) = r.run(VIRTIO_BLK_T_IN, 0, &[], &[512]);
        assert_eq!(st, S_OK);
        let (st, _, _) = r.run(VIRTIO_BLK_T_FLUSH, 0, &[], &[]);
        assert_eq!(st, S_OK);
        assert!(r.image() == before);
    }
}

#[test]
fn discard_punches_holes_and_write_zeroes_reads_back_zero() {
    for engine in ENGINES {
        let mut r = Rig::new(engine, 4 << 20, ALL, |_| {});
        std::fs::File::open(&r.path).unwrap().sync_all().unwrap();
        let path = r.path.clone();
        let blocks = || std::fs::metadata(&path).unwrap().blocks();
        let before = blocks();
        // Discard 2 MiB in two segments.
        let (st, _, _) = r.run(
            VIRTIO_BLK_T_DISCARD,
            0,
            &[[range_seg(0, 2048, 0), range_seg(4096, 2048, 0)].concat()],
            &[],
        );
        assert_eq!(st, S_OK, "{engine}");
        let after = blocks();
        assert!(
            after + 2 * 2048 <= before,
            "{engine}: blocks {before} -> {after}"
        );
        assert!(r.image()[..1 << 20].iter().all(|&b| b == 0));
        assert_eq!(r.image()[(1 << 20) + 512], 1);
        // Write zeroes (allocating, then unmapping).
        let (st, _, _) = r.run(VIRTIO_BLK_T_WRITE_ZEROES, 0, &[range_seg(2048, 16, 0)], &[]);
        assert_eq!(st, S_OK);
        let (st, _, _) = r.run(
            VIRTIO_BLK_T_WRITE_ZEROES,
            0,
            &[range_seg(2100, 7, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)],
            &[],
        );
        assert_eq!(st, S_OK);
        let img = r.image();
        assert!(img[2048 * 512..2064 * 512].iter().all(|&b| b == 0));
        assert!(img[2100 * 512..2107 * 512].iter().all(|&b| b == 0));
        assert_eq!(img[2064 * 512], (2064 % 256) as u8);
        assert_eq!(img[2107 * 512], (2107 % 256) as u8);
        assert_eq!(img.len(), 4 << 20);
        // Refused: UNMAP on discard and unknown flags (UNSUPP), bad sizes (IOERR).
        for (t, payload, want) in [
            (VIRTIO_BLK_T_DISCARD, range_seg(0, 8, 1), S_UNSUPP),
            (VIRTIO_BLK_T_WRITE_ZEROES, range_seg(0, 8, 2), S_UNSUPP),
            (VIRTIO_BLK_T_DISCARD, range_seg(8192, 1, 0), S_IOERR),
            (VIRTIO_BLK_T_DISCARD, range_seg(u64::MAX / 4, 8, 0), S_IOERR),
            (
                VIRTIO_BLK_T_DISCARD,
                range_seg(0, config::MAX_RANGE_SECTORS + 1, 0),
                S_IOERR,
            ),
            (
                VIRTIO_BLK_T_DISCARD,
                range_seg(0, 8, 0)[..15].to_vec(),
                S_IOERR,
            ),
            (VIRTIO_BLK_T_DISCARD, range_seg(0, 1, 0).repeat(33), S_IOERR),
        ] {
            let (st, _, _) = r.run(t, 0, &[payload], &[]);
            assert_eq!(st, want, "type {t}");
        }
        assert_eq!(r.image().len(), 4 << 20);
    }
}

#[test]
fn reset_waits_for_requests_in_flight_and_drops_them() {
    for engine in ENGINES {
        let mut r = Rig::new(engine, 4 << 20, ALL, |_| {});
        for i in 0..32 {
            r.request(VIRTIO_BLK_T_IN, i * 64, &[], &[32768]);
        }
        r.notify().unwrap();
        r.dev.reset();
        assert_eq!(r.dev.engine.in_flight(), 0, "{engine}");
        // A fresh activation works.
        let q = Queue::new(r.ring.config(), r.mem.clone(), false).unwrap();
        r.queues = vec![Some(q)];
        r.ring = DriverRing::new(r.tmem.clone(), 256);
        let (dev, mut ctx) = r.split();
        dev.activate(&mut ctx).unwrap();
        let (st, _, _) = r.run(VIRTIO_BLK_T_IN, 0, &[], &[512]);
        assert_eq!(st, S_OK);
    }
}

#[test]
fn random_chains_never_panic_or_grow_the_image() {
    let mut r = Rig::new(EngineKind::IoUring, 64 * 1024, ALL, |_| {});
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..300 {
        let t = [0, 1, 4, 8, 11, 13, 2, 77][(next() % 8) as usize];
        let sector = match next() % 4 {
            0 => next(),
            _ => next() % 200,
        };
        let out: Vec<Vec<u8>> = (0..next() % 3)
            .map(|_| vec![0x5a; (next() % 1100) as usize + 1])
            .collect();
        let inb: Vec<u32> = (0..next() % 3)
            .map(|_| (next() % 1100) as u32 + 1)
            .collect();
        let c = r.request(t, sector, &out, &inb);
        r.notify().unwrap();
        r.collect(1);
        let st = r.status(&c);
        assert!(st == S_OK || st == S_IOERR || st == S_UNSUPP, "status {st}");
    }
    assert_eq!(std::fs::metadata(&r.path).unwrap().len(), 64 * 1024);
    assert_eq!(r.tmem.oob_attempts(), 0);
}

#[test]
fn bad_options_are_one_line_errors() {
    let p = scratch_image("opts", 4096, |_| 0);
    let mut o = BlkOptions::new(&p);
    o.serial = Some("x".repeat(21));
    let e = BlkDevice::open(&o).err().unwrap();
    assert!(e.to_string().contains("at most 20"), "{e}");
    for (opts, limit) in [
        (
            BlkOptions {
                num_queues: 0,
                ..BlkOptions::new(&p)
            },
            "1..=64",
        ),
        (
            BlkOptions {
                num_queues: 65,
                ..BlkOptions::new(&p)
            },
            "1..=64",
        ),
        (
            BlkOptions {
                queue_size: 2,
                ..BlkOptions::new(&p)
            },
            "4..=1024",
        ),
        (
            BlkOptions {
                queue_size: 100,
                ..BlkOptions::new(&p)
            },
            "4..=1024",
        ),
        (
            BlkOptions {
                queue_size: 2048,
                ..BlkOptions::new(&p)
            },
            "4..=1024",
        ),
        (
            BlkOptions {
                threads: 0,
                ..BlkOptions::new(&p)
            },
            "1..=256",
        ),
    ] {
        let e = BlkDevice::open(&opts).err().unwrap().to_string();
        assert!(e.contains(limit) && !e.contains("--"), "{e}");
    }
    assert!(BlkDevice::open(&BlkOptions {
        queue_size: 1024,
        ..BlkOptions::new(&p)
    })
    .is_ok());
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn a_head_made_available_again_while_in_flight_needs_a_reset() {
    let mut r = Rig::new(EngineKind::Threads, 64 * 1024, ALL, |_| {});
    let c = r.request(VIRTIO_BLK_T_IN, 0, &[], &[512]);
    // The driver publishes the same head twice in one go: the second is still with the
    // engine when the device sees it.
    r.ring.push_avail(c.head);
    assert!(matches!(r.notify(), Err(DeviceError::Protocol(_))));
}
