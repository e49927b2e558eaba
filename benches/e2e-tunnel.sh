#!/usr/bin/env bash
# e2e-tunnel.sh: container-to-container TCP throughput, RTT and daemon CPU across two "hosts"
# (network namespaces joined by a veth underlay, MTU 1500), through encrypted tunnels measured
# in ONE run so that their ratios can be compared:
#
#   vswitchd     vswitchd --listen in each host; containers attached to an --overlay network
#                (TAP eth0, MTU 1422 as vswitchd sets it); the daemon seals frames itself
#   boringtun-1  boringtun-cli --threads 1 in each host, configured with `wg`; each container
#                is a veth (MTU 1420, wg's default) on a kernel bridge in its host, routed by
#                the host's kernel to the boringtun TUN (MTU 1420) and back on the other side
#   boringtun-4  the same with boringtun's default --threads 4
#   underlay     (reference) iperf3 between the two host namespaces over the bare veth
#
# Every path has its own pair of host namespaces and containers; all are built first and stay
# up, then each repetition runs every path in turn (drift hits them alike). Per path: iperf3 -c
# container A -> container B, 1 TCP stream, SECONDS s, median of REPS runs; 2 000 pings one
# every 10 ms (RTT mean, p50, p99); CPU % of each host's daemon (utime+stime of the whole
# process from /proc/PID/stat, over each iperf3 run, median); UDP datagrams the kernel dropped for a full socket receive
# buffer in the host namespaces (/proc/net/snmp RcvbufErrors); for vswitchd the drops that
# `vswitchctl peer ls` and `port ls` count. Prints a markdown table and the ratio
# vswitchd / boringtun and appends them to benches/RESULTS.md.
#
#   sudo benches/e2e-tunnel.sh [-t SECONDS] [-r REPS] [-s PATHS] [-n] [-B] [-I]
#     -t SECONDS   length of one iperf3 run (default 5)
#     -r REPS      runs per path, the median is reported (default 3)
#     -s PATHS     comma-separated subset of vswitchd,boringtun-1,boringtun-4,underlay
#     -n           do not write benches/RESULTS.md (print only)
#     -B           do not build (use target/release as it is)
#     -I           do not install boringtun-cli / wireguard-tools when missing (skip boringtun)
#
# boringtun-cli is installed once with `cargo install --root $VSWITCH_BENCH_TOOLS boringtun-cli`
# (default /var/tmp/vswitch-bench-tools, outside the repository) and reused; `wg` comes from
# the Debian package wireguard-tools. If either cannot be had, only vswitchd is measured.
# Only namespaces this script creates carry traffic; they, the daemons, the iperf3 servers and
# boringtun's UAPI sockets are removed on exit, also on failure or Ctrl-C. A watchdog bounds the
# run (the one-time install and the build are not counted).
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"

secs=5 reps=3 write=1 build=1 install=1 rtt_count=2000
paths=vswitchd,boringtun-1,boringtun-4,underlay
cmdline="benches/e2e-tunnel.sh${*:+ $*}"
while getopts "t:r:s:nBIh" o; do
    case $o in
        t) secs=$OPTARG ;; r) reps=$OPTARG ;; s) paths=$OPTARG ;; n) write=0 ;; B) build=0 ;; I) install=0 ;;
        *) sed -n '2,36p' "$0"; exit 2 ;;
    esac
done
tb_positive "-t and -r" "$secs" "$reps"
IFS=, read -r -a want <<<"$paths"
for p in "${want[@]}"; do
    case $p in vswitchd | boringtun-1 | boringtun-4 | underlay) ;; *) tb_die "unknown path $p (vswitchd, boringtun-1, boringtun-4, underlay)" ;; esac
done
tb_need_root

tb_bench_scratch e2e-tunnel

has() { local p; for p in "${want[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }
drop_path() { local p keep=(); for p in "${want[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; want=("${keep[@]}"); }

# ---- dependencies (not counted by the watchdog) ---------------------------------------------
tb_apt iperf3=iperf3 ping=iputils-ping python3=python3 ip=iproute2 ss=iproute2
tools=${VSWITCH_BENCH_TOOLS:-/var/tmp/vswitch-bench-tools}
boringtun=$tools/bin/boringtun-cli
bt_note=
if has boringtun-1 || has boringtun-4; then
    if ! command -v wg >/dev/null && [ $install = 1 ]; then
        tb_log "installing wireguard-tools (for wg)"
        { tb_apt_get -qq update && tb_apt_get install -y -qq wireguard-tools; } >/dev/null 2>&1 || true
    fi
    if [ ! -x "$boringtun" ] && [ $install = 1 ] && command -v cargo >/dev/null; then
        tb_log "installing boringtun-cli into $tools (once; cargo install --root $tools boringtun-cli, log in $tools/install.log)"
        mkdir -p "$tools"
        (cd "$tools" && { cargo install --locked --root "$tools" boringtun-cli || cargo install --root "$tools" boringtun-cli; }) \
            >"$tools/install.log" 2>&1 || true
    fi
    if ! command -v wg >/dev/null; then
        bt_note="boringtun NOT measured: \`wg\` (wireguard-tools) is missing and could not be installed"
    elif [ ! -x "$boringtun" ]; then
        bt_note="boringtun NOT measured: boringtun-cli is not in $tools/bin and \`cargo install --root $tools boringtun-cli\` failed (see $tools/install.log)"
    fi
    if [ -n "$bt_note" ]; then
        tb_log "$bt_note: measuring vswitchd only"
        drop_path boringtun-1
        drop_path boringtun-4
    fi
fi
bin=$TB_ROOT/target/release
if [ $build = 1 ] && has vswitchd; then
    tb_log "building vswitchd (release)"
    bin=$(tb_build release)
fi
if has vswitchd || has underlay; then
    [ -x "$bin/vswitchd" ] && [ -x "$bin/vswitchctl" ] || tb_die "no $bin/vswitchd: build it first"
fi
rev=$(git -C "$TB_ROOT" describe --always --dirty 2>/dev/null || echo unknown)

# Bound the run from here: setup, REPS x paths x (SECONDS + overhead), pings, report.
limit=$((${#want[@]} * reps * (secs + 8) + ${#want[@]} * (20 + rtt_count / 100 + 5) + 60))
tb_bench_watchdog e2e-tunnel "$limit"

hz=$(getconf CLK_TCK)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
awk '{ exit !($1 > 0.5) }' /proc/loadavg && tb_log "warning: load average is $load_start before the run; other work on these cores skews every figure"
tag="vt$$"            # every namespace and interface name this run makes starts with it

# ---- helpers --------------------------------------------------------------------------------
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
now_ns() { date +%s%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# udp NETNS: "RcvbufErrors SndbufErrors OutDatagrams" of that namespace's UDP counters.
udp() { ip netns exec "$1" awk '/^Udp:/ { n++; if (n == 1) for (i = 2; i <= NF; i++) h[$i] = i; else print $h["RcvbufErrors"], $h["SndbufErrors"], $h["OutDatagrams"] }' /proc/net/snmp; }

declare -A S R    # S[path,key]: setup (hA hB ca cb ip pidA pidB sockA sockB desc mtu); R: results
port=51820

# Two host namespaces joined by a veth pair: 10.220.K.1 <-> 10.220.K.2, MTU 1500.
hosts() {
    local p=$1 k=$2
    S[$p,hA]=$tag-$k-hA S[$p,hB]=$tag-$k-hB S[$p,ulA]=10.220.$k.1 S[$p,ulB]=10.220.$k.2
    tb_netns "${S[$p,hA]}"
    tb_netns "${S[$p,hB]}"
    tb_veth_pair "${S[$p,hA]}" ul "${S[$p,ulA]}/24" "${S[$p,hB]}" ul "${S[$p,ulB]}/24"
}

# ---- vswitchd --------------------------------------------------------------------------------
setup_vswitchd() {
    local p=vswitchd h k
    tb_log "vswitchd: a daemon per host (--listen), overlay network, one container per host"
    hosts $p 1
    S[$p,ca]=$tag-1-a S[$p,cb]=$tag-1-b
    tb_netns "${S[$p,ca]}"
    tb_netns "${S[$p,cb]}"
    for h in A B; do
        mkdir -p "$run/vs$h/bin"
        # tb_daemon runs BIN/vswitchd: this one enters the host namespace first (exec keeps the pid).
        printf '#!/bin/sh\nexec ip netns exec %s %s/vswitchd "$@"\n' "${S[$p,h$h]}" "$bin" >"$run/vs$h/bin/vswitchd"
        chmod +x "$run/vs$h/bin/vswitchd"
        S[$p,sock$h]=$run/vs$h/vswitchd.sock
        tb_daemon "$run/vs$h/bin" "${S[$p,sock$h]}" --listen "${S[$p,ul$h]}:$port" --dns-upstream none --log-level warn \
            2>>"$run/vswitchd-$h.log"
        S[$p,pid$h]=$!
        [ "$(cat "/proc/${S[$p,pid$h]}/comm" 2>/dev/null)" = vswitchd ] || tb_die "cannot find the pid of vswitchd $h"
    done
    vctl() { local h=$1; shift; "$bin/vswitchctl" --socket "${S[vswitchd,sock$h]}" "$@"; }
    vctl A network create ov --subnet 10.231.1.0/24 --ip-range 10.231.1.0/25 --overlay >/dev/null
    vctl B network create ov --subnet 10.231.1.0/24 --ip-range 10.231.1.128/25 --overlay >/dev/null
    vctl A attach ov --netns "/run/netns/${S[$p,ca]}" --name a --ip 10.231.1.2 >/dev/null
    vctl B attach ov --netns "/run/netns/${S[$p,cb]}" --name b --ip 10.231.1.130 >/dev/null
    S[$p,ip]=10.231.1.130
    for h in A B; do
        k=$(vctl "$h" --json key show | python3 -c 'import json,sys; print(json.load(sys.stdin)["public_key"])')
        S[$p,key$h]=$k
    done
    vctl A peer add "${S[$p,keyB]}" --endpoint "${S[$p,ulB]}:$port" --network ov >/dev/null
    vctl B peer add "${S[$p,keyA]}" --endpoint "${S[$p,ulA]}:$port" --network ov >/dev/null
    S[$p,mtu]=$(ip -n "${S[$p,ca]}" link show eth0 | awk '{ for (i = 1; i < NF; i++) if ($i == "mtu") { print $(i + 1); exit } }')
    S[$p,desc]="vswitchd --listen, --overlay network (container TAP with TSO → vswitchd segments, seals in place → UDP GSO; receive: GRO read, opened, segments coalesced into one TAP write)"
}
# vs_drops: every non-zero drop counter of vswitchd A and B (peers and ports), as JSON.
vs_drops() {
    local h
    for h in A B; do
        echo "$h $("$bin/vswitchctl" --socket "${S[vswitchd,sock$h]}" --json peer ls | tr -d '\n')"
        echo "$h $("$bin/vswitchctl" --socket "${S[vswitchd,sock$h]}" --json port ls | tr -d '\n')"
    done | python3 -c '
import json, sys
tot = {}
for line in sys.stdin:
    h, js = line.split(" ", 1)
    for item in json.loads(js):
        who = item.get("name") or "peer"
        for reason, n in item.get("drops", {}).items():
            if n:
                key = "%s/%s:%s" % (h, who, reason)
                tot[key] = tot.get(key, 0) + n
print(json.dumps(tot))'
}
# vs_offloads: software segmentation and coalescing counters of vswitchd A and B, as JSON:
# super-frames segmented towards the tunnel and the datagrams sent there, coalesced super-frames
# written to TAPs and all TAP writes.
vs_offloads() {
    local h
    for h in A B; do
        echo "$h $("$bin/vswitchctl" --socket "${S[vswitchd,sock$h]}" --json port ls | tr -d '\n')"
    done | python3 -c '
import json, sys
tot = {}
for line in sys.stdin:
    h, js = line.split(" ", 1)
    for p in json.loads(js):
        for field, kind in (("segmented", "tunnel"), ("tx_packets", "tunnel"), ("coalesced", "tap"), ("tx_packets", "tap")):
            if p.get("kind") == kind:
                key = "%s %s %s" % (h, kind, field)
                tot[key] = tot.get(key, 0) + p.get(field, 0)
print(json.dumps(tot))'
}
offloads_delta() {
    python3 -c '
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
d = {k: b[k] - a.get(k, 0) for k in b}
print("host A cut %d TCP super-frames into segments for the tunnel (%d datagrams sent); host B wrote %d coalesced super-frames to its TAP (%d TAP writes in all)" % (
    d.get("A tunnel segmented", 0), d.get("A tunnel tx_packets", 0), d.get("B tap coalesced", 0), d.get("B tap tx_packets", 0)))' "$1" "$2"
}
drops_delta() {
    python3 -c '
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
d = {k: v - a.get(k, 0) for k, v in b.items() if v - a.get(k, 0)}
print(", ".join("%s %d" % kv for kv in sorted(d.items())) or "none")' "$1" "$2"
}

# ---- boringtun -------------------------------------------------------------------------------
setup_boringtun() {
    local p=$1 k threads=$2 h o targs=() i
    [ "$p" = boringtun-1 ] && k=2 || k=3
    [ -n "$threads" ] && targs=(--threads "$threads")
    tb_log "$p: boringtun-cli ${targs[*]:---threads default} per host, configured with wg; containers behind a kernel bridge, routed to the TUN"
    hosts "$p" "$k"
    S[$p,ca]=$tag-$k-a S[$p,cb]=$tag-$k-b
    tb_netns "${S[$p,ca]}"
    tb_netns "${S[$p,cb]}"
    mkdir -p /var/run/wireguard
    for h in A B; do
        (umask 077 && wg genkey >"$run/$p-$h.key")
        S[$p,key$h]=$(wg pubkey <"$run/$p-$h.key")
    done
    for h in A B; do
        local hn=${S[$p,h$h]} c=${S[$p,c${h,,}]} lan wgif=${tag}w$k$h
        [ "$h" = A ] && { o=B; lan=10.233.$k; } || { o=A; lan=10.234.$k; }
        local olan
        [ "$o" = A ] && olan=10.233.$k || olan=10.234.$k
        ip netns exec "$hn" sysctl -qw net.ipv4.ip_forward=1
        # The container: a veth on the host's bridge, MTU 1420 like the wg interface.
        ip -n "$hn" link add br0 type bridge
        ip -n "$hn" addr add "$lan.1/24" dev br0
        ip -n "$hn" link set br0 up
        ip -n "$hn" link add p1 type veth peer name eth0 netns "$c"
        ip -n "$hn" link set p1 mtu 1420 master br0 up
        ip -n "$c" link set eth0 mtu 1420 up
        ip -n "$c" addr add "$lan.2/24" dev eth0
        ip -n "$c" route add default via "$lan.1"
        # boringtun in the host namespace: its TUN appears there, its UAPI socket in /var/run/wireguard.
        ip netns exec "$hn" "$boringtun" --foreground "${targs[@]}" --disable-drop-privileges --log "$run/$p-$h.log" "$wgif" \
            >>"$run/$p-$h.log" 2>&1 &
        S[$p,pid$h]=$!
        tb_undo "kill ${S[$p,pid$h]}; wait ${S[$p,pid$h]}; rm -f '/var/run/wireguard/$wgif.sock'"
        for i in $(seq 100); do [ -S "/var/run/wireguard/$wgif.sock" ] && break; sleep 0.05; done
        [ -S "/var/run/wireguard/$wgif.sock" ] || tb_die "boringtun-cli did not start in $hn: $(tail -3 "$run/$p-$h.log")"
        [ "$(cat "/proc/${S[$p,pid$h]}/comm" 2>/dev/null)" = boringtun-cli ] || tb_die "cannot find the pid of boringtun-cli $h"
        ip netns exec "$hn" wg set "$wgif" private-key "$run/$p-$h.key" listen-port $port \
            peer "${S[$p,key$o]}" allowed-ips "10.232.$k.0/24,$olan.0/24" endpoint "${S[$p,ul$o]}:$port"
        ip -n "$hn" addr add "10.232.$k.$([ "$h" = A ] && echo 1 || echo 2)/24" dev "$wgif"
        ip -n "$hn" link set "$wgif" mtu 1420 up
        ip -n "$hn" route add "$olan.0/24" dev "$wgif"
    done
    S[$p,ip]=10.234.$k.2 S[$p,mtu]=1420
    S[$p,desc]="boringtun-cli $("$boringtun" --version | awk '{ print $2 }') ${targs[*]:---threads 4 (default)} + wg (container veth → bridge → route → TUN → boringtun → UDP)"
}

# ---- underlay (reference) --------------------------------------------------------------------
setup_underlay() {
    local p=underlay
    tb_log "underlay: iperf3 between two host namespaces over the bare veth (reference)"
    hosts $p 4
    S[$p,ca]=${S[$p,hA]} S[$p,cb]=${S[$p,hB]} S[$p,ip]=${S[$p,ulB]} S[$p,mtu]=1500 S[$p,pidA]='' S[$p,pidB]=''
    S[$p,desc]="underlay veth alone, host to host, no tunnel (reference)"
}

# serve PATH: an iperf3 server in the path's container B, stopped on exit; then ping through.
serve() {
    local p=$1 i
    tb_iperf3_server "${S[$p,cb]}" "${S[$p,ip]}" "$run/iperf3-$p.log"
    for i in $(seq 10); do
        ip netns exec "${S[$p,ca]}" ping -c 1 -W 1 "${S[$p,ip]}" >/dev/null 2>&1 && return 0
    done
    tb_die "$p: ${S[$p,ca]} cannot reach ${S[$p,ip]}"
}

for p in "${want[@]}"; do
    case $p in
        vswitchd) setup_vswitchd ;;
        boringtun-1) setup_boringtun boringtun-1 1 ;;
        boringtun-4) setup_boringtun boringtun-4 "" ;;
        underlay) setup_underlay ;;
    esac
    serve "$p"
done

tb_log "RTT: $rtt_count pings one every 0.01 s, container A -> container B, idle"
for p in "${want[@]}"; do
    read -r R[$p,rtt] R[$p,p50] R[$p,p99] R[$p,lost] <<<"$(tb_rtt_series "${S[$p,ca]}" "${S[$p,ip]}" "$rtt_count" 0.01 "$run/rtt-$p")"
done

# iperf_once PATH: prints "GBIT RETRANSMITS CPU_A CPU_B RCVBUF_ERRORS DATAGRAMS_SENT".
iperf_once() {
    local p=$1 t0 t1 a0 a1 b0 b1 json u0 u1 cpua=- cpub=-
    [ -n "${S[$p,pidA]}" ] && { a0=$(cpu_ticks "${S[$p,pidA]}"); b0=$(cpu_ticks "${S[$p,pidB]}"); }
    u0="$(udp "${S[$p,hA]}") $(udp "${S[$p,hB]}")"
    t0=$(now_ns)
    json=$(ip netns exec "${S[$p,ca]}" timeout $((secs + 20)) iperf3 -c "${S[$p,ip]}" -t "$secs" -J --connect-timeout 3000) \
        || { echo "iperf3 failed ($p): ${json:0:400}" >&2; echo "0 0 - - 0 0"; return; }
    t1=$(now_ns)
    u1="$(udp "${S[$p,hA]}") $(udp "${S[$p,hB]}")"
    if [ -n "${S[$p,pidA]}" ]; then
        a1=$(cpu_ticks "${S[$p,pidA]}") b1=$(cpu_ticks "${S[$p,pidB]}")
        cpua=$(awk -v d=$((a1 - a0)) -v hz="$hz" -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f", 100 * d / hz / (ns / 1e9) }')
        cpub=$(awk -v d=$((b1 - b0)) -v hz="$hz" -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f", 100 * d / hz / (ns / 1e9) }')
    fi
    # u: rcvbufA sndbufA outA rcvbufB sndbufB outB
    local udpd
    udpd=$(awk -v a="$u0" -v b="$u1" 'BEGIN { split(a, x); split(b, y); printf "%d %d", (y[1] - x[1]) + (y[4] - x[4]) + (y[2] - x[2]) + (y[5] - x[5]), (y[3] - x[3]) + (y[6] - x[6]) }')
    python3 -c '
import json, sys
e = json.load(sys.stdin)["end"]
print("%.3f %d" % (e["sum_received"]["bits_per_second"] / 1e9, e["sum_sent"].get("retransmits", 0)), end=" ")' <<<"$json"
    echo "$cpua $cpub $udpd"
}

declare -A G RT CA CB UD UO
has vswitchd && vs_before=$(vs_drops) && vs_off_before=$(vs_offloads)
tb_log "throughput: $reps x ${secs} s per path, 1 TCP stream, container A -> container B"
for i in $(seq "$reps"); do
    for p in "${want[@]}"; do
        read -r g rt ca cb ud uo <<<"$(iperf_once "$p")"
        G[$p]+="$g " RT[$p]+="$rt " CA[$p]+="$ca " CB[$p]+="$cb " UD[$p]+="$ud " UO[$p]+="$uo "
        printf '  run %d  %-12s %7s Gbit/s  retr %6s  cpu A %4s %%  B %4s %%  udp drops %6s of %s datagrams\n' \
            "$i" "$p" "$g" "$rt" "$ca" "$cb" "$ud" "$uo" >&2
    done
done
has vswitchd && R[vswitchd,drops]=$(drops_delta "$vs_before" "$(vs_drops)") && R[vswitchd,offloads]=$(offloads_delta "$vs_off_before" "$(vs_offloads)")
died=
for p in "${want[@]}"; do
    for h in A B; do
        if [ -n "${S[$p,pid$h]}" ] && ! kill -0 "${S[$p,pid$h]}" 2>/dev/null; then
            died+="$p host $h daemon exited during the run; "
            tb_log "warning: the daemon of $p on host $h is gone"
        fi
    done
done
# shellcheck disable=SC2086
for p in "${want[@]}"; do
    R[$p,g]=$(median ${G[$p]}) R[$p,rt]=$(median ${RT[$p]})
    R[$p,udp]=$(median ${UD[$p]}) R[$p,out]=$(median ${UO[$p]})
    if [ -n "${S[$p,pidA]}" ]; then R[$p,ca]=$(median ${CA[$p]}) R[$p,cb]=$(median ${CB[$p]}); else R[$p,ca]=kernel R[$p,cb]=kernel; fi
    R[$p,runs]=${G[$p]% } R[$p,runs]=${R[$p,runs]// /, }
done

# ---- report ---------------------------------------------------------------------------------
kernel=$(uname -r)
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
report=$run/report.md
{
    echo "## Encrypted tunnel, container to container across two hosts: $(date -u +%Y-%m-%d), kernel $kernel"
    echo
    echo "Command: \`sudo $cmdline\` (vswitchd release build of \`$rev\`, iperf3 $(iperf3 --version | awk 'NR == 1 { print $2 }'),"
    echo "${secs} s per run, median of $reps, paths taking turns in each round; $(nproc) vCPU $cpu_model; both \"hosts\","
    echo "both daemons, iperf3 client and server share the same cores). Each \"host\" is a network namespace; the"
    echo "two are joined by a veth pair (the underlay, MTU 1500); each path has its own pair of hosts and one"
    echo "container per host. TCP, 1 stream, container on host A → container on host B, MTU as each tunnel sets it."
    echo "CPU = utime+stime of each host's daemon process (all threads) over the run, % of one core (median);"
    echo "UDP drops = datagrams the kernel dropped in both host namespaces for a full socket buffer"
    echo "(/proc/net/snmp RcvbufErrors + SndbufErrors), median per run, of the datagrams sent. Load average before"
    echo "the run $load_start, after $(cut -d' ' -f1-3 /proc/loadavg). Socket buffers: vswitchd asks for 8 MiB"
    echo "(SO_RCVBUFFORCE); boringtun keeps the kernel default ($(cat /proc/sys/net/core/rmem_default) bytes)."
    for p in "${want[@]}"; do echo "- **$p**: ${S[$p,desc]}"; done
    [ -n "$bt_note" ] && echo "- $bt_note"
    [ -n "$died" ] && echo "- **FAILURE**: $died"
    echo
    echo "| path | MTU | Gbit/s (runs) | TCP retransmits | RTT ms mean / p50 / p99 (lost) | CPU % host A | CPU % host B | UDP drops / datagrams |"
    echo "|---|---|---|---|---|---|---|---|"
    for p in "${want[@]}"; do
        printf '| %s | %s | **%s** (%s) | %s | %s / %s / %s (%s) | %s | %s | %s / %s |\n' "$p" "${S[$p,mtu]}" "${R[$p,g]}" "${R[$p,runs]}" "${R[$p,rt]}" \
            "${R[$p,rtt]:-?}" "${R[$p,p50]:-?}" "${R[$p,p99]:-?}" "${R[$p,lost]:-?}" "${R[$p,ca]}" "${R[$p,cb]}" "${R[$p,udp]}" "${R[$p,out]}"
    done
    echo
    if has vswitchd; then
        echo "vswitchd's own drop counters over all runs (\`vswitchctl peer ls\` and \`port ls\`, both hosts): ${R[vswitchd,drops]}."
        echo
        echo "vswitchd's software offloads over all runs (\`vswitchctl port ls\`): ${R[vswitchd,offloads]}."
        echo
    fi
    if has vswitchd && { has boringtun-1 || has boringtun-4; }; then
        echo "| ratio | Gbit/s | RTT mean | RTT p50 | RTT p99 |"
        echo "|---|---|---|---|---|"
        for b in boringtun-1 boringtun-4; do
            has "$b" || continue
            printf '| vswitchd / %s | %s× | %s× | %s× | %s× |\n' "$b" "$(tb_ratio "${R[vswitchd,g]}" "${R[$b,g]}")" "$(tb_ratio "${R[vswitchd,rtt]}" "${R[$b,rtt]}")" \
                "$(tb_ratio "${R[vswitchd,p50]}" "${R[$b,p50]}")" "$(tb_ratio "${R[vswitchd,p99]}" "${R[$b,p99]}")"
        done
        echo
    fi
    if has vswitchd; then
        if has boringtun-1; then
            r=$(tb_ratio "${R[vswitchd,g]}" "${R[boringtun-1,g]}")
            verdict=$(awk -v r="$r" 'BEGIN { if (r == "n/a") print "not measured"; else if (r + 0 >= 5) print "met"; else print "NOT met" }')
            echo "Goal (PEERS.md): container↔container ≥ 5× boringtun with 1 thread: ${r}× → **$verdict**."
        else
            echo "Goal (PEERS.md): container↔container ≥ 5× boringtun with 1 thread: **not measured** (no boringtun in this run)."
        fi
    fi
} >"$report"
tb_report "$report" "$write"
