#!/usr/bin/env bash
# run-tests.sh: the whole test suite on a fresh machine (as root): installs the tools the tests
# drive (ping, iperf3, dig, tcpdump, curl), sets up what the rootless tests need (the user
# vswitch-test, /dev/net/tun 0666; both put back on exit), builds, then runs unit, property and
# root integration tests in real network namespaces.
#
# Every test binary runs even when one fails (and both passes run). The closing line,
# `tests: N passed, M failed`, counts the tests of every binary plus, as one failure each, a
# binary that did not build or failed without a failing test (died before its result line, or
# after it), and each fuzz target whose smoke run failed. The exit status is non-zero when
# anything failed, formatting and lints included.
set -uo pipefail # no -e: a failure is counted and the run goes on
. "$(dirname "$0")/lib.sh"
tb_need_root

passed=0 failed=0 failures=() checks=() ran=0
summary() {
    local rc=$? f
    trap - EXIT
    echo
    for f in "${failures[@]}"; do
        echo "FAILED: $f"
    done
    for f in "${checks[@]}"; do
        echo "FAILED check: $f"
    done
    [ $ran = 1 ] || echo "the run stopped before the tests ran (see above)"
    echo "tests: $passed passed, $failed failed"
    tb_cleanup
    if [ $rc = 0 ] && { [ $failed -gt 0 ] || [ ${#checks[@]} -gt 0 ] || [ $ran = 0 ]; }; then
        rc=1
    fi
    exit $rc
}
trap summary EXIT
trap 'echo "run-tests: interrupted" >&2; exit 130' INT TERM

tb_install_deps
cd "$TB_ROOT" || exit 1
out=$(mktemp -d /tmp/vswitch-test-results.XXXXXX)
tb_undo "rm -rf '$out'"
# The rootless root tests run as vswitch-test and open /dev/net/tun as that user.
tb_rootless_user

tb_log "building"
cargo build --workspace --all-targets || checks+=("cargo build --workspace --all-targets")
# The tree stays formatted (rustfmt.toml) and clippy-clean; either failing fails the run.
tb_log "checking formatting and lints"
cargo fmt --all --check || checks+=("cargo fmt --all --check")
cargo clippy -q --workspace --all-targets -- -D warnings || checks+=("cargo clippy -D warnings")

# count FILE RC PASS: adds the results of one `cargo test` run (its output in FILE, its exit
# status RC) to the counts. A binary cargo reports as failed ("error: test failed, to rerun
# pass ...", printed right after it) without a failing test of its own counts as one failure,
# and so does a run that failed with nothing counted (it did not build).
count() {
    local file=$1 rc=$2 pass=$3 line p f
    while IFS= read -r line; do
        case $line in
            P\ *) p=${line#P } && passed=$((passed + p)) ;;
            F\ *) failed=$((failed + 1)) && failures+=("$pass: ${line#F }") ;;
        esac
    done < <(awk '
        # "Running tests/dns.rs (target/debug/deps/dns-HASH)" -> "tests/dns.rs (dns)"
        /^ *(Running|Doc-tests) / {
            bin = $0; sub(/^ *Running /, "", bin); sub(/^ *Doc-tests /, "doc-tests ", bin)
            sub(/\(.*\/deps\//, "(", bin); sub(/-[0-9a-f]+\)$/, ")", bin)
            bad = 0; next
        }
        /^test .* \.\.\. FAILED$/ { print "F " bin ": " $2; bad++; next }
        /^test result:/ { print "P " $4; next }
        /^error: test failed, to rerun pass/ {
            if (bad == 0) { print "F " bin ": exited without a failing test (crashed or panicked outside a test)" }
            bad = 0; next
        }
        /^error: could not compile/ { print "F " $0 }
    ' "$file")
    if [ "$rc" != 0 ] && ! grep -q -e '^test .* \.\.\. FAILED$' -e '^error: test failed, to rerun pass' -e '^error: could not compile' "$file"; then
        failed=$((failed + 1))
        failures+=("$pass: cargo test exited with status $rc before any test failed (see above)")
    fi
}

tb_log "testing"
ran=1
# Root tests share the machine's two cores; two at a time keeps them honest and quick. The
# first pass runs every daemon with two datapath workers (whatever the machine's CPU count),
# the second with one thread reading every TAP, so both datapath shapes are tested. The second
# pass runs the integration tests (`--test '*'`) of the whole workspace: the same feature set as
# the first, so nothing is built twice.
VSWITCH_WORKERS=2 cargo test --workspace --no-fail-fast -- --test-threads=2 2>&1 | tee "$out/pass1.log"
count "$out/pass1.log" "${PIPESTATUS[0]}" "pass 1"
tb_log "root tests again with plain TAPs (--no-offloads) and one datapath thread"
VSWITCH_TEST_OFFLOADS=off VSWITCH_WORKERS=1 cargo test --workspace --test '*' --no-fail-fast -- --test-threads=2 2>&1 | tee "$out/pass2.log"
count "$out/pass2.log" "${PIPESTATUS[0]}" "pass 2 (--no-offloads, 1 worker)"

# Fuzz smoke: a short run of every cargo-fuzz target from its seed corpus (fuzz/corpus/); the
# nightly toolchain's cargo-fuzz is installed when missing (libFuzzer needs nightly; the targets
# are also type-checked on stable). Each target counts as one test; a failing one shows the end
# of its output.
if ! cargo check -q --manifest-path fuzz/Cargo.toml; then
    failed=$((failed + 1)) && failures+=("fuzz: cargo check --manifest-path fuzz/Cargo.toml")
fi
if tb_fuzz_tools; then
    targets=$(cargo +nightly fuzz list --fuzz-dir fuzz) || { failed=$((failed + 1)) && failures+=("fuzz: cargo fuzz list"); targets=; }
    for target in $targets; do
        tb_log "fuzz smoke: $target (20 s)"
        if tb_fuzz_run "$target" -max_total_time=20 >"$out/fuzz-$target.log" 2>&1; then
            tail -n 2 "$out/fuzz-$target.log"
            passed=$((passed + 1))
        else
            tail -n 40 "$out/fuzz-$target.log"
            failed=$((failed + 1)) && failures+=("fuzz smoke: $target (its crash input, if any, is under fuzz/artifacts/$target)")
        fi
    done
else
    failed=$((failed + 1)) && failures+=("fuzz: cannot install what the fuzz smoke needs (nightly toolchain, cargo-fuzz)")
fi
# The EXIT trap (summary) prints what failed and the closing line, and sets the exit status.
