//! The vfio-user wire format: message header, command numbers, flags, and the fixed layouts
//! of the message bodies we parse and produce.
//!
//! Source: QEMU `docs/interop/vfio-user.rst` (protocol version 0.0) and `hw/vfio-user/protocol.h`
//! (the client we must interoperate with). Bodies reuse `<linux/vfio.h>` structures; their
//! flag values come from `vfio-bindings`. All integers are in host byte order (the spec says
//! "the endianness of the host system"): client and server share one machine.

use vfio_bindings::bindings::vfio as vb;

/// Size of the header preceding every message.
pub const HEADER_SIZE: usize = 16;

/// Largest `count` we accept in region and DMA read/write messages (advertised as
/// `max_data_xfer_size`; the spec's and QEMU's default).
pub const MAX_DATA_XFER: usize = 1 << 20;

/// Largest message we read: a REGION_WRITE of [`MAX_DATA_XFER`] bytes plus its 16-byte
/// offset/region/count prefix and the header. Anything larger is a protocol violation.
pub const MAX_MESSAGE_SIZE: usize = HEADER_SIZE + 16 + MAX_DATA_XFER;

/// Most file descriptors a client may send in one message (advertised as `max_msg_fds`;
/// QEMU refuses values above 16).
pub const MAX_MSG_FDS: usize = 16;

/// Most DMA mappings held at once (advertised as `max_dma_maps`; the spec's default).
pub const MAX_DMA_MAPS: usize = 65535;

/// DMA page sizes we support (advertised as `pgsizes`).
pub const DMA_PGSIZES: u64 = 4096;

/// Message commands (vfio-user.rst "Commands").
pub mod cmd {
    pub const VERSION: u16 = 1;
    pub const DMA_MAP: u16 = 2;
    pub const DMA_UNMAP: u16 = 3;
    pub const DEVICE_GET_INFO: u16 = 4;
    pub const DEVICE_GET_REGION_INFO: u16 = 5;
    pub const DEVICE_GET_REGION_IO_FDS: u16 = 6;
    pub const DEVICE_GET_IRQ_INFO: u16 = 7;
    pub const DEVICE_SET_IRQS: u16 = 8;
    pub const REGION_READ: u16 = 9;
    pub const REGION_WRITE: u16 = 10;
    pub const DMA_READ: u16 = 11;
    pub const DMA_WRITE: u16 = 12;
    pub const DEVICE_RESET: u16 = 13;
    pub const DIRTY_PAGES: u16 = 14;
    pub const REGION_WRITE_MULTI: u16 = 15;
    pub const DEVICE_FEATURE: u16 = 16;
    pub const MIG_DATA_READ: u16 = 17;
    pub const MIG_DATA_WRITE: u16 = 18;
    /// One past the highest command number we know.
    pub const COUNT: usize = 19;
}

/// Header flag bits (vfio-user.rst "Header").
pub mod flags {
    /// Mask of the message type field.
    pub const TYPE_MASK: u32 = 0xf;
    /// Type: a command.
    pub const TYPE_COMMAND: u32 = 0x0;
    /// Type: a reply.
    pub const TYPE_REPLY: u32 = 0x1;
    /// The sender wants no reply to this command.
    pub const NO_REPLY: u32 = 0x10;
    /// The reply reports an error; `error` holds an errno.
    pub const ERROR: u32 = 0x20;
}

/// The protocol version we speak (QEMU's `VFIO_USER_MAJOR_VER`/`MINOR_VER`).
pub const VERSION_MAJOR: u16 = 0;
pub const VERSION_MINOR: u16 = 0;

/// Region indexes of a PCI device (`VFIO_PCI_*_REGION_INDEX`).
pub const BAR0_REGION: u32 = vb::VFIO_PCI_BAR0_REGION_INDEX;
pub const ROM_REGION: u32 = vb::VFIO_PCI_ROM_REGION_INDEX;
pub const CONFIG_REGION: u32 = vb::VFIO_PCI_CONFIG_REGION_INDEX;
/// Number of regions we report (QEMU needs at least CONFIG_REGION + 1).
pub const NUM_REGIONS: u32 = vb::VFIO_PCI_NUM_REGIONS;

/// IRQ indexes of a PCI device (`VFIO_PCI_*_IRQ_INDEX`).
pub const INTX_IRQ: u32 = vb::VFIO_PCI_INTX_IRQ_INDEX;
pub const MSI_IRQ: u32 = vb::VFIO_PCI_MSI_IRQ_INDEX;
pub const MSIX_IRQ: u32 = vb::VFIO_PCI_MSIX_IRQ_INDEX;
pub const ERR_IRQ: u32 = vb::VFIO_PCI_ERR_IRQ_INDEX;
pub const REQ_IRQ: u32 = vb::VFIO_PCI_REQ_IRQ_INDEX;
/// Number of IRQ indexes we report (QEMU needs at least MSIX_IRQ + 1).
pub const NUM_IRQS: u32 = vb::VFIO_PCI_NUM_IRQS;

/// Size of `struct vfio_region_info` (the fixed part of a region info reply).
pub const REGION_INFO_SIZE: usize = 32;
/// Size of the vfio-user device info body (argsz, flags, num_regions, num_irqs).
pub const DEVICE_INFO_SIZE: usize = 16;
/// Size of `struct vfio_irq_info`.
pub const IRQ_INFO_SIZE: usize = 16;
/// Size of the fixed part of `struct vfio_irq_set`.
pub const IRQ_SET_SIZE: usize = 20;
/// Size of a DMA_MAP body (argsz, flags, offset, address, size).
pub const DMA_MAP_SIZE: usize = 32;
/// Size of a DMA_UNMAP body (argsz, flags, address, size).
pub const DMA_UNMAP_SIZE: usize = 24;
/// Size of the offset/region/count prefix of REGION_READ/WRITE bodies.
pub const REGION_RW_SIZE: usize = 16;
/// Size of one entry of a REGION_WRITE_MULTI body (offset, region, count, 8 data bytes).
pub const WRITE_MULTI_ENTRY_SIZE: usize = 24;
/// Most entries QEMU puts in one REGION_WRITE_MULTI (`VFIO_USER_MULTI_MAX`).
pub const WRITE_MULTI_MAX: u64 = 200;
/// Data bytes of one REGION_WRITE_MULTI entry (`VFIO_USER_MULTI_DATA`).
pub const WRITE_MULTI_DATA: usize = 8;

/// The 16-byte message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Message ID, echoed in the reply.
    pub id: u16,
    /// Command (see [`cmd`]).
    pub command: u16,
    /// Size of the whole message including this header.
    pub size: u32,
    /// Type and flag bits (see [`flags`]).
    pub flags: u32,
    /// errno of an error reply.
    pub error: u32,
}

impl Header {
    /// Decodes a header.
    pub fn decode(b: &[u8; HEADER_SIZE]) -> Self {
        Header {
            id: u16::from_ne_bytes([b[0], b[1]]),
            command: u16::from_ne_bytes([b[2], b[3]]),
            size: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            flags: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            error: u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
        }
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0; HEADER_SIZE];
        b[0..2].copy_from_slice(&self.id.to_ne_bytes());
        b[2..4].copy_from_slice(&self.command.to_ne_bytes());
        b[4..8].copy_from_slice(&self.size.to_ne_bytes());
        b[8..12].copy_from_slice(&self.flags.to_ne_bytes());
        b[12..16].copy_from_slice(&self.error.to_ne_bytes());
        b
    }

    /// The message type bits.
    pub fn msg_type(&self) -> u32 {
        self.flags & flags::TYPE_MASK
    }

    /// Whether the sender asked for no reply.
    pub fn no_reply(&self) -> bool {
        self.flags & flags::NO_REPLY != 0
    }
}

/// Reads host-order integers out of a message body at fixed offsets. Every accessor is
/// bounds checked; callers check the body length once up front and then read fields.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a>(pub &'a [u8]);

impl Body<'_> {
    /// Length of the body.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The u16 at `off`, if present.
    pub fn u16(&self, off: usize) -> Option<u16> {
        let end = off.checked_add(2)?;
        Some(u16::from_ne_bytes(self.0.get(off..end)?.try_into().ok()?))
    }

    /// The u32 at `off`, if present.
    pub fn u32(&self, off: usize) -> Option<u32> {
        let end = off.checked_add(4)?;
        Some(u32::from_ne_bytes(self.0.get(off..end)?.try_into().ok()?))
    }

    /// The u64 at `off`, if present.
    pub fn u64(&self, off: usize) -> Option<u64> {
        let end = off.checked_add(8)?;
        Some(u64::from_ne_bytes(self.0.get(off..end)?.try_into().ok()?))
    }
}

/// Builds a message body by appending host-order integers.
#[derive(Debug, Default, Clone)]
pub struct BodyBuilder(pub Vec<u8>);

impl BodyBuilder {
    /// An empty body with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Self {
        BodyBuilder(Vec::with_capacity(cap))
    }

    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }

    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }

    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }

    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }

    /// The finished body.
    pub fn build(self) -> Vec<u8> {
        self.0
    }
}

/// Name of a command, for logs.
pub fn command_name(c: u16) -> &'static str {
    match c {
        cmd::VERSION => "VERSION",
        cmd::DMA_MAP => "DMA_MAP",
        cmd::DMA_UNMAP => "DMA_UNMAP",
        cmd::DEVICE_GET_INFO => "DEVICE_GET_INFO",
        cmd::DEVICE_GET_REGION_INFO => "DEVICE_GET_REGION_INFO",
        cmd::DEVICE_GET_REGION_IO_FDS => "DEVICE_GET_REGION_IO_FDS",
        cmd::DEVICE_GET_IRQ_INFO => "DEVICE_GET_IRQ_INFO",
        cmd::DEVICE_SET_IRQS => "DEVICE_SET_IRQS",
        cmd::REGION_READ => "REGION_READ",
        cmd::REGION_WRITE => "REGION_WRITE",
        cmd::DMA_READ => "DMA_READ",
        cmd::DMA_WRITE => "DMA_WRITE",
        cmd::DEVICE_RESET => "DEVICE_RESET",
        cmd::DIRTY_PAGES => "DIRTY_PAGES",
        cmd::REGION_WRITE_MULTI => "REGION_WRITE_MULTI",
        cmd::DEVICE_FEATURE => "DEVICE_FEATURE",
        cmd::MIG_DATA_READ => "MIG_DATA_READ",
        cmd::MIG_DATA_WRITE => "MIG_DATA_WRITE",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            id: 0x1234,
            command: cmd::REGION_WRITE,
            size: 40,
            flags: flags::NO_REPLY,
            error: 7,
        };
        assert_eq!(Header::decode(&h.encode()), h);
        assert!(h.no_reply());
        assert_eq!(h.msg_type(), flags::TYPE_COMMAND);
    }

    #[test]
    fn body_reads_are_bounds_checked() {
        let b = BodyBuilder::default().u32(5).u64(9).build();
        let body = Body(&b);
        assert_eq!(body.u32(0), Some(5));
        assert_eq!(body.u64(4), Some(9));
        assert_eq!(body.u64(5), None);
        assert_eq!(body.u16(usize::MAX - 1), None);
    }

    #[test]
    fn pci_indexes_match_qemu_expectations() {
        assert_eq!(CONFIG_REGION, 7);
        const { assert!(NUM_REGIONS > CONFIG_REGION) };
        assert_eq!(MSIX_IRQ, 2);
        const { assert!(NUM_IRQS > MSIX_IRQ) };
    }
}
