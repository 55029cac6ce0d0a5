#!/usr/bin/env bash
# tests/test_install.sh BUILD_DIR - installs a build into a fresh prefix and uses it as an
# embedder would: the files are where they belong, vfmig.pc and the CMake package work, and
# examples/ builds out of tree against the *installed* package three ways (pkg-config,
# find_package with libvfmig.so, find_package COMPONENTS static with libvfmig.a) and runs.
# Run by `bash setup.sh test` on the Release build.
set -u
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$1
JOBS=${JOBS:-2}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
P=$TMP/prefix

cmake --install "$BUILD" --prefix "$P" >"$TMP/install.log" 2>&1 || { cat "$TMP/install.log"; fail "cmake --install"; }
LIBDIR=$(dirname "$(find "$P" -name libvfmig.so -print -quit 2>/dev/null)")
[ -n "$LIBDIR" ] && [ "$LIBDIR" != . ] || fail "no libvfmig.so installed"
for f in bin/vfmig include/vfmig.h share/man/man1/vfmig.1 share/bash-completion/completions/vfmig \
         share/vfmig/schema/vfmig-result.schema.json; do
    [ -e "$P/$f" ] || fail "not installed: $f"
done
for f in libvfmig.a libvfmig.so.0 pkgconfig/vfmig.pc cmake/vfmig/vfmig-config.cmake; do
    [ -e "$LIBDIR/$f" ] || fail "not installed: $LIBDIR/$f"
done
[ "$(readlink "$LIBDIR/libvfmig.so")" = libvfmig.so.0 ] || fail "libvfmig.so does not point at the soname"
# The installed command runs from its prefix (RUNPATH $ORIGIN/../lib...), with the installed library.
"$P/bin/vfmig" --version | grep -q '^vfmig ' || fail "installed vfmig --version"
got=$(env -u LD_LIBRARY_PATH ldd "$P/bin/vfmig" | sed -n 's/.*libvfmig\.so\.0 => \([^ ]*\).*/\1/p')
[ -n "$got" ] && [ "$(realpath "$got")" = "$(realpath "$LIBDIR/libvfmig.so.0")" ] ||
    fail "installed vfmig does not use the installed library: $(ldd "$P/bin/vfmig" | grep vfmig)"
"$P/bin/vfmig" local --vram 8M --quiet >"$TMP/local.out" 2>&1 || fail "installed vfmig local: $(cat "$TMP/local.out")"
if command -v groff >/dev/null; then
    warn=$(groff -man -Tutf8 -ww -z "$P/share/man/man1/vfmig.1" 2>&1)
    [ -z "$warn" ] || fail "man page: $warn"
fi

export PKG_CONFIG_PATH=$LIBDIR/pkgconfig
[ "$(pkg-config --modversion vfmig)" = "$(sed -n 's/^project(vfmig VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")" ] ||
    fail "pkg-config --modversion vfmig: $(pkg-config --modversion vfmig 2>&1)"
# Plain cc with pkg-config, as the header of examples/daemon.c says.
cc -std=c11 -O1 -Wall -Werror "$SRC/examples/daemon.c" $(pkg-config --cflags --libs vfmig) -pthread \
    -Wl,-rpath,"$LIBDIR" -o "$TMP/daemon_cc" || fail "cc daemon.c \$(pkg-config --cflags --libs vfmig)"
"$TMP/daemon_cc" --mib 8 >"$TMP/cc.out" 2>&1 || fail "daemon (cc + pkg-config): $(cat "$TMP/cc.out")"
echo "ok: cc + pkg-config: $(tail -n1 "$TMP/cc.out")"

for how in pkg-config cmake static; do
    b=$TMP/ex-$how
    cmake -S "$SRC/examples" -B "$b" -DVFMIG_FIND=$how -DCMAKE_PREFIX_PATH="$P" \
        -DCMAKE_C_FLAGS="-Wall -Wextra -Werror" >"$b.log" 2>&1 &&
        cmake --build "$b" -j "$JOBS" >>"$b.log" 2>&1 || { cat "$b.log"; fail "examples with VFMIG_FIND=$how"; }
    case $how in
    static) ! readelf -d "$b/daemon" | grep -q 'libvfmig\.so' || fail "static: daemon needs libvfmig.so" ;;
    *) readelf -d "$b/daemon" | grep -q 'NEEDED.*libvfmig\.so\.0' || fail "$how: daemon does not link libvfmig.so.0" ;;
    esac
    (cd "$b" && ctest --output-on-failure --timeout 120 >"$b.test" 2>&1) || { cat "$b.test"; fail "examples ($how) tests"; }
    echo "ok: examples built with VFMIG_FIND=$how against $P, $(grep -c 'Passed' "$b.test") tests passed"
done
