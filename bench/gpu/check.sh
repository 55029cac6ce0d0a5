#!/usr/bin/env bash
# bench/gpu/check.sh - the CUDA device on a machine with an NVIDIA GPU, as one short job (issue 10):
#   1. builds (RelWithDebInfo, the project default; CUDA found by CMake),
#   2. test_cuda: the GPU's page hash equals XXH3-64 on the host; a small live migration,
#   3. bench_gpu: the hash kernel's GB/s beside the device's own device-to-device copy GB/s,
#   4. migrates a 4 GiB CUDA VF while a GPU kernel writes into it (vfmig local --device cuda),
#      verified by digest and byte for byte (compared on the GPU).
# Needs the Debian packages of setup.sh (PACKAGES) and the CUDA toolkit (nvcc on PATH or in
# /usr/local/cuda). Exit status: 0 all passed, 77 no usable GPU (built only), else the first
# failure's.
#
#   bash bench/gpu/check.sh [BUILD_DIR]        (default build-gpu)
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${1:-build-gpu}
export PATH="$PATH:/usr/local/cuda/bin"
echo "== build ($B)"
mkdir -p "$B"
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVFMIG_CUDA=ON > "$B/configure.log" 2>&1 || { cat "$B/configure.log"; exit 1; }
grep -q "CUDA device enabled" "$B/configure.log" || { echo "check.sh: CMake did not find the CUDA toolkit"; cat "$B/configure.log"; exit 1; }
cmake --build "$B" -j"$(nproc)" --target vfmig_cli test_cuda bench_gpu 2>&1 | tail -3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
echo "== test_cuda"
rc=0
"$B"/tests/test_cuda || rc=$?
if [ $rc -eq 77 ]; then
    echo "check.sh: no usable GPU on this machine (see above): built only, nothing measured"
    exit 77
fi
[ $rc -eq 0 ] || exit $rc
echo "== bench_gpu (hash kernel vs device copy)"
"$B"/bench/bench_gpu --vram 4096 --page 64
echo "== vfmig local --device cuda, 4 GiB, workload kernel writing 1 GiB/s into a 256 MiB hot set"
"$B"/vfmig local --device cuda --vram 4G --page 64K --pattern hot:256M --dirty-rate 1G --content mix \
    --budget-ms 200 --link 'tcp://127.0.0.1:0?streams=4'
echo "== check.sh: all passed"
