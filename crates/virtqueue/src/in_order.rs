//! In-order use of buffers (VIRTIO_F_IN_ORDER, virtio 1.2 sections 2.7.9 and 2.8.14): the
//! buffers a queue has popped and not yet published, oldest first, and how their completions
//! become used entries.
//!
//! With the feature negotiated the device must use buffers in the order they were made
//! available, and may publish a run of them with a single used entry: the entry carries the
//! id and length of the run's last buffer and sits where the run's first one would have;
//! the used index (split) or position (packed) skips over the whole run. The driver takes
//! every skipped buffer as used completely, so a buffer can only be skipped when the device
//! wrote all of its device-writable bytes (a device-readable buffer writes none: 0).
//!
//! Completions that arrive out of order are held until every older buffer has completed:
//! publication is always in order, whatever the device does, at the price of the later
//! buffer's latency. Devices that offer the feature complete in order, so nothing waits in
//! practice; the hold only keeps a device that does not from breaking the driver.

use crate::QueueError;
use std::collections::VecDeque;

/// A popped buffer not yet published.
#[derive(Clone, Copy, Debug)]
struct Popped {
    head: u16,
    /// Its device-writable bytes: a completion of exactly this length can be skipped.
    writable: u64,
    /// Ring descriptors it occupies (packed ring; 1 for split).
    span: u16,
    /// The length the device reported, once it completed.
    done: Option<u32>,
}

/// One used entry to write: it stands for `count` buffers occupying `span` ring positions,
/// the last of which is `id` with `len` bytes written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UsedBatch {
    pub id: u16,
    pub len: u32,
    pub count: u16,
    pub span: u32,
}

/// The in-order state of one queue.
#[derive(Debug, Default)]
pub(crate) struct InOrder {
    pending: VecDeque<Popped>,
    /// Index in `pending` of the oldest buffer not completed (every one before it is):
    /// where a completion's search starts, so in-order completions cost O(1) each.
    open: usize,
    /// What the last [`take_ready`](Self::take_ready) took: the used entries to write and
    /// the heads they publish, oldest first (kept to reuse their allocations).
    pub batches: Vec<UsedBatch>,
    pub retired: Vec<u16>,
    /// Used entries not written because a batch's entry stood for them.
    pub elided: u64,
}

impl InOrder {
    /// Records a pop.
    pub fn popped(&mut self, head: u16, writable: u64, span: u16) {
        self.pending.push_back(Popped {
            head,
            writable,
            span,
            done: None,
        });
    }

    /// Forgets the most recent pop (`Queue::undo_pop`).
    pub fn undo_pop(&mut self) {
        self.pending.pop_back();
        self.open = self.open.min(self.pending.len());
    }

    /// Forgets everything (ring indices were set from outside).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.open = 0;
    }

    /// Buffers popped and not yet published.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// Marks the completions `elems` (`(head, len)`); each head must be popped and not yet
    /// completed, else nothing is marked and the error names the first offender.
    pub fn complete(&mut self, elems: &[(u16, u32)]) -> Result<(), QueueError> {
        for (k, &(head, len)) in elems.iter().enumerate() {
            // Almost always the oldest open buffer.
            if let Some(p) = self.pending.get_mut(self.open) {
                if p.head == head {
                    p.done = Some(len);
                    self.open += 1;
                    while self
                        .pending
                        .get(self.open)
                        .is_some_and(|p| p.done.is_some())
                    {
                        self.open += 1;
                    }
                    continue;
                }
            }
            match self
                .pending
                .iter_mut()
                .skip(self.open)
                .find(|p| p.head == head && p.done.is_none())
            {
                Some(p) => p.done = Some(len),
                None => {
                    self.unmark(&elems[..k]);
                    return Err(QueueError::UsedIdNotInFlight { id: head });
                }
            }
            while self
                .pending
                .get(self.open)
                .is_some_and(|p| p.done.is_some())
            {
                self.open += 1;
            }
        }
        Ok(())
    }

    /// Undoes `complete` for `elems` (the latest marking of each head).
    fn unmark(&mut self, elems: &[(u16, u32)]) {
        for &(head, _) in elems.iter().rev() {
            if let Some(p) = self
                .pending
                .iter_mut()
                .rev()
                .find(|p| p.head == head && p.done.is_some())
            {
                p.done = None;
            }
        }
        self.open = self
            .pending
            .iter()
            .position(|p| p.done.is_none())
            .unwrap_or(self.pending.len());
    }

    /// Takes the completed buffers at the front, oldest first, into used entries
    /// (`batches`) and their heads (`retired`, in order), replacing what was there. A batch
    /// ends at a buffer that cannot be skipped (written less, or more, than its writable
    /// bytes) and at the last completed one.
    pub fn take_ready(&mut self) {
        let (out, heads) = (&mut self.batches, &mut self.retired);
        out.clear();
        heads.clear();
        // Everything before `open` completed; the buffer at `open`, if any, did not.
        let n = self.open;
        let mut count = 0u16;
        let mut span = 0u32;
        for (i, p) in self.pending.range(..n).enumerate() {
            let len = p.done.unwrap_or(0);
            heads.push(p.head);
            count += 1;
            span += u32::from(p.span);
            if i + 1 == n || u64::from(len) != p.writable {
                out.push(UsedBatch {
                    id: p.head,
                    len,
                    count,
                    span,
                });
                count = 0;
                span = 0;
            }
        }
        self.pending.drain(..n);
        self.open = 0;
        self.elided += (heads.len() - out.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(id: u16, len: u32, count: u16) -> UsedBatch {
        UsedBatch {
            id,
            len,
            count,
            span: u32::from(count),
        }
    }

    #[test]
    fn full_completions_become_one_entry_and_short_ones_end_a_batch() {
        let mut o = InOrder::default();
        for h in 0..6 {
            o.popped(h, 100, 1);
        }
        o.complete(&[(0, 100), (1, 100), (2, 40), (3, 100), (4, 100)])
            .unwrap();
        o.take_ready();
        assert_eq!(o.batches, vec![batch(2, 40, 3), batch(4, 100, 2)]);
        assert_eq!(o.retired, vec![0, 1, 2, 3, 4]);
        assert_eq!(o.elided, 3);
        assert_eq!(o.outstanding(), 1);
    }

    #[test]
    fn a_later_completion_waits_for_the_older_buffer() {
        let mut o = InOrder::default();
        o.popped(7, 0, 2);
        o.popped(3, 0, 1);
        o.complete(&[(3, 0)]).unwrap();
        o.take_ready();
        assert!(o.batches.is_empty() && o.retired.is_empty());
        o.complete(&[(7, 0)]).unwrap();
        o.take_ready();
        assert_eq!(
            o.batches,
            vec![UsedBatch {
                id: 3,
                len: 0,
                count: 2,
                span: 3
            }]
        );
        assert_eq!(o.retired, vec![7, 3]);
    }

    #[test]
    fn an_unknown_or_repeated_completion_marks_nothing() {
        let mut o = InOrder::default();
        o.popped(1, 8, 1);
        o.popped(2, 8, 1);
        assert!(matches!(
            o.complete(&[(1, 8), (9, 8)]),
            Err(QueueError::UsedIdNotInFlight { id: 9 })
        ));
        assert!(matches!(
            o.complete(&[(2, 8), (2, 8)]),
            Err(QueueError::UsedIdNotInFlight { id: 2 })
        ));
        o.take_ready();
        assert!(o.batches.is_empty(), "nothing was completed");
        o.complete(&[(1, 8), (2, 8)]).unwrap();
        o.take_ready();
        assert_eq!(o.batches, vec![batch(2, 8, 2)]);
    }
}
