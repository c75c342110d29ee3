#!/usr/bin/env bash
# Fuzzes every parser of peer input (the targets in fuzz/fuzz_targets/, one per parser).
#
#   scripts/fuzz.sh                 # the full campaign: each target until 10 000 000 runs or
#                                   # 30 minutes, whichever comes first, one after the other
#   scripts/fuzz.sh --smoke         # each target for a few seconds
#   scripts/fuzz.sh --seeds         # each target, built as the workspace builds it (no
#                                   # instrumentation, no cargo-fuzz), run on its committed
#                                   # seeds: what CI runs, so no target rots; seconds once the
#                                   # workspace is built (the instrumented build of --smoke
#                                   # takes about 20 minutes from clean on 2 cores)
#   scripts/fuzz.sh [--smoke|--seeds] mdns_packet h2c_frames   # only these targets
#
# Each target starts from its committed seeds (fuzz/corpus/<target>/) plus what earlier runs
# on this machine found (fuzz/target/corpus/<target>/, not committed). A crash, a panic, an
# input slower than FUZZ_TIMEOUT seconds or one using more than FUZZ_RSS_MB of memory fails
# the target; its input is kept in fuzz/artifacts/<target>/ (reproduce with
# `cargo fuzz run <target> <file>` in fuzz/, RUSTC_BOOTSTRAP=1). Results go to
# fuzz/report.tsv, one line per target with the executions reached, the date and the commit;
# a run replaces the lines of the targets it ran and keeps the others, so a campaign can be
# made a few targets at a time. The report is committed: it is the record RELIABILITY.md
# shows. Exits non-zero when a target failed.
#
# Environment: FUZZ_RUNS (10000000), FUZZ_SECONDS (1800; 5 with --smoke), FUZZ_TIMEOUT (5),
# FUZZ_RSS_MB (2048). libFuzzer runs as one process (no -jobs/-workers), so a campaign uses
# one core.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
seeds=0
case "${1:-}" in
--smoke) smoke=1; shift ;;
--seeds) seeds=1; shift ;;
esac
runs="${FUZZ_RUNS:-10000000}"
if [ "$smoke" = 1 ]; then seconds="${FUZZ_SECONDS:-5}"; else seconds="${FUZZ_SECONDS:-1800}"; fi
timeout="${FUZZ_TIMEOUT:-5}"
rss="${FUZZ_RSS_MB:-2048}"

if [ "$seeds" = 1 ]; then
    # libFuzzer given files (not folders) runs each once and stops: no coverage needed.
    cargo build -q -p micro-fuzz --bins
    bin="$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug"
    if [ "$#" -gt 0 ]; then targets=("$@"); else
        mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^micro-fuzz$')
    fi
    failed=0
    for t in "${targets[@]}"; do
        seeds_of=(fuzz/corpus/"$t"/*)
        if "$bin/$t" -timeout="$timeout" -rss_limit_mb="$rss" "${seeds_of[@]}" >"$bin/fuzz-seeds-$t.log" 2>&1; then
            echo "$t: ${#seeds_of[@]} seeds ok"
        else
            failed=1
            echo "$t: FAILED on its seeds:" >&2
            grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Running:' "$bin/fuzz-seeds-$t.log" | tail -4 >&2 || true
        fi
    done
    exit "$failed"
fi

if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes nightly flags (-Z) to rustc; the stable toolchain takes them with this.
export RUSTC_BOOTSTRAP=1
# No sanitizer: every crate fuzzed forbids unsafe code, so AddressSanitizer would find
# nothing and halve the executions; panics, overflow (debug assertions on), hangs and memory
# growth are what the targets look for.
flags=(--sanitizer none --debug-assertions)

cd fuzz
if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
if [ "$#" -gt 0 ]; then
    for t in "${targets[@]}"; do cargo fuzz build "${flags[@]}" "$t"; done
else
    cargo fuzz build "${flags[@]}"
fi

report=report.tsv
header=$'target\tmode\texecutions\tseconds\tresult\tartifact\tdate\tcommit'
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- .. || echo '-dirty')"
if [ "$smoke" = 1 ]; then mode=smoke
elif [ "$runs" = 10000000 ] && [ "$seconds" = 1800 ]; then mode=full
else mode="runs=$runs,seconds=$seconds"; fi
# Replaces target $1's line of the report with $2, keeping the other targets' lines (under a
# lock: two campaigns over different targets may run at once, one per core).
record() {
    (
        flock 9
        local others=""
        if [ -f "$report" ]; then others=$(tail -n +2 "$report" | awk -F'\t' -v t="$1" '$1 != t'); fi
        printf '%s\n%s\n' "$others" "$2" | grep -v '^$' | sort >"$report.new"
        { echo "$header"; cat "$report.new"; } >"$report"
        rm -f "$report.new"
    ) 9>"target/report.lock"
}
failed=0
for t in "${targets[@]}"; do
    case "$t" in
    mdns_packet) max_len=9000 ;;  # the largest mDNS packet the registry reads
    *) max_len=8192 ;;
    esac
    work="target/corpus/$t"
    mkdir -p "$work" "corpus/$t"
    log="target/fuzz-$t.log"
    start=$(date +%s)
    result=ok
    cargo fuzz run "${flags[@]}" "$t" "$work" "corpus/$t" -- \
        -runs="$runs" -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb="$rss" \
        -max_len="$max_len" -print_final_stats=1 >"$log" 2>&1 || result=failed
    elapsed=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if [ "$result" = failed ]; then
        failed=1
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -3 | sed "s/^/$t: /" >&2 || true
    fi
    row=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$t" "$mode" "${execs:-0}" "$elapsed" \
        "$result" "${artifact:--}" "$(date -u '+%Y-%m-%d')" "$commit")
    echo "$row"
    record "$t" "$row"
done
echo "report: fuzz/$report"
exit "$failed"
