#!/usr/bin/env bash
# tests/fuzz/run_fuzzers.sh [SECONDS] - builds every libFuzzer target tests/fuzz/fuzz_*.c (files
# that define LLVMFuzzerTestOneInput) with clang -fsanitize=fuzzer,address,undefined against the
# project's library, runs each for SECONDS (default 60) seeded with tests/fuzz/corpus/<name>, and
# reports per target: runs, coverage, and any crash file.
#
# The library is built in its own CMake tree (CC=clang, ASan+UBSan, coverage instrumentation for
# libFuzzer). New inputs go to a scratch corpus, never into the checked-in seeds; crashes go to
# $OUT/crashes/<target>/. Environment: BUILD (default build-fuzz), OUT (default /tmp/vfmig-fuzz),
# JOBS (default nproc).
set -euo pipefail

SECONDS_PER=${1:-60}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build-fuzz}
OUT=${OUT:-/tmp/vfmig-fuzz}
JOBS=${JOBS:-$(nproc)}

if ! command -v clang >/dev/null 2>&1; then
    echo "clang not found: installing it (apt-get)" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq clang >/dev/null
fi

SAN=address,undefined
echo "== building libvfmig with clang, -fsanitize=$SAN + fuzzer coverage, in $BUILD"
CC=clang cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVFMIG_SANITIZE=$SAN \
    -DVFMIG_WERROR=OFF -DVFMIG_BUILD_TESTS=OFF -DVFMIG_BUILD_BENCH=OFF \
    -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link" >"$BUILD.cmake.log" 2>&1 ||
    { cat "$BUILD.cmake.log"; exit 1; }
cmake --build "$BUILD" --target vfmig -j"$JOBS" >"$BUILD.build.log" 2>&1 ||
    { tail -40 "$BUILD.build.log"; exit 1; }
DEPS=$(pkg-config --libs liblz4 libzstd libxxhash hwloc libibverbs librdmacm libcrypto)

mkdir -p "$OUT"
status=0
summary=()
for src in "$ROOT"/tests/fuzz/fuzz_*.c; do
    grep -q LLVMFuzzerTestOneInput "$src" || continue # e.g. a seed writer, not a target
    name=$(basename "$src" .c)
    short=${name#fuzz_}
    bin=$BUILD/$name
    echo "== $name: building"
    clang -std=gnu11 -g -O1 -fsanitize=fuzzer,$SAN -fno-sanitize-recover=all -fno-omit-frame-pointer \
        -I"$ROOT" -I"$ROOT/include" "$src" "$BUILD/libvfmig.a" $DEPS -lpthread -lm -o "$bin"
    seeds=$ROOT/tests/fuzz/corpus/$short
    work=$OUT/corpus/$short
    crashes=$OUT/crashes/$short
    mkdir -p "$seeds" "$work" "$crashes"
    log=$OUT/$name.log
    echo "== $name: fuzzing for ${SECONDS_PER}s (seeds: $seeds, $(ls "$seeds" | wc -l) files)"
    rc=0
    "$bin" "$work" "$seeds" -max_total_time="$SECONDS_PER" -print_final_stats=1 \
        -artifact_prefix="$crashes/" -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1 || rc=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -E '^#[0-9]+' "$log" | grep -o 'cov: [0-9]*' | tail -1 | grep -o '[0-9]*' || echo '?')
    ft=$(grep -E '^#[0-9]+' "$log" | grep -o 'ft: [0-9]*' | tail -1 | grep -o '[0-9]*' || echo '?')
    found=$(ls "$crashes" 2>/dev/null | wc -l)
    line="$name: ${runs} runs, cov ${cov} edges, ft ${ft} features, corpus $(ls "$work" | wc -l) new inputs, crashes ${found}"
    if [ "$rc" != 0 ] || [ "$found" != 0 ]; then
        line="$line (exit $rc; see $log and $crashes)"
        status=1
    fi
    echo "$line"
    summary+=("$line")
done
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $status
