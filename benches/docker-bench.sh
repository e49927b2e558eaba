#!/usr/bin/env bash
# docker-bench.sh: Docker containers on a vswitch network (vswitchd --docker-plugin as the
# network and IPAM driver) against Docker's own bridge driver, in ONE run, one dockerd.
#
#   sudo benches/docker-bench.sh [-n N] [-t SECONDS] [-x] [-B]
#     -n N   timed `docker run --rm` starts per network (default 20), taking turns; medians
#     -t S   seconds per iperf3 run (default 10); 3 runs per network, taking turns; medians
#     -x     do not write benches/RESULTS.md (print only)
#     -B     do not build (use target/release as it is)
#
# dockerd 20.10 (Debian docker.io) runs with its own data-root, exec-root and socket,
# --iptables=false --ip6tables=false --bridge=none, inside a network namespace made here
# (entered with nsenter --net only, so the cgroup mounts stay visible); vswitchd (release,
# --dns-upstream none) runs in the same namespace and serves /run/docker/plugins/NAME.sock.
# Networks, both MTU 1500:
#   vswitch  `docker network create -d NAME --ipam-driver NAME --subnet 10.77.0.0/24`
#   bridge   `docker network create -d bridge --subnet 10.76.0.0/24` (a kernel bridge and
#            veths; no iptables rules, as --iptables=false leaves none)
# TCP: two `sleep` containers per network; iperf3 (the host's binary, entered into each
# container's network namespace with nsenter --net) from one to the other, 1 stream.
# Start: `docker run --rm --network NET bb:latest true`, wall clock (endpoint, TAP or veth,
# runc, exit, removal). Everything made here is removed on exit.
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"

n=20 secs=10 write=1 build=1
cmdline="benches/docker-bench.sh${*:+ $*}"
while getopts "n:t:xBh" o; do
    case $o in
        n) n=$OPTARG ;; t) secs=$OPTARG ;; x) write=0 ;; B) build=0 ;;
        *) sed -n '2,24p' "$0"; exit 2 ;;
    esac
done
tb_positive "-n and -t" "$n" "$secs"
tb_need_root
tb_bench_scratch docker-bench
tb_apt ip=iproute2 python3=python3 iperf3=iperf3 busybox=busybox-static dockerd=docker.io
tb_release_bins "$build"
tb_bench_watchdog docker-bench $((300 + n * 2 * 10 + secs * 6 * 2))
git_rev=$(git -C "$TB_ROOT" describe --always --dirty 2>/dev/null || echo unknown)

tag=$$
ns="dkbench$tag" drv="vswbench$tag"
psock=/run/docker/plugins/$drv.sock
[ -e /etc/docker/key.json ] || tb_undo "rm -f /etc/docker/key.json"
[ -e /run/docker ] || tb_undo "rmdir /run/docker/plugins /run/docker"
tb_netns "$ns"
# nsenter with --net alone execs the program (no fork): $! is the program's own pid.

# vswitchd in the namespace (its undo comes after dockerd's: dockerd stops first).
sock=$run/vswitchd.sock
nsenter --net="/run/netns/$ns" "$bin/vswitchd" --socket "$sock" --state-dir "$run/state" --log-level warn "${vsd_args[@]}" \
    --docker-plugin="$psock" 2>"$run/vswitchd.log" &
vpid=$!
tb_undo "kill -TERM $vpid; wait $vpid; rm -f '$psock'"
for _ in $(seq 100); do [ -S "$psock" ] && break; sleep 0.05; done
[ -S "$psock" ] || tb_die "vswitchd did not serve $psock"

# dockerd of our own.
dk=$run/docker
mkdir -p "$dk/cli"
nsenter --net="/run/netns/$ns" dockerd --data-root "$dk/data" --exec-root "$dk/exec" --pidfile "$dk/docker.pid" -H "unix://$dk/docker.sock" \
    --iptables=false --ip6tables=false --bridge=none >"$run/dockerd.log" 2>&1 &
dpid=$!
tb_undo "for m in \$(awk '{print \$5}' /proc/self/mountinfo | grep '^$dk' | sort -r); do umount -l \$m; done"
tb_undo "kill -TERM $dpid; for _dk_wait in \$(seq 300); do kill -0 $dpid || break; sleep 0.1; done; kill -KILL $dpid"
tb_undo "docker rm -f \$(docker ps -aq)"
export DOCKER_CONFIG=$dk/cli DOCKER_HOST=unix://$dk/docker.sock
docker() { /usr/bin/docker "$@"; }
for _ in $(seq 300); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
docker info >/dev/null 2>&1 || tb_die "dockerd did not come up"

# The busybox image.
root=$run/rootfs
mkdir -p "$root"/{bin,etc,proc,sys,dev,tmp}
cp /bin/busybox "$root/bin/"
for a in sh sleep true; do ln -s busybox "$root/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
tar -C "$root" -c . | docker import --change 'CMD ["/bin/sh"]' - bb:latest >/dev/null

docker network create -d "$drv" --ipam-driver "$drv" --subnet 10.77.0.0/24 vsw >/dev/null
docker network create -d bridge --subnet 10.76.0.0/24 br >/dev/null
nets=(vsw br)

# TCP: a server and a client container per network.
declare -A SRV CLI SIP
for net in "${nets[@]}"; do
    docker run -d --name "s-$net" --network "$net" bb:latest sleep 100000 >/dev/null
    docker run -d --name "c-$net" --network "$net" bb:latest sleep 100000 >/dev/null
    SRV[$net]=$(docker inspect -f '{{.State.Pid}}' "s-$net")
    CLI[$net]=$(docker inspect -f '{{.State.Pid}}' "c-$net")
    SIP[$net]=$(docker inspect -f "{{.NetworkSettings.Networks.$net.IPAddress}}" "s-$net")
    m=$(nsenter --net="/proc/${CLI[$net]}/ns/net" ip -o link show eth0 | sed -n 's/.* mtu \([0-9]*\).*/\1/p')
    [ "$m" = 1500 ] || tb_die "eth0 of c-$net has MTU $m, not 1500"
done
# gbps NET: one iperf3 run, Gbit/s received.
gbps() {
    local net=$1
    nsenter --net="/proc/${SRV[$net]}/ns/net" iperf3 -s -D -1 >/dev/null 2>&1
    sleep 0.3
    nsenter --net="/proc/${CLI[$net]}/ns/net" iperf3 -c "${SIP[$net]}" -t "$secs" -J >"$run/iperf-$net.json" \
        || tb_die "iperf3 on $net failed"
    python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))' "$run/iperf-$net.json"
}
declare -A G
for net in "${nets[@]}"; do G[$net]=""; done
tb_log "TCP, 1 stream, ${secs} s, 3 runs per network, taking turns"
for r in 0 1 2; do
    for ((j = 0; j < 2; j++)); do
        net=${nets[$(((r + j) % 2))]}
        G[$net]+=" $(gbps "$net")"
    done
done
for net in "${nets[@]}"; do docker rm -f "s-$net" "c-$net" >/dev/null; done

# start NET: one `docker run --rm ... true`, its wall time in ms.
start() {
    local t0 t1
    t0=$EPOCHREALTIME
    docker run --rm --network "$1" bb:latest true >"$run/last.log" 2>&1 || { cat "$run/last.log" >&2; tb_die "docker run on $1 failed"; }
    t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }'
}
tb_log "one untimed start per network, then $n timed starts each, taking turns"
declare -A S
for net in "${nets[@]}"; do start "$net" >/dev/null; S[$net]=""; done
for ((i = 0; i < n; i++)); do
    for ((j = 0; j < 2; j++)); do
        net=${nets[$(((i + j) % 2))]}
        S[$net]+=" $(start "$net")"
    done
done
left=$("$bin/vswitchctl" --socket "$sock" --json network ls | python3 -c 'import json,sys; print(sum(n["endpoints"] for n in json.load(sys.stdin)))')
[ "$left" = 0 ] || tb_die "vswitch endpoints left after the runs: $left"

# shellcheck disable=SC2086
report=$run/report.md
{
    gv=$(tb_median ${G[vsw]}) gb=$(tb_median ${G[br]}) sv=$(tb_median ${S[vsw]}) sb=$(tb_median ${S[br]})
    echo "## Docker: vswitch driver vs Docker's bridge driver: $(date -u +%Y-%m-%d), kernel $(uname -r)"
    echo
    echo "Command: \`sudo $cmdline\` (vswitchd release build of \`$git_rev\`; $(dockerd --version | cut -d, -f1), $(runc --version | head -1), $(iperf3 --version | head -1 | cut -d' ' -f1-2);"
    echo "$(nproc) vCPU $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), load average at the end $(cut -d' ' -f1-3 /proc/loadavg))."
    echo "One dockerd (own roots, --iptables=false --bridge=none) in a namespace of the script's own, vswitchd there too."
    echo "TCP: iperf3 1 stream between two containers of one network, MTU 1500, ${secs} s, median of 3 (runs:${G[vsw]} /${G[br]})."
    echo "Start: \`docker run --rm --network NET bb:latest true\` wall clock, $n per network, taking turns, after one untimed start."
    echo
    echo "| | vswitch driver | bridge driver | vswitch / bridge |"
    echo "|---|---|---|---|"
    echo "| TCP container to container, Gbit/s | $gv | $gb | $(tb_ratio "$gv" "$gb")× |"
    echo "| \`docker run --rm\` start, median ms | $sv | $sb | $(tb_ratio "$sv" "$sb")× |"
} >"$report"
tb_report "$report" "$write"
