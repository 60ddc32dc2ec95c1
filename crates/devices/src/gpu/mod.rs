//! virtio-gpu (virtio 1.2 section 5.7), 2D: the host's display adapter. The control queue
//! carries the 2D command set Linux's `virtio_gpu` driver uses (display info, EDID, 2D
//! resources with backing pages in host memory, scanouts, transfers, flushes, fences); the
//! cursor queue moves and shapes the cursor. What the outputs show is kept in a shared
//! [`Display`] that PNG snapshots and the VNC server (`vnc`) read.
//!
//! Modules: `protocol` (wire format, errors, pixel formats), `resources` (pixels, backing,
//! memory budget), `scanout` (copies into the display), `display` (the shared picture and its
//! damage log), `edid`, `snapshot` (PNG), `counters`, `device` (the queues), `kind` (the
//! subcommand).

mod counters;
mod device;
mod display;
mod edid;
mod kind;
pub mod protocol;
mod resources;
mod scanout;
mod snapshot;
pub mod vnc;

pub use counters::GpuCounters;
pub use device::{DisplayControl, GpuConfig, GpuDevice};
pub use display::{Cursor, Display, DisplayState, Frame};
pub use edid::edid;
pub use kind::{check_max_memory, check_outputs, check_resolution, Gpu, GpuArgs};
pub use resources::MAX_BACKING_ENTRIES;
pub use snapshot::{encode as encode_png, output_path, write_all as write_snapshots};
