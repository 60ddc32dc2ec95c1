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
/// into `frame`, which shows `rect` of it. The format is looked at once per call, so each
/// row is one tight loop the compiler can vectorise.
fn copy_area(frame: &mut Frame, res: &Resource, rect: &Rect, area: &Rect) {
    let stride = res.stride() as usize;
    let bpp = BYTES_PER_PIXEL as usize;
    let [r, g, b, _] = res.format.offsets();
    let bgrx = (r, g, b) == (2, 1, 0);
    for y in area.y..area.y + area.height {
        let s0 = y as usize * stride + area.x as usize * bpp;
        let src = &res.pixels[s0..s0 + area.width as usize * bpp];
        let d0 = (y - rect.y) as usize * frame.width as usize + (area.x - rect.x) as usize;
        let dst = &mut frame.pixels[d0..d0 + area.width as usize];
        if bgrx {
            // B, G, R, X/A in memory: each little-endian word is 0x..RRGGBB already; only
            // the fourth byte is cleared.
            // (`try_from` of an exact chunk cannot fail; written this way the loop is
            // vectorised, indexing the bytes one by one is five times slower.)
            for (d, p) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = <[u8; 4]>::try_from(p).map_or(0, u32::from_le_bytes) & 0x00ff_ffff;
            }
        } else {
            for (d, p) in dst.iter_mut().zip(src.chunks_exact(bpp)) {
                *d = u32::from_be_bytes([0, p[r], p[g], p[b]]);
            }
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
    // Every pixel is written below: only a size change needs the buffer resized.
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
