#!/usr/bin/env bash
# tests/rdma-vm/run.sh - vfmig's RDMA transport for real: soft-RoCE (rdma_rxe) inside a QEMU VM.
#
# This machine's kernel has no RDMA, so the script boots Debian's own kernel (linux-image-amd64,
# which ships rdma_rxe.ko) under QEMU with an initramfs made of Debian's rdma-core,
# ibverbs-providers (the rxe provider), iproute2 (`rdma`), perftest (ib_write_bw) and busybox,
# plus this tree's binaries. Inside, a soft-RoCE device sits on a dummy interface (10.0.0.1):
# nothing leaves the VM, and the VM has no network device at all. tests/rdma-vm/guest.sh runs
# the checks there and the script collects their results from the serial console. The same VM
# runs the hostmem device's soft-dirty tracker for real: Debian's kernel has CONFIG_MEM_SOFT_DIRTY,
# this host's may not (the ctest case test_dirty_sources_softdirty then only skips).
#
#   bash tests/rdma-vm/run.sh
#
# Environment:
#   VFMIG_RDMA_VM_CACHE  where packages, the kernel and the base initramfs are kept
#                        (default ${XDG_CACHE_HOME:-$HOME/.cache}/vfmig-rdma-vm)
#   VFMIG_BUILD_DIR      an existing build of this tree to use (default: build one in the cache)
#   VFMIG_RDMA_VM_ASAN_BUILD, VFMIG_RDMA_VM_TSAN_BUILD  sanitizer builds (setup.sh's build-asan,
#                        build-tsan): their RDMA link tests run in the guest too
#   VFMIG_RDMA_VM_TIMEOUT  seconds the VM may run (default 1500)
#   VFMIG_RDMA_VM_SMP, VFMIG_RDMA_VM_MEM   guest CPUs (default 2) and memory (default 2G)
#   VFMIG_RDMA_VM_ONLY   a guest.sh test-name pattern (grep -E) to run only some checks
#   VFMIG_RDMA_VM_EXTRA  a folder copied to /opt/vfmig/extra in the guest; its run.sh, if any,
#                        runs after the checks (experiments: e.g. variant builds of a tool)
#
# Exit status: 0 all passed, 1 something failed, 77 skipped (no qemu / packages to be had here).
# Last lines: "N passed, N failed" and "throughput ratio vfmig/ib_write_bw: R".
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
CACHE=${VFMIG_RDMA_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfmig-rdma-vm}
TIMEOUT=${VFMIG_RDMA_VM_TIMEOUT:-1500}
SMP=${VFMIG_RDMA_VM_SMP:-2}
MEM=${VFMIG_RDMA_VM_MEM:-2G}
T0=$(date +%s)

say() { echo "rdma-vm: $*"; }
skip() {
    echo "SKIP: rdma-vm: $*"
    exit 77
}

for tool in qemu-system-x86_64 apt-get apt-cache dpkg-deb cpio modinfo timeout ldd; do
    command -v "$tool" >/dev/null 2>&1 || skip "'$tool' is not installed (setup.sh deps installs qemu-system-x86, cpio and kmod)"
done

# Packages the guest is made of; the kernel is whatever linux-image-amd64 points at today.
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n1)
[ -n "$KPKG" ] || skip "apt-cache knows no linux-image-amd64 (no Debian package lists here)"
KVER=${KPKG#linux-image-}
GUEST_PKGS=("$KPKG" busybox-static rdma-core ibverbs-providers libibverbs1 librdmacm1 perftest
            libpci3 libibumad3 iproute2 libnl-3-200 libnl-route-3-200)
# The modules soft-RoCE, the RDMA CM and the dummy interface need; their dependencies are
# added by modinfo, and the guest loads them in that order (dependencies first).
MODULES=(crc32_generic rdma_rxe rdma_ucm dummy) # rxe computes its ICRC with the crypto API's crc32

mkdir -p "$CACHE/debs"
PKGKEY="$KPKG $(apt-cache policy "${GUEST_PKGS[@]}" 2>/dev/null | sed -n 's/^ *Candidate: //p' | tr '\n' ' ')"
KEY="$PKGKEY ${MODULES[*]} $(sed -n '/^BASE=/,/^fi$/p' "$0" | cksum)" # the base is rebuilt when its recipe changes
BASE="$CACHE/base-$KVER"
if [ ! -f "$BASE/ok" ] || [ "$(cat "$BASE/ok")" != "$KEY" ]; then
    say "building the base image for $KVER in $BASE (downloads about 75 MB once)"
    rm -rf "$BASE"
    mkdir -p "$BASE"
    if [ "$(cat "$CACHE/debs/ok" 2>/dev/null)" != "$PKGKEY" ]; then
        rm -f "$CACHE/debs"/*.deb "$CACHE/debs/ok"
        # apt-get download: no root needed, nothing installed on the host.
        (cd "$CACHE/debs" && apt-get download "${GUEST_PKGS[@]}" >"$CACHE/download.log" 2>&1) ||
            { cat "$CACHE/download.log"; skip "could not download the guest's Debian packages"; }
        echo "$PKGKEY" >"$CACHE/debs/ok"
    fi
    X="$BASE/x"
    mkdir -p "$X"
    for d in "$CACHE/debs"/*.deb; do dpkg-deb -x "$d" "$X"; done
    R="$BASE/root"
    mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,tmp,run,root,lib/modules,usr/bin,usr/lib/x86_64-linux-gnu,lib64}
    cp "$X/boot/vmlinuz-$KVER" "$BASE/vmlinuz"
    : >"$R/lib/modules/order"
    addmod() { # depth-first: a module after everything it depends on
        grep -qx "$1" "$R/lib/modules/order" && return 0
        local f d
        f=$(find "$X/lib/modules/$KVER" -name "$1.ko*" | head -n1)
        [ -n "$f" ] || { echo "rdma-vm: module $1 missing from $KPKG" >&2; exit 1; }
        for d in $(modinfo -F depends "$f" | tr ',' ' '); do addmod "$d"; done
        case "$f" in
        *.xz) xz -dc "$f" >"$R/lib/modules/$1.ko" ;;
        *.zst) zstd -qdc "$f" >"$R/lib/modules/$1.ko" ;;
        *) cp "$f" "$R/lib/modules/$1.ko" ;;
        esac
        echo "$1" >>"$R/lib/modules/order"
    }
    for m in "${MODULES[@]}"; do addmod "$m"; done
    cp "$X/bin/busybox" "$R/bin/busybox"
    for a in $("$X/bin/busybox" --list); do
        [ "$a" = busybox ] || ln -sf /bin/busybox "$R/bin/$a"
    done
    cp -a "$X/usr/bin/"{rdma,ib_write_bw,ib_send_bw} "$R/usr/bin/"
    cp -a "$X/bin/ip" "$R/usr/bin/ip"
    cp -a "$X/etc/libibverbs.d" "$R/etc/"
    cp -a "$X/usr/lib/x86_64-linux-gnu/libibverbs" "$R/usr/lib/x86_64-linux-gnu/"
    find "$X/lib/x86_64-linux-gnu" "$X/usr/lib/x86_64-linux-gnu" -maxdepth 1 -name 'lib*.so*' \
        -exec cp -a {} "$R/usr/lib/x86_64-linux-gnu/" \; 2>/dev/null
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
    printf 'root:x:0:\n' >"$R/etc/group"
    printf '127.0.0.1 localhost\n10.0.0.1 vm\n' >"$R/etc/hosts"
    printf 'hosts: files\n' >"$R/etc/nsswitch.conf"
    echo "$KEY" >"$BASE/ok.pending"
    rm -rf "$X"
    mv "$BASE/ok.pending" "$BASE/ok"
fi

# The project's binaries: an existing build, or one made in the cache from this tree.
BUILD=${VFMIG_BUILD_DIR:-$CACHE/build}
if [ -z "${VFMIG_BUILD_DIR:-}" ] || [ ! -x "$BUILD/vfmig" ]; then
    say "building vfmig in $BUILD"
    { cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVFMIG_WERROR=ON &&
      cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)"; } >"$CACHE/build.log" 2>&1 ||
        { cat "$CACHE/build.log"; echo "rdma-vm: build failed" >&2; exit 1; }
else
    cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)" >"$CACHE/build.log" 2>&1 ||
        { cat "$CACHE/build.log"; echo "rdma-vm: build failed" >&2; exit 1; }
fi
BINS=(vfmig tests/test_link_rdma tests/test_link_rdma_core tests/rdma_link_bw tests/test_dirty_sources_hash)
for b in "${BINS[@]}"; do
    [ -x "$BUILD/$b" ] || { echo "rdma-vm: $BUILD/$b was not built" >&2; exit 1; }
done

# Per-run overlay: binaries, their libraries (the host is the same Debian release as the guest's
# packages; ldd finds what the guest lacks), and the guest script. Concatenated cpio archives
# unpack one over the other.
RUN="$CACHE/run"
rm -rf "$RUN"
mkdir -p "$RUN/o/opt/vfmig" "$RUN/o/usr/lib/x86_64-linux-gnu" "$RUN/o/lib64"
for b in "${BINS[@]}"; do cp "$BUILD/$b" "$RUN/o/opt/vfmig/"; done
for t in test_link_rdma test_link_rdma_core; do
    if [ -n "${VFMIG_RDMA_VM_ASAN_BUILD:-}" ] && [ -x "$VFMIG_RDMA_VM_ASAN_BUILD/tests/$t" ]; then
        cp "$VFMIG_RDMA_VM_ASAN_BUILD/tests/$t" "$RUN/o/opt/vfmig/${t}_asan"
    fi
done
if [ -n "${VFMIG_RDMA_VM_TSAN_BUILD:-}" ] && [ -x "$VFMIG_RDMA_VM_TSAN_BUILD/tests/test_link_rdma" ]; then
    cp "$VFMIG_RDMA_VM_TSAN_BUILD/tests/test_link_rdma" "$RUN/o/opt/vfmig/test_link_rdma_tsan"
fi
cp "$HERE/guest.sh" "$RUN/o/init"
chmod +x "$RUN/o/init"
printf '%s\n' "${VFMIG_RDMA_VM_ONLY:-}" >"$RUN/o/opt/vfmig/only"
[ -z "${VFMIG_RDMA_VM_EXTRA:-}" ] || cp -a "$VFMIG_RDMA_VM_EXTRA" "$RUN/o/opt/vfmig/extra"
mapfile -t EXES < <(find "$RUN/o/opt/vfmig" -type f -perm -u+x ! -name '*.sh')
R="$BASE/root"
libs() {
    LD_LIBRARY_PATH="$R/usr/lib/x86_64-linux-gnu" ldd "$@" 2>/dev/null | awk '/=> \//{print $3} /^\t\/lib64/{print $1}'
}
for f in $(libs "${EXES[@]}" "$R"/usr/bin/{rdma,ib_write_bw,ib_send_bw,ip} "$R"/usr/lib/x86_64-linux-gnu/libibverbs/*.so | sort -u); do
    case "$f" in
    /lib64/*) cp -L "$f" "$RUN/o/lib64/" ;;
    "$R"/*) ;;
    *) [ -e "$R/usr/lib/x86_64-linux-gnu/$(basename "$f")" ] || cp -L "$f" "$RUN/o/usr/lib/x86_64-linux-gnu/" ;;
    esac
done
LD_LIBRARY_PATH="$R/usr/lib/x86_64-linux-gnu:$RUN/o/usr/lib/x86_64-linux-gnu" ldd "${EXES[@]}" \
    "$R"/usr/bin/{rdma,ib_write_bw,ib_send_bw,ip} | grep 'not found' && { echo "rdma-vm: libraries missing from the guest" >&2; exit 1; }
(cd "$R" && find . | cpio -o -H newc --quiet) >"$RUN/initrd"
(cd "$RUN/o" && find . | cpio -o -H newc --quiet) >>"$RUN/initrd"

say "booting $KVER under QEMU (TCG, $SMP CPUs, $MEM), up to ${TIMEOUT}s"
LOG="$CACHE/console.log"
TB=$(date +%s)
set +e
# -nic none: the guest has no network device; soft-RoCE runs on a dummy interface inside it.
timeout --foreground -k 10 "$TIMEOUT" qemu-system-x86_64 -machine q35 -accel tcg,thread=multi -cpu max \
    -smp "$SMP" -m "$MEM" -nographic -no-reboot -nic none -serial mon:stdio -display none \
    -kernel "$BASE/vmlinuz" -initrd "$RUN/initrd" \
    -append "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init" </dev/null 2>&1 | sed -u 's/\r$//' | tee "$LOG"
qrc=${PIPESTATUS[0]}
set -e
T1=$(date +%s)
[ "$qrc" -eq 124 ] && say "the VM ran past ${TIMEOUT}s and was stopped"

pass=$(grep -c '^RESULT PASS ' "$LOG" || true)
fail=$(grep -c '^RESULT FAIL ' "$LOG" || true)
grep -q '^GUEST DONE' "$LOG" || { say "the guest did not finish"; fail=$((fail + 1)); }
echo "rdma-vm: $((T1 - T0)) s in all, $((T1 - TB)) s of them in the VM; console log: $LOG"
grep '^RESULT FAIL ' "$LOG" || true
echo "$pass passed, $fail failed"
ratio=$(sed -n 's/^RATIO //p' "$LOG" | tail -n1)
echo "throughput ratio vfmig/ib_write_bw: ${ratio:-unmeasured}"
[ "$fail" -eq 0 ]
