#!/usr/bin/env bash
# rootless-demo.sh: vswitchd run by an ordinary user. Root only prepares the stage: the user
# (vswitch-test), a "host" namespace with a web server on its loopback and a neighbour
# ("outside") with another. Everything else runs as the user: vswitchd (rootless, egress on),
# two containers made in the daemon's user namespace that ping and resolve each other by name,
# fetch from the host's loopback and from the outside, and a published port through which the
# outside reaches a container that sees the client's own address. Then everything goes.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
trap tb_cleanup EXIT
tb_need_root
tb_install_deps

tb_log "building (release)"
bin=$(tb_build release)
run=$(mktemp -d /tmp/vswitch-rootless-demo.XXXXXX)
tb_undo "rm -rf '$run'"
mkdir -p "$run/www"
echo "hello from the host's loopback" >"$run/www/index.html"

tb_log "stage (as root): host namespace with a loopback web server, and an outside neighbour"
host=vsw-rl-host out=vsw-rl-out
tb_netns "$host"
tb_netns "$out"
tb_rootless_stage "$host" "$run"
tb_veth_pair "$host" vsw-rl-h 198.18.77.2/24 "$out" vsw-rl-o 198.18.77.1/24
ip netns exec "$host" sysctl -qw net.ipv4.ping_group_range="$TB_RL_GID $TB_RL_GID"
ip netns exec "$host" python3 -m http.server 8080 --bind 127.0.0.1 --directory "$run/www" >/dev/null 2>&1 &
tb_undo "kill $!"

tb_log "vswitchd as $TB_RL_USER (rootless: no capability, socket and state under XDG dirs)"
tb_user_daemon "$bin" --log-level warn --dns-upstream none
ctl() { tb_as_user "$bin/vswitchctl" "$@"; }
ctl version

tb_log "a network whose containers may reach the host's loopback port 8080 at the gateway"
ctl network create web --subnet 10.89.7.0/24 --host-loopback 8080
declare -A pid
for c in web1 web2; do
    tb_user_container
    pid[$c]=$TB_CPID
    ctl attach web --pid "${pid[$c]}" --name "$c"
done
ctl network inspect web

tb_log "web1 -> web2 by name (the gateway answers DNS), and by address"
web2=$(tb_in_ns "${pid[web1]}" dig +short @10.89.7.1 web2)
echo "web2 is $web2"
tb_in_ns "${pid[web1]}" ping -c 2 -i 0.2 -W 1 "$web2"
tb_log "web1 -> the host's loopback web server, at the gateway's address"
tb_in_ns "${pid[web1]}" curl -sS -m 5 http://10.89.7.1:8080/
tb_log "web1 -> the outside neighbour: ping through an unprivileged ping socket"
tb_in_ns "${pid[web1]}" ping -c 2 -i 0.2 -W 1 198.18.77.1

tb_log "publish host 198.18.77.2:8443 -> web2:80; the outside connects, web2 sees who"
tb_user_bg nsenter -t "${pid[web2]}" -U -n --preserve-credentials -- python3 -c \
    "import socket
s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',80));s.listen(4)
while True:
 c,a=s.accept();c.sendall(('web2 sees you as %s:%d\n'%a).encode());c.close()"
tb_undo "kill $!"
for _ in $(seq 100); do tb_in_ns "${pid[web2]}" ss -Htln 'sport = :80' | grep -q . && break; sleep 0.05; done
ctl publish web web2 198.18.77.2:8443 80
ctl published
ip netns exec "$out" python3 -c "import socket; print(socket.create_connection(('198.18.77.2',8443),timeout=3).recv(100).decode().strip())"

tb_log "egress counters"
ctl egress
tb_log "done: everything is torn down on exit"
