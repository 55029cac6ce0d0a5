#!/usr/bin/env bash
# bench/bench_keyed.sh BUILD_DIR [VRAM] [REPS] [CAPS] - what keyed integrity costs a migration:
# REPS interleaved triples of `vfmig local` (an idle VF of VRAM bytes of random content, raw
# pages, 2 streams) with no key, with a key (a Poly1305 tag on every frame) and with a key and
# --encrypt (AES-256-GCM), for each link cap in CAPS (comma-separated, "none" for no cap; default
# none,10Gbit). Prints per cap and mode the median GB/s (bytes_vram / total_ms), CPU seconds per
# GB over both ends, and the median of the per-triple ratios to the unkeyed run. Loopback only.
set -euo pipefail
B=${1:?usage: bench_keyed.sh BUILD_DIR [VRAM] [REPS] [CAPS]}
VRAM=${2:-1G}
REPS=${3:-5}
CAPS=${4:-none,10Gbit}
V="$B/vfmig"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$V" keygen "$TMP/key" >/dev/null

IFS=, read -r -a caps <<<"$CAPS"
for cap in "${caps[@]}"; do
    capopt=()
    [ "$cap" = none ] || capopt=(--max-bandwidth "$cap")
    for i in $(seq "$REPS"); do
        for mode in none mac aead; do
            keyopt=()
            case $mode in
            mac) keyopt=(--psk-file "$TMP/key") ;;
            aead) keyopt=(--psk-file "$TMP/key" --encrypt) ;;
            esac
            "$V" local --vram "$VRAM" --content random --codec raw --link 'tcp://127.0.0.1:0?streams=2' \
                "${capopt[@]}" "${keyopt[@]}" --json >"$TMP/$cap.$mode.$i.json"
        done
    done
done

python3 - "$TMP" "$REPS" "$CAPS" "$VRAM" <<'PY'
import json, statistics, sys
tmp, reps, caps, vram = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4]
print(f"keyed integrity, {vram} random VF, raw, 2 streams, {reps} interleaved triples per cap")
print("| cap | mode | GB/s | CPU s/GB | paired ratio to no key |")
print("|---|---|---|---|---|")
for cap in caps:
    runs = {m: [json.load(open(f"{tmp}/{cap}.{m}.{i}.json")) for i in range(1, reps + 1)]
            for m in ("none", "mac", "aead")}
    for m, name in (("none", "no key"), ("mac", "key: Poly1305 tag"), ("aead", "key + --encrypt: AES-256-GCM")):
        rs = runs[m]
        if not all(r["verified"] for r in rs):
            sys.exit(f"{cap} {m}: a run did not verify")
        gbs = statistics.median(r["bytes_vram"] / r["total_ms"] / 1e6 for r in rs)
        cpu = statistics.median(r["cpu_s"] / (r["bytes_vram"] / 1e9) for r in rs)
        ratio = statistics.median(runs["none"][i]["total_ms"] / rs[i]["total_ms"] for i in range(reps))
        print(f"| {cap} | {name} | {gbs:.2f} | {cpu:.3f} | {ratio:.2f} |")
PY
