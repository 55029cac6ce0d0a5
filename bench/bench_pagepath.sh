#!/usr/bin/env bash
# bench/bench_pagepath.sh BUILD_DIR [VRAM] [PAIRS] [vfmig options...] - round-0 throughput of the
# page path against a plain-socket pump, in the same run: PAIRS interleaved pairs of (bench_pump
# moving VRAM bytes between two processes in 1 MiB writes; a two-process `vfmig target` / `vfmig
# source` migration of an idle VF of VRAM bytes of random content), then the median ratio of the
# migration's bytes_vram / total_ms to the pump's rate, and CPU seconds per GB on each end of both.
# Default: 2G, 3 pairs, --codec raw. Loopback only.
set -euo pipefail
B=${1:?usage: bench_pagepath.sh BUILD_DIR [VRAM] [PAIRS] [vfmig options...]}
VRAM=${2:-2G}
PAIRS=${3:-3}
shift $(( $# < 3 ? $# : 3 ))
EXTRA=("$@")
[ ${#EXTRA[@]} -gt 0 ] || EXTRA=(--codec raw)
V="$B/vfmig"
PUMP="$B/bench/bench_pump"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
bytes=$(python3 -c "import sys; s=sys.argv[1]; m={'K':10,'M':20,'G':30}; print(int(float(s[:-1]))<<m[s[-1]] if s[-1] in m else int(s))" "$VRAM")

for i in $(seq "$PAIRS"); do
    "$PUMP" --bytes "$bytes" >"$TMP/pump$i.json"
    "$V" target --listen "tcp://127.0.0.1:0" --vram "$VRAM" --accept-timeout-ms 60000 --json "${EXTRA[@]}" \
        >"$TMP/target$i.json" 2>"$TMP/target$i.err" &
    tpid=$!
    port=
    for _ in $(seq 400); do
        port=$(sed -n 's/.*on port \([0-9]*\).*/\1/p' "$TMP/target$i.err")
        [ -n "$port" ] && break
        sleep 0.05
    done
    [ -n "$port" ] || { echo "target did not start: $(cat "$TMP/target$i.err")" >&2; exit 1; }
    "$V" source --connect "tcp://127.0.0.1:$port" --vram "$VRAM" --content random --json "${EXTRA[@]}" \
        >"$TMP/source$i.json"
    wait "$tpid"
done

python3 - "$TMP" "$PAIRS" "$VRAM" "${EXTRA[*]}" <<'PY'
import json, statistics, sys
tmp, pairs, vram, extra = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = []
for i in range(1, pairs + 1):
    p = json.load(open(f"{tmp}/pump{i}.json"))
    s = json.load(open(f"{tmp}/source{i}.json"))
    t = json.load(open(f"{tmp}/target{i}.json"))
    assert s["status"] == "ok" and t["status"] == "ok", (s.get("error"), t.get("error"))
    gb = s["bytes_vram"] / 1e9
    rate = gb / (s["total_ms"] / 1e3)
    rows.append((p["gbps"], rate, rate / p["gbps"], s["cpu_s"] / gb, t["cpu_s"] / gb,
                 p["sender_cpu_s_per_gb"], p["receiver_cpu_s_per_gb"]))
print(f"page path, {vram} of random content, {extra}, {pairs} interleaved pairs (two processes each)")
print(f"{'pair':>4} {'pump GB/s':>10} {'vfmig GB/s':>11} {'ratio':>6} {'src CPU s/GB':>13} {'tgt CPU s/GB':>13} {'pump tx':>8} {'pump rx':>8}")
for i, r in enumerate(rows, 1):
    print(f"{i:>4} {r[0]:>10.2f} {r[1]:>11.2f} {r[2]:>6.2f} {r[3]:>13.3f} {r[4]:>13.3f} {r[5]:>8.3f} {r[6]:>8.3f}")
med = statistics.median(r[2] for r in rows)
print(f"median ratio vfmig / pump: {med:.2f}  (source CPU {statistics.median(r[3] for r in rows):.3f} s/GB, "
      f"target {statistics.median(r[4] for r in rows):.3f} s/GB; pump {statistics.median(r[5] for r in rows):.3f} / "
      f"{statistics.median(r[6] for r in rows):.3f})")
PY
