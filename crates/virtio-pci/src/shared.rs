//! The state a function's threads share: the register file, the device configuration space,
//! the interrupt state, the counters and the controller. The link thread (register accesses),
//! the worker and the poller each hold it; none of them owns another.

use crate::interrupt::Interrupt;
use crate::notify_data::NotifyData;
use crate::registers::Registers;
use crate::stats::FunctionStats;
use epf_device::DeviceConfig;
use epf_epc::{sync, EndpointController};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// State shared by the register engine, the worker and the poller.
pub(crate) struct Shared {
    pub(crate) regs: Mutex<Registers>,
    pub(crate) config: DeviceConfig,
    pub(crate) interrupt: Interrupt,
    pub(crate) stats: FunctionStats,
    pub(crate) epc: Arc<dyn EndpointController>,
    /// Signalled by the worker when a reset completes.
    pub(crate) reset_done: Condvar,
    /// The latest VIRTIO_F_NOTIFICATION_DATA value of each queue.
    pub(crate) notify_data: NotifyData,
}

impl Shared {
    /// Locks the register file (a poisoned lock is still usable: the state is plain data).
    pub(crate) fn regs(&self) -> MutexGuard<'_, Registers> {
        sync::lock(&self.regs)
    }

    /// A copy of the device configuration space.
    pub(crate) fn config_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; self.config.len()];
        self.config.read(0, &mut b);
        b
    }
}
