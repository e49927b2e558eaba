#!/usr/bin/env bash
# cluster-scale.sh: cluster mode with N vswitchd hosts against one etcd, each host in its own
# network namespace on one bridge (the underlay), one container per host on one overlay network.
#
#   sudo benches/cluster-scale.sh [-n "10 30 100"] [-r SECONDS] [-x] [-B]
#     -n SIZES     host counts to run, in order (default "10 30 100")
#     -r SECONDS   how long the cluster is watched at rest for the request rate (default 20)
#     -x           do not write benches/RESULTS.md (print only)
#     -B           do not build (use target/release as it is)
#
# For each N: N-1 hosts start, one of them creates the network, each attaches a container and
# the cluster settles (every host has every peer and name). Then the last host starts and
# attaches its container; measured:
#   converge     from the last host's start until every host has N-1 peers and all N names
#                (polled through each host's API: the resolution is one polling round, printed)
#   req/host/s   requests etcd served per host per second at rest (etcd's own counter,
#                grpc_server_handled_total, over -r seconds, divided by N)
#   anon/host    RssAnon of a vswitchd (mean over the hosts), and per peer: the growth of that
#                mean from the previous N divided by the growth in peers per host
# Each N uses its own key prefix; the daemons are stopped between sizes. Everything made here is
# removed on exit. There is no peer implementation to run side by side (flannel or Calico need
# Kubernetes): the figures stand alone.
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"

sizes="10 30 100" rest=20 write=1 build=1
cmdline="benches/cluster-scale.sh${*:+ $*}"
while getopts "n:r:xBh" o; do
    case $o in
        n) sizes=$OPTARG ;; r) rest=$OPTARG ;; x) write=0 ;; B) build=0 ;;
        *) sed -n '2,23p' "$0"; exit 2 ;;
    esac
done
tb_need_root
tb_apt etcd=etcd-server etcdctl=etcd-client ip=iproute2 curl=curl
tb_release_bins "$build"
tb_bench_scratch cluster-scale
tb_bench_watchdog cluster-scale 3600

ETCD=10.210.255.254
hub=vcs-hub-$$
tb_netns "$hub"
ip -n "$hub" link add br0 type bridge
ip -n "$hub" addr add "$ETCD/16" dev br0
ip -n "$hub" link set br0 up
ip netns exec "$hub" etcd --name m0 --data-dir "$run/etcd" \
    --listen-client-urls "http://$ETCD:2379" --advertise-client-urls "http://$ETCD:2379" \
    --listen-peer-urls "http://$ETCD:2380" --initial-advertise-peer-urls "http://$ETCD:2380" \
    --initial-cluster "m0=http://$ETCD:2380" >"$run/etcd.log" 2>&1 &
etcd_pid=$!
tb_undo "kill $etcd_pid; wait $etcd_pid"
for _ in $(seq 100); do
    ip netns exec "$hub" etcdctl --endpoints "http://$ETCD:2379" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
done
ip netns exec "$hub" etcdctl --endpoints "http://$ETCD:2379" endpoint health >/dev/null 2>&1 || tb_die "etcd did not start"

now() { date +%s.%N; }
ctl() { local i=$1; shift; "$bin/vswitchctl" --socket "$run/h$i/sock" "$@"; }
host_ip() { echo "10.210.$(($1 / 250)).$(($1 % 250 + 1))"; }

# The namespaces of host I and its container, made once for every size.
made=0
make_host_ns() {
    local i=$1
    [ "$i" -lt "$made" ] && return 0
    tb_netns "vcs-$$-h$i"
    tb_netns "vcs-$$-c$i"
    ip link add "vcsu$i" netns "vcs-$$-h$i" type veth peer name "vcsp$i" netns "$hub"
    ip -n "$hub" link set "vcsp$i" master br0 up
    ip -n "vcs-$$-h$i" addr add "$(host_ip "$i")/16" dev "vcsu$i"
    ip -n "vcs-$$-h$i" link set "vcsu$i" up
    made=$((i + 1))
}

# start_host I PREFIX: vswitchd of host I in its namespace, waits for its socket.
start_host() {
    local i=$1 prefix=$2
    mkdir -p "$run/h$i"
    ip netns exec "vcs-$$-h$i" "$bin/vswitchd" --socket "$run/h$i/sock" --state-dir "$run/h$i/state" \
        --listen "$(host_ip "$i"):51820" --cluster "etcd://$ETCD:2379" --cluster-prefix "/$prefix" \
        --host-name "h$i" --workers 1 "${vsd_args[@]}" >"$run/h$i/vswitchd.log" 2>&1 &
    echo $! >"$run/h$i/pid"
}
wait_socket() {
    local i=$1
    for _ in $(seq 200); do
        [ -S "$run/h$i/sock" ] && return 0
        sleep 0.05
    done
    tb_die "host $i did not start"
}
stop_hosts() {
    local n=$1 i
    for ((i = 0; i < n; i++)); do kill -TERM "$(cat "$run/h$i/pid")" 2>/dev/null || true; done
    for ((i = 0; i < n; i++)); do
        while kill -0 "$(cat "$run/h$i/pid")" 2>/dev/null; do sleep 0.05; done
        rm -rf "$run/h$i"
    done
}
tb_undo 'for p in "$run"/h*/pid; do kill -9 "$(cat "$p")"; done'

peers_of() { ctl "$1" --json peer ls | grep -c '"public_key"' || true; }
# Our own name plus the other hosts' names this host's DNS answers (cluster status).
names_of() { ctl "$1" --json cluster status | awk -F'[:,]' '/"remote_names"/ { gsub(/ /, "", $2); print $2 + 1 }'; }
# settled N: every host 0..N-1 has N-1 peers and N names.
settled() {
    local n=$1 i
    for ((i = 0; i < n; i++)); do
        [ "$(peers_of "$i")" = $((n - 1)) ] || return 1
        [ "$(names_of "$i")" = "$n" ] || return 1
    done
}
# attach_when_ready I: attaches host I's container once the host has the overlay network (it
# retries its store connection once a second; on a loaded box the first may time out).
attach_when_ready() {
    local i=$1
    for _ in $(seq 1200); do
        ctl "$i" attach ov --netns "vcs-$$-c$i" --name "c$i" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    tb_die "host $i: attach failed: $(ctl "$i" attach ov --netns "vcs-$$-c$i" --name "c$i" 2>&1)"
}
etcd_requests() {
    ip netns exec "$hub" curl -s "http://$ETCD:2379/metrics" | awk '/^grpc_server_handled_total/ { s += $NF } END { printf "%d\n", s }'
}
anon_kib() {
    local n=$1 i sum=0
    for ((i = 0; i < n; i++)); do
        sum=$((sum + $(awk '/^RssAnon/ { print $2 }' "/proc/$(cat "$run/h$i/pid")/status")))
    done
    echo $((sum / n))
}

report=$run/report.md
{
    echo "## Cluster mode at scale, $(date -u +%Y-%m-%d) ($(nproc) vCPU, etcd $(etcd --version | awk '/etcd Version/ { print $3 }'), one member)"
    echo
    echo "\`$cmdline\`: N vswitchd (release, --workers 1) in their own namespaces, one container each on one"
    echo "overlay network; the last host starts after the others settled."
    echo
    echo "| hosts | converge after the last host's start | polling round | etcd req/host/s at rest | RssAnon/host | per peer |"
    echo "|---|---|---|---|---|---|"
} >"$report"

prev_n= prev_anon=
for n in $sizes; do
    tb_log "N=$n: starting $((n - 1)) hosts"
    for ((i = 0; i < n; i++)); do make_host_ns "$i"; done
    for ((i = 0; i < n - 1; i++)); do start_host "$i" "scale$n"; done
    for ((i = 0; i < n - 1; i++)); do wait_socket "$i"; done
    ctl 0 network create ov --overlay --subnet 10.211.0.0/16 >/dev/null
    for ((i = 0; i < n - 1; i++)); do attach_when_ready "$i"; done
    for _ in $(seq 600); do settled $((n - 1)) && break; sleep 0.2; done
    settled $((n - 1)) || tb_die "N=$n: the first $((n - 1)) hosts did not settle (peers, names: $(for ((i = 0; i < n - 1; i++)); do printf '%s,%s ' "$(peers_of $i)" "$(names_of $i)"; done))"
    tb_log "N=$n: $((n - 1)) hosts settled; starting the last"
    last=$((n - 1))
    t0=$(now)
    start_host "$last" "scale$n"
    wait_socket "$last"
    attach_when_ready "$last"
    rounds=0 r0=$(now)
    until settled "$n"; do
        rounds=$((rounds + 1))
        [ $rounds -lt 2000 ] || tb_die "N=$n: did not converge"
    done
    t1=$(now)
    converge=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    round=$(awk -v a="$r0" -v b="$t1" -v k=$((rounds + 1)) 'BEGIN { printf "%.2f", (b - a) / k }')
    tb_log "N=$n: converged in ${converge}s (polling round ${round}s)"
    sleep 3
    a=$(etcd_requests)
    sleep "$rest"
    b=$(etcd_requests)
    rate=$(awk -v a="$a" -v b="$b" -v t="$rest" -v n="$n" 'BEGIN { printf "%.2f", (b - a) / t / n }')
    anon=$(anon_kib "$n")
    per_peer=-
    [ -n "$prev_n" ] && per_peer="$(awk -v a="$prev_anon" -v b="$anon" -v p="$prev_n" -v n="$n" 'BEGIN { printf "%.1f KiB", (b - a) / (n - p) }')"
    echo "| $n | ${converge} s | ${round} s | $rate | $anon KiB | $per_peer |" >>"$report"
    prev_n=$n prev_anon=$anon
    stop_hosts "$n"
done
tb_report "$report" "$write"
