#!/usr/bin/env bash
# impair-bench.sh: link impairments done by vswitchd (`vswitchctl port impair`) against the same
# impairments done by tc netem inside the namespaces, in ONE run:
#
#   vswitch   two containers c1, c2 on a vswitchd network; the impairment on c2's port, --ingress
#             (frames c2 sends), seed 1
#   netem     two containers on a kernel bridge (veth pairs); `tc qdisc add dev eth0 root netem ...`
#             inside c2 (frames c2 sends): what Mininet and containerlab do. Where the kernel has no
#             netem (CONFIG_NET_SCH_NETEM unset, as on the box these figures were first taken on),
#             the rate is compared with the kernel's token bucket instead (`tbf rate 50mbit burst
#             64kb latency 400ms`, the same burst as vswitchd's) and delay and loss have no kernel
#             peer: the table says so.
#
# For each path: the delay's accuracy (ping -c 500 -i 0.01 c1 -> c2 with 20 ms on c2's sending side:
# p50 and p99 of RTT minus the unimpaired median, against 20 ms), the loss rate (ping -c 2000
# -i 0.002 with 10 % loss, against 10 %), the rate limit (iperf3 -R, c2 sends, 50mbit: goodput
# against 47.82 Mbit/s, what a 50 Mbit/s Ethernet link carries of TCP payload at MSS 1448), and
# the CPU it costs: busy CPU of the whole box (% of one CPU) during the rate-limited transfer,
# against the same path unimpaired with iperf3 paced to 50 Mbit/s (-b 50M); vswitchd's own CPU
# beside it. Then the unimpaired neighbour: iperf3 c1 -> c3 on the vswitchd network, REPS times
# with no impairment and REPS times while c2 is impaired (delay, loss and rate, both ways, pings
# flowing through it all along), taking turns; medians and their ratio.
# Appends a markdown table to benches/RESULTS.md.
#
#   sudo benches/impair-bench.sh [-t SECONDS] [-r REPS] [-n] [-B]
#     -t SECONDS   length of one iperf3 run (default 8; the first second is left out)
#     -r REPS      neighbour runs per state (default 5)
#     -n           do not write benches/RESULTS.md (print only)
#     -B           do not build (use target/release as it is)
#
# Only namespaces this script creates carry traffic; every one of them, the daemon and the
# iperf3 servers are removed on exit, also on failure or Ctrl-C. A watchdog bounds the run.
set -euo pipefail
. "$(dirname "$0")/../testbed/lib.sh"

secs=8 reps=5 write=1 build=1
cmdline="benches/impair-bench.sh${*:+ $*}"
while getopts "t:r:nBh" o; do
    case $o in
        t) secs=$OPTARG ;; r) reps=$OPTARG ;; n) write=0 ;; B) build=0 ;;
        *) sed -n '2,27p' "$0"; exit 2 ;;
    esac
done
tb_positive "-t and -r" "$secs" "$reps"
[ "$secs" -ge 3 ] || tb_die "-t takes 3 s or more (the first second is left out)"
tb_need_root

tb_bench_scratch impair-bench
tb_bench_watchdog impair-bench $((2 * 4 * (secs + 5) + 2 * reps * 6 + 2 * 30 + 300))

tb_apt iperf3=iperf3 ping=iputils-ping tc=iproute2 python3=python3 ip=iproute2
tb_release_bins "$build"
git_rev=$(git -C "$TB_ROOT" describe --always --dirty 2>/dev/null || echo unknown)
hz=$(getconf CLK_TCK)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
tag="vsim$$"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
now_ns() { date +%s%N; }
pct() { awk -v d="$1" -v hz="$hz" -v ns="$2" 'BEGIN { printf "%.1f", 100 * d / hz / (ns / 1e9) }'; }

# ---- the vswitchd path ----------------------------------------------------------------------
sock=$run/vs/vswitchd.sock
mkdir -p "$run/vs"
tb_daemon "$bin" "$sock" --log-level warn "${vsd_args[@]}" 2>>"$run/vs/vswitchd.log"
vpid=$!
[ "$(cat /proc/$vpid/comm 2>/dev/null)" = vswitchd ] || tb_die "cannot find the vswitchd pid"
ctl=("$bin/vswitchctl" --socket "$sock")
"${ctl[@]}" network create imp --subnet 10.237.0.0/24 >/dev/null
for c in 1 2 3; do
    tb_netns "$tag-vs-c$c"
    "${ctl[@]}" attach imp --netns "/run/netns/$tag-vs-c$c" --name "c$c" --ip "10.237.0.$((c + 1))" >/dev/null
done
VS_C1=$tag-vs-c1 VS_C2=$tag-vs-c2 VS_C3=$tag-vs-c3 VS_IP2=10.237.0.3 VS_IP3=10.237.0.4

# ---- the netem path: kernel bridge, netem inside c2 --------------------------------------------
NE_C1=$tag-ne-c1 NE_C2=$tag-ne-c2 NE_SW=$tag-ne-sw
tb_netns "$NE_SW"
ip -n "$NE_SW" link add br0 type bridge
ip -n "$NE_SW" link set br0 up
for i in 1 2; do
    tb_netns "$tag-ne-c$i"
    ip -n "$NE_SW" link add "p$i" type veth peer name eth0 netns "$tag-ne-c$i"
    ip -n "$NE_SW" link set "p$i" master br0 up
    ip -n "$tag-ne-c$i" link set eth0 up
    ip -n "$tag-ne-c$i" addr add "10.238.0.$((i + 1))/24" dev eth0
done
NE_IP2=10.238.0.3
if tc -n "$NE_C2" qdisc add dev eth0 root netem delay 1ms 2>/dev/null; then
    tc -n "$NE_C2" qdisc del dev eth0 root
    netem=1 peer=netem
else
    netem=0 peer="kernel tbf (no netem in this kernel)"
    tb_log "no netem in this kernel (CONFIG_NET_SCH_NETEM): the rate is compared with tbf, delay and loss with nothing"
fi

# impair PATH WHAT...: the impairment on c2's sending side (WHAT in netem's words: delay 20ms |
# loss 10% | rate 50mbit); `impair PATH` clears it.
impair() {
    local path=$1
    shift
    case $path in
        vs)
            if [ $# -eq 0 ]; then "${ctl[@]}" port impair c2 --ingress --clear >/dev/null
            else "${ctl[@]}" port impair c2 --ingress --"$1" "$2" --seed 1 >/dev/null; fi ;;
        ne)
            tc -n "$NE_C2" qdisc del dev eth0 root 2>/dev/null || true
            [ $# -eq 0 ] && return 0
            if [ "$netem" = 1 ]; then tc -n "$NE_C2" qdisc add dev eth0 root netem "$@"
            elif [ "$1" = rate ]; then tc -n "$NE_C2" qdisc add dev eth0 root tbf rate "$2" burst 64kb latency 400ms
            else return 1; fi ;;
    esac
}
tb_undo "tc -n '$NE_C2' qdisc del dev eth0 root"

c1_of() { if [ "$1" = vs ]; then echo "$VS_C1"; else echo "$NE_C1"; fi; }
c2_of() { if [ "$1" = vs ]; then echo "$VS_C2"; else echo "$NE_C2"; fi; }
ip2_of() { if [ "$1" = vs ]; then echo "$VS_IP2"; else echo "$NE_IP2"; fi; }

# rtts PATH COUNT INTERVAL: one RTT (ms) per line.
rtts() { ip netns exec "$(c1_of "$1")" ping -n -c "$2" -i "$3" -W 2 "$(ip2_of "$1")" | sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p'; }
# quantile Q < numbers
quantile() { sort -g | awk -v q="$1" '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit } i = int(q * NR + 0.5); if (i < 1) i = 1; if (i > NR) i = NR; print v[i] }'; }

serve() {
    local ns=$1 ip=$2 spid i
    ip netns exec "$ns" iperf3 -s -B "$ip" >>"$run/iperf3-$ns.log" 2>&1 &
    spid=$!
    SPID=$spid
    tb_undo "kill $spid; wait $spid"
    for i in $(seq 50); do
        ip netns exec "$ns" ss -Hltn "sport = :5201" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    tb_die "iperf3 server in $ns did not start"
}
serve "$VS_C2" "$VS_IP2"
VS_SPID=$SPID
serve "$VS_C3" "$VS_IP3"
serve "$NE_C2" "$NE_IP2"
NE_SPID=$SPID
for p in vs ne; do ip netns exec "$(c1_of $p)" ping -c 3 -i 0.2 -W 1 "$(ip2_of $p)" >/dev/null || tb_die "$p: no ping"; done
ip netns exec "$VS_C1" ping -c 2 -W 1 "$VS_IP3" >/dev/null || tb_die "vs: c1 cannot reach c3"

# iperf PATH ARGS...: "goodput_mbit path_cpu_% vswitchd_cpu_%" of one run (-R: c2 sends). The
# path's CPU: both iperf3 processes (the client's through its shell's cutime+cstime, the server's
# ticks) plus vswitchd's: where the kernel does the bridge's, the qdisc's and the TAPs' work too
# (in the sending or writing process's context). Other people's work on the box is not in it.
iperf() {
    local p=$1 t0 t1 s0 s1 v0 v1 f=$run/iperf.json spid
    shift
    if [ "$p" = vs ]; then spid=$VS_SPID; else spid=$NE_SPID; fi
    s0=$(cpu_ticks "$spid") v0=$(cpu_ticks "$vpid") t0=$(now_ns)
    ip netns exec "$(c1_of "$p")" timeout $((secs + 20)) sh -c 'iperf3 "$@" >"$0"; r=$?; cat /proc/$$/stat >"$0.stat"; exit $r' \
        "$f" -c "$(ip2_of "$p")" -t "$secs" -O 1 -J "$@" 2>&1 \
        || { echo "iperf3 failed: $(head -c 300 "$f")" >&2; echo "- - -"; return; }
    t1=$(now_ns) s1=$(cpu_ticks "$spid") v1=$(cpu_ticks "$vpid")
    local mbit client vd=0
    mbit=$(python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e6))' <"$f")
    client=$(awk '{ i = index($0, ") "); split(substr($0, i + 2), x, " "); print x[14] + x[15] }' "$f.stat")
    local vcpu=-
    if [ "$p" = vs ]; then vcpu=$(pct $((v1 - v0)) $((t1 - t0))) vd=$((v1 - v0)); fi
    echo "$mbit $(pct $((s1 - s0 + client + vd)) $((t1 - t0))) $vcpu"
}

declare -A R
for p in vs ne; do
    tb_log "$p: unimpaired RTT"
    impair "$p"
    R[$p,base]=$(rtts "$p" 200 0.01 | quantile 0.5)
    if [ "$p" = vs ] || [ "$netem" = 1 ]; then
        tb_log "$p: delay 20ms"
        impair "$p" delay 20ms
        rtts "$p" 500 0.01 >"$run/$p.delay"
        impair "$p"
        R[$p,d50]=$(awk -v b="${R[$p,base]}" '{ print $1 - b }' "$run/$p.delay" | quantile 0.5)
        R[$p,d99]=$(awk -v b="${R[$p,base]}" '{ print $1 - b }' "$run/$p.delay" | quantile 0.99)
        R[$p,dn]=$(wc -l <"$run/$p.delay")
        tb_log "$p: loss 10%"
        impair "$p" loss 10%
        R[$p,loss]=$(ip netns exec "$(c1_of "$p")" ping -n -q -c 2000 -i 0.002 -W 1 "$(ip2_of "$p")" | sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p')
        impair "$p"
    else
        R[$p,d50]="n/a" R[$p,d99]="n/a" R[$p,loss]="n/a" R[$p,dn]=0
    fi
    tb_log "$p: unimpaired, iperf3 -R -b 50M (paced by iperf3)"
    read -r "R[$p,paced]" "R[$p,paced_cpu]" "R[$p,paced_vcpu]" <<<"$(iperf "$p" -R -b 50M)"
    tb_log "$p: rate 50mbit, iperf3 -R"
    impair "$p" rate 50mbit
    read -r "R[$p,rate]" "R[$p,rate_cpu]" "R[$p,rate_vcpu]" <<<"$(iperf "$p" -R)"
    impair "$p"
done

# ---- the unimpaired neighbour -----------------------------------------------------------------
tb_log "neighbour: iperf3 c1 -> c3, $reps runs with c2 unimpaired and $reps with c2 impaired, taking turns"
ip netns exec "$VS_C1" ping -n -q -i 0.01 "$VS_IP2" >/dev/null 2>&1 &
ppid=$!
tb_undo "kill $ppid"
n_off='' n_on=''
neighbour() {
    ip netns exec "$VS_C1" timeout $((secs + 20)) iperf3 -c "$VS_IP3" -t "$secs" -O 1 -J 2>/dev/null \
        | python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))' || echo -
}
for i in $(seq "$reps"); do
    "${ctl[@]}" port impair c2 --clear >/dev/null
    "${ctl[@]}" port impair c2 --ingress --clear >/dev/null
    g=$(neighbour); n_off+="$g "
    "${ctl[@]}" port impair c2 --egress --ingress --delay 20ms --jitter 2ms --loss 1% --rate 50mbit >/dev/null
    h=$(neighbour); n_on+="$h "
    printf '  run %d: c1 -> c3 %s Gbit/s with c2 unimpaired, %s Gbit/s with c2 impaired\n' "$i" "$g" "$h" >&2
done
kill "$ppid" 2>/dev/null || true
# shellcheck disable=SC2086
R[n_off]=$(tb_median $n_off) R[n_on]=$(tb_median $n_on)

# ---- report -----------------------------------------------------------------------------------
v() { echo "${R[$1]:-}"; }
err() { awk -v a="$1" -v t="$2" 'BEGIN { if (a !~ /^-?[0-9.]+$/) print "-"; else printf "%+.1f %%", 100 * (a - t) / t }'; }
report=$run/report.md
{
    echo "## Link impairments: vswitchd against tc netem: $(date -u +%Y-%m-%d), kernel $(uname -r)"
    echo
    echo "Command: \`sudo $cmdline\` (vswitchd release build of \`$git_rev\`, iperf3 $(iperf3 --version | awk 'NR == 1 { print $2 }');"
    echo "$(nproc) vCPU $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); load average before $load_start, after"
    echo "$(cut -d' ' -f1-3 /proc/loadavg): a shared box where other engineers build, so CPU figures are noisy)."
    echo "The impairment is on the frames c2 sends: vswitchd \`port impair c2 --ingress ... --seed 1\`; the kernel"
    if [ "$netem" = 1 ]; then echo "\`tc qdisc add dev eth0 root netem ...\` inside c2, whose eth0 is a veth on a kernel bridge. Delay: ping -c 500"
    else echo "(this kernel has no netem: CONFIG_NET_SCH_NETEM is not set, so delay and loss have no kernel peer here) \`tc qdisc"
        echo "add dev eth0 root tbf rate 50mbit burst 64kb latency 400ms\` inside c2, whose eth0 is a veth on a kernel bridge. Delay: ping -c 500"; fi
    echo "-i 0.01, RTT less the unimpaired median (vswitchd $(v vs,base) ms, bridge $(v ne,base) ms; $(v vs,dn)/$(v ne,dn) replies)."
    echo "Loss: ping -c 2000 -i 0.002. Rate: iperf3 -R -t $secs -O 1 (c2 sends); 47.82 Mbit/s is the TCP payload a"
    echo "50 Mbit/s Ethernet link carries at MSS 1448. CPU: the path's processes in % of one CPU over the transfer (both"
    echo "iperf3 ends, whose context the kernel's bridge, qdisc and TAP work runs in, plus vswitchd), rate-limited vs the same"
    echo "path unimpaired with iperf3 pacing itself to 50 Mbit/s (-b 50M); other people's work on the box is not in it."
    echo
    echo "| | vswitchd | $peer | target |"
    echo "|---|---|---|---|"
    echo "| delay 20ms: p50 of added RTT, ms | $(v vs,d50) ($(err "$(v vs,d50)" 20)) | $(v ne,d50) ($(err "$(v ne,d50)" 20)) | 20 |"
    echo "| delay 20ms: p99 of added RTT, ms | $(v vs,d99) ($(err "$(v vs,d99)" 20)) | $(v ne,d99) ($(err "$(v ne,d99)" 20)) | 20 |"
    echo "| loss 10%: pings lost, % | $(v vs,loss) | $(v ne,loss) | 10 |"
    echo "| rate 50mbit: iperf3 goodput, Mbit/s | $(v vs,rate) ($(err "$(v vs,rate)" 47.82)) | $(v ne,rate) ($(err "$(v ne,rate)" 47.82)) | 47.82 |"
    echo "| unimpaired, iperf3 -b 50M, Mbit/s | $(v vs,paced) | $(v ne,paced) | 50 |"
    echo "| path CPU %, rate-limited / paced unimpaired | $(v vs,rate_cpu) / $(v vs,paced_cpu) | $(v ne,rate_cpu) / $(v ne,paced_cpu) | |"
    echo "| CPU the rate limit costs (difference), % of a CPU | $(tb_diff "$(v vs,rate_cpu)" "$(v vs,paced_cpu)" 1) | $(tb_diff "$(v ne,rate_cpu)" "$(v ne,paced_cpu)" 1) | |"
    echo "| vswitchd's own CPU %, rate-limited / paced | $(v vs,rate_vcpu) / $(v vs,paced_vcpu) | (kernel) | |"
    echo
    echo "Unimpaired neighbour (vswitchd, iperf3 c1 → c3, $secs s, median of $reps, taking turns): $(v n_off) Gbit/s while no port"
    echo "is impaired, $(v n_on) Gbit/s while c2 has \`--egress --ingress --delay 20ms --jitter 2ms --loss 1% --rate 50mbit\`"
    echo "(runs: ${n_off% } / ${n_on% }; pings to c2 every 10 ms throughout): $(tb_ratio "$(v n_on)" "$(v n_off)")×."
} >"$report"
tb_report "$report" "$write"
