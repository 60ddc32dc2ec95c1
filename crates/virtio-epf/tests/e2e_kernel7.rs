//! End-to-end test on the second guest kernel, trixie-backports' linux-image-amd64 (7.x,
//! `harness/run-guest.sh --kernel bpo`): unlike trixie's 6.12 it negotiates
//! VIRTIO_F_IN_ORDER (feature bit 35).

mod support;

use support::{Daemon, Guest, GuestKernel};

#[test]
fn rng_on_the_backports_kernel() {
    let d = Daemon::start("rng-k7", "rng", &[]);
    let script = r#"
echo "uname -r: $(uname -r)"
check "guest kernel is 7.x" sh -c 'uname -r | grep -q "^7\."'
addr=$(pci_addr $ID_RNG) || fail "no rng function $ID_RNG"
echo "rng function at $addr"
modprobe virtio_rng
check "virtio-pci bound to $addr" [ "$(basename "$(readlink /sys/bus/pci/devices/$addr/driver)")" = virtio-pci ]
v=$(virtio_dir "$addr"); [ -n "$v" ] || fail "no virtio device below $addr"
for f in /sys/bus/virtio/devices/*/features; do echo "features $f $(cat "$f")"; done
echo "rng device $(basename "$v") features $(cat "$v/features")"
check "rng_current is virtio_rng" grep -q '^virtio_rng' /sys/class/misc/hw_random/rng_current
head -c 262144 /dev/hwrng > /tmp/rng1
head -c 262144 /dev/hwrng > /tmp/rng2
check "256 KiB from /dev/hwrng" [ "$(wc -c < /tmp/rng1)" = 262144 ]
check "entropy is not all zero" [ "$(tr -d '\000' < /tmp/rng1 | wc -c)" -gt 200000 ]
check "two reads differ" sh -c '! cmp -s /tmp/rng1 /tmp/rng2'
"#;
    let run = Guest::new(&[&d])
        .kernel(GuestKernel::Backports)
        .run("rng-k7", script, &[]);
    println!("{}", run.output);
    run.assert_ok();
    let stats = d.stats_text();
    println!("{stats}");
    assert!(Daemon::counter(&stats, "queue 0", "bytes") >= 2 * 262144);
    let status = d.stop();
    assert!(status.success(), "virtio-epf exit status {status}");
}
