//! The generator: a session as a sequence of messages, most of them well framed and plausible
//! enough to reach deep into the server (a VERSION first, regions and offsets near the
//! fixture's area boundaries, DMA ranges that overlap earlier ones), every command and flag,
//! with mutations: wrong sizes, truncated and oversized bodies, bodies over 64 bytes, garbage
//! and truncated headers, descriptors of every kind, too many descriptors. The stream is then
//! cut into writes: one per message, all in one, random cuts, or byte by byte; descriptors
//! ride on the write that starts where they are attached (often inside a message).

use super::case::{Case, Fd, Write};
use super::model::{IRQ_COUNTS, REGION_SIZES};
use super::wire::*;
use epf_fuzz::Rng;

/// A message and the descriptors attached at offsets inside it.
struct Msg {
    bytes: Vec<u8>,
    fds: Vec<(usize, Vec<Fd>)>,
}

/// What the generator remembers within a case, to make later messages relevant.
#[derive(Default)]
struct State {
    /// Framing mutations (wrong sizes, garbage) in this case: they end a session early, so
    /// only some cases have them.
    chaos: bool,
    versioned: bool,
    /// DMA ranges mapped so far (maybe refused: the generator does not care).
    maps: Vec<(u64, u64)>,
}

/// Capabilities JSON texts, valid and not.
fn caps_json(rng: &mut Rng) -> Vec<u8> {
    const QEMU: &str = r#"{"capabilities": {"migration": {"pgsize": 4096, "max_bitmap_size": 268435456}, "max_msg_fds": 16, "max_data_xfer_size": 1048576, "pgsizes": 4096, "max_dma_maps": 65535, "write_multiple": true}}"#;
    let mut j: Vec<u8> = match rng.weighted(&[24, 4, 4, 6, 1, 1, 2, 1, 2]) {
        0 => QEMU.into(),
        1 => b"{}".to_vec(),
        2 => Vec::new(),
        3 => format!(
            r#"{{"capabilities":{{"max_msg_fds":{},"write_multiple":{}}}}}"#,
            rng.pick(&[0u64, 1, 16, 253, u64::MAX]),
            rng.pick(&["true", "false", "1", "null"])
        )
        .into_bytes(),
        // Truncated somewhere.
        4 => {
            let n = rng.below(QEMU.len() as u64) as usize;
            QEMU.as_bytes()[..n].to_vec()
        }
        // Deep nesting.
        5 => {
            let depth = rng.range(8, 200) as usize;
            let mut v = b"{\"capabilities\":".to_vec();
            v.extend(std::iter::repeat_n(b'[', depth));
            v.extend(std::iter::repeat_n(
                b']',
                rng.below(depth as u64 + 1) as usize,
            ));
            v.push(b'}');
            v
        }
        // Odd numbers, strings and escapes.
        6 => rng
            .pick(&[
                r#"{"capabilities":{"max_msg_fds":1e3}}"#,
                r#"{"capabilities":{"max_msg_fds":-0}}"#,
                r#"{"capabilities":{"max_msg_fds":18446744073709551616}}"#,
                r#"{"capabilities":{"migration":[]}}"#,
                r#"{"capabilities":{"x":"\u0000\ud800\"\\"},"y":[1,2,{"z":null}]}"#,
                r#"{"capabilities":{"write_multiple":true},"capabilities":{}}"#,
                "[]",
                "\"capabilities\"",
                "{\"a\":1,}",
            ])
            .into(),
        7 => {
            let n = rng.below(100) as usize;
            rng.bytes(n)
        }
        // Long (a body far over 64 bytes).
        _ => {
            let mut v = b"{\"capabilities\":{\"pad\":\"".to_vec();
            v.extend(std::iter::repeat_n(b'a', rng.range(64, 5000) as usize));
            v.extend_from_slice(b"\"}}");
            v
        }
    };
    match rng.weighted(&[8, 1, 1]) {
        0 => j.push(0),
        1 => {}
        _ => {
            j.push(0);
            j.extend({
                let n = rng.below(32) as usize;
                rng.bytes(n)
            });
        }
    }
    j
}

fn page_count(rng: &mut Rng) -> u64 {
    rng.pick(&[1, 1, 2, 4, 16, 256])
}

/// A DMA range: one near earlier ones (to overlap or unmap them), or anywhere.
fn dma_range(rng: &mut Rng, st: &State) -> (u64, u64) {
    if !st.maps.is_empty() && rng.percent(40) {
        let (iova, size) = st.maps[rng.below(st.maps.len() as u64) as usize];
        return match rng.below(5) {
            0 => (iova, size),
            1 => (iova.wrapping_add(4096), size),
            2 => (iova.saturating_sub(4096), size.saturating_add(8192)),
            3 => (iova, size / 2 + 1),
            _ => (iova.wrapping_add(size), 4096),
        };
    }
    let iova = match rng.below(6) {
        0..=2 => rng.below(16) << 20,
        3 => rng.below(64) << 30,
        4 => rng.next_u64(),
        _ => u64::MAX - rng.below(3) * 4096,
    };
    let size = match rng.below(8) {
        0..=3 => page_count(rng) * 4096,
        4 => 0,
        5 => rng.range(1, 8191),
        6 => rng.pick(&[128 << 30, 1 << 40, u64::MAX]),
        _ => rng.next_u64(),
    };
    (iova, size)
}

/// A descriptor for DMA_MAP: mostly memory of a size related to the map's.
fn map_fd(rng: &mut Rng, size: u64) -> Fd {
    let len = match rng.below(4) {
        0 | 1 => size,
        2 => size.saturating_add(rng.below(3) * 4096),
        _ => size / 2,
    }
    .min(1 << 40);
    match rng.weighted(&[10, 3, 1, 1, 1, 1, 1, 1]) {
        0 => Fd::Memfd(len),
        1 => Fd::File(len.min(1 << 20)),
        2 => Fd::PipeRead,
        3 => Fd::DevNull,
        4 => Fd::Eventfd,
        5 => Fd::Socket,
        6 => Fd::Dir,
        _ => Fd::PipeWrite,
    }
}

fn any_fd(rng: &mut Rng) -> Fd {
    match rng.below(10) {
        0 => Fd::Memfd(rng.pick(&[0, 4096, 1 << 20])),
        1 => Fd::File(rng.pick(&[0, 4096])),
        2 => Fd::Eventfd,
        3 => Fd::SaturatedEventfd,
        4 => Fd::BlockingEventfd,
        5 => Fd::PipeRead,
        6 => Fd::PipeWrite,
        7 => Fd::DevNull,
        8 => Fd::Socket,
        _ => Fd::Dir,
    }
}

fn irq_fd(rng: &mut Rng) -> Fd {
    match rng.weighted(&[12, 2, 2, 1]) {
        0 => Fd::Eventfd,
        1 => Fd::SaturatedEventfd,
        2 => Fd::BlockingEventfd,
        _ => any_fd(rng),
    }
}

/// An offset in `region` worth trying: area boundaries of the fixture, the ends, anything.
fn region_offset(rng: &mut Rng, region: u32, count: u64) -> u64 {
    let size = REGION_SIZES.get(region as usize).copied().unwrap_or(0);
    match rng.below(8) {
        0 => 0,
        1 => rng.pick(&[
            0xfc, 0x100, 0xffc, 0x1000, 0x1004, 0x1ffc, 0x2000, 0x2ffc, 0x3000, 0x3040, 0x37f8,
            0x3800, 0x3808,
        ]),
        2 => size.saturating_sub(count),
        3 => size.saturating_sub(count) + rng.range(1, 8),
        4 => rng.pick(&[0x40, 0x44, 0x48, 0x4c, 0x50, 0x54, 0x58, 0x60]),
        5 => u64::MAX - rng.below(16),
        6 => rng.next_u64(),
        _ => rng.below(size.max(1)),
    }
}

fn region(rng: &mut Rng) -> u32 {
    match rng.below(10) {
        0..=3 => 0,
        4 | 5 => CONFIG_REGION,
        6 => 2,
        7 => rng.below(u64::from(NUM_REGIONS) + 1) as u32,
        8 => rng.pick(&[1, 3, 6, 8]),
        _ => rng.u32(),
    }
}

fn access_count(rng: &mut Rng) -> u32 {
    match rng.below(12) {
        0..=3 => rng.pick(&[1, 2, 4, 8]),
        4 => 0,
        5 => rng.range(1, 64) as u32,
        6 => rng.pick(&[256, 4096, 0x1000 - 1, 0x4000]),
        7 => rng.range(65, 1024) as u32,
        8 if rng.one_in(8) => MAX_DATA as u32,
        9 => (MAX_DATA + 1) as u32,
        10 => u32::MAX,
        _ => rng.pick(&[3, 5, 6, 7]),
    }
}

fn argsz(rng: &mut Rng, want: u32) -> u32 {
    match rng.below(8) {
        0..=4 => want,
        5 => rng.below(u64::from(want)) as u32,
        6 => want + rng.pick(&[1, 8, 16, 32, 1 << 20]),
        _ => rng.u32(),
    }
}

fn flags(rng: &mut Rng) -> u32 {
    match rng.weighted(&[40, 6, 1, 1, 1, 1]) {
        0 => TYPE_COMMAND,
        1 => NO_REPLY,
        2 => TYPE_REPLY,
        3 => rng.range(2, 15) as u32,
        4 => ERROR | rng.pick(&[0, NO_REPLY]),
        _ => rng.u32(),
    }
}

/// The body and descriptors of one command.
fn body(rng: &mut Rng, command: u16, st: &mut State) -> (Vec<u8>, Vec<Fd>) {
    let mut fds = Vec::new();
    let body = match command {
        VERSION => {
            let major = match rng.below(40) {
                0 => 1,
                1 => rng.u16(),
                _ => 0,
            };
            Body::default()
                .u16(major)
                .u16({
                    let any = rng.u16();
                    rng.pick(&[0, 0, 1, any])
                })
                .raw(&caps_json(rng))
                .0
        }
        DMA_MAP => {
            let (iova, size) = dma_range(rng, st);
            st.maps.push((iova, size));
            let fl = match rng.below(8) {
                0..=4 => MAP_READ | MAP_WRITE,
                5 => MAP_READ,
                6 => rng.pick(&[0, MAP_WRITE, 4, 8]),
                _ => rng.u32(),
            };
            let offset = match rng.below(6) {
                0..=3 => 0,
                4 => rng.pick(&[4096, 0x123, 1 << 20]),
                _ => rng.next_u64(),
            };
            match rng.weighted(&[6, 2, 1]) {
                0 => fds.push(map_fd(rng, size.saturating_add(offset))),
                1 => {}
                _ => {
                    fds.push(map_fd(rng, size));
                    fds.push(map_fd(rng, size));
                }
            }
            Body::default()
                .u32(argsz(rng, 32))
                .u32(fl)
                .u64(offset)
                .u64(iova)
                .u64(size)
                .0
        }
        DMA_UNMAP => {
            let (fl, iova, size) = match rng.below(8) {
                0..=4 => {
                    let (i, s) = dma_range(rng, st);
                    (0, i, s)
                }
                5 => (UNMAP_ALL, 0, 0),
                6 => (UNMAP_ALL, rng.below(2) << 20, rng.below(2) * 4096),
                _ => {
                    let any = rng.u32();
                    (rng.pick(&[1, 3, 4, any]), 0, 4096)
                }
            };
            Body::default()
                .u32(argsz(rng, 24))
                .u32(fl)
                .u64(iova)
                .u64(size)
                .0
        }
        DEVICE_GET_INFO => Body::default().u32(argsz(rng, 16)).u32(0).u32(0).u32(0).0,
        GET_REGION_INFO => {
            Body::default()
                .u32({
                    let want = rng.pick(&[32, 32, 64, 80]);
                    argsz(rng, want)
                })
                .u32(0)
                .u32(region(rng))
                .u32(0)
                .u64(0)
                .u64(0)
                .0
        }
        GET_IRQ_INFO => {
            Body::default()
                .u32(argsz(rng, 16))
                .u32(0)
                .u32(if rng.percent(85) {
                    rng.below(u64::from(NUM_IRQS)) as u32
                } else {
                    rng.u32()
                })
                .u32(0)
                .0
        }
        SET_IRQS => {
            let data = match rng.below(10) {
                0..=5 => IRQ_DATA_EVENTFD,
                6 | 7 => IRQ_DATA_NONE,
                8 => IRQ_DATA_BOOL,
                _ => rng.below(8) as u32,
            };
            let action = match rng.below(10) {
                0..=6 => IRQ_ACTION_TRIGGER,
                7 => IRQ_ACTION_MASK,
                8 => IRQ_ACTION_UNMASK,
                _ => (rng.below(8) as u32) << 3,
            };
            let extra = if rng.one_in(20) { rng.u32() & !0x3f } else { 0 };
            let index = if rng.percent(90) {
                rng.below(u64::from(NUM_IRQS)) as u32
            } else {
                rng.u32()
            };
            let vectors = IRQ_COUNTS.get(index as usize).copied().unwrap_or(1);
            let start = match rng.below(6) {
                0..=3 => 0,
                4 => rng.below(u64::from(vectors) + 1) as u32,
                _ => rng.u32(),
            };
            let count = match rng.below(8) {
                0..=3 => vectors.saturating_sub(start),
                4 => 0,
                5 => 1,
                6 => rng.below(70) as u32,
                _ => rng.pick(&[u32::MAX, u32::MAX - start]),
            };
            let mut b = Body::default()
                .u32(argsz(rng, 20))
                .u32(data | action | extra)
                .u32(index)
                .u32(start)
                .u32(count);
            if data == IRQ_DATA_BOOL {
                let n = match rng.below(4) {
                    0..=2 => count.min(100) as usize,
                    _ => rng.below(8) as usize,
                };
                b = b.raw(&(0..n).map(|_| rng.below(2) as u8).collect::<Vec<_>>());
            }
            if data == IRQ_DATA_EVENTFD && rng.percent(80) {
                let n = match rng.below(8) {
                    0..=5 => count.min(20) as usize,
                    6 => rng.below(4) as usize,
                    _ => rng.range(15, 20) as usize,
                };
                fds.extend((0..n).map(|_| irq_fd(rng)));
            }
            b.0
        }
        REGION_READ | REGION_WRITE => {
            let r = region(rng);
            let count = access_count(rng);
            let offset = region_offset(rng, r, u64::from(count));
            let mut b = Body::default().u64(offset).u32(r).u32(count);
            if command == REGION_WRITE {
                let n = if count as usize > MAX_DATA {
                    // The count alone is refused; a body that large would be a framing error.
                    rng.below(64) as usize
                } else {
                    match rng.below(10) {
                        0..=7 => count as usize,
                        8 => rng.below(u64::from(count) + 1) as usize,
                        _ => count as usize + rng.range(1, 40) as usize,
                    }
                };
                b = b.raw(&rng.bytes(n));
            }
            b.0
        }
        REGION_WRITE_MULTI => {
            let n = match rng.below(10) {
                0..=6 => rng.range(1, 8),
                7 => 0,
                8 => rng.pick(&[WRITE_MULTI_MAX, WRITE_MULTI_MAX + 1]),
                _ => rng.next_u64(),
            };
            let entries = match rng.below(8) {
                0..=6 => n.min(WRITE_MULTI_MAX + 1),
                _ => rng.below(4),
            };
            let mut b = Body::default().u64(n);
            for _ in 0..entries {
                let r = if rng.percent(80) {
                    rng.pick(&[0, 0, CONFIG_REGION, 2])
                } else {
                    region(rng)
                };
                let count = if rng.percent(85) {
                    rng.pick(&[1, 2, 4, 8]) as u32
                } else {
                    rng.pick(&[0, 3, 9, 16, (MAX_DATA + 1) as u32, u32::MAX])
                };
                let offset = region_offset(rng, r, u64::from(count.min(8)));
                b = b
                    .u64(offset)
                    .u32(r)
                    .u32(count)
                    .raw(&rng.bytes(WRITE_MULTI_DATA));
            }
            b.0
        }
        DMA_READ | DMA_WRITE => {
            Body::default()
                .u64(rng.below(16) << 20)
                .u64(rng.pick(&[0, 8, 4096]))
                .raw(&{
                    let n = rng.below(16) as usize;
                    rng.bytes(n)
                })
                .0
        }
        DEVICE_RESET => {
            let n = rng.pick(&[0, 0, 0, 4, 100]) as usize;
            rng.bytes(n)
        }
        _ => {
            let n = rng.below(120) as usize;
            rng.bytes(n)
        }
    };
    // Once in a while, descriptors on any command.
    if rng.one_in(25) {
        fds.extend((0..rng.range(1, 3)).map(|_| any_fd(rng)));
    }
    (body, fds)
}

fn command(rng: &mut Rng, st: &State) -> u16 {
    if !st.versioned && rng.percent(92) {
        return VERSION;
    }
    const W: &[(u32, u16)] = &[
        (2, VERSION),
        (10, DMA_MAP),
        (6, DMA_UNMAP),
        (3, DEVICE_GET_INFO),
        (6, GET_REGION_INFO),
        (4, GET_IRQ_INFO),
        (10, SET_IRQS),
        (12, REGION_READ),
        (12, REGION_WRITE),
        (6, REGION_WRITE_MULTI),
        (1, DMA_READ),
        (1, DMA_WRITE),
        (2, DEVICE_RESET),
        (1, DEVICE_FEATURE),
        (1, GET_REGION_IO_FDS),
        (1, DIRTY_PAGES),
        (1, MIG_DATA_READ),
        (1, MIG_DATA_WRITE),
        (1, 0),
        (1, 19),
        (1, 0xffff),
    ];
    let weights: Vec<u32> = W.iter().map(|w| w.0).collect();
    W[rng.weighted(&weights)].1
}

/// One message, possibly mutated.
fn message(rng: &mut Rng, st: &mut State) -> Msg {
    if st.chaos && rng.one_in(30) {
        // Garbage: random bytes, or a header alone.
        let bytes = if rng.percent(50) {
            {
                let n = rng.range(1, 200) as usize;
                rng.bytes(n)
            }
        } else {
            header(
                rng.u16(),
                rng.u16(),
                rng.pick(&[0, 15, 16, 17, (MAX_MESSAGE + 1) as u32, u32::MAX]),
                rng.u32(),
                rng.u32(),
            )
            .to_vec()
        };
        return Msg {
            bytes,
            fds: Vec::new(),
        };
    }
    let cmd = command(rng, st);
    let fl = flags(rng);
    let (mut body, fds) = body(rng, cmd, st);
    if cmd == VERSION && fl == TYPE_COMMAND {
        st.versioned = true;
    }
    match rng.below(20) {
        0 => body.truncate(rng.below(body.len() as u64 + 1) as usize),
        1 => body.extend({
            let n = rng.range(1, 300) as usize;
            rng.bytes(n)
        }),
        2 if !body.is_empty() => {
            for _ in 0..rng.range(1, 4) {
                let i = rng.below(body.len() as u64) as usize;
                body[i] = rng.u8();
            }
        }
        _ => {}
    }
    let exact = (HEADER + body.len()) as u32;
    let size = match rng.below(if st.chaos { 40 } else { 1000 }) {
        0 => exact.saturating_sub(rng.range(1, 16) as u32),
        1 => exact + rng.range(1, 16) as u32,
        2 => rng.pick(&[0, 1, 15]),
        3 => rng.pick(&[(MAX_MESSAGE + 1) as u32, u32::MAX]),
        _ => exact,
    };
    let mut bytes = header(rng.u16(), cmd, size, fl, 0).to_vec();
    bytes.extend_from_slice(&body);
    let mut at_fds = Vec::new();
    if !fds.is_empty() {
        // Mostly on the first byte (as QEMU sends them); sometimes split and inside.
        if rng.percent(75) {
            at_fds.push((0, fds));
        } else {
            let mut rest = fds;
            while !rest.is_empty() {
                let n = rng.range(1, rest.len() as u64) as usize;
                let group: Vec<Fd> = rest.drain(..n).collect();
                let at = rng.below(bytes.len() as u64) as usize;
                match at_fds.iter_mut().find(|(o, _)| *o == at) {
                    Some((_, g)) => g.extend(group),
                    None => at_fds.push((at, group)),
                }
            }
        }
    }
    Msg { bytes, fds: at_fds }
}

/// A whole session.
pub fn case(rng: &mut Rng) -> Case {
    let mut st = State {
        chaos: rng.percent(25),
        ..State::default()
    };
    let n = match rng.below(10) {
        0 => 1,
        1..=6 => rng.range(2, 12),
        7 | 8 => rng.range(12, 40),
        _ => rng.range(40, 120),
    };
    let mut stream = Vec::new();
    let mut attach: Vec<(usize, Vec<Fd>)> = Vec::new();
    let mut bounds = Vec::new();
    for _ in 0..n {
        let m = message(rng, &mut st);
        let base = stream.len();
        bounds.push(base);
        attach.extend(m.fds.into_iter().map(|(o, f)| (base + o, f)));
        stream.extend_from_slice(&m.bytes);
    }
    // The client leaves in the middle of a message now and then.
    if rng.one_in(15) && !stream.is_empty() {
        let keep = rng.below(stream.len() as u64) as usize;
        stream.truncate(keep.max(1));
        attach.retain(|(o, _)| *o < stream.len());
    }
    // Where the writes start: every attachment point, plus the cutting pattern's.
    let mut cuts: Vec<usize> = attach.iter().map(|(o, _)| *o).collect();
    match rng.below(10) {
        0..=4 => cuts.extend(bounds.iter().copied()),
        5 | 6 => {}
        7 | 8 => {
            // At most a few thousand writes, however long the stream.
            let step = (stream.len() / 2000).max(1) as u64;
            let mut at = 0;
            while at < stream.len() {
                cuts.push(at);
                at += rng.range(step, 64 * step) as usize;
            }
        }
        _ => {
            // Byte by byte over a window.
            let from = rng.below(stream.len() as u64) as usize;
            let to = (from + rng.range(16, 600) as usize).min(stream.len());
            cuts.extend(bounds.iter().copied());
            cuts.extend(from..to);
        }
    }
    cuts.push(0);
    cuts.retain(|&c| c < stream.len());
    cuts.sort_unstable();
    cuts.dedup();
    let mut writes = Vec::with_capacity(cuts.len());
    for (i, &c) in cuts.iter().enumerate() {
        let end = cuts.get(i + 1).copied().unwrap_or(stream.len());
        let fds = attach
            .iter()
            .filter(|(o, _)| *o == c)
            .flat_map(|(_, f)| f.iter().copied())
            .collect();
        writes.push(Write {
            bytes: stream[c..end].to_vec(),
            fds,
        });
    }
    Case { writes }
}
