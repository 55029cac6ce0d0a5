#!/usr/bin/env bash
# bench/devices_blackout.sh - blackout of the same workload through each dirty source (issue 10):
# vfmig local --device sim|hash|hostmem --vram 512M --pattern hot:64M --dirty-rate 100M --content mix,
# RUNS runs each, interleaved, medians printed with the tracker's scan cost.
#   bash bench/devices_blackout.sh [BUILD_DIR] [RUNS] [extra vfmig options...]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}; RUNS=${2:-5}; shift 2 || true
out=$(mktemp -d)
for i in $(seq "$RUNS"); do
    for d in sim hash hostmem; do
        "$B"/vfmig local --device "$d" --vram 512M --pattern hot:64M --dirty-rate 100M --content mix --json "$@" \
            > "$out/$d.$i.json" || true
    done
done
python3 - "$out" "$RUNS" <<'PY'
import json, sys, statistics as S
out, runs = sys.argv[1], int(sys.argv[2])
print(f"{'device':8} {'source':10} {'ok':>4} {'blackout p50 ms':>16} {'min':>8} {'max':>8} {'rounds p50':>10} {'final pages':>11} {'scan ms p50':>11} {'scan CPU ms/GiB':>15} {'total ms p50':>12}")
base = None
for d in ["sim", "hash", "hostmem"]:
    rs = []
    for i in range(1, runs + 1):
        try:
            rs.append(json.load(open(f"{out}/{d}.{i}.json")))
        except Exception:
            pass
    ok = [r for r in rs if r.get("status") == "ok" and r.get("verified")]
    if not ok:
        print(f"{d:8} no verified run"); continue
    bo = [r["blackout_ms"] for r in ok]
    tk = [r.get("tracking", {}) for r in ok]
    p50 = S.median(bo)
    if d == "sim": base = p50
    print(f"{d:8} {ok[0]['dirty_source']:10} {len(ok):>2}/{len(rs)} {p50:16.2f} {min(bo):8.2f} {max(bo):8.2f} "
          f"{S.median([r['rounds'] for r in ok]):10} {S.median([r['blackout']['final_dirty_pages'] for r in ok]):11} "
          f"{S.median([t.get('last_ms', 0) for t in tk]):11.2f} {S.median([t.get('cpu_ns_per_gib', 0) for t in tk])/1e6:15.1f} "
          f"{S.median([r['total_ms'] for r in ok]):12.0f}" + (f"   x{p50/base:.2f} of sim" if base and d != 'sim' else ""))
PY
rm -rf "$out"
