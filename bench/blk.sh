#!/usr/bin/env bash
# Benchmark: virtio-epf blk against QEMU's own virtio-blk-pci, in one guest boot, on the same
# image and the same guest kernel. fio inside the guest measures, for each disk:
#   4k random read IOPS at queue depth 1 and 32, 1 MiB sequential read and write MB/s.
# Prints a table with the ratio virtio-epf / QEMU. This is a benchmark, not a test: it asserts
# nothing about speed.
#
# Usage: bench/blk.sh [--cache writeback|none] [--runtime SEC] [--size MiB] [--rounds N]
#   writeback (default): both use the endpoint's/host's page cache, flushes -> fdatasync
#                        (virtio-epf default, QEMU cache=writeback);
#   none:                O_DIRECT on the image (virtio-epf --direct, QEMU cache=none).
# Disks in the guest: QEMU virtio-blk-pci (serial QEMU-BLK), virtio-epf with the io-uring
# engine (EPF-URING, same image file as QEMU's) and virtio-epf with the thread-pool engine
# (EPF-THREADS, on a copy of the image: two endpoints cannot lock one image). Every row runs
# on the three disks in turn (the order rotating every round), ROUNDS times (default 3), and
# the median is reported, so that load from other processes on the machine hits all three
# alike.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE=writeback RUNTIME=5 SIZE=1024 ROUNDS=3
while [[ $# -gt 0 ]]; do
	case "$1" in
	--cache) CACHE=$2; shift 2 ;;
	--runtime) RUNTIME=$2; shift 2 ;;
	--size) SIZE=$2; shift 2 ;;
	--rounds) ROUNDS=$2; shift 2 ;;
	*) echo "usage: $0 [--cache writeback|none] [--runtime SEC] [--size MiB] [--rounds N]" >&2; exit 2 ;;
	esac
done
case "$CACHE" in
writeback) EPF_CACHE=() QEMU_CACHE=writeback ;;
none) EPF_CACHE=(--direct) QEMU_CACHE=none ;;
*) echo "--cache must be writeback or none" >&2; exit 2 ;;
esac

source scripts/lib.sh
epf_setup blkbench
work=$EPF_WORK

# The image: real data (not holes), so reads move bytes.
echo "creating a ${SIZE} MiB image in $work"
# (In the socket directory: QEMU runs chrooted and sees only the directories passed to it.)
head -c "$((SIZE << 20))" /dev/urandom >"$work/sock/disk.img"
cp "$work/sock/disk.img" "$work/sock/disk2.img"
sync

epf_daemon uring blk --image "$work/sock/disk.img" --serial EPF-URING --engine io-uring "${EPF_CACHE[@]}"
epf_daemon threads blk --image "$work/sock/disk2.img" --serial EPF-THREADS --engine threads "${EPF_CACHE[@]}"
epf_qemu_function 1 uring
epf_qemu_function 2 threads

cat >"$work/job/run.sh" <<GUEST
#!/bin/bash
modprobe virtio_blk
disk() {
    local i d
    for i in \$(seq 200); do
        for d in /sys/block/vd*; do
            [ "\$(cat \$d/serial 2>/dev/null)" = "\$1" ] && [ -b /dev/\$(basename \$d) ] && { basename \$d; return 0; }
        done
        sleep 0.1
    done
    return 1
}
# fio --minimal (terse v3): field 7/8 read KiB/s / IOPS, 48/49 write KiB/s / IOPS.
run() { # name disk test fio-args...
    local name=\$1 dev=\$2 test=\$3; shift 3
    local out
    out=\$(fio --minimal --name=\$test --filename=/dev/\$dev --direct=1 --ioengine=libaio \
        --runtime=$RUNTIME --time_based --ramp_time=2 --size=$((SIZE / 2))M "\$@") || { echo "fio failed on \$dev"; exit 1; }
    echo "\$out" | awk -F';' -v n=\$name -v t=\$test '{ printf "%s %s %s %s %s %s\n", n, t, \$8, \$7, \$49, \$48 }' >> /job/results.txt
}
: > /job/results.txt
for name in QEMU-BLK EPF-URING EPF-THREADS; do
    d=\$(disk \$name) || { echo "no disk \$name"; exit 1; }
    eval "dev_\${name//-/_}=\$d"
    echo "\$name is /dev/\$d"
done
for round in \$(seq $ROUNDS); do
    for t in randread-4k-qd1 randread-4k-qd32 seqread-1m seqwrite-1m; do
        case \$t in
        randread-4k-qd1) args="--rw=randread --bs=4k --iodepth=1" ;;
        randread-4k-qd32) args="--rw=randread --bs=4k --iodepth=32" ;;
        seqread-1m) args="--rw=read --bs=1M --iodepth=8" ;;
        seqwrite-1m) args="--rw=write --bs=1M --iodepth=8" ;;
        esac
        # Rotate the order every round: whoever runs right after a write pays for its
        # dirty pages being written back.
        names=(QEMU-BLK EPF-URING EPF-THREADS)
        for i in 0 1 2; do
            name=\${names[(i + round) % 3]}
            v=dev_\${name//-/_}
            run \$name \${!v} \$t \$args
        done
    done
done
cat /job/results.txt
GUEST
chmod +x "$work/job/run.sh"

echo "booting the guest (1 vCPU, TCG); about $(((RUNTIME + 3) * 12 * ROUNDS + 30)) s"
harness/run-guest.sh --quiet --timeout $(((RUNTIME + 10) * 12 * ROUNDS + 300)) --job-dir "$work/job" --socket-dir "$work/sock" -- \
	-drive "file=$work/sock/disk.img,if=none,id=qd,format=raw,cache=$QEMU_CACHE,file.locking=off" \
	-device "virtio-blk-pci,drive=qd,serial=QEMU-BLK,disable-legacy=on" "${EPF_QEMU[@]}" ||
	{ cat "$work/job/output.log"; exit 1; }

chroot_dir=${VIRTIO_EPF_CACHE:-/var/cache/virtio-epf}/chroot
qemu_version=$(dpkg-query --admindir="$chroot_dir/var/lib/dpkg" -W -f '${Version}' qemu-system-x86 2>/dev/null || echo unknown)
echo
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, host kernel $(uname -r), QEMU $qemu_version"
echo "image: ${SIZE} MiB raw file on $(df -T "$work" | awk 'NR==2 {print $2}'), cache mode: $CACHE (QEMU cache=$QEMU_CACHE, aio=threads); guest: 1 vCPU TCG, kernel $(cat "${VIRTIO_EPF_CACHE:-/var/cache/virtio-epf}/kernel/release" 2>/dev/null)"
echo "fio: libaio, direct=1, ${RUNTIME} s per run after 2 s ramp, over $((SIZE / 2)) MiB; median of $ROUNDS rounds (disks interleaved)"
echo
awk -v cache="$CACHE" '
{ key = $2; dev = $1
  if (key ~ /seqwrite/) { v = $6 / 1024 } else if (key ~ /seq/) { v = $4 / 1024 } else { v = $3 }
  n = ++cnt[dev, key]; vals[dev, key, n] = v }
function median(dev, key,    n, i, j, t, a) {
  n = cnt[dev, key]
  for (i = 1; i <= n; i++) a[i] = vals[dev, key, i]
  for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
  return n ? (n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2) : 0
}
END {
  n = split("randread-4k-qd1 randread-4k-qd32 seqread-1m seqwrite-1m", order, " ")
  printf "%-18s %-8s %12s %12s %12s %10s %10s\n", "test", "unit", "QEMU", "epf-uring", "epf-threads", "uring/QEMU", "thr/QEMU"
  for (i = 1; i <= n; i++) {
    k = order[i]; u = (k ~ /seq/) ? "MiB/s" : "IOPS"
    q = median("QEMU-BLK", k); a = median("EPF-URING", k); b = median("EPF-THREADS", k)
    printf "%-18s %-8s %12.0f %12.0f %12.0f %10.2f %10.2f\n", k, u, q, a, b, (q > 0 ? a / q : 0), (q > 0 ? b / q : 0)
  }
}' "$work/job/results.txt"
echo
echo "all runs (disk, test, read IOPS, read KiB/s, write IOPS, write KiB/s):"
cat "$work/job/results.txt"
echo
echo "endpoint counters (io-uring):"
cat "$work/uring.stats"
