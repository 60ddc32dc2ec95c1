//! The vfio-user session fuzzer (issue 10): generated client sessions against the real
//! server, over its Unix socket, in this process. Every command and flag, bodies over 64
//! bytes, wrong sizes, garbage and truncated headers, fragmentation down to single bytes,
//! descriptors of every kind attached anywhere (memfds, files, eventfds, pipes, sockets,
//! `/dev/null`, directories). For every case the server must:
//!
//! * answer exactly as the protocol model (`model.rs`) predicts: one reply per command that
//!   wants one, in order, with the right errno, or end the session where the protocol says
//!   (framing errors, a refused first VERSION); never panic (any thread), never hang (each
//!   case has a deadline; `raise_irq` on another thread must never block);
//! * hold at most one descriptor per DMA mapping plus one per interrupt while the session
//!   runs, and none of the client's once it is over: the process's descriptor count returns
//!   exactly to where it was;
//! * keep the process's resident memory within 64 MiB of its size after the warm-up.
//!
//! Budget: `VIRTIO_EPF_FUZZ_SECS` (default 20 s); see `epf_fuzz::settings` for the seed and
//! replay knobs. Cases that ever failed live in `corpus.txt` and are replayed first.

#[path = "../common/mod.rs"]
mod common;

mod case;
mod exec;
mod gen;
mod model;
mod server;
mod wire;

use case::Case;
use epf_fuzz::probe::open_fds;
use epf_fuzz::{Bounds, Campaign, Rng, Target};
use std::path::PathBuf;
use std::time::Duration;

/// File systems whose files the server maps (tmpfs, hugetlbfs, ext2/3/4, xfs, btrfs): the
/// rule docs/security.md states for DMA_MAP.
const MAPPABLE_FS: [i64; 5] = [0x0102_1994, 0x9584_58f6, 0xef53, 0x5846_5342, 0x9123_683e];

fn fs_is_mappable(dir: &std::path::Path) -> bool {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: statfs fills a plain struct for a NUL-terminated path; zeroed is a valid start.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; both pointers are live for the call.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r == 0 && MAPPABLE_FS.contains(&(st.f_type as i64))
}

struct Session {
    server: server::Server,
    tmp: PathBuf,
    tmp_fs_ok: bool,
    clients: u64,
}

impl Session {
    fn new() -> Session {
        let tmp = std::env::temp_dir();
        Session {
            server: server::Server::start(),
            tmp_fs_ok: fs_is_mappable(&tmp),
            tmp,
            clients: 0,
        }
    }
}

impl Target for Session {
    type Case = Case;

    fn generate(&mut self, rng: &mut Rng) -> Case {
        gen::case(rng)
    }

    fn encode(&self, case: &Case) -> String {
        case.encode()
    }

    fn decode(&self, text: &str) -> Result<Case, String> {
        Case::decode(text)
    }

    fn run(&mut self, case: &Case) -> Result<u64, String> {
        let before = open_fds();
        let out = exec::run(case, &self.server.path, &self.tmp)?;
        self.clients += 1;
        self.server.wait_disconnects(self.clients)?;
        let (stream, _) = case.stream();
        let v = model::check(&stream, &out, self.tmp_fs_ok)?;
        // Both ends of the connection, one message's descriptors in flight, one per mapping
        // that may have been made, one per interrupt.
        let bound = before + 2 + wire::MAX_FDS + v.map_fds + model::IRQ_FDS;
        if out.fds_max > bound {
            return Err(format!(
                "{} descriptors open during the session, more than {bound} ({before} before, \
                 {} DMA maps with descriptors)",
                out.fds_max, v.map_fds
            ));
        }
        // The interrupt raiser may still hold an eventfd of the session for the length of
        // one `raise_irq` (it signals outside the lock): allow it that long, not a leak.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut after = open_fds();
        while after != before && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
            after = open_fds();
        }
        if after != before {
            return Err(format!(
                "{after} descriptors open 2 s after the session, {before} before: the server \
                 kept some"
            ));
        }
        self.server.check_raises()?;
        Ok(v.messages)
    }
}

#[test]
fn fuzz_vfio_user_session() {
    let mut target = Session::new();
    let campaign = Campaign {
        name: "vfio-user session".into(),
        unit: "messages".into(),
        command: "cargo test -p epf-vfio-user --test fuzz_session".into(),
        default_secs: 20.0,
        bounds: Bounds {
            rss_growth_kib: 64 << 10,
            fd_growth: 0,
            case_time: exec::CASE_DEADLINE + Duration::from_secs(20),
        },
        warmup_cases: 50,
    };
    let report = campaign.run(&mut target, include_str!("corpus.txt"));
    assert!(report.cases + report.corpus > 0, "no case ran");
    assert_eq!(
        target
            .server
            .sink
            .disconnects
            .load(std::sync::atomic::Ordering::SeqCst),
        target.clients,
        "every session ended"
    );
    assert!(
        target
            .server
            .raises
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "interrupts were raised during the campaign"
    );
    epf_fuzz::campaign::say(&format!(
        "fuzz vfio-user session: {} interrupts raised meanwhile, slowest raise_irq {} us",
        target
            .server
            .raises
            .load(std::sync::atomic::Ordering::Relaxed),
        target
            .server
            .slowest_raise_us
            .load(std::sync::atomic::Ordering::Relaxed)
    ));
}
