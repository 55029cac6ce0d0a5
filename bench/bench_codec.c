/*
 * bench/bench_codec.c - speed and ratio of the page codecs, next to bare liblz4 / libzstd on
 * the same buffers in the same run (absolute numbers are noisy; the our/bare ratio is not).
 *
 * Usage: bench_codec [--mib N] [--reps N] [--threads N] [--only KIND] [--json] (--help lists them)
 * For each content kind (zero, texture, tensor, random) a buffer of N MiB of 64 KiB pages.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lz4.h>
#include <zstd.h>

#include "bench_opts.h"
#include "common/json.h"
#include "compress/codec.h"
#include "vfmig_sim.h"

#define PAGE (64u * 1024u)
#define BATCH_PAGES 4 /* 256 KiB, the default VFMIG_P_BATCH_BYTES */

enum { K_ZERO, K_TEXTURE, K_TENSOR, K_RANDOM, K_COUNT };
static const char *const kind_name[K_COUNT] = {"zero", "texture", "tensor", "random"};

struct opts {
    size_t mib;
    int reps;
    int threads;
    int json;
    const char *only; /* one content kind, or NULL for all */
};

/* Everything one kind needs; outputs go to per-page slots of bound size. */
struct bufs {
    uint8_t *src, *ref, *ref_clustered, *dec;
    uint8_t *out;
    size_t *olen;
    size_t bytes, npages, slot;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The content is the simulated VF's own (engine/devices): the codecs are measured on exactly what
 * the migration benchmarks move. */
static void fill(uint8_t *p, size_t n, int kind, uint64_t seed)
{
    static const vfmig_content content[K_COUNT] = {VFMIG_CONTENT_ZERO, VFMIG_CONTENT_TEXTURE,
                                                   VFMIG_CONTENT_TENSOR, VFMIG_CONTENT_RANDOM};
    vfmig_simvf_config c;
    vfmig_simvf_config_init(&c);
    c.vram_bytes = n;
    c.page_size = PAGE;
    c.content = content[kind];
    c.seed = seed;
    vfmig_simvf *sim;
    if (vfmig_simvf_create(&c, &sim)) {
        fprintf(stderr, "cannot generate %zu bytes of %s content\n", n, kind_name[kind]);
        exit(1);
    }
    uint64_t size;
    memcpy(p, vfmig_simvf_vram(sim, &size), n);
    vfmig_simvf_destroy(sim);
}

/* ---- one measured pass over the buffer ------------------------------------------------------ */

enum { OP_OURS_ENC, OP_LZ4_BARE, OP_ZSTD_BARE, OP_MEMCPY_BARE, OP_OURS_DEC, OP_LZ4_DEC_BARE,
       OP_ZSTD_DEC_BARE, OP_ISZERO };

struct job {
    int op, codec, level;
    const uint8_t *ref; /* DELTA */
};

static void run_pass(struct bufs *b, vfmig_codec_ctx *c, ZSTD_CCtx *zc, ZSTD_DCtx *zd,
                     const struct job *j, size_t first, size_t last, int *bad)
{
    for (size_t p = first; p < last; p++) {
        const uint8_t *s = b->src + p * PAGE;
        uint8_t *o = b->out + p * b->slot;
        uint8_t *d = b->dec + p * PAGE;
        const uint8_t *r = j->ref ? j->ref + p * PAGE : NULL;
        switch (j->op) {
        case OP_OURS_ENC:
            if (vfmig__encode(c, j->codec, j->level, s, PAGE, r, o, b->slot, &b->olen[p]))
                *bad = 1;
            break;
        case OP_LZ4_BARE:
            b->olen[p] = (size_t)LZ4_compress_fast((const char *)s, (char *)o, PAGE,
                                                   (int)b->slot, 1);
            break;
        case OP_ZSTD_BARE:
            b->olen[p] = ZSTD_compressCCtx(zc, o, b->slot, s, PAGE, j->level);
            break;
        case OP_MEMCPY_BARE:
            memcpy(o, s, PAGE);
            b->olen[p] = PAGE;
            break;
        case OP_OURS_DEC:
            if (vfmig__decode(c, j->codec, o, b->olen[p], r, d, PAGE))
                *bad = 1;
            break;
        case OP_LZ4_DEC_BARE:
            if (LZ4_decompress_safe((const char *)o, (char *)d, (int)b->olen[p], PAGE) != PAGE)
                *bad = 1;
            break;
        case OP_ZSTD_DEC_BARE:
            if (ZSTD_decompressDCtx(zd, d, PAGE, o, b->olen[p]) != PAGE)
                *bad = 1;
            break;
        case OP_ISZERO:
            if (!vfmig__is_zero(s, PAGE))
                *bad = 1;
            break;
        }
    }
}

struct ctxs {
    vfmig_codec_ctx *c;
    ZSTD_CCtx *zc;
    ZSTD_DCtx *zd;
};

/* Best-of-reps time of a pass; returns seconds. */
static double timed(struct bufs *b, struct ctxs *x, const struct job *j, int reps)
{
    double best = 1e30;
    int bad = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        run_pass(b, x->c, x->zc, x->zd, j, 0, b->npages, &bad);
        double t = now_s() - t0;
        if (t < best)
            best = t;
    }
    if (bad)
        fprintf(stderr, "bench_codec: a codec call failed (op %d codec %d)\n", j->op, j->codec);
    return best;
}

static double total_out(const struct bufs *b)
{
    double s = 0;
    for (size_t p = 0; p < b->npages; p++)
        s += (double)b->olen[p];
    return s;
}

/* ---- output ----------------------------------------------------------------------------------- */

static vfmig_json jw; /* --json: {"bench":"codec",...,"rows":[ one row a line ]} on stdout */

static void row(const struct opts *o, const char *kind, const char *what, double ratio,
                double ours_gbs, double bare_gbs, const char *note)
{
    if (o->json) {
        vfmig__json_newline(&jw);
        vfmig__json_object(&jw, NULL);
        vfmig__json_str(&jw, "kind", kind);
        vfmig__json_str(&jw, "codec", what);
        vfmig__json_num(&jw, "ratio", ratio, 4);
        vfmig__json_num(&jw, "ours_gbs", ours_gbs, 3);
        if (bare_gbs > 0) {
            vfmig__json_num(&jw, "bare_gbs", bare_gbs, 3);
            vfmig__json_num(&jw, "ours_over_bare", ours_gbs / bare_gbs, 3);
        }
        if (note && *note)
            vfmig__json_str(&jw, "note", note);
        vfmig__json_end(&jw);
    } else {
        printf("%-8s %-16s %8.3f %9.3f ", kind, what, ratio, ours_gbs);
        if (bare_gbs > 0)
            printf("%9.3f %8.3f", bare_gbs, ours_gbs / bare_gbs);
        else
            printf("%9s %8s", "-", "-");
        printf("  %s\n", note ? note : "");
    }
}

/* Encode with ours and with the bare library, alternating, best of reps each. */
static void enc_pair(const struct opts *o, struct bufs *b, struct ctxs *x, int kind,
                     const char *label, int codec, int level, int bare_op)
{
    struct job ours = {OP_OURS_ENC, codec, level, NULL};
    struct job bare = {bare_op, codec, level == 0 ? 1 : level, NULL};
    double tb = 1e30, to = 1e30;
    for (int r = 0; r < o->reps; r++) { /* alternate which goes first: no order bias */
        double t1 = timed(b, x, r & 1 ? &ours : &bare, 1);
        double t2 = timed(b, x, r & 1 ? &bare : &ours, 1);
        double t_b = r & 1 ? t2 : t1, t_o = r & 1 ? t1 : t2;
        tb = t_b < tb ? t_b : tb;
        to = t_o < to ? t_o : to;
    }
    /* leave ours' output in place for the ratio and the decoders */
    timed(b, x, &ours, 1);
    double gb = (double)b->bytes / 1e9;
    double ratio = (double)b->bytes / total_out(b); /* ours' output is the last written */
    row(o, kind_name[kind], label, ratio, gb / to, gb / tb, "");
    /* decode what ours wrote */
    if (codec == VFMIG_CODEC_RAW)
        return;
    struct job dec = {OP_OURS_DEC, codec, 0, NULL};
    struct job bdec = {codec == VFMIG_CODEC_LZ4 ? OP_LZ4_DEC_BARE : OP_ZSTD_DEC_BARE, codec, 0, NULL};
    double td = 1e30, tbd = 1e30;
    for (int r = 0; r < o->reps; r++) {
        double t1 = timed(b, x, r & 1 ? &bdec : &dec, 1);
        double t2 = timed(b, x, r & 1 ? &dec : &bdec, 1);
        double t_o = r & 1 ? t2 : t1, t_b = r & 1 ? t1 : t2;
        td = t_o < td ? t_o : td;
        tbd = t_b < tbd ? t_b : tbd;
    }
    char lab[64];
    snprintf(lab, sizeof(lab), "%s dec", label);
    row(o, kind_name[kind], lab, ratio, gb / td, gb / tbd, "");
}

static void delta_rows(const struct opts *o, struct bufs *b, struct ctxs *x, int kind,
                       const uint8_t *ref, const char *label)
{
    struct job enc = {OP_OURS_ENC, VFMIG_CODEC_DELTA, 0, ref};
    struct job dec = {OP_OURS_DEC, VFMIG_CODEC_DELTA, 0, ref};
    double gb = (double)b->bytes / 1e9;
    double te = timed(b, x, &enc, o->reps);
    double ratio = (double)b->bytes / total_out(b);
    row(o, kind_name[kind], label, ratio, gb / te, 0, "");
    double td = timed(b, x, &dec, o->reps);
    char lab[64];
    snprintf(lab, sizeof(lab), "%s dec", label);
    row(o, kind_name[kind], lab, ratio, gb / td, 0, "");
    /* in place, as the target does it (ref == dst); applying the XOR again is the same work */
    memcpy(b->dec, ref, b->bytes);
    struct job inpl = {OP_OURS_DEC, VFMIG_CODEC_DELTA, 0, b->dec};
    td = timed(b, x, &inpl, o->reps);
    snprintf(lab, sizeof(lab), "%s dec-inpl", label);
    row(o, kind_name[kind], lab, ratio, gb / td, 0, "");
}

/* The adaptive chooser on 256 KiB batches, as the engine runs it (zero check first). */
static void auto_row(const struct opts *o, struct bufs *b, struct ctxs *x, int kind,
                     double link_bps, const uint8_t *ref, const char *label)
{
    vfmig_chooser ch;
    vfmig__chooser_init(&ch, VFMIG_CODEC_AUTO, 0, 1);
    vfmig__chooser_set_link(&ch, link_bps);
    double in_by[VFMIG_CODEC_COUNT] = {0};
    double out_total = 0;
    size_t bb = (size_t)BATCH_PAGES * PAGE;
    /* All reps together (one chooser across them): a best-of would favour reps where the
     * chooser happened to pick the cheap codec, and the mix must match the time. */
    double total_t = 0;
    for (int r = 0; r < o->reps; r++) {
        double t0 = now_s();
        for (size_t p = 0; p + BATCH_PAGES <= b->npages; p += BATCH_PAGES) {
            const uint8_t *s = b->src + p * PAGE;
            uint8_t *out = b->out + p * b->slot; /* slots are contiguous: room for the batch */
            size_t olen = 0;
            int codec;
            if (vfmig__is_zero(s, bb)) {
                codec = VFMIG_CODEC_ZERO;
            } else {
                codec = vfmig__chooser_pick(&ch, ref != NULL);
                double e0 = now_s();
                if (vfmig__encode(x->c, codec, 0, s, bb, ref ? ref + p * PAGE : NULL, out,
                                 BATCH_PAGES * b->slot, &olen))
                    fprintf(stderr, "bench_codec: auto encode failed\n");
                vfmig__chooser_feedback(&ch, codec, bb, olen, (uint64_t)((now_s() - e0) * 1e9));
                if (olen >= bb) {
                    olen = bb;
                    codec = VFMIG_CODEC_RAW; /* sent raw after all */
                }
            }
            in_by[codec] += (double)bb;
            out_total += (double)olen;
        }
        total_t += now_s() - t0;
    }
    double in_all = 0;
    for (int c = 0; c < VFMIG_CODEC_COUNT; c++)
        in_all += in_by[c];
    char note[160] = "mix";
    size_t nl = strlen(note);
    for (int c = 1; c < VFMIG_CODEC_COUNT; c++)
        if (in_by[c] > 0 && nl < sizeof(note) - 20)
            nl += (size_t)snprintf(note + nl, sizeof(note) - nl, " %s:%.0f%%", vfmig_codec_name(c),
                                   100.0 * in_by[c] / in_all);
    double gb = in_all / 1e9;
    row(o, kind_name[kind], label, in_all / (out_total > 0 ? out_total : 1), gb / total_t, 0, note);
}

/* ---- encode pool scaling ---------------------------------------------------------------------- */

struct worker {
    struct bufs *b;
    struct job j;
    size_t first, last;
    pthread_barrier_t *bar;
    int bad;
    double t0, t1; /* own start and end: the main thread may be descheduled meanwhile */
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct ctxs x = {0};
    if (vfmig__codec_ctx_create(PAGE, &x.c)) {
        w->bad = 1;
    }
    pthread_barrier_wait(w->bar);
    w->t0 = now_s();
    if (x.c)
        run_pass(w->b, x.c, NULL, NULL, &w->j, w->first, w->last, &w->bad);
    w->t1 = now_s();
    pthread_barrier_wait(w->bar);
    vfmig__codec_ctx_destroy(x.c);
    return NULL;
}

static void scaling_rows(const struct opts *o, struct bufs *b, int kind, int codec, int level,
                         const char *label)
{
    for (int n = 1; n <= o->threads; n++) {
        double best = 1e30;
        for (int r = 0; r < o->reps; r++) {
            pthread_barrier_t bar;
            pthread_barrier_init(&bar, NULL, (unsigned)n + 1);
            struct worker w[64];
            pthread_t th[64];
            for (int i = 0; i < n; i++) {
                w[i] = (struct worker){.b = b,
                                       .j = {OP_OURS_ENC, codec, level, NULL},
                                       .first = b->npages * (size_t)i / (size_t)n,
                                       .last = b->npages * (size_t)(i + 1) / (size_t)n,
                                       .bar = &bar};
                pthread_create(&th[i], NULL, worker_main, &w[i]);
            }
            pthread_barrier_wait(&bar);
            pthread_barrier_wait(&bar);
            double t0 = 1e300, t1 = 0;
            for (int i = 0; i < n; i++) {
                pthread_join(th[i], NULL);
                t0 = w[i].t0 < t0 ? w[i].t0 : t0;
                t1 = w[i].t1 > t1 ? w[i].t1 : t1;
                if (w[i].bad)
                    fprintf(stderr, "bench_codec: pool worker failed\n");
            }
            double t = t1 - t0;
            pthread_barrier_destroy(&bar);
            best = t < best ? t : best;
        }
        char lab[64], note[32];
        snprintf(lab, sizeof(lab), "%s x%d", label, n);
        snprintf(note, sizeof(note), "threads=%d", n);
        row(o, kind_name[kind], lab, (double)b->bytes / total_out(b), (double)b->bytes / 1e9 / best, 0,
            note);
    }
}

int main(int argc, char **argv)
{
    struct opts o = {64, 3, 0, 0, NULL};
    enum { O_MIB = 256, O_REPS, O_THREADS, O_ONLY, O_JSON };
    static const bench_option table[] = {
        {"mib", O_MIB, "N", "MiB of 64 KiB pages per content kind (default 64)"},
        {"reps", O_REPS, "N", "best of N runs per row (default 3)"},
        {"threads", O_THREADS, "N", "largest worker pool measured, 1..64 (default: one per CPU)"},
        {"only", O_ONLY, "KIND", "one content kind: zero | texture | tensor | random (default all)"},
        {"json", O_JSON, NULL, "one JSON object per row on stdout"},
    };
    bench_cli cli;
    bench_cli_init(&cli, "bench_codec",
                   "Speed and ratio of the page codecs, next to bare liblz4 / libzstd on the same buffers.",
                   table, BENCH_NOPTS(table));
    for (int id; (id = bench_cli_next(&cli, argc, argv)) != -1;) {
        switch (id) {
        case O_MIB: o.mib = (size_t)bench_parse_int(&cli, optarg, 1, 1 << 16); break;
        case O_REPS: o.reps = (int)bench_parse_int(&cli, optarg, 1, 1000); break;
        case O_THREADS: o.threads = (int)bench_parse_int(&cli, optarg, 1, 64); break;
        case O_ONLY: {
            int k = 0;
            while (k < K_COUNT && strcmp(optarg, kind_name[k]))
                k++;
            if (k == K_COUNT)
                bench_fail(&cli, "'%s' is not zero, texture, tensor or random", optarg);
            o.only = optarg;
            break;
        }
        case O_JSON: o.json = 1; break;
        }
    }
    if (o.threads <= 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        o.threads = nc > 0 ? (int)nc : 1;
    }
    if (o.threads > 64)
        o.threads = 64;

    struct bufs b = {0};
    b.bytes = o.mib << 20;
    b.npages = b.bytes / PAGE;
    b.slot = vfmig__codec_bound(PAGE);
    b.src = malloc(b.bytes);
    b.ref = malloc(b.bytes);
    b.ref_clustered = malloc(b.bytes);
    b.dec = malloc(b.bytes);
    b.out = malloc(b.npages * b.slot);
    b.olen = calloc(b.npages, sizeof(size_t));
    struct ctxs x = {0};
    if (!b.src || !b.ref || !b.ref_clustered || !b.dec || !b.out || !b.olen ||
        vfmig__codec_ctx_create((size_t)BATCH_PAGES * PAGE, &x.c) || !(x.zc = ZSTD_createCCtx()) ||
        !(x.zd = ZSTD_createDCtx())) {
        fprintf(stderr, "bench_codec: out of memory\n");
        return 1;
    }
    /* fault everything in before timing */
    memset(b.out, 0, b.npages * b.slot);
    memset(b.dec, 0, b.bytes);

    if (o.json) {
        vfmig__json_init(&jw, stdout);
        vfmig__json_object(&jw, NULL);
        vfmig__json_str(&jw, "bench", "codec");
        vfmig__json_u64(&jw, "mib", o.mib);
        vfmig__json_u64(&jw, "page", PAGE);
        vfmig__json_i64(&jw, "reps", o.reps);
        vfmig__json_array(&jw, "rows");
    } else
        printf("bench_codec: %zu MiB per kind, %u KiB pages, best of %d, lz4 %s, zstd %s\n"
               "%-8s %-16s %8s %9s %9s %8s\n",
               o.mib, PAGE / 1024, o.reps, LZ4_versionString(), ZSTD_versionString(), "kind",
               "codec", "ratio", "ours GB/s", "bare GB/s", "ours/bare");
    uint64_t seed = 42;
    for (int k = 0; k < K_COUNT; k++) {
        if (o.only && strcmp(o.only, kind_name[k]))
            continue;
        seed = 42 + (uint64_t)k; /* same data with or without --only */
        fill(b.src, b.bytes, k, seed);
        /* references: 5% of bytes changed, scattered; and 5% as 256-byte writes */
        memcpy(b.ref, b.src, b.bytes);
        for (size_t i = 0; i < b.bytes / 20; i++)
            b.ref[rnd(&seed) % b.bytes] ^= (uint8_t)(1 + rnd(&seed) % 255);
        memcpy(b.ref_clustered, b.src, b.bytes);
        for (size_t i = 0; i < b.bytes / 20 / 256; i++) {
            size_t at = (size_t)(rnd(&seed) % (b.bytes / 256)) * 256;
            for (size_t j = 0; j < 256; j++)
                b.ref_clustered[at + j] ^= (uint8_t)(1 + (at + j) % 251);
        }

        enc_pair(&o, &b, &x, k, "raw", VFMIG_CODEC_RAW, 0, OP_MEMCPY_BARE);
        if (k == K_ZERO) {
            struct job z = {OP_ISZERO, 0, 0, NULL};
            double t = timed(&b, &x, &z, o.reps);
            row(&o, kind_name[k], "is_zero", 0, (double)b.bytes / 1e9 / t, 0, "64 KiB pages");
        }
        enc_pair(&o, &b, &x, k, "lz4", VFMIG_CODEC_LZ4, 0, OP_LZ4_BARE);
        enc_pair(&o, &b, &x, k, "zstd-1", VFMIG_CODEC_ZSTD, -1, OP_ZSTD_BARE);
        enc_pair(&o, &b, &x, k, "zstd1", VFMIG_CODEC_ZSTD, 1, OP_ZSTD_BARE);
        enc_pair(&o, &b, &x, k, "zstd3", VFMIG_CODEC_ZSTD, 3, OP_ZSTD_BARE);
        delta_rows(&o, &b, &x, k, b.ref, "delta5%");
        delta_rows(&o, &b, &x, k, b.ref_clustered, "delta5%-256B");
        delta_rows(&o, &b, &x, k, b.src, "delta-same");
        auto_row(&o, &b, &x, k, 0, NULL, "auto link=?");
        auto_row(&o, &b, &x, k, 4e9, NULL, "auto 4GB/s");
        auto_row(&o, &b, &x, k, 1.25e9, NULL, "auto 1.25GB/s");
        auto_row(&o, &b, &x, k, 0.3e9, NULL, "auto 0.3GB/s");
        auto_row(&o, &b, &x, k, 1.25e9, b.ref, "auto+ref 1.25");
        if (k == K_TEXTURE) {
            scaling_rows(&o, &b, k, VFMIG_CODEC_LZ4, 0, "pool lz4");
            scaling_rows(&o, &b, k, VFMIG_CODEC_ZSTD, 1, "pool zstd1");
        }
        if (k == K_TENSOR)
            scaling_rows(&o, &b, k, VFMIG_CODEC_LZ4, 0, "pool lz4");
    }
    if (o.json) {
        vfmig__json_newline(&jw);
        vfmig__json_end(&jw);
        vfmig__json_end(&jw);
        putchar('\n');
    }
    ZSTD_freeCCtx(x.zc);
    ZSTD_freeDCtx(x.zd);
    vfmig__codec_ctx_destroy(x.c);
    free(b.src);
    free(b.ref);
    free(b.ref_clustered);
    free(b.dec);
    free(b.out);
    free(b.olen);
    return 0;
}
