#!/usr/bin/env bash
# vfmig set-up, build, demo and tests on a Debian machine. Safe to run again: it installs only
# what is missing and rebuilds incrementally.
#
#   bash setup.sh demo [vfmig local options]   install, build, migrate a simulated 1 GiB VF on loopback
#   bash setup.sh test                         install, build, run the whole test suite (also under
#                                              AddressSanitizer + UndefinedBehaviorSanitizer)
#   bash setup.sh build                        install and build only (build/vfmig)
#   bash setup.sh bench [QUICK]                install (gnuplot too), build, run the benchmarks of
#                                              bench/RESULTS.md (blackout sweep with its plot, page
#                                              path against a socket pump); QUICK: fewer runs
#   bash setup.sh deps                         install the Debian packages only
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(build-essential cmake pkg-config liblz4-dev libzstd-dev libxxhash-dev libhwloc-dev
          libibverbs-dev librdmacm-dev libssl-dev)
# Only for `test`: the JSON Schema check of the CLI's --json output (tests/test_cli_pkg.sh), and
# the soft-RoCE VM of tests/rdma-vm/run.sh (qemu, cpio, kmod).
TEST_PACKAGES=(python3-jsonschema qemu-system-x86 cpio kmod)
# Only for `bench`: the plot of bench_blackout.
BENCH_PACKAGES=(gnuplot-nox)
JOBS=$(nproc 2>/dev/null || echo 2)

deps() { # [extra packages...]
    local missing=()
    for p in "${PACKAGES[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    echo "setup: installing ${missing[*]}"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# build DIR [cmake options...]
build() {
    local dir=$1
    shift
    local log
    log=$(mktemp)
    echo "setup: building in $dir"
    if ! { cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVFMIG_WERROR=ON "$@" &&
           cmake --build "$dir" -j "$JOBS"; } >"$log" 2>&1; then
        cat "$log"
        rm -f "$log"
        echo "setup: build in $dir failed" >&2
        exit 1
    fi
    rm -f "$log"
}

PASSED=0
FAILED=0
SKIPPED=0
# run_ctest DIR LABEL: runs the suite, keeps the counts for the closing line
run_ctest() {
    local dir=$1 label=$2 log
    log=$(mktemp)
    echo "== tests: $label"
    set +e
    # shellcheck disable=SC2086 # CTEST_ARGS is a list of arguments
    (cd "$dir" && ctest -j "$JOBS" --output-on-failure --timeout 300 ${CTEST_ARGS:-}) 2>&1 | tee "$log"
    set -e
    local total failed skipped
    total=$(sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p' "$log" | tail -n1)
    failed=$(sed -n 's/.* \([0-9]*\) tests failed out of.*/\1/p' "$log" | tail -n1)
    skipped=$(grep -c '(Skipped)' "$log" || true)
    rm -f "$log"
    total=${total:-0}
    failed=${failed:-1}
    PASSED=$((PASSED + total - failed - skipped))
    FAILED=$((FAILED + failed))
    SKIPPED=$((SKIPPED + skipped))
}

cmd=${1:-demo}
shift || true
case "$cmd" in
deps)
    deps
    ;;
build)
    deps
    build build
    echo "setup: built build/vfmig"
    ;;
demo)
    deps
    build build
    echo "setup: live migration of a simulated 1 GiB VF (64 MiB hot set dirtied at 200 MiB/s) over loopback"
    ./build/vfmig local --vram 1G --page 4K --dirty-rate 200M --pattern hot:64M --content mix "$@"
    ;;
test)
    deps "${TEST_PACKAGES[@]}"
    build build
    run_ctest build "release build (-Wall -Wextra -Werror)"
    # Release (-O3) as users build it; installed into a scratch prefix, the examples build out of
    # tree against it (pkg-config, find_package, find_package static) and run.
    build build-release -DCMAKE_BUILD_TYPE=Release -DVFMIG_BUILD_TESTS=OFF -DVFMIG_BUILD_BENCH=OFF
    echo "== install: Release build into a scratch prefix, examples/ built against it"
    if JOBS=$JOBS bash tests/test_install.sh build-release; then
        PASSED=$((PASSED + 1))
    else
        FAILED=$((FAILED + 1))
    fi
    build build-asan -DVFMIG_SANITIZE=address,undefined -DVFMIG_BUILD_BENCH=OFF
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        run_ctest build-asan "AddressSanitizer + UndefinedBehaviorSanitizer build"
    # ThreadSanitizer on the multi-threaded parts: the page pipeline, receivers, the sim's workload,
    # the server's connection threads.
    build build-tsan -DVFMIG_SANITIZE=thread -DVFMIG_BUILD_BENCH=OFF
    TSAN_OPTIONS=halt_on_error=1 CTEST_ARGS="-R ^(migrate_|server_|test_simvf$|test_link_tcp$|test_aead$|example_daemon|test_dirty_sources_(race|migrate)$)" \
        run_ctest build-tsan "ThreadSanitizer build (pipeline, device, link tests)"
    # RDMA for real: soft-RoCE in a QEMU VM (Debian's kernel and rdma-core; ~3-5 min here). It
    # skips, saying why, where qemu or the Debian packages cannot be had.
    echo "== tests: RDMA under soft-RoCE in a VM (tests/rdma-vm/run.sh)"
    set +e
    VFMIG_BUILD_DIR="$PWD/build" VFMIG_RDMA_VM_ASAN_BUILD="$PWD/build-asan" \
        VFMIG_RDMA_VM_TSAN_BUILD="$PWD/build-tsan" bash tests/rdma-vm/run.sh 2>&1 |
        tee build/rdma-vm.log | grep -a -E '^(RESULT|SKIP|rdma-vm:|[0-9]+ passed|throughput)'
    vmrc=${PIPESTATUS[0]}
    set -e
    if [ "$vmrc" -eq 77 ]; then
        SKIPPED=$((SKIPPED + 1))
    else
        vmpass=$(sed -n 's/^\([0-9]*\) passed, [0-9]* failed$/\1/p' build/rdma-vm.log | tail -n1)
        vmfail=$(sed -n 's/^[0-9]* passed, \([0-9]*\) failed$/\1/p' build/rdma-vm.log | tail -n1)
        PASSED=$((PASSED + ${vmpass:-0}))
        FAILED=$((FAILED + ${vmfail:-1}))
        [ "$vmrc" -eq 0 ] || [ "${vmfail:-1}" -gt 0 ] || FAILED=$((FAILED + 1))
    fi
    echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
    [ "$FAILED" -eq 0 ]
    ;;
bench)
    deps "${BENCH_PACKAGES[@]}"
    build build
    runs=9 pairs=3
    if [ "${1:-}" = QUICK ]; then runs=3 pairs=1; fi
    mkdir -p out
    ./build/bench/bench_blackout --runs "$runs" --json-out out/blackout.json --plot out/blackout.png
    bash bench/bench_pagepath.sh build 2G "$pairs"
    echo "setup: figures in out/ (blackout.json, blackout.png)"
    ;;
*)
    echo "usage: bash setup.sh demo|test|build|bench|deps" >&2
    exit 2
    ;;
esac
