//! Survival of host memory that disappears under us. A mapping of a file the host handed us
//! (guest RAM as a memfd) stays in our address space even if the host truncates the file;
//! touching a page past the new end then raises SIGBUS, which would kill the endpoint. A
//! hostile host must not be able to do that.
//!
//! Mappings of foreign files are registered here ([`register`]). One process-wide SIGBUS
//! handler looks the faulting address up among them; if it lies in one, it replaces that page
//! with a private zero page (so the interrupted copy completes harmlessly) and marks the
//! mapping *lost*: every access to it from then on fails with [`HostMemError::Lost`], which
//! the virtqueue engine turns into DEVICE_NEEDS_RESET like any other bad host address. A
//! fault anywhere else is handed to the handler that was installed before ours (Rust's
//! stack-overflow reporter) or to the default action, so genuine bugs still crash loudly.
//!
//! The handler only does atomic loads and stores and one `mmap` system call.
//!
//! [`HostMemError::Lost`]: crate::HostMemError::Lost

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// How many foreign mappings can be guarded at once (across all controllers of a process).
pub const CAPACITY: usize = 4096;

const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const ACTIVE: u8 = 2;

struct Slot {
    state: AtomicU8,
    start: AtomicUsize,
    end: AtomicUsize,
    lost: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // only used to initialise TABLE
const EMPTY: Slot = Slot {
    state: AtomicU8::new(FREE),
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    lost: AtomicBool::new(false),
};

static TABLE: [Slot; CAPACITY] = [EMPTY; CAPACITY];

/// The SIGBUS action that was in place before ours (set once, before ours is installed).
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// A registered mapping; unregisters when dropped (drop it before unmapping the range).
#[derive(Debug)]
pub struct Guard {
    slot: usize,
}

impl Guard {
    /// Whether part of the mapping was found gone (the host truncated its file).
    pub fn lost(&self) -> bool {
        TABLE[self.slot].lost.load(Ordering::Acquire)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let s = &TABLE[self.slot];
        s.state.store(CLAIMED, Ordering::Release);
        s.lost.store(false, Ordering::Relaxed);
        s.state.store(FREE, Ordering::Release);
    }
}

/// Guards `[start, start+len)`, installing the SIGBUS handler on first use. Fails if the
/// handler cannot be installed or every slot is taken.
pub fn register(start: usize, len: usize) -> std::io::Result<Guard> {
    install()?;
    let end = start
        .checked_add(len)
        .ok_or_else(|| std::io::Error::other("mapping wraps the address space"))?;
    for (i, s) in TABLE.iter().enumerate() {
        if s.state
            .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            s.start.store(start, Ordering::Relaxed);
            s.end.store(end, Ordering::Relaxed);
            s.lost.store(false, Ordering::Relaxed);
            s.state.store(ACTIVE, Ordering::Release);
            return Ok(Guard { slot: i });
        }
    }
    Err(std::io::Error::other(format!(
        "more than {CAPACITY} host mappings to guard"
    )))
}

fn install() -> std::io::Result<()> {
    static RESULT: OnceLock<Result<(), i32>> = OnceLock::new();
    let r = RESULT.get_or_init(|| {
        // SAFETY: sysconf has no memory inputs.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        // SAFETY: a zeroed sigaction is a valid value to be overwritten by the kernel.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: a zeroed sigaction with the fields below set is a valid action; the
        // handler has the SA_SIGINFO signature.
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = on_sigbus as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: sa_mask is a valid sigset_t inside `new`.
        unsafe { libc::sigemptyset(&mut new.sa_mask) };
        // Record the old action before ours can run: query first, publish, then install.
        // SAFETY: querying the current action into `old`.
        if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) } != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        let _ = PREVIOUS.set(old);
        // SAFETY: installs `new`, whose handler only touches atomics and calls mmap.
        if unsafe { libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok(())
    });
    r.map_err(std::io::Error::from_raw_os_error)
}

fn find(addr: usize) -> Option<&'static Slot> {
    TABLE.iter().find(|s| {
        s.state.load(Ordering::Acquire) == ACTIVE
            && s.start.load(Ordering::Relaxed) <= addr
            && addr < s.end.load(Ordering::Relaxed)
    })
}

/// Maps a private zero page (or huge page) over the one containing `addr`.
fn replace_page(addr: usize) -> bool {
    let page = PAGE.load(Ordering::Relaxed);
    // A hugetlbfs mapping only accepts replacements of its own page size.
    for size in [page, 2 << 20, 1 << 30] {
        let base = addr & !(size - 1);
        // SAFETY: replaces pages inside a registered mapping we own (MAP_FIXED over our own
        // range); the memory there belonged to a file the host truncated.
        let p = unsafe {
            libc::mmap(
                base as *mut libc::c_void,
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            return true;
        }
    }
    false
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some(slot) = find(addr) {
        if replace_page(addr) {
            slot.lost.store(true, Ordering::Release);
            return;
        }
    }
    // Not ours (or not recoverable): whoever handled SIGBUS before us decides.
    match PREVIOUS.get() {
        Some(prev) if prev.sa_sigaction != libc::SIG_DFL && prev.sa_sigaction != libc::SIG_IGN => {
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous action was installed with this signature.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(sig, info, ctx);
            } else {
                // SAFETY: the previous action was installed as a plain handler.
                let f: extern "C" fn(libc::c_int) =
                    unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(sig);
            }
        }
        _ => {
            // Default action: restore it; returning re-runs the faulting access, which then
            // terminates the process as it would have without us.
            // SAFETY: a zeroed sigaction is SIG_DFL with no flags.
            let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
            dfl.sa_sigaction = libc::SIG_DFL;
            // SAFETY: installing the default action.
            unsafe { libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut()) };
        }
    }
}
