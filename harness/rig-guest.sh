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

# wait_file PATH [SECONDS]: waits until PATH exists (default 240 s); fails otherwise.
wait_file() {
	local i
	for ((i = 0; i < ${2:-240} * 10; i++)); do
		[ -e "$1" ] && return 0
		sleep 0.1
	done
	echo "rig: timed out waiting for $1"
	return 1
}

# signal NAME: tells the other VM (creates /shared/NAME).
signal() {
	: >"/shared/$1"
}

# finish: exit status of the script: 1 if any check failed.
finish() {
	exit "$RIG_FAILED"
}
