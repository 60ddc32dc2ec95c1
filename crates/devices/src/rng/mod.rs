//! virtio-rng (virtio 1.2 section 5.4): one request queue; every device-writable buffer the
//! driver posts is filled with bytes from the OS CSPRNG (`getrandom(2)`).
//!
//! [`RngDevice`] is the device; [`Rng`] (in `kind`) is how the command offers it.

mod kind;

pub use kind::{Rng, RngArgs};

use epf_device::{
    CounterSource, Counters, DescriptorChain, DeviceContext, DeviceError, VirtioDevice,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

/// Largest number of bytes handed out per request (the driver asks for small amounts; a
/// bound keeps one huge buffer from stalling the worker).
const MAX_PER_REQUEST: usize = 64 * 1024;

/// The entropy device.
pub struct RngDevice {
    queue_size: u16,
    chain: DescriptorChain,
    counters: Arc<RngCounters>,
}

/// `rng: requests=.. bytes=..`: buffers filled and the bytes put in them.
#[derive(Debug, Default)]
pub struct RngCounters {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
}

impl CounterSource for RngCounters {
    fn report(&self, out: &mut Counters) {
        out.line("rng")
            .field("requests", self.requests.load(Ordering::Relaxed))
            .field("bytes", self.bytes.load(Ordering::Relaxed));
    }
}

impl RngDevice {
    /// A device whose request queue holds up to `queue_size` buffers.
    pub fn new(queue_size: u16) -> Self {
        RngDevice {
            queue_size,
            chain: DescriptorChain::default(),
            counters: Arc::default(),
        }
    }
}

impl Default for RngDevice {
    fn default() -> Self {
        Self::new(256)
    }
}

/// Fills `buf` from the kernel CSPRNG.
fn fill_random(buf: &mut [u8]) -> Result<(), DeviceError> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(DeviceError::backend("getrandom")(e));
        }
        done += n as usize;
    }
    Ok(())
}

impl VirtioDevice for RngDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn device_features(&self) -> u64 {
        // Every request is filled and completed as it is popped: in order.
        1 << virtio_bindings::virtio_config::VIRTIO_F_IN_ORDER
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![self.queue_size]
    }

    fn initial_config(&self) -> Vec<u8> {
        Vec::new()
    }

    fn activate(&mut self, _ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        Ok(())
    }

    fn queue_notify(&mut self, q: usize, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        let mem = ctx.memory().clone();
        let queue = ctx.queue(q)?;
        let mut buf = [0u8; 4096];
        while queue.pop(&mut self.chain).map_err(DeviceError::queue(q))? {
            let mut w = self.chain.writer(mem.as_ref());
            let want = w.remaining().min(MAX_PER_REQUEST);
            let mut left = want;
            while left > 0 {
                let n = left.min(buf.len());
                fill_random(&mut buf[..n])?;
                w.write_all(&buf[..n]).map_err(DeviceError::queue(q))?;
                left -= n;
            }
            let written = w.written();
            queue
                .add_used(self.chain.head(), written)
                .map_err(DeviceError::queue(q))?;
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            self.counters
                .bytes
                .fetch_add(written as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    fn reset(&mut self) {}

    fn stats(&self) -> Option<Arc<dyn CounterSource>> {
        Some(self.counters.clone())
    }
}
