/*
 * tests/fuzz/fuzz_link.c - libFuzzer target for the link's read path (transport/link.c
 * vfmig__link_recv, recv_sealed, recv_tagged over transport/tcp.c tcp_read): the input after a
 * 2-byte prefix is what a peer sent on the control stream of a socketpair link. Prefix byte 0
 * picks the mode (plain, AES-256-GCM, Poly1305-tagged, under fixed keys), byte 1 the receive
 * buffer / max payload. Frames are read until the bytes run out: every call must return one of
 * the documented statuses, a frame that passes must fit the buffer, never a crash, a hang or an
 * out-of-bounds access.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport/link_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t K1[32] = "fuzz link key one ..............";
static const uint8_t K2[32] = "fuzz link key two ..............";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > (96u << 10)) /* what fits a socketpair's buffer without a writer thread */
        return 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
        return 0;
    int bufsz = 256 << 10;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof(bufsz));
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof(bufsz));
    size_t body = size - 2;
    if (body && write(sv[0], data + 2, body) != (ssize_t)body) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    shutdown(sv[0], SHUT_WR);
    vfmig_link *l;
    int fd = sv[1];
    if (vfmig__tcp_link_from_fds(&fd, 0, &l, NULL, 0)) {
        close(sv[0]);
        return 0;
    }
    size_t cap = 64u << (data[1] % 12); /* 64 B .. 128 KiB */
    vfmig__link_set_max_payload(l, data[1] & 0x80 ? VFMIG_FRAME_MAX_PAYLOAD : cap);
    vfmig__link_set_timeout(l, 100);
    int mode = data[0] % 3;
    if (mode == 1 && vfmig__link_enable_aead(l, K1, K2))
        __builtin_trap();
    if (mode == 2 && vfmig__link_enable_mac(l, K1, K2))
        __builtin_trap();
    uint8_t *buf = malloc(cap);
    for (int i = 0; i < 10000; i++) {
        vfmig_frame f;
        int r = vfmig__link_recv(l, 0, &f, buf, cap, 0);
        if (r == VFMIG_OK) {
            if (f.len > cap || f.type < VFMIG_F_HELLO || f.type > VFMIG_F_TYPE_MAX)
                __builtin_trap();
            continue;
        }
        if (r != VFMIG_ECLOSED && r != VFMIG_EPROTO && r != VFMIG_ECHECKSUM && r != VFMIG_EAUTH &&
            r != VFMIG_ETIMEDOUT && r != VFMIG_EIO)
            __builtin_trap();
        break; /* a refused frame leaves the stream out of step: a receiver stops there */
    }
    free(buf);
    vfmig_link_close(l);
    close(sv[0]);
    return 0;
}
