#!/usr/bin/env bash
# two-hosts.sh: two "hosts" joined by vswitchd's encrypted tunnel, with containers on each.
#
#   sudo testbed/two-hosts.sh [-n N] [-t SECONDS] [-p PREFIX] [-B] [-- COMMAND...]
#     -n N        containers per host (default 2)
#     -t SECONDS  length of the iperf3 run across the hosts (default 3)
#     -p PREFIX   prefix of every namespace name this script makes (default: none)
#     -B          do not build (use target/release as it is)
#
# Builds vswitchd (release), then makes:
#   namespaces hostA, hostB   the two "hosts", joined by a veth pair (the underlay):
#                             uA 10.200.0.1/24 <-> uB 10.200.0.2/24, MTU 1500
#   vswitchd in each host     --listen 10.200.0.X:51820 --dns-upstream none
#   network "ov" on both      --overlay, subnet 10.91.0.0/24; host A hands out 10.91.0.0/25,
#                             host B 10.91.0.128/25 (MTU 1422: what fits in the tunnel)
#   containers a1..aN, b1..bN attached to "ov" on host A, host B; resolv.conf -> 10.91.0.1
#   peers                     each host added as the other's peer for "ov"
# then shows the keys, pings every container of A to every container of B and back, resolves
# and pings a name across the hosts, runs iperf3 a1 -> b1, shows `peer ls` on both hosts.
# With `-- COMMAND`, runs COMMAND instead of those checks (e.g. `-- bash` for a shell), with:
#   VSWITCH_SOCKET_A, VSWITCH_SOCKET_B   the daemons' control sockets
#   TB_HOSTS, TB_CONTAINERS_A, TB_CONTAINERS_B   namespace names
#   PATH                                 starts with target/release (vswitchctl, vswitchd)
# e.g. `-- sh -c 'ip netns exec a1 ping -c 3 b1; vswitchctl --socket $VSWITCH_SOCKET_A peer ls'`.
#
# Everything (daemons, namespaces, resolv.conf files, the temp dir) is removed on exit, also on
# failure or Ctrl-C. Only the namespaces made here carry traffic.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

n=2 secs=3 prefix='' build=1
while getopts "n:t:p:Bh" o; do
    case $o in
        n) n=$OPTARG ;; t) secs=$OPTARG ;; p) prefix=$OPTARG ;; B) build=0 ;;
        *) sed -n '2,27p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 60 ]] || tb_die "-n takes 1 to 60"
[[ $secs =~ ^[0-9]+$ && $secs -ge 1 ]] || tb_die "-t takes a positive integer"
tb_need_root
tb_install_deps

run=$(mktemp -d /tmp/vswitch-2h.XXXXXX)
on_exit() {
    local rc=$? f
    if [ $rc != 0 ]; then
        for f in "$run"/*/vswitchd.log; do
            [ -s "$f" ] && { echo "--- last lines of $f:"; tail -n 15 "$f"; } >&2
        done
    fi
    tb_log "tearing down"
    tb_cleanup
    rm -rf "$run"
    exit $rc
}
trap on_exit EXIT
trap 'echo "two-hosts: interrupted" >&2; exit 130' INT TERM

if [ $build = 1 ]; then
    tb_log "building vswitchd and vswitchctl (release)"
    bin=$(tb_build release)
else
    bin=$TB_ROOT/target/release
fi
[ -x "$bin/vswitchd" ] && [ -x "$bin/vswitchctl" ] || tb_die "no $bin/vswitchd: build it first"

hA=${prefix}hostA hB=${prefix}hostB
subnet=10.91.0.0/24 gw=10.91.0.1 port=51820
declare -A UL=([A]=10.200.0.1 [B]=10.200.0.2) RANGE=([A]=10.91.0.0/25 [B]=10.91.0.128/25) HOST=([A]=$hA [B]=$hB)
declare -A SOCK PID CONT

# ---- the underlay: two host namespaces and a veth pair ----------------------------------------
tb_log "hosts $hA and $hB, underlay veth uA ${UL[A]}/24 <-> uB ${UL[B]}/24"
tb_netns "$hA"
tb_netns "$hB"
tb_veth_pair "$hA" uA "${UL[A]}/24" "$hB" uB "${UL[B]}/24"

# ---- containers (made before the daemons, so they are deleted after the daemons stop) -------
for h in A B; do
    l=${h,,}
    CONT[$h]=
    for i in $(seq "$n"); do
        tb_netns "$prefix$l$i"
        tb_resolver "$prefix$l$i" "$gw"
        CONT[$h]+="$prefix$l$i "
    done
    CONT[$h]=${CONT[$h]% }
done

# ---- one vswitchd per host, run inside the host's namespace ---------------------------------
for h in A B; do
    mkdir -p "$run/$h/bin"
    # tb_daemon runs BIN/vswitchd: this one enters the host namespace first (exec keeps the pid).
    printf '#!/bin/sh\nexec ip netns exec %s %s/vswitchd "$@"\n' "${HOST[$h]}" "$bin" >"$run/$h/bin/vswitchd"
    chmod +x "$run/$h/bin/vswitchd"
    SOCK[$h]=$run/$h/vswitchd.sock
    tb_daemon "$run/$h/bin" "${SOCK[$h]}" --listen "${UL[$h]}:$port" --dns-upstream none --log-level warn \
        2>>"$run/$h/vswitchd.log"
    PID[$h]=$!
done
ctl() { local h=$1; shift; "$bin/vswitchctl" --socket "${SOCK[$h]}" "$@"; }
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

for h in A B; do
    ctl "$h" network create ov --subnet "$subnet" --ip-range "${RANGE[$h]}" --overlay >/dev/null
    for c in ${CONT[$h]}; do
        name=${c#"$prefix"}
        ctl "$h" attach ov --netns "/run/netns/$c" --name "$name" >/dev/null
    done
done
declare -A KEY
for h in A B; do
    KEY[$h]=$(ctl "$h" --json key show | json_field public_key)
done
tb_log "keys"
for h in A B; do
    echo "host $h (${HOST[$h]}): $(ctl "$h" key show | tr '\n' ' ')"
done
ctl A peer add "${KEY[B]}" --endpoint "${UL[B]}:$port" --network ov >/dev/null
ctl B peer add "${KEY[A]}" --endpoint "${UL[A]}:$port" --network ov >/dev/null
tb_log "network ov on each host, endpoints"
for h in A B; do
    echo "host $h:"
    ctl "$h" network inspect ov | sed 's/^/  /'
done

export VSWITCH_SOCKET_A=${SOCK[A]} VSWITCH_SOCKET_B=${SOCK[B]}
export TB_HOSTS="$hA $hB" TB_CONTAINERS_A=${CONT[A]} TB_CONTAINERS_B=${CONT[B]}
export PATH="$bin:$PATH"
if [ $# -gt 0 ]; then
    tb_log "running: $*"
    set +e
    "$@"
    rc=$?
    set -e
    exit $rc
fi

# ---- the fixed checks ------------------------------------------------------------------------
failed=0
fail() { printf '\033[31mFAIL\033[0m %s\n' "$*"; failed=$((failed + 1)); }
ok() { printf '\033[32mok\033[0m   %s\n' "$*"; }
ip_of() { ip -n "$1" -4 -o addr show dev eth0 | awk '{ split($4, a, "/"); print a[1]; exit }'; }

a1=$(cut -d' ' -f1 <<<"${CONT[A]}") b1=$(cut -d' ' -f1 <<<"${CONT[B]}")
tb_log "first handshake: $a1 -> $b1 ($(ip_of "$b1"))"
t0=$(date +%s%N)
for _ in $(seq 20); do
    ip netns exec "$a1" ping -c 1 -W 1 "$(ip_of "$b1")" >/dev/null 2>&1 && break
done
echo "first ping across answered after $((($(date +%s%N) - t0) / 1000000)) ms"

tb_log "ping every container of A <-> every container of B (by address)"
for x in ${CONT[A]}; do
    for y in ${CONT[B]}; do
        for pair in "$x:$y" "$y:$x"; do
            from=${pair%:*} to=${pair#*:}
            dst=$(ip_of "$to")
            if out=$(ip netns exec "$from" ping -c 3 -i 0.2 -W 2 "$dst" 2>&1); then
                ok "$from -> $to ($dst): $(awk -F/ '/^rtt/ { print "rtt avg " $5 " ms" }' <<<"$out")"
            else
                fail "$from -> $to ($dst): $(grep -E 'packet loss' <<<"$out")"
            fi
        done
    done
done

tb_log "names across hosts: $a1 resolves ${b1#"$prefix"} (announced by host B through the tunnel, re-sent every 10 s)"
name_b1=${b1#"$prefix"} got=
for _ in $(seq 30); do
    got=$(ip netns exec "$a1" dig +short +time=1 +tries=1 "$name_b1" A 2>/dev/null | head -1)
    [ -n "$got" ] && break
    sleep 0.5
done
if [ "$got" = "$(ip_of "$b1")" ]; then
    ok "$a1: $name_b1 -> $got"
    if ip netns exec "$a1" ping -c 2 -i 0.2 -W 2 "$name_b1" >/dev/null 2>&1; then ok "$a1: ping $name_b1"; else fail "$a1: ping $name_b1"; fi
else
    fail "$a1: $name_b1 resolved to '${got}', expected $(ip_of "$b1")"
fi

tb_log "iperf3 $a1 -> $b1, 1 TCP stream, ${secs} s (container MTU $(ip netns exec "$a1" cat /sys/class/net/eth0/mtu))"
ip netns exec "$b1" iperf3 -s -1 -B "$(ip_of "$b1")" >"$run/iperf3-server.log" 2>&1 &
spid=$!
tb_undo "kill $spid; wait $spid"
for _ in $(seq 50); do
    ip netns exec "$b1" ss -Hltn "sport = :5201" 2>/dev/null | grep -q . && break
    sleep 0.1
done
if json=$(ip netns exec "$a1" timeout $((secs + 20)) iperf3 -c "$(ip_of "$b1")" -t "$secs" -J --connect-timeout 3000); then
    ok "iperf3 across the tunnel: $(python3 -c '
import json, sys
e = json.load(sys.stdin)["end"]
print("%.3f Gbit/s received, %d retransmits" % (e["sum_received"]["bits_per_second"] / 1e9, e["sum_sent"].get("retransmits", 0)))' <<<"$json")"
else
    fail "iperf3 $a1 -> $b1: ${json:0:300}"
fi

tb_log "peer ls"
for h in A B; do
    echo "host $h:"
    ctl "$h" peer ls | sed 's/^/  /'
done
tb_log "port ls on host A"
ctl A port ls | sed 's/^/  /'
for h in A B; do
    kill -0 "${PID[$h]}" 2>/dev/null || fail "vswitchd of host $h is gone"
done

if [ $failed -gt 0 ]; then
    tb_log "$failed check(s) failed"
    exit 1
fi
tb_log "all checks passed"
