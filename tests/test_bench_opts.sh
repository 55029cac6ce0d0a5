#!/usr/bin/env bash
# tests/test_bench_opts.sh BENCH... - every bench program has --help (exit 0, lists its options)
# and refuses what it cannot parse with exit 2 and the option's name, instead of running with a
# default. Nothing is measured here.
set -u
fail() { echo "FAIL: $*"; exit 1; }
refuses() { # want-in-message program args...
    local want=$1 out rc
    shift
    out=$("$@" 2>&1); rc=$?
    [ $rc -eq 2 ] || fail "$* exited $rc, want 2: $out"
    [[ $out == *"$want"* ]] || fail "$*: message lacks '$want': $out"
}
for b in "$@"; do
    out=$("$b" --help) || fail "$b --help exited $?"
    [[ $out == usage:* && $out == *--help* ]] || fail "$b --help: $out"
    refuses "unknown option '--bogus'" "$b" --bogus
    refuses "unexpected argument 'stray'" "$b" stray
    # Every option that takes a value says so when it gets none, and refuses garbage.
    for opt in $(grep -oE -- '--[a-z][a-z0-9-]* [A-Z]+' <<<"$out" | cut -d' ' -f1); do
        refuses "$opt needs a value" "$b" "$opt"
        refuses "$opt:" "$b" "$opt" "lz4x!"
    done
done
echo ok
