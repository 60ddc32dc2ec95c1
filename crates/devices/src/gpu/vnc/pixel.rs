//! RFB pixel formats (RFC 6143 section 7.4): the server's native one (32 bits, depth 24,
//! little-endian `0x00RRGGBB`) and any true-colour format a client asks for, into which
//! `0x00RRGGBB` pixels are converted.

/// A true-colour pixel format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelFormat {
    pub bits_per_pixel: u8,
    pub depth: u8,
    pub big_endian: bool,
    pub red_max: u16,
    pub green_max: u16,
    pub blue_max: u16,
    pub red_shift: u8,
    pub green_shift: u8,
    pub blue_shift: u8,
}

impl PixelFormat {
    /// The server's format: `0x00RRGGBB` in 32 little-endian bits.
    pub const NATIVE: PixelFormat = PixelFormat {
        bits_per_pixel: 32,
        depth: 24,
        big_endian: false,
        red_max: 255,
        green_max: 255,
        blue_max: 255,
        red_shift: 16,
        green_shift: 8,
        blue_shift: 0,
    };

    /// The 16 wire bytes.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.bits_per_pixel;
        b[1] = self.depth;
        b[2] = u8::from(self.big_endian);
        b[3] = 1; // true colour
        b[4..6].copy_from_slice(&self.red_max.to_be_bytes());
        b[6..8].copy_from_slice(&self.green_max.to_be_bytes());
        b[8..10].copy_from_slice(&self.blue_max.to_be_bytes());
        b[10] = self.red_shift;
        b[11] = self.green_shift;
        b[12] = self.blue_shift;
        b
    }

    /// Parses a client's SetPixelFormat; `None` for formats the server does not serve
    /// (colour maps, sizes other than 8, 16 or 32 bits, shifts past the pixel).
    pub fn parse(b: &[u8; 16]) -> Option<PixelFormat> {
        let f = PixelFormat {
            bits_per_pixel: b[0],
            depth: b[1],
            big_endian: b[2] != 0,
            red_max: u16::from_be_bytes([b[4], b[5]]),
            green_max: u16::from_be_bytes([b[6], b[7]]),
            blue_max: u16::from_be_bytes([b[8], b[9]]),
            red_shift: b[10],
            green_shift: b[11],
            blue_shift: b[12],
        };
        let ok = b[3] != 0
            && matches!(f.bits_per_pixel, 8 | 16 | 32)
            && [f.red_shift, f.green_shift, f.blue_shift]
                .iter()
                .all(|&s| s < f.bits_per_pixel);
        ok.then_some(f)
    }

    /// Bytes per pixel.
    pub fn bytes(&self) -> usize {
        usize::from(self.bits_per_pixel / 8)
    }

    /// `0x00RRGGBB` as this format's pixel value.
    pub fn value(&self, rgb: u32) -> u32 {
        let scale = |c: u32, max: u16| c * u32::from(max) / 255;
        let r = scale((rgb >> 16) & 0xff, self.red_max);
        let g = scale((rgb >> 8) & 0xff, self.green_max);
        let b = scale(rgb & 0xff, self.blue_max);
        (r << self.red_shift) | (g << self.green_shift) | (b << self.blue_shift)
    }

    /// Appends one pixel (`bytes()` bytes).
    pub fn put(&self, rgb: u32, out: &mut Vec<u8>) {
        let v = self.value(rgb);
        match (self.bits_per_pixel, self.big_endian) {
            (8, _) => out.push(v as u8),
            (16, false) => out.extend_from_slice(&(v as u16).to_le_bytes()),
            (16, true) => out.extend_from_slice(&(v as u16).to_be_bytes()),
            (_, false) => out.extend_from_slice(&v.to_le_bytes()),
            (_, true) => out.extend_from_slice(&v.to_be_bytes()),
        }
    }

    /// ZRLE's compressed pixel (RFC 6143 section 7.7.6): 3 bytes when a 32-bit true-colour
    /// pixel of depth <= 24 keeps its colour in the low (or high) three bytes, else a pixel.
    pub fn put_cpixel(&self, rgb: u32, out: &mut Vec<u8>) {
        if self.bits_per_pixel == 32 && self.depth <= 24 {
            let mask = (u32::from(self.red_max) << self.red_shift)
                | (u32::from(self.green_max) << self.green_shift)
                | (u32::from(self.blue_max) << self.blue_shift);
            let v = self.value(rgb);
            let low = mask & 0xff00_0000 == 0;
            let high = mask & 0x0000_00ff == 0;
            if low || high {
                let bytes = if self.big_endian {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                // The three bytes that hold colour, in the pixel's byte order.
                let keep = match (low, self.big_endian) {
                    (true, false) | (false, true) => &bytes[..3],
                    (true, true) | (false, false) => &bytes[1..],
                };
                out.extend_from_slice(keep);
                return;
            }
        }
        self.put(rgb, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_format_round_trips_and_converts() {
        let n = PixelFormat::NATIVE;
        assert_eq!(PixelFormat::parse(&n.encode()), Some(n));
        let mut out = Vec::new();
        n.put(0x112233, &mut out);
        assert_eq!(out, [0x33, 0x22, 0x11, 0]);
        out.clear();
        n.put_cpixel(0x112233, &mut out);
        assert_eq!(out, [0x33, 0x22, 0x11]);
        // RGB565 big-endian.
        let f = PixelFormat {
            bits_per_pixel: 16,
            depth: 16,
            big_endian: true,
            red_max: 31,
            green_max: 63,
            blue_max: 31,
            red_shift: 11,
            green_shift: 5,
            blue_shift: 0,
        };
        out.clear();
        f.put(0xff_ff_ff, &mut out);
        assert_eq!(out, [0xff, 0xff]);
        let mut colour_map = n.encode();
        colour_map[3] = 0;
        assert_eq!(PixelFormat::parse(&colour_map), None);
        let mut bad = n.encode();
        bad[0] = 24;
        assert_eq!(PixelFormat::parse(&bad), None);
    }
}
