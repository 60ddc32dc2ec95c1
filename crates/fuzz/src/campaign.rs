//! The campaign loop. A run replays the corpus, then generates and runs cases until the time
//! budget is spent (or runs the single case `VIRTIO_EPF_FUZZ_REPLAY` names). Every case is
//! bounded in time by a watchdog: a case that hangs prints its seed and ends the
//! test process, since a hung thread cannot be stopped. After every case the campaign checks
//! that no thread panicked, the target's own checks, and the resource bounds: resident memory
//! (once the allocator has given back what it keeps free) and open descriptors may not grow
//! beyond their size after the warm-up by more than the target's [`Bounds`]. A failure prints the case seed, the command that replays it, and the
//! case as text ready to be added to the corpus. The report (cases, executions and their
//! rates, resources) goes straight to the test's standard error, so it appears in CI logs
//! even when the test passes.

use crate::corpus;
use crate::panics;
use crate::probe;
use crate::rng::{case_seed, Rng};
use crate::settings::Settings;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A fuzz target: a generator, a text form for the corpus, and the code under test with its
/// oracle.
pub trait Target {
    type Case;

    /// A case drawn from `rng`.
    fn generate(&mut self, rng: &mut Rng) -> Self::Case;

    /// The case as text (the corpus format).
    fn encode(&self, case: &Self::Case) -> String;

    /// A case from its text.
    fn decode(&self, text: &str) -> Result<Self::Case, String>;

    /// Runs the case against the code under test and checks what it did. Returns the number
    /// of executions (messages, requests, ...) the case made.
    fn run(&mut self, case: &Self::Case) -> Result<u64, String>;

    /// Checks once the case is over (e.g. descriptors back to their count before it).
    fn after_case(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Resource and time bounds a campaign asserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most the resident set may grow above its size after the warm-up, in KiB.
    pub rss_growth_kib: u64,
    /// Most the open descriptors may grow above their count after the warm-up, sampled
    /// between cases.
    pub fd_growth: usize,
    /// Longest one case may take; beyond it the case counts as a hang.
    pub case_time: Duration,
}

/// What a campaign did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    pub seed: u64,
    /// Generated cases run (corpus entries not included).
    pub cases: u64,
    /// Corpus entries replayed.
    pub corpus: u64,
    /// Executions of all cases, corpus included.
    pub execs: u64,
    /// Time spent on generated cases.
    pub elapsed: Duration,
    /// Resident set after the warm-up and its largest growth after it, in KiB.
    pub rss_base_kib: u64,
    pub rss_growth_kib: u64,
    /// Open descriptors after the warm-up and the most seen between cases after it.
    pub fds_base: usize,
    pub fds_max: usize,
}

/// Where a case came from, for messages.
enum Origin {
    Corpus(String),
    Seed(u64),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Corpus(t) => write!(f, "corpus entry `{t}`"),
            Origin::Seed(s) => write!(f, "case seed {s:#x}"),
        }
    }
}

/// How often a running campaign reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// Writes a line to the process's standard error (not the test harness's captured output).
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The case running now, watched for hangs.
#[derive(Default)]
struct Watched {
    current: Option<(String, Instant)>,
    stop: bool,
}

struct Watchdog {
    state: Arc<(Mutex<Watched>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(name: String, limit: Duration) -> Watchdog {
        let state = Arc::new((Mutex::new(Watched::default()), Condvar::new()));
        let s = state.clone();
        let thread = std::thread::Builder::new()
            .name("fuzz-watchdog".into())
            .spawn(move || {
                let (lock, cond) = &*s;
                let mut w = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if w.stop {
                        return;
                    }
                    if let Some((origin, started)) = &w.current {
                        if started.elapsed() > limit {
                            say(&format!(
                                "fuzz {name}: HANG: {origin} still running after {limit:?} \
                                 (replay it with VIRTIO_EPF_FUZZ_REPLAY=<its seed>)"
                            ));
                            std::process::exit(101);
                        }
                    }
                    w = cond
                        .wait_timeout(w, Duration::from_millis(100))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            })
            .expect("spawn the fuzz watchdog");
        Watchdog {
            state,
            thread: Some(thread),
        }
    }

    fn arm(&self, origin: &Origin) {
        let mut w = self.state.0.lock().unwrap_or_else(|e| e.into_inner());
        w.current = Some((origin.to_string(), Instant::now()));
    }

    fn disarm(&self) {
        self.state
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current = None;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        self.state.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

/// A fuzz campaign of one target.
pub struct Campaign {
    /// Name in messages, e.g. "vfio-user session".
    pub name: String,
    /// What one execution is, e.g. "messages".
    pub unit: String,
    /// How to run the test again, e.g. "cargo test -p epf-vfio-user --test fuzz_session".
    pub command: String,
    /// Budget when `VIRTIO_EPF_FUZZ_SECS` is unset.
    pub default_secs: f64,
    pub bounds: Bounds,
    /// Generated cases before the resource baseline is taken (allocators and caches settle).
    pub warmup_cases: u64,
}

/// Running totals of one campaign.
struct Tally {
    execs: u64,
    rss_base: Option<u64>,
    fds_base: usize,
    rss_growth: u64,
    fds_max: usize,
}

impl Campaign {
    /// Runs the campaign on `target` with the settings of the environment, corpus first;
    /// panics with a description of the first failure. Returns the report (also printed).
    pub fn run<T: Target>(&self, target: &mut T, corpus_file: &str) -> Report {
        let settings = Settings::from_env(self.default_secs)
            .unwrap_or_else(|e| panic!("fuzz {}: bad setting: {e}", self.name));
        self.run_with(settings, target, corpus_file)
    }

    /// [`run`](Self::run) with explicit settings.
    pub fn run_with<T: Target>(
        &self,
        settings: Settings,
        target: &mut T,
        corpus_file: &str,
    ) -> Report {
        panics::install();
        let name = &self.name;
        say(&format!(
            "fuzz {name}: campaign seed {:#x}, budget {:.1} s per target \
             (VIRTIO_EPF_FUZZ_SEED, VIRTIO_EPF_FUZZ_SECS)",
            settings.seed,
            settings.budget.as_secs_f64()
        ));
        let watchdog = Watchdog::start(name.clone(), self.bounds.case_time);
        let mut tally = Tally {
            execs: 0,
            rss_base: None,
            fds_base: 0,
            rss_growth: 0,
            fds_max: 0,
        };

        let entries =
            corpus::parse(corpus_file).unwrap_or_else(|e| panic!("fuzz {name}: corpus: {e}"));
        for e in &entries {
            let case = target
                .decode(&e.text)
                .unwrap_or_else(|err| panic!("fuzz {name}: corpus entry `{}`: {err}", e.title));
            self.one(
                target,
                &watchdog,
                Origin::Corpus(e.title.clone()),
                &case,
                &mut tally,
            );
        }
        if !entries.is_empty() {
            say(&format!(
                "fuzz {name}: corpus: {} entries replayed, all pass",
                entries.len()
            ));
        }

        let start = Instant::now();
        let mut last_progress = start;
        let mut cases = 0u64;
        let seeds: Box<dyn Iterator<Item = u64>> = match settings.replay {
            Some(s) => Box::new(std::iter::once(s)),
            None => Box::new((0u64..).map(|i| case_seed(settings.seed, i))),
        };
        for seed in seeds {
            if settings.replay.is_none() && start.elapsed() >= settings.budget {
                break;
            }
            let mut rng = Rng::new(seed);
            let case =
                match std::panic::catch_unwind(AssertUnwindSafe(|| target.generate(&mut rng))) {
                    Ok(c) => c,
                    Err(p) => self.fail(
                        &Origin::Seed(seed),
                        "(not generated)",
                        &format!("the generator panicked: {}", panic_message(p.as_ref())),
                    ),
                };
            self.one(target, &watchdog, Origin::Seed(seed), &case, &mut tally);
            cases += 1;
            if let Err(e) = self.check_resources(cases, &mut tally) {
                self.fail(&Origin::Seed(seed), &target.encode(&case), &e);
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                say(&format!(
                    "fuzz {name}: {:.0} s: {cases} cases, {} {}, resident memory {} KiB \
                     (baseline {} KiB)",
                    start.elapsed().as_secs_f64(),
                    tally.execs,
                    self.unit,
                    probe::rss_kib(),
                    tally.rss_base.unwrap_or(0)
                ));
            }
        }
        drop(watchdog);
        let elapsed = start.elapsed();
        let report = Report {
            seed: settings.seed,
            cases,
            corpus: entries.len() as u64,
            execs: tally.execs,
            elapsed,
            rss_base_kib: tally.rss_base.unwrap_or(0),
            rss_growth_kib: tally.rss_growth,
            fds_base: tally.fds_base,
            fds_max: tally.fds_max,
        };
        self.print(&report);
        report
    }

    /// Runs one case with all checks; panics on failure.
    fn one<T: Target>(
        &self,
        target: &mut T,
        watchdog: &Watchdog,
        origin: Origin,
        case: &T::Case,
        tally: &mut Tally,
    ) {
        let panics_before = panics::count();
        watchdog.arm(&origin);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| target.run(case)))
            .unwrap_or_else(|p| Err(format!("panicked: {}", panic_message(p.as_ref()))))
            .and_then(|n| target.after_case().map(|()| n));
        watchdog.disarm();
        let result = result.and_then(|n| {
            if panics::count() != panics_before {
                Err(format!(
                    "a thread panicked: {}",
                    panics::first().unwrap_or_default()
                ))
            } else {
                Ok(n)
            }
        });
        match result {
            Ok(n) => tally.execs += n,
            Err(e) => self.fail(&origin, &target.encode(case), &e),
        }
    }

    fn check_resources(&self, cases: u64, tally: &mut Tally) -> Result<(), String> {
        let (mut rss, fds) = (probe::rss_kib(), probe::open_fds());
        let Some(base) = tally.rss_base else {
            if cases >= self.warmup_cases {
                probe::release_free_memory();
                let rss = probe::rss_kib();
                tally.rss_base = Some(rss);
                tally.fds_base = fds;
                tally.fds_max = fds;
            }
            return Ok(());
        };
        if rss > base + self.bounds.rss_growth_kib {
            // Perhaps only what the allocator keeps after a large case: give it back first.
            probe::release_free_memory();
            rss = probe::rss_kib();
        }
        tally.rss_growth = tally.rss_growth.max(rss.saturating_sub(base));
        tally.fds_max = tally.fds_max.max(fds);
        if rss > base + self.bounds.rss_growth_kib {
            return Err(format!(
                "resident memory grew from {base} KiB to {rss} KiB, more than the bound of {} KiB",
                self.bounds.rss_growth_kib
            ));
        }
        if fds > tally.fds_base + self.bounds.fd_growth {
            return Err(format!(
                "open descriptors grew from {} to {fds}, more than the bound of {}",
                tally.fds_base, self.bounds.fd_growth
            ));
        }
        Ok(())
    }

    fn fail(&self, origin: &Origin, text: &str, msg: &str) -> ! {
        let replay = match origin {
            Origin::Seed(s) => format!("VIRTIO_EPF_FUZZ_REPLAY={s:#x} {}", self.command),
            Origin::Corpus(_) => self.command.clone(),
        };
        say(&format!(
            "fuzz {}: FAILED on {origin}: {msg}\nreplay: {replay}\n\
             case (add it to the corpus under a `== title` line):\n{text}",
            self.name
        ));
        panic!("fuzz {}: {origin}: {msg}", self.name);
    }

    fn print(&self, r: &Report) {
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        say(&format!(
            "fuzz {}: {} cases, {} {} ({} corpus entries included) in {:.1} s: {:.0} cases/s, \
             {:.0} {}/s",
            self.name,
            r.cases,
            r.execs,
            self.unit,
            r.corpus,
            secs,
            r.cases as f64 / secs,
            r.execs as f64 / secs,
            self.unit
        ));
        if r.rss_base_kib > 0 {
            say(&format!(
                "fuzz {}: resident memory {} KiB after {} warm-up cases, grew at most {} KiB \
                 (bound {} KiB); open descriptors {} after warm-up, at most {} (bound +{})",
                self.name,
                r.rss_base_kib,
                self.warmup_cases,
                r.rss_growth_kib,
                self.bounds.rss_growth_kib,
                r.fds_base,
                r.fds_max,
                self.bounds.fd_growth
            ));
        } else {
            say(&format!(
                "fuzz {}: fewer than {} cases: no resource baseline",
                self.name, self.warmup_cases
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target whose cases are numbers; case 13 fails.
    struct Numbers {
        ran: Vec<u64>,
        hold: Vec<Vec<u8>>,
        grow: bool,
    }

    impl Target for Numbers {
        type Case = u64;
        fn generate(&mut self, rng: &mut Rng) -> u64 {
            rng.below(10)
        }
        fn encode(&self, c: &u64) -> String {
            format!("n {c}\n")
        }
        fn decode(&self, t: &str) -> Result<u64, String> {
            t.trim()
                .strip_prefix("n ")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("bad case {t:?}"))
        }
        fn run(&mut self, c: &u64) -> Result<u64, String> {
            self.ran.push(*c);
            if self.grow {
                self.hold.push(std::hint::black_box(vec![1u8; 1 << 20]));
            }
            if *c == 13 {
                return Err("unlucky".into());
            }
            Ok(2)
        }
    }

    /// The campaigns of these tests count panics, descriptors and memory process-wide.
    use crate::PROCESS_WIDE as SERIAL;

    fn settings(secs: f64) -> Settings {
        Settings {
            budget: Duration::from_secs_f64(secs),
            seed: 1,
            replay: None,
        }
    }

    fn campaign(rss_growth_kib: u64, name: &str) -> Campaign {
        Campaign {
            name: name.into(),
            unit: "runs".into(),
            command: "cargo test -p epf-fuzz".into(),
            default_secs: 0.0,
            bounds: Bounds {
                rss_growth_kib,
                fd_growth: 64,
                case_time: Duration::from_secs(30),
            },
            warmup_cases: 4,
        }
    }

    fn numbers(grow: bool) -> Numbers {
        Numbers {
            ran: Vec::new(),
            hold: Vec::new(),
            grow,
        }
    }

    #[test]
    fn corpus_first_then_generated_cases_within_the_budget() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut t = numbers(false);
        let start = Instant::now();
        let r = campaign(1 << 20, "self-test").run_with(
            settings(0.2),
            &mut t,
            "== two\nn 2\n== three\nn 3\n",
        );
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(r.cases > 0);
        assert_eq!(&t.ran[..2], &[2, 3]);
        assert_eq!(r.corpus, 2);
        assert_eq!(r.execs, 2 * (r.cases + 2));
        assert!(t.ran[2..].iter().all(|&c| c < 10));
    }

    #[test]
    fn a_failing_corpus_entry_fails_the_campaign() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut t = numbers(false);
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
            campaign(1 << 20, "self-test (this failure is expected)").run_with(
                settings(0.0),
                &mut t,
                "== bad luck\nn 13\n",
            )
        }));
        let msg = panic_message(r.unwrap_err().as_ref());
        assert!(msg.contains("bad luck") && msg.contains("unlucky"), "{msg}");
    }

    #[test]
    fn memory_growth_beyond_the_bound_fails() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut t = numbers(true);
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
            campaign(8 << 10, "self-test (this failure is expected)").run_with(
                settings(30.0),
                &mut t,
                "",
            )
        }));
        let msg = panic_message(r.unwrap_err().as_ref());
        assert!(msg.contains("resident memory grew"), "{msg}");
    }
}
