//! Scanouts: which part of which resource each output shows, and the copies into the shared
//! [`Display`] that SET_SCANOUT and RESOURCE_FLUSH make (converting the resource's format to
//! `0x00RRGGBB`).

use super::display::{Display, Frame};
use super::protocol::{Rect, BYTES_PER_PIXEL};
use super::resources::Resource;

/// An output's current scanout: the resource and the rectangle of it shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanout {
    pub resource_id: u32,
    pub rect: Rect,
}

/// Copies `area` (in resource coordinates, inside both the resource and `rect`) of `res`
/// into `frame`, which shows `rect` of it.
fn copy_area(frame: &mut Frame, res: &Resource, rect: &Rect, area: &Rect) {
    let stride = res.stride() as usize;
    let bpp = BYTES_PER_PIXEL as usize;
    for y in area.y..area.y + area.height {
        let src_row = y as usize * stride;
        let dst_row = (y - rect.y) as usize * frame.width as usize;
        for x in area.x..area.x + area.width {
            let s = src_row + x as usize * bpp;
            let d = dst_row + (x - rect.x) as usize;
            frame.pixels[d] = res.format.to_argb(&res.pixels[s..s + bpp]) & 0x00ff_ffff;
        }
    }
}

/// SET_SCANOUT of `res` (already validated: `rect` inside it) on `output`: the frame takes
/// the rectangle's size and contents.
pub fn show(display: &Display, output: usize, res: &Resource, rect: Rect) {
    let mut s = display.lock();
    let Some(frame) = s.frames.get_mut(output) else {
        return;
    };
    frame.width = rect.width;
    frame.height = rect.height;
    frame.pixels.clear();
    frame
        .pixels
        .resize(rect.width as usize * rect.height as usize, 0);
    frame.enabled = true;
    copy_area(frame, res, &rect, &rect);
    s.damage(
        output,
        Rect {
            x: 0,
            y: 0,
            width: rect.width,
            height: rect.height,
        },
    );
    drop(s);
    display.notify();
}

/// Turns `output` off: it shows black at `width` x `height`.
pub fn blank(display: &Display, output: usize, width: u32, height: u32) {
    let mut s = display.lock();
    let Some(frame) = s.frames.get_mut(output) else {
        return;
    };
    *frame = Frame {
        width,
        height,
        pixels: vec![0; width as usize * height as usize],
        enabled: false,
    };
    s.damage(
        output,
        Rect {
            x: 0,
            y: 0,
            width,
            height,
        },
    );
    drop(s);
    display.notify();
}

/// RESOURCE_FLUSH of `flushed` (inside `res`) to an output showing `scanout`: copies the
/// overlap into the frame. Returns whether anything overlapped.
pub fn flush(
    display: &Display,
    output: usize,
    res: &Resource,
    scanout: &Scanout,
    flushed: &Rect,
) -> bool {
    let Some(area) = flushed.intersect(&scanout.rect) else {
        return false;
    };
    let mut s = display.lock();
    let Some(frame) = s.frames.get_mut(output) else {
        return false;
    };
    if frame.width != scanout.rect.width || frame.height != scanout.rect.height {
        return false;
    }
    copy_area(frame, res, &scanout.rect, &area);
    s.damage(
        output,
        Rect {
            x: area.x - scanout.rect.x,
            y: area.y - scanout.rect.y,
            width: area.width,
            height: area.height,
        },
    );
    drop(s);
    display.notify();
    true
}
