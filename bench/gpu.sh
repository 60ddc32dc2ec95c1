#!/usr/bin/env bash
# Benchmark: virtio-epf gpu with its VNC server against QEMU's own virtio-gpu-pci with QEMU's
# VNC display, one guest boot each (same kernel, same job), at the same resolution (default
# 1280x800). In the guest, the device's /dev/fb0 is drawn with whole frames (alternately white and black, 4 MB each,
# from tmpfs) by the stock virtio_gpu driver; on the host a VNC viewer per server
# (bench/gpu_probe.py, Raw encoding) watches the screen:
#   - full-screen updates per second: the guest redraws for DURATION seconds as fast as it
#     can; counted are the frames each viewer received (top-left pixel changing colour), and
#     the frames the guest wrote;
#   - DRM page flips per second: modetest -v flips two full-screen dumb buffers for 15 s
#     (each flip a TRANSFER_TO_HOST_2D and a RESOURCE_FLUSH whose fence the driver waits
#     for): the device's own full-screen update rate, without a viewer;
#   - draw-to-VNC latency: MARKS single redraws, 300 ms apart; the guest prints a marker on
#     its serial console right before each, and the probe measures from the marker's arrival
#     in the console file to the first update showing the new colour (so it includes the
#     guest's copy into the framebuffer, the driver's transfer and flush, the device and the
#     VNC server).
# Prints the numbers and the ratio virtio-epf / QEMU. A benchmark, not a test: it asserts
# nothing about speed.
#
# Usage: bench/gpu.sh [--resolution WxH] [--duration SEC] [--marks N]
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RES=1280x800 DURATION=10 MARKS=30
while [[ $# -gt 0 ]]; do
	case "$1" in
	--resolution) RES=$2; shift 2 ;;
	--duration) DURATION=$2; shift 2 ;;
	--marks) MARKS=$2; shift 2 ;;
	*) echo "usage: $0 [--resolution WxH] [--duration SEC] [--marks N]" >&2; exit 2 ;;
	esac
done
W=${RES%x*} H=${RES#*x}

source scripts/lib.sh
epf_setup gpubench
work=$EPF_WORK

free_display() { # a free VNC display number (port 5900 + N) at or after $1
	local d=$1
	while (echo >/dev/tcp/127.0.0.1/$((5900 + d))) 2>/dev/null; do d=$((d + 1)); done
	echo "$d"
}
EPF_D=$(free_display 300)
QEMU_D=$(free_display $((EPF_D + 1)))

epf_daemon gpu gpu --resolution "$RES" --vnc "127.0.0.1:$((5900 + EPF_D))"
epf_qemu_function 1 gpu

# The guest job, run once per device (each boot has that one GPU, so its fbdev is /dev/fb0
# and the console's mode is set on it).
job() { # NAME
	cat <<GUEST
#!/bin/bash
modprobe virtio_gpu
for i in \$(seq 100); do [ -e /dev/fb0 ] && break; sleep 0.1; done
[ "\$(cat /sys/class/graphics/fb0/virtual_size)" = "$W,$H" ] || { echo "fb0 is not ${W}x$H"; exit 1; }
echo 0 > /sys/class/vtconsole/vtcon1/bind
head -c $((W * H * 4)) /dev/zero > /dev/shm/black
head -c $((W * H * 4)) /dev/zero | tr '\0' '\377' > /dev/shm/white
con() { echo "\$*" > /dev/ttyS0; }
sleep 3
n=0
con "START $1"
end=\$((SECONDS + $DURATION))
while [ \$SECONDS -lt \$end ]; do
    cat /dev/shm/white > /dev/fb0; cat /dev/shm/black > /dev/fb0; n=\$((n + 2))
done
con "STOP $1"
echo "$1 guest_frames_per_s \$((n / $DURATION))" >> /job/results.txt
sleep 1
for i in \$(seq $MARKS); do
    if [ \$((i % 2)) = 1 ]; then c=ffffff f=white; else c=000000 f=black; fi
    con "MARK $1 \$i \$c"
    cat /dev/shm/\$f > /dev/fb0
    sleep 0.3
done
sleep 1
# Page flips through DRM (modetest -v: two dumb buffers, each flip a full-screen
# TRANSFER_TO_HOST_2D and RESOURCE_FLUSH the driver waits for): the device's own rate.
c=\$(modetest -M virtio_gpu -c | awk '\$3 == "connected" { print \$1; exit }')
mkfifo /tmp/in; exec 7<>/tmp/in
timeout 17 stdbuf -oL modetest -M virtio_gpu -s \$c:${W}x$H -v <&7 2>&1 | grep '^freq:' > /tmp/freq
# modetest prints the rate every 5 s; the first and last lines cover partial intervals.
f=\$(sed '1d;\$d' /tmp/freq | sed 's/freq: //; s/Hz//' | sort -n | awk '{ a[NR] = \$1 } END { print a[int((NR + 1) / 2)] }')
echo "$1 flips_per_s \${f:-n/a}" >> /job/results.txt
con "BENCH-DONE"
sleep 1
GUEST
}

: >"$work/results.txt"
: >"$work/probe.txt"
run() { # NAME VNC-PORT QEMU-ARGS...
	local name=$1 port=$2 probe
	shift 2
	rm -rf "$work/job" && mkdir "$work/job"
	job "$name" >"$work/job/run.sh"
	chmod +x "$work/job/run.sh"
	: >"$work/job/results.txt"
	echo "$name: booting the guest (1 vCPU, TCG); about $((DURATION + MARKS / 3 + 45)) s"
	python3 bench/gpu_probe.py "$work/job/console.log" "$name=127.0.0.1:$port" >>"$work/probe.txt" &
	probe=$!
	EPF_PIDS+=("$probe")
	harness/run-guest.sh --quiet --timeout $((DURATION + 3 * MARKS + 300)) --job-dir "$work/job" \
		--socket-dir "$work/sock" -- "$@" || { cat "$work/job/output.log"; exit 1; }
	wait "$probe" || { echo "the VNC probe failed"; exit 1; }
	cat "$work/job/results.txt" >>"$work/results.txt"
}
run epf $((5900 + EPF_D)) "${EPF_QEMU[@]}"
run qemu $((5900 + QEMU_D)) -device "virtio-gpu-pci,xres=$W,yres=$H" -vnc "127.0.0.1:$QEMU_D"

chroot_dir=${VIRTIO_EPF_CACHE:-/var/cache/virtio-epf}/chroot
qemu_version=$(dpkg-query --admindir="$chroot_dir/var/lib/dpkg" -W -f '${Version}' qemu-system-x86 2>/dev/null || echo unknown)
echo
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), host kernel $(uname -r), QEMU $qemu_version"
echo "guest: 1 vCPU TCG, kernel $(cat "${VIRTIO_EPF_CACHE:-/var/cache/virtio-epf}/kernel/release" 2>/dev/null); $RES, XRGB8888 fbdev; ${DURATION} s of redraws, $MARKS marks"
echo
cat "$work/results.txt"
cat "$work/probe.txt"
echo
awk '
FNR == NR { if ($2 == "guest_frames_per_s") g[$1] = $3; if ($2 == "flips_per_s") f[$1] = $3; next }
{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[$1, kv[1]] = kv[2] } }
END {
  printf "%-34s %12s %12s %8s\n", "", "virtio-epf", "QEMU", "ratio"
  printf "%-34s %12s %12s %8.2f\n", "DRM page flips /s (modetest -v)", f["epf"], f["qemu"], f["qemu"] ? f["epf"] / f["qemu"] : 0
  printf "%-34s %12s %12s %8.2f\n", "fbdev frames written by the guest /s", g["epf"], g["qemu"], g["qemu"] ? g["epf"] / g["qemu"] : 0
  split("updates_per_s latency_ms_median latency_ms_p90 latency_ms_max", k, " ")
  split("full-screen updates at the viewer /s|draw-to-VNC latency median ms|draw-to-VNC latency p90 ms|draw-to-VNC latency max ms", label, "|")
  for (i = 1; i <= 4; i++) {
    a = v["epf", k[i]]; b = v["qemu", k[i]]
    printf "%-34s %12s %12s %8s\n", label[i], a, b, (b + 0 > 0) ? sprintf("%.2f", a / b) : "n/a"
  }
}' "$work/results.txt" "$work/probe.txt"
echo
grep '^gpu:' "$work/gpu.stats" | tr ' ' '\n' | grep -E 'frames_flushed|bytes_transferred|vnc_updates' | paste -sd' ' | sed 's/^/virtio-epf counters: /'
