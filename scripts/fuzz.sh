#!/usr/bin/env bash
# Fuzzes the Kafka edge (envelope parsing, the topic owner's source, the
# event type tied to its topic, decoding, the contract's value checks, the
# dead-letter copies) with libFuzzer through cargo-fuzz, for a bounded time.
#
#   scripts/fuzz.sh            # 10 minutes, optimised build
#   scripts/fuzz.sh 60 --dev   # 60 seconds, debug build (what the test command runs)
#
# Inputs that reach new code are added to fuzz/corpus/kafka_edge (commit the
# ones worth keeping: `cargo test -p mall-fuzz-harness` runs them all as
# regression tests); a crash stops the run, leaves the input in
# fuzz/artifacts/kafka_edge and fails the command.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib.sh

SECONDS_TO_RUN=${1:-600}
PROFILE_FLAG=${2:-}
STATE=${MALL_STATE_DIR:-$ROOT/.mall}
ensure_build_deps
ensure_python_tools "$STATE/venv"
ensure_cargo_fuzz "$STATE/venv"
cd fuzz
# No sanitizer: the code under test forbids unsafe, so what is looked for is
# panics and broken invariants, which the harness asserts.
log "Fuzzing the Kafka edge for ${SECONDS_TO_RUN} s"
cargo fuzz run -s none $PROFILE_FLAG kafka_edge corpus/kafka_edge -- \
  -max_total_time="$SECONDS_TO_RUN" -max_len=512 -dict=kafka_edge.dict -print_final_stats=1
