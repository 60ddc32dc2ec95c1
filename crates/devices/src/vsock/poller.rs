//! The poller thread: waits on the endpoint's Unix sockets (the listener and every
//! connection) and wakes the device's worker when one of them changes.
//!
//! The worker owns the sockets and never blocks on them (all are non-blocking), but it
//! sleeps in the transport's epoll and cannot wait on them itself, so this thread does. The
//! sockets are registered edge-triggered: an event means "something changed", the worker
//! remembers per connection that it may read or write and clears that only when the socket
//! says `EAGAIN`. The ready set is one entry per socket, so it is bounded by the number of
//! connections whatever the event rate, and wake-ups coalesce in the [`Waker`]. While the
//! worker has a deadline (a connection waiting for the host's RESPONSE) the thread also
//! wakes it every [`TICK_MS`] ms.

use epf_device::Waker;
use epf_epc::sync;
use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const STOP: u64 = u64::MAX;
const KICK: u64 = u64::MAX - 1;

#[derive(Default)]
struct Shared {
    waker: Mutex<Option<Waker>>,
    ready: Mutex<HashSet<u64>>,
    /// The worker has a deadline to check: wake it every [`TICK_MS`] even without events.
    tick: AtomicBool,
}

/// Period of the wake-ups while the worker has a deadline (connections waiting for the
/// host's RESPONSE).
pub const TICK_MS: i32 = 250;

/// The poller: one thread for all of a device's sockets.
pub struct Poller {
    shared: Arc<Shared>,
    epoll: Arc<Epoll>,
    stop: EventFd,
    /// Makes the thread look at `tick` again.
    kick: Arc<EventFd>,
    join: Option<JoinHandle<()>>,
}

impl Poller {
    /// Starts the thread, with nothing registered.
    pub fn start() -> io::Result<Poller> {
        let epoll = Arc::new(Epoll::new()?);
        let stop = EventFd::new(EFD_NONBLOCK)?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP),
        )?;
        let kick = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        epoll.ctl(
            ControlOperation::Add,
            kick.as_raw_fd(),
            EpollEvent::new(EventSet::IN, KICK),
        )?;
        let shared = Arc::new(Shared::default());
        let (s, e, k) = (shared.clone(), epoll.clone(), kick.clone());
        let join = std::thread::Builder::new()
            .name("vsock-poller".into())
            .spawn(move || run(&s, &e, &k))?;
        Ok(Poller {
            shared,
            epoll,
            stop,
            kick,
            join: Some(join),
        })
    }

    /// The waker to call on events (the worker's; set at activation).
    pub fn set_waker(&self, w: Waker) {
        *sync::lock(&self.shared.waker) = Some(w);
    }

    /// Watches `fd` (edge-triggered, in and out) under `token`, marking it ready at once so
    /// the worker looks at it the first time.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let ev = EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
        self.epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(ev, token))?;
        sync::lock(&self.shared.ready).insert(token);
        Ok(())
    }

    /// Stops watching `fd` (call before closing it).
    pub fn remove(&self, fd: RawFd) {
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
    }

    /// Whether the worker wants periodic wake-ups (it has a deadline to check).
    pub fn set_tick(&self, on: bool) {
        if !self.shared.tick.swap(on, Ordering::Relaxed) && on {
            // The thread may be sleeping without a timeout.
            let _ = self.kick.write(1);
        }
    }

    /// The tokens that had events since the last call.
    pub fn take_ready(&self, into: &mut Vec<u64>) {
        into.extend(sync::lock(&self.shared.ready).drain());
    }
}

fn run(s: &Shared, epoll: &Epoll, kick: &EventFd) {
    let mut events = vec![EpollEvent::default(); 128];
    loop {
        let ticking = s.tick.load(Ordering::Relaxed);
        let n = match epoll.wait(if ticking { TICK_MS } else { -1 }, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("vsock poller: epoll failed: {e}");
                return;
            }
        };
        let mut any = false;
        {
            let mut ready = sync::lock(&s.ready);
            for ev in &events[..n] {
                match ev.data() {
                    STOP => return,
                    KICK => {
                        let _ = kick.read();
                    }
                    t => {
                        ready.insert(t);
                        any = true;
                    }
                }
            }
        }
        if any || (n == 0 && ticking) {
            if let Some(w) = sync::lock(&s.waker).as_ref() {
                w.wake();
            }
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}
