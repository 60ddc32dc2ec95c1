#!/bin/sh
# /init of the guest initramfs (busybox sh). Installed by harness/setup.sh;
# editing this file makes the next setup.sh / run-guest.sh rebuild the
# initramfs automatically.
#
# Contract with harness/run-guest.sh (9p mount tags):
#   root     the cache chroot, read-only -> lower layer of the guest root
#   job      the job directory, read-write -> /job
#   modules  $CACHE/kernel/usr/lib/modules, read-only -> /usr/lib/modules
# Runs /job/run.sh inside the assembled root, stdout+stderr to
# /job/output.log, its exit status to /job/exit-code, then powers off.
#
# PID 1 stays in the initramfs and the job runs in a chroot child: that way
# PID 1 always gets control back to write exit-code and power off, whatever
# the job does (background daemons, exec, killing its shell, ...).

export PATH=/bin:/sbin

msg() { echo "virtio-epf-init: $*" >/dev/console; }

# Never return: PID 1 exiting would panic the kernel, which also ends QEMU
# (panic=-1 + -no-reboot) but with a less helpful message.
halt() {
	sync
	poweroff -f
	echo o >/proc/sysrq-trigger
	sleep 5
}

fail() {
	msg "FATAL: $*"
	halt
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# In case the kernel could not give us a console (no /dev/console yet).
exec </dev/console >/dev/console 2>&1

# Dependency-ordered list of decompressed modules, written by setup.sh.
while read -r ko; do
	insmod "/lib/modules/$ko" || fail "insmod $ko failed"
done </etc/modules.order

# msize: bigger messages mean far fewer round trips for 9p reads
# (the default 8 KiB makes exec'ing binaries from the root painfully slow).
P9="trans=virtio,version=9p2000.L,msize=512000"

mkdir -p /ro /rw /newroot
# cache=loose is safe for the root: it is read-only and nobody changes the
# chroot while a guest runs; it makes the root much faster.
mount -t 9p -o "$P9,ro,cache=loose" root /ro || fail "cannot mount 9p root share"
# Writable root without touching the host: tmpfs upper layer over the
# read-only chroot, so /tmp, /var, /etc, /root are writable in the guest.
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/ro,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
	fail "cannot mount overlay root"

mkdir -p /newroot/job /newroot/usr/lib/modules
# cache=none: every write goes straight to the host file, so output.log is
# complete up to the last write even if the guest crashes.
mount -t 9p -o "$P9,cache=none" job /newroot/job || fail "cannot mount 9p job share"
# Kernel modules of the running kernel, so that modprobe works in the guest.
# (/lib is a symlink to usr/lib in trixie, so /lib/modules works too.)
mount -t 9p -o "$P9,ro,cache=loose" modules /newroot/usr/lib/modules ||
	fail "cannot mount 9p modules share"

mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
ip link set lo up 2>/dev/null || true
hostname guest

[ -f /newroot/job/run.sh ] || fail "/job/run.sh does not exist"

# The host takes the mtime of this file (created by QEMU on the host, so in
# host time) as "run.sh started" to measure boot time.
cat /newroot/proc/uptime >/newroot/job/guest-started
msg "starting /job/run.sh (guest uptime $(cut -d' ' -f1 /newroot/proc/uptime)s)"

# Clean, predictable environment for the job. Use the shebang if run.sh is
# executable, otherwise run it with bash.
chroot /newroot /usr/bin/env -i \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	HOME=/root TERM=dumb LANG=C.UTF-8 \
	/bin/sh -c 'cd /job && if [ -x run.sh ]; then exec ./run.sh; else exec /bin/bash run.sh; fi' \
	</dev/null >/newroot/job/output.log 2>&1
rc=$?

echo "$rc" >/newroot/job/exit-code
msg "run.sh exited with status $rc"
halt
