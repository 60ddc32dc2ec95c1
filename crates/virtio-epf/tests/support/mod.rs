//! Support for end-to-end tests against a real Linux host: start `virtio-epf` daemons, boot a
//! guest with the project's harness (harness/run-guest.sh: QEMU >= 10.1 with `vfio-user-pci`,
//! Debian kernel, TCG) attached to their sockets, run a script inside it and collect results.
//!
//! Nothing here skips: if the harness cannot be set up (it installs what it needs on first
//! use), the test fails with the harness's own message.

#![allow(dead_code)]

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Root of the repository.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "virtio-epf-e2e-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        name
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// A running `virtio-epf` process.
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub stats: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `virtio-epf <device> --vfio-user <dir>/ep.sock --stats-file ... <args>` and waits
    /// for its socket.
    pub fn start(name: &str, device: &str, args: &[&str]) -> Daemon {
        let dir = scratch(name);
        let socket = dir.join("ep.sock");
        let stats = dir.join("stats.txt");
        let log = dir.join("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_virtio-epf"))
            .arg(device)
            .arg("--vfio-user")
            .arg(&socket)
            .arg("--stats-file")
            .arg(&stats)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("daemon.stdout")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn virtio-epf");
        let mut d = Daemon {
            child: Some(child),
            dir,
            socket,
            stats,
            log,
        };
        let t = Instant::now();
        while !d.socket.exists() {
            assert!(d.alive(), "virtio-epf exited early:\n{}", d.log_text());
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "socket never appeared"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The latest counters, waiting until they are at least as new as `after`.
    pub fn stats_text(&self) -> String {
        // The daemon rewrites the file every 500 ms; wait for a fresh one.
        std::thread::sleep(Duration::from_millis(1200));
        std::fs::read_to_string(&self.stats).unwrap_or_default()
    }

    /// A counter from the stats text: `key=value` on the line starting with `line`.
    pub fn counter(text: &str, line: &str, key: &str) -> u64 {
        text.lines()
            .find(|l| l.starts_with(line))
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} on line {line:?} in stats:\n{text}"))
    }

    /// SIGTERM, wait, and return the exit status.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if t.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("virtio-epf did not exit on SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The QEMU arguments that attach this daemon's function behind root port `slot`.
    pub fn qemu_args(&self, slot: u32) -> Vec<String> {
        vec![
            "-device".into(),
            format!("pcie-root-port,id=rp{slot},bus=pcie.0,chassis={slot},slot={slot}"),
            "-device".into(),
            format!(
                r#"{{"driver":"vfio-user-pci","bus":"rp{slot}","socket":{{"path":"{}","type":"unix"}}}}"#,
                self.socket.display()
            ),
        ]
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Result of one guest run.
pub struct GuestRun {
    pub status: ExitStatus,
    pub output: String,
    pub job: PathBuf,
}

impl GuestRun {
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }

    /// Asserts the guest script succeeded, showing its output otherwise.
    pub fn assert_ok(&self) {
        assert_eq!(
            self.code(),
            0,
            "guest script failed (exit {}):\n{}\n--- console tail ---\n{}",
            self.code(),
            self.output,
            tail(&self.job.join("console.log"), 40)
        );
    }
}

fn tail(p: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<_> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Options for a guest run.
pub struct Guest<'a> {
    pub daemons: Vec<&'a Daemon>,
    pub smp: u32,
    pub mem: u32,
    pub timeout: u32,
    pub append: String,
}

impl<'a> Guest<'a> {
    pub fn new(daemons: &[&'a Daemon]) -> Self {
        Guest {
            daemons: daemons.to_vec(),
            smp: 1,
            mem: 1024,
            timeout: 240,
            append: String::new(),
        }
    }

    /// Starts the guest in the background; `script` becomes the job's run.sh (bash, with
    /// the helpers of [`GUEST_PRELUDE`]). Files in `files` are put in the job dir first.
    pub fn spawn(&self, name: &str, script: &str, files: &[(&str, &[u8])]) -> RunningGuest {
        let job = scratch(&format!("{name}-job"));
        std::fs::write(
            job.join("run.sh"),
            format!("#!/bin/bash\n{GUEST_PRELUDE}\n{script}\n"),
        )
        .unwrap();
        let mut perm = std::fs::metadata(job.join("run.sh")).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(job.join("run.sh"), perm).unwrap();
        for (f, data) in files {
            std::fs::write(job.join(f), data).unwrap();
        }
        let mut cmd = Command::new(repo().join("harness/run-guest.sh"));
        cmd.arg("--job-dir")
            .arg(&job)
            .arg("--quiet")
            .args(["--smp", &self.smp.to_string()])
            .args(["--mem", &self.mem.to_string()])
            .args(["--timeout", &self.timeout.to_string()]);
        if !self.append.is_empty() {
            cmd.args(["--append", &self.append]);
        }
        for d in &self.daemons {
            cmd.arg("--socket-dir").arg(&d.dir);
        }
        cmd.arg("--");
        for (i, d) in self.daemons.iter().enumerate() {
            cmd.args(d.qemu_args(i as u32 + 1));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("start harness/run-guest.sh");
        RunningGuest { child, job }
    }

    /// Runs the guest to completion.
    pub fn run(&self, name: &str, script: &str, files: &[(&str, &[u8])]) -> GuestRun {
        self.spawn(name, script, files).wait()
    }
}

/// A guest started with [`Guest::spawn`].
pub struct RunningGuest {
    child: Child,
    pub job: PathBuf,
}

impl RunningGuest {
    /// Waits for the guest to finish.
    pub fn wait(mut self) -> GuestRun {
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let status = self.child.wait().expect("wait for run-guest.sh");
        let out = std::fs::read_to_string(self.job.join("output.log")).unwrap_or_default();
        GuestRun {
            status,
            output: format!("{out}\n--- harness ---\n{err}"),
            job: self.job.clone(),
        }
    }

    /// Waits until the guest creates `file` in its job dir.
    pub fn wait_for_file(&mut self, file: &str, timeout: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if self.job.join(file).exists() {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.job.join(file).exists();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

/// Shell helpers available to every guest script.
pub const GUEST_PRELUDE: &str = r#"
set -u
fail() { echo "FAIL: $*"; exit 1; }
check() { local what="$1"; shift; "$@" || fail "$what"; echo "ok: $what"; }
# The PCI address of the first function with vendor:device $1.
pci_addr() {
    local d
    for d in /sys/bus/pci/devices/*; do
        if [ "$(cat "$d/vendor"):$(cat "$d/device")" = "$1" ]; then basename "$d"; return 0; fi
    done
    return 1
}
# The virtio device directory bound below PCI function $1.
virtio_dir() { ls -d /sys/bus/pci/devices/$1/virtio* 2>/dev/null | head -n1; }
# Feature bit $2 of virtio device dir $1 (the sysfs string is bit 0 first).
has_feature() { local f; f=$(cat "$1/features"); [ "${f:$2:1}" = 1 ]; }
"#;

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
