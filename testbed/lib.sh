# Shared shell helpers for testbed scripts. Source it; it never runs anything by itself.
# Every helper that makes something registers its undo, and tb_cleanup (on EXIT) undoes all of
# it in reverse order, so a script that fails half way still leaves nothing behind.

TB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TB_UNDO=()

# `==>` lines in bold on a terminal, plain text in a log file or a pipe.
tb_log() {
    if [ -t 2 ]; then
        printf '\033[1m==> %s\033[0m\n' "$*" >&2
    else
        printf '==> %s\n' "$*" >&2
    fi
}
tb_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

tb_need_root() {
    [ "$(id -u)" -eq 0 ] || tb_die "this script needs root (network namespaces and TAPs): run it with sudo"
}

# Install the Debian packages the testbed uses, once per machine.
tb_install_deps() {
    local need=()
    command -v ip >/dev/null || need+=(iproute2)
    command -v ping >/dev/null || need+=(iputils-ping)
    command -v iperf3 >/dev/null || need+=(iperf3)
    command -v dig >/dev/null || need+=(dnsutils)
    command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
    command -v tcpdump >/dev/null || need+=(tcpdump)
    command -v curl >/dev/null || need+=(curl)
    command -v python3 >/dev/null || need+=(python3)
    if [ ${#need[@]} -gt 0 ]; then
        tb_log "installing ${need[*]}"
        tb_apt_get -qq update && tb_apt_get install -y -qq "${need[@]}" >/dev/null \
            || tb_die "apt-get install ${need[*]} failed"
    fi
    if ! command -v cargo >/dev/null; then
        tb_die "cargo not found: install a Rust toolchain (rustup) first"
    fi
    tb_build_deps
}

# tb_build_deps: what building the workspace needs from Debian besides Rust, installed only
# when missing: libpcap-dev (vswitchd compiles `capture --filter` expressions with libpcap),
# protoc and the protobuf well-known types (protobuf-compiler, libprotobuf-dev) for the etcd
# client of cluster mode.
tb_build_deps() {
    local need=()
    [ -e /usr/include/pcap/pcap.h ] || need+=(libpcap-dev)
    command -v protoc >/dev/null || need+=(protobuf-compiler)
    [ -e /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
    if [ ${#need[@]} -gt 0 ]; then
        tb_log "installing ${need[*]} (to build vswitchd)"
        tb_apt_get -qq update >/dev/null && tb_apt_get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
            || tb_die "apt-get install ${need[*]} failed"
    fi
}

# tb_apt_get ARGS...: apt-get ARGS, noninteractive, waiting up to 5 minutes for another apt-get
# or dpkg that holds a lock (a fresh machine often runs unattended upgrades) instead of failing:
# DPkg::Lock::Timeout waits for dpkg's lock; the lists and archive locks (`apt-get update`, a
# download) are waited for here, by retrying while apt says it could not get a lock.
tb_apt_get() {
    local deadline=$((SECONDS + 300)) out rc said=
    while :; do
        out=$(DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 "$@" 2>&1) && rc=0 || rc=$?
        if [ $rc = 0 ]; then
            [ -z "$out" ] || printf '%s\n' "$out"
            return 0
        fi
        case $out in
            *"Could not get lock"* | *"Unable to acquire the dpkg frontend lock"* | *"Unable to lock directory"*)
                if [ $SECONDS -lt $deadline ]; then
                    [ -n "$said" ] || tb_log "waiting for another apt-get or dpkg to let go of its lock (up to 5 minutes)"
                    said=1
                    sleep 3
                    continue
                fi ;;
        esac
        printf '%s\n' "$out" >&2
        return $rc
    done
}

tb_undo() { TB_UNDO+=("$*"); }

tb_cleanup() {
    local i
    for ((i = ${#TB_UNDO[@]} - 1; i >= 0; i--)); do
        eval "${TB_UNDO[$i]}" >/dev/null 2>&1 || true
    done
    TB_UNDO=()
}

# tb_cpu_cgroup NAME CPUS: a cgroup that holds its processes to CPUS cores (e.g. 0.5), as a
# runtime's --cpus does; removed on exit. Sets TB_CGROUP_PROCS to the file a pid is written
# into (cgroup.procs in the cpu controller's hierarchy, v2 or v1).
tb_cpu_cgroup() {
    local name=$1 cpus=$2 dir quota
    quota=$(awk -v c="$cpus" 'BEGIN { printf "%d", c * 100000 }')
    [ "$quota" -gt 0 ] || tb_die "tb_cpu_cgroup: CPUS must be above 0 (got $cpus)"
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        dir=/sys/fs/cgroup/$name
        mkdir "$dir" && echo "$quota 100000" >"$dir/cpu.max" || tb_die "cannot make cgroup $dir"
    else
        dir=/sys/fs/cgroup/cpu/$name
        mkdir "$dir" && echo 100000 >"$dir/cpu.cfs_period_us" && echo "$quota" >"$dir/cpu.cfs_quota_us" \
            || tb_die "cannot make cgroup $dir"
    fi
    tb_undo "rmdir $dir"
    TB_CGROUP_PROCS=$dir/cgroup.procs
}

# tb_netns NAME: a "container" network namespace, deleted on exit.
tb_netns() {
    ip netns add "$1" || tb_die "cannot create netns $1"
    tb_undo "ip netns del '$1'"
    ip -n "$1" link set lo up
}

# tb_resolver NETNS SERVER: point the namespace's resolv.conf (as `ip netns exec` mounts it:
# /etc/netns/NETNS/resolv.conf) at SERVER, removed on exit.
tb_resolver() {
    mkdir -p "/etc/netns/$1"
    printf 'nameserver %s\noptions timeout:1 attempts:2\n' "$2" > "/etc/netns/$1/resolv.conf"
    tb_undo "rm -rf '/etc/netns/$1'"
}

# tb_build [release]: build the workspace binaries; prints the target directory.
tb_build() {
    local profile=${1:-debug}
    local flag=()
    [ "$profile" = release ] && flag=(--release)
    tb_build_deps
    (cd "$TB_ROOT" && cargo build -q "${flag[@]}" -p vswitch -p ctl) >&2 || tb_die "cargo build failed"
    echo "$TB_ROOT/target/$profile"
}

# tb_daemon BIN_DIR SOCKET [vswitchd args...]: start vswitchd in the background, wait for its
# socket, stop it (SIGTERM) on exit.
tb_daemon() {
    local bin=$1 sock=$2
    shift 2
    "$bin/vswitchd" --socket "$sock" --state-dir "$(dirname "$sock")/state" "$@" &
    local pid=$!
    tb_undo "kill -TERM $pid; wait $pid"
    local i
    for i in $(seq 100); do
        [ -S "$sock" ] && return 0
        kill -0 "$pid" 2>/dev/null || tb_die "vswitchd exited during start"
        sleep 0.05
    done
    tb_die "vswitchd did not create $sock"
}

# Benchmarks: tb_bench_scratch NAME makes a scratch directory in $run and an EXIT trap that, on
# failure, shows the tail of every log in it, then undoes everything (tb_cleanup), stops the
# watchdog and removes $run. tb_bench_watchdog NAME SECONDS stops the whole script (SIGTERM)
# if it runs longer; the watchdog's own sleep goes with it.
tb_bench_scratch() {
    TB_BENCH=$1
    run=$(mktemp -d "/tmp/vswitch-$1.XXXXXX")
    TB_WATCHDOG=
    trap tb_bench_exit EXIT
    trap 'echo "$TB_BENCH: interrupted" >&2; exit 130' INT TERM
}

tb_bench_exit() {
    local rc=$? f
    trap - EXIT
    if [ $rc != 0 ]; then
        for f in "$run"/*.log "$run"/*/*.log; do
            [ -s "$f" ] && { echo "--- last lines of $f:"; tail -n 15 "$f"; } >&2
        done
    fi
    tb_cleanup
    [ -n "${TB_WATCHDOG:-}" ] && kill "$TB_WATCHDOG" 2>/dev/null
    rm -rf "$run"
    exit $rc
}

tb_bench_watchdog() {
    local name=$1 limit=$2 main=$$
    (
        trap 'kill "$sp" 2>/dev/null; exit 0' TERM
        sleep "$limit" </dev/null >/dev/null 2>&1 &
        sp=$!
        wait "$sp" && { echo "$name: watchdog: over ${limit}s, stopping" >&2; kill -TERM "$main"; }
    ) </dev/null &
    TB_WATCHDOG=$!
}

# tb_rootless_user: sets TB_RL_USER to the unprivileged user that rootless tests and benchmarks
# run as (vswitch-test: a system user made here if missing, and then removed on exit), and opens
# /dev/net/tun to everyone (tb_tun_for_everyone). Call it directly, not in $(...): the undo it
# registers must reach the script's own tb_cleanup.
tb_rootless_user() {
    TB_RL_USER=vswitch-test
    if ! id -u "$TB_RL_USER" >/dev/null 2>&1; then
        tb_log "making the user $TB_RL_USER for the rootless runs (removed on exit)"
        useradd --system --no-create-home --shell /usr/sbin/nologin "$TB_RL_USER" >/dev/null \
            || tb_die "cannot create user $TB_RL_USER"
        tb_undo "tb_userdel '$TB_RL_USER'"
    fi
    tb_tun_for_everyone
}

# tb_userdel USER: removes USER once its last process is gone (a daemon stopping, a container
# being killed), trying for up to 10 s.
tb_userdel() {
    local _
    for _ in $(seq 100); do
        userdel "$1" 2>/dev/null && return 0
        id -u "$1" >/dev/null 2>&1 || return 0
        sleep 0.1
    done
    echo "warning: could not remove the user $1 (userdel $1)" >&2
    return 1
}

# tb_tun_for_everyone: rootless TAPs need /dev/net/tun open to everyone (0666, as mainstream
# distributions ship it; some ship 0600). Sets that when it is not so, says so, and puts the mode
# it found back on exit.
tb_tun_for_everyone() {
    local mode
    mode=$(stat -c %a /dev/net/tun) || tb_die "no /dev/net/tun (is the tun module loaded?)"
    [ "$mode" = 666 ] && return 0
    tb_log "/dev/net/tun is 0$mode: setting 0666 for the rootless runs (restored on exit)"
    chmod 0666 /dev/net/tun || tb_die "cannot chmod 0666 /dev/net/tun"
    tb_undo "chmod 0$mode /dev/net/tun"
}

# tb_apt CMD=PACKAGE...: installs, in one apt-get run, the packages whose command is missing.
tb_apt() {
    local need=() p
    for p in "$@"; do
        command -v "${p%%=*}" >/dev/null || need+=("${p#*=}")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    tb_log "installing ${need[*]}"
    tb_apt_get -qq update >/dev/null && tb_apt_get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
        || tb_die "apt-get install ${need[*]} failed"
}

# tb_release_bins BUILD [BENCH_BIN...]: with BUILD=1, builds vswitchd and vswitchctl (and the
# named binaries of the benches crate) in release. Sets $bin to target/release, checks that the
# binaries are there, and sets vsd_args to `--dns-upstream none` when the daemon has that
# option (a benchmark never forwards DNS to the machine's own resolver).
tb_release_bins() {
    local build=$1 b
    shift
    bin=$TB_ROOT/target/release
    if [ "$build" = 1 ]; then
        tb_log "building vswitchd, vswitchctl${*:+, $*} (release)"
        tb_build_deps
        (cd "$TB_ROOT" && cargo build -q --release -p vswitch -p ctl) || tb_die "cargo build failed"
        for b in "$@"; do
            # --all-features: tapcopy needs the benches crate's `tapcopy` feature.
            (cd "$TB_ROOT" && cargo build -q --release -p vswitch-benches --all-features --bin "$b") || tb_die "cargo build failed"
        done
    fi
    for b in vswitchd vswitchctl "$@"; do
        [ -x "$bin/$b" ] || tb_die "no $bin/$b: build it first"
    done
    vsd_args=()
    case $("$bin/vswitchd" --help 2>&1) in *--dns-upstream*) vsd_args+=(--dns-upstream none) ;; esac
}

# tb_positive WHAT VALUE...: dies with "WHAT take positive integers" unless every VALUE is one.
tb_positive() {
    local what=$1 x
    shift
    for x in "$@"; do
        [[ $x =~ ^[0-9]+$ && $x -ge 1 ]] || tb_die "$what take positive integers"
    done
}

# tb_median NUMBER...: the median of the arguments that are numbers ("-" when none are).
tb_median() { printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.10g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# tb_ratio A B: A / B to two decimals, "n/a" unless both are numbers and B is not 0.
tb_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
# tb_diff A B [DECIMALS]: A - B to DECIMALS (default 3) decimals, "-" unless both are numbers.
tb_diff() { awk -v a="$1" -v b="$2" -v d="${3:-3}" 'BEGIN { if (a !~ /^-?[0-9.]+$/ || b !~ /^-?[0-9.]+$/) print "-"; else printf "%." d "f", a - b }'; }

# tb_report FILE WRITE: prints a benchmark's report; with WRITE=1 also appends it to
# benches/RESULTS.md (append only: another bench may be appending too).
tb_report() {
    echo
    cat "$1"
    if [ "$2" = 1 ]; then
        { echo; cat "$1"; } >>"$TB_ROOT/benches/RESULTS.md"
        tb_log "appended to benches/RESULTS.md"
    fi
}

# ---- rootless stage (rootless-demo.sh, benches/rootless-bench.sh) ---------------------------
# tb_rootless_stage HOSTNS DIR (not in $(...): it registers undos): what follows runs as the
# unprivileged user of tb_rootless_user
# inside the namespace HOSTNS, with XDG_RUNTIME_DIR=DIR/xdg (0700) and XDG_DATA_HOME=HOME=
# DIR/data. Sets TB_RL_USER, TB_RL_UID and TB_RL_GID.
tb_rootless_stage() {
    TB_RL_NS=$1 TB_RL_DIR=$2
    tb_rootless_user
    TB_RL_UID=$(id -u "$TB_RL_USER") TB_RL_GID=$(id -g "$TB_RL_USER")
    chmod 755 "$TB_RL_DIR"
    mkdir -p "$TB_RL_DIR/xdg" "$TB_RL_DIR/data"
    chown "$TB_RL_UID:$TB_RL_GID" "$TB_RL_DIR/xdg" "$TB_RL_DIR/data"
    chmod 700 "$TB_RL_DIR/xdg"
}

# tb_as_user CMD...: CMD as that user in HOSTNS. tb_user_bg CMD...: the same in the
# background; every step execs the next, so $! is the pid of CMD itself. The variables ride
# in the environment and setpriv execs CMD itself: an `env` run as the user could not exec a
# binary of a checkout that lies under a directory closed to the user (a 0700 mktemp -d).
tb_as_user() {
    XDG_RUNTIME_DIR="$TB_RL_DIR/xdg" XDG_DATA_HOME="$TB_RL_DIR/data" HOME="$TB_RL_DIR/data" \
        ip netns exec "$TB_RL_NS" setpriv --reuid "$TB_RL_UID" --regid "$TB_RL_GID" --clear-groups -- "$@"
}
tb_user_bg() {
    (XDG_RUNTIME_DIR="$TB_RL_DIR/xdg" XDG_DATA_HOME="$TB_RL_DIR/data" HOME="$TB_RL_DIR/data" \
        exec ip netns exec "$TB_RL_NS" setpriv --reuid "$TB_RL_UID" --regid "$TB_RL_GID" --clear-groups -- "$@") &
}

# tb_in_ns PID CMD...: CMD as the user inside the user and network namespaces of process PID.
tb_in_ns() {
    local pid=$1
    shift
    tb_as_user nsenter -t "$pid" -U -n --preserve-credentials -- "$@"
}

# tb_wait_user_ns PID: until the user can enter PID's namespaces (the exec chain from
# `ip netns exec`, which runs as root, to the command itself takes a moment).
tb_wait_user_ns() {
    for _ in $(seq 100); do
        tb_in_ns "$1" true 2>/dev/null && return 0
        sleep 0.05
    done
    tb_die "cannot enter the namespaces of pid $1"
}

# tb_user_daemon BIN [ARGS...]: BIN/vswitchd as the user (rootless), stopped on exit; returns
# once its socket is there. Sets TB_RL_VPID, TB_RL_SOCK and TB_RL_USERNS (the netns helper's
# pid: containers are made in its user namespace).
tb_user_daemon() {
    local bin=$1
    shift
    TB_RL_SOCK=$TB_RL_DIR/xdg/vswitch/vswitchd.sock
    tb_user_bg "$bin/vswitchd" "$@"
    TB_RL_VPID=$!
    tb_undo "kill -TERM $TB_RL_VPID; sleep 1"
    for _ in $(seq 100); do
        [ -S "$TB_RL_SOCK" ] && break
        kill -0 "$TB_RL_VPID" 2>/dev/null || tb_die "vswitchd exited during start"
        sleep 0.05
    done
    TB_RL_USERNS=$(tb_as_user "$bin/vswitchctl" --socket "$TB_RL_SOCK" --json version | python3 -c 'import json,sys; print(json.load(sys.stdin).get("userns_pid") or "")')
    [ -n "$TB_RL_USERNS" ] || tb_die "vswitchd did not report its user namespace (is it rootless?)"
}

# tb_user_container: a "container" of the rootless daemon: the user's `sleep` in a new network
# namespace inside the daemon's user namespace, loopback up, killed on exit; its pid in TB_CPID.
tb_user_container() {
    tb_user_bg nsenter -t "$TB_RL_USERNS" -U --preserve-credentials -- unshare -n sleep 100000 >/dev/null 2>&1
    TB_CPID=$!
    tb_undo "kill $TB_CPID"
    tb_wait_user_ns "$TB_CPID"
    tb_in_ns "$TB_CPID" ip link set lo up
}

# tb_veth_pair NS_A IF_A CIDR_A NS_B IF_B CIDR_B: a veth pair between two namespaces (which the
# caller made, so it goes with them), each end addressed and up.
tb_veth_pair() {
    ip -n "$1" link add "$2" type veth peer name "$5" netns "$4" || tb_die "cannot make the veth pair $2/$5"
    ip -n "$1" addr add "$3" dev "$2"
    ip -n "$4" addr add "$6" dev "$5"
    ip -n "$1" link set "$2" up
    ip -n "$4" link set "$5" up
}

# tb_fuzz_tools: make sure the fuzz smoke can run: a nightly toolchain (libFuzzer needs it)
# and cargo-fuzz; installs what is missing. Returns non-zero when that fails.
tb_fuzz_tools() {
    if ! cargo +nightly --version >/dev/null 2>&1; then
        command -v rustup >/dev/null || return 1
        tb_log "installing the nightly toolchain (for cargo-fuzz)"
        rustup toolchain install nightly --profile minimal >/dev/null || return 1
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        tb_log "installing cargo-fuzz"
        cargo install cargo-fuzz --locked >/dev/null || return 1
    fi
}

# tb_fuzz_run TARGET ARGS...: run one cargo-fuzz target from the repo's fuzz/ directory with
# its seed corpus (fuzz/corpus/TARGET, read only) and a scratch corpus for what it finds;
# ARGS go to libFuzzer (e.g. -runs=N or -max_total_time=S).
tb_fuzz_run() {
    local target=$1
    shift
    local scratch
    scratch=$(mktemp -d "/tmp/vswitch-fuzz-$target.XXXXXX")
    mkdir -p "$TB_ROOT/fuzz/corpus/$target"
    (cd "$TB_ROOT" && cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$scratch" "fuzz/corpus/$target" -- -rss_limit_mb=2048 "$@")
    local rc=$?
    rm -rf "$scratch"
    return $rc
}

# ---- podman with the CNI backend (benches/cni-bench.sh) ---------------------------------------
# tb_podman_stage DIR PLUGIN_DIR (not in $(...): it registers undos): rootful podman with the CNI
# backend and state of its own under DIR, as ../shared/RUNTIMES.md says it works here (runc, not
# crun; explicit ulimits; cgroupfs; vfs storage; the engine's tmp dir and file locks under DIR so
# the machine's podman is never touched; no port reservation: podman would bind each -p port
# itself after the plugin's ADD, and vswitchd has bound it then); conflists go in DIR/cni (tb_podman_conflist), plugins
# come from PLUGIN_DIR, then /usr/lib/cni. Installs what is missing from Debian, imports the
# busybox-static image localhost/bb:latest, and exports CONTAINERS_CONF and
# CONTAINERS_STORAGE_CONF. On exit: every container removed, any conmon of DIR killed, mounts
# below DIR undone.
tb_podman_stage() {
    local dir=$1 plugins=$2 need=() p
    for p in podman runc conmon containernetworking-plugins busybox-static; do
        dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q ' installed$' || need+=("$p")
    done
    if [ ${#need[@]} -gt 0 ]; then
        tb_log "installing ${need[*]}"
        tb_apt_get -qq update >/dev/null && tb_apt_get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
            || tb_die "apt-get install ${need[*]} failed"
    fi
    mkdir -p "$dir"/{cni,graph,run,tmp,rootfs/{bin,etc,proc,sys,dev,tmp}}
    cat >"$dir/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"

[network]
network_backend = "cni"
cni_plugin_dirs = ["$plugins", "/usr/lib/cni"]
network_config_dir = "$dir/cni"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$dir/tmp"
lock_type = "file"
enable_port_reservation = false
CONF
    printf '[storage]\ndriver = "vfs"\ngraphroot = "%s/graph"\nrunroot = "%s/run"\n' "$dir" "$dir" >"$dir/storage.conf"
    export CONTAINERS_CONF=$dir/containers.conf CONTAINERS_STORAGE_CONF=$dir/storage.conf
    tb_undo "tb_podman_unstage '$dir'"
    cp /bin/busybox "$dir/rootfs/bin/"
    for p in sh ping ip sleep cat nslookup wget ifconfig route udhcpc nc netstat true; do ln -s busybox "$dir/rootfs/bin/$p"; done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$dir/rootfs/etc/passwd"
    tar -C "$dir/rootfs" -cf "$dir/bb.tar" . && rm -rf "$dir/rootfs"
    podman import --change 'CMD ["/bin/sh"]' "$dir/bb.tar" localhost/bb:latest >/dev/null 2>&1 || tb_die "podman import failed"
    rm -f "$dir/bb.tar"
}

tb_podman_unstage() {
    local dir=$1 pid m
    podman rm -af -t 0 >/dev/null 2>&1
    for pid in $(pgrep -x conmon); do
        grep -qF "$dir" "/proc/$pid/cmdline" 2>/dev/null && kill -KILL "$pid"
    done
    awk -v d="$dir" 'index($5, d) == 1 { print length($5), $5 }' /proc/self/mountinfo | sort -rn | cut -d' ' -f2- |
        while read -r m; do umount -l "$m"; done
    rm -rf "$dir"
}

# tb_podman_conflist NAME JSON: the network NAME of the podman of tb_podman_stage.
tb_podman_conflist() { printf '%s\n' "$2" >"$(dirname "$CONTAINERS_CONF")/cni/$1.conflist"; }

# tb_rtt_series NS IP COUNT INTERVAL FILE: COUNT pings INTERVAL s apart from namespace NS to IP
# (after one to resolve and learn addresses); every reply's time (ms) goes to FILE. Prints
# "MEAN P50 P99 LOST" (ms, ms, ms, pings unanswered); "- - - COUNT" when none came back.
tb_rtt_series() {
    local ns=$1 ip=$2 count=$3 interval=$4 file=$5
    ip netns exec "$ns" ping -c 1 -W 2 "$ip" >/dev/null 2>&1 || true
    ip netns exec "$ns" ping -n -c "$count" -i "$interval" -W 1 "$ip" 2>/dev/null \
        | sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' >"$file" || true
    tb_rtt_stats "$file" "$count"
}

# tb_rtt_stats FILE COUNT: of the times (ms, one per line) in FILE, out of COUNT tries, prints
# "MEAN P50 P99 LOST"; "- - - COUNT" when FILE has none.
tb_rtt_stats() {
    local file=$1 count=$2
    sort -g "$file" | awk -v want="$count" '{ v[NR] = $1; s += $1 }
        END { if (NR == 0) { print "- - - " want; exit }
              p50 = v[int((NR - 1) * 0.50) + 1]; p99 = v[int((NR - 1) * 0.99) + 1]
              printf "%.3f %.3f %.3f %d\n", s / NR, p50, p99, want - NR }'
}

# tb_iperf3_server NS IP LOG: starts `iperf3 -s -B IP` in namespace NS (output to LOG), stops it
# on exit, and waits (up to 5 s) until it listens. Its pid is left in TB_IPERF3_PID.
tb_iperf3_server() {
    local ns=$1 ip=$2 log=$3 i
    ip netns exec "$ns" iperf3 -s -B "$ip" >"$log" 2>&1 &
    TB_IPERF3_PID=$!
    tb_undo "kill $TB_IPERF3_PID; wait $TB_IPERF3_PID"
    for i in $(seq 50); do
        ip netns exec "$ns" ss -Hltn "sport = :5201" 2>/dev/null | grep -q . && break
        sleep 0.1
    done
}
