//! Byte and descriptor transport over the client's Unix stream socket.
//!
//! Reads and writes never block indefinitely: the socket is used with `MSG_DONTWAIT` and
//! `poll()`, which also watches the controller's wake-up eventfd so that `shutdown()` can
//! interrupt a session. Once the first byte of a message has arrived the rest must follow
//! within a deadline, and replies must be accepted by the client within one; a stalled client
//! is dropped. File descriptors arrive as `SCM_RIGHTS` ancillary data on any byte of a message;
//! they are taken into [`OwnedFd`]s at once so that every path closes the ones not used.
//! `EINTR` is retried everywhere.

use crate::protocol::MAX_MSG_FDS;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;
use thiserror::Error;

/// Why a transfer did not complete.
#[derive(Debug, Error)]
pub(crate) enum XferError {
    /// The peer closed the connection.
    #[error("connection closed by the client")]
    Closed,
    /// The deadline passed.
    #[error("client stalled")]
    Timeout,
    /// The controller's wake-up eventfd fired (shutdown requested).
    #[error("interrupted by shutdown")]
    Woken,
    /// The socket failed.
    #[error(transparent)]
    Os(io::Error),
}

/// What `poll` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    /// The socket is ready.
    Socket,
    /// The wake-up eventfd is readable.
    Woken,
    /// Nothing before the timeout.
    Timeout,
}

/// Polls `fd` for `events` together with `wake` for input. `deadline` `None` waits forever.
pub(crate) fn poll2(
    fd: RawFd,
    events: libc::c_short,
    wake: RawFd,
    deadline: Option<Instant>,
) -> io::Result<Ready> {
    loop {
        let timeout = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Ready::Timeout);
                }
                // Round up so we never spin on a sub-millisecond remainder.
                left.as_millis().saturating_add(1).min(i32::MAX as u128) as i32
            }
        };
        let mut pfd = [
            libc::pollfd {
                fd: wake,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd,
                events,
                revents: 0,
            },
        ];
        // SAFETY: `pfd` is a valid array of two pollfd structures for the duration of the call.
        let r = unsafe { libc::poll(pfd.as_mut_ptr(), 2, timeout) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            continue; // re-check the deadline
        }
        if pfd[0].revents != 0 {
            return Ok(Ready::Woken);
        }
        if pfd[1].revents != 0 {
            // POLLHUP/POLLERR also count: the following recv/send reports what happened.
            return Ok(Ready::Socket);
        }
    }
}

/// The connection to one client.
pub(crate) struct Conn {
    stream: UnixStream,
    wake: RawFd,
}

/// Control-message length that lets the kernel pass exactly `n` descriptors (it installs
/// as many as fit after the header, `CMSG_LEN`, not the padded `CMSG_SPACE`).
fn control_len(n: usize) -> usize {
    // SAFETY: CMSG_LEN only computes a size.
    unsafe { libc::CMSG_LEN((n * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// Control-message buffer able to hold [`MAX_MSG_FDS`] descriptors, u64-aligned as
/// `cmsghdr` requires.
fn cmsg_buffer() -> Vec<u64> {
    // SAFETY: CMSG_SPACE only computes a size.
    let bytes = unsafe { libc::CMSG_SPACE((MAX_MSG_FDS * std::mem::size_of::<RawFd>()) as u32) };
    vec![0u64; (bytes as usize).div_ceil(8)]
}

/// One non-blocking `recvmsg` of `fd` into `buf`, accepting at most `room` descriptors: the
/// control buffer has room for exactly that many, so the kernel installs no more and closes
/// the rest itself. The process thus never holds more of a message's descriptors than the
/// message may carry, not even for an instant (with a full-size buffer, up to
/// [`MAX_MSG_FDS`] more would be installed and then closed). Returns the bytes read, the
/// descriptors received, and whether the kernel dropped some (`MSG_CTRUNC`).
fn recv_with_room(
    fd: RawFd,
    buf: &mut [u8],
    room: usize,
) -> io::Result<(usize, Vec<OwnedFd>, bool)> {
    let room = room.min(MAX_MSG_FDS);
    let mut cmsg = cmsg_buffer();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if room > 0 {
        msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = control_len(room);
    }
    let n = loop {
        // SAFETY: `msg` points at `iov` (covering `buf`) and at `cmsg` (at least
        // `msg_controllen` bytes: `control_len(room) <= CMSG_SPACE(MAX_MSG_FDS)`), all live
        // and exclusively borrowed for the call.
        let r = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: walks the control messages the kernel wrote into `cmsg`, within
    // `msg_controllen`; CMSG_FIRSTHDR/NXTHDR bound-check against it (and return null without
    // a control buffer). SCM_RIGHTS payloads are arrays of descriptors that now belong to
    // us; they are read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let payload = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..payload / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n, fds, msg.msg_flags & libc::MSG_CTRUNC != 0))
}

impl Conn {
    /// Wraps an accepted stream; `wake` is the controller's wake-up eventfd.
    pub fn new(stream: UnixStream, wake: RawFd) -> Self {
        Conn { stream, wake }
    }

    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Waits until the client sends something (or closes), or the controller is woken.
    pub fn wait_readable(&self) -> io::Result<Ready> {
        poll2(self.fd(), libc::POLLIN, self.wake, None)
    }

    /// One non-blocking `recvmsg` into `buf`. Received descriptors are appended to `fds`;
    /// `truncated` is set if some were dropped for lack of room (the kernel closes those).
    fn recv_some(
        &self,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
        truncated: &mut bool,
    ) -> io::Result<usize> {
        // One message carries at most MAX_MSG_FDS descriptors, however many recvmsg calls it
        // takes: the kernel is only asked for what is left of that.
        let room = MAX_MSG_FDS.saturating_sub(fds.len());
        let (n, got, ctrunc) = recv_with_room(self.fd(), buf, room)?;
        *truncated |= ctrunc || got.len() > room;
        fds.extend(got.into_iter().take(room));
        Ok(n)
    }

    /// Fills `buf` entirely, collecting descriptors, before `deadline`.
    pub fn recv_exact(
        &self,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
        truncated: &mut bool,
        deadline: Instant,
    ) -> Result<(), XferError> {
        let mut done = 0;
        while done < buf.len() {
            match self.recv_some(&mut buf[done..], fds, truncated) {
                Ok(0) => return Err(XferError::Closed),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match poll2(self.fd(), libc::POLLIN, self.wake, Some(deadline))
                        .map_err(XferError::Os)?
                    {
                        Ready::Socket => {}
                        Ready::Woken => return Err(XferError::Woken),
                        Ready::Timeout => return Err(XferError::Timeout),
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                    return Err(XferError::Closed)
                }
                Err(e) => return Err(XferError::Os(e)),
            }
        }
        Ok(())
    }

    /// Sends `parts` as one message (concatenated), with `fds` attached to its first byte,
    /// before `deadline`.
    pub fn send(&self, parts: &[&[u8]], fds: &[RawFd], deadline: Instant) -> Result<(), XferError> {
        let data: Vec<u8> = parts.concat();
        let mut sent = 0;
        let mut fds_pending = !fds.is_empty();
        while sent < data.len() {
            let mut iov = libc::iovec {
                iov_base: data[sent..].as_ptr() as *mut libc::c_void,
                iov_len: data.len() - sent,
            };
            let mut cmsg = cmsg_buffer();
            // SAFETY: msghdr is plain data; all-zero is a valid (empty) value.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            if fds_pending {
                let fds = &fds[..fds.len().min(MAX_MSG_FDS)];
                let payload = std::mem::size_of_val(fds) as u32;
                // SAFETY: `cmsg` has room for MAX_MSG_FDS descriptors (CMSG_SPACE); we fill
                // one cmsghdr at its start and copy `fds` into its data area.
                unsafe {
                    msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
                    msg.msg_controllen = libc::CMSG_SPACE(payload) as usize;
                    let c = libc::CMSG_FIRSTHDR(&msg);
                    (*c).cmsg_level = libc::SOL_SOCKET;
                    (*c).cmsg_type = libc::SCM_RIGHTS;
                    (*c).cmsg_len = libc::CMSG_LEN(payload) as usize;
                    std::ptr::copy_nonoverlapping(
                        fds.as_ptr() as *const u8,
                        libc::CMSG_DATA(c),
                        payload as usize,
                    );
                }
            }
            // SAFETY: `msg` points at `iov` (inside `data`) and `cmsg`, live for the call.
            let r =
                unsafe { libc::sendmsg(self.fd(), &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
            if r >= 0 {
                sent += r as usize;
                fds_pending = false;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    match poll2(self.fd(), libc::POLLOUT, self.wake, Some(deadline))
                        .map_err(XferError::Os)?
                    {
                        Ready::Socket => {}
                        Ready::Woken => return Err(XferError::Woken),
                        Ready::Timeout => return Err(XferError::Timeout),
                    }
                }
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                    return Err(XferError::Closed)
                }
                _ => return Err(XferError::Os(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn wake() -> OwnedFd {
        // SAFETY: eventfd returns a fresh descriptor (checked) that we take ownership of.
        unsafe {
            let fd = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
            assert!(fd >= 0);
            OwnedFd::from_raw_fd(fd)
        }
    }

    #[test]
    fn passes_bytes_and_descriptors() {
        let w = wake();
        let (a, b) = UnixStream::pair().unwrap();
        let (ca, cb) = (Conn::new(a, w.as_raw_fd()), Conn::new(b, w.as_raw_fd()));
        let dl = Instant::now() + Duration::from_secs(5);
        let payload = wake();
        ca.send(&[b"hello ", b"world"], &[payload.as_raw_fd(); 3], dl)
            .unwrap();
        let mut buf = [0; 11];
        let mut fds = Vec::new();
        let mut trunc = false;
        cb.recv_exact(&mut buf, &mut fds, &mut trunc, dl).unwrap();
        assert_eq!(&buf, b"hello world");
        assert_eq!(fds.len(), 3);
        assert!(!trunc);
        drop(ca);
        assert!(matches!(
            cb.recv_exact(&mut buf, &mut fds, &mut trunc, dl),
            Err(XferError::Closed)
        ));
    }

    /// Sends `n` descriptors (dups of one eventfd) with one byte on `a`.
    fn send_fds(a: &UnixStream, n: usize) {
        let w = wake();
        let c = Conn::new(a.try_clone().unwrap(), w.as_raw_fd());
        let raw = vec![w.as_raw_fd(); n];
        c.send(&[b"x"], &raw, Instant::now() + Duration::from_secs(5))
            .unwrap();
    }

    /// Found by the session fuzzer: with a control buffer sized for 16 descriptors whatever
    /// the message already had, the kernel installed up to 16 more before the excess was
    /// closed, so a client could make the server hold twice the bound for a moment.
    #[test]
    fn the_kernel_is_asked_for_no_more_descriptors_than_there_is_room_for() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut buf = [0u8; 1];
        for (sent, room) in [(5, 3), (5, 1), (3, 0), (2, 2), (MAX_MSG_FDS, 99)] {
            send_fds(&a, sent);
            let (n, fds, ctrunc) = recv_with_room(b.as_raw_fd(), &mut buf, room).unwrap();
            assert_eq!(n, 1);
            let room = room.min(MAX_MSG_FDS);
            assert_eq!(fds.len(), sent.min(room), "{sent} sent, room for {room}");
            assert_eq!(ctrunc, sent > room, "{sent} sent, room for {room}");
        }
    }

    #[test]
    fn a_message_keeps_at_most_its_quota_over_several_reads() {
        let w = wake();
        let (a, b) = UnixStream::pair().unwrap();
        let cb = Conn::new(b, w.as_raw_fd());
        for _ in 0..3 {
            send_fds(&a, 7);
        }
        let mut buf = [0u8; 3];
        let mut fds = Vec::new();
        let mut trunc = false;
        let dl = Instant::now() + Duration::from_secs(5);
        cb.recv_exact(&mut buf, &mut fds, &mut trunc, dl).unwrap();
        assert_eq!(fds.len(), MAX_MSG_FDS);
        assert!(trunc);
    }

    #[test]
    fn stalls_time_out_and_wakeups_interrupt() {
        let w = wake();
        let (a, b) = UnixStream::pair().unwrap();
        let cb = Conn::new(b, w.as_raw_fd());
        let mut fds = Vec::new();
        let mut trunc = false;
        let mut buf = [0; 4];
        let dl = Instant::now() + Duration::from_millis(50);
        assert!(matches!(
            cb.recv_exact(&mut buf, &mut fds, &mut trunc, dl),
            Err(XferError::Timeout)
        ));
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes to the eventfd we own.
        unsafe { libc::write(w.as_raw_fd(), one.as_ptr() as *const libc::c_void, 8) };
        let dl = Instant::now() + Duration::from_secs(5);
        assert!(matches!(
            cb.recv_exact(&mut buf, &mut fds, &mut trunc, dl),
            Err(XferError::Woken)
        ));
        assert_eq!(cb.wait_readable().unwrap(), Ready::Woken);
        drop(a);
    }
}
