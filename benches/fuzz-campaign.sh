#!/usr/bin/env bash
# fuzz-campaign.sh [RUNS] [TARGET...]: run every cargo-fuzz target (or those named) for RUNS
# executions each (default 10 000 000), from its seed corpus in fuzz/corpus/TARGET, and print
# executions, time and crashes per target. New inputs go to a scratch corpus; with KEEP=1 they
# are merged (minimised) into fuzz/corpus/TARGET afterwards. Crash inputs stay in
# fuzz/artifacts/TARGET: keep each as a regression seed once fixed. MAX_TIME=SECONDS stops each
# target after that long; a target stopped early (MAX_TIME, or SIGINT to its fuzzer process)
# still reports how many executions it made, so a long campaign can be run in parts (with
# KEEP=1 each part starts from the corpus the last one grew).
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"
runs=${1:-10000000}
shift || true
cd "$TB_ROOT"
tb_fuzz_tools || tb_die "needs a nightly toolchain and cargo-fuzz"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
printf '%-14s %12s %8s %8s\n' target executions seconds crashes
for t in "${targets[@]}"; do
    scratch=$(mktemp -d "/tmp/vswitch-fuzz-$t.XXXXXX")
    mkdir -p "fuzz/corpus/$t"
    start=$(date +%s)
    set +e
    out=$(cargo +nightly fuzz run --fuzz-dir fuzz "$t" "$scratch" "fuzz/corpus/$t" -- -runs="$runs" -rss_limit_mb=2048 \
        -print_final_stats=1 ${MAX_TIME:+-max_total_time="$MAX_TIME"} 2>&1)
    rc=$?
    set -e
    secs=$(( $(date +%s) - start ))
    execs=$(printf '%s\n' "$out" | sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' | tail -n 1)
    crashes=$(ls "fuzz/artifacts/$t" 2>/dev/null | grep -c '^crash-' || true)
    printf '%-14s %12s %8s %8s\n' "$t" "${execs:-?}" "$secs" "$crashes"
    [ $rc -eq 0 ] || printf '%s\n' "$out" | tail -n 20 >&2
    if [ "${KEEP:-0}" = 1 ]; then
        cp -n "$scratch"/* "fuzz/corpus/$t"/ 2>/dev/null || true
        cargo +nightly fuzz cmin --fuzz-dir fuzz "$t" "fuzz/corpus/$t" >/dev/null 2>&1 || true
    fi
    rm -rf "$scratch"
done
