//! virtio-epf on Linux's PCI endpoint subsystem, end to end: in the EP VM the daemon runs on
//! the pci_epf_user function (`virtio-epf ... --epf NAME`) of the simulated controller; the
//! host VM binds its stock legacy virtio drivers to the function.

mod support;

use std::path::PathBuf;
use std::process::Command;
use support::{link_binary, release_binary, repo, rig_with};

/// The virtio-epf binary the EP VM runs (release build, as on a board).
fn virtio_epf() -> PathBuf {
    release_binary("virtio-epf", "virtio-epf")
}

/// EP side: the endpoint core, sim-epc (`dma=$1`), pci-epf-user, a function `$2` linked to
/// the controller, and `virtio-epf $3... --epf $2` in the background until the host is done.
const EP_DAEMON: &str = r#"
# epf_setup DMA NAME: the modules, and the pci_epf_user function NAME linked to the controller.
epf_setup() {
    modprobe configfs || return 1
    insmod /job/pci-ep-core.ko && insmod /job/sim-epc.ko dma=$1 &&
        insmod /job/pci-epf-user.ko || return 1
    mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
    local U=/sys/kernel/config/pci_ep/functions/pci_epf_user/$2
    mkdir $U && ln -s $U $C/
}
# epf_run NAME ARGS...: `virtio-epf ARGS... --epf NAME` in the background, as $DAEMON,
# returning once it serves (its function is started: a host probing before that reads
# zeroed registers) or has exited. stdin/stdout are the console's stream when
# DAEMON_IN/DAEMON_OUT say so.
epf_run() {
    local name=$1 served i
    shift
    served=$(grep -c "serving virtio device" /job/daemon.log 2>/dev/null)
    RUST_LOG=${RUST_LOG:-info} /job/virtio-epf "$@" --epf $name --stats-file /job/epf.stats \
        <"${DAEMON_IN:-/dev/null}" >>"${DAEMON_OUT:-/job/daemon.log}" 2>>/job/daemon.log &
    DAEMON=$!
    for i in $(seq 300); do
        [ "$(grep -c "serving virtio device" /job/daemon.log)" -gt "${served:-0}" ] && return 0
        kill -0 $DAEMON 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
epf_daemon() {
    local dma=$1 name=$2
    shift 2
    epf_setup $dma $name && epf_run $name "$@"
}
"#;

#[test]
fn virtio_rng_on_the_kernel_epf_reaches_the_stock_host_driver() {
    let ep = format!(
        r#"{EP_DAEMON}
# Not through `check`: that runs its command in a subshell, and DAEMON must be ours.
epf_daemon slave rng0 rng --dma-threshold 16 || {{ echo "FAIL the daemon starts"; RIG_FAILED=1; }}
wait_file /shared/host-done 900 || RIG_FAILED=1
check "the daemon is still running" kill -0 $DAEMON
kill -INT $DAEMON; wait $DAEMON
echo "daemon exit $?"
tail -5 /job/daemon.log
ep_end
"#
    );
    let host = r#"
lspci -nn -s 01:00.0
check "the host sees a transitional virtio-rng" sh -c 'lspci -n -s 01:00.0 | grep -q 1af4:1005'
modprobe virtio_rng
check "virtio-pci bound it" test -e /sys/bus/pci/devices/0000:01:00.0/driver
check "hw_random uses it" grep -q virtio /sys/class/misc/hw_random/rng_current
head -c 8192 /dev/hwrng > /tmp/a; head -c 8192 /dev/hwrng > /tmp/b
check "8 KiB of entropy" test "$(stat -c %s /tmp/a)" = 8192
check "two reads differ" sh -c '! cmp -s /tmp/a /tmp/b'
check "not zeros" sh -c '! cmp -s /tmp/a /dev/zero 2>/dev/null; [ "$(tr -d "\0" < /tmp/a | wc -c)" -gt 4000 ]'
# Ten rebinds, entropy after each: every probe sets the device up again from a reset.
D=/sys/bus/pci/drivers/virtio-pci
n=0
for i in $(seq 10); do
    echo 0000:01:00.0 > $D/unbind && echo 0000:01:00.0 > $D/bind || break
    for j in $(seq 50); do grep -q virtio /sys/class/misc/hw_random/rng_current && break; sleep 0.1; done
    got=$(timeout 60 head -c 512 /dev/hwrng | wc -c)
    echo "rebind $i: $got bytes, rng_current $(cat /sys/class/misc/hw_random/rng_current)"
    [ "$got" = 512 ] && n=$((n + 1))
done
check "entropy after each of 10 rebinds" test $n = 10
[ $n = 10 ] || dmesg | tail -30
finish
"#;
    let bin = virtio_epf();
    let r = rig_with("epf-rng", &ep, host, &[], &[&bin]);
    r.assert_ok();
    let stats = std::fs::read_to_string(r.ep_job.join("epf.stats")).unwrap_or_default();
    eprintln!("daemon counters:\n{stats}");
    // No trapped register access: the registers are plain memory the daemon polls.
    assert_eq!(r.counter("host.memory_accesses"), 0);
    // The initial probe and ten rebinds, each a reset and an activation.
    let activations: u64 = stats
        .lines()
        .find_map(|l| {
            l.strip_prefix("function: ")?
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("activations=")?.parse().ok())
        })
        .unwrap_or_else(|| panic!("no activations counter in:\n{stats}"));
    assert!(activations >= 11, "{stats}");
    assert!(r.counter("link.host_forwarded") < 100, "{}", r.stats);
    assert!(
        r.counter("link.dma_bytes") >= 8192,
        "entropy moved by DMA:\n{}",
        r.stats
    );
}

/// virtio-blk on the kernel EPF: ext4 with fsck and checksums, fio with crc32c
/// verification, then a crash: the daemon is killed with SIGKILL while the host writes and
/// flushes records in a loop, a new daemon serves the same image, the host VM reboots (its
/// old driver is stuck on the dead device) and finds every record it saw flushed.
#[test]
fn virtio_blk_on_the_kernel_epf_keeps_every_flushed_write_across_a_daemon_kill() {
    let ep = format!(
        r#"{EP_DAEMON}
truncate -s 64M /tmp/disk.img
epf_daemon slave blk0 blk --image /tmp/disk.img --serial EPF-BLK ||
    {{ echo "FAIL the daemon starts"; RIG_FAILED=1; }}
wait_file /shared/flushing 900 || RIG_FAILED=1
sleep 2
kill -9 $DAEMON; wait $DAEMON
echo "daemon killed: status $?"
epf_run blk0 blk --image /tmp/disk.img --serial EPF-BLK
sleep 1
check "the new daemon runs" kill -0 $DAEMON
signal restarted
wait_file /shared/host-done 900 || RIG_FAILED=1
check "the new daemon is still running" kill -0 $DAEMON
kill -INT $DAEMON; wait $DAEMON
echo "daemon exit $?"
grep -E "WARN|ERROR" /job/daemon.log | head -20
tail -5 /job/daemon.log
dmesg | grep -iE "dma|epf|sim-epc" | grep -iE "fail|err|refus|time" | head
ep_end
"#
    );
    let host = r#"
modprobe virtio_blk; modprobe ext4
for i in $(seq 100); do ls /sys/bus/pci/devices/0000:01:00.0/virtio*/block 2>/dev/null | grep -q vd && break; sleep 0.1; done
v=$(ls /sys/bus/pci/devices/0000:01:00.0/virtio*/block | head -1)
check "a transitional virtio-blk disk" sh -c 'lspci -n -s 01:00.0 | grep -q 1af4:1001'
check "the disk is 64 MiB" test "$(cat /sys/block/$v/size)" = 131072
check "its serial" grep -q EPF-BLK /sys/block/$v/serial
mkdir -p /mnt/t
if [ ! -e /job/rebooted ]; then
    mkfs.ext4 -q -F /dev/$v 40M || echo "FAIL mkfs"
    mount /dev/$v /mnt/t || echo "FAIL mount"
    for i in $(seq 8); do head -c $(( i * 150000 + 1234 )) /dev/urandom > /mnt/t/file$i; done
    ( cd /mnt/t && sha256sum file* ) > /shared/sums
    umount /mnt/t
    check "fsck.ext4 -fn clean" fsck.ext4 -fn /dev/$v
    mount /dev/$v /mnt/t
    check "checksums after remount" sh -c "cd /mnt/t && sha256sum -c --quiet /shared/sums"
    umount /mnt/t
    check "fio randwrite 4k crc32c verify" timeout 300 fio --name=r4k --filename=/dev/$v \
        --offset=40M --size=8M --rw=randwrite --bs=4k --direct=1 --ioengine=libaio \
        --iodepth=8 --verify=crc32c --verify_fatal=1 --output=/tmp/fio.txt
    grep -E "IOPS" /tmp/fio.txt | head -2
    mount /dev/$v /mnt/t || echo "FAIL mount for the crash"
    (
        i=0
        while true; do
            i=$((i + 1))
            head -c $(( 4096 + (i % 13) * 9000 )) /dev/urandom > /mnt/t/rec$i
            sum=$(sha256sum < /mnt/t/rec$i | cut -d' ' -f1)
            sync -f /mnt/t/rec$i || exit 1
            # Logged only once the flush completed.
            echo "$i $sum" >> /shared/flushed.log
            [ $i = 5 ] && : > /shared/flushing
        done
    ) &
    wait_file /shared/restarted 300
    sleep 1
    echo "records logged as flushed: $(wc -l < /shared/flushed.log)"
    # Whatever happened, the second boot checks what is on the disk (this boot's old
    # driver is stuck on the killed daemon's device, and so is the writer).
    touch /job/rebooted
    cp /job/output.log /job/first-boot.log
    echo b > /proc/sysrq-trigger
    sleep 30
    echo "FAIL the reboot did not happen"
    finish
fi
mount /dev/$v /mnt/t || { echo "FAIL mount after the crash"; finish; }
n=0; bad=0
while read i sum; do
    n=$((n + 1))
    [ "$(sha256sum < /mnt/t/rec$i 2>/dev/null | cut -d' ' -f1)" = "$sum" ] || { echo "record $i lost"; bad=1; }
done < /shared/flushed.log
check "all $n flushed records present and intact" test $bad = 0 -a $n -ge 5
check "files from before the crash" sh -c "cd /mnt/t && sha256sum -c --quiet /shared/sums"
umount /mnt/t
check "fsck.ext4 -fn clean after the crash" fsck.ext4 -fn /dev/$v
finish
"#;
    let bin = virtio_epf();
    let r = rig_with(
        "epf-blk",
        &ep,
        host,
        &["--host-opt", "--allow-reboot"],
        &[&bin],
    );
    let stats = std::fs::read_to_string(r.ep_job.join("epf.stats")).unwrap_or_default();
    eprintln!("daemon counters:\n{stats}");
    r.assert_ok();
    assert!(r.host.contains("ok all "), "{}", r.host);
    assert!(
        r.host.contains("ok fsck.ext4 -fn clean after the crash"),
        "{}",
        r.host
    );
    assert_eq!(r.counter("host.memory_accesses"), 0);
}

/// pci-epf-user's own rig test (kernel/epf-user/rig-test.sh): header, BARs both ways, MSI
/// and MSI-X counted on the host, events, windows and DMA onto a host buffer, hostile ioctl
/// arguments, teardown on close, kill and unlink, with eDMA-like channels and with none.
#[test]
fn the_kernel_epf_passes_its_own_rig_test_with_and_without_dma() {
    let out = Command::new(repo().join("kernel/epf-user/rig-test.sh"))
        .args(["--dma", "slave", "--dma", "none", "--link"])
        .arg(link_binary())
        .arg("--work")
        .arg(std::env::temp_dir().join(format!("epf-user-rig-{}", std::process::id())))
        .output()
        .expect("run kernel/epf-user/rig-test.sh");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rig-test.sh failed:\n{text}");
    let oks = text.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(oks >= 100, "only {oks} checks ran:\n{text}");
    assert!(!text.lines().any(|l| l.starts_with("FAIL")), "{text}");
}

/// virtio-net on the kernel EPF: the endpoint's wire is a TAP inside the EP VM (addressed
/// 10.77.0.1); the host binds its stock legacy virtio_net, pings it 100 times without loss
/// and moves 4 MiB (`VIRTIO_EPF_RIG_NET_BYTES`) each way, compared by SHA-256 at both ends,
/// with no trapped register access.
#[test]
fn virtio_net_on_the_kernel_epf_pings_and_moves_data_each_way() {
    let xfer = include_str!("../../../harness/xfer.py");
    let n: u64 = std::env::var("VIRTIO_EPF_RIG_NET_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        // 4 MiB by default: every EP access to host memory is a vfio-user round trip in the
        // rig (about 150 us), which holds TCP here to 90-180 KB/s; the issue's 64 MiB run
        // takes about 20 minutes (VIRTIO_EPF_RIG_NET_BYTES=67108864).
        .unwrap_or(4 << 20);
    // Time for both transfers: 10 minutes, plus a second per 40 KB (the rig's slowest rate).
    let xfer_secs = 600 + n / 40_000;
    let (wait_secs, vm_secs) = (xfer_secs + 300, (xfer_secs + 600).to_string());
    let dma_threshold =
        std::env::var("VIRTIO_EPF_RIG_DMA_THRESHOLD").unwrap_or_else(|_| "256".into());
    let ep = format!(
        r#"{EP_DAEMON}
cat > /tmp/xfer.py <<'PY'
{xfer}
PY
modprobe tun
epf_setup slave net0 && ip tuntap add dev tap0 mode tap vnet_hdr &&
    ip addr add 10.77.0.1/24 dev tap0 && ip link set tap0 up &&
    epf_run net0 net --tap tap0 --mac 52:54:00:ab:cd:ef --dma-threshold {dma_threshold} ||
    {{ echo "FAIL the daemon starts"; RIG_FAILED=1; }}
python3 /tmp/xfer.py serve 10.77.0.1 5001 {n} > /tmp/peer.log 2>&1 &
wait_file /shared/host-done {wait_secs} || RIG_FAILED=1
check "the daemon is still running" kill -0 $DAEMON
kill -INT $DAEMON; wait $DAEMON
echo "daemon exit $?"
cat /tmp/peer.log
tail -5 /job/daemon.log
ep_end
"#
    );
    let host = format!(
        r#"
cat > /tmp/xfer.py <<'PY'
{xfer}
PY
check "a transitional virtio-net function" sh -c 'lspci -n -s 01:00.0 | grep -q 1af4:1000'
modprobe virtio_net
for i in $(seq 100); do
    IF=$(ls /sys/bus/pci/devices/0000:01:00.0/virtio*/net 2>/dev/null | head -1)
    [ -n "$IF" ] && break
    sleep 0.1
done
check "a network interface" test -n "$IF"
check "its MAC" grep -q 52:54:00:ab:cd:ef /sys/class/net/$IF/address
ip addr add 10.77.0.2/24 dev $IF && ip link set $IF up
ping -c 3 -W 5 10.77.0.1 > /dev/null
ping -c 100 -i 0.05 -W 5 10.77.0.1 > /tmp/ping.txt
tail -2 /tmp/ping.txt
check "100 pings, none lost" grep -q " 0% packet loss" /tmp/ping.txt
timeout {xfer_secs} python3 /tmp/xfer.py connect 10.77.0.1 5001 {n} || echo "FAIL the transfers"
finish
"#
    );
    let bin = virtio_epf();
    let r = rig_with("epf-net", &ep, &host, &["--timeout", &vm_secs], &[&bin]);
    let stats = std::fs::read_to_string(r.ep_job.join("epf.stats")).unwrap_or_default();
    eprintln!("daemon counters:\n{stats}");
    r.assert_ok();
    let sha = |out: &str, prefix: &str| -> String {
        let l = out
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{out}"));
        assert!(l.contains(&format!(" bytes={n} ")), "{l}");
        l.split_whitespace()
            .find_map(|kv| kv.strip_prefix("sha256="))
            .unwrap()
            .to_string()
    };
    assert_eq!(
        sha(&r.host, "guest-sent"),
        sha(&r.ep, "peer-recv"),
        "host -> endpoint"
    );
    assert_eq!(
        sha(&r.ep, "peer-sent"),
        sha(&r.host, "guest-recv"),
        "endpoint -> host"
    );
    assert_eq!(r.counter("host.memory_accesses"), 0);
}

/// virtio-console on the kernel EPF (two queues): a mebibyte each way through the host's
/// stock virtio_console (hvc0, raw), byte-identical, then the life of the function, with
/// text both ways after every step: the daemon killed with SIGKILL and started again while the host runs (the host
/// rebinds its driver), the host rebooted while it writes, then, with the host VM shut down
/// (its QEMU keeps the BARs it mapped for as long as it runs: the rig cannot revoke them),
/// pci-epf-user unloaded and loaded again, and a new host VM binds the function. The
/// daemon must not gain descriptors, the endpoint core must be free of pci-epf-user once it
/// is unloaded, and the EP kernel must log no trace.
#[test]
fn virtio_console_on_the_kernel_epf_moves_a_mebibyte_each_way_and_survives_kills_reloads_and_reboots(
) {
    let ep = format!(
        r#"{EP_DAEMON}
mkfifo /tmp/in
exec 3<>/tmp/in
console() {{
    DAEMON_IN=/tmp/in DAEMON_OUT=/tmp/from-host epf_run con0 console --backend stdio
}}
# both_ways PHASE: the host's marker arrives, ours goes to the host.
both_ways() {{
    local i
    for i in $(seq 900); do grep -q "host-$1" /tmp/from-host 2>/dev/null && break; sleep 0.2; done
    check "host -> endpoint after $1" grep -q "host-$1" /tmp/from-host
    echo "ep-$1" >&3
    wait_file /shared/$1-done 300 || RIG_FAILED=1
}}
U=/sys/kernel/config/pci_ep/functions/pci_epf_user/con0
head -c 1048576 /dev/urandom > /shared/e2h.bin
epf_setup slave con0 && console || {{ echo "FAIL the daemon starts"; RIG_FAILED=1; }}
# The host puts its tty in raw mode first: bytes reaching a cooked tty would be echoed.
wait_file /shared/host-ready 300 || RIG_FAILED=1
cat /shared/e2h.bin >&3 &
for i in $(seq 1200); do
    [ "$(stat -c %s /tmp/from-host 2>/dev/null)" -ge 1048576 ] && break
    sleep 0.5
done
wait_file /shared/host-sent 60 || RIG_FAILED=1
check "1 MiB host -> endpoint, identical" cmp -n 1048576 /tmp/from-host /shared/h2e.bin
both_ways start
fds=$(ls /proc/$DAEMON/fd | wc -l)
kill -9 $DAEMON; wait $DAEMON
console
check "the daemon runs again after SIGKILL" kill -0 $DAEMON
signal restarted
both_ways restarted
signal rebooting
both_ways rebooted
# The host VM powers off after its reboot: unload and reload the function driver.
kill -INT $DAEMON; wait $DAEMON
echo "daemon exit $?"
rm $C/con0 && rmdir $U
check "pci-epf-user unloads" rmmod pci_epf_user
check "only sim-epc holds the endpoint core" sh -c 'grep -q "^pci_ep_core [0-9]* 1 sim_epc" /proc/modules'
insmod /job/pci-epf-user.ko && mkdir $U && ln -s $U $C/ || echo "FAIL the function comes back"
# Until the host VM's QEMU is gone the link refuses new BARs (the daemon exits).
for i in $(seq 60); do
    console && break
    sleep 1
done
check "the daemon runs on the reloaded module" kill -0 $DAEMON
signal next-boot-2
both_ways reloaded
check "the daemon holds no more descriptors than the first ($fds)" test "$(ls /proc/$DAEMON/fd | wc -l)" -le "$fds"
wait_file /shared/host-done 600 || RIG_FAILED=1
check "the daemon is still running" kill -0 $DAEMON
kill -INT $DAEMON; wait $DAEMON
echo "daemon exit $?"
grep -E "WARN|ERROR" /job/daemon.log | head
ep_end
"#
    );
    let host = r#"
modprobe virtio_console
D=/sys/bus/pci/drivers/virtio-pci
# open_tty: hvc0 opens (after a rebind its node can exist before the port is back), raw,
# held open as fd 3.
open_tty() {
    local i
    for i in $(seq 200); do
        { exec 3<>/dev/hvc0; } 2>/dev/null && stty -F /dev/hvc0 raw -echo 2>/dev/null && return 0
        exec 3>&- 2>/dev/null
        sleep 0.1
    done
    return 1
}
# both_ways PHASE: our marker goes to the endpoint, the endpoint's comes back.
both_ways() {
    echo "host-$1" >&3
    check "endpoint -> host after $1" sh -c "timeout 180 grep -m1 -q ep-$1 <&3"
    signal "$1-done"
}
if [ "$(cat /job/boot)" = 2 ]; then
    open_tty || echo "FAIL no hvc0 on the reloaded function"
    both_ways reloaded
    finish
fi
if [ -e /job/rebooted ]; then
    open_tty || echo "FAIL no hvc0 after the reboot"
    both_ways rebooted
    finish
fi
open_tty || echo "FAIL no hvc0"
head -c 1048576 /dev/urandom > /shared/h2e.bin
signal host-ready
head -c 1048576 <&3 > /tmp/got &
READER=$!
cat /shared/h2e.bin >&3
signal host-sent
wait $READER
check "1 MiB endpoint -> host, identical" cmp /tmp/got /shared/e2h.bin
both_ways start
wait_file /shared/restarted 300
exec 3>&-
echo 0000:01:00.0 > $D/unbind
echo 0000:01:00.0 > $D/bind
open_tty || { echo "FAIL no hvc0 after the rebind"; dmesg | tail -25; ls -l /dev/hvc0 /sys/bus/pci/devices/0000:01:00.0/; }
both_ways restarted
wait_file /shared/rebooting 300
# Reboot while writing.
( while echo "traffic before the reboot" >&3; do :; done ) 2>/dev/null &
sleep 2
touch /job/rebooted
cp /job/output.log /job/first-boot.log
echo b > /proc/sysrq-trigger
sleep 30
echo "FAIL the reboot did not happen"
finish
"#;
    let bin = virtio_epf();
    let r = rig_with(
        "epf-life",
        &ep,
        host,
        &[
            "--host-opt",
            "--allow-reboot",
            "--host-boots",
            "2",
            "--between-boots",
            "next-boot",
        ],
        &[&bin],
    );
    r.assert_ok();
    assert!(
        r.ep.contains("ok 1 MiB host -> endpoint, identical"),
        "{}",
        r.ep
    );
    assert!(
        r.host.contains("ok 1 MiB endpoint -> host, identical"),
        "{}",
        r.host
    );
    assert!(
        r.counter("link.dma_bytes") >= 2 << 20,
        "both mebibytes moved by DMA:\n{}",
        r.stats
    );
    for phase in ["start", "restarted", "rebooted", "reloaded"] {
        assert!(
            r.host
                .contains(&format!("ok endpoint -> host after {phase}")),
            "{}",
            r.host
        );
        assert!(
            r.ep.contains(&format!("ok host -> endpoint after {phase}")),
            "{}",
            r.ep
        );
    }
    assert_eq!(r.counter("host.memory_accesses"), 0);
}
