//! virtio-gpu over the loopback: the real [`GpuDevice`] behind the real virtio-pci function,
//! driven through the loopback host driver the way Linux's `virtio_gpu` drives it, and with
//! hostile commands that must get the spec's error responses (and nothing outside host RAM
//! touched: `rig.finish()`).

mod common;

use common::*;
use epf_devices::gpu::protocol::*;
use epf_devices::gpu::{Display, GpuConfig, GpuDevice, MAX_BACKING_ENTRIES};
use epf_loopback::host_driver::{HostQueue, VirtioPciDriver};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const CTRL_VECTOR: u16 = 1;
const CURSOR_VECTOR: u16 = 2;
const MIB: u64 = 1 << 20;

struct Gpu {
    rig: Rig,
    drv: VirtioPciDriver,
    ctrl: HostQueue,
    cursor: HostQueue,
    display: Arc<Display>,
    dev: Arc<epf_devices::gpu::GpuCounters>,
    control: Arc<epf_devices::gpu::DisplayControl>,
    cmd: u64,
    resp: u64,
}

fn gpu(outputs: u32, width: u32, height: u32, max_memory: u64) -> Gpu {
    let dev = GpuDevice::new(GpuConfig {
        outputs,
        width,
        height,
        max_memory,
    });
    let display = dev.display();
    let counters = dev.counters();
    let control = dev.control();
    let rig = rig(Box::new(dev));
    let mut drv = rig.driver();
    assert!(drv.enable_msix());
    let mut qs = bring_up(
        &mut drv,
        1 << F_EDID,
        &[(0, None, Some(CTRL_VECTOR)), (1, None, Some(CURSOR_VECTOR))],
    );
    let cursor = qs.pop().unwrap();
    let ctrl = qs.pop().unwrap();
    let bus = rig.bus();
    let cmd = bus.alloc(1 << 20, 64).unwrap();
    let resp = bus.alloc(4096, 64).unwrap();
    Gpu {
        rig,
        drv,
        ctrl,
        cursor,
        display,
        dev: counters,
        control,
        cmd,
        resp,
    }
}

fn hdr(kind: u32) -> Vec<u8> {
    let mut v = vec![0u8; HDR_LEN];
    v[0..4].copy_from_slice(&kind.to_le_bytes());
    v
}

fn cmd(kind: u32, fields: &[u32]) -> Vec<u8> {
    let mut v = hdr(kind);
    for f in fields {
        v.extend_from_slice(&f.to_le_bytes());
    }
    v
}

impl Gpu {
    /// Sends `command` on the control queue; returns the response bytes.
    fn send(&mut self, command: &[u8]) -> Vec<u8> {
        self.send_with(command, 2048)
    }

    fn send_with(&mut self, command: &[u8], resp_len: u32) -> Vec<u8> {
        let bus = self.rig.bus();
        bus.ram_write(self.cmd, command).unwrap();
        bus.ram_write(self.resp, &vec![0xcc; resp_len as usize])
            .unwrap();
        let mut bufs = vec![(self.cmd, command.len() as u32, false)];
        if resp_len > 0 {
            bufs.push((self.resp, resp_len, true));
        }
        let head = self.ctrl.add(&bufs).unwrap();
        self.ctrl.kick().unwrap();
        let (h, len) = wait_used_strict(&bus, &mut self.ctrl);
        assert_eq!(h, head);
        let mut out = vec![0; len as usize];
        bus.ram_read(self.resp, &mut out).unwrap();
        out
    }

    /// Sends and returns the response type.
    fn status(&mut self, command: &[u8]) -> u32 {
        let r = self.send(command);
        assert!(r.len() >= HDR_LEN, "short response {r:?}");
        u32_at(&r, 0)
    }

    fn ok(&mut self, command: &[u8]) {
        assert_eq!(self.status(command), RESP_OK_NODATA);
    }

    fn cursor_cmd(&mut self, command: &[u8]) {
        let bus = self.rig.bus();
        bus.ram_write(self.cmd, command).unwrap();
        let head = self
            .cursor
            .add(&[(self.cmd, command.len() as u32, false)])
            .unwrap();
        self.cursor.kick().unwrap();
        let (h, len) = wait_used_strict(&bus, &mut self.cursor);
        assert_eq!((h, len), (head, 0));
    }

    /// Allocates `len` bytes of backing in `pieces` scattered pieces (with gaps between).
    fn backing(&self, len: u64, pieces: u64) -> Vec<(u64, u32)> {
        let bus = self.rig.bus();
        let mut out = Vec::new();
        let mut left = len;
        for i in 0..pieces {
            let n = if i + 1 == pieces { left } else { len / pieces };
            let a = bus.alloc(n + 4096, 4096).unwrap();
            out.push((a + 64 * i, n as u32));
            left -= n;
        }
        out
    }

    fn attach(&mut self, id: u32, entries: &[(u64, u32)]) -> u32 {
        let mut c = cmd(CMD_RESOURCE_ATTACH_BACKING, &[id, entries.len() as u32]);
        for &(a, l) in entries {
            c.extend_from_slice(&a.to_le_bytes());
            c.extend_from_slice(&l.to_le_bytes());
            c.extend_from_slice(&0u32.to_le_bytes());
        }
        self.status(&c)
    }

    /// Writes `data` into a backing at offset `at`.
    fn fill(&self, entries: &[(u64, u32)], mut at: u64, data: &[u8]) {
        let bus = self.rig.bus();
        let mut pos = 0usize;
        for &(a, l) in entries {
            let l = u64::from(l);
            if at >= l {
                at -= l;
                continue;
            }
            let n = ((l - at) as usize).min(data.len() - pos);
            bus.ram_write(a + at, &data[pos..pos + n]).unwrap();
            pos += n;
            at = 0;
            if pos == data.len() {
                break;
            }
        }
    }
}

fn transfer(id: u32, x: u32, y: u32, w: u32, h: u32, offset: u64) -> Vec<u8> {
    let mut c = cmd(CMD_TRANSFER_TO_HOST_2D, &[x, y, w, h]);
    c.extend_from_slice(&offset.to_le_bytes());
    c.extend_from_slice(&id.to_le_bytes());
    c.extend_from_slice(&0u32.to_le_bytes());
    c
}

fn rect_cmd(kind: u32, x: u32, y: u32, w: u32, h: u32, a: u32, b: u32) -> Vec<u8> {
    cmd(kind, &[x, y, w, h, a, b])
}

/// Pixel `(x, y)` of the test pattern, as XRGB bytes in memory (B, G, R, X).
fn pattern_px(x: u32, y: u32) -> [u8; 4] {
    [(x * 7) as u8, (y * 3) as u8, (x ^ y) as u8, 0x5a]
}

#[test]
fn display_info_edid_and_config_describe_the_outputs() {
    bounded(LIMIT, || {
        let mut g = gpu(3, 1280, 800, 64 * MIB);
        let mut cfg = [0u8; 16];
        g.drv.read_config(0, &mut cfg).unwrap();
        assert_eq!(u32_at(&cfg, 0), 0, "events_read");
        assert_eq!(u32_at(&cfg, 8), 3, "num_scanouts");
        assert_eq!(u32_at(&cfg, 12), 0, "num_capsets");
        let r = g.send(&hdr(CMD_GET_DISPLAY_INFO));
        assert_eq!(r.len(), HDR_LEN + 16 * 24);
        assert_eq!(u32_at(&r, 0), RESP_OK_DISPLAY_INFO);
        for i in 0..16 {
            let o = HDR_LEN + i * 24;
            let want = if i < 3 { [0, 0, 1280, 800, 1] } else { [0; 5] };
            let got: Vec<u32> = (0..5).map(|k| u32_at(&r, o + 4 * k)).collect();
            assert_eq!(got, want, "output {i}");
        }
        for i in 0..3 {
            let r = g.send(&cmd(CMD_GET_EDID, &[i, 0]));
            assert_eq!(u32_at(&r, 0), RESP_OK_EDID);
            assert_eq!(r.len(), HDR_LEN + 8 + EDID_MAX);
            assert_eq!(u32_at(&r, HDR_LEN), 128);
            let e = &r[HDR_LEN + 8..HDR_LEN + 8 + 128];
            assert_eq!(e.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
            assert_eq!(e[56], (1280 & 0xff) as u8);
            assert_eq!(e[58] >> 4, (1280 >> 8) as u8);
            assert_eq!(e[59], (800 & 0xff) as u8);
        }
        assert_eq!(
            g.status(&cmd(CMD_GET_EDID, &[3, 0])),
            RESP_ERR_INVALID_PARAMETER
        );
        // A fenced command gets its fence back.
        let mut c = hdr(CMD_GET_DISPLAY_INFO);
        c[4..8].copy_from_slice(&FLAG_FENCE.to_le_bytes());
        c[8..16].copy_from_slice(&0x1234_5678_9abcu64.to_le_bytes());
        let r = g.send(&c);
        assert_eq!(u32_at(&r, 4), FLAG_FENCE);
        assert_eq!(u64_at(&r, 8), 0x1234_5678_9abc);
        drop(g.drv);
        g.rig.finish();
    });
}

#[test]
fn every_format_is_transferred_scanned_out_and_flushed_pixel_exact() {
    bounded(LIMIT, || {
        let mut g = gpu(2, 640, 480, 64 * MIB);
        let (w, h) = (100u32, 60u32);
        for (n, f) in Format::ALL.iter().enumerate() {
            let id = 10 + n as u32;
            g.ok(&cmd(CMD_RESOURCE_CREATE_2D, &[id, f.to_wire(), w, h]));
            let entries = g.backing(u64::from(w * h * 4), 1 + n as u64 % 5);
            assert_eq!(g.attach(id, &entries), RESP_OK_NODATA);
            let mut data = Vec::new();
            for y in 0..h {
                for x in 0..w {
                    data.extend_from_slice(&pattern_px(x, y));
                }
            }
            g.fill(&entries, 0, &data);
            g.ok(&transfer(id, 0, 0, w, h, 0));
            let out = n as u32 % 2;
            g.ok(&rect_cmd(CMD_SET_SCANOUT, 0, 0, w, h, out, id));
            g.ok(&rect_cmd(CMD_RESOURCE_FLUSH, 0, 0, w, h, id, 0));
            let frame = g.display.frame(out as usize).unwrap();
            assert_eq!((frame.width, frame.height, frame.enabled), (w, h, true));
            for y in 0..h {
                for x in 0..w {
                    let want = f.to_argb(&pattern_px(x, y)) & 0xff_ffff;
                    assert_eq!(frame.pixels[(y * w + x) as usize], want, "{f:?} ({x},{y})");
                }
            }
        }
        // A partial update: a sub-rectangle at its offset, as Linux sends it.
        let id = 10; // B8G8R8A8, shown on output 0 before: show it again.
        g.ok(&rect_cmd(CMD_SET_SCANOUT, 0, 0, w, h, 0, id));
        let entries = {
            // Re-attach a fresh backing to write new pixels.
            g.ok(&cmd(CMD_RESOURCE_DETACH_BACKING, &[id, 0]));
            let e = g.backing(u64::from(w * h * 4), 3);
            assert_eq!(g.attach(id, &e), RESP_OK_NODATA);
            e
        };
        let (rx, ry, rw, rh) = (13u32, 7u32, 50u32, 20u32);
        for y in ry..ry + rh {
            let row: Vec<u8> = (rx..rx + rw)
                .flat_map(|x| [0xff, x as u8, y as u8, 0xff])
                .collect();
            g.fill(&entries, u64::from(y * w * 4 + rx * 4), &row);
        }
        let before = g.display.frame(0).unwrap();
        g.ok(&transfer(
            id,
            rx,
            ry,
            rw,
            rh,
            u64::from(ry * w * 4 + rx * 4),
        ));
        let flushed = g.dev.frames_flushed.load(Ordering::Relaxed);
        g.ok(&rect_cmd(CMD_RESOURCE_FLUSH, rx, ry, rw, rh, id, 0));
        assert_eq!(g.dev.frames_flushed.load(Ordering::Relaxed), flushed + 1);
        let after = g.display.frame(0).unwrap();
        for y in 0..h {
            for x in 0..w {
                let i = (y * w + x) as usize;
                if (rx..rx + rw).contains(&x) && (ry..ry + rh).contains(&y) {
                    assert_eq!(
                        after.pixels[i],
                        u32::from_be_bytes([0, y as u8, x as u8, 0xff])
                    );
                } else {
                    assert_eq!(
                        after.pixels[i], before.pixels[i],
                        "outside the update ({x},{y})"
                    );
                }
            }
        }
        // Unref turns the output off.
        g.ok(&cmd(CMD_RESOURCE_UNREF, &[id, 0]));
        let f = g.display.frame(0).unwrap();
        assert!(!f.enabled);
        assert_eq!((f.width, f.height), (640, 480));
        assert!(g.dev.bytes_transferred.load(Ordering::Relaxed) >= 8 * u64::from(w * h * 4));
        drop(g.drv);
        g.rig.finish();
    });
}

#[test]
fn hostile_commands_get_the_spec_errors_and_the_device_goes_on() {
    bounded(LIMIT, || {
        let mut g = gpu(1, 640, 480, 4 * MIB);
        let bad_id = RESP_ERR_INVALID_RESOURCE_ID;
        let bad_param = RESP_ERR_INVALID_PARAMETER;
        // Unknown resources in every command that names one.
        assert_eq!(g.status(&cmd(CMD_RESOURCE_UNREF, &[99, 0])), bad_id);
        assert_eq!(
            g.status(&cmd(CMD_RESOURCE_DETACH_BACKING, &[99, 0])),
            bad_id
        );
        assert_eq!(
            g.status(&rect_cmd(CMD_SET_SCANOUT, 0, 0, 16, 16, 0, 99)),
            bad_id
        );
        assert_eq!(
            g.status(&rect_cmd(CMD_RESOURCE_FLUSH, 0, 0, 16, 16, 99, 0)),
            bad_id
        );
        assert_eq!(g.status(&transfer(99, 0, 0, 1, 1, 0)), bad_id);
        assert_eq!(g.attach(99, &[(g.cmd, 4096)]), bad_id);
        // Creation: id 0, duplicates, unknown formats, empty and huge sizes.
        assert_eq!(
            g.status(&cmd(CMD_RESOURCE_CREATE_2D, &[0, 2, 16, 16])),
            bad_id
        );
        g.ok(&cmd(CMD_RESOURCE_CREATE_2D, &[1, 2, 64, 64]));
        assert_eq!(
            g.status(&cmd(CMD_RESOURCE_CREATE_2D, &[1, 2, 16, 16])),
            bad_id
        );
        assert_eq!(
            g.status(&cmd(CMD_RESOURCE_CREATE_2D, &[2, 5, 16, 16])),
            bad_param
        );
        assert_eq!(
            g.status(&cmd(CMD_RESOURCE_CREATE_2D, &[2, 2, 0, 16])),
            bad_param
        );
        assert_eq!(
            g.status(&cmd(CMD_RESOURCE_CREATE_2D, &[2, 2, u32::MAX, u32::MAX])),
            RESP_ERR_OUT_OF_MEMORY
        );
        // The --max-memory budget (4 MiB): 3 MiB fits, another 3 MiB does not, until unref.
        g.ok(&cmd(CMD_RESOURCE_CREATE_2D, &[2, 2, 1024, 768]));
        assert_eq!(
            g.status(&cmd(CMD_RESOURCE_CREATE_2D, &[3, 2, 1024, 768])),
            RESP_ERR_OUT_OF_MEMORY
        );
        g.ok(&cmd(CMD_RESOURCE_UNREF, &[2, 0]));
        g.ok(&cmd(CMD_RESOURCE_CREATE_2D, &[3, 2, 1024, 768]));
        g.ok(&cmd(CMD_RESOURCE_UNREF, &[3, 0]));
        // Backing: too small, outside host RAM, too many or no entries, zero-length.
        let ram_end = g.rig.bus().ram_base() + g.rig.bus().ram_size();
        let small = g.backing(64 * 64 * 4 - 1, 2);
        assert_eq!(g.attach(1, &small), bad_param);
        assert_eq!(g.attach(1, &[(ram_end - 4096, 64 * 64 * 4)]), bad_param);
        assert_eq!(g.attach(1, &[(u64::MAX - 100, 64 * 64 * 4)]), bad_param);
        assert_eq!(g.attach(1, &[]), bad_param);
        assert_eq!(
            g.status(&cmd(
                CMD_RESOURCE_ATTACH_BACKING,
                &[1, MAX_BACKING_ENTRIES + 1]
            )),
            bad_param
        );
        // More entries announced than the command carries.
        assert_eq!(
            g.status(&cmd(CMD_RESOURCE_ATTACH_BACKING, &[1, 1000])),
            bad_param
        );
        // Transfer before any backing.
        assert_eq!(g.status(&transfer(1, 0, 0, 64, 64, 0)), RESP_ERR_UNSPEC);
        let good = g.backing(64 * 64 * 4, 4);
        assert_eq!(g.attach(1, &good), RESP_OK_NODATA);
        assert_eq!(g.attach(1, &good), RESP_ERR_UNSPEC, "already attached");
        // Rectangles outside the resource, overflowing coordinates, strides past the backing.
        assert_eq!(g.status(&transfer(1, 1, 0, 64, 64, 0)), bad_param);
        assert_eq!(g.status(&transfer(1, u32::MAX, 0, 2, 1, 0)), bad_param);
        assert_eq!(g.status(&transfer(1, 0, u32::MAX, 1, 2, 0)), bad_param);
        assert_eq!(
            g.status(&transfer(1, 0, 0, 64, 64, 4)),
            bad_param,
            "offset + size > backing"
        );
        assert_eq!(g.status(&transfer(1, 0, 0, 1, 1, u64::MAX - 2)), bad_param);
        assert_eq!(
            g.status(&transfer(1, 0, 63, 64, 1, 64 * 63 * 4 + 1)),
            bad_param
        );
        g.ok(&transfer(1, 0, 63, 64, 1, 64 * 63 * 4));
        assert_eq!(
            g.status(&rect_cmd(CMD_SET_SCANOUT, 0, 0, 65, 64, 0, 1)),
            bad_param
        );
        assert_eq!(
            g.status(&rect_cmd(CMD_SET_SCANOUT, 0, 0, 0, 64, 0, 1)),
            bad_param
        );
        assert_eq!(
            g.status(&rect_cmd(CMD_SET_SCANOUT, 0, 0, 64, 64, 1, 1)),
            RESP_ERR_INVALID_SCANOUT_ID
        );
        assert_eq!(
            g.status(&rect_cmd(CMD_SET_SCANOUT, 0, 0, 64, 64, u32::MAX, 1)),
            RESP_ERR_INVALID_SCANOUT_ID
        );
        assert_eq!(
            g.status(&rect_cmd(CMD_RESOURCE_FLUSH, 60, 60, 5, 5, 1, 0)),
            bad_param
        );
        // A scanout wider than any viewer holds (a thin resource that fits the budget).
        g.ok(&cmd(CMD_RESOURCE_CREATE_2D, &[9, 2, 70000, 2]));
        assert_eq!(
            g.status(&rect_cmd(CMD_SET_SCANOUT, 0, 0, 70000, 2, 0, 9)),
            bad_param
        );
        g.ok(&cmd(CMD_RESOURCE_UNREF, &[9, 0]));
        // Unknown and 3D commands, truncated commands.
        assert_eq!(g.status(&hdr(0x0200)), RESP_ERR_UNSPEC);
        assert_eq!(g.status(&hdr(0xdead_beef)), RESP_ERR_UNSPEC);
        assert_eq!(g.status(&hdr(CMD_RESOURCE_CREATE_2D)), RESP_ERR_UNSPEC);
        assert_eq!(g.status(&hdr(CMD_GET_DISPLAY_INFO)[..8]), RESP_ERR_UNSPEC);
        // No room for a response: completed with nothing written.
        assert!(g.send_with(&hdr(CMD_GET_DISPLAY_INFO), 0).is_empty());
        // A response buffer too small for the display info gets what fits.
        assert_eq!(g.send_with(&hdr(CMD_GET_DISPLAY_INFO), 30).len(), 30);
        // Backing pages freed by the host after detach are never read again.
        g.ok(&cmd(CMD_RESOURCE_DETACH_BACKING, &[1, 0]));
        assert_eq!(
            g.status(&cmd(CMD_RESOURCE_DETACH_BACKING, &[1, 0])),
            RESP_ERR_UNSPEC
        );
        assert_eq!(g.status(&transfer(1, 0, 0, 64, 64, 0)), RESP_ERR_UNSPEC);
        // Still working.
        g.ok(&rect_cmd(CMD_SET_SCANOUT, 0, 0, 64, 64, 0, 1));
        assert!(g.dev.errors.load(Ordering::Relaxed) >= 30);
        assert_eq!(
            g.drv.status() & NEEDS_RESET,
            0,
            "no DEVICE_NEEDS_RESET for bad commands"
        );
        drop(g.drv);
        g.rig.finish();
    });
}

#[test]
fn cursor_follows_update_and_move() {
    bounded(LIMIT, || {
        let mut g = gpu(2, 640, 480, 16 * MIB);
        g.ok(&cmd(CMD_RESOURCE_CREATE_2D, &[5, 1, 64, 64]));
        let e = g.backing(64 * 64 * 4, 1);
        assert_eq!(g.attach(5, &e), RESP_OK_NODATA);
        let img: Vec<u8> = (0..64 * 64)
            .flat_map(|i: u32| [i as u8, 0, 0xff, 0x80])
            .collect();
        g.fill(&e, 0, &img);
        g.ok(&transfer(5, 0, 0, 64, 64, 0));
        // UPDATE_CURSOR: scanout 1 at (100, 200), hotspot (3, 4).
        g.cursor_cmd(&cmd(CMD_UPDATE_CURSOR, &[1, 100, 200, 0, 5, 3, 4, 0]));
        {
            let s = g.display.lock();
            let c = &s.cursor;
            assert_eq!((c.scanout, c.x, c.y, c.hot_x, c.hot_y), (1, 100, 200, 3, 4));
            let img = c.image.as_ref().expect("visible");
            assert_eq!(img[7], 0x80ff_0007);
        }
        g.cursor_cmd(&cmd(CMD_MOVE_CURSOR, &[1, 321, 123, 0, 0, 0, 0, 0]));
        {
            let s = g.display.lock();
            assert_eq!((s.cursor.x, s.cursor.y), (321, 123));
            assert!(s.cursor.image.is_some(), "a move keeps the image");
        }
        assert_eq!(g.dev.cursor_x.load(Ordering::Relaxed), 321);
        assert_eq!(g.dev.cursor_visible.load(Ordering::Relaxed), 1);
        // A cursor resource that is not 64x64, an unknown one, a bad scanout: ignored.
        g.ok(&cmd(CMD_RESOURCE_CREATE_2D, &[6, 1, 32, 32]));
        g.cursor_cmd(&cmd(CMD_UPDATE_CURSOR, &[0, 1, 1, 0, 6, 0, 0, 0]));
        g.cursor_cmd(&cmd(CMD_UPDATE_CURSOR, &[0, 1, 1, 0, 77, 0, 0, 0]));
        g.cursor_cmd(&cmd(CMD_MOVE_CURSOR, &[9, 1, 1, 0, 0, 0, 0, 0]));
        assert_eq!(g.display.lock().cursor.x, 321);
        // Resource 0 hides it.
        g.cursor_cmd(&cmd(CMD_UPDATE_CURSOR, &[0, 5, 5, 0, 0, 0, 0, 0]));
        assert!(g.display.lock().cursor.image.is_none());
        assert_eq!(
            g.dev.move_cursor.load(Ordering::Relaxed),
            2,
            "bad moves are counted too"
        );
        drop(g.drv);
        g.rig.finish();
    });
}

#[test]
fn a_resize_raises_a_display_event_cleared_by_the_driver() {
    bounded(LIMIT, || {
        let mut g = gpu(2, 800, 600, 16 * MIB);
        let bus = g.rig.bus();
        let before = bus.msix_count(CONFIG_VECTOR);
        g.control.set_mode(1, 1024, 768, true);
        assert!(
            wait_until(WAIT, || bus.msix_count(CONFIG_VECTOR) > before),
            "no configuration-change interrupt"
        );
        let mut ev = [0u8; 4];
        g.drv.read_config(0, &mut ev).unwrap();
        assert_eq!(u32::from_le_bytes(ev), EVENT_DISPLAY);
        let r = g.send(&hdr(CMD_GET_DISPLAY_INFO));
        assert_eq!(
            (0..4)
                .map(|k| u32_at(&r, HDR_LEN + 24 + 4 * k))
                .collect::<Vec<_>>(),
            [0, 0, 1024, 768]
        );
        let r = g.send(&cmd(CMD_GET_EDID, &[1, 0]));
        assert_eq!(r[HDR_LEN + 8 + 56], (1024 & 0xff) as u8);
        // The driver acknowledges through events_clear.
        g.drv.write_config(4, &EVENT_DISPLAY.to_le_bytes()).unwrap();
        g.drv.read_config(0, &mut ev).unwrap();
        assert_eq!(u32::from_le_bytes(ev), 0);
        // Disconnect: the output reads as disabled.
        g.control.set_mode(0, 800, 600, false);
        assert!(wait_until(WAIT, || {
            let mut ev = [0u8; 4];
            g.drv.read_config(0, &mut ev).unwrap();
            u32::from_le_bytes(ev) == EVENT_DISPLAY
        }));
        let r = g.send(&hdr(CMD_GET_DISPLAY_INFO));
        assert_eq!(u32_at(&r, HDR_LEN + 16), 0, "output 0 disabled");
        assert_eq!(g.dev.display_events.load(Ordering::Relaxed), 2);
        drop(g.drv);
        g.rig.finish();
    });
}

#[test]
fn a_reset_forgets_every_resource() {
    bounded(LIMIT, || {
        let mut g = gpu(1, 640, 480, 16 * MIB);
        g.ok(&cmd(CMD_RESOURCE_CREATE_2D, &[1, 2, 64, 64]));
        g.ok(&rect_cmd(CMD_SET_SCANOUT, 0, 0, 64, 64, 0, 1));
        assert!(g.display.frame(0).unwrap().enabled);
        let mut qs = bring_up(
            &mut g.drv,
            1 << F_EDID,
            &[(0, None, Some(CTRL_VECTOR)), (1, None, Some(CURSOR_VECTOR))],
        );
        g.cursor = qs.pop().unwrap();
        g.ctrl = qs.pop().unwrap();
        assert!(!g.display.frame(0).unwrap().enabled);
        assert_eq!(
            g.status(&cmd(CMD_RESOURCE_UNREF, &[1, 0])),
            RESP_ERR_INVALID_RESOURCE_ID
        );
        assert_eq!(g.dev.resource_bytes.load(Ordering::Relaxed), 0);
        g.ok(&cmd(CMD_RESOURCE_CREATE_2D, &[1, 2, 64, 64]));
        drop(g.drv);
        g.rig.finish();
    });
}

/// Random commands with edge-biased fields (IDs, formats, sizes, rectangles, offsets, backing
/// addresses inside, across and outside host RAM, truncated bodies, random types): every one
/// gets one of the spec's responses, the device never asks for a reset, the resource memory
/// stays within `--max-memory`, and nothing outside host RAM is touched (`rig.finish`).
#[test]
fn random_hostile_commands_get_spec_responses_within_the_memory_bound() {
    bounded(Duration::from_secs(120), || {
        const MAX: u64 = 8 * MIB;
        let mut g = gpu(2, 640, 480, MAX);
        let mut rng = Prng::new(0x6770_7531);
        let ram_base = g.rig.bus().ram_base();
        let ram_end = ram_base + g.rig.bus().ram_size();
        let pool = g.rig.bus().alloc(4 * MIB, 4096).unwrap();
        let edge = |rng: &mut Prng| -> u32 {
            match rng.range(0, 9) {
                0 => 0,
                1 => 1,
                2 => u32::MAX,
                3 => u32::MAX - rng.range(0, 64) as u32,
                4 => 64,
                5 => 1 << rng.range(0, 31),
                6 => rng.range(0, 2048) as u32,
                _ => rng.range(0, 200) as u32,
            }
        };
        let kinds = [
            CMD_GET_DISPLAY_INFO,
            CMD_RESOURCE_CREATE_2D,
            CMD_RESOURCE_UNREF,
            CMD_SET_SCANOUT,
            CMD_RESOURCE_FLUSH,
            CMD_TRANSFER_TO_HOST_2D,
            CMD_RESOURCE_ATTACH_BACKING,
            CMD_RESOURCE_DETACH_BACKING,
            CMD_GET_CAPSET_INFO,
            CMD_GET_EDID,
            0x0200,
            0x0207,
            rng.next_u64() as u32,
        ];
        let valid = [
            RESP_OK_NODATA,
            RESP_OK_DISPLAY_INFO,
            RESP_OK_EDID,
            RESP_ERR_UNSPEC,
            RESP_ERR_OUT_OF_MEMORY,
            RESP_ERR_INVALID_SCANOUT_ID,
            RESP_ERR_INVALID_RESOURCE_ID,
            RESP_ERR_INVALID_PARAMETER,
        ];
        let mut ok = 0;
        for i in 0..3000 {
            if i % 50 == 0 {
                // A valid resource now and then (id 7, which the random commands also name),
                // so that they meet live resources with backing and scanouts.
                let mut happy = vec![
                    cmd(CMD_RESOURCE_CREATE_2D, &[7, 2, 64, 64]),
                    cmd(CMD_RESOURCE_ATTACH_BACKING, &[7, 1]),
                    transfer(7, 0, 0, 64, 64, 0),
                    rect_cmd(CMD_SET_SCANOUT, 0, 0, 64, 64, 0, 7),
                    rect_cmd(CMD_RESOURCE_FLUSH, 0, 0, 64, 64, 7, 0),
                ];
                happy[1].extend_from_slice(&(pool + 8 * MIB / 4).to_le_bytes());
                happy[1].extend_from_slice(&(64u32 * 64 * 4).to_le_bytes());
                happy[1].extend_from_slice(&0u32.to_le_bytes());
                for c in happy {
                    let t = u32_at(&g.send(&c), 0);
                    assert!(valid.contains(&t), "command {i}: response {t:#x}");
                }
            }
            let kind = kinds[rng.range(0, kinds.len() as u64 - 1) as usize];
            // Resource IDs mostly from a small set, so commands meet live resources.
            let id = if rng.range(0, 3) == 0 {
                edge(&mut rng)
            } else {
                rng.range(1, 7) as u32
            };
            let mut c = match kind {
                CMD_RESOURCE_CREATE_2D => {
                    let fmt = if rng.range(0, 3) == 0 {
                        edge(&mut rng)
                    } else {
                        Format::ALL[rng.range(0, 7) as usize].to_wire()
                    };
                    let (w, h) = if rng.range(0, 2) == 0 {
                        (rng.range(1, 700) as u32, rng.range(1, 500) as u32)
                    } else {
                        (edge(&mut rng), edge(&mut rng))
                    };
                    cmd(kind, &[id, fmt, w, h])
                }
                CMD_SET_SCANOUT | CMD_RESOURCE_FLUSH => {
                    let f: Vec<u32> = (0..4).map(|_| edge(&mut rng)).collect();
                    let extra = if kind == CMD_SET_SCANOUT {
                        rng.range(0, 2) as u32
                    } else {
                        id
                    };
                    let last = if kind == CMD_SET_SCANOUT { id } else { 0 };
                    rect_cmd(kind, f[0], f[1], f[2], f[3], extra, last)
                }
                CMD_TRANSFER_TO_HOST_2D => {
                    let f: Vec<u32> = if rng.range(0, 1) == 0 {
                        vec![
                            rng.range(0, 40) as u32,
                            rng.range(0, 40) as u32,
                            rng.range(1, 60) as u32,
                            rng.range(1, 60) as u32,
                        ]
                    } else {
                        (0..4).map(|_| edge(&mut rng)).collect()
                    };
                    let off = match rng.range(0, 3) {
                        0 => u64::MAX - rng.range(0, 100),
                        1 => rng.next_u64(),
                        _ => rng.range(0, 1 << 20),
                    };
                    transfer(id, f[0], f[1], f[2], f[3], off)
                }
                CMD_RESOURCE_ATTACH_BACKING => {
                    let n = if rng.range(0, 5) == 0 {
                        edge(&mut rng)
                    } else {
                        rng.range(0, 8) as u32
                    };
                    let mut c = cmd(kind, &[id, n]);
                    let good = rng.range(0, 1) == 0;
                    for _ in 0..n.min(16) {
                        if good {
                            // Inside the pool, 1 MiB each: enough for any resource here.
                            c.extend_from_slice(&(pool + rng.range(0, 3 * MIB)).to_le_bytes());
                            c.extend_from_slice(&(MIB as u32).to_le_bytes());
                            c.extend_from_slice(&0u32.to_le_bytes());
                            continue;
                        }
                        let addr = match rng.range(0, 4) {
                            0 => ram_end - rng.range(0, 8192),
                            1 => rng.next_u64(),
                            2 => ram_base.wrapping_sub(rng.range(0, 4096)),
                            _ => pool + rng.range(0, 3 * MIB),
                        };
                        let len = match rng.range(0, 3) {
                            0 => edge(&mut rng),
                            _ => rng.range(1, MIB) as u32,
                        };
                        c.extend_from_slice(&addr.to_le_bytes());
                        c.extend_from_slice(&len.to_le_bytes());
                        c.extend_from_slice(&0u32.to_le_bytes());
                    }
                    c
                }
                _ => cmd(kind, &[id, edge(&mut rng), edge(&mut rng)]),
            };
            if rng.range(0, 10) == 0 {
                let cut = rng.range(0, c.len() as u64) as usize;
                c.truncate(cut);
            }
            if rng.range(0, 8) == 0 {
                // A fence on the command.
                if c.len() >= 16 {
                    c[4..8].copy_from_slice(&FLAG_FENCE.to_le_bytes());
                    c[8..16].copy_from_slice(&(i as u64).to_le_bytes());
                }
            }
            let r = g.send(&c);
            assert!(r.len() >= HDR_LEN, "command {i}: short response");
            let t = u32_at(&r, 0);
            assert!(
                valid.contains(&t),
                "command {i} ({kind:#x}): response {t:#x}"
            );
            if t == RESP_OK_NODATA {
                ok += 1;
            }
            assert!(
                g.dev.resource_bytes.load(Ordering::Relaxed) <= MAX,
                "resource memory beyond --max-memory"
            );
        }
        assert!(
            ok > 100,
            "too few commands succeeded ({ok}) to reach the deeper paths"
        );
        assert!(g.dev.bytes_transferred.load(Ordering::Relaxed) > 0);
        assert_eq!(g.drv.status() & NEEDS_RESET, 0);
        drop(g.drv);
        g.rig.finish();
    });
}
