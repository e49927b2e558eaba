#!/usr/bin/env bash
# cni-rootless-bench.sh: rootless podman (CNI backend), TCP between a container and the host's
# loopback through vswitch-cni (vswitchd's egress) against rootless podman's default network,
# slirp4netns, in ONE run. The run itself is testbed's podman-rootless-bench binary (it shares
# the rootless podman harness of testbed/tests/podman_rootless.rs); see its header for what one
# run is.
#
#   sudo benches/cni-rootless-bench.sh [-t SECONDS] [-r ROUNDS] [-x] [-B]
#     -t SECONDS   length of one iperf3 run (default 5)
#     -r ROUNDS    runs per network and direction, taking turns (default 3); medians reported
#     -x           do not write benches/RESULTS.md (print only)
#     -B           do not build (use target/release as it is)
#
# Everything made here (the user, its podman state, vswitchd, the iperf3 server) goes on exit.
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"

secs=5 rounds=3 write=1 build=1
cmdline="benches/cni-rootless-bench.sh${*:+ $*}"
while getopts "t:r:xBh" o; do
    case $o in
        t) secs=$OPTARG ;; r) rounds=$OPTARG ;; x) write=0 ;; B) build=0 ;;
        *) sed -n '2,14p' "$0"; exit 2 ;;
    esac
done
tb_positive "-t and -r" "$secs" "$rounds"
tb_need_root
tb_bench_scratch cni-rootless-bench
tb_apt iperf3=iperf3 python3=python3
# slirp4netns, and vswitchd rootless, open /dev/net/tun as the user (restored on exit).
tb_tun_for_everyone
tb_release_bins "$build"
if [ "$build" = 1 ]; then
    (cd "$TB_ROOT" && cargo build -q --release -p ctl -p testbed --bins) || tb_die "cargo build failed"
fi
[ -x "$bin/podman-rootless-bench" ] && [ -x "$bin/vswitch-cni" ] || tb_die "no $bin/podman-rootless-bench or vswitch-cni: build them first"
tb_bench_watchdog cni-rootless-bench $((300 + rounds * 4 * 2 * (secs + 5)))
git_rev=$(git -C "$TB_ROOT" describe --always --dirty 2>/dev/null || echo unknown)

"$bin/podman-rootless-bench" --duration "$secs" --rounds "$rounds" >"$run/table.md" 2>"$run/runs.log" || {
    tail -n 30 "$run/runs.log" >&2
    tb_die "podman-rootless-bench failed"
}
report=$run/report.md
{
    echo "## Rootless podman: container ↔ host loopback through vswitch-cni vs slirp4netns: $(date -u +%Y-%m-%d), kernel $(uname -r)"
    echo
    echo "Command: \`sudo $cmdline\` (release builds of \`$git_rev\`; $(podman --version), slirp4netns $(slirp4netns --version | awk '/^slirp4netns version/ { print $3 }');"
    echo "$(nproc) vCPU $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), load average at the end $(cut -d' ' -f1-3 /proc/loadavg))."
    echo "A user made for the run runs rootless podman (CNI backend) and vswitchd (\`--userns\` of podman's pause process)."
    echo "One run = \`podman run --rm --network NET bbperf iperf3 -c HOST -J [-R]\` (busybox image plus the host's iperf3), TCP, 1 stream,"
    echo "against \`iperf3 -s\` on the host's 127.0.0.1. vswitch-cni: a vswitch network with \`--host-loopback\`, the container dials"
    echo "its gateway; slirp4netns: \`--network slirp4netns:allow_host_loopback=true,mtu=M\` (podman's rootless default is MTU 65520),"
    echo "the container dials 10.0.2.2."
    echo
    cat "$run/table.md"
} >"$report"
tb_report "$report" "$write"
