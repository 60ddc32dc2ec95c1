//! Counters of the virtio-net device, shared with whoever prints them (the command's
//! `--stats-file` and SIGUSR1): per queue pair (packets, bytes, segmentation offload use,
//! every kind of drop) and for the device (queue pairs in use, receive filter state, control
//! commands, TAP offloads). Cumulative over resets; updated with relaxed atomics by the worker.

use epf_device::{CounterSource, Counters};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters of one queue pair.
#[derive(Debug, Default)]
pub struct PairCounters {
    /// Packets / frame bytes delivered to the host (headers not counted).
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Of those, segmentation (GSO) packets: the TAP handed us a large TCP segment.
    pub rx_gso: AtomicU64,
    /// Host buffers used (more than packets when a packet spans merged buffers).
    pub rx_buffers: AtomicU64,
    /// Packets larger than the host's buffers could ever hold: dropped.
    pub rx_oversize: AtomicU64,
    /// Packets the receive filter refused.
    pub rx_filtered: AtomicU64,
    /// Packets the driver could not take with its current offloads, or shorter than an
    /// Ethernet header.
    pub rx_bad: AtomicU64,
    /// Times receiving stopped because the host had no buffers posted.
    pub rx_no_buffers: AtomicU64,
    /// Packets / frame bytes written to the TAP.
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Of those, segmentation (TSO) packets, and the largest frame written.
    pub tx_gso: AtomicU64,
    pub tx_max_frame: AtomicU64,
    /// Chains with a malformed virtio-net header: dropped.
    pub tx_malformed: AtomicU64,
    /// Chains larger than any packet can be: dropped.
    pub tx_oversize: AtomicU64,
    /// Packets the TAP refused: dropped.
    pub tx_errors: AtomicU64,
    /// Times the TAP had no room (the chain stayed in the ring until it had).
    pub tx_blocked: AtomicU64,
}

/// Counters of the whole device.
#[derive(Debug)]
pub struct NetCounters {
    pub tap: String,
    pub pairs: Vec<PairCounters>,
    pub active_pairs: AtomicU64,
    pub promisc: AtomicBool,
    pub allmulti: AtomicBool,
    pub ctrl_ok: AtomicU64,
    pub ctrl_err: AtomicU64,
    /// The `TUN_F_*` offload flags currently set on the TAP.
    pub tap_offloads: AtomicU64,
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Adds `n` to a counter.
pub fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

impl NetCounters {
    /// Zeroed counters for `pairs` queue pairs of TAP `tap`.
    pub fn new(tap: &str, pairs: u16) -> Self {
        NetCounters {
            tap: tap.into(),
            pairs: (0..pairs).map(|_| PairCounters::default()).collect(),
            active_pairs: AtomicU64::new(0),
            promisc: AtomicBool::new(true),
            allmulti: AtomicBool::new(false),
            ctrl_ok: AtomicU64::new(0),
            ctrl_err: AtomicU64::new(0),
            tap_offloads: AtomicU64::new(0),
        }
    }
}

/// A `net:` line, then one `net pair N:` line per pair.
impl CounterSource for NetCounters {
    fn report(&self, out: &mut Counters) {
        out.line("net")
            .field("tap", &self.tap)
            .field(
                "pairs",
                format_args!("{}/{}", get(&self.active_pairs), self.pairs.len()),
            )
            .field("promisc", u8::from(self.promisc.load(Ordering::Relaxed)))
            .field("allmulti", u8::from(self.allmulti.load(Ordering::Relaxed)))
            .field("ctrl_ok", get(&self.ctrl_ok))
            .field("ctrl_err", get(&self.ctrl_err))
            .field(
                "tap_offloads",
                super::features::tun_offload_names(get(&self.tap_offloads) as u32),
            );
        for (i, p) in self.pairs.iter().enumerate() {
            out.line(format_args!("net pair {i}"))
                .field("rx_packets", get(&p.rx_packets))
                .field("rx_bytes", get(&p.rx_bytes))
                .field("rx_gso", get(&p.rx_gso))
                .field("rx_buffers", get(&p.rx_buffers))
                .field("rx_oversize", get(&p.rx_oversize))
                .field("rx_filtered", get(&p.rx_filtered))
                .field("rx_bad", get(&p.rx_bad))
                .field("rx_no_buffers", get(&p.rx_no_buffers))
                .field("tx_packets", get(&p.tx_packets))
                .field("tx_bytes", get(&p.tx_bytes))
                .field("tx_gso", get(&p.tx_gso))
                .field("tx_max_frame", get(&p.tx_max_frame))
                .field("tx_malformed", get(&p.tx_malformed))
                .field("tx_oversize", get(&p.tx_oversize))
                .field("tx_errors", get(&p.tx_errors))
                .field("tx_blocked", get(&p.tx_blocked));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines() {
        let c = NetCounters::new("tap0", 2);
        add(&c.pairs[1].tx_gso, 3);
        c.active_pairs.store(2, Ordering::Relaxed);
        let s = Counters::new().add(&c).text().to_string();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("net: tap=tap0 pairs=2/2 promisc=1"),
            "{s}"
        );
        assert!(
            lines[2].starts_with("net pair 1: ") && lines[2].contains(" tx_gso=3 "),
            "{s}"
        );
    }
}
