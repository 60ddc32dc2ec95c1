//! PNG snapshots of the outputs (the `png` crate: the image-rs project's encoder, pure Rust,
//! no system libraries). Output 0 goes to the given path, output N to the path with `-N`
//! before its extension (`shot.png`, `shot-1.png`, ...). Files are written whole and renamed
//! into place, so a reader never sees half a picture. On SIGUSR2 a thread started by
//! [`spawn_on_signal`] writes them all.

use super::counters::{bump, GpuCounters};
use super::display::{Display, Frame};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where output `index`'s snapshot goes when the base path is `base`.
pub fn output_path(base: &Path, index: usize) -> PathBuf {
    if index == 0 {
        return base.to_path_buf();
    }
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match base.extension() {
        Some(ext) => format!("{stem}-{index}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{index}"),
    };
    base.with_file_name(name)
}

/// Encodes `frame` as an 8-bit RGB PNG into `out`.
pub fn encode(frame: &Frame, out: impl io::Write) -> io::Result<()> {
    let mut enc = png::Encoder::new(out, frame.width.max(1), frame.height.max(1));
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(io::Error::other)?;
    let mut rgb = Vec::with_capacity(frame.pixels.len() * 3);
    for &p in &frame.pixels {
        rgb.extend_from_slice(&p.to_be_bytes()[1..]);
    }
    if rgb.is_empty() {
        rgb.resize(3, 0);
    }
    w.write_image_data(&rgb).map_err(io::Error::other)?;
    w.finish().map_err(io::Error::other)
}

/// Writes every output's snapshot below `base`; returns the files written.
pub fn write_all(display: &Display, base: &Path) -> io::Result<Vec<PathBuf>> {
    let frames: Vec<Frame> = display.lock().frames.clone();
    let mut written = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let path = output_path(base, i);
        let tmp = path.with_extension("png.tmp");
        {
            let file = std::fs::File::create(&tmp)?;
            let mut out = BufWriter::new(file);
            encode(f, &mut out)?;
            io::Write::flush(&mut out)?;
        }
        std::fs::rename(&tmp, &path)?;
        written.push(path);
    }
    Ok(written)
}

/// Starts the thread that writes the snapshots to `base` on every SIGUSR2.
pub fn spawn_on_signal(
    display: Arc<Display>,
    base: PathBuf,
    counters: Arc<GpuCounters>,
) -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR2])?;
    std::thread::Builder::new()
        .name("gpu-snapshot".into())
        .spawn(move || {
            for _ in signals.forever() {
                match write_all(&display, &base) {
                    Ok(files) => {
                        for _ in &files {
                            bump(&counters.snapshots);
                        }
                        log::info!("gpu: snapshot written to {}", base.display());
                    }
                    Err(e) => log::warn!("gpu: snapshot to {}: {e}", base.display()),
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_paths_and_pixels_round_trip() {
        assert_eq!(output_path(Path::new("/t/s.png"), 0), Path::new("/t/s.png"));
        assert_eq!(
            output_path(Path::new("/t/s.png"), 2),
            Path::new("/t/s-2.png")
        );
        assert_eq!(output_path(Path::new("/t/s"), 1), Path::new("/t/s-1"));
        let f = Frame {
            width: 3,
            height: 2,
            pixels: vec![0x112233, 0x445566, 0x778899, 0xaabbcc, 0xddeeff, 0x000000],
            enabled: true,
        };
        let mut buf = Vec::new();
        encode(&f, &mut buf).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(buf));
        let mut r = dec.read_info().unwrap();
        let mut out = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut out).unwrap();
        assert_eq!((info.width, info.height), (3, 2));
        assert_eq!(
            &out[..info.buffer_size()],
            &[
                0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
                0xff, 0, 0, 0
            ]
        );
    }
}
