#!/usr/bin/env bash
# bench/gpu/check.sh - the CUDA device on a machine with an NVIDIA GPU, as one short job (issue 10):
#   1. builds (Release, CUDA found by CMake),
#   2. test_cuda: the GPU's page hash equals XXH3-64 on the host; a small live migration,
#   3. bench_gpu: the hash kernel's GB/s beside the device's own device-to-device copy GB/s,
#   4. migrates a 4 GiB CUDA VF while a GPU kernel writes into it (vfmig local --device cuda),
#      verified by digest and byte for byte (compared on the GPU).
# Needs the Debian packages of setup.sh (PACKAGES) and the CUDA toolkit (nvcc on PATH or in
# /usr/local/cuda). Exit status: 0 all passed, else the first failure's.
#
#   bash bench/gpu/check.sh [BUILD_DIR]        (default build-gpu)
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${1:-build-gpu}
export PATH="$PATH:/usr/local/cuda/bin"
echo "== build ($B)"
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DVFMIG_CUDA=ON > "$B.cmake.log" 2>&1 || { cat "$B.cmake.log"; exit 1; }
grep -q "CUDA device enabled" "$B.cmake.log" || { echo "check.sh: CMake did not find the CUDA toolkit"; cat "$B.cmake.log"; exit 1; }
cmake --build "$B" -j"$(nproc)" --target vfmig_cli test_cuda bench_gpu 2>&1 | tail -3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "== test_cuda"
"$B"/tests/test_cuda
echo "== bench_gpu (hash kernel vs device copy)"
"$B"/bench/bench_gpu --vram 4096 --page 64
echo "== vfmig local --device cuda, 4 GiB, workload kernel writing 1 GiB/s into a 256 MiB hot set"
"$B"/vfmig local --device cuda --vram 4G --page 64K --pattern hot:256M --dirty-rate 1G --content mix \
    --budget-ms 200 --link 'tcp://127.0.0.1:0?streams=4'
echo "== check.sh: all passed"
