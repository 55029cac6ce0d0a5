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
for c in local source target serve keygen; do
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

# Keys: keygen writes 32 random bytes only its owner can read, never over an existing file;
# short keys (a passphrase) are refused.
"$V" keygen "$TMP/key" 2>/dev/null || fail "keygen"
"$V" keygen "$TMP/badkey" 2>/dev/null || fail "keygen 2"
[ "$(stat -c %s:%a "$TMP/key")" = "32:600" ] || fail "keygen: $(stat -c %s:%a "$TMP/key")"
cmp -s "$TMP/key" "$TMP/badkey" && fail "keygen wrote the same key twice"
"$V" keygen "$TMP/key" 2>/dev/null && fail "keygen replaced an existing key"
printf 'correct horse battery staple\n' >"$TMP/shortkey"
chmod 600 "$TMP/shortkey"
usage_fails "32 to 256 bytes" source --connect 127.0.0.1:1 --psk-file "$TMP/shortkey"
# Keys are read as ssh reads them: one others may read is refused, the fix named.
cp "$TMP/key" "$TMP/openkey" && chmod 644 "$TMP/openkey"
usage_fails "chmod 600 $TMP/openkey" source --connect 127.0.0.1:1 --psk-file "$TMP/openkey"
# A printable passphrase, long enough, is still a passphrase: refused as a key, with the way out.
printf 'correct horse battery staple, again\n' >"$TMP/textkey" # 35 characters and a line end
printf '0123456789abcdef0123456789abcdef\n' >"$TMP/seqkey"     # hex, but a pattern
chmod 600 "$TMP/textkey" "$TMP/seqkey"
usage_fails "--psk-passphrase" source --connect 127.0.0.1:1 --psk-file "$TMP/textkey"
usage_fails "bits of randomness" source --connect 127.0.0.1:1 --psk-file "$TMP/seqkey"
# A random key ending in a newline byte (as 1 in 128 of keygen's do) is 32 bytes, not 31: it is
# accepted; so are 64 random hex digits with their line end, and the passphrase said to be one.
{ head -c 31 "$TMP/key"; printf '\n'; } >"$TMP/binkey"
openssl rand -hex 32 >"$TMP/hexkey" 2>/dev/null || cp "$TMP/key" "$TMP/hexkey"
chmod 600 "$TMP/binkey" "$TMP/hexkey"
for k in "--psk-file $TMP/binkey" "--psk-file $TMP/hexkey" "--psk-passphrase $TMP/textkey"; do
    # shellcheck disable=SC2086 # $k: an option and its file
    err=$("$V" source --connect 127.0.0.1:1 --timeout-ms 500 $k 2>&1 >/dev/null)
    rc=$?
    [ $rc -eq 1 ] || fail "$k: exit $rc (not 1, a connect failure): $err"
done
# No key beyond loopback: refused before anything is bound.
usage_fails "without a key" target --listen 0.0.0.0:0
usage_fails "without a key" serve --listen "tcp://0.0.0.0:0"
usage_fails "needs --listen" serve
usage_fails "belongs to" source --connect 127.0.0.1:1 --max-sessions 2
usage_fails "--max-vram: '0' is out of range 4K..1024T" serve --listen 127.0.0.1:0 --max-vram 0
usage_fails "--max-memory: '1M' is out of range" serve --listen 127.0.0.1:0 --max-memory 1M
usage_fails "is over --max-memory" serve --listen 127.0.0.1:0 --max-vram 2G --max-memory 1G

# Two processes, authenticated and encrypted; then a source with the wrong key is refused.
start_target --vram 32M --psk-file "$TMP/key" --encrypt
out=$("$V" source --connect "tcp://127.0.0.1:$PORT?streams=2" --vram 32M --dirty-rate 50M --pattern hot:4M \
      --timeout-ms 3000 --psk-file "$TMP/key" --encrypt --json) || fail "encrypted source: $out"
wait $TPID || fail "encrypted target exited $?: $(cat "$TMP/target.json" "$TMP/target.err")"
has_keys "$out" '"status":"ok"' '"verified":true' '"vf_state":"resumed-on-target"'
# A passphrase on both ends (stretched alike) migrates.
start_target --vram 32M --psk-passphrase "$TMP/textkey"
out=$("$V" source --connect "127.0.0.1:$PORT" --vram 32M --timeout-ms 3000 --psk-passphrase "$TMP/textkey" --json) ||
    fail "passphrase source: $out"
wait $TPID || fail "passphrase target exited $?: $(cat "$TMP/target.json" "$TMP/target.err")"
has_keys "$out" '"status":"ok"' '"verified":true'
# A wrong key, garbage and no key are refused without ending the target, which then migrates.
start_target --vram 32M --psk-file "$TMP/key"
out=$("$V" source --connect "127.0.0.1:$PORT" --vram 32M --timeout-ms 3000 --psk-file "$TMP/badkey" --json 2>/dev/null)
rc=$?
[ $rc -eq 1 ] || fail "wrong key: source exited $rc"
has_keys "$out" '"status":"error"' '"error_code":"VFMIG_EAUTH"' '"vf_state":"running-on-source"' '"bytes_wire":0'
out=$("$V" source --connect "127.0.0.1:$PORT" --vram 32M --timeout-ms 3000 --json 2>/dev/null)
[ $? -eq 1 ] || fail "keyless source to a keyed target: $out"
has_keys "$out" '"error_code":"VFMIG_EAUTH"'
printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\n' >/dev/tcp/127.0.0.1/$PORT || fail "garbage connection"
kill -0 $TPID || fail "the target ended on a refused connection"
out=$("$V" source --connect "127.0.0.1:$PORT" --vram 32M --timeout-ms 3000 --psk-file "$TMP/key" --json) ||
    fail "good source after refused ones: $out"
wait $TPID || fail "target after refused connections exited $?: $(cat "$TMP/target.json")"
has_keys "$(cat "$TMP/target.json")" '"status":"ok"' '"vf_state":"resumed-on-target"'
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

wait_for() { # file pattern: waits (bounded) for a line to appear
    for _ in $(seq 400); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.025
    done
    fail "no '$2' in $1: $(cat "$1")"
}

# serve: keyed migrations one after another, a wrong key refused, one JSON line per migration;
# each incoming VF's setup shown on stderr with its migration's id; SIGTERM while a migration
# runs cancels it (its source keeps the VF) and serve exits 0.
"$V" serve --listen "tcp://127.0.0.1:0?streams=4" --psk-file "$TMP/key" --timeout-ms 3000 --json \
    --progress json >"$TMP/serve.json" 2>"$TMP/serve.err" &
SVPID=$!
wait_for "$TMP/serve.err" "serving on port"
SPORT=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$TMP/serve.err")
for vram in 16M 24M; do
    out=$("$V" source --connect "tcp://127.0.0.1:$SPORT?streams=2" --vram $vram --dirty-rate 20M \
          --timeout-ms 3000 --psk-file "$TMP/key" --json) || fail "source to serve ($vram): $out"
    has_keys "$out" '"status":"ok"' '"verified":true'
done
out=$("$V" source --connect "127.0.0.1:$SPORT" --vram 16M --timeout-ms 3000 --psk-file "$TMP/badkey" --json 2>/dev/null)
[ $? -eq 1 ] || fail "wrong key to serve: $out"
has_keys "$out" '"error_code":"VFMIG_EAUTH"' '"vf_state":"running-on-source"'
"$V" source --connect "127.0.0.1:$SPORT" --vram 256M --dirty-rate 20M --max-bandwidth 32M --timeout-ms 3000 \
    --psk-file "$TMP/key" --json -v >"$TMP/s3.json" 2>"$TMP/s3.err" &
S3=$!
wait_for "$TMP/s3.err" "phase pre-copy"
kill -TERM $SVPID
wait $SVPID || fail "serve exited $? on SIGTERM: $(cat "$TMP/serve.err")"
wait $S3; rc=$?
[ $rc -eq 1 ] || fail "source whose server stopped exited $rc"
has_keys "$(cat "$TMP/s3.json")" '"status":"error"' '"vf_state":"running-on-source"'
[ "$(grep -c '"status":"ok"' "$TMP/serve.json")" -eq 2 ] || fail "serve JSON: $(cat "$TMP/serve.json")"
[ "$(grep -c '"status":"error"' "$TMP/serve.json")" -eq 1 ] || fail "serve JSON: $(cat "$TMP/serve.json")"
grep -q "stopped serving: 2 migrated" "$TMP/serve.err" || fail "serve summary: $(cat "$TMP/serve.err")"
for sv in "1 16777216" "2 25165824"; do
    set -- $sv
    for done_ in 0 "$2"; do
        grep -q "\"phase\":\"setup\",\"role\":\"target\",\"session\":$1,\"bytes_done\":$done_,\"bytes_total\":$2," \
            "$TMP/serve.err" || fail "serve: no setup line for migration $1 at $done_ of $2: $(grep setup "$TMP/serve.err")"
    done
done

# serve --vram 16M takes no larger VF (--max-vram defaults to --vram): refused before it is
# allocated, the source told why (exit 1, its VF running), the refusal counted.
"$V" serve --listen "tcp://127.0.0.1:0" --vram 16M --timeout-ms 3000 >/dev/null 2>"$TMP/serve2.err" &
SVPID=$!
wait_for "$TMP/serve2.err" "VFs up to 16.0 MiB"
SPORT=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$TMP/serve2.err")
out=$("$V" source --connect "127.0.0.1:$SPORT" --vram 32M --content zero --timeout-ms 3000 --json 2>/dev/null)
[ $? -eq 1 ] || fail "over-cap source to serve: $out"
has_keys "$out" '"error_code":"VFMIG_ETOOBIG"' 'larger than this target accepts' '"vf_state":"running-on-source"'
kill -TERM $SVPID
wait $SVPID || fail "serve exited $? on SIGTERM: $(cat "$TMP/serve2.err")"
grep -q "1 VF too large" "$TMP/serve2.err" || fail "serve summary: $(cat "$TMP/serve2.err")"

# SIGINT on a source mid pre-copy: canceled, the VF runs on, the summary is printed, exit 1.
start_target --vram 256M --psk-file "$TMP/key"
"$V" source --connect "127.0.0.1:$PORT" --vram 256M --dirty-rate 20M --max-bandwidth 32M --timeout-ms 3000 \
    --psk-file "$TMP/key" --json -v >"$TMP/s4.json" 2>"$TMP/s4.err" &
S4=$!
wait_for "$TMP/s4.err" "phase pre-copy"
kill -INT $S4
wait $S4; rc=$?
[ $rc -eq 1 ] || fail "source after SIGINT exited $rc"
has_keys "$(cat "$TMP/s4.json")" '"status":"error"' '"error_code":"VFMIG_ECANCELED"' '"vf_state":"running-on-source"'
grep -q "SIGINT: migration canceled" "$TMP/s4.err" || fail "source on SIGINT: $(cat "$TMP/s4.err")"
wait $TPID; trc=$?
[ $trc -eq 1 ] || fail "target of a canceled source exited $trc"
has_keys "$(cat "$TMP/target.json")" '"status":"error"' '"vf_state":"not-resumed"'
echo "test_cli: passed"
