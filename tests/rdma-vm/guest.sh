#!/bin/sh
# tests/rdma-vm/guest.sh - /init of the RDMA test VM (busybox sh): brings soft-RoCE up on a dummy
# interface and runs the checks. Each prints "RESULT PASS|FAIL name [detail]"; run.sh counts them.
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
    for t in test_link_rdma_core test_link_rdma; do
        if VFMIG_TEST_RDMA_ADDR=$ADDR timeout 600 $t >$W/$t.log 2>&1; then
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
    # Both ends in one process, a live workload dirtying a hot set during pre-copy.
    timeout 600 vfmig local --link "rdma://$ADDR:0?qps=2" --vram 256M --dirty-rate 50M --pattern hot:32M \
        --content mix -v >$W/local.log 2>&1
    echo "exit $?" >>$W/local.log
    check migrate_local $W/local.log 'verified: yes' 'resumed-on-target' '^exit 0$'
fi

if wanted two_process; then
    P=7471
    vfmig target --listen "rdma://$ADDR:$P" --vram 256M --accept-timeout-ms 60000 >$W/tgt.log 2>&1 &
    tp=$!
    if waitfor $W/tgt.log 'waiting for a source' 60; then
        timeout 600 vfmig source --connect "rdma://$ADDR:$P?qps=2" --vram 256M --dirty-rate 50M \
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
    vfmig target --listen "rdma://$ADDR:$P" --vram 512M --accept-timeout-ms 60000 -v >$W/ft.log 2>&1 &
    tp=$!
    waitfor $W/ft.log 'waiting for a source' 60
    t0=$(date +%s)
    vfmig source --connect "rdma://$ADDR:$P?qps=2" --vram 512M --dirty-rate 20M --max-bandwidth 50M \
        --content random -v >$W/fs.log 2>&1 &
    sp=$!
    if waitfor $W/ft.log 'phase pre-copy' 60; then
        kill -9 $tp
    fi
    wait $sp
    echo "exit $? after $(($(date +%s) - t0)) s" >>$W/fs.log
    wait $tp 2>/dev/null
    # The failure must name the peer leaving, not a timeout that merely ran out.
    check fault_target_killed $W/fs.log '^exit 1 ' 'migration FAILED: .*(disconnected|closed)' \
        'VF state: running-on-source'

    # The source dies in round 0: the target must not resume.
    P=7473
    vfmig target --listen "rdma://$ADDR:$P" --vram 512M --accept-timeout-ms 60000 -v >$W/gt.log 2>&1 &
    tp=$!
    waitfor $W/gt.log 'waiting for a source' 60
    t0=$(date +%s)
    vfmig source --connect "rdma://$ADDR:$P?qps=2" --vram 512M --dirty-rate 20M --max-bandwidth 50M \
        --content random -v >$W/gs.log 2>&1 &
    sp=$!
    if waitfor $W/gs.log 'phase pre-copy' 60; then
        kill -9 $sp
    fi
    wait $tp
    echo "exit $? after $(($(date +%s) - t0)) s" >>$W/gt.log
    check fault_source_killed $W/gt.log '^exit 1 ' 'migration FAILED: .*(disconnected|closed)' \
        'VF state: not-resumed'
fi

# ---- throughput: ib_write_bw against vfmig's RDMA link, same VM, same device ----
if wanted bw; then
    ib_write_bw -R -d rxe0 -s 1048576 -D 10 -F >$W/ibs.log 2>&1 &
    ip=$!
    waitfor $W/ibs.log 'Waiting for client' 30
    ib_write_bw -R -d rxe0 -s 1048576 -D 10 -F $ADDR >$W/ibc.log 2>&1
    wait $ip
    cat $W/ibc.log
    # "#bytes #iterations BW peak[MB/sec] BW average[MB/sec] MsgRate[Mpps]" (MB = 2^20 bytes)
    ib=$(awk '$1 == 1048576 {print $4}' $W/ibc.log | tail -n1)
    rdma_link_bw $ADDR 2147483648 1048576 1 >$W/lbw.log 2>&1
    cat $W/lbw.log
    lk=$(sed -n 's/^rdma_link_bw: .*: \([0-9.]*\) MiB\/s$/\1/p' $W/lbw.log)
    if [ -n "$ib" ] && [ -n "$lk" ]; then
        result PASS bandwidth "ib_write_bw $ib MiB/s, vfmig link $lk MiB/s"
        echo "RATIO $(awk -v a="$lk" -v b="$ib" 'BEGIN {printf "%.2f (vfmig link %.0f MiB/s, ib_write_bw %.0f MiB/s)", a / b, a, b}')"
    else
        result FAIL bandwidth "ib_write_bw '${ib}' link '${lk}'"
        cat $W/ibs.log
    fi
fi

finish
