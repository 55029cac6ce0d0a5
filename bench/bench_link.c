/*
 * bench/bench_link.c - TCP link throughput over loopback against plain sockets, same run.
 *
 * For each stream count: N sender threads push --bytes in total of raw --frame-byte page frames
 * (vfmig__link_send, then flush) to N receiver threads (vfmig__link_recv, checksum verified);
 * then the baseline: N plain TCP connections, 1 MiB write()s / read()s of the same bytes.
 * Prints GB/s, CPU seconds per GB (whole process: both ends) and link/baseline ratios.
 * --aead adds, in the same interleaved runs, the link with AES-256-GCM on every frame (random
 * keys, crosswise), and a second table comparing it with the plain link; --mac likewise for the
 * keyed integrity of a keyed session without encryption (a Poly1305 tag per frame).
 *
 * usage: bench_link [--bytes SIZE] [--frame SIZE] [--streams 1,2,4] [--reps N]
 *                   [--copy-threshold SIZE] [--direct-read SIZE] [--zerocopy] [--aead] [--mac] (--help lists them)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "baseline.h"
#include "bench_opts.h"
#include "transport/link_impl.h"

typedef struct opts {
    uint64_t bytes;
    uint32_t frame;
    int streams[8], nstreams;
    int reps;
    long copy_threshold; /* <0: library default */
    long direct_read;    /* <0: library default */
    int zerocopy;
    int aead;
    int mac;
} opts;

typedef struct worker {
    vfmig_link *l;
    unsigned stream;
    uint64_t bytes;
    uint32_t frame;
    int status;
} worker;

static void *link_sender(void *p)
{
    worker *w = p;
    uint8_t *buf = malloc(w->frame);
    memset(buf, 0x5a, w->frame);
    vfmig_frame f = {.type = VFMIG_F_PAGES, .codec = VFMIG_CODEC_RAW, .len = w->frame};
    for (uint64_t sent = 0; sent < w->bytes && !w->status; sent += w->frame) {
        f.page = sent / w->frame;
        w->status = vfmig__link_send(w->l, w->stream, &f, buf);
    }
    if (!w->status)
        w->status = vfmig__link_flush(w->l, w->stream);
    free(buf);
    return NULL;
}

static void *link_receiver(void *p)
{
    worker *w = p;
    uint8_t *buf = malloc(w->frame);
    vfmig_frame f;
    for (uint64_t got = 0; got < w->bytes && !w->status; got += f.len)
        w->status = vfmig__link_recv(w->l, w->stream, &f, buf, w->frame, 10000);
    free(buf);
    return NULL;
}

typedef struct result {
    double gbps, cpu_per_gb;
} result;

static void run_workers(worker *s, worker *r, int n, void *(*fs)(void *), void *(*fr)(void *),
                        uint64_t bytes, result *out)
{
    pthread_t ts[64], tr[64];
    double w0 = bench_now_s(), c0 = bench_cpu_seconds();
    for (int i = 0; i < n; i++) {
        pthread_create(&tr[i], NULL, fr, &r[i]);
        pthread_create(&ts[i], NULL, fs, &s[i]);
    }
    for (int i = 0; i < n; i++) {
        pthread_join(ts[i], NULL);
        pthread_join(tr[i], NULL);
        if (s[i].status || r[i].status) {
            fprintf(stderr, "bench_link: stream %d failed: %d / %d\n", i, s[i].status, r[i].status);
            exit(1);
        }
    }
    double wall = bench_now_s() - w0, cpu = bench_cpu_seconds() - c0;
    out->gbps = (double)bytes / wall / 1e9;
    out->cpu_per_gb = cpu / ((double)bytes / 1e9);
}

typedef struct conn_args {
    char ep[128];
    vfmig_link *l;
    int st;
} conn_args;

static void *conn_thread(void *p)
{
    conn_args *a = p;
    char err[256];
    a->st = vfmig_connect(a->ep, 10000, &a->l, err, sizeof(err));
    if (a->st)
        fprintf(stderr, "connect: %s\n", err);
    return NULL;
}

static void bench_link(const opts *o, int n, int aead, result *out)
{
    vfmig_listener *L;
    char err[256];
    if (vfmig_listen("tcp://127.0.0.1:0", &L, err, sizeof(err))) {
        fprintf(stderr, "listen: %s\n", err);
        exit(1);
    }
    conn_args ca;
    snprintf(ca.ep, sizeof(ca.ep), "tcp://127.0.0.1:%d?streams=%d", vfmig_listener_port(L), n);
    pthread_t t;
    pthread_create(&t, NULL, conn_thread, &ca);
    vfmig_link *b;
    int r = vfmig_accept(L, 10000, &b, err, sizeof(err));
    pthread_join(t, NULL);
    if (r || ca.st) {
        fprintf(stderr, "accept: %s\n", err);
        exit(1);
    }
    vfmig_listener_close(L);
    if (o->copy_threshold >= 0 || o->direct_read >= 0 || o->zerocopy) {
        /* Defaults as in tcp.c; the sender's and receiver's knobs are set on their own ends. */
        size_t ct = o->copy_threshold >= 0 ? (size_t)o->copy_threshold : (512u << 10);
        size_t dr = o->direct_read >= 0 ? (size_t)o->direct_read : (256u << 10);
        vfmig__tcp_set_tuning(ca.l, ct, dr, o->zerocopy);
        vfmig__tcp_set_tuning(b, ct, dr, 0);
    }
    if (aead) { /* 1: AES-256-GCM, 2: Poly1305 tag only */
        uint8_t k1[32], k2[32];
        if (getrandom(k1, sizeof(k1), 0) != sizeof(k1) || getrandom(k2, sizeof(k2), 0) != sizeof(k2)) {
            fprintf(stderr, "getrandom failed\n");
            exit(1);
        }
        /* The frame size bounds the scratch buffers (the default 4 MiB would refuse larger). */
        vfmig__link_set_max_payload(ca.l, o->frame);
        vfmig__link_set_max_payload(b, o->frame);
        int (*enable)(vfmig_link *, const uint8_t *, const uint8_t *) =
            aead == 2 ? vfmig__link_enable_mac : vfmig__link_enable_aead;
        if (enable(ca.l, k1, k2) || enable(b, k2, k1)) {
            fprintf(stderr, "enabling AEAD failed\n");
            exit(1);
        }
    }
    worker s[64], rv[64];
    uint64_t per = o->bytes / (uint64_t)n / o->frame * o->frame;
    for (int i = 0; i < n; i++) {
        s[i] = (worker){.l = ca.l, .stream = (unsigned)i + 1, .bytes = per, .frame = o->frame};
        rv[i] = (worker){.l = b, .stream = (unsigned)i + 1, .bytes = per, .frame = o->frame};
    }
    run_workers(s, rv, n, link_sender, link_receiver, per * (uint64_t)n, out);
    vfmig_link_close(ca.l);
    vfmig_link_close(b);
}

/* The baseline: plain sockets moving the same bytes (bench/baseline.c, shared with the other
 * benchmarks). */
static void bench_plain(const opts *o, int n, result *out)
{
    bench_tcp_result b;
    uint64_t per = o->bytes / (uint64_t)n / o->frame * o->frame;
    if (bench_tcp_baseline(per * (uint64_t)n, (unsigned)n, 1u << 20, &b)) {
        fprintf(stderr, "plain socket baseline failed\n");
        exit(1);
    }
    out->gbps = b.gbps;
    out->cpu_per_gb = b.cpu_s_per_gb;
}

static int cmp_res(const void *a, const void *b)
{
    double x = ((const result *)a)->gbps, y = ((const result *)b)->gbps;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    opts o = {.bytes = 4ull << 30, .frame = 64 << 10, .streams = {1, 2, 4}, .nstreams = 3, .reps = 3,
              .copy_threshold = -1, .direct_read = -1};
    enum { O_BYTES = 256, O_FRAME, O_STREAMS, O_REPS, O_COPY, O_DIRECT, O_ZEROCOPY, O_AEAD, O_MAC };
    static const bench_option table[] = {
        {"bytes", O_BYTES, "SIZE", "bytes per run, all streams together (default 4G; K/M/G)"},
        {"frame", O_FRAME, "SIZE", "payload bytes per frame (default 64K)"},
        {"streams", O_STREAMS, "LIST", "stream counts to measure, e.g. 1,2,4 (default 1,2,4)"},
        {"reps", O_REPS, "N", "runs per row, median reported, 1..32 (default 3)"},
        {"copy-threshold", O_COPY, "SIZE", "payloads this big go out by sendmsg from the caller (default: library's)"},
        {"direct-read", O_DIRECT, "SIZE", "payload rests this big are read straight into place (default: library's)"},
        {"zerocopy", O_ZEROCOPY, NULL, "MSG_ZEROCOPY on data streams"},
        {"aead", O_AEAD, NULL, "also measure the link with AES-256-GCM on every frame"},
        {"mac", O_MAC, NULL, "also measure the link with a Poly1305 tag on every frame (keyed, clear)"},
    };
    bench_cli cli;
    bench_cli_init(&cli, "bench_link", "TCP link throughput over loopback against plain sockets, same run.",
                   table, BENCH_NOPTS(table));
    for (int id; (id = bench_cli_next(&cli, argc, argv)) != -1;) {
        switch (id) {
        case O_BYTES: o.bytes = bench_parse_size(&cli, optarg, 1 << 20, 1ull << 40); break;
        case O_FRAME: o.frame = (uint32_t)bench_parse_size(&cli, optarg, 1, VFMIG_FRAME_MAX_PAYLOAD); break;
        case O_REPS: o.reps = (int)bench_parse_int(&cli, optarg, 1, 32); break;
        case O_COPY: o.copy_threshold = (long)bench_parse_size(&cli, optarg, 0, 1u << 30); break;
        case O_DIRECT: o.direct_read = (long)bench_parse_size(&cli, optarg, 0, 1u << 30); break;
        case O_ZEROCOPY: o.zerocopy = 1; break;
        case O_AEAD: o.aead = 1; break;
        case O_MAC: o.mac = 1; break;
        case O_STREAMS: {
            int64_t v[8];
            o.nstreams = bench_parse_int_list(&cli, optarg, v, 8, 1, VFMIG_MAX_STREAMS);
            for (int k = 0; k < o.nstreams; k++)
                o.streams[k] = (int)v[k];
            break;
        }
        }
    }
    printf("bench_link: %.2f GiB of %u-byte frames per run, median of %d (link%s and plain interleaved)\n",
           (double)o.bytes / (1 << 30), o.frame, o.reps, o.aead ? ", aead link" : "");
    printf("%-8s %10s %10s %14s %14s %12s %8s\n", "streams", "link GB/s", "plain GB/s", "link cpu s/GB",
           "plain cpu s/GB", "paired ratio", "cpu x");
    result aead_med[8], link_med[8], aead_ratio[8], mac_med[8], mac_ratio[8];
    for (int k = 0; k < o.nstreams; k++) {
        int n = o.streams[k];
        if (n < 1 || n > VFMIG_MAX_STREAMS)
            return 2;
        result rl[32], rp[32], ratio[32], ra[32], aratio[32], rm[32], mratio[32];
        for (int rep = 0; rep < o.reps; rep++) {
            bench_link(&o, n, 0, &rl[rep]);
            if (o.aead) {
                bench_link(&o, n, 1, &ra[rep]);
                aratio[rep].gbps = ra[rep].gbps / rl[rep].gbps;
            }
            if (o.mac) {
                bench_link(&o, n, 2, &rm[rep]);
                mratio[rep].gbps = rm[rep].gbps / rl[rep].gbps;
            }
            bench_plain(&o, n, &rp[rep]);
            /* Each link run against the baseline run right after it: robust to drifting load. */
            ratio[rep].gbps = rl[rep].gbps / rp[rep].gbps;
        }
        if (o.aead) {
            qsort(ra, (size_t)o.reps, sizeof(result), cmp_res);
            qsort(aratio, (size_t)o.reps, sizeof(result), cmp_res);
            aead_med[k] = ra[o.reps / 2];
            aead_ratio[k] = aratio[o.reps / 2];
        }
        if (o.mac) {
            qsort(rm, (size_t)o.reps, sizeof(result), cmp_res);
            qsort(mratio, (size_t)o.reps, sizeof(result), cmp_res);
            mac_med[k] = rm[o.reps / 2];
            mac_ratio[k] = mratio[o.reps / 2];
        }
        qsort(ratio, (size_t)o.reps, sizeof(result), cmp_res);
        qsort(rl, (size_t)o.reps, sizeof(result), cmp_res);
        qsort(rp, (size_t)o.reps, sizeof(result), cmp_res);
        result ml = rl[o.reps / 2], mp = rp[o.reps / 2];
        printf("%-8d %10.2f %10.2f %14.3f %14.3f %12.2f %8.2f\n", n, ml.gbps, mp.gbps, ml.cpu_per_gb,
               mp.cpu_per_gb, ratio[o.reps / 2].gbps, ml.cpu_per_gb / mp.cpu_per_gb);
        link_med[k] = ml;
    }
    if (o.aead) {
        /* Same runs, interleaved with the ones above: AES-256-GCM link against the plain link. */
        printf("\nAES-256-GCM per frame (link runs interleaved with the ones above)\n");
        printf("%-8s %10s %10s %14s %14s %12s %8s\n", "streams", "aead GB/s", "link GB/s",
               "aead cpu s/GB", "link cpu s/GB", "paired ratio", "cpu x");
        for (int k = 0; k < o.nstreams; k++)
            printf("%-8d %10.2f %10.2f %14.3f %14.3f %12.2f %8.2f\n", o.streams[k], aead_med[k].gbps,
                   link_med[k].gbps, aead_med[k].cpu_per_gb, link_med[k].cpu_per_gb,
                   aead_ratio[k].gbps, aead_med[k].cpu_per_gb / link_med[k].cpu_per_gb);
    }
    if (o.mac) {
        printf("\nPoly1305 tag per frame, no encryption (link runs interleaved with the ones above)\n");
        printf("%-8s %10s %10s %14s %14s %12s %8s\n", "streams", "mac GB/s", "link GB/s",
               "mac cpu s/GB", "link cpu s/GB", "paired ratio", "cpu x");
        for (int k = 0; k < o.nstreams; k++)
            printf("%-8d %10.2f %10.2f %14.3f %14.3f %12.2f %8.2f\n", o.streams[k], mac_med[k].gbps,
                   link_med[k].gbps, mac_med[k].cpu_per_gb, link_med[k].cpu_per_gb, mac_ratio[k].gbps,
                   mac_med[k].cpu_per_gb / link_med[k].cpu_per_gb);
    }
    return 0;
}
