#!/usr/bin/env bash
# tests/test_cli.sh VFMIG - the vfmig command as operators and scripts use it: usage errors,
# --help, JSON keys, two processes over loopback, and failures across processes (layout mismatch,
# port in use, target killed mid pre-copy) ending with the VF on the source.
set -u
V=$1
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

usage_fails() { # a nonsense invocation: exit 2 and a message naming the problem
    local want=$1; shift
    local out rc
    out=$("$V" "$@" 2>&1); rc=$?
    [ $rc -eq 2 ] || fail "vfmig $* exited $rc, want 2 ($out)"
    echo "$out" | grep -q -- "$want" || fail "vfmig $*: message lacks '$want': $out"
}
usage_fails "not a size" local --vram 1X
usage_fails "power of two" local --page 3K
usage_fails "not uniform, hot:SIZE, hot-seq:SIZE or seq" local --pattern hot
usage_fails "larger than --vram" local --vram 64M --pattern hot:1G
usage_fails "not zero, texture" local --content plaid
usage_fails "not auto, raw" local --codec lz5
usage_fails "without '/s'" local --dirty-rate 200M/s
usage_fails "unknown option" local --bogus
usage_fails "needs --connect" source
usage_fails "needs --listen" target
usage_fails "unknown command" frobnicate
usage_fails "out of range" local --budget-ms 0
usage_fails "belongs to" local --connect 127.0.0.1:1
usage_fails "out of range 0-65535" source --connect tcp://host:99999
usage_fails "endpoint" target --listen "tcp://127.0.0.1:7300?streams=0"
for c in local source target; do
    "$V" $c --help | grep -q "usage: vfmig $c" || fail "vfmig $c --help"
done

has_keys() { # JSON text, keys...
    local json=$1; shift
    for k in "$@"; do echo "$json" | grep -q -- "$k" || fail "JSON lacks $k: $json"; done
}

# Both ends in one process.
out=$("$V" local --vram 32M --dirty-rate 50M --pattern hot:4M --json) || fail "local: $out"
has_keys "$out" '"status":"ok"' '"error":null' '"role":"local"' '"verified":true' \
    '"vf_state":"resumed-on-target"' '"blackout_ms":' '"total_ms":' '"rounds":' '"bytes_wire":' \
    '"bytes_vram":33554432' '"codec_bytes":' '"ratio":'

start_target() { # extra args...; sets TPID and PORT
    rm -f "$TMP/target.err" "$TMP/target.json" # never read the previous target's port
    "$V" target --listen "tcp://127.0.0.1:0?streams=4" --timeout-ms 3000 --accept-timeout-ms 20000 --json "$@" \
        >"$TMP/target.json" 2>"$TMP/target.err" &
    TPID=$!
    PORT=
    for _ in $(seq 200); do
        PORT=$(sed -n 's/.*on port \([0-9]*\).*/\1/p' "$TMP/target.err")
        [ -n "$PORT" ] && return 0
        sleep 0.05
    done
    fail "target did not start: $(cat "$TMP/target.err")"
}

# Two processes, with full verification: both VRAMs re-read and compared before the target resumes.
start_target --vram 32M --verify full
out=$("$V" source --connect "tcp://127.0.0.1:$PORT?streams=2" --vram 32M --dirty-rate 50M --pattern hot:4M \
      --timeout-ms 3000 --verify full --json) || fail "source: $out"
has_keys "$out" '"verify":"full"' '"full_verify_ms":'
# A target that asks for full verification refuses a source that does not re-read its VRAM.
start_target --vram 32M --verify full
out=$("$V" source --connect "127.0.0.1:$PORT" --vram 32M --timeout-ms 3000 --json 2>/dev/null)
rc=$?
wait $TPID
[ "$rc" -eq 1 ] || fail "source without full verification against a target requiring it: exit $rc: $out"
has_keys "$out" '"vf_state":"running-on-source"' 'verifies the whole VRAM'
start_target --vram 32M --verify full
out=$("$V" source --connect "tcp://127.0.0.1:$PORT?streams=2" --vram 32M --dirty-rate 50M --pattern hot:4M \
      --timeout-ms 3000 --verify full --json) || fail "source: $out"
wait $TPID || fail "target exited $?: $(cat "$TMP/target.json" "$TMP/target.err")"
has_keys "$out" '"status":"ok"' '"role":"source"' '"verified":true' '"vf_state":"resumed-on-target"'
has_keys "$(cat "$TMP/target.json")" '"status":"ok"' '"role":"target"' '"vf_state":"resumed-on-target"'

# Two processes, authenticated and encrypted; then a source with the wrong key is refused.
printf 'correct horse battery staple\n' >"$TMP/key"
printf 'incorrect horse battery staple\n' >"$TMP/badkey"
start_target --vram 32M --psk-file "$TMP/key" --encrypt
out=$("$V" source --connect "tcp://127.0.0.1:$PORT?streams=2" --vram 32M --dirty-rate 50M --pattern hot:4M \
      --timeout-ms 3000 --psk-file "$TMP/key" --encrypt --json) || fail "encrypted source: $out"
wait $TPID || fail "encrypted target exited $?: $(cat "$TMP/target.json" "$TMP/target.err")"
has_keys "$out" '"status":"ok"' '"verified":true' '"vf_state":"resumed-on-target"'
start_target --vram 32M --psk-file "$TMP/key"
out=$("$V" source --connect "127.0.0.1:$PORT" --vram 32M --timeout-ms 3000 --psk-file "$TMP/badkey" --json 2>/dev/null)
rc=$?
wait $TPID; trc=$?
[ $rc -eq 1 ] && [ $trc -eq 1 ] || fail "wrong key: source exited $rc, target $trc"
has_keys "$out" '"status":"error"' '"error_code":"VFMIG_EAUTH"' '"vf_state":"running-on-source"' '"bytes_wire":0'
has_keys "$(cat "$TMP/target.json")" '"status":"error"' '"vf_state":"not-resumed"'
usage_fails "needs --psk-file" local --encrypt

# Layout mismatch: refused before any page moves; both ends say why; the VF stays on the source.
start_target --vram 64M
out=$("$V" source --connect "127.0.0.1:$PORT" --vram 32M --dirty-rate 50M --timeout-ms 3000 --json 2>/dev/null)
rc=$?
wait $TPID; trc=$?
[ $rc -eq 1 ] && [ $trc -eq 1 ] || fail "layout mismatch: source exited $rc, target $trc"
has_keys "$out" '"status":"error"' 'layout mismatch' '"vf_state":"running-on-source"' '"verified":false'
has_keys "$(cat "$TMP/target.json")" '"status":"error"' 'layout mismatch' '"vf_state":"not-resumed"'

# Port in use: the second listener says so.
start_target --vram 32M
out=$("$V" target --listen "127.0.0.1:$PORT" --vram 32M --json 2>/dev/null); rc=$?
[ $rc -eq 1 ] || fail "second target on port $PORT exited $rc"
echo "$out" | grep -qi "in use" || fail "port in use: $out"
kill $TPID; wait $TPID 2>/dev/null

# Target killed during pre-copy (capped link so pre-copy lasts): the source rolls back.
start_target --vram 256M
"$V" source --connect "127.0.0.1:$PORT" --vram 256M --dirty-rate 20M --max-bandwidth 64M --timeout-ms 2000 \
    --json >"$TMP/source.json" 2>/dev/null &
SPID=$!
sleep 1
{ kill -9 $TPID; wait $TPID; } 2>/dev/null
wait $SPID; rc=$?
[ $rc -eq 1 ] || fail "source after target kill exited $rc: $(cat "$TMP/source.json")"
has_keys "$(cat "$TMP/source.json")" '"status":"error"' '"vf_state":"running-on-source"' '"verified":false'
echo "test_cli: passed"
