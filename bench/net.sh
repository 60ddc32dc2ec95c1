#!/usr/bin/env bash
# virtio-net benchmark (not part of `cargo test`): the same guest, the same TAP and the same
# peer, once with `virtio-epf net` (release build, over vfio-user) and once with QEMU's own
# virtio-net-pci on that TAP (vhost off; and vhost on when /dev/vhost-net is usable).
#
# Measured from inside the guest, against the guest chroot's own tools run as the peer in a
# network namespace created here (harness/peer.sh), so no packet leaves the namespace:
#   tcp_tx_mbps   iperf3 TCP, guest -> peer (receiver's rate)
#   tcp_rx_mbps   iperf3 TCP, peer -> guest (-R)
#   udp_tx_kpps   iperf3 UDP, 64-byte datagrams, guest -> peer, unlimited rate: datagrams
#                 the peer received per second
#   udp_rx_kpps   the same, peer -> guest (-R). The peer floods a TCG guest, so this is
#                 receive livelock: what reaches iperf3 depends on the CPU the guest has left
#   udp_rx_nic_kpps  during that run, packets per second the guest's NIC driver received
#                 (the device's delivery rate, whatever the guest's sockets then dropped)
#   ping_rtt_us   ping -i 0.01, average round trip
# Each configuration runs ROUNDS times, interleaved (the first one alternates between rounds),
# and the median is reported with the range. On a shared 2-core machine with a TCG guest the
# rounds vary by tens of percent: compare medians of several rounds, not single runs. Ratios are
# virtio-epf relative to the QEMU configuration, oriented so that > 1.0 means virtio-epf is
# better (throughputs: epf / qemu; latency: qemu / epf).
#
# With NET_BENCH_MODES (a list of legacy-poll, legacy-doorbell, windows, split, notify-poll)
# virtio-epf also runs in those modes (the options of the e2e suites' modes; split: --rings
# split, the default negotiating packed rings; notify-poll: --notify poll, the modern layout
# with a polled notify page); their ratio columns are relative to virtio-epf in the default mode
# (modern, trapped registers, doorbell, packed rings): the cost of each constraint.
#
# Usage: bench/net.sh            (root; 2 cores is enough, the guest is TCG like the tests)
# Environment: NET_BENCH_SECONDS (per iperf3 run, default 5), NET_BENCH_ROUNDS (default 3),
# NET_BENCH_MODES (default none).
# Prints the table on stdout; details in the work directory it names.

set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECS=${NET_BENCH_SECONDS:-5}
ROUNDS=${NET_BENCH_ROUNDS:-3}
[[ $EUID -eq 0 ]] || { echo "bench/net.sh: must run as root" >&2; exit 1; }

source scripts/lib.sh
epf_setup netbench
EPF_KEEP_WORK=1 # the table names it; per-run details stay there
WORK=$EPF_WORK
NS="epf-bench-$$"
PEER=10.77.0.1
GUEST=10.77.0.2/24

cleanup() {
	epf_cleanup
	ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
# One single-queue TAP with the virtio-net header, used by every configuration in turn.
ip netns exec "$NS" ip tuntap add dev tap0 mode tap vnet_hdr
ip netns exec "$NS" ip addr add "$PEER/24" dev tap0
ip netns exec "$NS" ip link set tap0 up
ip netns exec "$NS" harness/peer.sh iperf3 -s -B "$PEER" --idle-timeout 900 >"$WORK/iperf3-server.log" 2>&1 &
EPF_PIDS+=($!)

mkdir -p "$WORK/job"
cat >"$WORK/job/run.sh" <<EOF
#!/bin/bash
set -u
modprobe virtio_net
IF=
for i in \$(seq 50); do
	for d in /sys/class/net/*; do
		[ "\$(basename "\$(readlink -f \$d/device/driver 2>/dev/null)")" = virtio_net ] && IF=\$(basename \$d)
	done
	[ -n "\$IF" ] && break
	sleep 0.1
done
[ -n "\$IF" ] || { echo "no virtio_net interface"; exit 1; }
ip link set "\$IF" up
ip addr add $GUEST dev "\$IF"
ping -c 5 -i 0.2 -W 5 -q $PEER >/dev/null || { echo "peer unreachable"; exit 1; }
# One iperf3 run, JSON into /tmp/\$1.json.
run() { local n=\$1; shift; iperf3 -c $PEER -t $SECS -J "\$@" >/tmp/\$n.json || { cat /tmp/\$n.json; exit 1; }; }
run tcp_tx
run tcp_rx -R
run udp_tx -u -l 64 -b 0
nic0=\$(cat /sys/class/net/\$IF/statistics/rx_packets)
run udp_rx -u -l 64 -b 0 -R
nic1=\$(cat /sys/class/net/\$IF/statistics/rx_packets)
echo "\$nic0 \$nic1" >/tmp/nic.txt
ping -c 300 -i 0.01 -q $PEER >/tmp/ping.txt
python3 - <<'PY'
import json, re
def tcp(n):
    return json.load(open(f"/tmp/{n}.json"))["end"]["sum_received"]["bits_per_second"] / 1e6
def udp(n):
    e = json.load(open(f"/tmp/{n}.json"))["end"]
    s = e.get("sum_received") or e["sum"]
    got = s["packets"] - s.get("lost_packets", 0)
    return got / s["seconds"] / 1e3
rtt = re.search(r"= [\d.]+/([\d.]+)/", open("/tmp/ping.txt").read()).group(1)
n0, n1 = map(int, open("/tmp/nic.txt").read().split())
secs = json.load(open("/tmp/udp_rx.json"))["end"]["sum_received"]["seconds"]
print(f"RESULT tcp_tx_mbps={tcp('tcp_tx'):.0f} tcp_rx_mbps={tcp('tcp_rx'):.0f} "
      f"udp_tx_kpps={udp('udp_tx'):.1f} udp_rx_kpps={udp('udp_rx'):.1f} "
      f"udp_rx_nic_kpps={(n1 - n0) / secs / 1e3:.1f} ping_rtt_us={float(rtt) * 1000:.0f}")
PY
EOF
chmod +x "$WORK/job/run.sh"

# run_config NAME: one guest run; appends its RESULT line to $WORK/NAME.results.
run_config() {
	local name=$1 job="$WORK/job-$1-$2" rc=0
	rm -rf "$job" && cp -r "$WORK/job" "$job"
	case $name in
	epf*)
		local mode=()
		case $name in
		epf) ;;
		epf-legacy-poll) mode=(--layout legacy --registers poll --notify poll) ;;
		epf-legacy-doorbell) mode=(--layout legacy --registers trap --notify doorbell) ;;
		epf-windows) mode=(--host-windows 4 --window-size 65536) ;;
		epf-split) mode=(--rings split) ;;
		epf-notify-poll) mode=(--notify poll) ;;
		*) echo "bench/net.sh: unknown configuration $name" >&2; exit 1 ;;
		esac
		EPF_WRAP=(ip netns exec "$NS")
		EPF_QEMU=()
		epf_daemon "$name-$2" net --tap tap0 "${mode[@]}"
		local daemon=$EPF_PID
		epf_qemu_function 1 "$name-$2"
		harness/run-guest.sh --job-dir "$job" --quiet --timeout 600 --socket-dir "$WORK/sock" -- "${EPF_QEMU[@]}" \
			>"$job.out" 2>&1 || rc=$?
		kill "$daemon" && wait "$daemon" || true
		;;
	qemu-user | qemu-vhost)
		local vhost=off
		[[ $name == qemu-vhost ]] && vhost=on
		ip netns exec "$NS" harness/run-guest.sh --job-dir "$job" --quiet --timeout 600 -- \
			-device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1 \
			-netdev "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=$vhost" \
			-device virtio-net-pci,netdev=n0,bus=rp1,disable-legacy=on,mac=52:54:00:12:34:56 \
			>"$job.out" 2>&1 || rc=$?
		;;
	esac
	if [[ $rc -ne 0 ]] || ! grep -q '^RESULT ' "$job/output.log"; then
		echo "bench/net.sh: $name round $2 failed (exit $rc); see $job" >&2
		tail -n 20 "$job.out" "$job/output.log" >&2 || true
		exit 1
	fi
	grep '^RESULT ' "$job/output.log" | sed 's/^RESULT //' >>"$WORK/$name.results"
	echo "  $name round $2: $(tail -n1 "$WORK/$name.results")" >&2
}

CONFIGS=(epf qemu-user)
VHOST_NOTE="vhost-net: /dev/vhost-net not present on this host (kernel without CONFIG_VHOST_NET); not measured"
if [[ -c /dev/vhost-net ]] && { exec 8<>/dev/vhost-net; } 2>/dev/null; then
	exec 8>&-
	CONFIGS+=(qemu-vhost)
	VHOST_NOTE=""
fi
for m in ${NET_BENCH_MODES:-}; do CONFIGS+=("epf-$m"); done

echo "virtio-net benchmark: ${ROUNDS} round(s), ${SECS}s per iperf3 run, work dir $WORK" >&2
for r in $(seq "$ROUNDS"); do
	order=("${CONFIGS[@]}")
	if ((r % 2 == 0)); then
		mapfile -t order < <(printf '%s\n' "${CONFIGS[@]}" | tac)
	fi
	for c in "${order[@]}"; do run_config "$c" "$r"; done
done

# Medians and the table.
python3 - "$WORK" "${CONFIGS[@]}" <<'PY'
import statistics, sys
work, configs = sys.argv[1], sys.argv[2:]
keys = ["tcp_tx_mbps", "tcp_rx_mbps", "udp_tx_kpps", "udp_rx_kpps", "udp_rx_nic_kpps",
        "ping_rtt_us"]
med, rng = {}, {}
for c in configs:
    rows = [dict(kv.split("=") for kv in l.split()) for l in open(f"{work}/{c}.results")]
    med[c] = {k: statistics.median(float(r[k]) for r in rows) for k in keys}
    rng[c] = {k: (min(float(r[k]) for r in rows), max(float(r[k]) for r in rows)) for k in keys}
print(f"medians of {len(rows)} round(s) [min-max]")
head = f"{'metric':<16}" + "".join(f"{c:>24}" for c in configs)
# qemu columns: epf relative to QEMU; epf-<mode> columns: the mode relative to epf.
def ratio_name(c):
    return f"{c[4:]}/epf" if c.startswith("epf-") else f"epf/{c}"
head += "".join(f"{ratio_name(c):>22}" for c in configs[1:])
print(head)
for k in keys:
    line = f"{k:<16}"
    for c in configs:
        lo, hi = rng[c][k]
        line += f"{med[c][k]:>10.1f} [{lo:.0f}-{hi:.0f}]".rjust(24)
    for c in configs[1:]:
        a, b = med["epf"][k], med[c][k]
        if c.startswith("epf-"):
            a, b = b, a
        ratio = (b / a) if k == "ping_rtt_us" else (a / b)
        line += f"{ratio:>22.2f}"
    print(line)
print("(ratios > 1.0: the numerator is better; for ping_rtt_us the ratio is inverted)")
PY
[[ -z $VHOST_NOTE ]] || echo "$VHOST_NOTE"
