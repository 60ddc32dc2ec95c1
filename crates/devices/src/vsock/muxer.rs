//! The connection table: turns packets from the host into socket operations on the
//! endpoint, and endpoint socket events into packets for the host.
//!
//! Host applications connect to CID 2 port P: the REQUEST makes us connect to the Unix
//! socket `<uds-path>_P`. Endpoint applications connect to `<uds-path>` and write
//! `CONNECT P\n`: we send the host a REQUEST for its port P and, on RESPONSE, answer the
//! application `OK <our port>\n`. A client writing `RESET\n` instead (the endpoint's
//! supervisor, after restarting its services) drops every connection; the device then sends
//! the host a TRANSPORT_RESET event. Everything runs on the worker thread with non-blocking
//! sockets; the poller thread only says which sockets changed.
//!
//! Bounds: at most `max_conns` connections; per connection at most `conn_buf` bytes from
//! the host wait for the endpoint (the credit we advertise, enforced); endpoint data is read
//! only when the host has credit and a receive buffer, straight into that buffer; at most
//! [`MAX_PENDING_RST`] resets wait for receive buffers.

use super::conn::{Conn, Io, State, MAX_CONNECT_LINE};
use super::credit::CreditError;
use super::header::*;
use super::poller::Poller;
use super::stats::VsockCounters;
use epf_device::Waker;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resets waiting for a receive buffer at most; more are dropped (and counted).
pub const MAX_PENDING_RST: usize = 1024;
/// Our first port for connections endpoint applications open.
const FIRST_LOCAL_PORT: u32 = 1 << 30;
const LISTENER: u64 = 0;

/// What the muxer is configured with.
#[derive(Debug, Clone)]
pub struct MuxerConfig {
    pub guest_cid: u64,
    pub uds_path: PathBuf,
    /// Buffer advertised to the host per connection (bytes).
    pub conn_buf: u32,
    pub max_conns: usize,
    /// How long an endpoint-initiated connection waits for the host's RESPONSE.
    pub connect_timeout: Duration,
}

/// The default of [`MuxerConfig::connect_timeout`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection table and the endpoint's listening socket.
pub struct Muxer {
    cfg: MuxerConfig,
    listener: UnixListener,
    listener_ready: bool,
    poller: Poller,
    conns: BTreeMap<u64, Conn>,
    /// (local port, peer port) -> token.
    by_ports: HashMap<(u32, u32), u64>,
    next_token: u64,
    next_port: u32,
    /// (local port, peer port) of resets owed to the host.
    rsts: VecDeque<(u32, u32)>,
    /// The connection served last (round robin over connections with data).
    cursor: u64,
    ready: Vec<u64>,
    /// An endpoint client asked for a transport reset (`RESET\n`).
    reset_requested: bool,
    counters: Arc<VsockCounters>,
}

impl Muxer {
    /// Listens on `cfg.uds_path` and starts the poller.
    pub fn new(cfg: MuxerConfig, counters: Arc<VsockCounters>) -> io::Result<Muxer> {
        let listener = bind_replacing_stale(&cfg.uds_path)?;
        listener.set_nonblocking(true)?;
        let poller = Poller::start()?;
        poller.add(listener.as_raw_fd(), LISTENER)?;
        Ok(Muxer {
            cfg,
            listener,
            listener_ready: true,
            poller,
            conns: BTreeMap::new(),
            by_ports: HashMap::new(),
            next_token: 1,
            next_port: FIRST_LOCAL_PORT,
            rsts: VecDeque::new(),
            cursor: 0,
            ready: Vec::new(),
            reset_requested: false,
            counters,
        })
    }

    pub fn set_waker(&self, w: Waker) {
        self.poller.set_waker(w);
    }

    pub fn uds_path(&self) -> &Path {
        &self.cfg.uds_path
    }

    /// Number of live connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// The most host bytes any connection holds for its endpoint, and the resets waiting
    /// (for tests of the bounds).
    #[cfg(test)]
    pub fn held(&self) -> (usize, usize) {
        let most = self.conns.values().map(|c| c.to_endpoint.len()).max();
        (most.unwrap_or(0), self.rsts.len())
    }

    /// Whether there is no connection.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Drops every connection (their endpoint sockets close) and every owed packet: the
    /// driver reset the device, or the transport was reset.
    pub fn clear(&mut self) {
        let tokens: Vec<u64> = self.conns.keys().copied().collect();
        for t in tokens {
            self.drop_conn(t);
        }
        self.rsts.clear();
        self.publish();
    }

    /// Whether an endpoint client asked for a transport reset since the last call.
    pub fn take_reset_request(&mut self) -> bool {
        std::mem::take(&mut self.reset_requested)
    }

    /// Publishes the per-state connection counts.
    pub fn publish(&self) {
        let mut n = [0u64; 3];
        for c in self.conns.values() {
            n[State::ALL.iter().position(|s| *s == c.state).unwrap_or(0)] += 1;
        }
        for (c, v) in self.counters.states.iter().zip(n) {
            c.store(v, Ordering::Relaxed);
        }
    }

    fn bump(&self, c: impl Fn(&VsockCounters) -> &std::sync::atomic::AtomicU64, n: u64) {
        VsockCounters::bump(c(&self.counters), n);
    }

    fn queue_rst(&mut self, local: u32, peer: u32) {
        if self.rsts.len() >= MAX_PENDING_RST {
            self.bump(|c| &c.rst_dropped, 1);
        } else {
            self.rsts.push_back((local, peer));
        }
    }

    /// Removes connection `t`; its socket closes.
    fn drop_conn(&mut self, t: u64) -> Option<Conn> {
        let c = self.conns.remove(&t)?;
        self.poller.remove(c.stream.as_raw_fd());
        if c.state != State::AwaitingConnect {
            self.by_ports.remove(&(c.local_port, c.peer_port));
        }
        Some(c)
    }

    /// Resets connection `t`: closes it and tells the host.
    fn reset_conn(&mut self, t: u64) {
        if let Some(c) = self.drop_conn(t) {
            if c.state != State::AwaitingConnect {
                self.queue_rst(c.local_port, c.peer_port);
            }
        }
    }

    // ---- Packets from the host --------------------------------------------------------

    /// One packet from the host: `h` with `room` readable bytes after the header in its
    /// chain, `payload` its data (an RW's first `h.len` bytes). Never fails: a bad header or
    /// a protocol violation resets what it names.
    pub fn host_packet(&mut self, h: &Header, room: usize, payload: &[u8]) {
        if let Err(e) = h.validate(self.cfg.guest_cid, room) {
            self.bump(|c| &c.bad_headers, 1);
            log::debug!("vsock: refused header {h:?}: {e:?}");
            // A packet for another CID is not ours to answer; anything else is reset.
            if e != HeaderError::Cid && h.op != OP_RST {
                match self.by_ports.get(&(h.dst_port, h.src_port)).copied() {
                    Some(t) => self.reset_conn(t),
                    None => self.queue_rst(h.dst_port, h.src_port),
                }
            }
            return;
        }
        let key = (h.dst_port, h.src_port);
        let tok = self.by_ports.get(&key).copied();
        match (h.op, tok) {
            (OP_REQUEST, Some(t)) => {
                // A second REQUEST for a live connection: the host lost track of it.
                self.bump(|c| &c.protocol_errors, 1);
                self.reset_conn(t);
            }
            (OP_REQUEST, None) => self.host_connect(h),
            (OP_RST, Some(t)) => {
                self.bump(|c| &c.rst_received, 1);
                self.drop_conn(t);
            }
            (OP_RST, None) => self.bump(|c| &c.rst_received, 1),
            (_, None) => self.queue_rst(h.dst_port, h.src_port),
            (_, Some(t)) => self.conn_packet(t, h, payload),
        }
    }

    fn host_connect(&mut self, h: &Header) {
        if self.conns.len() >= self.cfg.max_conns {
            log::debug!(
                "vsock: refusing port {}: {} connections",
                h.dst_port,
                self.conns.len()
            );
            self.bump(|c| &c.refused, 1);
            return self.queue_rst(h.dst_port, h.src_port);
        }
        let mut path = self.cfg.uds_path.clone().into_os_string();
        path.push(format!("_{}", h.dst_port));
        let stream = match connect_nonblocking(Path::new(&path)) {
            Ok(s) => s,
            Err(e) => {
                // Debug only: a host can send these as fast as it likes (`refused` counts).
                log::debug!("vsock: host connect to port {}: {path:?}: {e}", h.dst_port);
                self.bump(|c| &c.refused, 1);
                return self.queue_rst(h.dst_port, h.src_port);
            }
        };
        let mut c = Conn::new(
            stream,
            h.dst_port,
            h.src_port,
            State::Established,
            self.cfg.conn_buf,
        );
        if c.credit.update_peer(h.buf_alloc, h.fwd_cnt).is_err() {
            self.bump(|c| &c.protocol_errors, 1);
            return self.queue_rst(h.dst_port, h.src_port);
        }
        c.owed.response = true;
        let t = self.next_token;
        self.next_token += 1;
        if let Err(e) = self.poller.add(c.stream.as_raw_fd(), t) {
            log::warn!("vsock: cannot watch a connection: {e}");
            self.bump(|c| &c.refused, 1);
            return self.queue_rst(h.dst_port, h.src_port);
        }
        self.conns.insert(t, c);
        self.by_ports.insert((h.dst_port, h.src_port), t);
        self.bump(|c| &c.host_connects, 1);
    }

    fn conn_packet(&mut self, t: u64, h: &Header, payload: &[u8]) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        if let Err(e) = c.credit.update_peer(h.buf_alloc, h.fwd_cnt) {
            log::debug!("vsock: port {}: {e:?}", c.local_port);
            self.bump(|c| &c.protocol_errors, 1);
            return self.reset_conn(t);
        }
        let mut violation = false;
        match h.op {
            OP_RESPONSE if c.state == State::Connecting => {
                c.state = State::Established;
                let reply = format!("OK {}\n", c.local_port);
                c.reply_len = reply.len();
                c.to_endpoint.extend(reply.as_bytes());
                VsockCounters::bump(&self.counters.endpoint_connects, 1);
            }
            OP_SHUTDOWN => c.peer_shutdown |= h.flags & SHUTDOWN_BOTH,
            OP_RW if c.state == State::Established && c.peer_shutdown & SHUTDOWN_SEND == 0 => {
                let data = &payload[..(h.len as usize).min(payload.len())];
                if let Err(CreditError::Overflow | CreditError::BadFwdCnt) =
                    c.credit.received(data.len() as u32)
                {
                    violation = true;
                } else {
                    VsockCounters::bump(&self.counters.to_endpoint_packets, 1);
                    c.to_endpoint.extend(data);
                    if c.credit.held() == c.credit.buf_alloc && !c.endpoint_stalled {
                        c.endpoint_stalled = true;
                        VsockCounters::bump(&self.counters.stalls_to_endpoint, 1);
                    }
                }
            }
            OP_CREDIT_UPDATE => {}
            OP_CREDIT_REQUEST => c.owed.credit_update = true,
            // RESPONSE out of turn, data where none may go.
            _ => violation = true,
        }
        if violation {
            self.bump(|c| &c.protocol_errors, 1);
            return self.reset_conn(t);
        }
        self.flush_conn(t);
    }

    /// Writes what waits for the endpoint on `t`, then closes it if both sides are done.
    fn flush_conn(&mut self, t: u64) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        match c.flush() {
            Ok(n) => {
                if n > 0 {
                    c.endpoint_stalled = false;
                }
                c.credit.forwarded(n);
                VsockCounters::bump(&self.counters.to_endpoint_bytes, u64::from(n));
                if c.credit.update_due() {
                    c.owed.credit_update = true;
                }
            }
            Err(e) => {
                log::debug!("vsock: port {}: endpoint write: {e}", c.local_port);
                return self.reset_conn(t);
            }
        }
        if c.to_endpoint.is_empty() && c.peer_shutdown & SHUTDOWN_SEND != 0 && !c.write_shut {
            // The host sends no more and the endpoint has it all: pass the EOF on.
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
            c.write_shut = true;
        }
        let host_done = c.peer_shutdown == SHUTDOWN_BOTH
            || (c.peer_shutdown & SHUTDOWN_SEND != 0 && c.endpoint_eof && c.owed.shutdown == 0);
        if host_done && c.to_endpoint.is_empty() {
            // Both ways finished: the RST ends the connection for the host too.
            self.reset_conn(t);
        }
    }

    // ---- Endpoint sockets -------------------------------------------------------------

    /// Takes the poller's news: accepts endpoint clients, reads their `CONNECT` lines and
    /// writes what waits for endpoint sockets that have room again.
    pub fn service(&mut self) {
        let mut ready = std::mem::take(&mut self.ready);
        self.poller.take_ready(&mut ready);
        for &t in &ready {
            if t == LISTENER {
                self.listener_ready = true;
            } else if let Some(c) = self.conns.get_mut(&t) {
                c.readable = true;
                c.writable = true;
            }
        }
        ready.clear();
        self.ready = ready;
        if self.listener_ready {
            self.accept();
        }
        let tokens: Vec<u64> = self.conns.keys().copied().collect();
        for t in tokens {
            let Some(c) = self.conns.get(&t) else {
                continue;
            };
            if c.state == State::Connecting {
                if c.requested_at
                    .is_some_and(|at| at.elapsed() >= self.cfg.connect_timeout)
                {
                    // The host never answered: the application hears why, the host gets RST
                    // in case it answers late.
                    log::info!("vsock: host port {} never answered", c.peer_port);
                    let _ = (&c.stream).write(b"ERR timeout\n");
                    VsockCounters::bump(&self.counters.connect_timeouts, 1);
                    self.reset_conn(t);
                }
            } else if c.state == State::AwaitingConnect && c.readable {
                self.connect_line(t);
            } else if !c.to_endpoint.is_empty() && c.writable {
                self.flush_conn(t);
            }
        }
        let waiting = self.conns.values().any(|c| c.state == State::Connecting);
        self.poller.set_tick(waiting);
    }

    fn accept(&mut self) {
        while self.conns.len() < self.cfg.max_conns {
            match self.listener.accept() {
                Ok((s, _)) => {
                    if s.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let t = self.next_token;
                    self.next_token += 1;
                    if self.poller.add(s.as_raw_fd(), t).is_err() {
                        continue;
                    }
                    let c = Conn::new(s, 0, 0, State::AwaitingConnect, self.cfg.conn_buf);
                    self.conns.insert(t, c);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listener_ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("vsock: accept on {}: {e}", self.cfg.uds_path.display());
                    self.listener_ready = false;
                    return;
                }
            }
        }
        // Full: clients wait in the backlog until a connection ends.
    }

    /// Reads `CONNECT <port>\n` from endpoint client `t` without consuming what follows.
    fn connect_line(&mut self, t: u64) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let mut buf = [0u8; MAX_CONNECT_LINE];
        let n = match peek(&c.stream, &mut buf) {
            Ok(0) => {
                self.drop_conn(t);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.readable = false;
                return;
            }
            Err(_) => {
                self.drop_conn(t);
                return;
            }
        };
        let Some(end) = buf[..n].iter().position(|&b| b == b'\n') else {
            if n == MAX_CONNECT_LINE {
                let _ = c.read(&mut buf);
                self.bad_connect_line(t);
            } else {
                // Part of the line: wait for the rest.
                c.readable = false;
            }
            return;
        };
        if buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]) == b"RESET" {
            // The endpoint's supervisor says its services restarted: every connection goes,
            // and the host hears of it through a TRANSPORT_RESET event.
            log::info!("vsock: RESET from an endpoint client: dropping every connection");
            // Consume the line (a socket closed with unread bytes resets the client).
            let _ = c.read(&mut buf[..end + 1]);
            let _ = (&c.stream).write(b"OK RESET\n");
            self.reset_requested = true;
            self.clear();
            return;
        }
        let port = std::str::from_utf8(&buf[..end])
            .ok()
            .and_then(|l| l.trim_end_matches('\r').strip_prefix("CONNECT "))
            .and_then(|p| p.trim().parse::<u32>().ok());
        let Some(port) = port else {
            let _ = c.read(&mut buf[..end + 1]);
            return self.bad_connect_line(t);
        };
        // Consume the line (it is there: we just peeked it).
        let mut line = [0u8; MAX_CONNECT_LINE];
        if !matches!(c.read(&mut line[..end + 1]), Io::Moved(k) if k == end + 1) {
            self.drop_conn(t);
            return;
        }
        let mut local = self.next_port;
        while self.by_ports.contains_key(&(local, port)) {
            local = local.wrapping_add(1).max(FIRST_LOCAL_PORT);
        }
        self.next_port = local.wrapping_add(1).max(FIRST_LOCAL_PORT);
        c.local_port = local;
        c.peer_port = port;
        c.state = State::Connecting;
        c.owed.request = true;
        c.requested_at = Some(Instant::now());
        self.by_ports.insert((local, port), t);
    }

    fn bad_connect_line(&mut self, t: u64) {
        self.bump(|c| &c.bad_connect_lines, 1);
        if let Some(c) = self.drop_conn(t) {
            // Best effort: a short reason before the socket closes.
            let _ = (&c.stream).write(b"ERR bad CONNECT line\n");
        }
    }

    // ---- Packets for the host ---------------------------------------------------------

    /// The next packet for the host, if any: its header, with its payload (at most `room`
    /// bytes, read straight from the endpoint's socket) in `out[..h.len]`.
    pub fn next_for_host(&mut self, room: usize, out: &mut [u8]) -> Option<Header> {
        let cid = self.cfg.guest_cid;
        if let Some((local, peer)) = self.rsts.pop_front() {
            self.bump(|c| &c.rst_sent, 1);
            self.bump(|c| &c.to_host_packets, 1);
            return Some(Header::to_host(cid, local, peer, OP_RST));
        }
        let room = room.min(out.len()).min(MAX_PAYLOAD as usize);
        let after: Vec<u64> = self
            .conns
            .range(self.cursor + 1..)
            .chain(self.conns.range(..=self.cursor))
            .map(|(t, _)| *t)
            .collect();
        let mut failed = Vec::new();
        let mut found = None;
        for t in after {
            let Some(c) = self.conns.get_mut(&t) else {
                continue;
            };
            if c.state == State::AwaitingConnect {
                continue;
            }
            let op = if c.owed.request {
                c.owed.request = false;
                Some((OP_REQUEST, 0))
            } else if c.owed.response {
                c.owed.response = false;
                Some((OP_RESPONSE, 0))
            } else if c.owed.shutdown != 0 {
                let f = std::mem::take(&mut c.owed.shutdown);
                Some((OP_SHUTDOWN, f))
            } else if c.owed.credit_update {
                c.owed.credit_update = false;
                Some((OP_CREDIT_UPDATE, 0))
            } else if c.owed.credit_request {
                c.owed.credit_request = false;
                Some((OP_CREDIT_REQUEST, 0))
            } else {
                None
            };
            if let Some((op, flags)) = op {
                let mut h = Header::to_host(cid, c.local_port, c.peer_port, op);
                h.flags = flags;
                c.credit.stamp(&mut h.buf_alloc, &mut h.fwd_cnt);
                found = Some((t, h));
                break;
            }
            if c.state != State::Established
                || !c.readable
                || c.endpoint_eof
                || c.peer_shutdown & SHUTDOWN_RCV != 0
            {
                continue;
            }
            let free = c.credit.peer_free() as usize;
            if free == 0 {
                if !c.stalled {
                    c.stalled = true;
                    c.owed.credit_request = true;
                    VsockCounters::bump(&self.counters.stalls_to_host, 1);
                }
                continue;
            }
            let n = free.min(room);
            if n == 0 {
                continue;
            }
            match c.read(&mut out[..n]) {
                Io::Moved(k) => {
                    c.stalled = false;
                    c.credit.sent(k as u32);
                    let mut h = Header::to_host(cid, c.local_port, c.peer_port, OP_RW);
                    h.len = k as u32;
                    c.credit.stamp(&mut h.buf_alloc, &mut h.fwd_cnt);
                    VsockCounters::bump(&self.counters.to_host_bytes, k as u64);
                    found = Some((t, h));
                    break;
                }
                Io::Eof => {
                    c.endpoint_eof = true;
                    let mut h = Header::to_host(cid, c.local_port, c.peer_port, OP_SHUTDOWN);
                    h.flags = SHUTDOWN_SEND;
                    c.credit.stamp(&mut h.buf_alloc, &mut h.fwd_cnt);
                    found = Some((t, h));
                    break;
                }
                Io::Again => {}
                Io::Failed(e) => {
                    log::debug!("vsock: port {}: endpoint read: {e}", c.local_port);
                    failed.push(t);
                }
            }
        }
        for t in failed {
            self.reset_conn(t);
        }
        let (t, h) = found?;
        self.cursor = t;
        self.bump(|c| &c.to_host_packets, 1);
        if h.op == OP_SHUTDOWN || h.op == OP_RESPONSE {
            // A SHUTDOWN may finish the connection; a RESPONSE starts it.
            self.flush_conn(t);
        }
        Some(h)
    }
}

/// Listens on `path`. A socket file left there by a process that died (nothing accepts
/// connections on it) is replaced; a live one, or any other file, is an error.
fn bind_replacing_stale(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let is_socket = std::fs::symlink_metadata(path)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false);
            let dead = matches!(
                connect_nonblocking(path),
                Err(ref c) if c.kind() == io::ErrorKind::ConnectionRefused
            );
            if !(is_socket && dead) {
                return Err(e);
            }
            log::info!("vsock: replacing the stale socket {}", path.display());
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        r => r,
    }
}

/// Connects to the Unix socket at `path` without ever blocking: a service whose listen
/// backlog is full answers `EAGAIN` at once (a blocking `connect` would wait for it to
/// accept, stalling the worker). The socket is non-blocking.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long for sockaddr_un",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain system call; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket we own; the stream closes it from now on.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: `addr` is an initialised sockaddr_un and the length is its size.
    let r = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

/// Peeks at what `s` has to read, without consuming it.
fn peek(s: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes and the descriptor is
    // open for the duration of the call (borrowed from `s`).
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cfg.uds_path);
    }
}
