//! The io_uring I/O engine: reads and writes are submitted to an io_uring by the worker
//! thread itself and reaped by it, with no thread hand-off on the way in.
//!
//! Each read or write owns a page-aligned bounce buffer (at most [`CHUNK`] bytes; longer
//! requests proceed chunk by chunk, one submission in flight per request) and has at most
//! one submission queue entry in the ring at a time. A write's data is copied out of host
//! memory just before its entry is queued; a read's data is copied into host memory when its
//! completion is reaped; short transfers continue where they stopped. Reads served from the
//! page cache usually complete during `io_uring_enter` itself, so the worker reaps them in
//! the same call that submitted them.
//!
//! Completions that arrive later (O_DIRECT, page-cache misses, io-wq) signal an eventfd
//! registered with the ring. A small *relay* thread waits on it and wakes the worker, but
//! only while entries are still unreaped, so completions the worker already collected inline
//! cost no wake-up.
//!
//! Flushes, discards and write-zeroes are rare and may need fallbacks (zeroing by writing),
//! so they go to a [`PoolEngine`]. So do large reads and writes ([`LARGE_IO`] bytes and
//! more): they are bound by the two copies (host memory and bounce buffer, bounce buffer and
//! page cache), which the pool's threads do in parallel while the worker would do them one
//! after the other. Small requests, where the hand-off to a thread costs more than the copy,
//! stay on the ring (docs/blk.md has the numbers).
//!
//! While the worker itself submits and reaps, the eventfd is disabled
//! (`IORING_CQ_EVENTFD_DISABLED`), so completions it collects inline wake nobody; it is
//! enabled again before the worker's last look at the completion queue.
//!
//! Safety: the kernel writes into (reads) and reads from (writes) a bounce buffer until the
//! entry's completion is reaped. Buffers are owned by their slot, which is only released
//! after that; dropping the engine first drains the ring, and if the ring cannot be drained
//! the buffers are leaked rather than freed.

use super::engine::{Engine, WakerCell};
use super::image::Image;
use super::io::{self, AlignedBuf, BufPool};
use super::pool::PoolEngine;
use super::request::{Completion, Op, Request, S_IOERR, S_OK};
use epf_device::Waker;
use io_uring::{opcode, squeue, types, IoUring};
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use vmm_sys_util::eventfd::EventFd;

/// Reads and writes of at least this many bytes go to the thread pool.
pub const LARGE_IO: u64 = 128 * 1024;

struct Slot {
    req: Request,
    buf: AlignedBuf,
    /// Bytes transferred so far.
    done: u64,
}

/// State shared with the relay thread.
struct RelayShared {
    efd: EventFd,
    stop: AtomicBool,
    /// Entries submitted to the ring and not yet reaped.
    unreaped: AtomicUsize,
    waker: WakerCell,
}

/// The io_uring engine.
pub struct UringEngine {
    ring: IoUring,
    image: Arc<Image>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Entries that did not fit into the submission queue yet.
    backlog: VecDeque<squeue::Entry>,
    /// Entries pushed to the submission queue and not yet passed to the kernel.
    unsubmitted: usize,
    done: Vec<Completion>,
    cqes: Vec<(u64, i32)>,
    bufs: BufPool,
    slow: PoolEngine,
    relay: Arc<RelayShared>,
    relay_thread: Option<JoinHandle<()>>,
}

impl UringEngine {
    /// A ring of `entries` entries (rounded up to a power of two) on `image`, plus a pool of
    /// `threads` threads for flushes, discards, write-zeroes and large transfers.
    pub fn new(image: Arc<Image>, entries: u32, threads: usize) -> std::io::Result<UringEngine> {
        let entries = entries.clamp(8, 4096).next_power_of_two();
        let ring = IoUring::builder()
            .setup_cqsize(entries * 2)
            .build(entries)?;
        let relay = Arc::new(RelayShared {
            efd: EventFd::new(0)?,
            stop: AtomicBool::new(false),
            unreaped: AtomicUsize::new(0),
            waker: WakerCell::default(),
        });
        ring.submitter().register_eventfd(relay.efd.as_raw_fd())?;
        let slow = PoolEngine::new(image.clone(), threads)?;
        let r = relay.clone();
        let relay_thread = std::thread::Builder::new()
            .name("blk-uring-relay".into())
            .spawn(move || relay_loop(&r))?;
        Ok(UringEngine {
            ring,
            image,
            slots: Vec::new(),
            free: Vec::new(),
            backlog: VecDeque::new(),
            unsubmitted: 0,
            done: Vec::new(),
            cqes: Vec::new(),
            bufs: BufPool::default(),
            slow,
            relay,
            relay_thread: Some(relay_thread),
        })
    }

    /// Queues the next chunk of slot `idx`.
    fn start(&mut self, idx: usize) {
        let Some(slot) = self.slots.get_mut(idx).and_then(|s| s.as_mut()) else {
            return;
        };
        let left = slot.req.len - slot.done;
        let n = left.min(slot.buf.len() as u64) as usize;
        let entry = match slot.req.op {
            Op::Read { offset } => {
                let at = offset + slot.done;
                let fd = self.image.fd_for(at, n as u64);
                // `n <= CHUNK`, which fits in u32.
                opcode::Read::new(types::Fd(fd), slot.buf.as_mut_ptr(), n as u32)
                    .offset(at)
                    .build()
            }
            Op::Write { offset, dsync } => {
                let at = offset + slot.done;
                let fd = self.image.fd_for(at, n as u64);
                let copied = io::copy_from_host(
                    slot.req.mem.as_ref(),
                    &slot.req.segs,
                    slot.done,
                    slot.buf.slice_mut(n),
                );
                if let Err(e) = copied {
                    log::debug!("blk: write source unreadable: {e}");
                    self.finish(idx, S_IOERR);
                    return;
                }
                let flags = if dsync { libc::RWF_DSYNC } else { 0 };
                opcode::Write::new(types::Fd(fd), slot.buf.as_mut_ptr(), n as u32)
                    .offset(at)
                    .rw_flags(flags)
                    .build()
            }
            // Never given a slot.
            Op::Flush | Op::Ranges { .. } => {
                self.finish(idx, S_IOERR);
                return;
            }
        };
        self.relay.unreaped.fetch_add(1, Ordering::AcqRel);
        self.push(entry.user_data(idx as u64));
    }

    fn push(&mut self, entry: squeue::Entry) {
        if !self.backlog.is_empty() {
            self.backlog.push_back(entry);
            return;
        }
        // SAFETY: the entry's buffer belongs to a slot that stays allocated (and is not
        // otherwise accessed) until the entry's completion is reaped; its descriptor belongs
        // to `self.image`, which outlives the ring's in-flight entries (see `Drop`).
        match unsafe { self.ring.submission().push(&entry) } {
            Ok(()) => self.unsubmitted += 1,
            Err(_) => self.backlog.push_back(entry),
        }
    }

    /// Completes slot `idx` with `status`: status byte, completion, slot freed.
    fn finish(&mut self, idx: usize, status: u8) {
        let Some(slot) = self.slots.get_mut(idx).and_then(|s| s.take()) else {
            return;
        };
        if let Err(e) = slot.req.mem.write(slot.req.status_addr, &[status]) {
            log::warn!(
                "blk: cannot write the status of request {}: {e}",
                slot.req.head
            );
        }
        self.done.push(slot.req.completion(status));
        self.bufs.put(slot.buf);
        self.free.push(idx);
    }

    /// Handles the completion of slot `idx`'s entry with result `res`.
    fn on_cqe(&mut self, idx: usize, res: i32) {
        let Some(slot) = self.slots.get_mut(idx).and_then(|s| s.as_mut()) else {
            log::warn!("blk: completion for unknown io_uring slot {idx}");
            return;
        };
        if res == -libc::EINTR || res == -libc::EAGAIN {
            self.start(idx);
            return;
        }
        if res <= 0 {
            log::debug!(
                "blk: {:?} failed: {}",
                slot.req.op,
                std::io::Error::from_raw_os_error(-res)
            );
            self.finish(idx, S_IOERR);
            return;
        }
        let n = (res as u64).min(slot.req.len - slot.done);
        if let Op::Read { .. } = slot.req.op {
            let copied = io::copy_to_host(
                slot.req.mem.as_ref(),
                &slot.req.segs,
                slot.done,
                slot.buf.slice(n as usize),
            );
            if let Err(e) = copied {
                log::debug!("blk: read destination unwritable: {e}");
                self.finish(idx, S_IOERR);
                return;
            }
        }
        slot.done += n;
        if slot.done >= slot.req.len {
            self.finish(idx, S_OK);
        } else {
            self.start(idx);
        }
    }

    /// Moves backlog entries into the submission queue and passes everything to the kernel.
    fn flush_submissions(&mut self) {
        while let Some(e) = self.backlog.front() {
            // SAFETY: as in `push`.
            if unsafe { self.ring.submission().push(e) }.is_err() {
                break;
            }
            self.backlog.pop_front();
            self.unsubmitted += 1;
        }
        if self.unsubmitted == 0 {
            return;
        }
        match self.ring.submit() {
            Ok(n) => self.unsubmitted = self.unsubmitted.saturating_sub(n),
            Err(e) => {
                // EAGAIN/EBUSY: the kernel is short of resources or the completion queue is
                // full; the entries stay queued and go with the next submission.
                log::debug!("blk: io_uring submit: {e}");
            }
        }
    }

    /// Reaps every completion available now (handling them may queue further chunks).
    fn reap_ring(&mut self) {
        loop {
            self.cqes.clear();
            self.cqes
                .extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            if self.cqes.is_empty() {
                return;
            }
            self.relay
                .unreaped
                .fetch_sub(self.cqes.len(), Ordering::AcqRel);
            let cqes = std::mem::take(&mut self.cqes);
            for &(ud, res) in &cqes {
                self.on_cqe(ud as usize, res);
            }
            self.cqes = cqes;
            self.flush_submissions();
        }
    }

    fn ring_busy(&self) -> bool {
        self.slots.iter().any(|s| s.is_some())
    }
}

fn relay_loop(r: &RelayShared) {
    loop {
        if r.efd.read().is_err() {
            return;
        }
        if r.stop.load(Ordering::Acquire) {
            return;
        }
        // Completions the worker already reaped (those completed inline during submission)
        // need no wake-up; anything still unreaped does.
        if r.unreaped.load(Ordering::Acquire) > 0 {
            r.waker.wake();
        }
    }
}

impl Engine for UringEngine {
    fn set_waker(&mut self, waker: Waker) {
        self.relay.waker.set(waker.clone());
        self.slow.set_waker(waker);
    }

    fn submit(&mut self, req: Request) {
        match req.op {
            Op::Read { .. } | Op::Write { .. } if req.len >= LARGE_IO => self.slow.submit(req),
            Op::Read { .. } | Op::Write { .. } => {
                let buf = self.bufs.get(req.len as usize);
                let slot = Slot { req, buf, done: 0 };
                let idx = match self.free.pop() {
                    Some(i) => {
                        self.slots[i] = Some(slot);
                        i
                    }
                    None => {
                        self.slots.push(Some(slot));
                        self.slots.len() - 1
                    }
                };
                self.start(idx);
            }
            Op::Flush | Op::Ranges { .. } => self.slow.submit(req),
        }
    }

    fn commit(&mut self) {
        // The worker reaps right after submitting: inline completions need no wake-up.
        self.ring.completion().disable_eventfd();
        self.flush_submissions();
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        self.flush_submissions();
        self.reap_ring();
        if self.ring.completion().eventfd_disabled() {
            // From here on completions signal the eventfd again; whatever was posted while it
            // was disabled is collected by this last look.
            self.ring.completion().enable_eventfd();
            self.reap_ring();
        }
        out.append(&mut self.done);
        self.slow.reap(out);
    }

    fn drain(&mut self) {
        self.slow.drain();
        while self.ring_busy() {
            self.flush_submissions();
            if let Err(e) = self.ring.submit_and_wait(1) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    log::error!("blk: io_uring wait failed while draining: {e}");
                    return;
                }
            }
            self.reap_ring();
        }
    }

    fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count() + self.done.len() + self.slow.in_flight()
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        self.drain();
        if self.ring_busy() {
            // The kernel may still use these buffers: leak them rather than free them.
            for s in self.slots.drain(..).flatten() {
                std::mem::forget(s);
            }
        }
        self.relay.stop.store(true, Ordering::Release);
        let _ = self.relay.efd.write(1);
        if let Some(t) = self.relay_thread.take() {
            let _ = t.join();
        }
    }
}
