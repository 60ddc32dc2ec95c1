//! Traffic through the loopback rig: both directions byte-exact, merged receive buffers,
//! oversize and malformed packets, a host without receive buffers, the control queue and the
//! receive filter, multi-queue switching.

use super::*;
use crate::net::features::{bit, offered};
use crate::net::tap::{Tap, TapError};
use crate::net::MacAddr;
use std::sync::atomic::Ordering;
use virtio_bindings::virtio_net::*;

const LIMIT: Duration = Duration::from_secs(60);

fn opts(tap: &str) -> NetOptions {
    let mut o = NetOptions::new(tap);
    o.mac = Some(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
    o
}

fn get(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Everything but MRG_RXBUF.
fn without_mrg() -> u64 {
    offered(1) & !bit(VIRTIO_NET_F_MRG_RXBUF)
}

#[test]
fn frames_cross_both_ways_byte_exact() {
    in_netns(LIMIT, || {
        make_tap("tap0", false, 1500);
        let mut o = opts("tap0");
        o.mtu = Some(1400);
        let mut r = NetRig::new(&o, offered(1), 64);
        // Configuration space: MAC, link up, one pair, MTU.
        let mut cfg = [0u8; 12];
        r.drv.read_config(0, &mut cfg).unwrap();
        assert_eq!(
            cfg,
            [0x52, 0x54, 0, 0x12, 0x34, 0x56, 1, 0, 1, 0, 0x78, 0x05]
        );
        assert_eq!(r.drv.pci_device_id(), 0x1041);

        let to_host = PacketSocket::open("tap0", ETH_TO_HOST);
        let capture = PacketSocket::open("tap0", ETH_FROM_HOST);
        r.post_rx(0, 16, 2048);
        for (i, len) in [60usize, 1514, 14, 333].into_iter().enumerate() {
            let f = frame(r.mac, ETH_TO_HOST, len, i as u8);
            to_host.send(&f);
            let (hdr, got, nb) = r.recv(0, WAIT).expect("frame to the host");
            assert_eq!(got, f, "frame {i} differs");
            assert_eq!(nb, 1);
            assert_eq!(&hdr[..10], &[0; 10], "no offload flags for a raw frame");
        }
        // Host -> endpoint, in one descriptor and split over several.
        for (i, (len, pieces)) in [(60usize, 1), (1514, 3), (900, 7)].into_iter().enumerate() {
            let f = frame([2, 0, 0, 0, 0, 7], ETH_FROM_HOST, len, 10 + i as u8);
            r.send(0, &with_header(&f), pieces);
            assert_eq!(capture.recv(WAIT).as_deref(), Some(&f[..]), "frame {i}");
        }
        let c = &r.counters.pairs[0];
        assert_eq!((get(&c.rx_packets), get(&c.tx_packets)), (4, 3));
        assert_eq!(get(&c.tx_bytes), 60 + 1514 + 900);
        assert_eq!(get(&c.tx_max_frame), 1514);
        assert!(!r.needs_reset());
        assert_eq!(r.c.oob_attempts(), 0);
    });
}

#[test]
fn large_frames_span_merged_buffers_published_together() {
    in_netns(LIMIT, || {
        make_tap("tap0", false, 9000);
        let mut r = NetRig::new(&opts("tap0"), offered(1), 64);
        let to_host = PacketSocket::open("tap0", ETH_TO_HOST);
        r.post_rx(0, 60, 1000);
        for (i, len) in [9014usize, 2000, 988, 989, 5000].into_iter().enumerate() {
            let f = frame(r.mac, ETH_TO_HOST, len, i as u8);
            to_host.send(&f);
            // `recv` fails if a merged packet's buffers were not all published at once.
            let (hdr, got, nb) = r.recv(0, WAIT).expect("frame to the host");
            assert_eq!(got, f, "frame {i}");
            assert_eq!(nb, (len + 12).div_ceil(1000), "frame {i}: num_buffers");
            assert_eq!(hdr[0], 0);
            r.post_rx(0, nb, 1000);
        }
        let c = &r.counters.pairs[0];
        assert_eq!(get(&c.rx_packets), 5);
        assert_eq!(get(&c.rx_buffers), 10 + 3 + 1 + 2 + 6);
        assert!(!r.needs_reset());
    });
}

#[test]
fn oversize_frames_are_dropped_and_counted_never_truncated() {
    in_netns(LIMIT, || {
        make_tap("tap0", false, 9000);
        // Without MRG_RXBUF a packet must fit one buffer.
        let mut r = NetRig::new(&opts("tap0"), without_mrg(), 64);
        assert_eq!(r.features & bit(VIRTIO_NET_F_MRG_RXBUF), 0);
        let to_host = PacketSocket::open("tap0", ETH_TO_HOST);
        r.post_rx(0, 1, 512);
        let big = frame(r.mac, ETH_TO_HOST, 3000, 1);
        let small = frame(r.mac, ETH_TO_HOST, 400, 2);
        to_host.send(&big);
        to_host.send(&small);
        let (hdr, got, nb) = r.recv(0, WAIT).expect("the small frame");
        assert_eq!(
            got, small,
            "the buffer must hold the next frame, not a piece of the big one"
        );
        assert_eq!((nb, u16::from_le_bytes([hdr[10], hdr[11]])), (1, 1));
        assert_eq!(get(&r.counters.pairs[0].rx_oversize), 1);

        // With MRG_RXBUF: larger than all the buffers a ring of 4 can hold.
        make_tap("tap1", false, 9000);
        let mut r = NetRig::new(&opts("tap1"), offered(1), 4);
        let to_host = PacketSocket::open("tap1", ETH_TO_HOST);
        r.post_rx(0, 4, 256);
        to_host.send(&frame(r.mac, ETH_TO_HOST, 2000, 3));
        let small = frame(r.mac, ETH_TO_HOST, 200, 4);
        to_host.send(&small);
        let (_, got, nb) = r.recv(0, WAIT).expect("the small frame");
        assert_eq!((got, nb), (small, 1));
        assert_eq!(get(&r.counters.pairs[0].rx_oversize), 1);
        assert!(!r.needs_reset());
    });
}

#[test]
fn malformed_transmit_headers_are_dropped_and_the_ring_moves_on() {
    in_netns(LIMIT, || {
        make_tap("tap0", false, 1500);
        let mut r = NetRig::new(&opts("tap0"), offered(1), 64);
        let capture = PacketSocket::open("tap0", ETH_FROM_HOST);
        let f = frame([2, 0, 0, 0, 0, 7], ETH_FROM_HOST, 200, 5);
        let mut bad = Vec::new();
        let mut p = with_header(&f);
        p[0] = VIRTIO_NET_HDR_F_DATA_VALID as u8;
        bad.push(p);
        let mut p = with_header(&f);
        p[1] = VIRTIO_NET_HDR_GSO_TCPV4 as u8; // segmentation without NEEDS_CSUM and MSS
        bad.push(p);
        let mut p = with_header(&f);
        p[1] = VIRTIO_NET_HDR_GSO_UDP as u8; // UFO is not offered
        bad.push(p);
        let mut p = with_header(&f);
        p[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
        p[6..8].copy_from_slice(&190u16.to_le_bytes()); // checksum past the frame's end
        p[8..10].copy_from_slice(&16u16.to_le_bytes());
        bad.push(p);
        bad.push(vec![0u8; 20]); // shorter than header + Ethernet header
        for p in &bad {
            r.send(0, p, 2);
        }
        r.send(0, &with_header(&f), 1);
        assert_eq!(capture.recv(WAIT).as_deref(), Some(&f[..]));
        assert_eq!(
            capture.recv(Duration::from_millis(200)),
            None,
            "a malformed packet went out"
        );
        let c = &r.counters.pairs[0];
        assert_eq!(get(&c.tx_malformed), bad.len() as u64);
        assert_eq!(get(&c.tx_packets), 1);
        assert!(!r.needs_reset());
    });
}

#[test]
fn a_host_without_receive_buffers_does_not_stop_transmit() {
    in_netns(LIMIT, || {
        make_tap("tap0", false, 1500);
        let mut r = NetRig::new(&opts("tap0"), offered(1), 64);
        let to_host = PacketSocket::open("tap0", ETH_TO_HOST);
        let capture = PacketSocket::open("tap0", ETH_FROM_HOST);
        let inbound: Vec<Vec<u8>> = (0..5)
            .map(|i| frame(r.mac, ETH_TO_HOST, 100 + i, i as u8))
            .collect();
        for f in &inbound {
            to_host.send(f);
        }
        // No receive buffers: transmit still flows, frame after frame.
        for i in 0..20u8 {
            let f = frame([2, 0, 0, 0, 0, 7], ETH_FROM_HOST, 64 + usize::from(i), i);
            r.send(0, &with_header(&f), 1);
            assert_eq!(capture.recv(WAIT).as_deref(), Some(&f[..]), "frame {i}");
        }
        assert!(get(&r.counters.pairs[0].rx_no_buffers) >= 1);
        assert_eq!(get(&r.counters.pairs[0].rx_packets), 0);
        // Buffers arrive: the waiting frames are delivered, in order.
        r.post_rx(0, 8, 2048);
        for (i, f) in inbound.iter().enumerate() {
            let (_, got, _) = r
                .recv(0, WAIT)
                .unwrap_or_else(|| panic!("frame {i} never arrived"));
            assert_eq!(&got, f, "frame {i}");
        }
    });
}

#[test]
fn control_queue_programs_the_receive_filter_and_refuses_garbage() {
    in_netns(LIMIT, || {
        make_tap("tap0", false, 1500);
        let mut r = NetRig::new(&opts("tap0"), offered(1), 64);
        let to_host = PacketSocket::open("tap0", ETH_TO_HOST);
        r.post_rx(0, 32, 2048);
        let ok = Some(VIRTIO_NET_OK as u8);
        let err = Some(VIRTIO_NET_ERR as u8);
        let foreign = frame([2, 0, 0, 0, 0, 0x99], ETH_TO_HOST, 80, 1);
        let mine = frame(r.mac, ETH_TO_HOST, 80, 2);
        let mcast = frame([0x33, 0x33, 0, 0, 0, 0x42], ETH_TO_HOST, 80, 3);

        // Promiscuous after reset: a foreign frame arrives.
        to_host.send(&foreign);
        assert_eq!(r.recv(0, WAIT).unwrap().1, foreign);
        assert!(r.counters.promisc.load(Ordering::Relaxed));
        assert_eq!(r.command(&[0, 0, 0], true), ok, "PROMISC off");
        assert!(!r.counters.promisc.load(Ordering::Relaxed));
        to_host.send(&foreign);
        to_host.send(&mcast);
        to_host.send(&mine);
        assert_eq!(
            r.recv(0, WAIT).unwrap().1,
            mine,
            "only the station's frame passes"
        );
        assert_eq!(get(&r.counters.pairs[0].rx_filtered), 2);
        // A multicast table with the group, then all-multicast.
        let mut table = vec![1u8, 0];
        table.extend(0u32.to_le_bytes());
        table.extend(1u32.to_le_bytes());
        table.extend([0x33, 0x33, 0, 0, 0, 0x42]);
        assert_eq!(r.command(&table, true), ok, "MAC_TABLE_SET");
        to_host.send(&mcast);
        assert_eq!(r.recv(0, WAIT).unwrap().1, mcast);
        // The station address changes (CTRL_MAC_ADDR).
        assert_eq!(
            r.command(&[1, 1, 2, 0, 0, 0, 0, 0x99], true),
            ok,
            "MAC_ADDR_SET"
        );
        to_host.send(&foreign);
        assert_eq!(r.recv(0, WAIT).unwrap().1, foreign);

        // Garbage: unknown class, wrong lengths, unnegotiated commands, a value out of range,
        // a truncated table. Every one is refused and changes nothing.
        let before = get(&r.counters.ctrl_err);
        for cmd in [
            &[0x55u8, 0][..],
            &[0, 0],
            &[0, 0, 1, 1],
            &[0, 2, 1],
            &[4, 0, 1, 0],
            &[2, 0, 1, 0],
            &[1, 0, 9, 9, 9, 9],
            &[0, 0, 7],
            &[0],
        ] {
            assert_eq!(r.command(cmd, true), err, "{cmd:?}");
        }
        assert_eq!(get(&r.counters.ctrl_err), before + 9);
        // No room for the ack: completed with nothing written.
        assert_eq!(r.command(&[0, 0, 1], false), None);
        assert!(!r.needs_reset(), "bad commands must not break the device");
        assert_eq!(r.command(&[0, 0, 1], true), ok, "PROMISC on");
        to_host.send(&frame([2, 0, 0, 0, 0, 0x77], ETH_TO_HOST, 80, 4));
        assert!(r.recv(0, WAIT).is_some());
    });
}

#[test]
fn receive_buffers_smaller_than_the_header_need_a_reset() {
    in_netns(LIMIT, || {
        make_tap("tap0", false, 1500);
        let mut r = NetRig::new(&opts("tap0"), offered(1), 64);
        let to_host = PacketSocket::open("tap0", ETH_TO_HOST);
        r.post_rx(0, 1, 8);
        to_host.send(&frame(r.mac, ETH_TO_HOST, 60, 1));
        let t = std::time::Instant::now();
        while !r.needs_reset() {
            assert!(t.elapsed() < WAIT, "no DEVICE_NEEDS_RESET");
            std::thread::sleep(Duration::from_millis(10));
        }
        // A new driver gets a working device.
        drop(to_host);
        let bus = r.bus();
        let mut drv = VirtioPciDriver::probe(bus).unwrap();
        drv.init(offered(1)).unwrap();
        assert!(!r.needs_reset());
    });
}

#[test]
fn queue_pairs_switch_with_the_control_queue() {
    in_netns(LIMIT, || {
        make_tap("tap0", true, 1500);
        let mut o = opts("tap0");
        o.queue_pairs = 2;
        let mut r = NetRig::new(&o, offered(2), 64);
        assert_ne!(r.features & bit(VIRTIO_NET_F_MQ), 0);
        assert_eq!(r.counters.active_pairs.load(Ordering::Relaxed), 1);
        let capture = PacketSocket::open("tap0", ETH_FROM_HOST);
        let ok = Some(VIRTIO_NET_OK as u8);
        assert_eq!(r.command(&[4, 0, 2, 0], true), ok);
        assert_eq!(r.counters.active_pairs.load(Ordering::Relaxed), 2);
        assert_eq!(r.command(&[4, 0, 3, 0], true), Some(VIRTIO_NET_ERR as u8));
        for p in 0..2 {
            let f = frame([2, 0, 0, 0, 0, 7], ETH_FROM_HOST, 100, p as u8);
            r.send(p, &with_header(&f), 1);
            assert_eq!(capture.recv(WAIT).as_deref(), Some(&f[..]), "pair {p}");
        }
        // Back to one pair: a late packet on the second transmit queue still goes out.
        assert_eq!(r.command(&[4, 0, 1, 0], true), ok);
        assert_eq!(r.counters.active_pairs.load(Ordering::Relaxed), 1);
        let f = frame([2, 0, 0, 0, 0, 7], ETH_FROM_HOST, 100, 9);
        r.send(1, &with_header(&f), 1);
        assert_eq!(capture.recv(WAIT).as_deref(), Some(&f[..]));
        assert_eq!(get(&r.counters.pairs[1].tx_packets), 2);
        assert!(!r.needs_reset());
    });
}

#[test]
fn the_tap_must_exist_and_match() {
    in_netns(LIMIT, || {
        assert!(matches!(Tap::open("nosuch0", 1), Err(TapError::Missing(_))));
        assert!(matches!(Tap::open("", 1), Err(TapError::BadName(_))));
        assert!(matches!(
            Tap::open("a-name-far-too-long", 1),
            Err(TapError::BadName(_))
        ));
        make_tap("tap0", false, 1500);
        let e = Tap::open("tap0", 2).unwrap_err();
        assert!(e.to_string().contains("multi_queue"), "{e}");
        assert!(matches!(Tap::open("lo", 1), Err(TapError::Attach { .. })));
        // A multi-queue TAP serves one queue too.
        make_tap("tap1", true, 1500);
        let t = Tap::open("tap1", 1).unwrap();
        assert!(t.is_multi_queue());
        assert_eq!(t.mtu().unwrap(), 1500);
    });
}

#[test]
fn a_huge_mac_table_costs_the_table_not_the_count() {
    in_netns(LIMIT, || {
        make_tap("tap0", false, 1500);
        let mut r = NetRig::new(&opts("tap0"), offered(1), 64);
        let to_host = PacketSocket::open("tap0", ETH_TO_HOST);
        r.post_rx(0, 8, 2048);
        let bus = r.bus();
        // MAC_TABLE_SET whose unicast table claims 141986 entries: 13 descriptors aliasing one
        // 64 KiB buffer hold them, then an empty multicast table and the ack.
        let head = bus.alloc(6, 64).unwrap();
        let mut h = vec![
            VIRTIO_NET_CTRL_MAC as u8,
            VIRTIO_NET_CTRL_MAC_TABLE_SET as u8,
        ];
        h.extend(((13 * 65532 / 6) as u32).to_le_bytes());
        bus.ram_write(head, &h).unwrap();
        let alias = bus.alloc(65536, 64).unwrap();
        let tail = bus.alloc(5, 64).unwrap();
        bus.ram_write(tail, &[0, 0, 0, 0, 0xaa]).unwrap();
        let mut bufs = vec![(head, 6, false)];
        bufs.extend(std::iter::repeat_n((alias, 65532, false), 13));
        bufs.push((tail, 4, false));
        bufs.push((tail + 4, 1, true));
        let reads = r.c.ram().endpoint_reads();
        r.ctrl.add(&bufs).unwrap();
        r.ctrl.kick().unwrap();
        r.ctrl.wait_used_for(WAIT).expect("control completion");
        let reads = r.c.ram().endpoint_reads() - reads;
        assert!(reads < 1000, "{reads} host reads for one MAC table");
        let mut ack = [0u8];
        bus.ram_read(tail + 4, &mut ack).unwrap();
        assert_eq!(ack[0], VIRTIO_NET_OK as u8);
        // The table overflowed: every unicast address passes now.
        let foreign = frame([2, 0, 0, 0, 0, 0x99], ETH_TO_HOST, 80, 1);
        to_host.send(&foreign);
        assert_eq!(r.recv(0, WAIT).unwrap().1, foreign);
        assert!(!r.needs_reset());
    });
}
