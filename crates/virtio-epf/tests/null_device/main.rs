//! Adding a device takes its module and one registration line: the `null` device of
//! `null.rs` joins the command's registry here, gets its subcommand and help, is built from
//! its options and served over the loopback by the real function, and its counters come out
//! with the function's through the command's one formatting path.

mod null;

use epf_device::Counters;
use epf_loopback::{LoopbackController, LoopbackOptions};
use epf_virtio_pci::testing::{bounded, wait_until, Rig};
use epf_virtio_pci::{FunctionOptions, Layout, RegisterAccess};
use std::sync::Arc;
use std::time::Duration;
use virtio_epf::{command, Invocation, Registry};

fn registry() -> Registry {
    Registry::builtin().with(&null::Null)
}

/// `key=value` of the line starting with `line`.
fn count(text: &str, line: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(line))?
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
        .parse()
        .ok()
}

#[test]
fn the_registered_device_has_its_subcommand_help_and_ids() {
    let help = command(&registry()).render_help().to_string();
    let line = help
        .lines()
        .find(|l| l.trim_start().starts_with("null"))
        .unwrap_or_else(|| panic!("no null subcommand in:\n{help}"));
    assert!(
        line.contains("virtio device ID 63, PCI 1af4:107f)"),
        "{line}"
    );
    assert!(!line.contains("legacy"), "{line}");
    let mut cmd = command(&registry());
    let sub = cmd.find_subcommand_mut("null").unwrap();
    let sub_help = sub.render_long_help().to_string();
    for opt in ["--queue-size", "--vfio-user", "--stats-file", "--layout"] {
        assert!(sub_help.contains(opt), "{opt}:\n{sub_help}");
    }
    // Its options are checked like any device's; the built-in devices are unchanged.
    let bad = [
        "virtio-epf",
        "null",
        "--vfio-user",
        "/x",
        "--queue-size",
        "3",
    ];
    assert!(Invocation::parse_from(&registry(), bad).is_err());
    assert!(Invocation::parse_from(
        &Registry::builtin(),
        ["virtio-epf", "null", "--vfio-user", "/x"]
    )
    .is_err());
    assert!(
        Invocation::parse_from(&registry(), ["virtio-epf", "rng", "--vfio-user", "/x"]).is_ok()
    );
}

#[test]
fn a_device_added_with_one_line_is_served_over_the_loopback() {
    bounded(Duration::from_secs(60), || {
        let inv = Invocation::parse_from(
            &registry(),
            [
                "virtio-epf",
                "null",
                "--vfio-user",
                "/unused",
                "--queue-size",
                "16",
            ],
        )
        .unwrap();
        assert_eq!(inv.kind.info().name, "null");
        let c = Arc::new(LoopbackController::new(LoopbackOptions::default()).unwrap());
        // The device has no transitional ID, so no legacy layout; said before anything starts.
        let legacy = FunctionOptions {
            layout: Layout::Legacy,
            registers: RegisterAccess::Trap,
            ..FunctionOptions::default()
        };
        let e = inv.start(c.clone(), legacy).err().unwrap().to_string();
        assert!(e.contains("type 63 has no transitional PCI ID"), "{e}");

        let c = Arc::new(LoopbackController::new(LoopbackOptions::default()).unwrap());
        let f = inv
            .start(c.clone(), inv.common.endpoint.function_options())
            .unwrap();
        let rig = Rig { c, f };
        let mut drv = rig.driver();
        assert_eq!(drv.device_type(), 63);
        assert_eq!(drv.pci_device_id(), 0x107f);
        assert!(drv.enable_msix());
        drv.init(0).unwrap();
        drv.set_config_vector(0).unwrap();
        let mut q = drv.setup_queue(0, None, Some(1)).unwrap();
        assert_eq!(q.size(), 16);
        drv.driver_ok();

        let bus = rig.bus();
        let mut total = 0u64;
        for len in [1u32, 100, 4096] {
            let buf = bus.alloc(u64::from(len), 8).unwrap();
            bus.ram_write(buf, &vec![0xa5; len as usize]).unwrap();
            q.add(&[(buf, len, false)]).unwrap();
            total += u64::from(len);
        }
        q.kick().unwrap();
        for _ in 0..3 {
            let (_, used) = q.wait_used().unwrap();
            assert_eq!(used, 0);
        }

        let report = || Counters::new().add(rig.f.as_ref()).text().to_string();
        assert!(
            wait_until(Duration::from_secs(5), || {
                let r = report();
                count(&r, "null:", "chains") == Some(3)
                    && count(&r, "null:", "bytes") == Some(total)
                    && count(&r, "queue 0:", "chains") == Some(3)
            }),
            "{}",
            report()
        );
        assert_eq!(count(&report(), "function:", "activations"), Some(1));
        rig.finish();
    });
}
