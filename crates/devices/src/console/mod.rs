//! virtio-console (virtio 1.2 section 5.3) with a single port (no MULTIPORT): receiveq 0
//! carries backend input to the host, transmitq 1 carries host output to the backend.
//!
//! Back-pressure both ways: host output is taken from the transmit ring only while the output
//! pipe has room (a chain that does not fit stays in the ring until the output thread drains
//! the pipe and wakes us), and backend input waits in the input pipe — whose bound in turn
//! stops the input thread reading — until the host posts receive buffers. Nothing is dropped.
//!
//! [`ConsoleDevice`] is the device; [`Console`] (in `kind`) is how the command offers it.

mod backend;
mod kind;
mod pipe;

pub use backend::Backend;
pub use kind::{BackendArg, Console, ConsoleArgs};
pub use pipe::Pipe;

use backend::{spawn_input, spawn_output, WakerSlot};
use epf_device::{
    CounterSource, Counters, DescriptorChain, DeviceContext, DeviceError, VirtioDevice,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;

const RX: usize = 0;
const TX: usize = 1;
/// Default bound of each direction's pipe.
pub const DEFAULT_PIPE_BYTES: usize = 256 * 1024;

/// The console device.
pub struct ConsoleDevice {
    queue_size: u16,
    out: Arc<Pipe>,
    inp: Arc<Pipe>,
    waker: Arc<WakerSlot>,
    chain: DescriptorChain,
    /// The transmit chain being copied out, and how many bytes of it are in the pipe. A chain
    /// that fits the pipe waits for room and moves whole; a larger one (only a hostile or
    /// unusual driver posts those) moves in pieces as the backend drains the pipe, so the
    /// device never buffers more than `pipe_bytes` per direction, whatever the host posts. A
    /// reset in the middle of such a chain leaves its first pieces with the backend.
    tx_chain: DescriptorChain,
    tx_done: Option<usize>,
    counters: Arc<ConsoleCounters>,
}

/// `console: to_backend=.. to_host=.. pending_out=.. pending_in=..`: bytes moved each way,
/// and bytes waiting in each direction's pipe.
pub struct ConsoleCounters {
    pub to_backend: AtomicU64,
    pub to_host: AtomicU64,
    out: Arc<Pipe>,
    inp: Arc<Pipe>,
}

impl CounterSource for ConsoleCounters {
    fn report(&self, out: &mut Counters) {
        out.line("console")
            .field("to_backend", self.to_backend.load(Ordering::Relaxed))
            .field("to_host", self.to_host.load(Ordering::Relaxed))
            .field("pending_out", self.out.len())
            .field("pending_in", self.inp.len());
    }
}

impl ConsoleDevice {
    /// A console whose port is connected to `backend`, buffering at most `pipe_bytes` per
    /// direction.
    pub fn new(backend: Backend, pipe_bytes: usize) -> std::io::Result<Self> {
        let out = Arc::new(Pipe::new(pipe_bytes.max(1)));
        let inp = Arc::new(Pipe::new(pipe_bytes.max(1)));
        let waker = Arc::new(WakerSlot::default());
        spawn_output(backend.output, out.clone(), waker.clone())?;
        spawn_input(backend.input, inp.clone(), waker.clone())?;
        let counters = Arc::new(ConsoleCounters {
            to_backend: AtomicU64::new(0),
            to_host: AtomicU64::new(0),
            out: out.clone(),
            inp: inp.clone(),
        });
        Ok(ConsoleDevice {
            queue_size: 256,
            out,
            inp,
            waker,
            chain: DescriptorChain::default(),
            tx_chain: DescriptorChain::default(),
            tx_done: None,
            counters,
        })
    }

    /// Host output: copy transmit chains into the output pipe while it has room.
    fn transmit(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        let mem = ctx.memory().clone();
        let Some(q) = ctx.try_queue(TX) else {
            return Ok(());
        };
        let mut buf = [0u8; 4096];
        loop {
            if let Some(done) = self.tx_done {
                let mut r = self.tx_chain.reader(mem.as_ref());
                r.skip(done);
                let mut moved = 0;
                loop {
                    let room = self.out.room().min(buf.len());
                    if room == 0 {
                        break;
                    }
                    let n = r.read(&mut buf[..room]).map_err(DeviceError::queue(TX))?;
                    if n == 0 {
                        break;
                    }
                    self.out.push(&buf[..n]);
                    moved += n;
                }
                self.counters
                    .to_backend
                    .fetch_add(moved as u64, Ordering::Relaxed);
                if r.remaining() > 0 {
                    // The backend's next drain wakes us to go on.
                    self.tx_done = Some(done + moved);
                    return Ok(());
                }
                self.tx_done = None;
                q.add_used(self.tx_chain.head(), 0)
                    .map_err(DeviceError::queue(TX))?;
            }
            if !q.pop(&mut self.chain).map_err(DeviceError::queue(TX))? {
                return Ok(());
            }
            let len = self.chain.readable_len() as usize;
            if len <= self.out.capacity() && len > self.out.room() {
                // A chain that fits the pipe moves whole, once there is room: a reset never
                // leaves part of it with the backend.
                q.undo_pop();
                return Ok(());
            }
            std::mem::swap(&mut self.chain, &mut self.tx_chain);
            self.tx_done = Some(0);
        }
    }

    /// Backend input: fill receive chains while there is input.
    fn receive(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        let mem = ctx.memory().clone();
        let Some(q) = ctx.try_queue(RX) else {
            return Ok(());
        };
        let mut buf = [0u8; 4096];
        while !self.inp.is_empty() {
            if !q.pop(&mut self.chain).map_err(DeviceError::queue(RX))? {
                break;
            }
            let mut w = self.chain.writer(mem.as_ref());
            while w.remaining() > 0 {
                let want = w.remaining().min(buf.len());
                let n = self.inp.pop_into(&mut buf[..want]);
                if n == 0 {
                    break;
                }
                w.write_all(&buf[..n]).map_err(DeviceError::queue(RX))?;
            }
            let written = w.written();
            q.add_used(self.chain.head(), written)
                .map_err(DeviceError::queue(RX))?;
            self.counters
                .to_host
                .fetch_add(written as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl VirtioDevice for ConsoleDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn device_features(&self) -> u64 {
        // Each queue completes its chains in the order it popped them (a transmit chain
        // waiting for pipe room holds back the ones after it).
        1 << virtio_bindings::virtio_config::VIRTIO_F_IN_ORDER
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![self.queue_size; 2]
    }

    fn initial_config(&self) -> Vec<u8> {
        // cols, rows, max_nr_ports, emerg_wr: only meaningful with features we don't offer.
        vec![0; 12]
    }

    fn activate(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        self.waker.set(ctx.waker());
        Ok(())
    }

    fn queue_notify(&mut self, q: usize, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        match q {
            RX => self.receive(ctx),
            TX => self.transmit(ctx),
            _ => Ok(()),
        }
    }

    fn wake(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        self.transmit(ctx)?;
        self.receive(ctx)
    }

    fn reset(&mut self) {
        self.tx_done = None;
    }

    fn stats(&self) -> Option<Arc<dyn CounterSource>> {
        Some(self.counters.clone())
    }
}

impl Drop for ConsoleDevice {
    fn drop(&mut self) {
        self.out.close();
        self.inp.close();
    }
}
