//! The receive filter the driver programs through the control queue (VIRTIO_NET_CTRL_RX and
//! VIRTIO_NET_CTRL_MAC): which frames from the wire reach the host. Like QEMU's virtio-net it
//! starts promiscuous (a driver without CTRL_RX gets everything); Linux switches promiscuous
//! mode off when it brings the interface up and installs its address lists.
//!
//! A frame is accepted if the filter is promiscuous, or it is broadcast, or it is multicast
//! and all-multicast is on or its address is in the multicast table, or it is unicast to the
//! station address or an address in the unicast table. A table holds [`MAC_TABLE_ENTRIES`];
//! a driver that sends more gets that class of frames unfiltered (as QEMU does).

use super::mac::MacAddr;

/// Entries per table.
pub const MAC_TABLE_ENTRIES: usize = 64;

/// One address table (unicast or multicast); fixed size, no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacTable {
    addrs: [MacAddr; MAC_TABLE_ENTRIES],
    len: usize,
    /// More addresses than fit: accept the whole class.
    overflow: bool,
}

impl Default for MacTable {
    fn default() -> Self {
        MacTable {
            addrs: [MacAddr::default(); MAC_TABLE_ENTRIES],
            len: 0,
            overflow: false,
        }
    }
}

impl MacTable {
    /// Adds an address (setting `overflow` when full).
    pub fn push(&mut self, a: MacAddr) {
        if self.len < MAC_TABLE_ENTRIES {
            self.addrs[self.len] = a;
            self.len += 1;
        } else {
            self.overflow = true;
        }
    }

    /// Marks the table as holding more addresses than fit: it accepts the whole class.
    pub fn set_overflow(&mut self) {
        self.overflow = true;
    }

    /// Whether `a` is matched by the table.
    pub fn matches(&self, a: &MacAddr) -> bool {
        self.overflow || self.addrs[..self.len].contains(a)
    }

    /// Number of addresses held.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.len
    }

    /// Whether the driver sent more than fits.
    #[cfg(test)]
    pub fn overflowed(&self) -> bool {
        self.overflow
    }
}

/// The whole receive filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RxFilter {
    pub promisc: bool,
    pub allmulti: bool,
    pub mac: MacAddr,
    pub unicast: MacTable,
    pub multicast: MacTable,
}

impl RxFilter {
    /// The state after a device reset: promiscuous, station address `mac`, empty tables.
    pub fn new(mac: MacAddr) -> Self {
        RxFilter {
            promisc: true,
            allmulti: false,
            mac,
            unicast: MacTable::default(),
            multicast: MacTable::default(),
        }
    }

    /// Whether the Ethernet frame `frame` is delivered to the host.
    pub fn accepts(&self, frame: &[u8]) -> bool {
        if self.promisc {
            return true;
        }
        let Some(dst) = MacAddr::destination(frame) else {
            return false;
        };
        if dst.is_broadcast() {
            true
        } else if dst.is_multicast() {
            self.allmulti || self.multicast.matches(&dst)
        } else {
            dst == self.mac || self.unicast.matches(&dst)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&[0u8; 54]);
        f
    }

    #[test]
    fn filtering() {
        let me = MacAddr([2, 0, 0, 0, 0, 1]);
        let mut f = RxFilter::new(me);
        let other = frame([2, 0, 0, 0, 0, 9]);
        let mcast = frame([0x33, 0x33, 0, 0, 0, 1]);
        assert!(f.accepts(&other), "promiscuous after reset");
        f.promisc = false;
        assert!(f.accepts(&frame(me.0)));
        assert!(f.accepts(&frame([0xff; 6])));
        assert!(!f.accepts(&other));
        assert!(!f.accepts(&mcast));
        assert!(!f.accepts(&[2, 0, 0]), "runt");
        f.multicast.push(MacAddr([0x33, 0x33, 0, 0, 0, 1]));
        assert!(f.accepts(&mcast));
        assert!(!f.accepts(&frame([0x33, 0x33, 0, 0, 0, 2])));
        f.allmulti = true;
        assert!(f.accepts(&frame([0x33, 0x33, 0, 0, 0, 2])));
        assert!(!f.accepts(&other));
        f.unicast.push(MacAddr([2, 0, 0, 0, 0, 9]));
        assert!(f.accepts(&other));
    }

    #[test]
    fn overflowing_table_accepts_the_class() {
        let mut t = MacTable::default();
        for i in 0..MAC_TABLE_ENTRIES {
            t.push(MacAddr([2, 0, 0, 0, 0, i as u8]));
        }
        assert!(!t.overflowed());
        assert_eq!(t.count(), MAC_TABLE_ENTRIES);
        assert!(!t.matches(&MacAddr([2, 0, 0, 0, 1, 0])));
        t.push(MacAddr([2, 0, 0, 0, 1, 0]));
        assert!(t.overflowed());
        assert!(t.matches(&MacAddr([2, 9, 9, 9, 9, 9])));
    }
}
