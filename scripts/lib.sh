# Shared by scripts/demo.sh and bench/*.sh (source it from the repository root): a release
# build of virtio-epf, a work directory removed on exit together with every daemon started
# through it, and QEMU's arguments for an endpoint function behind its own root port.

# epf_setup TAG: builds virtio-epf (EPF_BIN) and makes EPF_WORK=/tmp/virtio-epf-TAG.XXXXXX with
# sock/ (the directory QEMU is given) and job/ (the guest's job). EPF_KEEP_WORK=1 keeps it.
epf_setup() {
	cargo build --release --locked -q -p virtio-epf
	EPF_BIN=$PWD/target/release/virtio-epf
	EPF_WORK=$(mktemp -d "/tmp/virtio-epf-$1.XXXXXX")
	EPF_PIDS=()
	EPF_QEMU=()
	trap epf_cleanup EXIT
	mkdir "$EPF_WORK/sock" "$EPF_WORK/job"
}

epf_cleanup() {
	local p
	for p in "${EPF_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[[ -n ${EPF_KEEP_WORK:-} ]] || rm -rf -- "$EPF_WORK"
}

# epf_wait_socket PATH: waits up to 10 s for a Unix socket to appear.
epf_wait_socket() {
	local _
	for _ in $(seq 200); do [[ -S $1 ]] && return 0; sleep 0.05; done
	echo "$1 never appeared" >&2
	return 1
}

# epf_daemon NAME DEVICE ARGS...: starts `virtio-epf DEVICE` on $EPF_WORK/sock/NAME.sock with
# counters in $EPF_WORK/NAME.stats and its log in $EPF_WORK/NAME.log (prefixed by the command
# in the array EPF_WRAP, if set, e.g. `ip netns exec NS`), waits for its socket, and leaves
# its pid in EPF_PID.
epf_daemon() {
	local name=$1 device=$2
	shift 2
	rm -f "$EPF_WORK/sock/$name.sock"
	${EPF_WRAP[@]+"${EPF_WRAP[@]}"} "$EPF_BIN" "$device" --vfio-user "$EPF_WORK/sock/$name.sock" \
		--stats-file "$EPF_WORK/$name.stats" "$@" 2>"$EPF_WORK/$name.log" &
	EPF_PID=$!
	EPF_PIDS+=("$EPF_PID")
	epf_wait_socket "$EPF_WORK/sock/$name.sock"
}

# epf_qemu_function SLOT NAME: appends to EPF_QEMU a root port in SLOT and a vfio-user-pci
# device on it, attached to daemon NAME's socket.
epf_qemu_function() {
	EPF_QEMU+=(-device "pcie-root-port,id=rp$1,bus=pcie.0,chassis=$1,slot=$1"
		-device "{\"driver\":\"vfio-user-pci\",\"bus\":\"rp$1\",\"socket\":{\"path\":\"$EPF_WORK/sock/$2.sock\",\"type\":\"unix\"}}")
}
