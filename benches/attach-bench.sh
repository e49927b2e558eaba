#!/usr/bin/env bash
# attach-bench.sh: how long attaching a container takes, in-process (vswitchd's API) against the
# same steps done with `ip` commands, and 1 000 containers attached in a row.
#
#   sudo benches/attach-bench.sh [-n COUNT] [-s SINGLES] [-x] [-B]
#     -n COUNT     containers attached in a row (default 1000; at most 1021: one /22)
#     -s SINGLES   attaches per variant for the one-attach figures, medians reported (default 30)
#     -x           do not write benches/RESULTS.md (print only)
#     -B           do not build (use target/release as it is)
#
# One attach = a TAP named eth0 inside an EXISTING namespace, with MAC, MTU 1500, link up, an
# address and a default route. `ip netns add` is EXCLUDED from every variant: all namespaces are
# created beforehand (in one `ip -batch`), and the cost of one `ip netns add` is printed apart.
#   vswitchd API        POST /v1/networks/NET/endpoints on one kept-alive connection
#                       (benches/src/bin/attach-timer.rs): the daemon's whole attach plus one
#                       local round trip, no client start-up
#   vswitchctl attach   the same through the CLI: one process start per attach
#   curl --unix-socket  the same through curl
#   ip x6               ip tuntap add; link set address; link set mtu; link set up; addr add;
#                       route add (the usual script: one process per step)
#   ip x4               ip tuntap add; link set address+mtu+up; addr add; route add
#   ip -batch           the same steps in one ip process
# The `ip` variants leave a persistent TAP that no process has open; vswitchd also keeps the fd
# and registers it with its datapath, so it does strictly more.
#
# Then COUNT containers in a row, four rounds on the same namespaces (each on a new /22 network,
# all detached in between, detach timed too): vswitchctl and the kept-alive API connection, with
# the namespaces' IPv6 on (as `ip netns add` makes them), then with IPv6 disabled in them.
# Namespace creation and the sysctl are not timed.
# Everything made here (up to COUNT + 6 x SINGLES namespaces, the daemon) is removed on exit.
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"

count=1000 singles=30 write=1 build=1
cmdline="benches/attach-bench.sh${*:+ $*}"
while getopts "n:s:xBh" o; do
    case $o in
        n) count=$OPTARG ;; s) singles=$OPTARG ;; x) write=0 ;; B) build=0 ;;
        *) sed -n '2,29p' "$0"; exit 2 ;;
    esac
done
[[ $count =~ ^[0-9]+$ && $count -ge 1 && $count -le 1021 ]] || tb_die "-n takes 1..1021"
[[ $singles =~ ^[0-9]+$ && $singles -ge 1 && $singles -le 300 ]] || tb_die "-s takes 1..300"
tb_need_root

tb_bench_scratch attach-bench
limit=$((300 + count / 5))
tb_bench_watchdog attach-bench "$limit"

tb_apt ip=iproute2 curl=curl
tb_release_bins "$build" attach-timer
git_rev=$(git -C "$TB_ROOT" describe --always --dirty 2>/dev/null || echo unknown)

tag="vsba$$"
sock=$run/vswitchd.sock
ctl() { "$bin/vswitchctl" --socket "$sock" "$@"; }

# ---- namespaces: made before any timing, deleted on exit --------------------------------------
variants=(api ctl curl ip6 ip4 ipb)
names() { local v=$1 n=$2 i; for ((i = 1; i <= n; i++)); do echo "$tag-$v$i"; done; }
: >"$run/all"
for v in "${variants[@]}"; do names "$v" "$singles" >"$run/ns-$v"; done
names k "$count" >"$run/ns-k"
cat "$run"/ns-* >"$run/all"
sed 's/^/netns del /' "$run/all" >"$run/del.batch"
tb_undo "ip -force -batch '$run/del.batch'"
# One `ip netns add` per process for the ip variants' first namespaces, to show what it costs;
# everything else in one batch.
: >"$run/t-netnsadd"
while read -r ns; do
    t0=$EPOCHREALTIME; ip netns add "$ns"; t1=$EPOCHREALTIME
    echo "$t0 $t1" >>"$run/t-netnsadd"
done <"$run/ns-ip6"
tb_log "creating $(($(wc -l <"$run/all") - singles)) more namespaces (ip -batch, not timed)"
grep -vxFf "$run/ns-ip6" "$run/all" | sed 's/^/netns add /' >"$run/add.batch"
ip -batch "$run/add.batch" || tb_die "cannot create the namespaces"

# ---- the daemon -------------------------------------------------------------------------------
# The netns thread logs each attach's own duration at debug level (elapsed_us).
NO_COLOR=1 tb_daemon "$bin" "$sock" --log-level warn,vswitch::sys::netns=debug "${vsd_args[@]}" 2>"$run/vswitchd.log"
pid=$!
[ "$(cat /proc/$pid/comm 2>/dev/null)" = vswitchd ] || tb_die "cannot find the vswitchd pid"
# Undone before the daemon stops: deleting the namespaces removes their TAPs in a few kernel
# batches; the daemon closing them one by one costs a netdev unregister each (slow, see detach).
tb_undo "ip -force -batch '$run/del.batch'"
ctl network create single --subnet 10.240.0.0/22 >/dev/null

# stats FILE: "median mean total n" in ms from lines "t0 t1" (seconds) or "ms". (mawk: no asort)
stats() {
    awk '{ printf "%.6f\n", (NF == 2) ? ($2 - $1) * 1000 : $1 }' "$1" | sort -g |
        awk '{ v[NR] = $1; s += $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
               printf "%.3f %.3f %.3f %d\n", m, s / NR, s, NR }'
}
# first/last 100 mean in ms from lines "t0 t1" (seconds) or "ms".
firstlast() {
    awk '{ d[NR] = (NF == 2) ? ($2 - $1) * 1000 : $1 } END { k = (NR < 100) ? NR : 100
          for (i = 1; i <= k; i++) { f += d[i]; l += d[NR - k + i] } printf "%.3f %.3f\n", f / k, l / k }' "$1"
}
log_mark() { wc -l <"$run/vswitchd.log"; }
# netns_thread_ms FROM_LINE: median of the netns thread's elapsed_us since that log line, in ms.
netns_thread_ms() {
    tail -n +"$(($1 + 1))" "$run/vswitchd.log" | sed 's/\x1b\[[0-9;]*m//g' | sed -n 's/.*attached TAP.*elapsed_us=\([0-9]*\).*/\1/p' | sort -g |
        awk '{ v[NR] = $1 / 1000 } END { if (!NR) { print "-"; exit } printf "%.3f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
mac_of() { printf '02:42:0a:f1:%02x:%02x' $(($1 / 256)) $(($1 % 256)); }

# ---- one attach, each variant -----------------------------------------------------------------
tb_log "one attach: $singles of each variant"
mark=$(log_mark)
"$bin/attach-timer" --socket "$sock" --network single --names "$run/ns-api" --times "$run/t-api" >/dev/null
api_netns_ms=$(netns_thread_ms "$mark")
: >"$run/t-ctl"
while read -r ns; do
    t0=$EPOCHREALTIME; ctl attach single --netns "/run/netns/$ns" --name "$ns" >/dev/null; t1=$EPOCHREALTIME
    echo "$t0 $t1" >>"$run/t-ctl"
done <"$run/ns-ctl"
: >"$run/t-curl"
while read -r ns; do
    t0=$EPOCHREALTIME
    code=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$sock" -X POST -H 'Content-Type: application/json' \
        -d "{\"netns\":\"/run/netns/$ns\",\"name\":\"$ns\"}" http://localhost/v1/networks/single/endpoints)
    t1=$EPOCHREALTIME
    [ "$code" = 201 ] || tb_die "curl attach $ns: HTTP $code"
    echo "$t0 $t1" >>"$run/t-curl"
done <"$run/ns-curl"
# The ip variants: 10.241.0.0/22, gateway 10.241.0.1, in their own namespaces.
i=0
for v in ip6 ip4 ipb; do
    : >"$run/t-$v"
    while read -r ns; do
        i=$((i + 1))
        a="10.241.$((i / 250)).$((i % 250 + 2))" mac=$(mac_of "$i")
        t0=$EPOCHREALTIME
        case $v in
            ip6)
                ip -n "$ns" tuntap add dev eth0 mode tap vnet_hdr
                ip -n "$ns" link set eth0 address "$mac"
                ip -n "$ns" link set eth0 mtu 1500
                ip -n "$ns" link set eth0 up
                ip -n "$ns" addr add "$a/22" dev eth0
                ip -n "$ns" route add default via 10.241.0.1
                ;;
            ip4)
                ip -n "$ns" tuntap add dev eth0 mode tap vnet_hdr
                ip -n "$ns" link set eth0 address "$mac" mtu 1500 up
                ip -n "$ns" addr add "$a/22" dev eth0
                ip -n "$ns" route add default via 10.241.0.1
                ;;
            ipb)
                ip -n "$ns" -batch - <<EOF
tuntap add dev eth0 mode tap vnet_hdr
link set eth0 address $mac mtu 1500 up
addr add $a/22 dev eth0
route add default via 10.241.0.1
EOF
                ;;
        esac
        t1=$EPOCHREALTIME
        echo "$t0 $t1" >>"$run/t-$v"
    done <"$run/ns-$v"
done
# Each variant must have produced a working interface: check one of each.
for v in "${variants[@]}"; do
    ns=$(head -1 "$run/ns-$v")
    ip -n "$ns" -4 route show default | grep -q . || tb_die "variant $v: no default route in $ns"
    ip -n "$ns" link show eth0 | grep -q 'mtu 1500' || tb_die "variant $v: eth0 missing in $ns"
done

# ---- COUNT in a row -----------------------------------------------------------------------------
# Four rounds on the same COUNT namespaces, each on a fresh network, all detached in between:
#   IPv6 on (what `ip netns add` gives): vswitchctl, then the kept-alive API connection;
#   IPv6 off in every namespace (sysctl disable_ipv6, as Docker does on IPv4-only networks):
#   the same two. A new interface with IPv6 sends MLD reports, a DAD neighbour solicitation and
#   router solicitations: multicast, which the switch floods to every other port of the network.
kv() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }
# tx_sum NETWORK: frames the switch wrote to the TAPs of NETWORK so far.
tx_sum() {
    ctl --json port ls | python3 -c "import json,sys; print(sum(p['tx_packets'] for p in json.load(sys.stdin) if p['network'] == '$1' and p['kind'] == 'tap'))"
}
declare -A K
# round ID NETWORK SUBNET ctl|api
round() {
    local id=$1 net=$2 subnet=$3 how=$4 mark T0 T1 out wb0
    ctl network create "$net" --subnet "$subnet" >/dev/null
    tb_log "round $id: $count attaches in a row, $how"
    mark=$(log_mark)
    wb0=$(awk '/^write_bytes/ { print $2 }' "/proc/$pid/io")
    if [ "$how" = ctl ]; then
        : >"$run/t-$id"
        T0=$EPOCHREALTIME
        while read -r ns; do
            t0=$EPOCHREALTIME; ctl attach "$net" --netns "/run/netns/$ns" --name "$ns" >/dev/null; t1=$EPOCHREALTIME
            echo "$t0 $t1" >>"$run/t-$id"
        done <"$run/ns-k"
        T1=$EPOCHREALTIME
        K[$id,total]=$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.3f", b - a }')
    else
        out=$("$bin/attach-timer" --socket "$sock" --network "$net" --names "$run/ns-k" --times "$run/t-$id")
        K[$id,total]=$(printf '%.3f' "$(kv total_s "$out")")
    fi
    K[$id,netns]=$(netns_thread_ms "$mark")
    local m a f l
    read -r m a _ _ < <(stats "$run/t-$id")
    read -r f l < <(firstlast "$run/t-$id")
    K[$id,median]=$m K[$id,mean]=$a K[$id,first]=$f K[$id,last]=$l
    [ "$(ctl --json network inspect "$net" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["endpoint_list"]))')" = "$count" ] \
        || tb_die "network $net does not hold $count endpoints"
    K[$id,tx]=$(tx_sum "$net")
    K[$id,rss]=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
    K[$id,wbytes]=$(awk -v b="$wb0" '/^write_bytes/ { printf "%.1f", ($2 - b) / 1048576 }' "/proc/$pid/io")
    K[$id,state]=$(find "$run/state" -maxdepth 1 -name '*.json' -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { printf "%d", s / 1024 }')
    tb_log "round $id: ${K[$id,total]} s; detaching all $count"
    out=$("$bin/attach-timer" --socket "$sock" --network "$net" --detach --names "$run/ns-k")
    K[$id,dtotal]=$(printf '%.3f' "$(kv total_s "$out")") K[$id,dmedian]=$(kv median_ms "$out")
}
round v6ctl k 10.244.0.0/22 ctl
round v6api k2 10.248.0.0/22 api
tb_log "disabling IPv6 in the $count namespaces (not timed)"
while read -r ns; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done <"$run/ns-k"
round v4ctl k3 10.252.0.0/22 ctl
round v4api k4 10.216.0.0/22 api

# ---- report -------------------------------------------------------------------------------------
read -r m_api _ _ _ < <(stats "$run/t-api")
row() { # label file [netns-thread]
    local m a
    read -r m a _ _ < <(stats "$2")
    printf '| %s | %s | %s | %s |\n' "$1" "$m" "$a" "${3:--}"
}
krow() { # label id
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "${K[$2,total]}" "${K[$2,mean]}" "${K[$2,median]}" \
        "${K[$2,first]}" "${K[$2,last]}" "${K[$2,netns]}" "${K[$2,tx]}" "${K[$2,wbytes]}" "${K[$2,state]}" "${K[$2,dtotal]} s (median ${K[$2,dmedian]} ms)"
}
met() { awk -v t="$1" -v lim="$2" 'BEGIN { print (t + 0 < lim) ? "met" : "NOT met" }'; }
report=$run/report.md
{
    echo "## Attach: $(date -u +%Y-%m-%d), kernel $(uname -r)"
    echo
    echo "Command: \`sudo $cmdline\` (vswitchd release build of \`$git_rev\`, state dir on $(df --output=fstype "$run" | tail -1);"
    echo "$(nproc) vCPU $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(ip -V | sed 's/.*iproute2-\([^,]*\).*/iproute2 \1/'),"
    echo "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)). One attach = TAP eth0 in an existing namespace + MAC, MTU 1500, up,"
    echo "address, default route. \`ip netns add\` is excluded from every row (namespaces made beforehand);"
    echo "alone it costs $(stats "$run/t-netnsadd" | awk '{ print $1 }') ms (median, one \`ip\` process). Medians and means over $singles attaches each."
    echo
    echo "| one attach | median ms | mean ms | of which netns thread (TAP + netlink), median ms |"
    echo "|---|---|---|---|"
    row "vswitchd API, kept-alive connection (attach-timer)" "$run/t-api" "$api_netns_ms"
    row "vswitchctl attach (a process per attach)" "$run/t-ctl"
    row "curl --unix-socket" "$run/t-curl"
    row "ip x6 (tuntap add; link set address; mtu; up; addr add; route add)" "$run/t-ip6"
    row "ip x4 (tuntap add; link set address mtu up; addr add; route add)" "$run/t-ip4"
    row "ip -batch, one process, same 4 steps" "$run/t-ipb"
    echo
    echo "$count containers attached in a row to one /22 network (times in ms unless said; \"frames written\" = frames"
    echo "the switch wrote to the network's TAPs during the round, almost all of them floods of the new interfaces'"
    echo "IPv6 multicast; state written = the daemon's write_bytes (/proc/PID/io) during the round, i.e. its state"
    echo "file rewritten on every change; state file = its size at the end of the round; detach = all $count"
    echo "detached afterwards through the API):"
    echo
    echo "| $count in a row | total s | mean | median | first 100 mean | last 100 mean | netns thread median | frames written | state written MiB | state file KiB | detach $count |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    krow "vswitchctl attach, IPv6 on in the namespaces" v6ctl
    krow "API kept-alive, IPv6 on" v6api
    krow "vswitchctl attach, IPv6 off (disable_ipv6)" v4ctl
    krow "API kept-alive, IPv6 off" v4api
    echo
    echo "vswitchd RSS with $count attached: $((K[v4api,rss] / 1024)) MiB (${K[v4api,rss]} KiB)."
    echo
    echo "Goals: one attach ≤ 1.5 ms in-process: API median $m_api ms → $(awk -v m="$m_api" 'BEGIN { print (m <= 1.5) ? "met" : "NOT met" }');"
    echo "$count containers in under 3 s: IPv6 on: vswitchctl ${K[v6ctl,total]} s → $(met "${K[v6ctl,total]}" 3), API ${K[v6api,total]} s → $(met "${K[v6api,total]}" 3);"
    echo "IPv6 off: vswitchctl ${K[v4ctl,total]} s → $(met "${K[v4ctl,total]}" 3), API ${K[v4api,total]} s → $(met "${K[v4api,total]}" 3)."
} >"$report"
tb_report "$report" "$write"
tb_log "tearing down ($(wc -l <"$run/all") namespaces, vswitchd)"
