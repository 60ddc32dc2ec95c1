//! The virtio-net feature bits this device offers, and how the receive offloads the driver
//! accepted (GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN) become the TAP's `TUNSETOFFLOAD` flags.
//!
//! Offered: MAC, STATUS, MTU, CSUM and GUEST_CSUM, HOST_TSO4/6 and HOST_ECN, GUEST_TSO4/6 and
//! GUEST_ECN, MRG_RXBUF, CTRL_VQ with CTRL_RX, CTRL_MAC_ADDR and CTRL_GUEST_OFFLOADS, and MQ
//! when there is more than one queue pair. (The transport adds VERSION_1, INDIRECT_DESC and
//! EVENT_IDX.) Not offered: UFO/USO (the TAP cannot be asked for them on every kernel), VLAN
//! filtering, announcements, RSS and hash reports, notification coalescing, device stats.

use virtio_bindings::virtio_net::*;

/// Bit `b` as a mask.
pub const fn bit(b: u32) -> u64 {
    1 << b
}

/// Whether `features` holds bit `b`.
pub fn has(features: u64, b: u32) -> bool {
    features & bit(b) != 0
}

/// The receive offloads a driver can switch with VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET (the
/// subset of them we offer).
pub const GUEST_OFFLOADS: u64 = bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_ECN);

/// The device-specific features offered for a device with `max_pairs` queue pairs.
pub fn offered(max_pairs: u16) -> u64 {
    let mut f = GUEST_OFFLOADS
        | bit(VIRTIO_NET_F_CSUM)
        | bit(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS)
        | bit(VIRTIO_NET_F_MTU)
        | bit(VIRTIO_NET_F_MAC)
        | bit(VIRTIO_NET_F_HOST_TSO4)
        | bit(VIRTIO_NET_F_HOST_TSO6)
        | bit(VIRTIO_NET_F_HOST_ECN)
        | bit(VIRTIO_NET_F_MRG_RXBUF)
        | bit(VIRTIO_NET_F_STATUS)
        | bit(VIRTIO_NET_F_CTRL_VQ)
        | bit(VIRTIO_NET_F_CTRL_RX)
        | bit(VIRTIO_NET_F_CTRL_MAC_ADDR)
        // Every queue completes in the order it pops: transmit at once, receive buffers
        // oldest first (merged ones too), the control queue synchronously.
        | bit(virtio_bindings::virtio_config::VIRTIO_F_IN_ORDER);
    if max_pairs > 1 {
        f |= bit(VIRTIO_NET_F_MQ);
    }
    f
}

/// `TUNSETOFFLOAD` flags for the receive offloads in `offloads` (feature bits): what the TAP
/// may hand us, i.e. what the driver can take. Segmentation needs checksum offload, so without
/// GUEST_CSUM nothing is enabled (the endpoint's kernel then checksums and segments itself).
pub fn tun_offloads(offloads: u64) -> u32 {
    if !has(offloads, VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut t = libc::TUN_F_CSUM;
    if has(offloads, VIRTIO_NET_F_GUEST_TSO4) {
        t |= libc::TUN_F_TSO4;
    }
    if has(offloads, VIRTIO_NET_F_GUEST_TSO6) {
        t |= libc::TUN_F_TSO6;
    }
    if has(offloads, VIRTIO_NET_F_GUEST_ECN) && t & (libc::TUN_F_TSO4 | libc::TUN_F_TSO6) != 0 {
        t |= libc::TUN_F_TSO_ECN;
    }
    t
}

/// A short name list of `TUNSETOFFLOAD` flags for the counters (`csum,tso4,tso6,ecn` or
/// `none`).
pub fn tun_offload_names(t: u32) -> String {
    let names: Vec<&str> = [
        (libc::TUN_F_CSUM, "csum"),
        (libc::TUN_F_TSO4, "tso4"),
        (libc::TUN_F_TSO6, "tso6"),
        (libc::TUN_F_TSO_ECN, "ecn"),
    ]
    .iter()
    .filter(|(f, _)| t & f != 0)
    .map(|(_, n)| *n)
    .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mq_only_with_several_pairs() {
        assert!(!has(offered(1), VIRTIO_NET_F_MQ));
        assert!(has(offered(2), VIRTIO_NET_F_MQ));
        for b in [
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_MTU,
            VIRTIO_NET_F_STATUS,
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_NET_F_CTRL_VQ,
            VIRTIO_NET_F_CTRL_RX,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
        ] {
            assert!(has(offered(1), b), "bit {b}");
        }
        assert!(!has(offered(4), VIRTIO_NET_F_GUEST_UFO));
        assert!(!has(offered(4), VIRTIO_NET_F_CTRL_VLAN));
    }

    #[test]
    fn tun_flags_follow_the_receive_offloads() {
        assert_eq!(tun_offloads(0), 0);
        // Segmentation without checksum offload is impossible: nothing.
        assert_eq!(tun_offloads(bit(VIRTIO_NET_F_GUEST_TSO4)), 0);
        assert_eq!(
            tun_offloads(GUEST_OFFLOADS),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN
        );
        assert_eq!(
            tun_offloads(bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_ECN)),
            libc::TUN_F_CSUM
        );
        assert_eq!(tun_offload_names(0), "none");
        assert_eq!(
            tun_offload_names(tun_offloads(GUEST_OFFLOADS)),
            "csum,tso4,tso6,ecn"
        );
    }
}
