#!/bin/sh
# tests/rdma-vm/guest.sh - /init of the RDMA test VM (busybox sh): brings soft-RoCE up on a dummy
# interface and runs the checks (RDMA, and the soft-dirty tracker this Debian kernel has). Each
# prints "RESULT PASS|FAIL name [detail]"; run.sh counts them.
# Ordering between processes waits on log lines or exits, never on sleeps alone.
export PATH=/opt/vfmig:/usr/bin:/bin:/sbin
export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t tmpfs tmp /tmp
mount -t tmpfs shm /dev/shm
ulimit -l unlimited # verbs pin their buffers

ONLY=$(cat /opt/vfmig/only 2>/dev/null)
ADDR=10.0.0.1
W=/tmp/w
mkdir -p $W

result() { echo "RESULT $1 $2${3:+ - $3}"; }
finish() {
    echo "GUEST DONE"
    sync
    poweroff -f
}
wanted() { [ -z "$ONLY" ] || echo "$1" | grep -Eq "$ONLY"; }

for m in $(cat /lib/modules/order); do
    insmod /lib/modules/$m.ko || { result FAIL setup "insmod $m"; finish; }
done
ip link set lo up
[ -e /sys/class/net/dummy0 ] || ip link add dummy0 type dummy # the module makes one itself
ip link set dummy0 mtu 4096 up # rxe's largest path MTU is 4096
ip addr add $ADDR/24 dev dummy0
if ! rdma link add rxe0 type rxe netdev dummy0; then
    result FAIL setup "rdma link add rxe0"
    finish
fi
rdma link show
result PASS setup "rxe0 on dummy0 ($ADDR), $(nproc) CPUs, kernel $(uname -r)"

# waitfor FILE PATTERN SECONDS: until FILE has a line matching PATTERN (polls; bounded).
waitfor() {
    i=0
    while [ $i -lt $(($3 * 10)) ]; do
        grep -Eq "$2" "$1" 2>/dev/null && return 0
        usleep 100000
        i=$((i + 1))
    done
    return 1
}

# ---- link tests ----
if wanted link; then
    # *_asan, *_tsan: the sanitizer builds' (AddressSanitizer + UBSan, ThreadSanitizer), when
    # run.sh was given them.
    for t in test_link_rdma_core test_link_rdma $(cd /opt/vfmig && ls test_link_rdma*_?san 2>/dev/null); do
        if ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
            TSAN_OPTIONS=halt_on_error=1 \
            VFMIG_TEST_RDMA_ADDR=$ADDR timeout 600 $t >$W/$t.log 2>&1; then
            result PASS $t "$(tail -n1 $W/$t.log)"
        else
            result FAIL $t "exit $?"
            cat $W/$t.log
        fi
    done
fi

# ---- migrations over rdma:// ----
# check NAME LOG PATTERN...: PASS when every pattern is in LOG.
check() {
    n=$1 log=$2
    shift 2
    for pat in "$@"; do
        if ! grep -Eq "$pat" "$log"; then
            result FAIL "$n" "no '$pat' in its output"
            tail -n 25 "$log"
            return 1
        fi
    done
    result PASS "$n" "$(grep -E '^exit|migration FAILED|^verified|^blackout' "$log" | tr '\n' ' ')"
}

if wanted local; then
    # Both ends in one process, a live workload dirtying a hot set during pre-copy. Under
    # emulation the link moves ~50 MiB/s, about what the workload dirties, so no budget can be
    # met: switch anyway (what is checked here is that the image arrives whole over RDMA).
    timeout 600 vfmig local --link "rdma://$ADDR:0?qps=2" --vram 256M --dirty-rate 50M --pattern hot:32M \
        --content mix --on-budget-miss switch -v >$W/local.log 2>&1
    echo "exit $?" >>$W/local.log
    check migrate_local $W/local.log 'verified: yes' 'resumed-on-target' '^exit 0$'
fi

# Two processes over a network address: a target refuses to listen there without a key (issue
# 13), so both ends share one, as an operator's would.
vfmig keygen $W/key >/dev/null 2>&1 || echo "vfmig keygen failed" >&2
K="--psk-file $W/key"

if wanted two_process; then
    P=7471
    vfmig target $K --listen "rdma://$ADDR:$P" --vram 256M --accept-timeout-ms 60000 >$W/tgt.log 2>&1 &
    tp=$!
    if waitfor $W/tgt.log 'waiting for a source' 60; then
        timeout 600 vfmig source $K --connect "rdma://$ADDR:$P?qps=2" --vram 256M --dirty-rate 50M --on-budget-miss switch \
            --pattern hot:32M >$W/src.log 2>&1
        echo "exit $?" >>$W/src.log
    else
        echo "target never listened" >>$W/src.log
    fi
    wait $tp
    echo "exit $?" >>$W/tgt.log
    check migrate_two_process_source $W/src.log 'verified: yes' 'resumed-on-target' '^exit 0$'
    check migrate_two_process_target $W/tgt.log 'verified: yes' 'resumed-on-target' '^exit 0$'
fi

if wanted fault; then
    # The target dies in round 0 (the link capped so that round 0 lasts ~10 s): the source must
    # end with a clear error, its VF still running.
    P=7472
    vfmig target $K --listen "rdma://$ADDR:$P" --vram 512M --accept-timeout-ms 60000 -v >$W/ft.log 2>&1 &
    tp=$!
    waitfor $W/ft.log 'waiting for a source' 60
    t0=$(date +%s)
    vfmig source $K --connect "rdma://$ADDR:$P?qps=2" --vram 512M --dirty-rate 20M --max-bandwidth 50M \
        --content random -v >$W/fs.log 2>&1 &
    sp=$!
    if waitfor $W/ft.log 'phase pre-copy' 60; then
        kill -9 $tp
        t0=$(date +%s)
    fi
    wait $sp
    echo "exit $? $(($(date +%s) - t0)) s after the kill" >>$W/fs.log
    wait $tp 2>/dev/null
    # The failure must name the peer leaving, not a timeout that merely ran out.
    check fault_target_killed $W/fs.log '^exit 1 ' 'migration FAILED: .*(disconnected|closed)' \
        'VF state: running-on-source'

    # The source dies in round 0: the target must not resume.
    P=7473
    vfmig target $K --listen "rdma://$ADDR:$P" --vram 512M --accept-timeout-ms 60000 -v >$W/gt.log 2>&1 &
    tp=$!
    waitfor $W/gt.log 'waiting for a source' 60
    t0=$(date +%s)
    vfmig source $K --connect "rdma://$ADDR:$P?qps=2" --vram 512M --dirty-rate 20M --max-bandwidth 50M \
        --content random -v >$W/gs.log 2>&1 &
    sp=$!
    if waitfor $W/gs.log 'phase pre-copy' 60; then
        kill -9 $sp
        t0=$(date +%s)
    fi
    wait $tp
    echo "exit $? $(($(date +%s) - t0)) s after the kill" >>$W/gt.log
    check fault_source_killed $W/gt.log '^exit 1 ' 'migration FAILED: .*(disconnected|closed)' \
        'VF state: not-resumed'
fi

# ---- soft-dirty: this kernel has CONFIG_MEM_SOFT_DIRTY (the build host's does not) ----
# The hostmem device's soft-dirty tracker, forced by its config (tracker = soft-dirty): exact
# pages, racing writers (never a lost write) and a live migration compared byte for byte.
# VFMIG_TEST_REQUIRE_SOFT_DIRTY=1: a kernel without soft-dirty fails here instead of skipping.
if wanted softdirty; then
    for part in softdirty_pages softdirty_race softdirty_migrate; do
        if VFMIG_TEST_REQUIRE_SOFT_DIRTY=1 timeout 600 test_dirty_sources_hash $part >$W/$part.log 2>&1; then
            result PASS $part "$(grep -E '^(race|migration via)' $W/$part.log | tr '\n' ' ')"
        else
            result FAIL $part "exit $?"
            cat $W/$part.log
        fi
    done
    # The CLI's --device hostmem picks its tracker itself: uffd-wp needs UFFD_FEATURE_WP_ASYNC
    # (Linux 6.7), so on an older kernel it must fall back to soft-dirty.
    kv=$(uname -r | awk -F. '{print $1 * 1000 + $2}')
    want=uffd-wp
    [ "$kv" -lt 6007 ] && want=soft-dirty
    timeout 600 vfmig local --device hostmem --vram 128M --pattern hot:16M --dirty-rate 20M --content mix \
        --on-budget-miss switch >$W/hostmem.log 2>&1
    echo "exit $?" >>$W/hostmem.log
    check softdirty_cli_hostmem $W/hostmem.log 'verified: yes' "dirty source: $want" 'resumed-on-target' '^exit 0$'
fi

# ---- throughput: ib_write_bw against vfmig's RDMA link, same VM, same device, 1 QP each ----
# Under emulation both are CPU-bound and the host is shared, so single figures swing 2-4x: each
# of 5 reps measures the two back to back and the figure is the median of the reps' ratios.
# perftest's MB/sec are 2^20 bytes, like the link tool's MiB/s.
perf() { # perf TOOL: MiB/s of 256 x 1 MiB messages over rdma_cm, or nothing
    $1 -R -d rxe0 -s 1048576 -n 256 -F >$W/$1.srv 2>&1 &
    pp=$!
    # The server's stdout is a file (fully buffered): nothing says when it listens, so the
    # client retries while it is refused, up to 15 s.
    i=0
    until timeout 300 $1 -R -d rxe0 -s 1048576 -n 256 -F $ADDR >$W/$1.cli 2>&1 || [ $i -ge 60 ]; do
        usleep 250000
        i=$((i + 1))
    done
    wait $pp
    awk '$1 == 1048576 && $4 > 0 {print $4}' $W/$1.cli | tail -n1
}
if wanted bw; then
    rdma_link_bw --cpu 1048576
    ratios=""
    for rep in 1 2 3 4 5; do
        ib=$(perf ib_write_bw)
        lk=$(timeout 300 rdma_link_bw $ADDR 268435456 1048576 1 2>$W/lbw.err |
             sed -n 's/^rdma_link_bw: .*: \([0-9.]*\) MiB\/s$/\1/p')
        sb=$(perf ib_send_bw)
        echo "bw rep $rep: ib_write_bw ${ib:-?} MiB/s, vfmig link ${lk:-?} MiB/s, ib_send_bw ${sb:-?} MiB/s"
        if [ -z "$lk" ]; then
            cat $W/lbw.err
        elif [ -n "$ib" ]; then
            ratios="$ratios $(awk -v a="$lk" -v b="$ib" 'BEGIN {printf "%.3f", a / b}')"
        fi
    done
    n=$(echo $ratios | wc -w)
    if [ "$n" -ge 2 ]; then
        med=$(echo $ratios | tr ' ' '\n' | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')
        result PASS bandwidth "ratios$ratios"
        echo "RATIO $med (median of$ratios: vfmig link / ib_write_bw, 1 QP, 1 MiB messages)"
    else
        result FAIL bandwidth "fewer than 2 paired measurements ($ratios)"
        tail -n 5 $W/ib_write_bw.cli $W/ib_write_bw.srv
    fi
fi

if [ -x /opt/vfmig/extra/run.sh ]; then
    echo "== extra: /opt/vfmig/extra/run.sh"
    (cd /opt/vfmig/extra && ./run.sh)
fi

finish
