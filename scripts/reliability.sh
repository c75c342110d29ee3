#!/usr/bin/env bash
# Regenerates RELIABILITY.md: what was tried against Micro and what happened.
#
#   scripts/reliability.sh          # the whole test suite (fault injection included, its
#                                   # FAULT-RESULT lines collected), then RELIABILITY.md from
#                                   # them and from the last fuzz campaign's fuzz/report.tsv
#   scripts/reliability.sh --fuzz   # the full fuzz campaign first (scripts/fuzz.sh: up to 30
#                                   # minutes per target, hours in all), then the same
#   scripts/reliability.sh --from DIR   # no test run: the results of one that scripts/test.sh
#                                   # made in the checkout DIR (its target/fault-results.txt
#                                   # and target/micro-test.log)
#
# It needs what scripts/test.sh installs (run that once on a new machine). The file is
# rewritten whole; a failed test or fuzz target is written down as such, never left out.
set -uo pipefail
cd "$(dirname "$0")/.."

fuzz=0
from=""
case "${1:-}" in
--fuzz) fuzz=1 ;;
--from) from="${2:?--from needs the checkout a test run was made in}" ;;
esac

export MICRO_TEST_REQUIRE_SERVICES=1 CARGO_TERM_COLOR=never
unset MICRO_MDNS_INTERFACE MICRO_REGISTRY MICRO_REGISTRY_ADDRESS MICRO_BROKER MICRO_BROKER_ADDRESS MICRO_TRANSPORT MICRO_SERVER_ADDRESS
mkdir -p target
results="$PWD/target/fault-results.txt"
log="$PWD/target/micro-test.log"
started=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

if [ "$fuzz" = 1 ]; then
    scripts/fuzz.sh || echo "some fuzz targets failed: see fuzz/report.tsv" >&2
fi

if [ -n "$from" ]; then
    results="$from/target/fault-results.txt"
    log="$from/target/micro-test.log"
    tests_status=$(grep -q '^test result: FAILED' "$log" && echo 101 || echo 0)
    started=$(date -r "$log" +%s)
    load_before="(not measured: an earlier run's results)"
else
    : >"$results"
    MICRO_FAULT_RESULTS="$results" cargo test --workspace --no-fail-fast >"$log" 2>&1
    tests_status=$?
fi
read -r passed failed < <(awk '/^test result:/ { p += $4; f += $6 } END { print p + 0, f + 0 }' "$log")

# What each fault test and fuzz target tried, by the name it reports.
describe() {
    case "$1" in
    etcd-blackhole) echo "etcd blackholed (fault proxy) between 8 callers and etcd, under load" ;;
    peer-kill-9) echo "one of 3 peers killed with SIGKILL under load, left registered, behind fault proxies" ;;
    peer-sigterm) echo "one of 3 peers stopped with SIGTERM under load (drains, deregisters)" ;;
    idle-connections-http-transport) echo "10 000 idle keep-alive connections to the http transport" ;;
    idle-connections-grpc-transport) echo "10 000 idle HTTP/2 connections to the gRPC transport" ;;
    slowloris-http-transport) echo "a slowloris client (a request head a byte at a time) on the http transport" ;;
    etcd-delay) echo "etcd behind the fault proxy delaying every chunk, under load" ;;
    etcd-reset) echo "etcd behind the fault proxy resetting every connection, under load" ;;
    nats-jetstream-kill-9) echo "nats-server (JetStream file store) killed with SIGKILL mid-stream, started again on its store" ;;
    nats-jetstream-delay-reset) echo "JetStream behind the fault proxy: every chunk delayed, then every connection reset, mid-stream" ;;
    kafka-faults) echo "Kafka (librdkafka's mock cluster, 3 brokers) mid-stream: every round trip slowed, produce requests failing with retriable errors, then the partition's leader down and its leadership moved" ;;
    rabbitmq-delay-reset) echo "RabbitMQ (a private node) behind the fault proxy: every chunk delayed, then every connection reset, mid-publish" ;;
    rabbitmq-restart) echo "RabbitMQ restarted (rabbitmqctl stop_app / start_app) mid-publish, on a private node" ;;
    netns-loss-rate) echo "a peer in a network namespace behind 5 % random packet loss each way (nftables) and a 2 mbit token bucket (tc tbf)" ;;
    idle-connections-http-broker) echo "10 000 idle connections to the http broker's receiving server" ;;
    slowloris-http-broker) echo "a slowloris client on the http broker's receiving server" ;;
    idle-connections-prometheus) echo "10 000 idle connections to the Prometheus /metrics endpoint" ;;
    slowloris-prometheus) echo "a slowloris client on the Prometheus /metrics endpoint" ;;
    idle-connections-gateway) echo "10 000 idle connections to the API gateway" ;;
    slowloris-gateway) echo "a slowloris client on the API gateway" ;;
    auth_rules) echo "fuzz: auth rules (resource patterns, scopes) against a model" ;;
    broker_envelope) echo "fuzz: the http broker's envelope, both readers compared" ;;
    consul_tags) echo "fuzz: Consul tags (compressed, encoded registry entries)" ;;
    error_parse) echo "fuzz: Error::parse (Go Micro error JSON and plain text)" ;;
    etcd_entry) echo "fuzz: etcd registry entries (Go Micro's JSON)" ;;
    grpc_wire) echo "fuzz: gRPC timeout, path, metadata and error trailer parsing" ;;
    h2c_frames) echo "fuzz: the h2c stream frame reader, in random chunks, round-tripped with the writer" ;;
    jwt_verify) echo "fuzz: JWT verification" ;;
    kafka_headers) echo "fuzz: Kafka header conversion, publish to receive" ;;
    kubernetes_pod) echo "fuzz: Kubernetes pod annotations and labels" ;;
    mdns_packet) echo "fuzz: mDNS packets" ;;
    mdns_txt) echo "fuzz: mDNS TXT records" ;;
    metadata_model) echo "fuzz: Metadata against a case-insensitive map model" ;;
    mucp_headers) echo "fuzz: mucp headers and Timeout" ;;
    nats_headers) echo "fuzz: NATS header conversion" ;;
    rabbitmq_headers) echo "fuzz: RabbitMQ (AMQP table) header conversion" ;;
    *) echo "$1" ;;
    esac
}

# A figure of a FAULT-RESULT line (`key=value`), or empty.
figure() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p" | head -1; }

# The fuzz targets, and those the campaign's report has no line for.
mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^micro-fuzz$')
unrun=()
for t in "${targets[@]}"; do
    if ! { [ -f fuzz/report.tsv ] && cut -f1 fuzz/report.tsv | grep -qx "$t"; }; then unrun+=("$t"); fi
done

{
    echo "# Reliability"
    echo
    echo "Regenerate with \`scripts/reliability.sh\` (it rewrites this file; about as long as the test suite). It runs the whole test suite, in which the fault-injection tests (\`tests/tests/faults\`, \`cargo test -p micro-tests --test faults\`) report their figures, and reads the fuzz campaign's record, \`fuzz/report.tsv\`; \`--fuzz\` runs that campaign first (\`scripts/fuzz.sh\`: each target until 10 000 000 executions or 30 minutes). What each test asserts is in its source; CONTRIBUTING.md describes both suites."
    echo
    echo "| | |"
    echo "|---|---|"
    command="scripts/reliability.sh$([ "$fuzz" = 1 ] && echo ' --fuzz')$([ -n "$from" ] && echo " --from DIR")"
    echo "| command | \`$command\`$([ -n "$from" ] && echo ', DIR a checkout where `scripts/test.sh` ran') |"
    echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
    if [ -n "$from" ]; then
        echo "| commit | $(git -C "$from" rev-parse --short HEAD 2>/dev/null) (the checkout the tests ran in) |"
    else
        echo "| commit | $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)') |"
    fi
    echo "| machine | $(nproc) cores usable, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo), $(uname -sr) |"
    echo "| load average (1, 5, 15 min) | $load_before before, $(cut -d' ' -f1-3 /proc/loadavg) after |"
    if [ -n "$from" ]; then
        echo "| test suite | $passed passed, $failed failed (the run of \`scripts/test.sh\` that ended $(date -u -r "$log" '+%Y-%m-%d %H:%M UTC')) |"
    else
        echo "| test suite | $passed passed, $failed failed (cargo test exit status $tests_status), $(($(date +%s) - started)) s |"
    fi
    if [ -f fuzz/report.tsv ]; then
        short=$(awk -F'\t' 'NR > 1 && $3 < 10000000 && $4 < 1800 { n++ } END { print n + 0 }' fuzz/report.tsv)
        total=$(($(wc -l <fuzz/report.tsv) - 1))
        echo "| fuzz report | \`fuzz/report.tsv\` (committed; each target's line says when and on which commit it ran); $short of $total targets run short of the campaign's goal (10 000 000 executions or 30 minutes each); ${#unrun[@]} of ${#targets[@]} targets not run |"
    else
        echo "| fuzz report | none: run \`scripts/fuzz.sh\` |"
    fi
    echo
    echo "## What was tried and what happened"
    echo
    echo "| what was tried | what happened | lost |"
    echo "|---|---|---|"
    while read -r _ name rest; do
        lost=$(figure lost "$rest")
        [ -z "$lost" ] && lost=$(figure failed "$rest")
        echo "| $(describe "$name") | \`$rest\` | ${lost:-n/a} |"
    done < <(grep '^FAULT-RESULT ' "$results" | sort -u)
    if [ -f fuzz/report.tsv ]; then
        tail -n +2 fuzz/report.tsv | while IFS=$'\t' read -r target mode executions seconds result artifact day commit; do
            case "$result" in
            ok) happened="no crash, hang or slow input" ;;
            *) happened="**$result**: input kept in \`$artifact\`" ;;
            esac
            if [ "$executions" -ge 10000000 ] || [ "$seconds" -ge 1800 ]; then goal="goal reached"; else goal="**short of the goal**"; fi
            echo "| $(describe "$target") | $executions executions in $seconds s ($mode campaign, $goal; $day, commit $commit): $happened | n/a |"
        done
    fi
    for t in "${unrun[@]}"; do
        echo "| $(describe "$t") | **not run** in the fuzz campaign | n/a |"
    done
    if ! grep -q '^FAULT-RESULT ' "$results"; then
        echo "| the fault-injection suite | **no results**: see \`target/reliability-test.log\` | |"
    fi
} >RELIABILITY.md

echo "RELIABILITY.md written: $passed tests passed, $failed failed; $(grep -c '^FAULT-RESULT ' "$results") fault results"
exit "$tests_status"
