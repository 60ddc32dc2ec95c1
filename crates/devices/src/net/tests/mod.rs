//! Loopback tests of the virtio-net device: the real [`NetDevice`] behind the real virtio-pci
//! function on the loopback controller, driven by the loopback host driver, with its wire a
//! real TAP device. Each test runs on a thread that first moves into a network namespace of
//! its own (`unshare(CLONE_NEWNET)` affects only that thread and what it starts), so the TAP,
//! and every frame, exist only there; the namespace disappears with the test's last
//! descriptor. The endpoint's side of the wire is played with packet sockets on the TAP:
//! frames sent on one reach the device as packets to receive, and frames the device writes
//! to the TAP are captured by another. Needs root (CAP_NET_ADMIN), like the end-to-end tests.

mod traffic;

use super::{NetCounters, NetDevice, NetOptions};
use epf_epc::EndpointController;
use epf_loopback::host_driver::spec::*;
use epf_loopback::host_driver::{HostQueue, VirtioPciDriver};
use epf_loopback::{HostBus, LoopbackController, LoopbackOptions};
use epf_virtio_pci::VirtioPciFunction;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Frames the endpoint side sends towards the host, and frames the host transmits.
pub const ETH_TO_HOST: u16 = 0x88b5;
pub const ETH_FROM_HOST: u16 = 0x88b6;
pub const WAIT: Duration = Duration::from_secs(5);

/// Runs `body` on a thread inside a new network namespace, failing the test if it does not
/// finish within `limit`.
pub fn in_netns<F: FnOnce() + Send + 'static>(limit: Duration, body: F) {
    epf_virtio_pci::testing::bounded(limit, move || {
        // SAFETY: unshare(2) with CLONE_NEWNET only changes this thread's network namespace.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        body();
    })
}

/// Runs `ip ARGS` (in the calling thread's namespace), which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

/// Creates TAP `name` (vnet_hdr, multi-queue if asked) with `mtu`, IPv6 off so the kernel
/// sends nothing by itself, and brings it up.
pub fn make_tap(name: &str, multi_queue: bool, mtu: u32) {
    let mut args = vec!["tuntap", "add", "dev", name, "mode", "tap", "vnet_hdr"];
    if multi_queue {
        args.push("multi_queue");
    }
    ip(&args);
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), b"1");
    ip(&["link", "set", name, "mtu", &mtu.to_string(), "up"]);
}

/// A raw packet socket on one interface and EtherType.
pub struct PacketSocket(OwnedFd);

impl PacketSocket {
    pub fn open(ifname: &str, proto: u16) -> PacketSocket {
        // SAFETY: plain socket(2); the result is checked and owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto.to_be()),
            )
        };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fd` was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: `name` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0, "no interface {ifname}");
        // SAFETY: sockaddr_ll is plain old data; all zero is valid.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = proto.to_be();
        sa.sll_ifindex = ifindex as i32;
        // SAFETY: `sa` is a valid sockaddr_ll of the size given, alive for the call.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            r,
            0,
            "bind packet socket: {}",
            std::io::Error::last_os_error()
        );
        PacketSocket(fd)
    }

    pub fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is valid for reads of its length for the duration of the call.
        let n = unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// The next frame, or `None` after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let mut p = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
        if r <= 0 {
            return None;
        }
        let mut buf = vec![0u8; 70000];
        // SAFETY: `buf` is valid for writes of its length for the duration of the call.
        let n = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return None;
        }
        buf.truncate(n as usize);
        Some(buf)
    }
}

/// An Ethernet frame to `dst` of `len` bytes with EtherType `proto` and a payload pattern
/// seeded by `seed`.
pub fn frame(dst: [u8; 6], proto: u16, len: usize, seed: u8) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&[0x02, 0x99, 0, 0, 0, 1]);
    f.extend_from_slice(&proto.to_be_bytes());
    let mut x = seed as u32 | 1;
    while f.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        f.push((x >> 16) as u8);
    }
    f
}

/// A plain virtio-net header (no offloads) followed by `frame`.
pub fn with_header(frame: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 12];
    p.extend_from_slice(frame);
    p
}

/// The device on the loopback controller with a driver that set up `pairs` queue pairs and
/// the control queue.
pub struct NetRig {
    pub c: Arc<LoopbackController>,
    pub f: Arc<VirtioPciFunction>,
    pub drv: VirtioPciDriver,
    pub rx: Vec<HostQueue>,
    pub tx: Vec<HostQueue>,
    pub ctrl: HostQueue,
    pub counters: Arc<NetCounters>,
    pub features: u64,
    pub mac: [u8; 6],
    /// Address and length of every posted receive buffer, by head.
    pub rx_bufs: Vec<HashMap<u16, (u64, u32)>>,
}

impl NetRig {
    /// `wanted`: device feature bits the driver accepts (VERSION_1 and ring features added).
    pub fn new(opts: &NetOptions, wanted: u64, queue_size: u16) -> NetRig {
        let dev = NetDevice::new(opts).unwrap_or_else(|e| panic!("NetDevice::new: {e}"));
        let counters = dev.counters();
        let mac = dev.mac().0;
        let c = Arc::new(
            LoopbackController::new(LoopbackOptions::default().with_ram_size(64 << 20)).unwrap(),
        );
        let epc: Arc<dyn EndpointController> = c.clone();
        let f = VirtioPciFunction::start(epc, Box::new(dev)).unwrap();
        let mut drv = VirtioPciDriver::probe(c.host()).unwrap();
        assert!(drv.enable_msix());
        let ring = feature(VIRTIO_F_EVENT_IDX) | feature(VIRTIO_F_INDIRECT_DESC);
        let features = drv.init(wanted | ring).unwrap();
        drv.set_config_vector(0).unwrap();
        let pairs = if features & (1 << 22) != 0 {
            opts.queue_pairs
        } else {
            1
        };
        let mut rx = Vec::new();
        let mut tx = Vec::new();
        let mut v = 1;
        for p in 0..pairs {
            rx.push(drv.setup_queue(2 * p, Some(queue_size), Some(v)).unwrap());
            tx.push(
                drv.setup_queue(2 * p + 1, Some(queue_size), Some(v + 1))
                    .unwrap(),
            );
            v += 2;
        }
        let ctrl = drv.setup_queue(2 * pairs, Some(16), Some(v)).unwrap();
        drv.driver_ok();
        // Activation happens on the worker thread: wait for it.
        let t = std::time::Instant::now();
        while counters
            .active_pairs
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            assert!(t.elapsed() < WAIT, "the device was never activated");
            std::thread::sleep(Duration::from_millis(1));
        }
        NetRig {
            c,
            f,
            drv,
            rx_bufs: vec![HashMap::new(); rx.len()],
            rx,
            tx,
            ctrl,
            counters,
            features,
            mac,
        }
    }

    pub fn bus(&self) -> HostBus {
        self.c.host()
    }

    /// Posts `n` receive buffers of `len` bytes on pair `p` and notifies.
    pub fn post_rx(&mut self, p: usize, n: usize, len: u32) {
        let bus = self.bus();
        for _ in 0..n {
            let a = bus.alloc(u64::from(len), 64).unwrap();
            bus.ram_write(a, &vec![0xee; len as usize]).unwrap();
            let head = self.rx[p].add(&[(a, len, true)]).unwrap();
            self.rx_bufs[p].insert(head, (a, len));
        }
        self.rx[p].kick().unwrap();
    }

    /// Waits for the next received packet on pair `p`: its header and frame, and the number
    /// of buffers it used (the used elements are checked against `num_buffers`).
    pub fn recv(&mut self, p: usize, timeout: Duration) -> Option<(Vec<u8>, Vec<u8>, usize)> {
        let bus = self.bus();
        let (head, len) = self.rx[p].wait_used_for(timeout).ok()?;
        let mut data = self.read_buf(p, &bus, head, len);
        assert!(
            data.len() >= 12,
            "used length {len} shorter than the header"
        );
        let nb = u16::from_le_bytes([data[10], data[11]]) as usize;
        for i in 1..nb {
            let (h, l) = self.rx[p].get_used().unwrap().unwrap_or_else(|| {
                panic!("buffer {i} of {nb} of a merged packet not published with the first")
            });
            data.extend(self.read_buf(p, &bus, h, l));
        }
        let frame = data.split_off(12);
        Some((data, frame, nb))
    }

    fn read_buf(&mut self, p: usize, bus: &HostBus, head: u16, len: u32) -> Vec<u8> {
        let (a, cap) = self.rx_bufs[p]
            .remove(&head)
            .unwrap_or_else(|| panic!("used id {head} is not a posted receive buffer"));
        assert!(len <= cap, "used length {len} > buffer {cap}");
        let mut b = vec![0u8; len as usize];
        bus.ram_read(a, &mut b).unwrap();
        b
    }

    /// Transmits `pkt` (header and frame) on pair `p` as a chain of `pieces` descriptors,
    /// and waits for its completion.
    pub fn send(&mut self, p: usize, pkt: &[u8], pieces: usize) {
        let bus = self.bus();
        let a = bus.alloc(pkt.len().max(1) as u64, 64).unwrap();
        bus.ram_write(a, pkt).unwrap();
        let step = pkt.len().div_ceil(pieces.max(1)).max(1);
        let bufs: Vec<(u64, u32, bool)> = (0..pkt.len())
            .step_by(step)
            .map(|o| (a + o as u64, step.min(pkt.len() - o) as u32, false))
            .collect();
        let head = self.tx[p].add(&bufs).unwrap();
        self.tx[p].kick().unwrap();
        let (h, len) = self.tx[p].wait_used_for(WAIT).expect("transmit completion");
        assert_eq!((h, len), (head, 0));
    }

    /// Sends a control command; returns the ack byte (`None` if the device wrote none).
    pub fn command(&mut self, cmd: &[u8], with_ack: bool) -> Option<u8> {
        let bus = self.bus();
        let a = bus.alloc(cmd.len().max(1) as u64 + 1, 64).unwrap();
        bus.ram_write(a, cmd).unwrap();
        let ack = a + cmd.len() as u64;
        bus.ram_write(ack, &[0xaa]).unwrap();
        let mut bufs = vec![(a, cmd.len() as u32, false)];
        if with_ack {
            bufs.push((ack, 1, true));
        }
        let head = self.ctrl.add(&bufs).unwrap();
        self.ctrl.kick().unwrap();
        let (h, len) = self.ctrl.wait_used_for(WAIT).expect("control completion");
        assert_eq!(h, head);
        (len == 1).then(|| {
            let mut b = [0u8];
            bus.ram_read(ack, &mut b).unwrap();
            b[0]
        })
    }

    /// Whether the device reports DEVICE_NEEDS_RESET.
    pub fn needs_reset(&self) -> bool {
        self.drv.status() & STATUS_DEVICE_NEEDS_RESET != 0
    }
}

impl Drop for NetRig {
    fn drop(&mut self) {
        self.f.stop();
    }
}
