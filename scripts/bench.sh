#!/usr/bin/env bash
# The side-by-side benchmark: every figure next to its baseline, in one run,
# on the same PostgreSQL (durable defaults: fsync and synchronous_commit on)
# and the same Apache Kafka node (deploy/kafka/server.properties, as the
# tests and scripts/run-mall.sh run it); P5c on a three-node cluster of its
# own, P8 and P9 (Debezium's baseline, Kafka Connect from Maven Central) on
# a second PostgreSQL with wal_level=logical.
# Release build. Prints one table; asserts nothing about speed. Arguments go
# to mall-bench: --json, --quick, sizes (scripts/bench.sh --help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_build_deps
ensure_postgres
ensure_kafka
ensure_debezium
log "Building the services, the relay and the benchmark (release)"
# Two builds: the benchmark's switches (the relay's latency log, the inbox
# switch) must not be compiled into the binaries it measures.
cargo build --locked --release --bins -p order-service -p delivery-service -p inventory-service -p outbox-relay
cargo build --locked --release -p mall-bench
cargo build --locked --release $KAFKA_RUNNER_PACKAGE
TARGET=${CARGO_TARGET_DIR:-$PWD/target}/release
start_throwaway_infra "$TARGET/mall-kafka"
# P8 and P9 (the relay beside Debezium) need wal_level=logical: a second
# server with the same durable defaults, so the other figures keep the
# default wal_level.
start_cdc_postgres
export RUST_LOG=${RUST_LOG:-warn,librdkafka=error,rdkafka=error}
"$TARGET/mall-bench" --bin-dir "$TARGET" --pgbench "$PG_BIN/pgbench" --work-dir "$RUN/bench" "$@"
