//! Shared test fixtures: a recording fake function, the function spec it presents, and a
//! controller serving it on a socket in a temporary directory.

#![allow(dead_code)]

pub mod client;

use epf_epc::{
    AreaKind, BarArea, BarSpec, Capability, EndpointController, FunctionHandler, FunctionSpec,
    MsixSpec, PciHeader, PCI_CAP_ID_VNDR,
};
use epf_vfio_user::{VfioUserController, VfioUserError};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vmm_sys_util::tempdir::TempDir;

/// A function that records what the controller delivers.
#[derive(Default)]
pub struct Fake {
    pub bar_reads: Mutex<Vec<(u8, u64, usize)>>,
    pub bar_writes: Mutex<Vec<(u8, u64, Vec<u8>)>>,
    pub config_reads: Mutex<Vec<(usize, usize)>>,
    pub config_writes: Mutex<Vec<(usize, Vec<u8>)>>,
    pub resets: AtomicUsize,
    pub irq_changes: AtomicUsize,
}

/// What the fake returns for a trapped BAR read of the byte at `offset`.
pub fn bar_pattern(offset: u64) -> u8 {
    (offset as u8) ^ 0xa5
}

/// What the fake returns for trapped configuration bytes.
pub const CONFIG_PATTERN: u8 = 0x5a;

impl FunctionHandler for Fake {
    fn bar_read(&self, bar: u8, offset: u64, data: &mut [u8]) {
        assert!(data.iter().all(|&b| b == 0), "data must be pre-zeroed");
        for (i, b) in data.iter_mut().enumerate() {
            *b = bar_pattern(offset + i as u64);
        }
        self.bar_reads
            .lock()
            .unwrap()
            .push((bar, offset, data.len()));
    }

    fn bar_write(&self, bar: u8, offset: u64, data: &[u8]) {
        self.bar_writes
            .lock()
            .unwrap()
            .push((bar, offset, data.to_vec()));
    }

    fn config_read(&self, offset: usize, data: &mut [u8]) {
        data.fill(CONFIG_PATTERN);
        self.config_reads.lock().unwrap().push((offset, data.len()));
    }

    fn config_write(&self, offset: usize, data: &[u8]) {
        self.config_writes
            .lock()
            .unwrap()
            .push((offset, data.to_vec()));
    }

    fn link_reset(&self) {
        self.resets.fetch_add(1, Ordering::SeqCst);
    }

    fn irqs_changed(&self) {
        self.irq_changes.fetch_add(1, Ordering::SeqCst);
    }
}

pub const VENDOR: u16 = 0x1af4;
pub const DEVICE: u16 = 0x1042;
pub const MSIX_VECTORS: u16 = 4;

/// BAR0 (32-bit, 16 KiB): trapped registers at 0, a doorbell at 0x1000, memory at 0x2000, the
/// MSI-X table at 0x3000 and PBA at 0x3800. BAR2 (64-bit, 8 KiB): all memory. A vendor
/// capability whose bytes 4..8 are trapped.
// `trapped` is a list of ranges; one range is meant.
#[allow(clippy::single_range_in_vec_init)]
pub fn spec() -> FunctionSpec {
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
            area(0x3000, 16 * MSIX_VECTORS as u64, AreaKind::MsixTable),
            area(0x3800, 8, AreaKind::MsixPba),
        ],
    });
    bars[2] = Some(BarSpec {
        size: 0x2000,
        is_64bit: true,
        prefetchable: true,
        areas: vec![area(0, 0x2000, AreaKind::Memory)],
    });
    FunctionSpec {
        header: PciHeader {
            vendor_id: VENDOR,
            device_id: DEVICE,
            revision_id: 1,
            class_code: 0x018000,
            subsystem_vendor_id: VENDOR,
            subsystem_id: 2,
            interrupt_pin: 1,
        },
        capabilities: vec![Capability {
            id: PCI_CAP_ID_VNDR,
            body: vec![14, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            writable: vec![],
            trapped: vec![4..8],
        }],
        bars,
        msix: Some(MsixSpec {
            vectors: MSIX_VECTORS,
            table_bar: 0,
            table_offset: 0x3000,
            pba_bar: 0,
            pba_offset: 0x3800,
        }),
    }
}

/// A controller serving the fake function.
pub struct Setup {
    pub dir: TempDir,
    pub path: PathBuf,
    pub ctl: Arc<VfioUserController>,
    pub fake: Arc<Fake>,
    pub thread: Option<JoinHandle<Result<(), VfioUserError>>>,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = TempDir::new_with_prefix("/tmp/epf-vfio-user-test").unwrap();
        let path = dir.as_path().join("dev.sock");
        let ctl = VfioUserController::new(&path).unwrap();
        let fake = Arc::new(Fake::default());
        ctl.start(spec(), fake.clone()).unwrap();
        let thread = Some(ctl.spawn().unwrap());
        Setup {
            dir,
            path,
            ctl,
            fake,
            thread,
        }
    }

    /// Waits until the fake has seen `n` resets.
    pub fn wait_resets(&self, n: usize) {
        wait_for(|| self.fake.resets.load(Ordering::SeqCst) >= n);
    }

    /// Shuts the controller down and joins its thread.
    pub fn stop(&mut self) {
        self.ctl.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
        }
    }
}

/// Polls `cond` for up to 5 seconds.
pub fn wait_for(cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not met in time");
        std::thread::sleep(Duration::from_millis(5));
    }
}
