//! The function being served: its validated [`FunctionSpec`], the handler, the configuration
//! space image, the memory behind its BARs and its interrupt state. Built once by
//! `EndpointController::start` and shared by the serving thread and the function's threads.

use crate::irq::IrqState;
use crate::stats::{bump, Counters};
use epf_epc::sync;
use epf_epc::{
    AreaKind, BarSpec, ConfigSpace, EpcError, EpcFeatures, FunctionHandler, FunctionSpec,
    SharedMemory, BAR_COUNT,
};
use std::ffi::CString;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Size of one MSI-X table entry.
const MSIX_ENTRY_SIZE: u64 = 16;

/// A started function.
pub(crate) struct Function {
    pub spec: FunctionSpec,
    pub handler: Arc<dyn FunctionHandler>,
    /// Memory behind each BAR that has [`AreaKind::Memory`] areas (covers the whole BAR).
    pub bar_mem: [Option<Arc<SharedMemory>>; BAR_COUNT],
    config: Mutex<ConfigSpace>,
    initial_config: ConfigSpace,
    /// Absolute configuration-space ranges whose accesses go to the handler, sorted.
    pub config_trapped: Vec<Range<usize>>,
    pub irqs: Mutex<IrqState>,
    /// Whether the function is visible to the host: while the link is down, configuration
    /// space reads as all-ones (no device), trapped BAR reads as all-ones and writes are
    /// dropped, and no interrupt reaches the host.
    link_up: AtomicBool,
}

/// PCI capability ID of MSI.
const PCI_CAP_ID_MSI: u8 = 0x05;

/// The number of MSI vectors the function offers: from the Multiple Message Capable field of
/// its MSI capability, 0 without one.
fn msi_vectors(spec: &FunctionSpec) -> u16 {
    spec.capabilities
        .iter()
        .find(|c| c.id == PCI_CAP_ID_MSI)
        .and_then(|c| c.body.first())
        .map_or(0, |ctrl| 1 << ((ctrl >> 1) & 7).min(5))
}

/// Creates the shared memory behind a BAR: a memfd sealed against resizing, so that the client
/// (which receives the descriptor to mmap it) cannot shrink it under us.
fn bar_memfd(name: &str, len: usize) -> std::io::Result<SharedMemory> {
    let cname = CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: `cname` is a valid NUL-terminated string; the flags are plain integers.
    let raw =
        unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let size = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
    // SAFETY: ftruncate and fcntl on a descriptor we own, with integer arguments.
    unsafe {
        if libc::ftruncate(fd.as_raw_fd(), size) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        if libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    SharedMemory::map(fd, 0, len, true)
}

fn invalid(msg: String) -> EpcError {
    EpcError::Invalid(msg)
}

/// Checks that `[off, off+len)` lies in BAR `bar` and outside its memory areas (which the host
/// maps directly, so the controller could not emulate anything there).
fn check_msix_structure(
    bars: &[Option<BarSpec>; BAR_COUNT],
    what: &str,
    bar: u8,
    off: u64,
    len: u64,
) -> Result<(), EpcError> {
    let spec = bars
        .get(bar as usize)
        .and_then(Option::as_ref)
        .ok_or_else(|| invalid(format!("MSI-X {what} in missing BAR {bar}")))?;
    let end = off
        .checked_add(len)
        .ok_or_else(|| invalid(format!("MSI-X {what} offset overflows")))?;
    if off % 8 != 0 || off > 0xffff_fff8 || end > spec.size {
        return Err(invalid(format!(
            "MSI-X {what} at {off:#x}+{len:#x} does not fit BAR {bar}"
        )));
    }
    for a in &spec.areas {
        if a.kind == AreaKind::Memory && off < a.offset + a.size && end > a.offset {
            return Err(invalid(format!(
                "MSI-X {what} overlaps memory area {:#x} of BAR {bar}",
                a.offset
            )));
        }
    }
    Ok(())
}

impl Function {
    /// Validates `spec` against `features` and builds the function's state. BARs with memory
    /// areas are backed by `backing` where it holds a mapping (covering the whole BAR), by a
    /// fresh memfd otherwise.
    pub fn new(
        spec: FunctionSpec,
        handler: Arc<dyn FunctionHandler>,
        features: &EpcFeatures,
        mut backing: [Option<Arc<SharedMemory>>; BAR_COUNT],
    ) -> Result<Self, EpcError> {
        for (i, bar) in spec.bars.iter().enumerate() {
            let Some(bar) = bar else { continue };
            bar.validate()?;
            if bar.is_64bit && (i + 1 >= BAR_COUNT || spec.bars[i + 1].is_some()) {
                return Err(invalid(format!(
                    "64-bit BAR {i} needs BAR {} to be unused",
                    i + 1
                )));
            }
        }
        for (i, bar) in spec.bars.iter().enumerate() {
            if i > 0 && spec.bars[i - 1].as_ref().is_some_and(|b| b.is_64bit) && bar.is_some() {
                return Err(invalid(format!(
                    "BAR {i} is the upper half of a 64-bit BAR"
                )));
            }
        }
        if let Some(m) = &spec.msix {
            if m.vectors == 0 {
                return Err(invalid("MSI-X with 0 vectors".into()));
            }
            if m.vectors > features.irq.msix_vectors {
                return Err(EpcError::Unsupported("more than 64 MSI-X vectors"));
            }
            let table_len = u64::from(m.vectors) * MSIX_ENTRY_SIZE;
            let pba_len = u64::from(m.vectors).div_ceil(64) * 8;
            check_msix_structure(&spec.bars, "table", m.table_bar, m.table_offset, table_len)?;
            check_msix_structure(&spec.bars, "PBA", m.pba_bar, m.pba_offset, pba_len)?;
            if m.table_bar == m.pba_bar
                && m.table_offset < m.pba_offset + pba_len
                && m.pba_offset < m.table_offset + table_len
            {
                return Err(invalid("MSI-X table and PBA overlap".into()));
            }
        }

        for cap in &spec.capabilities {
            let len = 2 + cap.body.len();
            if cap
                .writable
                .iter()
                .chain(&cap.trapped)
                .any(|r| r.start > r.end || r.end > len)
            {
                return Err(invalid(format!(
                    "capability {:#x}: a writable or trapped range lies outside its {len} bytes",
                    cap.id
                )));
            }
        }

        // The layout every controller presents (`ConfigSpace::from_spec`): the function's
        // capabilities from 0x40 in order, where `capability_offsets` says, then MSI-X.
        let mut config = ConfigSpace::new(&spec.header, &spec.bars);
        let mut config_trapped = Vec::new();
        for cap in &spec.capabilities {
            let off = config.add_capability(cap)?;
            config_trapped.extend(cap.trapped.iter().map(|r| off + r.start..off + r.end));
        }
        if let Some(m) = &spec.msix {
            config.add_msix(m)?;
        }
        config_trapped.sort_by_key(|r| r.start);

        let mut bar_mem: [Option<Arc<SharedMemory>>; BAR_COUNT] = Default::default();
        for (i, bar) in spec.bars.iter().enumerate() {
            let Some(bar) = bar else { continue };
            if bar.areas.iter().any(|a| a.kind == AreaKind::Memory) {
                let len = usize::try_from(bar.size.max(epf_epc::PAGE_SIZE))
                    .map_err(|_| invalid(format!("BAR {i} too large")))?;
                if let Some(mem) = backing[i].take() {
                    if mem.len() < len || mem.raw_fd().is_none() {
                        return Err(invalid(format!(
                            "BAR {i}: backing of {:#x} bytes for a BAR of {len:#x}",
                            mem.len()
                        )));
                    }
                    bar_mem[i] = Some(mem);
                    continue;
                }
                let mem = bar_memfd(&format!("epf-vfio-user-bar{i}"), len)
                    .map_err(|e| EpcError::Os(format!("BAR {i} memory: {e}")))?;
                bar_mem[i] = Some(Arc::new(mem));
            }
        }

        let irqs = IrqState::new(
            spec.header.interrupt_pin != 0,
            spec.msix.map_or(0, |m| m.vectors),
            msi_vectors(&spec),
        );
        Ok(Function {
            initial_config: config.clone(),
            config: Mutex::new(config),
            config_trapped,
            bar_mem,
            handler,
            spec,
            irqs: Mutex::new(irqs),
            link_up: AtomicBool::new(true),
        })
    }

    /// Whether the function is visible to the host.
    pub fn link_up(&self) -> bool {
        self.link_up.load(Ordering::Acquire)
    }

    /// Shows the function to the host or hides it (see [`Function::link_up`]).
    pub fn set_link_up(&self, up: bool) {
        self.link_up.store(up, Ordering::Release);
    }

    /// The configuration space image.
    pub fn config(&self) -> MutexGuard<'_, ConfigSpace> {
        sync::lock(&self.config)
    }

    /// The interrupt state.
    pub fn irqs(&self) -> MutexGuard<'_, IrqState> {
        sync::lock(&self.irqs)
    }

    /// A function-level reset: configuration registers and INTx state return to their initial
    /// values, then the function is told. Interrupt eventfds stay as the client set them (the
    /// client tears them down itself around a reset), and so do DMA mappings (they belong to
    /// the client's IOMMU, not to the function).
    pub fn reset(&self, counters: &Counters) {
        *self.config() = self.initial_config.clone();
        self.irqs().reset_intx();
        bump(&counters.resets);
        self.handler.link_reset();
    }

    /// Forgets the client's interrupt eventfds and resets the function: the client is gone.
    pub fn disconnect(&self, counters: &Counters) {
        self.irqs().clear();
        self.handler.irqs_changed();
        self.reset(counters);
    }
}
