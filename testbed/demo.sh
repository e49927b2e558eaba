#!/usr/bin/env bash
# demo.sh: the main job on a fresh machine. Installs what it needs, builds, starts vswitchd,
# makes two networks with containers, shows they ping inside a network and not across, prints
# the MAC table and the port counters, then tears everything down.
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
tb_daemon "$bin" "$sock" --log-level warn
ctl() { "$bin/vswitchctl" --socket "$sock" "$@"; }

tb_log "two networks"
ctl network create blue --subnet 10.89.1.0/24 --label demo=yes
ctl network create red --subnet 10.89.2.0/24
tb_undo "'$bin/vswitchctl' --socket '$sock' network rm blue --force"
tb_undo "'$bin/vswitchctl' --socket '$sock' network rm red --force"

tb_log "three containers: blue1, blue2 on blue; red1 on red"
for c in blue1 blue2 red1; do
    tb_netns "vsw-demo-$c"
    ctl attach "${c%[0-9]}" --netns "/run/netns/vsw-demo-$c" --name "$c"
done
ctl network ls
ctl network inspect blue

ip_of() { ctl --json network inspect "$1" | python3 -c "import json,sys; print(next(e['ip'] for e in json.load(sys.stdin)['endpoint_list'] if e['name']=='$2'))"; }
blue2=$(ip_of blue blue2)
red1=$(ip_of red red1)

tb_log "blue1 -> blue2 ($blue2): same network, must answer"
ip netns exec vsw-demo-blue1 ping -c 3 -i 0.2 -W 1 "$blue2"
tb_log "blue1 -> gateway 10.89.1.1: the switch itself answers"
ip netns exec vsw-demo-blue1 ping -c 2 -i 0.2 -W 1 10.89.1.1
tb_log "blue1 -> red1 ($red1): other network, must fail"
if ip netns exec vsw-demo-blue1 ping -c 2 -i 0.2 -W 1 "$red1"; then
    tb_die "isolation broken: blue1 reached red1"
fi
echo "no answer, as it should be: frames never cross networks"

tb_log "vswitchctl fdb show"
ctl fdb show
tb_log "vswitchctl port ls"
ctl port ls
tb_log "demo done; tearing down"
