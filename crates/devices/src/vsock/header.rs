//! The packet header of virtio-vsock (virtio 1.2 section 5.10.6): its wire layout, the
//! operations and flags, and the checks every header from the host goes through before the
//! device acts on it.

/// Bytes of `struct virtio_vsock_hdr` (packed, little-endian).
pub const HEADER_LEN: usize = 44;
/// The endpoint's context ID: the "host" of vsock's model (`VMADDR_CID_HOST`).
pub const ENDPOINT_CID: u64 = 2;
/// Largest payload of one packet, either way (Linux's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PAYLOAD: u32 = 64 * 1024;

/// `type`: stream sockets, the only type offered (no VIRTIO_VSOCK_F_SEQPACKET).
pub const TYPE_STREAM: u16 = 1;

/// `op` values.
pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;

/// SHUTDOWN flags: the sender will receive no more / send no more.
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// One packet header, decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub ty: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

/// Why a header from the host was refused. Every one is answered with RST (when the packet
/// is not itself an RST) and counted; none stops the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// `src_cid` is not the host's CID or `dst_cid` not the endpoint's.
    Cid,
    /// A type other than stream.
    Type,
    /// An op outside 1..=7.
    Op,
    /// `len` larger than [`MAX_PAYLOAD`], than the chain holds, or non-zero on a packet that
    /// carries no data.
    Len,
}

impl Header {
    /// Decodes the 44 wire bytes.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Header {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default());
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap_or_default());
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            ty: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// The 44 wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.ty.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// Checks a header the host sent from `guest_cid`, whose chain holds `payload_room`
    /// readable bytes after the header.
    pub fn validate(&self, guest_cid: u64, payload_room: usize) -> Result<(), HeaderError> {
        if self.src_cid != guest_cid || self.dst_cid != ENDPOINT_CID {
            return Err(HeaderError::Cid);
        }
        if self.ty != TYPE_STREAM {
            return Err(HeaderError::Type);
        }
        if !(OP_REQUEST..=OP_CREDIT_REQUEST).contains(&self.op) {
            return Err(HeaderError::Op);
        }
        let len_ok = if self.op == OP_RW {
            self.len <= MAX_PAYLOAD && self.len as usize <= payload_room
        } else {
            self.len == 0
        };
        if !len_ok {
            return Err(HeaderError::Len);
        }
        Ok(())
    }

    /// The header of a packet from the endpoint (`src_port`) to the host (`dst_port`).
    pub fn to_host(guest_cid: u64, src_port: u32, dst_port: u32, op: u16) -> Header {
        Header {
            src_cid: ENDPOINT_CID,
            dst_cid: guest_cid,
            src_port,
            dst_port,
            ty: TYPE_STREAM,
            op,
            ..Header::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(len: u32) -> Header {
        Header {
            src_cid: 3,
            dst_cid: ENDPOINT_CID,
            src_port: 1000,
            dst_port: 5000,
            len,
            ty: TYPE_STREAM,
            op: OP_RW,
            flags: 0,
            buf_alloc: 262144,
            fwd_cnt: 17,
        }
    }

    #[test]
    fn round_trips_the_wire_layout() {
        let h = rw(4096);
        let b = h.encode();
        assert_eq!(Header::decode(&b), h);
        // Field offsets of the spec's packed struct.
        assert_eq!(b[0], 3);
        assert_eq!(b[8], 2);
        assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), 1000);
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 4096);
        assert_eq!(u16::from_le_bytes(b[30..32].try_into().unwrap()), OP_RW);
        assert_eq!(u32::from_le_bytes(b[40..44].try_into().unwrap()), 17);
    }

    #[test]
    fn refuses_hostile_headers() {
        assert_eq!(rw(100).validate(3, 100), Ok(()));
        assert_eq!(rw(100).validate(4, 100), Err(HeaderError::Cid));
        assert_eq!(
            Header {
                dst_cid: 7,
                ..rw(0)
            }
            .validate(3, 0),
            Err(HeaderError::Cid)
        );
        assert_eq!(
            Header { ty: 2, ..rw(0) }.validate(3, 0),
            Err(HeaderError::Type)
        );
        for op in [0, 8, 0xffff] {
            assert_eq!(Header { op, ..rw(0) }.validate(3, 0), Err(HeaderError::Op));
        }
        // More than the chain holds, more than the packet maximum, data on a control op.
        assert_eq!(rw(101).validate(3, 100), Err(HeaderError::Len));
        assert_eq!(
            rw(MAX_PAYLOAD + 1).validate(3, usize::MAX),
            Err(HeaderError::Len)
        );
        assert_eq!(rw(u32::MAX).validate(3, usize::MAX), Err(HeaderError::Len));
        assert_eq!(
            Header {
                op: OP_REQUEST,
                ..rw(1)
            }
            .validate(3, 1),
            Err(HeaderError::Len)
        );
    }
}
