//! What one session case is: the bytes a client writes, write by write, and the descriptors
//! attached to each write (created fresh when the case runs). Its text form (the corpus
//! format) is one line per write: `w <hex or -> [kind,kind,...]`.

use epf_fuzz::corpus::{hex_or_dash, unhex};

/// A descriptor the client attaches to a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fd {
    /// A memfd of this many bytes (sparse: nothing is allocated).
    Memfd(u64),
    /// A regular file of this many bytes in the temporary directory (a disk file system).
    File(u64),
    /// An eventfd, non-blocking.
    Eventfd,
    /// An eventfd whose counter is at its maximum.
    SaturatedEventfd,
    /// An eventfd without O_NONBLOCK.
    BlockingEventfd,
    /// The read end of a pipe.
    PipeRead,
    /// The write end of a pipe.
    PipeWrite,
    /// `/dev/null` (a character device).
    DevNull,
    /// One end of a Unix socket pair.
    Socket,
    /// The temporary directory.
    Dir,
}

impl Fd {
    /// Whether the server may take it as an interrupt eventfd.
    pub fn is_eventfd(self) -> bool {
        matches!(
            self,
            Fd::Eventfd | Fd::SaturatedEventfd | Fd::BlockingEventfd
        )
    }

    fn encode(self) -> String {
        match self {
            Fd::Memfd(n) => format!("m{n}"),
            Fd::File(n) => format!("f{n}"),
            Fd::Eventfd => "e".into(),
            Fd::SaturatedEventfd => "E".into(),
            Fd::BlockingEventfd => "b".into(),
            Fd::PipeRead => "p0".into(),
            Fd::PipeWrite => "p1".into(),
            Fd::DevNull => "n".into(),
            Fd::Socket => "s".into(),
            Fd::Dir => "d".into(),
        }
    }

    fn decode(s: &str) -> Result<Fd, String> {
        let num = |t: &str| {
            t.parse::<u64>()
                .map_err(|_| format!("bad descriptor `{s}`"))
        };
        Ok(match s {
            "e" => Fd::Eventfd,
            "E" => Fd::SaturatedEventfd,
            "b" => Fd::BlockingEventfd,
            "p0" => Fd::PipeRead,
            "p1" => Fd::PipeWrite,
            "n" => Fd::DevNull,
            "s" => Fd::Socket,
            "d" => Fd::Dir,
            _ if s.starts_with('m') => Fd::Memfd(num(&s[1..])?),
            _ if s.starts_with('f') => Fd::File(num(&s[1..])?),
            _ => return Err(format!("bad descriptor `{s}`")),
        })
    }
}

/// One `sendmsg` of the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub bytes: Vec<u8>,
    /// Attached to the write's first byte.
    pub fds: Vec<Fd>,
}

/// A whole session: the writes, then the client shuts its side down and reads until the
/// server closes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Case {
    pub writes: Vec<Write>,
}

impl Case {
    pub fn encode(&self) -> String {
        let mut s = String::new();
        for w in &self.writes {
            s.push_str("w ");
            s.push_str(&hex_or_dash(&w.bytes));
            if !w.fds.is_empty() {
                s.push(' ');
                let kinds: Vec<String> = w.fds.iter().map(|f| f.encode()).collect();
                s.push_str(&kinds.join(","));
            }
            s.push('\n');
        }
        s
    }

    pub fn decode(text: &str) -> Result<Case, String> {
        let mut case = Case::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut f = line.split_whitespace();
            if f.next() != Some("w") {
                return Err(format!("expected `w <hex> [fds]`, got `{line}`"));
            }
            let bytes = unhex(f.next().ok_or("a write without bytes")?)?;
            let fds = match f.next() {
                Some(k) => k.split(',').map(Fd::decode).collect::<Result<_, _>>()?,
                None => Vec::new(),
            };
            if f.next().is_some() {
                return Err(format!("trailing fields in `{line}`"));
            }
            case.writes.push(Write { bytes, fds });
        }
        Ok(case)
    }

    /// The stream the client sends, with the offset each write starts at.
    pub fn stream(&self) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut starts = Vec::with_capacity(self.writes.len());
        for w in &self.writes {
            starts.push(bytes.len());
            bytes.extend_from_slice(&w.bytes);
        }
        (bytes, starts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        let c = Case {
            writes: vec![
                Write {
                    bytes: vec![1, 2, 0xff],
                    fds: vec![Fd::Memfd(4096), Fd::SaturatedEventfd, Fd::PipeWrite],
                },
                Write {
                    bytes: vec![],
                    fds: vec![],
                },
                Write {
                    bytes: vec![0],
                    fds: vec![Fd::File(0), Fd::Dir, Fd::Socket, Fd::DevNull, Fd::PipeRead],
                },
            ],
        };
        assert_eq!(Case::decode(&c.encode()).unwrap(), c);
        assert!(Case::decode("x 00").is_err());
        assert!(Case::decode("w 00 q").is_err());
    }
}
