//! Ethernet MAC addresses: parsing and printing for the command line, the classes the receive
//! filter distinguishes (broadcast, multicast, unicast), and the default address of a function
//! derived from its TAP name.

use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// The destination address of an Ethernet frame (its first six bytes), if it has one.
    pub fn destination(frame: &[u8]) -> Option<MacAddr> {
        frame.get(..6).map(|d| {
            let mut a = [0u8; 6];
            a.copy_from_slice(d);
            MacAddr(a)
        })
    }

    /// Group address (multicast or broadcast): the I/G bit of the first octet.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// The broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// All zero.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// A stable, locally administered unicast address for the TAP `name`: 02 followed by five
    /// bytes of the FNV-1a hash of the name, so a function keeps its address across restarts.
    pub fn derived(name: &str) -> MacAddr {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let b = h.to_be_bytes();
        MacAddr([0x02, b[3], b[4], b[5], b[6], b[7]])
    }
}

/// Why a MAC address was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MacError {
    #[error("invalid MAC address `{0}` (expected six hex octets like 52:54:00:12:34:56)")]
    Malformed(String),
    #[error("MAC address {0} is a multicast/broadcast address (the first octet must be even)")]
    Group(MacAddr),
    #[error("MAC address 00:00:00:00:00:00 is not usable")]
    Zero,
}

impl FromStr for MacAddr {
    type Err = MacError;

    /// Six hexadecimal octets separated by `:` or `-` (`52:54:00:12:34:56`). The address must
    /// be a usable unicast station address: not multicast or broadcast, not all zero.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || MacError::Malformed(s.to_string());
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(sep) {
            if n == 6 || part.is_empty() || part.len() > 2 {
                return Err(bad());
            }
            out[n] = u8::from_str_radix(part, 16).map_err(|_| bad())?;
            n += 1;
        }
        if n != 6 {
            return Err(bad());
        }
        let mac = MacAddr(out);
        if mac.is_multicast() {
            return Err(MacError::Group(mac));
        }
        if mac.is_zero() {
            return Err(MacError::Zero);
        }
        Ok(mac)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let m: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(m.0, [0x52, 0x54, 0, 0xab, 0xcd, 0x0f]);
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!(
            "2-0-0-0-0-1".parse::<MacAddr>().unwrap().0,
            [2, 0, 0, 0, 0, 1]
        );
    }

    #[test]
    fn refuses_malformed_group_and_zero_addresses() {
        for s in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:5g",
            "52:54:00:12:34:567",
            "52::00:12:34:56",
            "52:54-00:12:34:56",
            "+1:54:00:12:34:56",
        ] {
            assert!(s.parse::<MacAddr>().is_err(), "{s:?} accepted");
        }
        let e = "01:00:5e:00:00:01".parse::<MacAddr>().unwrap_err();
        assert!(e.to_string().contains("multicast"), "{e}");
        assert!("ff:ff:ff:ff:ff:ff".parse::<MacAddr>().is_err());
        assert!("00:00:00:00:00:00".parse::<MacAddr>().is_err());
    }

    #[test]
    fn derived_addresses_are_stable_local_unicast() {
        let a = MacAddr::derived("tap0");
        assert_eq!(a, MacAddr::derived("tap0"));
        assert_ne!(a, MacAddr::derived("tap1"));
        assert_eq!(a.0[0], 0x02);
        assert!(!a.is_multicast());
    }

    #[test]
    fn classes() {
        assert!(MacAddr::BROADCAST.is_broadcast() && MacAddr::BROADCAST.is_multicast());
        assert_eq!(MacAddr::destination(&[1, 2, 3]), None);
        assert_eq!(
            MacAddr::destination(&[1, 2, 3, 4, 5, 6, 7]),
            Some(MacAddr([1, 2, 3, 4, 5, 6]))
        );
    }
}
