//! The VNC server over real TCP connections with a minimal Raw viewer: full and
//! damage-only updates, several viewers at once, the cursor pseudo-encodings, and clients
//! that break the protocol.

use super::start;
use crate::gpu::counters::GpuCounters;
use crate::gpu::display::{Display, CURSOR_SIZE};
use crate::gpu::protocol::Rect;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Viewer {
    s: TcpStream,
    w: u32,
    h: u32,
    px: Vec<u32>,
}

/// What one FramebufferUpdate carried.
#[derive(Debug, Default)]
struct Update {
    rects: Vec<Rect>,
    cursor: Option<(u32, u32, u32, u32)>,
    pointer: Option<(u32, u32)>,
    /// ExtendedDesktopSize: reason, status, width, height.
    resized: Option<(u32, u32, u32, u32)>,
}

impl Viewer {
    fn connect(port: u16, encodings: &[i32]) -> Viewer {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 12];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"RFB 003.008\n");
        s.write_all(b"RFB 003.008\n").unwrap();
        let mut t = [0u8; 2];
        s.read_exact(&mut t).unwrap();
        assert_eq!(t, [1, 1]);
        s.write_all(&[1]).unwrap();
        let mut r = [0u8; 4];
        s.read_exact(&mut r).unwrap();
        assert_eq!(r, [0; 4]);
        s.write_all(&[1]).unwrap();
        let mut init = [0u8; 24];
        s.read_exact(&mut init).unwrap();
        let w = u32::from(u16::from_be_bytes([init[0], init[1]]));
        let h = u32::from(u16::from_be_bytes([init[2], init[3]]));
        let mut name = vec![0u8; u32::from_be_bytes(init[20..24].try_into().unwrap()) as usize];
        s.read_exact(&mut name).unwrap();
        let mut m = vec![2, 0];
        m.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
        for e in encodings {
            m.extend_from_slice(&e.to_be_bytes());
        }
        s.write_all(&m).unwrap();
        Viewer {
            s,
            w,
            h,
            px: vec![0; (w * h) as usize],
        }
    }

    fn request(&mut self, incremental: bool, r: Rect) {
        let mut m = vec![3, u8::from(incremental)];
        for v in [r.x, r.y, r.width, r.height] {
            m.extend_from_slice(&(v as u16).to_be_bytes());
        }
        self.s.write_all(&m).unwrap();
    }

    fn update(&mut self) -> Update {
        let mut h = [0u8; 4];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(h[0], 0);
        let mut u = Update::default();
        for _ in 0..u16::from_be_bytes([h[2], h[3]]) {
            let mut r = [0u8; 12];
            self.s.read_exact(&mut r).unwrap();
            let f = |i: usize| u32::from(u16::from_be_bytes([r[i], r[i + 1]]));
            let (x, y, w, hh) = (f(0), f(2), f(4), f(6));
            match i32::from_be_bytes(r[8..12].try_into().unwrap()) {
                0 => {
                    let mut px = vec![0u8; (w * hh * 4) as usize];
                    self.s.read_exact(&mut px).unwrap();
                    for j in 0..hh {
                        for i in 0..w {
                            let p = &px[((j * w + i) * 4) as usize..][..4];
                            self.px[((y + j) * self.w + x + i) as usize] =
                                u32::from_le_bytes([p[0], p[1], p[2], 0]);
                        }
                    }
                    u.rects.push(Rect {
                        x,
                        y,
                        width: w,
                        height: hh,
                    });
                }
                -239 => {
                    let mut skip = vec![0u8; (w * hh * 4 + w.div_ceil(8) * hh) as usize];
                    self.s.read_exact(&mut skip).unwrap();
                    u.cursor = Some((x, y, w, hh));
                }
                -232 => u.pointer = Some((x, y)),
                -308 => {
                    let mut n = [0u8; 4];
                    self.s.read_exact(&mut n).unwrap();
                    let mut screens = vec![0u8; 16 * n[0] as usize];
                    self.s.read_exact(&mut screens).unwrap();
                    u.resized = Some((x, y, w, hh));
                }
                e => panic!("unexpected encoding {e}"),
            }
        }
        u
    }

    fn full(&self) -> Rect {
        Rect {
            x: 0,
            y: 0,
            width: self.w,
            height: self.h,
        }
    }
}

fn server(w: u32, h: u32) -> (Arc<Display>, Arc<GpuCounters>, u16) {
    let display = Arc::new(Display::new(1, w, h));
    let counters = Arc::new(GpuCounters::default());
    let shared = super::Shared {
        display: display.clone(),
        counters: counters.clone(),
        control: None,
        input: None,
    };
    let bound = start("127.0.0.1:0".parse().unwrap(), 1, shared).unwrap();
    (display, counters, bound[0].port())
}

/// Paints `r` with `colour` and records the damage, as a RESOURCE_FLUSH does.
fn paint(d: &Display, r: Rect, colour: u32) {
    let mut s = d.lock();
    let f = &mut s.frames[0];
    for y in r.y..r.y + r.height {
        for x in r.x..r.x + r.width {
            let w = f.width;
            f.pixels[(y * w + x) as usize] = colour;
        }
    }
    s.damage(0, r);
    drop(s);
    d.notify();
}

fn wait(cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn viewers_get_the_screen_then_only_the_damage() {
    let (d, counters, port) = server(96, 64);
    paint(
        &d,
        Rect {
            x: 0,
            y: 0,
            width: 96,
            height: 64,
        },
        0x102030,
    );
    let mut a = Viewer::connect(port, &[0]);
    let mut b = Viewer::connect(port, &[0]);
    wait(|| counters.vnc_clients.load(Ordering::Relaxed) == 2);
    for v in [&mut a, &mut b] {
        let full = v.full();
        v.request(false, full);
        let u = v.update();
        assert_eq!(u.rects, vec![full]);
        assert!(v.px.iter().all(|&p| p == 0x102030));
        v.request(true, full);
    }
    let small = Rect {
        x: 10,
        y: 7,
        width: 13,
        height: 5,
    };
    paint(&d, small, 0xabcdef);
    for v in [&mut a, &mut b] {
        let u = v.update();
        assert_eq!(u.rects, vec![small], "only the damaged rectangle");
        let want = d.frame(0).unwrap();
        assert_eq!(v.px, want.pixels);
    }
    // Damage outside a viewer's requested region is not sent to it, but later damage is.
    let region = Rect {
        x: 0,
        y: 0,
        width: 20,
        height: 20,
    };
    a.request(true, region);
    // Let the server read the request before the damage arrives.
    std::thread::sleep(Duration::from_millis(300));
    paint(
        &d,
        Rect {
            x: 50,
            y: 50,
            width: 4,
            height: 4,
        },
        0x111111,
    );
    paint(
        &d,
        Rect {
            x: 1,
            y: 1,
            width: 2,
            height: 2,
        },
        0x222222,
    );
    let u = a.update();
    assert_eq!(
        u.rects,
        vec![Rect {
            x: 1,
            y: 1,
            width: 2,
            height: 2
        }]
    );
    wait(|| counters.vnc_updates.load(Ordering::Relaxed) == 5);
    drop(a);
    drop(b);
    wait(|| counters.vnc_clients.load(Ordering::Relaxed) == 0);
    assert_eq!(counters.vnc_connections.load(Ordering::Relaxed), 2);
}

#[test]
fn the_cursor_shape_and_position_reach_viewers_that_ask() {
    let (d, _c, port) = server(64, 64);
    let mut v = Viewer::connect(port, &[0, -239, -232]);
    let full = v.full();
    v.request(false, full);
    v.update();
    v.request(true, full);
    {
        let mut s = d.lock();
        s.cursor.image = Some(vec![0xff00_ff00; (CURSOR_SIZE * CURSOR_SIZE) as usize]);
        s.cursor.hot_x = 3;
        s.cursor.hot_y = 4;
        s.cursor.x = 30;
        s.cursor.y = 40;
        s.cursor.serial += 1;
    }
    d.notify();
    let u = v.update();
    assert_eq!(u.cursor, Some((3, 4, 64, 64)));
    assert_eq!(u.pointer, Some((30, 40)));
    assert!(u.rects.is_empty());
    v.request(true, full);
    {
        let mut s = d.lock();
        s.cursor.x = 31;
        s.cursor.serial += 1;
    }
    d.notify();
    let u = v.update();
    assert_eq!(u.pointer, Some((31, 40)));
}

#[test]
fn broken_clients_are_dropped_and_others_carry_on() {
    let (d, counters, port) = server(32, 32);
    // Not RFB at all.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    // A cut text announcing 4 GiB, then gone; an unknown message type.
    let mut v = Viewer::connect(port, &[0]);
    v.s.write_all(&[6, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, b'x'])
        .unwrap();
    drop(v);
    let mut v = Viewer::connect(port, &[0]);
    v.s.write_all(&[99]).unwrap();
    // A colour-map pixel format.
    let mut c = Viewer::connect(port, &[0]);
    let mut pf = [0u8; 20];
    pf[4] = 8;
    pf[5] = 8;
    c.s.write_all(&pf).unwrap();
    drop(s);
    let mut buf = [0u8; 1];
    assert_eq!(v.s.read(&mut buf).unwrap_or(0), 0, "closed after garbage");
    wait(|| counters.vnc_clients.load(Ordering::Relaxed) == 0);
    // A good viewer still works.
    let mut g = Viewer::connect(port, &[0]);
    let full = g.full();
    g.request(false, full);
    paint(&d, full, 0x010203);
    let u = g.update();
    assert_eq!(u.rects, vec![full]);
}

#[test]
fn set_desktop_size_asks_the_device_and_is_answered() {
    let display = Arc::new(Display::new(1, 64, 48));
    let control = Arc::new(crate::gpu::DisplayControl::default());
    let shared = super::Shared {
        display: display.clone(),
        counters: Arc::new(GpuCounters::default()),
        control: Some(control.clone()),
        input: None,
    };
    let port = start("127.0.0.1:0".parse().unwrap(), 1, shared).unwrap()[0].port();
    let mut v = Viewer::connect(port, &[0, -308]);
    let full = v.full();
    v.request(false, full);
    v.update();
    let set = |v: &mut Viewer, w: u16, h: u16| {
        let mut m = vec![251, 0];
        m.extend_from_slice(&w.to_be_bytes());
        m.extend_from_slice(&h.to_be_bytes());
        m.extend_from_slice(&[1, 0]);
        m.extend_from_slice(&[0; 16]);
        v.s.write_all(&m).unwrap();
    };
    set(&mut v, 1024, 768);
    v.request(true, full);
    let u = v.update();
    assert_eq!(u.resized, Some((1, 0, 1024, 768)), "accepted");
    assert_eq!(control.pending(), vec![(0, 1024, 768, true)]);
    set(&mut v, 5, 5);
    v.request(true, full);
    let u = v.update();
    assert_eq!(u.resized, Some((1, 3, 64, 48)), "invalid size refused");
    assert!(control.pending().is_empty());
}

/// Records what the viewers typed and pointed at.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

impl super::InputSink for Recorder {
    fn key(&self, output: usize, down: bool, keysym: u32) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{output} key {down} {keysym:#x}"));
    }
    fn pointer(&self, output: usize, buttons: u8, x: u16, y: u16) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{output} pointer {buttons} {x} {y}"));
    }
}

#[test]
fn each_output_has_its_port_and_input_reaches_the_hook() {
    let display = Arc::new(Display::new(2, 32, 32));
    {
        let mut s = display.lock();
        s.frames[1] = crate::gpu::Frame {
            width: 40,
            height: 20,
            pixels: vec![0x445566; 800],
            enabled: true,
        };
    }
    let rec = Arc::new(Recorder::default());
    let shared = super::Shared {
        display: display.clone(),
        counters: Arc::new(GpuCounters::default()),
        control: None,
        input: Some(rec.clone()),
    };
    let bound = start("127.0.0.1:0".parse().unwrap(), 2, shared).unwrap();
    // Port 0 asks the system for any ports: one each, different.
    assert_eq!(bound.len(), 2);
    assert_ne!(bound[0].port(), bound[1].port());
    let mut v = Viewer::connect(bound[1].port(), &[0]);
    assert_eq!((v.w, v.h), (40, 20));
    let full = v.full();
    v.request(false, full);
    v.update();
    assert!(v.px.iter().all(|&p| p == 0x445566));
    // KeyEvent 'a' down, PointerEvent left button at (7, 9).
    v.s.write_all(&[4, 1, 0, 0, 0, 0, 0, 0x61]).unwrap();
    v.s.write_all(&[5, 1, 0, 7, 0, 9]).unwrap();
    wait(|| rec.0.lock().unwrap().len() == 2);
    assert_eq!(
        *rec.0.lock().unwrap(),
        vec!["1 key true 0x61".to_string(), "1 pointer 1 7 9".to_string()]
    );
}
