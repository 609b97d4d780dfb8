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
ensure_postgres
ensure_tansu
ensure_python_tools "$STATE/venv"

RUN=$(mktemp -d /tmp/mall-test.XXXXXX)
chmod 755 "$RUN"
PG_PORT=$(free_port)
KAFKA_PORT=$(free_port)
cleanup() {
  local status=$?
  set +e
  [ -n "${TANSU_PID:-}" ] && kill "$TANSU_PID" 2>/dev/null && wait "$TANSU_PID" 2>/dev/null
  stop_postgres "$RUN/pg"
  if [ "$status" -ne 0 ]; then
    log "Tests failed; broker and database logs are in $RUN"
  else
    rm -rf "$RUN"
  fi
  exit "$status"
}
trap cleanup EXIT INT TERM

log "Starting PostgreSQL on 127.0.0.1:$PG_PORT and Tansu on 127.0.0.1:$KAFKA_PORT (logs in $RUN)"
start_postgres "$RUN/pg" "$PG_PORT" "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
start_tansu "$RUN/tansu" "$KAFKA_PORT" "memory://tansu/"

export MALL_TEST_POSTGRES_URL="postgres://mall@127.0.0.1:$PG_PORT"
export MALL_TEST_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export MALL_GRPCURL="$STATE/venv/bin/grpcurl"
export MALL_PYTHON="$STATE/venv/bin/python"
export RUST_LOG=${RUST_LOG:-warn}

log "Running cargo test"
cargo test --workspace --locked "$@"
