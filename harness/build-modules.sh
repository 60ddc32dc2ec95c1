#!/usr/bin/env bash
# Build (once per input) the out-of-tree kernel modules and tools of the
# endpoint rig for the guest kernel of the harness cache:
#   EP VM   ep/pci-ep-core.ko     the unmodified PCI endpoint core of 6.12
#                                 (pci-epc-core, pci-epc-mem, pci-epf-core,
#                                 pci-ep-cfs linked into one module by
#                                 kernel/ep-core/glue.c; Debian's kernel has
#                                 no CONFIG_PCI_ENDPOINT)
#           ep/pci-epf-test.ko    the unmodified test endpoint function
#           ep/sim-epc.ko         our controller driver (kernel/sim-epc)
#           ep/pci-epf-user.ko    our EPF handing a function to one process
#                                 (kernel/epf-user, /dev/epf-user-<name>)
#           ep/epf-user-test      its test tool (kernel/epf-user/tools)
#   host VM host/pci_endpoint_test.ko  the unmodified host-side test driver
#           host/pcitest          tools/pci/pcitest.c, built against trixie's libc
#           host/epf-user-host.ko, host/epf-user-buf  host side of the
#                                 pci-epf-user rig test (kernel/epf-user/rig-test.sh)
# Load order in the EP VM: insmod pci-ep-core.ko; insmod pci-epf-test.ko
# and/or pci-epf-user.ko; insmod sim-epc.ko [dma=slave|memcpy|none]
# (configfs must be loaded first: modprobe configfs).
#
# Sources are taken from trixie's linux-source-6.12 (the exact source of the
# guest kernel) at build time and never stored in the repository; the modules
# are built against linux-headers-<release> inside the cache chroot.
#
# Output: $CACHE/modules/<key>/{ep,host}/ plus BUILD_INFO; the directory is the
# last line on stdout (all logging goes to stderr). <key> hashes the kernel
# release, this script and every file under kernel/, so a build happens only
# when one of them changed; it is made in <key>.tmp and renamed into place.
# Holds $CACHE/.lock exclusively while it installs packages or builds (as
# setup.sh does), so it never changes the chroot under a running guest.
#
# Usage: harness/build-modules.sh [--force]   build if needed, print the output dir
#        harness/build-modules.sh --tools     print a directory with checkpatch.pl
#                                             (+ spelling.txt, const_structs.checkpatch)
#        harness/build-modules.sh --check-api-drift
#                compile-only check of kernel/epf-user against the newest
#                linux-headers-*-amd64 of trixie-backports (7.x; installed into
#                the chroot on first use), W=1, warnings in our code fail; cached
#                under $CACHE/modules/api-drift-<key> (<key>: those headers'
#                version, this script, kernel/epf-user); prints the headers'
#                version. Nothing is run or loaded: no 7.x kernel boots here.
# Environment: VIRTIO_EPF_CACHE.
#
# Timing on the 2-core reference machine (measured): cold about 85 s (apt-get
# install of linux-source-6.12, linux-headers, gcc, make, libc6-dev into the
# chroot 57 s; extracting the sources from the tarball twice, for --tools and
# for the build, 8 s; compiling all modules and pcitest about 20 s); rebuild
# after a change under kernel/ about 20 s; warm (key unchanged) 0.2 s.
#
# sim-epc.ko cannot be rmmod'ed while bound: the 6.12 core's configfs group of
# each EPC holds a reference on the EPC driver module (pci_epc_get() in
# pci_ep_cfs_add_epc_group()). Unbind the device first:
#   echo 0000:01:00.0 >/sys/bus/pci/drivers/sim-epc/unbind; rmmod sim_epc

set -Eeuo pipefail
# shellcheck disable=SC2034 # used by log()/die() in lib.sh
LOG_TAG=build-modules
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

trap 'die "command failed (exit $?) at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND"' ERR

MODE=build FORCE=0
case "${1:-}" in
"") ;;
--force) FORCE=1 ;;
--tools) MODE=tools ;;
--check-api-drift) MODE=drift ;;
-h | --help)
	sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
	exit 0
	;;
*) die "unknown argument '$1' (usage: $0 [--force|--tools|--check-api-drift])" ;;
esac

[[ $EUID -eq 0 ]] || die "must run as root (chroot and unshare need it)"

REPO_DIR=$(cd "$HARNESS_DIR/.." && pwd)
KSRC_DIR="$REPO_DIR/kernel"
MOD_CACHE="$CACHE/modules"
SRC_PKG=linux-source-6.12
SRC_TARBALL=/usr/src/linux-source-6.12.tar.xz
SELF_SHA=$(sha256sum <"${BASH_SOURCE[0]}" | cut -d' ' -f1)
BUILD_LOG="$MOD_CACHE/build.log"

# Identifies one build: kernel release, this script, all of kernel/.
modules_key() {
	local rel=$1 f
	{
		echo "release=$rel"
		echo "script=$SELF_SHA"
		(cd "$KSRC_DIR" && find . -type f -print0 | LC_ALL=C sort -z |
			while IFS= read -r -d '' f; do
				printf '%s %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$f"
			done)
	} | sha256sum | cut -d' ' -f1
}

# chroot_run: see lib.sh.

# logged CMD...: output to $BUILD_LOG; on failure show its end and die.
logged() {
	local rc=0
	echo "+ $*" >>"$BUILD_LOG"
	"$@" >>"$BUILD_LOG" 2>&1 || rc=$?
	if [[ $rc -ne 0 ]]; then
		tail -n 40 "$BUILD_LOG" >&2
		die "'$*' failed with exit status $rc (full log: $BUILD_LOG)"
	fi
}

remove_tree() {
	[[ -e "$1" ]] || return 0
	rm -rf --one-file-system -- "$1"
}

# ------------------------------------------------------------ API drift

is_installed() {
	[[ "$(chroot "$CHROOT" /usr/bin/dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# The 7.x headers package of trixie-backports that linux-headers-amd64
# points to there, e.g. linux-headers-7.3.4+deb13-amd64.
drift_headers_pkg() {
	local v
	v=$(chroot "$CHROOT" apt-cache -t trixie-backports policy linux-headers-amd64 |
		awk '/Candidate:/ { print $2 }')
	[[ -n $v && $v != "(none)" ]] || return 1
	chroot "$CHROOT" apt-cache depends "linux-headers-amd64=$v" |
		awk '/Depends: linux-headers-[0-9]/ { print $2; exit }'
}

# drift_out PKG: the cache directory of the check against installed PKG.
drift_out() {
	local ver f
	ver=$(chroot "$CHROOT" /usr/bin/dpkg-query -W -f='${Version}' "$1")
	printf '%s/api-drift-%s\n' "$MOD_CACHE" "$({
		echo "headers=$1 $ver"
		echo "script=$SELF_SHA"
		(cd "$KSRC_DIR/epf-user" && find . -maxdepth 1 -type f -print0 | LC_ALL=C sort -z |
			while IFS= read -r -d '' f; do
				printf '%s %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$f"
			done)
	} | sha256sum | cut -d' ' -f1)"
}

check_api_drift() {
	local pkg=$1 ver out tmp kdir
	if ! is_installed "$pkg"; then
		log "installing $pkg in the chroot"
		local inst=(apt-get install -y -q --no-install-recommends -t trixie-backports "$pkg")
		if ! chroot_run "$CHROOT" -- "${inst[@]}" >>"$BUILD_LOG" 2>&1; then
			logged chroot_run "$CHROOT" -- apt-get update -q
			logged chroot_run "$CHROOT" -- "${inst[@]}"
		fi
		logged chroot_run "$CHROOT" -- apt-get clean
		is_installed "$pkg" || die "$pkg is still not installed in the chroot"
	fi
	ver=$(chroot "$CHROOT" /usr/bin/dpkg-query -W -f='${Version}' "$pkg")
	out=$(drift_out "$pkg")
	if [[ ! -f $out/RESULT ]]; then
		tmp="$out.tmp"
		remove_tree "$tmp"
		mkdir -p "$tmp/epf-user"
		cp "$KSRC_DIR"/epf-user/{Kbuild,pci-epf-user.c,pci-epf-user.h,compat.h} "$tmp/epf-user/"
		kdir="/usr/src/$pkg"
		[[ -d $CHROOT$kdir ]] || die "no $kdir in the chroot"
		# Compile only: the 7.x endpoint core is not built, so its symbols
		# stay unresolved (modpost warnings, not errors).
		logged chroot_run "$CHROOT" --bind "$tmp:$NS_DIR/b" -- \
			make -C "$kdir" -j"$(nproc)" W=1 KBUILD_MODPOST_WARN=1 M="$NS_DIR/b/epf-user" modules
		# (7.x's kbuild prints paths of external modules relative to M=)
		if grep -E '^([^ ]*/)?(pci-epf-user\.[ch]|compat\.h):[0-9]+:[0-9]+: (warning|error):' "$BUILD_LOG" >&2; then
			die "compiler warnings in kernel/epf-user against $pkg (see above)"
		fi
		[[ -f $tmp/epf-user/pci-epf-user.ko ]] || die "no pci-epf-user.ko built against $pkg"
		echo "pci-epf-user compiles against $pkg $ver (W=1, no warnings)" >"$tmp/RESULT"
		remove_tree "$out"
		mv -T "$tmp" "$out"
		log "API drift check built in $((SECONDS - T0)) s"
	fi
	cat "$out/RESULT"
}
# ------------------------------------------------------------------ setup

if ! cache_is_complete; then
	log "cache $CACHE missing or outdated: running setup.sh"
	"$HARNESS_DIR/setup.sh" >&2 || die "setup.sh failed"
fi
REL=$(cat "$KERNEL_DIR/release")
KEY=$(modules_key "$REL")
OUT="$MOD_CACHE/$KEY"
TOOLS="$MOD_CACHE/tools-$REL"

if [[ $MODE == build && $FORCE -eq 0 && -f "$OUT/BUILD_INFO" ]]; then
	log "modules for $REL up to date"
	echo "$OUT"
	exit 0
fi
if [[ $MODE == tools && -f "$TOOLS/checkpatch.pl" ]]; then
	echo "$TOOLS"
	exit 0
fi
# --check-api-drift: answered from the cache without the lock when it can be;
# otherwise it takes the lock below (it may install into the chroot).
if [[ $MODE == drift ]]; then
	DRIFT_PKG=$(drift_headers_pkg) || die "no linux-headers-amd64 in trixie-backports (apt-get update in the chroot?)"
	[[ -n $DRIFT_PKG ]] || die "cannot tell which headers linux-headers-amd64 of trixie-backports depends on"
	if is_installed "$DRIFT_PKG" && [[ -f "$(drift_out "$DRIFT_PKG")/RESULT" ]]; then
		cat "$(drift_out "$DRIFT_PKG")/RESULT"
		exit 0
	fi
fi

mkdir -p "$MOD_CACHE"
# Exclusive: we install packages into the chroot that guests use as root fs.
# (setup.sh must not be running under us either; it was called above,
# before we hold the lock, since it takes the same lock itself.)
exec 9>"$LOCK"
if ! flock -n -x 9; then
	log "waiting for the lock on $CACHE (a setup or a running guest)..."
	flock -x 9
fi
cache_is_complete || die "cache $CACHE changed while waiting for its lock; run harness/setup.sh"
[[ "$(cat "$KERNEL_DIR/release")" == "$REL" ]] || die "kernel release changed while waiting for the lock; run again"
: >"$BUILD_LOG"
T0=$SECONDS

# ----------------------------------------------------------- chroot packages

HDR_PKG="linux-headers-$REL"
ensure_packages() {
	local -a missing=() p
	for p in "$SRC_PKG" "$HDR_PKG" gcc make libc6-dev perl xz-utils; do
		is_installed "$p" || missing+=("$p")
	done
	[[ ${#missing[@]} -gt 0 ]] || return 0
	log "installing in the chroot: ${missing[*]}"
	# The package lists may be stale or gone (apt-get clean keeps them, but a
	# point release replaces the versioned headers package): update once if
	# the first attempt fails. -t trixie-backports: the headers' build
	# dependencies must agree with the backported elfutils already in the
	# chroot (QEMU's); the source package exists in trixie only.
	local inst=(apt-get install -y -q --no-install-recommends -t trixie-backports "${missing[@]}")
	if ! chroot_run "$CHROOT" -- "${inst[@]}" >>"$BUILD_LOG" 2>&1; then
		log "apt-get install failed; apt-get update and retry"
		logged chroot_run "$CHROOT" -- apt-get update -q
		logged chroot_run "$CHROOT" -- "${inst[@]}"
	fi
	logged chroot_run "$CHROOT" -- apt-get clean
	for p in "${missing[@]}"; do
		is_installed "$p" || die "$p is still not installed in the chroot"
	done
	log "packages installed ($((SECONDS - T0)) s)"
}
ensure_packages
[[ -d "$CHROOT/usr/src/$HDR_PKG" ]] || die "no /usr/src/$HDR_PKG in the chroot"
# The source must be the guest kernel's: same Debian version as the image.
SRC_VER=$(chroot "$CHROOT" /usr/bin/dpkg-query -W -f='${Version}' "$SRC_PKG")
HDR_VER=$(chroot "$CHROOT" /usr/bin/dpkg-query -W -f='${Version}' "$HDR_PKG")
[[ $SRC_VER == "$HDR_VER" ]] ||
	die "$SRC_PKG is $SRC_VER but $HDR_PKG is $HDR_VER: the source does not match the guest kernel"

# Files taken from the kernel source tarball.
SRC_FILES=(
	drivers/pci/endpoint
	drivers/misc/pci_endpoint_test.c
	drivers/dma/dmaengine.h
	drivers/dma/virt-dma.h
	include/uapi/linux/pcitest.h
	tools/pci/pcitest.c
	scripts/checkpatch.pl
	scripts/spelling.txt
	scripts/const_structs.checkpatch
)
# extract DIR: SRC_FILES of the tarball into DIR/src (paths kept).
extract_sources() {
	mkdir -p "$1/src"
	logged chroot_run "$CHROOT" --bind "$1:$NS_DIR/b" -- \
		tar -xJf "$SRC_TARBALL" -C "$NS_DIR/b/src" --strip-components=1 \
		"${SRC_FILES[@]/#/linux-source-6.12/}"
}

if [[ $MODE == drift ]]; then
	check_api_drift "$DRIFT_PKG"
	exit 0
fi

# ------------------------------------------------------------------ tools

if [[ $MODE == tools || ! -f "$TOOLS/checkpatch.pl" ]]; then
	tmp="$TOOLS.tmp"
	remove_tree "$tmp"
	mkdir -p "$tmp"
	extract_sources "$tmp"
	mv "$tmp"/src/scripts/{checkpatch.pl,spelling.txt,const_structs.checkpatch} "$tmp/"
	remove_tree "$tmp/src"
	echo "$SRC_PKG $SRC_VER" >"$tmp/VERSION"
	remove_tree "$TOOLS"
	mv -T "$tmp" "$TOOLS"
	if [[ $MODE == tools ]]; then
		echo "$TOOLS"
		exit 0
	fi
fi

# ------------------------------------------------------------------ build

TMP="$OUT.tmp"
remove_tree "$TMP"
mkdir -p "$TMP"
log "building modules for $REL in $TMP"
extract_sources "$TMP"
S="$TMP/src"
B="$TMP/build"
mkdir -p "$B"/{ep-core,epf-test,sim-epc,host,pcitest,epf-user,epf-user-host,epf-user-tools}

# Endpoint core: four unmodified files + our glue (one module).
cp "$KSRC_DIR"/ep-core/* "$B/ep-core/"
cp "$S"/drivers/pci/endpoint/{pci-epc-core.c,pci-epc-mem.c,pci-epf-core.c,pci-ep-cfs.c} "$B/ep-core/"
cp "$KSRC_DIR"/epf-test/* "$B/epf-test/"
cp "$S/drivers/pci/endpoint/functions/pci-epf-test.c" "$B/epf-test/"
cp "$KSRC_DIR"/sim-epc/* "$B/sim-epc/"
cp "$S"/drivers/dma/{dmaengine.h,virt-dma.h} "$B/sim-epc/"
cp "$KSRC_DIR"/host/* "$B/host/"
cp "$S/drivers/misc/pci_endpoint_test.c" "$B/host/"
mkdir -p "$B/pcitest/linux"
cp "$S/include/uapi/linux/pcitest.h" "$B/pcitest/linux/"
cp "$S/tools/pci/pcitest.c" "$B/pcitest/"
cp "$KSRC_DIR"/epf-user/{Kbuild,pci-epf-user.c,pci-epf-user.h,compat.h} "$B/epf-user/"
cp "$KSRC_DIR"/epf-user/host/* "$B/epf-user-host/"
cp "$KSRC_DIR"/epf-user/tools/*.c "$KSRC_DIR/epf-user/pci-epf-user.h" "$B/epf-user-tools/"

KDIR="/usr/src/$HDR_PKG"
NB="$NS_DIR/b/build"
JOBS=$(nproc)
# One chroot session for the whole build. The modules that use the endpoint
# core resolve its symbols (and their CRCs: MODVERSIONS) through its
# Module.symvers.
logged chroot_run "$CHROOT" --bind "$TMP:$NS_DIR/b" -- /bin/bash -Eeuo pipefail -c "
	mk() { make -C $KDIR -j$JOBS W=1 \"\$@\" modules; }
	mk M=$NB/ep-core
	mk M=$NB/epf-test KBUILD_EXTRA_SYMBOLS=$NB/ep-core/Module.symvers
	mk M=$NB/sim-epc KBUILD_EXTRA_SYMBOLS=$NB/ep-core/Module.symvers
	mk M=$NB/host
	mk M=$NB/epf-user KBUILD_EXTRA_SYMBOLS=$NB/ep-core/Module.symvers
	mk M=$NB/epf-user-host
	gcc -O2 -Wall -I$NB/pcitest -o $NB/pcitest/pcitest $NB/pcitest/pcitest.c
	for t in epf-user-test epf-user-buf; do
		gcc -O2 -Wall -Wextra -I$NB/epf-user-tools -o $NB/epf-user-tools/\$t $NB/epf-user-tools/\$t.c
	done
	strip --strip-debug $NB/*/*.ko
"
# W=1 warnings in our own code (not in the upstream files) fail the build.
if grep -E '^[^ ]*/(sim-epc/[^ /]*|ep-core/glue\.c|ep-core/ep-core-glue\.h|epf-user[^ /]*/[^ /]*):[0-9]+:[0-9]+: (warning|error):' \
	"$BUILD_LOG" >&2; then
	die "compiler warnings in our code under kernel/ (see above)"
fi

mkdir -p "$TMP"/{ep,host}
cp "$B"/ep-core/pci-ep-core.ko "$B"/epf-test/pci-epf-test.ko "$B"/sim-epc/sim-epc.ko "$TMP/ep/"
cp "$B"/epf-user/pci-epf-user.ko "$B"/epf-user-tools/epf-user-test "$TMP/ep/"
cp "$B"/host/pci_endpoint_test.ko "$B"/pcitest/pcitest "$TMP/host/"
cp "$B"/epf-user-host/epf-user-host.ko "$B"/epf-user-tools/epf-user-buf "$TMP/host/"
for f in "$TMP"/ep/*.ko "$TMP"/host/*.ko; do
	vm=$(chroot_run "$CHROOT" --bind "$TMP:$NS_DIR/b" -- modinfo -F vermagic "$NS_DIR/b/${f#"$TMP"/}")
	[[ $vm == "$REL "* ]] || die "${f##*/}: vermagic '$vm' does not match $REL"
done
remove_tree "$S"
remove_tree "$B"
{
	echo "key $KEY"
	echo "kernel $REL"
	echo "source $SRC_PKG $SRC_VER"
	echo "headers $HDR_PKG $HDR_VER"
	echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - T0)) s"
	(cd "$TMP" && find ep host -type f | LC_ALL=C sort)
} >"$TMP/BUILD_INFO"
remove_tree "$OUT"
mv -T "$TMP" "$OUT"
log "built in $((SECONDS - T0)) s: $(cd "$OUT" && echo ep/* host/*)"
echo "$OUT"
