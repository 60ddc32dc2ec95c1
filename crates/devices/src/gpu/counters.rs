//! The device's counters: `gpu: ...` (commands by type, errors, bytes transferred, frames
//! flushed, resource memory, snapshots) and `cursor: ...` (where the driver put it).

use epf_device::{CounterSource, Counters};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one GPU device, bumped by the worker (and the snapshot thread) with relaxed
/// ordering, read by the operator.
#[derive(Debug, Default)]
pub struct GpuCounters {
    pub get_display_info: AtomicU64,
    pub get_edid: AtomicU64,
    pub create_2d: AtomicU64,
    pub unref: AtomicU64,
    pub set_scanout: AtomicU64,
    pub flush: AtomicU64,
    pub transfer_2d: AtomicU64,
    pub attach_backing: AtomicU64,
    pub detach_backing: AtomicU64,
    pub update_cursor: AtomicU64,
    pub move_cursor: AtomicU64,
    /// Commands the device does not implement (3D, blob, capsets, unknown types).
    pub unsupported: AtomicU64,
    /// Commands answered with an error response.
    pub errors: AtomicU64,
    /// Pixel bytes copied from backing pages by TRANSFER_TO_HOST_2D.
    pub bytes_transferred: AtomicU64,
    /// RESOURCE_FLUSHes that reached a scanout.
    pub frames_flushed: AtomicU64,
    pub resources: AtomicU64,
    pub resource_bytes: AtomicU64,
    /// Display-change events raised.
    pub display_events: AtomicU64,
    /// PNG snapshots written (one per output).
    pub snapshots: AtomicU64,
    /// VNC clients connected now, and ever.
    pub vnc_clients: AtomicU64,
    pub vnc_connections: AtomicU64,
    /// Framebuffer updates sent to VNC clients.
    pub vnc_updates: AtomicU64,
    pub cursor_scanout: AtomicU64,
    pub cursor_x: AtomicU64,
    pub cursor_y: AtomicU64,
    pub cursor_visible: AtomicU64,
}

/// Shorthand for the relaxed increments.
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl CounterSource for GpuCounters {
    fn report(&self, out: &mut Counters) {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.line("gpu")
            .field("get_display_info", g(&self.get_display_info))
            .field("get_edid", g(&self.get_edid))
            .field("create_2d", g(&self.create_2d))
            .field("unref", g(&self.unref))
            .field("set_scanout", g(&self.set_scanout))
            .field("flush", g(&self.flush))
            .field("transfer_2d", g(&self.transfer_2d))
            .field("attach_backing", g(&self.attach_backing))
            .field("detach_backing", g(&self.detach_backing))
            .field("update_cursor", g(&self.update_cursor))
            .field("move_cursor", g(&self.move_cursor))
            .field("unsupported", g(&self.unsupported))
            .field("errors", g(&self.errors))
            .field("bytes_transferred", g(&self.bytes_transferred))
            .field("frames_flushed", g(&self.frames_flushed))
            .field("resources", g(&self.resources))
            .field("resource_bytes", g(&self.resource_bytes))
            .field("display_events", g(&self.display_events))
            .field("snapshots", g(&self.snapshots))
            .field("vnc_clients", g(&self.vnc_clients))
            .field("vnc_connections", g(&self.vnc_connections))
            .field("vnc_updates", g(&self.vnc_updates));
        out.line("cursor")
            .field("scanout", g(&self.cursor_scanout))
            .field("x", g(&self.cursor_x))
            .field("y", g(&self.cursor_y))
            .field("visible", g(&self.cursor_visible));
    }
}
