//! End to end on the second guest kernel, trixie-backports' linux-image-amd64 (7.x,
//! `harness/run-guest.sh --kernel bpo`), which negotiates VIRTIO_F_IN_ORDER (feature bit 35;
//! trixie's 6.12 does not). The devices that use buffers in order (rng, console, net) offer
//! it; here the stock drivers take it on packed and split rings, data arrives intact, and
//! the endpoint's counters show used entries the batches made unnecessary (`used_elided`).

mod support;

use std::time::Duration;
use support::{Daemon, Guest, GuestKernel, NetNs};

/// Guest checks on the virtio device below `$addr`: 7.x, IN_ORDER negotiated, the ring
/// format the daemon was asked for.
fn feature_checks(packed: bool) -> String {
    let ring = if packed {
        r#"check "VIRTIO_F_RING_PACKED negotiated" has_feature "$v" 34"#
    } else {
        r#"check "split rings: VIRTIO_F_RING_PACKED not negotiated" lacks_feature "$v" 34"#
    };
    format!(
        r#"
echo "uname -r: $(uname -r)"
check "guest kernel is 7.x" sh -c 'uname -r | grep -q "^7\."'
v=$(virtio_dir "$addr"); [ -n "$v" ] || fail "no virtio device below $addr"
echo "features $(cat "$v/features")"
check "VIRTIO_F_IN_ORDER negotiated" has_feature "$v" 35
check "VIRTIO_F_NOTIFICATION_DATA negotiated" has_feature "$v" 38
{ring}
"#
    )
}

fn ring_args(packed: bool) -> &'static [&'static str] {
    if packed {
        &[]
    } else {
        &["--rings", "split"]
    }
}

#[test]
fn rng_negotiates_in_order_on_both_ring_formats() {
    for packed in [true, false] {
        let d = Daemon::start("rng-k7", "rng", ring_args(packed));
        let script = format!(
            r#"
addr=$(pci_addr $ID_RNG) || fail "no rng function $ID_RNG"
modprobe virtio_rng
check "virtio-pci bound to $addr" [ "$(basename "$(readlink /sys/bus/pci/devices/$addr/driver)")" = virtio-pci ]
{}
check "rng_current is virtio_rng" grep -q '^virtio_rng' /sys/class/misc/hw_random/rng_current
head -c 262144 /dev/hwrng > /tmp/rng1
head -c 262144 /dev/hwrng > /tmp/rng2
check "256 KiB from /dev/hwrng" [ "$(wc -c < /tmp/rng1)" = 262144 ]
check "entropy is not all zero" [ "$(tr -d '\000' < /tmp/rng1 | wc -c)" -gt 200000 ]
check "two reads differ" sh -c '! cmp -s /tmp/rng1 /tmp/rng2'
# Rebinding renegotiates: the in-order state starts afresh with the new rings.
echo "$addr" > /sys/bus/pci/drivers/virtio-pci/unbind || fail unbind
echo "$addr" > /sys/bus/pci/drivers/virtio-pci/bind || fail bind
check "64 KiB after a rebind" [ "$(head -c 65536 /dev/hwrng | wc -c)" = 65536 ]
"#,
            feature_checks(packed)
        );
        let run = Guest::new(&[&d])
            .kernel(GuestKernel::Backports)
            .run("rng-k7", &script, &[]);
        println!("{}", run.output);
        run.assert_ok();
        let stats = d.stats_text();
        println!("{stats}");
        assert!(Daemon::counter(&stats, "queue 0", "bytes") >= 2 * 262144);
        assert_eq!(Daemon::counter(&stats, "function", "needs_reset"), 0);
        let status = d.stop();
        assert!(status.success(), "virtio-epf exit status {status}");
    }
}

#[test]
fn console_moves_a_mebibyte_each_way_in_order_on_both_ring_formats() {
    const LEN: usize = 1 << 20;
    for packed in [true, false] {
        let (d, backend) = support::console_daemon("console-k7", ring_args(packed));
        let guest = Guest::new(&[&d]).kernel(GuestKernel::Backports);
        support::console_roundtrip(
            &guest,
            "console-k7",
            &backend,
            "$ID_CONSOLE",
            LEN,
            &feature_checks(packed),
            "",
        );
        let stats = d.stats_text();
        println!("{stats}");
        assert!(Daemon::counter(&stats, "queue 1", "bytes") >= LEN as u64);
        // The receive queue fills the driver's posted buffers completely, several per pass:
        // their used entries are folded into the batch's last one.
        let elided = Daemon::counter(&stats, "queue 0", "used_elided");
        assert!(elided > 0, "packed={packed}: no used entry elided\n{stats}");
        assert_eq!(Daemon::counter(&stats, "function", "needs_reset"), 0);
        assert!(d.stop().success());
    }
}

const PEER: &str = "10.78.0.1";
const GUEST_CIDR: &str = "10.78.0.2/24";
const XFER_BYTES: usize = 16 << 20;
const XFER: &str = include_str!("../../../harness/xfer.py");

#[test]
fn net_carries_checksummed_traffic_in_order() {
    let ns = NetNs::new("k7net");
    ns.add_tap("tap0", false, 1500, &format!("{PEER}/24"));
    let d = Daemon::start_in(&ns, "net-k7", "net", &["--tap", "tap0"]);
    let peer = ns.spawn_peer(
        &[
            "python3",
            "-c",
            XFER,
            "serve",
            PEER,
            "5002",
            &XFER_BYTES.to_string(),
        ],
        &d.dir.join("xfer-peer.log"),
    );
    let script = format!(
        r#"
modprobe virtio_net || fail "modprobe virtio_net"
addr=$(pci_addr $ID_NET) || fail "no net function $ID_NET"
check "virtio-pci bound to $addr" [ "$(basename "$(readlink /sys/bus/pci/devices/$addr/driver)")" = virtio-pci ]
{}
IF=
for i in $(seq 50); do
    IF=$(ls "$(virtio_dir "$addr")/net" 2>/dev/null | head -n1)
    [ -n "$IF" ] && break
    sleep 0.1
done
[ -n "$IF" ] || fail "no network interface below $addr"
ip link set "$IF" up
ip addr add {GUEST_CIDR} dev "$IF"
ping -c 50 -i 0.02 -q {PEER} | tee /tmp/ping.txt
check "ping -c 50: no loss" grep -q ' 0% packet loss' /tmp/ping.txt
python3 /job/xfer.py connect {PEER} 5002 {XFER_BYTES} || fail "16 MiB transfers"
check "no receive errors" [ "$(cat /sys/class/net/$IF/statistics/rx_errors)" = 0 ]
"#,
        feature_checks(true)
    );
    let run = Guest::new(&[&d]).kernel(GuestKernel::Backports).run(
        "net-k7",
        &script,
        &[("xfer.py", XFER.as_bytes())],
    );
    println!("{}", run.output);
    run.assert_ok();
    let peer_out = peer
        .wait(Duration::from_secs(120))
        .expect("the transfer peer did not finish");
    println!("{peer_out}");
    support::assert_xfer_intact(&run.output, &peer_out, XFER_BYTES);
    let stats = d.stats_text();
    println!("{stats}");
    // Transmit completions (length 0) of one pass go out as one used entry.
    let elided = Daemon::counter(&stats, "queue 1", "used_elided");
    assert!(elided > 0, "no transmit used entry elided\n{stats}");
    assert_eq!(Daemon::counter(&stats, "function", "needs_reset"), 0);
    assert!(d.stop().success());
}
