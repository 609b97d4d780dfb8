#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what is missing
# (PostgreSQL 15, the Tansu broker, grpcurl 1.8.6 and grpcio-tools), starts a
# throwaway PostgreSQL and Tansu on free ports, and runs `cargo test`.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p mall-e2e --test saga).
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
cargo test --workspace --locked "$@"
