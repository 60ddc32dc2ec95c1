//! virtio-epf on Linux's PCI endpoint subsystem, end to end: in the EP VM the daemon runs on
//! the pci_epf_user function (`virtio-epf ... --epf NAME`) of the simulated controller; the
//! host VM binds its stock legacy virtio drivers to the function.

mod support;

use std::path::PathBuf;
use std::process::Command;
use support::{repo, rig_with};

/// The virtio-epf binary of this build profile, built if needed (it belongs to another
/// package of the workspace).
fn virtio_epf() -> PathBuf {
    let link = PathBuf::from(env!("CARGO_BIN_EXE_epf-link"));
    let bin = link.with_file_name("virtio-epf");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo())
        .args(["build", "-q", "-p", "virtio-epf"]);
    if link.parent().and_then(|d| d.file_name()) == Some("release".as_ref()) {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("cargo build -p virtio-epf");
    assert!(st.success(), "cannot build virtio-epf");
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

/// EP side: the endpoint core, sim-epc (`dma=$1`), pci-epf-user, a function `$2` linked to
/// the controller, and `virtio-epf $3... --epf $2` in the background until the host is done.
const EP_DAEMON: &str = r#"
epf_daemon() {
    local dma=$1 name=$2
    shift 2
    modprobe configfs || return 1
    insmod /job/pci-ep-core.ko && insmod /job/sim-epc.ko dma=$dma &&
        insmod /job/pci-epf-user.ko || return 1
    mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
    local U=/sys/kernel/config/pci_ep/functions/pci_epf_user/$name
    mkdir $U && ln -s $U $C/ || return 1
    # stdin/stdout are the console's stream when DAEMON_IN/DAEMON_OUT say so.
    RUST_LOG=${RUST_LOG:-info} /job/virtio-epf "$@" --epf $name --stats-file /job/epf.stats \
        <"${DAEMON_IN:-/dev/null}" >"${DAEMON_OUT:-/job/daemon.log}" 2>>/job/daemon.log &
    DAEMON=$!
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
finish
"#;
    let bin = virtio_epf();
    let r = rig_with("epf-rng", &ep, host, &[], &[&bin]);
    r.assert_ok();
    let stats = std::fs::read_to_string(r.ep_job.join("epf.stats")).unwrap_or_default();
    eprintln!("daemon counters:\n{stats}");
    // No trapped register access: the registers are plain memory the daemon polls.
    assert_eq!(r.counter("host.memory_accesses"), 0);
    assert!(r.counter("link.host_forwarded") < 100, "{}", r.stats);
    assert!(
        r.counter("link.dma_bytes") >= 8192,
        "entropy moved by DMA:\n{}",
        r.stats
    );
}

/// virtio-console on the kernel EPF: a mebibyte each way through the host's stock
/// virtio_console (hvc0, raw), byte-identical by checksum, with no trapped register access.
#[test]
fn virtio_console_on_the_kernel_epf_moves_a_mebibyte_each_way() {
    let ep = format!(
        r#"{EP_DAEMON}
head -c 1048576 /dev/urandom > /shared/e2h.bin
mkfifo /tmp/in
# Held open read-write: the daemon's open for reading does not block, and it never sees
# end of file.
exec 3<>/tmp/in
DAEMON_IN=/tmp/in DAEMON_OUT=/tmp/from-host \
    epf_daemon slave con0 console --backend stdio --dma-threshold 256 ||
    {{ echo "FAIL the daemon starts"; RIG_FAILED=1; }}
# The host puts its tty in raw mode first: bytes reaching a cooked tty would be echoed.
wait_file /shared/host-ready 600 || RIG_FAILED=1
cat /shared/e2h.bin >&3 &
for i in $(seq 600); do
    [ "$(stat -c %s /tmp/from-host 2>/dev/null)" = 1048576 ] && break
    sleep 0.5
done
wait_file /shared/host-sent 60 || RIG_FAILED=1
check "1 MiB host -> endpoint, identical" cmp /tmp/from-host /shared/h2e.bin
wait_file /shared/host-done 900 || RIG_FAILED=1
check "the daemon is still running" kill -0 $DAEMON
kill -INT $DAEMON; wait $DAEMON
echo "daemon exit $?"
tail -5 /job/daemon.log
ep_end
"#
    );
    let host = r#"
modprobe virtio_console
for i in $(seq 100); do [ -c /dev/hvc0 ] && break; sleep 0.1; done
check "the host has /dev/hvc0" test -c /dev/hvc0
head -c 1048576 /dev/urandom > /shared/h2e.bin
exec 3<>/dev/hvc0
stty -F /dev/hvc0 raw -echo
signal host-ready
head -c 1048576 <&3 > /tmp/got &
READER=$!
cat /shared/h2e.bin >&3
signal host-sent
wait $READER
check "1 MiB endpoint -> host, identical" cmp /tmp/got /shared/e2h.bin
finish
"#;
    let bin = virtio_epf();
    let r = rig_with("epf-console", &ep, host, &[], &[&bin]);
    let stats = std::fs::read_to_string(r.ep_job.join("epf.stats")).unwrap_or_default();
    eprintln!("daemon counters:\n{stats}");
    r.assert_ok();
    assert_eq!(r.counter("host.memory_accesses"), 0);
    assert!(
        r.counter("link.dma_bytes") >= 2 << 20,
        "both megabytes moved by DMA:\n{}",
        r.stats
    );
}

/// pci-epf-user's own rig test (kernel/epf-user/rig-test.sh): header, BARs both ways, MSI
/// and MSI-X counted on the host, events, windows and DMA onto a host buffer, hostile ioctl
/// arguments, teardown on close, kill and unlink, with eDMA-like channels and with none.
#[test]
fn the_kernel_epf_passes_its_own_rig_test_with_and_without_dma() {
    let out = Command::new(repo().join("kernel/epf-user/rig-test.sh"))
        .args(["--dma", "slave", "--dma", "none", "--link"])
        .arg(env!("CARGO_BIN_EXE_epf-link"))
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
