//! [`Prefetch`]: batched reads of a packed ring's available descriptors, so that a run of
//! available chains costs about one host-memory read instead of two per chain.
//!
//! The ordering rule it keeps (section 2.8.21): a descriptor's contents may be used only
//! from a read made after an Acquire fence that follows a read in which the flags of its
//! chain's first descriptor were seen available (the driver writes a chain, then a write
//! barrier, then the first descriptor's flags). Within one block read nothing orders the
//! bytes of one descriptor against another's, so a block's flags are only *evidence*: the
//! descriptors they show available are re-read (with the next block) before use.
//!
//! Evidence is a run from the next available position of available descriptors that are
//! chain heads: the first is a head by position; each flags word seen available is the
//! driver's single store, so its NEXT bit is trustworthy, and a descriptor without NEXT is
//! followed by the next chain's head. The run stops at the first unavailable descriptor or
//! after a head with NEXT (whose members are not heads). Flags torn between their two bytes
//! cannot fake availability: AVAIL (low byte) is new only if the low byte is the new one,
//! and the high byte (USED) is then either value consistent with "available".
//!
//! Notification data (VIRTIO_F_NOTIFICATION_DATA) is the other kind of evidence: the
//! driver announces its next available position after writing everything before it, so
//! the announced descriptors' contents are usable from the first read after the
//! notification (their flags are still checked; a wrong announcement just ends the run).

use super::format::{is_available, FLAGS_OFFSET};
use crate::layout::DESC_SIZE;
use crate::VIRTQ_DESC_F_NEXT;

/// Descriptors per block read (512 bytes, a common PCIe maximum read request).
pub(crate) const PREFETCH: u16 = 32;

const D: usize = DESC_SIZE as usize;

/// The last block read from the ring and what is known about it.
#[derive(Debug)]
pub(crate) struct Prefetch {
    buf: Vec<u8>,
    /// Descriptors in `buf`.
    len: u16,
    /// Index in `buf` of the next available position.
    off: u16,
    /// Descriptors from `off` whose contents in `buf` may be used (heads seen available by
    /// an earlier read).
    pub trusted: u16,
    /// Descriptors after those, seen available (heads) in the read that filled `buf`: their
    /// contents need the next read.
    pub pending: u16,
    /// How many were known available after the last block read: the next read is sized
    /// from it, so a driver adding one request at a time is not answered with 32
    /// descriptors' worth of bytes, and one adding bursts gets whole blocks.
    hint: u16,
}

impl Prefetch {
    pub fn new() -> Prefetch {
        Prefetch {
            buf: vec![0; usize::from(PREFETCH) * D],
            len: 0,
            off: 0,
            trusted: 0,
            pending: 0,
            hint: PREFETCH,
        }
    }

    /// How many descriptors the next block read should take (before the ring-end limit).
    pub fn want(&self) -> u16 {
        (self.pending.max(self.hint) + self.hint.max(1)).min(PREFETCH)
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.len = 0;
        self.off = 0;
        self.trusted = 0;
        self.pending = 0;
    }

    /// Whether anything is known to be available.
    pub fn known_available(&self) -> bool {
        self.trusted > 0 || self.pending > 0
    }

    /// Records that the head at the next available position was seen available by a read
    /// (of its flags alone).
    pub fn saw_head(&mut self) {
        self.clear();
        self.pending = 1;
    }

    /// The buffer to fill with `n` descriptors read from the next available position (after
    /// an Acquire fence); call [`filled`](Self::filled) after.
    pub fn target(&mut self, n: u16) -> &mut [u8] {
        &mut self.buf[..usize::from(n) * D]
    }

    fn flags(&self, i: u16) -> u16 {
        let o = usize::from(i) * D + FLAGS_OFFSET as usize;
        u16::from_le_bytes([self.buf[o], self.buf[o + 1]])
    }

    /// The flags words of the buffer's descriptors `from..to` (`to <= len`), in order.
    fn flags_in(&self, from: u16, to: u16) -> impl Iterator<Item = u16> + '_ {
        let f = FLAGS_OFFSET as usize;
        self.buf
            .get(usize::from(from) * D..usize::from(to) * D)
            .unwrap_or(&[])
            .chunks_exact(D)
            .map(move |d| u16::from_le_bytes([d[f], d[f + 1]]))
    }

    /// `n` descriptors were read into the buffer: what was pending becomes trusted, then the
    /// heads among the first `announced` descriptors (announced by the driver's notification
    /// data, so written before this read) whose flags show them available, and the
    /// descriptors after those are scanned for new evidence (`wrap`: the driver's wrap
    /// counter for the whole block, which never crosses the ring's end).
    pub fn filled(&mut self, n: u16, wrap: bool, announced: u16) {
        self.len = n;
        self.off = 0;
        let seen = self.pending.min(n);
        self.pending = 0;
        // A trusted head with NEXT is the last of its run: what follows are its members.
        let mut open = seen == 0 || self.flags(seen - 1) & VIRTQ_DESC_F_NEXT == 0;
        let mut i = seen;
        if open {
            for f in self.flags_in(seen, announced.min(n).max(seen)) {
                if !is_available(f, wrap) {
                    open = false;
                    break;
                }
                i += 1;
                if f & VIRTQ_DESC_F_NEXT != 0 {
                    open = false;
                    break;
                }
            }
        }
        self.trusted = i;
        if self.trusted == 0 || !open {
            return;
        }
        for f in self.flags_in(i, n) {
            if !is_available(f, wrap) {
                break;
            }
            i += 1;
            if f & VIRTQ_DESC_F_NEXT != 0 {
                break;
            }
        }
        self.pending = i - self.trusted;
        self.hint = self.trusted + self.pending;
    }

    /// The trusted descriptor at the next available position, and the descriptors after it
    /// in the buffer (a chain's members, usable once its head is trusted).
    pub fn head(&self) -> Option<(&[u8], &[u8])> {
        if self.trusted == 0 {
            return None;
        }
        let o = usize::from(self.off) * D;
        let end = usize::from(self.len) * D;
        Some((&self.buf[o..o + D], &self.buf[o + D..end]))
    }

    /// A chain of `n` ring descriptors at the next available position was consumed.
    pub fn consumed(&mut self, n: u16) {
        if n == 1 && self.trusted > 0 {
            self.trusted -= 1;
            self.off += 1;
            if self.off >= self.len {
                self.clear();
            }
        } else {
            // A longer chain ends the trusted run (its head was the run's last).
            self.clear();
        }
    }
}
