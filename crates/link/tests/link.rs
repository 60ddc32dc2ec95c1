//! The link in-process, driven by two vfio-user clients playing the EP VM's and the host VM's
//! QEMU: the function the EP programs appears to the host with its BARs on EP memory;
//! windows, DMA and interrupts move data and events both ways; hostile register values from
//! the EP side get error codes and touch nothing.

#[path = "../../vfio-user/tests/common/client.rs"]
mod client;

use client::{eventfd, eventfd_count, memfd, Client};
use epf_epc::EndpointController;
use epf_link::regs::*;
use epf_link::{EpHandler, EpPort, Link};
use epf_vfio_user::VfioUserController;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EP_RAM: u64 = 0x10_0000;
const EP_RAM_SIZE: usize = 4 << 20;
const HOST_RAM: u64 = 0x4000_0000;
const HOST_RAM_SIZE: usize = 1 << 20;
const APERTURE: u64 = 1 << 20;
const CONFIG_REGION: u32 = 7;
const MSI_IRQ: u32 = 1;
const MSIX_IRQ: u32 = 2;
const TRIGGER_EVENTFD: u32 = (1 << 2) | (1 << 5);

struct Rig {
    dir: PathBuf,
    _ep_ctl: Arc<VfioUserController>,
    link: Arc<Link>,
    ep: Client,
    ep_ram: OwnedFd,
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("epf-link-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pread(fd: &OwnedFd, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    // SAFETY: reads into a live buffer of `len` bytes.
    let n = unsafe { libc::pread(fd.as_raw_fd(), b.as_mut_ptr().cast(), len, off as i64) };
    assert_eq!(n, len as isize);
    b
}

fn pwrite(fd: &OwnedFd, off: u64, data: &[u8]) {
    // SAFETY: writes from a live buffer.
    let n = unsafe { libc::pwrite(fd.as_raw_fd(), data.as_ptr().cast(), data.len(), off as i64) };
    assert_eq!(n, data.len() as isize);
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Rig {
    fn new(name: &str) -> Rig {
        let dir = scratch(name);
        let ep_ctl = VfioUserController::new(dir.join("ep.sock")).unwrap();
        let link = Link::new(dir.join("host.sock"), APERTURE);
        link.attach_ep(Arc::clone(&ep_ctl) as Arc<dyn EpPort>);
        ep_ctl
            .start(
                Link::controller_spec(APERTURE),
                Arc::new(EpHandler(Arc::clone(&link))),
            )
            .unwrap();
        ep_ctl.spawn().unwrap();
        let mut ep = Client::connect_negotiated(&dir.join("ep.sock"));
        let ep_ram = memfd(EP_RAM_SIZE);
        ep.dma_map(EP_RAM, EP_RAM_SIZE as u64, 0, 3, Some(ep_ram.as_raw_fd()))
            .ok();
        Rig {
            dir,
            _ep_ctl: ep_ctl,
            link,
            ep,
            ep_ram,
        }
    }

    fn w(&mut self, off: u64, v: u32) {
        self.ep.region_write(0, off, &v.to_le_bytes()).ok();
    }

    fn r(&mut self, off: u64) -> u32 {
        let m = self.ep.region_read(0, off, 4).ok();
        m.u32(16)
    }

    fn error(&mut self) -> u32 {
        let e = self.r(ERROR);
        self.w(ERROR, 0);
        e
    }

    fn w64(&mut self, lo: u64, v: u64) {
        self.w(lo, v as u32);
        self.w(lo + 4, (v >> 32) as u32);
    }

    fn bar(&mut self, n: u64, phys: u64, size: u64, flags: u32) -> u32 {
        let b = BAR_BASE + n * BAR_STRIDE;
        self.w(b + BAR_CTRL, 0);
        self.w64(b + BAR_PHYS_LO, phys);
        self.w64(b + BAR_SIZE_LO, size);
        self.w(b + BAR_FLAGS, flags);
        self.w(b + BAR_CTRL, 1);
        self.error()
    }

    fn window(&mut self, w: u64, ap: u64, size: u64, pci: u64) -> u32 {
        let b = WIN_BASE + w * WIN_STRIDE;
        self.w(b + WIN_CTRL, 0);
        self.w64(b + WIN_AP_LO, ap);
        self.w64(b + WIN_SIZE_LO, size);
        self.w64(b + WIN_PCI_LO, pci);
        self.w(b + WIN_CTRL, 1);
        self.error()
    }

    fn dma(&mut self, c: u64, src: u64, dst: u64, len: u32, ctrl: u32) -> u32 {
        let b = DMA_BASE + c * DMA_STRIDE;
        self.w64(b + DMA_SRC_LO, src);
        self.w64(b + DMA_DST_LO, dst);
        self.w(b + DMA_LEN, len);
        self.w(b + DMA_CTRL, ctrl | DMA_START);
        self.r(b + DMA_STATUS)
    }

    /// Programs a function as pci-epf-test would: header, MSI, MSI-X in BAR 0 after the
    /// registers, BAR 0 (512 bytes) and BAR 1 (16 KiB) in EP RAM, then starts it.
    fn start_function(&mut self) {
        self.start_function_keeping_error();
        assert_eq!(self.error(), 0);
        let sock = self.dir.join("host.sock");
        wait_for("the host socket", || sock.exists());
    }

    /// Like `start_function`, leaving the result in `ERROR`.
    fn start_function_keeping_error(&mut self) {
        self.w(HDR_ID, 0xedda_16c3);
        self.w(HDR_CLASS_REV, 0xff00_0000);
        self.w(HDR_INTX, 1);
        self.w(MSI_VECTORS, 4);
        self.w(MSIX_VECTORS, 8);
        self.w(MSIX_TABLE, 128);
        self.w(MSIX_PBA, 256);
        assert_eq!(self.bar(0, EP_RAM, 512, 0), 0);
        assert_eq!(self.bar(1, EP_RAM + 0x4000, 0x4000, 0), 0);
        self.w(LINK_CTRL, LINK_START);
    }

    fn host(&self) -> Client {
        Client::connect_negotiated(&self.dir.join("host.sock"))
    }
}

fn config_u32(host: &mut Client, off: u64) -> u32 {
    host.region_read(CONFIG_REGION, off, 4).ok().u32(16)
}

/// Maps the first sparse area of a BAR region the way QEMU does, from the descriptor the
/// server sent; returns (pointer, length).
fn map_bar(host: &mut Client, bar: u32) -> (*mut u8, usize) {
    let info = host.region_info_full(bar);
    assert_eq!(info.fds.len(), 1, "BAR {bar} comes with a descriptor");
    let fd_offset = info.u64(24);
    let cap = info.u32(12) as usize;
    assert!(cap >= 32, "a sparse mmap capability");
    assert!(info.u32(cap + 8) >= 1);
    let area_off = info.u64(cap + 16);
    let area_len = info.u64(cap + 24) as usize;
    // SAFETY: a fresh shared mapping of the descriptor the server sent.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            area_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            info.fds[0].as_raw_fd(),
            (fd_offset + area_off) as i64,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    (p.cast(), area_len)
}

#[test]
fn the_host_sees_the_function_with_its_bars_on_ep_memory() {
    let mut rig = Rig::new("bars");
    assert_eq!(rig.r(MAGIC), MAGIC_VALUE);
    rig.start_function();
    let mut host = rig.host();
    wait_for("host attached", || {
        rig.link.report(None).contains("link.events 1")
    });
    assert_eq!(config_u32(&mut host, 0), 0xedda_16c3);
    assert_eq!(config_u32(&mut host, 8) >> 8, 0xff0000);
    // BAR 1 is plain memory: mapped from the EP VM's RAM descriptor, no trap.
    let (p, len) = map_bar(&mut host, 1);
    assert_eq!(len, 0x4000);
    // SAFETY: `p` maps `len` bytes.
    unsafe {
        std::ptr::write_volatile(p, 0x5a);
        std::ptr::write_volatile(p.add(0x3fff), 0xa5);
    }
    assert_eq!(pread(&rig.ep_ram, 0x4000, 1), [0x5a]);
    assert_eq!(pread(&rig.ep_ram, 0x7fff, 1), [0xa5]);
    pwrite(&rig.ep_ram, 0x5000, b"from the EP");
    // SAFETY: in bounds of the mapping.
    let seen = unsafe { std::slice::from_raw_parts(p.add(0x1000), 11) };
    assert_eq!(seen, b"from the EP");
    // BAR 0 shares its page with the MSI-X table: trapped, forwarded to EP memory.
    host.region_write(0, 0x10, &0xdead_beefu32.to_le_bytes())
        .ok();
    assert_eq!(pread(&rig.ep_ram, 0x10, 4), 0xdead_beefu32.to_le_bytes());
    assert_eq!(host.region_read(0, 0x10, 4).ok().u32(16), 0xdead_beef);
    let hs = rig.link.host_stats().unwrap();
    assert_eq!(
        hs.memory_accesses, 0,
        "no plain BAR memory access was trapped"
    );
    assert!(rig.link.report(None).contains("link.host_forwarded 2"));

    // Stopped: the host finds no function; started again with the same layout: back.
    rig.w(LINK_CTRL, 0);
    assert_eq!(config_u32(&mut host, 0), 0xffff_ffff);
    assert_eq!(host.region_read(0, 0x10, 4).ok().u32(16), 0xffff_ffff);
    rig.w(LINK_CTRL, LINK_START);
    assert_eq!(config_u32(&mut host, 0), 0xedda_16c3);
    // A different layout while that host is attached is refused.
    rig.w(LINK_CTRL, 0);
    assert_eq!(rig.bar(2, EP_RAM + 0x8000, 0x1000, 0), 0);
    rig.w(LINK_CTRL, LINK_START);
    assert_eq!(rig.error(), ErrorCode::Busy as u32);
    assert_eq!(rig.r(LINK_CTRL), 0);
    rig.w(BAR_BASE + 2 * BAR_STRIDE + BAR_CTRL, 0);
    rig.w(LINK_CTRL, LINK_START);
    assert_eq!(rig.error(), 0);

    // Bus master enable and the host going away reach the EP as events.
    rig.w(EVENT_STATUS, !0);
    host.region_write(CONFIG_REGION, 4, &[0x06, 0]).ok();
    assert_ne!(rig.r(EVENT_STATUS) & EV_BME, 0);
    assert_ne!(rig.r(LINK_STATUS) & STATUS_BME, 0);
    assert_ne!(rig.r(LINK_STATUS) & STATUS_LINK_UP, 0);
    drop(host);
    wait_for("link down", || {
        rig.link.report(None).contains("host.clients 1")
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.r(EVENT_STATUS) & EV_LINK_DOWN == 0 {
        assert!(Instant::now() < deadline, "no LINK_DOWN event");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(rig.r(LINK_STATUS) & STATUS_HOST_ATTACHED, 0);
    // The next host gets the same function.
    let mut host = rig.host();
    assert_eq!(config_u32(&mut host, 0), 0xedda_16c3);
}

#[test]
fn windows_dma_and_interrupts_move_data_and_events() {
    let mut rig = Rig::new("data");
    // The EP driver's own interrupts: events, DMA, doorbells.
    let fds: Vec<(OwnedFd, OwnedFd)> = (0..EP_VECTORS).map(|_| eventfd()).collect();
    let raw: Vec<i32> = fds.iter().map(|(f, _)| f.as_raw_fd()).collect();
    rig.ep
        .set_irqs(TRIGGER_EVENTFD, MSIX_IRQ, 0, 3, &[], &raw)
        .ok();
    rig.w(EVENT_MASK, !0);
    rig.start_function();
    let mut host = rig.host();
    let host_ram = memfd(HOST_RAM_SIZE);
    host.dma_map(
        HOST_RAM,
        HOST_RAM_SIZE as u64,
        0,
        3,
        Some(host_ram.as_raw_fd()),
    )
    .ok();
    wait_for("link up", || eventfd_count(&fds[0].1) > 0);

    // Outbound window at an unaligned host address.
    assert_eq!(rig.window(0, 0x2000, 0x1000, HOST_RAM + 0x10), 0);
    rig.ep.region_write(2, 0x2000 + 6, b"through a window").ok();
    assert_eq!(pread(&host_ram, 0x16, 16), b"through a window");
    let m = rig.ep.region_read(2, 0x2000 + 6, 16).ok();
    assert_eq!(&m.body[16..32], b"through a window");
    // Outside every window: all-ones, writes dropped.
    let m = rig.ep.region_read(2, 0x8000, 8).ok();
    assert_eq!(&m.body[16..24], &[0xff; 8]);
    rig.ep.region_write(2, 0x3000, b"lost").ok();
    assert!(rig.link.report(None).contains("link.aperture_unmapped 2"));

    // DMA EP -> host and host -> EP.
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    pwrite(&rig.ep_ram, 0x10_0000, &pattern);
    let st = rig.dma(
        0,
        EP_RAM + 0x10_0000,
        HOST_RAM + 0x1_0001,
        8192,
        DMA_DST_HOST,
    );
    assert_eq!(st, DMA_DONE);
    assert_eq!(pread(&host_ram, 0x1_0001, 8192), pattern);
    assert!(eventfd_count(&fds[VEC_DMA as usize].1) > 0);
    assert_ne!(rig.r(EVENT_STATUS) & ev_dma(0), 0);
    let st = rig.dma(
        1,
        HOST_RAM + 0x1_0001,
        EP_RAM + 0x20_0000,
        8192,
        DMA_SRC_HOST,
    );
    assert_eq!(st, DMA_DONE);
    assert_eq!(pread(&rig.ep_ram, 0x20_0000, 8192), pattern);
    // Memory-to-memory through the aperture (as a DMA_MEMCPY channel would).
    rig.w64(APERTURE_BASE_LO, 0xe000_0000);
    let st = rig.dma(0, EP_RAM + 0x10_0000, 0xe000_2000 + 0x100, 64, 0);
    assert_eq!(st, DMA_DONE);
    assert_eq!(pread(&host_ram, 0x110, 64), &pattern[..64]);

    // Interrupts to the host: MSI with the vectors the host enabled.
    let msi: Vec<(OwnedFd, OwnedFd)> = (0..4).map(|_| eventfd()).collect();
    let raw: Vec<i32> = msi.iter().map(|(f, _)| f.as_raw_fd()).collect();
    host.set_irqs(TRIGGER_EVENTFD, MSI_IRQ, 0, 4, &[], &raw)
        .ok();
    assert_eq!(rig.r(MSI_ENABLED), 4);
    rig.w(IRQ_RAISE, IRQ_MSI << 16 | 3);
    assert_eq!(rig.r(IRQ_RESULT), 0);
    assert_eq!(eventfd_count(&msi[2].1), 1);
    rig.w(IRQ_RAISE, IRQ_MSI << 16 | 5);
    assert_eq!(rig.r(IRQ_RESULT), 11, "vector 5 was not enabled");
    rig.w(IRQ_RAISE, IRQ_MSIX << 16 | 1);
    assert_eq!(rig.r(IRQ_RESULT), 11, "MSI-X is not enabled");
    let (x, x_reader) = eventfd();
    host.set_irqs(TRIGGER_EVENTFD, MSIX_IRQ, 0, 1, &[], &[x.as_raw_fd()])
        .ok();
    assert_eq!(rig.r(MSIX_ENABLED), 8);
    rig.w(IRQ_RAISE, IRQ_MSIX << 16 | 1);
    assert_eq!(rig.r(IRQ_RESULT), 0);
    assert_eq!(eventfd_count(&x_reader), 1);
    // Stopped: nothing reaches the host.
    rig.w(LINK_CTRL, 0);
    rig.w(IRQ_RAISE, IRQ_MSI << 16 | 1);
    assert_eq!(rig.r(IRQ_RESULT), 19);
    assert_eq!(eventfd_count(&msi[0].1), 0);
    drop(host);
}

#[test]
fn a_doorbell_write_lands_in_memory_and_interrupts_the_ep() {
    let mut rig = Rig::new("doorbell");
    let (db, db_reader) = eventfd();
    let (e0, _e0r) = eventfd();
    let (e1, _e1r) = eventfd();
    rig.ep
        .set_irqs(
            TRIGGER_EVENTFD,
            MSIX_IRQ,
            0,
            3,
            &[],
            &[e0.as_raw_fd(), e1.as_raw_fd(), db.as_raw_fd()],
        )
        .ok();
    rig.w(EVENT_MASK, EV_DOORBELL);
    // The doorbell must sit in an enabled BAR.
    rig.w(DB_BASE + DB_BAR, 3);
    rig.w(DB_BASE + DB_OFFSET, 0x1004);
    rig.w(DB_BASE + DB_CTRL, 1);
    assert_eq!(rig.error(), ErrorCode::BadDoorbell as u32);
    assert_eq!(rig.bar(3, EP_RAM + 0x10000, 0x2000, 0), 0);
    rig.w(DB_BASE + DB_OFFSET, 0x1006);
    rig.w(DB_BASE + DB_CTRL, 1);
    assert_eq!(rig.error(), ErrorCode::BadDoorbell as u32, "unaligned");
    rig.w(DB_BASE + DB_OFFSET, 0x1004);
    rig.w(DB_BASE + DB_CTRL, 1);
    assert_eq!(rig.error(), 0);
    rig.start_function();
    let mut host = rig.host();
    // The doorbell's page is trapped, the other page of BAR 3 is mapped.
    let info = host.region_info_full(3);
    let cap = info.u32(12) as usize;
    assert_eq!(info.u32(cap + 8), 1);
    assert_eq!((info.u64(cap + 16), info.u64(cap + 24)), (0, 0x1000));
    host.region_write(3, 0x1004, &0x1234_5678u32.to_le_bytes())
        .ok();
    assert_eq!(rig.r(DB_BASE + DB_DATA), 0x1234_5678);
    assert_eq!(rig.r(DOORBELL_PENDING), 1);
    assert_eq!(eventfd_count(&db_reader), 1);
    assert_eq!(pread(&rig.ep_ram, 0x11004, 4), 0x1234_5678u32.to_le_bytes());
    // Other bytes of the page are memory, not doorbells.
    host.region_write(3, 0x1100, &[1, 2, 3, 4]).ok();
    assert_eq!(pread(&rig.ep_ram, 0x11100, 4), [1, 2, 3, 4]);
    assert_eq!(rig.r(DOORBELL_PENDING), 1);
    rig.w(DOORBELL_PENDING, 1);
    assert_eq!(rig.r(DOORBELL_PENDING), 0);
    // Doorbells are fixed while a host sees them.
    rig.w(DB_BASE + DB_STRIDE + DB_CTRL, 1);
    assert_eq!(rig.error(), ErrorCode::Busy as u32);
}

#[test]
fn hostile_register_values_get_errors_and_touch_nothing() {
    let mut rig = Rig::new("hostile");
    // BARs: I/O space, bad sizes, 64-bit at BAR 5, outside EP RAM, overflowing, unaligned.
    assert_eq!(rig.bar(0, EP_RAM, 4096, 1), ErrorCode::BadBar as u32);
    assert_eq!(rig.bar(0, EP_RAM, 3000, 0), ErrorCode::BadBar as u32);
    assert_eq!(rig.bar(0, EP_RAM, 64, 0), ErrorCode::BadBar as u32);
    assert_eq!(rig.bar(0, EP_RAM, 1 << 40, 4), ErrorCode::BadBar as u32);
    assert_eq!(rig.bar(5, EP_RAM, 4096, 4), ErrorCode::BadBar as u32);
    assert_eq!(rig.bar(0, 0x9000_0000, 4096, 0), ErrorCode::NotEpRam as u32);
    assert_eq!(
        rig.bar(0, EP_RAM + EP_RAM_SIZE as u64 - 0x1000, 0x2000, 0),
        ErrorCode::NotEpRam as u32
    );
    assert_eq!(rig.bar(0, !0xfff, 4096, 4), ErrorCode::BadBar as u32);
    assert_eq!(
        rig.bar(0, EP_RAM + 0x800, 4096, 0),
        ErrorCode::BadBar as u32
    );
    assert_eq!(rig.r(BAR_BASE + BAR_CTRL), 0);
    // A 64-bit BAR takes its upper neighbour; enabling that one too is refused.
    assert_eq!(rig.bar(2, EP_RAM, 4096, 4), 0);
    assert_eq!(
        rig.bar(3, EP_RAM + 0x1000, 4096, 0),
        ErrorCode::BadBar as u32
    );
    // Fields of an enabled BAR cannot change under it.
    rig.w(BAR_BASE + 2 * BAR_STRIDE + BAR_PHYS_LO, 0);
    assert_eq!(rig.error(), ErrorCode::Busy as u32);
    // Windows: beyond the aperture, empty, unaligned, overlapping, wrapping.
    assert_eq!(
        rig.window(0, APERTURE - 0x1000, 0x2000, 0),
        ErrorCode::BadWindow as u32
    );
    assert_eq!(rig.window(0, 0, 0, 0), ErrorCode::BadWindow as u32);
    assert_eq!(rig.window(0, 0x10, 0x1000, 0), ErrorCode::BadWindow as u32);
    assert_eq!(
        rig.window(0, 0, 0x2000, u64::MAX - 0x10),
        ErrorCode::BadWindow as u32
    );
    assert_eq!(rig.window(0, 0, 0x2000, HOST_RAM), 0);
    assert_eq!(
        rig.window(1, 0x1000, 0x1000, HOST_RAM),
        ErrorCode::BadWindow as u32
    );
    // A window to host memory that no host mapped: all-ones, nothing written.
    let m = rig.ep.region_read(2, 0x10, 4).ok();
    assert_eq!(m.u32(16), 0xffff_ffff);
    // DMA: zero or huge length, unmapped or partly mapped memory: error, nothing written.
    assert_eq!(rig.dma(0, EP_RAM, EP_RAM + 0x1000, 0, 0) & 0xff, DMA_FAILED);
    assert_eq!(
        rig.dma(0, EP_RAM, EP_RAM + 0x1000, MAX_DMA_LEN + 1, 0) & 0xff,
        DMA_FAILED
    );
    pwrite(&rig.ep_ram, 0x1000, &[0x11; 64]);
    pwrite(&rig.ep_ram, EP_RAM_SIZE as u64 - 32, &[0x22; 32]);
    let st = rig.dma(0, EP_RAM + 0x1000, EP_RAM + EP_RAM_SIZE as u64 - 32, 64, 0);
    assert_eq!(st, DMA_FAILED | (ErrorCode::BadDma as u32) << 8);
    assert_eq!(pread(&rig.ep_ram, EP_RAM_SIZE as u64 - 32, 32), [0x22; 32]);
    let st = rig.dma(1, 0x9000_0000, EP_RAM + 0x1000, 64, 0);
    assert_eq!(st & 0xff, DMA_FAILED);
    assert_eq!(pread(&rig.ep_ram, 0x1000, 64), [0x11; 64]);
    assert_eq!(
        rig.dma(1, HOST_RAM, EP_RAM, 64, DMA_SRC_HOST) & 0xff,
        DMA_FAILED
    );
    // Interrupts with no host, bad types and numbers.
    rig.w(IRQ_RAISE, IRQ_MSI << 16 | 1);
    assert_eq!(rig.r(IRQ_RESULT), 19);
    rig.w(IRQ_RAISE, 9 << 16 | 1);
    assert_eq!(rig.r(IRQ_RESULT), 22);
    assert_eq!(rig.error(), ErrorCode::BadIrq as u32);
    rig.w(IRQ_RAISE, IRQ_MSI << 16);
    assert_eq!(rig.r(IRQ_RESULT), 22);
    // Header values no host could use: starting is refused.
    rig.w(BAR_BASE + 2 * BAR_STRIDE + BAR_CTRL, 0);
    rig.w(HDR_ID, 0xffff_ffff);
    rig.w(LINK_CTRL, LINK_START);
    assert_eq!(rig.error(), ErrorCode::BadHeader as u32);
    rig.w(HDR_ID, 0x0001_1af4);
    rig.w(MSIX_VECTORS, 4);
    rig.w(MSIX_TABLE, 5);
    rig.w(LINK_CTRL, LINK_START);
    assert_eq!(rig.error(), ErrorCode::BadHeader as u32);
    assert_eq!(rig.r(LINK_CTRL), 0);
    assert!(!rig.dir.join("host.sock").exists());
    // Odd-sized and unknown register accesses are ignored.
    rig.ep.region_write(0, 0x31, &[1]).ok();
    rig.ep.region_write(0, 0xffc, &[1, 0, 0, 0]).ok();
    assert_eq!(rig.r(LINK_CTRL), 0);
    assert_eq!(rig.r(0xffc), 0);
    let rejected = rig.r(ERROR_COUNT);
    assert!(rejected >= 25, "{rejected} rejected writes counted");
    // Still a working controller after all that.
    rig.w(MSIX_VECTORS, 0);
    rig.start_function();
    let mut host = rig.host();
    assert_eq!(config_u32(&mut host, 0), 0xedda_16c3);
}

#[test]
fn an_ep_reset_stops_the_function_and_forgets_its_programming() {
    let mut rig = Rig::new("reset");
    rig.start_function();
    let mut host = rig.host();
    assert_eq!(config_u32(&mut host, 0), 0xedda_16c3);
    // The EP VM resets the controller (DEVICE_RESET from its QEMU).
    let m = rig.ep.request(client::DEVICE_RESET, &[], &[]);
    assert!(!m.is_error());
    assert_eq!(rig.r(LINK_CTRL), 0);
    assert_eq!(rig.r(BAR_BASE + BAR_CTRL), 0);
    assert_eq!(config_u32(&mut host, 0), 0xffff_ffff);
    assert!(Path::new(&rig.dir.join("host.sock")).exists());
    // The host's BAR mappings may belong to an EP that is gone: the same layout is not shown
    // to that host again; it must go, and the next host gets a fresh device.
    rig.w(EVENT_STATUS, !0);
    rig.start_function_keeping_error();
    assert_eq!(rig.error(), ErrorCode::Busy as u32);
    drop(host);
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.r(LINK_STATUS) & STATUS_HOST_ATTACHED != 0 {
        assert!(Instant::now() < deadline, "the host did not go");
        std::thread::sleep(Duration::from_millis(5));
    }
    // A new EP VM (new connection, new RAM) programs the function again.
    rig.ep.sock.shutdown(std::net::Shutdown::Both).unwrap();
    rig.ep = Client::connect_negotiated(&rig.dir.join("ep.sock"));
    rig.ep_ram = memfd(EP_RAM_SIZE);
    rig.ep
        .dma_map(
            EP_RAM,
            EP_RAM_SIZE as u64,
            0,
            3,
            Some(rig.ep_ram.as_raw_fd()),
        )
        .ok();
    rig.start_function();
    let mut host = rig.host();
    assert_eq!(config_u32(&mut host, 0), 0xedda_16c3);
    let (p, _) = map_bar(&mut host, 1);
    // SAFETY: `p` maps the 16 KiB BAR.
    unsafe { std::ptr::write_volatile(p, 0x77) };
    assert_eq!(pread(&rig.ep_ram, 0x4000, 1), [0x77], "the new EP's memory");
    assert!(rig.link.report(None).contains("link.host_layouts 2"));
}
