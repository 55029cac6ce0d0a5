/*
 * engine/pipeline.c - source side of the page pipeline.
 *
 *   main thread: bitmap -> runs of dirty pages -> queue (bounded ring)
 *   worker k:    run -> device read into its own buffer -> per page: zero test, XXH3 hash ->
 *                split into zero / non-zero sub-runs -> encode non-zero ones -> frames on
 *                stream 1 + (run sequence % streams), under that stream's lock.
 *
 * Every buffer is allocated once per worker at start; the steady state allocates nothing.
 * A round ends when the queue is drained and every worker is idle; the main thread then sends
 * ROUND_END on each data stream with the number of frames that stream carried in the round, so
 * the target can tell a complete round from a truncated one.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_setname_np */
#endif
#include "engine/pipeline.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define XXH_INLINE_ALL /* page hashes: ~30 GB/s inlined against ~19 GB/s through the .so */
#include <xxhash.h>

#include "transport/link.h"

#define QUEUE_CAP 256u
/* Runs handed to a worker at once. Scattered dirty pages make runs of one page; handing them over
 * one by one cost a wake-up each (measured: a 9 MB round of 4 KiB runs took 38 ms), so runs
 * travel in batches of up to batch_pages pages. */
#define BATCH_RUNS 64u

typedef struct run {
    uint64_t page;
    uint32_t npages;
} run;

typedef struct batch {
    uint32_t nruns;
    uint32_t seq;   /* picks the stream */
    uint64_t pages;
    run runs[BATCH_RUNS];
} batch;

typedef struct stream_tx {
    pthread_mutex_t lock;
    uint64_t frames; /* in the current round */
} stream_tx;

typedef struct worker {
    vfmig_pipeline *p;
    pthread_t thread;
    unsigned index;
    bool started;
    uint8_t *buf;      /* pages as read from the device */
    uint8_t *ref;      /* delta references */
    uint8_t *enc;      /* encoded output */
    size_t enc_cap;
    uint8_t *zero;     /* per page of a run: 1 if all zero */
    vfmig_codec_ctx *codec;
    vfmig_chooser chooser;
    vfmig_round_stats acc; /* this round's share; harvested by end_round */
} worker;

struct vfmig_pipeline {
    vfmig_pipeline_cfg cfg;
    vfmig_session *s;
    uint64_t page_size;
    uint64_t zero_hash;
    vfmig_delta_cache *delta;
    stream_tx streams[VFMIG_MAX_STREAMS + 1];

    pthread_mutex_t qlock;
    pthread_cond_t qnonempty, qnonfull, qdone;
    batch ring[QUEUE_CAP];
    uint64_t head, tail;  /* free-running; tail - head = queued */
    uint64_t busy;        /* batches queued or in a worker */
    batch pending;        /* being filled by submit (main thread only) */
    uint32_t seq;
    uint32_t round;
    bool quit;
    _Atomic uint64_t link_bps_bits;

    worker *workers;
};

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int send_frame(vfmig_pipeline *p, unsigned stream, const vfmig_frame *f, const void *payload)
{
    stream_tx *st = &p->streams[stream];
    pthread_mutex_lock(&st->lock);
    int rc = vfmig_link_send(p->cfg.link, stream, f, payload);
    if (!rc)
        st->frames++;
    pthread_mutex_unlock(&st->lock);
    if (rc && rc != VFMIG_ECANCELED)
        vfmig_fail(p->s, rc, "sending pages: %s: %s", vfmig_strerror(rc),
                   vfmig_link_stream_error(p->cfg.link, stream));
    return rc;
}

/* Encodes and sends pages [i, j) of the worker's buffer (all non-zero). */
static int send_data(worker *w, const run *r, const uint8_t *buf, uint64_t i, uint64_t j, unsigned stream)
{
    vfmig_pipeline *p = w->p;
    const uint64_t ps = p->page_size;
    const uint8_t *src = buf + i * ps;
    const size_t len = (size_t)((j - i) * ps);
    const uint64_t first = r->page + i;

    bool has_ref = false;
    if (p->delta && p->round > 0) {
        has_ref = true;
        for (uint64_t k = 0; k < j - i && has_ref; k++)
            has_ref = vfmig_delta_cache_contains(p->delta, first + k);
    }
    int codec = vfmig_chooser_pick(&w->chooser, has_ref);
    /* References are copied out only when delta was chosen; one evicted since the check
     * sends the run without delta. */
    for (uint64_t k = 0; codec == VFMIG_CODEC_DELTA && k < j - i; k++)
        if (!vfmig_delta_cache_get(p->delta, first + k, w->ref + k * ps))
            codec = vfmig_chooser_pick(&w->chooser, false);
    const void *payload = src;
    size_t out = len;
    if (codec != VFMIG_CODEC_RAW) {
        /* Thread CPU time: a worker preempted mid-encode must not make the codec look slow. */
        uint64_t t0 = thread_cpu_ns();
        int rc = vfmig_encode(w->codec, codec, p->cfg.level, src, len, codec == VFMIG_CODEC_DELTA ? w->ref : NULL,
                              w->enc, w->enc_cap, &out);
        uint64_t dt = thread_cpu_ns() - t0;
        w->acc.encode_ns += dt;
        if (rc)
            return vfmig_fail(p->s, rc, "encoding pages %llu+%llu with %s failed",
                              (unsigned long long)first, (unsigned long long)(j - i), vfmig_codec_name(codec));
        vfmig_chooser_feedback(&w->chooser, codec, len, out, dt);
        if (out >= len) {
            codec = VFMIG_CODEC_RAW; /* did not pay: send the pages as they are */
            out = len;
        } else {
            payload = w->enc;
        }
    }
    vfmig_frame f = {.type = VFMIG_F_PAGES, .codec = (uint8_t)codec, .len = (uint32_t)out,
                     .round = p->round, .npages = (uint32_t)(j - i), .page = first};
    int rc = send_frame(p, stream, &f, payload);
    if (rc)
        return rc;
    w->acc.codec_in[codec] += len;
    w->acc.codec_out[codec] += out;
    w->acc.bytes_raw += len;
    w->acc.bytes_wire += VFMIG_FRAME_HDR_BYTES + out;
    /* Like QEMU's XBZRLE, only pages sent again after the full pass are cached: they are the ones
     * likely to be sent once more, and round 0 would only churn the cache. */
    if (p->delta && p->round > 0)
        for (uint64_t k = 0; k < j - i; k++)
            vfmig_delta_cache_put(p->delta, first + k, src + k * ps);
    return VFMIG_OK;
}

/* One run, read into the worker's buffer at page `base`. */
static int process_run(worker *w, const run *r, unsigned stream, uint64_t base)
{
    vfmig_pipeline *p = w->p;
    vfmig_session *s = p->s;
    const uint64_t ps = p->page_size;
    uint8_t *buf = w->buf + base * ps;
    uint8_t *zero = w->zero + base;
    uint32_t range = vfmig_page_range(s, r->page);
    int rc = s->dev.ops->read(s->dev.dev, vfmig_page_offset(s, range, r->page), buf, (size_t)(r->npages * ps));
    if (rc)
        return vfmig_fail(s, rc < 0 ? rc : VFMIG_EDEVICE, "device read of pages %llu+%u failed: %s",
                          (unsigned long long)r->page, r->npages, vfmig_strerror(rc));
    for (uint32_t k = 0; k < r->npages; k++) {
        const uint8_t *pg = buf + (uint64_t)k * ps;
        zero[k] = vfmig_is_zero(pg, ps);
        s->page_hash[r->page + k] = zero[k] ? p->zero_hash : XXH3_64bits(pg, ps);
    }
    uint64_t i = 0;
    while (i < r->npages) {
        uint64_t j = i + 1;
        while (j < r->npages && zero[j] == zero[i])
            j++;
        if (zero[i]) {
            vfmig_frame f = {.type = VFMIG_F_PAGES, .codec = VFMIG_CODEC_ZERO, .round = p->round,
                             .npages = (uint32_t)(j - i), .page = r->page + i};
            rc = send_frame(p, stream, &f, NULL);
            if (rc)
                return rc;
            w->acc.zero_pages += j - i;
            w->acc.codec_in[VFMIG_CODEC_ZERO] += (j - i) * ps;
            w->acc.bytes_wire += VFMIG_FRAME_HDR_BYTES;
            if (p->delta)
                for (uint64_t k = i; k < j; k++)
                    vfmig_delta_cache_drop(p->delta, r->page + k);
        } else if ((rc = send_data(w, r, buf, i, j, stream))) {
            return rc;
        }
        i = j;
    }
    w->acc.dirty_pages += r->npages;
    return VFMIG_OK;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    vfmig_pipeline *p = w->p;
    char name[16];
    snprintf(name, sizeof(name), "vfmig-enc%u", w->index);
    pthread_setname_np(pthread_self(), name); /* visible in top, perf and gdb */
    if (p->cfg.pinner)
        vfmig_pinner_bind(p->cfg.pinner, w->index);
    for (;;) {
        pthread_mutex_lock(&p->qlock);
        while (p->head == p->tail && !p->quit)
            pthread_cond_wait(&p->qnonempty, &p->qlock);
        if (p->head == p->tail && p->quit) {
            pthread_mutex_unlock(&p->qlock);
            return NULL;
        }
        /* Copied out: once head moves past it, submit may refill the slot. */
        batch cur = p->ring[p->head % QUEUE_CAP];
        const batch *b = &cur;
        p->head++;
        pthread_cond_signal(&p->qnonfull);
        uint64_t bits = atomic_load(&p->link_bps_bits);
        pthread_mutex_unlock(&p->qlock);

        double bps;
        memcpy(&bps, &bits, sizeof(bps));
        vfmig_chooser_set_link(&w->chooser, bps);
        unsigned stream = 1 + b->seq % p->cfg.nstreams;
        uint64_t base = 0;
        for (uint32_t k = 0; k < b->nruns && !atomic_load(&p->s->failed); k++) {
            process_run(w, &b->runs[k], stream, base);
            base += b->runs[k].npages;
        }

        pthread_mutex_lock(&p->qlock);
        if (--p->busy == 0)
            pthread_cond_broadcast(&p->qdone);
        pthread_mutex_unlock(&p->qlock);
    }
}

void vfmig_pipeline_set_link_bps(vfmig_pipeline *p, double bps)
{
    uint64_t bits;
    memcpy(&bits, &bps, sizeof(bits));
    atomic_store(&p->link_bps_bits, bits);
}

int vfmig_pipeline_start(const vfmig_pipeline_cfg *cfg, vfmig_pipeline **out)
{
    vfmig_pipeline *p = calloc(1, sizeof(*p));
    if (!p)
        return VFMIG_ENOMEM;
    p->cfg = *cfg;
    p->s = cfg->s;
    p->page_size = cfg->s->page_size;
    p->zero_hash = vfmig_zero_page_hash(p->page_size);
    pthread_mutex_init(&p->qlock, NULL);
    pthread_cond_init(&p->qnonempty, NULL);
    pthread_cond_init(&p->qnonfull, NULL);
    pthread_cond_init(&p->qdone, NULL);
    for (unsigned i = 0; i <= VFMIG_MAX_STREAMS; i++)
        pthread_mutex_init(&p->streams[i].lock, NULL);
    vfmig_pipeline_set_link_bps(p, cfg->link_bps);
    *out = p;

    bool want_delta = (cfg->codec == VFMIG_CODEC_AUTO || cfg->codec == VFMIG_CODEC_DELTA) &&
                      cfg->delta_cache_bytes >= p->page_size;
    if (want_delta && vfmig_delta_cache_create(cfg->delta_cache_bytes, p->page_size, p->s->npages, &p->delta))
        return vfmig_fail(p->s, VFMIG_ENOMEM, "cannot allocate the delta cache");

    p->workers = calloc(cfg->nworkers, sizeof(worker));
    if (!p->workers)
        return vfmig_fail(p->s, VFMIG_ENOMEM, "out of memory for workers");
    size_t batch_bytes = (size_t)(cfg->batch_pages * p->page_size);
    for (unsigned i = 0; i < cfg->nworkers; i++) {
        worker *w = &p->workers[i];
        w->p = p;
        w->index = i;
        w->enc_cap = vfmig_codec_bound(batch_bytes);
        w->buf = malloc(batch_bytes);
        w->ref = malloc(batch_bytes);
        w->enc = malloc(w->enc_cap);
        w->zero = malloc((size_t)cfg->batch_pages);
        if (!w->buf || !w->ref || !w->enc || !w->zero || vfmig_codec_ctx_create(batch_bytes, &w->codec))
            return vfmig_fail(p->s, VFMIG_ENOMEM, "out of memory for worker buffers");
        vfmig_chooser_init(&w->chooser, cfg->codec, cfg->level, cfg->nworkers);
        if (pthread_create(&w->thread, NULL, worker_main, w))
            return vfmig_fail(p->s, VFMIG_ENOMEM, "cannot start worker thread %u", i);
        w->started = true;
    }
    return VFMIG_OK;
}

void vfmig_pipeline_begin_round(vfmig_pipeline *p, uint32_t round)
{
    pthread_mutex_lock(&p->qlock);
    p->round = round;
    for (unsigned i = 0; i < p->cfg.nworkers; i++)
        memset(&p->workers[i].acc, 0, sizeof(p->workers[i].acc));
    for (unsigned i = 1; i <= p->cfg.nstreams; i++)
        p->streams[i].frames = 0;
    pthread_mutex_unlock(&p->qlock);
}

/* Queues the pending batch (blocking while the ring is full). */
static int push_pending(vfmig_pipeline *p)
{
    if (!p->pending.nruns)
        return VFMIG_OK;
    pthread_mutex_lock(&p->qlock);
    while (p->tail - p->head >= QUEUE_CAP) {
        if (vfmig_should_stop(p->s)) {
            pthread_mutex_unlock(&p->qlock);
            return p->s->status;
        }
        vfmig_cond_wait_slice(&p->qnonfull, &p->qlock);
    }
    p->pending.seq = p->seq++;
    p->ring[p->tail % QUEUE_CAP] = p->pending;
    p->tail++;
    p->busy++;
    pthread_cond_signal(&p->qnonempty);
    pthread_mutex_unlock(&p->qlock);
    p->pending.nruns = 0;
    p->pending.pages = 0;
    return VFMIG_OK;
}

int vfmig_pipeline_submit(vfmig_pipeline *p, uint64_t page, uint64_t npages)
{
    if (p->pending.nruns == BATCH_RUNS || p->pending.pages + npages > p->cfg.batch_pages) {
        int rc = push_pending(p);
        if (rc)
            return rc;
    }
    p->pending.runs[p->pending.nruns++] = (run){page, (uint32_t)npages};
    p->pending.pages += npages;
    return VFMIG_OK;
}

int vfmig_pipeline_end_round(vfmig_pipeline *p, vfmig_round_stats *out)
{
    vfmig_session *s = p->s;
    int rc = push_pending(p);
    if (rc)
        return rc;
    pthread_mutex_lock(&p->qlock);
    while (p->busy > 0) {
        if (vfmig_should_stop(s)) {
            pthread_mutex_unlock(&p->qlock);
            return s->status;
        }
        vfmig_cond_wait_slice(&p->qdone, &p->qlock);
    }
    memset(out, 0, sizeof(*out));
    out->round = p->round;
    for (unsigned i = 0; i < p->cfg.nworkers; i++) {
        const vfmig_round_stats *a = &p->workers[i].acc;
        out->dirty_pages += a->dirty_pages;
        out->zero_pages += a->zero_pages;
        out->bytes_raw += a->bytes_raw;
        out->bytes_wire += a->bytes_wire;
        out->encode_ns += a->encode_ns;
        for (int c = 0; c < VFMIG_CODEC_COUNT; c++) {
            out->codec_in[c] += a->codec_in[c];
            out->codec_out[c] += a->codec_out[c];
        }
    }
    pthread_mutex_unlock(&p->qlock);
    if (vfmig_should_stop(s))
        return s->status;
    for (unsigned i = 1; i <= p->cfg.nstreams; i++) {
        vfmig_frame f = {.type = VFMIG_F_ROUND_END, .round = p->round, .aux = p->streams[i].frames};
        rc = vfmig_link_send(p->cfg.link, i, &f, NULL);
        if (!rc)
            rc = vfmig_link_flush(p->cfg.link, i);
        if (rc)
            return vfmig_fail(s, rc, "ending round %u on stream %u: %s", p->round, i,
                              vfmig_link_stream_error(p->cfg.link, i));
        out->bytes_wire += VFMIG_FRAME_HDR_BYTES;
    }
    return VFMIG_OK;
}

void vfmig_pipeline_stop(vfmig_pipeline *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->qlock);
    p->quit = true;
    if (atomic_load(&p->s->failed)) {
        p->busy -= p->tail - p->head; /* queued runs are dropped */
        p->head = p->tail;
    }
    pthread_cond_broadcast(&p->qnonempty);
    pthread_mutex_unlock(&p->qlock);
    for (unsigned i = 0; p->workers && i < p->cfg.nworkers; i++) {
        worker *w = &p->workers[i];
        if (w->started)
            pthread_join(w->thread, NULL);
        free(w->buf);
        free(w->ref);
        free(w->enc);
        free(w->zero);
        vfmig_codec_ctx_destroy(w->codec);
    }
    free(p->workers);
    vfmig_delta_cache_destroy(p->delta);
    for (unsigned i = 0; i <= VFMIG_MAX_STREAMS; i++)
        pthread_mutex_destroy(&p->streams[i].lock);
    pthread_cond_destroy(&p->qnonempty);
    pthread_cond_destroy(&p->qnonfull);
    pthread_cond_destroy(&p->qdone);
    pthread_mutex_destroy(&p->qlock);
    free(p);
}
