//! End-to-end tests of the bare-endpoint modes against a real Linux host that the device
//! suites (e2e.rs, e2e_blk.rs, e2e_net.rs, run once per mode by scripts/test.sh with
//! `VIRTIO_EPF_E2E_MODE`) do not cover: a guest reboot with polled legacy registers (zero
//! trapped BAR accesses), and INTx with a `pci=nomsi` guest.

mod support;

use support::{console_daemon, console_roundtrip, Daemon, Guest};

const POLL: &[&str] = &[
    "--layout",
    "legacy",
    "--registers",
    "poll",
    "--notify",
    "poll",
];

/// The legacy driver bound the function (modern probe found no capabilities).
const LEGACY_CHECKS: &str = r#"
check "virtio-pci bound to $addr" [ "$(basename "$(readlink /sys/bus/pci/devices/$addr/driver)")" = virtio-pci ]
check "revision 0 (legacy ABI)" [ "$(cat /sys/bus/pci/devices/$addr/revision)" = 0x00 ]
check "legacy driver in use" sh -c "dmesg | grep -q '$addr: virtio_pci: leaving for legacy driver'"
"#;

/// Asserts that no register access was trapped: BAR memory only.
/// One guest at a time: a polled endpoint must react within a few of the host's register
/// accesses (docs/design.md), which a 2-core machine running two TCG guests cannot promise.
static ONE_GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_guest() -> std::sync::MutexGuard<'static, ()> {
    ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner())
}

fn assert_untrapped(stats: &str) {
    support::Mode::LegacyPoll.assert_counters(stats);
}

const RNG_READ: &str = r#"
check "rng_current is virtio_rng" grep -q '^virtio_rng' /sys/class/misc/hw_random/rng_current
check "256 KiB from /dev/hwrng" [ "$(head -c 262144 /dev/hwrng | wc -c)" = 262144 ]
"#;

#[test]
fn legacy_polled_rng_survives_rebinds_and_a_guest_reboot_without_a_single_trap() {
    let _one = one_guest();
    let d = Daemon::start("legacy-poll-rng", "rng", POLL);
    let script = format!(
        r#"
addr=$(pci_addr 0x1af4:0x1005) || fail "no transitional rng 1af4:1005"
check "subsystem device = virtio type 4" [ "$(cat /sys/bus/pci/devices/$addr/subsystem_device)" = 0x0004 ]
modprobe virtio_rng
{LEGACY_CHECKS}
if [ ! -e /job/rebooted ]; then
    {RNG_READ}
    for i in $(seq 10); do
        echo "$addr" > /sys/bus/pci/drivers/virtio-pci/unbind || fail "unbind $i"
        echo "$addr" > /sys/bus/pci/drivers/virtio-pci/bind || fail "bind $i"
    done
    echo "rebound 10 times"
    {RNG_READ}
    touch /job/rebooted
    cp /job/output.log /job/first-boot.log 2>/dev/null
    echo b > /proc/sysrq-trigger
    sleep 30
    fail "reboot did not happen"
fi
echo "second boot"
{RNG_READ}
"#
    );
    let mut g = Guest::new(&[&d]);
    g.allow_reboot = true;
    let run = g.run("legacy-poll-rng", &script, &[]);
    println!("{}", run.output);
    run.assert_ok();
    assert!(
        run.job.join("rebooted").exists(),
        "the first boot did not get to its reboot"
    );
    let stats = d.stats_text();
    println!("{stats}");
    assert_untrapped(&stats);
    assert!(
        Daemon::counter(&stats, "poll", "activations") >= 12,
        "{stats}"
    );
    assert!(Daemon::counter(&stats, "queue 0", "bytes") >= 3 * 262144);
    assert!(d.stop().success());
}

#[test]
fn console_with_intx_on_a_guest_without_msi() {
    let _one = one_guest();
    let (d, backend) = console_daemon("intx-console", &["--irq", "intx"]);
    let mut g = Guest::new(&[&d]);
    g.append = "pci=nomsi".into();
    let after = r#"
grep -E 'IO-APIC|virtio' /proc/interrupts
check "no MSI-X for the function" sh -c "! grep -q 'PCI-MSIX-$addr' /proc/interrupts"
check "INTx interrupts arrived" sh -c "grep IO-APIC /proc/interrupts | grep virtio | awk '{ s += \$2 } END { exit !(s > 0) }'"
"#;
    console_roundtrip(
        &g,
        "intx-console",
        &backend,
        "0x1af4:0x1043",
        1 << 20,
        "",
        after,
    );
    let stats = d.stats_text();
    assert!(Daemon::counter(&stats, "link", "irqs") > 0, "{stats}");
    assert!(d.stop().success());
}

/// Polled notifications on the modern layout (`--notify poll`): the notify area is memory
/// mapped into the guest, so the driver's kicks are plain stores that reach the endpoint
/// with no vfio-user message at all; the notify page poller finds them.
#[test]
fn console_with_a_polled_notify_page_moves_a_mebibyte_each_way() {
    let _one = one_guest();
    let (d, backend) = console_daemon("notify-poll-console", &["--notify", "poll"]);
    let g = Guest::new(&[&d]);
    console_roundtrip(
        &g,
        "notify-poll-console",
        &backend,
        "0x1af4:0x1043",
        1 << 20,
        "",
        "",
    );
    let stats = d.stats_text();
    println!("{stats}");
    assert!(
        Daemon::counter(&stats, "notify_poll", "kicks") > 0,
        "{stats}"
    );
    // With a doorbell every kick is a REGION_WRITE message; here there is none.
    assert_eq!(Daemon::counter(&stats, "link", "doorbells"), 0, "{stats}");
    assert!(d.stop().success());
}
