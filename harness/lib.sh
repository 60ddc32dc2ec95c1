# shellcheck shell=bash disable=SC2034 # variables are used by the sourcing scripts
# Shared definitions for harness/setup.sh and harness/run-guest.sh.
# Sourced, never executed. Everything here must stay cheap: run-guest.sh
# sources it on every run.

# Where everything big lives. Deliberately outside the repository so that
# `git clean`, worktrees and other engineers' builds never see ~1 GiB of
# chroot, and so every checkout of the repo shares one cache.
CACHE="${VIRTIO_EPF_CACHE:-/var/cache/virtio-epf}"
CHROOT="$CACHE/chroot"            # trixie rootfs: QEMU for the host + guest root fs
KERNEL_DIR="$CACHE/kernel"        # dpkg-deb -x of linux-image-6.12.*-amd64 (+ depmod)
INITRAMFS="$CACHE/initramfs.cpio.gz"
STAMP="$CACHE/stamp"              # written by setup.sh after the above; see setup_key()
# The second guest kernel: trixie-backports' linux-image-amd64 (run-guest.sh --kernel bpo).
# Its own stage with its own stamp, so adding or rebuilding it never touches the above.
BPO_KERNEL_DIR="$CACHE/kernel-bpo"  # same layout as $KERNEL_DIR
BPO_INITRAMFS="$CACHE/initramfs-bpo.cpio.gz"
BPO_STAMP="$CACHE/stamp-bpo"      # written last by setup.sh; see bpo_key()
LOCK="$CACHE/.lock"               # flock: setup.sh exclusive, run-guest.sh shared

# Directory inside the chroot under which run-guest.sh / setup.sh mount
# things. It is always covered by a tmpfs inside a private mount namespace,
# so nothing mounted or created beneath it survives the namespace.
NS_DIR=/srv/virtio-epf

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Bump when the way the cache is built changes in a way that needs a rebuild
# (e.g. different chroot layout). Changes to the package lists or to
# guest-init.sh are detected automatically via setup_key().
SETUP_VERSION=1
# The same for the backports kernel stage only (kernel-bpo, initramfs-bpo): bumping it
# rebuilds that stage and leaves the chroot, the default kernel and its initramfs alone.
BPO_VERSION=1

# Packages installed in the chroot.
# QEMU (>= 10.1 for vfio-user-pci) comes from trixie-backports.
QEMU_PACKAGES=(qemu-system-x86)
# Tools the guest uses; the guest mounts the chroot itself as its root fs.
GUEST_PACKAGES=(
	kmod cpio busybox-static pciutils fio iperf3 e2fsprogs ethtool iproute2
	iputils-ping coreutils util-linux procps xz-utils libdrm-tests
)
# Kernel modules (and, via modules.dep, their dependencies) that the
# initramfs needs before it can mount the 9p root and overlay it.
INITRAMFS_MODULES=(9pnet_virtio 9p overlay)
QEMU_MIN_VERSION=10.1

log() { printf '[%s] %s\n' "${LOG_TAG:-harness}" "$*" >&2; }
die() {
	printf '[%s] ERROR: %s\n' "${LOG_TAG:-harness}" "$*" >&2
	exit 1
}

# Identifies a complete cache. If any input changes, setup.sh rebuilds.
# Only hashes small files, so it costs milliseconds.
setup_key() {
	{
		echo "setup-version=$SETUP_VERSION"
		echo "qemu=${QEMU_PACKAGES[*]}"
		echo "guest=${GUEST_PACKAGES[*]}"
		echo "initramfs-modules=${INITRAMFS_MODULES[*]}"
		echo "guest-init=$(sha256sum <"$HARNESS_DIR/guest-init.sh" | cut -d' ' -f1)"
	} | sha256sum | cut -d' ' -f1
}

# Identifies a complete backports kernel stage. It is derived from the chroot, busybox and
# guest-init.sh like the default kernel's, hence setup_key() in it.
bpo_key() {
	{
		echo "bpo-version=$BPO_VERSION"
		echo "base=$(setup_key)"
	} | sha256sum | cut -d' ' -f1
}

# The chroot, the default kernel and its initramfs.
base_cache_is_complete() {
	[[ -f "$STAMP" && -x "$CHROOT/usr/bin/qemu-system-x86_64" && -f "$KERNEL_DIR/vmlinuz" &&
		-f "$INITRAMFS" ]] && [[ "$(head -n1 "$STAMP")" == "$(setup_key)" ]]
}

# The backports kernel and its initramfs.
bpo_cache_is_complete() {
	[[ -f "$BPO_STAMP" && -f "$BPO_KERNEL_DIR/vmlinuz" && -f "$BPO_INITRAMFS" ]] &&
		[[ "$(head -n1 "$BPO_STAMP")" == "$(bpo_key)" ]]
}

# Every stage. setup.sh rebuilds only the stages that are not complete.
cache_is_complete() {
	base_cache_is_complete && bpo_cache_is_complete
}

# chroot_run ROOT [--bind SRC:DST]... [--] CMD...: CMD chrooted in ROOT, in a private mount
# namespace (with /proc, /sys, /dev and a tmpfs on $NS_DIR, binds below it) that vanishes
# with the command. Used by setup.sh and build-modules.sh.
chroot_run() {
	# shellcheck disable=SC2016 # the script is for the inner bash
	unshare --mount --propagation private -- /bin/bash -Eeuo pipefail -c '
		ns_dir=$1 root=$2; shift 2
		mount -t proc proc "$root/proc"
		mount -t sysfs -o ro sysfs "$root/sys"
		mount --rbind /dev "$root/dev"
		mkdir -p "$root$ns_dir"
		mount -t tmpfs -o mode=0755 tmpfs "$root$ns_dir"
		while [[ $1 == --bind ]]; do
			src=${2%%:*} dst=$root${2#*:}
			mkdir -p "$dst"
			mount --bind "$src" "$dst"
			shift 2
		done
		[[ $1 == -- ]] && shift
		exec chroot "$root" /usr/bin/env -i \
			PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
			HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
	' chroot_run "$NS_DIR" "$@"
}
