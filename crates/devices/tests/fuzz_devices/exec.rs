//! Running a device case on its rig: a reset and a fresh negotiation with the case's features
//! and queue size (the rings must land where the generator put them), the host's ops in
//! order, then the device is given time to settle, bounded: a clean case must reach what the
//! oracle demands within the deadline (a hang otherwise); any case must end with a reset the
//! device completes. Then the checks that need the device's other side (console output and
//! input, the blk image, net accounting), host memory accesses (none outside host RAM) and
//! interrupts (none the host had not enabled).

use super::case::{Case, Op};
use super::gen::{Ctx, VERSION_1};
use super::layout::{consistent, layout, Kind, Layout, Role, RAM_BASE, RAM_SIZE, SCRATCH_LEN};
use super::oracle::{self, gather, Plan, Posted, Seen, CAPTURE_LIMIT};
use super::rigs::{DevRig, Io, BLK_CAPACITY};
use super::walker::{walk, Ram};
use epf_loopback::host_driver::spec::STATUS_DEVICE_NEEDS_RESET;
use epf_loopback::host_driver::HostQueue;
use epf_loopback::HostBus;
use std::time::{Duration, Instant};

/// Console output an earlier case may leave for the backend after a reset: the pipe and the
/// output thread's buffer.
const LEFTOVER: usize = super::rigs::CONSOLE_PIPE + 64 * 1024;

/// How long a clean case may take to settle.
pub const SETTLE: Duration = Duration::from_secs(10);

/// Counts over a campaign.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub clean: u64,
    pub wild: u64,
    pub needs_reset: u64,
    pub chains: u64,
    pub completed: u64,
    pub refused_features: u64,
}

struct BusRam<'a>(&'a HostBus);

impl Ram for BusRam<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) {
        let _ = self.0.ram_read(addr, buf);
    }

    fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= RAM_BASE
            && addr
                .checked_add(len)
                .is_some_and(|e| e <= RAM_BASE + RAM_SIZE)
    }
}

/// A device and what the campaign learnt about it.
pub struct Runner {
    pub dev: DevRig,
    pub ctx: Ctx,
    pub tally: Tally,
}

impl Runner {
    pub fn new(kind: Kind) -> Runner {
        let dev = DevRig::new(kind);
        let mac = match &dev.io {
            Io::Net(n) => n.mac,
            _ => [0; 6],
        };
        let ctx = Ctx {
            kind,
            offered: dev.offered,
            capacity: BLK_CAPACITY,
            mac,
        };
        Runner {
            dev,
            ctx,
            tally: Tally::default(),
        }
    }

    /// Walks every head the case makes available, as published now.
    fn plan(&self, case: &Case, lay: &Layout, features: u64) -> Plan {
        let bus = self.dev.rig.bus();
        let ram = BusRam(&bus);
        let mut captured = 0u64;
        let mut posted = Vec::new();
        for op in &case.ops {
            let Op::Avail { q, head } = *op else { continue };
            let Some(qpos) = lay.queues.iter().position(|l| l.index == q) else {
                continue;
            };
            let ql = lay.queues[qpos];
            let w = walk(&ram, ql.desc, ql.size, head);
            let mut cap = |segs: &[super::walker::Seg], n: u64| {
                (captured + n <= CAPTURE_LIMIT).then(|| {
                    captured += n;
                    gather(&|a, b| ram.read(a, b), segs, n)
                })
            };
            let (readable, writable_pre) = match &w {
                Ok(c) => (
                    cap(&c.readable, c.readable_len),
                    if matches!(ql.role, Role::RngReq | Role::ConsoleRx) {
                        cap(&c.writable, c.writable_len)
                    } else {
                        None
                    },
                ),
                Err(_) => (None, None),
            };
            posted.push(Posted {
                qpos,
                role: ql.role,
                head,
                walk: w,
                readable,
                writable_pre,
            });
        }
        Plan::new(self.ctx.kind, features, case, lay, posted)
    }

    /// Collects used entries until the device settled; returns whether it needs a reset.
    fn settle(
        &self,
        plan: &Plan,
        qs: &mut [HostQueue],
        used: &mut [Vec<(u32, u32)>],
    ) -> Result<bool, String> {
        let start = Instant::now();
        let mut last = (usize::MAX, 0u8);
        let mut stable = 0;
        loop {
            for (i, q) in qs.iter_mut().enumerate() {
                // A used index the host scribbled over may claim thousands of entries: a clean
                // case never has more than its chains, a wild one is not checked.
                let most = 4 * usize::from(q.size());
                for _ in used[i].len()..most {
                    match q.get_used_raw() {
                        Ok(Some(u)) => used[i].push(u),
                        _ => break,
                    }
                }
            }
            let status = self.dev.drv.status();
            let nr = status & STATUS_DEVICE_NEEDS_RESET != 0;
            if plan.clean {
                if plan.settled(used, nr) {
                    return Ok(nr);
                }
            } else {
                let now = (used.iter().map(Vec::len).sum::<usize>(), status);
                stable = if now == last { stable + 1 } else { 0 };
                last = now;
                if nr || stable >= 5 || start.elapsed() > Duration::from_secs(2) {
                    return Ok(nr);
                }
            }
            if start.elapsed() > SETTLE {
                if plan.clean {
                    // A more precise complaint if the completions are wrong already.
                    let bus = self.dev.rig.bus();
                    let ram = |a: u64, b: &mut [u8]| {
                        let _ = bus.ram_read(a, b);
                    };
                    let seen = Seen {
                        used,
                        needs_reset: nr,
                        ram: &ram,
                    };
                    oracle::check(plan, &seen)?;
                }
                return Err(format!(
                    "the device neither completed its chains nor needed a reset within {SETTLE:?} \
                     (used so far {:?}, status {status:#x})",
                    used.iter().map(Vec::len).collect::<Vec<_>>()
                ));
            }
            std::thread::sleep(Duration::from_micros(if plan.clean { 100 } else { 1000 }));
        }
    }

    /// Runs `case`; returns the number of chains it made available.
    pub fn run(&mut self, case: &Case) -> Result<u64, String> {
        let kind = self.ctx.kind;
        let bus = self.dev.rig.bus();
        self.dev
            .drv
            .reset()
            .map_err(|e| format!("the device did not complete a reset before the case: {e}"))?;
        bus.reset_alloc();
        let negotiated = case.features & self.ctx.offered | VERSION_1;
        if let Err(e) = self.dev.drv.init(case.features & !super::rigs::NOT_FUZZED) {
            if consistent(kind, negotiated) {
                return Err(format!("features {:#x} refused: {e}", case.features));
            }
            self.tally.refused_features += 1;
            return Ok(0);
        }
        let drv = &mut self.dev.drv;
        drv.set_config_vector(0)
            .map_err(|e| format!("config vector: {e}"))?;
        let lay = layout(kind, negotiated, case.qsize);
        let mut qs = Vec::new();
        for l in &lay.queues {
            let q = drv
                .setup_queue(l.index, Some(case.qsize), Some(l.index + 1))
                .map_err(|e| format!("queue {}: {e}", l.index))?;
            if (q.desc_addr(), q.avail_addr(), q.used_addr()) != (l.desc, l.avail, l.used) {
                return Err(format!(
                    "queue {} is not where the generator put it",
                    l.index
                ));
            }
            qs.push(q);
        }
        drv.driver_ok();
        let scratch = bus
            .alloc(SCRATCH_LEN, 4096)
            .map_err(|e| format!("scratch: {e}"))?;
        if scratch != lay.scratch {
            return Err("the scratch area is not where the generator put it".into());
        }

        // The other side, before.
        if let Io::Console(c) = &self.dev.io {
            // Output of earlier cases still draining: wait until it stops, then forget it.
            let mut prev = c.total();
            let t = Instant::now();
            loop {
                std::thread::sleep(Duration::from_millis(2));
                let now = c.total();
                if now == prev || t.elapsed() > Duration::from_secs(5) {
                    break;
                }
                prev = now;
            }
            c.clear_output();
        }
        let image0 = match &self.dev.io {
            Io::Blk(b) => Some(b.image()),
            _ => None,
        };
        let tx0 = match &self.dev.io {
            Io::Net(n) => n.tx_accounted(),
            _ => 0,
        };

        let mut plan: Option<Plan> = None;
        let mut used: Vec<Vec<(u32, u32)>> = vec![Vec::new(); qs.len()];
        let mut needs_reset = false;
        let find = |qs: &[HostQueue], q: u16| qs.iter().position(|h| h.index() == q);
        for op in &case.ops {
            match op {
                Op::Ram { addr, bytes } => bus
                    .ram_write(*addr, bytes)
                    .map_err(|e| format!("the case writes outside host RAM: {e}"))?,
                Op::Desc {
                    q,
                    index,
                    addr,
                    len,
                    flags,
                    next,
                } => {
                    let i = find(&qs, *q).ok_or_else(|| format!("queue {q} is not set up"))?;
                    qs[i]
                        .write_raw_desc(*index, *addr, *len, *flags, *next)
                        .map_err(|e| format!("descriptor: {e}"))?;
                }
                Op::Avail { q, head } => {
                    if plan.is_none() {
                        plan = Some(self.plan(case, &lay, negotiated));
                    }
                    if let Some(i) = find(&qs, *q) {
                        qs[i].push_avail_raw(*head).map_err(|e| e.to_string())?;
                    }
                }
                Op::AvailIdx { q, idx } => {
                    if let Some(i) = find(&qs, *q) {
                        qs[i].set_avail_idx_raw(*idx).map_err(|e| e.to_string())?;
                    }
                }
                Op::Notify { q } => match find(&qs, *q) {
                    Some(i) => qs[i].notify(),
                    None => {
                        // Any notify address takes the queue index as data.
                        let (bar, off) = qs[0].notify_location();
                        bus.bar_write16(bar, off, *q);
                    }
                },
                Op::Input(bytes) => match &mut self.dev.io {
                    Io::Console(c) => c.feed(bytes.len()),
                    Io::Net(n) => n.send(bytes),
                    _ => {}
                },
                Op::Settle => {
                    let p = plan.get_or_insert_with(|| self.plan(case, &lay, negotiated));
                    needs_reset |= self.settle(p, &mut qs, &mut used)?;
                }
            }
        }
        let plan = match plan {
            Some(p) => p,
            None => self.plan(case, &lay, negotiated),
        };
        if !matches!(case.ops.last(), Some(Op::Settle)) {
            needs_reset |= self.settle(&plan, &mut qs, &mut used)?;
        }
        self.tally.chains += plan.posted.len() as u64;
        if plan.clean {
            self.tally.completed += used.iter().map(Vec::len).sum::<usize>() as u64;
        }
        self.tally.needs_reset += u64::from(needs_reset);
        let done = if plan.clean {
            self.tally.clean += 1;
            self.check_clean(&plan, &used, needs_reset, image0.as_deref(), tx0)?
        } else {
            self.tally.wild += 1;
            Vec::new()
        };
        // Whatever happened, the device must come back.
        self.dev
            .drv
            .reset()
            .map_err(|e| format!("the device did not complete a reset after the case: {e}"))?;
        if let (true, Io::Blk(b), Some(before)) = (plan.clean, &self.dev.io, &image0) {
            check_image(&plan, &done, before, &b.image())?;
        }
        let oob = self.dev.rig.c.oob_attempts();
        if oob != 0 {
            return Err(format!("{oob} host-memory accesses outside host RAM"));
        }
        let refused = self.dev.rig.c.stats().irqs_refused;
        if refused != 0 {
            return Err(format!("{refused} interrupts the host had not enabled"));
        }
        Ok(plan.posted.len() as u64)
    }

    fn check_clean(
        &self,
        plan: &Plan,
        used: &[Vec<(u32, u32)>],
        needs_reset: bool,
        image0: Option<&[u8]>,
        tx0: u64,
    ) -> Result<Vec<usize>, String> {
        let bus = self.dev.rig.bus();
        let ram = |a: u64, b: &mut [u8]| {
            let _ = bus.ram_read(a, b);
        };
        let seen = Seen {
            used,
            needs_reset,
            ram: &ram,
        };
        let done = oracle::check(plan, &seen)?;
        let of = |role: Role| -> Vec<usize> {
            done.iter()
                .copied()
                .filter(|&i| plan.posted[i].role == role)
                .collect()
        };
        match &self.dev.io {
            Io::Console(c) => {
                // Transmit: the backend got the readable bytes of the chains, in ring order,
                // all of those completed and perhaps more of the next (taken meanwhile).
                let mut stream = Vec::new();
                let mut known = true;
                for (i, p) in plan.posted.iter().enumerate() {
                    if p.role != Role::ConsoleTx {
                        continue;
                    }
                    if plan.expect[i] == oracle::Expect::Fatal {
                        break;
                    }
                    match &p.readable {
                        Some(r) => stream.extend_from_slice(r),
                        None => known = false,
                    }
                }
                let completed: u64 = of(Role::ConsoleTx)
                    .iter()
                    .map(|&i| plan.posted[i].walk.as_ref().map_or(0, |c| c.readable_len))
                    .sum();
                if known {
                    // Output an earlier case left in the pipe may come first: at most the pipe
                    // and the output thread's buffer, once the device was reset. What follows
                    // must be what the host sent, in ring order: all of the completed chains
                    // (perhaps still on the way to the backend), and maybe some of the next.
                    let fits = |out: &[u8], k: usize| {
                        let new = &out[k..];
                        new.len() as u64 >= completed
                            && new.len() <= stream.len()
                            && *new == stream[..new.len()]
                    };
                    let t = Instant::now();
                    while let Some(out) = c.recent() {
                        let most = out.len().min(LEFTOVER);
                        let first = stream.first().copied();
                        if (0..=most)
                            .any(|k| (k == out.len() || Some(out[k]) == first) && fits(&out, k))
                        {
                            break;
                        }
                        if t.elapsed() > Duration::from_secs(5) {
                            return Err(format!(
                                "console: the backend got {} bytes; the host sent {} in ring \
                                 order, chains of {completed} bytes completed, and no leftover \
                                 of an earlier case explains the difference",
                                out.len(),
                                stream.len()
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                // Receive: the input stream, in order.
                let mut prev: Option<u8> = None;
                for i in of(Role::ConsoleRx) {
                    let p = &plan.posted[i];
                    let c = p.walk.as_ref().map_err(|e| e.clone())?;
                    let len = used[p.qpos]
                        .iter()
                        .find(|u| u.0 == u32::from(p.head))
                        .map_or(0, |u| u.1);
                    for b in gather(&ram, &c.writable, u64::from(len)) {
                        if let Some(x) = prev {
                            if b != (x + 1) % 251 {
                                return Err(format!(
                                    "console: input out of order ({x} then {b}) in head {}",
                                    p.head
                                ));
                            }
                        }
                        prev = Some(b);
                    }
                }
            }
            Io::Blk(_) => {
                let image0 = image0.unwrap_or_default();
                let changes = oracle::blk_changes(plan);
                for &i in &done {
                    let Some((off, data)) = oracle::read_data(plan, i, &ram) else {
                        continue;
                    };
                    let len = data.len() as u64;
                    if changes.iter().any(|c| c.0 < off + len && off < c.0 + c.1) {
                        continue; // a write of the same case may have come first
                    }
                    let want = &image0[off as usize..(off + len) as usize];
                    if data != want {
                        let at = data.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                        return Err(format!(
                            "blk head {}: read of {len} bytes at {off:#x} differs from the image at byte {at}",
                            plan.posted[i].head
                        ));
                    }
                }
            }
            Io::Net(n) => {
                // Every completed transmit chain was sent, dropped or refused, and counted;
                // chains taken after the check may be counted already.
                let completed = of(Role::NetTx).len() as u64;
                let valid = plan
                    .posted
                    .iter()
                    .filter(|p| p.role == Role::NetTx && p.walk.is_ok())
                    .count() as u64;
                let got = n.tx_accounted() - tx0;
                if got < completed || got > valid {
                    return Err(format!(
                        "net: {completed} transmit chains completed (of {valid} valid), {got} \
                         accounted for"
                    ));
                }
            }
            Io::None => {}
        }
        Ok(done)
    }
}

/// blk: after a clean case, the image changed only where requests the model accepts write,
/// and holds what completed writes and write-zeroes put there.
fn check_image(plan: &Plan, done: &[usize], before: &[u8], after: &[u8]) -> Result<(), String> {
    if after.len() != before.len() {
        return Err(format!(
            "blk: the image is {} bytes now, {} before",
            after.len(),
            before.len()
        ));
    }
    let changes = oracle::blk_changes(plan);
    // The ranges no accepted request writes must be as they were.
    let mut spans: Vec<(usize, usize)> = changes
        .iter()
        .map(|&(o, l, _)| (o as usize, (o + l) as usize))
        .collect();
    spans.sort_unstable();
    let mut at = 0;
    for (s, e) in spans.into_iter().chain([(before.len(), before.len())]) {
        if s > at && before[at..s] != after[at..s] {
            let k = at + (at..s).position(|k| before[k] != after[k]).unwrap_or(0);
            return Err(format!(
                "blk: image byte {k:#x} changed, though no accepted request writes it"
            ));
        }
        at = at.max(e);
    }
    for &(o, l, i) in &changes {
        let alone = !changes
            .iter()
            .any(|c| c.2 != i && c.0 < o + l && o < c.0 + c.1);
        if !alone {
            continue;
        }
        let got = &after[o as usize..(o + l) as usize];
        let want: Vec<u8> = match &plan.blk[i] {
            Some(super::blk_model::Answer::Status(0, super::blk_model::Effect::Write { .. })) => {
                match &plan.posted[i].readable {
                    Some(r) => r[16..].to_vec(),
                    None => continue,
                }
            }
            Some(super::blk_model::Answer::Status(0, super::blk_model::Effect::Zero(_))) => {
                vec![0; l as usize]
            }
            _ => continue,
        };
        // A request not completed before a reset may or may not have been carried out.
        let untouched = !done.contains(&i) && got == &before[o as usize..(o + l) as usize];
        if got != want.as_slice() && !untouched {
            return Err(format!(
                "blk: image range {o:#x}+{l:#x} holds neither what request {} wrote nor what \
                 was there",
                plan.posted[i].head
            ));
        }
    }
    Ok(())
}
