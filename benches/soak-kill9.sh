#!/usr/bin/env bash
# soak-kill9.sh: kill -9 vswitchd again and again under traffic and in the middle of attaches
# and detaches, restart it each time, and check at the end that nothing leaked.
#
# Two containers (a, b) stay attached and ping each other (-i 0.02) for the whole run; an
# iperf3 flow a -> b runs in rounds. Each cycle starts an attach of one churn container and a
# detach of another (CHURN containers take turns), sends SIGKILL to vswitchd 20-300 ms later
# (the attach/detach is usually in flight), restarts vswitchd on the same state directory and
# waits until it answers. After the last cycle, with vswitchd up:
#   TAPs    interfaces (other than lo) in every namespace of the run == endpoints of the network
#   leases  `network inspect` usage.in_use == endpoints
#   fds     /proc/PID/fd count minus endpoints, sampled after each restart: the same every time
# and a and b still ping each other. Prints the figures; appends them to benches/RESULTS.md.
#
#   sudo benches/soak-kill9.sh [-n CYCLES] [-c CHURN] [-N] [-B]
#     -n CYCLES  kill -9 + restart cycles (default 100)
#     -c CHURN   churn containers (default 6)
#     -N         do not append to benches/RESULTS.md
#     -B         do not build (use target/release as it is)
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"

cycles=100 churn=6 write=1 build=1
cmdline="benches/soak-kill9.sh${*:+ $*}"
while getopts "n:c:NBh" o; do
    case $o in
        n) cycles=$OPTARG ;; c) churn=$OPTARG ;; N) write=0 ;; B) build=0 ;; *) sed -n '2,21p' "$0"; exit 2 ;;
    esac
done
tb_positive "-n and -c" "$cycles" "$churn"
tb_need_root
tb_bench_scratch soak-kill9
tb_bench_watchdog soak-kill9 $((cycles * 10 + 300))
tb_apt iperf3=iperf3 ping=iputils-ping python3=python3 ip=iproute2
tb_release_bins "$build"
git_rev=$(git -C "$TB_ROOT" describe --always --dirty 2>/dev/null || echo unknown)
tag="vsk$$"
sock=$run/vswitchd.sock
ctl=("$bin/vswitchctl" --socket "$sock")

pid=
start_daemon() {
    "$bin/vswitchd" --socket "$sock" --state-dir "$run/state" --log-level warn "${vsd_args[@]}" 2>>"$run/vswitchd.log" &
    pid=$!
    local i
    for i in $(seq 200); do
        "${ctl[@]}" version >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || tb_die "vswitchd exited during start (see $run/vswitchd.log)"
        sleep 0.05
    done
    tb_die "vswitchd did not answer after a restart"
}
stop_daemon() { [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; pid=; }
tb_undo "stop_daemon"

names=(a b)
for i in $(seq "$churn"); do names+=("k$i"); done
for n in "${names[@]}"; do tb_netns "$tag-$n"; done
start_daemon
"${ctl[@]}" network create soak --subnet 10.238.0.0/24 >/dev/null
"${ctl[@]}" attach soak --netns "/run/netns/$tag-a" --name a --ip 10.238.0.2 >/dev/null
"${ctl[@]}" attach soak --netns "/run/netns/$tag-b" --name b --ip 10.238.0.3 >/dev/null
ip netns exec "$tag-a" ping -c 3 -i 0.2 -W 1 10.238.0.3 >/dev/null || tb_die "a cannot reach b"

# Traffic for the whole run: a ping and iperf3 rounds (each round may die with a restart).
ip netns exec "$tag-b" iperf3 -s -B 10.238.0.3 >"$run/iperf3-s.log" 2>&1 &
tb_undo "kill $!"
ip netns exec "$tag-a" ping -q -i 0.02 10.238.0.3 >"$run/ping.log" 2>&1 &
ping_pid=$!
tb_undo "kill $ping_pid"
( while :; do ip netns exec "$tag-a" iperf3 -c 10.238.0.3 -t 3 --connect-timeout 1000 >/dev/null 2>&1 || sleep 0.2; done ) &
iperf_loop=$!
tb_undo "kill $iperf_loop"

endpoints() { "${ctl[@]}" --json network inspect soak | python3 -c 'import json,sys; print(json.load(sys.stdin)["endpoints"])'; }
fds() { ls "/proc/$pid/fd" | wc -l; }
declare -a fd_extra=()
attached=" "
t0=$SECONDS
for c in $(seq "$cycles"); do
    k=$(( (c - 1) % churn + 1 )) j=$(( c % churn + 1 ))
    # One attach and one detach in flight (errors are expected: the daemon dies under them).
    "${ctl[@]}" attach soak --netns "/run/netns/$tag-k$k" --name "k$k" >/dev/null 2>&1 &
    a_pid=$!
    "${ctl[@]}" detach soak "k$j" >/dev/null 2>&1 &
    d_pid=$!
    sleep "0.$(printf '%03d' $((20 + RANDOM % 280)))"
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || true
    wait "$a_pid" "$d_pid" 2>/dev/null || true
    start_daemon
    e=$(endpoints)
    fd_extra+=($(( $(fds) - e )))
done
elapsed=$((SECONDS - t0))

# ---- checks --------------------------------------------------------------------------------
sleep 1
e=$(endpoints)
in_use=$("${ctl[@]}" --json network inspect soak | python3 -c 'import json,sys; print(json.load(sys.stdin)["usage"]["in_use"])')
taps=0
for n in "${names[@]}"; do
    taps=$((taps + $(ip -n "$tag-$n" -o link show | grep -vc ': lo:' || true)))
done
fd_min=$(printf '%s\n' "${fd_extra[@]}" | sort -n | head -1)
fd_max=$(printf '%s\n' "${fd_extra[@]}" | sort -n | tail -1)
reach=no
ip netns exec "$tag-a" ping -c 3 -i 0.2 -W 1 10.238.0.3 >/dev/null && reach=yes
kill -INT $ping_pid 2>/dev/null || true
sleep 0.3
loss=$(grep -o '[0-9.]*% packet loss' "$run/ping.log" || echo '?')
leaked_taps=$((taps - e)) leaked_leases=$((in_use - e))
ok=yes
[ "$leaked_taps" = 0 ] && [ "$leaked_leases" = 0 ] && [ "$fd_min" = "$fd_max" ] && [ "$reach" = yes ] || ok=no

report=$run/report.md
{
    echo "### kill -9 soak ($(date -u +%Y-%m-%d), \`$git_rev\`)"
    echo
    echo "Command: \`sudo $cmdline\` ($cycles cycles in ${elapsed} s; each: an attach and a detach in flight, kill -9 20-300 ms later, restart; ping -i 0.02 and iperf3 rounds a -> b throughout; load before: $(cut -d' ' -f1-3 /proc/loadavg))"
    echo
    echo "| check | figure |"
    echo "|---|---|"
    echo "| endpoints at the end | $e (a, b and churn containers attached when the last kill hit) |"
    echo "| leaked TAPs (interfaces in the run's namespaces - endpoints) | $leaked_taps |"
    echo "| leaked leases (usage.in_use - endpoints) | $leaked_leases |"
    echo "| fds - endpoints after each restart (min / max) | $fd_min / $fd_max |"
    echo "| a reaches b after the last restart | $reach (ping over the whole run: $loss) |"
    echo "| verdict | $ok |"
} >"$report"
tb_report "$report" "$write"
[ "$ok" = yes ]
