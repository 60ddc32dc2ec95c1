//! The thread-pool I/O engine: a fixed set of threads each taking one request at a time from
//! a shared queue and performing it with blocking system calls through its own bounce
//! buffer: `pread` then a copy into host memory for reads, a copy out of host memory then
//! `pwrite` (`pwritev2(RWF_DSYNC)` when every write must be durable) for writes,
//! `fdatasync` for flushes, `fallocate` for discard and write-zeroes. The thread writes the
//! status byte itself, queues the completion and wakes the worker only when the completion
//! list was empty, so a burst of completions costs one wake-up.
//!
//! As many requests are in flight as there are threads; the rest wait in the queue (which
//! the rings' sizes bound).

use super::engine::{Engine, WakerCell};
use super::image::Image;
use super::io::{self, AlignedBuf, CHUNK};
use super::request::{Completion, Op, Request, S_IOERR, S_OK};
use epf_device::Waker;
use epf_epc::sync::{self, lock};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Default number of pool threads.
pub const DEFAULT_THREADS: usize = 16;

#[derive(Default)]
struct Jobs {
    queue: VecDeque<Request>,
    /// Submitted and not yet completed (queued or being executed).
    busy: usize,
    stop: bool,
}

struct Shared {
    image: Arc<Image>,
    jobs: Mutex<Jobs>,
    /// Signals new jobs (and stop).
    job_cv: Condvar,
    /// Signals a job finished (for drain).
    idle_cv: Condvar,
    done: Mutex<Vec<Completion>>,
    waker: WakerCell,
}

/// The thread-pool engine.
pub struct PoolEngine {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Submitted and not yet reaped.
    outstanding: usize,
}

impl PoolEngine {
    /// Starts `threads` (at least 1) I/O threads on `image`.
    pub fn new(image: Arc<Image>, threads: usize) -> std::io::Result<PoolEngine> {
        let shared = Arc::new(Shared {
            image,
            jobs: Mutex::new(Jobs::default()),
            job_cv: Condvar::new(),
            idle_cv: Condvar::new(),
            done: Mutex::new(Vec::new()),
            waker: WakerCell::default(),
        });
        let mut engine = PoolEngine {
            shared,
            threads: Vec::new(),
            outstanding: 0,
        };
        for i in 0..threads.max(1) {
            let s = engine.shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("blk-io-{i}"))
                .spawn(move || run(&s))?;
            engine.threads.push(t);
        }
        Ok(engine)
    }
}

fn run(s: &Shared) {
    let mut buf = AlignedBuf::new(CHUNK);
    loop {
        let req = {
            let mut j = lock(&s.jobs);
            loop {
                if j.stop {
                    return;
                }
                if let Some(r) = j.queue.pop_front() {
                    break r;
                }
                j = sync::wait(&s.job_cv, j);
            }
        };
        let status = execute(&s.image, &req, &mut buf);
        // The status byte is the last thing written to the driver's buffers.
        if let Err(e) = req.mem.write(req.status_addr, &[status]) {
            log::warn!("blk: cannot write the status of request {}: {e}", req.head);
        }
        let c = req.completion(status);
        drop(req);
        let was_empty = {
            let mut d = lock(&s.done);
            d.push(c);
            d.len() == 1
        };
        if was_empty {
            s.waker.wake();
        }
        let mut j = lock(&s.jobs);
        j.busy -= 1;
        if j.busy == 0 {
            s.idle_cv.notify_all();
        }
    }
}

/// Performs `req` with blocking system calls; returns its status.
pub fn execute(image: &Image, req: &Request, buf: &mut AlignedBuf) -> u8 {
    match execute_inner(image, req, buf) {
        Ok(()) => S_OK,
        Err(e) => {
            log::debug!("blk: {:?} failed: {e}", req.op);
            S_IOERR
        }
    }
}

fn execute_inner(image: &Image, req: &Request, buf: &mut AlignedBuf) -> std::io::Result<()> {
    let mem = req.mem.as_ref();
    let host_err = |e: epf_epc::HostMemError| std::io::Error::other(e.to_string());
    // With the page cache, large transfers go straight between the image and the host's
    // buffers when the controller maps host memory (no bounce buffer, no second copy).
    // O_DIRECT images keep the aligned bounce buffer: host buffers need not be aligned.
    if !image.is_direct() {
        let ranges: Vec<(u64, u32)> = req.segs.iter().map(|s| (s.addr, s.len)).collect();
        let fd = image.fd();
        let direct = match &req.op {
            Op::Read { offset } => {
                mem.in_place(&ranges, true, &mut |iov| io::preadv_full(fd, iov, *offset))
            }
            Op::Write { offset, dsync } => mem.in_place(&ranges, false, &mut |iov| {
                io::pwritev_full(fd, iov, *offset, *dsync)
            }),
            _ => None,
        };
        if let Some(r) = direct {
            return r;
        }
    }
    match &req.op {
        Op::Read { offset } => {
            let mut done = 0u64;
            while done < req.len {
                let n = (req.len - done).min(buf.len() as u64) as usize;
                let at = offset + done;
                io::pread_full(image.fd_for(at, n as u64), buf.slice_mut(n), at)?;
                io::copy_to_host(mem, &req.segs, done, buf.slice(n)).map_err(host_err)?;
                done += n as u64;
            }
            Ok(())
        }
        Op::Write { offset, dsync } => {
            let mut done = 0u64;
            while done < req.len {
                let n = (req.len - done).min(buf.len() as u64) as usize;
                let at = offset + done;
                io::copy_from_host(mem, &req.segs, done, buf.slice_mut(n)).map_err(host_err)?;
                io::pwrite_full(image.fd_for(at, n as u64), buf.slice(n), at, *dsync)?;
                done += n as u64;
            }
            Ok(())
        }
        Op::Flush => io::fdatasync(image.fd()),
        Op::Ranges { ranges, sync } => {
            for &(op, offset, len) in ranges {
                io::range_op(image, op, offset, len)?;
            }
            if *sync {
                io::fdatasync(image.fd())?;
            }
            Ok(())
        }
    }
}

impl Engine for PoolEngine {
    fn set_waker(&mut self, waker: Waker) {
        self.shared.waker.set(waker);
    }

    fn submit(&mut self, req: Request) {
        self.outstanding += 1;
        let mut j = lock(&self.shared.jobs);
        j.queue.push_back(req);
        j.busy += 1;
        drop(j);
        self.shared.job_cv.notify_one();
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        let mut d = lock(&self.shared.done);
        self.outstanding -= d.len().min(self.outstanding);
        out.append(&mut d);
    }

    fn drain(&mut self) {
        let mut j = lock(&self.shared.jobs);
        while j.busy > 0 {
            j = sync::wait(&self.shared.idle_cv, j);
        }
    }

    fn in_flight(&self) -> usize {
        self.outstanding
    }
}

impl Drop for PoolEngine {
    fn drop(&mut self) {
        self.drain();
        lock(&self.shared.jobs).stop = true;
        self.shared.job_cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
