//! The in-process fuzzing harness our fuzz tests share (the fuzzing campaign of
//! docs/security.md). It runs on the stable toolchain, as ordinary `cargo test` tests: no
//! libFuzzer, no nightly.
//!
//! * [`rng`]: a small seeded PRNG; every case has its own seed, printed when it fails, so a
//!   failure reproduces with `VIRTIO_EPF_FUZZ_REPLAY=<seed>`;
//! * [`settings`]: the environment knobs (time budget, campaign seed, replay);
//! * [`probe`]: the process's resident memory and open descriptors;
//! * [`panics`]: a panic hook that notices panics on any thread (a server or worker thread
//!   dying is a failure even if the test thread never sees it);
//! * [`corpus`]: the checked-in corpus of cases that once failed, replayed on every run;
//! * [`campaign`]: the loop: corpus, then generated cases until the budget runs out, each
//!   bounded in time by a watchdog, with resource bounds checked after every case and a report
//!   of executions per second.
//!
//! A fuzz target implements [`Target`]: generate a case, encode and decode it as text (the
//! corpus format), run it against the code under test with its own oracle.

pub mod campaign;
pub mod corpus;
pub mod panics;
pub mod probe;
pub mod rng;
pub mod settings;

pub use campaign::{Bounds, Campaign, Report, Target};

/// Tests of this crate that count process-wide things (panics, open descriptors, resident
/// memory) run one at a time: another test's files or allocations would be counted too.
#[cfg(test)]
pub(crate) static PROCESS_WIDE: std::sync::Mutex<()> = std::sync::Mutex::new(());
pub use rng::Rng;
pub use settings::Settings;
