#!/usr/bin/env bash
# End-to-end smoke test of epf-vfio-user against QEMU's vfio-user-pci client and a Linux
# guest: serves examples/smoke_server.rs, boots a guest with harness/run-guest.sh and pokes
# the device from the guest with lspci/setpci/devmem (config space, trapped registers, the
# mmapped memory area, a doorbell, DMA reads and writes of guest RAM, INTx).
# Usage: crates/vfio-user/examples/qemu-smoke.sh   (needs root, like the harness)
# Exit status 0 = all checks passed. Leaves the server log in $JOB/server.log on failure.

set -Eeuo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"

cargo build --quiet --manifest-path "$ROOT/Cargo.toml" -p epf-vfio-user --example smoke_server
SERVER="$ROOT/target/debug/examples/smoke_server"

JOB=$(mktemp -d /tmp/epf-vfio-user-smoke.XXXXXX)
SOCKDIR="$JOB/sock"
mkdir -p "$SOCKDIR" "$JOB/job"
"$SERVER" "$SOCKDIR/epf.sock" 2>"$JOB/server.log" &
SERVER_PID=$!
cleanup() {
	kill "$SERVER_PID" 2>/dev/null || true
	wait "$SERVER_PID" 2>/dev/null || true
	if [[ ${KEEP:-0} == 0 ]]; then rm -rf -- "$JOB"; fi
}
trap cleanup EXIT
for _ in $(seq 100); do [[ -S $SOCKDIR/epf.sock ]] && break; sleep 0.05; done

cat >"$JOB/job/run.sh" <<'EOF'
#!/bin/bash
set -u
fail=0
devmem() { busybox devmem "$@"; }
check() { # name got want (numbers)
	if [[ -n $2 && -n $3 && $(( $2 )) -eq $(( $3 )) ]]; then echo "ok   $1 ($2)"; else echo "FAIL $1: got $2, want $3"; fail=1; fi
}
dev=
for d in /sys/bus/pci/devices/*; do
	[[ "$(cat "$d/vendor")/$(cat "$d/device")" == 0x1234/0x11e9 ]] && dev=$d
done
if [[ -z $dev ]]; then echo "FAIL device not found"; lspci -nn; exit 1; fi
bdf=$(basename "$dev")
lspci -nn -vv -s "$bdf"
setpci -s "$bdf" COMMAND=0x0006
bar=$(( $(head -1 "$dev/resource" | cut -d' ' -f1) ))
r() { devmem $(( bar + $1 )) 32; }
w() { devmem $(( bar + $1 )) 32 "$2"; }

check vendor "0x$(setpci -s "$bdf" 0x00.w)" 0x1234
check msix-cap "0x$(setpci -s "$bdf" 0x40.b)" 0x11
check vendor-cap "0x$(setpci -s "$bdf" 0x4c.b)" 0x09
check trapped-config "0x$(setpci -s "$bdf" 0x50.l)" 0x5a5a5a5a
check magic "$(r 0)" 0x45504631
w 4 0xcafef00d
check scratch "$(r 4)" 0xcafef00d
w 0x2000 0x12345678
check mmapped-memory "$(r 0x24)" 0x12345678
w 0x1000 1; w 0x1000 2
check doorbells "$(r 0x20)" 2
# DMA read of low guest RAM (below 1 MiB: readable through /dev/mem despite STRICT_DEVMEM).
w 8 0x400; w 0xc 0; w 0x10 1
check dma-read-status "$(r 0x28)" 0
check dma-read-lo "$(r 0x18)" "$(devmem 0x400 32)"
check dma-read-hi "$(r 0x1c)" "$(devmem 0x404 32)"
# DMA write into the free area after the BIOS data area (Linux reserves the first 1 MiB).
w 8 0x600; w 0x10 2
check dma-write-status "$(r 0x28)" 0
check dma-write-lo "$(devmem 0x600 32)" 0x55667788
check dma-write-hi "$(devmem 0x604 32)" 0x11223344
# INTx: QEMU installs the INTx eventfd at realize.
w 0x10 4
check intx-status "$(r 0x28)" 0
# MSI-X is not enabled without a driver: the device must see a refusal, not crash.
w 0x10 3
check msix-refused "$(r 0x28)" 2
exit $fail
EOF
chmod +x "$JOB/job/run.sh"

set +e
"$ROOT/harness/run-guest.sh" --job-dir "$JOB/job" --socket-dir "$SOCKDIR" --timeout 240 -- \
	-device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1 \
	-device "{\"driver\":\"vfio-user-pci\",\"bus\":\"rp1\",\"socket\":{\"path\":\"$SOCKDIR/epf.sock\",\"type\":\"unix\"}}"
status=$?
set -e
echo "== server log (tail)"
tail -n 40 "$JOB/server.log"
if [[ $status -ne 0 ]]; then
	echo "qemu-smoke: FAIL (guest exit $status); job dir kept: $JOB" >&2
	KEEP=1
	exit 1
fi
echo "qemu-smoke: OK"
