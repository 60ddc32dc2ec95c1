//! Test support, for this crate's tests and (with the `testing` feature) other crates' tests:
//!
//! * [`TestMemory`]: a `Vec`-backed [`HostMemory`] at a nonzero base address that refuses, and
//!   counts, every access falling outside it;
//! * [`DriverRing`]: the driver side of a split ring in a `TestMemory` (writes descriptors and
//!   available entries, reads used elements and event fields);
//! * [`PackedDriverRing`] (module `packed`): the same for a packed ring.
//!
//! The driver-side helpers panic on misuse (they are test code); they access memory through
//! [`TestMemory::poke`] / [`TestMemory::peek`], which bypass the counters.

use crate::descriptor::{Descriptor, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use crate::layout::{self, Ring};
use crate::{QueueConfig, Segment};
use epf_epc::sync;
use epf_epc::{HostMemError, HostMemory, IN_PLACE_MAX_RANGES};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

mod packed;
pub use packed::PackedDriverRing;

/// Default base address of a [`TestMemory`]: above 4 GiB, so that code confusing host addresses
/// with offsets fails.
pub const TEST_MEMORY_BASE: u64 = 0x1_0000_0000;

/// Host memory for tests: `size` bytes at `base`, backed by a `Vec`.
///
/// Every `read`/`write`/`read_u16`/`write_u16` (and the default `read_u32`/`read_u64`/
/// `write_u32`) outside `[base, base + size)` fails with [`HostMemError::OutOfRange`] (or
/// `Overflow`) and increments [`oob_attempts`](TestMemory::oob_attempts); a failed
/// `check_range` is legitimate and only counted in
/// [`check_failures`](TestMemory::check_failures). Whole-access atomicity comes from a mutex.
#[derive(Debug)]
pub struct TestMemory {
    base: u64,
    data: Mutex<Vec<u8>>,
    oob_attempts: AtomicU64,
    check_failures: AtomicU64,
    accesses: AtomicU64,
    /// Whether [`HostMemory::in_place`] exposes the bytes (like a controller that maps host
    /// memory) or declines (like one behind outbound windows). Off by default.
    in_place: std::sync::atomic::AtomicBool,
    in_place_calls: AtomicU64,
}

impl TestMemory {
    /// `size` zeroed bytes at [`TEST_MEMORY_BASE`].
    pub fn new(size: usize) -> TestMemory {
        TestMemory::with_base(TEST_MEMORY_BASE, size)
    }

    /// `size` zeroed bytes at `base`.
    pub fn with_base(base: u64, size: usize) -> TestMemory {
        assert!(
            base.checked_add(size as u64).is_some(),
            "test memory wraps around"
        );
        TestMemory {
            base,
            data: Mutex::new(vec![0; size]),
            oob_attempts: AtomicU64::new(0),
            check_failures: AtomicU64::new(0),
            accesses: AtomicU64::new(0),
            in_place: std::sync::atomic::AtomicBool::new(false),
            in_place_calls: AtomicU64::new(0),
        }
    }

    /// Lets devices access the bytes in place ([`HostMemory::in_place`]), or not.
    pub fn set_in_place(&self, on: bool) {
        self.in_place.store(on, Ordering::Relaxed);
    }

    /// How many in-place accesses were made.
    pub fn in_place_calls(&self) -> u64 {
        self.in_place_calls.load(Ordering::Relaxed)
    }

    /// First address.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.lock().len() as u64
    }

    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.base + self.size()
    }

    /// Reads/writes attempted outside the memory (all of them were refused).
    pub fn oob_attempts(&self) -> u64 {
        self.oob_attempts.load(Ordering::Relaxed)
    }

    /// `check_range` calls that reported a range outside the memory.
    pub fn check_failures(&self) -> u64 {
        self.check_failures.load(Ordering::Relaxed)
    }

    /// Successful reads and writes through the [`HostMemory`] interface.
    pub fn accesses(&self) -> u64 {
        self.accesses.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panicking test thread cannot leave the bytes in an invalid state.
        sync::lock(&self.data)
    }

    /// Offset of `[addr, addr+len)` inside the memory, if it is entirely inside.
    fn offset(&self, addr: u64, len: u64) -> Result<usize, HostMemError> {
        let end = addr
            .checked_add(len)
            .ok_or(HostMemError::Overflow { addr, len })?;
        let size = self.lock().len() as u64;
        if addr >= self.base && end <= self.base + size {
            Ok((addr - self.base) as usize)
        } else {
            Err(HostMemError::OutOfRange { addr, len })
        }
    }

    /// `offset` for an access: counts refused ones.
    fn access(&self, addr: u64, len: usize) -> Result<usize, HostMemError> {
        match self.offset(addr, len as u64) {
            Ok(o) => {
                self.accesses.fetch_add(1, Ordering::Relaxed);
                Ok(o)
            }
            Err(e) => {
                self.oob_attempts.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Driver-side write (not counted); panics outside the memory.
    pub fn poke(&self, addr: u64, data: &[u8]) {
        let o = self
            .offset(addr, data.len() as u64)
            .expect("poke outside test memory");
        self.lock()[o..o + data.len()].copy_from_slice(data);
    }

    /// Driver-side read (not counted); panics outside the memory.
    pub fn peek(&self, addr: u64, len: usize) -> Vec<u8> {
        let o = self
            .offset(addr, len as u64)
            .expect("peek outside test memory");
        self.lock()[o..o + len].to_vec()
    }

    /// Driver-side u16 write.
    pub fn poke_u16(&self, addr: u64, v: u16) {
        self.poke(addr, &v.to_le_bytes());
    }

    /// Driver-side u16 read.
    pub fn peek_u16(&self, addr: u64) -> u16 {
        let b = self.peek(addr, 2);
        u16::from_le_bytes([b[0], b[1]])
    }

    /// Driver-side u32 read.
    pub fn peek_u32(&self, addr: u64) -> u32 {
        let b = self.peek(addr, 4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Fills the whole memory with `byte`.
    pub fn fill(&self, byte: u8) {
        self.lock().fill(byte);
    }
}

impl HostMemory for TestMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
        let o = self.access(addr, buf.len())?;
        buf.copy_from_slice(&self.lock()[o..o + buf.len()]);
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), HostMemError> {
        let o = self.access(addr, data.len())?;
        self.lock()[o..o + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn check_range(&self, addr: u64, len: u64) -> Result<(), HostMemError> {
        self.offset(addr, len).map(|_| ()).inspect_err(|_| {
            self.check_failures.fetch_add(1, Ordering::Relaxed);
        })
    }

    fn read_u16(&self, addr: u64) -> Result<u16, HostMemError> {
        let mut b = [0; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    fn write_u16(&self, addr: u64, v: u16) -> Result<(), HostMemError> {
        self.write(addr, &v.to_le_bytes())
    }

    fn in_place(
        &self,
        ranges: &[(u64, u32)],
        _write: bool,
        f: &mut dyn FnMut(&mut [libc::iovec]) -> std::io::Result<()>,
    ) -> Option<std::io::Result<()>> {
        if !self.in_place.load(Ordering::Relaxed) || ranges.len() > IN_PLACE_MAX_RANGES {
            return None;
        }
        let offsets: Vec<(usize, usize)> = ranges
            .iter()
            .map(|&(addr, len)| Some((self.access(addr, len as usize).ok()?, len as usize)))
            .collect::<Option<_>>()?;
        let mut data = self.lock();
        let base = data.as_mut_ptr();
        let mut iov: Vec<libc::iovec> = offsets
            .iter()
            .map(|&(o, len)| libc::iovec {
                // SAFETY: `o + len` is inside `data` (checked by `access`); the lock is
                // held while `f` uses the pointers, so the Vec is neither resized nor
                // accessed by anyone else.
                iov_base: unsafe { base.add(o) }.cast(),
                iov_len: len,
            })
            .collect();
        let r = f(&mut iov);
        drop(data);
        self.in_place_calls.fetch_add(1, Ordering::Relaxed);
        Some(r)
    }
}

/// A buffer of a chain built by [`DriverRing::add_chain`]: data to place in a device-readable
/// buffer, or the length of a device-writable one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Buf {
    Readable(Vec<u8>),
    Writable(u32),
}

/// A chain made available by [`DriverRing::add_chain`] / [`DriverRing::add_indirect_chain`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestChain {
    pub head: u16,
    pub readable: Vec<Segment>,
    pub writable: Vec<Segment>,
}

/// The driver side of a split ring living in a [`TestMemory`].
///
/// [`DriverRing::new`] lays the rings out at the start of the memory and uses the rest as a
/// data area for buffers and indirect tables (a bump allocator that wraps around when full).
/// Descriptors for [`add_chain`](DriverRing::add_chain) are taken round robin from the table;
/// tests keep fewer than `size` descriptors outstanding.
#[derive(Debug)]
pub struct DriverRing {
    mem: Arc<TestMemory>,
    cfg: QueueConfig,
    avail_idx: u16,
    last_used: u16,
    next_desc: u16,
    data_start: u64,
    data_next: u64,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

impl DriverRing {
    /// Rings for a queue of `size` entries at the start of `mem` (each area zeroed), the rest
    /// being the data area.
    pub fn new(mem: Arc<TestMemory>, size: u16) -> DriverRing {
        let desc_addr = align_up(mem.base(), 16);
        let avail_addr = desc_addr + layout::desc_table_size(size);
        let used_addr = align_up(avail_addr + layout::avail_ring_size(size), 4);
        let data_start = align_up(used_addr + layout::used_ring_size(size), 64);
        assert!(
            data_start < mem.end(),
            "test memory too small for the rings"
        );
        let cfg = QueueConfig {
            size,
            desc_addr,
            avail_addr,
            used_addr,
        };
        DriverRing::with_config(mem, cfg, data_start)
    }

    /// Rings at the addresses of `cfg` (which must be inside `mem`; areas are zeroed), data
    /// area from `data_start` to the end of the memory.
    pub fn with_config(mem: Arc<TestMemory>, cfg: QueueConfig, data_start: u64) -> DriverRing {
        for (ring, addr) in [
            (Ring::Descriptors, cfg.desc_addr),
            (Ring::Avail, cfg.avail_addr),
            (Ring::Used, cfg.used_addr),
        ] {
            mem.poke(addr, &vec![0; ring.area_size(cfg.size) as usize]);
        }
        DriverRing {
            mem,
            cfg,
            avail_idx: 0,
            last_used: 0,
            next_desc: 0,
            data_start,
            data_next: data_start,
        }
    }

    /// The queue configuration to hand to [`Queue::new`](crate::Queue::new).
    pub fn config(&self) -> QueueConfig {
        self.cfg
    }

    /// The memory.
    pub fn memory(&self) -> &Arc<TestMemory> {
        &self.mem
    }

    /// The memory as the trait object a [`Queue`](crate::Queue) takes.
    pub fn host_memory(&self) -> Arc<dyn HostMemory> {
        self.mem.clone()
    }

    /// Sets the driver's free-running indices and stores them in `avail.idx` / `used.idx`
    /// (pair with `Queue::set_next_avail/set_next_used` to test 16-bit wrap-around).
    pub fn set_indices(&mut self, avail: u16, used: u16) {
        self.avail_idx = avail;
        self.last_used = used;
        self.mem
            .poke_u16(layout::avail_idx_addr(self.cfg.avail_addr), avail);
        self.mem
            .poke_u16(layout::used_idx_addr(self.cfg.used_addr), used);
    }

    /// Writes descriptor `index` of the descriptor table.
    pub fn write_desc(&self, index: u16, d: Descriptor) {
        assert!(index < self.cfg.size);
        self.mem
            .poke(layout::desc_addr(self.cfg.desc_addr, index), &d.to_bytes());
    }

    /// Writes `descs` as a table at `addr` (e.g. an indirect table).
    pub fn write_table(&self, addr: u64, descs: &[Descriptor]) {
        for (i, d) in descs.iter().enumerate() {
            self.mem.poke(addr + 16 * i as u64, &d.to_bytes());
        }
    }

    /// Writes `head` into the next available-ring slot and publishes it (`avail.idx += 1`).
    pub fn push_avail(&mut self, head: u16) {
        self.set_avail_entry(self.avail_idx, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .poke_u16(layout::avail_idx_addr(self.cfg.avail_addr), self.avail_idx);
    }

    /// Writes `head` into the available-ring slot of free-running index `idx`.
    pub fn set_avail_entry(&self, idx: u16, head: u16) {
        self.mem.poke_u16(
            layout::avail_entry_addr(self.cfg.avail_addr, self.cfg.size, idx),
            head,
        );
    }

    /// Stores an arbitrary `avail.idx`.
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.avail_idx = idx;
        self.mem
            .poke_u16(layout::avail_idx_addr(self.cfg.avail_addr), idx);
    }

    /// The driver's `avail.idx`.
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx
    }

    /// Stores `avail.flags`.
    pub fn set_avail_flags(&self, flags: u16) {
        self.mem
            .poke_u16(layout::avail_flags_addr(self.cfg.avail_addr), flags);
    }

    /// Stores `used_event`.
    pub fn set_used_event(&self, v: u16) {
        self.mem.poke_u16(
            layout::used_event_addr(self.cfg.avail_addr, self.cfg.size),
            v,
        );
    }

    /// `used.idx` as the device published it.
    pub fn used_idx(&self) -> u16 {
        self.mem.peek_u16(layout::used_idx_addr(self.cfg.used_addr))
    }

    /// `used.flags`.
    pub fn used_flags(&self) -> u16 {
        self.mem
            .peek_u16(layout::used_flags_addr(self.cfg.used_addr))
    }

    /// `avail_event`.
    pub fn avail_event(&self) -> u16 {
        self.mem
            .peek_u16(layout::avail_event_addr(self.cfg.used_addr, self.cfg.size))
    }

    /// The used element `(id, len)` of free-running index `idx`.
    pub fn used_elem(&self, idx: u16) -> (u32, u32) {
        let a = layout::used_elem_addr(self.cfg.used_addr, self.cfg.size, idx);
        (self.mem.peek_u32(a), self.mem.peek_u32(a + 4))
    }

    /// The next used element not yet consumed by the driver, if the device published one.
    pub fn pop_used(&mut self) -> Option<(u32, u32)> {
        if self.used_idx() == self.last_used {
            return None;
        }
        let e = self.used_elem(self.last_used);
        self.last_used = self.last_used.wrapping_add(1);
        Some(e)
    }

    /// Allocates `len` bytes (64-byte aligned) in the data area, wrapping to its start when
    /// the end is reached.
    pub fn alloc(&mut self, len: u64) -> u64 {
        let end = self.mem.end();
        assert!(
            self.data_start + len <= end,
            "allocation of {len} bytes larger than the data area"
        );
        if self.data_next + len > end {
            self.data_next = self.data_start;
        }
        let a = self.data_next;
        self.data_next = align_up(a + len, 64).min(end);
        a
    }

    fn buffers(&mut self, bufs: &[Buf]) -> (Vec<Descriptor>, TestChain) {
        let mut descs = Vec::new();
        let mut chain = TestChain {
            head: 0,
            readable: Vec::new(),
            writable: Vec::new(),
        };
        for b in bufs {
            let (len, flags) = match b {
                Buf::Readable(data) => (data.len() as u32, 0),
                Buf::Writable(len) => (*len, VIRTQ_DESC_F_WRITE),
            };
            let addr = self.alloc(u64::from(len.max(1)));
            match b {
                Buf::Readable(data) => {
                    self.mem.poke(addr, data);
                    chain.readable.push(Segment { addr, len });
                }
                Buf::Writable(_) => {
                    self.mem.poke(addr, &vec![0; len as usize]);
                    chain.writable.push(Segment { addr, len });
                }
            }
            descs.push(Descriptor {
                addr,
                len,
                flags,
                next: 0,
            });
        }
        (descs, chain)
    }

    fn take_desc(&mut self) -> u16 {
        let i = self.next_desc;
        self.next_desc = (self.next_desc + 1) % self.cfg.size;
        i
    }

    /// Builds a direct chain over fresh buffers (readable data copied in, writable buffers
    /// zeroed) and makes it available.
    pub fn add_chain(&mut self, bufs: &[Buf]) -> TestChain {
        assert!(!bufs.is_empty() && bufs.len() <= self.cfg.size as usize);
        let (mut descs, mut chain) = self.buffers(bufs);
        let idx: Vec<u16> = descs.iter().map(|_| self.take_desc()).collect();
        let n = descs.len();
        for i in 0..n {
            if i + 1 < n {
                descs[i].flags |= VIRTQ_DESC_F_NEXT;
                descs[i].next = idx[i + 1];
            }
            self.write_desc(idx[i], descs[i]);
        }
        chain.head = idx[0];
        self.push_avail(chain.head);
        chain
    }

    /// Builds a chain of one descriptor pointing to an indirect table holding `bufs`, and makes
    /// it available. The chain starts at table slot 0 and continues from the end of the table
    /// backwards (logical entry `i >= 1` at slot `n - i`), to exercise `next`.
    pub fn add_indirect_chain(&mut self, bufs: &[Buf]) -> TestChain {
        assert!(!bufs.is_empty());
        let (descs, mut chain) = self.buffers(bufs);
        let n = descs.len();
        let slot = |i: usize| if i == 0 { 0 } else { n - i };
        let mut table = vec![Descriptor::default(); n];
        for (i, d) in descs.into_iter().enumerate() {
            let mut d = d;
            if i + 1 < n {
                d.flags |= VIRTQ_DESC_F_NEXT;
                d.next = slot(i + 1) as u16;
            }
            table[slot(i)] = d;
        }
        let table_addr = self.alloc(16 * n as u64);
        self.write_table(table_addr, &table);
        let head = self.take_desc();
        self.write_desc(
            head,
            Descriptor {
                addr: table_addr,
                len: 16 * n as u32,
                flags: VIRTQ_DESC_F_INDIRECT,
                next: 0,
            },
        );
        chain.head = head;
        self.push_avail(head);
        chain
    }
}
