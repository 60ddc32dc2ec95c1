//! The device worker: one thread per function that owns the device and its activated queues.
//!
//! It sleeps in epoll on three kinds of eventfd: *control* (activate / reset / stop, sent by
//! the register engine), *wake* (a backend thread of the device asks to be called), and one
//! *kick* per queue (the driver wrote the queue's notification address). After every call
//! into the device it turns pending used buffers into interrupts, so completions made during
//! one call share one interrupt per queue.

use crate::function::NOTIFICATION_DATA_FEATURE;
use crate::registers::Activation;
use crate::shared::Shared;
use epf_device::{DeviceContext, DeviceError, VirtioDevice, Waker};
use epf_epc::HostMemory;
use epf_virtqueue::Queue;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Messages from the register engine to the worker.
#[derive(Debug)]
pub enum Control {
    Activate(Activation),
    Reset { epoch: u64 },
    Stop,
}

const TOKEN_CONTROL: u64 = 0;
const TOKEN_WAKE: u64 = 1;
const TOKEN_KICK0: u64 = 2;

/// The register engine's handle on the worker thread.
pub struct WorkerHandle {
    tx: Sender<Control>,
    control: Arc<EventFd>,
    kicks: Vec<EventFd>,
    join: Option<JoinHandle<()>>,
}

fn new_eventfd() -> std::io::Result<EventFd> {
    EventFd::new(EFD_NONBLOCK)
}

impl WorkerHandle {
    /// Starts the worker for `device` with `num_queues` kick eventfds.
    pub fn spawn(
        device: Box<dyn VirtioDevice>,
        shared: Arc<Shared>,
        num_queues: usize,
    ) -> std::io::Result<Self> {
        let (tx, rx) = channel();
        let control = Arc::new(new_eventfd()?);
        let wake = Arc::new(new_eventfd()?);
        let kicks = (0..num_queues)
            .map(|_| new_eventfd())
            .collect::<std::io::Result<Vec<_>>>()?;
        let epoll = Epoll::new()?;
        let add = |fd: i32, token: u64| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        add(control.as_raw_fd(), TOKEN_CONTROL)?;
        add(wake.as_raw_fd(), TOKEN_WAKE)?;
        let mut worker_kicks = Vec::with_capacity(num_queues);
        for (i, k) in kicks.iter().enumerate() {
            add(k.as_raw_fd(), TOKEN_KICK0 + i as u64)?;
            worker_kicks.push(k.try_clone()?);
        }
        let worker = Worker {
            device,
            shared,
            rx,
            control: control.clone(),
            wake_fd: wake.clone(),
            waker: Waker::new(wake),
            kicks: worker_kicks,
            epoll,
            active: None,
            last: Vec::new(),
        };
        let join = std::thread::Builder::new()
            .name("epf-worker".into())
            .spawn(move || worker.run())?;
        Ok(WorkerHandle {
            tx,
            control,
            kicks,
            join: Some(join),
        })
    }

    /// Sends a control message.
    pub fn send(&self, c: Control) {
        if self.tx.send(c).is_ok() {
            let _ = self.control.write(1);
        }
    }

    /// Notifies queue `q` (ignored for queues that do not exist).
    pub fn kick(&self, q: usize) -> bool {
        match self.kicks.get(q) {
            Some(k) => {
                let _ = k.write(1);
                true
            }
            None => false,
        }
    }

    /// Stops the worker and waits for it.
    pub fn stop(&mut self) {
        self.send(Control::Stop);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The state of an activated device.
struct Active {
    epoch: u64,
    features: u64,
    queues: Vec<Option<Queue>>,
    vectors: Vec<u16>,
    memory: Arc<dyn HostMemory>,
}

struct Worker {
    device: Box<dyn VirtioDevice>,
    shared: Arc<Shared>,
    rx: Receiver<Control>,
    control: Arc<EventFd>,
    wake_fd: Arc<EventFd>,
    waker: Waker,
    kicks: Vec<EventFd>,
    epoll: Epoll,
    active: Option<Active>,
    /// Last (chains, descriptors, bytes, ring reads saved) seen per queue, to publish deltas.
    /// Each queue's counters when last published.
    last: Vec<epf_virtqueue::QueueStats>,
}

enum Event {
    Activated,
    Notify(usize),
    Wake,
}

impl Worker {
    fn run(mut self) {
        let mut events = vec![EpollEvent::default(); 64];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("worker epoll failed: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_CONTROL => {
                        let _ = self.control.read();
                        while let Ok(c) = self.rx.try_recv() {
                            match c {
                                Control::Stop => {
                                    self.deactivate();
                                    return;
                                }
                                Control::Reset { epoch } => self.reset(epoch),
                                Control::Activate(a) => self.activate(a),
                            }
                        }
                    }
                    TOKEN_WAKE => {
                        let _ = self.wake_fd.read();
                        self.dispatch(Event::Wake);
                    }
                    t => {
                        let q = (t - TOKEN_KICK0) as usize;
                        if let Some(k) = self.kicks.get(q) {
                            let _ = k.read();
                        }
                        if let Some(s) = self.shared.stats.queues.get(q) {
                            s.notifications.fetch_add(1, Ordering::Relaxed);
                        }
                        self.dispatch(Event::Notify(q));
                    }
                }
            }
        }
    }

    fn activate(&mut self, a: Activation) {
        self.deactivate();
        // Values sent before this activation describe rings that are gone.
        self.shared.notify_data.clear();
        let memory = self.shared.epc.host_memory();
        let event_idx = a.features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let packed = a.features & crate::function::RING_PACKED_FEATURE != 0;
        let in_order = a.features & crate::function::IN_ORDER_FEATURE != 0;
        let mut queues = Vec::with_capacity(a.queues.len());
        for (i, cfg) in a.queues.iter().enumerate() {
            match cfg {
                None => queues.push(None),
                Some(cfg) => match if packed {
                    Queue::new_packed(*cfg, memory.clone(), event_idx)
                } else {
                    Queue::new(*cfg, memory.clone(), event_idx)
                } {
                    Ok(mut q) => {
                        q.set_in_order(in_order);
                        queues.push(Some(q))
                    }
                    Err(error) => {
                        self.needs_reset(a.epoch, &DeviceError::Queue { queue: i, error });
                        return;
                    }
                },
            }
        }
        self.last = vec![epf_virtqueue::QueueStats::default(); queues.len()];
        log::debug!(
            "activation {}: features {:#x}, queue vectors {:?}",
            a.epoch,
            a.features,
            a.queue_vectors
        );
        self.active = Some(Active {
            epoch: a.epoch,
            features: a.features,
            queues,
            vectors: a.queue_vectors,
            memory,
        });
        self.shared
            .stats
            .activations
            .fetch_add(1, Ordering::Relaxed);
        self.dispatch(Event::Activated);
    }

    fn deactivate(&mut self) {
        self.active = None;
    }

    fn reset(&mut self, epoch: u64) {
        log::debug!("reset {epoch}");
        self.active = None;
        self.device.reset();
        self.shared.interrupt.reset();
        self.shared.stats.resets.fetch_add(1, Ordering::Relaxed);
        self.shared.regs().reset_complete(epoch);
        self.shared.reset_done.notify_all();
    }

    fn needs_reset(&mut self, epoch: u64, err: &DeviceError) {
        log::warn!("device needs reset: {err}");
        self.active = None;
        if self.shared.regs().set_needs_reset(epoch) {
            self.shared
                .stats
                .needs_reset
                .fetch_add(1, Ordering::Relaxed);
            if self.shared.interrupt.signal_config() {
                self.shared
                    .stats
                    .config_interrupts
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn dispatch(&mut self, ev: Event) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let mut ctx = DeviceContext::new(
            a.features,
            &mut a.queues,
            &self.shared.config,
            &self.waker,
            &a.memory,
        );
        let mut r = match ev {
            Event::Activated => self.device.activate(&mut ctx).and_then(|()| {
                // Buffers (and notifications) may have been posted before DRIVER_OK; a
                // spurious notification is harmless, a lost one is not.
                for q in 0..ctx.num_queues() {
                    if ctx.try_queue(q).is_some() {
                        self.device.queue_notify(q, &mut ctx)?;
                    }
                }
                Ok(())
            }),
            Event::Notify(q) => {
                let data = self.shared.notify_data.take(q);
                if let Some(queue) = ctx.try_queue(q) {
                    if let Some(next) = data.filter(|_| a.features & NOTIFICATION_DATA_FEATURE != 0)
                    {
                        queue.note_notification(next);
                    }
                    self.device.queue_notify(q, &mut ctx)
                } else {
                    Ok(())
                }
            }
            Event::Wake => self.device.wake(&mut ctx),
        };
        if r.is_ok() {
            r = self.rearm();
        }
        if r.is_ok() {
            r = self.signal_used();
        }
        if self.shared.config.take_changed() && self.shared.interrupt.signal_config() {
            self.shared
                .stats
                .config_interrupts
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = r {
            let epoch = self.active.as_ref().map_or(u64::MAX, |a| a.epoch);
            self.needs_reset(epoch, &e);
        }
    }

    /// Re-enables driver notifications on every queue (with EVENT_IDX: publishes
    /// `avail_event`, without which a Linux driver stops notifying after the first buffer)
    /// and, as long as buffers keep arriving while notifications were off and the device
    /// keeps taking them, gives the device another pass: buffers the driver made available
    /// before it could see the re-enabled notifications would otherwise never be announced.
    ///
    /// A pass that takes nothing means the device holds buffers back on purpose (back-pressure,
    /// or receive buffers waiting for input); it is not called in a loop for them but waits for
    /// its own wake-up. After `MAX_PASSES` productive passes the queue kicks itself, so one busy
    /// queue cannot starve the others or the control channel.
    fn rearm(&mut self) -> Result<(), DeviceError> {
        const MAX_PASSES: usize = 16;
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        for i in 0..a.queues.len() {
            let mut passes = 0;
            while let Some(q) = a.queues[i].as_mut() {
                if !q.enable_notification().map_err(DeviceError::queue(i))? {
                    break;
                }
                if passes == MAX_PASSES {
                    if let Some(k) = self.kicks.get(i) {
                        let _ = k.write(1);
                    }
                    break;
                }
                let before = q.next_avail();
                let mut ctx = DeviceContext::new(
                    a.features,
                    &mut a.queues,
                    &self.shared.config,
                    &self.waker,
                    &a.memory,
                );
                self.device.queue_notify(i, &mut ctx)?;
                passes += 1;
                if a.queues[i]
                    .as_ref()
                    .is_none_or(|q| q.next_avail() == before)
                {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Raises one interrupt per queue that has used buffers the driver wants to hear about,
    /// and publishes the queue counters.
    fn signal_used(&mut self) -> Result<(), DeviceError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        for (i, q) in a.queues.iter_mut().enumerate() {
            let Some(q) = q else { continue };
            let st = &self.shared.stats.queues[i];
            let qs = q.stats();
            let last = std::mem::replace(&mut self.last[i], qs);
            let add = |c: &std::sync::atomic::AtomicU64, now: u64, then: u64| {
                c.fetch_add(now.saturating_sub(then), Ordering::Relaxed);
            };
            add(&st.chains, qs.chains_popped, last.chains_popped);
            add(&st.descriptors, qs.descriptors, last.descriptors);
            add(&st.bytes, qs.bytes, last.bytes);
            add(
                &st.ring_reads_saved,
                qs.ring_reads_saved,
                last.ring_reads_saved,
            );
            add(&st.used_elided, qs.used_elided, last.used_elided);
            if q.needs_interrupt().map_err(DeviceError::queue(i))? {
                let raised = self.shared.interrupt.signal_queue(a.vectors[i]);
                log::debug!(
                    "queue {i} of activation {}: used {}, vector {}: raised {raised}",
                    a.epoch,
                    q.next_used(),
                    a.vectors[i]
                );
                if raised {
                    st.interrupts.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }
}
