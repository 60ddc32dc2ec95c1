#!/usr/bin/env bash
# virtio-vsock benchmark (not part of `cargo test`): one guest with two virtio-epf functions
# over the same link (vfio-user, release build): `virtio-epf vsock` and `virtio-epf net` (a
# TAP in a network namespace created here). The same python tools (harness/vsock.py in the
# guest, harness/vsock_peer.py on the endpoint side) run over AF_VSOCK <-> Unix socket and
# over TCP <-> the namespace's TCP, in the same guest, one after the other:
#   tx_mbs   host -> endpoint, one stream of 64 KiB writes for SECONDS (sender's rate, MB/s)
#   rx_mbs   endpoint -> host, the same the other way (receiver's rate, MB/s)
#   rr_us    2000 round trips of 64 bytes to an echo service (microseconds each)
# ROUNDS guests are booted; medians and ranges are reported, with the ratio vsock / TCP
# oriented so that > 1.0 means vsock is better (rr: tcp / vsock).
#
# Usage: bench/vsock.sh   (root)
# Environment: VSOCK_BENCH_SECONDS (default 5), VSOCK_BENCH_ROUNDS (default 3).

set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECS=${VSOCK_BENCH_SECONDS:-5}
ROUNDS=${VSOCK_BENCH_ROUNDS:-3}
[[ $EUID -eq 0 ]] || { echo "bench/vsock.sh: must run as root" >&2; exit 1; }

source scripts/lib.sh
epf_setup vsockbench
EPF_KEEP_WORK=1
WORK=$EPF_WORK
NS="epf-vbench-$$"
PEER=10.77.0.1
GUEST=10.77.0.2
PY=$(command -v python3)

cleanup() {
	epf_cleanup
	ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
ip netns exec "$NS" ip tuntap add dev tap0 mode tap vnet_hdr
ip netns exec "$NS" ip addr add "$PEER/24" dev tap0
ip netns exec "$NS" ip link set tap0 up

# Endpoint services: over the vsock device's Unix sockets, and over TCP in the namespace.
UDS=$WORK/v.sock
"$PY" harness/vsock_peer.py serve sink "unix:${UDS}_5000" >"$WORK/peer-vsink.log" 2>&1 &
EPF_PIDS+=($!)
"$PY" harness/vsock_peer.py serve echo "unix:${UDS}_5001" >"$WORK/peer-vecho.log" 2>&1 &
EPF_PIDS+=($!)
ip netns exec "$NS" "$PY" harness/vsock_peer.py serve sink "tcp:$PEER:5000" >"$WORK/peer-tsink.log" 2>&1 &
EPF_PIDS+=($!)
ip netns exec "$NS" "$PY" harness/vsock_peer.py serve echo "tcp:$PEER:5001" >"$WORK/peer-techo.log" 2>&1 &
EPF_PIDS+=($!)

mkdir -p "$WORK/job"
cp harness/vsock.py "$WORK/job/"
cat >"$WORK/job/run.sh" <<EOF
#!/bin/bash
set -u
fail() { echo "FAIL: \$*"; exit 1; }
modprobe vmw_vsock_virtio_transport || fail "no vsock transport"
modprobe virtio_net
IF=
for i in \$(seq 50); do
	for d in /sys/class/net/*; do
		[ "\$(basename "\$(readlink -f \$d/device/driver 2>/dev/null)")" = virtio_net ] && IF=\$(basename \$d)
	done
	[ -n "\$IF" ] && [ -e /dev/vsock ] && break
	sleep 0.1
done
[ -n "\$IF" ] || fail "no virtio_net interface"
ip link set "\$IF" up
ip addr add $GUEST/24 dev "\$IF"
ping -c 3 -i 0.2 -W 5 -q $PEER >/dev/null || fail "peer unreachable"
VS="python3 /job/vsock.py"
res=""
# m NAME CMD...: runs CMD, keeps the value of its RESULT line as NAME.
m() { local n=\$1 v; shift; v=\$("\$@" | sed -n 's/^RESULT [a-z_]*=//p'); [ -n "\$v" ] || fail "\$n"; res="\$res \$n=\$v"; }
# rx NAME PORT: receive what the endpoint side sends once it sees /job/go-NAME.
rx() { local n=\$1; (\$VS stream-recv \$2 /job/\$n > /job/\$n.out) & local p=\$!
	for i in \$(seq 200); do [ -e /job/\$n.listening ] && break; sleep 0.05; done
	touch /job/go-\$n; wait \$p || fail "\$n"; res="\$res \$n=\$(sed -n 's/^RESULT [a-z_]*=//p' /job/\$n.out)"; }
m vsock_tx_mbs \$VS stream-send 5000 $SECS
rx vsock_rx_mbs 6000
m vsock_rr_us \$VS rr 5001 2000 64
m tcp_tx_mbs \$VS stream-send $PEER:5000 $SECS
rx tcp_rx_mbs 0.0.0.0:6000
m tcp_rr_us \$VS rr $PEER:5001 2000 64
echo "RESULT\$res"
EOF
chmod +x "$WORK/job/run.sh"

# feeder JOB: starts the endpoint-side senders when the guest asks for them.
feeder() {
	local job=$1 done_v=0 done_t=0
	while [[ $done_v = 0 || $done_t = 0 ]]; do
		if [[ $done_v = 0 && -e $job/go-vsock_rx_mbs ]]; then
			"$PY" harness/vsock_peer.py source "uds:$UDS:6000" "$SECS" >>"$job.feeder" 2>&1 || true
			done_v=1
		fi
		if [[ $done_t = 0 && -e $job/go-tcp_rx_mbs ]]; then
			ip netns exec "$NS" "$PY" harness/vsock_peer.py source "tcp:$GUEST:6000" "$SECS" >>"$job.feeder" 2>&1 || true
			done_t=1
		fi
		sleep 0.05
	done
}

run_round() {
	local r=$1 job="$WORK/job-$1" rc=0
	rm -rf "$job" && cp -r "$WORK/job" "$job"
	rm -f "$UDS"
	EPF_QEMU=()
	EPF_WRAP=()
	epf_daemon "vsock-$r" vsock --guest-cid 3 --uds-path "$UDS"
	local vs=$EPF_PID
	EPF_WRAP=(ip netns exec "$NS")
	epf_daemon "net-$r" net --tap tap0
	local net=$EPF_PID
	EPF_WRAP=()
	epf_qemu_function 1 "vsock-$r"
	epf_qemu_function 2 "net-$r"
	feeder "$job" &
	local feed=$!
	harness/run-guest.sh --job-dir "$job" --quiet --timeout 600 --socket-dir "$WORK/sock" -- "${EPF_QEMU[@]}" \
		>"$job.out" 2>&1 || rc=$?
	kill "$feed" 2>/dev/null || true
	kill "$vs" "$net" && wait "$vs" "$net" 2>/dev/null || true
	if [[ $rc -ne 0 ]] || ! grep -q '^RESULT ' "$job/output.log"; then
		echo "bench/vsock.sh: round $r failed (exit $rc); see $job" >&2
		tail -n 20 "$job.out" "$job/output.log" >&2 || true
		exit 1
	fi
	grep '^RESULT ' "$job/output.log" | sed 's/^RESULT //' >>"$WORK/results"
	echo "  round $r: $(tail -n1 "$WORK/results")" >&2
}

echo "vsock benchmark: ${ROUNDS} round(s), ${SECS}s per stream, work dir $WORK" >&2
for r in $(seq "$ROUNDS"); do run_round "$r"; done

python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = [dict(kv.split("=") for kv in l.split()) for l in open(sys.argv[1])]
print(f"medians of {len(rows)} round(s) [min-max]")
print(f"{'metric':<10}{'vsock':>22}{'virtio-net TCP':>22}{'vsock/TCP':>12}")
for m in ["tx_mbs", "rx_mbs", "rr_us"]:
    v = [float(r["vsock_" + m]) for r in rows]
    t = [float(r["tcp_" + m]) for r in rows]
    mv, mt = statistics.median(v), statistics.median(t)
    ratio = mt / mv if m == "rr_us" else mv / mt
    print(f"{m:<10}{f'{mv:.1f} [{min(v):.0f}-{max(v):.0f}]':>22}{f'{mt:.1f} [{min(t):.0f}-{max(t):.0f}]':>22}{ratio:>12.2f}")
print("(> 1.0: vsock is better; for rr_us the ratio is TCP / vsock)")
PY
