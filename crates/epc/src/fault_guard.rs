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
//! Only faults the kernel raised for an address inside a guarded mapping (`si_code`
//! `BUS_ADRERR`, the code of an access past the end of a file) are recovered, and only by
//! replacing pages that lie wholly inside that mapping. A SIGBUS sent by a process
//! (`kill`, `raise`) or for another reason takes the path it would have taken without us.
//!
//! The handler only does atomic loads and stores and one `mmap` system call, and keeps
//! `errno` as it found it.
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
/// Our own action, to put back if the previous handler replaced it for a signal that was
/// not a fault (Rust's handler resets SIGBUS to the default before it returns).
static OURS: OnceLock<libc::sigaction> = OnceLock::new();
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
        let _ = OURS.set(new);
        // SAFETY: installs `new`, whose handler only touches atomics and calls mmap.
        if unsafe { libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok(())
    });
    r.map_err(std::io::Error::from_raw_os_error)
}

/// The candidate replacements for the page holding `addr` in the mapping
/// `[start, end)`: a base page, then a 2 MiB and a 1 GiB huge page (hugetlbfs mappings only
/// accept replacements of their own page size), each only if it lies wholly inside the
/// mapping, so that nothing outside it is ever touched.
fn replacements(addr: usize, start: usize, end: usize, page: usize) -> [Option<(usize, usize)>; 3] {
    [page, 2 << 20, 1 << 30].map(|size| {
        let base = addr & !(size - 1);
        (base >= start && base.checked_add(size).is_some_and(|e| e <= end)).then_some((base, size))
    })
}

fn find(addr: usize) -> Option<&'static Slot> {
    TABLE.iter().find(|s| {
        s.state.load(Ordering::Acquire) == ACTIVE
            && s.start.load(Ordering::Relaxed) <= addr
            && addr < s.end.load(Ordering::Relaxed)
    })
}

/// Maps a private zero page (or huge page) over the one containing `addr` in `slot`.
fn replace_page(addr: usize, slot: &Slot) -> bool {
    let page = PAGE.load(Ordering::Relaxed);
    let (start, end) = (
        slot.start.load(Ordering::Relaxed),
        slot.end.load(Ordering::Relaxed),
    );
    for (base, size) in replacements(addr, start, end, page).into_iter().flatten() {
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

/// `si_code` of an access past the end of a mapped file (asm-generic/siginfo.h).
const BUS_ADRERR: libc::c_int = 2;

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno slot.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler; si_addr is only
    // meaningful for kernel-generated faults, which si_code tells.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    let recovered = code == BUS_ADRERR
        && find(addr).is_some_and(|slot| {
            let ok = replace_page(addr, slot);
            if ok {
                slot.lost.store(true, Ordering::Release);
            }
            ok
        });
    if !recovered {
        not_ours(sig, info, ctx);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// A SIGBUS we do not recover from: the action installed before ours decides, so that the
/// process behaves as it would without the guard (which stays installed if it survives).
fn not_ours(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: as in `on_sigbus`.
    let kernel_fault = unsafe { (*info).si_code } > 0;
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
            // A fault re-runs on return and meets whatever the previous handler left; a sent
            // signal is over, and the guard must stay.
            if let (false, Some(ours)) = (kernel_fault, OURS.get()) {
                // SAFETY: reinstalling the action `install` built.
                unsafe { libc::sigaction(libc::SIGBUS, ours, std::ptr::null_mut()) };
            }
        }
        // A signal someone sent while SIGBUS was ignored: ignore it, keep guarding.
        Some(prev) if prev.sa_sigaction == libc::SIG_IGN && !kernel_fault => {}
        _ => {
            // Default action: restore it. A fault re-runs on return and terminates the process
            // as it would have without us; a sent signal is raised again (it stays blocked
            // until we return) to the same end.
            // SAFETY: a zeroed sigaction is SIG_DFL with no flags.
            let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
            dfl.sa_sigaction = libc::SIG_DFL;
            // SAFETY: installing the default action, then raising the signal at ourselves.
            unsafe {
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
                if !kernel_fault {
                    libc::raise(sig);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacements_never_leave_the_guarded_mapping() {
        let page = 4096;
        let huge = 2 << 20;
        // Two base pages just inside a 2 MiB boundary: only a base page may be replaced.
        let (start, end) = (huge + page, huge + 3 * page);
        let r = replacements(start + 10, start, end, page);
        assert_eq!(r, [Some((start, page)), None, None]);
        // A whole 2 MiB huge page: both the base page and the huge page fit.
        let r = replacements(huge + 5 * page + 1, huge, 2 * huge, page);
        assert_eq!(r, [Some((huge + 5 * page, page)), Some((huge, huge)), None]);
        // The end of the address space cannot wrap.
        let top = usize::MAX & !(page - 1);
        assert_eq!(replacements(top, top, usize::MAX, page), [None, None, None]);
    }
}
