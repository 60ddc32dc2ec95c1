#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and loopback tests, and the end-to-end tests
# against a real Linux guest (harness/). Installs and caches what it needs on first run.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/prepare.sh
cargo fmt --all --check
cargo clippy --locked --all-targets -- -D warnings
kernel/check.sh
# pci-epf-user also compiles against trixie-backports' 7.x headers (API drift).
harness/build-modules.sh --check-api-drift
cargo build --release --locked
cargo test --locked --workspace
# Unit tests in the release profile too (optimisations must not change what they prove).
cargo test --locked --release --workspace --lib
# The device suites again in each bare-endpoint mode, and with split rings on the modern layout
# (the default run negotiates packed rings; every suite checks the guest's feature bit 34)
# (crates/virtio-epf/tests/support: Mode).
# Polled registers keep a poller spinning per device, so those guests run one at a time.
for mode in legacy-poll legacy-doorbell windows split; do
    threads=2
    [ "$mode" = legacy-poll ] && threads=1
    echo "== device suites with VIRTIO_EPF_E2E_MODE=$mode"
    VIRTIO_EPF_E2E_MODE=$mode cargo test --locked -p virtio-epf \
        --test e2e --test e2e_blk --test e2e_net -- --test-threads=$threads
done
