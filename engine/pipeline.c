/*
 * engine/pipeline.c - source side of the page pipeline.
 *
 *   main thread: bitmap -> runs of dirty pages (each knowing its range) -> queue (bounded ring)
 *   worker k:    run -> its pages, in place (device map) or read into the worker's buffer ->
 *                per page one pass: zero test + hash (engine/image.h) -> zero / non-zero
 *                sub-runs -> raw ones go to the socket straight from VRAM, others are encoded
 *                -> frames on stream 1 + (batch sequence % streams), under that stream's lock.
 *   With the delta cache (rounds after the first): one lock per run pins the pages' cached
 *   copies; a cached page is delta-encoded against its copy in one pass that also brings the
 *   copy up to date, then hashed from the copy (in cache); a page without one is copied into a
 *   fresh slot once and sent from there. Copies are exactly what the target will hold, even
 *   when the VF writes a page while it is read.
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
#include <sys/uio.h>

#include "common/clock.h"
#include "engine/bitmap.h"
#include "engine/image.h"
#include "transport/link.h"

#define QUEUE_CAP 256u
/* Runs handed to a worker at once. Scattered dirty pages make runs of one page; handing them over
 * one by one cost a wake-up each (measured: a 9 MB round of 4 KiB runs took 38 ms), so runs
 * travel in batches of up to batch_pages pages. */
#define BATCH_RUNS 64u
/* Batches between two looks at the scheduler's times (a /proc read each). */
#define SHARE_BATCHES 8u
#define LINK_WINDOW_NS 50000000ull
/* Delta stops paying for the delta cache's copies when its attempts give more than this (pages
 * rewritten whole): runs then skip the cache, but one in DELTA_PROBE_RUNS keeps it, so that a
 * workload turning to small writes is seen again. */
#define DELTA_NOT_PAYING 0.7
#define DELTA_MIN_TRIES 8u
#define DELTA_PROBE_RUNS 16u

typedef struct run {
    uint64_t page;    /* global index of the first page */
    uint32_t npages;
    uint32_t range;
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

/* What happens to one page of a run on the cached path. */
enum { PK_DELTA, PK_CACHED_RAW, PK_ZERO, PK_PLAIN };

typedef struct worker {
    vfmig_pipeline *p;
    pthread_t thread;
    unsigned index;
    bool started;
    uint8_t *buf;      /* pages read through read() (devices without map), gathered pages */
    uint8_t *enc;      /* encoded output */
    size_t enc_cap;
    uint8_t *zero;     /* per page of a run: 1 if all zero */
    uint8_t *kind;     /* per page of a run: PK_* */
    uint8_t **copy;    /* per page of a run: its pinned delta-cache copy, or NULL */
    const uint8_t **src; /* per page of a run: where its bytes are read */
    bool *hit, *keep, *want;
    uint64_t *dh;      /* per page of a run: change of its linear hash from a delta frame */
    struct iovec *iov;
    vfmig_codec_ctx *codec;
    vfmig_chooser chooser;
    vfmig_digest digest;   /* changes this worker made to the image digest (whole session) */
    uint64_t run_mark, wait_mark; /* scheduler times at the last share measurement */
    uint64_t lin_full;     /* this round: delta pages whose linear hash was computed whole */
    uint64_t newly_cached; /* this round: pages given a delta-cache copy */
    uint32_t since_share;  /* batches since */
    uint64_t wire_mark, wire_mark_ns; /* link bytes sent, and when, at the last such point */
    double link_busy;      /* smoothed fraction of the cap the link carried (< 0: none yet) */
    double delta_ratio;    /* EWMA of what delta attempts gave (out/in; 1 for a failed one) */
    uint32_t delta_tries, cached_runs, class_reuse, untimed;
    vfmig_round_stats acc; /* this round's share; harvested by end_round */
} worker;

struct vfmig_pipeline {
    vfmig_pipeline_cfg cfg;
    vfmig_session *s;
    uint64_t page_size;
    uint64_t zero_hash;
    vfmig_delta_cache *delta;
    uint64_t *mark;        /* [npages] with the delta cache: each page's mark when last sent */
    uint8_t *page_class;   /* [npages] with auto: 1 + each page's content class when last measured, 0 none */
    const uint8_t *map[VFMIG_MAX_RANGES]; /* in-place view of each range, or NULL */
    bool in_place;         /* payloads may be sent straight from VRAM (no per-frame crypto) */
    stream_tx streams[VFMIG_MAX_STREAMS + 1];

    pthread_mutex_t qlock;
    pthread_cond_t qnonempty, qnonfull, qdone;
    batch ring[QUEUE_CAP];
    uint64_t head, tail;  /* free-running; tail - head = queued */
    uint64_t busy;        /* batches queued or in a worker */
    batch pending;        /* being filled by submit (main thread only) */
    uint32_t seq;
    uint32_t round;
    bool paused;          /* the VF is paused: its memory holds still */
    uint64_t wire_at_begin;
    uint64_t last_lin_full; /* the last round's delta pages whose linear hash was computed whole */
    uint64_t last_newly_cached; /* the last round's pages given a delta-cache copy */
    bool quit;
    uint64_t watch_ns;    /* submit and end_round give up (VFMIG_ETIMEDOUT) at this time; 0 = never */
    _Atomic uint64_t link_bps_bits;

    worker *workers;
};

/* Time this thread ran and waited to run (runqueue), from the scheduler; false where the
 * kernel does not say. */
static bool sched_times(uint64_t *run_ns, uint64_t *wait_ns)
{
    FILE *f = fopen("/proc/thread-self/schedstat", "r");
    if (!f)
        return false;
    unsigned long long r, w;
    bool ok = fscanf(f, "%llu %llu", &r, &w) == 2;
    fclose(f);
    *run_ns = r;
    *wait_ns = w;
    return ok;
}

static int send_frame(vfmig_pipeline *p, unsigned stream, const vfmig_frame *f, const struct iovec *iov, int niov)
{
    stream_tx *st = &p->streams[stream];
    pthread_mutex_lock(&st->lock);
    int rc = vfmig__link_sendv(p->cfg.link, stream, f, iov, niov);
    if (!rc)
        st->frames++;
    pthread_mutex_unlock(&st->lock);
    if (rc && rc != VFMIG_ECANCELED)
        vfmig__fail(p->s, rc, "sending pages: %s: %s", vfmig_strerror(rc),
                   vfmig__link_stream_error(p->cfg.link, stream));
    return rc;
}

static void account(worker *w, int codec, size_t in, size_t out)
{
    w->acc.codec_in[codec] += in;
    w->acc.codec_out[codec] += out;
    if (codec != VFMIG_CODEC_ZERO)
        w->acc.bytes_raw += in;
}

static int send_zero(worker *w, uint64_t first, uint64_t n, unsigned stream)
{
    vfmig_pipeline *p = w->p;
    vfmig_frame f = {.type = VFMIG_F_PAGES, .codec = VFMIG_CODEC_ZERO, .round = p->round,
                     .npages = (uint32_t)n, .page = first};
    int rc = send_frame(p, stream, &f, NULL, 0);
    if (!rc) {
        w->acc.zero_pages += n;
        account(w, VFMIG_CODEC_ZERO, (size_t)(n * p->page_size), 0);
    }
    return rc;
}

/* The content class of a batch. One of a few pages takes the class its first page was last given:
 * rounds after the first are batches of one page, where classifying cost as much as sending the
 * page raw (~4 ms of a 3k-page round 1). One such batch in CLASS_RECHECK is measured again, so a
 * buffer whose content changed kind is seen. Pages of a batch are this worker's alone. */
#define CLASS_FEW_PAGES 4u
#define CLASS_RECHECK 8u
static unsigned batch_class(worker *w, uint64_t first, uint64_t n, const struct iovec *pieces)
{
    uint8_t *known = w->p->page_class + first;
    if (n <= CLASS_FEW_PAGES && *known && ++w->class_reuse % CLASS_RECHECK)
        return *known - 1u;
    unsigned c = vfmig__content_class(pieces[0].iov_base, pieces[0].iov_len);
    memset(known, (int)(c + 1), (size_t)n);
    return c;
}

/* Codec time of a frame, on the thread's CPU clock (a worker preempted mid-encode must not make
 * the codec look slow). That clock is a system call, ~1-2 us on a VM: two per one-page frame
 * were 18% of the workers' samples in a final pass of 46k pages in 13k frames, as much as its
 * deltas cost per frame. Small frames are timed while their codec's class has fewer than two
 * samples and then one in FRAME_TIMING_EVERY; the others are charged at the codec's current
 * speed, so the chooser still learns their ratio. */
#define TIMED_FRAME_BYTES (64u << 10)
#define FRAME_TIMING_EVERY 16u
static bool frame_timed(worker *w, int codec, size_t len)
{
    return len >= TIMED_FRAME_BYTES || w->chooser.est[w->chooser.cls].samples[codec] < 2 ||
           ++w->untimed % FRAME_TIMING_EVERY == 0;
}

static uint64_t frame_ns(worker *w, int codec, size_t len, bool timed, uint64_t t0)
{
    if (timed)
        return vfmig__thread_cpu_ns() - t0;
    double speed = w->chooser.est[w->chooser.cls].speed[codec];
    return speed > 0 ? (uint64_t)((double)len * 1e9 / speed) : 0;
}

/*
 * Sends n non-zero pages given as `niov` pieces (contiguous pages when niov is 1): raw straight
 * from those buffers, or encoded with what the chooser picks (contiguous input only; scattered
 * pieces are gathered into the worker's buffer first). `live`: the bytes may be changing under
 * us (a running VF read in place), so a raw frame's checksum covers only its header.
 */
static int send_data(worker *w, uint64_t first, uint64_t n, const struct iovec *pieces, int niov, bool live,
                     unsigned stream)
{
    vfmig_pipeline *p = w->p;
    const size_t len = (size_t)(n * p->page_size);
    if (w->chooser.fixed_codec == VFMIG_CODEC_AUTO)
        vfmig__chooser_set_class(&w->chooser, batch_class(w, first, n, pieces));
    int codec = vfmig__chooser_pick(&w->chooser, false);
    struct iovec one;
    const struct iovec *payload = pieces;
    int npay = niov;
    size_t out = len;
    if (codec != VFMIG_CODEC_RAW) {
        const uint8_t *src = pieces[0].iov_base;
        if (niov > 1) {
            size_t off = 0;
            for (int i = 0; i < niov; i++) {
                memcpy(w->buf + off, pieces[i].iov_base, pieces[i].iov_len);
                off += pieces[i].iov_len;
            }
            src = w->buf;
        }
        bool timed = frame_timed(w, codec, len);
        uint64_t t0 = timed ? vfmig__thread_cpu_ns() : 0;
        int rc = vfmig__encode(w->codec, codec, p->cfg.level, src, len, NULL, w->enc, w->enc_cap, &out);
        uint64_t dt = frame_ns(w, codec, len, timed, t0);
        w->acc.encode_ns += dt;
        if (rc)
            return vfmig__fail(p->s, rc, "encoding pages %llu+%llu with %s failed",
                              (unsigned long long)first, (unsigned long long)n, vfmig_codec_name(codec));
        vfmig__chooser_feedback(&w->chooser, codec, len, out, dt);
        if (out >= len) {
            codec = VFMIG_CODEC_RAW; /* did not pay: send the pages as they are */
            out = len;
        } else {
            one = (struct iovec){w->enc, out};
            payload = &one;
            npay = 1;
            live = false;
        }
    }
    vfmig_frame f = {.type = VFMIG_F_PAGES, .codec = (uint8_t)codec, .len = (uint32_t)out,
                     .round = p->round, .npages = (uint32_t)n, .page = first,
                     .flags = codec == VFMIG_CODEC_RAW && live ? VFMIG_FRAME_FLAG_UNCHECKED : 0};
    int rc = send_frame(p, stream, &f, payload, npay);
    if (!rc)
        account(w, codec, len, out);
    return rc;
}

/* Pages [i, j) of a run on the plain path: zero frames and data frames from src. */
static int send_plain(worker *w, const run *r, uint64_t i, uint64_t j, bool live, unsigned stream)
{
    vfmig_pipeline *p = w->p;
    const uint64_t ps = p->page_size;
    while (i < j) {
        uint64_t e = i + 1;
        while (e < j && w->zero[e] == w->zero[i] && w->src[e] == w->src[e - 1] + ps)
            e++;
        int rc;
        if (w->zero[i]) {
            rc = send_zero(w, r->page + i, e - i, stream);
        } else {
            struct iovec v = {(void *)w->src[i], (size_t)((e - i) * ps)};
            rc = send_data(w, r->page + i, e - i, &v, 1, live, stream);
        }
        if (rc)
            return rc;
        i = e;
    }
    return VFMIG_OK;
}

/* A run of pages with cached copies, delta-encoded against them (copies updated in the pass). */
static int send_delta(worker *w, const run *r, uint64_t i, uint64_t j, unsigned stream)
{
    vfmig_pipeline *p = w->p;
    const uint64_t ps = p->page_size;
    const size_t len = (size_t)((j - i) * ps);
    size_t out = 0;
    bool timed = frame_timed(w, VFMIG_CODEC_DELTA, len);
    uint64_t t0 = timed ? vfmig__thread_cpu_ns() : 0;
    /* Output at least as large as the pages is not worth sending: cap it there. */
    int rc = vfmig__delta_encode_pages(w->src + i, w->copy + i, (size_t)(j - i), (size_t)ps, w->enc, len, &out);
    uint64_t dt = frame_ns(w, VFMIG_CODEC_DELTA, len, timed, t0);
    w->acc.encode_ns += dt;
    vfmig__chooser_feedback(&w->chooser, VFMIG_CODEC_DELTA, len, rc ? len : out, dt);
    double got = rc ? 1.0 : (double)out / (double)len;
    w->delta_ratio = w->delta_tries ? 0.75 * w->delta_ratio + 0.25 * got : got;
    w->delta_tries++;
    int codec = VFMIG_CODEC_DELTA;
    if (rc) {
        /* Mostly rewritten pages: the copies are half updated; take fresh ones and send those. */
        for (uint64_t k = i; k < j; k++)
            memcpy(w->copy[k], w->src[k], (size_t)ps);
        codec = VFMIG_CODEC_RAW;
        out = len;
    }
    vfmig_session *s = p->s;
    if (codec == VFMIG_CODEC_DELTA && vfmig__lin_delta(s->lin, w->enc, out, (uint32_t)(j - i), w->dh))
        return vfmig__fail(s, VFMIG_ECODEC, "delta of pages %llu+%llu does not parse back",
                          (unsigned long long)(r->page + i), (unsigned long long)(j - i));
    /* A delta page's hash follows from the literals alone once it is linear (engine/image.h). */
    for (uint64_t k = i; k < j; k++) {
        uint64_t pg = r->page + k;
        if (codec == VFMIG_CODEC_DELTA && !(s->page_hash[pg] & VFMIG_HASH_LIN))
            w->lin_full++;
        uint64_t h = codec == VFMIG_CODEC_DELTA ? vfmig_lin_after_delta(s->lin, s->page_hash[pg], w->dh[k - i], w->copy[k])
                                                : vfmig__page_hash(w->copy[k], (size_t)ps);
        vfmig__image_set(s->page_hash, &w->digest, pg, h);
    }
    vfmig_frame f = {.type = VFMIG_F_PAGES, .codec = (uint8_t)codec, .len = (uint32_t)out,
                     .round = p->round, .npages = (uint32_t)(j - i), .page = r->page + i};
    if (codec == VFMIG_CODEC_DELTA) {
        struct iovec v = {w->enc, out};
        rc = send_frame(p, stream, &f, &v, 1);
    } else {
        for (uint64_t k = i; k < j; k++)
            w->iov[k - i] = (struct iovec){w->copy[k], (size_t)ps};
        rc = send_frame(p, stream, &f, w->iov, (int)(j - i));
    }
    if (!rc)
        account(w, codec, len, out);
    return rc;
}

/* A page missing from the delta cache takes a copy only when it changed little since it was last
 * sent, as its mark tells: a page rewritten whole would cost a copy and a fresh slot's first
 * touch for a delta that cannot pay (on a 1 GiB mix VF with 4 KiB writes, round 1 took 2x raw's
 * time filling 3k slots). Page `index`'s mark: eight words of it, one in each eighth at places
 * that differ from page to page (no layout of the workload's writes keeps missing them), each
 * folded to a byte. A page counts as changed little when at most MARK_CHANGED of them differ: with a fraction f of its
 * words rewritten that holds with odds 96% at f = 0.1 (50 8-byte writes to a 4 KiB page), 55% at
 * 0.3, 5% at 0.6 (a texture's noise redrawn, where delta does not pay) and never for a page
 * rewritten whole. All eight unchanged would have left a third of a hot set swept by 8-byte
 * writes without copies for a round, and its deltas a round later (the blackout 20-40% longer). */
#define MARK_CHANGED 2
static inline uint64_t page_mark(const uint8_t *pg, uint64_t index, uint64_t page_size)
{
    /* Words per eighth: a power of two (so are page sizes), the place a mask, not a division. */
    uint64_t eighth = page_size / 64, h = index * 0x9e3779b97f4a7c15ull, m = 0;
    for (unsigned q = 0; q < 8; q++) {
        uint64_t v;
        memcpy(&v, pg + (q * eighth + ((h >> (8 * q)) & (eighth - 1) & 0xff)) * 8, sizeof(v));
        v ^= v >> 32;
        v ^= v >> 16;
        v ^= v >> 8;
        m |= (v & 0xff) << (8 * q);
    }
    return m;
}

static inline bool changed_little(uint64_t was, uint64_t now)
{
    unsigned changed = 0;
    for (uint64_t x = was ^ now; x; x >>= 8)
        changed += (x & 0xff) != 0;
    return changed <= MARK_CHANGED;
}

/* Rounds after the first with the delta cache: pages with a copy go as deltas against it, pages
 * that changed little since last sent get one. */
static int process_cached(worker *w, const run *r, bool live, unsigned stream)
{
    vfmig_pipeline *p = w->p;
    vfmig_session *s = p->s;
    const uint64_t ps = p->page_size;
    const uint32_t n = r->npages;
    vfmig__delta_cache_acquire_run(p->delta, r->page, n, w->copy, w->hit);
    /* Misses that changed little since last sent take copies (zero pages need none). Hits keep
     * the mark of their last miss (read apart from the delta pass, the words of a mark cost a TLB
     * miss a page: the final pass of a 64 MiB hot set took 7-8 ms instead of 4.5-6). In the final
     * pass a fresh copy would never serve as a base: only existing ones are used. */
    const bool judge = !p->paused;
    if (judge) {
        bool any = false;
        for (uint32_t k = 0; k < n; k++) {
            w->want[k] = false;
            if (w->hit[k])
                continue;
            uint64_t *was = &p->mark[r->page + k], m = 0;
            w->zero[k] = vfmig__page_is_zero(w->src[k], (size_t)ps);
            if (!w->zero[k]) {
                m = page_mark(w->src[k], r->page + k, ps);
                any |= w->want[k] = changed_little(*was, m);
            }
            *was = m;
        }
        if (any)
            vfmig__delta_cache_fill_run(p->delta, r->page, n, w->want, w->copy);
    }
    for (uint32_t k = 0; k < n; k++) {
        uint64_t h;
        w->keep[k] = true;
        if (w->hit[k]) {
            w->kind[k] = PK_DELTA;
            continue;
        }
        const uint8_t *pg = w->src[k];
        if (w->copy[k]) {
            /* The snapshot that is sent, hashed and kept as the next delta's base. */
            memcpy(w->copy[k], pg, (size_t)ps);
            h = vfmig__page_hash(w->copy[k], (size_t)ps);
            w->zero[k] = false;
            w->kind[k] = PK_CACHED_RAW;
            w->newly_cached++;
        } else {
            /* Judged zero or not just now: sent as such (if written since, it is dirty again). */
            if (judge)
                h = w->zero[k] ? p->zero_hash : vfmig__page_hash(pg, (size_t)ps);
            else
                w->zero[k] = vfmig__page_zero_or_hash(pg, (size_t)ps, p->zero_hash, &h);
            w->kind[k] = w->zero[k] ? PK_ZERO : PK_PLAIN;
            w->keep[k] = false; /* no copy */
        }
        vfmig__image_set(s->page_hash, &w->digest, r->page + k, h);
    }
    int rc = VFMIG_OK;
    for (uint32_t i = 0, j; i < n && !rc; i = j) {
        for (j = i + 1; j < n && w->kind[j] == w->kind[i]; j++)
            ;
        switch (w->kind[i]) {
        case PK_DELTA:
            rc = send_delta(w, r, i, j, stream);
            break;
        case PK_ZERO:
            rc = send_zero(w, r->page + i, j - i, stream);
            break;
        case PK_CACHED_RAW:
            for (uint32_t k = i; k < j; k++)
                w->iov[k - i] = (struct iovec){w->copy[k], (size_t)ps};
            rc = send_data(w, r->page + i, j - i, w->iov, (int)(j - i), false, stream);
            break;
        default:
            rc = send_plain(w, r, i, j, live, stream);
            break;
        }
    }
    vfmig__delta_cache_release_run(p->delta, r->page, n, w->keep);
    return rc;
}

static int process_run(worker *w, const run *r, unsigned stream, uint64_t base)
{
    vfmig_pipeline *p = w->p;
    vfmig_session *s = p->s;
    const uint64_t ps = p->page_size;
    const uint64_t rel = r->page - s->range_base[r->range];
    const uint8_t *src = p->map[r->range] ? p->map[r->range] + (rel << s->page_shift) : NULL;
    bool live = src && !p->paused;
    if (!src) {
        uint8_t *buf = w->buf + base * ps;
        int rc = s->dev.ops->read(s->dev.dev, s->ranges[r->range].offset + (rel << s->page_shift), buf,
                                  (size_t)(r->npages * ps));
        if (rc)
            return vfmig__fail(s, rc < 0 ? rc : VFMIG_EDEVICE, "device read of pages %llu+%u failed: %s",
                              (unsigned long long)r->page, r->npages, vfmig_strerror(rc));
        src = buf;
    }
    for (uint32_t k = 0; k < r->npages; k++)
        w->src[k] = src + (uint64_t)k * ps;
    w->acc.dirty_pages += r->npages;
    if (p->delta && p->round > 0) {
        bool skip = w->delta_tries >= DELTA_MIN_TRIES && w->delta_ratio > DELTA_NOT_PAYING &&
                    ++w->cached_runs % DELTA_PROBE_RUNS != 0;
        if (!skip)
            return process_cached(w, r, live, stream);
        /* These pages go out without the cache: forget their copies (one lock for the run), or
         * a later delta would be taken against a base the target no longer holds. */
        vfmig__delta_cache_acquire_run(p->delta, r->page, r->npages, w->copy, w->hit);
        memset(w->keep, 0, r->npages * sizeof(*w->keep));
        vfmig__delta_cache_release_run(p->delta, r->page, r->npages, w->keep);
    }
    for (uint32_t k = 0; k < r->npages; k++) {
        uint64_t h;
        w->zero[k] = vfmig__page_zero_or_hash(w->src[k], (size_t)ps, p->zero_hash, &h);
        vfmig__image_set(s->page_hash, &w->digest, r->page + k, h);
        if (p->mark) /* while the page is in cache */
            p->mark[r->page + k] = w->zero[k] ? 0 : page_mark(w->src[k], r->page + k, ps);
    }
    return send_plain(w, r, 0, r->npages, live, stream);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    vfmig_pipeline *p = w->p;
    char name[16];
    snprintf(name, sizeof(name), "vfmig-enc%u", w->index);
    pthread_setname_np(pthread_self(), name); /* visible in top, perf and gdb */
    if (p->cfg.pinner)
        vfmig__pinner_bind(p->cfg.pinner, w->index);
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
        vfmig__chooser_set_link(&w->chooser, bps);
        unsigned stream = 1 + b->seq % p->cfg.nstreams;
        uint64_t base = 0, c0 = vfmig__thread_cpu_ns();
        for (uint32_t k = 0; k < b->nruns && !atomic_load(&p->s->failed); k++) {
            process_run(w, &b->runs[k], stream, base);
            base += b->runs[k].npages;
        }
        uint64_t cpu = vfmig__thread_cpu_ns() - c0;
        /* Every few batches: the share of its core this worker got, for the codec choice. */
        uint64_t ran, waited;
        if (bps > 0) {
            /* How busy the capped link is: which of link and CPU bounds. Over windows of at
             * least LINK_WINDOW_NS and smoothed, as frames are handed to socket buffers that
             * hold several of them. */
            uint64_t now = vfmig__now_ns(), sent = vfmig__link_bytes_sent(p->cfg.link);
            if (!w->wire_mark_ns) {
                /* Until measured, a capped link is presumed the bottleneck: a round starts
                 * with all its pages to send. */
                vfmig__chooser_set_link_busy(&w->chooser, 1.0);
                w->wire_mark = sent;
                w->wire_mark_ns = now;
            } else if (now - w->wire_mark_ns >= LINK_WINDOW_NS) {
                double busy = (double)(sent - w->wire_mark) * 1e9 / (double)(now - w->wire_mark_ns) / bps;
                w->link_busy = w->link_busy < 0 ? busy : 0.5 * w->link_busy + 0.5 * busy;
                vfmig__chooser_set_link_busy(&w->chooser, w->link_busy);
                w->wire_mark = sent;
                w->wire_mark_ns = now;
            }
        }
        if (++w->since_share >= SHARE_BATCHES && sched_times(&ran, &waited)) {
            uint64_t dr = ran - w->run_mark, dw = waited - w->wait_mark;
            if (w->run_mark && dr + dw > 0)
                vfmig__chooser_set_cpu_share(&w->chooser, 0.5 * w->chooser.cpu_share + 0.5 * (double)dr / (double)(dr + dw));
            w->run_mark = ran;
            w->wait_mark = waited;
            w->since_share = 0;
        }

        vfmig_progress_add(p->s, base * p->page_size);
        pthread_mutex_lock(&p->qlock);
        w->acc.cpu_ns += cpu; /* under qlock: end_round harvests it there */
        if (--p->busy == 0)
            pthread_cond_broadcast(&p->qdone);
        pthread_mutex_unlock(&p->qlock);
    }
}

void vfmig__pipeline_set_link_bps(vfmig_pipeline *p, double bps)
{
    uint64_t bits;
    memcpy(&bits, &bps, sizeof(bits));
    atomic_store(&p->link_bps_bits, bits);
}

int vfmig__pipeline_start(const vfmig_pipeline_cfg *cfg, vfmig_pipeline **out)
{
    vfmig_pipeline *p = calloc(1, sizeof(*p));
    if (!p)
        return VFMIG_ENOMEM;
    p->cfg = *cfg;
    p->s = cfg->s;
    p->page_size = cfg->s->page_size;
    p->zero_hash = vfmig__zero_page_hash(p->page_size);
    pthread_mutex_init(&p->qlock, NULL);
    pthread_cond_init(&p->qnonempty, NULL);
    pthread_cond_init(&p->qnonfull, NULL);
    pthread_cond_init(&p->qdone, NULL);
    for (unsigned i = 0; i <= VFMIG_MAX_STREAMS; i++)
        pthread_mutex_init(&p->streams[i].lock, NULL);
    vfmig__pipeline_set_link_bps(p, cfg->link_bps);
    *out = p;

    bool want_delta = (cfg->codec == VFMIG_CODEC_AUTO || cfg->codec == VFMIG_CODEC_DELTA) &&
                      cfg->delta_cache_bytes >= p->page_size;
    if (want_delta && vfmig__delta_cache_create(cfg->delta_cache_bytes, p->page_size, p->s->npages, &p->delta))
        return vfmig__fail(p->s, VFMIG_ENOMEM, "cannot allocate the delta cache");
    if (p->delta && !(p->mark = calloc(p->s->npages ? p->s->npages : 1, sizeof(*p->mark))))
        return vfmig__fail(p->s, VFMIG_ENOMEM, "cannot allocate the delta cache's page marks");
    if (cfg->codec == VFMIG_CODEC_AUTO && !(p->page_class = calloc(p->s->npages ? p->s->npages : 1, 1)))
        return vfmig__fail(p->s, VFMIG_ENOMEM, "cannot allocate the pages' content classes");
    /* In place only where every frame may leave straight from VRAM: not through frame
     * encryption, which needs a stable copy to seal. */
    vfmig_session *s = p->s;
    p->in_place = s->dev.ops->map && !vfmig__link_payload_transformed(cfg->link);
    for (uint32_t r = 0; p->in_place && r < s->dev.nranges; r++)
        p->map[r] = s->dev.ops->map(s->dev.dev, s->ranges[r].offset, s->ranges[r].size);

    p->workers = calloc(cfg->nworkers, sizeof(worker));
    if (!p->workers)
        return vfmig__fail(p->s, VFMIG_ENOMEM, "out of memory for workers");
    size_t batch_bytes = (size_t)(cfg->batch_pages * p->page_size);
    size_t np = (size_t)cfg->batch_pages;
    for (unsigned i = 0; i < cfg->nworkers; i++) {
        worker *w = &p->workers[i];
        w->p = p;
        w->index = i;
        w->enc_cap = vfmig__codec_bound(batch_bytes);
        w->buf = malloc(batch_bytes);
        w->enc = malloc(w->enc_cap);
        w->zero = malloc(np);
        w->kind = malloc(np);
        w->copy = calloc(np, sizeof(*w->copy));
        w->src = calloc(np, sizeof(*w->src));
        w->hit = calloc(np, sizeof(*w->hit));
        w->keep = calloc(np, sizeof(*w->keep));
        w->want = calloc(np, sizeof(*w->want));
        w->dh = calloc(np, sizeof(*w->dh));
        w->iov = calloc(np, sizeof(*w->iov));
        if (!w->buf || !w->enc || !w->zero || !w->kind || !w->copy || !w->src || !w->hit || !w->keep || !w->want || !w->dh || !w->iov ||
            vfmig__codec_ctx_create(batch_bytes, &w->codec))
            return vfmig__fail(p->s, VFMIG_ENOMEM, "out of memory for worker buffers");
        vfmig__chooser_init(&w->chooser, cfg->codec, cfg->level, cfg->nworkers);
        w->link_busy = -1;
        if (pthread_create(&w->thread, NULL, worker_main, w))
            return vfmig__fail(p->s, VFMIG_ENOMEM, "cannot start worker thread %u", i);
        w->started = true;
    }
    return VFMIG_OK;
}

bool vfmig__pipeline_in_place(const vfmig_pipeline *p)
{
    return p->in_place && p->map[0];
}

void vfmig__pipeline_digest(const vfmig_pipeline *p, vfmig_digest *out)
{
    *out = (vfmig_digest){0, 0};
    for (unsigned i = 0; i < p->cfg.nworkers; i++)
        vfmig_digest_add(out, &p->workers[i].digest);
}

uint64_t vfmig__pipeline_lin_full_pages(const vfmig_pipeline *p)
{
    return p->last_lin_full;
}

uint64_t vfmig__pipeline_newly_cached_pages(const vfmig_pipeline *p)
{
    return p->last_newly_cached;
}

uint64_t vfmig__pipeline_delta_cache_bytes(const vfmig_pipeline *p)
{
    vfmig_delta_cache_stats st;
    vfmig__delta_cache_get_stats(p->delta, &st);
    return st.bytes_used;
}

void vfmig__pipeline_begin_round(vfmig_pipeline *p, uint32_t round, bool paused)
{
    pthread_mutex_lock(&p->qlock);
    p->round = round;
    p->paused = paused;
    p->wire_at_begin = vfmig__link_bytes_sent(p->cfg.link);
    for (unsigned i = 0; i < p->cfg.nworkers; i++) {
        memset(&p->workers[i].acc, 0, sizeof(p->workers[i].acc));
        p->workers[i].lin_full = 0;
        p->workers[i].newly_cached = 0;
    }
    for (unsigned i = 1; i <= p->cfg.nstreams; i++)
        p->streams[i].frames = 0;
    pthread_mutex_unlock(&p->qlock);
}

/* One wait of the session thread on the queue: to the watch time if there is one (the
 * blackout's budget is finer than a wait slice), else a slice. */
static void queue_wait(vfmig_pipeline *p, pthread_cond_t *cond)
{
    if (p->watch_ns)
        vfmig__cond_wait_until(cond, &p->qlock, p->watch_ns);
    else
        vfmig__cond_wait_slice(cond, &p->qlock);
}

/* Queues the pending batch (blocking while the ring is full). */
static int push_pending(vfmig_pipeline *p)
{
    if (!p->pending.nruns)
        return VFMIG_OK;
    pthread_mutex_lock(&p->qlock);
    while (p->tail - p->head >= QUEUE_CAP) {
        if (vfmig__should_stop(p->s)) {
            pthread_mutex_unlock(&p->qlock);
            return p->s->status;
        }
        if (vfmig__expired(p->watch_ns)) {
            pthread_mutex_unlock(&p->qlock);
            return VFMIG_ETIMEDOUT;
        }
        queue_wait(p, &p->qnonfull);
        pthread_mutex_unlock(&p->qlock);
        vfmig__progress_tick(p->s); /* the session thread waits here for most of a round */
        pthread_mutex_lock(&p->qlock);
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

int vfmig__pipeline_submit(vfmig_pipeline *p, uint32_t range, uint64_t page, uint64_t npages)
{
    if (p->pending.nruns == BATCH_RUNS || p->pending.pages + npages > p->cfg.batch_pages) {
        int rc = push_pending(p);
        if (rc)
            return rc;
    }
    p->pending.runs[p->pending.nruns++] = (run){page, (uint32_t)npages, range};
    p->pending.pages += npages;
    return VFMIG_OK;
}

int vfmig__pipeline_end_round(vfmig_pipeline *p, vfmig_round_stats *out)
{
    vfmig_session *s = p->s;
    int rc = push_pending(p);
    if (rc)
        return rc;
    pthread_mutex_lock(&p->qlock);
    while (p->busy > 0) {
        if (vfmig__should_stop(s)) {
            pthread_mutex_unlock(&p->qlock);
            return s->status;
        }
        if (vfmig__expired(p->watch_ns)) {
            pthread_mutex_unlock(&p->qlock);
            return VFMIG_ETIMEDOUT;
        }
        queue_wait(p, &p->qdone);
        pthread_mutex_unlock(&p->qlock);
        vfmig__progress_tick(s);
        pthread_mutex_lock(&p->qlock);
    }
    memset(out, 0, sizeof(*out));
    out->round = p->round;
    p->last_lin_full = 0;
    p->last_newly_cached = 0;
    for (unsigned i = 0; i < p->cfg.nworkers; i++) {
        const vfmig_round_stats *a = &p->workers[i].acc;
        out->dirty_pages += a->dirty_pages;
        out->zero_pages += a->zero_pages;
        out->bytes_raw += a->bytes_raw;
        out->encode_ns += a->encode_ns;
        out->cpu_ns += a->cpu_ns;
        p->last_lin_full += p->workers[i].lin_full;
        p->last_newly_cached += p->workers[i].newly_cached;
        for (int c = 0; c < VFMIG_CODEC_COUNT; c++) {
            out->codec_in[c] += a->codec_in[c];
            out->codec_out[c] += a->codec_out[c];
        }
    }
    pthread_mutex_unlock(&p->qlock);
    if (vfmig__should_stop(s))
        return s->status;
    for (unsigned i = 1; i <= p->cfg.nstreams; i++) {
        vfmig_frame f = {.type = VFMIG_F_ROUND_END, .round = p->round, .aux = p->streams[i].frames};
        rc = vfmig__link_send(p->cfg.link, i, &f, NULL);
        if (!rc)
            rc = vfmig__link_flush(p->cfg.link, i);
        if (rc)
            return vfmig__fail(s, rc, "ending round %u on stream %u: %s", p->round, i,
                              vfmig__link_stream_error(p->cfg.link, i));
    }
    /* What the link counted (tags of encrypted frames included), control frames of the round
     * too. */
    out->bytes_wire = vfmig__link_bytes_sent(p->cfg.link) - p->wire_at_begin;
    return VFMIG_OK;
}

void vfmig__pipeline_watch(vfmig_pipeline *p, uint64_t until_ns)
{
    pthread_mutex_lock(&p->qlock);
    p->watch_ns = until_ns;
    pthread_mutex_unlock(&p->qlock);
}

static void carry_batch(const vfmig_pipeline *p, const batch *b, uint64_t *const *carry, uint64_t *pages)
{
    for (uint32_t k = 0; k < b->nruns; k++) {
        const run *r = &b->runs[k];
        vfmig__bitmap_set_range(carry[r->range], r->page - p->s->range_base[r->range], r->npages);
        *pages += r->npages;
    }
}

uint64_t vfmig__pipeline_call_off(vfmig_pipeline *p, uint64_t *const *carry)
{
    uint64_t pages = 0;
    carry_batch(p, &p->pending, carry, &pages);
    p->pending.nruns = 0;
    p->pending.pages = 0;
    pthread_mutex_lock(&p->qlock);
    for (; p->head != p->tail; p->head++, p->busy--)
        carry_batch(p, &p->ring[p->head % QUEUE_CAP], carry, &pages);
    pthread_cond_broadcast(&p->qnonfull);
    /* What workers hold is sent whole, with the VF still paused: a frame read from VRAM while
     * the VF writes would fail its checksum. A batch or so per worker. */
    while (p->busy > 0 && !vfmig__should_stop(p->s))
        vfmig__cond_wait_slice(&p->qdone, &p->qlock);
    p->watch_ns = 0;
    pthread_mutex_unlock(&p->qlock);
    return pages;
}

void vfmig__pipeline_stop(vfmig_pipeline *p)
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
        free(w->enc);
        free(w->zero);
        free(w->kind);
        free(w->copy);
        free(w->src);
        free(w->hit);
        free(w->keep);
        free(w->want);
        free(w->dh);
        free(w->iov);
        vfmig__codec_ctx_destroy(w->codec);
    }
    free(p->workers);
    vfmig__delta_cache_destroy(p->delta);
    free(p->mark);
    free(p->page_class);
    for (unsigned i = 0; i <= VFMIG_MAX_STREAMS; i++)
        pthread_mutex_destroy(&p->streams[i].lock);
    pthread_cond_destroy(&p->qnonempty);
    pthread_cond_destroy(&p->qnonfull);
    pthread_cond_destroy(&p->qdone);
    pthread_mutex_destroy(&p->qlock);
    free(p);
}
