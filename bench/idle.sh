#!/usr/bin/env bash
# What an idle device costs the endpoint's CPU: a virtio-epf console bound by the guest's
# driver and then left idle, in the default mode (trapped registers, doorbell) and with polled
# legacy registers and notifications (whose poller backs off to 200 us sleeps when the host is
# quiet). Prints the daemon's CPU use (user + system time of all its threads) over 10 s of
# idleness, and during the driver's setup for comparison.
# Usage: bench/idle.sh   (not part of the test suite)
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/prepare.sh >/dev/null
source scripts/lib.sh
epf_setup idle
work=$EPF_WORK
hz=$(getconf CLK_TCK)

# cpu_ticks PID: user + system clock ticks of the process so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

printf '%-14s %18s\n' mode "idle CPU (% of a core)"
for mode in default legacy-poll; do
	args=()
	[[ $mode == legacy-poll ]] && args=(--layout legacy --registers poll --notify poll)
	rm -rf "$work/job" && mkdir "$work/job"
	cat >"$work/job/run.sh" <<'GUEST'
#!/bin/bash
[ -c /dev/hvc0 ] || { echo "no /dev/hvc0"; exit 1; }
touch /job/idle
sleep 14
GUEST
	chmod +x "$work/job/run.sh"
	EPF_QEMU=()
	epf_daemon "console-$mode" console --backend "unix:$work/backend-$mode.sock" "${args[@]}"
	pid=$EPF_PID
	epf_qemu_function 1 "console-$mode"
	harness/run-guest.sh --quiet --job-dir "$work/job" --socket-dir "$work/sock" --timeout 120 -- \
		"${EPF_QEMU[@]}" >"$work/guest-$mode.log" 2>&1 &
	guest=$!
	for _ in $(seq 600); do [[ -e $work/job/idle ]] && break; sleep 0.1; done
	[[ -e $work/job/idle ]] || { echo "the guest never bound the console" >&2; cat "$work/guest-$mode.log" >&2; exit 1; }
	sleep 1
	t0=$(cpu_ticks "$pid")
	sleep 10
	t1=$(cpu_ticks "$pid")
	printf '%-14s %18s\n' "$mode" "$(awk -v d=$((t1 - t0)) -v hz="$hz" 'BEGIN { printf "%.1f", 100 * d / hz / 10 }')"
	wait "$guest" || true
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
done
