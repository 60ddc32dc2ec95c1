#!/usr/bin/env bash
# Build (once) and cache everything needed to boot a Linux guest under QEMU
# with vfio-user-pci support:
#   $CACHE/chroot            Debian trixie (minbase) + QEMU from trixie-backports
#                            + guest tools. QEMU runs chrooted in it (it needs
#                            trixie's libc, the host is bookworm) and the guest
#                            mounts the very same tree read-only as its root fs.
#   $CACHE/kernel            trixie linux-image-6.12.*-amd64, unpacked + depmod
#   $CACHE/initramfs.cpio.gz busybox-static + 9p/overlay modules + guest-init.sh
#   $CACHE/stamp             written after the three above; when it matches, they are kept
#   $CACHE/kernel-bpo        trixie-backports linux-image-amd64 (7.x), unpacked + depmod
#   $CACHE/initramfs-bpo.cpio.gz  the same initramfs with that kernel's modules
#   $CACHE/stamp-bpo         written last; when both stamps match, setup is a no-op
#
# CACHE defaults to /var/cache/virtio-epf (override with VIRTIO_EPF_CACHE).
# Every stage is built in a temporary directory and renamed into place only
# when complete, so an interrupted or failed run leaves no half-built stage
# behind and the next run redoes exactly what is missing. The backports kernel
# stage has its own stamp: building or rebuilding it leaves the others alone.
#
# Usage: harness/setup.sh [--force]
#   --force   rebuild everything even if the cache is up to date
# Environment: VIRTIO_EPF_CACHE, VIRTIO_EPF_MIRROR (Debian mirror URL;
#   default: the first .../debian URI in the host's apt sources).

set -Eeuo pipefail
# shellcheck disable=SC2034 # used by log()/die() in lib.sh
LOG_TAG=setup
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

trap 'die "command failed (exit $?) at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND"' ERR

FORCE=0
case "${1:-}" in
"") ;;
--force) FORCE=1 ;;
-h | --help)
	sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
	exit 0
	;;
*) die "unknown argument '$1' (usage: $0 [--force])" ;;
esac

[[ $EUID -eq 0 ]] || die "must run as root (debootstrap, chroot and mount need it)"

mkdir -p "$CACHE"
# One setup at a time; run-guest.sh holds this lock shared while a guest
# runs, so we never swap the chroot out from under a running QEMU.
exec 9>"$LOCK"
if ! flock -n -x 9; then
	log "waiting for the lock on $CACHE (another setup or a running guest)..."
	flock -x 9
fi

if [[ $FORCE -eq 0 ]] && cache_is_complete; then
	log "cache $CACHE is up to date ($(sed -n 2,3p "$STAMP" | paste -sd' '), bpo $(sed -n 2p "$BPO_STAMP")); nothing to do"
	exit 0
fi

T0=$SECONDS
stage_done() { log "$1 done ($((SECONDS - T0)) s elapsed)"; }

# --------------------------------------------------------------- helpers

# logged CMD [ARGS...]: run CMD with its (verbose) output appended to
# $SETUP_LOG instead of the terminal; on failure show the end of it and die.
SETUP_LOG="$CACHE/setup.log"
logged() {
	local rc=0
	echo "+ $*" >>"$SETUP_LOG"
	"$@" >>"$SETUP_LOG" 2>&1 || rc=$?
	if [[ $rc -ne 0 ]]; then
		tail -n 30 "$SETUP_LOG" >&2
		die "'$*' failed with exit status $rc (full log: $SETUP_LOG)"
	fi
}

key_of() { printf '%s\n' "$@" | sha256sum | cut -d' ' -f1; }

# Remove a leftover temporary build directory. --one-file-system: if anything
# were still mounted inside (it cannot be, all our mounts live in private
# namespaces, but be paranoid) rm will not descend into it.
remove_tree() {
	[[ -e "$1" ]] || return 0
	log "removing $1"
	rm -rf --one-file-system -- "$1"
}


detect_mirror() {
	if [[ -n "${VIRTIO_EPF_MIRROR:-}" ]]; then
		echo "$VIRTIO_EPF_MIRROR"
		return
	fi
	# deb822 "URIs:" lines and one-line "deb [opts] URI suite..." entries.
	local uri
	uri=$(
		{
			sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n'
			sed -n 's/^[[:space:]]*deb[[:space:]]\+\(\[[^]]*\][[:space:]]*\)\{0,1\}\([^[:space:]]\+\).*/\2/p' \
				/etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
		} | grep -E '^https?://[^ ]*/debian/?$' | head -n1
	) || true
	echo "${uri:-http://deb.debian.org/debian}"
}

# ------------------------------------------------------------ host tools

ensure_host_tools() {
	local t
	for t in unshare chroot flock gzip sha256sum; do
		command -v "$t" >/dev/null ||
			die "host tool '$t' is missing (it is part of every Debian base system; install util-linux/coreutils/gzip)"
	done
	if command -v debootstrap >/dev/null; then
		return
	fi
	log "installing debootstrap on the host (apt-get)"
	# Try with the existing package lists first: apt-get update is slow and
	# only needed on a machine whose lists are missing or stale.
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap \
		>>"$SETUP_LOG" 2>&1; then
		log "apt-get install failed; running apt-get update and retrying"
		logged apt-get update -q
		logged env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
	fi
	command -v debootstrap >/dev/null || die "debootstrap still not found after installing it"
}

# ---------------------------------------------------------------- chroot

CHROOT_KEY=$(key_of "v$SETUP_VERSION" "${QEMU_PACKAGES[*]}" "${GUEST_PACKAGES[*]}")
CHROOT_KEY_FILE=etc/virtio-epf-chroot.key # inside the chroot

version_ge() { # version_ge A B: A >= B (dotted numeric)
	[[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]
}

build_chroot() {
	if [[ $FORCE -eq 0 && -f "$CHROOT/$CHROOT_KEY_FILE" && "$(cat "$CHROOT/$CHROOT_KEY_FILE")" == "$CHROOT_KEY" ]]; then
		log "chroot $CHROOT is up to date"
		return
	fi
	local tmp="$CACHE/chroot.tmp" mirror
	mirror=$(detect_mirror)
	remove_tree "$tmp"

	log "debootstrap --variant=minbase trixie $tmp $mirror (about a minute)"
	# In a private namespace too: debootstrap mounts /proc and /sys in the
	# target itself, and would leave them mounted if killed.
	logged unshare --mount --propagation private -- \
		debootstrap --variant=minbase trixie "$tmp" "$mirror"

	log "configuring apt in the chroot (trixie, trixie-updates, trixie-backports)"
	rm -f "$tmp/etc/apt/sources.list"
	cat >"$tmp/etc/apt/sources.list.d/debian.sources" <<-EOF
		Types: deb
		URIs: $mirror
		Suites: trixie trixie-updates trixie-backports
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
	EOF
	cat >"$tmp/etc/apt/apt.conf.d/90virtio-epf" <<-'EOF'
		APT::Install-Recommends "false";
		APT::Install-Suggests "false";
		Acquire::Languages "none";
		Dpkg::Use-Pty "false";
	EOF
	# Never start services while installing packages into the chroot.
	printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
	chmod 0755 "$tmp/usr/sbin/policy-rc.d"

	log "apt-get update in the chroot"
	logged chroot_run "$tmp" -- apt-get update -q
	log "installing guest tools: ${GUEST_PACKAGES[*]}"
	logged chroot_run "$tmp" -- apt-get install -y -q --no-install-recommends "${GUEST_PACKAGES[@]}"
	log "installing ${QEMU_PACKAGES[*]} from trixie-backports"
	logged chroot_run "$tmp" -- apt-get install -y -q --no-install-recommends \
		-t trixie-backports "${QEMU_PACKAGES[@]}"
	logged chroot_run "$tmp" -- apt-get clean

	log "checking QEMU"
	local ver
	ver=$(chroot_run "$tmp" -- qemu-system-x86_64 --version | head -n1)
	log "  $ver"
	[[ $ver =~ version\ ([0-9]+\.[0-9]+) ]] || die "cannot parse QEMU version from '$ver'"
	version_ge "${BASH_REMATCH[1]}" "$QEMU_MIN_VERSION" ||
		die "QEMU ${BASH_REMATCH[1]} is older than $QEMU_MIN_VERSION (no vfio-user-pci); is trixie-backports reachable?"
	chroot_run "$tmp" -- qemu-system-x86_64 -device help | grep -q '"vfio-user-pci"' ||
		die "QEMU in the chroot does not list the vfio-user-pci device"
	log "  vfio-user-pci: available"

	# Mount point for run-guest.sh/chroot_run (tmpfs over it at run time).
	mkdir -p "$tmp$NS_DIR" "$tmp/usr/lib/modules"
	echo "$CHROOT_KEY" >"$tmp/$CHROOT_KEY_FILE"

	# The kernels and initramfs images are derived from the chroot: invalidate them.
	remove_tree "$KERNEL_DIR"
	remove_tree "$BPO_KERNEL_DIR"
	rm -f "$INITRAMFS" "$STAMP" "$BPO_INITRAMFS" "$BPO_STAMP"
	if [[ -e "$CHROOT" ]]; then
		mv -T "$CHROOT" "$CACHE/chroot.old"
	fi
	mv -T "$tmp" "$CHROOT"
	remove_tree "$CACHE/chroot.old"
}

# ---------------------------------------------------------------- kernel

# check_kernel_config PKG CONFIG: these must be built in for the initramfs to work.
check_kernel_config() {
	local opt
	[[ -f $2 ]] || die "$1: no kernel config ($2)"
	for opt in CONFIG_VIRTIO_PCI=y CONFIG_PCI_MSI=y CONFIG_VIRTIO_CONSOLE=y CONFIG_DEVTMPFS=y; do
		grep -qx "$opt" "$2" || die "$1: expected $opt in its config"
	done
}

# depmod_tree DIR REL: depmod (the host has none) from the chroot for the
# unpacked kernel in DIR. It looks for <base>/lib/modules, the packages ship
# usr/lib/modules (merged /usr).
depmod_tree() {
	log "depmod -b for $2"
	ln -s usr/lib "$1/lib"
	logged chroot_run "$CHROOT" --bind "$1:$NS_DIR/kernel" -- depmod -b "$NS_DIR/kernel" "$2"
	[[ -s "$1/usr/lib/modules/$2/modules.dep" ]] || die "depmod produced no modules.dep"
}

build_kernel() {
	if [[ $FORCE -eq 0 && -f "$KERNEL_DIR/.stamp" && "$(cat "$KERNEL_DIR/.stamp")" == "$CHROOT_KEY" ]]; then
		log "kernel $(cat "$KERNEL_DIR/release") is up to date"
		return
	fi
	local tmp="$CACHE/kernel.tmp" pkg rel
	remove_tree "$tmp"
	mkdir -p "$tmp"

	# linux-image-amd64 is a metapackage; its Depends names the real,
	# versioned package (from trixie: backports has priority 100 only).
	pkg=$(chroot_run "$CHROOT" -- apt-cache depends --important linux-image-amd64 |
		grep -o 'linux-image-6\.12\.[^ ]*-amd64' | head -n1) ||
		die "cannot find a linux-image-6.12.*-amd64 package behind linux-image-amd64 in trixie"
	log "downloading and unpacking $pkg"
	# (download dir owned by _apt: apt drops privileges to fetch)
	logged chroot_run "$CHROOT" --bind "$tmp:$NS_DIR/kernel" -- /bin/sh -ec "
		install -d -o _apt $NS_DIR/dl
		cd $NS_DIR/dl
		apt-get download -q $pkg
		dpkg-deb -x ${pkg}_*.deb $NS_DIR/kernel
	"
	rel=$(find "$tmp/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sed 's/^vmlinuz-//' | head -n1)
	[[ -n $rel ]] || die "no boot/vmlinuz-* in $pkg"
	[[ -d "$tmp/usr/lib/modules/$rel" ]] || die "no usr/lib/modules/$rel in $pkg"

	check_kernel_config "$pkg" "$tmp/boot/config-$rel"
	depmod_tree "$tmp" "$rel"

	ln -s "boot/vmlinuz-$rel" "$tmp/vmlinuz"
	echo "$rel" >"$tmp/release"
	echo "$pkg" >"$tmp/package"
	echo "$CHROOT_KEY" >"$tmp/.stamp"
	rm -f "$INITRAMFS"
	remove_tree "$KERNEL_DIR"
	mv -T "$tmp" "$KERNEL_DIR"
}

# ------------------------------------------------------ backports kernel

BPO_KERNEL_KEY=$(key_of "bpo-v$BPO_VERSION" "$CHROOT_KEY")

# trixie-backports' linux-image-amd64 (7.x). Unlike trixie's, it is split:
# linux-image-REL is a stub that depends on linux-binary-REL (the kernel, at
# usr/lib/modules/REL/vmlinuz), linux-modules-REL (the modules) and
# linux-base-REL (config, modules.builtin, modules.order). All of
# linux-image-REL's linux-*-REL dependencies are unpacked into one tree.
build_kernel_bpo() {
	if [[ $FORCE -eq 0 && -f "$BPO_KERNEL_DIR/.stamp" && "$(cat "$BPO_KERNEL_DIR/.stamp")" == "$BPO_KERNEL_KEY" ]]; then
		log "backports kernel $(cat "$BPO_KERNEL_DIR/release") is up to date"
		return
	fi
	local tmp="$CACHE/kernel-bpo.tmp" ver pkg rel deps dep moddir vmlinuz
	local -a pkgs=()
	remove_tree "$tmp"
	mkdir -p "$tmp"

	ver=$(chroot_run "$CHROOT" -- apt-cache -t trixie-backports policy linux-image-amd64 |
		awk '/Candidate:/ { print $2 }')
	[[ $ver == *bpo* ]] ||
		die "linux-image-amd64 has no trixie-backports candidate (got '$ver'; are trixie-backports' lists in the chroot?)"
	pkg=$(chroot_run "$CHROOT" -- apt-cache depends --important "linux-image-amd64=$ver" |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
	[[ -n $pkg ]] || die "cannot tell which linux-image-* linux-image-amd64 $ver depends on"
	rel=${pkg#linux-image-}
	deps=$(chroot_run "$CHROOT" -- apt-cache depends --important "$pkg" | awk '$1 == "Depends:" { print $2 }')
	pkgs=("$pkg")
	for dep in $deps; do
		if [[ $dep == linux-*-"$rel" ]]; then pkgs+=("$dep"); fi
	done
	log "downloading and unpacking ${pkgs[*]} (trixie-backports linux-image-amd64 $ver)"
	# shellcheck disable=SC2016 # the script is for the chroot's sh
	logged chroot_run "$CHROOT" --bind "$tmp:$NS_DIR/kernel" -- /bin/sh -ec '
		ns=$1; shift
		install -d -o _apt "$ns/dl"
		cd "$ns/dl"
		apt-get download -q "$@"
		for deb in *.deb; do dpkg-deb -x "$deb" "$ns/kernel"; done
	' sh "$NS_DIR" "${pkgs[@]}"

	moddir="usr/lib/modules/$rel"
	[[ -d "$tmp/$moddir/kernel" ]] || die "no $moddir/kernel in ${pkgs[*]}"
	# The kernel image: split packages put it next to the modules, unsplit ones in /boot.
	vmlinuz=$moddir/vmlinuz
	[[ -f "$tmp/$vmlinuz" ]] || vmlinuz=boot/vmlinuz-$rel
	[[ -f "$tmp/$vmlinuz" ]] || die "no $moddir/vmlinuz nor boot/vmlinuz-$rel in ${pkgs[*]}"
	if [[ -f "$tmp/$moddir/config" ]]; then
		check_kernel_config "$pkg" "$tmp/$moddir/config"
	else
		check_kernel_config "$pkg" "$tmp/boot/config-$rel"
	fi
	# module_load_order needs it to tell built-in modules from missing ones.
	[[ -f "$tmp/$moddir/modules.builtin" ]] || die "no $moddir/modules.builtin in ${pkgs[*]}"
	depmod_tree "$tmp" "$rel"

	ln -s "$vmlinuz" "$tmp/vmlinuz"
	echo "$rel" >"$tmp/release"
	printf '%s\n' "${pkgs[@]}" >"$tmp/package"
	echo "$BPO_KERNEL_KEY" >"$tmp/.stamp"
	rm -f "$BPO_INITRAMFS"
	remove_tree "$BPO_KERNEL_DIR"
	mv -T "$tmp" "$BPO_KERNEL_DIR"
}

# ------------------------------------------------------------- initramfs

# Prints the module files (relative to the modules dir) needed for the
# given module names, dependencies first, using modules.dep.
module_load_order() {
	local moddir=$1
	shift
	local -A dep=() file=() seen=()
	local -a order=()
	local line f n
	while IFS= read -r line; do
		f=${line%%:*}
		n=${f##*/}
		n=${n%%.ko*}
		n=${n//-/_}
		file[$n]=$f
		dep[$n]=${line#*:}
	done <"$moddir/modules.dep"
	visit() {
		local m=${1//-/_} d
		[[ -n ${seen[$m]:-} ]] && return 0
		seen[$m]=1
		if [[ -z ${file[$m]:-} ]]; then
			grep -q "/$m\.ko" "$moddir/modules.builtin" && return 0
			die "module $m is neither in modules.dep nor built in"
		fi
		for d in ${dep[$m]}; do
			d=${d##*/}
			visit "${d%%.ko*}"
		done
		order+=("${file[$m]}")
	}
	for n in "$@"; do visit "$n"; done
	printf '%s\n' "${order[@]}"
}

# build_initramfs KERNEL_DIR OUT: the initramfs for the kernel in KERNEL_DIR.
build_initramfs() {
	local kdir=$1 out=$2 rel tmp="${2%.cpio.gz}.build" moddir f n
	rel=$(cat "$kdir/release")
	moddir="$kdir/usr/lib/modules/$rel"
	remove_tree "$tmp"
	log "building $out (busybox + ${INITRAMFS_MODULES[*]} + deps of $rel)"

	mkdir -p "$tmp"/{bin,sbin,etc,proc,sys,dev,lib/modules,ro,rw,newroot}
	cp "$CHROOT/usr/bin/busybox" "$tmp/bin/busybox"
	# Make sure it is really the static one: the initramfs has no libc, and
	# only dynamically linked ELF files have an .interp section.
	if LC_ALL=C grep -qa '\.interp' "$tmp/bin/busybox"; then
		die "$CHROOT/usr/bin/busybox is dynamically linked (busybox-static expected)"
	fi
	for n in $(chroot "$CHROOT" /usr/bin/busybox --list); do
		[[ $n == busybox ]] || ln -s busybox "$tmp/bin/$n"
	done
	install -m 0755 "$HARNESS_DIR/guest-init.sh" "$tmp/init"
	# The kernel opens /dev/console for /init before devtmpfs is mounted.
	mknod -m 0600 "$tmp/dev/console" c 5 1 2>/dev/null || true

	# busybox insmod cannot read .ko.xz: store them decompressed, flat, and
	# list them in dependency order for /init.
	local mods
	mods=$(module_load_order "$moddir" "${INITRAMFS_MODULES[@]}")
	: >"$tmp/etc/modules.order"
	while IFS= read -r f; do
		n=${f##*/}
		case $n in
		*.ko) cp "$moddir/$f" "$tmp/lib/modules/$n" ;;
		*.ko.xz)
			n=${n%.xz}
			chroot "$CHROOT" /usr/bin/xz -dc <"$moddir/$f" >"$tmp/lib/modules/$n"
			;;
		*) die "unsupported module compression: $f" ;;
		esac
		echo "$n" >>"$tmp/etc/modules.order"
	done <<<"$mods"
	log "  modules: $(paste -sd' ' "$tmp/etc/modules.order")"

	# The host has no cpio: use the chroot's (GNU cpio, newc format).
	chroot_run "$CHROOT" --bind "$tmp:$NS_DIR/initramfs" -- /bin/sh -ec "
		cd $NS_DIR/initramfs
		find . -print0 | LC_ALL=C sort -z | cpio --null --create --format=newc --owner=0:0 --quiet
	" | gzip -9n >"$out.tmp"
	mv -f "$out.tmp" "$out"
	rm -rf --one-file-system -- "$tmp"
	log "  $(du -h "$out" | cut -f1) $out"
}

# ------------------------------------------------------------------ main

log "cache: $CACHE (detailed log: $SETUP_LOG)"
: >"$SETUP_LOG"
ensure_host_tools
# The chroot, the default kernel and its initramfs: only if their stamp is stale.
if [[ $FORCE -eq 0 ]] && base_cache_is_complete; then
	log "chroot, kernel $(cat "$KERNEL_DIR/release") and initramfs are up to date"
else
	rm -f "$STAMP" "$BPO_STAMP"
	build_chroot
	stage_done "chroot"
	build_kernel
	stage_done "kernel"
	build_initramfs "$KERNEL_DIR" "$INITRAMFS"
	stage_done "initramfs"
	qemu_ver=$(chroot_run "$CHROOT" -- qemu-system-x86_64 --version | head -n1 | grep -o 'version [^ ]*')
	printf '%s\nkernel %s\nqemu %s\n' "$(setup_key)" "$(cat "$KERNEL_DIR/release")" "${qemu_ver#version }" >"$STAMP.tmp"
	mv -f "$STAMP.tmp" "$STAMP"
fi

# The backports kernel and its initramfs.
rm -f "$BPO_STAMP"
build_kernel_bpo
stage_done "backports kernel"
build_initramfs "$BPO_KERNEL_DIR" "$BPO_INITRAMFS"
stage_done "backports initramfs"
printf '%s\nkernel %s\n' "$(bpo_key)" "$(cat "$BPO_KERNEL_DIR/release")" >"$BPO_STAMP.tmp"
mv -f "$BPO_STAMP.tmp" "$BPO_STAMP"
log "setup complete in $((SECONDS - T0)) s: kernel $(cat "$KERNEL_DIR/release"), bpo kernel $(cat "$BPO_KERNEL_DIR/release"), $(sed -n 3p "$STAMP")"
