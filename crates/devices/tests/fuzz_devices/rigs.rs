//! The devices under fuzz, each the real device behind the real virtio-pci function on the
//! loopback controller (16 MiB of host RAM whose out-of-range accesses it counts), with what
//! the test needs on the device's other side: an in-memory console backend (input from a
//! channel, output kept per case only), a scratch blk image
//! with a serial, and for net a TAP in a network namespace of the test's own with a packet
//! socket to send frames into it.

pub use super::layout::NET_PAIRS;
use super::layout::{Kind, RAM_SIZE};
use epf_device::VirtioDevice;
use epf_devices::blk::{BlkDevice, BlkOptions};
use epf_devices::console::Backend;
use epf_devices::net::{NetCounters, NetDevice, NetOptions};
use epf_devices::{ConsoleDevice, RngDevice};
use epf_loopback::host_driver::VirtioPciDriver;
use epf_loopback::LoopbackOptions;
use epf_virtio_pci::testing::Rig;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Size of the blk image.
pub const BLK_CAPACITY: u64 = 1 << 20;
/// The blk serial (GET_ID).
pub const BLK_SERIAL: &[u8] = b"FUZZ-SERIAL-0123";
/// The console's pipe bound.
pub const CONSOLE_PIPE: usize = 64 * 1024;

/// Most console output kept per case (the rest is counted, not kept).
pub const OUTPUT_KEPT: usize = 64 << 20;

/// What the console wrote to its backend.
#[derive(Debug, Default)]
pub struct OutState {
    pub total: u64,
    /// Output since the last [`ConsoleIo::clear_output`], up to [`OUTPUT_KEPT`] bytes.
    pub recent: Vec<u8>,
    pub overflow: bool,
}

struct RecordOut(Arc<Mutex<OutState>>);

impl Write for RecordOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.total += buf.len() as u64;
        if s.recent.len() + buf.len() <= OUTPUT_KEPT {
            s.recent.extend_from_slice(buf);
        } else {
            s.overflow = true;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct ChanIn {
    rx: Receiver<Vec<u8>>,
    pending: Vec<u8>,
    pos: usize,
}

impl Read for ChanIn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.pending.len() {
            match self.rx.recv() {
                Ok(v) => {
                    self.pending = v;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The console's other side.
pub struct ConsoleIo {
    /// Bounded, so input the host never asks for does not pile up in the test.
    pub input: SyncSender<Vec<u8>>,
    pub out: Arc<Mutex<OutState>>,
    /// Input bytes fed so far (the input is the pattern `i % 251`).
    pub fed: u64,
}

impl ConsoleIo {
    fn lock(&self) -> std::sync::MutexGuard<'_, OutState> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes written to the backend so far.
    pub fn total(&self) -> u64 {
        self.lock().total
    }

    /// Forgets the output kept so far (the memory is released).
    pub fn clear_output(&self) {
        let mut s = self.lock();
        s.recent = Vec::new();
        s.overflow = false;
    }

    /// The output since the last clear (`None` if more than was kept).
    pub fn recent(&self) -> Option<Vec<u8>> {
        let s = self.lock();
        (!s.overflow).then(|| s.recent.clone())
    }

    /// Feeds `n` more bytes of the input pattern (unless input is piling up).
    pub fn feed(&mut self, n: usize) {
        let v: Vec<u8> = (self.fed..self.fed + n as u64)
            .map(|i| (i % 251) as u8)
            .collect();
        if self.input.try_send(v).is_ok() {
            self.fed += n as u64;
        }
    }
}

/// The blk image.
pub struct BlkIo {
    pub path: PathBuf,
}

impl BlkIo {
    pub fn image(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap_or_default()
    }
}

impl Drop for BlkIo {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The net device's wire.
pub struct NetIo {
    pub sock: OwnedFd,
    pub counters: Arc<NetCounters>,
    pub mac: [u8; 6],
}

impl NetIo {
    /// Sends `frame` out of the TAP's interface, so the device receives it.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is valid for reads of its length for the duration of the call.
        unsafe {
            libc::send(
                self.sock.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
    }

    /// Chains the transmit path has accounted for (sent, dropped or refused).
    pub fn tx_accounted(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        self.counters
            .pairs
            .iter()
            .map(|p| {
                p.tx_packets.load(Relaxed)
                    + p.tx_malformed.load(Relaxed)
                    + p.tx_oversize.load(Relaxed)
                    + p.tx_errors.load(Relaxed)
            })
            .sum()
    }
}

pub enum Io {
    None,
    Console(ConsoleIo),
    Blk(BlkIo),
    Net(NetIo),
}

/// A device on the loopback rig, with its probed driver.
pub struct DevRig {
    pub rig: Rig,
    pub drv: VirtioPciDriver,
    pub offered: u64,
    pub io: Io,
}

/// VIRTIO_F_RING_PACKED and VIRTIO_F_IN_ORDER, never accepted by the fuzz driver.
pub const NOT_FUZZED: u64 = 1 << 34 | 1 << 35;

fn rig(device: Box<dyn VirtioDevice>) -> (Rig, VirtioPciDriver, u64) {
    let rig = Rig::with_options(LoopbackOptions::default().with_ram_size(RAM_SIZE), device);
    let mut drv = rig.driver();
    drv.set_timeout(Duration::from_secs(10));
    assert!(drv.enable_msix(), "MSI-X");
    // The generator writes split rings and reads one used entry per buffer; packed rings
    // (offered by default) are fuzzed by epf-virtqueue's packed proptest campaign, in-order
    // batches by its `in_order` tests, and both are exercised by the loopback suites.
    let offered = drv.device_features() & !NOT_FUZZED;
    (rig, drv, offered)
}

fn run(cmd: &[&str]) {
    let out = std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

impl DevRig {
    pub fn new(kind: Kind) -> DevRig {
        let (device, io): (Box<dyn VirtioDevice>, Io) = match kind {
            Kind::Rng => (Box::new(RngDevice::new(256)), Io::None),
            Kind::Console => {
                let (tx, rx) = sync_channel(8);
                let out = Arc::new(Mutex::new(OutState::default()));
                let backend = Backend {
                    input: Box::new(ChanIn {
                        rx,
                        pending: Vec::new(),
                        pos: 0,
                    }),
                    output: Box::new(RecordOut(out.clone())),
                };
                let dev = ConsoleDevice::new(backend, CONSOLE_PIPE).expect("console");
                (
                    Box::new(dev),
                    Io::Console(ConsoleIo {
                        input: tx,
                        out,
                        fed: 0,
                    }),
                )
            }
            Kind::Blk => {
                let path =
                    std::env::temp_dir().join(format!("epf-fuzz-blk-{}.img", std::process::id()));
                let image: Vec<u8> = (0..BLK_CAPACITY)
                    .map(|i| (i / 512) as u8 ^ i as u8)
                    .collect();
                std::fs::write(&path, image).expect("blk image");
                let mut opts = BlkOptions::new(&path);
                opts.serial = Some(String::from_utf8(BLK_SERIAL.to_vec()).unwrap());
                opts.threads = 2;
                let dev = BlkDevice::open(&opts).expect("blk device");
                (Box::new(dev), Io::Blk(BlkIo { path }))
            }
            Kind::Net => {
                // The caller runs in a network namespace of its own.
                let tap = "fz0";
                run(&[
                    "ip",
                    "tuntap",
                    "add",
                    "dev",
                    tap,
                    "mode",
                    "tap",
                    "vnet_hdr",
                    "multi_queue",
                ]);
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{tap}/disable_ipv6"), b"1");
                run(&["ip", "link", "set", tap, "up"]);
                let mut opts = NetOptions::new(tap);
                opts.queue_pairs = NET_PAIRS;
                let dev = NetDevice::new(&opts).expect("net device");
                let counters = dev.counters();
                let mac = dev.mac().0;
                (
                    Box::new(dev),
                    Io::Net(NetIo {
                        sock: packet_socket(tap),
                        counters,
                        mac,
                    }),
                )
            }
        };
        let (rig, drv, offered) = rig(device);
        DevRig {
            rig,
            drv,
            offered,
            io,
        }
    }
}

/// A packet socket on `ifname` that only sends.
fn packet_socket(ifname: &str) -> OwnedFd {
    // SAFETY: plain socket(2), checked; protocol 0: the socket receives nothing.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(
        fd >= 0,
        "packet socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(ifindex, 0, "no interface {ifname}");
    // SAFETY: sockaddr_ll is plain old data; all zero is valid.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_ifindex = ifindex as i32;
    // SAFETY: `sa` is a valid sockaddr_ll of the size given.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
    fd
}
