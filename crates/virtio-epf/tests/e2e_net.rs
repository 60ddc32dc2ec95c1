//! virtio-net end to end with a real Linux kernel as the PCIe host: `virtio-epf net` serves a
//! TAP device inside a network namespace the test creates (holding the TAP and the peer's
//! address, so no packet leaves it), a Debian guest under QEMU binds its stock `virtio_net`
//! driver to the function, and traffic runs between the guest and peer tools in the
//! namespace (the guest chroot's own iperf3 and python3, through harness/peer.sh).
//!
//! Two guests cover the issue's checks: one single-queue NIC (MAC, MTU, link, offloads, ping,
//! 64 MiB each way with checksums, iperf3 TCP both ways and UDP, TSO really used, promiscuous
//! mode through the control queue and the endpoint's receive filter, rebind) and one
//! two-queue-pair NIC with MTU 9000 on a 2-vCPU guest (`ping -M do -s 8972`, `ethtool -l/-L`,
//! traffic on both pairs, none on the second while only one is in use).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{Daemon, Guest, NetNs};

const PEER: &str = "10.77.0.1";
const GUEST_CIDR: &str = "10.77.0.2/24";
const MAC: &str = "52:54:00:ab:cd:ef";
const XFER_BYTES: usize = 64 << 20;

/// Guest helpers: find the NIC, wait for the host's acknowledgement of a step.
const NET_PRELUDE: &str = r#"
modprobe virtio_net || fail "modprobe virtio_net"
addr=$(pci_addr $ID_NET) || fail "no net function $ID_NET"
echo "net function at $addr"
check "virtio-pci bound to $addr" [ "$(basename "$(readlink /sys/bus/pci/devices/$addr/driver)")" = virtio-pci ]
v=$(virtio_dir "$addr"); [ -n "$v" ] || fail "no virtio device below $addr"
echo "features $(cat "$v/features")"
check_rings "$addr"
find_if() {
    local i
    for i in $(seq 50); do
        IF=$(ls "$(virtio_dir "$addr")/net" 2>/dev/null | head -n1)
        [ -n "$IF" ] && return 0
        sleep 0.1
    done
    fail "no network interface below $addr"
}
find_if
echo "interface $IF"
# step NAME: tell the host (file /job/NAME) and wait for its answer (/job/NAME-ack).
step() {
    touch "/job/$1"
    local i
    for i in $(seq 1200); do
        [ -e "/job/$1-ack" ] && return 0
        sleep 0.1
    done
    fail "the host never acknowledged step $1"
}
rx_packets() { cat /sys/class/net/$IF/statistics/rx_packets; }
"#;

/// The 64 MiB transfers with checksums, both ends (`connect` in the guest, `serve` at the
/// peer).
const XFER: &str = include_str!("../../../harness/xfer.py");

/// Sends `count` Ethernet frames out of TAP `dev` (towards the guest) to a unicast address
/// that is not the guest's (an experimental EtherType the guest's stack ignores).
const FOREIGN_FRAMES: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
src = s.getsockname()[4]
frame = bytes.fromhex("020000000099") + src + b"\x88\xb5" + bytes(46)
for _ in range(int(sys.argv[2])):
    s.send(frame)
print("sent", sys.argv[2], flush=True)
"#;

/// `key=value` of the first line of `text` containing `marker` and starting with `line`.
fn field<'a>(text: &'a str, line: &str, key: &str) -> Option<&'a str> {
    text.lines().filter(|l| l.starts_with(line)).find_map(|l| {
        l.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    })
}

/// Waits until the guest creates `/job/NAME`.
fn await_step(job: &Path, name: &str, timeout: Duration) {
    let t = Instant::now();
    while !job.join(name).exists() {
        assert!(
            t.elapsed() < timeout,
            "the guest never reached step {name}; output so far:\n{}",
            std::fs::read_to_string(job.join("output.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ack(job: &Path, name: &str) {
    std::fs::write(job.join(format!("{name}-ack")), b"").unwrap();
}

fn stat(d: &Daemon, line: &str, key: &str) -> u64 {
    let s = std::fs::read_to_string(&d.stats).unwrap_or_default();
    Daemon::counter(&s, line, key)
}

/// The latest counters (the file is rewritten every 500 ms).
fn fresh_stat(d: &Daemon, line: &str, key: &str) -> u64 {
    std::thread::sleep(Duration::from_millis(1200));
    stat(d, line, key)
}

#[test]
fn single_queue_nic_carries_traffic_with_offloads_and_filters() {
    let ns = NetNs::new("nic1");
    ns.add_tap("tap0", false, 1500, &format!("{PEER}/24"));
    let d = Daemon::start_in(&ns, "net1", "net", &["--tap", "tap0", "--mac", MAC]);
    let xfer_peer = ns.spawn_peer(
        &[
            "python3",
            "-c",
            XFER,
            "serve",
            PEER,
            "5001",
            &XFER_BYTES.to_string(),
        ],
        &d.dir.join("xfer-peer.log"),
    );
    let iperf = ns.spawn_peer(
        &["iperf3", "-s", "-B", PEER, "--idle-timeout", "300"],
        &d.dir.join("iperf3-server.log"),
    );
    let script = format!(
        r#"
{NET_PRELUDE}
for b in 0 1 3 5 7 8 11 12 15 16 17 18 23; do
    check "feature bit $b negotiated" has_feature "$v" $b
done
check "VIRTIO_F_EVENT_IDX negotiated" has_feature "$v" 29
check "MAC is the one given" [ "$(cat /sys/class/net/$IF/address)" = {MAC} ]
check "MTU is the TAP's" [ "$(cat /sys/class/net/$IF/mtu)" = 1500 ]
ip link set "$IF" up
ip addr add {GUEST_CIDR} dev "$IF"
check "link is up" [ "$(cat /sys/class/net/$IF/carrier)" = 1 ]
ethtool -k "$IF" | grep -E '^(rx-checksumming|tx-checksumming|tcp-segmentation-offload|	tx-tcp-segmentation|	tx-tcp6-segmentation|rx-gro-hw):'
for f in rx-checksumming tx-checksumming tcp-segmentation-offload rx-gro-hw; do
    check "ethtool -k: $f on" sh -c "ethtool -k $IF | grep -q '^$f: on'"
done
check "ethtool -k: tx-tcp6-segmentation on" sh -c "ethtool -k $IF | grep -q 'tx-tcp6-segmentation: on'"

ping -c 100 -i 0.01 -q {PEER} | tee /tmp/ping.txt
check "ping -c 100 -i 0.01: no loss" grep -q ' 0% packet loss' /tmp/ping.txt

python3 /job/xfer.py connect {PEER} 5001 {XFER_BYTES} || fail "64 MiB transfers"

iperf3 -c {PEER} -t 3 > /tmp/up.txt || {{ cat /tmp/up.txt; fail "iperf3 TCP guest->peer"; }}
grep -E 'sender|receiver' /tmp/up.txt
iperf3 -c {PEER} -t 3 -R > /tmp/down.txt || {{ cat /tmp/down.txt; fail "iperf3 TCP peer->guest"; }}
grep -E 'sender|receiver' /tmp/down.txt
iperf3 -c {PEER} -t 2 -u -b 50M > /tmp/udp.txt || {{ cat /tmp/udp.txt; fail "iperf3 UDP"; }}
grep -E 'sender|receiver' /tmp/udp.txt
echo "iperf3 TCP both ways and UDP completed"

# Receive offloads switched off and on through the control queue (GUEST_OFFLOADS_SET): the
# endpoint's TAP follows.
step offloads-on
check "ethtool -K rx-gro-hw off" ethtool -K "$IF" rx-gro-hw off
step offloads-csum
check "ethtool -K rx-gro-hw on" ethtool -K "$IF" rx-gro-hw on
step offloads-on-again

# Promiscuous mode: the host sends frames to a foreign unicast address each time.
before=$(rx_packets)
ip link set "$IF" promisc on
step promisc-on
on=$(( $(rx_packets) - before ))
echo "promiscuous: $on frames received"
check "promiscuous: the foreign frames arrive" [ "$on" -ge 50 ]
ip link set "$IF" promisc off
before=$(rx_packets)
step promisc-off
off=$(( $(rx_packets) - before ))
echo "not promiscuous: $off frames received"
check "not promiscuous: the foreign frames are filtered" [ "$off" -lt 50 ]

check "no receive errors (no partial merged packets)" [ "$(cat /sys/class/net/$IF/statistics/rx_errors)" = 0 ]
ip -s link show "$IF"

# Unbind and bind again: reset, renegotiation, traffic.
echo "$addr" > /sys/bus/pci/drivers/virtio-pci/unbind || fail unbind
echo "$addr" > /sys/bus/pci/drivers/virtio-pci/bind || fail bind
find_if
ip link set "$IF" up
ip addr add {GUEST_CIDR} dev "$IF"
check "ping after rebind" ping -c 5 -i 0.2 -W 5 -q {PEER}
"#
    );
    let guest = Guest::new(&[&d]).spawn("net1", &script, &[("xfer.py", XFER.as_bytes())]);
    let job = guest.job.clone();

    // Promiscuous mode, as the endpoint sees it.
    let send_foreign = |what: &str| {
        let p = ns.spawn_peer(
            &["python3", "-c", FOREIGN_FRAMES, "tap0", "50"],
            &d.dir.join(format!("frames-{what}.log")),
        );
        let log = p.wait(Duration::from_secs(60)).expect("frame sender hung");
        assert!(log.contains("sent 50"), "frame sender: {log}");
    };
    let mut offloads = Vec::new();
    for (step, want) in [
        ("offloads-on", "csum,tso4,tso6,ecn"),
        ("offloads-csum", "csum"),
        ("offloads-on-again", "csum,tso4,tso6,ecn"),
    ] {
        await_step(&job, step, Duration::from_secs(600));
        let (s, ok) = d.wait_stats(Duration::from_secs(10), |s| {
            field(s, "net:", "tap_offloads") == Some(want)
        });
        offloads.push((
            step,
            ok,
            field(&s, "net:", "tap_offloads").map(String::from),
        ));
        ack(&job, step);
    }
    await_step(&job, "promisc-on", Duration::from_secs(120));
    let (s, seen_on) = d.wait_stats(Duration::from_secs(10), |s| {
        field(s, "net:", "promisc") == Some("1")
    });
    let filtered_before = stat(&d, "net pair 0", "rx_filtered");
    send_foreign("on");
    let filtered_on = fresh_stat(&d, "net pair 0", "rx_filtered") - filtered_before;
    ack(&job, "promisc-on");
    await_step(&job, "promisc-off", Duration::from_secs(120));
    let (s2, seen_off) = d.wait_stats(Duration::from_secs(10), |s| {
        field(s, "net:", "promisc") == Some("0")
    });
    let filtered_before = stat(&d, "net pair 0", "rx_filtered");
    send_foreign("off");
    let (_, filtered_all) = d.wait_stats(Duration::from_secs(10), |s| {
        field(s, "net pair 0", "rx_filtered")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v >= filtered_before + 50)
    });
    ack(&job, "promisc-off");

    let run = guest.wait();
    println!("{}", run.output);
    run.assert_ok();
    for (step, ok, got) in &offloads {
        assert!(ok, "step {step}: TAP offloads {got:?}");
    }
    assert!(seen_on, "the endpoint never saw promiscuous mode on:\n{s}");
    assert!(
        seen_off,
        "the endpoint never saw promiscuous mode off:\n{s2}"
    );
    assert!(
        filtered_on < 50,
        "{filtered_on} foreign frames filtered in promiscuous mode"
    );
    assert!(
        filtered_all,
        "the foreign frames were not filtered outside promiscuous mode"
    );

    // The same bytes arrived in both directions.
    let peer_out = xfer_peer
        .wait(Duration::from_secs(60))
        .expect("transfer peer did not finish");
    println!("{peer_out}");
    support::assert_xfer_intact(&run.output, &peer_out, XFER_BYTES);
    drop(iperf);

    let stats = d.stats_text();
    println!("{stats}");
    // TSO really used: the guest handed us segments far beyond the MTU, which reached the
    // endpoint's kernel as such (the TAP's own counters: bytes per packet above a frame).
    let p0 = "net pair 0";
    assert!(Daemon::counter(&stats, p0, "tx_gso") > 0, "{stats}");
    assert!(
        Daemon::counter(&stats, p0, "tx_max_frame") > 1514 * 4,
        "{stats}"
    );
    let (tap_bytes, tap_packets) = (
        ns.dev_stat("tap0", "rx_bytes"),
        ns.dev_stat("tap0", "rx_packets"),
    );
    println!("tap0 received {tap_bytes} bytes in {tap_packets} packets");
    assert!(
        tap_bytes / tap_packets.max(1) > 1514,
        "no large segments reached the TAP"
    );
    // And the other way: the endpoint's kernel handed us large segments for the guest.
    assert!(Daemon::counter(&stats, p0, "rx_gso") > 0, "{stats}");
    assert!(
        Daemon::counter(&stats, p0, "rx_buffers") > Daemon::counter(&stats, p0, "rx_packets"),
        "no packet used merged buffers: {stats}"
    );
    for k in ["tx_malformed", "tx_errors", "rx_bad", "rx_oversize"] {
        assert_eq!(Daemon::counter(&stats, p0, k), 0, "{k}: {stats}");
    }
    assert_eq!(Daemon::counter(&stats, "net:", "ctrl_err"), 0, "{stats}");
    assert!(Daemon::counter(&stats, "net:", "ctrl_ok") > 0, "{stats}");
    assert!(Daemon::counter(&stats, "function", "activations") >= 2);
    assert_eq!(Daemon::counter(&stats, "function", "needs_reset"), 0);
    assert!(d.stop().success());
}

#[test]
fn two_queue_pairs_with_jumbo_frames() {
    let ns = NetNs::new("nic2");
    ns.add_tap("tap0", true, 9000, &format!("{PEER}/24"));
    let d = Daemon::start_in(
        &ns,
        "net2",
        "net",
        &["--tap", "tap0", "--queues", "2", "--mtu", "9000"],
    );
    let iperf = ns.spawn_peer(
        &["iperf3", "-s", "-B", PEER, "--idle-timeout", "300"],
        &d.dir.join("iperf3-server.log"),
    );
    let script = format!(
        r#"
{NET_PRELUDE}
check "VIRTIO_NET_F_MQ negotiated" has_feature "$v" 22
check "MTU is the one given" [ "$(cat /sys/class/net/$IF/mtu)" = 9000 ]
ip link set "$IF" up
ip addr add {GUEST_CIDR} dev "$IF"
check "ping -M do -s 8972" ping -M do -s 8972 -c 3 -W 5 {PEER}
ethtool -l "$IF"
check "ethtool -l: 2 combined channels at most" sh -c "ethtool -l $IF | grep -A4 'Pre-set' | grep -q 'Combined:	2'"
check "ethtool -l: 2 combined channels in use" sh -c "ethtool -l $IF | grep -A4 'Current' | grep -q 'Combined:	2'"
step two-pairs
# Each CPU transmits on its own queue (XPS); the TAP answers a flow on the queue it came from.
check "ping from CPU 0" taskset -c 0 ping -c 20 -i 0.02 -q {PEER}
check "ping from CPU 1" taskset -c 1 ping -c 20 -i 0.02 -q {PEER}
check "iperf3 over both pairs" iperf3 -c {PEER} -t 2 -P 4 > /dev/null

check "ethtool -L combined 1" ethtool -L "$IF" combined 1
check "ethtool -l: 1 combined channel in use" sh -c "ethtool -l $IF | grep -A4 'Current' | grep -q 'Combined:	1'"
step one-pair
check "ping from CPU 1 with one pair" taskset -c 1 ping -c 20 -i 0.02 -q {PEER}
step one-pair-traffic
check "ethtool -L combined 2" ethtool -L "$IF" combined 2
check "ethtool -l: 2 combined channels in use again" sh -c "ethtool -l $IF | grep -A4 'Current' | grep -q 'Combined:	2'"
check "ping from CPU 1 with two pairs" taskset -c 1 ping -c 20 -i 0.02 -q {PEER}
check "jumbo ping with two pairs" ping -M do -s 8972 -c 3 -W 5 {PEER}
check "iperf3 with two pairs" iperf3 -c {PEER} -t 2 -R > /dev/null
check "no receive errors" [ "$(cat /sys/class/net/$IF/statistics/rx_errors)" = 0 ]
"#
    );
    let mut g = Guest::new(&[&d]);
    g.smp = 2;
    let guest = g.spawn("net2", &script, &[]);
    let job = guest.job.clone();

    await_step(&job, "two-pairs", Duration::from_secs(600));
    let (s2, two) = d.wait_stats(Duration::from_secs(10), |s| {
        field(s, "net:", "pairs") == Some("2/2")
    });
    ack(&job, "two-pairs");
    await_step(&job, "one-pair", Duration::from_secs(300));
    let (s, one) = d.wait_stats(Duration::from_secs(10), |s| {
        field(s, "net:", "pairs") == Some("1/2")
    });
    let p1 = |k| fresh_stat(&d, "net pair 1", k);
    let (rx1, tx1) = (p1("rx_packets"), stat(&d, "net pair 1", "tx_packets"));
    let tx0 = stat(&d, "net pair 0", "tx_packets");
    ack(&job, "one-pair");
    await_step(&job, "one-pair-traffic", Duration::from_secs(120));
    let (rx1b, tx1b) = (p1("rx_packets"), stat(&d, "net pair 1", "tx_packets"));
    let tx0b = stat(&d, "net pair 0", "tx_packets");
    ack(&job, "one-pair-traffic");

    let run = guest.wait();
    println!("{}", run.output);
    run.assert_ok();
    drop(iperf);
    assert!(two, "the endpoint never used two pairs:\n{s2}");
    assert!(one, "the endpoint never switched to one pair:\n{s}");
    assert_eq!(
        (rx1b, tx1b),
        (rx1, tx1),
        "pair 1 carried traffic while not in use"
    );
    assert!(
        tx0b >= tx0 + 20,
        "pair 0 did not carry the pings: {tx0} -> {tx0b}"
    );

    let stats = d.stats_text();
    println!("{stats}");
    for p in ["net pair 0", "net pair 1"] {
        for k in ["rx_packets", "tx_packets"] {
            assert!(Daemon::counter(&stats, p, k) > 20, "{p} {k}: {stats}");
        }
    }
    assert!(tx1b < Daemon::counter(&stats, "net pair 1", "tx_packets"));
    // The transport's per-queue counters agree: receiveq2 and transmitq2 were used.
    assert!(Daemon::counter(&stats, "queue 2", "chains") > 0, "{stats}");
    assert!(Daemon::counter(&stats, "queue 3", "chains") > 0, "{stats}");
    assert!(
        Daemon::counter(&stats, "net pair 0", "tx_max_frame") >= 9014,
        "{stats}"
    );
    assert_eq!(Daemon::counter(&stats, "net:", "ctrl_err"), 0, "{stats}");
    assert!(d.stop().success());
}

/// Runs `virtio-epf net ARGS` inside `ns` and returns (exit code, stderr).
fn net_cli(ns: &NetNs, args: &[&str]) -> (Option<i32>, String) {
    let dir = support::scratch("net-cli");
    let sock = dir.join("x.sock");
    let out = ns
        .command(env!("CARGO_BIN_EXE_virtio-epf"))
        .args(["net", "--vfio-user", sock.to_str().unwrap()])
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run virtio-epf");
    assert!(!sock.exists(), "socket left behind by a failed start");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_net_arguments_give_one_line_errors() {
    let ns = NetNs::new("cli");
    ns.add_tap("tap1", false, 1500, "10.77.9.1/24");
    for (args, want) in [
        (
            &["--tap", "nosuch0"][..],
            "TAP device nosuch0 does not exist",
        ),
        (&["--tap", "lo"], "cannot attach to TAP device lo"),
        (&["--tap", "tap1", "--queues", "2"], "multi_queue"),
        (
            &["--tap", "tap1", "--mac", "01:00:5e:00:00:01"],
            "multicast",
        ),
        (
            &["--tap", "tap1", "--mac", "52:54:00:zz:00:01"],
            "invalid MAC address",
        ),
        (&["--tap", "tap1", "--mtu", "67"], "MTU 67 is impossible"),
        (
            &["--tap", "tap1", "--mtu", "65522"],
            "MTU 65522 is impossible",
        ),
        (
            &["--tap", "tap1", "--queues", "0"],
            "queue pairs 0 is out of range",
        ),
        (&["--tap", "a/b"], "not a valid interface name"),
    ] {
        let (code, err) = net_cli(&ns, args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("virtio-epf: ") && err.contains(want),
            "{args:?}: {err}"
        );
    }
    // Nothing was created in the namespace by the failed starts.
    let out = ns.command("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&out.stdout);
    assert_eq!(links.lines().count(), 2, "{links}");
    let o = Command::new(env!("CARGO_BIN_EXE_virtio-epf"))
        .args(["net", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for opt in ["--tap", "--mac", "--queues", "--mtu"] {
        assert!(help.contains(opt), "{help}");
    }
}
