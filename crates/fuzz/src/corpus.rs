//! The corpus: cases that once failed (or that cover a path worth pinning), checked in as
//! text and replayed before every campaign. A corpus file is a list of entries, each
//! introduced by a line `== title`; the lines up to the next entry are the case in the
//! target's text form. Lines starting with `#` are comments anywhere. Being text, an entry
//! survives changes to the generator (a seed would not).

/// One corpus entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub title: String,
    /// The case's text, comments removed.
    pub text: String,
}

/// Splits a corpus file into entries. Text before the first entry must be comments only.
pub fn parse(file: &str) -> Result<Vec<Entry>, String> {
    let mut out: Vec<Entry> = Vec::new();
    for (n, line) in file.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('#') {
            continue;
        }
        if let Some(title) = t.strip_prefix("==") {
            out.push(Entry {
                title: title.trim().to_string(),
                text: String::new(),
            });
            continue;
        }
        match out.last_mut() {
            Some(e) => {
                e.text.push_str(t);
                e.text.push('\n');
            }
            None if t.is_empty() => {}
            None => return Err(format!("line {}: text before the first `==` entry", n + 1)),
        }
    }
    Ok(out)
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(D[usize::from(x >> 4)] as char);
        s.push(D[usize::from(x & 15)] as char);
    }
    s
}

/// Bytes of a hex string (`-` stands for no bytes).
pub fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if s == "-" {
        return Ok(Vec::new());
    }
    if s.len() % 2 != 0 {
        return Err(format!("odd-length hex `{s}`"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| format!("bad hex `{s}`"))
        })
        .collect()
}

/// [`hex`], with `-` for nothing (so that a field is never empty).
pub fn hex_or_dash(b: &[u8]) -> String {
    if b.is_empty() {
        "-".into()
    } else {
        hex(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_comments() {
        let f = "# a corpus\n\n== first\nw 00\n# note\nw 01\n== second\n";
        let e = parse(f).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].title, "first");
        assert_eq!(e[0].text, "w 00\nw 01\n");
        assert_eq!(e[1].text, "");
        assert!(parse("w 00\n== x").is_err());
    }

    #[test]
    fn hex_round_trips() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&b), "0001abff");
        assert_eq!(unhex("0001abff").unwrap(), b);
        assert_eq!(unhex("-").unwrap(), Vec::<u8>::new());
        assert_eq!(hex_or_dash(&[]), "-");
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }
}
