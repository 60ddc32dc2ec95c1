//! `vsock: ...` counters: connections per state, connections opened each way and refused,
//! bytes and packets each way, resets, refused headers, protocol violations, and credit
//! stalls each way.

use super::conn::State;
use epf_device::{CounterSource, Counters};
use std::sync::atomic::{AtomicU64, Ordering};

/// The device's counters (relaxed atomics the worker bumps; read by the operator's thread).
#[derive(Debug, Default)]
pub struct VsockCounters {
    /// Connections in each [`State`] now, in `State::ALL` order.
    pub states: [AtomicU64; 3],
    /// Connections the host opened (REQUEST answered with RESPONSE).
    pub host_connects: AtomicU64,
    /// Connections endpoint applications opened (`CONNECT <port>` answered `OK`).
    pub endpoint_connects: AtomicU64,
    /// Host REQUESTs refused: no service at `PATH_<port>`, or too many connections.
    pub refused: AtomicU64,
    /// Endpoint-initiated connections the host never answered (closed after the timeout).
    pub connect_timeouts: AtomicU64,
    /// Endpoint clients that sent something other than `CONNECT <port>\n`.
    pub bad_connect_lines: AtomicU64,
    pub to_endpoint_bytes: AtomicU64,
    pub to_endpoint_packets: AtomicU64,
    pub to_host_bytes: AtomicU64,
    pub to_host_packets: AtomicU64,
    pub rst_sent: AtomicU64,
    pub rst_received: AtomicU64,
    /// RSTs not sent because too many were already waiting for receive buffers.
    pub rst_dropped: AtomicU64,
    /// Headers from the host refused (cid, type, op, len).
    pub bad_headers: AtomicU64,
    /// Packets from the host breaking the protocol of a connection (credit overrun, bad
    /// `fwd_cnt`, data on a connection not established or shut, duplicate REQUEST).
    pub protocol_errors: AtomicU64,
    /// Times a connection had endpoint data for the host but the host's buffer was full.
    pub stalls_to_host: AtomicU64,
    /// Times a connection's buffer for the endpoint filled (a slow endpoint reader): the
    /// host has no credit until the endpoint takes some.
    pub stalls_to_endpoint: AtomicU64,
    /// TRANSPORT_RESET events sent.
    pub transport_resets: AtomicU64,
}

impl VsockCounters {
    pub fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

impl CounterSource for VsockCounters {
    fn report(&self, out: &mut Counters) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut line = out.line("vsock");
        for (s, c) in State::ALL.iter().zip(&self.states) {
            line.field(s.name(), get(c));
        }
        line.field("host_connects", get(&self.host_connects))
            .field("endpoint_connects", get(&self.endpoint_connects))
            .field("refused", get(&self.refused))
            .field("connect_timeouts", get(&self.connect_timeouts))
            .field("bad_connect_lines", get(&self.bad_connect_lines))
            .field("to_endpoint_bytes", get(&self.to_endpoint_bytes))
            .field("to_endpoint_packets", get(&self.to_endpoint_packets))
            .field("to_host_bytes", get(&self.to_host_bytes))
            .field("to_host_packets", get(&self.to_host_packets))
            .field("rst_sent", get(&self.rst_sent))
            .field("rst_received", get(&self.rst_received))
            .field("rst_dropped", get(&self.rst_dropped))
            .field("bad_headers", get(&self.bad_headers))
            .field("protocol_errors", get(&self.protocol_errors))
            .field("stalls_to_host", get(&self.stalls_to_host))
            .field("stalls_to_endpoint", get(&self.stalls_to_endpoint))
            .field("transport_resets", get(&self.transport_resets));
    }
}
