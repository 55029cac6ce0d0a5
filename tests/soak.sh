#!/usr/bin/env bash
# tests/soak.sh [N] [VRAM] - N live migrations back and forth (A->B, B->A, ...) of a simulated VF
# with a running workload, in one process (tests/test_faults.c "soak" mode). Each iteration
# compares the target image byte for byte with the source's at the moment the target resumes,
# and the restored mutable state with the saved one; it prints the blackout and RSS (VmRSS) per
# iteration. Exits non-zero on any mismatch or failure, or if RSS grew by more than 8 MiB from
# the end of the first round trip (A->B->A, when everything is warm) to the last iteration.
# Not part of ctest (50 iterations of 64 MiB take ~10 s, longer runs minutes).
#   N     iterations (default 50)
#   VRAM  VF size: MiB, or with a suffix M / G (default 64M)
# Environment: BUILD (default <repo>/build-soak; built here if test_faults is missing).
set -euo pipefail
N=${1:-50}
VRAM=${2:-64M}
case "$VRAM" in
    *G|*g) MIB=$(( ${VRAM%?} * 1024 )) ;;
    *M|*m) MIB=${VRAM%?} ;;
    *) MIB=$VRAM ;;
esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build-soak}
if [ ! -x "$BUILD/tests/test_faults" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DVFMIG_BUILD_BENCH=OFF >/dev/null
    cmake --build "$BUILD" --target test_faults -j"$(nproc)" >/dev/null
fi
exec "$BUILD/tests/test_faults" soak "$N" "$MIB"
