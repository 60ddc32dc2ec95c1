//! [`LoopbackController`]: an [`EndpointController`] whose "PCIe host" is a model living in
//! the same process. The endpoint side is the ordinary controller interface; the host side
//! is [`HostBus`], through which a host driver (or a test) performs configuration and BAR
//! accesses, reads and writes host RAM, and observes interrupts.

use crate::msix::{Delivery, MsixState};
use crate::spec_check::check_spec;
use crate::stats::{Counters, LoopbackStats};
use crate::{ArenaMemory, BumpAllocator, HostBus, LoopbackOptions};
use epf_epc::{
    AreaKind, ConfigSpace, EndpointController, EpcError, EpcFeatures, FunctionHandler,
    FunctionSpec, HostMemory, Irq, SharedMemory, BAR_COUNT,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// PCI command register offset and its INTx-disable bit.
pub(crate) const PCI_COMMAND: usize = 0x04;
pub(crate) const PCI_COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// MSI-X message-control bits (in the capability's dword at +2).
pub(crate) const MSIX_CTRL_ENABLE: u16 = 1 << 15;
pub(crate) const MSIX_CTRL_MASKALL: u16 = 1 << 14;

/// A started function: its spec, handler, config space and interrupt state.
pub(crate) struct Function {
    pub(crate) spec: FunctionSpec,
    pub(crate) handler: Arc<dyn FunctionHandler>,
    /// The config space as first presented (restored on function-level reset).
    pub(crate) pristine: ConfigSpace,
    pub(crate) config: Mutex<ConfigSpace>,
    /// Offset of the MSI-X capability in config space.
    pub(crate) msix_cap: Option<usize>,
    pub(crate) msix: Option<MsixState>,
    pub(crate) bar_mem: [Option<Arc<SharedMemory>>; BAR_COUNT],
    pub(crate) intx_asserted: AtomicBool,
}

impl Function {
    fn config_u16(cs: &ConfigSpace, off: usize) -> u16 {
        let mut b = [0; 2];
        cs.read(off, &mut b);
        u16::from_le_bytes(b)
    }

    /// (MSI-X message control, command register) as currently in `cs`.
    pub(crate) fn irq_control(&self, cs: &ConfigSpace) -> (u16, u16) {
        let ctrl = self.msix_cap.map_or(0, |off| Self::config_u16(cs, off + 2));
        (ctrl, Self::config_u16(cs, PCI_COMMAND))
    }

    /// Mirrors `ctrl` into the MSI-X state.
    pub(crate) fn apply_msix_control(&self, ctrl: u16) {
        if let Some(m) = &self.msix {
            m.set_control(ctrl & MSIX_CTRL_ENABLE != 0, ctrl & MSIX_CTRL_MASKALL != 0);
        }
    }
}

/// State shared by the controller (endpoint side) and its [`HostBus`] handles.
pub(crate) struct Shared {
    pub(crate) opts: LoopbackOptions,
    pub(crate) ram: Arc<ArenaMemory>,
    pub(crate) alloc: Mutex<BumpAllocator>,
    pub(crate) function: OnceLock<Function>,
    pub(crate) stats: Arc<Counters>,
}

/// An in-process PCIe host model serving one function.
pub struct LoopbackController {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LoopbackController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopbackController")
            .field("options", &self.shared.opts)
            .field("started", &self.is_started())
            .finish()
    }
}

impl LoopbackController {
    /// Creates a controller with a fresh, zeroed host RAM arena.
    pub fn new(opts: LoopbackOptions) -> Result<Self, EpcError> {
        let ram = ArenaMemory::new(opts.ram_base, opts.ram_size)
            .map_err(|e| EpcError::Os(format!("host RAM arena: {e}")))?;
        let alloc = BumpAllocator::new(ram.base(), ram.size());
        Ok(LoopbackController {
            shared: Arc::new(Shared {
                opts,
                ram: Arc::new(ram),
                alloc: Mutex::new(alloc),
                function: OnceLock::new(),
                stats: Arc::new(Counters::default()),
            }),
        })
    }

    /// A controller with [`LoopbackOptions::default`].
    pub fn with_defaults() -> Result<Self, EpcError> {
        Self::new(LoopbackOptions::default())
    }

    /// The host side: configuration/BAR accesses, host RAM, interrupts as the host sees them.
    pub fn host(&self) -> HostBus {
        HostBus::new(self.shared.clone())
    }

    /// The options this controller was built with.
    pub fn options(&self) -> &LoopbackOptions {
        &self.shared.opts
    }

    /// The host RAM arena (the concrete object behind [`EndpointController::host_memory`]).
    pub fn ram(&self) -> Arc<ArenaMemory> {
        self.shared.ram.clone()
    }

    /// Endpoint host-memory accesses attempted outside the arena (see
    /// [`ArenaMemory::oob_attempts`]).
    pub fn oob_attempts(&self) -> u64 {
        self.shared.ram.oob_attempts()
    }

    /// A snapshot of the activity counters.
    pub fn stats(&self) -> LoopbackStats {
        self.shared.stats.snapshot()
    }

    /// Whether [`start`](EndpointController::start) succeeded.
    pub fn is_started(&self) -> bool {
        self.shared.function.get().is_some()
    }

    fn refused(&self, e: EpcError) -> Result<(), EpcError> {
        Counters::inc(&self.shared.stats.irqs_refused);
        Err(e)
    }
}

fn build_function(
    opts: &LoopbackOptions,
    stats: &Arc<Counters>,
    spec: FunctionSpec,
    handler: Arc<dyn FunctionHandler>,
) -> Result<Function, EpcError> {
    check_spec(&opts.features, &spec)?;
    let mut cs = ConfigSpace::new(&spec.header, &spec.bars);
    for cap in &spec.capabilities {
        cs.add_capability(cap)?;
    }
    let (msix_cap, msix) = match &spec.msix {
        Some(m) => (
            Some(cs.add_msix(m)?),
            Some(MsixState::new(
                m.vectors,
                opts.msix_eventfds,
                stats.clone(),
            )?),
        ),
        None => (None, None),
    };
    let mut bar_mem: [Option<Arc<SharedMemory>>; BAR_COUNT] = Default::default();
    for (i, bar) in spec.bars.iter().enumerate() {
        let Some(bar) = bar else { continue };
        if bar.areas.iter().any(|a| a.kind == AreaKind::Memory) {
            let len = usize::try_from(bar.size)
                .map_err(|_| EpcError::Invalid(format!("BAR {i} too large to back")))?;
            let mem = SharedMemory::memfd(&format!("epf-loopback-bar{i}"), len)
                .map_err(|e| EpcError::Os(format!("BAR {i} memory: {e}")))?;
            bar_mem[i] = Some(Arc::new(mem));
        }
    }
    Ok(Function {
        spec,
        handler,
        pristine: cs.clone(),
        config: Mutex::new(cs),
        msix_cap,
        msix,
        bar_mem,
        intx_asserted: AtomicBool::new(false),
    })
}

impl EndpointController for LoopbackController {
    fn features(&self) -> EpcFeatures {
        self.shared.opts.features
    }

    fn start(&self, spec: FunctionSpec, handler: Arc<dyn FunctionHandler>) -> Result<(), EpcError> {
        if self.is_started() {
            return Err(EpcError::Invalid("function already started".into()));
        }
        let f = build_function(&self.shared.opts, &self.shared.stats, spec, handler)?;
        self.shared
            .function
            .set(f)
            .map_err(|_| EpcError::Invalid("function already started".into()))
    }

    fn bar_memory(&self, bar: u8) -> Option<Arc<SharedMemory>> {
        self.shared
            .function
            .get()?
            .bar_mem
            .get(bar as usize)?
            .clone()
    }

    fn host_memory(&self) -> Arc<dyn HostMemory> {
        self.shared.ram.clone()
    }

    fn raise_irq(&self, irq: Irq) -> Result<(), EpcError> {
        let Some(f) = self.shared.function.get() else {
            return self.refused(EpcError::Invalid("function not started".into()));
        };
        match irq {
            Irq::Msix(v) => {
                let Some(m) = &f.msix else {
                    return self.refused(EpcError::IrqNotEnabled(format!(
                        "MSI-X vector {v} (the function has no MSI-X capability)"
                    )));
                };
                match m.raise(v) {
                    Ok(Delivery::Delivered) | Ok(Delivery::Pended) => Ok(()),
                    Err(e) => self.refused(e),
                }
            }
            Irq::Msi(_) => self.refused(EpcError::Unsupported("MSI")),
            Irq::Intx(level) => {
                if !self.shared.opts.features.irq.intx {
                    return self.refused(EpcError::Unsupported("INTx"));
                }
                if f.spec.header.interrupt_pin == 0 {
                    return self.refused(EpcError::IrqNotEnabled(
                        "INTx (the function has no interrupt pin)".into(),
                    ));
                }
                if level && f.msix.as_ref().is_some_and(|m| m.enabled()) {
                    return self.refused(EpcError::IrqNotEnabled("INTx (MSI-X is enabled)".into()));
                }
                if !f.intx_asserted.swap(level, Ordering::SeqCst) && level {
                    Counters::inc(&self.shared.stats.intx_asserts);
                }
                Ok(())
            }
        }
    }

    fn msix_enabled(&self) -> bool {
        self.shared
            .function
            .get()
            .and_then(|f| f.msix.as_ref())
            .is_some_and(|m| m.enabled())
    }
}
