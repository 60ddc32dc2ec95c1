//! The VNC server (RFB 3.8, RFC 6143) that shows the outputs live: output N on the
//! `--vnc` port + N, any number of viewers up to [`MAX_CLIENTS`] per server, each getting
//! only what changed since its last update (ZRLE or Raw), the cursor's shape and position.
//! One thread accepts; each client has a reader and a writer thread. Nothing here can hold
//! up the device: viewers copy what they need out of the shared display and encode on
//! their own threads. Keyboard and pointer events go to an [`InputSink`] if one is attached.

mod encode;
mod pixel;
mod session;
#[cfg(test)]
mod tests;

pub use pixel::PixelFormat;

use super::counters::GpuCounters;
use super::device::DisplayControl;
use super::display::Display;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Viewers served at once per output; more are refused (their socket is closed).
pub const MAX_CLIENTS: u64 = 16;

/// Where the viewers' keyboard and pointer go: the hook for an input device (virtio-input is a
/// later device; until one is attached, `None` drops the events).
pub trait InputSink: Send + Sync {
    /// A key (an X11 keysym) went down or up on output `output`'s viewer.
    fn key(&self, output: usize, down: bool, keysym: u32);
    /// The pointer moved to (`x`, `y`) of output `output` with `buttons` (bit 0 the left
    /// button) held.
    fn pointer(&self, output: usize, buttons: u8, x: u16, y: u16);
}

/// What the viewers of one device share: the picture, the counters, (to resize an output
/// when a viewer asks with SetDesktopSize) the device's display control, and the input hook.
#[derive(Clone)]
pub struct Shared {
    pub display: Arc<Display>,
    pub counters: Arc<GpuCounters>,
    pub control: Option<Arc<DisplayControl>>,
    pub input: Option<Arc<dyn InputSink>>,
}

/// Binds the listeners (output N on `addr`'s port + N) and starts accepting.
pub fn start(addr: SocketAddr, outputs: usize, shared: Shared) -> std::io::Result<Vec<SocketAddr>> {
    let mut bound = Vec::new();
    let mut listeners = Vec::new();
    for i in 0..outputs {
        let mut a = addr;
        let port = u16::try_from(usize::from(addr.port()) + i)
            .map_err(|_| std::io::Error::other("VNC port out of range"))?;
        a.set_port(if addr.port() == 0 { 0 } else { port });
        let l = TcpListener::bind(a)?;
        bound.push(l.local_addr()?);
        listeners.push(l);
    }
    for (output, l) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("vnc-accept-{output}"))
            .spawn(move || accept(l, output, shared))?;
    }
    Ok(bound)
}

fn accept(l: TcpListener, output: usize, shared: Shared) {
    let counters = shared.counters.clone();
    let active = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for s in l.incoming() {
        let s = match s {
            Ok(s) => s,
            Err(e) => {
                log::warn!("vnc accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= MAX_CLIENTS {
            log::warn!("vnc: refusing a viewer: {MAX_CLIENTS} connected");
            continue;
        }
        let peer = s.peer_addr().ok();
        active.fetch_add(1, Ordering::Relaxed);
        counters.vnc_clients.fetch_add(1, Ordering::Relaxed);
        counters.vnc_connections.fetch_add(1, Ordering::Relaxed);
        let (sh, c, a) = (shared.clone(), counters.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("vnc-client".into())
            .spawn(move || {
                log::info!("vnc: viewer {peer:?} connected to output {output}");
                if let Err(e) = session::serve(s, sh, output) {
                    log::info!("vnc: viewer {peer:?}: {e}");
                }
                c.vnc_clients.fetch_sub(1, Ordering::Relaxed);
                a.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            log::warn!("vnc: cannot start a viewer thread: {e}");
            counters.vnc_clients.fetch_sub(1, Ordering::Relaxed);
            active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
