//! End-to-end tests of `virtio-epf blk` with a real Linux kernel as the PCIe host: the guest
//! formats, fills, checks, discards and zeroes the disk with its own tools (mkfs.ext4,
//! fsck.ext4, fio, blkdiscard), and the host checks the image file itself (holes, bytes,
//! checksums) and the daemon's counters. Checks are combined into few guest boots:
//!
//! * one guest with two disks: a read-write one with 2 queues (identity, ext4, fio verify,
//!   multi-queue, discard, write-zeroes) and a read-only one;
//! * a crash test: a guest writing and flushing in a loop, the endpoint killed with SIGKILL,
//!   then a new endpoint and a new guest that find every flushed record and a clean fsck;
//! * start-up errors (no guest): bad images give one line and touch nothing.

mod support;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{pattern, Daemon, Guest};

const MIB: u64 = 1 << 20;

/// Guest helpers: find a disk by its serial, wait for it.
const BLK_PRELUDE: &str = r#"
modprobe virtio_blk || fail "modprobe virtio_blk"
modprobe ext4 || fail "modprobe ext4"
# Process substitution needs /dev/fd, which devtmpfs lacks.
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
# The vdX whose serial is $1 (waits up to 20 s for it to appear).
disk_by_serial() {
    local i d
    for i in $(seq 200); do
        for d in /sys/block/vd*; do
            [ -e "$d/serial" ] && [ "$(cat "$d/serial")" = "$1" ] && [ -b "/dev/$(basename "$d")" ] && { basename "$d"; return 0; }
        done
        sleep 0.1
    done
    return 1
}
zero_cmp() { cmp -n "$3" /dev/zero <(dd if="$1" bs=1M skip="$2" count=$(( $3 >> 20 )) iflag=direct 2>/dev/null); }
"#;

fn sparse_image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size).unwrap();
    p
}

/// Offset of the first data at or after `from` (SEEK_DATA), or `None` if only a hole follows.
fn next_data(path: &Path, from: u64) -> Option<u64> {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: lseek(2) on a descriptor we own.
    let r = unsafe { libc::lseek(f.as_raw_fd(), from as libc::off_t, libc::SEEK_DATA) };
    (r >= 0).then_some(r as u64)
}

fn allocated_bytes(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).unwrap()) * 512
}

#[test]
fn blk_filesystem_fio_multiqueue_discard_and_read_only() {
    let dir = support::scratch("blk-images");
    let rw_img = sparse_image(&dir, "rw.img", 128 * MIB);
    let ro_data = pattern((16 * MIB) as usize, 42);
    let ro_img = dir.join("ro.img");
    std::fs::write(&ro_img, &ro_data).unwrap();

    let rw = Daemon::start(
        "blk-rw",
        "blk",
        &[
            "--image",
            rw_img.to_str().unwrap(),
            "--serial",
            "EPF-RW-0001",
            "--queues",
            "2",
        ],
    );
    let ro = Daemon::start(
        "blk-ro",
        "blk",
        &[
            "--image",
            ro_img.to_str().unwrap(),
            "--serial",
            "EPF-RO-0002",
            "--read-only",
        ],
    );
    let script = format!(
        r#"{BLK_PRELUDE}
rw=$(disk_by_serial EPF-RW-0001) || fail "no disk with serial EPF-RW-0001"
ro=$(disk_by_serial EPF-RO-0002) || fail "no disk with serial EPF-RO-0002"
echo "read-write disk $rw, read-only disk $ro"
addr=$(pci_addr $ID_BLK) || fail "no blk function $ID_BLK"
check "virtio-pci bound to $addr" [ "$(basename "$(readlink /sys/bus/pci/devices/$addr/driver)")" = virtio-pci ]
check_rings "$addr"
check "size is the image's (128 MiB)" [ "$(cat /sys/block/$rw/size)" = 262144 ]
check "writable" [ "$(cat /sys/block/$rw/ro)" = 0 ]
check "volatile write cache (FLUSH)" grep -q "write back" /sys/block/$rw/queue/write_cache
check "discard offered" [ "$(cat /sys/block/$rw/queue/discard_max_bytes)" -gt 0 ]
check "write zeroes offered" [ "$(cat /sys/block/$rw/queue/write_zeroes_max_bytes)" -gt 0 ]
echo "queues: $(ls /sys/block/$rw/mq | tr '\n' ' ')"
check "2 queues" [ "$(ls /sys/block/$rw/mq | wc -l)" = 2 ]

# ext4 in the first 64 MiB: files with checksums, unmount, fsck, remount, verify.
mkfs.ext4 -q -F /dev/$rw 64M || fail "mkfs.ext4"
mkdir -p /mnt/t && mount /dev/$rw /mnt/t || fail "mount"
for i in $(seq 12); do head -c $(( i * 150000 + 1234 )) /dev/urandom > /mnt/t/file$i; done
mkdir /mnt/t/dir && cp -a /usr/share/doc/fio /mnt/t/dir/ 2>/dev/null
( cd /mnt/t && find . -type f ! -name lost+found -exec sha256sum {{}} + ) > /tmp/sums
sync && umount /mnt/t || fail "umount"
check "fsck.ext4 -fn clean" fsck.ext4 -fn /dev/$rw
mount /dev/$rw /mnt/t || fail "remount"
check "$(wc -l < /tmp/sums) checksums after remount" sh -c "cd /mnt/t && sha256sum -c --quiet /tmp/sums"
umount /mnt/t

# fio with data verification, beyond the file system (64..96 MiB).
check "fio randwrite 4k crc32c verify" fio --name=rand4k --filename=/dev/$rw --offset=64M --size=16M \
    --rw=randwrite --bs=4k --direct=1 --ioengine=libaio --iodepth=16 --verify=crc32c \
    --verify_fatal=1 --output=/tmp/fio1.txt
check "fio mixed block sizes crc32c verify" fio --name=mixed --filename=/dev/$rw --offset=80M --size=16M \
    --rw=randwrite --bssplit=512/10:4k/30:16k/20:64k/20:256k/10:1m/10 --direct=1 --ioengine=libaio \
    --iodepth=8 --verify=crc32c --verify_fatal=1 --output=/tmp/fio2.txt
grep -E "IOPS|err=" /tmp/fio1.txt /tmp/fio2.txt | head -6

# Multi-queue: I/O from each CPU goes to its own queue.
for c in 0 1; do
    taskset -c $c dd if=/dev/$rw of=/dev/null bs=4k count=3000 iflag=direct 2>/dev/null || fail "dd on cpu $c"
done
echo "multi-queue reads done"

# Discard 96..112 MiB after filling it; it must read back as zeroes.
dd if=/dev/urandom of=/tmp/r16 bs=1M count=16 2>/dev/null
dd if=/tmp/r16 of=/dev/$rw bs=1M seek=96 oflag=direct conv=fsync 2>/dev/null || fail "fill discard range"
check "filled range reads back" cmp -n 16M /tmp/r16 <(dd if=/dev/$rw bs=1M skip=96 count=16 iflag=direct 2>/dev/null)
check "blkdiscard 96M+16M" blkdiscard -o $((96 << 20)) -l $((16 << 20)) /dev/$rw
check "discarded range reads zero" zero_cmp /dev/$rw 96 $((16 << 20))
# Write zeroes on 112..120 MiB.
dd if=/tmp/r16 of=/dev/$rw bs=1M seek=112 count=8 oflag=direct conv=fsync 2>/dev/null || fail "fill zero range"
check "blkdiscard -z 112M+8M" blkdiscard -z -o $((112 << 20)) -l $((8 << 20)) /dev/$rw
check "zeroed range reads zero" zero_cmp /dev/$rw 112 $((8 << 20))
sync

# The read-only disk.
check "read-only disk is ro" [ "$(cat /sys/block/$ro/ro)" = 1 ]
check "read-only disk size" [ "$(cat /sys/block/$ro/size)" = 32768 ]
dd if=/dev/$ro bs=1M iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1 > /job/ro.sha256
check "writing the read-only disk fails" sh -c "! dd if=/dev/zero of=/dev/$ro bs=4k count=1 oflag=direct 2>/dev/null"
check "mounting it read-write fails" sh -c "! mount -o rw /dev/$ro /mnt/t 2>/dev/null"
"#
    );
    let mut g = Guest::new(&[&rw, &ro]);
    g.smp = 2;
    g.timeout = 300;
    let run = g.run("blk-main", &script, &[]);
    println!("{}", run.output);
    run.assert_ok();

    // The host's view of the image.
    let img = std::fs::read(&rw_img).unwrap();
    assert_eq!(img.len() as u64, 128 * MIB, "image size changed");
    assert!(
        img[(96 * MIB) as usize..(120 * MIB) as usize]
            .iter()
            .all(|&b| b == 0),
        "discarded / zeroed ranges are not zero in the image"
    );
    let data_after_96 = next_data(&rw_img, 96 * MIB);
    assert!(
        data_after_96.is_none_or(|d| d >= 112 * MIB),
        "the discarded range 96..112 MiB still has data at {data_after_96:?}"
    );
    let alloc = allocated_bytes(&rw_img);
    println!("rw image: {alloc} bytes allocated of {}", 128 * MIB);
    assert!(
        alloc <= 128 * MIB - 16 * MIB,
        "image not sparse after discard: {alloc} bytes allocated"
    );

    let ro_sha = std::fs::read_to_string(run.job.join("ro.sha256")).unwrap();
    let ro_after = std::fs::read(&ro_img).unwrap();
    assert!(ro_after == ro_data, "the read-only image changed");
    let host_sha = Command::new("sha256sum").arg(&ro_img).output().unwrap();
    let host_sha = String::from_utf8_lossy(&host_sha.stdout);
    assert_eq!(
        ro_sha.trim(),
        host_sha.split_whitespace().next().unwrap(),
        "guest read different bytes than the read-only image holds"
    );

    let stats = rw.stats_text();
    println!("{stats}");
    for q in ["queue 0", "queue 1"] {
        assert!(
            Daemon::counter(&stats, q, "chains") > 100,
            "little I/O on {q}:\n{stats}"
        );
        assert!(Daemon::counter(&stats, q, "interrupts") > 0, "{stats}");
    }
    for key in [
        "flushes",
        "discards",
        "write_zeroes",
        "get_ids",
        "writes",
        "reads",
    ] {
        assert!(
            Daemon::counter(&stats, "blk", key) > 0,
            "no {key}:\n{stats}"
        );
    }
    assert_eq!(Daemon::counter(&stats, "blk", "errors"), 0, "{stats}");
    assert_eq!(Daemon::counter(&stats, "function", "needs_reset"), 0);
    let ro_stats = ro.stats_text();
    assert_eq!(Daemon::counter(&ro_stats, "blk", "bytes_written"), 0);
    assert!(rw.stop().success());
    assert!(ro.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until nobody holds the image's lock (a killed endpoint's descriptors are released
/// by the kernel shortly after the process is gone).
fn wait_unlocked(path: &Path) {
    let t = Instant::now();
    loop {
        let f = std::fs::OpenOptions::new().read(true).open(path).unwrap();
        // SAFETY: flock(2) on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "image still locked 20 s after the endpoint was killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn blk_flushed_writes_survive_killing_the_endpoint() {
    let dir = support::scratch("blk-crash");
    let img = sparse_image(&dir, "crash.img", 64 * MIB);
    let args = ["--image", img.to_str().unwrap(), "--serial", "EPF-CRASH"];
    let d1 = Daemon::start("blk-crash-1", "blk", &args);
    let writer = format!(
        r#"{BLK_PRELUDE}
v=$(disk_by_serial EPF-CRASH) || fail "no disk"
mkfs.ext4 -q -F /dev/$v || fail "mkfs"
mkdir -p /mnt/c && mount /dev/$v /mnt/c || fail "mount"
i=0
while true; do
    i=$((i + 1))
    head -c $(( 4096 + (i % 13) * 9000 )) /dev/urandom > /mnt/c/rec$i
    sum=$(sha256sum < /mnt/c/rec$i | cut -d' ' -f1)
    sync -f /mnt/c/rec$i || fail "syncfs"
    # Logged only once the flush completed.
    echo "$i $sum" >> /job/flushed.log
    [ $i = 5 ] && touch /job/ready
done
"#
    );
    let mut g1 = Guest::new(&[&d1]).spawn("blk-crash-1", &writer, &[]);
    assert!(
        g1.wait_for_file("ready", Duration::from_secs(200)),
        "the writer guest never got going"
    );
    std::thread::sleep(Duration::from_secs(3));
    // kill -9 the endpoint in the middle of the write/flush loop.
    let socket = d1.socket.clone();
    drop(d1);
    // Its host is stuck on a dead device now: kill that QEMU too.
    let pat = format!("qemu-system.*{}", socket.display());
    let _ = Command::new("pkill").args(["-9", "-f", &pat]).status();
    let r1 = g1.wait();
    let log = std::fs::read_to_string(r1.job.join("flushed.log")).unwrap_or_default();
    let records: Vec<&str> = log
        .lines()
        .filter(|l| l.split_whitespace().count() == 2 && l.len() > 64)
        .collect();
    println!(
        "{} records logged as flushed before the kill",
        records.len()
    );
    assert!(records.len() >= 5, "too few records:\n{log}");

    wait_unlocked(&img);
    let d2 = Daemon::start("blk-crash-2", "blk", &args);
    let checker = format!(
        r#"{BLK_PRELUDE}
v=$(disk_by_serial EPF-CRASH) || fail "no disk after restart"
mkdir -p /mnt/c
# Mounting replays the journal; then the file system must be clean.
mount /dev/$v /mnt/c || fail "mount after the crash"
umount /mnt/c || fail "umount"
check "fsck.ext4 -fn clean after the crash" fsck.ext4 -fn /dev/$v
mount -o ro /dev/$v /mnt/c || fail "mount ro"
n=0
while read -r i sum; do
    [ -f /mnt/c/rec$i ] || fail "flushed record $i is missing"
    [ "$(sha256sum < /mnt/c/rec$i | cut -d' ' -f1)" = "$sum" ] || fail "flushed record $i differs"
    n=$((n + 1))
done < /job/flushed.log
echo "all $n flushed records present and intact"
"#
    );
    let clean_log = records.join("\n") + "\n";
    let r2 = Guest::new(&[&d2]).run(
        "blk-crash-2",
        &checker,
        &[("flushed.log", clean_log.as_bytes())],
    );
    println!("{}", r2.output);
    r2.assert_ok();
    assert!(r2
        .output
        .contains(&format!("all {} flushed records", records.len())));
    assert!(d2.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_blk(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_virtio-epf"))
        .arg("blk")
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run virtio-epf")
}

#[test]
fn blk_bad_images_are_refused_at_start_and_left_alone() {
    let dir = support::scratch("blk-errors");
    let sock = dir.join("ep.sock");
    let s = sock.to_str().unwrap();
    let odd = dir.join("odd.img");
    std::fs::write(&odd, pattern(1000, 3)).unwrap();
    let ro = dir.join("ro.img");
    std::fs::write(&ro, pattern(4096, 4)).unwrap();
    std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    let missing = dir.join("missing.img");
    for (image, extra, want) in [
        (&missing, None, "cannot open image"),
        (&odd, None, "not a multiple of 512"),
        (&ro, None, "read-only"),
        (&dir, None, "neither a regular file nor a block device"),
        (&odd, Some("--read-only"), "not a multiple of 512"),
    ] {
        let mut args = vec!["--vfio-user", s, "--image", image.to_str().unwrap()];
        args.extend(extra);
        let o = run_blk(&args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{image:?}: {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        assert!(e.starts_with("virtio-epf: ") && e.contains(want), "{e}");
        assert!(!sock.exists(), "socket created despite the error");
    }
    assert!(!missing.exists(), "a missing image was created");
    assert_eq!(std::fs::read(&odd).unwrap(), pattern(1000, 3));
    assert_eq!(std::fs::read(&ro).unwrap(), pattern(4096, 4));
    // Usage errors.
    for bad in [
        &["--serial", "this-serial-is-longer-than-20"][..],
        &["--queues", "0"],
        &["--queue-size", "100"],
        &["--engine", "aio"],
    ] {
        let mut args = vec![
            "--vfio-user",
            s,
            "--image",
            ro.to_str().unwrap(),
            "--read-only",
        ];
        args.extend_from_slice(bad);
        assert_eq!(run_blk(&args).status.code(), Some(2), "{bad:?}");
    }
    // The read-only file is fine with --read-only.
    let d = Daemon::start(
        "blk-ro-ok",
        "blk",
        &["--image", ro.to_str().unwrap(), "--read-only"],
    );
    assert!(d.stop().success());
    let o = run_blk(&["--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    for opt in ["--image", "--read-only", "--serial", "--queues", "--direct"] {
        assert!(help.contains(opt), "--help lacks {opt}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
