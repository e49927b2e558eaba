#!/usr/bin/env bash
# demo.sh: the main job on a fresh machine. Installs what it needs, builds, starts vswitchd,
# makes two networks with containers, shows they ping and resolve each other by name inside a
# network and not across, prints the MAC table, the DNS records and the port counters, then
# tears everything down.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
trap tb_cleanup EXIT
tb_need_root
tb_install_deps

tb_log "building (release)"
bin=$(tb_build release)
run=$(mktemp -d /tmp/vswitch-demo.XXXXXX)
tb_undo "rm -rf '$run'"
sock=$run/vswitchd.sock
# No DNS forwarding: the demo never sends a query outside the namespaces it made.
tb_daemon "$bin" "$sock" --log-level warn --dns-upstream none
ctl() { "$bin/vswitchctl" --socket "$sock" "$@"; }

tb_log "two networks"
ctl network create blue --subnet 10.89.1.0/24 --label demo=yes
ctl network create red --subnet 10.89.2.0/24
tb_undo "'$bin/vswitchctl' --socket '$sock' network rm blue --force"
tb_undo "'$bin/vswitchctl' --socket '$sock' network rm red --force"

tb_log "three containers: blue1, blue2 on blue; red1 on red"
for c in blue1 blue2 red1; do
    tb_netns "vsw-demo-$c"
    net=${c%[0-9]}
    ctl attach "$net" --netns "/run/netns/vsw-demo-$c" --name "$c"
    tb_resolver "vsw-demo-$c" "$(ctl --json network inspect "$net" | python3 -c 'import json,sys; print(json.load(sys.stdin)["gateway"])')"
done
ctl endpoint alias blue blue2 db
ctl network ls
ctl network inspect blue

ip_of() { ctl --json network inspect "$1" | python3 -c "import json,sys; print(next(e['ip'] for e in json.load(sys.stdin)['endpoint_list'] if e['name']=='$2'))"; }
blue2=$(ip_of blue blue2)
red1=$(ip_of red red1)

tb_log "blue1 -> blue2 ($blue2): same network, must answer"
ip netns exec vsw-demo-blue1 ping -c 3 -i 0.2 -W 1 "$blue2"
tb_log "blue1 -> blue2 by name: the gateway answers DNS for the network's containers"
ip netns exec vsw-demo-blue1 ping -c 2 -i 0.2 -W 1 blue2
ip netns exec vsw-demo-blue1 dig +short blue2
ip netns exec vsw-demo-blue1 dig +short +tcp db.blue
ip netns exec vsw-demo-blue1 dig +short -x "$blue2"
tb_log "blue1 -> gateway 10.89.1.1: the switch itself answers"
ip netns exec vsw-demo-blue1 ping -c 2 -i 0.2 -W 1 10.89.1.1
tb_log "blue1 -> red1 ($red1): other network, must fail"
if ip netns exec vsw-demo-blue1 ping -c 2 -i 0.2 -W 1 "$red1"; then
    tb_die "isolation broken: blue1 reached red1"
fi
echo "no answer, as it should be: frames never cross networks"
tb_log "blue1 asks for red1 by name: names of other networks are invisible"
if [ -n "$(ip netns exec vsw-demo-blue1 dig +short +tries=1 +time=2 red1)" ]; then
    tb_die "blue1 resolved red1 across networks"
fi
echo "red1 does not resolve from blue"

tb_log "vswitchctl fdb show"
ctl fdb show
tb_log "vswitchctl dns records"
ctl dns records
tb_log "vswitchctl dns stats"
ctl dns stats
tb_log "vswitchctl port ls"
ctl port ls
tb_log "demo done; tearing down"
