#!/usr/bin/env bash
# The fault-injection run: installs what is missing (PostgreSQL 15, Java 17
# and Apache Kafka's jars, nftables), builds the mall, then runs
# tools/mall-chaos, which starts its own PostgreSQL and a three-node Apache
# Kafka cluster (KRaft, replication 3, min.insync.replicas 2) on free
# ports, two replicas of every
# service and relay, places orders while injecting faults, checks every
# invariant from outside and prints a figure block. Exit status 0 means
# every invariant held.
#
# Arguments go to mall-chaos (scripts/chaos.sh --help lists them), e.g.
#   scripts/chaos.sh --seed 42            # the full default run, reproducibly
#   scripts/chaos.sh --orders 300 --kills-per-replica 1 --rounds 1   # short
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib.sh

ensure_build_deps
ensure_postgres
ensure_kafka
# Network partitions are nftables rules on each replica's uid (root only).
[ "$(id -u)" -eq 0 ] && ensure_nftables
STATE=${MALL_STATE_DIR:-$ROOT/.mall}
WORK=${CHAOS_WORK_DIR:-$STATE/chaos}
mkdir -p "$WORK"
PG_DIR=$(pg_dir_for "$WORK/pg")
PG_USER_ARGS=()
[ "$(id -u)" -eq 0 ] && PG_USER_ARGS=(--pg-user postgres)

log "Building the services, the relay and mall-chaos"
cargo build --locked --bins $CHAOS_PACKAGES
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
# The tool's own log filter (the replicas log at info to their files).
export RUST_LOG=${CHAOS_LOG:-info,librdkafka=error,rdkafka=error}
exec "$BIN/mall-chaos" --work-dir "$WORK" --pg-dir "$PG_DIR" "${PG_USER_ARGS[@]}" \
  --pg-bin "$PG_BIN" --bin-dir "$BIN" "$@"
