//! A tiny test function served over vfio-user, for checking the controller against a real
//! QEMU `vfio-user-pci` client and Linux guest (see `qemu-smoke.sh` next to this file).
//!
//! Device 1234:11e9 with one 16 KiB BAR0:
//! * 0x000-0x0ff trapped registers (32-bit unless noted):
//!   - 0x00 RO magic `0x45504631` ("EPF1")
//!   - 0x04 RW scratch
//!   - 0x08/0x0c WO host address, low/high
//!   - 0x10 WO command: 1 = read 8 bytes of host memory at the address into RESULT,
//!     2 = write `0x1122334455667788` there, 3 = raise MSI-X vector 0, 4 = pulse INTx
//!   - 0x18/0x1c RO RESULT low/high; 0x20 RO doorbell writes seen;
//!     0x24 RO the u32 at BAR offset 0x2000 (memory area, mmapped by QEMU);
//!     0x28 RO last command's status (0 ok, 1 host memory error, 2 interrupt error)
//! * 0x1000 doorbell, 0x2000-0x2fff memory, 0x3000 MSI-X table (2 vectors), 0x3800 PBA.
//!
//! Usage: `smoke_server SOCKET_PATH` (runs until killed; logs to stderr).

use epf_epc::{
    AreaKind, BarArea, BarSpec, Capability, EndpointController, FunctionHandler, FunctionSpec, Irq,
    MsixSpec, PciHeader, PCI_CAP_ID_VNDR,
};
use epf_vfio_user::VfioUserController;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        eprintln!("[{}] {}", r.level(), r.args());
    }
    fn flush(&self) {}
}

#[derive(Default)]
struct Smoke {
    ctl: OnceLock<Arc<VfioUserController>>,
    scratch: AtomicU32,
    addr: AtomicU64,
    result: AtomicU64,
    doorbells: AtomicU32,
    status: AtomicU32,
}

impl Smoke {
    fn ctl(&self) -> &VfioUserController {
        self.ctl.get().expect("controller set before start")
    }

    fn command(&self, cmd: u32) {
        let ctl = self.ctl();
        let addr = self.addr.load(Ordering::SeqCst);
        let hm = ctl.host_memory();
        let status = match cmd {
            1 => match hm.read_u64(addr) {
                Ok(v) => {
                    self.result.store(v, Ordering::SeqCst);
                    0
                }
                Err(e) => {
                    eprintln!("smoke: host read at {addr:#x}: {e}");
                    1
                }
            },
            2 => match hm.write(addr, &0x1122_3344_5566_7788u64.to_le_bytes()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("smoke: host write at {addr:#x}: {e}");
                    1
                }
            },
            3 => match ctl.raise_irq(Irq::Msix(0)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("smoke: MSI-X: {e}");
                    2
                }
            },
            4 => match ctl
                .raise_irq(Irq::Intx(true))
                .and_then(|()| ctl.raise_irq(Irq::Intx(false)))
            {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("smoke: INTx: {e}");
                    2
                }
            },
            _ => 3,
        };
        self.status.store(status, Ordering::SeqCst);
    }
}

impl FunctionHandler for Smoke {
    fn bar_read(&self, _bar: u8, offset: u64, data: &mut [u8]) {
        let v: u32 = match offset & !3 {
            0x00 => 0x4550_4631,
            0x04 => self.scratch.load(Ordering::SeqCst),
            0x18 => self.result.load(Ordering::SeqCst) as u32,
            0x1c => (self.result.load(Ordering::SeqCst) >> 32) as u32,
            0x20 => self.doorbells.load(Ordering::SeqCst),
            0x24 => self
                .ctl()
                .bar_memory(0)
                .and_then(|m| m.load_u32(0x2000).ok())
                .unwrap_or(0xffff_ffff),
            0x28 => self.status.load(Ordering::SeqCst),
            _ => 0,
        };
        let bytes = v.to_le_bytes();
        let start = (offset & 3) as usize;
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(start + i).copied().unwrap_or(0);
        }
    }

    fn bar_write(&self, _bar: u8, offset: u64, data: &[u8]) {
        if offset == 0x1000 {
            self.doorbells.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let mut b = [0u8; 4];
        let n = data.len().min(4);
        b[..n].copy_from_slice(&data[..n]);
        let v = u32::from_le_bytes(b);
        match offset {
            0x04 => self.scratch.store(v, Ordering::SeqCst),
            0x08 => {
                let a = self.addr.load(Ordering::SeqCst);
                self.addr
                    .store((a & !0xffff_ffff) | u64::from(v), Ordering::SeqCst);
            }
            0x0c => {
                let a = self.addr.load(Ordering::SeqCst);
                self.addr
                    .store((a & 0xffff_ffff) | (u64::from(v) << 32), Ordering::SeqCst);
            }
            0x10 => self.command(v),
            _ => {}
        }
    }

    fn config_read(&self, _offset: usize, data: &mut [u8]) {
        data.fill(0x5a);
    }

    fn link_reset(&self) {
        eprintln!("smoke: link reset; {:?}", self.ctl().stats());
        self.scratch.store(0, Ordering::SeqCst);
    }

    fn irqs_changed(&self) {
        eprintln!(
            "smoke: irqs changed, MSI-X enabled: {}",
            self.ctl().msix_enabled()
        );
    }
}

fn spec() -> FunctionSpec {
    let area = |offset, size, kind| BarArea { offset, size, kind };
    let mut bars: [Option<BarSpec>; 6] = Default::default();
    bars[0] = Some(BarSpec {
        size: 0x4000,
        is_64bit: false,
        prefetchable: false,
        areas: vec![
            area(0, 0x100, AreaKind::Trapped),
            area(0x1000, 4, AreaKind::Doorbell),
            area(0x2000, 0x1000, AreaKind::Memory),
            area(0x3000, 32, AreaKind::MsixTable),
            area(0x3800, 8, AreaKind::MsixPba),
        ],
    });
    FunctionSpec {
        header: PciHeader {
            vendor_id: 0x1234,
            device_id: 0x11e9,
            revision_id: 1,
            class_code: 0xff_0000,
            subsystem_vendor_id: 0x1234,
            subsystem_id: 1,
            interrupt_pin: 1,
        },
        capabilities: vec![Capability {
            id: PCI_CAP_ID_VNDR,
            body: vec![10, 0xaa, 0, 0, 0, 0, 0, 0],
            writable: vec![],
            trapped: vec![4..8, 8..10],
        }],
        bars,
        msix: Some(MsixSpec {
            vectors: 2,
            table_bar: 0,
            table_offset: 0x3000,
            pba_bar: 0,
            pba_offset: 0x3800,
        }),
    }
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: smoke_server SOCKET_PATH");
    log::set_logger(&StderrLog).unwrap();
    log::set_max_level(log::LevelFilter::Debug);
    let ctl = VfioUserController::new(&path).unwrap_or_else(|e| panic!("{e}"));
    let smoke = Arc::new(Smoke::default());
    let _ = smoke.ctl.set(ctl.clone());
    ctl.start(spec(), smoke.clone()).unwrap();
    ctl.serve().unwrap();
}
