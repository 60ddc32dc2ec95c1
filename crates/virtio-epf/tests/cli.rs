//! The command's behaviour on bad input: one clear line on stderr, exit status 1 (2 for
//! usage errors, as clap does), nothing left behind.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_virtio-epf"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run virtio-epf")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_on_every_subcommand() {
    for sub in [
        &["--help"][..],
        &["rng", "--help"],
        &["console", "--help"],
        &["blk", "--help"],
        &["net", "--help"],
    ] {
        let o = run(sub);
        assert!(o.status.success(), "{sub:?}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("Usage:"), "{sub:?}: {out}");
    }
    let o = run(&["console", "--help"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("--backend"));
}

#[test]
fn unusable_socket_paths_give_one_line_errors() {
    let dir = std::env::temp_dir().join(format!("virtio-epf-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("no/such/dir/x.sock");
    let o = run(&["rng", "--vfio-user", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(
        e.starts_with("virtio-epf: ") && e.contains("does not exist"),
        "{e}"
    );

    let file = dir.join("regular-file");
    std::fs::write(&file, b"keep me").unwrap();
    let o = run(&["rng", "--vfio-user", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"keep me",
        "a regular file was clobbered"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &["rng"][..],
        &["rng", "--vfio-user", "/tmp/x.sock", "--queue-size", "100"],
        &[
            "console",
            "--vfio-user",
            "/tmp/x.sock",
            "--backend",
            "tcp:1",
        ],
        &["floppy", "--vfio-user", "/tmp/x.sock"],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains("error:"), "{args:?}: {}", stderr(&o));
    }
}

/// Endpoint-mode combinations that cannot work are refused at start with one line saying why,
/// and leave no socket behind.
#[test]
fn impossible_endpoint_modes_are_refused_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("virtio-epf-cli-modes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("ep.sock");
    let sock = sock.to_str().unwrap();
    for (args, why) in [
        (
            &["--registers", "poll"][..],
            "modern layout cannot be polled",
        ),
        (
            &[
                "--layout",
                "legacy",
                "--registers",
                "poll",
                "--notify",
                "doorbell",
            ],
            "inside the polled register page",
        ),
        (
            &["--layout", "legacy", "--registers", "poll", "--irq", "intx"],
            "ISR register to clear on read",
        ),
        (
            &["--irq", "msi"],
            "a controller with only MSI must use INTx",
        ),
    ] {
        let mut all = vec!["rng", "--vfio-user", sock];
        all.extend_from_slice(args);
        let o = run(&all);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("virtio-epf: ") && last.contains(why),
            "{args:?}: {err}"
        );
        assert!(
            !std::path::Path::new(sock).exists(),
            "{args:?} left its socket"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A daemon serving `args` (no host connects) with `--stats-file`, and the file's text once
/// it has the device's line; then SIGUSR1 must print the same lines on stderr, and SIGTERM
/// end it cleanly.
fn counters_of(sub: &str, device_line: &str, extra: &[&str]) -> (String, String) {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let dir = std::env::temp_dir().join(format!("virtio-epf-cli-{sub}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("ep.sock");
    let stats = dir.join("ep.stats");
    let mut child = Command::new(env!("CARGO_BIN_EXE_virtio-epf"))
        .args([sub, "--vfio-user", sock.to_str().unwrap()])
        .args(["--stats-file", stats.to_str().unwrap()])
        .args(extra)
        .env("RUST_LOG", "off")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start virtio-epf");
    let t = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&stats).unwrap_or_default();
        if text.lines().any(|l| l.starts_with(device_line)) {
            break text;
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("no `{device_line}` line in {}:\n{text}", stats.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!sock.exists(), "socket left behind");
    let printed = stderr(&out);
    std::fs::remove_dir_all(&dir).unwrap();
    (text, printed)
}

/// `key=value` of the line starting with `line`.
fn field<'a>(text: &'a str, line: &str, key: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(line))?
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn stats_file_and_sigusr1_show_the_device_counters() {
    let (text, printed) = counters_of("rng", "rng:", &[]);
    assert_eq!(field(&text, "rng:", "bytes"), Some("0"), "{text}");
    assert_eq!(field(&text, "rng:", "requests"), Some("0"), "{text}");
    for (line, key) in [
        ("function:", "activations"),
        ("queue 0:", "chains"),
        ("link:", "clients"),
    ] {
        assert_eq!(field(&text, line, key), Some("0"), "{line} {key}:\n{text}");
    }
    for line in ["function:", "queue 0:", "link:", "rng:"] {
        assert!(
            printed.lines().any(|l| l.starts_with(line)),
            "SIGUSR1 printed no `{line}` line:\n{printed}"
        );
    }

    let backend = std::env::temp_dir().join(format!("virtio-epf-cli-con-{}", std::process::id()));
    let spec = format!("unix:{}", backend.display());
    let (text, printed) = counters_of("console", "console:", &["--backend", &spec]);
    for key in ["to_backend", "to_host", "pending_out", "pending_in"] {
        assert_eq!(field(&text, "console:", key), Some("0"), "{key}:\n{text}");
    }
    assert!(field(&text, "queue 1:", "bytes").is_some(), "{text}");
    assert!(
        printed.lines().any(|l| l.starts_with("console:")),
        "{printed}"
    );
    let _ = std::fs::remove_file(&backend);
}

/// The endpoint-mode options take only their values; a wrong one is a usage error that lists
/// the valid ones, and `--help` lists them too.
#[test]
fn bad_endpoint_values_list_the_valid_ones() {
    for (opt, values) in [
        ("--layout", "modern, legacy"),
        ("--registers", "trap, poll"),
        ("--notify", "doorbell, poll"),
        ("--irq", "msix, msi, intx"),
    ] {
        let o = run(&["rng", "--vfio-user", "/tmp/x.sock", opt, "bogus"]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{opt}: {e}");
        assert!(
            e.contains(&format!("invalid value 'bogus' for '{opt} "))
                && e.contains(&format!("[possible values: {values}]")),
            "{opt}: {e}"
        );
    }
    let o = run(&["rng", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    for value in [
        "- modern:",
        "- legacy:",
        "- trap:",
        "- doorbell:",
        "- msix:",
        "- intx:",
    ] {
        assert!(help.contains(value), "--help lacks {value}:\n{help}");
    }
}

/// Every registered device has its subcommand, with its IDs in the help.
#[test]
fn help_lists_every_device_with_its_ids() {
    let o = run(&["--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    for (sub, ids) in [
        ("rng", "PCI 1af4:1044, legacy 1af4:1005"),
        ("console", "PCI 1af4:1043, legacy 1af4:1003"),
        ("blk", "PCI 1af4:1042, legacy 1af4:1001"),
        ("net", "PCI 1af4:1041, legacy 1af4:1000"),
        ("vsock", "PCI 1af4:1053)"),
        ("gpu", "PCI 1af4:1050)"),
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(sub))
            .unwrap_or_else(|| panic!("no {sub} in:\n{help}"));
        assert!(line.contains(ids), "{line}");
        let o = run(&[sub, "--help"]);
        assert!(o.status.success(), "{sub}: {}", stderr(&o));
    }
}

/// SIGTERM as soon as the socket exists, before the device is served: the daemon still shuts
/// down cleanly (exit 0, socket removed) rather than dying of the signal's default action.
#[test]
fn sigterm_during_start_up_is_a_clean_shutdown() {
    use std::time::{Duration, Instant};
    let dir = std::env::temp_dir().join(format!("virtio-epf-cli-early-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("ep.sock");
    for round in 0..20 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_virtio-epf"))
            .args(["rng", "--vfio-user", sock.to_str().unwrap()])
            .env("RUST_LOG", "off")
            .spawn()
            .expect("start virtio-epf");
        let t = Instant::now();
        while !sock.exists() {
            assert!(t.elapsed() < Duration::from_secs(20), "no socket");
            std::thread::sleep(Duration::from_micros(200));
        }
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert!(status.success(), "round {round}: {status}");
        assert!(!sock.exists(), "round {round}: socket left behind");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// virtio-gpu: modern layout only (refused with the reason), its options checked at parse
/// time, its counters in the stats file.
#[test]
fn gpu_is_modern_only_checks_its_options_and_reports_counters() {
    let o = run(&["gpu", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    for s in [
        "no legacy form",
        "--resolution",
        "--outputs",
        "--max-memory",
        "--vnc",
        "--screenshot",
    ] {
        assert!(help.contains(s), "{s} not in:\n{help}");
    }
    let dir = std::env::temp_dir().join(format!("virtio-epf-cli-gpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("ep.sock");
    let sock = sock.to_str().unwrap();
    let o = run(&["gpu", "--vfio-user", sock, "--layout", "legacy"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("no legacy layout"), "{err}");
    assert!(!std::path::Path::new(sock).exists(), "socket left behind");
    for bad in [
        &["--resolution", "10x10"][..],
        &["--resolution", "4096x100"],
        &["--resolution", "wide"],
        &["--outputs", "0"],
        &["--outputs", "17"],
        &["--max-memory", "0"],
        &["--vnc", "nowhere"],
    ] {
        let mut args = vec!["gpu", "--vfio-user", sock];
        args.extend_from_slice(bad);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
    }
    let o = run(&[
        "gpu",
        "--vfio-user",
        sock,
        "--screenshot",
        "/no/such/dir/s.png",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();

    let (text, printed) = counters_of("gpu", "gpu:", &["--outputs", "2"]);
    for key in [
        "create_2d",
        "transfer_2d",
        "flush",
        "bytes_transferred",
        "frames_flushed",
        "vnc_clients",
    ] {
        assert_eq!(field(&text, "gpu:", key), Some("0"), "{key}:\n{text}");
    }
    assert_eq!(field(&text, "cursor:", "visible"), Some("0"), "{text}");
    assert!(printed.lines().any(|l| l.starts_with("gpu:")), "{printed}");
}
