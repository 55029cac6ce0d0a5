#!/usr/bin/env bash
# vfmig set-up, build, demo and tests on a Debian machine. Safe to run again: it installs only
# what is missing and rebuilds incrementally.
#
#   bash setup.sh demo [vfmig local options]   install, build, migrate a simulated 1 GiB VF on loopback
#   bash setup.sh test                         install, build, run the whole test suite (also under
#                                              AddressSanitizer + UndefinedBehaviorSanitizer)
#   bash setup.sh build                        install and build only (build/vfmig)
#   bash setup.sh deps                         install the Debian packages only
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(build-essential cmake pkg-config liblz4-dev libzstd-dev libxxhash-dev libhwloc-dev
          libibverbs-dev librdmacm-dev libssl-dev)
JOBS=$(nproc 2>/dev/null || echo 2)

deps() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
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
    deps
    build build
    run_ctest build "release build (-Wall -Wextra -Werror)"
    build build-asan -DVFMIG_SANITIZE=address,undefined -DVFMIG_BUILD_BENCH=OFF
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        run_ctest build-asan "AddressSanitizer + UndefinedBehaviorSanitizer build"
    # ThreadSanitizer on the multi-threaded parts: the page pipeline, receivers, the sim's workload,
    # the server's connection threads.
    build build-tsan -DVFMIG_SANITIZE=thread -DVFMIG_BUILD_BENCH=OFF
    TSAN_OPTIONS=halt_on_error=1 CTEST_ARGS="-R ^(migrate_|server_|test_simvf$|test_link_tcp$|test_aead$)" \
        run_ctest build-tsan "ThreadSanitizer build (pipeline, device, link tests)"
    echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
    [ "$FAILED" -eq 0 ]
    ;;
*)
    echo "usage: bash setup.sh demo|test|build|deps" >&2
    exit 2
    ;;
esac
