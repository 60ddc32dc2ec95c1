//! The virtio-gpu wire format (virtio 1.2 section 5.7.6): command and response types, the
//! control header, the 2D command bodies and the formats a 2D resource may have. Parsing is
//! by copy from little-endian bytes; nothing here trusts a length or a count.

/// Control header size (`struct virtio_gpu_ctrl_hdr`).
pub const HDR_LEN: usize = 24;
/// Scanouts the spec allows at most (`VIRTIO_GPU_MAX_SCANOUTS`).
pub const MAX_SCANOUTS: usize = 16;
/// The EDID block the response carries at most.
pub const EDID_MAX: usize = 1024;

/// `VIRTIO_GPU_FLAG_FENCE`: the driver wants the response to signal a fence.
pub const FLAG_FENCE: u32 = 1;
/// `VIRTIO_GPU_FLAG_INFO_RING_IDX`: `ring_idx` is meaningful.
pub const FLAG_INFO_RING_IDX: u32 = 2;

/// `VIRTIO_GPU_F_EDID`.
pub const F_EDID: u32 = 1;
/// `VIRTIO_GPU_EVENT_DISPLAY` in `events_read`.
pub const EVENT_DISPLAY: u32 = 1;

// Commands (2D and cursor).
pub const CMD_GET_DISPLAY_INFO: u32 = 0x0100;
pub const CMD_RESOURCE_CREATE_2D: u32 = 0x0101;
pub const CMD_RESOURCE_UNREF: u32 = 0x0102;
pub const CMD_SET_SCANOUT: u32 = 0x0103;
pub const CMD_RESOURCE_FLUSH: u32 = 0x0104;
pub const CMD_TRANSFER_TO_HOST_2D: u32 = 0x0105;
pub const CMD_RESOURCE_ATTACH_BACKING: u32 = 0x0106;
pub const CMD_RESOURCE_DETACH_BACKING: u32 = 0x0107;
pub const CMD_GET_CAPSET_INFO: u32 = 0x0108;
pub const CMD_GET_CAPSET: u32 = 0x0109;
pub const CMD_GET_EDID: u32 = 0x010a;
pub const CMD_UPDATE_CURSOR: u32 = 0x0300;
pub const CMD_MOVE_CURSOR: u32 = 0x0301;

// Responses.
pub const RESP_OK_NODATA: u32 = 0x1100;
pub const RESP_OK_DISPLAY_INFO: u32 = 0x1101;
pub const RESP_OK_EDID: u32 = 0x1104;
pub const RESP_ERR_UNSPEC: u32 = 0x1200;
pub const RESP_ERR_OUT_OF_MEMORY: u32 = 0x1201;
pub const RESP_ERR_INVALID_SCANOUT_ID: u32 = 0x1202;
pub const RESP_ERR_INVALID_RESOURCE_ID: u32 = 0x1203;
pub const RESP_ERR_INVALID_PARAMETER: u32 = 0x1205;

/// Why a command failed: each is one of the spec's error responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuError {
    /// `ERR_UNSPEC`: unknown command, truncated command, backing in the wrong state.
    Unspec,
    /// `ERR_OUT_OF_MEMORY`: more resource memory than `--max-memory` allows.
    OutOfMemory,
    /// `ERR_INVALID_SCANOUT_ID`.
    InvalidScanoutId,
    /// `ERR_INVALID_RESOURCE_ID`: unknown, zero or already used resource ID.
    InvalidResourceId,
    /// `ERR_INVALID_PARAMETER`: bad format, size, rectangle, stride or backing.
    InvalidParameter,
}

impl GpuError {
    /// The response type that reports it.
    pub fn response(self) -> u32 {
        match self {
            GpuError::Unspec => RESP_ERR_UNSPEC,
            GpuError::OutOfMemory => RESP_ERR_OUT_OF_MEMORY,
            GpuError::InvalidScanoutId => RESP_ERR_INVALID_SCANOUT_ID,
            GpuError::InvalidResourceId => RESP_ERR_INVALID_RESOURCE_ID,
            GpuError::InvalidParameter => RESP_ERR_INVALID_PARAMETER,
        }
    }
}

/// Little-endian `u32` at `off` of `b`, 0 past the end (bodies are read zero-padded).
pub fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

/// Little-endian `u64` at `off` of `b`, 0 past the end.
pub fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        v.copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

/// `struct virtio_gpu_ctrl_hdr`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub kind: u32,
    pub flags: u32,
    pub fence_id: u64,
    pub ctx_id: u32,
    pub ring_idx: u8,
}

impl Header {
    /// Parses the first [`HDR_LEN`] bytes of `b`.
    pub fn parse(b: &[u8]) -> Header {
        Header {
            kind: u32_at(b, 0),
            flags: u32_at(b, 4),
            fence_id: u64_at(b, 8),
            ctx_id: u32_at(b, 16),
            ring_idx: b.get(20).copied().unwrap_or(0),
        }
    }

    /// The response header to a command with this header: `kind`, and the fence echoed when
    /// the command asked for one (the device completes every command before answering, so the
    /// fence is signalled by the answer itself).
    pub fn response(&self, kind: u32) -> [u8; HDR_LEN] {
        let mut out = [0u8; HDR_LEN];
        out[0..4].copy_from_slice(&kind.to_le_bytes());
        if self.flags & FLAG_FENCE != 0 {
            let flags = self.flags & (FLAG_FENCE | FLAG_INFO_RING_IDX);
            out[4..8].copy_from_slice(&flags.to_le_bytes());
            out[8..16].copy_from_slice(&self.fence_id.to_le_bytes());
            out[16..20].copy_from_slice(&self.ctx_id.to_le_bytes());
            if flags & FLAG_INFO_RING_IDX != 0 {
                out[20] = self.ring_idx;
            }
        }
        out
    }
}

/// `struct virtio_gpu_rect`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    /// Parses 16 bytes at `off` of `b`.
    pub fn parse(b: &[u8], off: usize) -> Rect {
        Rect {
            x: u32_at(b, off),
            y: u32_at(b, off + 4),
            width: u32_at(b, off + 8),
            height: u32_at(b, off + 12),
        }
    }

    /// Whether the rectangle lies within a `width` x `height` area (computed without
    /// overflow: hostile coordinates near `u32::MAX` are outside).
    pub fn within(&self, width: u32, height: u32) -> bool {
        u64::from(self.x) + u64::from(self.width) <= u64::from(width)
            && u64::from(self.y) + u64::from(self.height) <= u64::from(height)
    }

    /// Whether it covers no pixel.
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// The intersection with `other`, if they overlap.
    pub fn intersect(&self, other: &Rect) -> Option<Rect> {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = (u64::from(self.x) + u64::from(self.width))
            .min(u64::from(other.x) + u64::from(other.width));
        let y1 = (u64::from(self.y) + u64::from(self.height))
            .min(u64::from(other.y) + u64::from(other.height));
        (x1 > u64::from(x0) && y1 > u64::from(y0)).then(|| Rect {
            x: x0,
            y: y0,
            width: (x1 - u64::from(x0)) as u32,
            height: (y1 - u64::from(y0)) as u32,
        })
    }

    /// Appends the 16 wire bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for v in [self.x, self.y, self.width, self.height] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// The pixel formats of a 2D resource (`enum virtio_gpu_formats`): four bytes per pixel,
/// named by their order in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    B8G8R8A8,
    B8G8R8X8,
    A8R8G8B8,
    X8R8G8B8,
    R8G8B8A8,
    X8B8G8R8,
    A8B8G8R8,
    R8G8B8X8,
}

/// Bytes per pixel of every format.
pub const BYTES_PER_PIXEL: u32 = 4;

impl Format {
    /// The format with spec number `v`, if it is one.
    pub fn from_wire(v: u32) -> Option<Format> {
        Some(match v {
            1 => Format::B8G8R8A8,
            2 => Format::B8G8R8X8,
            3 => Format::A8R8G8B8,
            4 => Format::X8R8G8B8,
            67 => Format::R8G8B8A8,
            68 => Format::X8B8G8R8,
            121 => Format::A8B8G8R8,
            134 => Format::R8G8B8X8,
            _ => return None,
        })
    }

    /// The spec number.
    pub fn to_wire(self) -> u32 {
        match self {
            Format::B8G8R8A8 => 1,
            Format::B8G8R8X8 => 2,
            Format::A8R8G8B8 => 3,
            Format::X8R8G8B8 => 4,
            Format::R8G8B8A8 => 67,
            Format::X8B8G8R8 => 68,
            Format::A8B8G8R8 => 121,
            Format::R8G8B8X8 => 134,
        }
    }

    /// Every format, in spec order.
    pub const ALL: [Format; 8] = [
        Format::B8G8R8A8,
        Format::B8G8R8X8,
        Format::A8R8G8B8,
        Format::X8R8G8B8,
        Format::R8G8B8A8,
        Format::X8B8G8R8,
        Format::A8B8G8R8,
        Format::R8G8B8X8,
    ];

    /// Byte offsets of red, green, blue and alpha (or the unused byte) within a pixel.
    pub fn offsets(self) -> [usize; 4] {
        match self {
            Format::B8G8R8A8 | Format::B8G8R8X8 => [2, 1, 0, 3],
            Format::A8R8G8B8 | Format::X8R8G8B8 => [1, 2, 3, 0],
            Format::R8G8B8A8 | Format::R8G8B8X8 => [0, 1, 2, 3],
            Format::X8B8G8R8 | Format::A8B8G8R8 => [3, 2, 1, 0],
        }
    }

    /// Whether the fourth channel is alpha (rather than unused).
    pub fn has_alpha(self) -> bool {
        matches!(
            self,
            Format::B8G8R8A8 | Format::A8R8G8B8 | Format::R8G8B8A8 | Format::A8B8G8R8
        )
    }

    /// One pixel (4 bytes in this format) as `0xAARRGGBB`; formats without alpha read as
    /// opaque.
    pub fn to_argb(self, px: &[u8]) -> u32 {
        let [r, g, b, a] = self.offsets();
        let alpha = if self.has_alpha() { px[a] } else { 0xff };
        u32::from_be_bytes([alpha, px[r], px[g], px[b]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip_and_decode_channels() {
        for f in Format::ALL {
            assert_eq!(Format::from_wire(f.to_wire()), Some(f));
        }
        assert_eq!(Format::from_wire(0), None);
        assert_eq!(Format::from_wire(5), None);
        // Red 0x11, green 0x22, blue 0x33, alpha 0x44 in each memory order.
        let cases: [(Format, [u8; 4]); 8] = [
            (Format::B8G8R8A8, [0x33, 0x22, 0x11, 0x44]),
            (Format::B8G8R8X8, [0x33, 0x22, 0x11, 0x44]),
            (Format::A8R8G8B8, [0x44, 0x11, 0x22, 0x33]),
            (Format::X8R8G8B8, [0x44, 0x11, 0x22, 0x33]),
            (Format::R8G8B8A8, [0x11, 0x22, 0x33, 0x44]),
            (Format::R8G8B8X8, [0x11, 0x22, 0x33, 0x44]),
            (Format::A8B8G8R8, [0x44, 0x33, 0x22, 0x11]),
            (Format::X8B8G8R8, [0x44, 0x33, 0x22, 0x11]),
        ];
        for (f, px) in cases {
            let want = if f.has_alpha() {
                0x4411_2233
            } else {
                0xff11_2233
            };
            assert_eq!(f.to_argb(&px), want, "{f:?}");
        }
    }

    #[test]
    fn rectangles_never_overflow() {
        let r = Rect {
            x: u32::MAX,
            y: 0,
            width: 2,
            height: 1,
        };
        assert!(!r.within(u32::MAX, 1));
        let a = Rect {
            x: 10,
            y: 10,
            width: 20,
            height: 20,
        };
        let b = Rect {
            x: 25,
            y: 0,
            width: 100,
            height: 15,
        };
        assert_eq!(
            a.intersect(&b),
            Some(Rect {
                x: 25,
                y: 10,
                width: 5,
                height: 5
            })
        );
        assert_eq!(a.intersect(&Rect { x: 30, ..a }), None);
    }

    #[test]
    fn responses_echo_fences_only_when_asked() {
        let h = Header {
            kind: CMD_RESOURCE_FLUSH,
            flags: FLAG_FENCE | FLAG_INFO_RING_IDX,
            fence_id: 77,
            ctx_id: 3,
            ring_idx: 2,
        };
        let r = h.response(RESP_OK_NODATA);
        assert_eq!(
            Header::parse(&r),
            Header {
                kind: RESP_OK_NODATA,
                ..h
            }
        );
        let r = Header { flags: 0, ..h }.response(RESP_OK_NODATA);
        assert_eq!(
            Header::parse(&r),
            Header {
                kind: RESP_OK_NODATA,
                ..Header::default()
            }
        );
    }
}
