//! The device-specific configuration space, shared between the device (which may change it
//! at run time, e.g. a link status or a capacity) and the transport (which serves the host's
//! reads and bumps `config_generation` on every change).

use epf_epc::sync;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

/// Device configuration bytes plus change tracking.
#[derive(Debug, Default)]
pub struct DeviceConfig {
    bytes: Mutex<Vec<u8>>,
    generation: AtomicU8,
    changed: AtomicBool,
}

impl DeviceConfig {
    /// A configuration space holding `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        DeviceConfig {
            bytes: Mutex::new(bytes),
            generation: AtomicU8::new(0),
            changed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        sync::lock(&self.bytes)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the space is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Host read: bytes past the end read as zero.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let bytes = self.lock();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| bytes.get(o).copied())
                .unwrap_or(0);
        }
    }

    /// Device-side update: replaces bytes at `offset` (growing the space if needed), bumps the
    /// generation and flags a configuration change for the transport to signal.
    pub fn update(&self, offset: usize, data: &[u8]) {
        let mut bytes = self.lock();
        if bytes.len() < offset + data.len() {
            bytes.resize(offset + data.len(), 0);
        }
        bytes[offset..offset + data.len()].copy_from_slice(data);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.changed.store(true, Ordering::Release);
    }

    /// The current generation counter (the `config_generation` register).
    pub fn generation(&self) -> u8 {
        self.generation.load(Ordering::Acquire)
    }

    /// Returns and clears the "changed since last asked" flag.
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_bumps_generation_and_reads_past_end_are_zero() {
        let c = DeviceConfig::new(vec![1, 2, 3]);
        let mut b = [0xff; 4];
        c.read(1, &mut b);
        assert_eq!(b, [2, 3, 0, 0]);
        c.read(u64::MAX, &mut b);
        assert_eq!(b, [0; 4]);
        assert!(!c.take_changed());
        c.update(2, &[9, 9]);
        assert_eq!(c.generation(), 1);
        assert!(c.take_changed());
        assert!(!c.take_changed());
        c.read(0, &mut b);
        assert_eq!(b, [1, 2, 9, 9]);
    }
}
