#!/usr/bin/env bash
# tests/test_cli_devices.sh VFMIG - the --device option (issue 10): each dirty source migrates a live
# workload, ends verified (digest and byte for byte) and names its dirty source in JSON; a CUDA
# request without a GPU (or without CUDA in the build) fails at once naming CUDA; a bad value is
# a usage error.
set -u
V=$1
fail() { echo "FAIL: $*"; exit 1; }

out=$("$V" local --device warp 2>&1); rc=$?
[ $rc -eq 2 ] || fail "--device warp exited $rc, want 2"
echo "$out" | grep -q "not sim, hash, hostmem or cuda" || fail "--device warp: $out"

for pair in sim:bitmap hash:hash hostmem:uffd-wp; do
    dev=${pair%%:*} src=${pair#*:}
    json=$("$V" local --device "$dev" --vram 32M --pattern hot:8M --dirty-rate 50M --content mix \
           --budget-ms 500 --json) || fail "--device $dev: exit $? ($json)"
    echo "$json" | grep -q "\"dirty_source\":\"$src\"" || fail "--device $dev: dirty_source is not $src: $json"
    echo "$json" | grep -q '"verified":true' || fail "--device $dev: not verified: $json"
    echo "$json" | grep -q '"byte_compare":true' || fail "--device $dev: no byte compare: $json"
    echo "--device $dev: verified, dirty_source $src"
done
human=$("$V" local --device hash --vram 16M --dirty-rate 20M) || fail "--device hash (human): exit $?"
echo "$human" | grep -q "dirty source: hash" || fail "human output lacks the dirty source: $human"

start=$(date +%s%N)
out=$("$V" local --device cuda --vram 64M 2>&1); rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
if [ $rc -eq 0 ]; then
    echo "$out" | grep -q "dirty source: cuda-hash" || fail "--device cuda on a GPU: $out"
    echo "--device cuda: migrated on a GPU"
else
    [ $rc -eq 1 ] || fail "--device cuda without a GPU exited $rc, want 1"
    echo "$out" | grep -q "CUDA" || fail "--device cuda: message does not name CUDA: $out"
    echo "--device cuda: fails at once ($ms ms): $out"
fi
echo "test_cli_devices: ok"
