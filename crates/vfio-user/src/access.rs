//! Host accesses that arrive as REGION_READ/REGION_WRITE: dispatch over the BAR's areas by
//! [`AreaKind`], and configuration-space accesses with trapped ranges forwarded to the
//! function.
//!
//! An access may cover several areas (QEMU reads the whole configuration space at once, for
//! instance); it is split at area and trapped-range boundaries and each piece goes where it
//! belongs. Bytes outside any area read as zero and ignore writes. The MSI-X table and PBA are
//! emulated by the client; should an access reach us anyway, the table reads as zero and the
//! PBA reports nothing pending.

use crate::function::Function;
use crate::protocol::CONFIG_REGION;
use crate::stats::{bump, Counters};
use epf_epc::AreaKind;

/// A failed access, as an errno for the error reply.
pub(crate) type Errno = i32;

/// The buffer of one access: read into it, or write from it.
enum Buf<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

impl Buf<'_> {
    fn len(&self) -> usize {
        match self {
            Buf::Read(b) => b.len(),
            Buf::Write(b) => b.len(),
        }
    }
}

impl Function {
    /// Reads `buf.len()` bytes at `offset` of region `region`.
    pub fn region_read(
        &self,
        region: u32,
        offset: u64,
        buf: &mut [u8],
        c: &Counters,
    ) -> Result<(), Errno> {
        self.region_access(region, offset, Buf::Read(buf), c)
    }

    /// Writes `data` at `offset` of region `region`.
    pub fn region_write(
        &self,
        region: u32,
        offset: u64,
        data: &[u8],
        c: &Counters,
    ) -> Result<(), Errno> {
        self.region_access(region, offset, Buf::Write(data), c)
    }

    /// Checks that `len` bytes at `offset` lie inside region `region`, which exists.
    pub fn check_access(&self, region: u32, offset: u64, len: usize) -> Result<(), Errno> {
        let size = self.region_size(region);
        let end = offset.checked_add(len as u64).ok_or(libc::EINVAL)?;
        if size == 0 || end > size || !(region < 6 || region == CONFIG_REGION) {
            return Err(libc::EINVAL);
        }
        Ok(())
    }

    fn region_access(
        &self,
        region: u32,
        offset: u64,
        buf: Buf<'_>,
        c: &Counters,
    ) -> Result<(), Errno> {
        self.check_access(region, offset, buf.len())?;
        if !self.link_up() {
            // Nothing answers behind a link that is down: reads complete with all-ones.
            if let Buf::Read(b) = buf {
                b.fill(0xff);
            }
            return Ok(());
        }
        match region {
            0..=5 => self.bar_access(region as u8, offset as usize, buf, c),
            CONFIG_REGION => {
                self.config_access(offset as usize, buf, c);
                Ok(())
            }
            _ => Err(libc::EINVAL),
        }
    }

    /// A BAR access; the range was checked against the BAR size.
    fn bar_access(
        &self,
        bar: u8,
        offset: usize,
        mut buf: Buf<'_>,
        c: &Counters,
    ) -> Result<(), Errno> {
        let spec = self.spec.bars[bar as usize].as_ref().ok_or(libc::EINVAL)?;
        let end = offset + buf.len();
        let mut pos = offset;
        while pos < end {
            let p = pos as u64;
            let (seg_end, kind) = match spec.area_at(p) {
                Some(a) => (((a.offset + a.size) as usize).min(end), Some(a.kind)),
                None => {
                    let next = spec
                        .areas
                        .iter()
                        .filter(|a| a.offset > p)
                        .map(|a| a.offset as usize)
                        .min()
                        .unwrap_or(end);
                    (next.min(end), None)
                }
            };
            let range = pos - offset..seg_end - offset;
            match (&mut buf, kind) {
                (Buf::Read(b), Some(AreaKind::Trapped)) => {
                    bump(&c.trapped_reads);
                    let part = &mut b[range];
                    part.fill(0);
                    self.handler.bar_read(bar, p, part);
                }
                (Buf::Write(d), Some(AreaKind::Trapped)) => {
                    bump(&c.trapped_writes);
                    self.handler.bar_write(bar, p, &d[range]);
                }
                (Buf::Write(d), Some(AreaKind::Doorbell)) => {
                    bump(&c.doorbells);
                    self.handler.bar_write(bar, p, &d[range]);
                }
                (Buf::Read(b), Some(AreaKind::Memory)) => {
                    bump(&c.memory_accesses);
                    let mem = self.bar_mem[bar as usize].as_ref().ok_or(libc::EIO)?;
                    mem.read(p, &mut b[range]).map_err(|_| libc::EIO)?;
                }
                (Buf::Write(d), Some(AreaKind::Memory)) => {
                    bump(&c.memory_accesses);
                    let mem = self.bar_mem[bar as usize].as_ref().ok_or(libc::EIO)?;
                    mem.write(p, &d[range]).map_err(|_| libc::EIO)?;
                }
                (Buf::Read(b), _) => b[range].fill(0),
                (Buf::Write(_), _) => {}
            }
            pos = seg_end;
        }
        Ok(())
    }

    /// A configuration-space access; the range was checked against the region size.
    fn config_access(&self, offset: usize, mut buf: Buf<'_>, c: &Counters) {
        match buf {
            Buf::Read(_) => bump(&c.config_reads),
            Buf::Write(_) => bump(&c.config_writes),
        }
        let end = offset + buf.len();
        let mut pos = offset;
        while pos < end {
            let trapped = self
                .config_trapped
                .iter()
                .find(|r| r.start <= pos && pos < r.end);
            let seg_end = match trapped {
                Some(r) => r.end.min(end),
                None => self
                    .config_trapped
                    .iter()
                    .filter(|r| r.start > pos)
                    .map(|r| r.start)
                    .min()
                    .unwrap_or(end)
                    .min(end),
            };
            let range = pos - offset..seg_end - offset;
            match (&mut buf, trapped.is_some()) {
                (Buf::Read(b), true) => {
                    let part = &mut b[range];
                    part.fill(0);
                    self.handler.config_read(pos, part);
                }
                (Buf::Write(d), true) => self.handler.config_write(pos, &d[range]),
                (Buf::Read(b), false) => self.config().read(pos, &mut b[range]),
                (Buf::Write(d), false) => {
                    self.config().write(pos, &d[range.clone()]);
                    self.handler.config_written(pos, &d[range]);
                }
            }
            pos = seg_end;
        }
    }
}
