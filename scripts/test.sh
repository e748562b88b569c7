#!/usr/bin/env bash
# The whole test suite, from a fresh clone: setup (venv from pinned wheels, test models,
# release build), formatting and lint, unit tests, then the end-to-end tests that run the
# real `ember` binary with the real plugins over HTTP. Ends with one line of totals.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings
cargo build --release --locked -p ember-abi-mismatch
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
cargo test --release --locked --workspace --exclude ember-e2e 2>&1 | tee "$LOG"
# End-to-end tests start servers that use every core: one test at a time.
cargo test --release --locked -p ember-e2e -- --test-threads=1 2>&1 | tee -a "$LOG"
awk '/^test result:/ { p += $4; f += $6 } END { printf "all tests: %d passed, %d failed\n", p, f; exit (f > 0) }' "$LOG"
