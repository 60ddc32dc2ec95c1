//! virtio-blk (virtio 1.2 section 5.2, device ID 2): a raw disk image (regular file or block
//! device) served to the host as `/dev/vdX`.
//!
//! * [`image`]: opening and checking the image, its geometry, discard / zeroing modes;
//! * [`config`]: offered features and the configuration space;
//! * [`request`]: chain parsing and validation into requests or immediate answers;
//! * `kind`: the `blk` subcommand ([`Blk`], [`BlkArgs`]);
//! * [`engine`]: the I/O engine interface; [`pool`] (threads + blocking I/O) and [`uring`]
//!   (io_uring from the worker thread) implement it; [`io`]: buffers, copies and system calls
//!   they share.
//!
//! The device itself, on the worker thread, pops chains, parses them, answers the ones that
//! need no I/O at once and hands the rest to the engine; it never waits for I/O. Completions
//! come back through [`Engine::reap`] — right after submission for I/O that completed inline,
//! or in `wake()` when an engine announced them through the [`Waker`](epf_device::Waker) —
//! and are added to their queues' used rings in one go, so the transport raises one interrupt
//! per queue for the batch (EVENT_IDX permitting).
//!
//! Durability: FLUSH is always offered, and a flush completes only after `fdatasync` of the
//! image returned, which covers every write completed before it. If the driver does not
//! negotiate FLUSH, each write (and discard / write-zeroes) is made durable before it
//! completes (`RWF_DSYNC` / `fdatasync`). Either way a write the host saw as flushed survives
//! the endpoint process being killed.
//!
//! Reset: the driver's buffers may be reused as soon as the reset completes, so
//! [`VirtioDevice::reset`] waits for the requests in flight (their buffers are written before
//! the reset is reported done) and drops their completions. This is the one place the device
//! blocks the worker, as the transport's two-phase reset expects.

pub mod config;
pub mod engine;
mod error;
pub mod image;
pub mod io;
mod kind;
pub mod pool;
pub mod request;
pub mod uring;

#[cfg(test)]
mod tests;

use config::BlkParams;
use engine::{Engine, EngineKind};
use epf_device::{
    CounterSource, Counters, DescriptorChain, DeviceContext, DeviceError, VirtioDevice,
};
pub use error::{
    check_queue_size, check_queues, check_serial, check_threads, BlkError, ImageError,
};
use image::{Image, ImageOptions};
pub use kind::{Blk, BlkArgs};
use request::{Completion, Kind, Limits, Parsed};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;

/// Default size of each request queue.
pub const DEFAULT_QUEUE_SIZE: u16 = 256;
/// Smallest request queue: a header, one data segment and the status descriptor fit it.
pub const MIN_QUEUE_SIZE: u16 = 4;
/// Largest request queue (QEMU's limit for its virtio devices, VIRTQUEUE_MAX_SIZE): the
/// engines size their submission rings and head tables by queues x queue size.
pub const MAX_QUEUE_SIZE: u16 = 1024;
/// Most request queues the device offers.
pub const MAX_QUEUES: u16 = 64;
/// Most I/O threads of the thread-pool engine.
pub const MAX_THREADS: usize = 256;
/// Requests taken from one queue in one go, in units of the queue size.
pub const QUEUE_BUDGET: usize = 4;
/// Length of the GET_ID identifier.
pub const ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;

/// Everything needed to build a block device.
#[derive(Clone, Debug)]
pub struct BlkOptions {
    pub image: ImageOptions,
    /// The GET_ID string (at most 20 bytes).
    pub serial: Option<String>,
    pub num_queues: u16,
    pub queue_size: u16,
    pub engine: EngineKind,
    /// Threads of the thread-pool engine.
    pub threads: usize,
}

impl BlkOptions {
    /// Defaults for `path`: read-write, buffered, one queue, io_uring engine.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        BlkOptions {
            image: ImageOptions {
                path: path.into(),
                read_only: false,
                direct: false,
            },
            serial: None,
            num_queues: 1,
            queue_size: DEFAULT_QUEUE_SIZE,
            engine: EngineKind::IoUring,
            threads: pool::DEFAULT_THREADS,
        }
    }
}

/// Counters, readable while the device runs.
#[derive(Debug, Default)]
pub struct BlkStats {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub flushes: AtomicU64,
    pub discards: AtomicU64,
    pub write_zeroes: AtomicU64,
    pub get_ids: AtomicU64,
    pub unsupported: AtomicU64,
    pub errors: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Requests handed to the engine, and those it completed.
    pub submitted: AtomicU64,
    pub completed: AtomicU64,
    /// The engine in use, once started.
    pub engine: OnceLock<EngineKind>,
}

impl BlkStats {
    fn count(&self, kind: Kind, status: u8, bytes: u64) {
        let c = match kind {
            Kind::Read => &self.reads,
            Kind::Write => &self.writes,
            Kind::Flush => &self.flushes,
            Kind::Discard => &self.discards,
            Kind::WriteZeroes => &self.write_zeroes,
            Kind::GetId => &self.get_ids,
            Kind::Unsupported => &self.unsupported,
            Kind::Invalid => &self.errors,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if status == request::S_OK {
            match kind {
                Kind::Read => self.bytes_read.fetch_add(bytes, Ordering::Relaxed),
                Kind::Write => self.bytes_written.fetch_add(bytes, Ordering::Relaxed),
                _ => 0,
            };
        } else if status == request::S_IOERR && kind != Kind::Invalid {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `blk: reads=.. writes=.. flushes=.. discards=.. write_zeroes=.. get_ids=.. unsupported=..
/// errors=.. bytes_read=.. bytes_written=.. in_flight=.. engine=..`.
impl CounterSource for BlkStats {
    fn report(&self, out: &mut Counters) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut line = out.line("blk");
        line.field("reads", g(&self.reads))
            .field("writes", g(&self.writes))
            .field("flushes", g(&self.flushes))
            .field("discards", g(&self.discards))
            .field("write_zeroes", g(&self.write_zeroes))
            .field("get_ids", g(&self.get_ids))
            .field("unsupported", g(&self.unsupported))
            .field("errors", g(&self.errors))
            .field("bytes_read", g(&self.bytes_read))
            .field("bytes_written", g(&self.bytes_written))
            .field(
                "in_flight",
                g(&self.submitted).saturating_sub(g(&self.completed)),
            );
        if let Some(e) = self.engine.get() {
            line.field("engine", e);
        }
    }
}

/// The block device.
pub struct BlkDevice {
    image: Arc<Image>,
    params: BlkParams,
    id: [u8; ID_BYTES],
    engine: Box<dyn Engine>,
    engine_kind: EngineKind,
    chain: DescriptorChain,
    completions: Vec<Completion>,
    limits: Limits,
    stats: Arc<BlkStats>,
    /// Queues with requests left over when their budget ran out (bit per queue).
    pending: u64,
    /// Heads each queue has with the engine.
    in_flight: Vec<InFlight>,
}

/// The heads of one queue that the engine holds: at most one request per head (a head made
/// available again while the device owns it is a driver bug), so at most the queue size.
#[derive(Debug, Default, Clone)]
struct InFlight {
    heads: Vec<u64>,
    count: usize,
}

impl InFlight {
    /// Marks `head` in flight; false if it already was.
    fn insert(&mut self, head: u16) -> bool {
        let (w, b) = (usize::from(head) / 64, head % 64);
        if self.heads.len() <= w {
            self.heads.resize(w + 1, 0);
        }
        if self.heads[w] & (1 << b) != 0 {
            return false;
        }
        self.heads[w] |= 1 << b;
        self.count += 1;
        true
    }

    fn remove(&mut self, head: u16) {
        let (w, b) = (usize::from(head) / 64, head % 64);
        if let Some(word) = self.heads.get_mut(w).filter(|x| **x & (1 << b) != 0) {
            *word &= !(1 << b);
            self.count -= 1;
        }
    }
}

impl BlkDevice {
    /// Checks the options, opens the image and starts the I/O engine. Errors are one line,
    /// meant for the operator; the image is not modified.
    pub fn open(opts: &BlkOptions) -> Result<BlkDevice, BlkError> {
        let mut id = [0u8; ID_BYTES];
        if let Some(s) = &opts.serial {
            check_serial(s)?;
            id[..s.len()].copy_from_slice(s.as_bytes());
        }
        check_queues(opts.num_queues)?;
        check_queue_size(opts.queue_size)?;
        check_threads(opts.threads)?;
        let image = Arc::new(image::open(&opts.image)?);
        let params = BlkParams::new(&image, opts.num_queues, opts.queue_size);
        let (engine, engine_kind) = start_engine(&image, opts)?;
        let limits = Limits {
            capacity_bytes: image.size(),
            read_only: image.read_only(),
            flush: false,
            discard: false,
            write_zeroes: false,
        };
        let stats = Arc::new(BlkStats::default());
        let _ = stats.engine.set(engine_kind);
        Ok(BlkDevice {
            image,
            params,
            id,
            engine,
            engine_kind,
            chain: DescriptorChain::default(),
            completions: Vec::new(),
            limits,
            stats,
            pending: 0,
            in_flight: vec![InFlight::default(); usize::from(opts.num_queues)],
        })
    }

    /// The image's size in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.image.size()
    }

    /// The engine in use (io_uring falls back to threads where the kernel refuses it).
    pub fn engine_kind(&self) -> EngineKind {
        self.engine_kind
    }

    /// Adds the engine's completions to their used rings.
    fn complete(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        self.engine.reap(&mut self.completions);
        for c in self.completions.drain(..) {
            self.stats.completed.fetch_add(1, Ordering::Relaxed);
            self.stats.count(c.kind, c.status, c.bytes);
            let q = usize::from(c.queue);
            if let Some(f) = self.in_flight.get_mut(q) {
                f.remove(c.head);
            }
            if let Some(queue) = ctx.try_queue(q) {
                queue
                    .add_used(c.head, c.used_len)
                    .map_err(DeviceError::queue(q))?;
            }
        }
        Ok(())
    }

    /// Takes every available request of queue `q` and re-enables notifications, until the
    /// ring is seen empty *after* `avail_event` (or the flag) was published: only then is a
    /// later buffer sure to be notified. After [`QUEUE_BUDGET`] requests the device yields
    /// (marking the queue pending and waking itself) so that other queues and completions
    /// are served too.
    fn process_queue(&mut self, q: usize, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        let mem = ctx.memory().clone();
        let qi = u16::try_from(q).map_err(|_| DeviceError::Protocol(format!("queue {q}")))?;
        let budget = QUEUE_BUDGET * usize::from(self.params.queue_size);
        let mut taken = 0usize;
        let queue = ctx.queue(q)?;
        let cap = usize::from(self.params.queue_size);
        let in_flight = self
            .in_flight
            .get_mut(q)
            .ok_or_else(|| DeviceError::Protocol(format!("queue {q}")))?;
        loop {
            while taken < budget
                && in_flight.count < cap
                && queue.pop(&mut self.chain).map_err(DeviceError::queue(q))?
            {
                taken += 1;
                let parsed = request::parse(&self.chain, qi, &mem, &self.limits)
                    .map_err(DeviceError::queue(q))?;
                match parsed {
                    Err(request::Malformed) => {
                        return Err(DeviceError::Protocol(format!(
                            "queue {q}: request {} has no writable status byte",
                            self.chain.head()
                        )));
                    }
                    Ok(Parsed::Submit(req)) => {
                        if !in_flight.insert(req.head) {
                            return Err(DeviceError::Protocol(format!(
                                "queue {q}: head {} made available again while in flight",
                                req.head
                            )));
                        }
                        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
                        self.engine.submit(req);
                    }
                    Ok(Parsed::Done {
                        status,
                        status_addr,
                        used_len,
                        kind,
                        id,
                    }) => {
                        if let Some(n) = id {
                            let mut w = self.chain.writer(mem.as_ref());
                            w.write_all(&self.id[..n]).map_err(DeviceError::queue(q))?;
                        }
                        mem.write(status_addr, &[status])
                            .map_err(|e| DeviceError::queue(q)(e.into()))?;
                        queue
                            .add_used(self.chain.head(), used_len)
                            .map_err(DeviceError::queue(q))?;
                        self.stats.count(kind, status, 0);
                    }
                }
            }
            if taken >= budget {
                self.pending |= 1 << q;
                ctx.waker().wake();
                return Ok(());
            }
            if in_flight.count >= cap {
                // Every head is with the engine: go on when completions wake us.
                self.pending |= 1 << q;
                return Ok(());
            }
            if !queue.enable_notification().map_err(DeviceError::queue(q))? {
                return Ok(());
            }
        }
    }

    /// Drops everything in flight (blocking until the engine is idle).
    fn quiesce(&mut self) {
        self.engine.drain();
        self.engine.reap(&mut self.completions);
        let n = self.completions.len() as u64;
        self.stats.completed.fetch_add(n, Ordering::Relaxed);
        self.completions.clear();
        self.pending = 0;
        self.in_flight
            .iter_mut()
            .for_each(|f| *f = InFlight::default());
    }
}

fn start_engine(
    image: &Arc<Image>,
    opts: &BlkOptions,
) -> Result<(Box<dyn Engine>, EngineKind), BlkError> {
    let threads = || {
        pool::PoolEngine::new(image.clone(), opts.threads)
            .map(|e| (Box::new(e) as Box<dyn Engine>, EngineKind::Threads))
            .map_err(BlkError::Pool)
    };
    match opts.engine {
        EngineKind::Threads => threads(),
        EngineKind::IoUring => {
            let entries = u32::from(opts.num_queues) * u32::from(opts.queue_size);
            match uring::UringEngine::new(image.clone(), entries, opts.threads) {
                Ok(e) => Ok((Box::new(e), EngineKind::IoUring)),
                Err(e) => {
                    log::warn!("io_uring unavailable ({e}); using the thread-pool engine");
                    threads()
                }
            }
        }
    }
}

impl VirtioDevice for BlkDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn device_features(&self) -> u64 {
        self.params.features()
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![self.params.queue_size; usize::from(self.params.num_queues)]
    }

    fn initial_config(&self) -> Vec<u8> {
        self.params.config_bytes()
    }

    fn activate(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        self.quiesce();
        self.engine.set_waker(ctx.waker());
        self.limits.flush = ctx.has_feature(VIRTIO_BLK_F_FLUSH);
        self.limits.discard = ctx.has_feature(VIRTIO_BLK_F_DISCARD);
        self.limits.write_zeroes = ctx.has_feature(VIRTIO_BLK_F_WRITE_ZEROES);
        Ok(())
    }

    fn queue_notify(&mut self, q: usize, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        self.process_queue(q, ctx)?;
        self.engine.commit();
        self.complete(ctx)
    }

    fn wake(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        self.complete(ctx)?;
        // Queues that yield again are served on a later wake-up, not in this loop.
        let mut todo = std::mem::take(&mut self.pending);
        while todo != 0 {
            let q = todo.trailing_zeros() as usize;
            todo &= !(1 << q);
            if ctx.try_queue(q).is_some() {
                self.process_queue(q, ctx)?;
            }
        }
        self.engine.commit();
        self.complete(ctx)
    }

    fn reset(&mut self) {
        self.quiesce();
        self.limits.flush = false;
        self.limits.discard = false;
        self.limits.write_zeroes = false;
    }

    fn stats(&self) -> Option<Arc<dyn CounterSource>> {
        Some(self.stats.clone())
    }
}

impl Drop for BlkDevice {
    fn drop(&mut self) {
        self.quiesce();
    }
}
