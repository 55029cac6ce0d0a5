#!/usr/bin/env bash
# tests/test_abi.sh INCLUDE_DIR MAP LIBVFMIG_SO - the exported ABI: the functions the public
# headers declare VFMIG_API, the version script's list and what the shared library exports
# (`nm -D --defined-only`) are the same set; every export is a function named vfmig_* carrying a
# vfmig_N.M version node (so every dynamic symbol, nodes included, starts with vfmig_); the
# library has a SONAME. Any drift fails and names the symbols.
set -u
INC=$1 MAP=$2 SO=$3 AR=${4:-}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
command -v nm >/dev/null || { echo "SKIP: nm not found"; exit 77; }

# Declarations start a line with VFMIG_API; the name is the identifier before the first '('.
grep -h '^VFMIG_API' "$INC"/*.h | sed -E 's/^VFMIG_API[^(]*[ *]([A-Za-z_][A-Za-z0-9_]*)\(.*/\1/' |
    sort >"$TMP/header"
[ -s "$TMP/header" ] || fail "no VFMIG_API declarations found in $INC"
# Every line of the header that says VFMIG_API is a declaration we understood.
n_decl=$(grep -c '^VFMIG_API' "$INC"/*.h | awk -F: '{s += $NF} END {print s}')
[ "$n_decl" -eq "$(wc -l <"$TMP/header")" ] || fail "could not parse every VFMIG_API line"
grep -vq '^vfmig_' "$TMP/header" && fail "API functions without the vfmig_ prefix: $(grep -v '^vfmig_' "$TMP/header")"

# The version script: names inside "global:" sections (comments stripped).
sed -e 's:/\*.*\*/::' -e '/\/\*/,/\*\//d' "$MAP" |
    awk '/global:/ {g = 1; next} /local:/ {g = 0} g' | tr -d ' \t;' | grep -v '^$' | sort >"$TMP/map"
[ -s "$TMP/map" ] || fail "no global: names in $MAP"

nm -D --defined-only "$SO" >"$TMP/nm" || fail "nm -D $SO"
# Version nodes appear as absolute symbols (A vfmig_0.1); everything else must be a function.
awk '$2 != "A"' "$TMP/nm" >"$TMP/nm_syms"
awk '$2 != "T" {print}' "$TMP/nm_syms" | grep . && fail "exported non-function symbols (above)"
awk '{print $3}' "$TMP/nm_syms" | grep -v '@@vfmig_[0-9]' && fail "exports without a vfmig_N.M version (above)"
awk '{print $3}' "$TMP/nm_syms" | sed 's/@.*//' | sort >"$TMP/so"
# What `nm -D --defined-only` lists at all, version nodes included, is named vfmig_*.
awk '{print $3}' "$TMP/nm" | grep -v '^vfmig_' && fail "dynamic symbols not named vfmig_* (above)"

cmp_sets() { # A B name-of-A name-of-B
    local d
    d=$(comm -3 "$1" "$2")
    [ -z "$d" ] && return 0
    echo "only in $3: $(comm -23 "$1" "$2" | tr '\n' ' ')"
    echo "only in $4: $(comm -13 "$1" "$2" | tr '\n' ' ')"
    return 1
}
cmp_sets "$TMP/header" "$TMP/map" "the headers" "$MAP" ||
    fail "headers and version script differ (add new functions to a new node of $MAP)"
cmp_sets "$TMP/header" "$TMP/so" "the headers" "nm -D $SO" || fail "headers and the library's exports differ"

# The static library: its global symbols are the API and internals named vfmig__* only, so an
# embedder linking libvfmig.a cannot collide with them or mistake one for the API.
if [ -n "$AR" ]; then
    nm --defined-only -g "$AR" 2>/dev/null | awk '$2 ~ /^[TDBRCVW]$/ {print $3}' | sort -u >"$TMP/ar"
    # (DW.ref.*: the C++ runtime's references the CUDA object carries.)
    grep -v -e '^vfmig__' -e '^DW\.ref\.' "$TMP/ar" | comm -23 - "$TMP/header" >"$TMP/ar_bad"
    [ -s "$TMP/ar_bad" ] && fail "libvfmig.a defines symbols that are neither API nor vfmig__*: $(tr '\n' ' ' <"$TMP/ar_bad")"
fi

if command -v readelf >/dev/null; then
    readelf -d "$SO" | grep -q 'SONAME.*libvfmig\.so\.[0-9]' || fail "no SONAME libvfmig.so.N"
fi
echo "ok: $(wc -l <"$TMP/header") API functions, all exported under a version node, nothing else"
