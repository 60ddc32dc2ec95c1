//! [`PackedDriverRing`]: the driver side of a packed ring in a [`TestMemory`], written from
//! the spec (virtio 1.2 section 2.8): buffer ids from a free list, chains written with their
//! first descriptor's flags last, used descriptors read back with the driver's wrap counter,
//! and both event suppression structures. Panics on misuse (test code).

use super::{Buf, TestChain, TestMemory};
use crate::layout::DESC_SIZE;
use crate::packed::format::{
    avail_flags, is_used, off_wrap, PackedDescriptor, EVENT_FLAGS_OFFSET, FLAGS_OFFSET,
};
use crate::{QueueConfig, Segment, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use epf_epc::HostMemory;
use std::sync::Arc;

/// The driver side of a packed ring living in a [`TestMemory`]: descriptor ring, driver and
/// device event suppression structures at the start of the memory, the rest a data area
/// (bump allocator wrapping around).
#[derive(Debug)]
pub struct PackedDriverRing {
    mem: Arc<TestMemory>,
    cfg: QueueConfig,
    avail_pos: u16,
    avail_wrap: bool,
    used_pos: u16,
    used_wrap: bool,
    free_ids: Vec<u16>,
    /// Ring descriptors per in-flight id.
    ndesc: Vec<u16>,
    data_start: u64,
    data_next: u64,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

impl PackedDriverRing {
    /// A ring of `size` descriptors at the start of `mem` (zeroed), the rest being data.
    pub fn new(mem: Arc<TestMemory>, size: u16) -> PackedDriverRing {
        let desc_addr = align_up(mem.base(), 16);
        let driver = desc_addr + DESC_SIZE * u64::from(size);
        let device = driver + 4;
        let data_start = align_up(device + 4, 64);
        assert!(data_start < mem.end(), "test memory too small for the ring");
        mem.poke(desc_addr, &vec![0; (data_start - desc_addr) as usize]);
        PackedDriverRing {
            mem,
            cfg: QueueConfig {
                size,
                desc_addr,
                avail_addr: driver,
                used_addr: device,
            },
            avail_pos: 0,
            avail_wrap: true,
            used_pos: 0,
            used_wrap: true,
            free_ids: (0..size).rev().collect(),
            ndesc: vec![0; usize::from(size)],
            data_start,
            data_next: data_start,
        }
    }

    /// The configuration to hand to [`Queue::new_packed`](crate::Queue::new_packed).
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

    /// Free buffer ids.
    pub fn free_ids(&self) -> usize {
        self.free_ids.len()
    }

    /// Free ring descriptors.
    pub fn free_descs(&self) -> u16 {
        self.cfg.size - self.ndesc.iter().sum::<u16>()
    }

    /// The driver's next available position and wrap counter.
    pub fn avail_position(&self) -> (u16, bool) {
        (self.avail_pos, self.avail_wrap)
    }

    /// The driver's next used position and wrap counter.
    pub fn used_position(&self) -> (u16, bool) {
        (self.used_pos, self.used_wrap)
    }

    /// Address of ring descriptor `pos`.
    pub fn desc_addr(&self, pos: u16) -> u64 {
        self.cfg.desc_addr + DESC_SIZE * u64::from(pos)
    }

    /// Writes ring descriptor `pos` verbatim.
    pub fn write_desc(&self, pos: u16, d: PackedDescriptor) {
        assert!(pos < self.cfg.size);
        self.mem.poke(self.desc_addr(pos), &d.to_bytes());
    }

    /// Reads ring descriptor `pos`.
    pub fn read_desc(&self, pos: u16) -> PackedDescriptor {
        let b = self.mem.peek(self.desc_addr(pos), 16);
        PackedDescriptor::from_bytes(&b.try_into().expect("16 bytes"))
    }

    /// Writes `descs` as a table at `addr` (an indirect table).
    pub fn write_table(&self, addr: u64, descs: &[PackedDescriptor]) {
        for (i, d) in descs.iter().enumerate() {
            self.mem.poke(addr + 16 * i as u64, &d.to_bytes());
        }
    }

    /// The AVAIL/USED bits the driver would give a descriptor at the next available
    /// position plus `k`.
    pub fn avail_bits_at(&self, k: u16) -> u16 {
        let wraps = (u32::from(self.avail_pos) + u32::from(k)) / u32::from(self.cfg.size);
        avail_flags(self.avail_wrap ^ (wraps % 2 == 1))
    }

    /// Writes the driver event suppression structure (`off_wrap`, `flags`).
    pub fn set_driver_event(&self, off_wrap: u16, flags: u16) {
        self.mem.poke_u16(self.cfg.avail_addr, off_wrap);
        self.mem
            .poke_u16(self.cfg.avail_addr + EVENT_FLAGS_OFFSET, flags);
    }

    /// The device event suppression structure (`off_wrap`, `flags`).
    pub fn device_event(&self) -> (u16, u16) {
        (
            self.mem.peek_u16(self.cfg.used_addr),
            self.mem.peek_u16(self.cfg.used_addr + EVENT_FLAGS_OFFSET),
        )
    }

    /// `off_wrap` of the driver's next available position.
    pub fn avail_off_wrap(&self) -> u16 {
        off_wrap(self.avail_pos, self.avail_wrap)
    }

    /// `off_wrap` of the driver's next used position.
    pub fn used_off_wrap(&self) -> u16 {
        off_wrap(self.used_pos, self.used_wrap)
    }

    /// Allocates `len` bytes (64-byte aligned) in the data area, wrapping around.
    pub fn alloc(&mut self, len: u64) -> u64 {
        let end = self.mem.end();
        assert!(self.data_start + len <= end, "allocation too large");
        if self.data_next + len > end {
            self.data_next = self.data_start;
        }
        let a = self.data_next;
        self.data_next = align_up(a + len, 64).min(end);
        a
    }

    fn buffers(&mut self, bufs: &[Buf]) -> (Vec<PackedDescriptor>, TestChain) {
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
            descs.push(PackedDescriptor {
                addr,
                len,
                id: 0,
                flags,
            });
        }
        (descs, chain)
    }

    /// Writes `descs` (flags without AVAIL/USED, NEXT added here) at the next available
    /// positions with buffer id `id`, the first one's flags last, and advances.
    fn publish(&mut self, id: u16, mut descs: Vec<PackedDescriptor>) {
        let n = descs.len();
        assert!(n <= usize::from(self.free_descs()), "ring full");
        let mut first = None;
        for (k, d) in descs.iter_mut().enumerate() {
            if k + 1 < n {
                d.flags |= VIRTQ_DESC_F_NEXT;
            }
            d.id = id;
            d.flags |= self.avail_bits_at(k as u16);
            let pos = ((usize::from(self.avail_pos) + k) % usize::from(self.cfg.size)) as u16;
            if k == 0 {
                let mut head = *d;
                let flags = head.flags;
                head.flags = 0;
                // Everything but the flags first.
                self.mem.poke(self.desc_addr(pos), &head.to_bytes()[..14]);
                first = Some((pos, flags));
            } else {
                self.write_desc(pos, *d);
            }
        }
        let (pos, flags) = first.expect("non-empty chain");
        self.mem.poke_u16(self.desc_addr(pos) + FLAGS_OFFSET, flags);
        self.ndesc[usize::from(id)] = n as u16;
        let p = u32::from(self.avail_pos) + n as u32;
        if p >= u32::from(self.cfg.size) {
            self.avail_wrap = !self.avail_wrap;
        }
        self.avail_pos = (p % u32::from(self.cfg.size)) as u16;
    }

    /// Builds a direct chain over fresh buffers and makes it available; `head` of the result
    /// is its buffer id.
    pub fn add_chain(&mut self, bufs: &[Buf]) -> TestChain {
        assert!(!bufs.is_empty());
        let (descs, mut chain) = self.buffers(bufs);
        let id = self.free_ids.pop().expect("no free buffer id");
        self.publish(id, descs);
        chain.head = id;
        chain
    }

    /// Builds one ring descriptor pointing to an indirect table holding `bufs`.
    pub fn add_indirect_chain(&mut self, bufs: &[Buf]) -> TestChain {
        assert!(!bufs.is_empty());
        let (descs, mut chain) = self.buffers(bufs);
        let table = self.alloc(16 * descs.len() as u64);
        self.write_table(table, &descs);
        let id = self.free_ids.pop().expect("no free buffer id");
        self.publish(
            id,
            vec![PackedDescriptor {
                addr: table,
                len: 16 * descs.len() as u32,
                id,
                flags: VIRTQ_DESC_F_INDIRECT,
            }],
        );
        chain.head = id;
        chain
    }

    /// Makes `descs` available verbatim at the next positions (flags as given plus the
    /// AVAIL/USED bits, first flags last), with no bookkeeping of ids: for malformed rings.
    pub fn publish_raw(&mut self, descs: &[PackedDescriptor]) {
        let n = descs.len() as u16;
        let mut first = None;
        for (k, d) in descs.iter().enumerate() {
            let mut d = *d;
            d.flags |= self.avail_bits_at(k as u16);
            let pos = ((u32::from(self.avail_pos) + k as u32) % u32::from(self.cfg.size)) as u16;
            if k == 0 {
                first = Some((pos, d));
            } else {
                self.write_desc(pos, d);
            }
        }
        if let Some((pos, d)) = first {
            self.write_desc(pos, d);
        }
        let p = u32::from(self.avail_pos) + u32::from(n);
        if p >= u32::from(self.cfg.size) {
            self.avail_wrap = !self.avail_wrap;
        }
        self.avail_pos = (p % u32::from(self.cfg.size)) as u16;
    }

    /// The next used descriptor `(id, len)` if the device published one; frees its id and
    /// descriptors. Panics if the id is not in flight (the engine under test is wrong).
    pub fn pop_used(&mut self) -> Option<(u16, u32)> {
        let d = self.read_desc(self.used_pos);
        if !is_used(d.flags, self.used_wrap) {
            return None;
        }
        let n = std::mem::take(&mut self.ndesc[usize::from(d.id)]);
        assert!(n > 0, "device used id {} which is not in flight", d.id);
        self.free_ids.push(d.id);
        let p = u32::from(self.used_pos) + u32::from(n);
        if p >= u32::from(self.cfg.size) {
            self.used_wrap = !self.used_wrap;
        }
        self.used_pos = (p % u32::from(self.cfg.size)) as u16;
        Some((d.id, d.len))
    }
}
