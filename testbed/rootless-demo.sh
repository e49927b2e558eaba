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
user=$(tb_rootless_user)
uid=$(id -u "$user") gid=$(id -g "$user")
run=$(mktemp -d /tmp/vswitch-rootless-demo.XXXXXX)
tb_undo "rm -rf '$run'"
chmod 755 "$run"
mkdir -p "$run/xdg" "$run/data" "$run/www"
chown "$uid:$gid" "$run/xdg" "$run/data"
chmod 700 "$run/xdg"
echo "hello from the host's loopback" >"$run/www/index.html"

tb_log "stage (as root): host namespace with a loopback web server, and an outside neighbour"
host=vsw-rl-host out=vsw-rl-out
tb_netns "$host"
tb_netns "$out"
ip link add vsw-rl-h type veth peer name vsw-rl-o
ip link set vsw-rl-h netns "$host"
ip link set vsw-rl-o netns "$out"
ip -n "$host" addr add 198.18.77.2/24 dev vsw-rl-h && ip -n "$host" link set vsw-rl-h up
ip -n "$out" addr add 198.18.77.1/24 dev vsw-rl-o && ip -n "$out" link set vsw-rl-o up
ip netns exec "$host" sysctl -qw net.ipv4.ping_group_range="$gid $gid"
ip netns exec "$host" python3 -m http.server 8080 --bind 127.0.0.1 --directory "$run/www" >/dev/null 2>&1 &
tb_undo "kill $!"

# as_user CMD: CMD as the user in the host namespace; user_bg: the same in the background, with
# $! the pid of CMD itself (every step execs the next).
as_user() {
    ip netns exec "$host" setpriv --reuid "$uid" --regid "$gid" --clear-groups \
        env XDG_RUNTIME_DIR="$run/xdg" XDG_DATA_HOME="$run/data" "$@"
}
user_bg() {
    (exec ip netns exec "$host" setpriv --reuid "$uid" --regid "$gid" --clear-groups \
        env XDG_RUNTIME_DIR="$run/xdg" XDG_DATA_HOME="$run/data" "$@") &
}
in_c() { local pid=$1; shift; as_user nsenter -t "$pid" -U -n --preserve-credentials -- "$@"; }

tb_log "vswitchd as $user (rootless: no capability, socket and state under XDG dirs)"
user_bg "$bin/vswitchd" --log-level warn --dns-upstream none
vpid=$!
tb_undo "kill -TERM $vpid; sleep 1"
sock=$run/xdg/vswitch/vswitchd.sock
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
ctl() { as_user "$bin/vswitchctl" "$@"; }
ctl version
hp=$(ctl --json version | python3 -c 'import json,sys; print(json.load(sys.stdin)["userns_pid"])')

tb_log "a network whose containers may reach the host's loopback port 8080 at the gateway"
ctl network create web --subnet 10.89.7.0/24 --host-loopback 8080
declare -A pid
for c in web1 web2; do
    user_bg nsenter -t "$hp" -U --preserve-credentials -- unshare -n sleep 100000
    pid[$c]=$!
    tb_undo "kill ${pid[$c]}"
    for _ in $(seq 100); do in_c "${pid[$c]}" true 2>/dev/null && break; sleep 0.05; done
    in_c "${pid[$c]}" ip link set lo up
    ctl attach web --pid "${pid[$c]}" --name "$c"
done
ctl network inspect web

tb_log "web1 -> web2 by name (the gateway answers DNS), and by address"
web2=$(in_c "${pid[web1]}" dig +short @10.89.7.1 web2)
echo "web2 is $web2"
in_c "${pid[web1]}" ping -c 2 -i 0.2 -W 1 "$web2"
tb_log "web1 -> the host's loopback web server, at the gateway's address"
in_c "${pid[web1]}" curl -sS -m 5 http://10.89.7.1:8080/
tb_log "web1 -> the outside neighbour: ping through an unprivileged ping socket"
in_c "${pid[web1]}" ping -c 2 -i 0.2 -W 1 198.18.77.1

tb_log "publish host 198.18.77.2:8443 -> web2:80; the outside connects, web2 sees who"
user_bg nsenter -t "${pid[web2]}" -U -n --preserve-credentials -- python3 -c \
    "import socket
s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',80));s.listen(4)
while True:
 c,a=s.accept();c.sendall(('web2 sees you as %s:%d\n'%a).encode());c.close()"
tb_undo "kill $!"
for _ in $(seq 100); do in_c "${pid[web2]}" ss -Htln 'sport = :80' | grep -q . && break; sleep 0.05; done
ctl publish web web2 198.18.77.2:8443 80
ctl published
ip netns exec "$out" python3 -c "import socket; print(socket.create_connection(('198.18.77.2',8443),timeout=3).recv(100).decode().strip())"

tb_log "egress counters"
ctl egress
tb_log "done: everything is torn down on exit"
