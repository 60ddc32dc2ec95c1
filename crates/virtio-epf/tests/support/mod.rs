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

// ---- Endpoint mode of a suite run ----------------------------------------------------------

/// The endpoint mode every device daemon of a suite runs in, chosen by the environment
/// variable `VIRTIO_EPF_E2E_MODE` (scripts/test.sh runs the device suites once per mode). An
/// unknown value fails the test rather than silently running the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Modern layout, trapped registers, doorbell notify page, MSI-X.
    Default,
    /// Bare endpoint: legacy layout in a memory BAR, polled registers and notifications.
    LegacyPoll,
    /// Legacy layout (no vendor capabilities) with trapped registers and a doorbell.
    LegacyDoorbell,
    /// Modern layout; host memory only through four 64 KiB outbound windows.
    Windows,
    /// Modern layout offering split rings only (`--rings split`); every other modern mode
    /// offers VIRTIO_F_RING_PACKED, which Linux negotiates.
    Split,
}

/// Options that select an endpoint mode; a test that passes any of them chose its own mode.
const MODE_OPTIONS: &[&str] = &[
    "--layout",
    "--registers",
    "--notify",
    "--irq",
    "--host-windows",
    "--rings",
];

impl Mode {
    pub fn current() -> Mode {
        match std::env::var("VIRTIO_EPF_E2E_MODE").as_deref() {
            Err(_) | Ok("") | Ok("default") => Mode::Default,
            Ok("legacy-poll") => Mode::LegacyPoll,
            Ok("legacy-doorbell") => Mode::LegacyDoorbell,
            Ok("windows") => Mode::Windows,
            Ok("split") => Mode::Split,
            Ok(other) => panic!(
                "VIRTIO_EPF_E2E_MODE={other:?}: expected default, legacy-poll, legacy-doorbell, windows or split"
            ),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::LegacyPoll => "legacy-poll",
            Mode::LegacyDoorbell => "legacy-doorbell",
            Mode::Windows => "windows",
            Mode::Split => "split",
        }
    }

    /// The daemon options of this mode.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Mode::Default => &[],
            Mode::LegacyPoll => &[
                "--layout",
                "legacy",
                "--registers",
                "poll",
                "--notify",
                "poll",
            ],
            Mode::LegacyDoorbell => &[
                "--layout",
                "legacy",
                "--registers",
                "trap",
                "--notify",
                "doorbell",
            ],
            Mode::Windows => &["--host-windows", "4", "--window-size", "65536"],
            Mode::Split => &["--rings", "split"],
        }
    }

    pub fn legacy(self) -> bool {
        matches!(self, Mode::LegacyPoll | Mode::LegacyDoorbell)
    }

    /// Whether the guest must negotiate packed rings (VIRTIO_F_RING_PACKED): every modern
    /// mode but `split` offers them, and Linux's virtio_ring takes them.
    pub fn packed(self) -> bool {
        !self.legacy() && self != Mode::Split
    }

    /// Shell lines for the guest: `E2E_MODE`, `LEGACY` (0/1), `PACKED` (0/1: whether
    /// VIRTIO_F_RING_PACKED must be negotiated, see `check_rings`) and the vendor:device ID of each
    /// device in this mode (`ID_NET`, `ID_BLK`, `ID_CONSOLE`, `ID_RNG`): modern IDs are
    /// 0x1040 + type, transitional (legacy) ones 0x1000, 0x1001, 0x1003, 0x1005.
    pub fn guest_vars(self) -> String {
        let (net, blk, console, rng) = if self.legacy() {
            (0x1000, 0x1001, 0x1003, 0x1005)
        } else {
            (0x1041, 0x1042, 0x1043, 0x1044)
        };
        format!(
            "E2E_MODE={}\nLEGACY={}\nPACKED={}\nID_NET=0x1af4:{net:#06x}\nID_BLK=0x1af4:{blk:#06x}\n\
             ID_CONSOLE=0x1af4:{console:#06x}\nID_RNG=0x1af4:{rng:#06x}\n",
            self.name(),
            u8::from(self.legacy()),
            u8::from(self.packed())
        )
    }

    /// Whether [`Mode::assert_counters`] checks anything in this mode.
    pub fn checks_counters(self) -> bool {
        matches!(self, Mode::LegacyPoll | Mode::Windows)
    }

    /// Asserts what the counters must show for a device that served a guest in this mode:
    /// polled registers saw zero trapped BAR accesses; windowed access used at most four
    /// windows and had to remap.
    pub fn assert_counters(self, stats: &str) {
        match self {
            Mode::LegacyPoll => {
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
            Mode::Windows => {
                assert!(Daemon::counter(stats, "windows", "misses") > 0, "{stats}");
                assert!(Daemon::counter(stats, "windows", "mapped") <= 4, "{stats}");
            }
            Mode::Default | Mode::LegacyDoorbell | Mode::Split => {}
        }
    }
}

/// A running `virtio-epf` process.
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub stats: PathBuf,
    pub log: PathBuf,
    /// The suite mode it was started in (None: the test chose its options itself).
    pub mode: Option<Mode>,
}

impl Daemon {
    /// Starts `virtio-epf <device> --vfio-user <dir>/ep.sock --stats-file ... <args>` and waits
    /// for its socket.
    pub fn start(name: &str, device: &str, args: &[&str]) -> Daemon {
        Self::launch(
            Command::new(env!("CARGO_BIN_EXE_virtio-epf")),
            name,
            device,
            args,
        )
    }

    /// Runs `cmd` (the virtio-epf binary, possibly wrapped) with the daemon arguments.
    ///
    /// Device daemons get the options of the suite's [`Mode`] unless `args` choose a mode.
    fn launch(mut cmd: Command, name: &str, device: &str, args: &[&str]) -> Daemon {
        let dir = scratch(name);
        let chose_mode = args.iter().any(|a| MODE_OPTIONS.contains(a));
        let mode =
            (!chose_mode && ["rng", "console", "blk", "net"].contains(&device)).then(Mode::current);
        let socket = dir.join("ep.sock");
        let stats = dir.join("stats.txt");
        let log = dir.join("daemon.log");
        let child = cmd
            .arg(device)
            .arg("--vfio-user")
            .arg(&socket)
            .arg("--stats-file")
            .arg(&stats)
            .args(args)
            .args(mode.map_or(&[][..], Mode::args))
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
            mode,
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

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Open descriptors and resident memory (KiB) of the process now, from /proc.
    pub fn footprint(&self) -> (usize, u64) {
        let pid = self.pid().expect("a running daemon");
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0);
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        (fds, rss)
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

    /// Checks the suite mode's counters (if a host ever connected), then SIGTERM, wait, and
    /// return the exit status.
    pub fn stop(mut self) -> ExitStatus {
        if let Some(mode) = self
            .mode
            .filter(|m| matches!(m, Mode::LegacyPoll | Mode::Windows))
        {
            let stats = self.stats_text();
            if Daemon::counter(&stats, "link", "clients") > 0 {
                mode.assert_counters(&stats);
            }
        }
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
    /// Logs of the daemons the guest was given, shown when the run fails.
    pub daemon_logs: Vec<PathBuf>,
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
            "guest script failed (exit {}):\n{}\n--- console tail ---\n{}{}",
            self.code(),
            self.output,
            tail(&self.job.join("console.log"), 40),
            self.daemon_logs
                .iter()
                .map(|l| format!("\n--- {} (tail) ---\n{}", l.display(), tail(l, 30)))
                .collect::<String>()
        );
    }
}

fn tail(p: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<_> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The guest kernel (`harness/run-guest.sh --kernel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestKernel {
    /// trixie's linux-image-amd64 (6.12).
    Default,
    /// trixie-backports' linux-image-amd64 (7.x): negotiates VIRTIO_F_IN_ORDER, 6.12 does not.
    Backports,
}

impl GuestKernel {
    fn arg(self) -> &'static str {
        match self {
            GuestKernel::Default => "default",
            GuestKernel::Backports => "bpo",
        }
    }
}

/// Options for a guest run.
pub struct Guest<'a> {
    pub daemons: Vec<&'a Daemon>,
    pub smp: u32,
    pub mem: u32,
    pub timeout: u32,
    pub append: String,
    /// A guest reboot restarts the guest (run.sh runs again) instead of ending the run.
    pub allow_reboot: bool,
    /// More QEMU arguments (after the daemons' devices), e.g. QEMU's own devices.
    pub qemu_args: Vec<String>,
    /// More directories QEMU may reach at the same path (e.g. for a QMP socket).
    pub socket_dirs: Vec<PathBuf>,
    pub kernel: GuestKernel,
}

impl<'a> Guest<'a> {
    pub fn new(daemons: &[&'a Daemon]) -> Self {
        Guest {
            daemons: daemons.to_vec(),
            smp: 1,
            mem: 1024,
            timeout: 240,
            append: String::new(),
            allow_reboot: false,
            qemu_args: Vec::new(),
            socket_dirs: Vec::new(),
            kernel: GuestKernel::Default,
        }
    }

    /// Boots `kernel` instead of the default one.
    pub fn kernel(mut self, kernel: GuestKernel) -> Self {
        self.kernel = kernel;
        self
    }

    /// Starts the guest in the background; `script` becomes the job's run.sh (bash, with
    /// the helpers of [`GUEST_PRELUDE`]). Files in `files` are put in the job dir first.
    pub fn spawn(&self, name: &str, script: &str, files: &[(&str, &[u8])]) -> RunningGuest {
        let job = scratch(&format!("{name}-job"));
        std::fs::write(
            job.join("run.sh"),
            format!(
                "#!/bin/bash\n{GUEST_PRELUDE}\n{}\n{script}\n",
                Mode::current().guest_vars()
            ),
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
            .args(["--timeout", &self.timeout.to_string()])
            .args(["--kernel", self.kernel.arg()]);
        if !self.append.is_empty() {
            cmd.args(["--append", &self.append]);
        }
        if self.allow_reboot {
            cmd.arg("--allow-reboot");
        }
        for d in &self.daemons {
            cmd.arg("--socket-dir").arg(&d.dir);
        }
        for d in &self.socket_dirs {
            cmd.arg("--socket-dir").arg(d);
        }
        cmd.arg("--");
        for (i, d) in self.daemons.iter().enumerate() {
            cmd.args(d.qemu_args(i as u32 + 1));
        }
        cmd.args(&self.qemu_args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("start harness/run-guest.sh");
        RunningGuest {
            child,
            job,
            daemon_logs: self.daemons.iter().map(|d| d.log.clone()).collect(),
        }
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
    daemon_logs: Vec<PathBuf>,
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
            daemon_logs: self.daemon_logs.clone(),
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
lacks_feature() { ! has_feature "$@"; }
# The ring format of the virtio device below PCI function $1 is the one the suite's mode
# expects: VIRTIO_F_RING_PACKED (bit 34) negotiated when PACKED=1, absent otherwise; with
# the modern layout also VIRTIO_F_NOTIFICATION_DATA (bit 38).
check_rings() {
    local v; v=$(virtio_dir "$1"); [ -n "$v" ] || fail "no virtio device below $1"
    if [ "$PACKED" = 1 ]; then
        check "VIRTIO_F_RING_PACKED negotiated ($1)" has_feature "$v" 34
    else
        check "split rings ($1): VIRTIO_F_RING_PACKED not negotiated" lacks_feature "$v" 34
    fi
    # Notification data: offered with the modern layout; Linux takes it since 6.4.
    if [ "$LEGACY" = 0 ]; then
        check "VIRTIO_F_NOTIFICATION_DATA negotiated ($1)" has_feature "$v" 38
    fi
}
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

// ---- Network namespaces (virtio-net tests) --------------------------------------------------

/// A network namespace created for one test, removed (with its TAPs) when dropped. Every
/// address a network test uses lives in here; nothing is sent anywhere else.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// Creates `epf-<pid>-<n>-<tag>` with `lo` up.
    pub fn new(tag: &str) -> NetNs {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "epf-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ns = NetNs { name };
        run_ok(Command::new("ip").args(["netns", "add", &ns.name]));
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A command running inside the namespace (`ip netns exec NS program ...`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// `ip ARGS` inside the namespace, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        run_ok(self.command("ip").args(args));
    }

    /// Creates TAP `name` (vnet_hdr; multi-queue if asked) with `mtu` and address `cidr`, up.
    pub fn add_tap(&self, name: &str, multi_queue: bool, mtu: u32, cidr: &str) {
        let mut args = vec!["tuntap", "add", "dev", name, "mode", "tap", "vnet_hdr"];
        if multi_queue {
            args.push("multi_queue");
        }
        self.ip(&args);
        self.ip(&["link", "set", name, "mtu", &mtu.to_string()]);
        self.ip(&["addr", "add", cidr, "dev", name]);
        self.ip(&["link", "set", name, "up"]);
    }

    /// A counter of interface `dev` from sysfs as seen inside the namespace.
    pub fn dev_stat(&self, dev: &str, stat: &str) -> u64 {
        let out = self
            .command("cat")
            .arg(format!("/sys/class/net/{dev}/statistics/{stat}"))
            .output()
            .expect("run cat in netns");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no {stat} for {dev}: {out:?}"))
    }

    /// Starts `harness/peer.sh ARGS` (a tool of the guest's chroot) in the namespace, stdout
    /// and stderr to `log`.
    pub fn spawn_peer(&self, args: &[&str], log: &Path) -> Peer {
        let f = std::fs::File::create(log).expect("peer log");
        let child = self
            .command(repo().join("harness/peer.sh"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("start harness/peer.sh");
        Peer {
            child,
            log: log.to_path_buf(),
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `cmd`, panicking with its output if it fails.
pub fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A peer process started with [`NetNs::spawn_peer`]; killed when dropped.
pub struct Peer {
    child: Child,
    pub log: PathBuf,
}

impl Peer {
    /// Waits up to `timeout` for the peer to exit; returns its log, or `None` on timeout
    /// (the peer is then killed).
    pub fn wait(mut self, timeout: Duration) -> Option<String> {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The peer's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Like [`Daemon::start`], with the daemon running inside network namespace `ns`.
    pub fn start_in(ns: &NetNs, name: &str, device: &str, args: &[&str]) -> Daemon {
        Self::launch(
            ns.command(env!("CARGO_BIN_EXE_virtio-epf")),
            name,
            device,
            args,
        )
    }

    /// Polls the stats file (rewritten every 500 ms) until `pred` holds on it or `timeout`
    /// passes; returns the last text and whether `pred` held.
    pub fn wait_stats(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> (String, bool) {
        let t = Instant::now();
        loop {
            let s = std::fs::read_to_string(&self.stats).unwrap_or_default();
            if pred(&s) {
                return (s, true);
            }
            if t.elapsed() > timeout {
                return (s, false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

// ---- Console round trip (console tests in several endpoint modes) ---------------------------

/// Starts a console daemon whose backend is a Unix socket, with `extra` arguments.
pub fn console_daemon(name: &str, extra: &[&str]) -> (Daemon, PathBuf) {
    let tmp = scratch(&format!("{name}-backend"));
    let backend = tmp.join("console.sock");
    let backend_arg = format!("unix:{}", backend.display());
    let mut args = vec!["--backend", &backend_arg];
    args.extend_from_slice(extra);
    let d = Daemon::start(name, "console", &args);
    let t = Instant::now();
    while !backend.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "console backend socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (d, backend)
}

/// Moves `len` bytes guest -> backend and then `len` bytes backend -> guest over /dev/hvc0,
/// checking both byte for byte. `checks_before`/`checks_after` run in the guest around the
/// transfer (`$addr` is the console function's PCI address, found by `id`, e.g.
/// `0x1af4:0x1043`).
pub fn console_roundtrip(
    guest: &Guest<'_>,
    name: &str,
    backend: &Path,
    id: &str,
    len: usize,
    checks_before: &str,
    checks_after: &str,
) -> GuestRun {
    use std::io::{Read, Write};
    let stream =
        std::os::unix::net::UnixStream::connect(backend).expect("connect to console backend");
    stream
        .set_read_timeout(Some(Duration::from_secs(200)))
        .unwrap();
    let to_backend = pattern(len, 1);
    let to_guest = pattern(len, 2);
    let expected_in_guest = to_guest.clone();
    let script = format!(
        r#"
addr=$(pci_addr {id}) || fail "no {id} function"
echo "console function at $addr"
{checks_before}
[ -c /dev/hvc0 ] || fail "no /dev/hvc0"
# One descriptor held open for the whole transfer: a tty's settings reset on last close.
exec 3<>/dev/hvc0
stty -F /dev/hvc0 raw -echo
cat /job/to_backend.bin >&3 || fail "write to hvc0"
echo "sent {len} bytes"
head -c {len} <&3 > /job/recv.bin || fail "read from hvc0"
check "received {len} bytes" [ "$(wc -c < /job/recv.bin)" = {len} ]
{checks_after}
"#
    );
    let running = guest.spawn(name, &script, &[("to_backend.bin", &to_backend)]);
    // The backend side runs beside the guest: receive, compare, then answer.
    let mut backend_side = stream.try_clone().unwrap();
    let peer = std::thread::spawn(move || -> Result<(), String> {
        let mut got = vec![0u8; len];
        backend_side
            .read_exact(&mut got)
            .map_err(|e| format!("backend did not receive {len} bytes: {e}"))?;
        if got != to_backend {
            return Err("guest->backend data differs".into());
        }
        backend_side
            .write_all(&to_guest)
            .map_err(|e| format!("send to guest: {e}"))
    });
    let run = running.wait();
    // Unblocks the peer if the guest gave up early.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let peer = peer.join().unwrap();
    println!("{}", run.output);
    run.assert_ok();
    peer.unwrap();
    let recv = std::fs::read(run.job.join("recv.bin")).unwrap();
    assert_eq!(recv.len(), len);
    assert!(recv == expected_in_guest, "backend->guest data differs");
    run
}

// ---- Checksummed transfers (harness/xfer.py) -------------------------------------------------

/// The SHA-256 the line `prefix bytes=N sha256=H ...` of `out` reports; N must be `bytes`.
fn xfer_sha<'a>(out: &'a str, prefix: &str, bytes: usize) -> &'a str {
    let l = out
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{out}"));
    let value = |key: &str| {
        l.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    };
    assert_eq!(value("bytes"), Some(bytes.to_string().as_str()), "{l}");
    value("sha256").unwrap_or_else(|| panic!("no sha256 in {l}"))
}

/// Both directions of an `xfer.py` run carried `bytes` bytes intact: the guest's
/// `guest-sent`/`guest-recv` lines against the peer's `peer-recv`/`peer-sent`.
pub fn assert_xfer_intact(guest_out: &str, peer_out: &str, bytes: usize) {
    assert_eq!(
        xfer_sha(guest_out, "guest-sent", bytes),
        xfer_sha(peer_out, "peer-recv", bytes),
        "guest->peer data differs"
    );
    assert_eq!(
        xfer_sha(peer_out, "peer-sent", bytes),
        xfer_sha(guest_out, "guest-recv", bytes),
        "peer->guest data differs"
    );
}
