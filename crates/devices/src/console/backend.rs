//! The console's byte-stream backends and the two threads that pump them.
//!
//! The device never blocks on its backend: host output goes into a bounded [`Pipe`] drained
//! by an *output thread* that performs the (possibly slow) writes, and backend input is read
//! by an *input thread* into another bounded pipe. Either thread wakes the device when it
//! makes progress, so buffers left in the rings for lack of room or data are picked up again.

use super::pipe::Pipe;
use epf_device::Waker;
use epf_epc::sync;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

/// Where the console's bytes go and come from.
pub struct Backend {
    pub input: Box<dyn Read + Send>,
    pub output: Box<dyn Write + Send>,
}

impl Backend {
    /// The process's standard input and output.
    pub fn stdio() -> Self {
        Backend {
            input: Box::new(std::io::stdin()),
            output: Box::new(std::io::stdout()),
        }
    }

    /// A listening Unix socket at `path`; one client at a time. While no client is connected
    /// host output waits (it is not dropped) and there is no input. When a client goes away
    /// the next one is accepted.
    pub fn unix_listener(path: &Path) -> std::io::Result<Self> {
        let listener = UnixListener::bind(path)?;
        let shared = Arc::new(UnixShared {
            path: path.to_path_buf(),
            conn: Mutex::new(None),
            cond: Condvar::new(),
        });
        let acceptor = shared.clone();
        std::thread::Builder::new()
            .name("console-accept".into())
            .spawn(move || {
                for s in listener.incoming() {
                    match s {
                        Ok(s) => acceptor.replace(s),
                        Err(e) => log::warn!("console socket accept: {e}"),
                    }
                }
            })?;
        Ok(Backend {
            input: Box::new(UnixInput {
                shared: shared.clone(),
                stream: None,
            }),
            output: Box::new(UnixOutput {
                shared,
                stream: None,
            }),
        })
    }
}

struct UnixShared {
    path: PathBuf,
    /// The current client, with a generation so readers/writers notice a new one.
    conn: Mutex<Option<(u64, Arc<UnixStream>)>>,
    cond: Condvar,
}

impl UnixShared {
    fn replace(&self, s: UnixStream) {
        let mut g = sync::lock(&self.conn);
        let gen = g.as_ref().map_or(0, |(g, _)| g + 1);
        log::info!("console client connected on {}", self.path.display());
        *g = Some((gen, Arc::new(s)));
        self.cond.notify_all();
    }

    /// Blocks until there is a client newer than `after`.
    fn wait_client(&self, after: Option<u64>) -> (u64, Arc<UnixStream>) {
        let mut g = sync::lock(&self.conn);
        loop {
            if let Some((gen, s)) = g.as_ref() {
                if after.is_none_or(|a| *gen > a) {
                    return (*gen, s.clone());
                }
            }
            g = sync::wait(&self.cond, g);
        }
    }
}

struct UnixInput {
    shared: Arc<UnixShared>,
    stream: Option<(u64, Arc<UnixStream>)>,
}

impl UnixShared {
    /// The client `slot` holds, or the first one to connect.
    fn current(&self, slot: &mut Option<(u64, Arc<UnixStream>)>) -> (u64, Arc<UnixStream>) {
        slot.get_or_insert_with(|| self.wait_client(None)).clone()
    }
}

impl Read for UnixInput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let (gen, s) = self.shared.current(&mut self.stream);
            match (&*s).read(buf) {
                Ok(n) if n > 0 => return Ok(n),
                // This client is gone; wait for the next one rather than ending input.
                _ => self.stream = Some(self.shared.wait_client(Some(gen))),
            }
        }
    }
}

struct UnixOutput {
    shared: Arc<UnixShared>,
    stream: Option<(u64, Arc<UnixStream>)>,
}

impl Write for UnixOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            let (gen, s) = self.shared.current(&mut self.stream);
            match (&*s).write(buf) {
                Ok(n) if n > 0 => return Ok(n),
                _ => self.stream = Some(self.shared.wait_client(Some(gen))),
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The waker the pump threads use; set once the device is first activated.
#[derive(Default)]
pub struct WakerSlot(Mutex<Option<Waker>>);

impl WakerSlot {
    pub fn set(&self, w: Waker) {
        *sync::lock(&self.0) = Some(w);
    }

    pub fn wake(&self) {
        if let Some(w) = sync::lock(&self.0).as_ref() {
            w.wake();
        }
    }
}

/// Starts the thread that writes host output (from `out`) to `output`.
pub fn spawn_output(
    mut output: Box<dyn Write + Send>,
    out: Arc<Pipe>,
    waker: Arc<WakerSlot>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("console-out".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = out.pop_blocking(&mut buf);
                if n == 0 {
                    return;
                }
                // Room appeared: buffers held back for lack of it can be taken now.
                waker.wake();
                if let Err(e) = output.write_all(&buf[..n]).and_then(|()| output.flush()) {
                    log::warn!("console output failed, dropping {n} bytes: {e}");
                }
            }
        })?;
    Ok(())
}

/// Starts the thread that reads backend input into `inp`.
pub fn spawn_input(
    mut input: Box<dyn Read + Send>,
    inp: Arc<Pipe>,
    waker: Arc<WakerSlot>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("console-in".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let room = inp.wait_room();
                if room == 0 {
                    return;
                }
                match input.read(&mut buf[..room.min(64 * 1024)]) {
                    Ok(0) => {
                        log::info!("console input reached end of file");
                        return;
                    }
                    Ok(n) => {
                        inp.push(&buf[..n]);
                        waker.wake();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::warn!("console input failed: {e}");
                        return;
                    }
                }
            }
        })?;
    Ok(())
}
