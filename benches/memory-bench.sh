#!/usr/bin/env bash
# memory-bench.sh: vswitchd's memory (Rss, Pss, Pss_Anon from /proc/PID/smaps_rollup) idle, with
# 10 and with COUNT containers attached, and the marginal cost of one container.
#
#   sudo benches/memory-bench.sh [-n COUNT] [-x] [-B]
#     -n COUNT   containers for the large point (default 1000; at most 1021: one /22)
#     -x         do not write benches/RESULTS.md (print only)
#     -B         do not build (use target/release as it is)
#
# Points, in this order, on one daemon:
#   started             vswitchd just started, nothing configured
#   1 network           one /22 network (its gateway port), no container
#   10 attached         10 containers attached (through the API, attach-timer)
#   10, after traffic   then 3 s of iperf3 -P 4 between two of them and a ping from each: the
#                       datapath's batch buffers have now been written
#   COUNT attached      COUNT - 10 more attached
#   COUNT, after pings  each container has pinged the gateway once (every port has switched
#                       frames and has its MAC learned)
# Marginal per container = (COUNT point - 10 point) / (COUNT - 10), both after traffic.
# Namespaces are made beforehand (ip -batch) and deleted on exit with the daemon.
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"

count=1000 write=1 build=1
cmdline="benches/memory-bench.sh${*:+ $*}"
while getopts "n:xBh" o; do
    case $o in
        n) count=$OPTARG ;; x) write=0 ;; B) build=0 ;;
        *) sed -n '2,22p' "$0"; exit 2 ;;
    esac
done
[[ $count =~ ^[0-9]+$ && $count -ge 20 && $count -le 1021 ]] || tb_die "-n takes 20..1021"
tb_need_root

tb_bench_scratch memory-bench
limit=$((180 + count / 5))
tb_bench_watchdog memory-bench "$limit"

tb_apt ip=iproute2 iperf3=iperf3 ping=iputils-ping
tb_release_bins "$build" attach-timer
git_rev=$(git -C "$TB_ROOT" describe --always --dirty 2>/dev/null || echo unknown)

tag="vsbm$$"
sock=$run/vswitchd.sock
ctl() { "$bin/vswitchctl" --socket "$sock" "$@"; }

for ((i = 1; i <= count; i++)); do echo "$tag-$i"; done >"$run/all"
head -10 "$run/all" >"$run/first"
tail -n +11 "$run/all" >"$run/rest"
sed 's/^/netns del /' "$run/all" >"$run/del.batch"
tb_undo "ip -force -batch '$run/del.batch'"
tb_log "creating $count namespaces (ip -batch)"
sed 's/^/netns add /' "$run/all" | ip -batch - || tb_die "cannot create the namespaces"

tb_daemon "$bin" "$sock" --log-level warn "${vsd_args[@]}" 2>"$run/vswitchd.log"
pid=$!
[ "$(cat /proc/$pid/comm 2>/dev/null)" = vswitchd ] || tb_die "cannot find the vswitchd pid"
# Deleting the namespaces before the daemon stops removes their TAPs in kernel batches instead
# of one slow close() per TAP on the datapath thread.
tb_undo "ip -force -batch '$run/del.batch'"

declare -a P_NAME P_RSS P_PSS P_ANON
# point LABEL: record Rss, Pss, Pss_Anon (KiB) of vswitchd now.
point() {
    sleep 0.5
    local rss pss anon
    read -r rss pss anon < <(awk '/^Rss:/ { r = $2 } /^Pss:/ { p = $2 } /^Pss_Anon:/ { a = $2 } END { print r, p, a }' "/proc/$pid/smaps_rollup")
    P_NAME+=("$1") P_RSS+=("$rss") P_PSS+=("$pss") P_ANON+=("$anon")
    printf '  %-26s Rss %6d KiB  Pss %6d KiB  Pss_Anon %6d KiB\n' "$1" "$rss" "$pss" "$anon" >&2
}

point "started"
ctl network create mem --subnet 10.236.0.0/22 >/dev/null
point "1 network, no container"
"$bin/attach-timer" --socket "$sock" --network mem --names "$run/first" >/dev/null
point "10 attached"
tb_log "traffic: 3 s of iperf3 -P 4 between two containers, a ping from each of the 10"
c1=$(sed -n 1p "$run/first") c2=$(sed -n 2p "$run/first")
ip2=$(ctl --json network inspect mem | python3 -c "import json,sys; print(next(e['ip'] for e in json.load(sys.stdin)['endpoint_list'] if e['name'] == '$c2'))")
ip netns exec "$c2" iperf3 -s -1 -B "$ip2" >/dev/null 2>&1 &
spid=$!
tb_undo "kill $spid 2>/dev/null; wait $spid"
for _ in $(seq 50); do ip netns exec "$c2" ss -Hltn "sport = :5201" | grep -q . && break; sleep 0.1; done
ip netns exec "$c1" timeout 20 iperf3 -c "$ip2" -t 3 -P 4 >/dev/null || tb_die "iperf3 between $c1 and $c2 failed"
while read -r ns; do ip netns exec "$ns" ping -c 1 -W 1 10.236.0.1 >/dev/null || tb_die "$ns cannot ping its gateway"; done <"$run/first"
point "10 attached, after traffic"
tb_log "attaching $((count - 10)) more"
"$bin/attach-timer" --socket "$sock" --network mem --names "$run/rest" >/dev/null
point "$count attached"
tb_log "a ping to the gateway from each of the $count"
# 25 at a time: every port switches frames (ARP, ICMP) and has its MAC learned.
xargs -P 25 -I{} ip netns exec {} ping -c 1 -W 2 10.236.0.1 <"$run/all" >/dev/null 2>&1 || tb_log "some pings were not answered"
point "$count attached, after pings"
[ "$(ctl --json network inspect mem | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["endpoint_list"]))')" = "$count" ] \
    || tb_die "network mem does not hold $count endpoints"
learned=$(ctl --json fdb stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["entries"])')
threads=$(awk '/^Threads/ { print $2 }' "/proc/$pid/status")
fds=$(ls "/proc/$pid/fd" | wc -l)
soft_nofile=$(awk '/^Max open files/ { print $4 }' "/proc/$pid/limits")
# How long vswitchd takes to stop with COUNT TAPs (it closes every TAP fd; the kernel unregisters
# each netdev on that close).
tb_log "stopping vswitchd with $count TAPs (timed)"
t0=$EPOCHREALTIME
kill -TERM "$pid"
wait "$pid" || true
stop_s=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')

# ---- report -------------------------------------------------------------------------------------
kib() { awk -v k="$1" 'BEGIN { printf "%.2f", k / 1024 }'; }
n=${#P_NAME[@]}
i10=3 ik=$((n - 1))   # "10 attached, after traffic" and "COUNT attached, after pings"
marg() { awk -v a="$1" -v b="$2" -v n=$((count - 10)) 'BEGIN { printf "%.1f", (b - a) / n }'; }
m_rss=$(marg "${P_RSS[$i10]}" "${P_RSS[$ik]}")
m_pss=$(marg "${P_PSS[$i10]}" "${P_PSS[$ik]}")
m_anon=$(marg "${P_ANON[$i10]}" "${P_ANON[$ik]}")
m_rss_attach=$(marg "${P_RSS[3]}" "${P_RSS[4]}") m_anon_attach=$(marg "${P_ANON[3]}" "${P_ANON[4]}")

{
    echo "## Memory: $(date -u +%Y-%m-%d), kernel $(uname -r)"
    echo
    echo "Command: \`sudo $cmdline\` (vswitchd release build of \`$git_rev\`, $(nproc) vCPU). From /proc/PID/smaps_rollup of vswitchd,"
    echo "0.5 s after each step. At the end: $threads threads, $fds open fds (soft RLIMIT_NOFILE $soft_nofile), $learned MAC table"
    echo "entries; SIGTERM to exit with $count TAPs open took $stop_s s."
    echo
    echo "| vswitchd | Rss MiB | Pss MiB | Pss_Anon MiB |"
    echo "|---|---|---|---|"
    for ((i = 0; i < n; i++)); do
        printf '| %s | %s | %s | %s |\n' "${P_NAME[$i]}" "$(kib "${P_RSS[$i]}")" "$(kib "${P_PSS[$i]}")" "$(kib "${P_ANON[$i]}")"
    done
    echo
    echo "Marginal per container (\"$count attached, after pings\" − \"10 attached, after traffic\") / $((count - 10)):"
    echo "Rss $m_rss KiB, Pss $m_pss KiB, Pss_Anon $m_anon KiB (the attaches alone, before the pings: Rss $m_rss_attach KiB,"
    echo "Pss_Anon $m_anon_attach KiB). Pss moves with how many other processes map the same libraries at that"
    echo "instant (ip, ping, iperf3 come and go), so the goal is judged on the larger of Rss and Pss_Anon, which"
    echo "only count the daemon's own pages. The datapath's batch buffers (64 × 64 KiB, owned by the thread,"
    echo "not by ports) become resident as traffic first uses them: that is the step at \"after traffic\"."
    echo
    m_goal=$(awk -v a="$m_rss" -v b="$m_anon" 'BEGIN { print (a > b) ? a : b }')
    echo "Goals: ≤ 64 KiB per container: $m_goal KiB → $(awk -v m="$m_goal" 'BEGIN { print (m <= 64) ? "met" : "NOT met" }');"
    echo "idle ≤ 10 MiB: started $(kib "${P_RSS[0]}") MiB Rss → $(awk -v k="${P_RSS[0]}" 'BEGIN { print (k <= 10240) ? "met" : "NOT met" }'),"
    echo "idle after traffic (10 containers) $(kib "${P_RSS[$i10]}") MiB Rss → $(awk -v k="${P_RSS[$i10]}" 'BEGIN { print (k <= 10240) ? "met" : "NOT met" }')."
} >"$run/report.md"
tb_report "$run/report.md" "$write"
tb_log "tearing down ($count namespaces, vswitchd)"
