//! End-to-end tests of the bare-endpoint modes against a real Linux host: the legacy layout
//! with polled registers and notifications (zero trapped BAR accesses), trapped legacy with a
//! doorbell, outbound-window limited host access, and INTx with a `pci=nomsi` guest.

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
    for (line, key) in [
        ("link", "trapped_reads"),
        ("link", "trapped_writes"),
        ("function", "bar_reads"),
        ("function", "bar_writes"),
    ] {
        assert_eq!(
            Daemon::counter(stats, line, key),
            0,
            "{line} {key} in poll mode:\n{stats}"
        );
    }
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
fn legacy_polled_console_moves_a_mebibyte_each_way_without_a_single_trap() {
    let _one = one_guest();
    let (d, backend) = console_daemon("legacy-poll-console", POLL);
    console_roundtrip(
        &Guest::new(&[&d]),
        "legacy-poll-console",
        &backend,
        "0x1af4:0x1003",
        1 << 20,
        LEGACY_CHECKS,
        "",
    );
    let stats = d.stats_text();
    println!("{stats}");
    assert_untrapped(&stats);
    assert!(Daemon::counter(&stats, "queue 1", "bytes") >= 1 << 20);
    assert!(d.stop().success());
}

#[test]
fn legacy_trapped_console_with_a_doorbell() {
    let _one = one_guest();
    let (d, backend) = console_daemon(
        "legacy-trap-console",
        &[
            "--layout",
            "legacy",
            "--registers",
            "trap",
            "--notify",
            "doorbell",
        ],
    );
    console_roundtrip(
        &Guest::new(&[&d]),
        "legacy-trap-console",
        &backend,
        "0x1af4:0x1003",
        1 << 20,
        LEGACY_CHECKS,
        "",
    );
    let stats = d.stats_text();
    assert!(
        Daemon::counter(&stats, "link", "trapped_writes") > 0,
        "{stats}"
    );
    assert!(d.stop().success());
}

#[test]
fn console_through_four_64k_outbound_windows() {
    let _one = one_guest();
    let (d, backend) = console_daemon(
        "windows-console",
        &["--host-windows", "4", "--window-size", "65536"],
    );
    console_roundtrip(
        &Guest::new(&[&d]),
        "windows-console",
        &backend,
        "0x1af4:0x1043",
        1 << 20,
        "",
        "",
    );
    let stats = d.stats_text();
    println!("{stats}");
    assert!(Daemon::counter(&stats, "windows", "maps") > 0, "{stats}");
    assert!(Daemon::counter(&stats, "windows", "misses") > 0, "{stats}");
    assert!(Daemon::counter(&stats, "windows", "mapped") <= 4, "{stats}");
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

/// The guest's disk tour: a filesystem, files with checksums, fsck, and fio with verification.
const DISK_TOUR: &str = r#"
modprobe virtio_blk || fail "modprobe virtio_blk"
modprobe ext4 || fail "modprobe ext4"
v=$(ls /sys/block | grep '^vd' | head -n1)
[ -n "$v" ] || fail "no virtio disk"
echo "disk $v at $addr"
check "size is the image's (64 MiB)" [ "$(cat /sys/block/$v/size)" = 131072 ]
check "mkfs.ext4" mkfs.ext4 -q -F /dev/$v
mkdir -p /mnt/d && check "mount" mount /dev/$v /mnt/d
for i in 1 2 3 4; do head -c 3000000 /dev/urandom > /mnt/d/f$i; done
(cd /mnt/d && sha256sum f1 f2 f3 f4 > /tmp/sums)
sync && check "umount" umount /mnt/d
check "fsck.ext4 -fn clean" fsck.ext4 -fn /dev/$v
check "remount" mount /dev/$v /mnt/d
check "checksums after remount" sh -c "cd /mnt/d && sha256sum -c /tmp/sums"
umount /mnt/d
check "fio randwrite 4k with crc32c verify" fio --name=v --filename=/dev/$v --direct=1 --ioengine=libaio \
    --rw=randwrite --bs=4k --iodepth=16 --size=16M --verify=crc32c --do_verify=1 --output=/tmp/fio.txt
"#;

fn blk_in_mode(name: &str, mode: &[&str], id: &str) -> String {
    let dir = support::scratch(&format!("{name}-img"));
    let img = dir.join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mut args = vec!["--image", img.to_str().unwrap()];
    args.extend_from_slice(mode);
    let d = Daemon::start(name, "blk", &args);
    let script = format!("addr=$(pci_addr {id}) || fail \"no {id} function\"\n{DISK_TOUR}");
    let run = Guest::new(&[&d]).run(name, &script, &[]);
    println!("{}", run.output);
    run.assert_ok();
    let stats = d.stats_text();
    println!("{stats}");
    assert!(d.stop().success());
    stats
}

#[test]
fn legacy_polled_blk_carries_a_filesystem_and_fio_verify_without_a_single_trap() {
    let _one = one_guest();
    let stats = blk_in_mode("legacy-poll-blk", POLL, "0x1af4:0x1001");
    assert_untrapped(&stats);
    assert!(
        Daemon::counter(&stats, "queue 0", "bytes") > 16 << 20,
        "{stats}"
    );
}

#[test]
fn blk_through_four_64k_outbound_windows() {
    let _one = one_guest();
    let stats = blk_in_mode(
        "windows-blk",
        &["--host-windows", "4", "--window-size", "65536"],
        "0x1af4:0x1042",
    );
    assert!(Daemon::counter(&stats, "windows", "misses") > 0, "{stats}");
    assert!(Daemon::counter(&stats, "windows", "mapped") <= 4, "{stats}");
}

/// virtio-net with polled legacy registers: the legacy virtio_net path (no VERSION_1, 12-byte
/// header with MRG_RXBUF) carries ping and TCP inside a test-created network namespace.
#[test]
fn legacy_polled_net_carries_ping_and_tcp_without_a_single_trap() {
    let _one = one_guest();
    let ns = support::NetNs::new("legacy-net");
    ns.add_tap("tap0", false, 1500, "10.78.0.1/24");
    let mut args = vec!["--tap", "tap0", "--mac", "52:54:00:12:34:56"];
    args.extend_from_slice(POLL);
    let d = Daemon::start_in(&ns, "legacy-poll-net", "net", &args);
    let server = ns.spawn_peer(
        &[
            "iperf3",
            "-s",
            "-1",
            "-B",
            "10.78.0.1",
            "--idle-timeout",
            "200",
        ],
        &d.dir.join("iperf3-server.log"),
    );
    let script = r#"
modprobe virtio_net || fail "modprobe virtio_net"
addr=$(pci_addr 0x1af4:0x1000) || fail "no transitional net function 1af4:1000"
check "virtio-pci bound to $addr" [ "$(basename "$(readlink /sys/bus/pci/devices/$addr/driver)")" = virtio-pci ]
check "legacy driver in use" sh -c "dmesg | grep -q '$addr: virtio_pci: leaving for legacy driver'"
IF=
for i in $(seq 50); do IF=$(ls "$(virtio_dir "$addr")/net" 2>/dev/null | head -n1); [ -n "$IF" ] && break; sleep 0.1; done
[ -n "$IF" ] || fail "no interface"
check "MAC as given" [ "$(cat /sys/class/net/$IF/address)" = 52:54:00:12:34:56 ]
ip addr add 10.78.0.2/24 dev $IF && ip link set $IF up || fail "configure $IF"
for i in $(seq 50); do ping -c 1 -W 1 10.78.0.1 >/dev/null 2>&1 && break; done
ping -c 100 -i 0.01 10.78.0.1 > /tmp/ping.txt; cat /tmp/ping.txt | tail -2
check "ping: 0% loss" grep -q ' 0% packet loss' /tmp/ping.txt
iperf3 -c 10.78.0.1 -t 3 > /tmp/up.txt || { cat /tmp/up.txt; fail "iperf3 TCP"; }
tail -4 /tmp/up.txt
"#;
    let run = Guest::new(&[&d]).run("legacy-poll-net", script, &[]);
    println!("{}", run.output);
    run.assert_ok();
    let _ = server.wait(std::time::Duration::from_secs(10));
    let stats = d.stats_text();
    println!("{stats}");
    assert_untrapped(&stats);
    assert!(d.stop().success());
}
