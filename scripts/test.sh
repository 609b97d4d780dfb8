#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what is missing
# (PostgreSQL 15, the Tansu broker, grpcurl 1.8.6 and grpcio-tools), starts a
# throwaway PostgreSQL and Tansu on free ports, and runs `cargo test`.
# Arguments replace the default `--workspace` (e.g. scripts/test.sh -p mall-e2e --test saga).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib.sh

STATE=${MALL_STATE_DIR:-$ROOT/.mall}
mkdir -p "$STATE"
ensure_python_tools "$STATE/venv"
start_throwaway_infra "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
export MALL_GRPCURL="$STATE/venv/bin/grpcurl"
export MALL_PYTHON="$STATE/venv/bin/python"
export RUST_LOG=${RUST_LOG:-warn}

log "Running cargo test"
set +e
[ $# -eq 0 ] && set -- --workspace --no-fail-fast
cargo test --locked "$@" 2>&1 | tee "$RUN/cargo-test.log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run: cargo's own last line is the last
# doc-test crate's, which usually has no tests.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' \
  "$RUN/cargo-test.log"
exit "$status"
