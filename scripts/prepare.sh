#!/usr/bin/env bash
# Installs and caches everything both top-level commands need; idempotent, fast when done.
#  - Debian packages for building (apt-get; only what is missing)
#  - crates (cargo fetch; cached in ~/.cargo)
#  - the host-VM harness: trixie chroot with QEMU >= 10.1 and a Debian guest kernel
#    (cached in ${VIRTIO_EPF_CACHE:-/var/cache/virtio-epf}, outside the repository)
#  - the endpoint-side rig's modules (harness/build-modules.sh, cached there too)
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need=()
# gvnccapture: the VNC client of the gpu end-to-end test (e2e_gpu.rs).
for tool in cc:gcc python3:python3 ip:iproute2 pkill:procps gvnccapture:gvncviewer; do
	command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
if ((${#need[@]})); then
	echo "prepare: installing ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
command -v cargo >/dev/null 2>&1 || {
	echo "prepare: cargo not found; install a Rust toolchain (rustup) first" >&2
	exit 1
}
cargo fetch --locked -q
harness/setup.sh
# The endpoint-side rig's kernel modules and pcitest (cached; rebuilt when kernel/ changes).
harness/build-modules.sh >/dev/null
