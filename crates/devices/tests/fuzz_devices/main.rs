//! The devices' request fuzzer (issue 10): generated host behaviour against the real rng,
//! console, blk and net devices behind the real virtio-pci function on the loopback
//! controller. Cases are request grammars with random values (blk types, sectors, lengths
//! and discard segments; net headers, frames and control commands; console and rng buffers)
//! in chains that are cut, aliased, indirect, or broken on purpose, and wild cases where the
//! host scribbles over its own rings. For every case:
//!
//! * the device never panics (any thread), never touches memory outside host RAM (the
//!   loopback counts attempts: zero), never raises an interrupt the host did not enable;
//! * in a clean case (`oracle.rs`) it completes every request exactly as its contract says
//!   (used lengths, statuses, data, acks, what reaches the backend or the image), or sets
//!   DEVICE_NEEDS_RESET exactly when a chain is one it must refuse, within 10 s;
//! * whatever happened, it completes the reset that follows;
//! * the process's resident memory stays within 64 MiB of its size after the warm-up, and its
//!   open descriptors at their count after the warm-up.
//!
//! Budget: `VIRTIO_EPF_FUZZ_SECS` per device (default 8 s); see `epf_fuzz::settings` for the
//! seed and replay knobs. Cases that ever failed live in `corpus/<device>.txt` and are
//! replayed first. The net device needs root: it runs in a network namespace of its own with
//! a TAP it creates there.

mod blk_model;
mod case;
mod exec;
mod gen;
mod layout;
mod net_model;
mod oracle;
mod rigs;
mod walker;

use case::Case;
use epf_fuzz::{Bounds, Campaign, Rng, Target};
use layout::Kind;
use std::sync::Mutex;
use std::time::Duration;

/// The campaigns measure the whole process: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Device(exec::Runner);

impl Target for Device {
    type Case = Case;

    fn generate(&mut self, rng: &mut Rng) -> Case {
        gen::case(rng, &self.0.ctx)
    }

    fn encode(&self, case: &Case) -> String {
        case.encode()
    }

    fn decode(&self, text: &str) -> Result<Case, String> {
        Case::decode(text)
    }

    fn run(&mut self, case: &Case) -> Result<u64, String> {
        self.0.run(case)
    }
}

fn fuzz(kind: Kind, name: &str, corpus: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut target = Device(exec::Runner::new(kind));
    let campaign = Campaign {
        name: format!("{name} device"),
        unit: "requests".into(),
        command: format!("cargo test -p epf-devices --test fuzz_devices fuzz_{name}"),
        default_secs: 8.0,
        bounds: Bounds {
            rss_growth_kib: 64 << 10,
            fd_growth: 0,
            case_time: exec::SETTLE * 3,
        },
        warmup_cases: 30,
    };
    let report = campaign.run(&mut target, corpus);
    let t = target.0.tally;
    epf_fuzz::campaign::say(&format!(
        "fuzz {name} device: {} clean and {} wild cases, {} chains made available, {} \
         completed, {} times DEVICE_NEEDS_RESET, {} feature sets refused",
        t.clean, t.wild, t.chains, t.completed, t.needs_reset, t.refused_features
    ));
    assert!(report.cases + report.corpus > 0, "no case ran");
    assert!(
        t.clean > 0 || report.cases < 10,
        "no clean case: the oracle never checked anything"
    );
}

#[test]
fn fuzz_rng() {
    fuzz(Kind::Rng, "rng", include_str!("corpus/rng.txt"));
}

#[test]
fn fuzz_console() {
    fuzz(Kind::Console, "console", include_str!("corpus/console.txt"));
}

#[test]
fn fuzz_blk() {
    fuzz(Kind::Blk, "blk", include_str!("corpus/blk.txt"));
}

/// In a network namespace of its own (the TAP exists only there, for this thread and the
/// device's).
#[test]
fn fuzz_net() {
    let t = std::thread::Builder::new()
        .name("fuzz-net".into())
        .spawn(|| {
            // SAFETY: unshare(2) with CLONE_NEWNET only changes this thread's network
            // namespace (and that of what it starts).
            let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                r,
                0,
                "unshare(CLONE_NEWNET) (the net fuzzer needs root): {}",
                std::io::Error::last_os_error()
            );
            fuzz(Kind::Net, "net", include_str!("corpus/net.txt"));
        })
        .expect("spawn the net fuzzer");
    if let Err(p) = t.join() {
        std::panic::resume_unwind(p);
    }
    let _ = Duration::ZERO;
}
