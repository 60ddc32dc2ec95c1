//! virtio-gpu end to end: a real Linux host binds its stock `virtio_gpu` driver to the
//! endpoint, gets /dev/dri/card0 and /dev/fb0, and what it draws (fbcon text, a pattern
//! written to /dev/fb0, modetest's dumb buffers) is checked pixel by pixel in the PNG
//! snapshots the daemon writes on SIGUSR2. The same guest job runs against QEMU's own
//! virtio-gpu-pci (pictures taken with QMP `screendump`) and must give the same pixels.
//!
//! The guest and the test meet at steps: the guest touches `/job/NAME.ready` and waits for
//! `/job/NAME.done`, which the test writes after taking and checking its snapshot.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{scratch, Daemon, Guest, RunningGuest};

const W: u32 = 800;
const H: u32 = 600;
const STEP_WAIT: Duration = Duration::from_secs(180);

/// An RGB picture.
#[derive(Clone, PartialEq, Eq)]
struct Picture {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl std::fmt::Debug for Picture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Picture {}x{}", self.width, self.height)
    }
}

impl Picture {
    fn px(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    fn lit(&self) -> usize {
        self.rgb.chunks_exact(3).filter(|p| p != &[0, 0, 0]).count()
    }

    /// The first pixel where it differs from `want(x, y)`.
    fn first_mismatch(
        &self,
        want: impl Fn(u32, u32) -> [u8; 3],
    ) -> Option<(u32, u32, [u8; 3], [u8; 3])> {
        for y in 0..self.height {
            for x in 0..self.width {
                let (g, w) = (self.px(x, y), want(x, y));
                if g != w {
                    return Some((x, y, g, w));
                }
            }
        }
        None
    }
}

/// Reads a PNG (RGB or RGBA, 8 bits) as RGB.
fn read_png(path: &Path) -> Picture {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut dec = png::Decoder::new(std::io::BufReader::new(f));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut r = dec.read_info().expect("png header");
    let mut buf = vec![0; r.output_buffer_size().expect("png size")];
    let info = r.next_frame(&mut buf).expect("png data");
    let ch = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("{}: unexpected PNG colour type {other:?}", path.display()),
    };
    let rgb = buf[..info.buffer_size()]
        .chunks_exact(ch)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    Picture {
        width: info.width,
        height: info.height,
        rgb,
    }
}

/// The pattern written to /dev/fb0 (XRGB8888: bytes B, G, R, X), and its RGB.
fn fb_pattern_px(x: u32, y: u32) -> [u8; 3] {
    let r = ((x * y) >> 4) as u8 ^ 0x5a;
    [r, y as u8, x as u8]
}

fn fb_pattern(w: u32, h: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            let [r, g, b] = fb_pattern_px(x, y);
            v.extend_from_slice(&[b, g, r, 0]);
        }
    }
    v
}

/// Who takes the pictures: our daemon (SIGUSR2) or QEMU (QMP screendump).
enum Camera<'a> {
    Epf { daemon: &'a Daemon, base: PathBuf },
    Qemu { qmp: PathBuf, dir: PathBuf },
}

impl Camera<'_> {
    /// A picture of output `output` now.
    fn shoot(&self, output: usize) -> Picture {
        match self {
            Camera::Epf { daemon, base } => {
                let path = if output == 0 {
                    base.clone()
                } else {
                    base.with_file_name(format!("shot-{output}.png"))
                };
                let _ = std::fs::remove_file(&path);
                let pid = daemon.pid().expect("daemon running");
                // SAFETY: plain kill(2) to our own child.
                unsafe { libc::kill(pid as i32, libc::SIGUSR2) };
                let t = Instant::now();
                while !path.exists() {
                    assert!(
                        t.elapsed() < Duration::from_secs(20),
                        "no snapshot {} after SIGUSR2:\n{}",
                        path.display(),
                        daemon.log_text()
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
                read_png(&path)
            }
            Camera::Qemu { qmp, dir } => {
                let path = dir.join(format!("qemu-shot-{output}.png"));
                let _ = std::fs::remove_file(&path);
                let mut s = UnixStream::connect(qmp).expect("connect QMP");
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap(); // greeting
                let mut cmd = |c: String| {
                    s.write_all(c.as_bytes()).unwrap();
                    loop {
                        line.clear();
                        r.read_line(&mut line).unwrap();
                        assert!(!line.is_empty(), "QMP closed");
                        if line.contains("\"return\"") {
                            return;
                        }
                        assert!(!line.contains("\"error\""), "QMP: {line}");
                    }
                };
                cmd(r#"{"execute":"qmp_capabilities"}"#.into());
                cmd(format!(
                    r#"{{"execute":"screendump","arguments":{{"filename":"{}","format":"png","head":{output},"device":"gpu0"}}}}"#,
                    path.display()
                ));
                read_png(&path)
            }
        }
    }
}

/// Waits for the guest to reach step `name`, runs `check`, and lets the guest go on.
fn step(g: &mut RunningGuest, name: &str, check: impl FnOnce()) {
    assert!(
        g.wait_for_file(&format!("{name}.ready"), STEP_WAIT),
        "guest never reached step {name}; output so far:\n{}",
        std::fs::read_to_string(g.job.join("output.log")).unwrap_or_default()
    );
    check();
    std::fs::write(g.job.join(format!("{name}.done")), b"").unwrap();
}

/// Guest helpers: `step NAME` and the GPU's PCI address in `$addr`, driver loaded.
const GPU_PRELUDE: &str = r#"
step() {
    touch /job/$1.ready
    for i in $(seq 1800); do [ -e /job/$1.done ] && return 0; sleep 0.1; done
    fail "the host never finished step $1"
}
addr=$(pci_addr 0x1af4:0x1050) || fail "no virtio-gpu function 1af4:1050"
echo "gpu at $addr"
modprobe virtio_gpu || fail "modprobe virtio_gpu"
for i in $(seq 100); do [ -e /dev/fb0 ] && [ -e /dev/dri/card0 ] && break; sleep 0.1; done
check "/dev/dri/card0 exists" [ -c /dev/dri/card0 ]
check "/dev/fb0 exists" [ -c /dev/fb0 ]
echo 0 > /sys/class/graphics/fbcon/cursor_blink 2>/dev/null || true
# modetest's connector and CRTC for connector N (1-based).
conn() { modetest -M virtio_gpu -c | awk '/connected/ && $3 == "connected" { n++; if (n == '"$1"') print $1 }'; }
# Starts modetest showing `pattern` ($2) on connector $1 at WxH ($3), waits until it set the mode.
show() {
    rm -f /tmp/mt.log
    c=$(conn $1); [ -n "$c" ] || fail "no connector $1"
    # modetest waits for a key on stdin: give it a pipe that stays open and silent.
    [ -p /tmp/mt.in ] || mkfifo /tmp/mt.in
    exec 7<>/tmp/mt.in
    stdbuf -oL modetest -M virtio_gpu -s "$c:$3" -F "$2" ${4:-} <&7 > /tmp/mt.log 2>&1 &
    MT=$!
    for i in $(seq 100); do grep -q "setting mode" /tmp/mt.log 2>/dev/null && break; sleep 0.1; done
    grep -q "setting mode" /tmp/mt.log || { cat /tmp/mt.log; fail "modetest did not set a mode"; }
    sleep 1
}
unshow() { kill $MT; wait $MT 2>/dev/null; sleep 1; }
"#;

/// The job both our device and QEMU's run: fb0 pattern, modetest tiles, modetest plain.
fn drawing_job() -> String {
    format!(
        r#"{GPU_PRELUDE}
check "fb0 is {W}x{H}" [ "$(cat /sys/class/graphics/fb0/virtual_size)" = "{W},{H}" ]
check "fb0 is 32 bpp" [ "$(cat /sys/class/graphics/fb0/bits_per_pixel)" = 32 ]
echo 0 > /sys/class/vtconsole/vtcon1/bind || fail "unbind fbcon"
cat /job/pattern.raw > /dev/fb0 || fail "write fb0"
sleep 1
step fb0
show 1 tiles {W}x{H}
step tiles
unshow
show 1 plain {W}x{H}
step plain
unshow
"#
    )
}

/// Runs [`drawing_job`] and returns the pictures of its three steps.
fn run_drawing_job(guest: &Guest, name: &str, camera: &Camera) -> [Picture; 3] {
    let pattern = fb_pattern(W, H);
    let mut g = guest.spawn(name, &drawing_job(), &[("pattern.raw", &pattern)]);
    let mut shots = Vec::new();
    for s in ["fb0", "tiles", "plain"] {
        step(&mut g, s, || shots.push(camera.shoot(0)));
    }
    let run = g.wait();
    println!("{}", run.output);
    run.assert_ok();
    shots.try_into().unwrap()
}

fn gpu_daemon(name: &str, extra: &[&str]) -> (Daemon, PathBuf) {
    let dir = scratch(&format!("{name}-shots"));
    let base = dir.join("shot.png");
    let mut args = vec!["--screenshot", base.to_str().unwrap()];
    args.extend_from_slice(extra);
    (Daemon::start(name, "gpu", &args), base)
}

fn assert_pattern(p: &Picture, what: &str) {
    assert_eq!((p.width, p.height), (W, H), "{what}");
    if let Some((x, y, got, want)) = p.first_mismatch(fb_pattern_px) {
        panic!("{what}: pixel ({x},{y}) is {got:02x?}, the pattern has {want:02x?}");
    }
}

#[test]
fn gpu_binds_and_fbcon_fb0_and_modetest_are_pixel_exact_and_match_qemu() {
    let (d, base) = gpu_daemon("gpu", &["--resolution", "800x600"]);
    let camera = Camera::Epf {
        daemon: &d,
        base: base.clone(),
    };
    // 1. Bind, fbcon text, the cursor (modetest -C).
    let script = format!(
        r#"{GPU_PRELUDE}
check "virtio-pci bound" [ "$(basename "$(readlink /sys/bus/pci/devices/$addr/driver)")" = virtio-pci ]
check "virtio_gpu bound" [ -d /sys/bus/virtio/drivers/virtio_gpu/$(basename $(virtio_dir $addr)) ]
check "fb0 is {W}x{H}" [ "$(cat /sys/class/graphics/fb0/virtual_size)" = "{W},{H}" ]
check "preferred mode {W}x{H}" [ "$(head -n1 /sys/class/drm/card0-Virtual-1/modes)" = "{W}x{H}" ]
check "EDID read" [ "$(wc -c < /sys/class/drm/card0-Virtual-1/edid)" = 128 ]
check "fbcon on fb0" grep -q "frame buffer device" /sys/class/vtconsole/vtcon1/name
clear > /dev/tty1 2>/dev/null || printf '\033[2J' > /dev/tty1
for i in $(seq 20); do echo "virtio-epf gpu: fbcon line $i ABCDEFGHIJKLMNOPQRSTUVWXYZ" > /dev/tty1; done
sleep 1
step fbcon
show 1 plain {W}x{H} -C
step cursor
unshow
"#
    );
    let mut g = Guest::new(&[&d]).spawn("gpu-basic", &script, &[]);
    step(&mut g, "fbcon", || {
        let p = camera.shoot(0);
        assert_eq!((p.width, p.height), (W, H));
        let lit = p.lit();
        // 20 lines of text in an 8x16 font light thousands of pixels, but not the screen.
        assert!(
            (3000..(W * H / 2) as usize).contains(&lit),
            "fbcon text not visible: {lit} lit pixels"
        );
    });
    step(&mut g, "cursor", || {
        let s1 = d.stats_text();
        let s2 = d.stats_text();
        println!("{s2}");
        assert!(Daemon::counter(&s2, "gpu", "update_cursor") > 0, "{s2}");
        assert_eq!(Daemon::counter(&s2, "cursor", "visible"), 1, "{s2}");
        assert!(
            Daemon::counter(&s2, "gpu", "move_cursor") > Daemon::counter(&s1, "gpu", "move_cursor"),
            "the cursor does not move:\n{s1}\n{s2}"
        );
        let (x1, y1) = (
            Daemon::counter(&s1, "cursor", "x"),
            Daemon::counter(&s1, "cursor", "y"),
        );
        let (x2, y2) = (
            Daemon::counter(&s2, "cursor", "x"),
            Daemon::counter(&s2, "cursor", "y"),
        );
        assert_ne!(
            (x1, y1),
            (x2, y2),
            "cursor position did not follow MOVE_CURSOR"
        );
        assert!(x2 < u64::from(W) && y2 < u64::from(H));
    });
    let run = g.wait();
    println!("{}", run.output);
    run.assert_ok();

    // 2. The drawing job on our device...
    let ours = run_drawing_job(&Guest::new(&[&d]), "gpu-draw", &camera);
    assert_pattern(&ours[0], "fb0 pattern in our snapshot");
    assert_eq!((ours[1].width, ours[1].height), (W, H));
    assert!(
        ours[1].lit() > (W * H / 2) as usize,
        "modetest tiles not shown"
    );
    assert!(
        ours[2].first_mismatch(|_, _| [0x77; 3]).is_none(),
        "modetest plain dumb buffer (0x777777) not pixel-exact: {:?}",
        ours[2].first_mismatch(|_, _| [0x77; 3])
    );
    let stats = d.stats_text();
    println!("{stats}");
    assert_eq!(Daemon::counter(&stats, "gpu", "errors"), 0, "{stats}");
    assert!(Daemon::counter(&stats, "gpu", "frames_flushed") > 0);
    assert!(Daemon::counter(&stats, "gpu", "bytes_transferred") >= u64::from(3 * W * H * 4));
    assert!(d.stop().success());

    // 3. ... and on QEMU's virtio-gpu-pci: the same pixels.
    let dir = scratch("gpu-qemu");
    let qmp = dir.join("qmp.sock");
    let mut guest = Guest::new(&[]);
    guest.socket_dirs.push(dir.clone());
    guest.qemu_args = vec![
        "-device".into(),
        format!("virtio-gpu-pci,id=gpu0,xres={W},yres={H}"),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qmp.display()),
    ];
    let theirs = run_drawing_job(&guest, "gpu-qemu", &Camera::Qemu { qmp, dir });
    for (i, what) in ["fb0 pattern", "modetest tiles", "modetest plain"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            (theirs[i].width, theirs[i].height),
            (ours[i].width, ours[i].height),
            "{what}: sizes"
        );
        if theirs[i] != ours[i] {
            let (x, y, o, _) = ours[i].first_mismatch(|x, y| theirs[i].px(x, y)).unwrap();
            panic!(
                "{what}: ours differs from QEMU's at ({x},{y}): {o:02x?} vs {:02x?}",
                theirs[i].px(x, y)
            );
        }
    }
}

#[test]
fn gpu_two_outputs_at_another_resolution() {
    let (d, base) = gpu_daemon("gpu2", &["--outputs", "2", "--resolution", "1280x800"]);
    let camera = Camera::Epf { daemon: &d, base };
    let script = format!(
        r#"{GPU_PRELUDE}
check "two connectors" [ "$(ls -d /sys/class/drm/card0-Virtual-* | wc -l)" = 2 ]
for c in 1 2; do
    check "output $c connected" [ "$(cat /sys/class/drm/card0-Virtual-$c/status)" = connected ]
    check "output $c prefers 1280x800" [ "$(head -n1 /sys/class/drm/card0-Virtual-$c/modes)" = 1280x800 ]
done
check "fb0 is 1280x800" [ "$(cat /sys/class/graphics/fb0/virtual_size)" = "1280,800" ]
show 2 plain 1280x800
step second
unshow
"#
    );
    let mut g = Guest::new(&[&d]).spawn("gpu-two", &script, &[]);
    step(&mut g, "second", || {
        let p = camera.shoot(1);
        assert_eq!((p.width, p.height), (1280, 800));
        assert!(
            p.first_mismatch(|_, _| [0x77; 3]).is_none(),
            "output 2 does not show modetest's plain buffer"
        );
    });
    let run = g.wait();
    println!("{}", run.output);
    run.assert_ok();
    assert!(d.stop().success());
}

#[test]
fn gpu_survives_driver_rebinds_and_a_killed_qemu() {
    let (mut d, base) = gpu_daemon("gpu-rebind", &["--resolution", "800x600"]);
    let pattern = fb_pattern(W, H);
    let script = format!(
        r#"{GPU_PRELUDE}
for i in 1 2 3; do
    echo "$addr" > /sys/bus/pci/drivers/virtio-pci/unbind || fail "unbind $i"
    echo "$addr" > /sys/bus/pci/drivers/virtio-pci/bind || fail "bind $i"
done
for i in $(seq 100); do [ -e /dev/fb0 ] && break; sleep 0.1; done
check "fb0 back after 3 rebinds" [ "$(cat /sys/class/graphics/fb0/virtual_size)" = "{W},{H}" ]
echo 0 > /sys/class/vtconsole/vtcon1/bind
cat /job/pattern.raw > /dev/fb0 || fail "write fb0"
sleep 1
step rebound
while true; do cat /job/pattern.raw > /dev/fb0; done
"#
    );
    let mut g1 = Guest::new(&[&d]).spawn("gpu-rebind-1", &script, &[("pattern.raw", &pattern)]);
    step(&mut g1, "rebound", || {
        assert_pattern(
            &Camera::Epf {
                daemon: &d,
                base: base.clone(),
            }
            .shoot(0),
            "fb0 pattern after rebinds",
        )
    });
    let pat = format!("qemu-system.*{}", d.socket.display());
    let st = std::process::Command::new("pkill")
        .args(["-9", "-f", &pat])
        .status()
        .unwrap();
    assert!(st.success(), "no QEMU process matched {pat}");
    assert_ne!(g1.wait().code(), 0, "the first guest should have died");
    assert!(
        d.alive(),
        "virtio-epf died with its host:\n{}",
        d.log_text()
    );
    let script2 = format!(
        r#"{GPU_PRELUDE}
check "fb0 is {W}x{H}" [ "$(cat /sys/class/graphics/fb0/virtual_size)" = "{W},{H}" ]
echo 0 > /sys/class/vtconsole/vtcon1/bind
cat /job/pattern.raw > /dev/fb0 || fail "write fb0"
sleep 1
step again
"#
    );
    let mut g2 = Guest::new(&[&d]).spawn("gpu-rebind-2", &script2, &[("pattern.raw", &pattern)]);
    step(&mut g2, "again", || {
        assert_pattern(
            &Camera::Epf {
                daemon: &d,
                base: base.clone(),
            }
            .shoot(0),
            "fb0 pattern on the next host",
        )
    });
    let run = g2.wait();
    println!("{}", run.output);
    run.assert_ok();
    let stats = d.stats_text();
    assert_eq!(Daemon::counter(&stats, "link", "clients"), 2, "{stats}");
    assert!(
        Daemon::counter(&stats, "function", "activations") >= 5,
        "{stats}"
    );
    assert!(d.stop().success());
}

// ---- VNC ------------------------------------------------------------------------------------

/// A free TCP port at 5900 + display, for gvnccapture's HOST:DISPLAY syntax.
fn free_vnc_display() -> u16 {
    for d in (200 + std::process::id() % 500) as u16..1000 {
        if std::net::TcpListener::bind(("127.0.0.1", 5900 + d)).is_ok() {
            return d;
        }
    }
    panic!("no free VNC port");
}

/// A minimal RFB 3.8 viewer asking for Raw only, to see exactly which rectangles come.
struct Viewer {
    s: UnixOrTcp,
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

type UnixOrTcp = std::net::TcpStream;

impl Viewer {
    fn connect(port: u16) -> Viewer {
        Self::connect_with(port, &[0, -239, -232])
    }

    fn connect_with(port: u16, encodings: &[i32]) -> Viewer {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect VNC");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut v = [0u8; 12];
        s.read_exact(&mut v).unwrap();
        assert_eq!(&v, b"RFB 003.008\n");
        s.write_all(b"RFB 003.008\n").unwrap();
        let mut n = [0u8; 1];
        s.read_exact(&mut n).unwrap();
        let mut types = vec![0u8; n[0] as usize];
        s.read_exact(&mut types).unwrap();
        assert!(types.contains(&1), "security None offered: {types:?}");
        s.write_all(&[1]).unwrap();
        let mut res = [0u8; 4];
        s.read_exact(&mut res).unwrap();
        assert_eq!(res, [0; 4]);
        s.write_all(&[1]).unwrap();
        let mut init = [0u8; 24];
        s.read_exact(&mut init).unwrap();
        let width = u32::from(u16::from_be_bytes([init[0], init[1]]));
        let height = u32::from(u16::from_be_bytes([init[2], init[3]]));
        assert_eq!(init[4], 32, "32 bits per pixel");
        let name_len = u32::from_be_bytes(init[20..24].try_into().unwrap());
        let mut name = vec![0u8; name_len as usize];
        s.read_exact(&mut name).unwrap();
        let mut m = vec![2, 0];
        m.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
        for &e in encodings {
            m.extend_from_slice(&e.to_be_bytes());
        }
        s.write_all(&m).unwrap();
        Viewer {
            s,
            width,
            height,
            rgb: vec![0; (width * height * 3) as usize],
        }
    }

    fn request(&mut self, incremental: bool) {
        let mut m = vec![3, u8::from(incremental)];
        for v in [0u16, 0, self.width as u16, self.height as u16] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        self.s.write_all(&m).unwrap();
    }

    /// Reads one FramebufferUpdate; returns its pixel rectangles (x, y, w, h).
    fn update(&mut self) -> Vec<(u32, u32, u32, u32)> {
        use std::io::Read;
        let mut h = [0u8; 4];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(h[0], 0, "FramebufferUpdate");
        let n = u16::from_be_bytes([h[2], h[3]]);
        let mut rects = Vec::new();
        for _ in 0..n {
            let mut r = [0u8; 12];
            self.s.read_exact(&mut r).unwrap();
            let u = |i: usize| u32::from(u16::from_be_bytes([r[i], r[i + 1]]));
            let (x, y, w, hh) = (u(0), u(2), u(4), u(6));
            let enc = i32::from_be_bytes(r[8..12].try_into().unwrap());
            match enc {
                0 => {
                    let mut px = vec![0u8; (w * hh * 4) as usize];
                    self.s.read_exact(&mut px).unwrap();
                    for row in 0..hh {
                        for col in 0..w {
                            let p = &px[((row * w + col) * 4) as usize..][..4];
                            let i = (((y + row) * self.width + x + col) * 3) as usize;
                            self.rgb[i..i + 3].copy_from_slice(&[p[2], p[1], p[0]]);
                        }
                    }
                    rects.push((x, y, w, hh));
                }
                -239 => {
                    let mut skip = vec![0u8; (w * hh * 4 + w.div_ceil(8) * hh) as usize];
                    self.s.read_exact(&mut skip).unwrap();
                }
                -232 | -223 => {}
                -308 => {
                    let mut n = [0u8; 4];
                    self.s.read_exact(&mut n).unwrap();
                    let mut screens = vec![0u8; 16 * n[0] as usize];
                    self.s.read_exact(&mut screens).unwrap();
                    if x == 0 {
                        // A new mode: the picture is that size from now on.
                        self.width = w;
                        self.height = hh;
                        self.rgb = vec![0; (w * hh * 3) as usize];
                    }
                }
                other => panic!("unexpected encoding {other}"),
            }
        }
        rects
    }

    fn picture(&self) -> Picture {
        Picture {
            width: self.width,
            height: self.height,
            rgb: self.rgb.clone(),
        }
    }
}

/// Reads updates (asking for more) until the viewer's picture is the snapshot; returns the
/// pixels the updates carried.
fn sync_viewer(viewer: &mut Viewer, camera: &Camera, what: &str) -> u64 {
    let t = Instant::now();
    let mut area = 0u64;
    loop {
        for (x, y, w, h) in viewer.update() {
            println!("{what}: update ({x},{y}) {w}x{h}");
            area += u64::from(w * h);
        }
        viewer.request(true);
        let png = camera.shoot(0);
        if viewer.picture() == png {
            return area;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{what}: the viewer never caught up with the snapshot: {:?}",
            viewer.picture().first_mismatch(|x, y| png.px(x, y))
        );
    }
}

#[test]
fn gpu_vnc_viewers_get_the_png_and_live_updates() {
    let display = free_vnc_display();
    let port = 5900 + display;
    let vnc = format!("127.0.0.1:{port}");
    let (d, base) = gpu_daemon("gpu-vnc", &["--resolution", "800x600", "--vnc", &vnc]);
    let camera = Camera::Epf { daemon: &d, base };
    let pattern = fb_pattern(W, H);
    let script = format!(
        r#"{GPU_PRELUDE}
echo 0 > /sys/class/vtconsole/vtcon1/bind
cat /job/pattern.raw > /dev/fb0 || fail "write fb0"
sleep 1
step drawn
echo 1 > /sys/class/vtconsole/vtcon1/bind
printf '\033[2J\033[H' > /dev/tty1
for i in $(seq 10); do echo "virtio-epf gpu: console line $i" > /dev/tty1; done
sleep 1
step console
echo "one more line for the viewers" > /dev/tty1
sleep 1
step typed
"#
    );
    let mut viewer = Viewer::connect(port);
    assert_eq!((viewer.width, viewer.height), (W, H));
    let mut g = Guest::new(&[&d]).spawn("gpu-vnc", &script, &[("pattern.raw", &pattern)]);
    step(&mut g, "drawn", || {
        // gvnccapture (gtk-vnc, Debian's gvncviewer), which asks for ZRLE first.
        let out = d.dir.join("gvnccapture.png");
        let o = std::process::Command::new("gvnccapture")
            .arg(format!("127.0.0.1:{display}"))
            .arg(&out)
            .output()
            .expect("run gvnccapture (scripts/prepare.sh installs gvncviewer)");
        assert!(
            o.status.success(),
            "gvnccapture failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let vnc = read_png(&out);
        let png = camera.shoot(0);
        assert_pattern(&png, "the snapshot");
        assert!(
            vnc == png,
            "gvnccapture's picture differs from the PNG snapshot: {:?}",
            vnc.first_mismatch(|x, y| png.px(x, y))
        );
        // Our Raw viewer: the whole screen on a non-incremental request.
        viewer.request(false);
        let rects = viewer.update();
        assert!(rects.contains(&(0, 0, W, H)), "{rects:?}");
        assert!(
            viewer.picture() == png,
            "the Raw viewer's picture differs from the PNG"
        );
        viewer.request(true);
    });
    step(&mut g, "console", || {
        sync_viewer(&mut viewer, &camera, "console redrawn");
    });
    step(&mut g, "typed", || {
        // Linux's fbdev emulation flushes the whole screen on every change, so the update
        // is full-screen here; that only damage is sent is shown by the server's own tests
        // (crates/devices/src/gpu/vnc/tests.rs), which flush small rectangles.
        let area = sync_viewer(&mut viewer, &camera, "a line typed");
        assert!(area > 0, "no update after the guest drew");
    });
    let run = g.wait();
    println!("{}", run.output);
    run.assert_ok();
    let stats = d.stats_text();
    println!("{stats}");
    assert!(
        Daemon::counter(&stats, "gpu", "vnc_connections") >= 2,
        "{stats}"
    );
    assert_eq!(Daemon::counter(&stats, "gpu", "vnc_clients"), 1, "{stats}");
    assert!(
        Daemon::counter(&stats, "gpu", "vnc_updates") >= 3,
        "{stats}"
    );
    drop(viewer);
    assert!(d.stop().success());
}

#[test]
fn gpu_a_vnc_viewer_resizes_the_guest_mode() {
    let display = free_vnc_display();
    let port = 5900 + display;
    let vnc = format!("127.0.0.1:{port}");
    let (d, base) = gpu_daemon("gpu-resize", &["--resolution", "800x600", "--vnc", &vnc]);
    let camera = Camera::Epf { daemon: &d, base };
    let script = format!(
        r#"{GPU_PRELUDE}
check "preferred mode {W}x{H}" [ "$(head -n1 /sys/class/drm/card0-Virtual-1/modes)" = "{W}x{H}" ]
step ready
# The display-change event makes the driver read the display info and EDID again; modetest
# probes the connector.
for i in $(seq 100); do
    modetest -M virtio_gpu -c | grep -q '#0 1024x768 .*preferred' && break
    sleep 0.2
done
modetest -M virtio_gpu -c | grep '#0 '
check "preferred mode 1024x768 after the resize" sh -c "modetest -M virtio_gpu -c | grep -q '#0 1024x768 .*preferred'"
show 1 plain 1024x768
step resized
unshow
"#
    );
    let mut g = Guest::new(&[&d]).spawn("gpu-resize", &script, &[]);
    let mut viewer = Viewer::connect_with(port, &[0, -308]);
    step(&mut g, "ready", || {
        let mut m = vec![251u8, 0];
        m.extend_from_slice(&1024u16.to_be_bytes());
        m.extend_from_slice(&768u16.to_be_bytes());
        m.extend_from_slice(&[1, 0]);
        m.extend_from_slice(&[0; 16]);
        viewer.s.write_all(&m).unwrap();
    });
    step(&mut g, "resized", || {
        let p = camera.shoot(0);
        assert_eq!((p.width, p.height), (1024, 768));
        assert!(p.first_mismatch(|_, _| [0x77; 3]).is_none());
        // The viewer learns the new size and gets the new picture.
        let t = Instant::now();
        loop {
            viewer.request(viewer.width == 1024);
            viewer.update();
            if (viewer.width, viewer.height) == (1024, 768) && viewer.picture() == p {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the viewer never got 1024x768"
            );
        }
    });
    let run = g.wait();
    println!("{}", run.output);
    run.assert_ok();
    let stats = d.stats_text();
    assert!(
        Daemon::counter(&stats, "gpu", "display_events") >= 1,
        "{stats}"
    );
    drop(viewer);
    assert!(d.stop().success());
}
