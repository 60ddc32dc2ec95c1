//! virtio-vsock (virtio 1.2 section 5.10): stream sockets between the host's applications
//! (AF_VSOCK) and the endpoint's (Unix sockets), with no network configuration.
//!
//! Three queues: rx 0 (packets for the host), tx 1 (packets from the host), event 2
//! (TRANSPORT_RESET). The endpoint is CID 2; the host's CID is `--guest-cid`. The hybrid
//! model Firecracker uses maps ports to Unix sockets (see [`muxer`] and docs/vsock.md).
//!
//! Module map: [`header`] the packet header and its checks, [`credit`] flow control,
//! [`conn`] one connection, [`muxer`] the connection table, `poller` the thread that
//! watches the sockets, [`stats`] the counters, `kind` the subcommand.
//!
//! The worker never blocks: every socket is non-blocking; the poller thread wakes the worker
//! when one changes. Every header from the host is checked; a bad one resets the connection
//! it names (RST), never the device. Only a chain too short to hold a header — which no
//! packet can be read from or answered in — sets DEVICE_NEEDS_RESET.

pub mod conn;
pub mod credit;
pub mod header;
mod kind;
pub mod muxer;
mod poller;
pub mod stats;

pub use kind::{Vsock, VsockArgs, VIRTIO_ID_VSOCK};
pub use stats::VsockCounters;

use epf_device::{CounterSource, DescriptorChain, DeviceContext, DeviceError, VirtioDevice};
use header::{Header, HEADER_LEN, MAX_PAYLOAD};
use muxer::{Muxer, MuxerConfig};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const RX: usize = 0;
const TX: usize = 1;
const EVENT: usize = 2;
/// `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`.
const EVENT_TRANSPORT_RESET: u32 = 0;

/// Checks a host CID: 0, 1 and 2 are reserved (hypervisor, local, host) and the spec keeps
/// the upper 32 bits zero; `u32::MAX` is `VMADDR_CID_ANY`.
pub fn check_guest_cid(cid: u64) -> Result<u64, String> {
    if (3..u64::from(u32::MAX)).contains(&cid) {
        Ok(cid)
    } else {
        Err(format!(
            "guest CID {cid} is reserved or out of range (3 .. {})",
            u32::MAX - 1
        ))
    }
}

/// Checks a per-connection buffer size.
pub fn check_conn_buffer(bytes: u32) -> Result<u32, String> {
    if (4096..=16 << 20).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(format!(
            "connection buffer {bytes} is outside 4096 .. 16777216 bytes"
        ))
    }
}

/// How the device is set up.
#[derive(Debug, Clone)]
pub struct VsockConfig {
    pub guest_cid: u64,
    pub uds_path: PathBuf,
    pub conn_buf: u32,
    pub max_conns: usize,
    pub queue_size: u16,
    /// How long an endpoint-initiated connection waits for the host's RESPONSE
    /// ([`muxer::CONNECT_TIMEOUT`] from the command).
    pub connect_timeout: std::time::Duration,
}

/// The socket device.
pub struct VsockDevice {
    cfg: VsockConfig,
    muxer: Muxer,
    chain: DescriptorChain,
    /// Scratch for one packet's payload.
    buf: Vec<u8>,
    /// A TRANSPORT_RESET waits for an event buffer.
    reset_event: bool,
    counters: Arc<VsockCounters>,
}

impl VsockDevice {
    /// Listens on `cfg.uds_path` and starts the poller thread.
    pub fn new(cfg: VsockConfig) -> std::io::Result<VsockDevice> {
        check_guest_cid(cfg.guest_cid).map_err(std::io::Error::other)?;
        let counters = Arc::new(VsockCounters::default());
        let muxer = Muxer::new(
            MuxerConfig {
                guest_cid: cfg.guest_cid,
                uds_path: cfg.uds_path.clone(),
                conn_buf: cfg.conn_buf,
                max_conns: cfg.max_conns,
                connect_timeout: cfg.connect_timeout,
            },
            counters.clone(),
        )?;
        Ok(VsockDevice {
            cfg,
            muxer,
            chain: DescriptorChain::default(),
            buf: vec![0; MAX_PAYLOAD as usize],
            reset_event: false,
            counters,
        })
    }

    /// Drops every connection and tells the driver with a TRANSPORT_RESET event, so that
    /// host sockets connected through the device are reset too (the endpoint's side of
    /// them is gone). An endpoint client asks for it by writing `RESET\n` to `--uds-path`.
    pub fn transport_reset(&mut self) {
        self.muxer.clear();
        self.reset_event = true;
    }

    /// Packets from the host.
    fn transmit(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        let mem = ctx.memory().clone();
        let Some(q) = ctx.try_queue(TX) else {
            return Ok(());
        };
        while q.pop(&mut self.chain).map_err(DeviceError::queue(TX))? {
            let mut r = self.chain.reader(mem.as_ref());
            if r.remaining() < HEADER_LEN {
                return Err(DeviceError::Protocol(format!(
                    "vsock: transmit chain of {} bytes holds no packet header",
                    r.remaining()
                )));
            }
            let mut hb = [0u8; HEADER_LEN];
            r.read_exact(&mut hb).map_err(DeviceError::queue(TX))?;
            let h = Header::decode(&hb);
            let room = r.remaining();
            let n = if h.op == header::OP_RW {
                (h.len as usize).min(room).min(self.buf.len())
            } else {
                0
            };
            r.read_exact(&mut self.buf[..n])
                .map_err(DeviceError::queue(TX))?;
            q.add_used(self.chain.head(), 0)
                .map_err(DeviceError::queue(TX))?;
            self.muxer.host_packet(&h, room, &self.buf[..n]);
        }
        Ok(())
    }

    /// Packets for the host, while it has receive buffers.
    fn receive(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        let mem = ctx.memory().clone();
        let Some(q) = ctx.try_queue(RX) else {
            return Ok(());
        };
        while q.pop(&mut self.chain).map_err(DeviceError::queue(RX))? {
            let mut w = self.chain.writer(mem.as_ref());
            let room = w.remaining();
            if room < HEADER_LEN {
                return Err(DeviceError::Protocol(format!(
                    "vsock: receive buffer of {room} bytes cannot hold a packet header"
                )));
            }
            let Some(h) = self.muxer.next_for_host(room - HEADER_LEN, &mut self.buf) else {
                q.undo_pop();
                break;
            };
            w.write_all(&h.encode()).map_err(DeviceError::queue(RX))?;
            w.write_all(&self.buf[..h.len as usize])
                .map_err(DeviceError::queue(RX))?;
            let written = w.written();
            q.add_used(self.chain.head(), written)
                .map_err(DeviceError::queue(RX))?;
        }
        Ok(())
    }

    /// A pending TRANSPORT_RESET, if the driver posted an event buffer.
    fn event(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        if !self.reset_event {
            return Ok(());
        }
        let mem = ctx.memory().clone();
        let Some(q) = ctx.try_queue(EVENT) else {
            return Ok(());
        };
        if q.pop(&mut self.chain).map_err(DeviceError::queue(EVENT))? {
            let mut w = self.chain.writer(mem.as_ref());
            w.write_all(&EVENT_TRANSPORT_RESET.to_le_bytes())
                .map_err(DeviceError::queue(EVENT))?;
            let written = w.written();
            q.add_used(self.chain.head(), written)
                .map_err(DeviceError::queue(EVENT))?;
            self.reset_event = false;
            self.counters
                .transport_resets
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Everything that may have become possible: host packets, socket news, packets for
    /// the host.
    fn pump(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        self.transmit(ctx)?;
        self.muxer.service();
        if self.muxer.take_reset_request() {
            self.transport_reset();
        }
        self.receive(ctx)?;
        self.event(ctx)?;
        self.muxer.publish();
        Ok(())
    }
}

impl VirtioDevice for VsockDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn device_features(&self) -> u64 {
        // Stream sockets only: no VIRTIO_VSOCK_F_SEQPACKET.
        0
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![self.cfg.queue_size; 3]
    }

    fn initial_config(&self) -> Vec<u8> {
        self.cfg.guest_cid.to_le_bytes().to_vec()
    }

    fn activate(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        self.muxer.set_waker(ctx.waker());
        self.pump(ctx)
    }

    fn queue_notify(&mut self, _q: usize, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        self.pump(ctx)
    }

    fn wake(&mut self, ctx: &mut DeviceContext<'_>) -> Result<(), DeviceError> {
        self.pump(ctx)
    }

    fn reset(&mut self) {
        // The driver forgot every connection: the endpoint's sockets close.
        self.muxer.clear();
        self.reset_event = false;
    }

    fn stats(&self) -> Option<Arc<dyn CounterSource>> {
        Some(self.counters.clone())
    }
}

#[cfg(test)]
mod tests;
