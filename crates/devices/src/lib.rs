//! Ready-made virtio devices, each in its own module, each implementing
//! [`epf_device::VirtioDevice`] and offered to the command through an
//! [`epf_device::DeviceKind`] (its subcommand, options and IDs):
//!
//! * [`rng`]: virtio-rng (entropy source, device ID 4), fed by the OS CSPRNG;
//! * [`console`]: virtio-console (device ID 3), one port connected to a byte stream;
//! * [`blk`]: virtio-blk (device ID 2), a raw image file or block device;
//! * [`net`]: virtio-net (device ID 1), whose wire is a TAP device on the endpoint;
//! * [`vsock`]: virtio-vsock (device ID 19), host AF_VSOCK sockets to endpoint Unix sockets.
//! * [`gpu`]: virtio-gpu (device ID 16), 2D scanouts shown as PNG snapshots.

pub mod blk;
pub mod console;
pub mod gpu;
pub mod net;
pub mod rng;
pub mod vsock;

pub use console::ConsoleDevice;
pub use rng::RngDevice;
