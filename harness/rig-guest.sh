# Sourced by run.sh in both VMs of the endpoint-side rig (harness/run-rig.sh copies it into
# each job dir): mounts the share both guests see as /shared and gives job scripts a few
# helpers. Not executable on its own.

mkdir -p /shared
mountpoint -q /shared ||
	mount -t 9p -o trans=virtio,version=9p2000.L,cache=none shared /shared ||
	{ echo "rig: cannot mount /shared"; exit 1; }

RIG_FAILED=0

# check NAME CMD...: runs CMD, prints "ok NAME" or "FAIL NAME" with its output.
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then
		echo "ok $name"
	else
		echo "FAIL $name"
		echo "$out" | sed 's/^/    /'
		RIG_FAILED=1
	fi
}

# wait_file PATH [SECONDS]: waits until PATH exists (default 240 s); fails otherwise, and
# at once if the host VM is done (run-rig.sh creates /shared/host-done): nothing it was
# to create will come any more.
wait_file() {
	local i
	for ((i = 0; i < ${2:-240} * 10; i++)); do
		[ -e "$1" ] && return 0
		if [ "$1" != /shared/host-done ] && [ -e /shared/host-done ]; then
			echo "rig: the host VM finished without creating $1"
			return 1
		fi
		sleep 0.1
	done
	echo "rig: timed out waiting for $1"
	return 1
}

# signal NAME: tells the other VM (creates /shared/NAME).
signal() {
	: >"/shared/$1"
}

# --- pci-epf-test / pcitest (the job dirs hold the modules and pcitest, as
# harness/build-modules.sh builds them: ep/ files in the EP job, host/ in the host job)
P=/job/pcitest
# pt NAME ARGS...: one pcitest case; it must exit 0 and report OKAY.
pt() {
	local name=$1 out rc
	shift
	out=$($P "$@" 2>&1); rc=$?
	if [ $rc -eq 0 ] && echo "$out" | grep -q OKAY && ! echo "$out" | grep -q "NOT OKAY"; then
		echo "ok $name"
	else
		echo "FAIL $name (exit $rc): $out"
		RIG_FAILED=1
	fi
}
F=/sys/kernel/config/pci_ep/functions/pci_epf_test/func1
C=/sys/kernel/config/pci_ep/controllers/0000:01:00.0
# ep_start DMA: loads the endpoint core, the controller driver (dma=DMA) and pci-epf-test,
# and starts the function through configfs.
ep_start() {
	modprobe configfs || return 1
	insmod /job/pci-ep-core.ko || return 1
	insmod /job/sim-epc.ko dma=$1 || return 1
	insmod /job/pci-epf-test.ko || return 1
	mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
	mkdir $F || return 1
	echo 0x16c3 > $F/vendorid && echo 0xedda > $F/deviceid &&
		echo 16 > $F/msi_interrupts && echo 8 > $F/msix_interrupts || return 1
	ln -s $F $C/ && echo 1 > $C/start
}
# ep_end: waits for the rig to say the host is done, keeps the kernel log.
ep_end() {
	wait_file /shared/host-done 900 || RIG_FAILED=1
	dmesg > /job/dmesg.txt
	# The unmodified core warns once, with a trace, that x86 has no generic PCI domains;
	# any other trace is a failure.
	local traces known
	traces=$(grep -c "Call Trace" /job/dmesg.txt)
	known=$(grep -c "support generic PCI domains" /job/dmesg.txt)
	if [ "$traces" -gt "$known" ] || grep -q "BUG:" /job/dmesg.txt; then
		echo "FAIL the EP kernel logged a trace"; RIG_FAILED=1
	fi
	finish
}

# finish: exit status of the script: 1 if any check failed.
finish() {
	exit "$RIG_FAILED"
}
