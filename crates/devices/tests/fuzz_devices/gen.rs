//! The generator of device cases. Most cases are *clean*: every buffer the device may write is
//! fresh and shares no byte with anything else (rings, tables, other buffers), descriptors are
//! all written before any head is published, so the oracle can predict exactly what the device
//! must do. Chains follow the device's request grammar with random values (blk request types,
//! sectors, lengths and discard segments; net headers, frames and control commands; console
//! and rng buffers), cut into descriptors at random points, sometimes with zero-length
//! descriptors, readable buffers aliased many times over (claiming megabytes), through indirect
//! tables with or without a direct prefix; a share of cases breaks one chain in a way the
//! engine must refuse (loops, next or head out of range, readable after writable, buffers and
//! tables outside host memory, nested indirect tables, INDIRECT with NEXT, bad table sizes).
//! The other cases are *wild*: buffers over the rings and over each other, descriptors
//! rewritten after publication, random table entries, available-index jumps, notifications of
//! queues that do not exist, features without their dependencies.

use super::case::{Case, Op};
use super::layout::{
    layout, queues, Kind, Layout, QueueLayout, Role, RAM_BASE, RAM_SIZE, SCRATCH_LEN,
};
use epf_fuzz::Rng;
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_net::*;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
const RING_INDIRECT: u64 = 1 << 28;
const RING_EVENT_IDX: u64 = 1 << 29;
pub const VERSION_1: u64 = 1 << 32;

/// What the generator knows about the device under fuzz.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub kind: Kind,
    /// Features the device offers.
    pub offered: u64,
    /// blk: image size in bytes.
    pub capacity: u64,
    /// net: the device's MAC address.
    pub mac: [u8; 6],
}

/// A piece of a chain before it is cut into descriptors.
enum Part {
    /// Device-readable bytes.
    R(Vec<u8>),
    /// Device-readable: `copies` descriptors all pointing at one buffer holding `chunk`.
    Aliased { chunk: Vec<u8>, copies: u32 },
    /// Device-writable bytes.
    W(u32),
}

/// One descriptor of a chain being built: (address, length, writable).
type Seg = (u64, u32, bool);

struct Builder<'a> {
    rng: &'a mut Rng,
    lay: &'a Layout,
    wild: bool,
    ops: Vec<Op>,
    scratch: u64,
    /// Free descriptor indices per queue (in `lay.queues` order).
    free: Vec<Vec<u16>>,
    avails: Vec<Op>,
    indirect: bool,
    /// Every buffer handed out, for wild aliasing.
    seen: Vec<(u64, u32)>,
    poison: u8,
}

impl Builder<'_> {
    /// Fresh scratch memory (clean), `None` when the scratch area is used up.
    fn fresh(&mut self, len: u64, align: u64) -> Option<u64> {
        let a = self.scratch.next_multiple_of(align.max(1));
        let end = self.lay.scratch + SCRATCH_LEN;
        if a.checked_add(len)? > end {
            return None;
        }
        // Now and then a gap, so buffers do not always touch.
        self.scratch = a
            + len
            + if self.rng.one_in(3) {
                self.rng.below(64)
            } else {
                0
            };
        Some(a)
    }

    /// Somewhere a hostile host would point a buffer.
    fn wild_addr(&mut self, len: u32) -> u64 {
        let end = RAM_BASE + RAM_SIZE;
        match self.rng.below(8) {
            0 if !self.seen.is_empty() => {
                let (a, l) = self.seen[self.rng.below(self.seen.len() as u64) as usize];
                a.wrapping_add(self.rng.below(u64::from(l).max(1)))
            }
            1 => {
                let q = self.lay.queues[self.rng.below(self.lay.queues.len() as u64) as usize];
                let s = q.structures();
                let (a, l) = s[self.rng.below(3) as usize];
                a + self.rng.below(l)
            }
            2 => end - u64::from(len) / 2 - self.rng.below(16),
            3 => RAM_BASE - self.rng.range(1, 4096),
            4 => self.rng.pick(&[0, u64::MAX - 7, 1 << 63, end]),
            _ => RAM_BASE + self.rng.below(4 << 20),
        }
    }

    /// An address for a buffer of `len` bytes.
    fn addr(&mut self, len: u32) -> u64 {
        if self.wild && self.rng.one_in(3) {
            return self.wild_addr(len);
        }
        let align = self.rng.pick(&[1, 2, 8, 64, 512]);
        match self.fresh(u64::from(len), align) {
            Some(a) => a,
            None => self.wild_addr(len),
        }
    }

    fn ram(&mut self, addr: u64, bytes: Vec<u8>) {
        let in_ram = addr >= RAM_BASE
            && addr
                .checked_add(bytes.len() as u64)
                .is_some_and(|e| e <= RAM_BASE + RAM_SIZE);
        if in_ram && !bytes.is_empty() {
            self.ops.push(Op::Ram { addr, bytes });
        }
    }

    /// Cut points of `len` bytes into 1..=4 pieces (some possibly empty).
    fn cuts(&mut self, len: u32) -> Vec<u32> {
        let n = match self.rng.below(10) {
            0..=5 => 1,
            6..=8 => self.rng.range(2, 3),
            _ => self.rng.range(4, 8),
        };
        let mut c: Vec<u32> = (1..n)
            .map(|_| self.rng.below(u64::from(len) + 1) as u32)
            .collect();
        c.push(0);
        c.push(len);
        c.sort_unstable();
        c
    }

    /// The descriptors of `parts`.
    fn segments(&mut self, parts: Vec<Part>) -> Vec<Seg> {
        let mut segs = Vec::new();
        for p in parts {
            match p {
                Part::R(bytes) => {
                    let c = self.cuts(bytes.len() as u32);
                    for w in c.windows(2) {
                        let piece = bytes[w[0] as usize..w[1] as usize].to_vec();
                        let len = piece.len() as u32;
                        let a = self.addr(len);
                        self.ram(a, piece);
                        self.seen.push((a, len));
                        segs.push((a, len, false));
                    }
                }
                Part::Aliased { chunk, copies } => {
                    let len = chunk.len() as u32;
                    let a = self.addr(len);
                    self.ram(a, chunk);
                    self.seen.push((a, len));
                    segs.extend((0..copies).map(|_| (a, len, false)));
                }
                Part::W(len) => {
                    let c = self.cuts(len);
                    for w in c.windows(2) {
                        let len = w[1] - w[0];
                        let a = self.addr(len);
                        if len <= 256 << 10 {
                            self.ram(a, vec![self.poison; len as usize]);
                        }
                        self.seen.push((a, len));
                        segs.push((a, len, true));
                    }
                }
            }
        }
        if self.rng.one_in(15) && !segs.is_empty() {
            // A zero-length descriptor somewhere (after a writable one it counts as writable).
            let i = self.rng.below(segs.len() as u64 + 1) as usize;
            let w = i > 0 && segs[i - 1].2;
            segs.insert(i, (self.rng.next_u64(), 0, w || self.rng.one_in(4)));
        }
        segs
    }

    /// Writes `segs` as a chain of queue `qi` (direct, indirect, or a direct prefix then an
    /// indirect table); returns its head, or `None` without room.
    fn place(&mut self, qi: usize, mut segs: Vec<Seg>, defect: Option<u64>) -> Option<u16> {
        let q: QueueLayout = self.lay.queues[qi];
        if segs.is_empty() {
            segs.push((self.lay.scratch, 0, false));
        }
        let use_indirect = (self.indirect || self.wild) && segs.len() > 1 && self.rng.percent(35)
            || segs.len() > self.free[qi].len() && self.indirect;
        let prefix = if use_indirect {
            // At least one entry in the table.
            let most = (segs.len() - 1).min(self.free[qi].len().saturating_sub(1));
            self.rng.below(most as u64 + 1) as usize
        } else {
            segs.len()
        };
        let direct = prefix + usize::from(use_indirect);
        if direct > self.free[qi].len() || direct == 0 {
            return None;
        }
        let idx: Vec<u16> = self.free[qi].drain(..direct).collect();
        let mut descs: Vec<(u16, u64, u32, u16, u16)> = Vec::new();
        for k in 0..prefix {
            let (a, l, w) = segs[k];
            let next = if k + 1 < direct { idx[k + 1] } else { 0 };
            let mut fl = if w { F_WRITE } else { 0 };
            if k + 1 < direct {
                fl |= F_NEXT;
            }
            descs.push((idx[k], a, l, fl, next));
        }
        let mut table: Option<(u64, Vec<[u8; 16]>)> = None;
        if use_indirect {
            let rest = &segs[prefix..];
            let n = rest.len();
            let ta = self
                .fresh(16 * n as u64, 16)
                .unwrap_or(RAM_BASE + RAM_SIZE / 2);
            // Entry 0 starts the walk; the others may sit anywhere in the table.
            let mut order: Vec<usize> = (1..n).collect();
            for i in (1..order.len()).rev() {
                let j = self.rng.below(i as u64 + 1) as usize;
                order.swap(i, j);
            }
            order.insert(0, 0);
            let mut entries = vec![[0u8; 16]; n];
            for (k, &(a, l, w)) in rest.iter().enumerate() {
                let slot = order[k];
                let next = if k + 1 < n { order[k + 1] as u16 } else { 0 };
                let mut fl = if w { F_WRITE } else { 0 };
                if k + 1 < n {
                    fl |= F_NEXT;
                }
                entries[slot] = entry(a, l, fl, next);
            }
            let fl = F_INDIRECT | if self.rng.one_in(8) { F_WRITE } else { 0 };
            descs.push((idx[prefix], ta, 16 * n as u32, fl, 0));
            table = Some((ta, entries));
        }
        if let Some(d) = defect {
            self.break_chain(d, &q, &mut descs, &mut table);
        }
        for (index, addr, len, flags, next) in descs {
            self.ops.push(Op::Desc {
                q: q.index,
                index,
                addr,
                len,
                flags,
                next,
            });
        }
        if let Some((ta, entries)) = table {
            let bytes: Vec<u8> = entries.concat();
            self.ram(ta, bytes);
        }
        Some(idx[0])
    }

    /// Makes the chain invalid in one of the ways the engine must refuse.
    fn break_chain(
        &mut self,
        defect: u64,
        q: &QueueLayout,
        descs: &mut [(u16, u64, u32, u16, u16)],
        table: &mut Option<(u64, Vec<[u8; 16]>)>,
    ) {
        let head = descs[0].0;
        let last = descs.len() - 1;
        let end = RAM_BASE + RAM_SIZE;
        match (defect, table.as_mut()) {
            (0, _) => {
                // A loop back to the head.
                descs[last].3 = (descs[last].3 & !F_INDIRECT) | F_NEXT;
                descs[last].4 = head;
            }
            (1, _) => {
                descs[last].3 = (descs[last].3 & !F_INDIRECT) | F_NEXT;
                descs[last].4 = q.size + self.rng.below(4) as u16;
            }
            (2, _) => {
                let k = self.rng.below(descs.len() as u64) as usize;
                descs[k].1 = self.rng.pick(&[end - 8, RAM_BASE - 4096, u64::MAX - 3, 0]);
                descs[k].2 = descs[k].2.max(16);
                descs[k].3 &= !F_INDIRECT;
            }
            (3, _) => {
                // Writable, then readable.
                descs[0].3 |= F_WRITE | F_NEXT;
                descs[0].3 &= !F_INDIRECT;
                if last == 0 {
                    descs[0].4 = head;
                    descs[0].3 &= !F_NEXT;
                    descs[0].3 |= F_WRITE;
                    // A single writable descriptor is valid: make it a loop instead.
                    descs[0].3 |= F_NEXT;
                } else {
                    descs[last].3 &= !F_WRITE;
                }
            }
            (4, Some((_, entries))) if !entries.is_empty() => {
                let k = self.rng.below(entries.len() as u64) as usize;
                entries[k][12] |= F_INDIRECT as u8;
            }
            (5, Some(_)) => {
                descs[last].3 |= F_NEXT;
                descs[last].4 = head;
            }
            (6, Some(_)) => {
                descs[last].2 = self.rng.pick(&[0, 8, descs[last].2.wrapping_add(8)]);
            }
            (7, Some(_)) => {
                descs[last].1 = self.rng.pick(&[end - 16, RAM_BASE - 16, u64::MAX - 15]);
            }
            (_, Some((_, entries))) if !entries.is_empty() => {
                let k = self.rng.below(entries.len() as u64) as usize;
                entries[k][12] |= F_NEXT as u8;
                entries[k][14] = entries.len() as u8;
                entries[k][15] = 0;
            }
            _ => {
                descs[last].3 |= F_NEXT;
                descs[last].4 = q.size;
            }
        }
    }
}

fn entry(addr: u64, len: u32, flags: u16, next: u16) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[0..8].copy_from_slice(&addr.to_le_bytes());
    e[8..12].copy_from_slice(&len.to_le_bytes());
    e[12..14].copy_from_slice(&flags.to_le_bytes());
    e[14..16].copy_from_slice(&next.to_le_bytes());
    e
}

fn bit(b: u32) -> u64 {
    1 << b
}

/// Features a driver might accept: a random subset of the offered ones that respects the
/// dependencies between them (a wild case ignores them).
fn features(rng: &mut Rng, ctx: &Ctx, wild: bool) -> u64 {
    let mut f = ctx.offered & rng.next_u64();
    if rng.percent(40) {
        f |= ctx.offered & !(RING_INDIRECT | RING_EVENT_IDX);
    }
    if wild {
        return f | VERSION_1;
    }
    if ctx.kind == Kind::Net {
        let has = |f: u64, b: u32| f & bit(b) != 0;
        if !has(f, VIRTIO_NET_F_CTRL_VQ) {
            f &= !(bit(VIRTIO_NET_F_CTRL_RX)
                | bit(VIRTIO_NET_F_CTRL_MAC_ADDR)
                | bit(VIRTIO_NET_F_MQ)
                | bit(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS));
        }
        if !has(f, VIRTIO_NET_F_GUEST_CSUM) {
            f &= !(bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6));
        }
        if !has(f, VIRTIO_NET_F_GUEST_TSO4) && !has(f, VIRTIO_NET_F_GUEST_TSO6) {
            f &= !bit(VIRTIO_NET_F_GUEST_ECN);
        }
        if !has(f, VIRTIO_NET_F_CSUM) {
            f &= !(bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6));
        }
        if !has(f, VIRTIO_NET_F_HOST_TSO4) && !has(f, VIRTIO_NET_F_HOST_TSO6) {
            f &= !bit(VIRTIO_NET_F_HOST_ECN);
        }
    }
    f | VERSION_1
}

// ---- Request grammars ---------------------------------------------------------------------------

fn blk_parts(rng: &mut Rng, ctx: &Ctx) -> Vec<Part> {
    let sectors = ctx.capacity / 512;
    let rtype = match rng.below(20) {
        0..=4 => VIRTIO_BLK_T_IN,
        5..=9 => VIRTIO_BLK_T_OUT,
        10 | 11 => VIRTIO_BLK_T_FLUSH,
        12 | 13 => VIRTIO_BLK_T_GET_ID,
        14 | 15 => VIRTIO_BLK_T_DISCARD,
        16 | 17 => VIRTIO_BLK_T_WRITE_ZEROES,
        _ => rng.pick(&[2, 3, 5, 7, 9, 10, 12, 14, 15, 0xffff_ffff]),
    };
    let n = match rng.below(10) {
        0 => 0,
        1..=5 => rng.range(1, 8),
        6 | 7 => rng.range(9, 64),
        8 => rng.pick(&[255, 256, 257]),
        _ => rng.pick(&[1024, 2048]),
    };
    let sector = match rng.below(8) {
        0..=4 => rng.below(sectors.saturating_sub(n).max(1)),
        5 => sectors.saturating_sub(n) + rng.range(0, 2),
        6 => rng.pick(&[
            sectors,
            sectors + 1,
            u64::MAX / 512,
            u64::MAX / 512 + 1,
            u64::MAX,
        ]),
        _ => rng.next_u64(),
    };
    let mut hdr = Vec::with_capacity(16);
    hdr.extend_from_slice(&rtype.to_le_bytes());
    hdr.extend_from_slice(&(if rng.one_in(10) { rng.u32() } else { 0 }).to_le_bytes());
    hdr.extend_from_slice(&sector.to_le_bytes());
    if rng.one_in(25) {
        hdr.truncate(rng.below(16) as usize);
    }
    let mut parts = vec![Part::R(hdr)];
    let len = |rng: &mut Rng| -> u32 {
        let l = n as u32 * 512;
        if rng.one_in(12) {
            l + rng.range(1, 511) as u32
        } else {
            l
        }
    };
    match rtype {
        VIRTIO_BLK_T_IN => parts.push(Part::W(len(rng))),
        VIRTIO_BLK_T_OUT => {
            let l = len(rng);
            if rng.one_in(5) && l >= 512 && l % 512 == 0 {
                parts.push(Part::Aliased {
                    chunk: rng.bytes(512),
                    copies: l / 512,
                });
            } else {
                parts.push(Part::R(rng.bytes(l as usize)));
            }
        }
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
            let k = match rng.below(10) {
                0 => 0,
                1..=7 => rng.range(1, 4),
                _ => rng.pick(&[31, 32, 33]),
            };
            let mut segs = Vec::new();
            for _ in 0..k {
                let num: u32 = match rng.below(6) {
                    0..=3 => rng.range(0, 64) as u32,
                    4 => rng.pick(&[1 << 22, (1 << 22) + 1]),
                    _ => rng.u32(),
                };
                let start = match rng.below(4) {
                    0..=2 => rng.below(sectors),
                    _ => rng.next_u64(),
                };
                let flags: u32 = match rng.below(8) {
                    0..=4 => 0,
                    5 | 6 => 1,
                    _ => rng.u32(),
                };
                segs.extend_from_slice(&start.to_le_bytes());
                segs.extend_from_slice(&num.to_le_bytes());
                segs.extend_from_slice(&flags.to_le_bytes());
            }
            if rng.one_in(10) {
                segs.truncate(rng.below(segs.len() as u64 + 1) as usize);
            }
            parts.push(Part::R(segs));
        }
        VIRTIO_BLK_T_GET_ID => parts.push(Part::W(rng.pick(&[0, 1, 19, 20, 21, 512]))),
        _ => {
            if rng.one_in(3) {
                let l = rng.below(1024) as usize;
                parts.push(if rng.percent(50) {
                    Part::R(rng.bytes(l))
                } else {
                    Part::W(l as u32)
                });
            }
        }
    }
    // The status byte: usually alone, sometimes more room, now and then none at all.
    match rng.below(30) {
        0 => {}
        1 => parts.push(Part::W(rng.range(2, 16) as u32)),
        _ => parts.push(Part::W(1)),
    }
    parts
}

fn frame(rng: &mut Rng, ctx: &Ctx, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len.max(14));
    let dst = match rng.below(5) {
        0 | 1 => ctx.mac,
        2 => [0xff; 6],
        3 => [0x33, 0x33, 0, 0, 0, rng.u8()],
        _ => {
            let mut m = [0u8; 6];
            rng.fill(&mut m);
            m
        }
    };
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[0x02, 0x99, 0, 0, 0, 1]);
    let proto: u16 = rng.pick_or(&[0x0800, 0x86dd, 0x0806, 0x88b6, 0x8100], Rng::u16);
    f.extend_from_slice(&proto.to_be_bytes());
    while f.len() < len {
        f.push(rng.u8());
    }
    f.truncate(len);
    f
}

fn net_tx_parts(rng: &mut Rng, ctx: &Ctx) -> Vec<Part> {
    let mut h = [0u8; 12];
    h[0] = match rng.below(6) {
        0..=3 => 0,
        4 => 1,
        _ => rng.u8(),
    };
    h[1] = match rng.below(8) {
        0..=4 => 0,
        5 => rng.pick(&[1, 3, 4, 5]),
        6 => 0x81,
        _ => rng.u8(),
    };
    let hdr_len: u16 = rng.pick_or(&[0, 14, 34, 54, 74], Rng::u16);
    let gso_size: u16 = rng.pick_or(&[0, 1448, 536, 1], Rng::u16);
    let csum_start: u16 = rng.pick_or(&[0, 14, 34, 1500], Rng::u16);
    let csum_offset: u16 = rng.pick_or(&[0, 6, 16], Rng::u16);
    h[2..4].copy_from_slice(&hdr_len.to_le_bytes());
    h[4..6].copy_from_slice(&gso_size.to_le_bytes());
    h[6..8].copy_from_slice(&csum_start.to_le_bytes());
    h[8..10].copy_from_slice(&csum_offset.to_le_bytes());
    h[10..12].copy_from_slice(&rng.pick_or(&[0u16, 1], Rng::u16).to_le_bytes());
    let flen = match rng.below(10) {
        0 => rng.below(14) as usize,
        1..=6 => rng.range(14, 1514) as usize,
        7 => rng.pick(&[60, 1514, 1518, 9014]),
        8 => rng.range(1515, 16000) as usize,
        _ => rng.pick(&[65550, 66600, 70000]),
    };
    let mut pkt = h.to_vec();
    if rng.one_in(20) {
        pkt.truncate(rng.below(12) as usize);
    } else {
        pkt.extend(frame(rng, ctx, flen));
    }
    let mut parts = vec![Part::R(pkt)];
    if rng.one_in(20) {
        parts.push(Part::W(rng.below(64) as u32));
    }
    parts
}

fn mac_table(rng: &mut Rng) -> Vec<u8> {
    let n: u32 = match rng.below(8) {
        0 => 0,
        1..=5 => rng.range(1, 8) as u32,
        6 => rng.pick(&[63, 64, 65, 200]),
        _ => rng.u32(),
    };
    let entries = match rng.below(8) {
        0..=5 => n.min(300),
        _ => (n.min(300)).saturating_sub(1) + rng.below(3) as u32,
    };
    let mut v = n.to_le_bytes().to_vec();
    v.extend(rng.bytes(6 * entries as usize));
    v
}

fn net_ctrl_parts(rng: &mut Rng) -> Vec<Part> {
    let mut cmd = match rng.below(12) {
        0 | 1 => vec![
            VIRTIO_NET_CTRL_RX as u8,
            rng.pick(&[0, 1, 2, 5, 200]),
            rng.pick(&[0, 1, 2, 255]),
        ],
        2..=4 => {
            let mut c = vec![
                VIRTIO_NET_CTRL_MAC as u8,
                VIRTIO_NET_CTRL_MAC_TABLE_SET as u8,
            ];
            c.extend(mac_table(rng));
            c.extend(mac_table(rng));
            c
        }
        5 => {
            let mut c = vec![
                VIRTIO_NET_CTRL_MAC as u8,
                VIRTIO_NET_CTRL_MAC_ADDR_SET as u8,
            ];
            c.extend(rng.bytes(6));
            c
        }
        6 | 7 => {
            let mut c = vec![VIRTIO_NET_CTRL_MQ as u8, rng.pick(&[0, 0, 0, 1, 2])];
            c.extend(rng.pick(&[0u16, 1, 2, 3, 0xffff]).to_le_bytes());
            c
        }
        8 | 9 => {
            let mut c = vec![VIRTIO_NET_CTRL_GUEST_OFFLOADS as u8, rng.pick(&[0, 0, 1])];
            let v: u64 = match rng.below(4) {
                0 => 0,
                1 => 0b11_1000_0010,
                2 => rng.next_u64() & 0x3ff,
                _ => rng.next_u64(),
            };
            c.extend(v.to_le_bytes());
            c
        }
        10 => rng.bytes_below(4),
        _ => {
            let mut c = vec![rng.pick(&[2, 3, 6, 0x7f, 0xff]), rng.u8()];
            c.extend(rng.bytes_below(16));
            c
        }
    };
    if rng.one_in(12) && !cmd.is_empty() {
        // One byte too many or too few.
        if rng.percent(50) {
            cmd.push(rng.u8());
        } else {
            cmd.pop();
        }
    }
    let mut parts = vec![Part::R(cmd)];
    match rng.below(12) {
        0 => {}
        1 => parts.push(Part::W(rng.range(2, 8) as u32)),
        _ => parts.push(Part::W(1)),
    }
    parts
}

fn parts(rng: &mut Rng, ctx: &Ctx, role: Role) -> Vec<Part> {
    let mut ps = match role {
        Role::RngReq => {
            let mut v = Vec::new();
            for _ in 0..rng.range(1, 3) {
                v.push(Part::W(rng.pick(&[
                    0, 1, 7, 64, 512, 4096, 16384, 65535, 65536, 65537, 200_000,
                ])));
            }
            v
        }
        Role::ConsoleTx => {
            if rng.one_in(6) {
                vec![Part::Aliased {
                    chunk: {
                        let n = rng.pick(&[1, 100, 4096]);
                        rng.bytes(n)
                    },
                    copies: rng.pick(&[2, 16, 64, 300]),
                }]
            } else {
                let l = rng.pick(&[0, 1, 13, 512, 4096, 16384, 65535, 65536, 65537, 100_000]);
                vec![Part::R(rng.bytes(l))]
            }
        }
        Role::ConsoleRx => vec![Part::W(rng.pick(&[0, 1, 16, 512, 4096, 70000]))],
        Role::BlkReq => blk_parts(rng, ctx),
        Role::NetTx => net_tx_parts(rng, ctx),
        Role::NetCtrl => net_ctrl_parts(rng),
        Role::NetRx => vec![Part::W(
            rng.pick(&[0, 11, 12, 13, 60, 1526, 1536, 4096, 65562]),
        )],
    };
    // Readable bytes on a queue the device only writes, or the other way round, now and then.
    if rng.one_in(20) {
        match role {
            Role::RngReq | Role::ConsoleRx | Role::NetRx => {
                ps.insert(0, Part::R(rng.bytes_below(32)))
            }
            _ => ps.push(Part::W(rng.below(32) as u32)),
        }
    }
    ps
}

/// Console input or a frame from the endpoint's network.
fn input(rng: &mut Rng, ctx: &Ctx) -> Option<Op> {
    match ctx.kind {
        // The console's input is a counter pattern the oracle checks; the executor makes
        // the bytes, the case only says how many.
        Kind::Console => Some(Op::Input(vec![0; rng.pick(&[1, 10, 100, 4096, 20000])])),
        Kind::Net => {
            let l = rng.pick_or(&[14, 60, 200, 1514], |r| r.range(14, 1514)) as usize;
            Some(Op::Input(frame(rng, ctx, l)))
        }
        _ => None,
    }
}

/// Disorder a hostile host adds on top of a case.
fn wild_ops(b: &mut Builder<'_>) {
    for _ in 0..b.rng.range(1, 6) {
        let q = b.lay.queues[b.rng.below(b.lay.queues.len() as u64) as usize];
        match b.rng.below(7) {
            0 => {
                let len = b.rng.pick(&[16, 32, 256, 1 << 20, u32::MAX]);
                let addr = b.wild_addr(len);
                let flags = b.rng.u16() & 0x7;
                let next = b.rng.below(u64::from(q.size) + 2) as u16;
                let index = b.rng.below(u64::from(q.size)) as u16;
                b.ops.push(Op::Desc {
                    q: q.index,
                    index,
                    addr,
                    len,
                    flags,
                    next,
                });
            }
            1 => {
                let a = b.wild_addr(64);
                let n = b.rng.below(64) as usize;
                let bytes = b.rng.bytes(n);
                b.ram(a, bytes);
            }
            2 => {
                let head = b.rng.below(u64::from(q.size) + 2) as u16;
                b.avails.push(Op::Avail { q: q.index, head });
            }
            3 => {
                let idx = b.rng.u16();
                b.avails.push(Op::AvailIdx { q: q.index, idx });
            }
            4 => b.avails.push(Op::Notify {
                q: b.rng.below(8) as u16,
            }),
            5 => {
                // Rewrite what was published (after the fact).
                let (a, l) = (q.desc, 16 * u64::from(q.size));
                let at = a + 16 * b.rng.below(l / 16);
                let bytes = b.rng.bytes(16);
                b.avails.push(Op::Ram { addr: at, bytes });
            }
            _ => {
                // A used or available ring overwritten.
                let s = q.structures();
                let (a, l) = s[1 + b.rng.below(2) as usize];
                let at = a + b.rng.below(l);
                let n = b.rng.range(1, 8) as usize;
                let bytes = b.rng.bytes(n);
                b.avails.push(Op::Ram { addr: at, bytes });
            }
        }
    }
}

/// A case for the device `ctx` describes.
pub fn case(rng: &mut Rng, ctx: &Ctx) -> Case {
    let wild = rng.percent(15);
    let features = features(rng, ctx, wild);
    let negotiated = features & ctx.offered | VERSION_1;
    let qsize = rng.pick(&[1, 2, 4, 8, 16, 16, 16, 32, 64, 256]);
    let lay = layout(ctx.kind, negotiated, qsize);
    let poison = rng.u8();
    let mut b = Builder {
        rng,
        lay: &lay,
        wild,
        ops: Vec::new(),
        scratch: lay.scratch,
        free: lay.queues.iter().map(|q| (0..q.size).collect()).collect(),
        avails: Vec::new(),
        indirect: negotiated & RING_INDIRECT != 0,
        seen: Vec::new(),
        poison,
    };
    for fl in b.free.iter_mut() {
        // Not always in order.
        if fl.len() > 1 {
            let k = fl.len();
            let s = (k as u64 / 2) as usize;
            fl.rotate_left(s);
        }
    }
    // Which queues get chains: the device's main one always, others often.
    let qs = queues(ctx.kind, negotiated);
    let broken = if b.rng.percent(12) {
        Some((b.rng.below(qs.len() as u64) as usize, b.rng.below(9)))
    } else {
        None
    };
    for (qi, &(_, role)) in qs.iter().enumerate() {
        let primary = matches!(
            role,
            Role::RngReq | Role::ConsoleTx | Role::BlkReq | Role::NetTx | Role::NetCtrl
        );
        if !primary && !b.rng.percent(50) {
            continue;
        }
        let n = match b.rng.below(10) {
            0 => 0,
            1..=6 => b.rng.range(1, 3),
            7 | 8 => b.rng.range(4, 8),
            _ => b.rng.range(9, 20),
        };
        let bad_at = match broken {
            Some((bq, d)) if bq == qi && n > 0 => Some((b.rng.below(n), d)),
            _ => None,
        };
        for k in 0..n {
            let ps = parts(b.rng, ctx, role);
            let segs = b.segments(ps);
            let defect = bad_at.filter(|&(at, _)| at == k).map(|(_, d)| d);
            let Some(head) = b.place(qi, segs, defect) else {
                break;
            };
            let q = lay.queues[qi].index;
            let head = if defect == Some(8) && b.rng.percent(50) {
                lay.queues[qi].size + b.rng.below(3) as u16
            } else {
                head
            };
            b.avails.push(Op::Avail { q, head });
            if b.rng.one_in(4) {
                b.avails.push(Op::Notify { q });
            }
        }
        if b.rng.percent(90) {
            b.avails.push(Op::Notify {
                q: lay.queues[qi].index,
            });
        }
    }
    if wild {
        wild_ops(&mut b);
    }
    // Input before, between or after the buffers.
    let mut inputs = Vec::new();
    if matches!(ctx.kind, Kind::Console | Kind::Net) {
        for _ in 0..b.rng.below(4) {
            if let Some(op) = input(b.rng, ctx) {
                inputs.push(op);
            }
        }
    }
    let mut ops = b.ops;
    let mut avails = b.avails;
    for op in inputs {
        let at = b.rng.below(avails.len() as u64 + 1) as usize;
        avails.insert(at, op);
    }
    if wild && b.rng.percent(50) {
        // Published before the descriptors are all there.
        let at = b.rng.below(ops.len() as u64 + 1) as usize;
        let tail = ops.split_off(at);
        ops.extend(avails.drain(..avails.len() / 2));
        ops.extend(tail);
    }
    ops.extend(avails);
    ops.push(Op::Settle);
    Case {
        features,
        qsize,
        ops,
    }
}
