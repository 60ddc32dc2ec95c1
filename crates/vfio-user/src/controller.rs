//! [`VfioUserController`]: the listening socket, the accept loop serving one client at a
//! time, shutdown, and the [`EndpointController`] implementation the function talks to.

use crate::dma::DmaTable;
use crate::error::VfioUserError;
use crate::function::Function;
use crate::session::{End, Session};
use crate::socket::{poll2, Conn, Ready};
use crate::stats::{bump, Counters, Stats};
use epf_epc::{
    CounterSource, EndpointController, EpcError, EpcFeatures, FunctionHandler, FunctionSpec,
    HostAccess, HostMemory, Irq, IrqSupport, SharedMemory,
};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Most MSI-X vectors we offer (QEMU's client has no limit; this bounds our tables).
pub const MAX_MSIX_VECTORS: u16 = 64;

/// An endpoint controller whose host is a vfio-user client (QEMU's `vfio-user-pci`) on a Unix
/// socket.
///
/// Create it with [`new`](Self::new), hand it to the function (which calls
/// [`EndpointController::start`]), and run [`serve`](Self::serve) on a thread (or
/// [`spawn`](Self::spawn) one). Clients are served one at a time; when one leaves or breaks
/// the protocol its DMA mappings and interrupt eventfds are dropped, the function sees
/// [`FunctionHandler::link_reset`], and the next client is accepted.
pub struct VfioUserController {
    path: PathBuf,
    /// (device, inode) of the socket file we created, so we only ever remove our own.
    socket_id: (u64, u64),
    listener: UnixListener,
    /// Wakes the serving thread: `start()` happened or `shutdown()` was requested.
    wake: EventFd,
    shutting_down: AtomicBool,
    serving: AtomicBool,
    socket_removed: AtomicBool,
    function: OnceLock<Function>,
    dma: Arc<DmaTable>,
    counters: Counters,
}

impl std::fmt::Debug for VfioUserController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioUserController")
            .field("path", &self.path)
            .field("started", &self.function.get().is_some())
            .finish()
    }
}

/// Removes a socket file nobody listens on; refuses to touch anything else.
fn clear_stale_socket(path: &Path) -> Result<(), VfioUserError> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(VfioUserError::Socket {
                path: path.into(),
                source,
            })
        }
    };
    if !md.file_type().is_socket() {
        return Err(VfioUserError::NotASocket(path.into()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(VfioUserError::InUse(path.into())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("vfio-user: removing stale socket {}", path.display());
            std::fs::remove_file(path).map_err(|source| VfioUserError::Socket {
                path: path.into(),
                source,
            })
        }
        Err(source) => Err(VfioUserError::Socket {
            path: path.into(),
            source,
        }),
    }
}

impl VfioUserController {
    /// Creates the listening socket at `socket_path`. A stale socket file (nothing listening)
    /// is replaced; a live one, or a file that is not a socket, is an error.
    pub fn new(socket_path: impl AsRef<Path>) -> Result<Arc<Self>, VfioUserError> {
        let path = socket_path.as_ref().to_path_buf();
        let sock_err = |source| VfioUserError::Socket {
            path: path.clone(),
            source,
        };
        clear_stale_socket(&path)?;
        let listener = UnixListener::bind(&path).map_err(sock_err)?;
        listener.set_nonblocking(true).map_err(sock_err)?;
        let md = std::fs::symlink_metadata(&path).map_err(sock_err)?;
        let wake = EventFd::new(EFD_NONBLOCK).map_err(sock_err)?;
        log::info!("vfio-user: listening on {}", path.display());
        Ok(Arc::new(VfioUserController {
            socket_id: (md.dev(), md.ino()),
            path,
            listener,
            wake,
            shutting_down: AtomicBool::new(false),
            serving: AtomicBool::new(false),
            socket_removed: AtomicBool::new(false),
            function: OnceLock::new(),
            dma: Arc::new(DmaTable::default()),
            counters: Counters::default(),
        }))
    }

    /// The socket path.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// A snapshot of the activity counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Number of DMA mappings the current client has set up.
    pub fn dma_map_count(&self) -> usize {
        self.dma.len()
    }

    /// Our own mapping of `[addr, addr+len)` of the client's memory, backed by the client's
    /// descriptor (see [`start_backed`](Self::start_backed)).
    pub fn share_client_memory(&self, addr: u64, len: u64) -> Result<SharedMemory, EpcError> {
        self.dma
            .share(addr, len)
            .map_err(|e| EpcError::Invalid(format!("client memory: {e}")))
    }

    /// Like [`EndpointController::start`], with the memory behind BARs supplied by the caller:
    /// `backing[n]` (at least the BAR's size, at least a page) backs BAR n's memory areas and
    /// its descriptor is what the client maps.
    pub fn start_backed(
        &self,
        spec: FunctionSpec,
        handler: Arc<dyn FunctionHandler>,
        backing: [Option<Arc<SharedMemory>>; epf_epc::BAR_COUNT],
    ) -> Result<(), EpcError> {
        if self.function.get().is_some() {
            return Err(EpcError::Invalid("function already started".into()));
        }
        let f = Function::new(spec, handler, &self.features(), backing)?;
        self.function
            .set(f)
            .map_err(|_| EpcError::Invalid("function already started".into()))?;
        self.wake
            .write(1)
            .map_err(|e| EpcError::Os(format!("waking the vfio-user thread: {e}")))?;
        Ok(())
    }

    /// Brings the link up or down: while it is down the host finds no function (all-ones
    /// configuration space) and interrupts are refused. Up by default.
    pub fn set_link_up(&self, up: bool) {
        if let Some(f) = self.function.get() {
            f.set_link_up(up);
        }
    }

    /// Number of MSI vectors the host enabled (0 = MSI off).
    pub fn msi_vectors_enabled(&self) -> u16 {
        self.function.get().map_or(0, |f| f.irqs().msi_enabled())
    }

    /// Number of MSI-X vectors the host has eventfds for.
    pub fn msix_vectors_enabled(&self) -> u16 {
        self.function.get().map_or(0, |f| {
            if f.irqs().msix_enabled() {
                f.spec.msix.map_or(0, |m| m.vectors)
            } else {
                0
            }
        })
    }

    /// Serves clients, one at a time, until [`shutdown`](Self::shutdown). Waits for
    /// [`EndpointController::start`] before accepting the first client. Blocks.
    pub fn serve(&self) -> Result<(), VfioUserError> {
        if self.serving.swap(true, Ordering::AcqRel) {
            return Err(VfioUserError::AlreadyServing);
        }
        let r = self.accept_loop();
        self.serving.store(false, Ordering::Release);
        log::info!("vfio-user: stopped serving {}", self.path.display());
        r
    }

    /// Runs [`serve`](Self::serve) on a new thread.
    pub fn spawn(self: &Arc<Self>) -> io::Result<JoinHandle<Result<(), VfioUserError>>> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("vfio-user".into())
            .spawn(move || me.serve())
    }

    /// Stops serving: the current client is disconnected (with the usual cleanup), `serve`
    /// returns, and the socket file is removed. Does not wait; join the serving thread for that.
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        if let Err(e) = self.wake.write(1) {
            log::error!("vfio-user: cannot wake the serving thread: {e}");
        }
        self.remove_socket();
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    fn remove_socket(&self) {
        if self.socket_removed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Only remove the file if it is still the socket we bound.
        if let Ok(md) = std::fs::symlink_metadata(&self.path) {
            if (md.dev(), md.ino()) == self.socket_id {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    log::warn!("vfio-user: cannot remove {}: {e}", self.path.display());
                }
            }
        }
    }

    fn accept_loop(&self) -> Result<(), VfioUserError> {
        loop {
            if self.is_shut_down() {
                return Ok(());
            }
            let Some(func) = self.function.get() else {
                // Not started yet: wait for start() or shutdown() to wake us.
                self.wait_wake()?;
                continue;
            };
            match poll2(
                self.listener.as_raw_fd(),
                libc::POLLIN,
                self.wake.as_raw_fd(),
                None,
            )? {
                Ready::Woken => {
                    let _ = self.wake.read();
                    continue;
                }
                Ready::Timeout => continue,
                Ready::Socket => {}
            }
            match self.listener.accept() {
                Ok((stream, _)) => self.serve_client(func, stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // E.g. EMFILE: back off instead of spinning.
                    log::error!("vfio-user: accept failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
    }

    fn wait_wake(&self) -> io::Result<()> {
        let mut pfd = libc::pollfd {
            fd: self.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        if !self.is_shut_down() {
            let _ = self.wake.read();
        }
        Ok(())
    }

    fn serve_client(&self, func: &Function, stream: UnixStream) {
        bump(&self.counters.clients);
        log::info!("vfio-user: client connected to {}", self.path.display());
        let conn = Conn::new(stream, self.wake.as_raw_fd());
        func.handler.host_connected(true);
        let end = Session::new(conn, func, &self.dma, &self.counters).run();
        match &end {
            End::Closed => log::info!("vfio-user: client disconnected"),
            End::Dropped(why) => log::warn!("vfio-user: dropped client: {why}"),
            End::Shutdown => log::info!("vfio-user: disconnecting client for shutdown"),
        }
        // The session (and with it the connection) is gone; clean up after the client.
        let unmapped = self.dma.clear();
        for _ in 0..unmapped {
            bump(&self.counters.dma_unmaps);
        }
        func.disconnect(&self.counters);
        func.handler.host_connected(false);
    }
}

impl Drop for VfioUserController {
    fn drop(&mut self) {
        self.remove_socket();
    }
}

impl EndpointController for VfioUserController {
    fn features(&self) -> EpcFeatures {
        EpcFeatures {
            vendor_capabilities: true,
            trapped_access: true,
            doorbells: true,
            shared_memory: true,
            irq: IrqSupport {
                msix_vectors: MAX_MSIX_VECTORS,
                msi_vectors: 32,
                intx: true,
            },
            host_access: HostAccess::Direct,
        }
    }

    fn start(&self, spec: FunctionSpec, handler: Arc<dyn FunctionHandler>) -> Result<(), EpcError> {
        self.start_backed(spec, handler, Default::default())
    }

    fn bar_memory(&self, bar: u8) -> Option<Arc<SharedMemory>> {
        self.function.get()?.bar_mem.get(bar as usize)?.clone()
    }

    fn host_memory(&self) -> Arc<dyn HostMemory> {
        self.dma.clone()
    }

    fn raise_irq(&self, irq: Irq) -> Result<(), EpcError> {
        let func = self.function.get().ok_or(EpcError::LinkDown)?;
        if !func.link_up() {
            return Err(EpcError::LinkDown);
        }
        let delivered = match irq {
            // The eventfd is written after the lock is released: a slow write (or a hostile
            // client's descriptor) never holds up SET_IRQS, disconnects or other raisers.
            Irq::Msix(v) => {
                let fd = func.irqs().msix_fd(v);
                fd.map(|fd| crate::irq::signal(&fd))
            }
            Irq::Intx(level) => {
                if func.spec.header.interrupt_pin == 0 {
                    return Err(EpcError::Unsupported("INTx without an interrupt pin"));
                }
                let r = func.irqs().set_intx(level);
                if !level {
                    return Ok(());
                }
                // A masked INTx stays pending and fires on unmask: that is a success too.
                r.map(|_| true)
            }
            Irq::Msi(v) => {
                let fd = {
                    let irqs = func.irqs();
                    if irqs.count(crate::protocol::MSI_IRQ) == 0 {
                        return Err(EpcError::Unsupported("MSI without an MSI capability"));
                    }
                    irqs.msi_fd(v)
                };
                fd.map(|fd| crate::irq::signal(&fd))
            }
        };
        match delivered {
            Some(true) => {
                bump(&self.counters.irqs_raised);
                Ok(())
            }
            Some(false) => Err(EpcError::Os(format!("{irq:?}: cannot signal the eventfd"))),
            None => {
                log::debug!("vfio-user: {irq:?} not raised: the client gave no eventfd for it");
                bump(&self.counters.irqs_refused);
                Err(EpcError::IrqNotEnabled(format!("{irq:?}")))
            }
        }
    }

    fn msix_enabled(&self) -> bool {
        self.function.get().is_some_and(|f| f.irqs().msix_enabled())
    }
}

/// `link: clients=.. trapped_reads=.. trapped_writes=.. doorbells=.. dma_maps=.. dma_unmaps=..
/// irqs=.. protocol_errors=..`: the link as the function's operator sees it.
impl CounterSource for VfioUserController {
    fn report(&self, out: &mut epf_epc::Counters) {
        let s = self.stats();
        out.line("link")
            .field("clients", s.clients)
            .field("trapped_reads", s.trapped_reads)
            .field("trapped_writes", s.trapped_writes)
            .field("doorbells", s.doorbells)
            .field("dma_maps", s.dma_maps)
            .field("dma_unmaps", s.dma_unmaps)
            .field("irqs", s.irqs_raised)
            .field("protocol_errors", s.protocol_errors);
    }
}
