//! Tests of the loopback controller: spec validation against advertised features, config
//! and BAR dispatch by area kind, MSI-X/INTx semantics, host-memory bounds, reset.

// Capability ranges are naturally one-element vectors of ranges.
#![allow(clippy::single_range_in_vec_init)]

use epf_epc::{
    AreaKind, BarArea, BarSpec, Capability, EndpointController, EpcError, FunctionHandler,
    FunctionSpec, HostMemError, Irq, MsixSpec, PciHeader, PCI_CAP_ID_MSIX, PCI_CAP_ID_VNDR,
};
use epf_loopback::{LoopbackController, LoopbackOptions, DEFAULT_RAM_BASE};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    BarRead(u8, u64, usize),
    BarWrite(u8, u64, Vec<u8>),
    ConfigRead(usize, usize),
    ConfigWrite(usize, Vec<u8>),
    LinkReset,
    IrqsChanged,
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
    irqs_changed: AtomicUsize,
}

impl Recorder {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

impl FunctionHandler for Recorder {
    fn bar_read(&self, bar: u8, offset: u64, data: &mut [u8]) {
        assert!(data.iter().all(|&b| b == 0), "data must be pre-zeroed");
        self.events
            .lock()
            .unwrap()
            .push(Event::BarRead(bar, offset, data.len()));
        // Answer with a recognizable pattern: low byte of offset + index.
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset as u8).wrapping_add(i as u8) | 0x80;
        }
    }

    fn bar_write(&self, bar: u8, offset: u64, data: &[u8]) {
        self.events
            .lock()
            .unwrap()
            .push(Event::BarWrite(bar, offset, data.to_vec()));
    }

    fn config_read(&self, offset: usize, data: &mut [u8]) {
        self.events
            .lock()
            .unwrap()
            .push(Event::ConfigRead(offset, data.len()));
        data.fill(0x5a);
    }

    fn config_write(&self, offset: usize, data: &[u8]) {
        self.events
            .lock()
            .unwrap()
            .push(Event::ConfigWrite(offset, data.to_vec()));
    }

    fn link_reset(&self) {
        self.events.lock().unwrap().push(Event::LinkReset);
    }

    fn irqs_changed(&self) {
        self.irqs_changed.fetch_add(1, Ordering::SeqCst);
        self.events.lock().unwrap().push(Event::IrqsChanged);
    }
}

const VECTORS: u16 = 8;
const TRAPPED: u64 = 0x0;
const DOORBELL: u64 = 0x1000;
const MEMORY: u64 = 0x2000;
const TABLE: u64 = 0x3000;
const PBA: u64 = 0x3800;
const BAR0_SIZE: u64 = 0x4000;

fn bar0() -> BarSpec {
    BarSpec {
        size: BAR0_SIZE,
        is_64bit: false,
        prefetchable: false,
        areas: vec![
            BarArea {
                offset: TRAPPED,
                size: 0x100,
                kind: AreaKind::Trapped,
            },
            BarArea {
                offset: DOORBELL,
                size: 0x10,
                kind: AreaKind::Doorbell,
            },
            BarArea {
                offset: MEMORY,
                size: 0x1000,
                kind: AreaKind::Memory,
            },
            BarArea {
                offset: TABLE,
                size: 0x100,
                kind: AreaKind::MsixTable,
            },
            BarArea {
                offset: PBA,
                size: 0x8,
                kind: AreaKind::MsixPba,
            },
        ],
    }
}

/// A vendor capability with 12 body bytes; bytes 4..8 writable, 8..12 trapped.
fn vendor_cap() -> Capability {
    Capability {
        id: PCI_CAP_ID_VNDR,
        body: vec![14, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        writable: vec![4..8],
        trapped: vec![8..12],
    }
}

fn spec() -> FunctionSpec {
    FunctionSpec {
        header: PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1041,
            revision_id: 1,
            class_code: 0x02_00_00,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x40,
            interrupt_pin: 1,
        },
        capabilities: vec![vendor_cap()],
        bars: [Some(bar0()), None, None, None, None, None],
        msix: Some(MsixSpec {
            vectors: VECTORS,
            table_bar: 0,
            table_offset: TABLE,
            pba_bar: 0,
            pba_offset: PBA,
        }),
    }
}

fn started() -> (LoopbackController, Arc<Recorder>) {
    let c = LoopbackController::with_defaults().unwrap();
    let r = Arc::new(Recorder::default());
    c.start(spec(), r.clone()).unwrap();
    (c, r)
}

fn cap_offset(c: &LoopbackController, id: u8) -> usize {
    let h = c.host();
    let mut pos = h.config_read8(0x34) as usize;
    for _ in 0..48 {
        assert!(pos >= 0x40, "capability {id:#x} not found");
        if h.config_read8(pos) == id {
            return pos;
        }
        pos = h.config_read8(pos + 1) as usize;
    }
    panic!("capability loop");
}

// ---- start() validation ----------------------------------------------------------------------

#[test]
fn start_refuses_what_the_controller_cannot_do() {
    let mut f = LoopbackOptions::full_features();
    f.vendor_capabilities = false;
    let c = LoopbackController::new(LoopbackOptions::default().with_features(f)).unwrap();
    let err = c.start(spec(), Arc::new(Recorder::default())).unwrap_err();
    assert!(matches!(err, EpcError::Unsupported(_)), "{err:?}");
    assert!(!c.is_started());
    // Without vendor capabilities the same function starts.
    let mut s = spec();
    s.capabilities.clear();
    c.start(s, Arc::new(Recorder::default())).unwrap();

    let mut f = LoopbackOptions::full_features();
    f.trapped_access = false;
    let c = LoopbackController::new(LoopbackOptions::default().with_features(f)).unwrap();
    let mut s = spec();
    s.capabilities.clear();
    let err = c.start(s, Arc::new(Recorder::default())).unwrap_err();
    assert_eq!(err, EpcError::Unsupported("trapped BAR areas"));

    let mut f = LoopbackOptions::full_features();
    f.doorbells = false;
    let c = LoopbackController::new(LoopbackOptions::default().with_features(f)).unwrap();
    assert!(matches!(
        c.start(spec(), Arc::new(Recorder::default())),
        Err(EpcError::Unsupported(_))
    ));

    let mut f = LoopbackOptions::full_features();
    f.irq.msix_vectors = 4;
    let c = LoopbackController::new(LoopbackOptions::default().with_features(f)).unwrap();
    assert!(matches!(
        c.start(spec(), Arc::new(Recorder::default())),
        Err(EpcError::Unsupported(_))
    ));

    let mut f = LoopbackOptions::full_features();
    f.irq.intx = false;
    let c = LoopbackController::new(LoopbackOptions::default().with_features(f)).unwrap();
    assert_eq!(
        c.start(spec(), Arc::new(Recorder::default())),
        Err(EpcError::Unsupported("INTx"))
    );
}

#[test]
fn start_rejects_malformed_specs() {
    let check = |s: FunctionSpec| {
        let c = LoopbackController::with_defaults().unwrap();
        let e = c.start(s, Arc::new(Recorder::default())).unwrap_err();
        assert!(matches!(e, EpcError::Invalid(_)), "{e:?}");
    };
    // BAR not a power of two.
    let mut s = spec();
    s.bars[0].as_mut().unwrap().size = 0x3000;
    check(s);
    // Overlapping areas.
    let mut s = spec();
    s.bars[0].as_mut().unwrap().areas[1].offset = 0x80;
    check(s);
    // MSI-X table not inside an MsixTable area.
    let mut s = spec();
    s.msix.as_mut().unwrap().table_offset = MEMORY;
    check(s);
    // MSI-X table too small for the vectors.
    let mut s = spec();
    s.msix.as_mut().unwrap().table_offset = TABLE + 0x80 + 8;
    check(s);
    // Misaligned table offset (its low bits are the BIR).
    let mut s = spec();
    s.msix.as_mut().unwrap().table_offset = TABLE + 4;
    check(s);
    // MSI-X in a missing BAR.
    let mut s = spec();
    s.msix.as_mut().unwrap().pba_bar = 2;
    check(s);
    // 64-bit BAR whose upper half is also used.
    let mut s = spec();
    s.bars[0].as_mut().unwrap().is_64bit = true;
    s.bars[1] = Some(bar0());
    check(s);
    // An MSI-X capability smuggled in as a plain capability.
    let mut s = spec();
    s.capabilities.push(Capability {
        id: PCI_CAP_ID_MSIX,
        body: vec![0; 10],
        writable: vec![],
        trapped: vec![],
    });
    check(s);
    // Capability ranges beyond the capability (would panic inside ConfigSpace).
    let mut s = spec();
    s.capabilities[0].writable = vec![20..30];
    check(s);

    // Starting twice.
    let (c, _) = started();
    assert!(matches!(
        c.start(spec(), Arc::new(Recorder::default())),
        Err(EpcError::Invalid(_))
    ));
}

#[test]
fn bar_memory_exists_only_for_bars_with_memory_areas() {
    let (c, _) = started();
    let m = c.bar_memory(0).unwrap();
    assert_eq!(m.len() as u64, BAR0_SIZE);
    assert!(c.bar_memory(1).is_none());
    assert!(c.bar_memory(9).is_none());
}

// ---- Config space ----------------------------------------------------------------------------

#[test]
fn config_space_before_start_reads_all_ones() {
    let c = LoopbackController::with_defaults().unwrap();
    assert_eq!(c.host().config_read32(0), 0xffff_ffff);
    assert!(!c.host().is_present());
}

#[test]
fn config_header_capabilities_and_trapped_ranges() {
    let (c, r) = started();
    let h = c.host();
    assert_eq!(h.config_read16(0), 0x1af4);
    assert_eq!(h.config_read16(2), 0x1041);
    assert_eq!(h.config_read8(0x3d), 1);
    let vndr = cap_offset(&c, PCI_CAP_ID_VNDR);
    let msix = cap_offset(&c, PCI_CAP_ID_MSIX);
    assert_eq!(h.config_read16(msix + 2) & 0x7ff, VECTORS - 1);
    assert_eq!(h.config_read32(msix + 4), TABLE as u32);
    assert_eq!(h.config_read32(msix + 8), PBA as u32);
    assert!(
        r.take().is_empty(),
        "untrapped reads must not reach the function"
    );

    // Untrapped: image through the write mask (body bytes 2..4 are read-only, 4..8 writable).
    h.config_write32(vndr + 2, 0xffff_ffff);
    h.config_write32(vndr + 4, 0xdead_beef);
    assert_eq!(h.config_read16(vndr + 2), u16::from_le_bytes([14, 1]));
    assert_eq!(h.config_read32(vndr + 4), 0xdead_beef);
    assert!(r.take().is_empty());

    // Trapped range forwarded with absolute offsets.
    assert_eq!(h.config_read32(vndr + 8), 0x5a5a_5a5a);
    h.config_write16(vndr + 10, 0x1234);
    assert_eq!(
        r.take(),
        vec![
            Event::ConfigRead(vndr + 8, 4),
            Event::ConfigWrite(vndr + 10, vec![0x34, 0x12]),
        ]
    );
    // A read straddling image and trapped bytes is split.
    let mut b = [0u8; 4];
    h.config_read(vndr + 6, &mut b);
    assert_eq!(b, [0xad, 0xde, 0x5a, 0x5a]);
    assert_eq!(r.take(), vec![Event::ConfigRead(vndr + 8, 2)]);
    let s = c.stats();
    assert_eq!(s.trapped_config_reads, 2);
    assert_eq!(s.trapped_config_writes, 1);

    // Beyond config space: all ones.
    assert_eq!(h.config_read16(4095), 0xff00);
}

// ---- BAR dispatch ----------------------------------------------------------------------------

#[test]
fn trapped_areas_call_the_handler_synchronously() {
    let (c, r) = started();
    let h = c.host();
    assert_eq!(h.bar_read32(0, 0x10), 0x93929190);
    h.bar_write16(0, 0x20, 0xabcd);
    assert_eq!(
        r.take(),
        vec![
            Event::BarRead(0, 0x10, 4),
            Event::BarWrite(0, 0x20, vec![0xcd, 0xab])
        ]
    );
    // Straddling the end of the trapped area into a hole: only the trapped part is
    // forwarded, the hole reads as zero.
    let mut b = [0xeeu8; 4];
    h.bar_read(0, 0xfe, &mut b);
    assert_eq!(b, [0xfe, 0xff, 0, 0]);
    assert_eq!(r.take(), vec![Event::BarRead(0, 0xfe, 2)]);
    let s = c.stats();
    assert_eq!((s.trapped_bar_reads, s.trapped_bar_writes), (2, 1));
    assert_eq!(s.unclaimed_bar_accesses, 1);
}

#[test]
fn doorbells_forward_writes_and_read_zero() {
    let (c, r) = started();
    let h = c.host();
    h.bar_write16(0, DOORBELL + 4, 3);
    assert_eq!(h.bar_read32(0, DOORBELL), 0);
    assert_eq!(r.take(), vec![Event::BarWrite(0, DOORBELL + 4, vec![3, 0])]);
    let s = c.stats();
    assert_eq!((s.doorbell_writes, s.doorbell_reads), (1, 1));
}

#[test]
fn memory_areas_never_call_the_handler() {
    let (c, r) = started();
    let h = c.host();
    let mem = c.bar_memory(0).unwrap();
    h.bar_write32(0, MEMORY + 8, 0x1122_3344);
    h.bar_write16(0, MEMORY + 2, 0x5566);
    h.bar_write64(0, MEMORY + 16, 0x0102_0304_0506_0708);
    assert_eq!(mem.load_u32(MEMORY + 8).unwrap(), 0x1122_3344);
    assert_eq!(mem.load_u16(MEMORY + 2).unwrap(), 0x5566);
    assert_eq!(mem.load_u32(MEMORY + 20).unwrap(), 0x0102_0304);
    // Endpoint writes are visible to host reads.
    mem.store_u32(MEMORY + 0x100, 0xcafe_f00d).unwrap();
    assert_eq!(h.bar_read32(0, MEMORY + 0x100), 0xcafe_f00d);
    assert_eq!(h.bar_read64(0, MEMORY + 16), 0x0102_0304_0506_0708);
    assert!(r.take().is_empty());
    let s = c.stats();
    assert_eq!((s.memory_bar_writes, s.memory_bar_reads), (3, 2));
    assert_eq!((s.trapped_bar_reads, s.trapped_bar_writes), (0, 0));
    // Bytes of the BAR memory outside Memory areas are not reachable by the host.
    mem.store_u32(0x1800, 0xffff_ffff).unwrap();
    assert_eq!(h.bar_read32(0, 0x1800), 0);
    h.bar_write32(0, 0x1804, 0x1234);
    assert_eq!(mem.load_u32(0x1804).unwrap(), 0);
}

#[test]
fn holes_read_zero_and_missing_or_beyond_bars_read_all_ones() {
    let (c, r) = started();
    let h = c.host();
    assert_eq!(h.bar_read32(0, 0x1800), 0);
    h.bar_write32(0, 0x1800, 1);
    assert_eq!(h.bar_read32(0, BAR0_SIZE), 0xffff_ffff);
    assert_eq!(h.bar_read16(0, u64::MAX), 0xffff);
    assert_eq!(h.bar_read32(1, 0), 0xffff_ffff);
    h.bar_write32(3, 0, 1);
    // Straddling the BAR end.
    assert_eq!(h.bar_read32(0, BAR0_SIZE - 2), 0xffff_0000);
    assert!(r.take().is_empty());
    assert_eq!(h.bar_size(0), Some(BAR0_SIZE));
    assert_eq!(h.bar_size(1), None);
}

// ---- MSI-X -----------------------------------------------------------------------------------

#[test]
fn msix_is_not_delivered_until_enabled() {
    let (c, r) = started();
    let h = c.host();
    assert!(!c.msix_enabled());
    assert!(matches!(
        c.raise_irq(Irq::Msix(0)),
        Err(EpcError::IrqNotEnabled(_))
    ));
    assert_eq!(h.msix_count(0), 0);

    assert!(h.enable_msix(true));
    assert!(c.msix_enabled());
    assert_eq!(r.irqs_changed.load(Ordering::SeqCst), 1);
    let fd = h.msix_eventfd(3).unwrap();
    c.raise_irq(Irq::Msix(3)).unwrap();
    c.raise_irq(Irq::Msix(3)).unwrap();
    assert_eq!(h.msix_count(3), 2);
    assert_eq!(fd.read().unwrap(), 2);
    assert!(h.wait_msix(3, Duration::ZERO));
    assert!(!h.wait_msix(3, Duration::from_millis(1)));
    assert!(matches!(
        c.raise_irq(Irq::Msix(VECTORS)),
        Err(EpcError::IrqNotEnabled(_))
    ));
    assert!(matches!(
        c.raise_irq(Irq::Msi(0)),
        Err(EpcError::Unsupported(_))
    ));
    let s = c.stats();
    assert_eq!((s.msix_delivered, s.irqs_refused), (2, 3));

    h.enable_msix(false);
    assert!(!c.msix_enabled());
    assert!(c.raise_irq(Irq::Msix(3)).is_err());
    assert_eq!(r.irqs_changed.load(Ordering::SeqCst), 2);
}

#[test]
fn msix_masking_through_table_and_capability() {
    let (c, r) = started();
    let h = c.host();
    let cap = cap_offset(&c, PCI_CAP_ID_MSIX);
    // Enabling through a raw config write leaves vectors masked (power-on state).
    h.config_write16(cap + 2, 0x8000);
    assert!(c.msix_enabled());
    assert_eq!(r.take(), vec![Event::IrqsChanged]);
    assert!(h.msix_masked(1));
    assert_eq!(h.bar_read32(0, TABLE + 16 + 12), 1);
    c.raise_irq(Irq::Msix(1)).unwrap();
    assert_eq!(h.msix_count(1), 0);
    assert!(h.msix_pending(1));
    assert_eq!(h.bar_read64(0, PBA), 0b10);

    // Unmasking the vector in the table delivers the pending message.
    h.bar_write32(0, TABLE + 16 + 12, 0);
    assert_eq!(h.msix_count(1), 1);
    assert!(!h.msix_pending(1));
    assert_eq!(h.bar_read64(0, PBA), 0);
    assert_eq!(r.take(), vec![Event::IrqsChanged]);

    // Function mask pends everything; clearing it delivers.
    h.config_write16(cap + 2, 0xc000);
    c.raise_irq(Irq::Msix(1)).unwrap();
    assert_eq!(h.msix_count(1), 1);
    h.config_write16(cap + 2, 0x8000);
    assert_eq!(h.msix_count(1), 2);
    assert_eq!(c.stats().msix_pended, 2);

    // Table entries are plain storage for the host.
    h.bar_write32(0, TABLE + 32, 0xfee0_1000);
    h.bar_write32(0, TABLE + 40, 0x42);
    assert_eq!(h.bar_read32(0, TABLE + 32), 0xfee0_1000);
    assert_eq!(h.bar_read32(0, TABLE + 40), 0x42);
    // PBA writes are ignored.
    h.bar_write64(0, PBA, u64::MAX);
    assert_eq!(h.bar_read64(0, PBA), 0);
    assert!(r
        .take()
        .iter()
        .all(|e| !matches!(e, Event::BarRead(..) | Event::BarWrite(..))));
}

// ---- INTx ------------------------------------------------------------------------------------

#[test]
fn intx_level_follows_the_function_and_the_command_register() {
    let (c, _) = started();
    let h = c.host();
    assert!(!h.intx_level());
    c.raise_irq(Irq::Intx(true)).unwrap();
    assert!(h.intx_level());
    // INTx disable.
    h.config_write16(0x04, 0x0400);
    assert!(!h.intx_level());
    assert!(h.intx_asserted());
    h.config_write16(0x04, 0);
    assert!(h.intx_level());
    c.raise_irq(Irq::Intx(false)).unwrap();
    assert!(!h.intx_level());
    // No INTx while MSI-X is on.
    h.enable_msix(true);
    assert!(c.raise_irq(Irq::Intx(true)).is_err());
    assert_eq!(c.stats().intx_asserts, 1);

    // A function without an interrupt pin cannot assert INTx.
    let c = LoopbackController::with_defaults().unwrap();
    let mut s = spec();
    s.header.interrupt_pin = 0;
    c.start(s, Arc::new(Recorder::default())).unwrap();
    assert!(matches!(
        c.raise_irq(Irq::Intx(true)),
        Err(EpcError::IrqNotEnabled(_))
    ));
}

// ---- Host memory -----------------------------------------------------------------------------

#[test]
fn host_memory_is_bounds_checked_and_counted() {
    let (c, _) = started();
    let h = c.host();
    let m = c.host_memory();
    let base = h.ram_base();
    assert_eq!(base, DEFAULT_RAM_BASE);
    let a = h.alloc(64, 64).unwrap();
    assert!(a >= base && a % 64 == 0);
    h.ram_write(a, b"hello").unwrap();
    let mut buf = [0u8; 5];
    m.read(a, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    m.write_u16(a + 8, 0xbeef).unwrap();
    assert_eq!(h.ram_read_u16(a + 8).unwrap(), 0xbeef);
    assert_eq!(c.oob_attempts(), 0);

    // An arena offset used as a bus address is out of range.
    assert_eq!(
        m.read_u16(a - base),
        Err(HostMemError::OutOfRange {
            addr: a - base,
            len: 2
        })
    );
    assert!(m.write(base + h.ram_size() - 1, &[0, 0]).is_err());
    assert!(matches!(
        m.read(u64::MAX - 1, &mut [0; 4]),
        Err(HostMemError::Overflow { .. })
    ));
    assert_eq!(c.oob_attempts(), 3);
    assert_eq!(c.ram().oob_attempts(), 3);
    assert!(m.check_range(base, h.ram_size() + 1).is_err());
    assert_eq!(c.oob_attempts(), 3);

    // Allocations are zeroed, even when reused after reset_alloc.
    h.reset_alloc();
    let b = h.alloc(16, 8).unwrap();
    assert_eq!(b, a);
    assert_eq!(h.ram_read_u64(b).unwrap(), 0);
    assert!(h.alloc(h.ram_size(), 1).is_err());
}

// ---- Function-level reset ---------------------------------------------------------------------

#[test]
fn function_reset_restores_config_and_disables_interrupts() {
    let (c, r) = started();
    let h = c.host();
    let vndr = cap_offset(&c, PCI_CAP_ID_VNDR);
    h.config_write16(0x04, 0x0006);
    h.config_write32(vndr + 4, 0x1234_5678);
    h.enable_msix(true);
    c.raise_irq(Irq::Msix(0)).unwrap();
    r.take();

    h.function_reset();
    assert_eq!(r.take(), vec![Event::LinkReset]);
    assert_eq!(h.config_read16(0x04), 0);
    assert_eq!(h.config_read32(vndr + 4), u32::from_le_bytes([2, 3, 4, 5]));
    assert!(!c.msix_enabled());
    assert!(h.msix_masked(0));
    assert_eq!(h.msix_count(0), 1, "delivery counts are cumulative");
    assert_eq!(c.stats().function_resets, 1);
}

#[test]
fn host_bus_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<epf_loopback::HostBus>();
    let (c, r) = started();
    let h = c.host();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let h = h.clone();
            std::thread::spawn(move || {
                for i in 0..100u64 {
                    h.bar_write16(0, DOORBELL, (t * 100 + i) as u16);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(r.take().len(), 400);
    assert_eq!(c.stats().doorbell_writes, 400);
}
