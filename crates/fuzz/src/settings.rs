//! The environment knobs of a fuzz run:
//!
//! * `VIRTIO_EPF_FUZZ_SECS`: time budget of each fuzz target, in seconds (default: the
//!   target's, a few seconds so that CI stays short); a long campaign sets it to hours;
//! * `VIRTIO_EPF_FUZZ_SEED`: the campaign seed (decimal or `0x` hex); by default a fresh one
//!   per run, printed at the start, so CI explores new cases every time;
//! * `VIRTIO_EPF_FUZZ_REPLAY`: run only the case with this seed (as printed by a failure).

use std::time::Duration;

/// What one run of a fuzz target does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Time spent generating cases (the corpus is replayed in addition).
    pub budget: Duration,
    /// The campaign seed; case `i` uses [`case_seed(seed, i)`](crate::rng::case_seed).
    pub seed: u64,
    /// Only this case seed, if set.
    pub replay: Option<u64>,
}

/// Parses a decimal or `0x`-prefixed hexadecimal u64.
pub fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim().replace('_', "");
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A seed nobody chose: time, process and a stack address mixed.
fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    crate::rng::splitmix64(t ^ (u64::from(std::process::id()) << 32) ^ (&local as *const u8 as u64))
}

impl Settings {
    /// Settings from the environment; `default_secs` when `VIRTIO_EPF_FUZZ_SECS` is unset.
    /// Malformed values are an error (a typo must not silently run the default campaign).
    pub fn from_env(default_secs: f64) -> Result<Settings, String> {
        let secs = match env("VIRTIO_EPF_FUZZ_SECS") {
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| format!("VIRTIO_EPF_FUZZ_SECS={v} is not a number of seconds"))?,
            None => default_secs,
        };
        let seed = match env("VIRTIO_EPF_FUZZ_SEED") {
            Some(v) => parse_u64(&v).ok_or_else(|| format!("VIRTIO_EPF_FUZZ_SEED={v}"))?,
            None => fresh_seed(),
        };
        let replay = env("VIRTIO_EPF_FUZZ_REPLAY")
            .map(|v| parse_u64(&v).ok_or_else(|| format!("VIRTIO_EPF_FUZZ_REPLAY={v}")))
            .transpose()?;
        Ok(Settings {
            budget: Duration::from_secs_f64(secs),
            seed,
            replay,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_in_both_bases() {
        assert_eq!(parse_u64("42"), Some(42));
        assert_eq!(parse_u64("0x2a"), Some(42));
        assert_eq!(parse_u64(" 0xdead_beef "), Some(0xdead_beef));
        assert_eq!(parse_u64("x"), None);
        assert_eq!(parse_u64("0x"), None);
    }
}
