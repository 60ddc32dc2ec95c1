//! What one device case is: the features the driver accepts, the queue size, then what the
//! host does, in order: writes to its RAM (buffers, headers, indirect tables), descriptor
//! table entries, heads made available, notifications, backend input, and points where the
//! device must have settled. Its text form (the corpus format) is one op per line.

use epf_fuzz::corpus::{hex_or_dash, unhex};
use epf_fuzz::settings::parse_u64;

/// One thing the host does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Writes `bytes` to host RAM at `addr`.
    Ram { addr: u64, bytes: Vec<u8> },
    /// Writes entry `index` of queue `q`'s descriptor table.
    Desc {
        q: u16,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    },
    /// Makes `head` available on queue `q` (next ring slot, index published).
    Avail { q: u16, head: u16 },
    /// Sets queue `q`'s available index to `idx` (no ring entries written).
    AvailIdx { q: u16, idx: u16 },
    /// Notifies queue `q`.
    Notify { q: u16 },
    /// Backend input: console input bytes, or a frame the endpoint's network sends.
    Input(Vec<u8>),
    /// The device must settle here (complete what it must, or need a reset).
    Settle,
}

/// A whole case.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Case {
    /// Features the driver accepts (of those offered; VERSION_1 is always added).
    pub features: u64,
    /// Size of every queue set up.
    pub qsize: u16,
    pub ops: Vec<Op>,
}

fn num(f: Option<&str>, line: &str) -> Result<u64, String> {
    f.and_then(parse_u64)
        .ok_or_else(|| format!("bad number in `{line}`"))
}

impl Case {
    pub fn encode(&self) -> String {
        let mut s = format!("features {:#x}\nqsize {}\n", self.features, self.qsize);
        for op in &self.ops {
            let line = match op {
                Op::Ram { addr, bytes } => format!("ram {addr:#x} {}", hex_or_dash(bytes)),
                Op::Desc {
                    q,
                    index,
                    addr,
                    len,
                    flags,
                    next,
                } => format!("desc {q} {index} {addr:#x} {len:#x} {flags:#x} {next}"),
                Op::Avail { q, head } => format!("avail {q} {head}"),
                Op::AvailIdx { q, idx } => format!("idx {q} {idx}"),
                Op::Notify { q } => format!("notify {q}"),
                Op::Input(b) => format!("input {}", hex_or_dash(b)),
                Op::Settle => "settle".into(),
            };
            s.push_str(&line);
            s.push('\n');
        }
        s
    }

    pub fn decode(text: &str) -> Result<Case, String> {
        let mut c = Case::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut f = line.split_whitespace();
            let kw = f.next().unwrap_or_default();
            let mut n = || num(f.next(), line);
            match kw {
                "features" => c.features = n()?,
                "qsize" => c.qsize = n()? as u16,
                "ram" => {
                    let addr = n()?;
                    let bytes = unhex(line.split_whitespace().nth(2).unwrap_or_default())?;
                    c.ops.push(Op::Ram { addr, bytes });
                }
                "desc" => c.ops.push(Op::Desc {
                    q: n()? as u16,
                    index: n()? as u16,
                    addr: n()?,
                    len: n()? as u32,
                    flags: n()? as u16,
                    next: n()? as u16,
                }),
                "avail" => c.ops.push(Op::Avail {
                    q: n()? as u16,
                    head: n()? as u16,
                }),
                "idx" => c.ops.push(Op::AvailIdx {
                    q: n()? as u16,
                    idx: n()? as u16,
                }),
                "notify" => c.ops.push(Op::Notify { q: n()? as u16 }),
                "input" => c.ops.push(Op::Input(unhex(
                    line.split_whitespace().nth(1).unwrap_or_default(),
                )?)),
                "settle" => c.ops.push(Op::Settle),
                _ => return Err(format!("unknown op `{line}`")),
            }
        }
        if !c.qsize.is_power_of_two() {
            return Err(format!("queue size {} is not a power of two", c.qsize));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        let c = Case {
            features: 0x1_3000_0000,
            qsize: 16,
            ops: vec![
                Op::Ram {
                    addr: 0x1_0000_4000,
                    bytes: vec![1, 2, 3],
                },
                Op::Desc {
                    q: 1,
                    index: 15,
                    addr: u64::MAX,
                    len: u32::MAX,
                    flags: 0xffff,
                    next: 65535,
                },
                Op::Avail { q: 0, head: 3 },
                Op::AvailIdx { q: 0, idx: 9 },
                Op::Notify { q: 4 },
                Op::Input(vec![]),
                Op::Settle,
            ],
        };
        assert_eq!(Case::decode(&c.encode()).unwrap(), c);
        assert!(Case::decode("qsize 3").is_err());
        assert!(Case::decode("qsize 4\nfrob").is_err());
    }
}
