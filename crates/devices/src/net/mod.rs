//! virtio-net (virtio 1.2 section 5.1, device ID 1, PCI 1af4:1041): a NIC for the host whose
//! wire, on the endpoint, is a Linux TAP device.
//!
//! The host's stock `virtio_net` driver gets checksum and TCP segmentation offload in both
//! directions (CSUM/GUEST_CSUM, HOST_TSO4/6, GUEST_TSO4/6, ECN), merged receive buffers,
//! a control queue (promiscuous / all-multicast mode, MAC filter tables, the station address,
//! receive offloads) and multi-queue (`ethtool -L`), plus MAC, MTU and link status in its
//! configuration space. The TAP is opened with IFF_VNET_HDR, so the virtio-net header of each
//! packet passes through unchanged and the endpoint's kernel does the segmentation and
//! checksums the host left to the device; `TUNSETOFFLOAD` tells the TAP what the host accepts.
//!
//! Data path: one copy per packet, between host memory and a reusable buffer, through the
//! copy-based [`HostMemory`](epf_epc::HostMemory) interface — on a real endpoint that copy is
//! the DMA transfer or the outbound-window access, and there is no pointer into host memory to
//! hand to the kernel. The TAP's `read`/`write` of that buffer is the kernel taking or giving
//! the packet. No allocation per packet.
//!
//! Modules, one concept each:
//! * [`device`]: the [`NetDevice`] (queue layout, activation, scheduling of the work);
//! * `kind`: the `net` subcommand ([`Net`], [`NetArgs`]);
//! * `rx` / `tx`: the receive and transmit paths of one queue pair;
//! * `ctrl`: control-queue commands; `filter`: the receive filter they program;
//! * `header`: the virtio-net header and its checks; `features`: offered features and TAP
//!   offloads; `config`: options and the configuration space; `mac`: MAC addresses;
//! * `tap`: the TAP device; `poller`: the thread that waits on it; `stats`: counters.

mod config;
mod ctrl;
pub mod device;
mod features;
mod filter;
mod header;
mod kind;
mod mac;
mod poller;
mod rx;
mod stats;
mod tap;
mod tx;

#[cfg(test)]
mod tests;

pub use config::{
    check_mtu, NetOptions, OptionsError, DEFAULT_QUEUE_SIZE, MAX_MTU, MAX_QUEUE_PAIRS, MIN_MTU,
};
pub use device::{NetDevice, NetError};
pub use kind::{Net, NetArgs};
pub use mac::{MacAddr, MacError};
pub use stats::{NetCounters, PairCounters};
pub use tap::TapError;
