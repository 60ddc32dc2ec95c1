//! Malformed rings written by a hostile or buggy host driver, against the real devices behind
//! the real virtio-pci function. For every case: the device sets DEVICE_NEEDS_RESET within a
//! bounded time, raises a configuration interrupt on the config vector, completes nothing of
//! the malformed ring, never accesses memory outside host RAM, and works again after a reset
//! and a renegotiation with fresh rings.

mod common;

use common::*;

/// These tests write split-ring fields with the host driver's raw helpers (malformed packed
/// rings are in packed_rings.rs).
const ALL_FEATURES: u64 = SPLIT_FEATURES;
use epf_devices::{ConsoleDevice, RngDevice};
use epf_loopback::host_driver::spec::*;
use epf_loopback::host_driver::{HostQueue, VirtioPciDriver};
use epf_loopback::LoopbackOptions;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);
const STATUS_ALL_OK: u8 =
    STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
const RNG_QUEUE_SIZE: u16 = 16;
const W: u16 = VIRTQ_DESC_F_WRITE;
const N: u16 = VIRTQ_DESC_F_NEXT;
const I: u16 = VIRTQ_DESC_F_INDIRECT;

/// Which device (and queue) a case attacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dev {
    /// virtio-rng's request queue: the device writes buffers.
    Rng,
    /// virtio-console's transmit queue: the device reads buffers.
    ConsoleTx,
}

impl Dev {
    fn queues(self) -> Vec<(u16, Option<u16>, Option<u16>)> {
        match self {
            Dev::Rng => vec![(0, None, Some(1))],
            Dev::ConsoleTx => vec![(0, None, Some(1)), (1, None, Some(2))],
        }
    }

    /// Index (in `queues()`) of the attacked queue.
    fn target(self) -> usize {
        match self {
            Dev::Rng => 0,
            Dev::ConsoleTx => 1,
        }
    }

    /// Flags of a data descriptor the device would legitimately use on the target queue.
    fn data_flag(self) -> u16 {
        match self {
            Dev::Rng => W,
            Dev::ConsoleTx => 0,
        }
    }
}

struct Target {
    rig: Rig,
    dev: Dev,
    ends: Option<ConsoleEnds>,
}

fn target(dev: Dev, ram: u64) -> Target {
    let opts = LoopbackOptions::default().with_ram_size(ram);
    match dev {
        Dev::Rng => Target {
            rig: Rig::with_options(opts, Box::new(RngDevice::new(RNG_QUEUE_SIZE))),
            dev,
            ends: None,
        },
        Dev::ConsoleTx => {
            let (backend, ends) = chan_backend(Stall::default());
            Target {
                rig: Rig::with_options(
                    opts,
                    Box::new(ConsoleDevice::new(backend, 64 * 1024).unwrap()),
                ),
                dev,
                ends: Some(ends),
            }
        }
    }
}

/// Requests that must succeed on a healthy device.
fn valid_io(t: &Target, qs: &mut [HostQueue]) {
    let bus = t.rig.bus();
    match t.dev {
        Dev::Rng => {
            let buf = bus.alloc(4096, 64).unwrap();
            let head = qs[0].add(&[(buf, 4096, true)]).unwrap();
            qs[0].kick().unwrap();
            assert_eq!(wait_used_strict(&bus, &mut qs[0]), (head, 4096));
        }
        Dev::ConsoleTx => {
            let ends = t.ends.as_ref().unwrap();
            let data = Prng::new(11).bytes(1000);
            let buf = bus.alloc(1000, 64).unwrap();
            bus.ram_write(buf, &data).unwrap();
            let head = qs[1].add(&[(buf, 1000, false)]).unwrap();
            qs[1].kick().unwrap();
            assert_eq!(wait_used_strict(&bus, &mut qs[1]), (head, 0));
            assert_eq!(collect_output(&ends.output, 1000, WAIT), data);
            ends.input.send(data[..500].to_vec()).unwrap();
            let rbuf = bus.alloc(1000, 64).unwrap();
            let head = qs[0].add(&[(rbuf, 1000, true)]).unwrap();
            qs[0].kick().unwrap();
            assert_eq!(wait_used_strict(&bus, &mut qs[0]), (head, 500));
            let mut got = vec![0; 500];
            bus.ram_read(rbuf, &mut got).unwrap();
            assert_eq!(got, data[..500]);
        }
    }
}

/// Asserts the device entered DEVICE_NEEDS_RESET and signalled it.
fn assert_needs_reset(t: &Target, drv: &VirtioPciDriver, what: &str) {
    let bus = t.rig.bus();
    assert!(
        wait_until(WAIT, || drv.status() & NEEDS_RESET != 0),
        "{what}: DEVICE_NEEDS_RESET not set (status {:#x})",
        drv.status()
    );
    assert_eq!(drv.status(), STATUS_ALL_OK | NEEDS_RESET, "{what}");
    assert!(
        bus.wait_msix(CONFIG_VECTOR, WAIT),
        "{what}: no configuration interrupt"
    );
    assert_eq!(t.rig.c.oob_attempts(), 0, "{what}: access outside host RAM");
}

/// Renegotiates with fresh rings and checks the device works again.
fn recover(t: &Target, drv: &mut VirtioPciDriver, what: &str) {
    drv.reset().unwrap_or_else(|e| panic!("{what}: reset: {e}"));
    assert_eq!(drv.status(), 0);
    let mut qs = bring_up(drv, ALL_FEATURES, &t.dev.queues());
    valid_io(t, &mut qs);
    assert_eq!(drv.status(), STATUS_ALL_OK, "{what}: after recovery");
    assert!(
        !t.rig.bus().wait_msix(CONFIG_VECTOR, Duration::ZERO),
        "{what}: spurious configuration interrupt after recovery"
    );
}

type Inject = fn(&Target, &mut HostQueue);

/// Runs one malformed-ring case on `t`: healthy traffic, the injection, the checks, recovery.
fn run_case(t: &Target, what: &str, inject: Inject) {
    let bus = t.rig.bus();
    let mut drv = t.rig.driver();
    assert!(drv.enable_msix());
    let mut qs = bring_up(&mut drv, ALL_FEATURES, &t.dev.queues());
    valid_io(t, &mut qs);
    assert!(!bus.wait_msix(CONFIG_VECTOR, Duration::ZERO));
    let q = &mut qs[t.dev.target()];
    let used_before = q.used_idx().unwrap();
    inject(t, q);
    assert_needs_reset(t, &drv, what);
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(
        q.used_idx().unwrap(),
        used_before,
        "{what}: the device completed part of a malformed ring"
    );
    recover(t, &mut drv, what);
}

fn case(dev: Dev, what: &str, inject: Inject) {
    let what = what.to_string();
    bounded(LIMIT, move || {
        let t = target(dev, 16 << 20);
        run_case(&t, &what, inject);
        t.rig.finish();
    });
}

fn publish(q: &mut HostQueue, head: u16) {
    q.push_avail_raw(head).unwrap();
    q.notify();
}

fn scratch(t: &Target) -> u64 {
    t.rig.bus().alloc(4096, 64).unwrap()
}

fn ram_end(t: &Target) -> u64 {
    let bus = t.rig.bus();
    bus.ram_base() + bus.ram_size()
}

// ---- The cases ---------------------------------------------------------------------------------

fn descriptor_loop(t: &Target, q: &mut HostQueue) {
    let (b, f) = (scratch(t), t.dev.data_flag());
    q.write_raw_desc(0, b, 8, f | N, 1).unwrap();
    q.write_raw_desc(1, b + 8, 8, f | N, 2).unwrap();
    q.write_raw_desc(2, b + 16, 8, f | N, 1).unwrap();
    publish(q, 0);
}

fn chain_longer_than_the_queue(t: &Target, q: &mut HostQueue) {
    // Every descriptor of the table, then around again: more descriptors than the queue has.
    let (b, f, n) = (scratch(t), t.dev.data_flag(), q.size());
    for i in 0..n {
        q.write_raw_desc(i, b + 8 * u64::from(i), 8, f | N, (i + 1) % n)
            .unwrap();
    }
    publish(q, 3);
}

fn chain_too_long_through_an_indirect_table(t: &Target, q: &mut HostQueue) {
    // One direct descriptor plus a 32768-entry indirect table: more than the 32768 data
    // descriptors a chain may have.
    let bus = t.rig.bus();
    let (b, f) = (scratch(t), t.dev.data_flag());
    let entries = 32768usize;
    let table = bus.alloc(entries as u64 * 16, 16).unwrap();
    let descs: Vec<(u64, u32, u16, u16)> = (0..entries)
        .map(|k| {
            let next = if k + 1 < entries { N } else { 0 };
            (b, 0, f | next, (k + 1) as u16)
        })
        .collect();
    write_table(&bus, table, &descs);
    q.write_raw_desc(0, b, 8, f | N, 1).unwrap();
    q.write_raw_desc(1, table, (entries * 16) as u32, I, 0)
        .unwrap();
    publish(q, 0);
}

fn indirect_inside_indirect(t: &Target, q: &mut HostQueue) {
    let bus = t.rig.bus();
    let (b, f) = (scratch(t), t.dev.data_flag());
    let (t1, t2) = (b + 1024, b + 2048);
    write_table(&bus, t2, &[(b, 8, f, 0)]);
    write_table(&bus, t1, &[(b, 8, f | N, 1), (t2, 16, I, 0)]);
    q.write_raw_desc(0, t1, 32, I, 0).unwrap();
    publish(q, 0);
}

fn zero_length_indirect_table(t: &Target, q: &mut HostQueue) {
    let b = scratch(t);
    q.write_raw_desc(0, b, 0, I, 0).unwrap();
    publish(q, 0);
}

fn indirect_length_not_a_multiple_of_16(t: &Target, q: &mut HostQueue) {
    let bus = t.rig.bus();
    let (b, f) = (scratch(t), t.dev.data_flag());
    write_table(&bus, b + 1024, &[(b, 8, f | N, 1), (b + 8, 8, f, 0)]);
    q.write_raw_desc(0, b + 1024, 24, I, 0).unwrap();
    publish(q, 0);
}

fn indirect_with_next(t: &Target, q: &mut HostQueue) {
    let bus = t.rig.bus();
    let (b, f) = (scratch(t), t.dev.data_flag());
    write_table(&bus, b + 1024, &[(b, 8, f, 0)]);
    q.write_raw_desc(0, b + 1024, 16, I | N, 1).unwrap();
    q.write_raw_desc(1, b + 8, 8, f, 0).unwrap();
    publish(q, 0);
}

fn indirect_table_outside_host_ram(t: &Target, q: &mut HostQueue) {
    q.write_raw_desc(0, ram_end(t) - 16, 32, I, 0).unwrap();
    publish(q, 0);
}

fn buffer_straddling_the_end_of_host_ram(t: &Target, q: &mut HostQueue) {
    let f = t.dev.data_flag();
    q.write_raw_desc(0, ram_end(t) - 8, 16, f, 0).unwrap();
    publish(q, 0);
}

fn buffer_below_host_ram(t: &Target, q: &mut HostQueue) {
    // An arena offset mistaken for a bus address.
    let f = t.dev.data_flag();
    q.write_raw_desc(0, 0x1000, 64, f, 0).unwrap();
    publish(q, 0);
}

fn buffer_address_overflows(t: &Target, q: &mut HostQueue) {
    let (b, f) = (scratch(t), t.dev.data_flag());
    q.write_raw_desc(0, b, 8, f | N, 1).unwrap();
    q.write_raw_desc(1, u64::MAX - 7, 16, f, 0).unwrap();
    publish(q, 0);
}

fn length_overflow_in_range(t: &Target, q: &mut HostQueue) {
    // Two buffers entirely inside a > 4 GiB host RAM whose lengths sum past u32::MAX.
    let base = t.rig.bus().ram_base();
    let f = t.dev.data_flag();
    q.write_raw_desc(0, base + (1 << 20), 0xc000_0000, f | N, 1)
        .unwrap();
    q.write_raw_desc(1, base + (1 << 20) + 0xc000_0000, 0x4000_0010, f, 0)
        .unwrap();
    publish(q, 0);
}

fn length_overflow(t: &Target, q: &mut HostQueue) {
    let (b, f) = (scratch(t), t.dev.data_flag());
    q.write_raw_desc(0, b, 16, f | N, 1).unwrap();
    q.write_raw_desc(1, b + 16, u32::MAX, f, 0).unwrap();
    publish(q, 0);
}

fn writable_before_readable(t: &Target, q: &mut HostQueue) {
    let b = scratch(t);
    q.write_raw_desc(0, b, 8, W | N, 1).unwrap();
    q.write_raw_desc(1, b + 8, 8, 0, 0).unwrap();
    publish(q, 0);
}

fn next_out_of_range(t: &Target, q: &mut HostQueue) {
    let (b, f) = (scratch(t), t.dev.data_flag());
    q.write_raw_desc(0, b, 8, f | N, q.size()).unwrap();
    publish(q, 0);
}

fn head_out_of_range(t: &Target, q: &mut HostQueue) {
    let _ = t;
    let size = q.size();
    publish(q, size);
}

fn head_far_out_of_range(t: &Target, q: &mut HostQueue) {
    let _ = t;
    publish(q, 0xffff);
}

fn avail_idx_jumps_past_the_queue_size(t: &Target, q: &mut HostQueue) {
    let (b, f) = (scratch(t), t.dev.data_flag());
    for i in 0..q.size() {
        q.write_raw_desc(i, b, 8, f, 0).unwrap();
    }
    let idx = q.avail_idx().wrapping_add(q.size() + 1);
    q.set_avail_idx_raw(idx).unwrap();
    q.notify();
}

const RNG_CASES: &[(&str, Inject)] = &[
    ("descriptor loop", descriptor_loop),
    ("chain longer than the queue", chain_longer_than_the_queue),
    (
        "chain too long through an indirect table",
        chain_too_long_through_an_indirect_table,
    ),
    ("indirect inside indirect", indirect_inside_indirect),
    ("zero-length indirect table", zero_length_indirect_table),
    (
        "indirect length not a multiple of 16",
        indirect_length_not_a_multiple_of_16,
    ),
    ("indirect with next", indirect_with_next),
    (
        "indirect table outside host RAM",
        indirect_table_outside_host_ram,
    ),
    (
        "buffer straddling the end of host RAM",
        buffer_straddling_the_end_of_host_ram,
    ),
    ("buffer below host RAM", buffer_below_host_ram),
    ("buffer address overflows", buffer_address_overflows),
    ("length overflow", length_overflow),
    ("writable before readable", writable_before_readable),
    ("next out of range", next_out_of_range),
    ("head out of range", head_out_of_range),
    ("head far out of range", head_far_out_of_range),
    (
        "avail idx jumps past the queue size",
        avail_idx_jumps_past_the_queue_size,
    ),
];

#[test]
fn rng_descriptor_loop() {
    case(Dev::Rng, "descriptor loop", descriptor_loop);
}

#[test]
fn rng_chain_longer_than_the_queue() {
    case(
        Dev::Rng,
        "chain longer than the queue",
        chain_longer_than_the_queue,
    );
}

#[test]
fn rng_chain_too_long_through_an_indirect_table() {
    case(
        Dev::Rng,
        "chain too long through an indirect table",
        chain_too_long_through_an_indirect_table,
    );
}

#[test]
fn rng_indirect_inside_indirect() {
    case(
        Dev::Rng,
        "indirect inside indirect",
        indirect_inside_indirect,
    );
}

#[test]
fn rng_zero_length_indirect_table() {
    case(
        Dev::Rng,
        "zero-length indirect table",
        zero_length_indirect_table,
    );
}

#[test]
fn rng_indirect_length_not_a_multiple_of_16() {
    case(
        Dev::Rng,
        "indirect length not a multiple of 16",
        indirect_length_not_a_multiple_of_16,
    );
}

#[test]
fn rng_indirect_with_next() {
    case(Dev::Rng, "indirect with next", indirect_with_next);
}

#[test]
fn rng_indirect_table_outside_host_ram() {
    case(
        Dev::Rng,
        "indirect table outside host RAM",
        indirect_table_outside_host_ram,
    );
}

#[test]
fn rng_buffer_outside_host_ram() {
    case(
        Dev::Rng,
        "buffer straddling the end of host RAM",
        buffer_straddling_the_end_of_host_ram,
    );
    case(Dev::Rng, "buffer below host RAM", buffer_below_host_ram);
    case(
        Dev::Rng,
        "buffer address overflows",
        buffer_address_overflows,
    );
}

#[test]
fn console_tx_buffer_outside_host_ram() {
    case(
        Dev::ConsoleTx,
        "readable buffer straddling the end of host RAM",
        buffer_straddling_the_end_of_host_ram,
    );
    case(
        Dev::ConsoleTx,
        "readable buffer below host RAM",
        buffer_below_host_ram,
    );
}

#[test]
fn rng_length_overflow() {
    case(Dev::Rng, "length overflow", length_overflow);
}

/// Both buffers inside host RAM (a 5 GiB sparse arena), so only the 32-bit total length can
/// catch the chain.
#[test]
fn rng_length_overflow_with_buffers_in_range() {
    bounded(LIMIT, || {
        let t = target(Dev::Rng, 5 << 30);
        run_case(&t, "length overflow in range", length_overflow_in_range);
        t.rig.finish();
    });
}

#[test]
fn console_tx_length_overflow() {
    case(Dev::ConsoleTx, "length overflow", length_overflow);
}

#[test]
fn console_tx_writable_before_readable() {
    case(
        Dev::ConsoleTx,
        "writable before readable",
        writable_before_readable,
    );
}

#[test]
fn console_tx_descriptor_loop_and_nested_indirect() {
    case(Dev::ConsoleTx, "descriptor loop", descriptor_loop);
    case(
        Dev::ConsoleTx,
        "indirect inside indirect",
        indirect_inside_indirect,
    );
}

#[test]
fn rng_next_out_of_range() {
    case(Dev::Rng, "next out of range", next_out_of_range);
}

#[test]
fn rng_head_index_out_of_range() {
    case(Dev::Rng, "head out of range", head_out_of_range);
    case(Dev::Rng, "head far out of range", head_far_out_of_range);
}

#[test]
fn rng_avail_idx_jumps_past_the_queue_size() {
    case(
        Dev::Rng,
        "avail idx jumps past the queue size",
        avail_idx_jumps_past_the_queue_size,
    );
}

#[test]
fn console_tx_avail_idx_jump_and_head_out_of_range() {
    case(
        Dev::ConsoleTx,
        "avail idx jumps past the queue size",
        avail_idx_jumps_past_the_queue_size,
    );
    case(Dev::ConsoleTx, "head out of range", head_out_of_range);
}

/// Every case back to back on one function: each recovery must leave nothing behind that
/// breaks the next negotiation.
#[test]
fn rng_every_case_back_to_back_on_one_function() {
    bounded(LIMIT, || {
        let t = target(Dev::Rng, 16 << 20);
        for (what, inject) in RNG_CASES {
            run_case(&t, what, *inject);
        }
        assert_eq!(
            t.rig
                .f
                .stats()
                .needs_reset
                .load(std::sync::atomic::Ordering::SeqCst),
            RNG_CASES.len() as u64
        );
        t.rig.finish();
    });
}

// ---- Rings the device refuses at DRIVER_OK -----------------------------------------------------

/// Sets up the rng queue, then rewrites one ring address before enabling it.
fn setup_fault(what: &str, rewrite: fn(&Target, &HostQueue) -> (u64, u64)) {
    let what = what.to_string();
    bounded(LIMIT, move || {
        let t = target(Dev::Rng, 16 << 20);
        let mut drv = t.rig.driver();
        assert!(drv.enable_msix());
        drv.init(ALL_FEATURES).unwrap();
        drv.set_config_vector(CONFIG_VECTOR).unwrap();
        let q = drv.prepare_queue(0, None, Some(1)).unwrap();
        let (reg, addr) = rewrite(&t, &q);
        drv.common_write16(COMMON_QUEUE_SELECT, 0);
        drv.common_write64_twopart(reg, addr);
        drv.enable_queue(0);
        drv.driver_ok();
        assert_needs_reset(&t, &drv, &what);
        recover(&t, &mut drv, &what);
        t.rig.finish();
    });
}

#[test]
fn misaligned_descriptor_table_at_setup() {
    setup_fault("descriptor table not 16-aligned", |_, q| {
        (COMMON_QUEUE_DESC, q.desc_addr() + 8)
    });
}

#[test]
fn misaligned_available_ring_at_setup() {
    setup_fault("available ring not 2-aligned", |_, q| {
        (COMMON_QUEUE_DRIVER, q.avail_addr() + 1)
    });
}

#[test]
fn misaligned_used_ring_at_setup() {
    setup_fault("used ring not 4-aligned", |_, q| {
        (COMMON_QUEUE_DEVICE, q.used_addr() + 2)
    });
}

#[test]
fn rings_outside_host_ram_at_setup() {
    setup_fault("descriptor table past the end of host RAM", |t, _| {
        (COMMON_QUEUE_DESC, ram_end(t) - 64)
    });
    setup_fault("used ring below host RAM", |_, _| {
        (COMMON_QUEUE_DEVICE, 0x2000)
    });
}

/// Without MSI-X the DEVICE_NEEDS_RESET configuration interrupt is INTx plus the ISR's
/// configuration bit.
#[test]
fn needs_reset_is_signalled_through_intx_and_the_isr() {
    bounded(LIMIT, || {
        let t = target(Dev::Rng, 16 << 20);
        let bus = t.rig.bus();
        let mut drv = t.rig.driver();
        drv.init(ALL_FEATURES).unwrap();
        let mut q = drv.setup_queue(0, None, None).unwrap();
        drv.driver_ok();
        descriptor_loop(&t, &mut q);
        assert!(wait_until(WAIT, || drv.status() & NEEDS_RESET != 0));
        assert!(
            wait_until(WAIT, || bus.intx_asserted()),
            "INTx not asserted"
        );
        assert_eq!(drv.read_isr() & ISR_CONFIG, ISR_CONFIG);
        assert!(!bus.intx_asserted());
        assert_eq!(bus.stats().msix_delivered, 0);
        drv.reset().unwrap();
        drv.init(ALL_FEATURES).unwrap();
        let mut q = drv.setup_queue(0, None, None).unwrap();
        drv.driver_ok();
        let b = bus.alloc(128, 64).unwrap();
        let head = q.add(&[(b, 128, true)]).unwrap();
        q.kick().unwrap();
        assert_eq!(q.wait_used().unwrap(), (head, 128));
        t.rig.finish();
    });
}
