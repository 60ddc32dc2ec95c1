//! virtio-vsock end to end with a real Linux kernel as the PCIe host: `virtio-epf vsock`
//! serves the function, a Debian guest binds its stock `vmw_vsock_virtio_transport` driver,
//! and the guest's python3 (AF_VSOCK, harness/vsock.py) talks to Unix-socket services this
//! test runs on the endpoint side: `<uds>_<port>` for host-initiated connections, and
//! `<uds>` + `CONNECT <port>\n` for endpoint-initiated ones.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::{pattern, Daemon, Guest};

const VSOCK_PY: &str = include_str!("../../../harness/vsock.py");
const GUEST_CID: &str = "3";
/// Bytes each way in the bulk test (the issue's 64 MiB).
const BULK: usize = 64 << 20;

/// Loads the driver, finds the function and checks what every test relies on.
const PRELUDE: &str = r#"
modprobe vmw_vsock_virtio_transport || fail "modprobe vmw_vsock_virtio_transport"
addr=$(pci_addr 0x1af4:0x1053) || fail "no vsock function 1af4:1053"
echo "vsock function at $addr"
check "virtio-pci bound to $addr" [ "$(basename "$(readlink /sys/bus/pci/devices/$addr/driver)")" = virtio-pci ]
v=$(virtio_dir "$addr"); [ -n "$v" ] || fail "no virtio device below $addr"
check "VIRTIO_F_VERSION_1 negotiated" has_feature "$v" 32
for i in $(seq 100); do [ -e /dev/vsock ] && break; sleep 0.1; done
check "/dev/vsock exists" [ -e /dev/vsock ]
VS="python3 /job/vsock.py"
# wait_file NAME: wait up to 120 s for /job/NAME (the test's answer).
wait_file() {
    local i
    for i in $(seq 1200); do [ -e "/job/$1" ] && return 0; sleep 0.1; done
    fail "never saw /job/$1"
}
"#;

/// Starts `virtio-epf vsock` with its endpoint socket in the daemon's directory.
fn vsock_daemon(name: &str, extra: &[&str]) -> (Daemon, PathBuf) {
    let dir = support::scratch(&format!("{name}-uds"));
    let uds = dir.join("v.sock");
    let uds_s = uds.display().to_string();
    let mut args = vec!["--guest-cid", GUEST_CID, "--uds-path", &uds_s];
    args.extend_from_slice(extra);
    let d = Daemon::start(name, "vsock", &args);
    assert!(uds.exists(), "endpoint socket {uds_s} missing");
    (d, uds)
}

/// `<uds>_<port>`: where a host connection to `port` lands.
fn service_path(uds: &Path, port: u32) -> PathBuf {
    PathBuf::from(format!("{}_{port}", uds.display()))
}

/// An endpoint service: a listener at `path` running `handle` for each connection on its
/// own thread, until `stop` (which removes the socket file).
struct Service {
    path: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
    accepted: Arc<AtomicU64>,
    join: Option<JoinHandle<Vec<Result<(), String>>>>,
}

impl Service {
    fn start<F>(path: PathBuf, handle: F) -> Service
    where
        F: Fn(u64, UnixStream) -> Result<(), String> + Send + Sync + 'static,
    {
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).expect("bind service socket");
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (st, acc) = (stop.clone(), accepted.clone());
        let handle = Arc::new(handle);
        let join = std::thread::spawn(move || {
            let mut workers = Vec::new();
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let i = acc.fetch_add(1, Ordering::Relaxed);
                        let h = handle.clone();
                        workers.push(std::thread::spawn(move || h(i, s)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            drop(l);
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|_| Err("handler panicked".into())))
                .collect()
        });
        Service {
            path,
            stop,
            accepted,
            join: Some(join),
        }
    }

    /// Stops accepting, removes the socket and returns every handler's result.
    fn stop(mut self) -> Vec<Result<(), String>> {
        self.stop.store(true, Ordering::Relaxed);
        let r = self.join.take().unwrap().join().unwrap();
        let _ = std::fs::remove_file(&self.path);
        r
    }
}

fn read_all(s: &mut UnixStream) -> Result<Vec<u8>, String> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).map_err(|e| format!("read: {e}"))?;
    Ok(v)
}

fn sha256_of(data: &[u8], scratch: &Path) -> String {
    let f = scratch.join("sha-input.bin");
    std::fs::write(&f, data).unwrap();
    let out = Command::new("sha256sum")
        .arg(&f)
        .output()
        .expect("sha256sum");
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    s.split_whitespace().next().unwrap().to_string()
}

/// Waits for the guest to create `file` in its job dir.
fn wait_job_file(job: &Path, file: &str, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if job.join(file).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// An endpoint application's connection to host port `port` through `<uds>`: writes
/// `CONNECT <port>\n` and expects `OK <our port>\n`.
fn endpoint_connect(uds: &Path, port: u32) -> Result<UnixStream, String> {
    let mut s = UnixStream::connect(uds).map_err(|e| format!("connect {uds:?}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    writeln!(s, "CONNECT {port}").map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while b[0] != b'\n' {
        s.read_exact(&mut b)
            .map_err(|e| format!("no reply to CONNECT: {e}"))?;
        line.push(b[0]);
    }
    let line = String::from_utf8_lossy(&line).to_string();
    let ok = line
        .strip_prefix("OK ")
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some();
    if !ok {
        return Err(format!("CONNECT {port} answered {line:?}"));
    }
    Ok(s)
}

/// The counters once the stats file (rewritten every 500 ms) shows at least `host_connects`
/// host connections and none established any more.
fn settled(d: &Daemon, host_connects: u64) -> String {
    let (stats, _) = d.wait_stats(Duration::from_secs(10), |s| {
        s.contains("vsock:") && c(s, "established") == 0 && c(s, "host_connects") >= host_connects
    });
    println!("{stats}");
    stats
}

fn c(stats: &str, key: &str) -> u64 {
    Daemon::counter(stats, "vsock", key)
}

#[test]
fn vsock_moves_64_mib_each_way_by_sha256() {
    let (d, uds) = vsock_daemon("vsock-bulk", &[]);
    let to_endpoint = pattern(BULK, 11);
    let to_host = pattern(BULK, 12);
    let scratch = support::scratch("vsock-bulk-sha");
    let want_up = sha256_of(&to_endpoint, &scratch);
    let want_down = sha256_of(&to_host, &scratch);
    let expect = to_endpoint.clone();
    let svc = Service::start(service_path(&uds, 5000), move |_, mut s| {
        let got = read_all(&mut s)?;
        if got.len() != expect.len() {
            return Err(format!(
                "endpoint got {} of {} bytes",
                got.len(),
                expect.len()
            ));
        }
        if got != expect {
            return Err("host->endpoint data differs".into());
        }
        Ok(())
    });
    let script = format!(
        r#"{PRELUDE}
t0=$(date +%s.%N)
out=$($VS send 5000 /job/to_endpoint.bin) || fail "send to port 5000"
echo "$out"
t1=$(date +%s.%N)
echo "host->endpoint: $(echo "$t1 - $t0" | bc 2>/dev/null || echo "$t0 $t1") s"
check "sent the sha256 expected" sh -c 'echo "$0" | grep -q "sha256 {want_up}"' "$out"
$VS recv 6000 /job/down > /job/recv.log 2>&1 &
rpid=$!
wait_file down.listening
touch /job/go-down
wait $rpid || {{ cat /job/recv.log; fail "receive on port 6000"; }}
cat /job/recv.log
check "received the sha256 expected" [ "$(cat /job/down.sha256)" = "{want_down}" ]
grep "PCI-MSIX-$addr" /proc/interrupts
"#
    );
    let g = Guest::new(&[&d]).spawn(
        "vsock-bulk",
        &script,
        &[
            ("vsock.py", VSOCK_PY.as_bytes()),
            ("to_endpoint.bin", &to_endpoint),
        ],
    );
    let job = g.job.clone();
    let uds2 = uds.clone();
    let down = std::thread::spawn(move || -> Result<(), String> {
        if !wait_job_file(&job, "go-down", Duration::from_secs(1200)) {
            return Err("guest never listened on port 6000".into());
        }
        let t = Instant::now();
        let mut s = endpoint_connect(&uds2, 6000)?;
        s.write_all(&to_host)
            .map_err(|e| format!("endpoint write: {e}"))?;
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let rest = read_all(&mut s)?;
        println!("endpoint->host {BULK} bytes in {:?}", t.elapsed());
        if !rest.is_empty() {
            return Err(format!("host sent {} unexpected bytes", rest.len()));
        }
        Ok(())
    });
    let run = g.wait();
    println!("{}", run.output);
    run.assert_ok();
    down.join().unwrap().unwrap();
    for r in svc.stop() {
        r.unwrap();
    }
    let stats = settled(&d, 1);
    assert!(c(&stats, "to_endpoint_bytes") >= BULK as u64, "{stats}");
    assert!(c(&stats, "to_host_bytes") >= BULK as u64, "{stats}");
    assert_eq!(c(&stats, "host_connects"), 1, "{stats}");
    assert_eq!(c(&stats, "endpoint_connects"), 1, "{stats}");
    assert_eq!(c(&stats, "bad_headers"), 0, "{stats}");
    assert_eq!(c(&stats, "protocol_errors"), 0, "{stats}");
    assert_eq!(
        c(&stats, "established"),
        0,
        "connections left open: {stats}"
    );
    assert!(d.stop().success());
}

/// Echoes every connection back to its sender until EOF.
fn echo(_: u64, mut s: UnixStream) -> Result<(), String> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).map_err(|e| format!("echo read: {e}"))?;
        if n == 0 {
            return s
                .shutdown(std::net::Shutdown::Write)
                .map_err(|e| e.to_string());
        }
        s.write_all(&buf[..n])
            .map_err(|e| format!("echo write: {e}"))?;
    }
}

#[test]
fn vsock_100_concurrent_connections_and_a_slow_reader() {
    const CONNS: usize = 100;
    const EACH: usize = 256 * 1024;
    const SLOW: usize = 8 << 20;
    let (d, uds) = vsock_daemon("vsock-many", &["--conn-buffer", "65536"]);
    let echo_svc = Service::start(service_path(&uds, 5000), echo);
    let slow_data = pattern(SLOW, 21);
    let expect = slow_data.clone();
    // Takes 16 KiB every 10 ms (about 1.6 MB/s): far slower than the host sends.
    let slow_svc = Service::start(service_path(&uds, 5001), move |_, mut s| {
        let mut got = Vec::with_capacity(SLOW);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = s.read(&mut buf).map_err(|e| format!("slow read: {e}"))?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            std::thread::sleep(Duration::from_millis(10));
        }
        if got != expect {
            return Err(format!("slow reader got {} bytes, differing", got.len()));
        }
        Ok(())
    });
    let script = format!(
        r#"{PRELUDE}
$VS echo-many {CONNS} 5000 {EACH} || fail "{CONNS} concurrent echo connections"
out=$($VS send 5001 /job/slow.bin) || fail "send to the slow reader"
echo "$out"
"#
    );
    let run = Guest::new(&[&d]).run(
        "vsock-many",
        &script,
        &[("vsock.py", VSOCK_PY.as_bytes()), ("slow.bin", &slow_data)],
    );
    println!("{}", run.output);
    run.assert_ok();
    assert_eq!(echo_svc.accepted.load(Ordering::Relaxed), CONNS as u64);
    for r in echo_svc.stop().into_iter().chain(slow_svc.stop()) {
        r.unwrap();
    }
    let stats = settled(&d, CONNS as u64 + 1);
    let moved = (CONNS * EACH + SLOW) as u64;
    assert!(c(&stats, "to_endpoint_bytes") >= moved, "{stats}");
    assert!(
        c(&stats, "to_host_bytes") >= (CONNS * EACH) as u64,
        "{stats}"
    );
    assert_eq!(c(&stats, "host_connects"), CONNS as u64 + 1, "{stats}");
    // The slow reader filled its 64 KiB buffer: the host waited for credit.
    assert!(c(&stats, "stalls_to_endpoint") > 0, "{stats}");
    assert_eq!(c(&stats, "protocol_errors"), 0, "{stats}");
    assert_eq!(c(&stats, "established"), 0, "{stats}");
    assert!(d.stop().success());
}

#[test]
fn vsock_host_closes_half_way_and_the_service_restarts() {
    const HALF: usize = 1 << 20;
    let (d, uds) = vsock_daemon("vsock-close", &[]);
    let data = pattern(4 * HALF, 31);
    let prefix = data[..HALF].to_vec();
    let path = service_path(&uds, 5000);
    let svc = Service::start(path.clone(), move |_, mut s| {
        let got = read_all(&mut s)?;
        if got != prefix {
            return Err(format!(
                "got {} bytes, want the {HALF}-byte prefix",
                got.len()
            ));
        }
        Ok(())
    });
    let script = format!(
        r#"{PRELUDE}
$VS half 5000 /job/data.bin {HALF} || fail "send half then close"
touch /job/half-done
wait_file stopped
if $VS send 5000 /job/data.bin 2>/job/refused.log; then fail "connected to a stopped service"; fi
cat /job/refused.log
check "refused with a reset" grep -q "ConnectionResetError\|Connection reset" /job/refused.log
touch /job/refused
wait_file restarted
out=$($VS send 5000 /job/data.bin) || fail "send to the restarted service"
echo "$out"
# The endpoint's supervisor resets everything while a connection is open.
out=$($VS hold 5000 /job/hold) || fail "hold a connection"
echo "held connection ended: $out"
check "TRANSPORT_RESET reset the host socket" [ "$out" = reset ]
$VS echo-many 2 5001 4096 || fail "a new connection after the transport reset"
"#
    );
    let g = Guest::new(&[&d]).spawn(
        "vsock-close",
        &script,
        &[("vsock.py", VSOCK_PY.as_bytes()), ("data.bin", &data)],
    );
    let job = g.job.clone();
    assert!(
        wait_job_file(&job, "half-done", Duration::from_secs(600)),
        "guest never sent"
    );
    // The half transfer ended with a close: the service saw exactly what was sent.
    let t = Instant::now();
    while svc.accepted.load(Ordering::Relaxed) < 1 && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for r in svc.stop() {
        r.unwrap();
    }
    std::fs::write(job.join("stopped"), b"").unwrap();
    assert!(
        wait_job_file(&job, "refused", Duration::from_secs(120)),
        "guest never tried the stopped service"
    );
    let whole = data.clone();
    let svc = Service::start(path, move |_, mut s| {
        let got = read_all(&mut s)?;
        if got != whole {
            return Err(format!(
                "restarted service got {} bytes, differing",
                got.len()
            ));
        }
        Ok(())
    });
    std::fs::write(job.join("restarted"), b"").unwrap();
    let echo_svc = Service::start(service_path(&uds, 5001), echo);
    // The held connection: RESET from a supervisor client while it is open.
    assert!(
        wait_job_file(&job, "hold.connected", Duration::from_secs(600)),
        "guest never held a connection"
    );
    let mut sup = UnixStream::connect(&uds).unwrap();
    sup.write_all(b"RESET\n").unwrap();
    let mut reply = String::new();
    sup.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "OK RESET\n");
    let run = g.wait();
    println!("{}", run.output);
    run.assert_ok();
    // The restarted service saw the whole transfer, then the held connection cut (its
    // handler reads what there is and compares, so it reports a short read: expected).
    let results = svc.stop();
    assert_eq!(results.len(), 2, "{results:?}");
    results[0].clone().unwrap();
    assert!(results[1].is_err(), "the held connection was not cut");
    for r in echo_svc.stop() {
        r.unwrap();
    }
    let stats = settled(&d, 5);
    assert_eq!(c(&stats, "refused"), 1, "{stats}");
    assert_eq!(c(&stats, "host_connects"), 5, "{stats}");
    assert_eq!(c(&stats, "transport_resets"), 1, "{stats}");
    assert_eq!(c(&stats, "established"), 0, "{stats}");
    assert_eq!(c(&stats, "protocol_errors"), 0, "{stats}");
    assert!(d.stop().success());
}

/// One exchange with the echo service on port 5000 and one endpoint-initiated transfer.
const EXCHANGE: &str = r#"
$VS echo-many 4 5000 65536 || fail "echo after $1"
"#;

#[test]
fn vsock_survives_driver_rebinds_and_a_qemu_restart() {
    let (mut d, uds) = vsock_daemon("vsock-restart", &[]);
    let svc = Service::start(service_path(&uds, 5000), echo);
    let script = format!(
        r#"{PRELUDE}
xchg() {{ {EXCHANGE} }}
xchg start
for i in 1 2 3; do
    echo "$addr" > /sys/bus/pci/drivers/virtio-pci/unbind || fail "unbind $i"
    echo "$addr" > /sys/bus/pci/drivers/virtio-pci/bind || fail "bind $i"
    for j in $(seq 100); do [ -e /dev/vsock ] && $VS echo-many 1 5000 16 >/dev/null 2>&1 && break; sleep 0.1; done
    xchg "rebind $i"
done
echo "rebound 3 times"
# A long transfer for the QEMU kill to interrupt.
touch /job/ready
$VS stream-send 5000 600
"#
    );
    let mut g1 = Guest::new(&[&d]).spawn(
        "vsock-restart-1",
        &script,
        &[("vsock.py", VSOCK_PY.as_bytes())],
    );
    assert!(
        g1.wait_for_file("ready", Duration::from_secs(600)),
        "first guest never got going:\n{}",
        std::fs::read_to_string(g1.job.join("output.log")).unwrap_or_default()
    );
    // Let the transfer run, then kill QEMU (not the harness) while it does.
    let (_, flowing) = d.wait_stats(Duration::from_secs(120), |s| {
        s.contains("vsock:") && Daemon::counter(s, "vsock", "established") >= 1
    });
    assert!(flowing, "the long transfer never started");
    let pat = format!("qemu-system.*{}", d.socket.display());
    let st = Command::new("pkill")
        .args(["-9", "-f", &pat])
        .status()
        .unwrap();
    assert!(st.success(), "no QEMU process matched {pat}");
    let r1 = g1.wait();
    println!("{}", r1.output);
    assert!(r1.output.contains("rebound 3 times"), "rebinds failed");
    assert!(
        d.alive(),
        "virtio-epf died with its host:\n{}",
        d.log_text()
    );
    let script2 = format!(
        r#"{PRELUDE}
xchg() {{ {EXCHANGE} }}
xchg "qemu restart"
"#
    );
    let r2 = Guest::new(&[&d]).run(
        "vsock-restart-2",
        &script2,
        &[("vsock.py", VSOCK_PY.as_bytes())],
    );
    println!("{}", r2.output);
    r2.assert_ok();
    for r in svc.stop() {
        // The connection cut by the QEMU kill ends with an error at the service or not at
        // all; every other one must have echoed cleanly.
        if let Err(e) = r {
            println!("service: {e}");
        }
    }
    let stats = settled(&d, 24);
    assert_eq!(c(&stats, "established"), 0, "{stats}");
    assert_eq!(Daemon::counter(&stats, "link", "clients"), 2, "{stats}");
    assert!(
        Daemon::counter(&stats, "function", "activations") >= 5,
        "{stats}"
    );
    assert_eq!(c(&stats, "protocol_errors"), 0, "{stats}");
    assert!(d.stop().success());
}

#[test]
fn vsock_refuses_the_legacy_layout() {
    let dir = support::scratch("vsock-legacy");
    let out = Command::new(env!("CARGO_BIN_EXE_virtio-epf"))
        .args(["vsock", "--vfio-user"])
        .arg(dir.join("ep.sock"))
        .args(["--guest-cid", "3", "--uds-path"])
        .arg(dir.join("v.sock"))
        .args(["--layout", "legacy"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "legacy layout accepted");
    assert!(err.contains("legacy"), "{err}");
    println!("{err}");
}
