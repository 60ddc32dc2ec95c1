#!/usr/bin/env bash
# The pci-epf-user rig test: in the EP VM, epf-user-test drives
# /dev/epf-user-func1 (header, BARs, MSI/MSI-X, start, events, windows, DMA,
# hostile arguments, close); the host VM checks what it sees (lspci, BAR
# contents through busybox devmem, interrupt counts of epf-user-host.ko, a
# huge-page buffer of epf-user-buf that the EP reads and writes through
# windows and EPF_USER_DMA, the function gone after close and a rescan).
#
# Usage: kernel/epf-user/rig-test.sh [--dma slave|memcpy|none]... [--work DIR] [--link BIN]
#   --dma   sim-epc's DMA mode (repeatable; default: slave, memcpy and none, one rig
#           run each; the first run does everything, later runs windows and DMA)
#   --work  scratch directory (default /tmp/virtio-epf-epf-user)
#   --link  the epf-link binary (default target/release/epf-link, built if missing)
# Exit status 0 only if every check of every run passed.

set -Eeuo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
H=$REPO/harness
MODES=() WORK=/tmp/virtio-epf-epf-user LINK=""
while [[ $# -gt 0 ]]; do
	case "$1" in
	--dma) MODES+=("${2:?}"); shift 2 ;;
	--work) WORK=${2:?}; shift 2 ;;
	--link) LINK=${2:?}; shift 2 ;;
	-h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) echo "rig-test: unknown argument '$1'" >&2; exit 2 ;;
	esac
done
[[ ${#MODES[@]} -gt 0 ]] || MODES=(slave memcpy none)
for m in "${MODES[@]}"; do
	case $m in slave | memcpy | none) ;; *) echo "rig-test: bad --dma $m" >&2; exit 2 ;; esac
done

MODS=$("$H/build-modules.sh" | tail -n1)
[[ -f $MODS/ep/pci-epf-user.ko && -x $MODS/ep/epf-user-test ]] || { echo "rig-test: $MODS lacks pci-epf-user" >&2; exit 1; }
if [[ -z $LINK ]]; then
	LINK=$REPO/target/release/epf-link
	[[ -x $LINK ]] || (cd "$REPO" && cargo build --release -q -p epf-link)
fi

# ---------------------------------------------------------------- EP VM
ep_script() { # DMA FULL
	cat <<EOS
#!/bin/bash
. /job/rig-guest.sh
DMA=$1 FULL=$2
EOS
	cat <<'EOS'
U=/sys/kernel/config/pci_ep/functions/pci_epf_user/func1
DEV=/dev/epf-user-func1
modprobe configfs && insmod /job/pci-ep-core.ko && insmod /job/sim-epc.ko dma=$DMA &&
	insmod /job/pci-epf-user.ko || { echo "FAIL loading the modules"; exit 1; }
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
mkdir $U && ln -s $U $C/ || { echo "FAIL configfs"; exit 1; }
check "the device node is $DEV" test -c $DEV

start_tool() {
	rm -f /tmp/in /tmp/out
	mkfifo /tmp/in /tmp/out
	/job/epf-user-test </tmp/in >/tmp/out 2>&1 &
	TOOL=$!
	exec 3>/tmp/in 4</tmp/out
}
start_tool
# t CMD...: one command to the tool; its answer in $R
t() { echo "$*" >&3; read -r -t 400 R <&4 || R="err no answer"; }
# tc NAME CMD...: a command that must answer ok
tc() { local n=$1; shift; t "$@"; if [[ $R == ok* ]]; then echo "ok $n (${R#ok })"; else echo "FAIL $n: $* -> $R"; RIG_FAILED=1; fi; }
# want NAME PATTERN: the last answer must match PATTERN (a glob)
want() { if [[ $R == $2 ]]; then echo "ok $1"; else echo "FAIL $1: got '$R'"; RIG_FAILED=1; fi; }
w() { wait_file /shared/$1 300 || RIG_FAILED=1; }

tc "open" open $DEV
tc "a second open is refused" open2 $DEV
tc "features" features
case $DMA in
slave) want "slave DMA channels found" "ok abi=1 flags=0x3f *" ;;
memcpy) want "a memcpy DMA channel found" "ok abi=1 flags=0x4f *" ;;
none) want "no DMA channel" "ok abi=1 flags=0xf *" ;;
esac
tc "EPC_INIT event" event 1000 4
tc "header" header 0x1af4 0x10fd
tc "BAR0 16 KiB" bar 0 16384
want "BAR0 size" "ok size=16384 mmap_size=16384"
tc "BAR2 64 KiB 64-bit" bar 2 65536 64
t bar 3 4096; want "BAR3 (upper half of 64-bit BAR2) refused" "err SET_BAR: Invalid argument"
tc "MSI 4, MSI-X 8 in BAR0 at 0x2000" irqs 4 8 0 0x2000
tc "start" start
tc "hostile arguments refused" hostile
tc "LINK_UP event" event 240000 1

if [ "$FULL" = 1 ]; then
	tc "mmap BAR0" mmapbar 0
	tc "mmap BAR2" mmapbar 2
	tc "write BAR0 0x100" barw 0 0x100 0xcafe0001
	tc "fill BAR2" barfill 2 0 4096 7
	signal ep-bars-written
	w host-bars-written
	t barr 0 0x104; want "the host's BAR0 write is in the mmap" "ok 0x12345678"
	t barr 2 0x1000; want "the host's BAR2 write is in the mmap" "ok 0xa5a5a5a5"
	t bar 2 0; want "SET_BAR refused while started" "err SET_BAR: Device or resource busy"

	w host-msix-ready
	tc "BME event" event 60000 3
	t irqstate; want "host enabled 8 MSI-X vectors" "ok msi=* msix=8"
	for n in 1 2 3 4 5 6 7 8; do tc "raise MSI-X $n" raise msix $n; done
	signal ep-msix-raised
	w host-msi-ready
	t irqstate; want "host enabled 4 MSI vectors" "ok msi=4 msix=*"
	for n in 1 2 3 4; do tc "raise MSI $n" raise msi $n; done
	signal ep-msi-raised
fi

w host-buf-ready
P=$(cat /shared/hostbuf)
tc "map a window at host buffer + 3" map $((P + 3)) 4096
want "window 0, offset 3 in the map" "ok id=0 size=4096 offset_in_map=3 *"
tc "read through the window mmap" wincheck 0 0 4096 13
tc "map a window at host buffer + 0x1e0064" map $((P + 0x1e0064)) 4096
tc "write through the window mmap" winfill 1 0 4096 12
tc "unmap window 0 (EBUSY while mmapped, then ok)" unmap 0
tc "unmap window 1" unmap 1
if [ $DMA = none ]; then SIZES="1 4097 16384"; BIG=16384; UD=0; else SIZES="1 4097 65536 1048576"; BIG=786432; UD=1; fi
for s in $SIZES; do
	tc "DMA $s bytes from the host" dma from $((P + 3)) $s 13
	want "DMA $s from host used_dma=$UD" "ok used_dma=$UD *"
done
i=0
for s in 1 4097 65536 $BIG; do
	[ $DMA = none ] && [ $s = 65536 ] && continue
	off=$(( 0x101005 + $(echo "0 0x1000 0x4000 0x15000" | cut -d' ' -f$((i + 1))) ))
	tc "DMA $s bytes to the host" dma to $((P + off)) $s $((40 + i))
	want "DMA $s to host used_dma=$UD" "ok used_dma=$UD *"
	i=$((i + 1))
done
t dma from 0xfff0000000 4096 1
if [ $DMA = none ]; then
	want "DMA from unmapped host memory reads all-ones (no DMA engine)" "err byte 0 differs"
else
	want "DMA from unmapped host memory fails" "err DMA: Input/output error"
fi
signal ep-dma-done

if [ "$FULL" = 1 ]; then
	w host-checked
	tc "close" close
	signal ep-closed
	tc "open again after close" open $DEV
	tc "features after reopen" features
	tc "close again" close
	# process death with a BAR mapped: the next process gets the function
	tc "open for the kill test" open $DEV
	tc "a BAR for the kill test" bar 0 4096
	tc "mmap it" mmapbar 0
	kill -9 $TOOL; wait $TOOL 2>/dev/null
	start_tool
	tc "open after the process was killed" open $DEV
	tc "close after the kill test" close
	w host-rescanned
	# unlink while the file is open, with a BAR and a window mapped
	tc "open for the unlink test" open $DEV
	tc "a BAR for the unlink test" bar 0 4096
	tc "mmap it" mmapbar 0
	tc "a window for the unlink test" map $P 4096
	rm $C/func1 && check "the device node goes with the unbind" test ! -e $DEV
	t features; want "the open file is stale after the unbind" "err GET_FEATURES: No such device"
	tc "close after the unbind (frees the mapped BAR)" close
	rmdir $U
	check "rmmod pci_epf_user" rmmod pci_epf_user
fi
exec 3>&-
ep_end
EOS
}

# ---------------------------------------------------------------- host VM
host_script() { # FULL
	cat <<EOS
#!/bin/bash
. /job/rig-guest.sh
FULL=$1
EOS
	cat <<'EOS'
D=/sys/bus/pci/devices/0000:01:00.0
devmem() { busybox devmem "$@"; }
bar() { printf '%d' "$(sed -n "$(($1 + 1))p" $D/resource | cut -d' ' -f1)"; }
barsize() { local l; l=$(sed -n "$(($1 + 1))p" $D/resource); echo $(( $(echo $l | cut -d' ' -f2) - $(echo $l | cut -d' ' -f1) + 1 )); }
# irqcount N: interrupts of vector epf-user-host-N
irqcount() { awk -v n="epf-user-host-$1" '$NF == n { s = 0; for (i = 2; i < NF; i++) if ($i ~ /^[0-9]+$/) s += $i; print s }' /proc/interrupts; }
w() { wait_file /shared/$1 300 || RIG_FAILED=1; }
bind_host() { # TYPE NVEC
	rmmod epf_user_host 2>/dev/null
	insmod /job/epf-user-host.ko irq_type=$1 nvec=$2 || return 1
	echo epf-user-host > $D/driver_override
	echo 0000:01:00.0 > /sys/bus/pci/drivers_probe
	test -e $D/driver
}

check "the host sees 1af4:10fd" sh -c 'lspci -n -s 01:00.0 | grep -q "1af4:10fd"'
if [ "$FULL" = 1 ]; then
	check "BAR0 is 16 KiB" test "$(barsize 0)" = 16384
	check "BAR2 is 64 KiB" test "$(barsize 2)" = 65536
	check "BAR2 is 64-bit" sh -c "lspci -vv -s 01:00.0 | grep -q 'Region 2: Memory at .* (64-bit'"
	check "MSI-X with 8 vectors" sh -c "lspci -vv -s 01:00.0 | grep -q 'MSI-X: Enable- Count=8'"
	echo 1 > $D/enable
	w ep-bars-written
	check "the EP's BAR0 write is seen" test "$(devmem $(( $(bar 0) + 0x100 )) 32)" = 0xCAFE0001
	# pattern 7: bytes 7, 20, 33, 46
	check "the EP's BAR2 fill is seen" test "$(devmem $(bar 2) 32)" = 0x2E211407
	devmem $(( $(bar 0) + 0x104 )) 32 0x12345678
	devmem $(( $(bar 2) + 0x1000 )) 32 0xa5a5a5a5
	signal host-bars-written

	check "bind epf-user-host with 8 MSI-X vectors" bind_host msix 8
	signal host-msix-ready
	w ep-msix-raised
	sleep 1
	for n in 1 2 3 4 5 6 7 8; do check "MSI-X $n arrived" test "$(irqcount $n)" -ge 1; done
	echo 0000:01:00.0 > /sys/bus/pci/drivers/epf-user-host/unbind
	check "bind epf-user-host with 4 MSI vectors" bind_host msi 4
	signal host-msi-ready
	w ep-msi-raised
	sleep 1
	for n in 1 2 3 4; do check "MSI $n arrived" test "$(irqcount $n)" -ge 1; done
else
	check "bind epf-user-host (bus master)" bind_host msix 1
fi

echo 4 > /proc/sys/vm/nr_hugepages
mkfifo /tmp/in /tmp/out
/job/epf-user-buf </tmp/in >/tmp/out 2>&1 &
exec 3>/tmp/in 4</tmp/out
t() { echo "$*" >&3; read -r -t 60 R <&4 || R="err no answer"; }
tc() { local n=$1; shift; t "$@"; if [[ $R == ok* ]]; then echo "ok $n (${R#ok })"; else echo "FAIL $n: $* -> $R"; RIG_FAILED=1; fi; }
tc "a contiguous host buffer" alloc
P=$(echo "$R" | sed -n 's/.*phys=\(0x[0-9a-f]*\).*/\1/p')
tc "fill 1 MiB at +3 (pattern 13)" fill 3 1048576 13
echo "$P" > /shared/hostbuf
signal host-buf-ready
w ep-dma-done
tc "the EP's window write arrived" check 0x1e0064 4096 12
i=0
for s in 1 4097 65536 786432 16384; do
	[ -e /shared/none ] && [ $s = 65536 ] && continue
	[ -e /shared/none ] && [ $s = 786432 ] && continue
	[ ! -e /shared/none ] && [ $s = 16384 ] && continue
	off=$(( 0x101005 + $(echo "0 0x1000 0x4000 0x15000" | cut -d' ' -f$((i + 1))) ))
	tc "the EP's DMA of $s bytes arrived" check $off $s $((40 + i))
	i=$((i + 1))
done
signal host-checked

if [ "$FULL" = 1 ]; then
	w ep-closed
	sleep 1
	echo 1 > $D/remove
	echo 1 > /sys/bus/pci/rescan
	check "the function is gone after close and a rescan" sh -c '! lspci -n | grep -q "1af4:10fd"'
	signal host-rescanned
fi
finish
EOS
}

rc=0
full=1
for dma in "${MODES[@]}"; do
	work=$WORK/$dma
	rm -rf "$work"
	mkdir -p "$work/ep" "$work/host"
	cp "$MODS"/ep/* "$work/ep/"
	cp "$MODS"/host/* "$work/host/"
	ep_script "$dma" "$full" >"$work/ep/run.sh"
	host_script "$full" >"$work/host/run.sh"
	chmod +x "$work"/{ep,host}/run.sh
	mkdir -p "$work/w/shared"
	echo "=== pci-epf-user rig test, dma=$dma$([[ $full = 1 ]] && echo ", full") ==="
	t0=$SECONDS
	run_rc=0
	# the none run's host script needs to know the sizes: a flag in /shared
	# (run-rig.sh recreates shared/, so the EP script makes it)
	if [[ $dma == none ]]; then
		sed -i 's|^w host-buf-ready$|signal none; w host-buf-ready|' "$work/ep/run.sh"
	fi
	"$H/run-rig.sh" --work "$work/w" --ep-job "$work/ep" --host-job "$work/host" \
		--link "$LINK" --timeout 600 \
		--ep-opt --append --ep-opt nosoftlockup \
		--host-qemu -device --host-qemu intel-iommu,intremap=on,dma-translation=off \
		--host-qemu -machine --host-qemu kernel-irqchip=split || run_rc=$?
	echo "--- EP VM ---"
	cat "$work/ep/output.log" 2>/dev/null || true
	echo "--- host VM ---"
	cat "$work/host/output-all.log" 2>/dev/null || true
	fails=$(cat "$work/ep/output.log" "$work/host/output-all.log" 2>/dev/null | grep -c '^FAIL' || true)
	echo "=== dma=$dma: rig status $run_rc, $fails failed checks, $((SECONDS - t0)) s ==="
	[[ $run_rc == 0 && $fails == 0 ]] || rc=1
	full=0
done
exit "$rc"
