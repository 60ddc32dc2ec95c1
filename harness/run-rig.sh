#!/usr/bin/env bash
# The endpoint-side rig: an EP VM running Linux's PCI endpoint subsystem on the simulated
# controller, a host VM that sees the function the EP programs, and the link (epf-link)
# serving both over vfio-user (docs/sim-epc.md).
#
# Usage:
#   harness/run-rig.sh --work DIR --ep-job EPDIR --host-job HOSTDIR [--link BIN]
#                      [--link-arg ARG]... [--ep-opt OPT]... [--host-opt OPT]...
#                      [--host-boots N] [--between-boots FILE] [--timeout SEC]
#
#   --work DIR       scratch directory: sock/ (both vfio-user sockets), shared/ (a 9p share
#                    both guests can mount as /shared to coordinate), link.log, link.stats
#   --ep-job EPDIR   job dir of the EP VM (its run.sh runs first; it should start the
#                    function, then wait for /shared/host-done and exit)
#   --host-job DIR   job dir of the host VM, booted once the EP started the function
#   --link BIN       the link binary (default: target/release/epf-link)
#   --link-arg ARG   extra argument for the link (repeatable)
#   --ep-opt OPT     extra run-guest.sh option for the EP VM (repeatable; e.g. --append)
#   --host-opt OPT   extra run-guest.sh option for the host VM (repeatable)
#   --ep-qemu ARG, --host-qemu ARG
#                    extra QEMU argument for that VM (repeatable)
#   --host-boots N   boot the host VM N times in a row (a fresh QEMU each time; the link
#                    serves the next one); HOSTDIR/boot holds the number of the current boot,
#                    HOSTDIR/output-all.log the output of every boot
#   --between-boots FILE
#                    before each host boot after the first, wait (up to the timeout) until
#                    the EP VM creates shared/FILE-N, N being the boot to come (e.g. the EP
#                    reloads its function while no host is attached: the host VM's QEMU
#                    keeps the BARs it mapped for as long as it runs)
#   --timeout SEC    per-VM timeout (default 300)
#
# The EP VM gets the controller at 01:00.0; the host VM gets the function at 01:00.0.
# Both guests mount nothing themselves: harness/rig-guest.sh (source it from run.sh) mounts
# /shared and provides check/wait helpers. After the host VM's last boot the rig creates
# shared/host-done, waits for the EP VM, stops the link (its final counters land in
# link.stats) and exits with the host VM's status if it failed, else the EP VM's. On
# failure the tails of both VMs' logs and the link's log are printed.
#
# By hand (after harness/build-modules.sh, see harness/README.md "The endpoint-side rig"):
#   harness/run-rig.sh --work /tmp/rig --ep-job ep --host-job host

set -Eeuo pipefail
# shellcheck disable=SC2034 # used by log()/die() in lib.sh
LOG_TAG=run-rig
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WORK="" EP_JOB="" HOST_JOB="" LINK="" TIMEOUT=300 HOST_BOOTS=1 BETWEEN=""
LINK_ARGS=() EP_OPTS=() HOST_OPTS=() EP_QEMU=() HOST_QEMU=()
while [[ $# -gt 0 ]]; do
	case "$1" in
	--work) WORK=${2:?}; shift 2 ;;
	--ep-job) EP_JOB=${2:?}; shift 2 ;;
	--host-job) HOST_JOB=${2:?}; shift 2 ;;
	--link) LINK=${2:?}; shift 2 ;;
	--link-arg) LINK_ARGS+=("${2?}"); shift 2 ;;
	--ep-opt) EP_OPTS+=("${2?}"); shift 2 ;;
	--host-opt) HOST_OPTS+=("${2?}"); shift 2 ;;
	--ep-qemu) EP_QEMU+=("${2?}"); shift 2 ;;
	--host-qemu) HOST_QEMU+=("${2?}"); shift 2 ;;
	--host-boots) HOST_BOOTS=${2:?}; shift 2 ;;
	--between-boots) BETWEEN=${2:?}; shift 2 ;;
	--timeout) TIMEOUT=${2:?}; shift 2 ;;
	-h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done
[[ -n $WORK && -n $EP_JOB && -n $HOST_JOB ]] || die "--work, --ep-job and --host-job are required"
[[ -f $EP_JOB/run.sh && -f $HOST_JOB/run.sh ]] || die "both job dirs need a run.sh"
[[ $HOST_BOOTS =~ ^[1-9][0-9]*$ ]] || die "--host-boots must be a positive integer"
LINK=${LINK:-$HARNESS_DIR/../target/release/epf-link}
[[ -x $LINK ]] || die "link binary $LINK not found (cargo build --release -p epf-link)"

mkdir -p "$WORK"
WORK=$(readlink -f "$WORK")
rm -rf "$WORK/sock" "$WORK/shared"
mkdir -p "$WORK/sock" "$WORK/shared"
cp "$HARNESS_DIR/rig-guest.sh" "$EP_JOB/rig-guest.sh"
cp "$HARNESS_DIR/rig-guest.sh" "$HOST_JOB/rig-guest.sh"
EP_SOCK=$WORK/sock/ep.sock HOST_SOCK=$WORK/sock/host.sock

vfio_user_dev() {
	printf '%s\n' -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1 \
		-device "{\"driver\":\"vfio-user-pci\",\"bus\":\"rp1\",\"socket\":{\"path\":\"$1\",\"type\":\"unix\"}}"
}

LINK_PID="" EP_PID=""
cleanup() {
	[[ -n $EP_PID ]] && kill -TERM "$EP_PID" 2>/dev/null
	[[ -n $LINK_PID ]] && kill -TERM "$LINK_PID" 2>/dev/null
	wait 2>/dev/null || true
}
trap cleanup EXIT

show_logs() {
	local d f
	for d in "$EP_JOB" "$HOST_JOB"; do
		for f in output.log console.log; do
			[[ -s $d/$f ]] || continue
			log "--- $d/$f (last 40 lines) ---"
			tail -n 40 "$d/$f" >&2
		done
	done
	log "--- $WORK/link.log (last 30 lines) ---"
	tail -n 30 "$WORK/link.log" >&2 || true
}

T0=$SECONDS
RUST_LOG=${RUST_LOG:-info} "$LINK" --ep-socket "$EP_SOCK" --host-socket "$HOST_SOCK" \
	--stats-file "$WORK/link.stats" "${LINK_ARGS[@]}" >"$WORK/link.log" 2>&1 &
LINK_PID=$!
for _ in $(seq 100); do [[ -S $EP_SOCK ]] && break; sleep 0.05; done
[[ -S $EP_SOCK ]] || { show_logs; die "the link did not create $EP_SOCK"; }

mapfile -t EP_DEV < <(vfio_user_dev "$EP_SOCK")
# The EP VM is favoured on this machine: on a board the endpoint's CPU is its own, never
# preempted by the host's work (polled registers have timing bounds: docs/design.md).
"$HARNESS_DIR/run-guest.sh" --job-dir "$EP_JOB" --mem 512 --timeout "$TIMEOUT" --quiet --nice -10 \
	--socket-dir "$WORK/sock" --share "$WORK/shared" "${EP_OPTS[@]}" -- "${EP_QEMU[@]}" "${EP_DEV[@]}" \
	>"$WORK/ep-vm.log" 2>&1 &
EP_PID=$!

# The host socket appears when the EP starts its function.
while [[ ! -S $HOST_SOCK ]]; do
	if ! kill -0 "$EP_PID" 2>/dev/null; then
		wait "$EP_PID" && EP_RC=0 || EP_RC=$?
		EP_PID=""
		show_logs
		die "the EP VM ended (status $EP_RC) before it started a function"
	fi
	if ((SECONDS - T0 > TIMEOUT)); then
		show_logs
		die "no function started within ${TIMEOUT}s"
	fi
	sleep 0.2
done
log "function started after $((SECONDS - T0)) s; booting the host VM"

mapfile -t HOST_DEV < <(vfio_user_dev "$HOST_SOCK")
HOST_RC=0
: >"$HOST_JOB/output-all.log"
for ((boot = 1; boot <= HOST_BOOTS; boot++)); do
	if ((boot > 1)) && [[ -n $BETWEEN ]]; then
		T1=$SECONDS
		until [[ -e $WORK/shared/$BETWEEN-$boot ]]; do
			if ((SECONDS - T1 > TIMEOUT)) || ! kill -0 "$EP_PID" 2>/dev/null; then
				log "the EP VM never created shared/$BETWEEN-$boot"
				HOST_RC=125
				break 2
			fi
			sleep 0.2
		done
	fi
	echo "$boot" >"$HOST_JOB/boot"
	if ! "$HARNESS_DIR/run-guest.sh" --job-dir "$HOST_JOB" --mem 512 --timeout "$TIMEOUT" --quiet \
		--socket-dir "$WORK/sock" --share "$WORK/shared" "${HOST_OPTS[@]}" -- "${HOST_QEMU[@]}" "${HOST_DEV[@]}" \
		>>"$WORK/host-vm.log" 2>&1; then
		HOST_RC=$(cat "$HOST_JOB/exit-code" 2>/dev/null || echo 125)
		[[ $HOST_RC != 0 ]] || HOST_RC=125
		cat "$HOST_JOB/output.log" >>"$HOST_JOB/output-all.log" 2>/dev/null || true
		break
	fi
	cat "$HOST_JOB/output.log" >>"$HOST_JOB/output-all.log" 2>/dev/null || true
done
touch "$WORK/shared/host-done"

wait "$EP_PID" && EP_RC=0 || EP_RC=$?
EP_PID=""
kill -TERM "$LINK_PID" 2>/dev/null || true
wait "$LINK_PID" && LINK_RC=0 || LINK_RC=$?
LINK_PID=""
log "EP VM status $EP_RC, host VM status $HOST_RC, link status $LINK_RC; $((SECONDS - T0)) s"
if [[ $HOST_RC != 0 || $EP_RC != 0 || $LINK_RC != 0 ]]; then
	show_logs
	[[ $HOST_RC != 0 ]] && exit "$HOST_RC"
	[[ $EP_RC != 0 ]] && exit "$EP_RC"
	exit 1
fi
exit 0
