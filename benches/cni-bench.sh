#!/usr/bin/env bash
# cni-bench.sh: how long a container takes to start with rootful podman (CNI backend) on a
# vswitch network through vswitch-cni, against podman's CNI `bridge` plugin, in ONE run.
#
#   sudo benches/cni-bench.sh [-n N] [-x] [-B] [-b]
#     -n N   timed starts per network (default 20), taking turns; medians reported
#     -x     do not write benches/RESULTS.md (print only)
#     -B     do not build (use target/release as it is)
#     -b     bridge only (no vswitch-cni needed; a smoke test of the script)
#
# One start = `podman run --rm --network NET localhost/bb:latest true`, wall clock: create, the
# plugin's ADD, runc, the process, its exit, cleanup with the plugin's DEL, removal. Networks:
#   vswitch-cni   vswitchd (release, --dns-upstream none) with one network 10.89.91.0/24; the
#                 conflist from `vswitchctl cni conflist`; the plugin from target/release
#   bridge        Debian's containernetworking-plugins `bridge` (its own bridge, isGateway,
#                 hairpinMode, no ipMasq) + `host-local` addresses from 10.89.90.0/24; podman's
#                 default conflist also chains portmap, firewall and tuning and masquerades,
#                 which this leaves out: the bridge side does the least work it can
#   none          `--network none`: the same start without any plugin (what the runtime costs)
# podman runs with state of its own (testbed/lib.sh tb_podman_stage: runc, cgroupfs, vfs), on
# the local busybox-static image. One untimed start per network first, then N rounds, each
# network once per round, the order turning each round.
# Everything made here (the daemon, the bridge, the podman state) is removed on exit.
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"

n=20 write=1 build=1 bridge_only=0
cmdline="benches/cni-bench.sh${*:+ $*}"
while getopts "n:xBbh" o; do
    case $o in
        n) n=$OPTARG ;; x) write=0 ;; B) build=0 ;; b) bridge_only=1 ;;
        *) sed -n '2,26p' "$0"; exit 2 ;;
    esac
done
tb_positive "-n" "$n"
tb_need_root
tb_bench_scratch cni-bench
tb_apt ip=iproute2 python3=python3
tb_release_bins "$build"
# After the build (a release build from scratch takes minutes on 2 cores).
tb_bench_watchdog cni-bench $((240 + n * 3 * 10))
git_rev=$(git -C "$TB_ROOT" describe --always --dirty 2>/dev/null || echo unknown)
nets=(bridge none)
if [ "$bridge_only" = 0 ]; then
    [ -x "$bin/vswitch-cni" ] || tb_die "no $bin/vswitch-cni: build it (cargo build --release -p ctl), or -b for the bridge alone"
    nets=(vswitch bridge none)
fi

tag=$$
brname="vscb$((tag % 100000))" brnet="cnibench-br$tag"
sock=$run/vswitchd.sock
# The podman, before the daemon in the undo list's reverse order: containers go (DEL) while
# vswitchd still answers.
if [ "$bridge_only" = 0 ]; then
    tb_daemon "$bin" "$sock" --log-level warn "${vsd_args[@]}" 2>"$run/vswitchd.log"
    "$bin/vswitchctl" --socket "$sock" network create vsw --subnet 10.89.91.0/24 >/dev/null
fi
tb_podman_stage "$run/podman" "$bin"
tb_undo "ip link del '$brname'; rm -rf '/var/lib/cni/networks/$brnet'"
tb_podman_conflist "$brnet" "$(cat <<EOF
{"cniVersion":"1.0.0","name":"$brnet","plugins":[{"type":"bridge","bridge":"$brname","isGateway":true,"ipMasq":false,"hairpinMode":true,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.89.90.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}
EOF
)"
if [ "$bridge_only" = 0 ]; then
    tb_podman_conflist vsw "$("$bin/vswitchctl" cni conflist vsw --socket "$sock")"
fi

netarg() { case $1 in vswitch) echo vsw ;; bridge) echo "$brnet" ;; none) echo none ;; esac; }
# start NET: one `podman run --rm ... true`, its wall time in ms on stdout.
start() {
    local t0 t1
    t0=$EPOCHREALTIME
    podman run --rm --network "$(netarg "$1")" localhost/bb:latest true >"$run/last.log" 2>&1 \
        || { cat "$run/last.log" >&2; tb_die "podman run on $1 failed"; }
    t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }'
}

tb_log "one untimed start on each of: ${nets[*]}"
for net in "${nets[@]}"; do start "$net" >/dev/null; : >"$run/t-$net"; done
tb_log "$n timed starts on each, taking turns"
k=${#nets[@]}
for ((i = 0; i < n; i++)); do
    for ((j = 0; j < k; j++)); do
        net=${nets[$(((i + j) % k))]}
        start "$net" >>"$run/t-$net"
    done
done
# A network whose containers all went leaves nothing: no endpoint, no lease.
if [ "$bridge_only" = 0 ]; then
    left=$("$bin/vswitchctl" --socket "$sock" --json network inspect vsw | python3 -c 'import json,sys; n=json.load(sys.stdin); print(n["endpoints"], n["usage"]["in_use"])')
    [ "$left" = "0 0" ] || tb_die "vswitch network not empty after the runs (endpoints, leases: $left)"
fi

# stats FILE: "median mean min max" in ms.
stats() {
    sort -g "$1" | awk '{ v[NR] = $1; s += $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.1f %.1f %.1f %.1f\n", m, s / NR, v[1], v[NR] }'
}
declare -A M
report=$run/report.md
{
    echo "## Container start through CNI: $(date -u +%Y-%m-%d), kernel $(uname -r)"
    echo
    echo "Command: \`sudo $cmdline\` (vswitchd and vswitch-cni release builds of \`$git_rev\`;"
    echo "$(podman --version), $(runc --version | head -1), containernetworking-plugins $(dpkg-query -W -f '${Version}' containernetworking-plugins);"
    echo "$(nproc) vCPU $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), load average at the end $(cut -d' ' -f1-3 /proc/loadavg))."
    echo "One start = \`podman run --rm --network NET localhost/bb:latest true\` (rootful, CNI backend, runc, cgroupfs, vfs;"
    echo "busybox-static image), wall clock including the plugin's ADD and DEL. $n starts per network, taking turns,"
    echo "after one untimed start each. bridge = \`bridge\` + \`host-local\` only (no portmap, firewall, tuning or ipMasq,"
    echo "which podman's default conflist adds); none = \`--network none\`, no plugin at all."
    echo
    echo "| network | median ms | mean ms | min ms | max ms |"
    echo "|---|---|---|---|---|"
    for net in "${nets[@]}"; do
        read -r m a lo hi < <(stats "$run/t-$net")
        M[$net]=$m
        label=$net
        case $net in vswitch) label="vswitch-cni" ;; bridge) label="bridge + host-local" ;; none) label="--network none" ;; esac
        echo "| $label | $m | $a | $lo | $hi |"
    done
    echo
    if [ "$bridge_only" = 0 ]; then
        echo "Ratio of medians, vswitch-cni / bridge: $(tb_ratio "${M[vswitch]}" "${M[bridge]}")×;"
        over() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }
        echo "over \`--network none\`: vswitch-cni +$(over "${M[vswitch]}" "${M[none]}") ms, bridge +$(over "${M[bridge]}" "${M[none]}") ms"
        echo "($(tb_ratio "$(over "${M[vswitch]}" "${M[none]}")" "$(over "${M[bridge]}" "${M[none]}")")× the bridge's share)."
    else
        echo "Bridge only (-b): no vswitch-cni figures in this run."
    fi
} >"$report"
tb_report "$report" "$write"
