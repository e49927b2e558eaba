#!/usr/bin/env bash
# run-tests.sh: the whole test suite on a fresh machine (as root): installs the tools the tests
# drive (ping, iperf3, dig, tcpdump, curl), builds, then runs unit, property and root
# integration tests in real network namespaces.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
tb_need_root
tb_install_deps
cd "$TB_ROOT"
results=$(mktemp /tmp/vswitch-test-results.XXXXXX)
trap 'rm -f "$results"' EXIT
tb_log "building"
cargo build --workspace --all-targets
# The tree stays formatted (rustfmt.toml) and clippy-clean; either failing fails the run.
tb_log "checking formatting and lints"
cargo fmt --all --check
cargo clippy -q --workspace --all-targets -- -D warnings
tb_log "testing"
# Root tests share the machine's two cores; two at a time keeps them honest and quick. The
# first pass runs every daemon with two datapath workers (whatever the machine's CPU count),
# the second with one thread reading every TAP, so both datapath shapes are tested.
VSWITCH_WORKERS=2 cargo test --workspace -- --test-threads=2 2>&1 | tee -a "$results"
tb_log "root tests again with plain TAPs (--no-offloads) and one datapath thread"
VSWITCH_TEST_OFFLOADS=off VSWITCH_WORKERS=1 cargo test -p testbed -- --test-threads=2 2>&1 | tee -a "$results"

# Fuzz smoke: a short run of every cargo-fuzz target from its seed corpus (fuzz/corpus/);
# nightly and cargo-fuzz are installed when missing (libFuzzer needs nightly; the targets are
# also type-checked on stable). A crash fails the run.
cargo check -q --manifest-path fuzz/Cargo.toml
tb_fuzz_tools || tb_die "cannot install what the fuzz smoke needs (nightly toolchain, cargo-fuzz)"
for target in $(cargo +nightly fuzz list --fuzz-dir fuzz); do
    tb_log "fuzz smoke: $target (20 s)"
    tb_fuzz_run "$target" -max_total_time=20 2>&1 | tail -n 2
    [ "${PIPESTATUS[0]}" -eq 0 ] || tb_die "fuzz target $target failed (see fuzz/artifacts/$target)"
done

# One closing line over every cargo test run above.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$results"
