//! Ready-made virtio devices, each in its own module and each implementing
//! [`epf_device::VirtioDevice`]:
//!
//! * [`rng`]: virtio-rng (entropy source, device ID 4), fed by the OS CSPRNG;
//! * [`console`]: virtio-console (device ID 3), one port connected to a byte stream.

pub mod blk;
pub mod console;
pub mod net;
pub mod rng;

pub use console::ConsoleDevice;
pub use rng::RngDevice;
