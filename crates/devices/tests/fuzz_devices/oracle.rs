//! The oracle of the device fuzzer. From what the host posted (walked with the reference
//! walker at publication) it decides, per chain, what the device must do:
//!
//! * a chain the walker refuses, or a request the device cannot even fail (blk without a
//!   status byte), is *fatal*: once the device takes it, DEVICE_NEEDS_RESET; it is never
//!   completed;
//! * any other chain is completed with exactly the used length and the content the device's
//!   contract gives: rng fills min(room, 64 KiB) and nothing past it; console transmit hands the
//!   backend exactly the readable bytes, in ring order; console receive delivers the input
//!   stream in order; blk writes the status `blk_model` predicts, reads the image's bytes,
//!   copies the serial; net transmit completes with 0 and accounts every chain; the control
//!   queue acks as `net_model` predicts.
//!
//! Chains of queues the device serves at once (transmit, requests, control) must all complete
//! unless one of them is fatal, in which case DEVICE_NEEDS_RESET must come. Receive queues are
//! served when input arrives, so their chains may wait, and a fatal one there may or may not
//! be reached.
//!
//! All this holds for *clean* cases, where nothing the device writes can change what the
//! oracle walked (see `gen.rs`); the oracle itself decides whether a case is clean from the
//! ops and the walked chains, so corpus entries need no label. For other cases only the
//! universal rules apply (no panic, no access outside host memory, a reset that completes,
//! bounded resources).

use super::blk_model::{self, Answer, Effect};
use super::case::{Case, Op};
use super::layout::{consistent, Kind, Layout, Role};
use super::net_model;
use super::rigs::{BLK_CAPACITY, BLK_SERIAL, NET_PAIRS};
use super::walker::{Chain, Seg};
use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES};

/// Most bytes of chain content the oracle copies per case.
pub const CAPTURE_LIMIT: u64 = 8 << 20;

/// A chain made available, as the host published it.
#[derive(Debug, Clone)]
pub struct Posted {
    /// Position of the queue in the layout.
    pub qpos: usize,
    pub role: Role,
    pub head: u16,
    pub walk: Result<Chain, String>,
    /// The readable bytes, in chain order (if not too many).
    pub readable: Option<Vec<u8>>,
    /// The writable bytes before the device ran (if not too many).
    pub writable_pre: Option<Vec<u8>>,
}

/// What a chain must get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Completion with this used length (`None`: at most the writable length) and content.
    Complete(Option<u32>),
    /// Never completed; DEVICE_NEEDS_RESET once taken.
    Fatal,
    /// May need a reset if taken (net receive buffers shorter than a header).
    MaybeFatal,
}

/// The oracle's view of a case.
pub struct Plan {
    pub features: u64,
    pub posted: Vec<Posted>,
    /// Whether the queue was notified after the chain was made available (otherwise the
    /// device need not look at it).
    pub notified: Vec<bool>,
    pub expect: Vec<Expect>,
    /// blk: the answer to each posted chain (fatal ones too).
    pub blk: Vec<Option<Answer>>,
    pub clean: bool,
    /// A fatal chain on a queue the device serves at once: DEVICE_NEEDS_RESET must come.
    pub must_reset: bool,
    /// Some chain may make the device need a reset.
    pub may_reset: bool,
}

fn overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.1 > 0 && b.1 > 0 && a.0 < b.0 + b.1 && b.0 < a.0 + a.1
}

impl Plan {
    pub fn new(kind: Kind, features: u64, case: &Case, lay: &Layout, posted: Vec<Posted>) -> Plan {
        let mut why = Vec::new();
        if !consistent(kind, features) {
            why.push("features without their dependencies".to_string());
        }
        let mut published = false;
        let mut notified = Vec::new();
        for (k, op) in case.ops.iter().enumerate() {
            match op {
                Op::Avail { q, .. } => {
                    published = true;
                    if lay.queue(*q).is_none() {
                        why.push(format!("a head on queue {q}, which is not set up"));
                    } else {
                        notified.push(
                            case.ops[k..]
                                .iter()
                                .any(|o| matches!(o, Op::Notify { q: n } if n == q)),
                        );
                    }
                }
                Op::AvailIdx { .. } => why.push("the available index moved by hand".into()),
                Op::Ram { .. } | Op::Desc { .. } if published => {
                    why.push("memory written after publication".into())
                }
                Op::Ram { addr, bytes } => {
                    let r = (*addr, bytes.len() as u64);
                    if lay
                        .queues
                        .iter()
                        .any(|q| q.structures()[1..].iter().any(|s| overlap(r, *s)))
                    {
                        why.push("the host wrote over its available or used ring".into());
                    }
                }
                _ => {}
            }
        }
        for (i, p) in posted.iter().enumerate() {
            if posted[..i]
                .iter()
                .any(|o| o.qpos == p.qpos && o.head == p.head)
            {
                why.push(format!("head {} made available twice", p.head));
            }
        }
        // What the device may write must not overlap anything it reads or walks.
        let valid: Vec<&Chain> = posted.iter().filter_map(|p| p.walk.as_ref().ok()).collect();
        // What the device reads or walks: descriptor tables, available rings, indirect
        // tables, readable buffers.
        let mut fixed: Vec<(u64, u64)> = lay
            .queues
            .iter()
            .flat_map(|q| q.structures()[..2].to_vec())
            .collect();
        for c in &valid {
            fixed.extend(c.table.map(|t| (t.addr, u64::from(t.len))));
            fixed.extend(c.readable.iter().map(|s| (s.addr, u64::from(s.len))));
        }
        // What it writes: writable buffers and the used rings.
        let mut writes: Vec<(u64, u64)> = lay.queues.iter().map(|q| q.structures()[2]).collect();
        writes.extend(
            valid
                .iter()
                .flat_map(|c| c.writable.iter().map(|s| (s.addr, u64::from(s.len)))),
        );
        for (i, w) in writes.iter().enumerate() {
            if fixed.iter().any(|f| overlap(*w, *f)) || writes[..i].iter().any(|o| overlap(*w, *o))
            {
                why.push(format!(
                    "memory the device writes ({:#x}+{:#x}) overlaps what it reads",
                    w.0, w.1
                ));
                break;
            }
        }
        // What the host changes while it publishes (available rings): nothing walked or read
        // may lie there, or the device sees other bytes than the oracle did.
        let avail: Vec<(u64, u64)> = lay.queues.iter().map(|q| q.structures()[1]).collect();
        for c in &valid {
            let read = c
                .table
                .iter()
                .chain(&c.readable)
                .map(|s| (s.addr, u64::from(s.len)));
            if read.clone().any(|r| avail.iter().any(|a| overlap(r, *a))) {
                why.push("a table or buffer lies over an available ring".into());
                break;
            }
        }
        let clean = why.is_empty();
        let lim = blk_model::Limits {
            capacity: BLK_CAPACITY,
            discard: features & (1 << VIRTIO_BLK_F_DISCARD) != 0,
            write_zeroes: features & (1 << VIRTIO_BLK_F_WRITE_ZEROES) != 0,
        };
        let mut expect = Vec::new();
        let mut blk = Vec::new();
        for p in &posted {
            let (e, b) = match &p.walk {
                Err(_) => (Expect::Fatal, None),
                Ok(c) => expectation(p, c, &lim),
            };
            expect.push(e);
            blk.push(b);
        }
        let must_reset = posted
            .iter()
            .zip(&expect)
            .zip(&notified)
            .any(|((p, e), n)| p.role.eager() && *n && *e == Expect::Fatal);
        let may_reset = must_reset
            || expect
                .iter()
                .any(|e| matches!(e, Expect::Fatal | Expect::MaybeFatal));
        Plan {
            features,
            posted,
            notified,
            expect,
            blk,
            clean,
            must_reset,
            may_reset,
        }
    }

    /// Whether the device has settled: DEVICE_NEEDS_RESET, or (nothing fatal for sure) every
    /// chain of the queues it serves at once completed.
    pub fn settled(&self, used: &[Vec<(u32, u32)>], needs_reset: bool) -> bool {
        if needs_reset {
            return true;
        }
        if self.must_reset {
            return false;
        }
        self.posted
            .iter()
            .zip(&self.expect)
            .zip(&self.notified)
            .all(|((p, e), n)| {
                !p.role.eager()
                    || !n
                    || !matches!(e, Expect::Complete(_))
                    || used[p.qpos].iter().any(|u| u.0 == u32::from(p.head))
            })
    }
}

fn expectation(p: &Posted, c: &Chain, lim: &blk_model::Limits) -> (Expect, Option<Answer>) {
    let wlen = c.writable_len;
    let exact = |n: u64| Expect::Complete(Some(n as u32));
    match p.role {
        Role::RngReq => (exact(wlen.min(64 * 1024)), None),
        Role::ConsoleTx | Role::NetTx => (exact(0), None),
        Role::ConsoleRx => (Expect::Complete(None), None),
        Role::NetRx if wlen < 12 => (Expect::MaybeFatal, None),
        Role::NetRx => (Expect::Complete(None), None),
        Role::NetCtrl => (exact(u64::from(wlen > 0)), None),
        Role::BlkReq => {
            let Some(r) = &p.readable else {
                return (Expect::Complete(Some(wlen as u32)), None);
            };
            let a = blk_model::answer(r, wlen, lim);
            let e = if a == Answer::Fatal {
                Expect::Fatal
            } else {
                exact(wlen)
            };
            (e, Some(a))
        }
    }
}

/// Reads host RAM.
pub type ReadRam<'a> = &'a dyn Fn(u64, &mut [u8]);

/// The first `n` bytes of `segs` in host RAM.
pub fn gather(ram: ReadRam<'_>, segs: &[Seg], n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n.min(CAPTURE_LIMIT) as usize);
    let mut left = n;
    for s in segs {
        if left == 0 {
            break;
        }
        let k = left.min(u64::from(s.len));
        let mut b = vec![0u8; k as usize];
        ram(s.addr, &mut b);
        out.extend_from_slice(&b);
        left -= k;
    }
    out
}

/// What the device did, for [`check`].
pub struct Seen<'a> {
    /// Used entries per queue (layout order): (id, len).
    pub used: &'a [Vec<(u32, u32)>],
    pub needs_reset: bool,
    pub ram: ReadRam<'a>,
}

/// Checks a clean case's completions; returns the indices of the posted chains completed,
/// in used order per queue.
pub fn check(plan: &Plan, seen: &Seen<'_>) -> Result<Vec<usize>, String> {
    let mut done = Vec::new();
    for (qpos, used) in seen.used.iter().enumerate() {
        for &(id, len) in used {
            let i = plan
                .posted
                .iter()
                .position(|p| p.qpos == qpos && u32::from(p.head) == id)
                .ok_or_else(|| format!("queue #{qpos}: used id {id} was never made available"))?;
            if done.contains(&i) {
                return Err(format!("queue #{qpos}: head {id} completed twice"));
            }
            done.push(i);
            let p = &plan.posted[i];
            let c = match (&p.walk, &plan.expect[i]) {
                (Err(e), _) => {
                    return Err(format!(
                        "queue #{qpos}: head {id} completed, but the chain is malformed ({e})"
                    ))
                }
                (Ok(_), Expect::Fatal) => {
                    return Err(format!(
                        "queue #{qpos}: head {id} completed, but the request cannot be answered"
                    ))
                }
                (Ok(c), _) => c,
            };
            match plan.expect[i] {
                Expect::Complete(Some(want)) if len != want => {
                    return Err(format!(
                        "queue #{qpos} ({:?}): head {id} used length {len}, expected {want}",
                        p.role
                    ))
                }
                _ if u64::from(len) > c.writable_len => {
                    return Err(format!(
                        "queue #{qpos} ({:?}): head {id} used length {len} beyond its {} writable bytes",
                        p.role, c.writable_len
                    ))
                }
                _ => {}
            }
            check_content(plan, i, c, len, seen)?;
        }
    }
    if plan.must_reset && !seen.needs_reset {
        let bad = plan
            .posted
            .iter()
            .zip(&plan.expect)
            .find(|(_, e)| **e == Expect::Fatal)
            .map(|(p, _)| match &p.walk {
                Err(e) => format!("head {} on queue #{}: {e}", p.head, p.qpos),
                Ok(_) => format!("head {} on queue #{}: no status byte", p.head, p.qpos),
            });
        return Err(format!(
            "a chain the device must refuse was made available ({}), but no \
             DEVICE_NEEDS_RESET",
            bad.unwrap_or_default()
        ));
    }
    if seen.needs_reset && !plan.may_reset {
        return Err("DEVICE_NEEDS_RESET, but every chain was valid".into());
    }
    if !seen.needs_reset && !plan.must_reset {
        for (i, p) in plan.posted.iter().enumerate() {
            if p.role.eager()
                && plan.notified[i]
                && matches!(plan.expect[i], Expect::Complete(_))
                && !done.contains(&i)
            {
                return Err(format!(
                    "queue #{} ({:?}): head {} never completed",
                    p.qpos, p.role, p.head
                ));
            }
        }
    }
    Ok(done)
}

fn check_content(
    plan: &Plan,
    i: usize,
    c: &Chain,
    len: u32,
    seen: &Seen<'_>,
) -> Result<(), String> {
    let p = &plan.posted[i];
    let whole = || gather(seen.ram, &c.writable, c.writable_len.min(CAPTURE_LIMIT));
    match p.role {
        Role::RngReq | Role::ConsoleRx => {
            // Nothing past what the device reported.
            if let Some(pre) = &p.writable_pre {
                let now = whole();
                let l = len as usize;
                if now.len() == pre.len() && now[l..] != pre[l..] {
                    return Err(format!(
                        "{:?} head {}: bytes past the used length {len} changed",
                        p.role, p.head
                    ));
                }
            }
        }
        Role::NetCtrl if len == 1 => {
            let ok = net_model::ctrl_ok(
                p.readable.as_deref().unwrap_or(&[]),
                plan.features,
                NET_PAIRS,
            );
            let ack = gather(seen.ram, &c.writable, 1)[0];
            if ack != u8::from(!ok) {
                return Err(format!(
                    "control command {:02x?}: ack {ack}, expected {}",
                    p.readable.as_deref().map(|r| &r[..r.len().min(16)]),
                    u8::from(!ok)
                ));
            }
        }
        Role::BlkReq => {
            let Some(Answer::Status(status, effect)) = &plan.blk[i] else {
                return Ok(());
            };
            let all = whole();
            let got = *all.last().unwrap_or(&0xee);
            if got != *status {
                return Err(format!(
                    "blk head {}: status {got}, expected {status} (request {:02x?})",
                    p.head,
                    p.readable.as_deref().map(|r| &r[..r.len().min(16)])
                ));
            }
            if let (0, Effect::Id { len }) = (*status, effect) {
                if all[..*len]
                    != BLK_SERIAL
                        .iter()
                        .copied()
                        .chain(std::iter::repeat(0))
                        .take(*len)
                        .collect::<Vec<_>>()[..]
                {
                    return Err(format!(
                        "blk head {}: GET_ID returned {:02x?}",
                        p.head,
                        &all[..*len]
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// blk: the data a completed read returned, per posted chain (for checks against the image).
pub fn read_data(plan: &Plan, i: usize, ram: ReadRam<'_>) -> Option<(u64, Vec<u8>)> {
    let Some(Answer::Status(0, Effect::Read { offset, len })) = &plan.blk[i] else {
        return None;
    };
    let c = plan.posted[i].walk.as_ref().ok()?;
    Some((*offset, gather(ram, &c.writable, *len)))
}

/// blk: image ranges the case's requests may change.
pub fn blk_changes(plan: &Plan) -> Vec<(u64, u64, usize)> {
    let mut v = Vec::new();
    for (i, a) in plan.blk.iter().enumerate() {
        if let Some(Answer::Status(0, e)) = a {
            v.extend(e.changes().into_iter().map(|(o, l)| (o, l, i)));
        }
    }
    v
}
