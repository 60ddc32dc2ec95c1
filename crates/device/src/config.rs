//! The device-specific configuration space, shared between the device (which may change it
//! at run time, e.g. a link status or a capacity) and the transport (which serves the host's
//! reads and bumps `config_generation` on every change). Most device configuration is
//! read-only to the driver; a device with driver-writable fields (virtio-gpu's
//! `events_clear`) installs a [`ConfigWriteHook`] that applies the driver's writes.

use epf_epc::sync;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

/// Applies a driver write of `data` at `offset` to the configuration bytes (`bytes`), as the
/// device's spec says (e.g. "write 1 to clear" bits elsewhere in the space). Runs on the
/// transport's register thread with the space locked: it must be quick and must not block.
pub type ConfigWriteHook = Box<dyn Fn(&mut Vec<u8>, usize, &[u8]) + Send + Sync>;

/// Device configuration bytes plus change tracking.
#[derive(Default)]
pub struct DeviceConfig {
    bytes: Mutex<Vec<u8>>,
    generation: AtomicU8,
    changed: AtomicBool,
    write_hook: OnceLock<ConfigWriteHook>,
}

impl std::fmt::Debug for DeviceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceConfig")
            .field("bytes", &self.bytes)
            .field("generation", &self.generation)
            .field("writable", &self.write_hook.get().is_some())
            .finish()
    }
}

impl DeviceConfig {
    /// A configuration space holding `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        DeviceConfig {
            bytes: Mutex::new(bytes),
            generation: AtomicU8::new(0),
            changed: AtomicBool::new(false),
            write_hook: OnceLock::new(),
        }
    }

    /// Makes the space writable by the driver through `hook` (once; later calls are ignored).
    pub fn set_write_hook(&self, hook: ConfigWriteHook) {
        let _ = self.write_hook.set(hook);
    }

    /// Host write: applied by the device's hook (bumping the generation, without a
    /// configuration-change interrupt: the driver made the change), or ignored when the space
    /// is read-only. Returns whether it was applied.
    pub fn write(&self, offset: u64, data: &[u8]) -> bool {
        let (Some(hook), Ok(offset)) = (self.write_hook.get(), usize::try_from(offset)) else {
            return false;
        };
        let mut bytes = self.lock();
        hook(&mut bytes, offset, data);
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
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

    #[test]
    fn writes_need_a_hook_and_do_not_signal_a_change() {
        let c = DeviceConfig::new(vec![0xff, 0]);
        assert!(!c.write(1, &[1]), "read-only without a hook");
        c.set_write_hook(Box::new(|b, off, data| {
            // Write-1-to-clear of byte 0 through byte 1.
            if off == 1 {
                b[0] &= !data[0];
            }
        }));
        assert!(c.write(1, &[0x0f]));
        let mut b = [0; 2];
        c.read(0, &mut b);
        assert_eq!(b, [0xf0, 0]);
        assert_eq!(c.generation(), 1);
        assert!(!c.take_changed());
    }
}
