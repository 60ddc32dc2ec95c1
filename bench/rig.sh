#!/usr/bin/env bash
# The endpoint-side rig against the vfio-user link, per device (not part of the test suite).
# The same host job (a Linux 6.12 guest, stock drivers) runs against each device twice in one
# run of this script:
#   rig        virtio-epf DEV --epf NAME in the EP VM, on pci-epf-user and the simulated
#              controller (harness/run-rig.sh): registers polled in EP memory, host memory
#              through outbound windows and the DMA engine, every EP access to host memory a
#              vfio-user round trip through epf-link
#   vfio-user  virtio-epf DEV --vfio-user SOCKET on this machine, in the rig's mode
#              (--layout legacy --registers poll --notify poll): host memory mapped directly
# Rows (higher is better but for latencies):
#   rng     KiB/s read from /dev/hwrng (256 KiB)
#   console KiB/s host -> endpoint through hvc0 (1 MiB, raw tty; timed where it arrives)
#   blk     4k random read at queue depth 1 (IOPS, mean latency us), 1M read and write at
#           depth 4 (MiB/s), fio on a 64 MiB image in memory
#   net     ping round trip (ms, mean of 20), TCP MiB/s each way (harness/xfer.py, 4 MiB)
# Ratios are rig / vfio-user (latency: vfio-user / rig), so below 1 is what the rig costs.
#
# Usage: bench/rig.sh [DEVICE...]   (root; default: rng console blk net)
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ $EUID -eq 0 ]] || { echo "bench/rig.sh: must run as root" >&2; exit 1; }
DEVICES=("$@")
((${#DEVICES[@]})) || DEVICES=(rng console blk net)
XFER_BYTES=$((4 << 20))
CON_BYTES=$((1 << 20))

scripts/prepare.sh >/dev/null
source scripts/lib.sh
epf_setup rigbench
EPF_KEEP_WORK=1 # the table names it; per-run details stay there
WORK=$EPF_WORK
cargo build --release --locked -q -p epf-link
LINK=$PWD/target/release/epf-link
MODULES=$(harness/build-modules.sh | tail -n 1)
NS="epf-rigbench-$$"
cleanup() {
	epf_cleanup
	ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT

# The host's side of each device, the same in both settings: prints `RESULT key=value`.
host_job() {
	cat <<'EOF'
#!/bin/bash
set -u
now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.1f", n / 1024 / (b - a) }'; }
EOF
	case $1 in
	rng)
		cat <<'EOF'
modprobe virtio_rng
for i in $(seq 50); do grep -q virtio /sys/class/misc/hw_random/rng_current && break; sleep 0.1; done
t0=$(now); head -c 262144 /dev/hwrng >/dev/null; t1=$(now)
echo "RESULT rng_kib_s=$(rate 262144 $t0 $t1)"
EOF
		;;
	console)
		cat <<EOF
modprobe virtio_console
for i in \$(seq 100); do [ -c /dev/hvc0 ] && break; sleep 0.1; done
exec 3<>/dev/hvc0
stty -F /dev/hvc0 raw -echo
head -c $CON_BYTES /dev/urandom >/tmp/data
cat /tmp/data >&3
sleep 1
echo "RESULT console_sent=1"
EOF
		;;
	blk)
		cat <<'EOF'
modprobe virtio_blk
for i in $(seq 100); do v=$(ls /sys/bus/pci/devices/0000:01:00.0/virtio*/block 2>/dev/null | head -1); [ -n "$v" ] && break; sleep 0.1; done
f() { fio --name=b --filename=/dev/$v --direct=1 --ioengine=libaio --size=60M --runtime=5 --ramp_time=1 \
	--time_based --output-format=terse --terse-version=3 "$@"; }
r=$(f --rw=randread --bs=4k --iodepth=1)
iops=$(echo "$r" | awk -F';' '{ printf "%.0f", $8 }'); lat=$(echo "$r" | awk -F';' '{ printf "%.0f", $40 }')
rd=$(f --rw=read --bs=1M --iodepth=4 | awk -F';' '{ printf "%.1f", $7 / 1024 }')
wr=$(f --rw=write --bs=1M --iodepth=4 | awk -F';' '{ printf "%.1f", $48 / 1024 }')
echo "RESULT blk_4k_qd1_iops=$iops blk_4k_qd1_lat_us=$lat blk_1m_read_mib_s=$rd blk_1m_write_mib_s=$wr"
EOF
		;;
	net)
		cat <<EOF
modprobe virtio_net
for i in \$(seq 100); do IF=\$(ls /sys/bus/pci/devices/0000:01:00.0/virtio*/net 2>/dev/null | head -1); [ -n "\$IF" ] && break; sleep 0.1; done
ip addr add 10.77.0.2/24 dev \$IF && ip link set \$IF up
ping -c 3 -W 5 10.77.0.1 >/dev/null
rtt=\$(ping -c 20 -i 0.1 -q 10.77.0.1 | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p')
python3 /job/xfer.py connect 10.77.0.1 5001 $XFER_BYTES >/tmp/xfer.txt
tx=\$(awk '/^guest-sent/ { split(\$4, s, "="); printf "%.2f", $XFER_BYTES / 1048576 / s[2] }' /tmp/xfer.txt)
rx=\$(awk '/^guest-recv/ { split(\$4, s, "="); printf "%.2f", $XFER_BYTES / 1048576 / s[2] }' /tmp/xfer.txt)
echo "RESULT net_ping_ms=\$rtt net_tcp_tx_mib_s=\$tx net_tcp_rx_mib_s=\$rx"
EOF
		;;
	esac
}

# The endpoint's side in the rig (after rig-guest.sh): the function, the daemon and what the
# device needs on the endpoint; measures console arrival itself.
ep_job() {
	cat <<EOF
modprobe configfs
insmod /job/pci-ep-core.ko && insmod /job/sim-epc.ko dma=slave && insmod /job/pci-epf-user.ko
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
U=/sys/kernel/config/pci_ep/functions/pci_epf_user/f0
mkdir \$U && ln -s \$U \$C/
run() { RUST_LOG=warn /job/virtio-epf "\$@" --epf f0 --stats-file /job/epf.stats 2>>/job/daemon.log & DAEMON=\$!; }
EOF
	case $1 in
	rng) echo 'run rng' ;;
	blk) echo 'truncate -s 64M /tmp/disk.img; run blk --image /tmp/disk.img' ;;
	console)
		cat <<EOF
mkfifo /tmp/in; exec 3<>/tmp/in
run console --backend stdio </tmp/in >/tmp/from-host
for i in \$(seq 6000); do [ -s /tmp/from-host ] && break; sleep 0.01; done
t0=\$(date +%s.%N)
for i in \$(seq 60000); do [ "\$(stat -c %s /tmp/from-host)" -ge $CON_BYTES ] && break; sleep 0.01; done
t1=\$(date +%s.%N)
echo "RESULT console_h2e_kib_s=\$(awk -v a=\$t0 -v b=\$t1 'BEGIN { printf "%.1f", $CON_BYTES / 1024 / (b - a) }')"
EOF
		;;
	net)
		cat <<EOF
modprobe tun
ip tuntap add dev tap0 mode tap vnet_hdr && ip addr add 10.77.0.1/24 dev tap0 && ip link set tap0 up
run net --tap tap0
python3 /job/xfer.py serve 10.77.0.1 5001 $XFER_BYTES >/tmp/peer.log 2>&1 &
EOF
		;;
	esac
	echo 'wait_file /shared/host-done 900; kill -INT $DAEMON; wait $DAEMON; finish'
}

# rig DEVICE: one rig run; its RESULT lines (both VMs) into $WORK/rig-DEVICE.results.
rig() {
	local d=$WORK/rig-$1
	mkdir -p "$d/ep" "$d/host"
	cp "$MODULES"/ep/* "$EPF_BIN" harness/xfer.py "$d/ep/"
	cp harness/xfer.py "$d/host/"
	{ echo '#!/bin/bash'; echo '. /job/rig-guest.sh'; ep_job "$1"; } >"$d/ep/run.sh"
	host_job "$1" >"$d/host/run.sh"
	chmod +x "$d/ep/run.sh" "$d/host/run.sh"
	harness/run-rig.sh --work "$d/w" --ep-job "$d/ep" --host-job "$d/host" --link "$LINK" \
		--ep-opt --append --ep-opt nosoftlockup --timeout 900 >"$d/rig.log" 2>&1 ||
		echo "bench/rig.sh: the rig run for $1 failed (see $d)" >&2
	cat "$d/ep/output.log" "$d/host/output.log" 2>/dev/null | grep '^RESULT' >"$WORK/rig-$1.results" || true
}

# vfio DEVICE: the same host job against the daemon on this machine.
vfio() {
	local d=$WORK/vfio-$1 mode=(--layout legacy --registers poll --notify poll) daemon
	mkdir -p "$d"
	cp harness/xfer.py "$d/"
	host_job "$1" >"$d/run.sh"
	chmod +x "$d/run.sh"
	EPF_QEMU=()
	EPF_WRAP=()
	case $1 in
	rng) epf_daemon "v-$1" rng "${mode[@]}" ;;
	blk)
		truncate -s 64M /dev/shm/rigbench-$$.img
		epf_daemon "v-$1" blk --image /dev/shm/rigbench-$$.img "${mode[@]}"
		;;
	console)
		mkfifo "$d/in"
		exec 4<>"$d/in"
		epf_daemon "v-$1" console --backend stdio "${mode[@]}" <"$d/in" >"$d/from-host"
		;;
	net)
		ip netns add "$NS"
		ip netns exec "$NS" ip link set lo up
		ip netns exec "$NS" ip tuntap add dev tap0 mode tap vnet_hdr
		ip netns exec "$NS" ip addr add 10.77.0.1/24 dev tap0
		ip netns exec "$NS" ip link set tap0 up
		ip netns exec "$NS" harness/peer.sh python3 -c "$(cat harness/xfer.py)" serve 10.77.0.1 5001 \
			"$XFER_BYTES" >"$d/peer.log" 2>&1 &
		EPF_PIDS+=($!)
		EPF_WRAP=(ip netns exec "$NS")
		epf_daemon "v-$1" net --tap tap0 "${mode[@]}"
		;;
	esac
	daemon=$EPF_PID
	epf_qemu_function 1 "v-$1"
	local watch=""
	if [[ $1 == console ]]; then
		(
			until [[ -s $d/from-host ]]; do sleep 0.01; done
			t0=$(date +%s.%N)
			until (($(stat -c %s "$d/from-host") >= CON_BYTES)); do sleep 0.01; done
			t1=$(date +%s.%N)
			echo "RESULT console_h2e_kib_s=$(awk -v a="$t0" -v b="$t1" -v n="$CON_BYTES" 'BEGIN { printf "%.1f", n / 1024 / (b - a) }')" >"$d/console.result"
		) &
		watch=$!
	fi
	harness/run-guest.sh --job-dir "$d" --quiet --timeout 900 --socket-dir "$WORK/sock" -- "${EPF_QEMU[@]}" \
		>"$d/guest.log" 2>&1 || echo "bench/rig.sh: the vfio-user run for $1 failed (see $d)" >&2
	[[ -z $watch ]] || { wait "$watch" || true; }
	kill "$daemon" 2>/dev/null && wait "$daemon" || true
	[[ $1 != net ]] || ip netns del "$NS"
	[[ $1 != blk ]] || rm -f /dev/shm/rigbench-$$.img
	cat "$d/output.log" "$d/console.result" 2>/dev/null | grep '^RESULT' >"$WORK/vfio-$1.results" || true
}

value() { grep -ho "$2=[0-9.]*" "$WORK/$1.results" 2>/dev/null | head -n 1 | cut -d= -f2; }

for dev in "${DEVICES[@]}"; do
	echo "== $dev" >&2
	rig "$dev"
	vfio "$dev"
done

printf '%-22s %12s %12s %8s\n' metric rig vfio-user ratio
for dev in "${DEVICES[@]}"; do
	case $dev in
	rng) keys=(rng_kib_s) ;;
	console) keys=(console_h2e_kib_s) ;;
	blk) keys=(blk_4k_qd1_iops blk_4k_qd1_lat_us blk_1m_read_mib_s blk_1m_write_mib_s) ;;
	net) keys=(net_ping_ms net_tcp_tx_mib_s net_tcp_rx_mib_s) ;;
	esac
	for k in "${keys[@]}"; do
		a=$(value "rig-$dev" "$k") b=$(value "vfio-$dev" "$k")
		ratio=$(awk -v a="${a:-0}" -v b="${b:-0}" -v k="$k" 'BEGIN {
			if (a == 0 || b == 0) { print "-"; exit }
			if (k ~ /(_ms|_us)$/) printf "%.3f", b / a; else printf "%.3f", a / b }')
		printf '%-22s %12s %12s %8s\n' "$k" "${a:--}" "${b:--}" "$ratio"
	done
done
echo "(details: $WORK)"
