//! The polled legacy function end to end on the loopback controller: a host that writes the
//! legacy register page as plain memory (Linux's legacy sequence, as `virtio_pci_legacy.c`
//! performs it), the real console device, and no trapped access at all. Checks what only the
//! function's poller does: it sets the queues up from memory, and it finds buffers whose
//! notification it never saw (QUEUE_NOTIFY writes merge) by looking at the rings when the
//! host is idle.

mod common;

use common::*;
use epf_devices::console::DEFAULT_PIPE_BYTES;
use epf_devices::ConsoleDevice;
use epf_epc::EndpointController;
use epf_loopback::{HostBus, LoopbackController};
use epf_virtio_pci::legacy_layout::*;
use epf_virtio_pci::{FunctionOptions, IrqMode, Layout, NotifyMode, RegisterAccess};
use epf_virtio_pci::{VirtioPciFunction, NO_VECTOR};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
/// Between the host's register accesses: far above the poller's reaction time, so the setup
/// is deterministic here (the races themselves are the subject of legacy_poll_race.rs).
const GAP: Duration = Duration::from_millis(2);
const DESC_F_WRITE: u16 = 2;

/// One legacy split ring in host RAM, driven by hand.
struct LegacyRing {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    next: u16,
}

impl LegacyRing {
    fn new(bus: &HostBus, size: u16) -> LegacyRing {
        let desc = bus.alloc(4 * 4096 + 16 * size as u64, 4096).unwrap();
        let avail = desc + 16 * size as u64;
        let used = (avail + 6 + 2 * size as u64).div_ceil(4096) * 4096;
        LegacyRing {
            size,
            desc,
            avail,
            used,
            next: 0,
        }
    }

    fn pfn(&self) -> u32 {
        u32::try_from(self.desc >> 12).unwrap()
    }

    /// Makes one buffer available (without notifying).
    fn add(&mut self, bus: &HostBus, addr: u64, len: u32, device_writes: bool) {
        let i = self.next % self.size;
        let d = self.desc + 16 * i as u64;
        bus.ram_write_u64(d, addr).unwrap();
        bus.ram_write_u32(d + 8, len).unwrap();
        let flags = if device_writes { DESC_F_WRITE } else { 0 };
        bus.ram_write_u16(d + 12, flags).unwrap();
        bus.ram_write_u16(d + 14, 0).unwrap();
        bus.ram_write_u16(self.avail + 4 + 2 * i as u64, i).unwrap();
        self.next = self.next.wrapping_add(1);
        bus.ram_write_u16(self.avail + 2, self.next).unwrap();
    }

    fn used_idx(&self, bus: &HostBus) -> u16 {
        bus.ram_read_u16(self.used + 2).unwrap()
    }
}

/// Linux's legacy probe (virtio_pci_legacy.c) on the memory register page, with MSI-X.
fn legacy_probe(bus: &HostBus, queues: u16) -> Vec<LegacyRing> {
    let w8 = |o: u64, v: u8| {
        std::thread::sleep(GAP);
        bus.bar_write8(0, o, v);
    };
    let w16 = |o: u64, v: u16| {
        std::thread::sleep(GAP);
        bus.bar_write16(0, o, v);
    };
    let r16 = |o: u64| {
        std::thread::sleep(GAP);
        bus.bar_read16(0, o)
    };
    assert!(bus.enable_msix(true));
    w8(STATUS, 0);
    w8(STATUS, 1);
    w8(STATUS, 3);
    let features = bus.bar_read32(0, HOST_FEATURES);
    std::thread::sleep(GAP);
    bus.bar_write32(0, GUEST_FEATURES, features & (1 << 1)); // VIRTIO_CONSOLE_F_MULTIPORT off
    w16(MSI_CONFIG_VECTOR, 0);
    assert_eq!(r16(MSI_CONFIG_VECTOR), 0);
    let mut rings = Vec::new();
    for k in 0..queues {
        w16(QUEUE_SEL, k);
        let size = r16(QUEUE_NUM);
        assert!(size > 0);
        w16(QUEUE_SEL, k);
        std::thread::sleep(GAP);
        assert_eq!(bus.bar_read32(0, QUEUE_PFN), 0, "queue {k} already active");
        let ring = LegacyRing::new(bus, size);
        w16(QUEUE_SEL, k);
        std::thread::sleep(GAP);
        bus.bar_write32(0, QUEUE_PFN, ring.pfn());
        w16(QUEUE_SEL, k);
        w16(MSI_QUEUE_VECTOR, k + 1);
        assert_ne!(r16(MSI_QUEUE_VECTOR), NO_VECTOR);
        rings.push(ring);
    }
    w8(STATUS, 7);
    rings
}

#[test]
fn polled_registers_set_up_queues_and_an_unseen_notification_is_recovered() {
    bounded(LIMIT, || {
        let c = Arc::new(LoopbackController::new(Default::default()).unwrap());
        let epc: Arc<dyn EndpointController> = c.clone();
        let (backend, ends) = chan_backend(Stall::default());
        let device = Box::new(ConsoleDevice::new(backend, DEFAULT_PIPE_BYTES).unwrap());
        let options = FunctionOptions {
            layout: Layout::Legacy,
            registers: RegisterAccess::Poll,
            notify: NotifyMode::Poll,
            irq: IrqMode::Msix,
            ..FunctionOptions::default()
        };
        let f = VirtioPciFunction::start_with(epc, device, options).unwrap();
        let bus = c.host();
        let mut rings = legacy_probe(&bus, 2);
        assert!(
            wait_until(Duration::from_secs(5), || f
                .stats()
                .activations
                .load(Ordering::Relaxed)
                == 1),
            "the polled setup never activated the device"
        );

        // A transmit buffer on queue 1 whose notification never reached the endpoint (two
        // host writes to QUEUE_NOTIFY between two poll passes leave only the last one): no
        // notification at all here, so only the poller's look at the rings can find it.
        let buf = bus.alloc(4096, 4096).unwrap();
        bus.ram_write(buf, b"merged away").unwrap();
        rings[1].add(&bus, buf, 11, false);
        let got = ends
            .output
            .recv_timeout(Duration::from_secs(5))
            .expect("the transmit buffer whose notification was lost never went out");
        assert_eq!(got, b"merged away");
        assert!(wait_until(Duration::from_secs(5), || rings[1]
            .used_idx(&bus)
            == 1));

        // Receive still works: backend input lands in a host buffer on queue 0.
        let rx = bus.alloc(4096, 4096).unwrap();
        rings[0].add(&bus, rx, 4096, true);
        bus.bar_write16(0, QUEUE_NOTIFY, 0);
        ends.input.send(b"hello host".to_vec()).unwrap();
        assert!(wait_until(Duration::from_secs(5), || rings[0]
            .used_idx(&bus)
            == 1));
        let mut b = [0u8; 10];
        bus.ram_read(rx, &mut b).unwrap();
        assert_eq!(&b, b"hello host");

        // Not a single trapped register access, and nothing outside host RAM.
        let st = f.stats();
        let trapped = (
            st.bar_reads.load(Ordering::Relaxed),
            st.bar_writes.load(Ordering::Relaxed),
        );
        assert_eq!(trapped, (0, 0), "trapped register accesses in poll mode");
        assert_eq!(c.oob_attempts(), 0);
        f.stop();
    });
}
