//! virtio-console (virtio 1.2 section 5.3) with a single port (no MULTIPORT): receiveq 0
//! carries backend input to the host, transmitq 1 carries host output to the backend.
//!
//! Back-pressure both ways: host output is taken from the transmit ring only while the output
//! pipe has room (a chain that does not fit stays in the ring until the output thread drains
//! the pipe and wakes us), and backend input waits in the input pipe — whose bound in turn
//! stops the input thread reading — until the host posts receive buffers. Nothing is dropped.

mod backend;
mod pipe;

pub use backend::Backend;
pub use pipe::Pipe;

use backend::{spawn_input, spawn_output, WakerSlot};
use epf_device::{DescriptorChain, DeviceContext, DeviceError, VirtioDevice};
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
    to_backend: AtomicU64,
    to_host: AtomicU64,
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
        Ok(ConsoleDevice {
            queue_size: 256,
            out,
            inp,
            waker,
            chain: DescriptorChain::default(),
            to_backend: AtomicU64::new(0),
            to_host: AtomicU64::new(0),
        })
    }

    /// Host output: copy transmit chains into the output pipe while it has room.
    fn transmit(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        let mem = ctx.memory().clone();
        let Some(q) = ctx.try_queue(TX) else {
            return Ok(());
        };
        let mut buf = [0u8; 4096];
        while q.pop(&mut self.chain).map_err(DeviceError::queue(TX))? {
            let len = self.chain.readable_len() as usize;
            // An empty pipe takes any chain, so a chain larger than the bound still moves.
            if len > self.out.room() && !self.out.is_empty() {
                q.undo_pop();
                break;
            }
            let mut r = self.chain.reader(mem.as_ref());
            loop {
                let n = r.read(&mut buf).map_err(DeviceError::queue(TX))?;
                if n == 0 {
                    break;
                }
                self.out.push(&buf[..n]);
            }
            q.add_used(self.chain.head(), 0)
                .map_err(DeviceError::queue(TX))?;
            self.to_backend.fetch_add(len as u64, Ordering::Relaxed);
        }
        Ok(())
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
            self.to_host.fetch_add(written as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl VirtioDevice for ConsoleDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn device_features(&self) -> u64 {
        0
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

    fn reset(&mut self) {}

    fn stats(&self) -> String {
        format!(
            "console: to_backend={} to_host={} pending_out={} pending_in={}",
            self.to_backend.load(Ordering::Relaxed),
            self.to_host.load(Ordering::Relaxed),
            self.out.len(),
            self.inp.len()
        )
    }
}

impl Drop for ConsoleDevice {
    fn drop(&mut self) {
        self.out.close();
        self.inp.close();
    }
}
