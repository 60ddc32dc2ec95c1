//! One connection: its endpoint socket, its state, its credit, and the bytes from the host
//! not yet taken by the endpoint (at most the buffer we advertised).

use super::credit::Credit;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Accepted on `--uds-path`; waiting for the endpoint application's `CONNECT <port>\n`.
    AwaitingConnect,
    /// REQUEST sent to the host, waiting for its RESPONSE (or RST).
    Connecting,
    /// Data flows.
    Established,
}

impl State {
    pub const ALL: [State; 3] = [
        State::AwaitingConnect,
        State::Connecting,
        State::Established,
    ];

    pub fn name(self) -> &'static str {
        match self {
            State::AwaitingConnect => "awaiting_connect",
            State::Connecting => "connecting",
            State::Established => "established",
        }
    }
}

/// Control packets a connection owes the host (sent when the host posts receive buffers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owed {
    pub request: bool,
    pub response: bool,
    pub credit_update: bool,
    pub credit_request: bool,
    /// SHUTDOWN flags to send (0: none).
    pub shutdown: u32,
}

impl Owed {
    pub fn any(&self) -> bool {
        self.request
            || self.response
            || self.credit_update
            || self.credit_request
            || self.shutdown != 0
    }
}

/// Longest `CONNECT <port>\n` line accepted.
pub const MAX_CONNECT_LINE: usize = 32;

/// A connection between a host port and an endpoint socket.
pub struct Conn {
    pub stream: UnixStream,
    /// Our port (the endpoint side, CID 2).
    pub local_port: u32,
    /// The host application's port.
    pub peer_port: u32,
    pub state: State,
    pub credit: Credit,
    /// Host bytes the endpoint has not taken yet, and replies of ours (`OK <port>\n`).
    pub to_endpoint: VecDeque<u8>,
    /// Bytes of our `OK <port>\n` reply at the front of `to_endpoint`.
    pub reply_len: usize,
    pub owed: Owed,
    /// SHUTDOWN flags the host sent.
    pub peer_shutdown: u32,
    /// The endpoint closed its sending side (read returned 0).
    pub endpoint_eof: bool,
    /// We shut the socket's write side (the host will send no more and all was delivered).
    pub write_shut: bool,
    /// The socket may have bytes to read / room to write (edge-triggered; cleared on EAGAIN).
    pub readable: bool,
    pub writable: bool,
    /// The host's credit ran out while the endpoint had data (counted once per stall).
    pub stalled: bool,
    /// Our buffer for the endpoint filled: the host is out of credit (once per stall).
    pub endpoint_stalled: bool,
    /// When the REQUEST to the host was queued (endpoint-initiated connections).
    pub requested_at: Option<std::time::Instant>,
}

/// What a socket operation found.
pub enum Io {
    /// Moved this many bytes (> 0).
    Moved(usize),
    /// Would block.
    Again,
    /// End of file (reads only).
    Eof,
    /// The socket failed (peer reset, broken pipe...).
    Failed(io::Error),
}

impl Conn {
    pub fn new(
        stream: UnixStream,
        local_port: u32,
        peer_port: u32,
        state: State,
        buf: u32,
    ) -> Conn {
        Conn {
            stream,
            local_port,
            peer_port,
            state,
            credit: Credit::new(buf),
            to_endpoint: VecDeque::new(),
            reply_len: 0,
            owed: Owed::default(),
            peer_shutdown: 0,
            endpoint_eof: false,
            write_shut: false,
            readable: true,
            writable: true,
            stalled: false,
            endpoint_stalled: false,
            requested_at: None,
        }
    }

    /// One non-blocking read from the endpoint into `buf`.
    pub fn read(&mut self, buf: &mut [u8]) -> Io {
        loop {
            return match (&self.stream).read(buf) {
                Ok(0) => Io::Eof,
                Ok(n) => Io::Moved(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    Io::Again
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Io::Failed(e),
            };
        }
    }

    /// Writes what waits for the endpoint until it is all taken or the socket is full;
    /// `Err` if the socket failed. Returns the host bytes delivered (our own reply, which
    /// leads the buffer, is not counted).
    pub fn flush(&mut self) -> Result<u32, io::Error> {
        let mut host_bytes = 0u32;
        while !self.to_endpoint.is_empty() && self.writable {
            let (a, _) = self.to_endpoint.as_slices();
            let n = match (&self.stream).write(a) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.to_endpoint.drain(..n);
            let ours = n.min(self.reply_len);
            self.reply_len -= ours;
            host_bytes += (n - ours) as u32;
        }
        Ok(host_bytes)
    }
}
