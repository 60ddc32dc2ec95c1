//! Interrupt delivery: MSI-X when the host enabled it (per-queue and configuration vectors),
//! otherwise INTx with the ISR status byte (virtio 1.2 section 4.1.4.5), whose read clears it
//! and deasserts the line.

use crate::NO_VECTOR;
use epf_epc::{EndpointController, Irq};
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

    fn signal(&self, vector: u16, isr_bit: u8) -> bool {
        self.isr.fetch_or(isr_bit, Ordering::AcqRel);
        let r = if self.epc.msix_enabled() {
            if vector == NO_VECTOR {
                return false;
            }
            self.epc.raise_irq(Irq::Msix(vector))
        } else {
            self.epc.raise_irq(Irq::Intx(true))
        };
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
