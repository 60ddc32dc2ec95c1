//! A throwaway device, written as a new device is (docs/devices.md): `null` takes every buffer
//! the driver posts on its one queue, counts it, and gives it back untouched. This module is
//! the whole device; the test adds it to the command with one registration line.

use clap::builder::TypedValueParser as _;
use epf_device::{
    check_queue_size, parse_args, BuildError, CounterSource, Counters, DescriptorChain,
    DeviceContext, DeviceError, DeviceInfo, DeviceKind, VirtioDevice,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// An unassigned virtio device type (the modern PCI ID is 0x1040 + 63 = 0x107f, the last one).
pub const NULL_TYPE: u32 = 63;

/// The device.
pub struct NullDevice {
    queue_size: u16,
    chain: DescriptorChain,
    counters: Arc<NullCounters>,
}

/// `null: chains=.. bytes=..`: buffers taken, and the readable bytes they held.
#[derive(Default)]
pub struct NullCounters {
    chains: AtomicU64,
    bytes: AtomicU64,
}

impl CounterSource for NullCounters {
    fn report(&self, out: &mut Counters) {
        out.line("null")
            .field("chains", self.chains.load(Ordering::Relaxed))
            .field("bytes", self.bytes.load(Ordering::Relaxed));
    }
}

impl VirtioDevice for NullDevice {
    fn device_type(&self) -> u32 {
        NULL_TYPE
    }

    fn device_features(&self) -> u64 {
        0
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
        let queue = ctx.queue(q)?;
        while queue.pop(&mut self.chain).map_err(DeviceError::queue(q))? {
            // Counted before the buffer goes back: the host sees the counters first.
            self.counters.chains.fetch_add(1, Ordering::Relaxed);
            self.counters
                .bytes
                .fetch_add(self.chain.readable_len(), Ordering::Relaxed);
            queue
                .add_used(self.chain.head(), 0)
                .map_err(DeviceError::queue(q))?;
        }
        Ok(())
    }

    fn reset(&mut self) {}

    fn stats(&self) -> Option<Arc<dyn CounterSource>> {
        Some(self.counters.clone())
    }
}

/// The options of `virtio-epf null`.
#[derive(clap::Args)]
pub struct NullArgs {
    /// Queue size (a power of two, at most 32768).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).try_map(check_queue_size))]
    pub queue_size: u16,
}

/// The device, as the command serves it.
pub struct Null;

impl DeviceKind for Null {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            name: "null",
            about: "virtio-null: every buffer is taken and given back untouched",
            virtio_type: NULL_TYPE,
            legacy_pci_id: None,
        }
    }

    fn args(&self, cmd: clap::Command) -> clap::Command {
        <NullArgs as clap::Args>::augment_args(cmd)
    }

    fn build(&self, args: &clap::ArgMatches) -> Result<Box<dyn VirtioDevice>, BuildError> {
        let a: NullArgs = parse_args(args)?;
        Ok(Box::new(NullDevice {
            queue_size: a.queue_size,
            chain: DescriptorChain::default(),
            counters: Arc::default(),
        }))
    }
}
