//! Panics on any thread, counted. A server or worker thread that panics may leave the test
//! thread none the wiser (the socket just closes, the device just stops); the campaign checks
//! this count after every case. The previous hook still prints the panic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

static COUNT: AtomicU64 = AtomicU64::new(0);
static FIRST: Mutex<Option<String>> = Mutex::new(None);

/// Installs the counting hook (once per process).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            COUNT.fetch_add(1, Ordering::SeqCst);
            let thread = std::thread::current();
            let what = format!("thread '{}': {info}", thread.name().unwrap_or("<unnamed>"));
            let mut first = FIRST.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert(what);
            drop(first);
            previous(info);
        }));
    });
}

/// Panics seen so far.
pub fn count() -> u64 {
    COUNT.load(Ordering::SeqCst)
}

/// The first panic seen, described.
pub fn first() -> Option<String> {
    FIRST.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
