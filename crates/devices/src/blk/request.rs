//! Turning a popped descriptor chain into a block request (virtio 1.2 section 5.2.6), with
//! every check the device applies before touching the image.
//!
//! A chain is `struct virtio_blk_req { le32 type; le32 reserved; le64 sector; u8 data[];
//! u8 status; }`: a 16-byte device-readable header, data (device-readable for writes and
//! discard / write-zeroes segments, device-writable for reads and GET_ID), and a one-byte
//! device-writable status at the very end. The outcome of parsing is one of:
//!
//! * [`Parsed::Submit`]: a well-formed read, write, flush, discard or write-zeroes, handed to
//!   the I/O engine;
//! * [`Parsed::Done`]: a request finished on the spot with a status: GET_ID (the serial is
//!   copied here), `VIRTIO_BLK_S_UNSUPP` for request types the device does not implement or
//!   the driver did not negotiate, `VIRTIO_BLK_S_IOERR` for a request the device can answer
//!   but refuses: header shorter than 16 bytes, data segments the wrong way round (readable
//!   data on a read, writable data on a write), a length that is not a multiple of 512,
//!   sectors beyond the end of the image, a write to a read-only image, malformed discard /
//!   write-zeroes segments (or flags the spec says to answer with UNSUPP);
//! * [`Malformed`]: no writable status byte at all. The device cannot even say the request
//!   failed, so, like QEMU, it gives up on the driver: the caller returns a
//!   [`DeviceError`](epf_device::DeviceError) and the transport sets DEVICE_NEEDS_RESET.
//!
//! A readable descriptor after a writable one never gets here: the virtqueue engine rejects
//! the chain (also DEVICE_NEEDS_RESET). All arithmetic on host-provided values is checked, so
//! no request can name bytes outside the image.

use super::config::{MAX_RANGE_SECTORS, MAX_RANGE_SEGMENTS, RANGE_SEGMENT_LEN};
use super::image::{RangeOp, SECTOR_SIZE};
use epf_device::{DescriptorChain, QueueError};
use epf_epc::HostMemory;
use epf_virtqueue::Segment;
use std::sync::Arc;
use virtio_bindings::virtio_blk::*;

/// Request status `VIRTIO_BLK_S_OK`.
pub const S_OK: u8 = VIRTIO_BLK_S_OK as u8;
/// Request status `VIRTIO_BLK_S_IOERR`.
pub const S_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
/// Request status `VIRTIO_BLK_S_UNSUPP`.
pub const S_UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;
/// Length of the request header.
pub const HEADER_LEN: usize = 16;

/// What a request asks of the image.
#[derive(Debug)]
pub enum Op {
    /// Read `len` bytes at `offset` into the request's (writable) data segments.
    Read { offset: u64 },
    /// Write the request's (readable) data segments at `offset`; with `dsync` the data must
    /// be durable before completion (FLUSH was not negotiated).
    Write { offset: u64, dsync: bool },
    /// Make every completed write durable.
    Flush,
    /// Discard or zero byte ranges; with `sync` make the result durable before completion.
    Ranges {
        ranges: Vec<(RangeOp, u64, u64)>,
        sync: bool,
    },
}

/// Which kind of request, for counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
    Flush,
    Discard,
    WriteZeroes,
    GetId,
    Unsupported,
    Invalid,
}

/// A request for the I/O engine.
pub struct Request {
    pub queue: u16,
    pub head: u16,
    /// What to report in the used element.
    pub used_len: u32,
    /// Host address of the status byte.
    pub status_addr: u64,
    pub op: Op,
    pub kind: Kind,
    /// The data segments (reads and writes).
    pub segs: Vec<Segment>,
    /// Total data length in bytes (reads and writes).
    pub len: u64,
    pub mem: Arc<dyn HostMemory>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("queue", &self.queue)
            .field("head", &self.head)
            .field("op", &self.op)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// A finished request, as the engine hands it back to the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub queue: u16,
    pub head: u16,
    pub used_len: u32,
    pub kind: Kind,
    pub status: u8,
    pub bytes: u64,
}

impl Request {
    /// The completion of this request with `status`.
    pub fn completion(&self, status: u8) -> Completion {
        Completion {
            queue: self.queue,
            head: self.head,
            used_len: self.used_len,
            kind: self.kind,
            status,
            bytes: self.len,
        }
    }
}

/// Outcome of parsing a chain.
#[derive(Debug)]
pub enum Parsed {
    Submit(Request),
    /// Finished: write `status` (after `id` bytes for GET_ID) and complete.
    Done {
        status: u8,
        status_addr: u64,
        used_len: u32,
        kind: Kind,
        /// For GET_ID: the identifier bytes to copy into the data segments first.
        id: Option<usize>,
    },
}

/// The chain has no device-writable byte for the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// What the parser needs to know about the device and the negotiation.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub capacity_bytes: u64,
    pub read_only: bool,
    pub flush: bool,
    pub discard: bool,
    pub write_zeroes: bool,
}

/// Splits `segs` after skipping `skip` bytes and dropping `drop_tail` bytes at the end.
fn data_segments(segs: &[Segment], mut skip: u64, total: u64, drop_tail: u64) -> Vec<Segment> {
    let mut want = total.saturating_sub(skip).saturating_sub(drop_tail);
    let mut out = Vec::with_capacity(segs.len());
    for s in segs {
        if want == 0 {
            break;
        }
        let len = u64::from(s.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min(want);
        // `n <= s.len`, and `addr + skip` stays inside the segment.
        out.push(Segment {
            addr: s.addr + skip,
            len: n as u32,
        });
        want -= n;
        skip = 0;
    }
    out
}

/// The host address of the last writable byte.
fn status_address(chain: &DescriptorChain) -> Option<u64> {
    let last = chain.writable().last()?;
    // Segments are non-empty and were checked not to overflow.
    Some(last.addr + u64::from(last.len) - 1)
}

/// Whether `len` bytes at `sector` lie inside the image, returning the byte offset.
fn in_range(sector: u64, len: u64, capacity: u64) -> Option<u64> {
    let offset = sector.checked_mul(SECTOR_SIZE)?;
    let end = offset.checked_add(len)?;
    (end <= capacity).then_some(offset)
}

/// Parses the chain popped from queue `queue`.
pub fn parse(
    chain: &DescriptorChain,
    queue: u16,
    mem: &Arc<dyn HostMemory>,
    lim: &Limits,
) -> Result<Result<Parsed, Malformed>, QueueError> {
    let Some(status_addr) = status_address(chain) else {
        return Ok(Err(Malformed));
    };
    let used_len = u32::try_from(chain.writable_len()).unwrap_or(u32::MAX);
    let done = |status: u8, kind: Kind| {
        Ok(Ok(Parsed::Done {
            status,
            status_addr,
            used_len,
            kind,
            id: None,
        }))
    };
    if chain.readable_len() < HEADER_LEN as u64 {
        return done(S_IOERR, Kind::Invalid);
    }
    let mut hdr = [0u8; HEADER_LEN];
    chain.reader(mem.as_ref()).read_exact(&mut hdr)?;
    let rtype = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let sector = u64::from_le_bytes([
        hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
    ]);
    // Data after the header (readable) and before the status byte (writable).
    let out_len = chain.readable_len() - HEADER_LEN as u64;
    let in_len = chain.writable_len() - 1;
    let submit = |op: Op, kind: Kind, segs: Vec<Segment>, len: u64| {
        Ok(Ok(Parsed::Submit(Request {
            queue,
            head: chain.head(),
            used_len,
            status_addr,
            op,
            kind,
            segs,
            len,
            mem: mem.clone(),
        })))
    };
    match rtype {
        VIRTIO_BLK_T_IN => {
            if out_len != 0 || in_len % SECTOR_SIZE != 0 {
                return done(S_IOERR, Kind::Read);
            }
            let Some(offset) = in_range(sector, in_len, lim.capacity_bytes) else {
                return done(S_IOERR, Kind::Read);
            };
            if in_len == 0 {
                return done(S_OK, Kind::Read);
            }
            let segs = data_segments(chain.writable(), 0, chain.writable_len(), 1);
            submit(Op::Read { offset }, Kind::Read, segs, in_len)
        }
        VIRTIO_BLK_T_OUT => {
            if in_len != 0 || out_len % SECTOR_SIZE != 0 || lim.read_only {
                return done(S_IOERR, Kind::Write);
            }
            let Some(offset) = in_range(sector, out_len, lim.capacity_bytes) else {
                return done(S_IOERR, Kind::Write);
            };
            if out_len == 0 {
                return done(S_OK, Kind::Write);
            }
            let segs = data_segments(chain.readable(), HEADER_LEN as u64, chain.readable_len(), 0);
            let dsync = !lim.flush;
            submit(Op::Write { offset, dsync }, Kind::Write, segs, out_len)
        }
        VIRTIO_BLK_T_FLUSH => submit(Op::Flush, Kind::Flush, Vec::new(), 0),
        VIRTIO_BLK_T_GET_ID => {
            if in_len == 0 {
                return done(S_IOERR, Kind::GetId);
            }
            Ok(Ok(Parsed::Done {
                status: S_OK,
                status_addr,
                used_len,
                kind: Kind::GetId,
                id: Some(in_len.min(u64::from(VIRTIO_BLK_ID_BYTES)) as usize),
            }))
        }
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
            let discard = rtype == VIRTIO_BLK_T_DISCARD;
            let kind = if discard {
                Kind::Discard
            } else {
                Kind::WriteZeroes
            };
            if (discard && !lim.discard) || (!discard && !lim.write_zeroes) {
                return done(S_UNSUPP, kind);
            }
            if lim.read_only
                || in_len != 0
                || out_len == 0
                || out_len % RANGE_SEGMENT_LEN as u64 != 0
                || out_len / RANGE_SEGMENT_LEN as u64 > u64::from(MAX_RANGE_SEGMENTS)
            {
                return done(S_IOERR, kind);
            }
            let mut payload = vec![0u8; out_len as usize];
            let mut r = chain.reader(mem.as_ref());
            r.skip(HEADER_LEN);
            r.read_exact(&mut payload)?;
            let mut ranges = Vec::with_capacity(payload.len() / RANGE_SEGMENT_LEN);
            for seg in payload.chunks_exact(RANGE_SEGMENT_LEN) {
                let mut s8 = [0u8; 8];
                s8.copy_from_slice(&seg[0..8]);
                let start = u64::from_le_bytes(s8);
                let num = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
                let flags = u32::from_le_bytes([seg[12], seg[13], seg[14], seg[15]]);
                let unmap = flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0;
                // Unknown flags, or UNMAP on a discard: UNSUPP (virtio 1.2 5.2.6.2).
                if flags & !VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0 || (discard && unmap) {
                    return done(S_UNSUPP, kind);
                }
                if num > MAX_RANGE_SECTORS {
                    return done(S_IOERR, kind);
                }
                let len = u64::from(num) * SECTOR_SIZE;
                let Some(offset) = in_range(start, len, lim.capacity_bytes) else {
                    return done(S_IOERR, kind);
                };
                let op = match (discard, unmap) {
                    (true, _) => RangeOp::Discard,
                    (false, true) => RangeOp::ZeroUnmap,
                    (false, false) => RangeOp::Zero,
                };
                if len > 0 {
                    ranges.push((op, offset, len));
                }
            }
            let sync = !lim.flush;
            submit(Op::Ranges { ranges, sync }, kind, Vec::new(), 0)
        }
        _ => done(S_UNSUPP, Kind::Unsupported),
    }
}
