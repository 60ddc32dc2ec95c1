//! What the virtio-net control queue must answer (virtio 1.2 5.1.6.5, and docs/design.md for
//! this device's choices): VIRTIO_NET_OK for a supported command of the right length with
//! values in range whose feature was negotiated, VIRTIO_NET_ERR for anything else. Written
//! from the specification, not from the device.

use virtio_bindings::virtio_net::*;

const fn bit(b: u32) -> u64 {
    1 << b
}

/// Receive offloads GUEST_OFFLOADS_SET may switch.
const GUEST_OFFLOADS: u64 = bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_ECN);

/// Whether the command in `cmd` (class, command, data) succeeds with `features` negotiated
/// and `max_pairs` queue pairs.
pub fn ctrl_ok(cmd: &[u8], features: u64, max_pairs: u16) -> bool {
    let has = |b: u32| features & bit(b) != 0;
    let [class, c, data @ ..] = cmd else {
        return false;
    };
    match (u32::from(*class), u32::from(*c)) {
        (VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC | VIRTIO_NET_CTRL_RX_ALLMULTI) => {
            has(VIRTIO_NET_F_CTRL_RX) && data.len() == 1 && data[0] <= 1
        }
        (VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET) => {
            if !has(VIRTIO_NET_F_CTRL_RX) {
                return false;
            }
            // Two tables, each a le32 count and that many addresses, filling the data.
            let mut rest = data;
            for _ in 0..2 {
                let Some((n, tail)) = rest.split_first_chunk::<4>() else {
                    return false;
                };
                let bytes = u64::from(u32::from_le_bytes(*n)) * 6;
                if bytes > tail.len() as u64 {
                    return false;
                }
                rest = &tail[bytes as usize..];
            }
            rest.is_empty()
        }
        (VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET) => {
            has(VIRTIO_NET_F_CTRL_MAC_ADDR) && data.len() == 6
        }
        (VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET) => {
            has(VIRTIO_NET_F_MQ)
                && data.len() == 2
                && (1..=max_pairs).contains(&u16::from_le_bytes([data[0], data[1]]))
        }
        (VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET) => {
            if !has(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS) || data.len() != 8 {
                return false;
            }
            let v = u64::from_le_bytes(data.try_into().unwrap());
            // A subset of the negotiated receive offloads; segmentation needs checksums.
            v & !(features & GUEST_OFFLOADS) == 0
                && (v & !bit(VIRTIO_NET_F_GUEST_CSUM) == 0 || v & bit(VIRTIO_NET_F_GUEST_CSUM) != 0)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        let all = u64::MAX;
        assert!(ctrl_ok(&[0, 0, 1], all, 2));
        assert!(!ctrl_ok(&[0, 0, 2], all, 2));
        assert!(!ctrl_ok(&[0, 0, 1], 0, 2));
        assert!(!ctrl_ok(&[0, 0], all, 2));
        assert!(!ctrl_ok(&[0], all, 2));
        let mut t = vec![1, 0, 1, 0, 0, 0];
        t.extend([2; 6]);
        t.extend([0, 0, 0, 0]);
        assert!(ctrl_ok(&t, all, 2));
        t.push(0);
        assert!(!ctrl_ok(&t, all, 2));
        assert!(!ctrl_ok(&[1, 0, 0xff, 0xff, 0xff, 0xff], all, 2));
        assert!(ctrl_ok(&[4, 0, 2, 0], all, 2));
        assert!(!ctrl_ok(&[4, 0, 3, 0], all, 2));
        assert!(!ctrl_ok(&[4, 0, 0, 0], all, 2));
        let mut o = vec![5, 0];
        o.extend(bit(VIRTIO_NET_F_GUEST_TSO4).to_le_bytes());
        assert!(!ctrl_ok(&o, all, 2), "TSO without checksum offload");
        let mut o = vec![5, 0];
        o.extend((bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_CSUM)).to_le_bytes());
        assert!(ctrl_ok(&o, all, 2));
        assert!(!ctrl_ok(&o, bit(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS), 2));
    }
}
