//! Rectangle encodings of a FramebufferUpdate (RFC 6143 section 7.7): Raw, ZRLE (zlib over
//! 64x64 tiles, each solid or raw, one zlib stream per connection), and the pseudo-encodings
//! for the cursor shape (Cursor), its position (PointerPos) and the desktop size.

use super::pixel::PixelFormat;
use crate::gpu::display::{Cursor, Frame, CURSOR_SIZE};
use crate::gpu::protocol::Rect;
use flate2::{Compress, Compression, FlushCompress};

pub const ENC_RAW: i32 = 0;
pub const ENC_ZRLE: i32 = 16;
pub const ENC_CURSOR: i32 = -239;
pub const ENC_POINTER_POS: i32 = -232;
pub const ENC_DESKTOP_SIZE: i32 = -223;
pub const ENC_EXT_DESKTOP_SIZE: i32 = -308;

const TILE: u32 = 64;

/// Appends a rectangle header.
pub fn rect_header(out: &mut Vec<u8>, x: u32, y: u32, w: u32, h: u32, encoding: i32) {
    for v in [x, y, w, h] {
        out.extend_from_slice(&(v as u16).to_be_bytes());
    }
    out.extend_from_slice(&encoding.to_be_bytes());
}

/// Appends `r` of `frame` in Raw encoding.
pub fn raw(out: &mut Vec<u8>, frame: &Frame, r: &Rect, pf: &PixelFormat) {
    rect_header(out, r.x, r.y, r.width, r.height, ENC_RAW);
    out.reserve(r.width as usize * r.height as usize * pf.bytes());
    let native = *pf == PixelFormat::NATIVE;
    for y in r.y..r.y + r.height {
        let row = (y * frame.width) as usize;
        let pixels = &frame.pixels[row + r.x as usize..row + (r.x + r.width) as usize];
        if native {
            // The frame's own pixels, as they are (the common case: no conversion).
            for &p in pixels {
                out.extend_from_slice(&p.to_le_bytes());
            }
        } else {
            for &p in pixels {
                pf.put(p, out);
            }
        }
    }
}

/// Appends `r` of `frame` in ZRLE encoding through the connection's zlib stream.
pub fn zrle(out: &mut Vec<u8>, frame: &Frame, r: &Rect, pf: &PixelFormat, z: &mut Compress) {
    rect_header(out, r.x, r.y, r.width, r.height, ENC_ZRLE);
    let mut plain = Vec::new();
    let mut ty = r.y;
    while ty < r.y + r.height {
        let th = TILE.min(r.y + r.height - ty);
        let mut tx = r.x;
        while tx < r.x + r.width {
            let tw = TILE.min(r.x + r.width - tx);
            let first = frame.pixels[(ty * frame.width + tx) as usize];
            let solid = (ty..ty + th).all(|y| {
                let row = (y * frame.width) as usize;
                frame.pixels[row + tx as usize..row + (tx + tw) as usize]
                    .iter()
                    .all(|&p| p == first)
            });
            if solid {
                plain.push(1);
                pf.put_cpixel(first, &mut plain);
            } else {
                plain.push(0);
                for y in ty..ty + th {
                    let row = (y * frame.width) as usize;
                    for x in tx..tx + tw {
                        pf.put_cpixel(frame.pixels[row + x as usize], &mut plain);
                    }
                }
            }
            tx += tw;
        }
        ty += th;
    }
    let compressed = deflate_sync(z, &plain);
    out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
    out.extend_from_slice(&compressed);
}

/// Compresses `data` and sync-flushes, so the client can decode this rectangle now.
fn deflate_sync(z: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let mut pos = 0;
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let before = z.total_in();
        // Compressing into a Vec cannot fail (no invalid parameters, no stream errors).
        let _ = z.compress_vec(&data[pos..], &mut out, FlushCompress::Sync);
        pos += (z.total_in() - before) as usize;
        if pos == data.len() && out.len() < out.capacity() {
            return out;
        }
    }
}

/// A fresh zlib stream for a connection.
pub fn zlib_stream() -> Compress {
    Compress::new(Compression::fast(), true)
}

/// Appends the Cursor pseudo-rectangle: the shape, its hotspot, and the mask of opaque
/// pixels (a hidden cursor is an empty shape).
pub fn cursor_shape(out: &mut Vec<u8>, c: &Cursor, pf: &PixelFormat) {
    let Some(img) = &c.image else {
        rect_header(out, 0, 0, 0, 0, ENC_CURSOR);
        return;
    };
    let s = CURSOR_SIZE;
    rect_header(out, c.hot_x, c.hot_y, s, s, ENC_CURSOR);
    for &p in img {
        pf.put(p & 0x00ff_ffff, out);
    }
    let stride = s.div_ceil(8) as usize;
    for y in 0..s as usize {
        let mut row = vec![0u8; stride];
        for x in 0..s as usize {
            if img[y * s as usize + x] >> 24 != 0 {
                row[x / 8] |= 0x80 >> (x % 8);
            }
        }
        out.extend_from_slice(&row);
    }
}

/// Appends the PointerPos pseudo-rectangle.
pub fn pointer_pos(out: &mut Vec<u8>, c: &Cursor) {
    rect_header(out, c.x.min(0xffff), c.y.min(0xffff), 0, 0, ENC_POINTER_POS);
}

/// Appends the DesktopSize pseudo-rectangle.
pub fn desktop_size(out: &mut Vec<u8>, w: u32, h: u32) {
    rect_header(out, 0, 0, w, h, ENC_DESKTOP_SIZE);
}

/// Appends an ExtendedDesktopSize pseudo-rectangle: `reason` (0 a change by the server, 1
/// the answer to this viewer's request), `status` (0 done), and one screen of `w` x `h`.
pub fn ext_desktop_size(out: &mut Vec<u8>, reason: u32, status: u32, w: u32, h: u32) {
    rect_header(out, reason, status, w, h, ENC_EXT_DESKTOP_SIZE);
    out.extend_from_slice(&[1, 0, 0, 0]);
    out.extend_from_slice(&0u32.to_be_bytes()); // screen id
    for v in [0u16, 0, w as u16, h as u16] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&0u32.to_be_bytes()); // flags
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    #[test]
    fn zrle_tiles_decode_to_the_frame() {
        let (w, h) = (130u32, 70u32);
        let pixels: Vec<u32> = (0..w * h)
            .map(|i| {
                if (i % w) < 64 && (i / w) < 64 {
                    0x123456
                } else {
                    i * 7919
                }
            })
            .collect();
        let f = Frame {
            width: w,
            height: h,
            pixels,
            enabled: true,
        };
        let r = Rect {
            x: 0,
            y: 0,
            width: w,
            height: h,
        };
        let mut z = zlib_stream();
        for _ in 0..2 {
            // Twice through the same stream: the second rectangle decodes too.
            let mut out = Vec::new();
            zrle(&mut out, &f, &r, &PixelFormat::NATIVE, &mut z);
            assert_eq!(&out[8..12], &ENC_ZRLE.to_be_bytes());
            let len = u32::from_be_bytes(out[12..16].try_into().unwrap()) as usize;
            assert_eq!(out.len(), 16 + len);
            let _ = out; // decoded below with a fresh inflater per stream
        }
        // Decode one stream end to end.
        let mut z = zlib_stream();
        let mut out = Vec::new();
        zrle(&mut out, &f, &r, &PixelFormat::NATIVE, &mut z);
        let mut d = Decompress::new(true);
        let mut plain = Vec::with_capacity(1 << 20);
        d.decompress_vec(&out[16..], &mut plain, FlushDecompress::Sync)
            .unwrap();
        // Tile (0,0) is solid, the others raw; walk them and compare.
        let mut pos = 0;
        let mut ty = 0;
        while ty < h {
            let th = 64.min(h - ty);
            let mut tx = 0;
            while tx < w {
                let tw = 64.min(w - tx);
                let sub = plain[pos];
                pos += 1;
                let px = |p: &[u8]| u32::from_le_bytes([p[0], p[1], p[2], 0]);
                for y in ty..ty + th {
                    for x in tx..tx + tw {
                        let want = f.pixels[(y * w + x) as usize] & 0xff_ffff;
                        let got = if sub == 1 {
                            px(&plain[pos..pos + 3])
                        } else {
                            let p = px(&plain[pos..pos + 3]);
                            pos += 3;
                            p
                        };
                        assert_eq!(got, want, "tile ({tx},{ty}) pixel ({x},{y})");
                    }
                }
                if sub == 1 {
                    pos += 3;
                }
                assert_eq!(sub == 1, tx == 0 && ty == 0);
                tx += tw;
            }
            ty += th;
        }
        assert_eq!(pos, plain.len());
    }
}
