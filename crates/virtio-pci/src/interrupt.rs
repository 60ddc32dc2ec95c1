//! Interrupt delivery: MSI-X when the host enabled it (per-queue and configuration vectors),
//! otherwise INTx with the ISR status byte (virtio 1.2 section 4.1.4.5), whose read clears it
//! and deasserts the line.

use crate::NO_VECTOR;
use epf_epc::{EndpointController, EpcError, Irq};
use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::Arc;

/// ISR bit: a queue has used buffers.
pub const ISR_QUEUE: u8 = 1;
/// ISR bit: the device configuration changed.
pub const ISR_CONFIG: u8 = 2;

/// Shared by the register engine (ISR reads, config vector writes) and the worker (signals).
pub struct Interrupt {
    epc: Arc<dyn EndpointController>,
    isr: AtomicU8,
    config_vector: AtomicU16,
}

impl Interrupt {
    pub fn new(epc: Arc<dyn EndpointController>) -> Self {
        Interrupt {
            epc,
            isr: AtomicU8::new(0),
            config_vector: AtomicU16::new(NO_VECTOR),
        }
    }

    /// Mirrors the config_msix_vector register.
    pub fn set_config_vector(&self, v: u16) {
        self.config_vector.store(v, Ordering::Release);
    }

    /// Raises MSI-X `vector` if the host enabled MSI-X, INTx otherwise. A reused answer is
    /// trusted only when it says MSI-X is on, and an MSI-X the controller refuses is asked
    /// about again: right after a driver rebinds, a stale "off" (or "on") would send the
    /// interrupt the driver waits for where the host no longer listens.
    fn signal(&self, vector: u16, isr_bit: u8) -> bool {
        self.isr.fetch_or(isr_bit, Ordering::AcqRel);
        let msix = self.epc.msix_enabled() || self.epc.msix_enabled_now();
        let mut r = if msix {
            if vector == NO_VECTOR {
                return false;
            }
            self.epc.raise_irq(Irq::Msix(vector))
        } else {
            self.epc.raise_irq(Irq::Intx(true))
        };
        if msix && matches!(r, Err(EpcError::IrqNotEnabled(_))) && !self.epc.msix_enabled_now() {
            r = self.epc.raise_irq(Irq::Intx(true));
        }
        match r {
            Ok(()) => true,
            Err(e) => {
                log::debug!("interrupt not delivered: {e}");
                false
            }
        }
    }

    /// Signals used buffers on a queue whose vector is `vector`. Returns whether an interrupt
    /// was raised.
    pub fn signal_queue(&self, vector: u16) -> bool {
        self.signal(vector, ISR_QUEUE)
    }

    /// Signals a configuration change (also used for DEVICE_NEEDS_RESET).
    pub fn signal_config(&self) -> bool {
        self.signal(self.config_vector.load(Ordering::Acquire), ISR_CONFIG)
    }

    /// The driver reads the ISR status: returns and clears it, deasserting INTx.
    pub fn read_isr(&self) -> u8 {
        let v = self.isr.swap(0, Ordering::AcqRel);
        if v != 0 && !self.epc.msix_enabled() {
            let _ = self.epc.raise_irq(Irq::Intx(false));
        }
        v
    }

    /// Forgets pending status (function reset). An INTx asserted for that status is
    /// deasserted too: left asserted with an ISR of 0, the host's handler would find nothing
    /// to acknowledge and the level-triggered line would never drop.
    pub fn reset(&self) {
        let pending = self.isr.swap(0, Ordering::AcqRel);
        if pending != 0 && !self.epc.msix_enabled() {
            let _ = self.epc.raise_irq(Irq::Intx(false));
        }
        self.config_vector.store(NO_VECTOR, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use epf_epc::{EpcFeatures, FunctionHandler, FunctionSpec, HostMemory, SharedMemory};
    use epf_loopback::LoopbackController;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

    /// A controller whose cached MSI-X answer and real state can differ, as after a rebind:
    /// the driver disabled MSI-X (the cache saw that), then enabled it again.
    struct Stale {
        inner: LoopbackController,
        cached: AtomicBool,
        real: AtomicBool,
        raised: Mutex<Vec<Irq>>,
    }

    impl EndpointController for Stale {
        fn features(&self) -> EpcFeatures {
            self.inner.features()
        }
        fn start(
            &self,
            spec: FunctionSpec,
            handler: Arc<dyn FunctionHandler>,
        ) -> Result<(), EpcError> {
            self.inner.start(spec, handler)
        }
        fn bar_memory(&self, bar: u8) -> Option<Arc<SharedMemory>> {
            self.inner.bar_memory(bar)
        }
        fn host_memory(&self) -> Arc<dyn HostMemory> {
            self.inner.host_memory()
        }
        fn raise_irq(&self, irq: Irq) -> Result<(), EpcError> {
            let msix = self.real.load(Ordering::Relaxed);
            match irq {
                Irq::Msix(_) if !msix => return Err(EpcError::IrqNotEnabled(format!("{irq:?}"))),
                Irq::Intx(_) if msix => return Err(EpcError::IrqNotEnabled(format!("{irq:?}"))),
                _ => {}
            }
            self.raised.lock().unwrap().push(irq);
            Ok(())
        }
        fn msix_enabled(&self) -> bool {
            self.cached.load(Ordering::Relaxed)
        }
        fn msix_enabled_now(&self) -> bool {
            let on = self.real.load(Ordering::Relaxed);
            self.cached.store(on, Ordering::Relaxed);
            on
        }
    }

    fn stale(cached: bool, real: bool) -> Arc<Stale> {
        Arc::new(Stale {
            inner: LoopbackController::with_defaults().unwrap(),
            cached: AtomicBool::new(cached),
            real: AtomicBool::new(real),
            raised: Mutex::new(Vec::new()),
        })
    }

    #[test]
    fn a_stale_answer_about_msix_never_loses_the_interrupt() {
        // Cached "off", MSI-X on again: the queue's vector is raised, not INTx.
        let c = stale(false, true);
        let irq = Interrupt::new(c.clone());
        assert!(irq.signal_queue(1));
        assert_eq!(*c.raised.lock().unwrap(), [Irq::Msix(1)]);

        // Cached "on", MSI-X since disabled (the host fell back to INTx): INTx.
        let c = stale(true, false);
        let irq = Interrupt::new(c.clone());
        assert!(irq.signal_queue(1));
        assert_eq!(*c.raised.lock().unwrap(), [Irq::Intx(true)]);

        // Both agree: one raise, no second question needed.
        let c = stale(true, true);
        let irq = Interrupt::new(c.clone());
        assert!(irq.signal_queue(0));
        assert!(!irq.signal_queue(NO_VECTOR));
        assert_eq!(*c.raised.lock().unwrap(), [Irq::Msix(0)]);
    }
}
