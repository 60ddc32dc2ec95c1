//! The poller thread: waits for TAP queues to become readable (a packet for the host) or
//! writable (room again after the TAP refused a packet) and wakes the device's worker.
//!
//! The worker never blocks on the TAP (every descriptor is non-blocking) and cannot wait on
//! it either (it sleeps in the transport's epoll), so this thread waits for it. Each TAP queue
//! is registered EPOLLONESHOT: an event disarms it until the worker has drained what it can
//! and calls [`Poller::arm`] with what it waits for next. A queue whose host has no receive
//! buffers is simply not armed for input, so this thread never spins on unread packets, and a
//! busy queue costs one wake-up per batch, not per packet. Events are recorded in per-pair
//! flags and coalesced into one [`Waker::wake`].

use epf_device::Waker;
use epf_epc::sync;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const STOP: u64 = u64::MAX;

/// What the worker and the thread share.
struct Shared {
    waker: Mutex<Option<Waker>>,
    readable: Vec<AtomicBool>,
    writable: Vec<AtomicBool>,
}

/// The poller: one thread for all TAP queues of a device.
pub struct Poller {
    shared: Arc<Shared>,
    epoll: Arc<Epoll>,
    fds: Vec<RawFd>,
    stop: EventFd,
    join: Option<JoinHandle<()>>,
}

impl Poller {
    /// Registers `fds` (queue pair `i` is `fds[i]`), disarmed, and starts the thread. The
    /// descriptors must stay open while the poller exists.
    pub fn start(fds: &[RawFd]) -> io::Result<Poller> {
        let epoll = Arc::new(Epoll::new()?);
        let stop = EventFd::new(EFD_NONBLOCK)?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP),
        )?;
        for (i, &fd) in fds.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::ONE_SHOT, i as u64),
            )?;
        }
        let shared = Arc::new(Shared {
            waker: Mutex::new(None),
            readable: fds.iter().map(|_| AtomicBool::new(false)).collect(),
            writable: fds.iter().map(|_| AtomicBool::new(false)).collect(),
        });
        let (s, e) = (shared.clone(), epoll.clone());
        let join = std::thread::Builder::new()
            .name("net-poller".into())
            .spawn(move || run(&s, &e))?;
        Ok(Poller {
            shared,
            epoll,
            fds: fds.to_vec(),
            stop,
            join: Some(join),
        })
    }

    /// The waker to call on events (the worker's; set at activation).
    pub fn set_waker(&self, w: Waker) {
        *sync::lock(&self.shared.waker) = Some(w);
    }

    /// Arms queue `pair` for one event: readable if `input`, writable if `output`; with
    /// neither, disarms it (an event already recorded stays recorded).
    pub fn arm(&self, pair: usize, input: bool, output: bool) {
        let mut ev = EventSet::ONE_SHOT;
        if input {
            ev |= EventSet::IN;
        }
        if output {
            ev |= EventSet::OUT;
        }
        if let Err(e) = self.epoll.ctl(
            ControlOperation::Modify,
            self.fds[pair],
            EpollEvent::new(ev, pair as u64),
        ) {
            log::error!("net: cannot arm TAP queue {pair}: {e}");
        }
    }

    /// Whether queue `pair` became readable since the last call (clears the flag).
    pub fn take_readable(&self, pair: usize) -> bool {
        self.shared.readable[pair].swap(false, Ordering::AcqRel)
    }

    /// Whether queue `pair` became writable since the last call (clears the flag).
    pub fn take_writable(&self, pair: usize) -> bool {
        self.shared.writable[pair].swap(false, Ordering::AcqRel)
    }
}

fn run(s: &Shared, epoll: &Epoll) {
    let mut events = vec![EpollEvent::default(); 64];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("net poller: epoll failed: {e}");
                return;
            }
        };
        let mut any = false;
        for ev in &events[..n] {
            let pair = ev.data();
            if pair == STOP {
                return;
            }
            let Some(i) = usize::try_from(pair).ok().filter(|&i| i < s.readable.len()) else {
                continue;
            };
            let set = ev.event_set();
            // Errors and hang-ups count as both: the worker's next read or write reports them.
            let err = set.intersects(EventSet::ERROR | EventSet::HANG_UP);
            if err || set.contains(EventSet::IN) {
                s.readable[i].store(true, Ordering::Release);
            }
            if err || set.contains(EventSet::OUT) {
                s.writable[i].store(true, Ordering::Release);
            }
            any = true;
        }
        if any {
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
