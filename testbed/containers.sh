#!/usr/bin/env bash
# containers.sh: make N "container" network namespaces, attach them to a network of a running
# vswitchd, run a command (default: an interactive shell), then detach and delete everything.
#
#   testbed/containers.sh [-n N] [-p PREFIX] [-N NETWORK] [-s SUBNET] [-S SOCKET] [-- COMMAND...]
#
# The network is created when missing (and removed at the end if this script created it).
# Inside COMMAND, $TB_CONTAINERS lists the namespace names: `ip netns exec c1 ping c2` (each
# container's resolv.conf points at the network's gateway, which answers for their names).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
trap tb_cleanup EXIT

n=2 prefix=c network=testbed subnet=10.98.0.0/24
sock=${VSWITCH_SOCKET:-/run/vswitch/vswitchd.sock}
while getopts "n:p:N:s:S:h" o; do
    case $o in
        n) n=$OPTARG ;; p) prefix=$OPTARG ;; N) network=$OPTARG ;; s) subnet=$OPTARG ;; S) sock=$OPTARG ;;
        *) sed -n '2,9p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
tb_need_root
ctl=${VSWITCHCTL:-$(command -v vswitchctl || echo "$TB_ROOT/target/debug/vswitchctl")}
export VSWITCH_SOCKET=$sock

if ! "$ctl" network inspect "$network" >/dev/null 2>&1; then
    "$ctl" network create "$network" --subnet "$subnet" >/dev/null
    tb_undo "'$ctl' network rm '$network' --force"
fi
names=()
for i in $(seq "$n"); do
    ns="$prefix$i"
    tb_netns "$ns"
    "$ctl" attach "$network" --netns "/run/netns/$ns" --name "$ns"
    tb_undo "'$ctl' detach '$network' '$ns'"
    tb_resolver "$ns" "$("$ctl" --json network inspect "$network" | python3 -c 'import json,sys; print(json.load(sys.stdin)["gateway"])')"
    names+=("$ns")
done
export TB_CONTAINERS="${names[*]}"
if [ $# -gt 0 ]; then
    "$@"
else
    echo "containers: $TB_CONTAINERS (exit the shell to tear down)"
    "${SHELL:-bash}" -i
fi
