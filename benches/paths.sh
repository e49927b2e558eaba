# benches/paths.sh: the switched paths the end-to-end benchmarks compare, sourced by
# e2e-datapath.sh and e2e-latency.sh. Each setup_* makes "container" namespaces
# ($tag-NAME-c1 .. c$((2 * pairs))) joined by one switch, addressed NET.2, NET.3, ... in the order
# of the containers, and fills S[NAME,ns1], S[NAME,ns2], S[NAME,ip2] (the measured pair),
# S[NAME,ns3], S[NAME,ns4], S[NAME,ip4] (the load pair, when pairs=2), S[NAME,gw] (vswitchd's
# gateway address), S[NAME,pid] (empty for a kernel path) and R[NAME,desc]. The caller sets tag, run, bin, vsd_args, vsd_net_args (for `network create`), pairs (1 or 2; tapcopy-mq
# has one pair only) and declares the associative arrays S and R; testbed/lib.sh is sourced.

[ -n "${vsd_net_args+x}" ] || vsd_net_args=()

# serve NAME: an iperf3 server in the switch's second container, stopped on exit.
serve() {
    local name=$1
    tb_iperf3_server "${S[$name,ns2]}" "${S[$name,ip2]}" "$run/iperf3-$name.log"
    S[$name,spid]=$TB_IPERF3_PID
    ip netns exec "${S[$name,ns1]}" ping -c 3 -i 0.2 -W 1 "${S[$name,ip2]}" >/dev/null \
        || tb_die "$name: ${S[$name,ns1]} cannot reach ${S[$name,ip2]}"
}

# containers NAME [COUNT]: fresh container namespaces for one switch (COUNT, default 2 per
# pair), S[NAME,nsK] for each.
containers() {
    local k
    for k in $(seq "${2:-$((2 * ${pairs:-1}))}"); do
        S[$1,ns$k]=$tag-$1-c$k
        tb_netns "$tag-$1-c$k"
    done
}

# ---- (a), (b): vswitchd --------------------------------------------------------------------
setup_vswitchd() {
    local name=$1 args=() sock=$run/$1/vswitchd.sock pid
    [ "$name" = vswitchd-nooffload ] && args=(--no-offloads)
    [ "$name" = vswitchd-1worker ] && args=(--workers 1)
    [ "$name" = vswitchd-2workers ] && args=(--workers 2)
    [ "$name" = vswitchd-nice10 ] && args=(--datapath-nice -10)
    [ "$name" = vswitchd-normal ] && args=(--datapath-realtime never)
    tb_log "$name: vswitchd ${args[*]}"
    mkdir -p "$run/$name"
    tb_daemon "$bin" "$sock" --log-level warn "${vsd_args[@]}" "${args[@]}" 2>>"$run/$name/vswitchd.log"
    pid=$!
    [ "$(cat /proc/$pid/comm 2>/dev/null)" = vswitchd ] || tb_die "cannot find the vswitchd pid"
    local ctl=("$bin/vswitchctl" --socket "$sock") net=10.231.0 
    [ "$name" = vswitchd-nooffload ] && net=10.234.0
    [ "$name" = vswitchd-1worker ] && net=10.235.0
    [ "$name" = vswitchd-2workers ] && net=10.238.0
    [ "$name" = vswitchd-nice10 ] && net=10.237.0
    [ "$name" = vswitchd-normal ] && net=10.239.0
    "${ctl[@]}" network create bench --subnet "$net.0/24" "${vsd_net_args[@]}" >/dev/null
    containers "$name"
    local k
    for k in $(seq $((2 * ${pairs:-1}))); do
        "${ctl[@]}" attach bench --netns "/run/netns/${S[$name,ns$k]}" --name "c$k" --ip "$net.$((k + 1))" >/dev/null
    done
    S[$name,ip2]=$net.3 S[$name,ip4]=$net.5 S[$name,gw]=$net.1 S[$name,pid]=$pid
    local offl
    offl=$("${ctl[@]}" --json port ls | python3 -c 'import json,sys; print(",".join(next(p for p in json.load(sys.stdin) if p["name"] == "c1")["offloads"]) or "none")')
    local workers
    workers=$("${ctl[@]}" --json workers | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
    R[$name,desc]="vswitchd${args[*]:+ ${args[*]}} (TAP offloads: $offl; $workers datapath workers)"
}

# ---- (c): kernel bridge ---------------------------------------------------------------------
setup_bridge() {
    local name=bridge sw=$tag-br i
    local n=$((2 * ${pairs:-1}))
    tb_log "bridge: kernel bridge + $n veth pairs (the bridge in a namespace of its own)"
    containers $name
    tb_netns "$sw"
    ip -n "$sw" link add br0 type bridge
    ip -n "$sw" link set br0 up
    for i in $(seq "$n"); do
        ip -n "$sw" link add "p$i" type veth peer name eth0 netns "$tag-$name-c$i"
        ip -n "$sw" link set "p$i" master br0 up
        ip -n "$tag-$name-c$i" link set eth0 mtu 1500 up
        ip -n "$tag-$name-c$i" addr add "10.232.0.$((i + 1))/24" dev eth0
    done
    S[$name,ip2]=10.232.0.3 S[$name,ip4]=10.232.0.5 S[$name,pid]=
    R[$name,desc]="kernel bridge + $n veth pairs"
}

# move_taps NAME SWITCH_NS NET TAP...: moves the TAPs a switch process made in SWITCH_NS into
# NAME's containers 1, 2, ... as eth0 (the open fds keep working), addressed NET.2, NET.3, ...
move_taps() {
    local name=$1 sw=$2 net=$3 i=0 tap c
    shift 3
    for tap in "$@"; do
        i=$((i + 1)) c=$tag-$name-c$i
        ip -n "$sw" link set "$tap" netns "$c"
        ip -n "$c" link set "$tap" name eth0
        ip -n "$c" link set eth0 mtu 1500 up
        ip -n "$c" addr add "$net.$((i + 1))/24" dev eth0
    done
}

# ---- (d): vde_switch owning both TAPs ---------------------------------------------------------
setup_vde() {
    local name=vde_switch sw=$tag-vde pid i
    tb_log "vde_switch: one process owning both TAPs (vde_switch -t tapA -t tapB), TAPs moved into the containers"
    containers $name 2
    tb_netns "$sw"
    mkdir -p "$run/vde"
    # -d: daemon (its console would otherwise exit on EOF of stdin). The TAPs are created in the
    # switch's namespace and then moved; the open fds keep working.
    ip netns exec "$sw" vde_switch -d -p "$run/vde/pid" -s "$run/vde/ctl" -M "$run/vde/mgmt" \
        -t "${tag}a" -t "${tag}b" </dev/null >"$run/vde/log" 2>&1 || tb_die "vde_switch did not start: $(cat "$run/vde/log")"
    for i in $(seq 50); do [ -s "$run/vde/pid" ] && break; sleep 0.05; done
    pid=$(cat "$run/vde/pid")
    tb_undo "kill $pid; for _w in \$(seq 50); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done"
    [ "$(cat /proc/$pid/comm 2>/dev/null)" = vde_switch ] || tb_die "cannot find the vde_switch pid"
    move_taps $name "$sw" 10.233.0 "${tag}a" "${tag}b"
    S[$name,ip2]=10.233.0.3 S[$name,pid]=$pid
    R[$name,desc]="vde_switch -t tapA -t tapB (one process owning both TAPs; $(vde_switch -v 2>&1 | head -1 | tr -s ' '))"
}

# ---- (e): tapcopy, the bare copy loop ------------------------------------------------------
setup_tapcopy() {
    local name=$1 sw=$tag-$1 pid i args=() t=t net=10.236.0 n=$((2 * ${pairs:-1})) taps=() what
    [ "$name" = tapcopy-mq ] && args=(--queues 2) t=m net=10.230.0 n=2
    what="1 thread, $((n / 2)) pair(s)"
    [ "$name" = tapcopy-mq ] && what="2 threads, 2-queue TAPs"
    for i in $(seq "$n"); do taps+=("${tag}${t}$i"); done
    tb_log "$name: the bare copy loop between vnet/TSO TAPs ($what), TAPs moved into the containers"
    containers "$name" "$n"
    tb_netns "$sw"
    ip netns exec "$sw" "$bin/tapcopy" "${args[@]}" "${taps[@]}" </dev/null >"$run/$name.log" 2>&1 &
    pid=$!
    tb_undo "kill $pid; wait $pid"
    for i in $(seq 50); do ip -n "$sw" link show "${taps[-1]}" >/dev/null 2>&1 && break; sleep 0.05; done
    [ "$(cat /proc/$pid/comm 2>/dev/null)" = tapcopy ] || tb_die "tapcopy did not start: $(cat "$run/$name.log")"
    move_taps "$name" "$sw" "$net" "${taps[@]}"
    S[$name,ip2]=$net.3 S[$name,pid]=$pid
    [ "$n" -ge 4 ] && S[$name,ip4]=$net.5
    R[$name,desc]="tapcopy${args[*]:+ ${args[*]}} (bare copy loop, $what, TAP offloads as vswitchd's)"
}
