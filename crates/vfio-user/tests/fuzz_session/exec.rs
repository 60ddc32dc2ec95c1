//! Running a case: a fresh connection to the server, the case's writes sent with freshly
//! created descriptors (closed on our side once sent), the replies read as they come, both
//! directions multiplexed with `poll` so a large reply never deadlocks against a large
//! request. After the last write the client shuts its side down and reads until the server
//! closes. Everything is bounded by a deadline: a server that neither answers nor closes is a
//! hang. The open descriptors of the process are sampled while the session runs.

use super::case::{Case, Fd};
use super::wire::*;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long one case may take before the server counts as hung.
pub const CASE_DEADLINE: Duration = Duration::from_secs(20);

/// A reply as received.
#[derive(Debug, Clone)]
pub struct Reply {
    pub id: u16,
    pub command: u16,
    pub size: u32,
    pub flags: u32,
    pub error: u32,
    pub body: Vec<u8>,
}

/// What happened on the wire.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Bytes of the stream the server accepted (all, unless it closed early).
    pub sent: usize,
    /// Start offset in the stream of every write that reached the server, with its
    /// descriptors.
    pub chunks: Vec<(usize, Vec<Fd>)>,
    pub replies: Vec<Reply>,
    /// Descriptors that came with replies.
    pub fds_received: usize,
    /// Most descriptors open in the process while the session ran (ours closed).
    pub fds_max: usize,
    /// Whether the server stopped taking our bytes before we were done (EPIPE).
    pub closed_early: bool,
}

/// Creates the descriptor `kind` (the caller closes it after sending).
fn make_fd(kind: Fd, tmp: &Path) -> io::Result<Vec<OwnedFd>> {
    // SAFETY: each branch calls one descriptor-creating system call whose result is checked
    // before ownership is taken; the buffers passed are live locals.
    unsafe {
        let check = |r: libc::c_int| {
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(OwnedFd::from_raw_fd(r))
            }
        };
        Ok(match kind {
            Fd::Memfd(len) => {
                let fd = check(libc::memfd_create(c"fuzz-ram".as_ptr(), libc::MFD_CLOEXEC))?;
                if libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) != 0 {
                    return Err(io::Error::last_os_error());
                }
                vec![fd]
            }
            Fd::File(len) => {
                let f = tempfile_in(tmp)?;
                f.set_len(len)?;
                vec![OwnedFd::from(f)]
            }
            Fd::Eventfd | Fd::SaturatedEventfd | Fd::BlockingEventfd => {
                let nb = if kind == Fd::BlockingEventfd {
                    0
                } else {
                    libc::EFD_NONBLOCK
                };
                let fd = check(libc::eventfd(0, libc::EFD_CLOEXEC | nb))?;
                if kind == Fd::SaturatedEventfd {
                    let max: u64 = u64::MAX - 1;
                    if libc::write(fd.as_raw_fd(), (&max as *const u64).cast(), 8) != 8 {
                        return Err(io::Error::last_os_error());
                    }
                }
                vec![fd]
            }
            Fd::PipeRead | Fd::PipeWrite => {
                let mut p = [0; 2];
                if libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                    return Err(io::Error::last_os_error());
                }
                let (r, w) = (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1]));
                if kind == Fd::PipeRead {
                    vec![r]
                } else {
                    vec![w]
                }
            }
            Fd::DevNull => vec![OwnedFd::from(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")?,
            )],
            Fd::Socket => {
                let (a, _b) = UnixStream::pair()?;
                vec![OwnedFd::from(a)]
            }
            Fd::Dir => vec![OwnedFd::from(std::fs::File::open(tmp)?)],
        })
    }
}

/// A read-write file in `dir` that is already unlinked.
fn tempfile_in(dir: &Path) -> io::Result<std::fs::File> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let p = dir.join(format!(
        "fuzz-file-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&p)?;
    std::fs::remove_file(&p)?;
    Ok(f)
}

/// Control-message buffer for up to `n` descriptors, u64-aligned.
fn cmsg_space(n: usize) -> Vec<u64> {
    // SAFETY: CMSG_SPACE only computes a size.
    let bytes = unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<RawFd>()) as u32) } as usize;
    vec![0u64; bytes.div_ceil(8)]
}

/// One non-blocking sendmsg of `data` with `fds` attached.
fn send(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cmsg = cmsg_space(fds.len().max(1));
    // SAFETY: msghdr is plain data; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = std::mem::size_of_val(fds) as u32;
        // SAFETY: `cmsg` has CMSG_SPACE(payload) bytes; one header is written at its start
        // and the descriptors copied into its data area.
        unsafe {
            msg.msg_control = cmsg.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(payload) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(payload) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(c),
                payload as usize,
            );
        }
    }
    loop {
        // SAFETY: `msg` points at `iov` (inside `data`) and `cmsg`, live for the call.
        let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One non-blocking recvmsg; returns the bytes read and closes any descriptors received,
/// counting them.
fn recv(sock: RawFd, buf: &mut [u8], fds: &mut usize) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cmsg = cmsg_space(MAX_FDS);
    // SAFETY: msghdr is plain data; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.len() * 8;
    let n = loop {
        // SAFETY: `msg` points at `iov` (covering `buf`) and `cmsg`, live and exclusively
        // borrowed for the call.
        let r =
            unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: walks the control messages the kernel wrote within `msg_controllen`; the
    // SCM_RIGHTS descriptors are ours now and are closed at once.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let n = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..n {
                    drop(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    *fds += 1;
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(n)
}

fn poll(sock: RawFd, events: libc::c_short, timeout_ms: i32) -> io::Result<libc::c_short> {
    let mut p = libc::pollfd {
        fd: sock,
        events,
        revents: 0,
    };
    // SAFETY: one live pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(p.revents)
}

/// Splits the received stream into replies; a partial reply at the end is an error.
fn parse_replies(stream: &[u8]) -> Result<Vec<Reply>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let h = stream
            .get(at..at + HEADER)
            .ok_or_else(|| format!("the server sent a partial header at byte {at}"))?;
        let size = u32_at(h, 4).unwrap_or(0);
        if (size as usize) < HEADER {
            return Err(format!("the server sent a reply of {size} bytes"));
        }
        let body = stream
            .get(at + HEADER..at + size as usize)
            .ok_or_else(|| format!("the server sent a partial reply at byte {at}"))?;
        out.push(Reply {
            id: u16_at(h, 0).unwrap_or(0),
            command: u16_at(h, 2).unwrap_or(0),
            size,
            flags: u32_at(h, 8).unwrap_or(0),
            error: u32_at(h, 12).unwrap_or(0),
            body: body.to_vec(),
        });
        at += size as usize;
    }
    Ok(out)
}

/// Runs `case` against the server listening on `path`.
pub fn run(case: &Case, path: &Path, tmp: &Path) -> Result<Outcome, String> {
    let deadline = Instant::now() + CASE_DEADLINE;
    let stream = UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_nonblocking(true)
        .map_err(|e| format!("non-blocking: {e}"))?;
    let sock = stream.as_raw_fd();
    let mut out = Outcome::default();
    let writes: Vec<_> = case.writes.iter().filter(|w| !w.bytes.is_empty()).collect();
    let mut next = 0usize;
    // Bytes of the current write already sent (its descriptors went with the first part).
    let mut partial = 0usize;
    let mut writing = true;
    let mut received = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut polls = 0u64;
    loop {
        if Instant::now() >= deadline {
            return Err(format!(
                "the server neither answered nor closed within {CASE_DEADLINE:?} \
                 ({} of {} writes sent, {} reply bytes)",
                next,
                writes.len(),
                received.len()
            ));
        }
        if writing && next == writes.len() {
            // Everything is sent: sample, then shut our side down.
            out.fds_max = out.fds_max.max(epf_fuzz::probe::open_fds());
            // SAFETY: shutdown(2) on our own socket.
            unsafe { libc::shutdown(sock, libc::SHUT_WR) };
            writing = false;
        }
        polls += 1;
        if polls % 16 == 0 {
            out.fds_max = out.fds_max.max(epf_fuzz::probe::open_fds());
        }
        let want = libc::POLLIN | if writing { libc::POLLOUT } else { 0 };
        let ev = poll(sock, want, 50).map_err(|e| format!("poll: {e}"))?;
        if ev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match recv(sock, &mut buf, &mut out.fds_received) {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The server closed with our bytes unread: its replies came first.
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => break,
                Err(e) => return Err(format!("recv: {e}")),
            }
        }
        if writing && ev & libc::POLLOUT != 0 {
            let w = writes[next];
            let owned: Vec<OwnedFd> = if partial == 0 {
                let mut v = Vec::new();
                for &k in &w.fds {
                    v.extend(make_fd(k, tmp).map_err(|e| format!("creating {k:?}: {e}"))?);
                }
                v
            } else {
                Vec::new()
            };
            let raw: Vec<RawFd> = owned.iter().map(|f| f.as_raw_fd()).collect();
            match send(sock, &w.bytes[partial..], &raw) {
                Ok(n) => {
                    if partial == 0 {
                        out.chunks.push((out.sent, w.fds.clone()));
                    }
                    out.sent += n;
                    partial += n;
                    if partial == w.bytes.len() {
                        next += 1;
                        partial = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EPIPE) | Some(libc::ECONNRESET)) =>
                {
                    out.closed_early = true;
                    writing = false;
                }
                Err(e) => return Err(format!("send: {e}")),
            }
            // Our copies of the descriptors close here.
            drop(owned);
        }
    }
    out.replies = parse_replies(&received)?;
    Ok(out)
}
