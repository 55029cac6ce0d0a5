#!/usr/bin/env bash
# tests/test_cli_pkg.sh VFMIG options|schema [SCHEMA VALIDATOR]
#   options: -V/--version on every subcommand; a VF too big for this machine's memory (or for the
#            process's RLIMIT_AS) is refused with exit 2 and the sizes, before anything is allocated.
#   schema:  the --json result of local, source and target runs (successes and failures) is valid
#            against schema/vfmig-result.schema.json (python3-jsonschema; exit 77 without it).
set -u
V=$1 MODE=$2
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

if [ "$MODE" = options ]; then
    for c in "" local source target; do
        for f in -V --version; do
            # shellcheck disable=SC2086 # $c empty: the top-level flag
            out=$("$V" $c $f 2>&1) || fail "vfmig $c $f exited $?: $out"
            [[ $out =~ ^vfmig\ [0-9]+\.[0-9]+\.[0-9]+\ \(library\ [0-9]+\.[0-9]+\.[0-9]+\)$ ]] ||
                fail "vfmig $c $f printed '$out'"
        done
    done
    out=$("$V" local --vram 1T 2>&1); rc=$?
    [ $rc -eq 2 ] || fail "vfmig local --vram 1T exited $rc, want 2: $out"
    [[ $out == *"needs 2.0 TiB of memory"*"both ends"* ]] || fail "--vram 1T: message lacks the size: $out"
    [[ $out == *"MemAvailable"* || $out == *"RLIMIT_AS"* ]] || fail "--vram 1T: message lacks the limit: $out"
    out=$("$V" target --listen 127.0.0.1:0 --vram 1T 2>&1); rc=$?
    [ $rc -eq 2 ] || fail "vfmig target --vram 1T exited $rc, want 2: $out"
    [[ $out == *"needs 1.0 TiB of memory"* ]] || fail "target --vram 1T: message lacks the size: $out"
    # Under an address-space limit: sanitizer runtimes reserve terabytes of shadow and cannot
    # start under one, so this part needs a plain build.
    if ! ldd "$V" 2>/dev/null | grep -qE 'lib(a|t|ub)san'; then
        out=$(ulimit -v 1048576; "$V" source --connect 127.0.0.1:1 --vram 2G 2>&1); rc=$?
        [ $rc -eq 2 ] || fail "source --vram 2G under ulimit -v 1G exited $rc, want 2: $out"
        [[ $out == *"needs 2.0 GiB"*"RLIMIT_AS"* ]] || fail "ulimit -v: message lacks the limit: $out"
    fi
    # Something that fits still runs.
    "$V" local --vram 8M --quiet >/dev/null || fail "vfmig local --vram 8M"
    echo ok
    exit 0
fi

[ "$MODE" = schema ] || fail "mode must be options or schema"
SCHEMA=$3 VALIDATE=$4
PY=
for p in /usr/bin/python3 python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import jsonschema' 2>/dev/null; then
        PY=$p
        break
    fi
done
[ -n "$PY" ] || { echo "SKIP: no python3 with jsonschema (apt-get install python3-jsonschema)"; exit 77; }

run() { # name expected-rc args...
    local name=$1 want=$2 rc
    shift 2
    "$V" "$@" --json >"$TMP/$name.json" 2>"$TMP/$name.err"; rc=$?
    [ $rc -eq "$want" ] || fail "vfmig $* exited $rc, want $want: $(cat "$TMP/$name.err")"
}
run local_ok 0 local --vram 16M --dirty-rate 20M --pattern hot:2M
run local_zstd 0 local --vram 8M --ranges 2 --codec zstd:3 --content tensor
run local_refused 1 local --vram 8M --target-state-version 2
run source_refused 1 source --connect 127.0.0.1:1 --vram 8M
run target_timeout 1 target --listen 127.0.0.1:0 --accept-timeout-ms 50 --vram 8M

# Two processes: the target says its port on stderr.
"$V" target --listen "tcp://127.0.0.1:0?streams=2" --vram 16M --timeout-ms 5000 \
    --accept-timeout-ms 20000 --json >"$TMP/target.json" 2>"$TMP/target.err" &
TPID=$!
PORT=
for _ in $(seq 400); do
    PORT=$(sed -n 's/.*on port \([0-9]*\).*/\1/p' "$TMP/target.err")
    [ -n "$PORT" ] && break
    kill -0 $TPID 2>/dev/null || break
    sleep 0.05
done
[ -n "$PORT" ] || fail "target did not start: $(cat "$TMP/target.err")"
run source_ok 0 source --connect "tcp://127.0.0.1:$PORT?streams=2" --vram 16M --dirty-rate 10M
wait $TPID || fail "target exited $?: $(cat "$TMP/target.err")"

"$PY" "$VALIDATE" "$SCHEMA" "$TMP"/*.json || fail "a --json result does not match $SCHEMA"
# Live progress: one object per line on stderr, each valid, bytes_sent never going back, at
# least 3 of them from a run the cap keeps over 1.3 s long (one every 200 ms). Before them, the
# setup of each VF: from 0 to the whole VRAM (256 MiB), source first.
"$V" local --vram 256M --content random --max-bandwidth 200M --progress json --json >"$TMP/progress_run.out" \
    2>"$TMP/progress.err" || fail "local with --progress json: $(cat "$TMP/progress.err")"
PSCHEMA="$(dirname "$SCHEMA")/vfmig-progress.schema.json"
n=0 last=0 setups=""
while IFS= read -r line; do
    [[ $line == '{"progress":'* ]] || continue
    n=$((n + 1))
    printf '%s\n' "$line" >"$TMP/progress$n.pjson"
    if [[ $line == '{"progress":{"phase":"setup",'* ]]; then
        [ "$last" -eq 0 ] || fail "a setup line after the migration started: $line"
        role=$(sed -n 's/.*"role":"\([a-z]*\)".*/\1/p' <<<"$line")
        done_=$(sed -n 's/.*"bytes_done":\([0-9]*\).*/\1/p' <<<"$line")
        [[ $line == *'"bytes_total":268435456,'* ]] || fail "setup total is not the VRAM: $line"
        # A slow machine may report 0 bytes more than once before the fill gets going: one start.
        [ "$done_" -eq 0 ] && [[ $setups != *" $role:start" ]] && setups+=" $role:start"
        [ "$done_" -eq 268435456 ] && setups+=" $role:end"
        continue
    fi
    sent=$(sed -n 's/.*"bytes_sent":\([0-9]*\).*/\1/p' <<<"$line")
    [ "$sent" -ge "$last" ] || fail "bytes_sent went back: $last then $sent"
    last=$sent
done <"$TMP/progress.err"
[ "$setups" = " source:start source:end target:start target:end" ] || fail "setup lines:$setups"
[ "$n" -ge 7 ] || fail "only $n progress lines: $(cat "$TMP/progress.err")"
"$PY" "$VALIDATE" "$PSCHEMA" "$TMP"/progress*.pjson || fail "a progress line does not match $PSCHEMA"
# The schema is a contract, not a formality: it refuses an unknown key and a success that is not
# verified.
sed 's/"status":"ok",/"status":"ok","surprise":1,/; s/"verified":true/"verified":false/' \
    "$TMP/local_ok.json" >"$TMP/bad.json"
out=$("$PY" "$VALIDATE" "$SCHEMA" "$TMP/bad.json") && fail "the schema accepted $(cat "$TMP/bad.json")"
[[ $out == *surprise* && $out == *verified* ]] || fail "validator did not name both errors: $out"
echo ok
