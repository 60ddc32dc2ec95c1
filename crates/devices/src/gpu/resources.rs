//! 2D resources: their pixels (held by the device), the driver's backing pages (a scatter
//! list in host memory) and the memory budget (`--max-memory`) every allocation is charged
//! to before it is made. A transfer copies from the backing into the pixels, row by row, after
//! checking that every byte it touches lies inside both.

use super::protocol::{Format, GpuError, Rect, BYTES_PER_PIXEL};
use epf_epc::HostMemory;
use std::collections::HashMap;

/// Backing entries one resource may have at most: enough for a 64 MiB resource in 4 KiB
/// pages, the most a scatter list from Linux needs for the resources the budget allows.
pub const MAX_BACKING_ENTRIES: u32 = 16384;
/// What each resource costs beyond its pixels (bookkeeping), so that a flood of tiny
/// resources also exhausts the budget.
const RESOURCE_OVERHEAD: u64 = 256;
/// What each backing entry costs.
const ENTRY_COST: u64 = 16;

/// The driver's pages behind a resource: `(host address, length)` pieces, in order.
#[derive(Debug, Default)]
pub struct Backing {
    entries: Vec<(u64, u32)>,
    /// Offset of each entry in the backing (prefix sums), for lookups by offset.
    starts: Vec<u64>,
    total: u64,
}

impl Backing {
    /// A backing of `entries`.
    pub fn new(entries: Vec<(u64, u32)>) -> Backing {
        let mut starts = Vec::with_capacity(entries.len());
        let mut total = 0u64;
        for &(_, len) in &entries {
            starts.push(total);
            total += u64::from(len);
        }
        Backing {
            entries,
            starts,
            total,
        }
    }

    /// Total length in bytes.
    pub fn bytes(&self) -> u64 {
        self.total
    }

    /// Copies `buf.len()` bytes from offset `at` of the backing (the caller checked the
    /// range). A host-memory error (a page outside what the host mapped) is reported.
    pub fn read(&self, mem: &dyn HostMemory, at: u64, buf: &mut [u8]) -> Result<(), GpuError> {
        let mut i = match self.starts.binary_search(&at) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let mut done = 0usize;
        let mut pos = at;
        while done < buf.len() {
            let (addr, len) = *self.entries.get(i).ok_or(GpuError::InvalidParameter)?;
            let start = self.starts[i];
            let within = pos - start;
            if within >= u64::from(len) {
                i += 1;
                continue;
            }
            let n = ((u64::from(len) - within) as usize).min(buf.len() - done);
            let host = addr.checked_add(within).ok_or(GpuError::InvalidParameter)?;
            mem.read(host, &mut buf[done..done + n])
                .map_err(|_| GpuError::Unspec)?;
            done += n;
            pos += n as u64;
            i += 1;
        }
        Ok(())
    }
}

/// A 2D resource.
#[derive(Debug)]
pub struct Resource {
    pub format: Format,
    pub width: u32,
    pub height: u32,
    /// `width * height * 4` bytes, rows packed.
    pub pixels: Vec<u8>,
    pub backing: Option<Backing>,
}

impl Resource {
    /// Bytes per row.
    pub fn stride(&self) -> u64 {
        u64::from(self.width) * u64::from(BYTES_PER_PIXEL)
    }

    /// Bytes the resource's pixels take.
    pub fn size(&self) -> u64 {
        self.stride() * u64::from(self.height)
    }
}

/// The resources of the current driver and the memory they are charged.
#[derive(Debug)]
pub struct Resources {
    map: HashMap<u32, Resource>,
    used: u64,
    limit: u64,
}

impl Resources {
    /// No resources; at most `limit` bytes of resource memory.
    pub fn new(limit: u64) -> Resources {
        Resources {
            map: HashMap::new(),
            used: 0,
            limit,
        }
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Number of resources.
    pub fn count(&self) -> usize {
        self.map.len()
    }

    fn charge(&mut self, bytes: u64) -> Result<(), GpuError> {
        let total = self.used.checked_add(bytes).ok_or(GpuError::OutOfMemory)?;
        if total > self.limit {
            return Err(GpuError::OutOfMemory);
        }
        self.used = total;
        Ok(())
    }

    fn cost(r: &Resource) -> u64 {
        RESOURCE_OVERHEAD
            + r.size()
            + r.backing
                .as_ref()
                .map_or(0, |b| b.entries.len() as u64 * ENTRY_COST)
    }

    /// RESOURCE_CREATE_2D.
    pub fn create(
        &mut self,
        id: u32,
        format: u32,
        width: u32,
        height: u32,
    ) -> Result<(), GpuError> {
        if id == 0 || self.map.contains_key(&id) {
            return Err(GpuError::InvalidResourceId);
        }
        let format = Format::from_wire(format).ok_or(GpuError::InvalidParameter)?;
        if width == 0 || height == 0 {
            return Err(GpuError::InvalidParameter);
        }
        let size = (u64::from(width) * u64::from(height))
            .checked_mul(u64::from(BYTES_PER_PIXEL))
            .ok_or(GpuError::OutOfMemory)?;
        let cost = size + RESOURCE_OVERHEAD;
        self.charge(cost)?;
        let Ok(len) = usize::try_from(size) else {
            self.used -= cost;
            return Err(GpuError::OutOfMemory);
        };
        let mut pixels = Vec::new();
        if pixels.try_reserve_exact(len).is_err() {
            self.used -= cost;
            return Err(GpuError::OutOfMemory);
        }
        pixels.resize(len, 0);
        self.map.insert(
            id,
            Resource {
                format,
                width,
                height,
                pixels,
                backing: None,
            },
        );
        Ok(())
    }

    /// RESOURCE_UNREF.
    pub fn unref(&mut self, id: u32) -> Result<(), GpuError> {
        let r = self.map.remove(&id).ok_or(GpuError::InvalidResourceId)?;
        self.used -= Self::cost(&r);
        Ok(())
    }

    /// The resource `id`.
    pub fn get(&self, id: u32) -> Result<&Resource, GpuError> {
        self.map.get(&id).ok_or(GpuError::InvalidResourceId)
    }

    /// Checks that `nr_entries` backing entries may be attached to `id` (before they are
    /// read from the command).
    pub fn check_attach(&self, id: u32, nr_entries: u32) -> Result<(), GpuError> {
        let r = self.get(id)?;
        if r.backing.is_some() {
            return Err(GpuError::Unspec);
        }
        if nr_entries == 0 || nr_entries > MAX_BACKING_ENTRIES {
            return Err(GpuError::InvalidParameter);
        }
        Ok(())
    }

    /// RESOURCE_ATTACH_BACKING with the entries read from the command: each must lie in
    /// host memory, and together they must hold the whole resource.
    pub fn attach(
        &mut self,
        id: u32,
        entries: Vec<(u64, u32)>,
        mem: &dyn HostMemory,
    ) -> Result<(), GpuError> {
        self.check_attach(id, entries.len() as u32)?;
        for &(addr, len) in &entries {
            if len == 0 || mem.check_range(addr, u64::from(len)).is_err() {
                return Err(GpuError::InvalidParameter);
            }
        }
        let backing = Backing::new(entries);
        let r = self.get(id)?;
        if backing.bytes() < r.size() {
            return Err(GpuError::InvalidParameter);
        }
        self.charge(backing.entries.len() as u64 * ENTRY_COST)?;
        if let Some(r) = self.map.get_mut(&id) {
            r.backing = Some(backing);
        }
        Ok(())
    }

    /// RESOURCE_DETACH_BACKING.
    pub fn detach(&mut self, id: u32) -> Result<(), GpuError> {
        let r = self.map.get_mut(&id).ok_or(GpuError::InvalidResourceId)?;
        let b = r.backing.take().ok_or(GpuError::Unspec)?;
        self.used -= b.entries.len() as u64 * ENTRY_COST;
        Ok(())
    }

    /// TRANSFER_TO_HOST_2D: rows of `rect` from the backing, starting at byte `offset` with
    /// the resource's stride, into the pixels. Returns the bytes copied.
    pub fn transfer(
        &mut self,
        id: u32,
        rect: Rect,
        offset: u64,
        mem: &dyn HostMemory,
    ) -> Result<u64, GpuError> {
        let r = self.map.get_mut(&id).ok_or(GpuError::InvalidResourceId)?;
        let backing = r.backing.as_ref().ok_or(GpuError::Unspec)?;
        if !rect.within(r.width, r.height) {
            return Err(GpuError::InvalidParameter);
        }
        if rect.is_empty() {
            return Ok(0);
        }
        let stride = r.stride();
        let row = u64::from(rect.width) * u64::from(BYTES_PER_PIXEL);
        // The last byte read: offset + stride * (height - 1) + row, in u64 without overflow
        // for any u32 rectangle within the resource and any u64 offset (checked).
        let end = (stride * u64::from(rect.height - 1))
            .checked_add(row)
            .and_then(|v| v.checked_add(offset))
            .ok_or(GpuError::InvalidParameter)?;
        if end > backing.bytes() {
            return Err(GpuError::InvalidParameter);
        }
        let row_len = row as usize;
        for h in 0..u64::from(rect.height) {
            let src = offset + stride * h;
            let dst = ((u64::from(rect.y) + h) * stride
                + u64::from(rect.x) * u64::from(BYTES_PER_PIXEL)) as usize;
            backing.read(mem, src, &mut r.pixels[dst..dst + row_len])?;
        }
        Ok(row * u64::from(rect.height))
    }

    /// Forgets every resource (device reset).
    pub fn clear(&mut self) {
        self.map.clear();
        self.used = 0;
    }
}
