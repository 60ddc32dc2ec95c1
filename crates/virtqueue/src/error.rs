//! Why a virtqueue operation failed. Every variant names one precise violation of the split
//! ring rules (virtio 1.2 section 2.7), of the packed ring's (section 2.8; the `Packed*`,
//! buffer-id and event variants, plus the shared chain rules), or one failed host-memory
//! access, so that the device can
//! log it before entering DEVICE_NEEDS_RESET.

use crate::layout::{Ring, MAX_QUEUE_SIZE};
use epf_epc::HostMemError;
use thiserror::Error;

/// A virtqueue error.
///
/// Errors returned by [`Queue::new`](crate::Queue::new), [`Queue::pop`](crate::Queue::pop),
/// [`Queue::add_used`](crate::Queue::add_used) and the notification methods mean the queue (and
/// with it the device) is broken: the caller sets DEVICE_NEEDS_RESET. [`QueueError::ChainTooShort`]
/// comes only from [`ChainReader`](crate::ChainReader) / [`ChainWriter`](crate::ChainWriter) and
/// is up to the device to judge (usually: the request is malformed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum QueueError {
    /// The queue size is not a power of two in `1..=32768`.
    #[error("invalid queue size {size}")]
    BadSize { size: u16 },

    /// A ring area is not aligned as the spec requires (16/2/4 bytes).
    #[error("{ring} at {addr:#x} is misaligned (needs {} bytes)", ring.align())]
    Misaligned { ring: Ring, addr: u64 },

    /// A ring area is not entirely inside host memory.
    #[error("{ring} {addr:#x}+{len:#x} is outside host memory")]
    RingOutOfRange { ring: Ring, addr: u64, len: u64 },

    /// `avail.idx` moved more than `size` entries ahead of the entries already consumed.
    #[error("available index jumped from {old} to {new} (queue size {size})")]
    AvailIdxJump { old: u16, new: u16, size: u16 },

    /// An available-ring entry names a descriptor outside the table.
    #[error("available ring entry names descriptor {head}, queue size is {size}")]
    HeadOutOfRange { head: u16, size: u16 },

    /// A `next` field points outside the descriptor table (or outside the indirect table).
    #[error("chain {head}: next descriptor {next} is outside the table of {limit} entries")]
    NextOutOfRange { head: u16, next: u16, limit: u16 },

    /// A chain visits more descriptors than its table holds, which means it loops.
    #[error("chain {head}: descriptor loop")]
    DescriptorLoop { head: u16 },

    /// The chain (direct plus indirect descriptors) is longer than `max` descriptors, without
    /// looping.
    #[error("chain {head}: more than {max} descriptors")]
    ChainTooLong { head: u16, max: u32 },

    /// A descriptor inside an indirect table has the INDIRECT flag.
    #[error("chain {head}: nested indirect descriptor")]
    NestedIndirect { head: u16 },

    /// A descriptor has both INDIRECT and NEXT.
    #[error("chain {head}: descriptor has both INDIRECT and NEXT")]
    IndirectWithNext { head: u16 },

    /// An indirect table's length is zero or not a multiple of 16.
    #[error("chain {head}: indirect table length {len} is not a non-zero multiple of 16")]
    IndirectTableLen { head: u16, len: u32 },

    /// An indirect table has more than [`MAX_INDIRECT_ENTRIES`](crate::MAX_INDIRECT_ENTRIES)
    /// entries.
    #[error("chain {head}: indirect table of {len} bytes is too large")]
    IndirectTableTooLarge { head: u16, len: u32 },

    /// An indirect table is not entirely inside host memory.
    #[error("chain {head}: indirect table {addr:#x}+{len:#x} is outside host memory")]
    IndirectTableOutOfRange { head: u16, addr: u64, len: u32 },

    /// A device-readable descriptor follows a device-writable one.
    #[error("chain {head}: readable descriptor after a writable one")]
    WritableBeforeReadable { head: u16 },

    /// The chain's total length does not fit in 32 bits.
    #[error("chain {head}: total length overflows 32 bits")]
    LengthOverflow { head: u16 },

    /// A descriptor's buffer is not entirely inside host memory (or `addr + len` overflows).
    #[error("buffer {addr:#x}+{len:#x} is outside host memory")]
    BufferOutOfRange { addr: u64, len: u32 },

    /// [`Queue::add_used`](crate::Queue::add_used) was given an id outside the queue.
    #[error("used id {id} is outside the queue of size {size}")]
    UsedIdOutOfRange { id: u16, size: u16 },

    /// [`ChainReader::read_exact`](crate::ChainReader::read_exact) /
    /// [`ChainWriter::write_all`](crate::ChainWriter::write_all) needed more bytes than the
    /// chain has left. Nothing was transferred.
    #[error("chain has {available} bytes left, {needed} needed")]
    ChainTooShort { needed: u64, available: u64 },

    /// Packed ring: a descriptor continuing a chain (after one with NEXT) is not available.
    #[error(
        "packed chain at ring position {pos}: descriptor {at} continues it but is not available"
    )]
    PackedChainUnavailable { pos: u16, at: u16 },

    /// Packed ring: a chain has NEXT on every descriptor of the ring.
    #[error("packed chain at ring position {pos}: no end within the ring of {size} descriptors")]
    PackedChainTooLong { pos: u16, size: u16 },

    /// Packed ring: more descriptors are available than the ring has room for next to the
    /// ones the device still owns (the driver reused descriptors not yet used).
    #[error("packed ring overrun: {in_flight} descriptors in flight plus a chain of {chain} exceed the ring of {size}")]
    PackedRingOverrun {
        in_flight: u32,
        chain: u32,
        size: u16,
    },

    /// Packed ring: a buffer ID is not below the queue size.
    #[error("packed ring: buffer id {id} is outside the queue of size {size}")]
    BufferIdOutOfRange { id: u16, size: u16 },

    /// Packed ring: a buffer ID is already in flight (made available and not yet used).
    #[error("packed ring: buffer id {id} is already in flight")]
    BufferIdInUse { id: u16 },

    /// Packed ring: [`Queue::add_used`](crate::Queue::add_used) named an id that is not in
    /// flight.
    #[error("packed ring: used id {id} is not in flight")]
    UsedIdNotInFlight { id: u16 },

    /// Packed ring: the driver event suppression flags are reserved (3), or DESC (2) without
    /// VIRTIO_F_EVENT_IDX.
    /// VIRTIO_F_IN_ORDER, split ring: a chain was made available while as many buffers as
    /// the queue has descriptors were popped and not yet used (only a driver that re-posts
    /// descriptors still in flight can do that).
    #[error("in-order queue: more than {size} buffers in flight")]
    InOrderOverrun { size: u16 },

    #[error("packed ring: invalid driver event suppression flags {flags}")]
    BadEventFlags { flags: u16 },

    /// Packed ring: the driver event suppression offset is not below the queue size.
    #[error("packed ring: event offset {off} is outside the queue of size {size}")]
    EventOffsetOutOfRange { off: u16, size: u16 },

    /// A host-memory access failed.
    #[error("host memory access failed: {0}")]
    Memory(#[from] HostMemError),
}

/// A queue size the split ring does not allow (not a power of two in `1..=32768`): the one
/// limit every device's and the transport's queue sizes are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("queue size {0} is not a power of two in 1..={MAX_QUEUE_SIZE}")]
pub struct QueueSizeError(pub u16);
