/* engine/receive.c - the target's page pipeline (see receive.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_setname_np */
#endif
#include "engine/receive.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "compress/codec.h"
#include "transport/link.h"

/* What decoding and applying a page frame needs: one per thread that does it. */
typedef struct applier {
    uint64_t *dh;          /* per page of a delta frame: change of its linear hash */
    uint8_t *dec;
    uint8_t *chk;          /* read-back of what was written (devices without map) */
    vfmig_codec_ctx *codec;
    vfmig_digest digest;   /* changes this applier made to the image digest */
    vfmig_round_stats acc; /* totals over the session */
} applier;

typedef struct receiver {
    vfmig_receive *rx;
    pthread_t thread;
    bool started;
    unsigned stream;
    uint8_t *payload;      /* inline decoding only; with a decode pool frames land in pool buffers */
    size_t cap;
    applier ap;            /* inline decoding, and frames received in place */
    uint32_t round;
    uint64_t frames;
    uint64_t queued;       /* frames of this stream handed to the pool and not applied yet */
    uint64_t last_frame_ns;
    uint64_t cpu_mark;     /* thread CPU time when the current round started */
    bool prechecked;       /* the place callback already checked this frame's header */
    int precheck_rc;
} receiver;

/* Decode pool (when the session asks for more threads than there are streams): receivers only
 * receive and check headers; decoders decode and apply. A ROUND_END waits until its stream's
 * frames are applied, so rounds stay barriers. */
typedef struct pool_job {
    vfmig_frame f;
    uint8_t *buf;
    receiver *r;
} pool_job;

typedef struct decoder {
    vfmig_receive *rx;
    pthread_t thread;
    bool started;
    applier ap;
    _Atomic uint64_t cpu_ns; /* CPU time spent on jobs, over the session */
} decoder;

struct vfmig_receive {
    vfmig_receive_cfg cfg;
    vfmig_session *s;
    const vfmig_device_ops *ops;
    void *dev;
    uint64_t zero_hash;
    uint8_t *map[VFMIG_MAX_RANGES]; /* in-place view of each range, or NULL */
    uint8_t *zeros;        /* batch_bytes of zeros for ZERO frames (devices without map) */
    uint32_t *page_round;  /* 1 + round of the copy applied; 0 = none yet */
    _Atomic uint64_t pages_seen;
    receiver rx[VFMIG_MAX_STREAMS];

    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint32_t arrived;      /* receivers at the current round's barrier */
    uint32_t completed;    /* rounds every stream has finished */
    uint64_t round_cpu_ns; /* receivers' CPU in the current round, added as they arrive */
    uint64_t pool_cpu_mark; /* decoders' CPU at the last barrier */
    _Atomic bool committed; /* COMMIT seen: receivers stop watching for idle streams */
    _Atomic uint32_t final_round; /* from COMMIT; UINT32_MAX before */
    _Atomic bool quit;

    unsigned ndecoders;    /* 0: receivers decode inline */
    decoder *dec;
    pthread_mutex_t plock;
    pthread_cond_t pjob, pdone; /* a job is queued / a buffer came back or a stream drained */
    pool_job *jobs;        /* ring of nbufs */
    uint8_t **freebufs;
    size_t nbufs, nfree, jhead, jtail; /* jtail - jhead = queued jobs */
    bool pquit;
};

static void wake_all(vfmig_receive *rx)
{
    pthread_mutex_lock(&rx->lock);
    pthread_cond_broadcast(&rx->cond);
    pthread_mutex_unlock(&rx->lock);
}

/* VRAM of global page p through the map, or NULL. */
static uint8_t *vram_of(const vfmig_receive *rx, uint32_t range, uint64_t p)
{
    const vfmig_session *s = rx->s;
    return rx->map[range] ? rx->map[range] + ((p - s->range_base[range]) << s->page_shift) : NULL;
}

/* True if any page of the run holds a copy newer than `tag` (only a forged or replayed frame
 * can bring that about: rounds are barriers). */
static bool any_newer(const vfmig_receive *rx, uint64_t first, uint64_t n, uint32_t tag)
{
    for (uint64_t i = 0; i < n; i++)
        if (rx->page_round[first + i] > tag)
            return true;
    return false;
}

/* Records pages [first, first+n) as applied with `tag`, their hashes taken from `held` (what the
 * device holds, or what was handed to it). held NULL: all zero pages. dh: the pages came in a
 * delta frame, with these changes of their linear hashes (engine/image.h); `full` makes them
 * hashed whole all the same, from `held`: with read-back the hash must come from the bytes VRAM
 * holds, and a delta's change describes only the bytes it wrote (a bit flipped in VRAM since the
 * page was last applied would pass unseen). */
static void account_pages(vfmig_receive *rx, applier *a, uint32_t tag, uint64_t first, uint64_t n,
                          const uint8_t *held, const uint64_t *dh, bool full)
{
    vfmig_session *s = rx->s;
    const uint64_t ps = s->page_size;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t p = first + i;
        uint64_t h = !held ? rx->zero_hash
                     : !dh ? vfmig__page_hash(held + i * ps, (size_t)ps)
                     : full ? vfmig__lin_page(s->lin, held + i * ps)
                            : vfmig_lin_after_delta(s->lin, s->page_hash[p], dh[i], held + i * ps);
        vfmig__image_set(s->page_hash, &a->digest, p, h);
        if (rx->page_round[p] == 0)
            atomic_fetch_add(&rx->pages_seen, 1);
        rx->page_round[p] = tag;
    }
}

/* Writes pages [first, first+n) from data (NULL: zeros) unless a newer copy is there already.
 * dh: the pages are a delta frame's (see account_pages). */
static int apply_pages(vfmig_receive *rx, applier *a, uint32_t tag, uint32_t range, uint64_t first, uint64_t n,
                       const uint8_t *data, const uint64_t *dh)
{
    vfmig_session *s = rx->s;
    const uint64_t ps = s->page_size;
    uint64_t k = 0;
    while (k < n) {
        /* Largest sub-run with no newer copy; pages holding a newer copy are skipped. */
        if (rx->page_round[first + k] > tag) {
            k++;
            continue;
        }
        uint64_t e = k + 1;
        while (e < n && rx->page_round[first + e] <= tag)
            e++;
        size_t len = (size_t)((e - k) * ps);
        const uint8_t *src = data ? data + k * ps : rx->zeros;
        uint8_t *vram = vram_of(rx, range, first + k);
        const uint8_t *held = src;
        if (vram) {
            if (data)
                memcpy(vram, src, len);
            else
                memset(vram, 0, len);
            held = vram;
        } else {
            uint64_t off = s->ranges[range].offset + ((first + k - s->range_base[range]) << s->page_shift);
            int rc = rx->ops->write(rx->dev, off, src, len);
            if (rc)
                return vfmig__dev_fail(s, rc, "write");
            /* With read-back, the digest covers what VRAM holds, not what was handed to the device. */
            if (rx->cfg.verify != VFMIG_VERIFY_APPLIED) {
                if ((rc = rx->ops->read(rx->dev, off, a->chk, len)))
                    return vfmig__dev_fail(s, rc, "read (verify)");
                held = a->chk;
            }
        }
        /* Zeros handed to the device hash as zeros unless what it holds is to be checked. */
        bool zero_known = !data && rx->cfg.verify == VFMIG_VERIFY_APPLIED;
        account_pages(rx, a, tag, first + k, e - k, zero_known ? NULL : held, dh ? dh + k : NULL,
                      rx->cfg.verify != VFMIG_VERIFY_APPLIED);
        k = e;
    }
    return VFMIG_OK;
}

/* Header checks, before the payload is used at all. */
static int check_pages(receiver *r, const vfmig_frame *f)
{
    vfmig_receive *rx = r->rx;
    vfmig_session *s = rx->s;
    const uint64_t ps = s->page_size;
    if (f->round != r->round)
        return vfmig__fail(s, VFMIG_EPROTO, "stream %u: page frame of round %u while receiving round %u",
                          r->stream, f->round, r->round);
    if (f->round > atomic_load(&rx->final_round))
        return vfmig__fail(s, VFMIG_EPROTO, "stream %u: page frame of round %u after the COMMIT of round %u",
                          r->stream, f->round, atomic_load(&rx->final_round));
    if (f->npages == 0 || f->page >= s->npages || f->npages > s->npages - f->page ||
        (uint64_t)f->npages * ps > rx->cfg.batch_bytes)
        return vfmig__fail(s, VFMIG_EPROTO, "stream %u: page run %" PRIu64 "+%u out of range (VF has %" PRIu64 " pages)",
                          r->stream, f->page, f->npages, s->npages);
    if (vfmig_page_range(s, f->page) != vfmig_page_range(s, f->page + f->npages - 1))
        return vfmig__fail(s, VFMIG_EPROTO, "stream %u: page run %" PRIu64 "+%u crosses a range boundary",
                          r->stream, f->page, f->npages);
    size_t len = (size_t)((uint64_t)f->npages * ps);
    if (f->flags & ~VFMIG_FRAME_FLAG_UNCHECKED)
        return vfmig__fail(s, VFMIG_EPROTO, "stream %u: page frame with unknown flags 0x%x", r->stream, f->flags);
    if ((f->flags & VFMIG_FRAME_FLAG_UNCHECKED) && f->codec != VFMIG_CODEC_RAW)
        return vfmig__fail(s, VFMIG_EPROTO, "stream %u: only raw pages may travel unchecked", r->stream);
    if (f->codec == VFMIG_CODEC_ZERO && f->len)
        return vfmig__fail(s, VFMIG_EPROTO, "stream %u: zero-page frame with a payload", r->stream);
    if (f->codec == VFMIG_CODEC_RAW && f->len != len)
        return vfmig__fail(s, VFMIG_EPROTO, "stream %u: raw frame of %u bytes for %u pages", r->stream, f->len,
                          f->npages);
    if (f->codec == VFMIG_CODEC_DELTA)
        for (uint64_t i = 0; i < f->npages; i++)
            if (rx->page_round[f->page + i] == 0)
                return vfmig__fail(s, VFMIG_EPROTO, "stream %u: delta frame for page %" PRIu64 " that was never sent",
                                  r->stream, f->page + i);
    if (!vfmig__codec_desc_of(f->codec))
        return vfmig__fail(s, VFMIG_EPROTO, "stream %u: unknown codec id %u", r->stream, f->codec);
    r->frames++;
    return VFMIG_OK;
}

/* Link callback: where a frame's payload goes. Raw page runs go straight into VRAM when the
 * device maps it, the header checks pass and no page of the run holds a newer copy. */
static void *place_payload(void *ctx, const vfmig_frame *f)
{
    receiver *r = ctx;
    vfmig_receive *rx = r->rx;
    if (f->type != VFMIG_F_PAGES || f->codec != VFMIG_CODEC_RAW)
        return NULL;
    r->prechecked = true;
    r->precheck_rc = check_pages(r, f);
    if (r->precheck_rc || any_newer(rx, f->page, f->npages, f->round + 1))
        return NULL;
    return vram_of(rx, vfmig_page_range(rx->s, f->page), f->page);
}

static void count_frame(vfmig_session *s, applier *a, const vfmig_frame *f, size_t len)
{
    vfmig_progress_add(s, (uint64_t)f->npages * s->page_size);
    a->acc.dirty_pages += f->npages;
    a->acc.bytes_wire += VFMIG_FRAME_HDR_BYTES + f->len;
    if (f->codec == VFMIG_CODEC_ZERO) {
        a->acc.zero_pages += f->npages;
    } else {
        a->acc.bytes_raw += len;
        a->acc.codec_out[f->codec] += f->len;
    }
    a->acc.codec_in[f->codec] += len;
}

/* Decodes a checked page frame and applies it (a receiver inline, or a decoder). */
static int decode_apply(vfmig_receive *rx, applier *a, unsigned stream, const vfmig_frame *f, const uint8_t *payload)
{
    vfmig_session *s = rx->s;
    size_t len = (size_t)((uint64_t)f->npages * s->page_size);
    uint32_t range = vfmig_page_range(s, f->page);
    uint32_t tag = f->round + 1;
    uint8_t *vram = vram_of(rx, range, f->page);
    /* In place: straight into VRAM when no page of the run must be skipped. */
    bool direct = vram && !any_newer(rx, f->page, f->npages, tag);
    const uint8_t *data = payload;
    int rc = VFMIG_OK;
    uint64_t t0 = vfmig__now_ns();
    if (f->codec == VFMIG_CODEC_ZERO) {
        data = NULL;
    } else if (f->codec == VFMIG_CODEC_DELTA) {
        if (direct) {
            rc = vfmig__decode(a->codec, VFMIG_CODEC_DELTA, payload, f->len, vram, vram, len);
            data = vram;
        } else {
            if (vram)
                memcpy(a->dec, vram, len);
            else if ((rc = rx->ops->read(rx->dev, s->ranges[range].offset +
                                                      ((f->page - s->range_base[range]) << s->page_shift),
                                         a->dec, len)))
                return vfmig__dev_fail(s, rc, "read (delta base)");
            rc = vfmig__decode(a->codec, VFMIG_CODEC_DELTA, payload, f->len, a->dec, a->dec, len);
            data = a->dec;
        }
    } else if (f->codec != VFMIG_CODEC_RAW) {
        data = direct ? vram : a->dec;
        rc = vfmig__decode(a->codec, f->codec, payload, f->len, NULL, (uint8_t *)data, len);
    }
    if (rc)
        return vfmig__fail(s, rc, "stream %u: %s payload of pages %" PRIu64 "+%u does not decode", stream,
                          vfmig_codec_name(f->codec), f->page, f->npages);
    const uint64_t *dh = NULL;
    if (f->codec == VFMIG_CODEC_DELTA) {
        if ((rc = vfmig__lin_delta(s->lin, payload, f->len, f->npages, a->dh)))
            return vfmig__fail(s, rc, "stream %u: delta payload of pages %" PRIu64 "+%u does not parse", stream,
                              f->page, f->npages);
        dh = a->dh;
    }
    a->acc.encode_ns += vfmig__now_ns() - t0;
    if (data && data == vram) /* decoded in place */
        account_pages(rx, a, tag, f->page, f->npages, vram, dh, rx->cfg.verify != VFMIG_VERIFY_APPLIED);
    else if ((rc = apply_pages(rx, a, tag, range, f->page, f->npages, data, dh)))
        return rc;
    count_frame(s, a, f, len);
    return VFMIG_OK;
}

/* Pool: a free buffer to receive into (NULL once the session stops). */
static uint8_t *pool_take(vfmig_receive *rx)
{
    uint8_t *b = NULL;
    pthread_mutex_lock(&rx->plock);
    while (!rx->nfree && !vfmig__should_stop(rx->s) && !atomic_load(&rx->quit))
        vfmig__cond_wait_slice(&rx->pdone, &rx->plock);
    if (rx->nfree)
        b = rx->freebufs[--rx->nfree];
    pthread_mutex_unlock(&rx->plock);
    return b;
}

static void pool_give(vfmig_receive *rx, uint8_t *b)
{
    pthread_mutex_lock(&rx->plock);
    rx->freebufs[rx->nfree++] = b;
    pthread_cond_broadcast(&rx->pdone);
    pthread_mutex_unlock(&rx->plock);
}

static void pool_push(vfmig_receive *rx, receiver *r, const vfmig_frame *f, uint8_t *b)
{
    pthread_mutex_lock(&rx->plock);
    /* Never full: there are as many ring slots as buffers. */
    rx->jobs[rx->jtail++ % rx->nbufs] = (pool_job){*f, b, r};
    r->queued++;
    pthread_cond_signal(&rx->pjob);
    pthread_mutex_unlock(&rx->plock);
}

/* Waits until every frame this receiver queued is applied. */
static int pool_drain(receiver *r)
{
    vfmig_receive *rx = r->rx;
    pthread_mutex_lock(&rx->plock);
    while (r->queued && !vfmig__should_stop(rx->s))
        vfmig__cond_wait_slice(&rx->pdone, &rx->plock);
    pthread_mutex_unlock(&rx->plock);
    return vfmig__should_stop(rx->s) ? rx->s->status : VFMIG_OK;
}

static void *decoder_main(void *arg)
{
    decoder *d = arg;
    vfmig_receive *rx = d->rx;
    pthread_setname_np(pthread_self(), "vfmig-dec");
    vfmig__pinner_bind(rx->cfg.pinner, (unsigned)(d - rx->dec));
    for (;;) {
        pthread_mutex_lock(&rx->plock);
        while (rx->jhead == rx->jtail && !rx->pquit)
            pthread_cond_wait(&rx->pjob, &rx->plock);
        if (rx->jhead == rx->jtail) {
            pthread_mutex_unlock(&rx->plock);
            return NULL;
        }
        pool_job j = rx->jobs[rx->jhead++ % rx->nbufs];
        pthread_mutex_unlock(&rx->plock);
        uint64_t c0 = vfmig__thread_cpu_ns();
        if (!atomic_load(&rx->s->failed))
            decode_apply(rx, &d->ap, j.r->stream, &j.f, j.buf);
        atomic_fetch_add(&d->cpu_ns, vfmig__thread_cpu_ns() - c0);
        pthread_mutex_lock(&rx->plock);
        rx->freebufs[rx->nfree++] = j.buf;
        j.r->queued--;
        pthread_cond_broadcast(&rx->pdone);
        pthread_mutex_unlock(&rx->plock);
    }
}

static int on_round_end(receiver *r, const vfmig_frame *f)
{
    vfmig_receive *rx = r->rx;
    vfmig_session *s = rx->s;
    if (rx->ndecoders && pool_drain(r))
        return s->status;
    if (f->flags)
        return vfmig__fail(s, VFMIG_EPROTO, "stream %u: round end with flags 0x%x", r->stream, f->flags);
    if (f->round > atomic_load(&rx->final_round))
        return vfmig__fail(s, VFMIG_EPROTO, "stream %u: round %u ended after the COMMIT of round %u", r->stream,
                          f->round, atomic_load(&rx->final_round));
    if (f->round != r->round || f->aux != r->frames)
        return vfmig__fail(s, VFMIG_EPROTO,
                          "stream %u: round %u ended after %" PRIu64 " frames, but the source sent round %u with %" PRIu64,
                          r->stream, r->round, r->frames, f->round, f->aux);
    uint64_t cpu_now = vfmig__thread_cpu_ns();
    pthread_mutex_lock(&rx->lock);
    rx->round_cpu_ns += cpu_now - r->cpu_mark;
    if (++rx->arrived == rx->cfg.nstreams) {
        rx->arrived = 0;
        rx->completed = r->round + 1;
        vfmig__progress_round(s, rx->completed, 0);
        pthread_cond_broadcast(&rx->cond);
        uint64_t pool = 0;
        for (unsigned i = 0; i < rx->ndecoders; i++)
            pool += atomic_load(&rx->dec[i].cpu_ns);
        uint64_t cpu = rx->round_cpu_ns + (pool - rx->pool_cpu_mark);
        rx->pool_cpu_mark = pool;
        rx->round_cpu_ns = 0;
        /* Tell the source the round is applied: it waits for this before pausing the VF, so the
         * blackout never includes draining a backlog of pre-copy pages. The CPU time it took
         * here lets the source's policy predict the target's share of a final pass. */
        vfmig_frame ack = {.type = VFMIG_F_ROUND_ACK, .round = r->round, .aux = cpu};
        pthread_mutex_lock(rx->cfg.ctl_tx);
        int rc = vfmig__link_send(rx->cfg.link, 0, &ack, NULL);
        if (!rc)
            rc = vfmig__link_flush(rx->cfg.link, 0);
        pthread_mutex_unlock(rx->cfg.ctl_tx);
        if (rc && rc != VFMIG_ECANCELED)
            vfmig__fail(s, rc, "sending round acknowledgement: %s", vfmig__link_stream_error(rx->cfg.link, 0));
    }
    while (rx->completed < r->round + 1 && !vfmig__should_stop(s))
        vfmig__cond_wait_slice(&rx->cond, &rx->lock);
    pthread_mutex_unlock(&rx->lock);
    r->cpu_mark = vfmig__thread_cpu_ns();
    r->round++;
    r->frames = 0;
    return vfmig__should_stop(s) ? s->status : VFMIG_OK;
}

static void *receiver_main(void *arg)
{
    receiver *r = arg;
    vfmig_receive *rx = r->rx;
    vfmig_session *s = rx->s;
    const uint64_t idle_ns = (uint64_t)s->params[VFMIG_P_TIMEOUT_MS] * 1000000ull;
    char name[16];
    snprintf(name, sizeof(name), "vfmig-rx%u", r->stream);
    pthread_setname_np(pthread_self(), name);
    vfmig__pinner_bind(rx->cfg.pinner, r->stream - 1);
    r->last_frame_ns = vfmig__now_ns();
    r->cpu_mark = vfmig__thread_cpu_ns();
    bool in_place = rx->map[0] != NULL;
    uint8_t *buf = r->payload; /* with a pool: a pool buffer, taken before each receive */
    while (!atomic_load(&rx->quit) && !vfmig__should_stop(s)) {
        if (!buf && !(buf = pool_take(rx)))
            break;
        vfmig_frame f;
        bool placed = false;
        r->prechecked = false;
        int rc = vfmig__link_recv_placed(rx->cfg.link, r->stream, &f, buf, r->cap, in_place ? place_payload : NULL,
                                        r, &placed, VFMIG_WAIT_SLICE_MS);
        if (rc == VFMIG_ETIMEDOUT) {
            if (!atomic_load(&rx->committed) && vfmig__now_ns() - r->last_frame_ns > idle_ns)
                vfmig__fail(s, VFMIG_ETIMEDOUT, "stream %u: no data from the source for %" PRId64 " ms",
                           r->stream, s->params[VFMIG_P_TIMEOUT_MS]);
            continue;
        }
        if (rc) {
            /* Once the final round is in, a stream closing is the source finishing, not a fault:
             * whether the migration stands is decided on the control stream. */
            bool done = r->round > atomic_load(&rx->final_round);
            if (rc != VFMIG_ECANCELED && !atomic_load(&rx->quit) && !done)
                vfmig__fail(s, rc, "stream %u: %s (%s)", r->stream, vfmig_strerror(rc),
                           vfmig__link_stream_error(rx->cfg.link, r->stream));
            break;
        }
        r->last_frame_ns = vfmig__now_ns();
        if (f.type == VFMIG_F_PAGES) {
            rc = r->prechecked ? r->precheck_rc : check_pages(r, &f);
            if (!rc && placed) {
                /* Already in VRAM: account for it here, nothing to decode. */
                account_pages(rx, &r->ap, f.round + 1, f.page, f.npages,
                              vram_of(rx, vfmig_page_range(s, f.page), f.page), NULL, false);
                count_frame(s, &r->ap, &f, f.len);
            } else if (!rc && !rx->ndecoders) {
                rc = decode_apply(rx, &r->ap, r->stream, &f, buf);
            } else if (!rc) {
                pool_push(rx, r, &f, buf);
                buf = NULL;
            }
        } else if (f.type == VFMIG_F_ROUND_END) {
            rc = on_round_end(r, &f);
        } else {
            rc = vfmig__fail(s, VFMIG_EPROTO, "stream %u: unexpected frame type %u on a data stream",
                            r->stream, f.type);
        }
        if (rc)
            break;
    }
    if (rx->ndecoders && buf)
        pool_give(rx, buf);
    wake_all(rx);
    return NULL;
}

static int applier_init(applier *a, size_t batch, uint64_t page_size)
{
    a->dec = malloc(batch);
    a->chk = malloc(batch);
    a->dh = calloc(batch / page_size + 1, sizeof(*a->dh));
    return a->dec && a->chk && a->dh && !vfmig__codec_ctx_create(batch, &a->codec) ? VFMIG_OK : VFMIG_ENOMEM;
}

static void applier_free(applier *a)
{
    free(a->dec);
    free(a->chk);
    free(a->dh);
    vfmig__codec_ctx_destroy(a->codec);
    a->dh = NULL;
    a->dec = a->chk = NULL;
    a->codec = NULL;
}

static void add_stats(vfmig_round_stats *tot, const vfmig_round_stats *a)
{
    tot->dirty_pages += a->dirty_pages;
    tot->zero_pages += a->zero_pages;
    tot->bytes_raw += a->bytes_raw;
    tot->bytes_wire += a->bytes_wire;
    tot->encode_ns += a->encode_ns;
    for (int c = 0; c < VFMIG_CODEC_COUNT; c++) {
        tot->codec_in[c] += a->codec_in[c];
        tot->codec_out[c] += a->codec_out[c];
    }
}

int vfmig__receive_start(const vfmig_receive_cfg *cfg, vfmig_receive **out)
{
    vfmig_session *s = cfg->s;
    *out = NULL;
    vfmig_receive *rx = calloc(1, sizeof(*rx));
    if (!rx)
        return vfmig__fail(s, VFMIG_ENOMEM, "out of memory");
    *out = rx;
    rx->cfg = *cfg;
    rx->s = s;
    rx->ops = s->dev.ops;
    rx->dev = s->dev.dev;
    rx->zero_hash = vfmig__zero_page_hash(s->page_size);
    atomic_store(&rx->final_round, UINT32_MAX);
    pthread_mutex_init(&rx->lock, NULL);
    pthread_cond_init(&rx->cond, NULL);
    pthread_mutex_init(&rx->plock, NULL);
    pthread_cond_init(&rx->pjob, NULL);
    pthread_cond_init(&rx->pdone, NULL);
    rx->page_round = calloc(s->npages, sizeof(uint32_t));
    rx->zeros = calloc(1, cfg->batch_bytes);
    if (!rx->page_round || !rx->zeros)
        return vfmig__fail(s, VFMIG_ENOMEM, "out of memory for %" PRIu64 " page records", s->npages);
    /* In place only if every range maps and payloads arrive as they were sent (plain or tagged). */
    if (rx->ops->map && vfmig__link_payload_placeable(cfg->link)) {
        bool all = true;
        for (uint32_t r = 0; r < s->dev.nranges; r++)
            all = all && (rx->map[r] = rx->ops->map(rx->dev, s->ranges[r].offset, s->ranges[r].size)) != NULL;
        if (!all)
            memset(rx->map, 0, sizeof(rx->map));
    }

    size_t cap = vfmig__codec_bound(cfg->batch_bytes);
    unsigned threads = vfmig__session_threads(s);
    if (threads > cfg->nstreams) {
        rx->ndecoders = threads;
        rx->nbufs = 2 * (size_t)threads + cfg->nstreams; /* every decoder busy, one queued each, one per receiver */
        rx->dec = calloc(threads, sizeof(decoder));
        rx->jobs = calloc(rx->nbufs, sizeof(pool_job));
        rx->freebufs = calloc(rx->nbufs, sizeof(uint8_t *));
        if (!rx->dec || !rx->jobs || !rx->freebufs)
            return vfmig__fail(s, VFMIG_ENOMEM, "out of memory for the decode pool");
        for (size_t i = 0; i < rx->nbufs; i++)
            if (!(rx->freebufs[rx->nfree++] = malloc(cap)))
                return vfmig__fail(s, VFMIG_ENOMEM, "out of memory for receive buffers");
        for (unsigned i = 0; i < threads; i++) {
            decoder *d = &rx->dec[i];
            d->rx = rx;
            if (applier_init(&d->ap, cfg->batch_bytes, s->page_size))
                return vfmig__fail(s, VFMIG_ENOMEM, "out of memory for decode buffers");
            if (pthread_create(&d->thread, NULL, decoder_main, d))
                return vfmig__fail(s, VFMIG_ENOMEM, "cannot start decoder thread");
            d->started = true;
        }
    }
    pthread_mutex_lock(&s->lock);
    s->stats.threads = rx->ndecoders ? rx->ndecoders : cfg->nstreams;
    pthread_mutex_unlock(&s->lock);
    for (unsigned i = 0; i < cfg->nstreams; i++) {
        receiver *r = &rx->rx[i];
        r->rx = rx;
        r->stream = i + 1;
        r->cap = cap;
        /* Every receiver has an applier: frames received in place are accounted inline. */
        if ((!rx->ndecoders && !(r->payload = malloc(cap))) || applier_init(&r->ap, cfg->batch_bytes, s->page_size))
            return vfmig__fail(s, VFMIG_ENOMEM, "out of memory for receive buffers");
        if (pthread_create(&r->thread, NULL, receiver_main, r))
            return vfmig__fail(s, VFMIG_ENOMEM, "cannot start receiver thread");
        r->started = true;
    }
    return VFMIG_OK;
}

void vfmig__receive_commit(vfmig_receive *rx, uint32_t final_round)
{
    atomic_store(&rx->final_round, final_round);
    atomic_store(&rx->committed, true);
}

uint32_t vfmig__receive_wait(vfmig_receive *rx, uint32_t rounds, uint64_t deadline_ns)
{
    pthread_mutex_lock(&rx->lock);
    while (rx->completed < rounds && !vfmig__should_stop(rx->s) && !vfmig__expired(deadline_ns))
        vfmig__cond_wait_slice(&rx->cond, &rx->lock);
    uint32_t done = rx->completed;
    pthread_mutex_unlock(&rx->lock);
    return done;
}

uint32_t vfmig__receive_completed(vfmig_receive *rx)
{
    pthread_mutex_lock(&rx->lock);
    uint32_t done = rx->completed;
    pthread_mutex_unlock(&rx->lock);
    return done;
}

uint64_t vfmig__receive_pages_seen(const vfmig_receive *rx)
{
    return atomic_load(&rx->pages_seen);
}

void vfmig__receive_digest(const vfmig_receive *rx, vfmig_digest *out)
{
    *out = (vfmig_digest){0, 0};
    for (unsigned i = 0; i < rx->cfg.nstreams; i++)
        vfmig_digest_add(out, &rx->rx[i].ap.digest);
    for (unsigned i = 0; i < rx->ndecoders; i++)
        vfmig_digest_add(out, &rx->dec[i].ap.digest);
}

void vfmig__receive_stop(vfmig_receive *rx, vfmig_round_stats *tot)
{
    if (!rx)
        return;
    atomic_store(&rx->quit, true);
    for (unsigned i = 0; i < rx->cfg.nstreams; i++) {
        receiver *r = &rx->rx[i];
        if (r->started)
            pthread_join(r->thread, NULL);
        add_stats(tot, &r->ap.acc);
        free(r->payload);
        applier_free(&r->ap);
    }
    if (rx->dec) {
        pthread_mutex_lock(&rx->plock);
        rx->pquit = true; /* decoders finish what is queued, then leave */
        pthread_cond_broadcast(&rx->pjob);
        pthread_mutex_unlock(&rx->plock);
        for (unsigned i = 0; i < rx->ndecoders; i++) {
            decoder *d = &rx->dec[i];
            if (d->started)
                pthread_join(d->thread, NULL);
            add_stats(tot, &d->ap.acc);
            applier_free(&d->ap);
        }
    }
    for (size_t i = 0; i < rx->nfree; i++)
        free(rx->freebufs[i]);
    free(rx->freebufs);
    free(rx->jobs);
    free(rx->dec);
    free(rx->page_round);
    free(rx->zeros);
    pthread_cond_destroy(&rx->cond);
    pthread_mutex_destroy(&rx->lock);
    pthread_cond_destroy(&rx->pjob);
    pthread_cond_destroy(&rx->pdone);
    pthread_mutex_destroy(&rx->plock);
    free(rx);
}
