//! A reference walker of split-ring descriptor chains, written from the virtio 1.2 rules
//! (2.7.5, 2.7.5.3) and the limits docs/security.md states, independently of the
//! virtqueue engine: it decides which chains a device must accept (and what their buffers
//! are) and which must put it into DEVICE_NEEDS_RESET.
//!
//! A chain is refused when: the head or a `next` is outside its table; it visits more
//! descriptors than its table holds (a loop); it has more than 32768 data descriptors; an
//! indirect descriptor has NEXT, is inside an indirect table, has a length of zero or not a
//! multiple of 16, more than 32768 entries, or lies outside host memory; a readable
//! descriptor follows a writable one; the total length exceeds `u32::MAX`; a non-empty
//! buffer lies outside host memory. The WRITE flag of an indirect descriptor is ignored.

/// Most data descriptors of a chain, and most entries of an indirect table.
pub const MAX_DESCRIPTORS: u32 = 32768;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

/// A buffer of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    pub addr: u64,
    pub len: u32,
}

/// A valid chain: its non-empty buffers in order, and the indirect table it read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub readable: Vec<Seg>,
    pub writable: Vec<Seg>,
    pub readable_len: u64,
    pub writable_len: u64,
    pub table: Option<Seg>,
}

/// Host memory as the walker sees it.
pub trait Ram {
    /// Reads host memory (the range is known to be inside it).
    fn read(&self, addr: u64, buf: &mut [u8]);
    /// Whether `[addr, addr+len)` lies in host memory.
    fn contains(&self, addr: u64, len: u64) -> bool;
}

#[derive(Debug, Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

fn desc(ram: &dyn Ram, at: u64) -> Desc {
    let mut b = [0u8; 16];
    ram.read(at, &mut b);
    Desc {
        addr: u64::from_le_bytes(b[0..8].try_into().unwrap()),
        len: u32::from_le_bytes(b[8..12].try_into().unwrap()),
        flags: u16::from_le_bytes(b[12..14].try_into().unwrap()),
        next: u16::from_le_bytes(b[14..16].try_into().unwrap()),
    }
}

struct State {
    chain: Chain,
    seen_writable: bool,
    total: u64,
    data: u32,
}

impl State {
    fn data(&mut self, ram: &dyn Ram, d: &Desc) -> Result<(), String> {
        self.data += 1;
        if self.data > MAX_DESCRIPTORS {
            return Err("more than 32768 data descriptors".into());
        }
        let w = d.flags & F_WRITE != 0;
        if !w && self.seen_writable {
            return Err("a readable descriptor after a writable one".into());
        }
        self.seen_writable |= w;
        self.total += u64::from(d.len);
        if self.total > u64::from(u32::MAX) {
            return Err("total length above u32::MAX".into());
        }
        if d.len == 0 {
            return Ok(());
        }
        if d.addr.checked_add(u64::from(d.len)).is_none() || !ram.contains(d.addr, d.len.into()) {
            return Err(format!(
                "buffer {:#x}+{:#x} outside host memory",
                d.addr, d.len
            ));
        }
        let s = Seg {
            addr: d.addr,
            len: d.len,
        };
        if w {
            self.chain.writable.push(s);
            self.chain.writable_len += u64::from(d.len);
        } else {
            self.chain.readable.push(s);
            self.chain.readable_len += u64::from(d.len);
        }
        Ok(())
    }

    fn indirect(&mut self, ram: &dyn Ram, d: &Desc) -> Result<(), String> {
        if d.flags & F_NEXT != 0 {
            return Err("an indirect descriptor with NEXT".into());
        }
        if d.len == 0 || d.len % 16 != 0 {
            return Err(format!("indirect table of {} bytes", d.len));
        }
        let entries = d.len / 16;
        if entries > MAX_DESCRIPTORS {
            return Err(format!("indirect table of {entries} entries"));
        }
        if d.addr.checked_add(u64::from(d.len)).is_none() || !ram.contains(d.addr, d.len.into()) {
            return Err(format!(
                "indirect table {:#x}+{:#x} outside host memory",
                d.addr, d.len
            ));
        }
        self.chain.table = Some(Seg {
            addr: d.addr,
            len: d.len,
        });
        let mut i = 0u32;
        for _ in 0..entries {
            let e = desc(ram, d.addr + 16 * u64::from(i));
            if e.flags & F_INDIRECT != 0 {
                return Err("an indirect descriptor inside an indirect table".into());
            }
            self.data(ram, &e)?;
            if e.flags & F_NEXT == 0 {
                return Ok(());
            }
            if u32::from(e.next) >= entries {
                return Err(format!("next {} outside the indirect table", e.next));
            }
            i = u32::from(e.next);
        }
        Err("a loop in the indirect table".into())
    }
}

/// Walks the chain at `head` of the descriptor table at `table` (`size` entries).
pub fn walk(ram: &dyn Ram, table: u64, size: u16, head: u16) -> Result<Chain, String> {
    if head >= size {
        return Err(format!("head {head} outside a table of {size}"));
    }
    let mut st = State {
        chain: Chain {
            head,
            ..Chain::default()
        },
        seen_writable: false,
        total: 0,
        data: 0,
    };
    let mut i = head;
    for _ in 0..size {
        let d = desc(ram, table + 16 * u64::from(i));
        if d.flags & F_INDIRECT != 0 {
            st.indirect(ram, &d)?;
            return Ok(st.chain);
        }
        st.data(ram, &d)?;
        if d.flags & F_NEXT == 0 {
            return Ok(st.chain);
        }
        if d.next >= size {
            return Err(format!("next {} outside a table of {size}", d.next));
        }
        i = d.next;
    }
    Err("a descriptor loop".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Vec8(Vec<u8>, u64);

    impl Ram for Vec8 {
        fn read(&self, addr: u64, buf: &mut [u8]) {
            let o = (addr - self.1) as usize;
            buf.copy_from_slice(&self.0[o..o + buf.len()]);
        }
        fn contains(&self, addr: u64, len: u64) -> bool {
            addr >= self.1 && addr + len <= self.1 + self.0.len() as u64
        }
    }

    fn put(m: &mut Vec8, at: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let o = (at - m.1) as usize;
        m.0[o..o + 8].copy_from_slice(&addr.to_le_bytes());
        m.0[o + 8..o + 12].copy_from_slice(&len.to_le_bytes());
        m.0[o + 12..o + 14].copy_from_slice(&flags.to_le_bytes());
        m.0[o + 14..o + 16].copy_from_slice(&next.to_le_bytes());
    }

    #[test]
    fn rules() {
        let b = 0x1000;
        let mut m = Vec8(vec![0; 0x4000], b);
        // Readable, then writable through an indirect table.
        put(&mut m, b, b + 0x100, 16, F_NEXT, 1);
        put(&mut m, b + 16, b + 0x2000, 32, F_INDIRECT | F_WRITE, 0);
        put(&mut m, b + 0x2000, b + 0x200, 0, F_NEXT, 1);
        put(&mut m, b + 0x2010, b + 0x300, 8, F_WRITE, 0);
        let c = walk(&m, b, 4, 0).unwrap();
        assert_eq!((c.readable_len, c.writable_len), (16, 8));
        assert_eq!(
            c.table,
            Some(Seg {
                addr: b + 0x2000,
                len: 32
            })
        );
        // A loop and a next outside the indirect table.
        put(&mut m, b + 0x2010, b + 0x300, 8, F_WRITE | F_NEXT, 0);
        assert!(walk(&m, b, 4, 0).unwrap_err().contains("loop"));
        put(&mut m, b + 0x2010, b + 0x300, 8, F_WRITE | F_NEXT, 2);
        assert!(walk(&m, b, 4, 0)
            .unwrap_err()
            .contains("outside the indirect"));
        // Readable after writable.
        put(&mut m, b, b + 0x100, 16, F_WRITE | F_NEXT, 1);
        put(&mut m, b + 16, b + 0x100, 16, 0, 0);
        assert!(walk(&m, b, 4, 0).unwrap_err().contains("after a writable"));
        // Out of memory; zero length anywhere is fine.
        put(&mut m, b, b + 0x3ff8, 16, 0, 0);
        assert!(walk(&m, b, 4, 0)
            .unwrap_err()
            .contains("outside host memory"));
        put(&mut m, b, 0, 0, 0, 0);
        assert!(walk(&m, b, 4, 0).is_ok());
        put(&mut m, b, u64::MAX, 1, 0, 0);
        assert!(walk(&m, b, 4, 0).is_err());
        // Direct loops, head range, indirect with next, nested indirect, bad table sizes.
        put(&mut m, b, b, 1, F_NEXT, 0);
        assert!(walk(&m, b, 4, 0).unwrap_err().contains("loop"));
        assert!(walk(&m, b, 4, 4).is_err());
        put(&mut m, b, b + 0x2000, 16, F_INDIRECT | F_NEXT, 1);
        assert!(walk(&m, b, 4, 0).unwrap_err().contains("NEXT"));
        put(&mut m, b, b + 0x2000, 16, F_INDIRECT, 0);
        put(&mut m, b + 0x2000, b + 0x2000, 16, F_INDIRECT, 0);
        assert!(walk(&m, b, 4, 0).unwrap_err().contains("inside"));
        for len in [0, 8, 24] {
            put(&mut m, b, b + 0x2000, len, F_INDIRECT, 0);
            assert!(walk(&m, b, 4, 0).unwrap_err().contains("table of"));
        }
        // The total length.
        put(&mut m, b, b, u32::MAX, F_NEXT, 1);
        put(&mut m, b + 16, b, 1, 0, 0);
        assert!(walk(&m, b, 4, 0).is_err());
    }
}
