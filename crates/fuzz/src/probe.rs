//! What the process holds, read from `/proc/self`: resident memory and open descriptors. The
//! code under test runs in the test process, so these are its resources (plus the test's own,
//! which the fuzz targets keep constant). Memory the allocator keeps after a large case can be
//! given back first, so only memory in use counts against a bound.

/// Resident set size (`VmRSS` of `/proc/self/status`) in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Gives the allocator's free memory back to the system (glibc's `malloc_trim`), so that the
/// resident set shows what is in use rather than what the allocator keeps for later.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Number of open descriptors (entries of `/proc/self/fd`, not counting the one reading it).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_see_what_the_process_takes() {
        // Its 64 files would trip a campaign test's descriptor bound (a campaign self-test
        // expecting the memory bound failed on descriptors in CI): not at the same time.
        let _serial = crate::PROCESS_WIDE
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Other tests of this binary run on other threads and open files and allocate
        // meanwhile: what is asserted is far beyond what they do.
        let rss = rss_kib();
        assert!(rss > 0);
        let fds = open_fds();
        let files: Vec<_> = (0..64)
            .map(|_| std::fs::File::open("/proc/self/status").unwrap())
            .collect();
        let with = open_fds();
        assert!(with >= fds + 48, "64 files opened: {fds} -> {with}");
        drop(files);
        let v = std::hint::black_box(vec![1u8; 256 << 20]);
        let grown = rss_kib();
        assert!(
            grown >= rss + 192 * 1024,
            "256 MiB touched: {rss} -> {grown} KiB"
        );
        drop(v);
    }
}
