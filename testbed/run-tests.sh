#!/usr/bin/env bash
# run-tests.sh: the whole test suite on a fresh machine (as root): installs the tools the tests
# drive (ping, iperf3, dig, tcpdump, curl), builds, then runs unit, property and root
# integration tests in real network namespaces.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
tb_need_root
tb_install_deps
cd "$TB_ROOT"
tb_log "building"
cargo build --workspace --all-targets
tb_log "testing"
# Root tests share the machine's two cores; two at a time keeps them honest and quick.
cargo test --workspace -- --test-threads=2
tb_log "root tests again with plain TAPs (--no-offloads)"
VSWITCH_TEST_OFFLOADS=off cargo test -p testbed -- --test-threads=2
