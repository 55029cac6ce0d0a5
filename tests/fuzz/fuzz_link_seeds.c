/*
 * tests/fuzz/fuzz_link_seeds.c - writes the seed corpus of fuzz_link (not a test):
 *   fuzz_link_seeds DIR
 * Valid frame sequences in each mode (plain, AES-256-GCM, Poly1305-tagged, with fuzz_link's
 * keys), sent by a real link over a socketpair and captured, plus truncations.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport/link_impl.h"

static const uint8_t K1[32] = "fuzz link key one ..............";
static const uint8_t K2[32] = "fuzz link key two ..............";

static void put(const char *dir, const char *name, uint8_t mode, uint8_t capsel, const uint8_t *b, size_t n)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputc(mode, f);
    fputc(capsel, f);
    fwrite(b, 1, n, f);
    fclose(f);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_link_seeds DIR\n");
        return 2;
    }
    static const char *modes[] = {"plain", "aead", "mac"};
    for (int mode = 0; mode < 3; mode++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
            return 1;
        vfmig_link *l;
        int fd = sv[0];
        if (vfmig__tcp_link_from_fds(&fd, 0, &l, NULL, 0))
            return 1;
        vfmig__link_set_max_payload(l, 4096);
        /* The receiving end (fuzz_link) keys rx with K2: this end sends with tx = K2. */
        if (mode == 1 && vfmig__link_enable_aead(l, K2, K1))
            return 1;
        if (mode == 2 && vfmig__link_enable_mac(l, K2, K1))
            return 1;
        uint8_t pay[3000];
        for (size_t i = 0; i < sizeof(pay); i++)
            pay[i] = (uint8_t)(i * 7);
        vfmig_frame fr[] = {{.type = VFMIG_F_HELLO, .len = 100},
                            {.type = VFMIG_F_PAGES, .codec = VFMIG_CODEC_RAW, .len = 3000, .npages = 1, .page = 5},
                            {.type = VFMIG_F_ROUND_END, .aux = 1},
                            {.type = VFMIG_F_COMMIT, .page = 0x1234, .aux = 0x5678},
                            {.type = VFMIG_F_ABORT, .len = 11, .aux = (uint64_t)(int64_t)VFMIG_EPROTO}};
        for (size_t i = 0; i < sizeof(fr) / sizeof(fr[0]); i++)
            if (vfmig__link_send(l, 0, &fr[i], pay))
                return 1;
        if (vfmig__link_flush(l, 0))
            return 1;
        shutdown(sv[0], SHUT_WR);
        static uint8_t cap[64 << 10];
        size_t n = 0;
        ssize_t r;
        while ((r = read(sv[1], cap + n, sizeof(cap) - n)) > 0)
            n += (size_t)r;
        char name[64];
        /* capsel 6: a 4 KiB buffer, as the sender's max payload */
        snprintf(name, sizeof(name), "%s-frames", modes[mode]);
        put(argv[1], name, (uint8_t)mode, 6, cap, n);
        snprintf(name, sizeof(name), "%s-truncated", modes[mode]);
        put(argv[1], name, (uint8_t)mode, 6, cap, n / 2);
        snprintf(name, sizeof(name), "%s-small-buffer", modes[mode]);
        put(argv[1], name, (uint8_t)mode, 1, cap, n);
        vfmig_link_close(l);
        close(sv[1]);
    }
    return 0;
}
