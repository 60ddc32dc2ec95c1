//! Support for the endpoint-side rig tests: the module build, job directories, running
//! harness/run-rig.sh and reading what both VMs and the link left behind.
//!
//! Nothing here skips: the harness cache and the modules (harness/build-modules.sh) are built
//! on first use, and a failure to build them fails the test with their message.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Two VMs per test: run them one test at a time on this 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A binary of the workspace in its release build, built if needed (`cargo build --release`
/// is cached; scripts/test.sh builds it first). The rig runs the link and the daemon as they
/// would run for real: every EP access to host memory is a round trip through the link, and
/// polled registers have timing bounds that an unoptimised poller in a TCG guest misses
/// five times more often.
pub fn release_binary(package: &str, name: &str) -> PathBuf {
    static BUILT: Mutex<()> = Mutex::new(());
    let _one = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .current_dir(repo())
        .args(["build", "-q", "--release", "-p", package])
        .status()
        .unwrap_or_else(|e| panic!("cargo build -p {package}: {e}"));
    assert!(st.success(), "cannot build {package}");
    // target/<profile>/<this test>'s sibling epf-link tells where the target directory is.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_epf-link"))
        .parent()
        .and_then(|d| d.parent())
        .expect("a target directory")
        .join("release")
        .join(name);
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

/// The link binary the rig runs (release build).
pub fn link_binary() -> PathBuf {
    release_binary("epf-link", "epf-link")
}

/// The module build (cached by harness/build-modules.sh): its output directory.
pub fn modules() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new(repo().join("harness/build-modules.sh"))
            .output()
            .expect("run harness/build-modules.sh");
        assert!(
            out.status.success(),
            "harness/build-modules.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = PathBuf::from(stdout.lines().last().expect("module dir").trim());
        assert!(
            dir.join("ep/sim-epc.ko").exists(),
            "{} has no modules",
            dir.display()
        );
        dir
    })
}

pub struct Run {
    pub ok: bool,
    pub ep: String,
    pub host: String,
    pub stats: String,
    pub log: String,
    /// The EP job directory (files the EP VM left there).
    pub ep_job: PathBuf,
}

impl Run {
    pub fn counter(&self, name: &str) -> u64 {
        self.stats
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no counter {name} in:\n{}", self.stats))
    }

    pub fn assert_ok(&self) {
        assert!(
            self.ok
                && !self.ep.contains("FAIL")
                && !self.host.contains("FAIL")
                && !self.host.is_empty(),
            "rig run failed\n--- EP VM ---\n{}\n--- host VM ---\n{}\n--- rig ---\n{}",
            self.ep,
            self.host,
            self.log
        );
    }
}

/// Runs the rig: `ep` and `host` are the job scripts' bodies (after the shared preamble),
/// `args` extra run-rig.sh arguments.
pub fn rig(name: &str, ep: &str, host: &str, args: &[&str]) -> Run {
    rig_with(name, ep, host, args, &[])
}

/// Like [`rig`], copying `ep_files` into the EP job directory too.
pub fn rig_with(name: &str, ep: &str, host: &str, args: &[&str], ep_files: &[&Path]) -> Run {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mods = modules();
    let work = std::env::temp_dir().join(format!("epf-rig-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let (ep_job, host_job) = (work.join("ep"), work.join("host"));
    for (job, sub, body) in [(&ep_job, "ep", ep), (&host_job, "host", host)] {
        std::fs::create_dir_all(job).unwrap();
        for f in std::fs::read_dir(mods.join(sub)).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, job.join(f.file_name().unwrap())).unwrap();
        }
        if sub == "ep" {
            for f in ep_files {
                std::fs::copy(f, job.join(f.file_name().unwrap())).unwrap();
            }
        }
        let script = format!("#!/bin/bash\n. /job/rig-guest.sh\n{body}\n");
        std::fs::write(job.join("run.sh"), script).unwrap();
        Command::new("chmod")
            .args(["+x", job.join("run.sh").to_str().unwrap()])
            .status()
            .unwrap();
    }
    let out = Command::new(repo().join("harness/run-rig.sh"))
        .arg("--work")
        .arg(work.join("w"))
        .arg("--ep-job")
        .arg(&ep_job)
        .arg("--host-job")
        .arg(&host_job)
        .arg("--link")
        .arg(link_binary())
        // pci-epf-test copies through the aperture without yielding; under TCG every 4-byte
        // MMIO access is a vfio-user round trip, so a 1 MiB transfer runs for seconds.
        .args(["--ep-opt", "--append", "--ep-opt", "nosoftlockup"])
        .args(["--timeout", "600"])
        .args(args)
        .output()
        .expect("run harness/run-rig.sh");
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    Run {
        ok: out.status.success(),
        ep: read(ep_job.join("output.log")),
        // A guest that rebooted itself saved its first boot's output in first-boot.log.
        host: read(host_job.join("first-boot.log")) + &read(host_job.join("output-all.log")),
        stats: read(work.join("w/link.stats")),
        log: String::from_utf8_lossy(&out.stderr).into_owned(),
        ep_job,
    }
}

/// QEMU options giving the host VM interrupt remapping, without which x86 Linux enables a
/// single MSI vector per function (multi-MSI needs remapping on x86).
pub const HOST_IR: &[&str] = &[
    "--host-qemu",
    "-device",
    "--host-qemu",
    "intel-iommu,intremap=on,dma-translation=off",
    "--host-qemu",
    "-machine",
    "--host-qemu",
    "kernel-irqchip=split",
];
