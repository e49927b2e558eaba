#!/usr/bin/env bash
# dns-bench.sh: the gateway's embedded DNS (vswitchd) against dnsmasq, measured in ONE run so
# that their ratios can be compared (PEERS.md: "≥ 2× dnsmasq's qps, unloaded latency no worse").
#
#   vswitchd   a network with 6 containers: one client namespace and five named endpoints
#              (5 A records). The client asks the gateway address (UDP 53); the frame leaves
#              the client's TAP, the datapath thread reads it, the gateway core answers it in
#              the switch and the reply is written back to the TAP (no socket anywhere).
#              Started with --dns-upstream none: nothing is ever forwarded.
#   dnsmasq    the same 5 names (--host-record), --no-resolv --no-hosts --conf-file=/dev/null,
#              in a namespace of its own, reached from the SAME client namespace over a veth
#              pair (kernel path: veth → UDP socket → dnsmasq).
#
# Both are asked the 5 names (type A) round-robin from the client namespace. The two servers
# take turns (ROUNDS rounds, vswitchd then dnsmasq in each) so that background load on the box
# hits both alike; medians over the rounds are reported, ratios are medians of per-round ratios.
#   loaded     dnsperf -c CLIENTS -q 100 -l DURATION/ROUNDS per round: qps and average latency,
#              the daemon's CPU % (utime+stime of the whole process, /proc/PID/stat, over the
#              run; for vswitchd also its datapath thread alone) and how busy the whole box was
#   unloaded   (a) the paced probe: one query in flight, one query every 1 ms, alternating
#              between the two servers query by query, for DURATION seconds (a UDP socket in
#              python3, perf_counter_ns around send→recv): mean, median and p99 round trip per
#              server. This is the figure the latency goal is judged on.
#              (b) dnsperf -c 1 -q 1 per round: its average latency. dnsperf 2.10 with -q 1 does
#              not send back to back: its sender sleeps between queries for a time that varies
#              from run to run and with the server (tens to thousands of qps), so this average
#              mixes in CPU wake-up costs at an uncontrolled rate. Shown, not judged.
# Prints a markdown table and the vswitchd/dnsmasq ratios and appends them to benches/RESULTS.md.
#
#   sudo benches/dns-bench.sh [--duration S] [--clients N] [--rounds R] [--no-build] [--no-write] [--profile]
#     --duration S   seconds per server for each kind of run (default 10)
#     --clients N    dnsperf -c for the loaded runs (default 1)
#     --rounds R     turns per server (default 5; each dnsperf run lasts S/R s, at least 1)
#     --no-build     use target/release as it is
#     --no-write     print only, do not append to benches/RESULTS.md
#     --profile      one more loaded run against vswitchd under `perf record -g` (needs perf);
#                    prints the hottest symbols of the datapath thread (not written to RESULTS.md)
#
# Everything this run makes (namespaces, the veth pair, vswitchd, dnsmasq, /etc/netns entries)
# is removed on exit, also on failure or Ctrl-C; a watchdog bounds the run (about 1 min at the
# defaults, plus the build).
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"

secs=10 clients=1 rounds=5 build=1 write=1 profile=0 outstanding=100 gap_us=1000
cmdline="benches/dns-bench.sh${*:+ $*}"
usage() { sed -n '2,43p' "$0"; exit 2; }
while [ $# -gt 0 ]; do
    case $1 in
        --duration) [ $# -ge 2 ] || usage; secs=$2; shift 2 ;;
        --duration=*) secs=${1#*=}; shift ;;
        --clients) [ $# -ge 2 ] || usage; clients=$2; shift 2 ;;
        --clients=*) clients=${1#*=}; shift ;;
        --rounds) [ $# -ge 2 ] || usage; rounds=$2; shift 2 ;;
        --rounds=*) rounds=${1#*=}; shift ;;
        --no-build) build=0; shift ;;
        --no-write) write=0; shift ;;
        --profile) profile=1; shift ;;
        -h | --help) usage ;;
        *) echo "dns-bench: unknown argument $1" >&2; usage ;;
    esac
done
tb_positive "--duration, --clients and --rounds" "$secs" "$clients" "$rounds"
tb_need_root
per=$((secs / rounds)); [ $per -ge 1 ] || per=1

tb_bench_scratch dns-bench

# ---- dependencies -------------------------------------------------------------------------
# dnsmasq-base, NOT dnsmasq: that package starts a service.
deps=(dnsperf=dnsperf dnsmasq=dnsmasq-base dig=dnsutils ip=iproute2 python3=python3)
[ $profile = 1 ] && deps+=(perf=linux-perf)
tb_apt "${deps[@]}"
tb_release_bins "$build"

# Bound the whole run (the build is done before the watchdog starts): 4 dnsperf runs per round,
# the probe, the profile run, with their timeouts, plus setup and teardown. The watchdog takes
# its sleep down with it when stopped, so nothing of it outlives the run.
limit=$((rounds * 4 * (per + 3) + (secs + 10) + profile * (per + 10) + 60))
tb_bench_watchdog dns-bench "$limit"

hz=$(getconf CLK_TCK)
tag="vsdb$$"                  # every namespace this run makes starts with it
subnet=10.237.0.0/24 gw=10.237.0.1 client_ip=10.237.0.2
veth_client=10.238.0.1 veth_dnsmasq=10.238.0.2
names=(alpha bravo charlie delta echo)
declare -A addr=([alpha]=10.237.0.11 [bravo]=10.237.0.12 [charlie]=10.237.0.13 [delta]=10.237.0.14 [echo]=10.237.0.15)

# ns NAME: a namespace of this run; its /etc/netns entry (if anything makes one) goes too.
ns() {
    tb_netns "$1"
    tb_undo "rm -rf '/etc/netns/$1'"
}

# The query file: the 5 names, type A; dnsperf loops over it (round-robin).
queries=$run/queries.txt
for n in "${names[@]}"; do echo "$n A"; done >"$queries"

# The paced probe (unloaded latency): SECONDS GAP_US SERVER1,SERVER2 NAME...: one query in flight,
# one every GAP_US, to SERVER1 and SERVER2 in turn. Prints per server
# "server samples mean_us median_us p99_us min_us lost stderr_of_mean_us". The first 100 answers of each server
# (ARP, caches) are not counted.
probe_py='
import socket, struct, sys, time
secs, gap, servers = float(sys.argv[1]), int(sys.argv[2]) * 1000, sys.argv[3].split(",")
def body(name):
    return struct.pack(">HHHHH", 0x0100, 1, 0, 0, 0) + b"".join(
        bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0\0\1\0\1"
bodies = [body(n) for n in sys.argv[4:]]
socks = []
for server in servers:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((server, 53))
    s.settimeout(1.0)
    socks.append(s)
lat = [[] for _ in servers]
lost = [0 for _ in servers]
pc = time.perf_counter_ns
i = 0
stop = pc() + int(secs * 1e9)
while True:
    t0 = pc()
    if t0 >= stop:
        break
    k = i % len(socks)
    s = socks[k]
    qid = struct.pack(">H", (i // len(socks)) & 0xffff)
    s.send(qid + bodies[(i // len(socks)) % len(bodies)])
    while True:
        try:
            d = s.recv(512)
        except socket.timeout:
            lost[k] += 1
            break
        if d[:2] == qid:
            lat[k].append(pc() - t0)
            break
    i += 1
    rest = t0 + gap - pc()
    if rest > 0:
        time.sleep(rest / 1e9)
f = lambda ns: "%.1f" % (ns / 1e3)
for k, server in enumerate(servers):
    l = sorted(lat[k][100:])
    n = len(l)
    if n == 0:
        print(server, 0, "-", "-", "-", "-", lost[k], "-")
    else:
        mean = sum(l) / n
        se = (sum((x - mean) ** 2 for x in l) / max(1, n - 1) / n) ** 0.5
        print(server, n, f(mean), f(l[n // 2]), f(l[min(n - 1, int(n * 0.99))]), f(l[0]), lost[k], f(se))
'

# ---- measurement helpers ------------------------------------------------------------------
cpu_ticks() { awk '{ print $14 + $15 }' "$1" 2>/dev/null || echo 0; }
# box_ticks: "busy total" clock ticks of every CPU (/proc/stat; idle = idle + iowait).
box_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat; }
box_pct() { awk -v b0="$1" -v b1="$2" 'BEGIN { split(b0, x, " "); split(b1, y, " "); if (y[2] == x[2]) print "-"; else printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2]) }'; }
now_ns() { date +%s%N; }
# children_ms FILE: CPU time (user + system, ms) of every child the shell had waited for when
# it wrote `times` to FILE (second line). `times` must run in the main shell, not in a $(...)
# subshell, whose children are its own: around one dnsperf run, this is the client's CPU.
children_ms() { awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60000 + a[2] * 1000 } printf "%.0f", t }' "$1"; }
pct() { awk -v d="$1" -v hz="$hz" -v ns="$2" 'BEGIN { printf "%.0f", 100 * d / hz / (ns / 1e9) }'; }
range() { printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) print lo "–" hi }'; }
# datapath_stat PID: the /proc stat file of vswitchd's datapath thread.
datapath_stat() {
    local t
    for t in /proc/"$1"/task/*; do
        [ "$(cat "$t/comm" 2>/dev/null)" = datapath ] && { echo "$t/stat"; return; }
    done
    echo /dev/null
}

# check NAME SERVER: every name answers with its address (dig from the client namespace).
check() {
    local who=$1 server=$2 n got
    for n in "${names[@]}"; do
        got=$(ip netns exec "$tag-client" dig +short +time=2 +tries=2 @"$server" "$n" A 2>&1 || true)
        [ "$got" = "${addr[$n]}" ] || tb_die "$who: '$n A' via $server gave '${got//$'\n'/ }', expected ${addr[$n]}"
    done
    tb_log "$who: all 5 names answer correctly via $server"
}

# perf_run KEY SERVER OUTSTANDING CLIENTS PID THREADSTAT: one dnsperf run of $per s; appends
# to the lists R[KEY,qps] R[KEY,lat] ... (space separated, one entry per round).
declare -A R
add() { R[$1]="${R[$1]:-}${R[$1]:+ }$2"; }
perf_run() {
    local key=$1 server=$2 q=$3 c=$4 pid=$5 tstat=$6 out=$run/$1.dnsperf t0 t1 c0 c1 d0 d1 b0 b1 k0 k1 qps lat lost sent rc
    times >"$run/times0"
    c0=$(cpu_ticks "/proc/$pid/stat") d0=$(cpu_ticks "$tstat") b0=$(box_ticks) t0=$(now_ns)
    ip netns exec "$tag-client" timeout $((per + 15)) dnsperf -s "$server" -d "$queries" -l "$per" \
        -c "$c" -q "$q" -t 2 >"$out" 2>&1 || { cat "$out" >&2; tb_die "$key: dnsperf failed"; }
    t1=$(now_ns) c1=$(cpu_ticks "/proc/$pid/stat") d1=$(cpu_ticks "$tstat") b1=$(box_ticks)
    times >"$run/times1"
    k0=$(children_ms "$run/times0") k1=$(children_ms "$run/times1")
    qps=$(awk '/Queries per second:/ { printf "%.0f", $4 }' "$out")
    lat=$(awk '/Average Latency \(s\):/ { printf "%.1f", $4 * 1e6 }' "$out")
    lost=$(awk '/Queries lost:/ { print $3 }' "$out")
    sent=$(awk '/Queries sent:/ { print $3 }' "$out")
    rc=$(awk -F': *' '/Response codes:/ { print $2 }' "$out")
    [ -n "$qps" ] && [ -n "$lat" ] || { cat "$out" >&2; tb_die "$key: cannot read dnsperf's output"; }
    [ -n "${R[version]:-}" ] || R[version]=$(awk '/^Version/ { print $2; exit }' "$out")
    add "$key,qps" "$qps"; add "$key,lat" "$lat"
    add "$key,lost" "$lost"; add "$key,sent" "$sent"
    add "$key,cpu" "$(pct $((c1 - c0)) $((t1 - t0)))"
    add "$key,dpcpu" "$(pct $((d1 - d0)) $((t1 - t0)))"
    add "$key,box" "$(box_pct "$b0" "$b1")"
    add "$key,client" "$(awk -v ms=$((k1 - k0)) -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f", 100 * ms / 1000 / (ns / 1e9) }')"
    [[ $rc =~ ^NOERROR\ [0-9]+\ \(100 ]] || add bad "$key: $rc"
    printf '  %-17s %8s qps  avg %7s µs  lost %s/%s  daemon cpu %3s %%  box busy %3s %%  (%s)\n' "$key" "$qps" "$lat" \
        "$lost" "$sent" "${R[$key,cpu]##* }" "${R[$key,box]##* }" "$rc" >&2
}

# ---- the client and the five endpoints on vswitchd ------------------------------------------
b0=$(box_ticks); sleep 1; R[idle_box]=$(box_pct "$b0" "$(box_ticks)")
tb_log "box busy before the run (1 s, all CPUs): ${R[idle_box]} %"
tb_log "vswitchd: a network $subnet, a client and 5 named endpoints (--dns-upstream none)"
sock=$run/vswitchd.sock
tb_daemon "$bin" "$sock" --log-level warn --dns-upstream none 2>>"$run/vswitchd.log"
vpid=$!
[ "$(cat /proc/$vpid/comm 2>/dev/null)" = vswitchd ] || tb_die "cannot find the vswitchd pid"
ctl=("$bin/vswitchctl" --socket "$sock")
"${ctl[@]}" network create dnsbench --subnet "$subnet" >/dev/null
ns "$tag-client"
"${ctl[@]}" attach dnsbench --netns "/run/netns/$tag-client" --name client --ip "$client_ip" >/dev/null
for n in "${names[@]}"; do
    ns "$tag-$n"
    "${ctl[@]}" attach dnsbench --netns "/run/netns/$tag-$n" --name "$n" --ip "${addr[$n]}" >/dev/null
done
vtstat=$(datapath_stat "$vpid")

# ---- dnsmasq in its own namespace, a veth pair from the client namespace --------------------
tb_log "dnsmasq: own namespace, veth pair from the client namespace ($veth_client → $veth_dnsmasq)"
ns "$tag-dnsmasq"
tb_veth_pair "$tag-client" vdns0 "$veth_client/30" "$tag-dnsmasq" eth0 "$veth_dnsmasq/30"
records=()
for n in "${names[@]}"; do records+=("--host-record=$n,${addr[$n]}"); done
# `ip netns exec` execs dnsmasq itself (no fork), so $! is dnsmasq; -k keeps it in the foreground.
ip netns exec "$tag-dnsmasq" dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --user=root \
    --listen-address="$veth_dnsmasq" --bind-interfaces --port=53 --pid-file="$run/dnsmasq.pid" \
    --log-facility="$run/dnsmasq.log" "${records[@]}" </dev/null >>"$run/dnsmasq.log" 2>&1 &
dpid=$!
tb_undo "kill -TERM $dpid; wait $dpid"
for i in $(seq 50); do
    ip netns exec "$tag-dnsmasq" ss -Hlun "sport = :53" 2>/dev/null | grep -q . && break
    kill -0 "$dpid" 2>/dev/null || tb_die "dnsmasq exited"
    sleep 0.1
done
[ "$(cat /proc/$dpid/comm 2>/dev/null)" = dnsmasq ] || tb_die "cannot find the dnsmasq pid"

check vswitchd "$gw"
check dnsmasq "$veth_dnsmasq"

# ---- the runs -------------------------------------------------------------------------------
tb_log "loaded: $rounds rounds of dnsperf -c $clients -q $outstanding -l $per, vswitchd then dnsmasq"
for r in $(seq "$rounds"); do
    perf_run vswitchd-loaded "$gw" "$outstanding" "$clients" "$vpid" "$vtstat"
    perf_run dnsmasq-loaded "$veth_dnsmasq" "$outstanding" "$clients" "$dpid" /dev/null
done
tb_log "unloaded: paced probe, one query in flight every ${gap_us} µs, alternating between the servers, $secs s"
out=$(ip netns exec "$tag-client" timeout $((secs + 15)) python3 -c "$probe_py" "$secs" "$gap_us" "$gw,$veth_dnsmasq" "${names[@]}") \
    || tb_die "the probe failed: $out"
while read -r server n mean med p99 min lost se; do
    s=vswitchd; [ "$server" = "$veth_dnsmasq" ] && s=dnsmasq
    R[$s-probe,n]=$n R[$s-probe,mean]=$mean R[$s-probe,median]=$med R[$s-probe,p99]=$p99 R[$s-probe,min]=$min R[$s-probe,lost]=$lost R[$s-probe,se]=$se
    printf '  %-17s %6s answers  mean %s ± %s µs  median %s µs  p99 %s µs  min %s µs  lost %s\n' "$s-probe" "$n" "$mean" "$se" "$med" "$p99" "$min" "$lost" >&2
done <<<"$out"
tb_log "unloaded: $rounds rounds of dnsperf -c 1 -q 1 -l $per, vswitchd then dnsmasq"
for r in $(seq "$rounds"); do
    perf_run vswitchd-q1 "$gw" 1 1 "$vpid" "$vtstat"
    perf_run dnsmasq-q1 "$veth_dnsmasq" 1 1 "$dpid" /dev/null
done
dns_counters=$("${ctl[@]}" --json dns stats 2>/dev/null | tr -d ' \n' || true)

if [ $profile = 1 ]; then
    tb_log "profile: perf record -g on vswitchd during one more loaded run"
    perf record -q -F 1999 -g -p "$vpid" -o "$run/perf.data" -- sleep "$per" >"$run/perf.log" 2>&1 &
    ppid=$!
    tb_undo "kill -INT $ppid; wait $ppid"
    perf_run vswitchd-profiled "$gw" "$outstanding" "$clients" "$vpid" "$vtstat"
    wait "$ppid" || true
    echo
    echo "perf: vswitchd datapath thread, self time by symbol (top 40):"
    perf report -i "$run/perf.data" --no-children --comm datapath --sort sym --stdio 2>/dev/null \
        | grep -E '^ +[0-9]' | head -40 || true
    echo
    echo "perf: vswitchd datapath thread, self time by DSO:"
    perf report -i "$run/perf.data" --no-children --comm datapath --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -10 || true
fi

# ---- report ---------------------------------------------------------------------------------
med() { tb_median ${R[$1]:-}; }
# paired KEY_A KEY_B FIELD: the median of the per-round ratios A/B.
paired() {
    local -a a b rs=()
    read -r -a a <<<"${R[$1,$3]:-}"
    read -r -a b <<<"${R[$2,$3]:-}"
    local i
    for i in "${!a[@]}"; do rs+=("$(tb_ratio "${a[$i]}" "${b[$i]:-}")"); done
    local m
    m=$(tb_median "${rs[@]}")
    [ "$m" = - ] && echo n/a || awk -v m="$m" 'BEGIN { printf "%.2f", m }'
}
sum() { local t=0 x; for x in ${R[$1]:-}; do t=$((t + x)); done; echo $t; }
qpc() { awk -v q="$1" -v c="$2" 'BEGIN { if (q !~ /^[0-9.]+$/ || c + 0 == 0) print "-"; else printf "%.0f k", q / (c / 100) / 1000 }'; }
kernel=$(uname -r)
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
rev=$(git -C "$TB_ROOT" describe --always --dirty 2>/dev/null || echo unknown)
r_qps=$(paired vswitchd-loaded dnsmasq-loaded qps)
r_llat=$(paired vswitchd-loaded dnsmasq-loaded lat)
r_cpu=$(paired vswitchd-loaded dnsmasq-loaded cpu)
r_q1=$(paired vswitchd-q1 dnsmasq-q1 lat)
r_mean=$(tb_ratio "${R[vswitchd-probe,mean]:-}" "${R[dnsmasq-probe,mean]:-}")
r_median=$(tb_ratio "${R[vswitchd-probe,median]:-}" "${R[dnsmasq-probe,median]:-}")
r_p99=$(tb_ratio "${R[vswitchd-probe,p99]:-}" "${R[dnsmasq-probe,p99]:-}")
goal_qps=$(awk -v r="$r_qps" 'BEGIN { if (r == "n/a") print "not measured"; else if (r + 0 >= 2) print "**met**"; else print "**NOT met**" }')
# Met when vswitchd's mean is not above dnsmasq's; when it is, say whether the gap is within two
# standard errors of the difference (i.e. not distinguishable from noise in this run).
goal_lat=$(awk -v r="$r_mean" -v a="${R[vswitchd-probe,mean]:-}" -v b="${R[dnsmasq-probe,mean]:-}" \
    -v sa="${R[vswitchd-probe,se]:-0}" -v sb="${R[dnsmasq-probe,se]:-0}" 'BEGIN {
    if (r == "n/a") { print "not measured"; exit }
    if (a + 0 <= b + 0) { print "**met**"; exit }
    d = a - b; e = 2 * sqrt(sa * sa + sb * sb)
    printf "**NOT met** (by %.1f µs; two standard errors of the difference: %.1f µs, so %s)", d, e, (d <= e ? "within the noise of this run" : "a real gap") }')
report=$run/report.md
{
    echo "## Embedded DNS against dnsmasq: $(date -u +%Y-%m-%d), kernel $kernel"
    echo
    echo "Command: \`sudo $cmdline\` (dnsperf ${R[version]:-?}, $(dnsmasq --version | awk 'NR == 1 { print $1, $3 }'),"
    echo "vswitchd release build of \`$rev\`; $(nproc) vCPU $cpu_model; client, vswitchd and dnsmasq share"
    echo "the same cores; box busy ${R[idle_box]} % in the second before the run). 5 A records asked round-robin"
    echo "from one client namespace, no upstream for either server. How each is reached:"
    echo "- **vswitchd** (\`--dns-upstream none\`): the client's TAP \`eth0\` → the gateway address $gw:53,"
    echo "  answered by the datapath thread inside the switch (no socket)."
    echo "- **dnsmasq** (\`--no-resolv --no-hosts --conf-file=/dev/null --host-record=NAME,IP\` ×5): in its own"
    echo "  namespace, reached from the same client namespace over a veth pair (kernel path) at $veth_dnsmasq:53."
    echo
    echo "The servers take turns: $rounds rounds of \`dnsperf -c $clients -q $outstanding -l $per\` (loaded) and of"
    echo "\`dnsperf -c 1 -q 1 -l $per\`, vswitchd then dnsmasq in each round; figures are medians over the rounds"
    echo "(qps range in brackets), ratios the median of the per-round ratios. Daemon CPU = utime+stime of the"
    echo "process (/proc/PID/stat) over a loaded run, % of one core (vswitchd: its datapath thread in brackets);"
    echo "client CPU = dnsperf's own user+system time over the same run (bash \`times\`, children), % of one core;"
    echo "box = all $(nproc) CPUs, busy %. Unloaded: the paced probe, a python3 UDP client in the client namespace,"
    echo "one query in flight, one every ${gap_us} µs for $secs s, alternating between the two servers query by query;"
    echo "send→recv round trip, including ≈ 2–3 µs of python. The dnsperf \`-q 1\` column is noisy (dnsperf"
    echo "sleeps between queries for uncontrolled times) and not what the goal is judged on."
    echo
    echo "| server | qps loaded ($clients client, $outstanding outstanding) | avg latency loaded | unloaded mean (median / p99) | dnsperf -q 1 avg | daemon CPU % loaded | client (dnsperf) CPU % loaded | box busy % | queries per daemon CPU-second | lost / sent |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for s in vswitchd dnsmasq; do
        c="$(med $s-loaded,cpu)"
        [ $s = vswitchd ] && c="$c ($(med vswitchd-loaded,dpcpu))"
        printf '| %s | %s (%s) | %s µs | %s µs (%s / %s) | %s µs at %s qps | %s | %s | %s | %s | %s / %s |\n' "$s" "$(med $s-loaded,qps)" "$(range ${R[$s-loaded,qps]})" \
            "$(med $s-loaded,lat)" "${R[$s-probe,mean]:-}" "${R[$s-probe,median]:-}" "${R[$s-probe,p99]:-}" "$(med $s-q1,lat)" "$(med $s-q1,qps)" "$c" \
            "$(med $s-loaded,client)" "$(med $s-loaded,box)" "$(qpc "$(med $s-loaded,qps)" "$(med $s-loaded,cpu)")" \
            "$(( $(sum $s-loaded,lost) + $(sum $s-q1,lost) + ${R[$s-probe,lost]:-0} ))" "$(( $(sum $s-loaded,sent) + $(sum $s-q1,sent) + ${R[$s-probe,n]:-0} ))"
    done
    echo
    echo "| vswitchd / dnsmasq | qps | latency loaded | unloaded mean | unloaded median | unloaded p99 | dnsperf -q 1 avg | daemon CPU loaded |"
    echo "|---|---|---|---|---|---|---|---|"
    echo "| ratio | ${r_qps}× | ${r_llat}× | ${r_mean}× | ${r_median}× | ${r_p99}× | ${r_q1}× | ${r_cpu}× |"
    echo
    echo "Goals (PEERS.md): qps ≥ 2× dnsmasq: ${r_qps}× → $goal_qps. Unloaded latency no worse than dnsmasq"
    echo "(paced probe, mean ± standard error): ${R[vswitchd-probe,mean]:-?} ± ${R[vswitchd-probe,se]:-?} µs vs ${R[dnsmasq-probe,mean]:-?} ± ${R[dnsmasq-probe,se]:-?} µs"
    echo "(${r_mean}×) → $goal_lat."
    # What the client itself costs per query bounds any server's qps on a box this size.
    cpq() { awk -v c="$1" -v q="$2" 'BEGIN { if (q + 0 == 0 || c !~ /^[0-9.]+$/) print "?"; else printf "%.1f", c / 100 / q * 1e6 }'; }
    echo "dnsperf's own CPU per answered query: $(cpq "$(med vswitchd-loaded,client)" "$(med vswitchd-loaded,qps)") µs against vswitchd,"
    echo "$(cpq "$(med dnsmasq-loaded,client)" "$(med dnsmasq-loaded,qps)") µs against dnsmasq; the daemons': $(cpq "$(med vswitchd-loaded,cpu)" "$(med vswitchd-loaded,qps)") µs and $(cpq "$(med dnsmasq-loaded,cpu)" "$(med dnsmasq-loaded,qps)") µs."
    if [ "${R[idle_box]}" != - ] && [ "${R[idle_box]}" -gt 20 ]; then
        echo "Warning: the box was ${R[idle_box]} % busy before the run: other work shared the CPUs, figures are noisier."
    fi
    if [ -n "${R[bad]:-}" ]; then echo "Warning: not every answer was NOERROR: ${R[bad]}."; fi
} >"$report"
tb_report "$report" "$write"
if [ -n "$dns_counters" ]; then echo; echo "vswitchd DNS counters after the runs: $dns_counters"; fi
