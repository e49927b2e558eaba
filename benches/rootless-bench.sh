#!/usr/bin/env bash
# rootless-bench.sh: rootless egress, vswitchd against slirp4netns, measured in ONE run so that
# their ratios can be compared (issue: "at least 4× slirp4netns at MTU 1500").
#
# Everything runs as an unprivileged user (vswitch-test, made if missing) inside a "host"
# namespace of this run whose loopback carries the iperf3 server (127.0.0.1:5201):
#   vswitchd     rootless (its netns helper makes the user namespace), egress on; one network
#                per MTU with --host-loopback 5201; the container asks the gateway address,
#                which egress maps to the host's 127.0.0.1. Containers are made inside the
#                daemon's user namespace (nsenter -U … unshare -n) and attached by pid.
#   slirp4netns  one process per container (`unshare -Urn`), --configure --mtu M; the container
#                asks 10.0.2.2, slirp's address for the host's loopback.
# Per MTU (1500, 65520) and direction: container→host (iperf3 -c) and host→container (-R),
# one TCP stream, ROUNDS rounds taking turns (vswitchd, then slirp4netns), medians reported,
# ratios are medians of per-round ratios. Memory, measured first: Pss (smaps_rollup) of the
# daemon (and its netns helper) idle and with N idle containers attached, per container;
# slirp4netns: the mean Pss of N processes serving N idle containers.
# Prints a markdown table and appends it to benches/RESULTS.md.
#
#   sudo benches/rootless-bench.sh [--duration S] [--rounds R] [--containers N] [--no-build] [--no-write]
#     --duration S    seconds per iperf3 run (default 5)
#     --rounds R      turns per peer and case (default 3)
#     --containers N  idle containers for the memory figures (default 10)
#     --no-build      use target/release as it is
#     --no-write      print only, do not append to benches/RESULTS.md
#
# Everything it makes (namespaces, processes, the scratch directory) goes on exit, also on
# failure or Ctrl-C; a watchdog bounds the run.
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"

secs=5 rounds=3 count=10 build=1 write=1
cmdline="benches/rootless-bench.sh${*:+ $*}"
usage() { sed -n '2,27p' "$0"; exit 2; }
while [ $# -gt 0 ]; do
    case $1 in
        --duration) [ $# -ge 2 ] || usage; secs=$2; shift 2 ;;
        --rounds) [ $# -ge 2 ] || usage; rounds=$2; shift 2 ;;
        --containers) [ $# -ge 2 ] || usage; count=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --no-write) write=0; shift ;;
        -h | --help) usage ;;
        *) echo "rootless-bench: unknown argument $1" >&2; usage ;;
    esac
done
tb_positive "--duration, --rounds and --containers" "$secs" "$rounds" "$count"
tb_need_root
tb_bench_scratch rootless-bench

tb_apt slirp4netns=slirp4netns iperf3=iperf3 nsenter=util-linux python3=python3
tb_release_bins "$build"
limit=$((2 * 2 * 2 * rounds * (secs + 15) + count * 4 + 120))
tb_bench_watchdog rootless-bench "$limit"

tag="vsrb$$"
host=$tag-host
tb_netns "$host"
tb_rootless_stage "$host" "$run"

pss_kib() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
gbps() { python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.3f" % (d["end"]["sum_received"]["bits_per_second"] / 1e9))' 2>/dev/null || echo fail; }

tb_log "iperf3 server on the host's loopback"
tb_user_bg iperf3 -s -B 127.0.0.1 -p 5201 >"$run/iperf3-server.log" 2>&1
tb_undo "kill $!"

tb_log "vswitchd, rootless, as $TB_RL_USER"
tb_user_daemon "$bin" --dns-upstream none 2>"$run/vswitchd.log"
vpid=$TB_RL_VPID
ctl() { tb_as_user "$bin/vswitchctl" --socket "$TB_RL_SOCK" "$@"; }
pss0=$(( $(pss_kib $vpid) + $(pss_kib "$TB_RL_USERNS") ))

# vs_container NAME NETWORK: a container in the daemon's user namespace, attached; its pid in $cpid.
vs_container() {
    tb_user_container
    ctl attach "$2" --pid "$TB_CPID" --name "$1" >/dev/null || tb_die "attach $1"
    cpid=$TB_CPID
}
# slirp_container MTU: a container with its own user namespace and a slirp4netns; pids in
# $cpid and $spid.
slirp_container() {
    tb_user_bg unshare -Urn sleep 100000 >/dev/null 2>&1
    local pid=$!
    tb_undo "kill $pid"
    tb_wait_user_ns "$pid"
    tb_user_bg slirp4netns --configure --mtu="$1" "$pid" tap0 >>"$run/slirp.log" 2>&1
    spid=$!
    tb_undo "kill $spid"
    for _ in $(seq 50); do
        tb_in_ns "$pid" ip -o addr show tap0 2>/dev/null | grep -q 10.0.2.100 && break
        sleep 0.1
    done
    cpid=$pid
}
run_iperf() { # PID SERVER [-R]
    local pid=$1 server=$2
    shift 2
    tb_in_ns "$pid" timeout $((secs + 15)) iperf3 -c "$server" -p 5201 -t "$secs" -J "$@" 2>/dev/null | gbps
}

tb_log "memory: $count idle containers each (before any traffic)"
ctl network create idle >/dev/null
for i in $(seq "$count"); do vs_container "idle$i" idle; done
sleep 1
pss1=$(( $(pss_kib $vpid) + $(pss_kib "$TB_RL_USERNS") ))
spss=()
for i in $(seq "$count"); do
    slirp_container 1500
    spss+=("$spid")
done
sleep 1
stotal=0
for sp in "${spss[@]}"; do stotal=$((stotal + $(pss_kib "$sp"))); done
vs_per=$(awk -v a="$pss0" -v b="$pss1" -v n="$count" 'BEGIN { printf "%.1f", (b - a) / n }')
sl_per=$(awk -v t="$stotal" -v n="$count" 'BEGIN { printf "%.1f", t / n }')
declare -A R
for mtu in 1500 65520; do
    ctl network create "n$mtu" --mtu "$mtu" --host-loopback 5201 >/dev/null
    gw=$(ctl network inspect "n$mtu" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["gateway"])')
    vs_container "c$mtu" "n$mtu"
    vc=$cpid
    slirp_container "$mtu"
    sc=$cpid
    for r in $(seq "$rounds"); do
        for dir in up down; do
            flag=(); [ $dir = down ] && flag=(-R)
            v=$(run_iperf "$vc" "$gw" "${flag[@]}")
            s=$(run_iperf "$sc" 10.0.2.2 "${flag[@]}")
            tb_log "mtu $mtu $dir round $r: vswitchd $v Gbit/s, slirp4netns $s Gbit/s"
            R[$mtu,$dir,v]+="$v " R[$mtu,$dir,s]+="$s " R[$mtu,$dir,r]+="$(tb_ratio "$v" "$s") "
        done
    done
done

egress=$(ctl egress --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print("tcp_opened=%d connect_failed=%d" % (d["tcp_opened"], d["connect_failed"]))')

{
    echo "## Rootless egress: vswitchd vs slirp4netns ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Command: \`sudo $cmdline\` (one TCP stream, iperf3 $secs s, $rounds rounds, medians; both as an unprivileged user, server on the host's loopback)."
    echo
    echo "| case | vswitchd (Gbit/s) | slirp4netns (Gbit/s) | ratio |"
    echo "|---|---|---|---|"
    for mtu in 1500 65520; do
        for dir in up down; do
            what="container→host"; [ $dir = down ] && what="host→container"
            # shellcheck disable=SC2086
            echo "| MTU $mtu, $what | $(tb_median ${R[$mtu,$dir,v]}) | $(tb_median ${R[$mtu,$dir,s]}) | **$(tb_median ${R[$mtu,$dir,r]})×** |"
        done
    done
    echo "| memory per container (Pss, KiB) | $vs_per | $sl_per | $(tb_ratio "$vs_per" "$sl_per")× |"
    echo "| daemon idle (Pss, KiB, incl. netns helper) | $pss0 | – | |"
} >"$run/report.md"
tb_report "$run/report.md" "$write"
echo "vswitchd egress counters: $egress"
