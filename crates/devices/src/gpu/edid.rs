//! The EDID (VESA E-EDID 1.4 base block) each output reports through GET_EDID: a digital
//! display whose preferred (native) mode is the output's resolution, named `virtio-epf N`.
//! Linux reads the modes from it, so the guest's preferred mode follows `--resolution`.

/// Blanking of the preferred timing (pixels/lines) and its sync placement.
const H_BLANK: u32 = 160;
const H_FRONT: u32 = 48;
const H_SYNC: u32 = 32;
const V_BLANK: u32 = 35;
const V_FRONT: u32 = 3;
const V_SYNC: u32 = 6;
/// Largest pixel clock a detailed timing holds (10 kHz units in a u16).
const MAX_CLOCK_HZ: u64 = 65_535 * 10_000;
/// Largest active width or height a detailed timing holds (12 bits).
pub const MAX_DIMENSION: u32 = 4095;

/// The refresh rate (Hz) the timing of a `width` x `height` mode uses: 60, or less where
/// the pixel clock would not fit.
pub fn refresh_hz(width: u32, height: u32) -> u32 {
    let total = u64::from(width + H_BLANK) * u64::from(height + V_BLANK);
    (MAX_CLOCK_HZ / total).clamp(1, 60) as u32
}

/// The 128-byte EDID of output `index` with native mode `width` x `height` (each at most
/// [`MAX_DIMENSION`]).
pub fn edid(index: u32, width: u32, height: u32) -> [u8; 128] {
    let width = width.min(MAX_DIMENSION);
    let height = height.min(MAX_DIMENSION);
    let mut e = [0u8; 128];
    e[0..8].copy_from_slice(&[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
    // Manufacturer "EPF": three 5-bit letters ('A' = 1), big-endian.
    let id =
        (u16::from(b'E' - b'@') << 10) | (u16::from(b'P' - b'@') << 5) | u16::from(b'F' - b'@');
    e[8..10].copy_from_slice(&id.to_be_bytes());
    e[10..12].copy_from_slice(&0x1050u16.to_le_bytes());
    e[12..16].copy_from_slice(&(index + 1).to_le_bytes());
    e[16] = 1; // week
    e[17] = (2025 - 1990) as u8; // year
    e[18] = 1; // EDID 1.4
    e[19] = 4;
    e[20] = 0xa0; // digital, 8 bits per colour
                  // Physical size at 96 dpi, in cm (at least 1).
    let h_mm = (width * 254 / 960).max(10);
    let v_mm = (height * 254 / 960).max(10);
    e[21] = (h_mm / 10).min(255) as u8;
    e[22] = (v_mm / 10).min(255) as u8;
    e[23] = 120; // gamma 2.2
    e[24] = 0x06; // sRGB default, preferred timing is native, RGB 4:4:4
                  // sRGB chromaticity.
    e[25..35].copy_from_slice(&[0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54]);
    // No established timings; standard timings unused.
    for i in 0..8 {
        e[38 + 2 * i] = 1;
        e[39 + 2 * i] = 1;
    }
    detailed_timing(&mut e[54..72], width, height, h_mm, v_mm);
    let refresh = refresh_hz(width, height);
    let clock = u64::from(width + H_BLANK) * u64::from(height + V_BLANK) * u64::from(refresh);
    let h_khz = (clock / u64::from(width + H_BLANK) / 1000) as u32;
    // Range limits: vertical min/max Hz, horizontal min/max kHz, max clock (10 MHz).
    e[72..90].copy_from_slice(&[
        0,
        0,
        0,
        0xfd,
        0,
        refresh.min(50) as u8,
        75,
        1,
        (h_khz + 1).clamp(1, 255) as u8,
        ((clock / 10_000_000) + 1).min(255) as u8,
        0x01,
        0x0a,
        0x20,
        0x20,
        0x20,
        0x20,
        0x20,
        0x20,
    ]);
    text_descriptor(&mut e[90..108], 0xfc, &format!("virtio-epf {index}"));
    text_descriptor(&mut e[108..126], 0xff, &format!("EPF{:08}", index + 1));
    e[126] = 0; // no extensions
    let sum = e[..127].iter().fold(0u8, |a, &b| a.wrapping_add(b));
    e[127] = 0u8.wrapping_sub(sum);
    e
}

fn detailed_timing(d: &mut [u8], w: u32, h: u32, h_mm: u32, v_mm: u32) {
    let refresh = refresh_hz(w, h);
    let clock = u64::from(w + H_BLANK) * u64::from(h + V_BLANK) * u64::from(refresh) / 10_000;
    d[0..2].copy_from_slice(&(clock as u16).to_le_bytes());
    d[2] = w as u8;
    d[3] = H_BLANK as u8;
    d[4] = (((w >> 8) & 0xf) << 4 | ((H_BLANK >> 8) & 0xf)) as u8;
    d[5] = h as u8;
    d[6] = V_BLANK as u8;
    d[7] = (((h >> 8) & 0xf) << 4 | ((V_BLANK >> 8) & 0xf)) as u8;
    d[8] = H_FRONT as u8;
    d[9] = H_SYNC as u8;
    d[10] = ((V_FRONT & 0xf) << 4 | (V_SYNC & 0xf)) as u8;
    d[11] = 0;
    d[12] = h_mm as u8;
    d[13] = v_mm as u8;
    d[14] = (((h_mm >> 8) & 0xf) << 4 | ((v_mm >> 8) & 0xf)) as u8;
    d[15] = 0;
    d[16] = 0;
    d[17] = 0x1e; // digital separate sync, both polarities positive
}

fn text_descriptor(d: &mut [u8], tag: u8, text: &str) {
    d[..5].copy_from_slice(&[0, 0, 0, tag, 0]);
    let t = &mut d[5..18];
    t.fill(0x20);
    let n = text.len().min(13);
    t[..n].copy_from_slice(&text.as_bytes()[..n]);
    if n < 13 {
        t[n] = 0x0a;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The native mode as a reader decodes it from the first detailed timing.
    fn native_mode(e: &[u8; 128]) -> (u32, u32, u32) {
        let d = &e[54..72];
        let clock = u32::from(u16::from_le_bytes([d[0], d[1]])) * 10_000;
        let w = u32::from(d[2]) | (u32::from(d[4] >> 4) << 8);
        let hb = u32::from(d[3]) | (u32::from(d[4] & 0xf) << 8);
        let h = u32::from(d[5]) | (u32::from(d[7] >> 4) << 8);
        let vb = u32::from(d[6]) | (u32::from(d[7] & 0xf) << 8);
        (
            w,
            h,
            (clock as f64 / f64::from((w + hb) * (h + vb))).round() as u32,
        )
    }

    #[test]
    fn edid_is_valid_and_names_the_native_mode() {
        for (w, h) in [
            (640, 480),
            (1024, 768),
            (1280, 800),
            (1920, 1080),
            (3840, 2160),
            (4095, 4095),
            (16, 16),
        ] {
            let e = edid(1, w, h);
            assert_eq!(&e[..8], &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
            assert_eq!(e.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0, "checksum");
            assert_eq!((e[18], e[19]), (1, 4));
            let (nw, nh, hz) = native_mode(&e);
            assert_eq!((nw, nh), (w, h));
            assert!((1..=60).contains(&hz), "{w}x{h} at {hz} Hz");
            assert!(e[21] > 0 && e[22] > 0);
            // The name descriptor.
            assert_eq!(e[93], 0xfc);
            assert_eq!(&e[95..107], b"virtio-epf 1");
        }
        assert_eq!(native_mode(&edid(0, 1280, 800)).2, 60);
        assert_ne!(
            edid(0, 640, 480),
            edid(1, 640, 480),
            "outputs differ by serial"
        );
    }
}
