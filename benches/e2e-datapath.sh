#!/usr/bin/env bash
# e2e-datapath.sh: TCP throughput, RTT and switch CPU between two "container" namespaces at
# MTU 1500, through four switches measured in ONE run so that their ratios can be compared:
#
#   vswitchd            offloads on (IFF_VNET_HDR + TSO: 64 KiB super-frames TAP to TAP)
#   vswitchd-nooffload  vswitchd --no-offloads (one MTU-sized frame per syscall)
#   bridge              kernel bridge with two veth pairs (in a namespace of its own)
#   vde_switch          one vde_switch process owning both TAPs (vde_switch -t tapA -t tapB,
#                       the TAPs then moved into the containers): the same shape as vswitchd
#
# For each: iperf3 -c (1 stream and -P 4, both directions with -R), median of REPS runs of
# SECONDS s; ping -c 20 -i 0.05 (avg RTT); the switch process's CPU % (utime+stime from
# /proc/PID/stat over the 1-stream runs). Prints a markdown table and ratios and appends them
# to benches/RESULTS.md.
#
#   sudo benches/e2e-datapath.sh [-t SECONDS] [-r REPS] [-s SWITCHES] [-n] [-B]
#     -t SECONDS   length of one iperf3 run (default 5)
#     -r REPS      runs per cell, the median is reported (default 3)
#     -s LIST      comma-separated subset of vswitchd,vswitchd-nooffload,bridge,vde_switch
#     -n           do not write benches/RESULTS.md (print only)
#     -B           do not build (use target/release as it is)
#
# Only namespaces this script creates carry traffic; every one of them, the daemons and the
# iperf3 servers are removed on exit, also on failure or Ctrl-C. A watchdog bounds the run.
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"

secs=5 reps=3 write=1 build=1
switches=vswitchd,vswitchd-nooffload,bridge,vde_switch
cmdline="benches/e2e-datapath.sh${*:+ $*}"
while getopts "t:r:s:nBh" o; do
    case $o in
        t) secs=$OPTARG ;; r) reps=$OPTARG ;; s) switches=$OPTARG ;; n) write=0 ;; B) build=0 ;;
        *) sed -n '2,24p' "$0"; exit 2 ;;
    esac
done
[[ $secs =~ ^[0-9]+$ && $secs -ge 1 && $reps =~ ^[0-9]+$ && $reps -ge 1 ]] || tb_die "-t and -r take positive integers"
tb_need_root

run=$(mktemp -d /tmp/vswitch-e2e.XXXXXX)
watchdog=
on_exit() {
    local rc=$?
    tb_cleanup
    [ -n "$watchdog" ] && kill "$watchdog" 2>/dev/null
    rm -rf "$run"
    exit $rc
}
trap on_exit EXIT
trap 'echo "e2e-datapath: interrupted" >&2; exit 130' INT TERM

# Bound the whole run: 4 switches x 4 cells x REPS x (SECONDS + overhead), plus setup.
limit=$((4 * 4 * reps * (secs + 4) + 180))
(
    sleep "$limit" </dev/null >/dev/null 2>&1 &
    s=$!
    trap 'kill $s 2>/dev/null; exit 0' TERM
    wait $s
    echo "e2e-datapath: watchdog: over ${limit}s, stopping" >&2
    kill -TERM $$
) &
watchdog=$!

# ---- dependencies -------------------------------------------------------------------------
need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v vde_switch >/dev/null || need+=(vde2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v python3 >/dev/null || need+=(python3)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
    tb_log "installing ${need[*]}"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
        || tb_die "apt-get install ${need[*]} failed"
fi
bin=$TB_ROOT/target/release
if [ $build = 1 ]; then
    tb_log "building vswitchd (release)"
    (cd "$TB_ROOT" && cargo build -q --release -p vswitch -p ctl) || tb_die "cargo build failed"
fi
[ -x "$bin/vswitchd" ] && [ -x "$bin/vswitchctl" ] || tb_die "no $bin/vswitchd: build it first"

hz=$(getconf CLK_TCK)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
awk '{ exit !($1 > 0.5) }' /proc/loadavg && tb_log "warning: load average is $load_start before the run; other work on these cores skews every figure"
tag="vsbe$$"          # every namespace and link name this run makes starts with it

# ---- measurement helpers ------------------------------------------------------------------
# cpu_ticks PID: utime+stime of the whole process (every thread), in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
now_ns() { date +%s%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# iperf_once NS_CLIENT SERVER_IP STREAMS REVERSE(0/1) PID-OR-EMPTY: prints "GBITS CPU%".
iperf_once() {
    local ns=$1 ip=$2 p=$3 rev=$4 pid=$5 t0 t1 c0 c1 json rflag=()
    [ "$rev" = 1 ] && rflag=(-R)
    [ -n "$pid" ] && c0=$(cpu_ticks "$pid")
    t0=$(now_ns)
    json=$(ip netns exec "$ns" timeout $((secs + 20)) iperf3 -c "$ip" -t "$secs" -P "$p" "${rflag[@]}" -J \
        --connect-timeout 3000) || { echo "iperf3 failed: ${json:0:400}" >&2; echo "0 0"; return; }
    t1=$(now_ns)
    local gbit cpu=-
    gbit=$(python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))' <<<"$json")
    if [ -n "$pid" ]; then
        c1=$(cpu_ticks "$pid")
        cpu=$(awk -v d=$((c1 - c0)) -v hz="$hz" -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f", 100 * d / hz / (ns / 1e9) }')
    fi
    echo "$gbit $cpu"
}

# rtt NS IP: average RTT in ms of ping -c 20 -i 0.05.
rtt() {
    ip netns exec "$1" ping -c 1 -W 2 "$2" >/dev/null 2>&1 || true   # ARP / MAC learning first
    ip netns exec "$1" ping -q -c 20 -i 0.05 -W 2 "$2" | awk -F/ '/^rtt|^round-trip/ { print $5 }'
}

# measure NAME NS1 NS2 IP2 PID: fills the result table for one switch. A server iperf3 runs in
# NS2 for the duration.
declare -A R
measure() {
    local name=$1 ns1=$2 ns2=$3 ip2=$4 pid=$5 spid i p rev key out
    ip netns exec "$ns2" iperf3 -s -B "$ip2" >"$run/iperf3-$name.log" 2>&1 &
    spid=$!
    tb_undo "kill $spid; wait $spid"
    for i in $(seq 50); do
        ip netns exec "$ns2" ss -Hltn "sport = :5201" 2>/dev/null | grep -q . && break
        sleep 0.1
    done
    ip netns exec "$ns1" ping -c 3 -i 0.2 -W 1 "$ip2" >/dev/null || tb_die "$name: $ns1 cannot reach $ip2"
    R[$name,rtt]=$(rtt "$ns1" "$ip2")
    for p in 1 4; do
        for rev in 0 1; do
            key="$name,$p,$rev"
            local g=() c=()
            for i in $(seq "$reps"); do
                out=$(iperf_once "$ns1" "$ip2" "$p" "$rev" "$pid")
                g+=("${out% *}") c+=("${out#* }")
                printf '  %-20s P=%d %-3s run %d: %6s Gbit/s  cpu %s %%\n' "$name" "$p" "$([ $rev = 1 ] && echo -R)" "$i" "${out% *}" "${out#* }" >&2
            done
            R[$key]=$(median "${g[@]}")
            if [ -n "$pid" ]; then R[$key,cpu]=$(median "${c[@]}"); else R[$key,cpu]=kernel; fi
        done
    done
}

# Two fresh container namespaces for one switch.
containers() {
    tb_netns "$tag-$1-c1"
    tb_netns "$tag-$1-c2"
}

# ---- (a), (b): vswitchd --------------------------------------------------------------------
run_vswitchd() {
    local name=$1 args=() sock=$run/$1/vswitchd.sock pid
    [ "$name" = vswitchd-nooffload ] && args=(--no-offloads)
    tb_log "$name: starting vswitchd ${args[*]}"
    mkdir -p "$run/$name"
    tb_daemon "$bin" "$sock" --log-level warn "${args[@]}" 2>>"$run/$name/vswitchd.log"
    pid=$!
    [ "$(cat /proc/$pid/comm 2>/dev/null)" = vswitchd ] || tb_die "cannot find the vswitchd pid"
    local ctl=("$bin/vswitchctl" --socket "$sock")
    "${ctl[@]}" network create bench --subnet 10.231.0.0/24 >/dev/null
    containers "$name"
    "${ctl[@]}" attach bench --netns "/run/netns/$tag-$name-c1" --name c1 --ip 10.231.0.2 >/dev/null
    "${ctl[@]}" attach bench --netns "/run/netns/$tag-$name-c2" --name c2 --ip 10.231.0.3 >/dev/null
    R[$name,desc]="vswitchd ${args[*]:-(offloads: $("${ctl[@]}" --json port ls | python3 -c 'import json,sys; print(",".join(next(p for p in json.load(sys.stdin) if p.get("name") == "c1").get("offloads", [])))' 2>/dev/null || echo '?'))}"
    measure "$name" "$tag-$name-c1" "$tag-$name-c2" 10.231.0.3 "$pid"
    tb_cleanup
}

# ---- (c): kernel bridge ---------------------------------------------------------------------
run_bridge() {
    local name=bridge sw=$tag-br
    tb_log "bridge: kernel bridge + 2 veth pairs (bridge in its own namespace)"
    containers $name
    tb_netns "$sw"
    ip -n "$sw" link add br0 type bridge
    ip -n "$sw" link set br0 up
    local i
    for i in 1 2; do
        ip -n "$sw" link add "p$i" type veth peer name eth0 netns "$tag-$name-c$i"
        ip -n "$sw" link set "p$i" master br0 up
        ip -n "$tag-$name-c$i" link set eth0 mtu 1500 up
        ip -n "$tag-$name-c$i" addr add "10.232.0.$((i + 1))/24" dev eth0
    done
    R[$name,desc]="kernel bridge + 2 veth pairs"
    measure $name "$tag-$name-c1" "$tag-$name-c2" 10.232.0.3 ""
    tb_cleanup
}

# ---- (d): vde_switch owning both TAPs ---------------------------------------------------------
run_vde() {
    local name=vde_switch sw=$tag-vde pid i
    tb_log "vde_switch: one process owning both TAPs (vde_switch -t), TAPs moved into the containers"
    containers $name
    tb_netns "$sw"
    mkdir -p "$run/vde"
    # -d: daemon (its console would otherwise exit on EOF of stdin). The TAPs are created in the
    # switch's namespace and then moved; the open fds keep working.
    ip netns exec "$sw" vde_switch -d -p "$run/vde/pid" -s "$run/vde/ctl" -M "$run/vde/mgmt" \
        -t "${tag}a" -t "${tag}b" </dev/null >"$run/vde/log" 2>&1 || tb_die "vde_switch did not start: $(cat "$run/vde/log")"
    for i in $(seq 50); do [ -s "$run/vde/pid" ] && break; sleep 0.05; done
    pid=$(cat "$run/vde/pid")
    tb_undo "kill $pid; for _w in \$(seq 50); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done"
    [ "$(cat /proc/$pid/comm 2>/dev/null)" = vde_switch ] || tb_die "cannot find the vde_switch pid"
    for i in 1 2; do
        local tap=${tag}$([ $i = 1 ] && echo a || echo b) c=$tag-$name-c$i
        ip -n "$sw" link set "$tap" netns "$c"
        ip -n "$c" link set "$tap" name eth0
        ip -n "$c" link set eth0 mtu 1500 up
        ip -n "$c" addr add "10.233.0.$((i + 1))/24" dev eth0
    done
    R[$name,desc]="vde_switch -t tapA -t tapB (one process owning both TAPs; $(vde_switch -v 2>&1 | head -1 | tr -s ' '))"
    measure $name "$tag-$name-c1" "$tag-$name-c2" 10.233.0.3 "$pid"
    tb_cleanup
}

IFS=, read -r -a want <<<"$switches"
for s in "${want[@]}"; do
    case $s in
        vswitchd | vswitchd-nooffload) run_vswitchd "$s" ;;
        bridge) run_bridge ;;
        vde_switch) run_vde ;;
        *) tb_die "unknown switch $s (vswitchd, vswitchd-nooffload, bridge, vde_switch)" ;;
    esac
done

# ---- report ---------------------------------------------------------------------------------
v() { echo "${R[$1]:-}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
per_gbit() { awk -v c="$1" -v g="$2" 'BEGIN { if (c !~ /^[0-9.]+$/ || g + 0 == 0) print "-"; else printf "%.1f", c / g }'; }
kernel=$(uname -r)
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
report=$run/report.md
{
    echo "## End-to-end datapath: $(date -u +%Y-%m-%d), kernel $kernel"
    echo
    echo "Command: \`sudo $cmdline\` (iperf3 $(iperf3 --version | awk 'NR == 1 { print $2 }'), ${secs} s per run, median of $reps;"
    echo "$(nproc) vCPU $cpu_model; client, server and switch share the same cores). TCP between two"
    echo "namespaces, MTU 1500. CPU = the switch process's utime+stime over the 1-stream runs (median);"
    echo "the kernel bridge's work is softirq in the senders' context, not a process. Load average before the"
    echo "run $load_start, after $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "| path | 1 stream Gbit/s | 1 stream -R | 4 streams | 4 streams -R | RTT ms | CPU % (1 stream) | CPU % per Gbit/s |"
    echo "|---|---|---|---|---|---|---|---|"
    for s in "${want[@]}"; do
        printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "${R[$s,desc]}" "$(v "$s,1,0")" "$(v "$s,1,1")" "$(v "$s,4,0")" "$(v "$s,4,1")" \
            "$(v "$s,rtt")" "$(v "$s,1,0,cpu")" "$(per_gbit "$(v "$s,1,0,cpu")" "$(v "$s,1,0")")"
    done
    echo
    echo "| ratio | 1 stream | 1 stream -R | 4 streams | 4 streams -R |"
    echo "|---|---|---|---|---|"
    for pair in vswitchd/vde_switch vswitchd/bridge vswitchd-nooffload/vde_switch vswitchd/vswitchd-nooffload; do
        a=${pair%/*} b=${pair#*/}
        [ -n "$(v "$a,1,0")" ] && [ -n "$(v "$b,1,0")" ] || continue
        printf '| %s | %s | %s | %s | %s |\n' "$pair" "$(ratio "$(v "$a,1,0")" "$(v "$b,1,0")")" "$(ratio "$(v "$a,1,1")" "$(v "$b,1,1")")" \
            "$(ratio "$(v "$a,4,0")" "$(v "$b,4,0")")" "$(ratio "$(v "$a,4,1")" "$(v "$b,4,1")")"
    done
    echo
    # The goals (PEERS.md): 1 stream, MTU 1500: >= 15x vde_switch and >= 0.9x the kernel bridge;
    # CPU per Gbit/s below the bare copy loop's 54 % at ~12 Gbit/s (4.5 % per Gbit/s).
    if [ -n "$(v vswitchd,1,0)" ]; then
        goal() { awk -v r="$1" -v t="$2" 'BEGIN { if (r == "n/a") print "not measured"; else if (r + 0 >= t) print "met"; else print "NOT met" }'; }
        r_vde=$(ratio "$(v vswitchd,1,0)" "$(v vde_switch,1,0)")
        r_br=$(ratio "$(v vswitchd,1,0)" "$(v bridge,1,0)")
        cpg=$(per_gbit "$(v vswitchd,1,0,cpu)" "$(v vswitchd,1,0)")
        echo "Goals (1 stream, MTU 1500):"
        echo "- ≥ 15× vde_switch: ${r_vde}× → $(goal "$r_vde" 15)"
        echo "- ≥ 0.9× kernel bridge: ${r_br}× → $(goal "$r_br" 0.9)"
        echo "- daemon CPU per Gbit/s below the bare copy loop's 4.5 % (54 % at ~12 Gbit/s): ${cpg} % → $(awk -v c="$cpg" 'BEGIN { if (c == "-") print "not measured"; else if (c + 0 < 4.5) print "met"; else print "NOT met" }')"
    fi
} >"$report"
echo
cat "$report"
if [ $write = 1 ]; then
    { echo; cat "$report"; } >>"$TB_ROOT/benches/RESULTS.md"
    tb_log "appended to benches/RESULTS.md"
fi
