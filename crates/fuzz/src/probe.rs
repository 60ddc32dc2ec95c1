//! What the process holds, read from `/proc/self`: resident memory and open descriptors. The
//! code under test runs in the test process, so these are its resources (plus the test's own,
//! which the fuzz targets keep constant).

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

/// Number of open descriptors (entries of `/proc/self/fd`, not counting the one reading it).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_see_what_the_process_takes() {
        let rss = rss_kib();
        assert!(rss > 0);
        let fds = open_fds();
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(open_fds(), fds + 1);
        drop(f);
        assert_eq!(open_fds(), fds);
        let v = std::hint::black_box(vec![1u8; 64 << 20]);
        assert!(rss_kib() >= rss + 60 * 1024, "64 MiB touched");
        drop(v);
    }
}
