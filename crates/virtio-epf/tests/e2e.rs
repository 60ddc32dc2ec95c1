//! End-to-end tests with a real Linux kernel as the PCIe host: each test starts `virtio-epf`,
//! boots a Debian guest under QEMU (`vfio-user-pci` attached to the daemon's socket) with the
//! project's harness, and asserts from inside the guest with the guest's own tools.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;
use support::{pattern, Daemon, Guest};

/// Checks shared by every device: IDs, driver bound, the modern (VERSION_1) or legacy driver
/// path as the suite's mode expects, MSI-X in use. Expects `$addr` to be set and the device
/// driver module loaded.
const COMMON_CHECKS: &str = r#"
check "virtio-pci bound to $addr" [ "$(basename "$(readlink /sys/bus/pci/devices/$addr/driver)")" = virtio-pci ]
v=$(virtio_dir "$addr"); [ -n "$v" ] || fail "no virtio device below $addr"
echo "virtio device $(basename "$v") features $(cat "$v/features")"
if [ "$LEGACY" = 1 ]; then
    check "revision 0 (legacy ABI)" [ "$(cat /sys/bus/pci/devices/$addr/revision)" = 0x00 ]
    check "legacy driver in use" sh -c "dmesg | grep -q '$addr: virtio_pci: leaving for legacy driver'"
else
    check "VIRTIO_F_VERSION_1 negotiated" has_feature "$v" 32
fi
check_rings "$addr"
check "MSI-X enabled" sh -c "lspci -vv -s $addr | grep -q 'MSI-X: Enable+'"
"#;

/// After traffic: the function's interrupts arrived as MSI-X messages.
const IRQ_CHECK: &str = r#"
grep "PCI-MSIX-$addr" /proc/interrupts
check "MSI-X interrupts counted" sh -c "grep 'PCI-MSIX-$addr' /proc/interrupts | awk '{ s += \$2 } END { exit !(s > 0) }'"
"#;

const RNG_READ: &str = r#"
check "rng_current is virtio_rng" grep -q '^virtio_rng' /sys/class/misc/hw_random/rng_current
head -c 262144 /dev/hwrng > /tmp/rng1
head -c 262144 /dev/hwrng > /tmp/rng2
check "256 KiB from /dev/hwrng" [ "$(wc -c < /tmp/rng1)" = 262144 ]
check "entropy is not all zero" [ "$(tr -d '\000' < /tmp/rng1 | wc -c)" -gt 200000 ]
check "two reads differ" sh -c '! cmp -s /tmp/rng1 /tmp/rng2'
"#;

#[test]
fn rng_binds_delivers_entropy_and_survives_rebinds() {
    let d = Daemon::start("rng", "rng", &[]);
    let script = format!(
        r#"
addr=$(pci_addr $ID_RNG) || fail "no rng function $ID_RNG"
echo "rng function at $addr"
modprobe virtio_rng
{COMMON_CHECKS}
{RNG_READ}
{IRQ_CHECK}
for i in $(seq 10); do
    echo "$addr" > /sys/bus/pci/drivers/virtio-pci/unbind || fail "unbind $i"
    echo "$addr" > /sys/bus/pci/drivers/virtio-pci/bind || fail "bind $i"
done
echo "rebound 10 times"
{COMMON_CHECKS}
{RNG_READ}
{IRQ_CHECK}
"#
    );
    let run = Guest::new(&[&d]).run("rng", &script, &[]);
    println!("{}", run.output);
    run.assert_ok();
    let stats = d.stats_text();
    println!("{stats}");
    assert!(Daemon::counter(&stats, "queue 0", "bytes") >= 4 * 262144);
    assert!(Daemon::counter(&stats, "queue 0", "interrupts") > 0);
    assert!(Daemon::counter(&stats, "function", "activations") >= 11);
    if !support::Mode::current().legacy() {
        // VIRTIO_F_NOTIFICATION_DATA (checked negotiated above): the driver's kicks carried
        // its next index, and the device used it instead of reading the ring for it.
        assert!(
            Daemon::counter(&stats, "queue 0", "ring_reads_saved") > 0,
            "{stats}"
        );
    }
    let socket = d.socket.clone();
    let status = d.stop();
    assert!(status.success(), "virtio-epf exit status {status}");
    assert!(!socket.exists(), "socket file not removed on SIGTERM");
}

#[test]
fn console_moves_a_mebibyte_each_way_byte_identical() {
    const LEN: usize = 1 << 20;
    let (d, backend) = support::console_daemon("console", &[]);
    support::console_roundtrip(
        &Guest::new(&[&d]),
        "console",
        &backend,
        "$ID_CONSOLE",
        LEN,
        COMMON_CHECKS,
        IRQ_CHECK,
    );
    let stats = d.stats_text();
    println!("{stats}");
    assert!(Daemon::counter(&stats, "queue 1", "bytes") >= LEN as u64);
    assert!(d.stop().success());
}

const SHORT_RNG: &str = r#"
addr=$(pci_addr $ID_RNG) || fail "no rng function $ID_RNG"
modprobe virtio_rng
check "virtio-pci bound" [ "$(basename "$(readlink /sys/bus/pci/devices/$addr/driver)")" = virtio-pci ]
check "rng_current is virtio_rng" grep -q '^virtio_rng' /sys/class/misc/hw_random/rng_current
check "64 KiB from /dev/hwrng" [ "$(head -c 65536 /dev/hwrng | wc -c)" = 65536 ]
"#;

#[test]
fn qemu_killed_then_next_host_gets_a_working_device() {
    let mut d = Daemon::start("restart", "rng", &[]);
    let script = r#"
modprobe virtio_rng
head -c 4096 /dev/hwrng > /dev/null || fail "first read"
touch /job/ready
while true; do head -c 4096 /dev/hwrng > /dev/null; done
"#;
    let mut g1 = Guest::new(&[&d]).spawn("restart-1", script, &[]);
    assert!(
        g1.wait_for_file("ready", Duration::from_secs(150)),
        "first guest never got going"
    );
    // Kill QEMU (not the harness) with SIGKILL while traffic flows.
    let pat = format!("qemu-system.*{}", d.socket.display());
    let st = std::process::Command::new("pkill")
        .args(["-9", "-f", &pat])
        .status()
        .unwrap();
    assert!(st.success(), "no QEMU process matched {pat}");
    let r1 = g1.wait();
    assert_ne!(r1.code(), 0, "first guest should have died");
    assert!(
        d.alive(),
        "virtio-epf died with its host:\n{}",
        d.log_text()
    );
    let r2 = Guest::new(&[&d]).run("restart-2", SHORT_RNG, &[]);
    println!("{}", r2.output);
    r2.assert_ok();
    let stats = d.stats_text();
    assert_eq!(Daemon::counter(&stats, "link", "clients"), 2, "{stats}");
    assert!(d.stop().success());
}

#[test]
fn garbage_on_the_socket_does_not_take_the_daemon_down() {
    let mut d = Daemon::start("garbage", "rng", &[]);
    let send = |bytes: &[u8]| {
        let mut s = UnixStream::connect(&d.socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    };
    send(&pattern(4096, 7));
    // A header announcing a 4 GiB message.
    send(&[1, 0, 1, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
    // VERSION with a size smaller than the header, then a truncated body.
    send(&[2, 0, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    send(&[3, 0, 1, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    // A command number nobody knows, and half a header.
    send(&[4, 0, 0xee, 0x7e, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    send(&[5, 0, 1]);
    assert!(d.alive(), "virtio-epf died:\n{}", d.log_text());
    let run = Guest::new(&[&d]).run("garbage", SHORT_RNG, &[]);
    println!("{}", run.output);
    run.assert_ok();
    let stats = d.stats_text();
    assert!(
        Daemon::counter(&stats, "link", "protocol_errors") > 0,
        "{stats}"
    );
    assert!(d.stop().success());
}
