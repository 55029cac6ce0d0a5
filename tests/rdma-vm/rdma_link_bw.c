/*
 * tests/rdma-vm/rdma_link_bw.c - vfmig's RDMA link throughput, to set against ib_write_bw in the
 * same VM (tests/rdma-vm/run.sh). A tool, not a test: it measures and prints, asserting nothing
 * about speed; it fails only if a byte arrives wrong or a call fails.
 *
 *   rdma_link_bw ADDR [BYTES [FRAME [QPS]]]   listener and connector in one process on rdma://ADDR
 *   rdma_link_bw --cpu [FRAME]                 what the link's own per-byte work costs here:
 *                                              memcpy and the frame checksum, MiB/s (one thread)
 *
 * One sender thread per data QP pushes FRAME-byte page frames (vfmig__link_send, flush at the end)
 * to one receiver thread per QP; the last frame of each QP carries a checksum of everything
 * sent on it. Prints "rdma_link_bw: N MiB in S s: X MiB/s" (payload bytes, all QPs).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "transport/link_impl.h"

typedef struct worker {
    vfmig_link *l;
    unsigned s;
    uint64_t bytes;
    uint32_t frame;
    uint64_t sum;
    int status;
    char err[160];
} worker;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t mix(uint64_t sum, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 4096)
        sum = sum * 31 + p[i];
    return sum;
}

static void *sender(void *p)
{
    worker *w = p;
    uint8_t *buf = malloc(w->frame);
    if (!buf) {
        w->status = VFMIG_ENOMEM;
        return NULL;
    }
    for (uint32_t i = 0; i < w->frame; i++)
        buf[i] = (uint8_t)(i * 13 + w->s);
    for (uint64_t off = 0; off < w->bytes && !w->status; off += w->frame) {
        buf[0] = (uint8_t)(off >> 12); /* every frame differs a little */
        w->sum = mix(w->sum, buf, w->frame);
        vfmig_frame f = {.type = VFMIG_F_PAGES, .len = w->frame, .page = off >> 12};
        w->status = vfmig__link_send(w->l, w->s, &f, buf);
    }
    vfmig_frame end = {.type = VFMIG_F_PAGES, .len = 0, .page = w->sum};
    if (!w->status)
        w->status = vfmig__link_send(w->l, w->s, &end, NULL);
    if (!w->status)
        w->status = vfmig__link_flush(w->l, w->s);
    free(buf);
    return NULL;
}

static void *receiver(void *p)
{
    worker *w = p;
    uint8_t *buf = malloc(w->frame);
    if (!buf) {
        w->status = VFMIG_ENOMEM;
        return NULL;
    }
    for (;;) {
        vfmig_frame f;
        w->status = vfmig__link_recv(w->l, w->s, &f, buf, w->frame, 30000);
        if (w->status)
            break;
        if (f.len == 0) {
            if (f.page != w->sum)
                w->status = VFMIG_EPROTO;
            break;
        }
        w->sum = mix(w->sum, buf, f.len);
    }
    free(buf);
    return NULL;
}

typedef struct conn {
    char ep[128];
    vfmig_link *l;
    int status;
    char err[256];
} conn;

static void *connector(void *p)
{
    conn *c = p;
    c->status = vfmig_connect(c->ep, 10000, &c->l, c->err, sizeof(c->err));
    return NULL;
}

/* The link's per-byte CPU work besides the NIC's: a copy into a staging buffer (sender), a copy
 * out of a receive buffer (receiver) and the frame checksum (both ends). */
static int cpu_costs(uint32_t frame)
{
    uint8_t *a = malloc(frame), *b = malloc(frame), hdr[VFMIG_FRAME_HDR_BYTES];
    if (!a || !b)
        return 1;
    for (uint32_t i = 0; i < frame; i++)
        a[i] = (uint8_t)(i * 7);
    const uint64_t total = 512ull << 20;
    double t0 = now_s();
    for (uint64_t n = 0; n < total; n += frame) {
        a[0] = (uint8_t)n;
        memcpy(b, a, frame);
    }
    double t1 = now_s();
    for (uint64_t n = 0; n < total; n += frame) {
        vfmig_frame f = {.type = VFMIG_F_PAGES, .len = frame, .page = n};
        a[0] = (uint8_t)n;
        vfmig__frame_pack(&f, a, hdr);
    }
    double t2 = now_s();
    printf("rdma_link_bw: cpu: memcpy %.0f MiB/s, frame checksum %.0f MiB/s (%u-byte frames; b[0]=%u)\n",
           512 / (t1 - t0), 512 / (t2 - t1), frame, b[0]);
    free(a);
    free(b);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--cpu") == 0)
        return cpu_costs(argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 0) : 1u << 20);
    if (argc < 2) {
        fprintf(stderr, "usage: rdma_link_bw ADDR [BYTES [FRAME [QPS]]]\n");
        return 2;
    }
    uint64_t bytes = argc > 2 ? strtoull(argv[2], NULL, 0) : 1ull << 30;
    uint32_t frame = argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 0) : 1u << 20;
    unsigned qps = argc > 4 ? (unsigned)strtoul(argv[4], NULL, 0) : 1;
    if (!frame || frame > (64u << 20) || !qps || qps > VFMIG_MAX_STREAMS) {
        fprintf(stderr, "rdma_link_bw: FRAME 1..64M, QPS 1..%d\n", VFMIG_MAX_STREAMS);
        return 2;
    }
    char ep[128], err[256];
    vfmig_listener *L;
    snprintf(ep, sizeof(ep), "rdma://%s:0", argv[1]);
    int r = vfmig_listen(ep, &L, err, sizeof(err));
    if (r) {
        fprintf(stderr, "rdma_link_bw: listen: %s\n", err);
        return 1;
    }
    conn c = {.status = 0};
    snprintf(c.ep, sizeof(c.ep), "rdma://%s:%d?qps=%u", argv[1], vfmig_listener_port(L), qps);
    pthread_t t;
    pthread_create(&t, NULL, connector, &c);
    vfmig_link *b = NULL;
    r = vfmig_accept(L, 10000, &b, err, sizeof(err));
    pthread_join(t, NULL);
    vfmig_listener_close(L);
    if (r || c.status) {
        fprintf(stderr, "rdma_link_bw: accept/connect: %s / %s\n", r ? err : "ok", c.status ? c.err : "ok");
        return 1;
    }
    worker ws[VFMIG_MAX_STREAMS], wr[VFMIG_MAX_STREAMS];
    pthread_t ts[VFMIG_MAX_STREAMS], tr[VFMIG_MAX_STREAMS];
    uint64_t per = (bytes / qps + frame - 1) / frame * frame;
    double t0 = now_s();
    for (unsigned i = 0; i < qps; i++) {
        ws[i] = (worker){.l = c.l, .s = i + 1, .bytes = per, .frame = frame};
        wr[i] = (worker){.l = b, .s = i + 1, .bytes = per, .frame = frame};
        pthread_create(&tr[i], NULL, receiver, &wr[i]);
        pthread_create(&ts[i], NULL, sender, &ws[i]);
    }
    int bad = 0;
    for (unsigned i = 0; i < qps; i++) {
        pthread_join(ts[i], NULL);
        pthread_join(tr[i], NULL);
        if (ws[i].status || wr[i].status) {
            fprintf(stderr, "rdma_link_bw: QP %u: send %s, receive %s (%s)\n", i + 1,
                    vfmig_strerror(ws[i].status), vfmig_strerror(wr[i].status), vfmig__link_stream_error(b, i + 1));
            bad = 1;
        }
    }
    double dt = now_s() - t0;
    vfmig_link_close(c.l);
    vfmig_link_close(b);
    if (bad)
        return 1;
    double mib = (double)(per * qps) / (1 << 20);
    printf("rdma_link_bw: %.0f MiB in %.2f s: %.1f MiB/s\n", mib, dt, mib / dt);
    return 0;
}
