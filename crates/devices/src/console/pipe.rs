//! A bounded byte FIFO between the worker thread and a blocking backend thread. The bound is
//! the back-pressure: a full FIFO makes the producer wait (the backend thread blocks; the
//! worker leaves buffers in the ring and is woken when room appears).

use epf_epc::sync;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// The FIFO.
#[derive(Debug)]
pub struct Pipe {
    inner: Mutex<Inner>,
    cond: Condvar,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    buf: VecDeque<u8>,
    closed: bool,
}

impl Pipe {
    pub fn new(capacity: usize) -> Self {
        Pipe {
            inner: Mutex::new(Inner::default()),
            cond: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        sync::lock(&self.inner)
    }

    /// Bytes that can be pushed without exceeding the bound.
    /// Most bytes the pipe holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.lock().buf.len())
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.lock().buf.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `data` (even past the bound: callers check [`room`](Self::room) first) and
    /// wakes a waiting consumer.
    pub fn push(&self, data: &[u8]) {
        self.lock().buf.extend(data);
        self.cond.notify_all();
    }

    /// Copies up to `out.len()` queued bytes into `out` without blocking; returns the count.
    pub fn pop_into(&self, out: &mut [u8]) -> usize {
        let mut g = self.lock();
        let n = out.len().min(g.buf.len());
        for (o, b) in out.iter_mut().zip(g.buf.drain(..n)) {
            *o = b;
        }
        drop(g);
        if n > 0 {
            self.cond.notify_all();
        }
        n
    }

    /// Blocks until some bytes are queued (then moves up to `out.len()` of them into `out`)
    /// or the pipe is closed (returns 0).
    pub fn pop_blocking(&self, out: &mut [u8]) -> usize {
        let mut g = self.lock();
        while g.buf.is_empty() && !g.closed {
            g = sync::wait(&self.cond, g);
        }
        let n = out.len().min(g.buf.len());
        for (o, b) in out.iter_mut().zip(g.buf.drain(..n)) {
            *o = b;
        }
        drop(g);
        self.cond.notify_all();
        n
    }

    /// Blocks until there is room for at least one byte or the pipe is closed; returns the
    /// room (0 if closed).
    pub fn wait_room(&self) -> usize {
        let mut g = self.lock();
        while g.buf.len() >= self.capacity && !g.closed {
            g = sync::wait(&self.cond, g);
        }
        if g.closed {
            0
        } else {
            self.capacity - g.buf.len()
        }
    }

    /// Wakes every waiter for good.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cond.notify_all();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}
