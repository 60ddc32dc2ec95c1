//! The 12-byte header in front of every packet (`struct virtio_net_hdr_v1`, virtio 1.2 5.1.6):
//! `flags`, `gso_type`, `hdr_len`, `gso_size`, `csum_start`, `csum_offset`, `num_buffers`, all
//! little-endian. With VIRTIO_F_VERSION_1 it is always 12 bytes, and the TAP is set to the
//! same layout (`TUNSETVNETHDRSZ` 12, little-endian), so a header passes between the host's
//! buffers and the TAP unchanged, after being checked:
//!
//! * transmit ([`check_tx`]): the driver may only ask for what it negotiated (checksum offload
//!   with CSUM, TCP segmentation with HOST_TSO4/6, ECN with HOST_ECN), with a checksum position
//!   inside the frame and an MSS for segmentation; anything else is a malformed header and the
//!   packet is dropped and counted;
//! * receive ([`fit_rx`]): what the TAP produced must be something the driver can take with the
//!   receive offloads currently enabled (a packet queued in the TAP before they changed might
//!   not be): partial checksums need GUEST_CSUM, segments GUEST_TSO4/6 (+ GUEST_ECN).

use super::features::has;
use thiserror::Error;
use virtio_bindings::virtio_net::*;

/// Header length.
pub const HDR_LEN: usize = 12;
/// Ethernet header length: the shortest frame a TAP accepts.
pub const ETH_HLEN: usize = 14;

const F_NEEDS_CSUM: u8 = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
const F_DATA_VALID: u8 = VIRTIO_NET_HDR_F_DATA_VALID as u8;
const GSO_ECN: u8 = VIRTIO_NET_HDR_GSO_ECN as u8;
const GSO_NONE: u8 = VIRTIO_NET_HDR_GSO_NONE as u8;
const GSO_TCPV4: u8 = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
const GSO_TCPV6: u8 = VIRTIO_NET_HDR_GSO_TCPV6 as u8;

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetHeader {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    pub num_buffers: u16,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl NetHeader {
    /// Decodes the first [`HDR_LEN`] bytes of `b` (`None` if shorter).
    pub fn parse(b: &[u8]) -> Option<NetHeader> {
        let b = b.get(..HDR_LEN)?;
        Some(NetHeader {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le16(b, 2),
            gso_size: le16(b, 4),
            csum_start: le16(b, 6),
            csum_offset: le16(b, 8),
            num_buffers: le16(b, 10),
        })
    }

    /// Whether the packet is a segmentation (GSO) packet.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }
}

/// Sets `num_buffers` in the header at the start of `buf` (which must hold one).
pub fn set_num_buffers(buf: &mut [u8], n: u16) {
    buf[10..12].copy_from_slice(&n.to_le_bytes());
}

/// Clears `flags` in the header at the start of `buf`.
fn clear_flags(buf: &mut [u8]) {
    buf[0] = 0;
}

/// What is wrong with a transmit header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HeaderError {
    /// The chain is shorter than a header plus an Ethernet header.
    #[error("packet of {0} bytes is shorter than the headers")]
    Short(usize),
    /// A flag other than NEEDS_CSUM (DATA_VALID and RSC_INFO are for receive only).
    #[error("invalid flags {0:#x}")]
    Flags(u8),
    /// NEEDS_CSUM without VIRTIO_NET_F_CSUM.
    #[error("NEEDS_CSUM without VIRTIO_NET_F_CSUM")]
    CsumNotNegotiated,
    /// The checksum field lies outside the frame.
    #[error("checksum at {start}+{offset} outside the {len}-byte frame")]
    CsumOutside { start: u16, offset: u16, len: usize },
    /// A segmentation type that was not negotiated (or does not exist).
    #[error("segmentation type {0:#x} not negotiated")]
    GsoType(u8),
    /// Segmentation without NEEDS_CSUM, or with an MSS of 0.
    #[error("segmentation without NEEDS_CSUM or with gso_size 0")]
    GsoIncomplete,
}

/// Checks the header of a packet the driver transmits: `pkt` is header plus frame, `features`
/// the negotiated features. `num_buffers` and `hdr_len` are not checked: Linux leaves the
/// former uninitialised without MRG_RXBUF, and the latter is a hint the TAP checks itself.
pub fn check_tx(pkt: &[u8], features: u64) -> Result<NetHeader, HeaderError> {
    if pkt.len() < HDR_LEN + ETH_HLEN {
        return Err(HeaderError::Short(pkt.len()));
    }
    let h = NetHeader::parse(pkt).ok_or(HeaderError::Short(pkt.len()))?;
    let frame_len = pkt.len() - HDR_LEN;
    if h.flags & !F_NEEDS_CSUM != 0 {
        return Err(HeaderError::Flags(h.flags));
    }
    if h.flags & F_NEEDS_CSUM != 0 {
        if !has(features, VIRTIO_NET_F_CSUM) {
            return Err(HeaderError::CsumNotNegotiated);
        }
        let end = usize::from(h.csum_start) + usize::from(h.csum_offset) + 2;
        if end > frame_len {
            return Err(HeaderError::CsumOutside {
                start: h.csum_start,
                offset: h.csum_offset,
                len: frame_len,
            });
        }
    }
    let ecn = h.gso_type & GSO_ECN != 0;
    let allowed = match h.gso_type & !GSO_ECN {
        GSO_NONE => !ecn,
        GSO_TCPV4 => has(features, VIRTIO_NET_F_HOST_TSO4),
        GSO_TCPV6 => has(features, VIRTIO_NET_F_HOST_TSO6),
        _ => false,
    } && (!ecn || has(features, VIRTIO_NET_F_HOST_ECN));
    if !allowed {
        return Err(HeaderError::GsoType(h.gso_type));
    }
    if h.is_gso() && (h.flags & F_NEEDS_CSUM == 0 || h.gso_size == 0) {
        return Err(HeaderError::GsoIncomplete);
    }
    Ok(h)
}

/// Makes the header at the start of `pkt` (from the TAP) acceptable to a driver with receive
/// offloads `offloads` (feature bits): DATA_VALID is dropped when GUEST_CSUM is off (the driver
/// then verifies checksums itself). Returns `None` if the packet cannot be delivered at all
/// (a partial checksum or a segmentation type the driver cannot take).
pub fn fit_rx(pkt: &mut [u8], offloads: u64) -> Option<NetHeader> {
    let h = NetHeader::parse(pkt)?;
    let csum = has(offloads, VIRTIO_NET_F_GUEST_CSUM);
    if h.flags & F_NEEDS_CSUM != 0 && !csum {
        return None;
    }
    if h.flags & F_DATA_VALID != 0 && !csum {
        clear_flags(pkt);
    }
    let ecn = h.gso_type & GSO_ECN != 0;
    let ok = match h.gso_type & !GSO_ECN {
        GSO_NONE => !ecn,
        GSO_TCPV4 => has(offloads, VIRTIO_NET_F_GUEST_TSO4),
        GSO_TCPV6 => has(offloads, VIRTIO_NET_F_GUEST_TSO6),
        _ => false,
    } && (!ecn || has(offloads, VIRTIO_NET_F_GUEST_ECN));
    ok.then_some(h)
}

#[cfg(test)]
mod tests {
    use super::super::features::{bit, offered, GUEST_OFFLOADS};
    use super::*;

    fn pkt(flags: u8, gso: u8, gso_size: u16, cs: u16, co: u16, frame: usize) -> Vec<u8> {
        let mut p = vec![0u8; HDR_LEN + frame];
        p[0] = flags;
        p[1] = gso;
        p[4..6].copy_from_slice(&gso_size.to_le_bytes());
        p[6..8].copy_from_slice(&cs.to_le_bytes());
        p[8..10].copy_from_slice(&co.to_le_bytes());
        p[10..12].copy_from_slice(&0xbeefu16.to_le_bytes());
        p
    }

    #[test]
    fn transmit_headers() {
        let all = offered(1);
        assert!(check_tx(&pkt(0, 0, 0, 0, 0, 60), all).is_ok());
        assert_eq!(
            check_tx(&pkt(0, 0, 0, 0, 0, 13), all),
            Err(HeaderError::Short(25))
        );
        assert_eq!(check_tx(&[0; 5], all), Err(HeaderError::Short(5)));
        // Checksum offload: position inside the frame, feature negotiated.
        assert!(check_tx(&pkt(1, 0, 0, 34, 16, 60), all).is_ok());
        assert!(check_tx(&pkt(1, 0, 0, 34, 24, 60), all).is_ok());
        assert!(matches!(
            check_tx(&pkt(1, 0, 0, 34, 25, 60), all),
            Err(HeaderError::CsumOutside { .. })
        ));
        assert!(matches!(
            check_tx(&pkt(1, 0, 0, 0xffff, 0xffff, 60), all),
            Err(HeaderError::CsumOutside { .. })
        ));
        assert_eq!(
            check_tx(&pkt(1, 0, 0, 34, 16, 60), 0),
            Err(HeaderError::CsumNotNegotiated)
        );
        assert_eq!(
            check_tx(&pkt(2, 0, 0, 0, 0, 60), all),
            Err(HeaderError::Flags(2))
        );
        // Segmentation.
        let tso = pkt(1, GSO_TCPV4, 1448, 34, 16, 9000);
        assert_eq!(check_tx(&tso, all).unwrap().gso_size, 1448);
        assert!(check_tx(&tso, all).unwrap().is_gso());
        assert_eq!(
            check_tx(&tso, bit(VIRTIO_NET_F_CSUM)),
            Err(HeaderError::GsoType(GSO_TCPV4))
        );
        assert!(check_tx(&pkt(1, GSO_TCPV6 | GSO_ECN, 1400, 54, 16, 9000), all).is_ok());
        assert!(check_tx(
            &pkt(1, GSO_TCPV6 | GSO_ECN, 1400, 54, 16, 9000),
            all & !bit(VIRTIO_NET_F_HOST_ECN)
        )
        .is_err());
        assert_eq!(
            check_tx(&pkt(0, GSO_ECN, 0, 0, 0, 60), all),
            Err(HeaderError::GsoType(GSO_ECN))
        );
        for t in [3u8, 5, 2, 0x7f] {
            assert_eq!(
                check_tx(&pkt(1, t, 1000, 0, 0, 3000), all),
                Err(HeaderError::GsoType(t))
            );
        }
        assert_eq!(
            check_tx(&pkt(0, GSO_TCPV4, 1448, 0, 0, 3000), all),
            Err(HeaderError::GsoIncomplete)
        );
        assert_eq!(
            check_tx(&pkt(1, GSO_TCPV4, 0, 34, 16, 3000), all),
            Err(HeaderError::GsoIncomplete)
        );
    }

    #[test]
    fn receive_headers_fit_the_enabled_offloads() {
        let mut p = pkt(F_DATA_VALID, 0, 0, 0, 0, 60);
        assert!(fit_rx(&mut p, GUEST_OFFLOADS).is_some());
        assert_eq!(p[0], F_DATA_VALID);
        assert!(fit_rx(&mut p, 0).is_some());
        assert_eq!(p[0], 0, "DATA_VALID cleared without GUEST_CSUM");
        let mut p = pkt(F_NEEDS_CSUM, GSO_TCPV4, 1448, 34, 16, 9000);
        assert!(fit_rx(&mut p, GUEST_OFFLOADS).is_some());
        assert!(fit_rx(&mut p, bit(VIRTIO_NET_F_GUEST_CSUM)).is_none());
        assert!(fit_rx(&mut p, 0).is_none());
        let mut p = pkt(F_NEEDS_CSUM, GSO_TCPV6 | GSO_ECN, 1448, 54, 16, 9000);
        assert!(fit_rx(&mut p, GUEST_OFFLOADS).is_some());
        assert!(fit_rx(&mut p, GUEST_OFFLOADS & !bit(VIRTIO_NET_F_GUEST_ECN)).is_none());
        let mut p = pkt(0, 3, 1448, 0, 0, 9000);
        assert!(fit_rx(&mut p, GUEST_OFFLOADS).is_none());
        let mut p = pkt(0, 0, 0, 0, 0, 60);
        set_num_buffers(&mut p, 3);
        assert_eq!(NetHeader::parse(&p).unwrap().num_buffers, 3);
    }
}
