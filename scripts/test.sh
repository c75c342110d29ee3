#!/usr/bin/env bash
# Runs the whole test suite the way CI does: prepares what the tests need on this machine,
# then formatting, lints, every test, and the quickstart example.
#
#   scripts/test.sh            # everything
#   scripts/test.sh --quick    # skip fmt and clippy
#
# Tests that need a backend fail (never skip) because MICRO_TEST_REQUIRE_SERVICES=1.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1

export MICRO_TEST_REQUIRE_SERVICES=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A clean build gains nothing from incremental artifacts, which cost disk and time.
export CARGO_INCREMENTAL=0
# Keep every test's mDNS on loopback, whatever the caller's environment says.
unset MICRO_MDNS_INTERFACE MICRO_REGISTRY MICRO_REGISTRY_ADDRESS MICRO_BROKER MICRO_BROKER_ADDRESS MICRO_TRANSPORT MICRO_SERVER_ADDRESS

log() { printf '\n== %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root for: $*" >&2
        return 1
    fi
}

apt_updated=0
need_pkg() { # need_pkg COMMAND PACKAGE
    command -v "$1" >/dev/null && return 0
    if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

log "loopback multicast for mDNS (this machine never sends multicast anywhere else)"
need_pkg ip iproute2
as_root ip link set lo multicast on
as_root ip route replace 224.0.0.0/4 dev lo table local 2>/dev/null ||
    as_root ip route replace 224.0.0.0/4 dev lo
ip -o link show lo

need_deb() { # need_deb PACKAGE...: Debian packages without a command to look for
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ "${#missing[@]}" = 0 ] && return 0
    if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # wait_port PORT NAME: up to 90 s
    for _ in $(seq 1 180); do
        port_open "$1" && return 0
        sleep 0.5
    done
    echo "$2 did not open 127.0.0.1:$1 within 90 s" >&2
    return 1
}

log "nftables and tc, the packet loss and rate limit of the fault suite's network namespace (no netem in this kernel)"
need_pkg nft nftables
need_pkg tc iproute2

log "backends: etcd and ZooKeeper (private instances started by the tests), RabbitMQ, NATS with JetStream, Redis, Mosquitto"
need_pkg etcd etcd-server
need_pkg etcdctl etcd-client
# ZooKeeper (Debian's jar, run privately by the tests with java on a free loopback port).
need_deb zookeeper default-jre-headless
# etcd-client's build script compiles etcd's protos with protoc; rdkafka builds librdkafka.
need_pkg protoc protobuf-compiler
need_deb libssl-dev zlib1g-dev pkg-config make gcc g++
if ! port_open 5672; then
    need_pkg rabbitmq-server rabbitmq-server
    as_root rabbitmq-server -detached || true
    wait_port 5672 RabbitMQ
    as_root timeout 90 rabbitmqctl await_startup
fi
# The NATS restart test runs a private nats-server too.
need_pkg nats-server nats-server
if ! port_open 4222; then
    as_root mkdir -p /var/lib/nats-server
    as_root start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    wait_port 4222 NATS
fi

# Redis (the redis broker, both modes) and Mosquitto (the mqtt broker), both on loopback.
need_pkg redis-server redis-server
if ! port_open 6379; then
    # No persistence: nothing the tests write is worth keeping (and no dump.rdb in the tree).
    as_root redis-server --bind 127.0.0.1 --port 6379 --save '' --daemonize yes \
        --logfile /var/log/redis-micro.log
    wait_port 6379 Redis
fi
need_pkg mosquitto mosquitto
if ! port_open 1883; then
    printf 'listener 1883 127.0.0.1\nallow_anonymous true\n' | as_root tee /etc/mosquitto-micro.conf >/dev/null
    as_root mosquitto -d -c /etc/mosquitto-micro.conf
    wait_port 1883 Mosquitto
fi

log "python: grpcio (the standard gRPC client of the gRPC tests), openapi-spec-validator (checks the gateway's OpenAPI document), mcp (the MCP client of the MCP tests)"
need_pkg python3 python3
python_pkgs="grpcio grpcio-tools grpcio-health-checking grpcio-reflection openapi-spec-validator mcp"
python3 -c "import grpc, grpc_tools.protoc, grpc_health.v1, grpc_reflection.v1alpha, openapi_spec_validator, mcp" 2>/dev/null ||
    python3 -m pip install --quiet $python_pkgs ||
    python3 -m pip install --quiet --break-system-packages $python_pkgs

log "curl, the independent HTTP client of the gateway tests"
need_pkg curl curl

log "php with curl, which runs the PHP example against the gateway"
need_pkg php php-cli
need_deb php-curl

log "chromium and chromedriver, the real browser of the gateway dashboard's tests (driven headless over WebDriver)"
need_pkg chromium chromium
need_pkg chromedriver chromium-driver

log "h2load (nghttp2-client) and wrk, the independent load generators of the benchmark's server and gateway rows"
need_pkg h2load nghttp2-client
need_pkg wrk wrk

log "micro-core stays thin (no networking stack or backend client)"
if cargo tree -p micro-core -e normal --prefix none | grep -Ei '^(hyper|h2|tonic|mio|tokio|etcd-client|rdkafka|lapin|async-nats|kube) '; then
    echo "micro-core must not depend on the crates above" >&2
    exit 1
fi

if [ "$quick" = 0 ]; then
    log "cargo fmt --check"
    cargo fmt --all -- --check
    log "cargo clippy"
    cargo clippy --workspace --all-targets -- -D warnings
fi

log "cargo test"
# The fault suite's FAULT-RESULT lines, kept for CI (and for RELIABILITY.md).
export MICRO_FAULT_RESULTS="$PWD/target/fault-results.txt"
mkdir -p target
: >"$MICRO_FAULT_RESULTS"
cargo test --workspace --no-fail-fast 2>&1 | tee target/micro-test.log
grep -E '^test result:' target/micro-test.log | awk '
    { passed += $4; failed += $6 }
    END { printf "\nsuite: %d passed, %d failed\n", passed, failed }'
log "fault injection results ($MICRO_FAULT_RESULTS)"
cat "$MICRO_FAULT_RESULTS"

log "fuzz targets on their seeds: every target built and run, so none rots (scripts/fuzz.sh runs the campaign)"
scripts/fuzz.sh --seeds

log "benchmark smoke run (checks that it runs, never its numbers)"
# Debug build: it reuses the test build; release numbers come from the full run (BENCHMARKS.md).
cargo run -q -p micro-bench -- --quick

log "quickstart example"
# The test build above made the binary (same features); cargo run would build it again.
if [ -x target/debug/quickstart ]; then target/debug/quickstart; else cargo run -q -p greeter --bin quickstart; fi
