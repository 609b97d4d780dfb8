#!/usr/bin/env bash
# Prints throughput figures for the relay and the whole saga (release build),
# on a throwaway PostgreSQL and Tansu, like scripts/test.sh.
# BENCH_RELAY_ROWS and BENCH_ORDERS change the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
start_throwaway_infra
export RUST_LOG=${RUST_LOG:-warn}
ensure_build_deps
cargo run --locked --release -q -p mall-e2e --example bench
