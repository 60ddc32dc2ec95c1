#!/usr/bin/env bash
# The virtqueue engine's own cost per request, split vs packed rings (not part of the test
# suite; numbers, not pass/fail). In one run:
#   ours  crates/ring-bench: the device-side engine (epf-virtqueue) and the loopback host
#         driver (epf-loopback HostQueue) on the same rings in host RAM, both polling, no
#         notifications; direction tx (the driver posts device-readable buffers, the device
#         copies the payload out, like virtio-user -> vhost-user) unless RING_DIR=rx.
#         Columns: Mpps with two threads pinned to CPUs 0 and 1 (best of 3) and with one
#         thread alternating driver and device passes; instructions per request of the
#         device pass (callgrind, deterministic); the device's host-memory transactions
#         and bytes per request (ring areas and payload apart), and a PCIe model: every
#         read a 1 us round trip, writes posted (free), next to the minimum (one
#         descriptor read and one used write per batch, plus the payload).
#   dpdk  DPDK testpmd (Debian's dpdk-dev, 22.11): vhost-user (rxonly) <-> virtio-user
#         (txonly), one forwarding core each, split (packed_vq=0) and packed (packed_vq=1),
#         64 and 1500 byte packets, burst 32: the vhost side's receive rate (median of its
#         last per-second rates).
# The ratio column is ours (two threads) / DPDK for the same ring format and size.
#
# Usage: bench/ring.sh   (root: installs valgrind and dpdk-dev if missing)
#   RING_REQUESTS=N (two-thread runs, default 10000000), RING_BATCHES="1 8 32"
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REQUESTS=${RING_REQUESTS:-10000000}
BATCHES=${RING_BATCHES:-"1 8 32"}
DIR=${RING_DIR:-tx}
CG_REQUESTS=20000

need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v dpdk-testpmd >/dev/null ||
	need+=(dpdk-dev librte-net-vhost23 librte-net-virtio23 librte-mempool-ring23)
if ((${#need[@]})); then
	[[ $EUID -eq 0 ]] || { echo "bench/ring.sh: needs root to install ${need[*]}" >&2; exit 1; }
	echo "ring.sh: installing ${need[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
cargo build --release --locked -q -p epf-ring-bench
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/ring-bench
WORK=$(mktemp -d /tmp/ring-bench.XXXXXX)
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

# dpdk_pps PACKED(0|1) BYTES -> Mpps received by vhost-user
dpdk_pps() {
	local packed=$1 bytes=$2 sock=$WORK/vhu-$1-$2.sock
	local vh=$WORK/vh-$1-$2.log vu=$WORK/vu-$1-$2.log
	dpdk-testpmd --lcores 0@1,1@0 --no-pci --no-huge -m 1024 --file-prefix=ringbench-$$-vh \
		--vdev "net_vhost0,iface=$sock,queues=1" -- --forward-mode=rxonly --nb-cores=1 \
		--stats-period=1 >"$vh" 2>&1 &
	local vhpid=$!
	for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
	dpdk-testpmd --lcores 0@0,1@1 --no-pci --no-huge -m 1024 --single-file-segments \
		--file-prefix=ringbench-$$-vu \
		--vdev "net_virtio_user0,path=$sock,queues=1,packed_vq=$packed" -- \
		--forward-mode=txonly --txpkts="$bytes" --burst=32 --nb-cores=1 \
		--stats-period=1 >"$vu" 2>&1 &
	local vupid=$!
	sleep 10
	kill -INT "$vupid" "$vhpid" 2>/dev/null || true
	wait "$vupid" "$vhpid" 2>/dev/null || true
	grep -a 'Rx-pps:' "$vh" | awk '{print $2}' | awk '$1 > 0' | tail -n 6 | sort -n |
		awk '{v[NR]=$1} END { if (NR == 0) { print "nan"; exit } printf "%.3f\n", v[int((NR+1)/2)]/1e6 }'
}

declare -A DPDK
echo "ring.sh: DPDK testpmd vhost-user <-> virtio-user (10 s each)..." >&2
for fmt in split packed; do
	for bytes in 64 1500; do
		DPDK[$fmt-$bytes]=$(dpdk_pps "$([ $fmt = packed ] && echo 1 || echo 0)" "$bytes")
	done
done

printf '%-6s %-3s %5s %5s | %7s %7s %6s | %6s %6s %6s %6s %8s | %7s %7s | %6s %6s %5s | %7s %5s\n' \
	ring dir bytes batch "Mpps2t" "Mpps1t" "instr" "rd" "wr" "d-rd" "d-wr" "ringB" \
	"link_us" "min_us" "txn" "mintxn" "x_min" "dpdk" "ratio"
for fmt in split packed; do
	for bytes in 64 1500; do
		for batch in $BATCHES; do
			best=0
			for _ in 1 2 3; do
				line=$("$BIN" threads "$fmt" "$DIR" "$bytes" "$batch" "$REQUESTS")
				m=$(field mpps "$line")
				best=$(awk -v a="$best" -v b="$m" 'BEGIN { print (b > a) ? b : a }')
			done
			single=$("$BIN" single "$fmt" "$DIR" "$bytes" "$batch" 200000)
			RING_BENCH_NO_COUNT=1 valgrind --tool=callgrind -q \
				--callgrind-out-file="$WORK/cg.out" --toggle-collect='*device_pass*' \
				"$BIN" single "$fmt" "$DIR" "$bytes" "$batch" "$CG_REQUESTS" >/dev/null
			ir=$(awk '/^summary:/ {print $2}' "$WORK/cg.out")
			rd=$(field ring_reads "$single")
			wr=$(field ring_writes "$single")
			drd=$(field data_reads "$single")
			dwr=$(field data_writes "$single")
			rb=$(awk -v a="$(field ring_read_bytes "$single")" -v b="$(field ring_write_bytes "$single")" 'BEGIN { printf "%.1f", a + b }')
			dpdk=${DPDK[$fmt-$bytes]}
			awk -v fmt="$fmt" -v dir="$DIR" -v bytes="$bytes" -v batch="$batch" \
				-v m2="$best" -v m1="$(field mpps "$single")" -v ir="$ir" -v n="$CG_REQUESTS" \
				-v rd="$rd" -v wr="$wr" -v drd="$drd" -v dwr="$dwr" -v rb="$rb" -v dpdk="$dpdk" 'BEGIN {
				link = (rd + drd) * 1.0
				minrd = 1.0 / batch + (dir == "tx" ? 1 : 0)
				txn = rd + wr + drd + dwr
				mintxn = 2.0 / batch + 1
				ratio = (dpdk + 0 > 0) ? sprintf("%.2f", m2 / dpdk) : "n/a"
				printf "%-6s %-3s %5d %5d | %7.3f %7.3f %6.0f | %6.3f %6.3f %6.3f %6.3f %8.1f | %7.3f %7.3f | %6.3f %6.3f %5.2f | %7s %5s\n",
					fmt, dir, bytes, batch, m2, m1, ir / n, rd, wr, drd, dwr, rb,
					link, minrd, txn, mintxn, txn / mintxn, dpdk, ratio
			}'
		done
	done
done
cat <<'LEGEND'
Mpps2t: two polling threads (driver, device), best of 3; Mpps1t: one thread alternating
driver and device passes; instr: device-pass instructions per request (callgrind; engine,
payload copy and the loopback's host-memory checks); rd/wr: the device's ring-area
transactions per request, d-rd/d-wr: payload transactions, ringB: ring bytes per request;
link_us: PCIe model, reads x 1 us (round trips), writes posted; min_us: one descriptor read
per batch (+ the payload read for tx); txn/mintxn: all transactions per request against the
minimum (payload + one ring read and one ring write per batch), x_min their ratio; dpdk:
testpmd vhost-user rxonly <- virtio-user txonly Mpps (same ring format and size, burst 32);
ratio: Mpps2t / dpdk.
LEGEND
