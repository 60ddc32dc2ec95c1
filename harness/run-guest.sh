#!/usr/bin/env bash
# Boot a Linux guest under QEMU (TCG) and run a shell script inside it.
#
# Usage:
#   harness/run-guest.sh --job-dir DIR [--mem MiB] [--smp N] [--timeout SEC]
#                        [--append "kernel args"] [--socket-dir DIR]...
#                        [--kernel default|bpo] [--verbose] [--quiet]
#                        [-- extra qemu args...]
#
#   --job-dir DIR     must contain run.sh. It is shared read-write with the
#                     guest as /job; run.sh runs there (cwd /job) as root,
#                     with the guest's own tools (the cache chroot as root fs).
#                     Afterwards DIR holds output.log (run.sh stdout+stderr),
#                     exit-code, console.log (serial console), qemu.log (QEMU's
#                     own stdout/stderr), timings.
#   --mem MiB         guest RAM (default 1024); memfd-backed, share=on, so a
#                     vfio-user server can map guest memory.
#   --smp N           vCPUs (default 1)
#   --timeout SEC     kill QEMU after SEC seconds (default 300)
#   --append ARGS     extra kernel command line arguments
#   --kernel K        the guest kernel: default (trixie's 6.12, $CACHE/kernel) or
#                     bpo (trixie-backports' linux-image-amd64, 7.x, $CACHE/kernel-bpo),
#                     each with its own modules and initramfs
#   --socket-dir DIR  bind-mounted into QEMU's chroot at the same path, so
#                     vfio-user socket paths in the extra args work unchanged.
#                     May be given several times.
#   --verbose         stream the serial console to stderr while running
#   --quiet           do not print output.log to stdout at the end
#   --share DIR       a further read-write 9p share, tag "shared", that the guest can mount
#                     (mount -t 9p -o trans=virtio,version=9p2000.L,cache=none shared /shared);
#                     two guests given the same DIR can exchange files through it
#   --nice N          run QEMU at scheduling priority N (nice(1); negative is favoured):
#                     harness/run-rig.sh gives the EP VM -10, as an endpoint SoC's CPU is
#                     not shared with its host's work
#   --allow-reboot    a guest reboot restarts the guest (run.sh runs again; it can tell
#                     by a marker file it leaves in /job) instead of ending the run
#   -- ARGS...        appended verbatim to the QEMU command line, e.g.
#                     -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1
#                     -device '{"driver":"vfio-user-pci","bus":"rp1",
#                              "socket":{"path":"/run/x/x.sock","type":"unix"}}'
#
# Exit status: run.sh's exit status; 124 if the timeout hit; 125 if the guest
# crashed or otherwise never wrote an exit code, or QEMU failed; 2 on usage
# errors. Runs harness/setup.sh first if the cache is missing or outdated.

set -Eeuo pipefail
# shellcheck disable=SC2034 # used by log()/die() in lib.sh
LOG_TAG=run-guest
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ----------------------------------------------------------------------
# Inner half: runs as `unshare --mount --propagation private -- $0 __inner`,
# i.e. in a private mount namespace of its own. Every mount made here
# disappears when the last process of the namespace exits, however that
# happens (normal exit, timeout, SIGKILL): nothing can leak into the host.
# Environment: RG_JOB, RG_SOCKET_DIRS (newline separated), RG_QEMU_LOG, RG_SHARE,
# RG_KERNEL_DIR, RG_INITRAMFS (the kernel picked with --kernel).
# Arguments: the QEMU command line.
inner() {
	local s="$CHROOT$NS_DIR" n sd top
	local -a created=()

	# A tmpfs under which all per-run mount points live: nothing is created
	# in the persistent chroot, and concurrent runs do not collide (each has
	# its own namespace, hence its own tmpfs).
	mkdir -p "$s"
	mount -t tmpfs -o mode=0755 tmpfs "$s"
	mkdir "$s"/{root,job,modules,boot,shared}
	if [[ -n $RG_SHARE ]]; then
		mount --bind "$RG_SHARE" "$s/shared"
	fi

	# The guest's root share: a NON-recursive bind of the chroot, i.e. the
	# plain chroot tree without the /proc, /dev, ... mounted below for QEMU.
	mount --bind "$CHROOT" "$s/root"
	mount -o remount,bind,ro "$s/root"
	mount --bind "$RG_JOB" "$s/job"
	mount --bind "$RG_KERNEL_DIR/usr/lib/modules" "$s/modules"
	mount -o remount,bind,ro "$s/modules"
	touch "$s/boot/vmlinuz" "$s/boot/initrd"
	mount --bind "$(readlink -f "$RG_KERNEL_DIR/vmlinuz")" "$s/boot/vmlinuz"
	mount --bind "$RG_INITRAMFS" "$s/boot/initrd"

	# What QEMU itself needs in its chroot. A minimal /dev rather than the
	# host's: QEMU gets no access to host disks etc.
	mount -t proc proc "$CHROOT/proc"
	mount -t sysfs -o ro sysfs "$CHROOT/sys"
	mount -t tmpfs -o mode=0755 tmpfs "$CHROOT/dev"
	for n in null zero full random urandom; do
		touch "$CHROOT/dev/$n"
		mount --bind "/dev/$n" "$CHROOT/dev/$n"
	done
	# /dev/net/tun and /dev/vhost-net, when the host has them, for QEMU's own tap netdevs
	# (-netdev tap,ifname=...). The TAP must exist in QEMU's network namespace: run
	# run-guest.sh under `ip netns exec NS` for that.
	for n in net/tun vhost-net; do
		[[ -c /dev/$n ]] || continue
		mkdir -p "$(dirname "$CHROOT/dev/$n")"
		touch "$CHROOT/dev/$n"
		mount --bind "/dev/$n" "$CHROOT/dev/$n"
	done
	mkdir "$CHROOT/dev/shm"
	mount -t tmpfs -o mode=1777 tmpfs "$CHROOT/dev/shm"
	mount -t tmpfs -o mode=1777 tmpfs "$CHROOT/tmp"
	mount -t tmpfs -o mode=0755 tmpfs "$CHROOT/run"

	# Socket directories at the same absolute path. Mount points missing in
	# the chroot are created (after the tmpfs mounts above, so /tmp/... and
	# /run/... ones land in tmpfs) and removed again afterwards.
	while IFS= read -r sd; do
		[[ -n $sd ]] || continue
		if [[ ! -d "$CHROOT$sd" ]]; then
			top=$sd
			while [[ ! -d "$CHROOT$(dirname "$top")" ]]; do top=$(dirname "$top"); done
			created+=("$top")
			mkdir -p "$CHROOT$sd"
		fi
		mount --bind "$sd" "$CHROOT$sd"
	done <<<"$RG_SOCKET_DIRS"

	# timeout(1) signals the whole process group (QEMU included); note the
	# signal and carry on to the cleanup once QEMU is gone. (A handler, not
	# an ignore: ignored signals would be inherited by QEMU.)
	trap 'echo "run-guest: terminating QEMU" >>"$RG_QEMU_LOG"' TERM INT HUP
	local rc=0
	nice -n "${RG_NICE:-0}" chroot "$CHROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
		"$@" </dev/null >>"$RG_QEMU_LOG" 2>&1 || rc=$?

	while IFS= read -r sd; do
		[[ -n $sd ]] && umount "$CHROOT$sd"
	done <<<"$RG_SOCKET_DIRS"
	# Remove the mount point directories we created, but only if no other
	# guest is running (they are plain directories on the host, a concurrent
	# run may be using the same ones): try to turn our shared cache lock
	# (fd 9, inherited) into an exclusive one. Only empty directories.
	if [[ ${#created[@]} -gt 0 ]] && flock -x -n 9; then
		for top in "${created[@]}"; do
			find "$CHROOT$top" -depth -type d -empty -delete 2>/dev/null || true
		done
	fi
	return "$rc"
}

if [[ "${1:-}" == __inner ]]; then
	shift
	inner "$@"
	exit
fi

# ----------------------------------------------------------------------
# Outer half.

usage() {
	sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
	exit 2
}
usage_error() {
	log "usage error: $*"
	exit 2
}

JOB="" SHARE="" MEM=1024 SMP=1 TIMEOUT=300 APPEND="" VERBOSE=0 QUIET=0 REBOOT=-no-reboot NICE=0
KERNEL=default
SOCKET_DIRS=()
while [[ $# -gt 0 ]]; do
	case "$1" in
	--job-dir) JOB=${2:?--job-dir needs a value}; shift 2 ;;
	--mem) MEM=${2:?--mem needs a value}; shift 2 ;;
	--smp) SMP=${2:?--smp needs a value}; shift 2 ;;
	--timeout) TIMEOUT=${2:?--timeout needs a value}; shift 2 ;;
	--append) APPEND=${2?--append needs a value}; shift 2 ;;
	--kernel) KERNEL=${2:?--kernel needs a value}; shift 2 ;;
	--socket-dir) SOCKET_DIRS+=("${2:?--socket-dir needs a value}"); shift 2 ;;
	--verbose) VERBOSE=1; shift ;;
	--quiet) QUIET=1; shift ;;
	--allow-reboot) REBOOT=""; shift ;;
	--nice) NICE=${2:?--nice needs a value}; shift 2 ;;
	--share) SHARE=${2:?--share needs a value}; shift 2 ;;
	-h | --help) usage ;;
	--) shift; break ;;
	*) usage_error "unknown argument '$1' (extra QEMU arguments go after --)" ;;
	esac
done
EXTRA_QEMU_ARGS=("$@")

[[ $EUID -eq 0 ]] || die "must run as root (chroot, unshare --mount)"
[[ -n $JOB ]] || usage_error "--job-dir is required"
[[ -d $JOB ]] || usage_error "job dir '$JOB' does not exist"
JOB=$(readlink -f "$JOB")
[[ -f $JOB/run.sh ]] || usage_error "$JOB/run.sh does not exist"
if [[ -n $SHARE ]]; then
	[[ -d $SHARE ]] || usage_error "share dir '$SHARE' does not exist"
	SHARE=$(readlink -f "$SHARE")
fi
case $KERNEL in
default) KDIR=$KERNEL_DIR KINITRD=$INITRAMFS ;;
bpo) KDIR=$BPO_KERNEL_DIR KINITRD=$BPO_INITRAMFS ;;
*) usage_error "--kernel must be default or bpo, got '$KERNEL'" ;;
esac
for v in MEM SMP TIMEOUT; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || usage_error "--${v,,} must be a positive integer, got '${!v}'"
done
for i in "${!SOCKET_DIRS[@]}"; do
	[[ -d ${SOCKET_DIRS[i]} ]] || usage_error "socket dir '${SOCKET_DIRS[i]}' does not exist"
	SOCKET_DIRS[i]=$(readlink -f "${SOCKET_DIRS[i]}")
	case "${SOCKET_DIRS[i]}" in
	/ | /proc | /proc/* | /sys | /sys/* | /dev | /dev/* | "$NS_DIR" | "$NS_DIR"/* | "$CACHE" | "$CACHE"/*)
		usage_error "socket dir '${SOCKET_DIRS[i]}' is not allowed (pick a dedicated directory)"
		;;
	esac
done

# Build the cache on first use (or after harness changes).
if ! cache_is_complete; then
	log "cache $CACHE missing or outdated: running setup.sh"
	"$HARNESS_DIR/setup.sh" || die "setup.sh failed"
fi
# Shared lock: setup.sh (exclusive) will not rebuild the chroot under us.
exec 9>"$LOCK"
flock -s 9
cache_is_complete || die "cache $CACHE changed while waiting for its lock; run harness/setup.sh"

rm -f "$JOB"/{output.log,exit-code,console.log,qemu.log,guest-started,timings}
: >"$JOB/qemu.log"

# Paths as QEMU sees them (inside its chroot; see inner()).
P9OPTS=security_model=passthrough,multidevs=remap
# shellcheck disable=SC2054 # the commas are QEMU option syntax
QEMU_ARGS=(
	qemu-system-x86_64
	-accel tcg -cpu max -m "$MEM" -smp "$SMP"
	-nodefaults -nographic ${REBOOT:+"$REBOOT"} -monitor none
	-object "memory-backend-memfd,id=mem,size=${MEM}M,share=on"
	-machine q35,memory-backend=mem
	-kernel "$NS_DIR/boot/vmlinuz" -initrd "$NS_DIR/boot/initrd"
	-append "console=ttyS0 panic=-1 quiet${APPEND:+ $APPEND}"
	-chardev "file,id=con0,path=$NS_DIR/job/console.log"
	-serial chardev:con0
	-fsdev "local,id=fsroot,path=$NS_DIR/root,readonly=on,$P9OPTS"
	-device virtio-9p-pci,fsdev=fsroot,mount_tag=root,disable-legacy=on
	-fsdev "local,id=fsjob,path=$NS_DIR/job,$P9OPTS"
	-device virtio-9p-pci,fsdev=fsjob,mount_tag=job,disable-legacy=on
	-fsdev "local,id=fsmod,path=$NS_DIR/modules,readonly=on,$P9OPTS"
	-device virtio-9p-pci,fsdev=fsmod,mount_tag=modules,disable-legacy=on
)
if [[ -n $SHARE ]]; then
	QEMU_ARGS+=(
		-fsdev "local,id=fsshared,path=$NS_DIR/shared,$P9OPTS"
		-device virtio-9p-pci,fsdev=fsshared,mount_tag=shared,disable-legacy=on
	)
fi
QEMU_ARGS+=("${EXTRA_QEMU_ARGS[@]}")
printf '%q ' "${QEMU_ARGS[@]}" >"$JOB/qemu-cmdline"
echo >>"$JOB/qemu-cmdline"

[[ $NICE =~ ^-?[0-9]+$ ]] || usage_error "--nice needs an integer"
export RG_JOB="$JOB" RG_QEMU_LOG="$JOB/qemu.log" RG_SHARE="$SHARE" RG_NICE="$NICE"
export RG_KERNEL_DIR="$KDIR" RG_INITRAMFS="$KINITRD"
RG_SOCKET_DIRS=$(printf '%s\n' "${SOCKET_DIRS[@]}")
export RG_SOCKET_DIRS

log "booting guest (kernel $(cat "$KDIR/release") [$KERNEL], ${MEM} MiB, $SMP vCPU, timeout ${TIMEOUT}s), job $JOB"
TAIL_PID=""
if [[ $VERBOSE -eq 1 ]]; then
	touch "$JOB/console.log"
	tail -n +1 -F "$JOB/console.log" >&2 2>/dev/null &
	TAIL_PID=$!
fi

START=$(date +%s.%N)
# timeout(1) runs the namespace in its own process group and, on expiry,
# SIGTERMs the whole group (QEMU exits cleanly on SIGTERM), then SIGKILLs
# it 10 s later if needed. We run it in the background so that our own
# signals (Ctrl-C, SIGTERM) can be forwarded to it: being in another process
# group, QEMU would not see a terminal's Ctrl-C otherwise. setpriv
# --pdeathsig: if we are SIGKILLed, timeout gets SIGTERM and stops QEMU too.
setpriv --pdeathsig TERM -- timeout --kill-after=10 "$TIMEOUT" \
	unshare --mount --propagation private -- "$BASH" "${BASH_SOURCE[0]}" __inner "${QEMU_ARGS[@]}" &
TIMEOUT_PID=$!
INTERRUPTED=0
trap 'INTERRUPTED=1; kill -TERM "$TIMEOUT_PID" 2>/dev/null || true' INT TERM HUP
RC=0
# wait returns early (>128) when a trapped signal arrives: wait again.
while :; do
	wait "$TIMEOUT_PID" && RC=0 || RC=$?
	kill -0 "$TIMEOUT_PID" 2>/dev/null || break
done
trap - INT TERM HUP
END=$(date +%s.%N)
if [[ -n $TAIL_PID ]]; then
	sleep 0.2
	kill "$TAIL_PID" 2>/dev/null || true
	wait "$TAIL_PID" 2>/dev/null || true
fi

# Timings: guest-started is created by the guest's /init right before it
# starts run.sh, through 9p, i.e. by QEMU on the host: its mtime is the host
# time at which run.sh started.
TOTAL=$(awk -v a="$START" -v b="$END" 'BEGIN { printf "%.2f", b - a }')
BOOT="n/a"
if [[ -f $JOB/guest-started ]]; then
	BOOT=$(awk -v a="$START" -v b="$(stat -c %.9Y "$JOB/guest-started")" 'BEGIN { printf "%.2f", b - a }')
fi
printf 'boot_s=%s\ntotal_s=%s\n' "$BOOT" "$TOTAL" >"$JOB/timings"

show_console_tail() {
	if [[ -s $JOB/qemu.log ]]; then
		log "--- $JOB/qemu.log (last 20 lines) ---"
		tail -n 20 "$JOB/qemu.log" >&2
	fi
	log "--- $JOB/console.log (last 30 lines) ---"
	tail -n 30 "$JOB/console.log" >&2 2>/dev/null || true
}

if [[ $QUIET -eq 0 && -f $JOB/output.log ]]; then
	cat "$JOB/output.log"
fi

if [[ $INTERRUPTED -eq 1 ]]; then
	log "interrupted after ${TOTAL}s; QEMU stopped"
	exit 130
fi
if [[ $RC -eq 124 || $RC -eq 137 ]]; then
	show_console_tail
	log "TIMEOUT: guest did not finish within ${TIMEOUT}s; QEMU killed (boot ${BOOT}s)"
	exit 124
fi
if [[ $RC -ne 0 ]]; then
	show_console_tail
	log "QEMU FAILED with exit status $RC (see $JOB/qemu.log, command line in $JOB/qemu-cmdline)"
	exit 125
fi
if [[ ! -f $JOB/exit-code ]]; then
	show_console_tail
	log "GUEST CRASHED: it powered off without writing $JOB/exit-code (kernel panic or init failure?)"
	exit 125
fi
CODE=$(<"$JOB/exit-code")
[[ $CODE =~ ^[0-9]+$ ]] || die "malformed exit-code '$CODE'"
log "run.sh exit status $CODE; boot ${BOOT}s (QEMU start -> run.sh start), total ${TOTAL}s"
exit "$CODE"
