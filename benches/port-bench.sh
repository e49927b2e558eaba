#!/usr/bin/env bash
# port-bench.sh: TCP between a container and a namespace behind an interface port, MTU 1500,
# 1 stream, both directions, against the same two namespaces joined by a kernel bridge, in ONE
# run:
#
#   vswitchd   the container "c" is a vswitchd endpoint (TAP, vnet header, TSO); the other
#              namespace "l" holds one end of a veth whose other end, in vswitchd's namespace,
#              is an interface port of the same network (packet socket with PACKET_VNET_HDR)
#   bridge     "c" and "l" each have a veth to a kernel bridge in a namespace of its own
#
# For each: iperf3 c -> l and l -> c (-R), median of REPS runs of SECONDS s. Prints a markdown
# table with the ratios and appends it to benches/RESULTS.md.
#
#   sudo benches/port-bench.sh [-t SECONDS] [-r REPS] [-n] [-B]
#     -t SECONDS   length of one iperf3 run (default 5)
#     -r REPS      runs per cell, the median is reported (default 3)
#     -n           do not write benches/RESULTS.md (print only)
#     -B           do not build (use target/release as it is)
#
# Only namespaces and links this script creates carry traffic; all of them, the daemon and the
# iperf3 servers are removed on exit, also on failure or Ctrl-C. A watchdog bounds the run.
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"

secs=5 reps=3 write=1 build=1
cmdline="benches/port-bench.sh${*:+ $*}"
while getopts "t:r:nBh" o; do
    case $o in
        t) secs=$OPTARG ;; r) reps=$OPTARG ;; n) write=0 ;; B) build=0 ;;
        *) sed -n '2,20p' "$0"; exit 2 ;;
    esac
done
[[ $secs =~ ^[0-9]+$ && $secs -ge 1 && $reps =~ ^[0-9]+$ && $reps -ge 1 ]] || tb_die "-t and -r take positive integers"
tb_need_root
tb_bench_scratch port-bench
tb_bench_watchdog port-bench $((2 * 2 * reps * (secs + 4) + 900))

tb_apt iperf3=iperf3 ip=iproute2
tb_release_bins "$build"
git_rev=$(git -C "$TB_ROOT" describe --always --dirty 2>/dev/null || echo unknown)
id=$$

# median of the numbers on stdin
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# iperf_cell CLIENT_NS SERVER_NS SERVER_IP [-R]: median Gbit/s of $reps runs
iperf_cell() {
    local cns=$1 sns=$2 ip=$3 rev=${4:-} r out=()
    for r in $(seq "$reps"); do
        ip netns exec "$sns" iperf3 -s -1 -D -p 5301 -I "$run/iperf-$sns.pid" >/dev/null 2>&1
        sleep 0.3
        out+=("$(ip netns exec "$cns" iperf3 -c "$ip" -p 5301 -t "$secs" -J $rev 2>>"$run/iperf.log" |
            python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9, 2))' || echo 0)")
        sleep 0.3
    done
    printf '%s\n' "${out[@]}" | median
}

netns() { ip netns add "$1"; tb_undo "ip netns del $1"; ip -n "$1" link set lo up; }

# ---- vswitchd: container TAP <-> interface port (veth) ----------------------------------------
tb_log "vswitchd with an interface port"
sock=$run/vsw/vswitchd.sock
mkdir -p "$run/vsw"
tb_daemon "$bin" "$sock" "${vsd_args[@]}" >"$run/vsw/vswitchd.log" 2>&1
ctl() { "$bin/vswitchctl" --socket "$sock" "$@"; }
netns "pbc$id"; netns "pbl$id"
ip link add "pbu$id" type veth peer name eth0 netns "pbl$id"
tb_undo "ip link del pbu$id 2>/dev/null"
ip link set "pbu$id" up
ip -n "pbl$id" link set eth0 up
ip -n "pbl$id" addr add 10.231.0.200/24 dev eth0
ctl network create pb --subnet 10.231.0.0/24 >/dev/null
ctl port add pb --interface "pbu$id" >/dev/null
ctl attach pb --netns "pbc$id" --name c --ip 10.231.0.10 >/dev/null
ip netns exec "pbc$id" ping -c 3 -i 0.2 -W 1 10.231.0.200 >/dev/null || tb_die "no ping through the interface port"
v_fwd=$(iperf_cell "pbc$id" "pbl$id" 10.231.0.200)
v_rev=$(iperf_cell "pbc$id" "pbl$id" 10.231.0.200 -R)
ctl port ls >"$run/vsw/ports.txt"

# ---- kernel bridge: the same two kinds of namespaces, two veth pairs ---------------------------
tb_log "kernel bridge"
netns "pbbr$id"; netns "pbbc$id"; netns "pbbl$id"
ip -n "pbbr$id" link add br0 type bridge
ip -n "pbbr$id" link set br0 up
for side in c l; do
    ip -n "pbbr$id" link add "v$side" type veth peer name eth0 netns "pbb$side$id"
    ip -n "pbbr$id" link set "v$side" master br0 up
    ip -n "pbb$side$id" link set eth0 up
done
ip -n "pbbc$id" addr add 10.232.0.10/24 dev eth0
ip -n "pbbl$id" addr add 10.232.0.200/24 dev eth0
ip netns exec "pbbc$id" ping -c 3 -i 0.2 -W 1 10.232.0.200 >/dev/null || tb_die "no ping through the bridge"
b_fwd=$(iperf_cell "pbbc$id" "pbbl$id" 10.232.0.200)
b_rev=$(iperf_cell "pbbc$id" "pbbl$id" 10.232.0.200 -R)

report=$(cat <<EOF

## Interface port vs kernel bridge ($(date -u +%Y-%m-%d), rev $git_rev)

\`$cmdline\` (release build; TCP, MTU 1500, 1 stream, median of $reps x ${secs} s; 2-vCPU box
shared with other engineers' builds, so expect run-to-run noise of tens of percent).
Container (vswitch TAP) <-> namespace behind an interface port (veth, packet socket with
PACKET_VNET_HDR), against the same two namespaces joined by a kernel bridge.

| path | container -> LAN ns | LAN ns -> container |
|---|---|---|
| vswitchd, interface port | $v_fwd Gbit/s | $v_rev Gbit/s |
| kernel bridge | $b_fwd Gbit/s | $b_rev Gbit/s |
| ratio vswitchd / bridge | $(tb_ratio "$v_fwd" "$b_fwd") | $(tb_ratio "$v_rev" "$b_rev") |
EOF
)
echo "$report"
if [ "$write" = 1 ]; then
    echo "$report" >>"$TB_ROOT/benches/RESULTS.md"
    tb_log "appended to benches/RESULTS.md"
fi
