//! The oracle: an independent model of what the server must answer. It replays the stream
//! the server received, message by message as the server frames it, attributes descriptors
//! to the message whose byte their write started at (that is where the kernel delivers them),
//! and predicts each reply from the protocol rules and the server's documented limits:
//! framing errors get an error (for commands that want a reply) and end the session; a
//! failed first VERSION ends it; everything else gets exactly one reply, success or an
//! error with a specific errno, in order, and the session goes on; NO_REPLY commands and
//! stray replies get nothing. DMA mappings are tracked to predict overlaps and unmaps. Where
//! the model cannot know (capabilities JSON it does not parse, a NO_REPLY VERSION) it keeps
//! both hypotheses until a reply decides.

use super::case::Fd;
use super::exec::{Outcome, Reply};
use super::wire::*;
use std::collections::BTreeMap;

/// Sizes of regions 0..9 of the test fixture (`common::spec`): BAR0 16 KiB, BAR2 8 KiB (64
/// bit, so BAR3 is its upper half), 4 KiB of configuration space, nothing else.
pub const REGION_SIZES: [u64; 9] = [0x4000, 0, 0x2000, 0, 0, 0, 0, 4096, 0];
/// Interrupts per index of the fixture: INTx (pin A), no MSI, 4 MSI-X, ERR, REQ.
pub const IRQ_COUNTS: [u32; 5] = [1, 0, 4, 1, 1];
/// Descriptors the server may hold for interrupts at once (one per interrupt above).
pub const IRQ_FDS: usize = 7;

/// What the model learnt from a case.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Messages the server read whole.
    pub messages: u64,
    /// DMA_MAP messages that carried a descriptor (each may be held while mapped).
    pub map_fds: usize,
    /// Successful region-info replies (the only ones that may carry a descriptor).
    pub region_infos: usize,
}

/// The expected outcome of one command.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Err(i32),
    /// Success, its body checked by [`check_ok`].
    Ok,
    /// Success or one of these errors (the model cannot tell).
    OkOr(&'static [i32]),
    /// One of these errors.
    OneOf(&'static [i32]),
}

/// Whether the server ends the session after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    No,
    /// Only a refused first VERSION ends the session.
    IfRefused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    No,
    Yes,
    Unknown,
}

struct Model<'a> {
    replies: std::slice::Iter<'a, Reply>,
    negotiated: Tri,
    write_multi: Tri,
    /// The server may have closed after a NO_REPLY VERSION it refused.
    maybe_closed: bool,
    /// Mapped ranges: iova -> (size, backed by a descriptor).
    maps: BTreeMap<u64, (u64, bool)>,
    /// A NO_REPLY map or unmap left the table uncertain.
    maps_unknown: bool,
    tmp_fs_ok: bool,
    v: Verdict,
}

fn err_text(e: i32) -> String {
    format!("{} ({e})", std::io::Error::from_raw_os_error(e))
}

impl Model<'_> {
    fn mapped_bytes(&self) -> u64 {
        self.maps.values().filter(|m| m.1).map(|m| m.0).sum()
    }

    /// The next reply, which must answer `id`/`command`. `None` if the server closed where
    /// the model allowed it.
    fn next_reply(&mut self, n: u64, id: u16, command: u16) -> Result<Option<&Reply>, String> {
        match self.replies.next() {
            Some(r) => {
                self.maybe_closed = false;
                if r.id != id || r.command != command {
                    return Err(format!(
                        "message {n} (id {id:#x}, command {command}) was answered by a reply \
                         to id {:#x}, command {}",
                        r.id, r.command
                    ));
                }
                Ok(Some(r))
            }
            None if self.maybe_closed => Ok(None),
            None => Err(format!(
                "message {n} (id {id:#x}, command {command}) got no reply: the server closed \
                 or skipped it"
            )),
        }
    }

    /// Checks `r` against `e`; returns whether it was a success.
    fn check(&self, n: u64, r: &Reply, e: &Expect, body: &[u8]) -> Result<bool, String> {
        let what = format!("message {n} (id {:#x}, command {})", r.id, r.command);
        let is_err = r.flags & ERROR != 0;
        if is_err {
            if r.flags != TYPE_REPLY | ERROR || r.size != HEADER as u32 || r.error == 0 {
                return Err(format!(
                    "{what}: malformed error reply (flags {:#x}, size {}, error {})",
                    r.flags, r.size, r.error
                ));
            }
            let got = r.error as i32;
            let allowed = match e {
                Expect::Err(x) => got == *x,
                Expect::Ok => false,
                Expect::OkOr(xs) | Expect::OneOf(xs) => xs.contains(&got),
            };
            if !allowed {
                return Err(format!(
                    "{what}: expected {}, got error {}",
                    match e {
                        Expect::Err(x) => format!("error {}", err_text(*x)),
                        Expect::OneOf(xs) => format!("one of the errors {xs:?}"),
                        _ => "success".into(),
                    },
                    err_text(got)
                ));
            }
            return Ok(false);
        }
        if r.flags != TYPE_REPLY || r.error != 0 {
            return Err(format!(
                "{what}: malformed reply (flags {:#x}, error {})",
                r.flags, r.error
            ));
        }
        match e {
            Expect::Err(x) => {
                return Err(format!(
                    "{what}: expected error {}, got success",
                    err_text(*x)
                ))
            }
            Expect::OneOf(xs) => {
                return Err(format!(
                    "{what}: expected one of the errors {xs:?}, got success"
                ))
            }
            _ => {}
        }
        check_ok(r, body).map_err(|m| format!("{what}: {m}"))?;
        Ok(true)
    }

    /// What `command` with `body` and descriptors `fds` must get, given the state, and
    /// whether the session ends after it.
    fn expect(&self, command: u16, body: &[u8], fds: &[Fd]) -> (Expect, Close) {
        use Expect::*;
        if command == VERSION && fds.is_empty() && self.negotiated == Tri::No {
            let e = if body.len() < 4 {
                Err(libc::EINVAL)
            } else if u16_at(body, 0) != Some(0) {
                Err(libc::ENOTSUP)
            } else {
                // Capabilities the model does not parse: accepted or refused.
                OkOr(&[libc::EINVAL])
            };
            return (e, Close::IfRefused);
        }
        (self.expect_command(command, body, fds), Close::No)
    }

    fn expect_command(&self, command: u16, body: &[u8], fds: &[Fd]) -> Expect {
        use Expect::*;
        if fds.len() > MAX_FDS || (self.negotiated == Tri::No && command != VERSION) {
            return Err(libc::EINVAL);
        }
        if !fds.is_empty() && command != DMA_MAP && command != SET_IRQS {
            return Err(libc::EINVAL);
        }
        match command {
            // Not the first (or with descriptors, see `expect`): refused, the session goes on.
            VERSION => Err(libc::EINVAL),
            DMA_MAP => self.expect_map(body, fds),
            DMA_UNMAP => self.expect_unmap(body).0,
            DEVICE_GET_INFO => match u32_at(body, 0) {
                Some(a) if a >= 16 => Ok,
                _ => Err(libc::EINVAL),
            },
            GET_REGION_INFO => match (u32_at(body, 0), u32_at(body, 8)) {
                (Some(a), Some(i)) if a >= 32 && i < NUM_REGIONS => Ok,
                _ => Err(libc::EINVAL),
            },
            GET_IRQ_INFO => match (u32_at(body, 0), u32_at(body, 8)) {
                (Some(a), Some(i)) if a >= 16 && i < NUM_IRQS => Ok,
                _ => Err(libc::EINVAL),
            },
            SET_IRQS => expect_set_irqs(body, fds),
            REGION_READ | REGION_WRITE => {
                let Some((offset, region, count)) = rw_prefix(body) else {
                    return Err(libc::EINVAL);
                };
                if count > MAX_DATA as u64 {
                    return Err(libc::E2BIG);
                }
                if command == REGION_WRITE && (body.len() as u64) < 16 + count {
                    return Err(libc::EINVAL);
                }
                if accessible(region, offset, count) {
                    Ok
                } else {
                    Err(libc::EINVAL)
                }
            }
            REGION_WRITE_MULTI => {
                let e = expect_write_multi(body);
                match self.write_multi {
                    Tri::Yes => e,
                    Tri::No => Err(libc::EINVAL),
                    Tri::Unknown => match e {
                        Err(x) if x == libc::EINVAL => Err(x),
                        Err(_) => OneOf(&[libc::EINVAL, libc::E2BIG]),
                        _ => OkOr(&[libc::EINVAL]),
                    },
                }
            }
            DEVICE_RESET => Ok,
            DEVICE_FEATURE => Err(libc::ENOTTY),
            DMA_READ | DMA_WRITE => Err(libc::EINVAL),
            _ => Err(libc::ENOSYS),
        }
    }

    fn expect_map(&self, body: &[u8], fds: &[Fd]) -> Expect {
        use Expect::*;
        if self.maps_unknown {
            return OkOr(&[libc::EINVAL, libc::EEXIST, libc::ENOSPC, libc::ENOMEM]);
        }
        let (Some(fl), Some(offset), Some(iova), Some(size)) = (
            u32_at(body, 4),
            u64_at(body, 8),
            u64_at(body, 16),
            u64_at(body, 24),
        ) else {
            return Err(libc::EINVAL);
        };
        if body.len() < 32 || fds.len() > 1 {
            return Err(libc::EINVAL);
        }
        if fl & !(MAP_READ | MAP_WRITE) != 0 || size == 0 {
            return Err(libc::EINVAL);
        }
        let Some(end) = iova.checked_add(size) else {
            return Err(libc::EINVAL);
        };
        if !fds.is_empty() && self.mapped_bytes().saturating_add(size) > MAX_DMA_BYTES {
            return Err(libc::ENOSPC);
        }
        let mut mmap = false;
        if let (Some(&fd), true) = (fds.first(), fl & (MAP_READ | MAP_WRITE) != 0) {
            let file_len = match fd {
                Fd::Memfd(n) => n,
                Fd::File(n) if self.tmp_fs_ok => n,
                _ => return Err(libc::EINVAL),
            };
            match offset.checked_add(size) {
                Some(e) if e <= file_len => {}
                _ => return Err(libc::EINVAL),
            }
            if offset % 4096 != 0 {
                return Err(libc::EINVAL);
            }
            mmap = true;
        }
        if let Some((b, m)) = self.maps.range(..=iova).next_back() {
            if b + m.0 > iova {
                return Err(libc::EEXIST);
            }
        }
        if let Some((b, _)) = self.maps.range(iova..).next() {
            if *b < end {
                return Err(libc::EEXIST);
            }
        }
        if mmap {
            // Address space or the fault guard's slots could run out.
            OkOr(&[libc::ENOMEM])
        } else {
            Ok
        }
    }

    /// The expectation of an unmap, and the ranges it removes on success.
    fn expect_unmap(&self, body: &[u8]) -> (Expect, Vec<u64>) {
        use Expect::*;
        if self.maps_unknown {
            return (OkOr(&[libc::EINVAL]), Vec::new());
        }
        let (Some(fl), Some(iova), Some(size)) =
            (u32_at(body, 4), u64_at(body, 8), u64_at(body, 16))
        else {
            return (Err(libc::EINVAL), Vec::new());
        };
        if body.len() < 24 {
            return (Err(libc::EINVAL), Vec::new());
        }
        match fl {
            UNMAP_ALL if iova == 0 && size == 0 => (Ok, self.maps.keys().copied().collect()),
            0 => {
                let Some(end) = iova.checked_add(size).filter(|_| size != 0) else {
                    return (Err(libc::EINVAL), Vec::new());
                };
                if let Some((b, m)) = self.maps.range(..iova).next_back() {
                    if b + m.0 > iova {
                        return (Err(libc::EINVAL), Vec::new());
                    }
                }
                let keys: Vec<u64> = self.maps.range(iova..end).map(|(k, _)| *k).collect();
                if keys.iter().any(|k| k + self.maps[k].0 > end) {
                    return (Err(libc::EINVAL), Vec::new());
                }
                (Ok, keys)
            }
            _ => (Err(libc::EINVAL), Vec::new()),
        }
    }

    /// Applies a command's effect on the model's state, given whether it succeeded
    /// (`None`: NO_REPLY, unknown).
    fn apply(&mut self, command: u16, body: &[u8], fds: &[Fd], e: &Expect, ok: Option<bool>) {
        let ok = match (ok, e) {
            (Some(o), _) => Some(o),
            (None, Expect::Ok) => Some(true),
            (None, Expect::Err(_) | Expect::OneOf(_)) => Some(false),
            (None, Expect::OkOr(_)) => None,
        };
        match command {
            DMA_MAP => match ok {
                Some(true) => {
                    let (iova, size) =
                        (u64_at(body, 16).unwrap_or(0), u64_at(body, 24).unwrap_or(0));
                    let backed = !fds.is_empty() && u32_at(body, 4).unwrap_or(0) & 3 != 0;
                    self.maps.insert(iova, (size, backed));
                }
                Some(false) => {}
                None => self.maps_unknown = true,
            },
            DMA_UNMAP => match ok {
                Some(true) => {
                    let (_, keys) = self.expect_unmap(body);
                    for k in keys {
                        self.maps.remove(&k);
                    }
                }
                Some(false) => {}
                None => self.maps_unknown = true,
            },
            _ => {}
        }
    }
}

fn rw_prefix(b: &[u8]) -> Option<(u64, u32, u64)> {
    Some((u64_at(b, 0)?, u32_at(b, 8)?, u64::from(u32_at(b, 12)?)))
}

/// Whether `count` bytes at `offset` of `region` exist in the fixture.
fn accessible(region: u32, offset: u64, count: u64) -> bool {
    let size = REGION_SIZES.get(region as usize).copied().unwrap_or(0);
    let readable = region < 6 || region == CONFIG_REGION;
    readable && size > 0 && offset.checked_add(count).is_some_and(|e| e <= size)
}

fn expect_write_multi(body: &[u8]) -> Expect {
    let Some(n) = u64_at(body, 0) else {
        return Expect::Err(libc::EINVAL);
    };
    if n > WRITE_MULTI_MAX || (body.len() as u64) < 8 + n * WRITE_MULTI_ENTRY as u64 {
        return Expect::Err(libc::EINVAL);
    }
    for i in 0..n as usize {
        let e = &body[8 + i * WRITE_MULTI_ENTRY..];
        let (offset, region, count) = rw_prefix(e).unwrap_or((0, u32::MAX, 0));
        if count > MAX_DATA as u64 {
            return Expect::Err(libc::E2BIG);
        }
        if count > WRITE_MULTI_DATA as u64 || !accessible(region, offset, count) {
            return Expect::Err(libc::EINVAL);
        }
    }
    Expect::Ok
}

fn expect_set_irqs(body: &[u8], fds: &[Fd]) -> Expect {
    use Expect::*;
    let (Some(fl), Some(index), Some(start), Some(count)) = (
        u32_at(body, 4),
        u32_at(body, 8),
        u32_at(body, 12),
        u32_at(body, 16),
    ) else {
        return Err(libc::EINVAL);
    };
    let action = fl & 0x38;
    if ![IRQ_ACTION_MASK, IRQ_ACTION_UNMASK, IRQ_ACTION_TRIGGER].contains(&action)
        || fl & !0x3f != 0
        || index >= NUM_IRQS
    {
        return Err(libc::EINVAL);
    }
    let in_range = start
        .checked_add(count)
        .is_some_and(|e| e <= IRQ_COUNTS[index as usize]);
    match fl & 7 {
        IRQ_DATA_EVENTFD => {
            if action != IRQ_ACTION_TRIGGER
                || !in_range
                || (!fds.is_empty() && fds.len() != count as usize)
                || !fds.iter().all(|f| f.is_eventfd())
            {
                Err(libc::EINVAL)
            } else {
                Ok
            }
        }
        d @ (IRQ_DATA_NONE | IRQ_DATA_BOOL) => {
            if !fds.is_empty() {
                Err(libc::EINVAL)
            } else if d == IRQ_DATA_NONE && count == 0 && action == IRQ_ACTION_TRIGGER {
                Ok
            } else if d == IRQ_DATA_BOOL && (body.len() as u64) < 20 + u64::from(count) {
                Err(libc::EINVAL)
            } else if in_range {
                Ok
            } else {
                Err(libc::EINVAL)
            }
        }
        _ => Err(libc::EINVAL),
    }
}

/// Checks the body of a successful reply to a request with `body`.
fn check_ok(r: &Reply, body: &[u8]) -> Result<(), String> {
    let b = &r.body;
    let bad = |what: &str| {
        Err(format!(
            "bad success reply body ({what}): {:02x?}",
            &b[..b.len().min(64)]
        ))
    };
    match r.command {
        VERSION => {
            let json = b.get(4..).unwrap_or(&[]);
            if u16_at(b, 0) != Some(0) || json.last() != Some(&0) {
                return bad("version and NUL-terminated capabilities");
            }
            let text = String::from_utf8_lossy(&json[..json.len() - 1]);
            if !text.contains("\"max_msg_fds\":16") || !text.contains("\"max_data_xfer_size\"") {
                return bad("capabilities");
            }
        }
        DMA_MAP | DEVICE_RESET if !b.is_empty() => return bad("not empty"),
        DMA_UNMAP if b.as_slice() != &body[..24] => return bad("the request's unmap structure"),
        DEVICE_GET_INFO => {
            let want = Body::default()
                .u32(16)
                .u32(3)
                .u32(NUM_REGIONS)
                .u32(NUM_IRQS)
                .0;
            if *b != want {
                return bad("device info");
            }
        }
        GET_REGION_INFO => {
            let index = u32_at(body, 8).unwrap_or(0);
            let needed = u32_at(b, 0).unwrap_or(0) as usize;
            let argsz = u32_at(body, 0).unwrap_or(0) as usize;
            if b.len() < 32
                || needed < 32
                || u32_at(b, 8) != Some(index)
                || u64_at(b, 16) != Some(REGION_SIZES[index as usize])
                || b.len() != if argsz >= needed { needed } else { 32 }
            {
                return bad("region info");
            }
        }
        GET_IRQ_INFO => {
            let index = u32_at(body, 8).unwrap_or(0);
            let flags = if index == 0 { 7 } else { 1 };
            let want = Body::default()
                .u32(16)
                .u32(flags)
                .u32(index)
                .u32(IRQ_COUNTS[index as usize])
                .0;
            if *b != want {
                return bad("irq info");
            }
        }
        SET_IRQS if !b.is_empty() => return bad("not empty"),
        REGION_READ => {
            let count = u32_at(body, 12).unwrap_or(0) as usize;
            if b.len() != 16 + count || b[..16] != body[..16] {
                return bad("prefix and data");
            }
        }
        REGION_WRITE if b.as_slice() != &body[..16] => return bad("the request's prefix"),
        REGION_WRITE_MULTI if b.as_slice() != &body[..8] => return bad("the entry count"),
        _ => {}
    }
    Ok(())
}

/// Checks what the server answered to the stream it received.
pub fn check(stream: &[u8], out: &Outcome, tmp_fs_ok: bool) -> Result<Verdict, String> {
    let sent = &stream[..out.sent];
    let mut m = Model {
        replies: out.replies.iter(),
        negotiated: Tri::No,
        write_multi: Tri::No,
        maybe_closed: false,
        maps: BTreeMap::new(),
        maps_unknown: false,
        tmp_fs_ok,
        v: Verdict::default(),
    };
    let mut pos = 0usize;
    let mut n = 0u64;
    loop {
        if sent.len() - pos < HEADER {
            break; // nothing more, or a header cut short: the server just closes
        }
        n += 1;
        let h = &sent[pos..pos + HEADER];
        let (id, command) = (u16_at(h, 0).unwrap_or(0), u16_at(h, 2).unwrap_or(0));
        let size = u32_at(h, 4).unwrap_or(0) as usize;
        let fl = u32_at(h, 8).unwrap_or(0);
        let wants_reply = fl & NO_REPLY == 0;
        if !(HEADER..=MAX_MESSAGE).contains(&size) {
            if fl & TYPE_MASK == TYPE_COMMAND && wants_reply {
                let e = Expect::Err(if size < HEADER {
                    libc::EINVAL
                } else {
                    libc::E2BIG
                });
                if let Some(r) = m.next_reply(n, id, command)? {
                    let r = r.clone();
                    m.check(n, &r, &e, &[])?;
                }
            }
            break; // framing error: the session ends
        }
        if sent.len() - pos < size {
            break; // cut short: the session ends
        }
        let body = &sent[pos + HEADER..pos + size];
        let fds: Vec<Fd> = out
            .chunks
            .iter()
            .filter(|(o, _)| (pos..pos + size).contains(o))
            .flat_map(|(_, f)| f.iter().copied())
            .collect();
        pos += size;
        m.v.messages += 1;
        match fl & TYPE_MASK {
            TYPE_REPLY => continue,
            TYPE_COMMAND => {}
            _ => {
                if wants_reply {
                    if let Some(r) = m.next_reply(n, id, command)? {
                        let r = r.clone();
                        m.check(n, &r, &Expect::Err(libc::EINVAL), body)?;
                    } else {
                        break;
                    }
                }
                continue;
            }
        }
        if command == DMA_MAP && !fds.is_empty() {
            m.v.map_fds += 1;
        }
        let (e, close) = m.expect(command, body, &fds);
        let ok = if wants_reply {
            let Some(r) = m.next_reply(n, id, command)? else {
                break;
            };
            let r = r.clone();
            let ok = m.check(n, &r, &e, body)?;
            if ok && command == GET_REGION_INFO {
                m.v.region_infos += 1;
            }
            if close == Close::IfRefused {
                if !ok {
                    break; // a refused first VERSION ends the session
                }
                m.negotiated = Tri::Yes;
                let caps = String::from_utf8_lossy(&r.body);
                m.write_multi = if caps.contains("\"write_multiple\":true") {
                    Tri::Yes
                } else {
                    Tri::No
                };
            }
            if command == REGION_WRITE_MULTI && m.write_multi == Tri::Unknown && ok {
                m.write_multi = Tri::Yes;
            }
            if m.negotiated == Tri::Unknown {
                // A reply after the NO_REPLY VERSION: it was accepted.
                m.negotiated = Tri::Yes;
            }
            Some(ok)
        } else {
            if close == Close::IfRefused {
                if matches!(e, Expect::Err(_)) {
                    break; // refused for sure: the session ends
                }
                m.negotiated = Tri::Unknown;
                m.write_multi = Tri::Unknown;
                m.maybe_closed = true;
            }
            None
        };
        m.apply(command, body, &fds, &e, ok);
    }
    if let Some(r) = m.replies.next() {
        return Err(format!(
            "an unexpected reply (id {:#x}, command {}, flags {:#x}, error {}) after message {n}",
            r.id, r.command, r.flags, r.error
        ));
    }
    if out.fds_received > m.v.region_infos {
        return Err(format!(
            "{} descriptors came with replies, but only {} region-info replies may carry one",
            out.fds_received, m.v.region_infos
        ));
    }
    Ok(m.v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u16, command: u16, flags: u32, body: &[u8]) -> Vec<u8> {
        let mut m = header(id, command, (HEADER + body.len()) as u32, flags, 0).to_vec();
        m.extend_from_slice(body);
        m
    }

    fn reply(id: u16, command: u16, body: Vec<u8>) -> Reply {
        Reply {
            id,
            command,
            size: (HEADER + body.len()) as u32,
            flags: TYPE_REPLY,
            error: 0,
            body,
        }
    }

    fn error(id: u16, command: u16, errno: i32) -> Reply {
        Reply {
            id,
            command,
            size: HEADER as u32,
            flags: TYPE_REPLY | ERROR,
            error: errno as u32,
            body: Vec::new(),
        }
    }

    /// VERSION, DEVICE_GET_INFO, an unknown command, a NO_REPLY one, and what a correct
    /// server answers.
    fn session() -> (Vec<u8>, Outcome) {
        let mut stream = msg(1, VERSION, 0, &Body::default().u16(0).u16(0).raw(b"{}\0").0);
        stream.extend(msg(
            2,
            DEVICE_GET_INFO,
            0,
            &Body::default().u32(16).raw(&[0; 12]).0,
        ));
        stream.extend(msg(3, 99, 0, &[]));
        stream.extend(msg(4, 99, NO_REPLY, &[]));
        let caps = b"{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576}}\0";
        let out = Outcome {
            sent: stream.len(),
            chunks: vec![(0, Vec::new())],
            replies: vec![
                reply(1, VERSION, Body::default().u16(0).u16(0).raw(caps).0),
                reply(
                    2,
                    DEVICE_GET_INFO,
                    Body::default().u32(16).u32(3).u32(9).u32(5).0,
                ),
                error(3, 99, libc::ENOSYS),
            ],
            ..Outcome::default()
        };
        (stream, out)
    }

    #[test]
    fn a_correct_session_passes() {
        let (stream, out) = session();
        let v = check(&stream, &out, true).unwrap();
        assert_eq!(v.messages, 4);
    }

    #[test]
    fn the_oracle_catches_wrong_answers() {
        let (stream, mut out) = session();
        out.replies.pop();
        assert!(check(&stream, &out, true)
            .unwrap_err()
            .contains("got no reply"));
        let (_, mut out) = session();
        out.replies[2] = error(3, 99, libc::EINVAL);
        assert!(check(&stream, &out, true)
            .unwrap_err()
            .contains("expected error"));
        let (_, mut out) = session();
        out.replies.push(error(4, 99, libc::ENOSYS));
        assert!(check(&stream, &out, true)
            .unwrap_err()
            .contains("unexpected reply"));
        let (_, mut out) = session();
        out.replies[1].body[8] = 8;
        assert!(check(&stream, &out, true)
            .unwrap_err()
            .contains("device info"));
        let (_, mut out) = session();
        out.replies.swap(1, 2);
        assert!(check(&stream, &out, true)
            .unwrap_err()
            .contains("answered by a reply"));
        let (_, mut out) = session();
        out.fds_received = 1;
        assert!(check(&stream, &out, true)
            .unwrap_err()
            .contains("descriptors came"));
    }

    #[test]
    fn dma_maps_are_tracked_for_overlaps_and_unmaps() {
        let mut stream = msg(1, VERSION, 0, &Body::default().u16(0).u16(0).raw(b"\0").0);
        let map = |id, iova| {
            msg(
                id,
                DMA_MAP,
                0,
                &Body::default().u32(32).u32(3).u64(0).u64(iova).u64(8192).0,
            )
        };
        let m1 = map(2, 0x10000);
        let m2 = map(3, 0x11000);
        let unmap = msg(
            4,
            DMA_UNMAP,
            0,
            &Body::default().u32(24).u32(0).u64(0x10000).u64(8192).0,
        );
        let m3 = map(5, 0x11000);
        let mut chunks = vec![(0, Vec::new())];
        for (m, fd) in [(&m1, true), (&m2, true), (&unmap, false), (&m3, false)] {
            chunks.push((
                stream.len(),
                if fd { vec![Fd::Memfd(8192)] } else { vec![] },
            ));
            stream.extend_from_slice(m);
        }
        let caps = b"{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1}}\0";
        let out = Outcome {
            sent: stream.len(),
            chunks,
            replies: vec![
                reply(1, VERSION, Body::default().u16(0).u16(0).raw(caps).0),
                reply(2, DMA_MAP, vec![]),
                error(3, DMA_MAP, libc::EEXIST),
                reply(4, DMA_UNMAP, unmap[HEADER..HEADER + 24].to_vec()),
                reply(5, DMA_MAP, vec![]),
            ],
            ..Outcome::default()
        };
        let v = check(&stream, &out, true).unwrap();
        assert_eq!(v.map_fds, 2);
        let mut bad = out;
        bad.replies[2] = reply(3, DMA_MAP, vec![]);
        assert!(
            check(&stream, &bad, true).is_err(),
            "an overlapping map must be refused"
        );
    }
}
