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
# Both are asked the 5 names (type A) round-robin from the client namespace:
#   loaded     dnsperf -c CLIENTS -q 100 -l DURATION: qps and average latency, plus the daemon's
#              CPU % (utime+stime of the whole process from /proc/PID/stat over the run; for
#              vswitchd also its datapath thread alone) and how busy the whole box was
#   unloaded   (a) a paced probe: one query in flight, one query every 1 ms, for DURATION
#              seconds (a UDP socket in python3, perf_counter_ns around send→recv): mean,
#              median and p99 round trip. This is the figure the goal is judged on.
#              (b) dnsperf -c 1 -q 1 -l DURATION: its average latency. dnsperf 2.10 with -q 1
#              does not send back to back: its sender sleeps between queries for a time that
#              varies from run to run and with the server (tens to thousands of qps), so its
#              average mixes in CPU wake-up costs at an uncontrolled rate. Shown, not judged.
# Prints a markdown table and the vswitchd/dnsmasq ratios and appends them to benches/RESULTS.md.
#
#   sudo benches/dns-bench.sh [--duration S] [--clients N] [--no-build] [--no-write] [--profile]
#     --duration S   length of each run (default 10; 6 runs)
#     --clients N    dnsperf -c for the loaded runs (default 1)
#     --no-build     use target/release as it is
#     --no-write     print only, do not append to benches/RESULTS.md
#     --profile      one more loaded run against vswitchd under `perf record -g` (needs perf);
#                    prints the hottest symbols of the datapath thread (not written to RESULTS.md)
#
# Everything this run makes (namespaces, the veth pair, vswitchd, dnsmasq, /etc/netns entries)
# is removed on exit, also on failure or Ctrl-C; a watchdog bounds the run.
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"

secs=10 clients=1 build=1 write=1 profile=0 outstanding=100 gap_us=1000
cmdline="benches/dns-bench.sh${*:+ $*}"
usage() { sed -n '2,37p' "$0"; exit 2; }
while [ $# -gt 0 ]; do
    case $1 in
        --duration) [ $# -ge 2 ] || usage; secs=$2; shift 2 ;;
        --duration=*) secs=${1#*=}; shift ;;
        --clients) [ $# -ge 2 ] || usage; clients=$2; shift 2 ;;
        --clients=*) clients=${1#*=}; shift ;;
        --no-build) build=0; shift ;;
        --no-write) write=0; shift ;;
        --profile) profile=1; shift ;;
        -h | --help) usage ;;
        *) echo "dns-bench: unknown argument $1" >&2; usage ;;
    esac
done
[[ $secs =~ ^[0-9]+$ && $secs -ge 1 && $clients =~ ^[0-9]+$ && $clients -ge 1 ]] \
    || tb_die "--duration and --clients take positive integers"
tb_need_root

run=$(mktemp -d /tmp/vswitch-dns.XXXXXX)
watchdog=
on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    if [ $rc != 0 ]; then
        [ -s "$run/vswitchd.log" ] && { echo "--- vswitchd.log (tail)" >&2; tail -20 "$run/vswitchd.log" >&2; }
        [ -s "$run/dnsmasq.log" ] && { echo "--- dnsmasq.log (tail)" >&2; tail -20 "$run/dnsmasq.log" >&2; }
    fi
    tb_cleanup
    [ -n "$watchdog" ] && kill "$watchdog" 2>/dev/null
    rm -rf "$run"
    exit $rc
}
trap on_exit EXIT
trap 'echo "dns-bench: interrupted" >&2; exit 130' INT TERM

# ---- dependencies -------------------------------------------------------------------------
need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)     # NOT `dnsmasq`: that starts a service
command -v dig >/dev/null || need+=(dnsutils)
command -v ip >/dev/null || need+=(iproute2)
command -v python3 >/dev/null || need+=(python3)
if [ $profile = 1 ] && ! command -v perf >/dev/null; then need+=(linux-perf); fi
if [ ${#need[@]} -gt 0 ]; then
    tb_log "installing ${need[*]}"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
        || tb_die "apt-get install ${need[*]} failed"
fi
bin=$TB_ROOT/target/release
if [ $build = 1 ]; then
    tb_log "building vswitchd (release)"
    (cd "$TB_ROOT" && cargo build -q --release -p vswitch -p ctl) || tb_die "cargo build failed"
fi
[ -x "$bin/vswitchd" ] && [ -x "$bin/vswitchctl" ] || tb_die "no $bin/vswitchd: build it first"

# Bound the whole run (the build is done before the watchdog starts): 6 runs (7 with
# --profile) of SECONDS plus their timeouts, plus setup and teardown. The watchdog takes its
# sleep down with it when stopped, so nothing of it outlives the run.
limit=$(((6 + profile) * (secs + 8) + 60))
main=$$
(
    trap 'kill "$sp" 2>/dev/null; exit 0' TERM
    sleep "$limit" </dev/null >/dev/null 2>&1 &
    sp=$!
    wait "$sp" && { echo "dns-bench: watchdog: over ${limit}s, stopping" >&2; kill -TERM "$main"; }
) </dev/null 2>/dev/null &
watchdog=$!

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

# The paced probe (unloaded latency): SERVER SECONDS GAP_US NAME...; prints
# "samples mean_us median_us p99_us min_us lost". The first 100 answers (ARP, caches) are not counted.
probe_py='
import socket, struct, sys, time
server, secs, gap = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]) * 1000
def body(name):
    return struct.pack(">HHHHH", 0x0100, 1, 0, 0, 0) + b"".join(
        bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0\0\1\0\1"
bodies = [body(n) for n in sys.argv[4:]]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((server, 53))
s.settimeout(1.0)
pc = time.perf_counter_ns
lat, lost, i = [], 0, 0
stop = pc() + int(secs * 1e9)
while True:
    t0 = pc()
    if t0 >= stop:
        break
    qid = struct.pack(">H", i & 0xffff)
    s.send(qid + bodies[i % len(bodies)])
    while True:
        try:
            d = s.recv(512)
        except socket.timeout:
            lost += 1
            break
        if d[:2] == qid:
            lat.append(pc() - t0)
            break
    i += 1
    rest = t0 + gap - pc()
    if rest > 0:
        time.sleep(rest / 1e9)
lat = sorted(lat[100:])
n = len(lat)
if n == 0:
    print(0, "-", "-", "-", "-", lost)
else:
    f = lambda ns: "%.1f" % (ns / 1e3)
    print(n, f(sum(lat) / n), f(lat[n // 2]), f(lat[min(n - 1, int(n * 0.99))]), f(lat[0]), lost)
'

# ---- measurement helpers ------------------------------------------------------------------
cpu_ticks() { awk '{ print $14 + $15 }' "$1" 2>/dev/null || echo 0; }
# box_ticks: "busy total" clock ticks of every CPU (/proc/stat; idle = idle + iowait).
box_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat; }
now_ns() { date +%s%N; }
pct() { awk -v d="$1" -v hz="$hz" -v ns="$2" 'BEGIN { printf "%.0f", 100 * d / hz / (ns / 1e9) }'; }
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

# perf_run KEY SERVER OUTSTANDING CLIENTS PID THREADSTAT: one dnsperf run; fills R[KEY,*].
declare -A R
perf_run() {
    local key=$1 server=$2 q=$3 c=$4 pid=$5 tstat=$6 out=$run/$1.dnsperf t0 t1 c0 c1 d0 d1 b0 b1
    c0=$(cpu_ticks "/proc/$pid/stat") d0=$(cpu_ticks "$tstat") b0=$(box_ticks) t0=$(now_ns)
    ip netns exec "$tag-client" timeout $((secs + 15)) dnsperf -s "$server" -d "$queries" -l "$secs" \
        -c "$c" -q "$q" -t 2 >"$out" 2>&1 || { cat "$out" >&2; tb_die "$key: dnsperf failed"; }
    t1=$(now_ns) c1=$(cpu_ticks "/proc/$pid/stat") d1=$(cpu_ticks "$tstat") b1=$(box_ticks)
    R[$key,qps]=$(awk '/Queries per second:/ { printf "%.0f", $4 }' "$out")
    R[$key,lat]=$(awk '/Average Latency \(s\):/ { printf "%.1f", $4 * 1e6 }' "$out")
    R[$key,lost]=$(awk '/Queries lost:/ { print $3 }' "$out")
    R[$key,sent]=$(awk '/Queries sent:/ { print $3 }' "$out")
    R[$key,rcodes]=$(awk -F': *' '/Response codes:/ { print $2 }' "$out")
    R[$key,cpu]=$(pct $((c1 - c0)) $((t1 - t0)))
    R[$key,dpcpu]=$(pct $((d1 - d0)) $((t1 - t0)))
    R[$key,box]=$(awk -v b0="$b0" -v b1="$b1" 'BEGIN { split(b0, x, " "); split(b1, y, " "); if (y[2] == x[2]) print "-"; else printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2]) }')
    [ -n "${R[$key,qps]}" ] || { cat "$out" >&2; tb_die "$key: cannot read dnsperf's output"; }
    printf '  %-18s %8s qps  avg %7s µs  lost %s/%s  daemon cpu %s %%  box busy %s %%  (%s)\n' "$key" "${R[$key,qps]}" \
        "${R[$key,lat]}" "${R[$key,lost]}" "${R[$key,sent]}" "${R[$key,cpu]}" "${R[$key,box]}" "${R[$key,rcodes]}" >&2
}

# probe_run KEY SERVER: the paced probe; fills R[KEY,*].
probe_run() {
    local key=$1 server=$2 out
    out=$(ip netns exec "$tag-client" timeout $((secs + 15)) python3 -c "$probe_py" "$server" "$secs" "$gap_us" "${names[@]}") \
        || tb_die "$key: the probe failed: $out"
    read -r R[$key,n] R[$key,mean] R[$key,median] R[$key,p99] R[$key,min] R[$key,lost] <<<"$out"
    printf '  %-18s %6s answers  mean %s µs  median %s µs  p99 %s µs  min %s µs  lost %s\n' "$key" "${R[$key,n]}" \
        "${R[$key,mean]}" "${R[$key,median]}" "${R[$key,p99]}" "${R[$key,min]}" "${R[$key,lost]}" >&2
}

# ---- the client and the five endpoints on vswitchd ------------------------------------------
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
ip -n "$tag-client" link add vdns0 type veth peer name eth0 netns "$tag-dnsmasq"
ip -n "$tag-client" addr add "$veth_client/30" dev vdns0
ip -n "$tag-client" link set vdns0 up
ip -n "$tag-dnsmasq" addr add "$veth_dnsmasq/30" dev eth0
ip -n "$tag-dnsmasq" link set eth0 up
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
tb_log "loaded: dnsperf -c $clients -q $outstanding -l $secs"
perf_run vswitchd-loaded "$gw" "$outstanding" "$clients" "$vpid" "$vtstat"
perf_run dnsmasq-loaded "$veth_dnsmasq" "$outstanding" "$clients" "$dpid" /dev/null
tb_log "unloaded: paced probe, one query in flight every ${gap_us} µs for $secs s"
probe_run vswitchd-probe "$gw"
probe_run dnsmasq-probe "$veth_dnsmasq"
tb_log "unloaded: dnsperf -c 1 -q 1 -l $secs"
perf_run vswitchd-q1 "$gw" 1 1 "$vpid" "$vtstat"
perf_run dnsmasq-q1 "$veth_dnsmasq" 1 1 "$dpid" /dev/null
dns_counters=$("${ctl[@]}" --json dns stats 2>/dev/null | tr -d ' \n' || true)

if [ $profile = 1 ]; then
    tb_log "profile: perf record -g on vswitchd during one more loaded run"
    perf record -q -F 1999 -g -p "$vpid" -o "$run/perf.data" -- sleep "$secs" >"$run/perf.log" 2>&1 &
    ppid=$!
    tb_undo "kill -INT $ppid; wait $ppid"
    perf_run vswitchd-profiled "$gw" "$outstanding" "$clients" "$vpid" "$vtstat"
    wait "$ppid" || true
    echo
    echo "perf: vswitchd datapath thread, self time by symbol (top 40):"
    perf report -i "$run/perf.data" --no-children --comm datapath --sort sym --stdio 2>/dev/null \
        | grep -E '^ +[0-9]' | head -40 || true
    echo
    echo "perf: vswitchd, self time by DSO:"
    perf report -i "$run/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -10 || true
fi

# ---- report ---------------------------------------------------------------------------------
v() { echo "${R[$1]:-}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || a == "-" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
qpc() { awk -v q="$1" -v c="$2" 'BEGIN { if (c + 0 == 0) print "-"; else printf "%.0f k", q / (c / 100) / 1000 }'; }
kernel=$(uname -r)
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
rev=$(git -C "$TB_ROOT" describe --always --dirty 2>/dev/null || echo unknown)
r_qps=$(ratio "$(v vswitchd-loaded,qps)" "$(v dnsmasq-loaded,qps)")
r_llat=$(ratio "$(v vswitchd-loaded,lat)" "$(v dnsmasq-loaded,lat)")
r_mean=$(ratio "$(v vswitchd-probe,mean)" "$(v dnsmasq-probe,mean)")
r_median=$(ratio "$(v vswitchd-probe,median)" "$(v dnsmasq-probe,median)")
r_q1=$(ratio "$(v vswitchd-q1,lat)" "$(v dnsmasq-q1,lat)")
r_cpu=$(ratio "$(v vswitchd-loaded,cpu)" "$(v dnsmasq-loaded,cpu)")
goal_qps=$(awk -v r="$r_qps" 'BEGIN { if (r == "n/a") print "not measured"; else if (r + 0 >= 2) print "**met**"; else print "**NOT met**" }')
goal_lat=$(awk -v r="$r_mean" 'BEGIN { if (r == "n/a") print "not measured"; else if (r + 0 <= 1) print "**met**"; else print "**NOT met**" }')
report=$run/report.md
{
    echo "## Embedded DNS against dnsmasq: $(date -u +%Y-%m-%d), kernel $kernel"
    echo
    echo "Command: \`sudo $cmdline\` (dnsperf $(awk '/^Version/ { print $2; exit }' "$run/vswitchd-loaded.dnsperf"),"
    echo "$(dnsmasq --version | awk 'NR == 1 { print $1, $3 }'), vswitchd release build of \`$rev\`; $(nproc) vCPU $cpu_model;"
    echo "client, vswitchd and dnsmasq share the same cores). 5 A records asked round-robin from one client"
    echo "namespace, no upstream for either server. How each is reached:"
    echo "- **vswitchd** (\`--dns-upstream none\`): the client's TAP \`eth0\` → the gateway address $gw:53,"
    echo "  answered by the datapath thread inside the switch (no socket)."
    echo "- **dnsmasq** (\`--no-resolv --no-hosts --conf-file=/dev/null --host-record=NAME,IP\` ×5): in its own"
    echo "  namespace, reached from the same client namespace over a veth pair (kernel path) at $veth_dnsmasq:53."
    echo
    echo "Loaded: \`dnsperf -c $clients -q $outstanding -l $secs\`. Daemon CPU = utime+stime of the process"
    echo "(/proc/PID/stat) over the loaded run, % of one core (vswitchd: datapath thread in brackets); box ="
    echo "all $(nproc) CPUs busy % over that run. Unloaded: a paced probe from the client namespace (python3"
    echo "UDP socket, one query in flight, one every ${gap_us} µs for $secs s, send→recv round trip incl. ≈ 2–3 µs"
    echo "of python); and dnsperf \`-c 1 -q 1\`'s average (its send rate is not controlled: dnsperf sleeps"
    echo "between queries for varying times, so this column is noisy and not what the goal is judged on)."
    echo
    echo "| server | qps loaded ($clients client, $outstanding outstanding) | avg latency loaded | unloaded mean (median / p99) | dnsperf -q 1 avg | daemon CPU % loaded | box busy % | queries per daemon CPU-second | lost |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for s in vswitchd dnsmasq; do
        c="$(v $s-loaded,cpu)"
        [ $s = vswitchd ] && c="$c ($(v vswitchd-loaded,dpcpu))"
        printf '| %s | %s | %s µs | %s µs (%s / %s) | %s µs | %s | %s | %s | %s |\n' "$s" "$(v $s-loaded,qps)" "$(v $s-loaded,lat)" \
            "$(v $s-probe,mean)" "$(v $s-probe,median)" "$(v $s-probe,p99)" "$(v $s-q1,lat)" "$c" "$(v $s-loaded,box)" \
            "$(qpc "$(v $s-loaded,qps)" "$(v $s-loaded,cpu)")" "$(( $(v $s-loaded,lost) + $(v $s-q1,lost) + $(v $s-probe,lost) ))"
    done
    echo
    echo "| vswitchd / dnsmasq | qps | latency loaded | unloaded mean | unloaded median | dnsperf -q 1 avg | daemon CPU |"
    echo "|---|---|---|---|---|---|---|"
    echo "| ratio | ${r_qps}× | ${r_llat}× | ${r_mean}× | ${r_median}× | ${r_q1}× | ${r_cpu}× |"
    echo
    echo "Goals (PEERS.md): qps ≥ 2× dnsmasq: ${r_qps}× → $goal_qps. Unloaded latency no worse than dnsmasq"
    echo "(paced probe, mean): $(v vswitchd-probe,mean) µs vs $(v dnsmasq-probe,mean) µs (${r_mean}×) → $goal_lat."
} >"$report"
echo
cat "$report"
[ -n "$dns_counters" ] && { echo; echo "vswitchd DNS counters after the runs: $dns_counters"; }
if [ $write = 1 ]; then
    # Append only (another bench may be appending too): >> writes at the file's end as it is now.
    { echo; cat "$report"; } >>"$TB_ROOT/benches/RESULTS.md"
    tb_log "appended to benches/RESULTS.md"
fi
