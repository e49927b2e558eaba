#!/usr/bin/env bash
# e2e-latency.sh: round-trip time between two "container" namespaces, idle and while a second
# pair of containers on the same switch runs a bulk TCP flow, through these paths in ONE run
# (benches/paths.sh builds them as e2e-datapath.sh does):
#
#   vswitchd            its default datapath workers (half the CPUs, 1 to 4); also the RTT
#                       to its gateway address, which the switch answers itself
#   vswitchd-1worker    --workers 1 (one datapath thread reads every TAP)
#   vswitchd-2workers   --workers 2
#   vswitchd-nice10     --datapath-nice -10 (datapath threads ahead of the containers' processes)
#   vswitchd-normal     --datapath-realtime never (the datapath threads never SCHED_FIFO)
#   tapcopy             the bare copy loop: one thread copying between TAPs 1-2 and 3-4, so its
#                       increase under load is what the same load costs a userspace loop that
#                       does no switching at all
#   bridge              kernel bridge with veth pairs (in a namespace of its own)
#
# RTT: `ping -i INTERVAL` for SECONDS s (default one every 10 ms for 20 s), every reply's time
# kept: mean, p50, p99 and losses. The same count and spacing (testbed/rtt.py) for a TCP connect
# to a listener in the second container (every path), and for what vswitchd's gateway does
# itself: a DNS answer for the second container's name, and an egress TCP connect to the host's
# 127.0.0.1 (vswitchd runs with --egress, the network with --host-loopback). Under load: the same while iperf3 runs from container 3 to
# container 4 of the same switch (1 stream), whose throughput is reported too. Then, in the same
# run, iperf3 between the measured pair (1 stream and 4 streams, idle) to show throughput did not
# pay for the round trips. Prints a markdown table and ratios and appends them to
# benches/RESULTS.md.
#
#   sudo benches/e2e-latency.sh [-t SECONDS] [-i INTERVAL] [-r ROUNDS] [-T SECONDS] [-s SWITCHES] [-n] [-B]
#     -t SECONDS   length of each ping series (default 20)
#     -r ROUNDS    idle ping series per path (default 3), the paths taking turns in each round:
#                  the idle row pools every round's replies, and the ratios to tapcopy are given
#                  per round and as their median (this box drifts by more than the gap measured)
#     -i INTERVAL  seconds between pings (default 0.01)
#     -T SECONDS   length of each throughput run (default 5; 0: no throughput runs)
#     -s LIST      comma-separated subset of vswitchd,vswitchd-1worker,vswitchd-2workers,vswitchd-nice10,vswitchd-normal,tapcopy,bridge
#                  (default: vswitchd,vswitchd-normal,tapcopy,bridge)
#     -n           do not write benches/RESULTS.md (print only)
#     -B           do not build (use target/release as it is)
#
# Only namespaces this script creates carry traffic; all of them, the daemons and the iperf3
# servers are removed on exit, also on failure or Ctrl-C. A watchdog bounds the run.
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"

secs=20 interval=0.01 rounds=3 tput=5 write=1 build=1
switches=vswitchd,vswitchd-normal,tapcopy,bridge
cmdline="benches/e2e-latency.sh${*:+ $*}"
while getopts "t:i:r:T:s:nBh" o; do
    case $o in
        t) secs=$OPTARG ;; i) interval=$OPTARG ;; r) rounds=$OPTARG ;; T) tput=$OPTARG ;; s) switches=$OPTARG ;; n) write=0 ;; B) build=0 ;;
        *) sed -n '2,34p' "$0"; exit 2 ;;
    esac
done
[[ $secs =~ ^[0-9]+$ && $secs -ge 1 && $tput =~ ^[0-9]+$ && $interval =~ ^[0-9.]+$ && $rounds =~ ^[0-9]+$ && $rounds -ge 1 ]] \
    || tb_die "-t and -T take whole seconds, -i a number of seconds, -r a number of rounds"
tb_need_root

tb_bench_scratch e2e-latency
count=$(awk -v s="$secs" -v i="$interval" 'BEGIN { printf "%d", s / i }')
# Per path at most ROUNDS idle series, five others (gateway, connect, DNS, egress, under load)
# and two throughput runs.
npaths=$(tr ',' '\n' <<<"$switches" | grep -c .)
limit=$((npaths * ((rounds + 5) * secs + 2 * tput + 30) + 180))
tb_bench_watchdog e2e-latency "$limit"

tb_apt iperf3=iperf3 ping=iputils-ping python3=python3 ip=iproute2
tb_release_bins "$build" tapcopy
git_rev=$(git -C "$TB_ROOT" describe --always --dirty 2>/dev/null || echo unknown)
tag="vsbl$$"
conn_port=5301
vsd_args+=(--egress)
vsd_net_args=(--host-loopback "$conn_port")
pairs=2
declare -A R S
. "$(dirname "$0")/paths.sh"

# rtt_series NS IP FILE: prints "MEAN P50 P99 LOST" (tb_rtt_series).
rtt_series() { tb_rtt_series "$1" "$2" "$count" "$interval" "$3"; }

# gbits NS IP STREAMS SECONDS [JSON]: iperf3 throughput in Gbit/s.
gbits() {
    local f=${5:-$run/iperf.$BASHPID.json}
    ip netns exec "$1" timeout $(($4 + 20)) iperf3 -c "$2" -t "$4" -P "$3" -J --connect-timeout 3000 >"$f" 2>&1 \
        || { echo "iperf3 failed: $(head -c 300 "$f")" >&2; echo 0; return; }
    python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))' <"$f"
}

# serve_load NAME: an iperf3 server in the switch's fourth container (the load pair).
serve_load() { tb_iperf3_server "${S[$1,ns4]}" "${S[$1,ip4]}" "$run/iperf3-load-$1.log"; }

IFS=, read -r -a want <<<"$switches"
for s in "${want[@]}"; do
    case $s in
        vswitchd | vswitchd-1worker | vswitchd-2workers | vswitchd-nice10 | vswitchd-normal) setup_vswitchd "$s" ;;
        bridge) setup_bridge ;;
        tapcopy) setup_tapcopy "$s" ;;
        *) tb_die "unknown path $s (vswitchd, vswitchd-1worker, vswitchd-2workers, vswitchd-nice10, vswitchd-normal, tapcopy, bridge)" ;;
    esac
    serve "$s"
    [ -n "${S[$s,ns4]:-}" ] && serve_load "$s"
done

# rtt_idle KEY DEST: for every path that has S[path,DEST], R[path,KEY] = the RTT series from
# its first container to that address.
rtt_idle() {
    local s
    for s in "${want[@]}"; do
        [ -n "${S[$s,$2]:-}" ] || continue
        R[$s,$1]=$(rtt_series "${S[$s,ns1]}" "${S[$s,$2]}" "$run/rtt-$1-$s")
        tb_log "  $s: mean p50 p99 lost = ${R[$s,$1]}"
    done
}
tb_log "idle RTT: $count pings, one every $interval s, $rounds rounds"
for r in $(seq "$rounds"); do
    rtt_idle "idle$r" ip2
done
# The idle row: every round's replies pooled.
for s in "${want[@]}"; do
    for r in $(seq "$rounds"); do cat "$run/rtt-idle$r-$s"; done >"$run/rtt-idle-$s"
    R[$s,idle]=$(tb_rtt_stats "$run/rtt-idle-$s" $((count * rounds)))
done
tb_log "RTT to vswitchd's gateway (answered by the switch itself), idle"
rtt_idle gw gw
# rtt_py NS FILE ARGS...: testbed/rtt.py ARGS COUNT INTERVAL in namespace NS (times to FILE),
# then "MEAN P50 P99 LOST".
rtt_py() {
    local ns=$1 file=$2
    shift 2
    ip netns exec "$ns" timeout $((3 * secs + 30)) python3 "$TB_ROOT/testbed/rtt.py" "$@" "$count" "$interval" >"$file" 2>/dev/null || true
    tb_rtt_stats "$file" "$count"
}
tb_log "TCP connect round trips to a listener in the second container"
for s in "${want[@]}"; do
    ip netns exec "${S[$s,ns2]}" python3 "$TB_ROOT/testbed/rtt.py" serve "${S[$s,ip2]}" "$conn_port" &
    tb_undo "kill $!; wait $!"
    sleep 0.3
    R[$s,conn]=$(rtt_py "${S[$s,ns1]}" "$run/conn-$s" connect "${S[$s,ip2]}" "$conn_port")
    tb_log "  $s: mean p50 p99 lost = ${R[$s,conn]}"
done
tb_log "vswitchd's gateway: DNS answers for c2, egress TCP connects to the host's 127.0.0.1:$conn_port"
python3 "$TB_ROOT/testbed/rtt.py" serve 127.0.0.1 "$conn_port" &
tb_undo "kill $!; wait $!"
sleep 0.3
for s in "${want[@]}"; do
    [ -n "${S[$s,gw]:-}" ] || continue
    R[$s,dns]=$(rtt_py "${S[$s,ns1]}" "$run/dns-$s" dns "${S[$s,gw]}" c2)
    R[$s,egress]=$(rtt_py "${S[$s,ns1]}" "$run/egress-$s" connect "${S[$s,gw]}" "$conn_port")
    tb_log "  $s: DNS ${R[$s,dns]}; egress connect ${R[$s,egress]}"
done
tb_log "RTT under load: the same while iperf3 runs between containers 3 and 4 of the same switch"
for s in "${want[@]}"; do
    [ -n "${S[$s,ns4]:-}" ] || continue
    gbits "${S[$s,ns3]}" "${S[$s,ip4]}" 1 $((secs + 2)) "$run/load-$s.json" >"$run/load-$s.gbit" &
    lp=$!
    sleep 1
    R[$s,load]=$(rtt_series "${S[$s,ns1]}" "${S[$s,ip2]}" "$run/rtt-load-$s")
    wait "$lp" || true
    R[$s,loadgbit]=$(cat "$run/load-$s.gbit")
    tb_log "  $s: mean p50 p99 lost = ${R[$s,load]} (load ${R[$s,loadgbit]} Gbit/s)"
done
if [ "$tput" -gt 0 ]; then
    tb_log "throughput between the measured pair: 1 and 4 streams, $tput s each"
    for s in "${want[@]}"; do
        R[$s,p1]=$(gbits "${S[$s,ns1]}" "${S[$s,ip2]}" 1 "$tput")
        R[$s,p4]=$(gbits "${S[$s,ns1]}" "${S[$s,ip2]}" 4 "$tput")
        tb_log "  $s: ${R[$s,p1]} / ${R[$s,p4]} Gbit/s"
    done
fi

# ---- report ---------------------------------------------------------------------------------
field() { awk -v k="$2" '{ print $k }' <<<"${R[$1]:--}"; }
# rise PATH COLUMN: how much column COLUMN (1 mean, 2 p50, 3 p99) rose from idle to under load.
rise() { tb_diff "$(field "$1,load" "$2")" "$(field "$1,idle" "$2")"; }
report=$run/report.md
{
    echo "## End-to-end latency: $(date -u +%Y-%m-%d), kernel $(uname -r)"
    echo
    echo "Command: \`sudo $cmdline\` (vswitchd release build of \`$git_rev\`; $(nproc) vCPU"
    echo "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); pingers, iperf3 and the switches share the cores)."
    echo "ICMP echo between two namespaces, MTU 1500: $count pings one every $interval s per cell (idle: $rounds rounds, the paths taking turns, replies pooled); RTT in ms."
    echo "Under load: iperf3 -c (1 stream) between two other containers of the same switch meanwhile."
    echo "Throughput: iperf3 between the measured pair afterwards, idle, ${tput} s per run (one run each)."
    echo "Load average before/after: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "| path | idle mean | idle p50 | idle p99 | lost | load mean | load p50 | load p99 | lost | load Gbit/s | 1 stream Gbit/s | 4 streams Gbit/s |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for s in "${want[@]}"; do
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${R[$s,desc]}" \
            "$(field "$s,idle" 1)" "$(field "$s,idle" 2)" "$(field "$s,idle" 3)" "$(field "$s,idle" 4)" \
            "$(field "$s,load" 1)" "$(field "$s,load" 2)" "$(field "$s,load" 3)" "$(field "$s,load" 4)" \
            "${R[$s,loadgbit]:--}" "${R[$s,p1]:--}" "${R[$s,p4]:--}"
    done
    echo
    echo "| ratio | idle p50 | idle p99 | idle mean |"
    echo "|---|---|---|---|"
    for pair in vswitchd/tapcopy vswitchd/vswitchd-1worker vswitchd/vswitchd-2workers vswitchd/vswitchd-nice10 vswitchd/vswitchd-normal vswitchd-1worker/tapcopy vswitchd-2workers/tapcopy vswitchd/bridge; do
        a=${pair%/*} b=${pair#*/}
        [ -n "${R[$a,idle]:-}" ] && [ -n "${R[$b,idle]:-}" ] || continue
        printf '| %s | %s | %s | %s |\n' "$pair" "$(tb_ratio "$(field "$a,idle" 2)" "$(field "$b,idle" 2)")" \
            "$(tb_ratio "$(field "$a,idle" 3)" "$(field "$b,idle" 3)")" "$(tb_ratio "$(field "$a,idle" 1)" "$(field "$b,idle" 1)")"
    done
    if [ -n "${R[vswitchd,idle1]:-}" ] && [ -n "${R[tapcopy,idle1]:-}" ]; then
        echo
        echo "| vswitchd/tapcopy, idle, per round | p50 | p99 |"
        echo "|---|---|---|"
        p50s=() p99s=()
        for r in $(seq "$rounds"); do
            p50s+=("$(tb_ratio "$(field "vswitchd,idle$r" 2)" "$(field "tapcopy,idle$r" 2)")")
            p99s+=("$(tb_ratio "$(field "vswitchd,idle$r" 3)" "$(field "tapcopy,idle$r" 3)")")
            echo "| round $r | ${p50s[-1]} | ${p99s[-1]} |"
        done
        echo "| median of the rounds | $(tb_ratio "$(tb_median "${p50s[@]}")" 1) | $(tb_ratio "$(tb_median "${p99s[@]}")" 1) |"
    fi
    echo
    echo "| ping to the gateway (ms), idle | mean | p50 | p99 | lost |"
    echo "|---|---|---|---|---|"
    for s in "${want[@]}"; do
        [ -n "${R[$s,gw]:-}" ] || continue
        printf '| %s | %s | %s | %s | %s |\n' "$s" "$(field "$s,gw" 1)" "$(field "$s,gw" 2)" "$(field "$s,gw" 3)" "$(field "$s,gw" 4)"
    done
    echo
    echo "| other round trips, idle (ms) | mean | p50 | p99 | lost |"
    echo "|---|---|---|---|---|"
    for s in "${want[@]}"; do
        printf '| TCP connect to container 2, %s | %s | %s | %s | %s |\n' "$s" "$(field "$s,conn" 1)" "$(field "$s,conn" 2)" "$(field "$s,conn" 3)" "$(field "$s,conn" 4)"
    done
    for s in "${want[@]}"; do
        [ -n "${R[$s,dns]:-}" ] || continue
        printf '| DNS answer from the gateway, %s | %s | %s | %s | %s |\n' "$s" "$(field "$s,dns" 1)" "$(field "$s,dns" 2)" "$(field "$s,dns" 3)" "$(field "$s,dns" 4)"
        printf '| egress TCP connect to the host, %s | %s | %s | %s | %s |\n' "$s" "$(field "$s,egress" 1)" "$(field "$s,egress" 2)" "$(field "$s,egress" 3)" "$(field "$s,egress" 4)"
    done
    echo
    echo "| increase under load (ms) | p50 | p99 | mean |"
    echo "|---|---|---|---|"
    for s in "${want[@]}"; do
        [ -n "${R[$s,load]:-}" ] || continue
        printf '| %s | %s | %s | %s |\n' "$s" "$(rise "$s" 2)" "$(rise "$s" 3)" "$(rise "$s" 1)"
    done
    if [ -n "${R[vswitchd,load]:-}" ] && [ -n "${R[bridge,load]:-}" ]; then
        echo
        echo "Goals: vswitchd (default) idle p50 and p99 ≤ 1.2× tapcopy's; its increase under load ≤ 1.5× the bridge's."
        for b in bridge tapcopy; do
            [ -n "${R[$b,load]:-}" ] || continue
            echo "vswitchd/$b increase under load: p50 $(tb_ratio "$(rise vswitchd 2)" "$(rise "$b" 2)")×, p99 $(tb_ratio "$(rise vswitchd 3)" "$(rise "$b" 3)")×."
        done
    fi
    echo
} >"$report"
cat "$report"
if [ "$write" = 1 ]; then
    cat "$report" >>"$TB_ROOT/benches/RESULTS.md"
    tb_log "appended to benches/RESULTS.md"
fi
