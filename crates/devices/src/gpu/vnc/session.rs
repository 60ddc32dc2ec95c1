//! One VNC client (RFB 3.8, 3.7 or 3.3, security type None): the handshake, then a reader
//! thread for the client's messages and a writer loop that answers FramebufferUpdateRequests
//! with the damaged parts of the output (or all of it when asked for non-incrementally),
//! in ZRLE when the client offers it and Raw otherwise, plus the cursor shape and position.
//! Keyboard and pointer events go to the input hook (`InputSink`), if one is attached.

use super::encode::{
    self, ENC_CURSOR, ENC_DESKTOP_SIZE, ENC_EXT_DESKTOP_SIZE, ENC_POINTER_POS, ENC_ZRLE,
};
use super::pixel::PixelFormat;
use super::Shared;
use crate::gpu::counters::GpuCounters;
use crate::gpu::display::{Display, DisplayState};
use crate::gpu::protocol::Rect;
use epf_epc::sync;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// More damaged rectangles than this in one update are sent as their bounding box.
const MAX_RECTS: usize = 32;
/// How long the writer sleeps between checks for a closed connection.
const IDLE: Duration = Duration::from_millis(200);

/// What the reader learnt from the client.
#[derive(Debug)]
struct ClientState {
    format: PixelFormat,
    zrle: bool,
    cursor: bool,
    pointer_pos: bool,
    desktop_size: bool,
    ext_desktop_size: bool,
    /// The answer to a SetDesktopSize not yet sent: status (0 done, 1 refused, 3 invalid)
    /// and the size asked for.
    resize_reply: Option<(u32, u32, u32)>,
    /// A pending FramebufferUpdateRequest: incremental, and the region.
    request: Option<(bool, Rect)>,
    closed: bool,
}

/// Runs one client on `stream` until it leaves; shows output `output` of `display`.
pub fn serve(mut stream: TcpStream, shared: Shared, output: usize) -> io::Result<()> {
    let Shared {
        display,
        counters,
        control,
        input,
    } = shared;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    handshake(&mut stream, &display, output)?;
    stream.set_read_timeout(None)?;
    let state = Arc::new(Mutex::new(ClientState {
        format: PixelFormat::NATIVE,
        zrle: false,
        cursor: false,
        pointer_pos: false,
        desktop_size: false,
        ext_desktop_size: false,
        resize_reply: None,
        request: None,
        closed: false,
    }));
    let reader = {
        let stream = stream.try_clone()?;
        let state = state.clone();
        let display = display.clone();
        std::thread::Builder::new()
            .name("vnc-reader".into())
            .spawn(move || {
                let resize = |w: u32, h: u32| match &control {
                    Some(c) => {
                        c.set_mode(output, w, h, true);
                        0
                    }
                    None => 1,
                };
                let input = |e: Input| match (&input, e) {
                    (Some(i), Input::Key(down, sym)) => i.key(output, down, sym),
                    (Some(i), Input::Pointer(b, x, y)) => i.pointer(output, b, x, y),
                    (None, _) => {}
                };
                if let Err(e) = read_messages(stream, &state, &display, &resize, &input) {
                    log::debug!("vnc client: {e}");
                }
                sync::lock(&state).closed = true;
                display.notify();
            })?
    };
    let result = write_updates(&mut stream, &state, &display, output, &counters);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = reader.join();
    result
}

fn handshake(s: &mut TcpStream, display: &Display, output: usize) -> io::Result<()> {
    s.write_all(b"RFB 003.008\n")?;
    let mut v = [0u8; 12];
    s.read_exact(&mut v)?;
    let minor = match &v {
        b"RFB 003.008\n" => 8,
        b"RFB 003.007\n" => 7,
        b"RFB 003.003\n" => 3,
        // Other versions (3.5, 3.889, 4.x) speak 3.3 or better; answer as 3.3.
        _ if v.starts_with(b"RFB ") => 3,
        _ => return Err(io::Error::other("not an RFB client")),
    };
    if minor == 3 {
        s.write_all(&1u32.to_be_bytes())?; // security type None
    } else {
        s.write_all(&[1, 1])?; // one type: None
        let mut chosen = [0u8; 1];
        s.read_exact(&mut chosen)?;
        if chosen[0] != 1 {
            return Err(io::Error::other("client chose an unknown security type"));
        }
        if minor == 8 {
            s.write_all(&0u32.to_be_bytes())?; // SecurityResult OK
        }
    }
    let mut shared = [0u8; 1];
    s.read_exact(&mut shared)?; // every client shares the display
    let (w, h) = display
        .frame(output)
        .map_or((1, 1), |f| (f.width, f.height));
    let name = format!("virtio-epf gpu output {output}");
    let mut init = Vec::new();
    init.extend_from_slice(&(w as u16).to_be_bytes());
    init.extend_from_slice(&(h as u16).to_be_bytes());
    init.extend_from_slice(&PixelFormat::NATIVE.encode());
    init.extend_from_slice(&(name.len() as u32).to_be_bytes());
    init.extend_from_slice(name.as_bytes());
    s.write_all(&init)
}

/// A keyboard or pointer event from the viewer.
enum Input {
    Key(bool, u32),
    Pointer(u8, u16, u16),
}

/// Reads client messages into `state` until the client leaves or breaks the protocol.
fn read_messages(
    mut s: TcpStream,
    state: &Mutex<ClientState>,
    display: &Display,
    resize: &dyn Fn(u32, u32) -> u32,
    input: &dyn Fn(Input),
) -> io::Result<()> {
    loop {
        let mut t = [0u8; 1];
        s.read_exact(&mut t)?;
        match t[0] {
            0 => {
                let mut b = [0u8; 19];
                s.read_exact(&mut b)?;
                let pf: [u8; 16] = b[3..19].try_into().unwrap_or([0; 16]);
                let f = PixelFormat::parse(&pf)
                    .ok_or_else(|| io::Error::other("unsupported pixel format (colour map?)"))?;
                sync::lock(state).format = f;
            }
            2 => {
                let mut b = [0u8; 3];
                s.read_exact(&mut b)?;
                let n = u16::from_be_bytes([b[1], b[2]]);
                let (mut zrle, mut cursor, mut pos, mut size, mut ext) =
                    (false, false, false, false, false);
                for _ in 0..n {
                    let mut e = [0u8; 4];
                    s.read_exact(&mut e)?;
                    match i32::from_be_bytes(e) {
                        ENC_ZRLE => zrle = true,
                        ENC_CURSOR => cursor = true,
                        ENC_POINTER_POS => pos = true,
                        ENC_DESKTOP_SIZE => size = true,
                        ENC_EXT_DESKTOP_SIZE => ext = true,
                        _ => {}
                    }
                }
                let mut st = sync::lock(state);
                st.zrle = zrle;
                st.cursor = cursor;
                st.pointer_pos = pos;
                st.desktop_size = size;
                st.ext_desktop_size = ext;
            }
            3 => {
                let mut b = [0u8; 9];
                s.read_exact(&mut b)?;
                let u = |i: usize| u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
                let r = Rect {
                    x: u(1),
                    y: u(3),
                    width: u(5),
                    height: u(7),
                };
                let mut st = sync::lock(state);
                // A non-incremental request is not weakened by a later incremental one.
                let incremental = b[0] != 0 && st.request.is_none_or(|(i, _)| i);
                st.request = Some((incremental, r));
                drop(st);
                display.notify();
            }
            4 => {
                // KeyEvent: down flag, 2 padding bytes, keysym.
                let mut b = [0u8; 7];
                s.read_exact(&mut b)?;
                input(Input::Key(
                    b[0] != 0,
                    u32::from_be_bytes([b[3], b[4], b[5], b[6]]),
                ));
            }
            5 => {
                // PointerEvent: button mask, x, y.
                let mut b = [0u8; 5];
                s.read_exact(&mut b)?;
                let x = u16::from_be_bytes([b[1], b[2]]);
                input(Input::Pointer(b[0], x, u16::from_be_bytes([b[3], b[4]])));
            }
            6 => {
                let mut b = [0u8; 7];
                s.read_exact(&mut b)?;
                let len = u32::from_be_bytes([b[3], b[4], b[5], b[6]]);
                // Skipped without being stored: no allocation the client controls.
                io::copy(&mut (&mut s).take(u64::from(len)), &mut io::sink())?;
            }
            251 => {
                // SetDesktopSize: the viewer's window size becomes the output's mode (the
                // guest is told with a display-change event). The screen layout is read and
                // ignored: one output is one screen.
                let mut b = [0u8; 7];
                s.read_exact(&mut b)?;
                let w = u32::from(u16::from_be_bytes([b[1], b[2]]));
                let h = u32::from(u16::from_be_bytes([b[3], b[4]]));
                io::copy(&mut (&mut s).take(16 * u64::from(b[5])), &mut io::sink())?;
                let status = match crate::gpu::check_resolution(&format!("{w}x{h}")) {
                    Ok(_) => resize(w, h),
                    Err(_) => 3,
                };
                sync::lock(state).resize_reply = Some((status, w, h));
                display.notify();
            }
            other => return Err(io::Error::other(format!("unknown client message {other}"))),
        }
    }
}

/// Answers update requests until the client leaves.
fn write_updates(
    s: &mut TcpStream,
    state: &Mutex<ClientState>,
    display: &Display,
    output: usize,
    counters: &GpuCounters,
) -> io::Result<()> {
    let mut seen_seq = 0u64;
    let mut seen_cursor = u64::MAX;
    let mut seen_pos = (u32::MAX, u32::MAX);
    let mut size = display
        .frame(output)
        .map_or((1, 1), |f| (f.width, f.height));
    let mut z = encode::zlib_stream();
    let mut out = Vec::new();
    loop {
        // Wait for a request that has something to answer.
        let ds = display.wait_for(IDLE, |d| {
            let st = sync::lock(state);
            match st.request {
                _ if st.closed => true,
                None => false,
                Some((false, _)) => true,
                Some(_) if st.resize_reply.is_some() => true,
                Some((true, _)) => {
                    d.seq != seen_seq
                        || (st.cursor && d.cursor.serial != seen_cursor)
                        || (st.pointer_pos && (d.cursor.x, d.cursor.y) != seen_pos)
                }
            }
        });
        let mut st = sync::lock(state);
        if st.closed {
            return Ok(());
        }
        let Some((incremental, region)) = st.request else {
            continue;
        };
        let changed = ds.seq != seen_seq
            || st.resize_reply.is_some()
            || (st.cursor && ds.cursor.serial != seen_cursor)
            || (st.pointer_pos && (ds.cursor.x, ds.cursor.y) != seen_pos);
        if incremental && !changed {
            continue; // woken by the timeout
        }
        st.request = None;
        let (format, zrle, cursor, pointer_pos, desktop_size) = (
            st.format,
            st.zrle,
            st.cursor,
            st.pointer_pos,
            st.desktop_size,
        );
        let ext_desktop_size = st.ext_desktop_size;
        let resize_reply = st.resize_reply.take();
        drop(st);

        // Under the display lock only what must be consistent: the damage, a copy of the
        // frame and the cursor. Encoding happens after, so the device is never held up.
        let Some(frame) = ds.frames.get(output) else {
            return Ok(());
        };
        let fsize = (frame.width, frame.height);
        let full = Rect {
            x: 0,
            y: 0,
            width: fsize.0,
            height: fsize.1,
        };
        let resized = fsize != size;
        let mut damage = if resized {
            vec![full]
        } else if incremental {
            damage_of(&ds, output, seen_seq, full)
        } else {
            vec![region]
        };
        if !resized {
            damage.retain_mut(
                |r| match r.intersect(&region).and_then(|r| r.intersect(&full)) {
                    Some(i) => {
                        *r = i;
                        true
                    }
                    None => false,
                },
            );
        }
        let frame = (!damage.is_empty()).then(|| frame.clone());
        let cursor_now = ds.cursor.clone();
        seen_seq = ds.seq;
        drop(ds);

        out.clear();
        out.extend_from_slice(&[0, 0, 0, 0]);
        let mut rects = 0u16;
        if let Some((status, w, h)) = resize_reply.filter(|_| ext_desktop_size) {
            // The answer to this viewer's SetDesktopSize (the mode changes when the guest
            // sets it; the size then comes as a resize like any other).
            let (w, h) = if status == 0 { (w, h) } else { fsize };
            encode::ext_desktop_size(&mut out, 1, status, w, h);
            rects += 1;
        }
        if resized && ext_desktop_size {
            encode::ext_desktop_size(&mut out, 0, 0, fsize.0, fsize.1);
            rects += 1;
        } else if resized && desktop_size {
            encode::desktop_size(&mut out, fsize.0, fsize.1);
            rects += 1;
        }
        size = fsize;
        if let Some(frame) = &frame {
            for r in &damage {
                if zrle {
                    encode::zrle(&mut out, frame, r, &format, &mut z);
                } else {
                    encode::raw(&mut out, frame, r, &format);
                }
                rects += 1;
            }
        }
        if cursor && cursor_now.serial != seen_cursor {
            encode::cursor_shape(&mut out, &cursor_now, &format);
            rects += 1;
        }
        if pointer_pos && (cursor_now.x, cursor_now.y) != seen_pos {
            encode::pointer_pos(&mut out, &cursor_now);
            rects += 1;
        }
        seen_cursor = cursor_now.serial;
        seen_pos = (cursor_now.x, cursor_now.y);
        if rects == 0 {
            // Nothing in this client's region changed: keep its request for the next change.
            let mut st = sync::lock(state);
            if st.request.is_none() {
                st.request = Some((incremental, region));
            }
            continue;
        }
        out[2..4].copy_from_slice(&rects.to_be_bytes());
        s.write_all(&out)?;
        counters.vnc_updates.fetch_add(1, Ordering::Relaxed);
    }
}

/// The damage of `output` since `seq`, or the whole output when the log no longer reaches
/// back; many rectangles become their bounding box.
fn damage_of(ds: &DisplayState, output: usize, seq: u64, full: Rect) -> Vec<Rect> {
    match ds.damage_since(output, seq) {
        None => vec![full],
        Some(v) if v.len() > MAX_RECTS => {
            let x0 = v.iter().map(|r| r.x).min().unwrap_or(0);
            let y0 = v.iter().map(|r| r.y).min().unwrap_or(0);
            let x1 = v.iter().map(|r| r.x + r.width).max().unwrap_or(0);
            let y1 = v.iter().map(|r| r.y + r.height).max().unwrap_or(0);
            vec![Rect {
                x: x0,
                y: y0,
                width: x1 - x0,
                height: y1 - y0,
            }]
        }
        Some(v) => v,
    }
}
