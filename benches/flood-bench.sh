#!/usr/bin/env bash
# flood-bench.sh: what a MAC flood from one container costs a TCP flow between two others.
#
# Three "containers" on one vswitchd network (c1, c2 and the attacker x). iperf3 c1 -> c2 runs
# alone, then again while x sends COUNT frames, each from a new random source MAC to an unknown
# destination (testbed/flood.py: every frame is unknown unicast from an unlearnable source, the
# worst case for the switch), all in the same run. Reports both throughputs, their ratio (goal
# >= 0.9), vswitchd's RSS before and after, and the drop counters of the attacker's port. With
# -k the same is done over a kernel bridge (veth pairs) for comparison. A control row sends the
# same flood from the same namespace into a veth pair of its own, on no switch: what the attacker's
# own CPU costs the flow on this box. Each flood runs twice: as fast as the attacker's process can
# send, and with that process held to CPUS cores by a cgroup (as `podman run --cpus` would), which
# leaves what the switch's own work for the flood costs the flow (the bridge's forwarding runs in
# the attacker's context and is charged to it; vswitchd's is not).
#
#   sudo benches/flood-bench.sh [-c COUNT] [-t SECONDS] [-q CPUS] [-b BIN_DIR] [-a 'VSWITCHD ARGS'] [-k] [-n] [-B]
#     -c COUNT    frames of the flood (default 1000000)
#     -t SECONDS  iperf3 length (default 8; the flood is restarted until the run ends)
#     -q CPUS     the held attacker's CPU quota (default 0.2; 0: only the unheld flood)
#     -b DIR      take vswitchd and vswitchctl from DIR (implies -B)
#     -a ARGS     extra vswitchd arguments (e.g. '--flood-rate 0' to turn storm control off)
#     -k          also measure a kernel bridge under the same flood
#     -n          do not append to benches/RESULTS.md
#     -B          do not build
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"

count=1000000 secs=8 cpus=0.2 write=1 build=1 kernel=0 extra="" bindir=""
cmdline="benches/flood-bench.sh${*:+ $*}"
while getopts "c:t:q:b:a:knBh" o; do
    case $o in
        c) count=$OPTARG ;; t) secs=$OPTARG ;; q) cpus=$OPTARG ;; b) bindir=$OPTARG; build=0 ;; a) extra=$OPTARG ;;
        k) kernel=1 ;; n) write=0 ;; B) build=0 ;; *) sed -n '2,24p' "$0"; exit 2 ;;
    esac
done
tb_positive "-c and -t" "$count" "$secs"
tb_need_root
tb_bench_scratch flood-bench
tb_bench_watchdog flood-bench $((9 * (secs + 10) + 300))
tb_apt iperf3=iperf3 python3=python3 ip=iproute2
tb_release_bins "$build"
[ -n "$bindir" ] && bin=$bindir
git_rev=$(git -C "$TB_ROOT" describe --always --dirty 2>/dev/null || echo unknown)
flood_py=$TB_ROOT/testbed/flood.py
tag="vfb$$"

# iperf NS IP: Gbit/s of one iperf3 -c run.
iperf() {
    ip netns exec "$1" timeout $((secs + 20)) iperf3 -c "$2" -t "$secs" -J --connect-timeout 3000 >"$run/iperf.json" 2>&1 \
        || { echo 0; return; }
    python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))' <"$run/iperf.json"
}
# flood_loop NS SECONDS [PROCS]: flood.py --blast COUNT (each frame sent once, as fast as the
# socket takes them), again and again until SECONDS are over, in the cgroup of PROCS when given;
# writes "frames sent, of them dropped by the attacker's own interface (its queue to the switch
# overflowed)".
flood_loop() {
    local ns=$1 end=$((SECONDS + $2)) procs=${3:-} n=0 d=0 out
    while [ $SECONDS -lt $end ]; do
        out=$( { [ -z "$procs" ] || echo "$BASHPID" >"$procs"; } && exec ip netns exec "$ns" python3 "$flood_py" --blast "${flood_if:-eth0}" "$count") || break
        n=$((n + ${out% *})) d=$((d + ${out#* }))
    done
    echo "$n, $d at the attacker's interface" >"$run/flood.sent"
}
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
# flooded NAME NS_C1 IP2 NS_X [PROCS]: iperf3 under the flood (in PROCS' cgroup when given).
flooded() {
    local name=$1 c1=$2 ip2=$3 x=$4 procs=${5:-} fpid
    # Python builds its frame list first (a few seconds): let it, then measure.
    flood_loop "$x" $((secs + 12)) "$procs" &
    fpid=$!
    sleep 6
    R[$name,flood]=$(iperf "$c1" "$ip2")
    wait $fpid || true
    R[$name,sent]=$(cat "$run/flood.sent")
}
# measure NAME NS_C1 NS_C2 NS_X IP2: iperf3 alone, then under the flood, then (unless -q 0)
# under the flood of an attacker held to CPUS cores (row NAME-held).
measure() {
    local name=$1 c1=$2 c2=$3 x=$4 ip2=$5 spid
    ip netns exec "$c2" iperf3 -s -B "$ip2" >"$run/iperf3-$name.log" 2>&1 &
    spid=$!
    tb_undo "kill $spid; wait $spid"
    sleep 0.5
    ip netns exec "$c1" ping -c 3 -i 0.2 -W 1 "$ip2" >/dev/null || tb_die "$name: c1 cannot reach c2"
    R[$name,alone]=$(iperf "$c1" "$ip2")
    flooded "$name" "$c1" "$ip2" "$x"
    if [ -n "$cg_procs" ]; then
        R[$name-held,alone]=${R[$name,alone]}
        flooded "$name-held" "$c1" "$ip2" "$x" "$cg_procs"
    fi
    kill $spid 2>/dev/null || true
}
declare -A R
# The held attacker's cgroup (none with -q 0).
cg_procs=""
if awk -v c="$cpus" 'BEGIN { exit !(c > 0) }'; then
    tb_cpu_cgroup "$tag-attacker" "$cpus"
    cg_procs=$TB_CGROUP_PROCS
fi

# ---- vswitchd ------------------------------------------------------------------------------
for n in c1 c2 x; do tb_netns "$tag-$n"; done
sock=$run/vsd/vswitchd.sock
mkdir -p "$run/vsd"
# shellcheck disable=SC2086
tb_daemon "$bin" "$sock" --log-level warn "${vsd_args[@]}" $extra 2>>"$run/vsd/vswitchd.log"
pid=$(pgrep -n -x vswitchd)
ctl=("$bin/vswitchctl" --socket "$sock")
"${ctl[@]}" network create fb --subnet 10.236.0.0/24 >/dev/null
i=1
for n in c1 c2 x; do i=$((i + 1)); "${ctl[@]}" attach fb --netns "/run/netns/$tag-$n" --name "$n" --ip "10.236.0.$i" >/dev/null; done
ip2=10.236.0.3
rss0=$(rss_kib "$pid")
measure vswitchd "$tag-c1" "$tag-c2" "$tag-x" "$ip2"
rss1=$(rss_kib "$pid")
# Control: the same attacker process sends the same flood into a veth pair inside its own
# namespace, on no switch: what its CPU alone costs the flow on this box.
ip -n "$tag-x" link add fv0 type veth peer name fv1
ip -n "$tag-x" link set fv0 up
ip -n "$tag-x" link set fv1 up
flood_if=fv0 measure cpu-only "$tag-c1" "$tag-c2" "$tag-x" "$ip2"
xport=$("${ctl[@]}" --json port ls | python3 -c '
import json,sys
for p in json.load(sys.stdin):
    if p.get("name") == "x":
        d = p.get("drops", {})
        print(p["rx_packets"], " ".join("%s=%s" % (k, v) for k, v in sorted(d.items()) if v))')
c2tx=$("${ctl[@]}" --json port ls | python3 -c '
import json,sys
print([p["tx_packets"] for p in json.load(sys.stdin) if p.get("name") == "c2"][0])')

# ---- kernel bridge -------------------------------------------------------------------------
if [ "$kernel" = 1 ]; then
    br=$tag-br
    tb_netns "$br"
    ip -n "$br" link add br0 type bridge
    ip -n "$br" link set br0 up
    i=0
    for n in kc1 kc2 kx; do
        tb_netns "$tag-$n"
        i=$((i + 1))
        ip -n "$br" link add "p$i" type veth peer name eth0 netns "$tag-$n"
        ip -n "$br" link set "p$i" master br0 up
        ip -n "$tag-$n" addr add "10.237.0.$((i + 1))/24" dev eth0
        ip -n "$tag-$n" link set eth0 up
    done
    measure bridge "$tag-kc1" "$tag-kc2" "$tag-kx" 10.237.0.3
fi

# ---- report --------------------------------------------------------------------------------
report=$run/report.md
{
    echo "### MAC flood vs. a TCP flow ($(date -u +%Y-%m-%d), \`$git_rev\`)"
    echo
    echo "Command: \`sudo $cmdline\` (iperf3 ${secs} s, 1 stream, c1 -> c2; the flood: testbed/flood.py --blast, $count frames a round from new source MACs to an unknown unicast destination, rounds repeated for the whole run; held: the attacker's process in a cgroup with a CPU quota of $cpus; load before: $(cut -d' ' -f1-3 /proc/loadavg))"
    echo
    echo "| switch | alone Gbit/s | during flood Gbit/s | ratio (goal >= 0.9) | flood frames sent, dropped by the attacker's own TAP queue | notes |"
    echo "|---|---|---|---|---|---|"
    # row NAME LABEL [NOTES]: one switch under one flood, and the same under the held flood.
    row() {
        local name=$1 label=$2 notes=${3:-} n
        for n in "$name" "$name-held"; do
            [ -n "${R[$n,flood]:-}" ] || continue
            [ "$n" = "$name-held" ] && label="$2, attacker held to $cpus CPU" notes=""
            echo "| $label | ${R[$n,alone]} | ${R[$n,flood]} | $(tb_ratio "${R[$n,flood]}" "${R[$n,alone]}") | ${R[$n,sent]} | $notes |"
        done
    }
    row vswitchd "vswitchd${extra:+ $extra}" "RSS ${rss0} -> ${rss1} KiB; attacker port rx/drops: ${xport}; c2 tx_packets ${c2tx}"
    row cpu-only "control: the same flood into a veth pair of the attacker's own (on no switch: the attacker's CPU only)"
    [ "$kernel" = 1 ] && row bridge "kernel bridge"
} >"$report"
tb_report "$report" "$write"
