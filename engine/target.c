/*
 * engine/target.c - the target side of one migration.
 *
 * One receiver thread per data stream checks, decodes and applies page frames. Rounds are
 * barriers: a receiver that reaches ROUND_END(r) waits until every stream has, so no frame of
 * round r+1 is applied before all of round r (a delta frame always finds its base, and an older
 * page can never land on a newer one). Each page also carries the round it was applied in, and
 * a frame from an older round than the page holds is refused.
 *
 * The target never resumes an image that is partial or unverified: on COMMIT it waits for every
 * stream to finish the final round, checks that every page arrived and that the digest of what it
 * applied equals the source's, restores the mutable state, reports VERDICT, and resumes only on
 * the source's GO.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_setname_np */
#endif
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#define XXH_INLINE_ALL /* page hashes: ~30 GB/s inlined against ~19 GB/s through the .so */
#include <xxhash.h>

#include "compress/codec.h"
#include "engine/auth.h"
#include "engine/proto.h"
#include "engine/session.h"

typedef struct target target;

/* What decoding and applying a page frame needs: one per thread that does it. */
typedef struct applier {
    uint8_t *dec;
    uint8_t *chk;          /* read-back of what was written */
    vfmig_codec_ctx *codec;
    vfmig_round_stats acc; /* totals over the session */
} applier;

typedef struct receiver {
    target *t;
    pthread_t thread;
    bool started;
    unsigned stream;
    uint8_t *payload;      /* inline decoding only; with a decode pool frames land in pool buffers */
    size_t cap;
    applier ap;            /* inline decoding */
    uint32_t round;
    uint64_t frames;
    uint64_t queued;       /* frames of this stream handed to the pool and not applied yet */
    uint64_t last_frame_ns;
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
    target *t;
    pthread_t thread;
    bool started;
    applier ap;
} decoder;

struct target {
    vfmig_session *s;
    vfmig_link *link;
    const vfmig_device_ops *ops;
    void *dev;
    vfmig_hello hello;
    unsigned nstreams;
    uint64_t batch_bytes;
    uint64_t zero_hash;
    bool readback;         /* hash pages as read back from VRAM after writing them */
    uint8_t *zeros;        /* batch_bytes of zeros for ZERO frames */
    uint32_t *page_round;  /* 1 + round of the copy applied; 0 = none yet */
    _Atomic uint64_t pages_seen;
    receiver rx[VFMIG_MAX_STREAMS];

    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_mutex_t ctl_tx; /* the control stream is written by the main thread and receivers */
    uint32_t arrived;      /* receivers at the current round's barrier */
    uint32_t completed;    /* rounds every stream has finished */
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

    uint8_t *ctl;          /* control payload buffer */
    size_t ctl_cap;
    uint8_t *mut;
    uint64_t mut_size, mut_got;
    bool prepared;
    bool resumed;
    vfmig_pinner *pinner;
};

static int dev_fail(vfmig_session *s, int rc, const char *what)
{
    return vfmig_fail(s, rc < 0 ? rc : VFMIG_EDEVICE, "device %s failed: %s", what,
                      vfmig_strerror(rc < 0 ? rc : VFMIG_EDEVICE));
}

static void wake_all(target *t)
{
    pthread_mutex_lock(&t->lock);
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->lock);
}

/* Writes pages [first, first+n) from data unless a newer copy is there already. */
static int apply_pages(target *t, applier *a, uint32_t tag, uint64_t first, uint64_t n, const uint8_t *data,
                       bool zero)
{
    vfmig_session *s = t->s;
    const uint64_t ps = s->page_size;
    uint32_t range = vfmig_page_range(s, first);
    uint64_t k = 0;
    while (k < n) {
        /* Largest sub-run with no newer copy; pages holding a newer copy are skipped. */
        if (t->page_round[first + k] > tag) {
            k++;
            continue;
        }
        uint64_t e = k + 1;
        while (e < n && t->page_round[first + e] <= tag)
            e++;
        uint64_t off = vfmig_page_offset(s, range, first + k);
        size_t len = (size_t)((e - k) * ps);
        int rc = t->ops->write(t->dev, off, data + k * ps, len);
        if (rc)
            return dev_fail(s, rc, "write");
        /* With read-back, the digest covers what VRAM holds, not what was handed to the device. */
        const uint8_t *held = data + k * ps;
        if (t->readback) {
            if ((rc = t->ops->read(t->dev, off, a->chk, len)))
                return dev_fail(s, rc, "read (verify)");
            held = a->chk;
        }
        for (uint64_t i = k; i < e; i++) {
            uint64_t p = first + i;
            s->page_hash[p] = zero && !t->readback ? t->zero_hash : XXH3_64bits(held + (i - k) * ps, ps);
            if (t->page_round[p] == 0)
                atomic_fetch_add(&t->pages_seen, 1);
            t->page_round[p] = tag;
        }
        k = e;
    }
    return VFMIG_OK;
}

/* Header checks, by the receiver, before the payload is used at all. */
static int check_pages(receiver *r, const vfmig_frame *f)
{
    target *t = r->t;
    vfmig_session *s = t->s;
    const uint64_t ps = s->page_size;
    if (f->round != r->round)
        return vfmig_fail(s, VFMIG_EPROTO, "stream %u: page frame of round %u while receiving round %u",
                          r->stream, f->round, r->round);
    if (f->round > atomic_load(&t->final_round))
        return vfmig_fail(s, VFMIG_EPROTO, "stream %u: page frame of round %u after the COMMIT of round %u",
                          r->stream, f->round, atomic_load(&t->final_round));
    if (f->npages == 0 || f->page >= s->npages || f->npages > s->npages - f->page ||
        (uint64_t)f->npages * ps > t->batch_bytes)
        return vfmig_fail(s, VFMIG_EPROTO, "stream %u: page run %" PRIu64 "+%u out of range (VF has %" PRIu64 " pages)",
                          r->stream, f->page, f->npages, s->npages);
    if (vfmig_page_range(s, f->page) != vfmig_page_range(s, f->page + f->npages - 1))
        return vfmig_fail(s, VFMIG_EPROTO, "stream %u: page run %" PRIu64 "+%u crosses a range boundary",
                          r->stream, f->page, f->npages);
    size_t len = (size_t)((uint64_t)f->npages * ps);
    if (f->codec == VFMIG_CODEC_ZERO && f->len)
        return vfmig_fail(s, VFMIG_EPROTO, "stream %u: zero-page frame with a payload", r->stream);
    if (f->codec == VFMIG_CODEC_RAW && f->len != len)
        return vfmig_fail(s, VFMIG_EPROTO, "stream %u: raw frame of %u bytes for %u pages", r->stream, f->len,
                          f->npages);
    if (f->codec == VFMIG_CODEC_DELTA)
        for (uint64_t i = 0; i < f->npages; i++)
            if (t->page_round[f->page + i] == 0)
                return vfmig_fail(s, VFMIG_EPROTO, "stream %u: delta frame for page %" PRIu64 " that was never sent",
                                  r->stream, f->page + i);
    if (f->codec != VFMIG_CODEC_ZERO && f->codec != VFMIG_CODEC_RAW && f->codec != VFMIG_CODEC_DELTA &&
        f->codec != VFMIG_CODEC_LZ4 && f->codec != VFMIG_CODEC_ZSTD)
        return vfmig_fail(s, VFMIG_EPROTO, "stream %u: unknown codec id %u", r->stream, f->codec);
    r->frames++;
    return VFMIG_OK;
}

/* Decodes a checked page frame and applies it (a receiver inline, or a decoder). */
static int decode_apply(target *t, applier *a, unsigned stream, const vfmig_frame *f, const uint8_t *payload)
{
    vfmig_session *s = t->s;
    size_t len = (size_t)((uint64_t)f->npages * s->page_size);
    const uint8_t *data = payload;
    int rc = VFMIG_OK;
    uint64_t t0 = vfmig_now_ns();
    if (f->codec == VFMIG_CODEC_ZERO) {
        data = t->zeros;
    } else if (f->codec == VFMIG_CODEC_DELTA) {
        uint32_t range = vfmig_page_range(s, f->page);
        rc = t->ops->read(t->dev, vfmig_page_offset(s, range, f->page), a->dec, len);
        if (rc)
            return dev_fail(s, rc, "read (delta base)");
        rc = vfmig_decode(a->codec, VFMIG_CODEC_DELTA, payload, f->len, a->dec, a->dec, len);
        data = a->dec;
    } else if (f->codec != VFMIG_CODEC_RAW) {
        rc = vfmig_decode(a->codec, f->codec, payload, f->len, NULL, a->dec, len);
        data = a->dec;
    }
    if (rc)
        return vfmig_fail(s, rc, "stream %u: %s payload of pages %" PRIu64 "+%u does not decode", stream,
                          vfmig_codec_name(f->codec), f->page, f->npages);
    a->acc.encode_ns += vfmig_now_ns() - t0;
    rc = apply_pages(t, a, f->round + 1, f->page, f->npages, data, f->codec == VFMIG_CODEC_ZERO);
    if (rc)
        return rc;
    a->acc.dirty_pages += f->npages;
    a->acc.bytes_wire += VFMIG_FRAME_HDR_BYTES + f->len;
    if (f->codec == VFMIG_CODEC_ZERO) {
        a->acc.zero_pages += f->npages;
    } else {
        a->acc.bytes_raw += len;
        a->acc.codec_out[f->codec] += f->len;
    }
    a->acc.codec_in[f->codec] += len;
    return VFMIG_OK;
}

/* Pool: a free buffer to receive into (NULL once the session stops). */
static uint8_t *pool_take(target *t)
{
    uint8_t *b = NULL;
    pthread_mutex_lock(&t->plock);
    while (!t->nfree && !vfmig_should_stop(t->s) && !atomic_load(&t->quit))
        vfmig_cond_wait_slice(&t->pdone, &t->plock);
    if (t->nfree)
        b = t->freebufs[--t->nfree];
    pthread_mutex_unlock(&t->plock);
    return b;
}

static void pool_give(target *t, uint8_t *b)
{
    pthread_mutex_lock(&t->plock);
    t->freebufs[t->nfree++] = b;
    pthread_cond_broadcast(&t->pdone);
    pthread_mutex_unlock(&t->plock);
}

static void pool_push(target *t, receiver *r, const vfmig_frame *f, uint8_t *b)
{
    pthread_mutex_lock(&t->plock);
    /* Never full: there are as many ring slots as buffers. */
    t->jobs[t->jtail++ % t->nbufs] = (pool_job){*f, b, r};
    r->queued++;
    pthread_cond_signal(&t->pjob);
    pthread_mutex_unlock(&t->plock);
}

/* Waits until every frame this receiver queued is applied. */
static int pool_drain(receiver *r)
{
    target *t = r->t;
    pthread_mutex_lock(&t->plock);
    while (r->queued && !vfmig_should_stop(t->s))
        vfmig_cond_wait_slice(&t->pdone, &t->plock);
    pthread_mutex_unlock(&t->plock);
    return vfmig_should_stop(t->s) ? t->s->status : VFMIG_OK;
}

static void *decoder_main(void *arg)
{
    decoder *d = arg;
    target *t = d->t;
    pthread_setname_np(pthread_self(), "vfmig-dec");
    vfmig_pinner_bind(t->pinner, (unsigned)(d - t->dec));
    for (;;) {
        pthread_mutex_lock(&t->plock);
        while (t->jhead == t->jtail && !t->pquit)
            pthread_cond_wait(&t->pjob, &t->plock);
        if (t->jhead == t->jtail) {
            pthread_mutex_unlock(&t->plock);
            return NULL;
        }
        pool_job j = t->jobs[t->jhead++ % t->nbufs];
        pthread_mutex_unlock(&t->plock);
        if (!atomic_load(&t->s->failed))
            decode_apply(t, &d->ap, j.r->stream, &j.f, j.buf);
        pthread_mutex_lock(&t->plock);
        t->freebufs[t->nfree++] = j.buf;
        j.r->queued--;
        pthread_cond_broadcast(&t->pdone);
        pthread_mutex_unlock(&t->plock);
    }
}

static int on_round_end(receiver *r, const vfmig_frame *f)
{
    target *t = r->t;
    vfmig_session *s = t->s;
    if (t->ndecoders && pool_drain(r))
        return s->status;
    if (f->round > atomic_load(&t->final_round))
        return vfmig_fail(s, VFMIG_EPROTO, "stream %u: round %u ended after the COMMIT of round %u", r->stream,
                          f->round, atomic_load(&t->final_round));
    if (f->round != r->round || f->aux != r->frames)
        return vfmig_fail(s, VFMIG_EPROTO,
                          "stream %u: round %u ended after %" PRIu64 " frames, but the source sent round %u with %" PRIu64,
                          r->stream, r->round, r->frames, f->round, f->aux);
    pthread_mutex_lock(&t->lock);
    if (++t->arrived == t->nstreams) {
        t->arrived = 0;
        t->completed = r->round + 1;
        pthread_cond_broadcast(&t->cond);
        /* Tell the source the round is applied: it waits for this before pausing the VF, so the
         * blackout never includes draining a backlog of pre-copy pages. */
        vfmig_frame ack = {.type = VFMIG_F_ROUND_ACK, .round = r->round};
        pthread_mutex_lock(&t->ctl_tx);
        int rc = vfmig_link_send(t->link, 0, &ack, NULL);
        if (!rc)
            rc = vfmig_link_flush(t->link, 0);
        pthread_mutex_unlock(&t->ctl_tx);
        if (rc && rc != VFMIG_ECANCELED)
            vfmig_fail(s, rc, "sending round acknowledgement: %s", vfmig_link_stream_error(t->link, 0));
    }
    while (t->completed < r->round + 1 && !vfmig_should_stop(s)) {
        vfmig_cond_wait_slice(&t->cond, &t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    r->round++;
    r->frames = 0;
    return vfmig_should_stop(s) ? s->status : VFMIG_OK;
}

static void *receiver_main(void *arg)
{
    receiver *r = arg;
    target *t = r->t;
    vfmig_session *s = t->s;
    const uint64_t idle_ns = (uint64_t)s->params[VFMIG_P_TIMEOUT_MS] * 1000000ull;
    char name[16];
    snprintf(name, sizeof(name), "vfmig-rx%u", r->stream);
    pthread_setname_np(pthread_self(), name);
    vfmig_pinner_bind(t->pinner, r->stream - 1);
    r->last_frame_ns = vfmig_now_ns();
    uint8_t *buf = r->payload; /* with a pool: a pool buffer, taken before each receive */
    while (!atomic_load(&t->quit) && !vfmig_should_stop(s)) {
        if (!buf && !(buf = pool_take(t)))
            break;
        vfmig_frame f;
        int rc = vfmig_link_recv(t->link, r->stream, &f, buf, r->cap, VFMIG_WAIT_SLICE_MS);
        if (rc == VFMIG_ETIMEDOUT) {
            if (!atomic_load(&t->committed) && vfmig_now_ns() - r->last_frame_ns > idle_ns)
                vfmig_fail(s, VFMIG_ETIMEDOUT, "stream %u: no data from the source for %" PRId64 " ms",
                           r->stream, s->params[VFMIG_P_TIMEOUT_MS]);
            continue;
        }
        if (rc) {
            /* Once the final round is in, a stream closing is the source finishing, not a fault:
             * whether the migration stands is decided on the control stream. */
            bool done = r->round > atomic_load(&t->final_round);
            if (rc != VFMIG_ECANCELED && !atomic_load(&t->quit) && !done)
                vfmig_fail(s, rc, "stream %u: %s (%s)", r->stream, vfmig_strerror(rc),
                           vfmig_link_stream_error(t->link, r->stream));
            break;
        }
        r->last_frame_ns = vfmig_now_ns();
        if (f.type == VFMIG_F_PAGES) {
            rc = check_pages(r, &f);
            if (!rc && !t->ndecoders) {
                rc = decode_apply(t, &r->ap, r->stream, &f, buf);
            } else if (!rc) {
                pool_push(t, r, &f, buf);
                buf = NULL;
            }
        } else if (f.type == VFMIG_F_ROUND_END)
            rc = on_round_end(r, &f);
        else
            rc = vfmig_fail(s, VFMIG_EPROTO, "stream %u: unexpected frame type %u on a data stream",
                            r->stream, f.type);
        if (rc)
            break;
    }
    if (t->ndecoders && buf)
        pool_give(t, buf);
    wake_all(t);
    return NULL;
}

/* The control stream is quiet for the whole pre-copy; while waiting for COMMIT (`patient`) the
 * data streams' receivers watch the source's liveness instead. */
static int recv_control(target *t, vfmig_frame *f, const char *awaiting, bool patient)
{
    return vfmig_recv_control(t->s, t->link, f, t->ctl, t->ctl_cap, awaiting, "source", patient);
}

/* Collects a chunked state blob (IMMUTABLE or MUTABLE): chunk must continue at *got. */
static int blob_chunk(target *t, const vfmig_frame *f, uint8_t **blob, uint64_t *size, uint64_t *got,
                      uint64_t expect_size, const char *what)
{
    vfmig_session *s = t->s;
    if (!*blob) {
        if (f->aux > VFMIG_MAX_STATE_BYTES || (expect_size != UINT64_MAX && f->aux != expect_size))
            return vfmig_fail(s, VFMIG_EPROTO, "%s state of %" PRIu64 " bytes refused", what, f->aux);
        *blob = malloc(f->aux ? f->aux : 1);
        if (!*blob)
            return vfmig_fail(s, VFMIG_ENOMEM, "out of memory for %s state", what);
        *size = f->aux;
        *got = 0;
    }
    if (f->aux != *size || f->page != *got || f->len > *size - *got)
        return vfmig_fail(s, VFMIG_EPROTO, "%s state chunk at %" PRIu64 " (+%u of %" PRIu64 ") out of order",
                          what, f->page, f->len, f->aux);
    memcpy(*blob + *got, t->ctl, f->len);
    *got += f->len;
    return VFMIG_OK;
}

static int refuse(target *t, int type, int status, const char *msg)
{
    vfmig_send_status(t->link, 0, type, status, msg);
    return vfmig_fail(t->s, status, "%s", msg);
}

/* The session's keys as a ring: the key, and a second one accepted during a rotation. */
static void session_keyring(const vfmig_session *s, vfmig_keyring *k)
{
    memset(k, 0, sizeof(*k));
    if (s->psk_len) {
        memcpy(k->key[k->n], s->psk, s->psk_len);
        k->len[k->n++] = s->psk_len;
    }
    if (s->psk2_len) {
        memcpy(k->key[k->n], s->psk2, s->psk2_len);
        k->len[k->n++] = s->psk2_len;
    }
}

/* HELLO, options and authentication (engine/auth.h); nothing of this VF is told or taken before
 * the source proved the key. A server (engine/server.c) has done this part already. */
static int hello_and_auth(target *t, bool *authed)
{
    vfmig_session *s = t->s;
    vfmig_frame f;
    char err[300];
    int rc = recv_control(t, &f, "HELLO", false);
    if (rc)
        return rc;
    if (f.type != VFMIG_F_HELLO)
        return refuse(t, VFMIG_F_HELLO_ACK, VFMIG_EPROTO, "handshake: expected HELLO");
    if ((rc = vfmig_hello_decode_first(t->ctl, f.len, &t->hello, err, sizeof(err))))
        return refuse(t, VFMIG_F_HELLO_ACK, rc, err);
    bool auth = t->hello.flags & VFMIG_HELLO_FLAG_AUTH;
    if (s->psk_len && !auth)
        return refuse(t, VFMIG_F_HELLO_ACK, VFMIG_EAUTH,
                      "this target requires authentication and the source offered none (no key?)");
    if (!s->psk_len && auth)
        return refuse(t, VFMIG_F_HELLO_ACK, VFMIG_EAUTH,
                      "the source asks for authentication but this target has no key");
    if (s->params[VFMIG_P_ENCRYPT] && !(t->hello.flags & VFMIG_HELLO_FLAG_ENCRYPT))
        return refuse(t, VFMIG_F_HELLO_ACK, VFMIG_EAUTH,
                      "this target requires an encrypted link and the source did not ask for one");
    size_t bound = vfmig_codec_bound(t->hello.batch_bytes);
    if (bound < t->ctl_cap)
        bound = t->ctl_cap;
    *authed = auth;
    if (!auth) {
        vfmig_link_set_max_payload(t->link, bound);
        return VFMIG_OK;
    }
    vfmig_keyring ring;
    session_keyring(s, &ring);
    rc = vfmig_auth_target(t->link, &ring, t->ctl, f.len, t->hello.nonce, t->hello.key_id,
                           (t->hello.flags & VFMIG_HELLO_FLAG_ENCRYPT) != 0, (int)s->params[VFMIG_P_TIMEOUT_MS],
                           bound, err, sizeof(err));
    explicit_bzero(&ring, sizeof(ring));
    if (rc)
        return vfmig_fail(s, rc, "%s", err);
    /* The VF's layout, keyed, now that the source proved the key. */
    vfmig_hello first = t->hello;
    if ((rc = recv_control(t, &f, "the VF's layout", false)))
        return rc;
    if (f.type != VFMIG_F_LAYOUT)
        return refuse(t, VFMIG_F_ABORT, VFMIG_EPROTO, "handshake: expected the VF's layout after authentication");
    if ((rc = vfmig_hello_decode_layout(t->ctl, f.len, &first, &t->hello, err, sizeof(err))))
        return refuse(t, VFMIG_F_ABORT, rc, err);
    return VFMIG_OK;
}

static int handshake(target *t)
{
    vfmig_session *s = t->s;
    vfmig_frame f;
    char err[300];
    int rc;
    bool authed = false;
    if (s->preauth_hello) {
        t->hello = *(const vfmig_hello *)s->preauth_hello;
        authed = true; /* the server answered the HELLO; refusals from here are ABORTs */
    } else if ((rc = hello_and_auth(t, &authed))) {
        return rc;
    }
    /* Only now the layout: an unauthenticated peer learns nothing of this VF from a refusal. */
    int ack_type = authed ? VFMIG_F_ABORT : VFMIG_F_HELLO_ACK;
    if ((rc = vfmig_hello_match_layout(&t->hello, s->page_size, s->dev.nranges, s->ranges, err, sizeof(err))))
        return refuse(t, ack_type, rc, err);
    if (t->hello.nstreams != t->nstreams) {
        snprintf(err, sizeof(err), "handshake: source uses %u data streams, link has %u", t->hello.nstreams, t->nstreams);
        return refuse(t, ack_type, VFMIG_EPROTO, err);
    }
    if (!authed && (rc = vfmig_send_status(t->link, 0, VFMIG_F_HELLO_ACK, VFMIG_OK, "")))
        return vfmig_fail(s, rc, "sending handshake reply: %s", vfmig_link_stream_error(t->link, 0));

    uint8_t *imm = NULL;
    uint64_t size = 0, got = 0;
    do {
        if ((rc = recv_control(t, &f, "immutable state", false)))
            break;
        if (f.type != VFMIG_F_IMMUTABLE) {
            rc = refuse(t, VFMIG_F_IMM_ACK, VFMIG_EPROTO, "expected the immutable state");
            break;
        }
        rc = blob_chunk(t, &f, &imm, &size, &got, t->hello.immutable_bytes, "immutable");
    } while (!rc && got < size);
    if (!rc) {
        rc = t->ops->restore_immutable(t->dev, imm, size);
        if (rc) {
            snprintf(err, sizeof(err), "restore_immutable refused the VF's state: %s", vfmig_strerror(rc));
            rc = refuse(t, VFMIG_F_IMM_ACK, rc < 0 ? rc : VFMIG_EDEVICE, err);
        }
    }
    free(imm);
    if (rc)
        return rc;
    pthread_mutex_lock(&s->lock);
    s->stats.immutable_bytes = size;
    pthread_mutex_unlock(&s->lock);
    if ((rc = vfmig_send_status(t->link, 0, VFMIG_F_IMM_ACK, VFMIG_OK, "")))
        return vfmig_fail(s, rc, "sending immutable state verdict: %s", vfmig_link_stream_error(t->link, 0));
    return VFMIG_OK;
}

static int applier_init(applier *a, size_t batch)
{
    a->dec = malloc(batch);
    a->chk = malloc(batch);
    return a->dec && a->chk && !vfmig_codec_ctx_create(batch, &a->codec) ? VFMIG_OK : VFMIG_ENOMEM;
}

static void applier_free(applier *a)
{
    free(a->dec);
    free(a->chk);
    vfmig_codec_ctx_destroy(a->codec);
    a->dec = a->chk = NULL;
    a->codec = NULL;
}

static void add_stats(vfmig_round_stats *tot, const vfmig_round_stats *a)
{
    tot->dirty_pages += a->dirty_pages;
    tot->zero_pages += a->zero_pages;
    tot->bytes_raw += a->bytes_raw;
    tot->bytes_wire += a->bytes_wire;
    for (int c = 0; c < VFMIG_CODEC_COUNT; c++) {
        tot->codec_in[c] += a->codec_in[c];
        tot->codec_out[c] += a->codec_out[c];
    }
}

/* One receiver per data stream; a decode pool too when the session asks for more threads than
 * there are streams (the source's endpoint chose the streams). */
static int start_receivers(target *t)
{
    vfmig_session *s = t->s;
    size_t cap = vfmig_codec_bound(t->batch_bytes);
    unsigned threads = vfmig_session_threads(s);
    if (threads > t->nstreams) {
        t->ndecoders = threads;
        t->nbufs = 2 * (size_t)threads + t->nstreams; /* every decoder busy, one queued each, one per receiver */
        t->dec = calloc(threads, sizeof(decoder));
        t->jobs = calloc(t->nbufs, sizeof(pool_job));
        t->freebufs = calloc(t->nbufs, sizeof(uint8_t *));
        if (!t->dec || !t->jobs || !t->freebufs)
            return vfmig_fail(s, VFMIG_ENOMEM, "out of memory for the decode pool");
        for (size_t i = 0; i < t->nbufs; i++)
            if (!(t->freebufs[t->nfree++] = malloc(cap)))
                return vfmig_fail(s, VFMIG_ENOMEM, "out of memory for receive buffers");
        for (unsigned i = 0; i < threads; i++) {
            decoder *d = &t->dec[i];
            d->t = t;
            if (applier_init(&d->ap, t->batch_bytes))
                return vfmig_fail(s, VFMIG_ENOMEM, "out of memory for decode buffers");
            if (pthread_create(&d->thread, NULL, decoder_main, d))
                return vfmig_fail(s, VFMIG_ENOMEM, "cannot start decoder thread");
            d->started = true;
        }
    }
    pthread_mutex_lock(&s->lock);
    s->stats.threads = t->ndecoders ? t->ndecoders : t->nstreams;
    pthread_mutex_unlock(&s->lock);
    for (unsigned i = 0; i < t->nstreams; i++) {
        receiver *r = &t->rx[i];
        r->t = t;
        r->stream = i + 1;
        r->cap = cap;
        if (!t->ndecoders && (!(r->payload = malloc(cap)) || applier_init(&r->ap, t->batch_bytes)))
            return vfmig_fail(s, VFMIG_ENOMEM, "out of memory for receive buffers");
        if (pthread_create(&r->thread, NULL, receiver_main, r))
            return vfmig_fail(s, VFMIG_ENOMEM, "cannot start receiver thread");
        r->started = true;
    }
    return VFMIG_OK;
}

/* Joins every receiver and decoder, adds up what they applied, frees their buffers. */
static void stop_receivers(target *t, vfmig_round_stats *tot)
{
    atomic_store(&t->quit, true);
    for (unsigned i = 0; i < t->nstreams; i++) {
        receiver *r = &t->rx[i];
        if (r->started)
            pthread_join(r->thread, NULL);
        r->started = false;
        add_stats(tot, &r->ap.acc);
        free(r->payload);
        r->payload = NULL;
        applier_free(&r->ap);
    }
    if (t->ndecoders) {
        pthread_mutex_lock(&t->plock);
        t->pquit = true; /* decoders finish what is queued, then leave */
        pthread_cond_broadcast(&t->pjob);
        pthread_mutex_unlock(&t->plock);
        for (unsigned i = 0; i < t->ndecoders; i++) {
            decoder *d = &t->dec[i];
            if (d->started)
                pthread_join(d->thread, NULL);
            add_stats(tot, &d->ap.acc);
            applier_free(&d->ap);
        }
        for (size_t i = 0; i < t->nfree; i++)
            free(t->freebufs[i]);
        free(t->freebufs);
        free(t->jobs);
        free(t->dec);
        t->ndecoders = 0;
    }
}

/* COMMIT: wait for the final round on every stream, verify, restore the mutable state. */
static int commit(target *t, const vfmig_frame *f, uint64_t *verify_ns, uint64_t *restore_ns)
{
    vfmig_session *s = t->s;
    uint64_t t0 = vfmig_now_ns();
    uint64_t deadline = t0 + (uint64_t)s->params[VFMIG_P_TIMEOUT_MS] * 1000000ull;
    atomic_store(&t->final_round, f->round);
    atomic_store(&t->committed, true);
    pthread_mutex_lock(&t->lock);
    while (t->completed < f->round + 1 && !vfmig_should_stop(s) && vfmig_now_ns() < deadline) {
        vfmig_cond_wait_slice(&t->cond, &t->lock);
    }
    uint32_t completed = t->completed;
    pthread_mutex_unlock(&t->lock);
    if (vfmig_should_stop(s))
        return s->status;
    if (completed != f->round + 1)
        return vfmig_fail(s, completed < f->round + 1 ? VFMIG_ETIMEDOUT : VFMIG_EPROTO,
                          "COMMIT for round %u, but %u rounds arrived complete", f->round, completed);
    uint64_t seen = atomic_load(&t->pages_seen);
    if (seen != s->npages)
        return vfmig_fail(s, VFMIG_EPROTO, "incomplete image: %" PRIu64 " of %" PRIu64 " pages arrived", seen, s->npages);
    if (!t->mut || t->mut_got != t->mut_size)
        return vfmig_fail(s, VFMIG_EPROTO, "COMMIT before the whole mutable state arrived");
    uint64_t digest[2];
    vfmig_image_digest(s, digest);
    if (digest[0] != f->page || digest[1] != f->aux)
        return vfmig_fail(s, VFMIG_EDIGEST, "image digest %016" PRIx64 "%016" PRIx64 " differs from the source's %016" PRIx64 "%016" PRIx64,
                          digest[1], digest[0], f->aux, f->page);
    int rc;
    uint64_t t1 = vfmig_now_ns();
    *verify_ns = t1 - t0;
    if ((rc = t->ops->restore_mutable(t->dev, t->mut, t->mut_size)))
        return dev_fail(s, rc, "restore_mutable");
    *restore_ns = vfmig_now_ns() - t1;
    return VFMIG_OK;
}

static int send_verdict_locked(target *t, int status, uint64_t verify_ns, uint64_t restore_ns, const char *msg)
{
    uint8_t buf[16 + 512];
    size_t n = strnlen(msg, 512);
    vfmig_put_u64(buf, verify_ns);
    vfmig_put_u64(buf + 8, restore_ns);
    memcpy(buf + 16, msg, n);
    vfmig_frame f = {.type = VFMIG_F_VERDICT, .len = (uint32_t)(16 + n), .aux = (uint64_t)(int64_t)status};
    int rc = vfmig_link_send(t->link, 0, &f, buf);
    return rc ? rc : vfmig_link_flush(t->link, 0);
}

static int send_verdict(target *t, int status, uint64_t verify_ns, uint64_t restore_ns, const char *msg)
{
    pthread_mutex_lock(&t->ctl_tx);
    int rc = send_verdict_locked(t, status, verify_ns, restore_ns, msg);
    pthread_mutex_unlock(&t->ctl_tx);
    return rc;
}

static int serve(target *t)
{
    vfmig_session *s = t->s;
    vfmig_frame f;
    int rc;
    for (;;) {
        if ((rc = recv_control(t, &f, "COMMIT", true)))
            return rc;
        if (f.type == VFMIG_F_MUTABLE) {
            if (!t->mut)
                vfmig_set_phase(s, VFMIG_PHASE_BLACKOUT);
            if ((rc = blob_chunk(t, &f, &t->mut, &t->mut_size, &t->mut_got, UINT64_MAX, "mutable")))
                return rc;
            continue;
        }
        if (f.type != VFMIG_F_COMMIT)
            return vfmig_fail(s, VFMIG_EPROTO, "unexpected frame type %u on the control stream", f.type);
        uint64_t verify_ns = 0, restore_ns = 0;
        rc = commit(t, &f, &verify_ns, &restore_ns);
        if (rc) {
            send_verdict(t, rc, 0, 0, s->err);
            return rc;
        }
        pthread_mutex_lock(&s->lock);
        s->stats.blackout_verify_ns = verify_ns;
        s->stats.blackout_restore_ns = restore_ns;
        s->stats.mutable_bytes = t->mut_size;
        s->stats.rounds = f.round; /* pre-copy rounds; the final one is the blackout pass */
        pthread_mutex_unlock(&s->lock);
        if ((rc = send_verdict(t, VFMIG_OK, verify_ns, restore_ns, "")))
            return vfmig_fail(s, rc, "sending the verdict: %s", vfmig_link_stream_error(t->link, 0));
        if ((rc = recv_control(t, &f, "GO", false)))
            return rc;
        if (f.type != VFMIG_F_GO)
            return vfmig_fail(s, VFMIG_EPROTO, "expected GO, got frame type %u", f.type);
        /* A receiver may have refused a frame since the verdict: then the image is not the one
         * verified, and the VF must not run here. */
        if (vfmig_should_stop(s))
            return s->status;
        if ((rc = t->ops->resume(t->dev)))
            return dev_fail(s, rc, "resume");
        t->resumed = true;
        vfmig_frame ack = {.type = VFMIG_F_GO_ACK};
        pthread_mutex_lock(&t->ctl_tx);
        rc = vfmig_link_send(t->link, 0, &ack, NULL);
        if (!rc)
            rc = vfmig_link_flush(t->link, 0);
        pthread_mutex_unlock(&t->ctl_tx);
        /* The VF runs here now whatever becomes of the link: a lost GO_ACK leaves the source in
         * doubt, paused, which is safe. */
        return VFMIG_OK;
    }
}

int vfmig_target_run(vfmig_session *s, vfmig_link *link)
{
    target *t = calloc(1, sizeof(*t));
    if (!t)
        return vfmig_fail(s, VFMIG_ENOMEM, "out of memory");
    t->s = s;
    t->link = link;
    t->ops = s->dev.ops;
    t->dev = s->dev.dev;
    t->nstreams = (unsigned)vfmig_link_streams(link);
    t->zero_hash = vfmig_zero_page_hash(s->page_size);
    t->readback = s->params[VFMIG_P_VERIFY_READBACK] != 0;
    atomic_store(&t->final_round, UINT32_MAX);
    t->ctl_cap = (1u << 20) + 4096;
    t->ctl = malloc(t->ctl_cap);
    t->page_round = calloc(s->npages, sizeof(uint32_t));
    pthread_mutex_init(&t->lock, NULL);
    pthread_mutex_init(&t->ctl_tx, NULL);
    pthread_cond_init(&t->cond, NULL);
    pthread_mutex_init(&t->plock, NULL);
    pthread_cond_init(&t->pjob, NULL);
    pthread_cond_init(&t->pdone, NULL);
    int rc = VFMIG_OK;
    if (!t->ctl || !t->page_round) {
        rc = vfmig_fail(s, VFMIG_ENOMEM, "out of memory for %" PRIu64 " page records", s->npages);
        goto out;
    }
    char perr[128], nic[64] = "";
    vfmig_link_local_ifname(link, nic, sizeof(nic));
    if ((rc = vfmig_pinner_create(s->pinning, (int)s->params[VFMIG_P_NUMA_NODE], nic, &t->pinner, perr,
                                  sizeof(perr)))) {
        rc = vfmig_fail(s, rc, "pinning: %s", perr);
        goto out;
    }
    vfmig_set_phase(s, VFMIG_PHASE_HANDSHAKE);
    if ((rc = t->ops->prepare(t->dev, VFMIG_ROLE_TARGET))) {
        rc = dev_fail(s, rc, "prepare");
        goto out;
    }
    t->prepared = true;
    if ((rc = handshake(t)))
        goto out;
    t->batch_bytes = t->hello.batch_bytes;
    t->zeros = calloc(1, t->batch_bytes);
    if (!t->zeros) {
        rc = vfmig_fail(s, VFMIG_ENOMEM, "out of memory");
        goto out;
    }
    pthread_mutex_lock(&s->lock);
    s->stats.streams = t->nstreams;
    pthread_mutex_unlock(&s->lock);
    vfmig_set_phase(s, VFMIG_PHASE_PRECOPY);
    if ((rc = start_receivers(t)))
        goto out;
    rc = serve(t);

out:
    if (!t->resumed && (rc || vfmig_should_stop(s))) {
        vfmig_find_peer_abort(s, link, t->ctl, t->ctl_cap, "source");
        rc = s->failed ? s->status : rc;
        /* Tell the source, unless it is the one that aborted. */
        if (rc != VFMIG_EABORTED) {
            pthread_mutex_lock(&t->ctl_tx);
            vfmig_send_status(link, 0, VFMIG_F_ABORT, rc, s->err);
            pthread_mutex_unlock(&t->ctl_tx);
        }
    }
    vfmig_link_interrupt(link);
    vfmig_round_stats tot = {0};
    stop_receivers(t, &tot);
    pthread_mutex_lock(&s->lock);
    vfmig_stats *st = &s->stats;
    if (!st->rounds && t->completed)
        st->rounds = t->completed; /* rounds that arrived complete */
    st->bytes_raw = tot.bytes_raw;
    st->bytes_wire = tot.bytes_wire;
    st->pages_sent = tot.dirty_pages;
    st->zero_pages = tot.zero_pages;
    uint64_t in = 0, outb = 0;
    for (int c = 0; c < VFMIG_CODEC_COUNT; c++) {
        st->codec_in[c] = tot.codec_in[c];
        st->codec_out[c] = tot.codec_out[c];
        in += tot.codec_in[c];
        outb += tot.codec_out[c];
    }
    st->ratio = outb ? (double)in / (double)outb : 1.0;
    pthread_mutex_unlock(&s->lock);

    if (t->resumed) {
        /* Verified, restored, confirmed by the source and resumed: the VF runs here now. */
        rc = VFMIG_OK;
        pthread_mutex_lock(&s->lock);
        st->vf_state = VFMIG_VF_RESUMED_ON_TARGET;
        st->verified = 1;
        st->status = VFMIG_OK;
        pthread_mutex_unlock(&s->lock);
    }
    if (t->prepared)
        t->ops->end(t->dev);
    vfmig_pinner_destroy(t->pinner);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->ctl_tx);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->pjob);
    pthread_cond_destroy(&t->pdone);
    pthread_mutex_destroy(&t->plock);
    free(t->ctl);
    free(t->page_round);
    free(t->zeros);
    free(t->mut);
    free(t);
    return rc;
}
