#!/usr/bin/env bash
# tests/test_completion.sh VFMIG COMPLETION - the bash completion offers the subcommands, each
# subcommand's own options (read from its --help), the values an option lists, and files for PATH.
set -u
V=$1 C=$2
fail() { echo "FAIL: $*"; exit 1; }
# shellcheck disable=SC1090
source "$C"
complete -p vfmig >/dev/null || fail "no completion registered for vfmig"

comp() { # words... (the last one is being completed) -> COMPREPLY as one line
    COMP_WORDS=("$V" "$@")
    COMP_CWORD=$(($# ))
    _vfmig
    echo " ${COMPREPLY[*]} "
}
has() { # "line" words...
    local got=$1; shift
    for w in "$@"; do [[ $got == *" $w "* ]] || fail "completion lacks '$w': '$got'"; done
}
lacks() {
    local got=$1; shift
    for w in "$@"; do [[ $got != *" $w "* ]] || fail "completion offers '$w': '$got'"; done
}
has "$(comp "")" local source target --help --version
has "$(comp lo)" local
has "$(comp local --co)" --codec --content
lacks "$(comp local --co)" --connect          # source's option, not local's
has "$(comp source --co)" --connect
has "$(comp target --li)" --listen
has "$(comp "")" serve keygen
has "$(comp serve --max-)" --max-sessions --max-vram --max-memory
lacks "$(comp local --max-)" --max-vram             # serve's option, not local's
has "$(comp local --codec "")" auto raw lz4 zstd delta
has "$(comp local --content t)" texture tensor
lacks "$(comp local --content t)" --threads
has "$(comp local --pattern "")" uniform seq
out=$(comp local --vram "")
[ "$out" = "  " ] || fail "--vram SIZE offers '$out' (want nothing)"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
touch "$TMP/key.bin"
has "$(comp local --psk-file "$TMP/k")" "$TMP/key.bin"
echo "ok"
