//! What the transport lends a device while it handles an event.

use crate::{DeviceConfig, DeviceError, Queue, Waker};
use epf_epc::HostMemory;
use std::sync::Arc;

/// The activated device's view of its driver: negotiated features, queues, configuration
/// space and a waker for backend threads.
pub struct DeviceContext<'a> {
    features: u64,
    queues: &'a mut [Option<Queue>],
    config: &'a DeviceConfig,
    waker: &'a Waker,
    memory: &'a Arc<dyn HostMemory>,
}

impl<'a> DeviceContext<'a> {
    /// Built by the transport for each call into the device.
    pub fn new(
        features: u64,
        queues: &'a mut [Option<Queue>],
        config: &'a DeviceConfig,
        waker: &'a Waker,
        memory: &'a Arc<dyn HostMemory>,
    ) -> Self {
        DeviceContext {
            features,
            queues,
            config,
            waker,
            memory,
        }
    }

    /// The negotiated feature bits.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Whether feature `bit` was negotiated.
    pub fn has_feature(&self, bit: u32) -> bool {
        bit < 64 && self.features & (1 << bit) != 0
    }

    /// Queue `index` if the driver enabled it.
    pub fn queue(&mut self, index: usize) -> Result<&mut Queue, DeviceError> {
        self.queues
            .get_mut(index)
            .and_then(|q| q.as_mut())
            .ok_or_else(|| DeviceError::Protocol(format!("queue {index} is not enabled")))
    }

    /// Queue `index` if the driver enabled it, or `None`.
    pub fn try_queue(&mut self, index: usize) -> Option<&mut Queue> {
        self.queues.get_mut(index).and_then(|q| q.as_mut())
    }

    /// Number of queue slots (enabled or not).
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// The device configuration space.
    pub fn config(&self) -> &DeviceConfig {
        self.config
    }

    /// A waker for backend threads.
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Host memory (for reading and writing the buffers of popped chains).
    pub fn memory(&self) -> &Arc<dyn HostMemory> {
        self.memory
    }
}
