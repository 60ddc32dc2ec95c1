//! Commands on the control virtqueue (virtio 1.2 5.1.6.5): each chain holds
//! `{ u8 class; u8 command; data }` readable and one writable ack byte (VIRTIO_NET_OK or
//! VIRTIO_NET_ERR). Supported, each only when its feature was negotiated:
//!
//! * `RX PROMISC` / `RX ALLMULTI` (CTRL_RX): one byte, on or off;
//! * `MAC TABLE_SET` (CTRL_RX): a unicast then a multicast table, each a le32 count and that
//!   many 6-byte addresses, taken as a whole or not at all;
//! * `MAC ADDR_SET` (CTRL_MAC_ADDR): the new station address the filter accepts;
//! * `MQ VQ_PAIRS_SET` (MQ): le16 pairs in `1..=max_virtqueue_pairs`;
//! * `GUEST_OFFLOADS SET` (CTRL_GUEST_OFFLOADS): le64 receive offloads, a subset of the
//!   negotiated ones.
//!
//! Anything else — an unknown or unnegotiated class or command, data of the wrong length
//! (shorter or longer), a value out of range — is refused with VIRTIO_NET_ERR and changes
//! nothing. Parsing reads the chain piece by piece into fixed buffers: no allocation, and a
//! count in a MAC table cannot make it read past the chain.

use super::features::{has, GUEST_OFFLOADS};
use super::filter::{MacTable, RxFilter, MAC_TABLE_ENTRIES};
use super::mac::MacAddr;
use epf_device::{ChainReader, QueueError};
use thiserror::Error;
use virtio_bindings::virtio_net::*;

/// What the device has to do for an accepted command beyond the filter update done here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtrlAction {
    /// Nothing more (filter commands).
    Done,
    /// Use this many queue pairs.
    SetPairs(u16),
    /// Enable exactly these receive offloads (feature bits).
    SetOffloads(u64),
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CtrlError {
    /// Fewer than the two header bytes.
    #[error("command shorter than its 2-byte header")]
    NoHeader,
    /// Class/command unknown or its feature not negotiated.
    #[error("unsupported command class {class} cmd {cmd}")]
    Unsupported { class: u8, cmd: u8 },
    /// Command data of the wrong length.
    #[error("class {class} cmd {cmd}: {len} data bytes is the wrong length")]
    Length { class: u8, cmd: u8, len: usize },
    /// A value out of range.
    #[error("class {class} cmd {cmd}: value {value:#x} out of range")]
    Value { class: u8, cmd: u8, value: u64 },
    /// Host memory failed while reading the chain (the queue is broken, not the command).
    #[error(transparent)]
    Queue(QueueError),
}

const RX: u8 = VIRTIO_NET_CTRL_RX as u8;
const MAC: u8 = VIRTIO_NET_CTRL_MAC as u8;
const MQ: u8 = VIRTIO_NET_CTRL_MQ as u8;
const OFFLOADS: u8 = VIRTIO_NET_CTRL_GUEST_OFFLOADS as u8;

/// Reads exactly `buf.len()` bytes; a chain too short is the command's fault.
fn read(r: &mut ChainReader<'_>, buf: &mut [u8], short: CtrlError) -> Result<(), CtrlError> {
    match r.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(QueueError::ChainTooShort { .. }) => Err(short),
        Err(e) => Err(CtrlError::Queue(e)),
    }
}

/// Reads one MAC table (le32 count, entries) into `t`.
fn read_table(
    r: &mut ChainReader<'_>,
    t: &mut MacTable,
    class: u8,
    cmd: u8,
) -> Result<(), CtrlError> {
    let len_err = CtrlError::Length {
        class,
        cmd,
        len: r.remaining(),
    };
    let mut n = [0u8; 4];
    read(r, &mut n, len_err)?;
    let n = u32::from_le_bytes(n) as usize;
    let Some(bytes) = n.checked_mul(6).filter(|&b| b <= r.remaining()) else {
        return Err(len_err);
    };
    // The work is bounded by the table, not by the count the host wrote (aliased descriptors
    // can make a chain claim gigabytes): entries beyond what the table holds are skipped
    // unread, and the table overflows (accepts the whole class), as QEMU does.
    let kept = n.min(MAC_TABLE_ENTRIES);
    for _ in 0..kept {
        let mut a = [0u8; 6];
        read(r, &mut a, len_err)?;
        t.push(MacAddr(a));
    }
    if n > kept {
        t.set_overflow();
        let rest = bytes - kept * 6;
        if r.skip(rest) != rest {
            return Err(len_err);
        }
    }
    Ok(())
}

/// Parses the command in `r` (positioned at the start of the chain), applies filter commands
/// to `filter`, and returns what else is to be done. `features` are the negotiated features;
/// `max_pairs` is `max_virtqueue_pairs`.
pub fn handle(
    r: &mut ChainReader<'_>,
    features: u64,
    max_pairs: u16,
    filter: &mut RxFilter,
) -> Result<CtrlAction, CtrlError> {
    let mut hdr = [0u8; 2];
    read(r, &mut hdr, CtrlError::NoHeader)?;
    let [class, cmd] = hdr;
    let len = r.remaining();
    let unsupported = CtrlError::Unsupported { class, cmd };
    let want = |n: usize| {
        if len == n {
            Ok(())
        } else {
            Err(CtrlError::Length { class, cmd, len })
        }
    };
    let ctrl_rx = has(features, VIRTIO_NET_F_CTRL_RX);
    match (class, cmd as u32) {
        (RX, VIRTIO_NET_CTRL_RX_PROMISC | VIRTIO_NET_CTRL_RX_ALLMULTI) if ctrl_rx => {
            want(1)?;
            let mut on = [0u8];
            read(r, &mut on, CtrlError::Length { class, cmd, len })?;
            if on[0] > 1 {
                return Err(CtrlError::Value {
                    class,
                    cmd,
                    value: u64::from(on[0]),
                });
            }
            if cmd as u32 == VIRTIO_NET_CTRL_RX_PROMISC {
                filter.promisc = on[0] == 1;
            } else {
                filter.allmulti = on[0] == 1;
            }
            Ok(CtrlAction::Done)
        }
        (MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET) if ctrl_rx => {
            let (mut uc, mut mc) = (MacTable::default(), MacTable::default());
            read_table(r, &mut uc, class, cmd)?;
            read_table(r, &mut mc, class, cmd)?;
            if r.remaining() != 0 {
                return Err(CtrlError::Length { class, cmd, len });
            }
            filter.unicast = uc;
            filter.multicast = mc;
            Ok(CtrlAction::Done)
        }
        (MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET) if has(features, VIRTIO_NET_F_CTRL_MAC_ADDR) => {
            want(6)?;
            let mut a = [0u8; 6];
            read(r, &mut a, CtrlError::Length { class, cmd, len })?;
            filter.mac = MacAddr(a);
            Ok(CtrlAction::Done)
        }
        (MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET) if has(features, VIRTIO_NET_F_MQ) => {
            want(2)?;
            let mut n = [0u8; 2];
            read(r, &mut n, CtrlError::Length { class, cmd, len })?;
            let n = u16::from_le_bytes(n);
            if n == 0 || n > max_pairs {
                return Err(CtrlError::Value {
                    class,
                    cmd,
                    value: u64::from(n),
                });
            }
            Ok(CtrlAction::SetPairs(n))
        }
        (OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET)
            if has(features, VIRTIO_NET_F_CTRL_GUEST_OFFLOADS) =>
        {
            want(8)?;
            let mut v = [0u8; 8];
            read(r, &mut v, CtrlError::Length { class, cmd, len })?;
            let v = u64::from_le_bytes(v);
            let value_err = CtrlError::Value {
                class,
                cmd,
                value: v,
            };
            if v & !(features & GUEST_OFFLOADS) != 0 {
                return Err(value_err);
            }
            // Segmentation (and ECN) without receive checksum offload cannot be honoured.
            if v & !super::features::bit(VIRTIO_NET_F_GUEST_CSUM) != 0
                && !has(v, VIRTIO_NET_F_GUEST_CSUM)
            {
                return Err(value_err);
            }
            Ok(CtrlAction::SetOffloads(v))
        }
        _ => Err(unsupported),
    }
}

#[cfg(test)]
mod tests {
    use super::super::features::{bit, offered};
    use super::*;
    use epf_device::DescriptorChain;
    use epf_virtqueue::testing::{Buf, DriverRing, TestMemory};
    use epf_virtqueue::Queue;
    use std::sync::Arc;

    /// Runs `handle` on a chain holding `cmd` (readable) and an ack byte (writable).
    fn run(cmd: &[u8], features: u64, filter: &mut RxFilter) -> Result<CtrlAction, CtrlError> {
        let mem = Arc::new(TestMemory::new(1 << 16));
        let mut drv = DriverRing::new(mem, 4);
        let mut q = Queue::new(drv.config(), drv.host_memory(), false).unwrap();
        drv.add_chain(&[Buf::Readable(cmd.to_vec()), Buf::Writable(1)]);
        let mut c = DescriptorChain::default();
        assert!(q.pop(&mut c).unwrap());
        let m = drv.host_memory();
        let mut r = c.reader(m.as_ref());
        handle(&mut r, features, 4, filter)
    }

    fn table(addrs: &[[u8; 6]]) -> Vec<u8> {
        let mut v = (addrs.len() as u32).to_le_bytes().to_vec();
        for a in addrs {
            v.extend_from_slice(a);
        }
        v
    }

    #[test]
    fn rx_mode_commands() {
        let all = offered(4);
        let mut f = RxFilter::new(MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(run(&[RX, 0, 0], all, &mut f), Ok(CtrlAction::Done));
        assert!(!f.promisc);
        assert_eq!(run(&[RX, 1, 1], all, &mut f), Ok(CtrlAction::Done));
        assert!(f.allmulti);
        assert_eq!(
            run(&[RX, 0, 2], all, &mut f),
            Err(CtrlError::Value {
                class: RX,
                cmd: 0,
                value: 2
            })
        );
        assert!(matches!(
            run(&[RX, 0], all, &mut f),
            Err(CtrlError::Length { .. })
        ));
        assert!(matches!(
            run(&[RX, 0, 1, 1], all, &mut f),
            Err(CtrlError::Length { .. })
        ));
        assert!(!f.promisc, "refused commands change nothing");
        // ALLUNI etc. need CTRL_RX_EXTRA, which is not offered; CTRL_RX itself must be there.
        assert!(matches!(
            run(&[RX, 2, 1], all, &mut f),
            Err(CtrlError::Unsupported { .. })
        ));
        assert!(matches!(
            run(&[RX, 0, 1], all & !bit(VIRTIO_NET_F_CTRL_RX), &mut f),
            Err(CtrlError::Unsupported { .. })
        ));
        assert_eq!(run(&[RX], all, &mut f), Err(CtrlError::NoHeader));
        assert_eq!(run(&[], all, &mut f), Err(CtrlError::NoHeader));
    }

    #[test]
    fn mac_tables_are_all_or_nothing() {
        let all = offered(4);
        let mut f = RxFilter::new(MacAddr([2, 0, 0, 0, 0, 1]));
        let mut cmd = vec![MAC, 0];
        cmd.extend(table(&[[2, 0, 0, 0, 0, 7]]));
        cmd.extend(table(&[[0x33, 0x33, 0, 0, 0, 1], [1, 0, 0x5e, 0, 0, 1]]));
        assert_eq!(run(&cmd, all, &mut f), Ok(CtrlAction::Done));
        assert_eq!((f.unicast.count(), f.multicast.count()), (1, 2));
        let before = f.clone();
        // A count larger than the data, a huge count, trailing bytes, a missing table.
        let mut bad = vec![MAC, 0];
        bad.extend(table(&[[2, 0, 0, 0, 0, 8]]));
        bad.extend(5u32.to_le_bytes());
        bad.extend([0x33; 12]);
        assert!(matches!(
            run(&bad, all, &mut f),
            Err(CtrlError::Length { .. })
        ));
        let mut bad = vec![MAC, 0];
        bad.extend(u32::MAX.to_le_bytes());
        assert!(matches!(
            run(&bad, all, &mut f),
            Err(CtrlError::Length { .. })
        ));
        let mut bad = cmd.clone();
        bad.push(0);
        assert!(matches!(
            run(&bad, all, &mut f),
            Err(CtrlError::Length { .. })
        ));
        let mut bad = vec![MAC, 0];
        bad.extend(table(&[]));
        assert!(matches!(
            run(&bad, all, &mut f),
            Err(CtrlError::Length { .. })
        ));
        assert_eq!(f, before);
        // Station address.
        assert_eq!(
            run(&[MAC, 1, 2, 9, 9, 9, 9, 9], all, &mut f),
            Ok(CtrlAction::Done)
        );
        assert_eq!(f.mac, MacAddr([2, 9, 9, 9, 9, 9]));
        assert!(matches!(
            run(&[MAC, 1, 2, 9, 9, 9, 9], all, &mut f),
            Err(CtrlError::Length { .. })
        ));
    }

    #[test]
    fn queue_pairs_and_offloads() {
        let all = offered(4);
        let mut f = RxFilter::new(MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(
            run(&[MQ, 0, 2, 0], all, &mut f),
            Ok(CtrlAction::SetPairs(2))
        );
        assert_eq!(
            run(&[MQ, 0, 4, 0], all, &mut f),
            Ok(CtrlAction::SetPairs(4))
        );
        for n in [0u16, 5, 0xffff] {
            let b = n.to_le_bytes();
            assert!(matches!(
                run(&[MQ, 0, b[0], b[1]], all, &mut f),
                Err(CtrlError::Value { .. })
            ));
        }
        assert!(matches!(
            run(&[MQ, 0, 2, 0], offered(1), &mut f),
            Err(CtrlError::Unsupported { .. })
        ));
        assert!(matches!(
            run(&[MQ, 1, 0, 0], all, &mut f),
            Err(CtrlError::Unsupported { .. })
        ));
        let set = |v: u64| {
            let mut c = vec![OFFLOADS, 0];
            c.extend(v.to_le_bytes());
            c
        };
        assert_eq!(
            run(&set(GUEST_OFFLOADS), all, &mut f),
            Ok(CtrlAction::SetOffloads(GUEST_OFFLOADS))
        );
        assert_eq!(run(&set(0), all, &mut f), Ok(CtrlAction::SetOffloads(0)));
        assert!(matches!(
            run(&set(bit(VIRTIO_NET_F_GUEST_UFO)), all, &mut f),
            Err(CtrlError::Value { .. })
        ));
        assert!(matches!(
            run(&set(bit(VIRTIO_NET_F_GUEST_TSO4)), all, &mut f),
            Err(CtrlError::Value { .. })
        ));
        assert!(matches!(
            run(
                &set(GUEST_OFFLOADS),
                all & !bit(VIRTIO_NET_F_GUEST_TSO6),
                &mut f
            ),
            Err(CtrlError::Value { .. })
        ));
        assert!(matches!(
            run(&[0x7f, 0], all, &mut f),
            Err(CtrlError::Unsupported { .. })
        ));
    }
}
