#!/usr/bin/env bash
# ops-bench.sh: what operating the switch costs the datapath. TCP throughput (iperf3, 1 stream)
# between two "container" namespaces through one vswitchd, in ONE run, three ways:
#
#   alone      nothing else
#   metrics    Prometheus' part: GET /metrics on --metrics-listen every second (curl)
#   capture    vswitchctl capture running on a third, idle endpoint of the same network
#              (capture on: every frame of the flow takes the "is this port captured" check)
#
# The three alternate within each repetition (alone, metrics, capture, alone, ...), so drift of
# a shared box hits them alike; the median of REPS runs of each is reported with the spread of
# the "alone" runs (run-to-run noise) and the ratios. Appends the table to benches/RESULTS.md.
#
#   sudo benches/ops-bench.sh [-t SECONDS] [-r REPS] [-n] [-B]
#     -t SECONDS   length of one iperf3 run (default 5)
#     -r REPS      runs of each mode (default 5)
#     -n           do not write benches/RESULTS.md (print only)
#     -B           do not build (use target/release as it is)
#
# Only namespaces this script creates carry traffic; they, the daemon, the scraper, the capture
# and the iperf3 server are removed on exit, also on failure or Ctrl-C. A watchdog bounds the run.
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"

secs=5 reps=5 write=1 build=1
cmdline="benches/ops-bench.sh${*:+ $*}"
while getopts "t:r:nBh" o; do
    case $o in
        t) secs=$OPTARG ;; r) reps=$OPTARG ;; n) write=0 ;; B) build=0 ;;
        *) sed -n '2,20p' "$0"; exit 2 ;;
    esac
done
tb_positive "-t and -r" "$secs" "$reps"
tb_need_root

tb_bench_scratch ops-bench
tb_bench_watchdog ops-bench $((3 * reps * (secs + 10) + 300))

tb_apt iperf3=iperf3 curl=curl python3=python3 ip=iproute2
tb_release_bins "$build"
git_rev=$(git -C "$TB_ROOT" describe --always --dirty 2>/dev/null || echo unknown)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

tag="vsop$$"
sock=$run/vswitchd.sock
mport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
tb_log "vswitchd --metrics-listen 127.0.0.1:$mport"
tb_daemon "$bin" "$sock" --log-level warn "${vsd_args[@]}" --metrics-listen "127.0.0.1:$mport" 2>>"$run/vswitchd.log"
ctl=("$bin/vswitchctl" --socket "$sock")
"${ctl[@]}" network create ops --subnet 10.236.0.0/24 >/dev/null
for c in c1 c2 c3; do
    tb_netns "$tag-$c"
    "${ctl[@]}" attach ops --netns "/run/netns/$tag-$c" --name "$c" >/dev/null
done
ip2=$("${ctl[@]}" --json network inspect ops | python3 -c 'import json,sys; print(next(e["ip"] for e in json.load(sys.stdin)["endpoint_list"] if e["name"] == "c2"))')

tb_iperf3_server "$tag-c2" "$ip2" "$run/iperf3-server.log"
ip netns exec "$tag-c1" ping -c 3 -i 0.2 -W 1 "$ip2" >/dev/null || tb_die "c1 cannot reach c2"

# iperf_once: Gbit/s of one 1-stream run from c1 to c2.
iperf_once() {
    ip netns exec "$tag-c1" timeout $((secs + 20)) iperf3 -c "$ip2" -t "$secs" -J --connect-timeout 3000 >"$run/iperf.json" 2>&1 \
        || { echo "iperf3 failed: $(head -c 300 "$run/iperf.json")" >&2; echo 0; return; }
    python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))' <"$run/iperf.json"
}

# Background helpers for the two modes; each started before a run and stopped after it.
start_metrics() {
    (while :; do curl -sf "http://127.0.0.1:$mport/metrics" >/dev/null; sleep 1; done) &
    helper=$!
}
start_capture() {
    "${ctl[@]}" capture c3 -w /dev/null 2>>"$run/capture.log" &
    helper=$!
    for _ in $(seq 50); do
        curl -sf "http://127.0.0.1:$mport/metrics" | grep -q '^vswitch_capture_sessions 1$' && return
        sleep 0.1
    done
    tb_die "the capture did not start"
}
stop_helper() {
    [ -n "${helper:-}" ] || return 0
    kill "$helper" 2>/dev/null || true
    wait "$helper" 2>/dev/null || true
    helper=
}
tb_undo stop_helper

declare -A G
scrapes0=$(curl -sf "http://127.0.0.1:$mport/metrics" | wc -l)
for r in $(seq "$reps"); do
    for mode in alone metrics capture; do
        case $mode in metrics) start_metrics ;; capture) start_capture ;; esac
        g=$(iperf_once)
        stop_helper
        G[$mode]+="$g "
        tb_log "run $r/$reps $mode: $g Gbit/s"
    done
done

# shellcheck disable=SC2086
{
    alone=$(tb_median ${G[alone]}) metrics=$(tb_median ${G[metrics]}) capture=$(tb_median ${G[capture]})
    spread=$(printf '%s\n' ${G[alone]} | sort -g | awk -v m="$alone" 'NR == 1 { lo = $1 } { hi = $1 } END { if (m + 0 == 0) print "n/a"; else printf "%.0f", 100 * (hi - lo) / m }')
}
report=$run/report.md
{
    echo "## Operations overhead: $(date -u +%Y-%m-%d), kernel $(uname -r)"
    echo
    echo "Command: \`sudo $cmdline\` (vswitchd release build of \`$git_rev\`, iperf3 $(iperf3 --version | awk 'NR == 1 { print $2 }'), ${secs} s per run,"
    echo "median of $reps runs of each mode, the modes alternating within each repetition; $(nproc) vCPU, load average"
    echo "before $load_start, after $(cut -d' ' -f1-3 /proc/loadavg)). TCP, 1 stream, c1 → c2, MTU 1500, default workers."
    echo "metrics: \`curl /metrics\` on --metrics-listen every second ($scrapes0 lines per scrape); capture:"
    echo "\`vswitchctl capture c3 -w /dev/null\` on a third, idle endpoint of the same network."
    echo
    echo "| mode | Gbit/s (median) | runs | ratio to alone |"
    echo "|---|---|---|---|"
    echo "| alone | $alone | ${G[alone]}| 1.00 |"
    echo "| /metrics scraped every second | $metrics | ${G[metrics]}| $(tb_ratio "$metrics" "$alone") |"
    echo "| capture running on another port | $capture | ${G[capture]}| $(tb_ratio "$capture" "$alone") |"
    echo
    echo "Run-to-run noise: the \"alone\" runs spread over ${spread} % of their median."
} >"$report"
tb_report "$report" "$write"
