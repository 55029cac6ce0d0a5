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

finish
