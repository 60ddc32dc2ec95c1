#!/usr/bin/env bash
# Run one of the harness chroot's tools (iperf3, python3, ping, ethtool, ...) on the host
# side of a test network, as the peer of a guest: in the caller's network namespace (start it
# with `ip netns exec NS harness/peer.sh ...`), chrooted into the cache chroot, inside a
# private mount namespace with a minimal /dev (null, zero, random, urandom), /proc and tmpfs
# /tmp and /run. Nothing is mounted in the host's namespace, nothing in the chroot changes.
#
# Usage: harness/peer.sh CMD [ARGS...]
#   e.g. ip netns exec epf-ns harness/peer.sh iperf3 -s -B 10.77.0.1
#
# The tools are the guest's own (same versions on both ends, e.g. iperf3), and the host needs
# none of them installed. Exit status: CMD's. Runs setup.sh first if the cache is missing or
# outdated. The chroot is held with the same shared lock as run-guest.sh, so setup.sh never
# rebuilds it under a running peer. The process keeps its pid through the whole chain
# (exec), so signalling it signals CMD.

set -Eeuo pipefail
# shellcheck disable=SC2034 # used by log()/die() in lib.sh
LOG_TAG=peer
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "${1:-}" == __inner ]]; then
	shift
	mount -t proc proc "$CHROOT/proc"
	mount -t tmpfs -o mode=0755 tmpfs "$CHROOT/dev"
	for n in null zero random urandom; do
		touch "$CHROOT/dev/$n"
		mount --bind "/dev/$n" "$CHROOT/dev/$n"
	done
	mount -t tmpfs -o mode=1777 tmpfs "$CHROOT/tmp"
	mount -t tmpfs -o mode=0755 tmpfs "$CHROOT/run"
	exec chroot "$CHROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
		LANG=C.UTF-8 "$@"
fi

[[ $# -gt 0 ]] || { sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2; exit 2; }
[[ $EUID -eq 0 ]] || die "must run as root (chroot, unshare --mount)"
if ! cache_is_complete; then
	log "cache $CACHE missing or outdated: running setup.sh"
	"$HARNESS_DIR/setup.sh" >&2 || die "setup.sh failed"
fi
exec 9>"$LOCK"
flock -s 9
cache_is_complete || die "cache $CACHE changed while waiting for its lock; run harness/setup.sh"
exec unshare --mount --propagation private -- "$BASH" "${BASH_SOURCE[0]}" __inner "$@"
