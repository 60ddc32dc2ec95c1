//! Shared fixtures of the transport tests: a loopback rig running the real
//! [`VirtioPciFunction`], a tiny test device, and a watchdog that bounds every test in time.

#![allow(dead_code)]

use epf_device::{DescriptorChain, DeviceContext, DeviceError, VirtioDevice};
use epf_loopback::LoopbackOptions;
// Each test binary uses a subset of the shared fixtures.
#[allow(unused_imports)]
pub use epf_virtio_pci::testing::{bounded, wait_until, Rig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The transport tests' rig: the function on a default loopback host.
pub fn rig(device: Box<dyn VirtioDevice>) -> Rig {
    Rig::with_options(LoopbackOptions::default(), device)
}

/// The test device's device-specific feature bits.
pub const DEV_F_A: u64 = 1 << 0;
pub const DEV_F_B: u64 = 1 << 3;
/// A device-specific bit the test device does NOT offer.
pub const DEV_F_UNOFFERED: u64 = 1 << 5;
/// Device type of the test device (0x1040 + 42 = 0x106a).
pub const TEST_DEVICE_TYPE: u32 = 42;
pub const TEST_QUEUE_MAX: [u16; 2] = [256, 64];
/// Initial device configuration: a magic word, then a 4-byte field queue 1 sets.
pub const CONFIG_MAGIC: u32 = 0xfeed_c0de;
pub const CONFIG_LEN: usize = 16;
/// Byte every writable byte of a queue-0 chain is filled with.
pub const FILL_BYTE: u8 = 0xa5;

/// What the test observes of the test device.
#[derive(Default)]
pub struct Probe {
    pub activations: AtomicU64,
    pub resets: AtomicU64,
    /// Milliseconds `reset()` takes (a slow device).
    pub reset_delay_ms: AtomicU64,
    pub chains: [AtomicU64; 2],
    /// Run, one per occasion, each time a queue-0 pass finds the ring empty (lets a test act
    /// as a driver racing the device's re-arming of notifications).
    pub on_empty: std::sync::Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

/// A tiny device: queue 0 fills every writable byte of each chain with [`FILL_BYTE`];
/// queue 1 takes up to 4 readable bytes of each chain and writes them into the device
/// configuration at offset 4 (a device-side configuration change).
pub struct TestDevice {
    pub probe: Arc<Probe>,
    chain: DescriptorChain,
}

impl TestDevice {
    pub fn boxed() -> (Box<dyn VirtioDevice>, Arc<Probe>) {
        let probe = Arc::new(Probe::default());
        (
            Box::new(TestDevice {
                probe: probe.clone(),
                chain: DescriptorChain::default(),
            }),
            probe,
        )
    }
}

impl VirtioDevice for TestDevice {
    fn device_type(&self) -> u32 {
        TEST_DEVICE_TYPE
    }

    fn device_features(&self) -> u64 {
        DEV_F_A | DEV_F_B
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        TEST_QUEUE_MAX.to_vec()
    }

    fn initial_config(&self) -> Vec<u8> {
        let mut c = vec![0; CONFIG_LEN];
        c[..4].copy_from_slice(&CONFIG_MAGIC.to_le_bytes());
        c
    }

    fn activate(&mut self, _ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        self.probe.activations.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn queue_notify(&mut self, q: usize, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        let mem = ctx.memory().clone();
        loop {
            let queue = ctx.queue(q)?;
            if !queue.pop(&mut self.chain).map_err(DeviceError::queue(q))? {
                if q == 0 {
                    let hook = {
                        let mut hooks = self.probe.on_empty.lock().unwrap();
                        (!hooks.is_empty()).then(|| hooks.remove(0))
                    };
                    if let Some(hook) = hook {
                        hook();
                    }
                }
                return Ok(());
            }
            let written = match q {
                0 => {
                    let mut w = self.chain.writer(mem.as_ref());
                    let fill = vec![FILL_BYTE; w.remaining()];
                    w.write_all(&fill).map_err(DeviceError::queue(q))?;
                    w.written()
                }
                _ => {
                    let mut r = self.chain.reader(mem.as_ref());
                    let mut b = [0u8; 4];
                    let n = r.read(&mut b).map_err(DeviceError::queue(q))?;
                    ctx.config().update(4, &b[..n]);
                    0
                }
            };
            self.probe.chains[q].fetch_add(1, Ordering::SeqCst);
            ctx.queue(q)?
                .add_used(self.chain.head(), written)
                .map_err(DeviceError::queue(q))?;
        }
    }

    fn reset(&mut self) {
        let ms = self.probe.reset_delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
        self.probe.resets.fetch_add(1, Ordering::SeqCst);
    }
}
