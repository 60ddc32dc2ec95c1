//! `epf-virtqueue`: the device side of the virtio split virtqueue (virtio 1.2 section 2.7)
//! and packed virtqueue (section 2.8, VIRTIO_F_RING_PACKED), for a virtio-pci device
//! implemented on a PCIe endpoint. Devices see one API ([`Queue`], [`DescriptorChain`])
//! whichever ring format the driver negotiated.
//!
//! The rings live in host memory and are reached only through [`epf_epc::HostMemory`], a
//! copy-based interface (bounds-checked `read`/`write`, single-copy-atomic 16-bit accesses);
//! this crate never holds a pointer into host memory.
//!
//! We write our own engine instead of using rust-vmm's `virtio-queue` for two reasons.
//! First, every malformed ring must produce a precise [`QueueError`] so the device can log it
//! and enter DEVICE_NEEDS_RESET, where `virtio-queue`'s descriptor iterator silently ends a
//! chain at the first bad descriptor. Second, `virtio-queue` requires `vm-memory`'s
//! `GuestMemory`, which hands out long-lived slices of guest memory; that does not fit
//! endpoints whose access to host memory goes through a few small outbound windows or a DMA
//! engine, where each access is a copy (see [`epf_epc::HostMemory`]).
//!
//! Overview:
//! * [`Queue`] (module `queue`): ring indices, [`Queue::pop`], [`Queue::add_used`],
//!   notification suppression in both directions (flags or VIRTIO_F_EVENT_IDX).
//! * [`packed`]: the packed ring behind [`Queue::new_packed`] (wrap counters, buffer ids,
//!   event suppression structures) and its wire format ([`packed::format`]).
//! * [`DescriptorChain`], [`ChainReader`], [`ChainWriter`] (module `chain`): a popped,
//!   validated chain and cursors copying from / to its buffers.
//! * module `walk`: the validation rules applied while walking a chain.
//! * [`layout`]: ring sizes, alignments and field addresses.
//! * [`Descriptor`] (module `descriptor`): the raw descriptor format.
//! * [`QueueError`] (module `error`).
//! * module `testing` (with `cfg(test)` or the `testing` feature): `TestMemory` and `DriverRing`.
//!
//! Robustness (both ring formats): every value read from host memory is untrusted. Nothing panics on host input,
//! every loop is bounded by the queue size (or an indirect table's entry count, at most
//! [`MAX_INDIRECT_ENTRIES`]), and no memory is accessed before its range was checked with
//! [`HostMemory::check_range`](epf_epc::HostMemory::check_range).

mod chain;
mod descriptor;
mod error;
mod in_order;
pub mod layout;
pub mod packed;
mod queue;
mod split_cache;
mod walk;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;

pub use chain::{ChainReader, ChainWriter, DescriptorChain, Segment};
pub use descriptor::{Descriptor, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
pub use error::{QueueError, QueueSizeError};
pub use layout::{check_size as check_queue_size, Ring, MAX_QUEUE_SIZE};
pub use queue::{
    Queue, QueueConfig, QueueStats, VRING_AVAIL_F_NO_INTERRUPT, VRING_USED_F_NO_NOTIFY,
};
pub use walk::{MAX_CHAIN_DESCRIPTORS, MAX_INDIRECT_ENTRIES};
