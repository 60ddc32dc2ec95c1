#!/usr/bin/env bash
# What each bare-endpoint constraint costs: one guest, five virtio-epf blk disks on copies of
# the same image -- modern/trapped (the reference), legacy/polled registers+notifications,
# legacy/trapped registers with QUEUE_NOTIFY as the doorbell, modern through 4 x 64 KiB
# outbound windows, legacy/polled through the windows, and modern/trapped with a polled notify
# page (--notify poll: kicks are memory writes, no vfio-user message) -- and the
# same fio rows as bench/blk.sh on each, printed with the ratio to the reference.
# Usage: bench/modes.sh [--runtime SEC]   (not part of the test suite)
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNTIME=5
[[ ${1:-} == --runtime ]] && RUNTIME=$2
scripts/prepare.sh >/dev/null
source scripts/lib.sh
epf_setup modes
work=$EPF_WORK
head -c $((256 << 20)) /dev/urandom >"$work/base.img"
names=(trapped poll legacy-doorbell windows poll+windows notify-poll)
modes=("" "--layout legacy --registers poll --notify poll" "--layout legacy --registers trap --notify doorbell"
	"--host-windows 4 --window-size 65536"
	"--layout legacy --registers poll --notify poll --host-windows 4 --window-size 65536"
	"--notify poll")
for i in "${!names[@]}"; do
	cp "$work/base.img" "$work/d$i.img"
	# shellcheck disable=SC2086 # the mode is a list of options
	epf_daemon "d$i" blk --image "$work/d$i.img" --serial "d$i" ${modes[i]}
	epf_qemu_function $((i + 1)) "d$i"
done
cat >"$work/job/run.sh" <<GUEST
#!/bin/bash
modprobe virtio_blk
sleep 1
for b in /sys/block/vd*; do
	d=\$(basename \$b); serial=\$(cat \$b/serial)
	for row in "randread 4k 1" "randread 4k 32" "read 1M 4" "write 1M 4"; do
		set -- \$row
		v=\$(fio --name=b --filename=/dev/\$d --direct=1 --ioengine=libaio --rw=\$1 --bs=\$2 --iodepth=\$3 \
			--size=200M --runtime=$RUNTIME --ramp_time=1 --time_based --output-format=terse --terse-version=3 \
			| awk -F';' -v rw=\$1 '{ if (rw ~ /write/) print \$49, \$48/1024; else print \$8, \$7/1024 }')
		echo "\$serial \$1-\$2-qd\$3 \$v"
	done
done
GUEST
chmod +x "$work/job/run.sh"
harness/run-guest.sh --job-dir "$work/job" --socket-dir "$work/sock" --timeout 900 --quiet -- "${EPF_QEMU[@]}"
echo
printf '%-22s' row; for n in "${names[@]}"; do printf '%16s' "$n"; done; echo "   (IOPS for 4k rows, MiB/s for 1M rows; ratio to trapped)"
for row in randread-4k-qd1 randread-4k-qd32 read-1M-qd4 write-1M-qd4; do
	printf '%-22s' "$row"
	ref=""
	for i in "${!names[@]}"; do
		line=$(grep "^d$i $row " "$work/job/output.log" || true)
		if [[ $row == *1M* ]]; then v=$(awk '{printf "%.0f", $4}' <<<"$line"); else v=$(awk '{printf "%.0f", $3}' <<<"$line"); fi
		[[ -z $ref ]] && ref=$v
		printf '%9s (%4s)' "$v" "$(awk -v a="$v" -v b="$ref" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
	done
	echo
done
