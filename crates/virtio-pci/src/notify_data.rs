//! Notification data (VIRTIO_F_NOTIFICATION_DATA, virtio 1.2 section 2.9): with it
//! negotiated, a modern driver's notification is a 32-bit write of the queue index and,
//! above it, its next available index (split) or position and wrap counter (packed). The
//! register engine keeps the latest value per queue here; the worker takes it when it
//! handles that queue's kick and hands it to the queue as a hint that saves one ring read
//! (an `avail.idx` read, or a descriptor's flags). Only where the notification reaches the
//! endpoint as a write with its data (a trapped notify area, or a vfio-user doorbell) is
//! there anything to keep; a controller that only signals a doorbell loses nothing but the
//! hint.

use std::sync::atomic::{AtomicU32, Ordering};

/// No value kept.
const NONE: u32 = u32::MAX;

/// The latest notification data of each queue.
pub(crate) struct NotifyData {
    slots: Vec<AtomicU32>,
}

impl NotifyData {
    pub(crate) fn new(queues: usize) -> Self {
        NotifyData {
            slots: (0..queues).map(|_| AtomicU32::new(NONE)).collect(),
        }
    }

    /// A notification of queue `q` carried `value` (the 32 bits the driver wrote). Kept only
    /// when its low half names the queue notified, as the spec requires.
    pub(crate) fn store(&self, q: usize, value: u32) {
        if let Some(s) = self.slots.get(q) {
            if value & 0xffff == q as u32 {
                s.store(value >> 16, Ordering::Release);
            }
        }
    }

    /// Takes queue `q`'s kept value: the driver's next available index or position.
    pub(crate) fn take(&self, q: usize) -> Option<u16> {
        let v = self.slots.get(q)?.swap(NONE, Ordering::AcqRel);
        u16::try_from(v).ok()
    }

    /// Forgets every value (the rings they describe are gone).
    pub(crate) fn clear(&self) {
        for s in &self.slots {
            s.store(NONE, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_kept_per_queue_taken_once_and_checked_against_the_queue() {
        let d = NotifyData::new(2);
        assert_eq!(d.take(0), None);
        d.store(1, 7 << 16 | 1);
        d.store(1, 9 << 16 | 1);
        assert_eq!(d.take(0), None);
        assert_eq!(d.take(1), Some(9), "the latest value");
        assert_eq!(d.take(1), None, "taken once");
        // The low half must name the queue notified; out-of-range queues are ignored.
        d.store(0, 5 << 16 | 1);
        d.store(5, 5 << 16 | 5);
        assert_eq!((d.take(0), d.take(5)), (None, None));
        // Packed: bit 15 of the value is the wrap counter.
        d.store(0, 0x8003 << 16);
        assert_eq!(d.take(0), Some(0x8003));
        d.store(0, 1 << 16);
        d.clear();
        assert_eq!(d.take(0), None);
    }
}
