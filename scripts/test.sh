#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and loopback tests, and the end-to-end tests
# against a real Linux guest (harness/). Installs and caches what it needs on first run.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/prepare.sh
cargo fmt --all --check
cargo clippy --locked --all-targets -- -D warnings
cargo build --release --locked
cargo test --locked --workspace
