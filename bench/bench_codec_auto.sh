#!/usr/bin/env bash
# bench/bench_codec_auto.sh BUILD_DIR [REPS] [CAPS] - the adaptive codec against the best fixed
# one: for each link cap in CAPS (comma-separated, "none" for no cap; default none,10Gbit,1Gbit),
# REPS interleaved rounds of `vfmig local` on a 1 GiB VF of mixed content with a hot set of 64 MiB
# written at 50 MB/s, once per codec (auto, raw, lz4, zstd). Prints the median total ms per codec
# and cap, and auto's median over the best fixed codec's. Loopback only.
set -euo pipefail
B=${1:?usage: bench_codec_auto.sh BUILD_DIR [REPS] [CAPS]}
REPS=${2:-3}
CAPS=${3:-none,10Gbit,1Gbit}
V="$B/vfmig"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
CODECS=(auto raw lz4 zstd)

IFS=, read -r -a caps <<<"$CAPS"
for cap in "${caps[@]}"; do
    capopt=()
    [ "$cap" = none ] || capopt=(--max-bandwidth "$cap")
    for i in $(seq "$REPS"); do
        for c in "${CODECS[@]}"; do
            "$V" local --vram 1G --pattern hot:64M --dirty-rate 50M --content mix --codec "$c" \
                "${capopt[@]}" --json >"$TMP/$cap.$c.$i.json"
        done
    done
done

python3 - "$TMP" "$REPS" "$CAPS" "${CODECS[@]}" <<'PY'
import json, statistics, sys
tmp, reps, caps, codecs = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4:]
print(f"1 GiB mix VF, hot:64M at 50 MB/s, median total ms of {reps} interleaved rounds")
print("| cap | " + " | ".join(codecs) + " | auto / best fixed |")
print("|---" * (len(codecs) + 2) + "|")
for cap in caps:
    med = {}
    for c in codecs:
        runs = [json.load(open(f"{tmp}/{cap}.{c}.{i}.json")) for i in range(1, reps + 1)]
        if not all(r["verified"] for r in runs):
            sys.exit(f"{cap} {c}: a run did not verify")
        med[c] = statistics.median(r["total_ms"] for r in runs)
    best = min(med[c] for c in codecs if c != "auto")
    print(f"| {cap} | " + " | ".join(f"{med[c]:.0f}" for c in codecs) + f" | {med['auto'] / best:.2f} |")
PY
