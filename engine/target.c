/*
 * engine/target.c - the target side of one migration: the protocol on the control stream.
 * The pages themselves arrive through the receive pipeline (engine/receive.h).
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

#include "compress/codec.h"
#include "engine/auth.h"
#include "engine/image.h"
#include "engine/proto.h"
#include "engine/receive.h"
#include "engine/session.h"

typedef struct target {
    vfmig_session *s;
    vfmig_link *link;
    const vfmig_device_ops *ops;
    void *dev;
    vfmig_hello hello;
    unsigned nstreams;
    vfmig_receive *rx;
    pthread_mutex_t ctl_tx; /* the control stream is written by this thread and the receivers */
    uint8_t *ctl;          /* control payload buffer */
    size_t ctl_cap;
    uint8_t *mut;
    uint64_t mut_size, mut_got;
    uint64_t t_blackout;   /* first frame of the blackout (mutable state) */
    bool prepared;
    bool resumed;
    uint32_t called_off;   /* switch-overs the source called off */
    vfmig_pinner *pinner;
} target;

/* The control stream is quiet for the whole pre-copy; while waiting for COMMIT (`patient`) the
 * data streams' receivers watch the source's liveness instead. */
static int recv_control(target *t, vfmig_frame *f, const char *awaiting, bool patient)
{
    return vfmig__recv_control(t->s, t->link, f, t->ctl, t->ctl_cap, awaiting, "source", patient);
}

/* Collects a chunked state blob (IMMUTABLE or MUTABLE): chunk must continue at *got. */
static int blob_chunk(target *t, const vfmig_frame *f, uint8_t **blob, uint64_t *size, uint64_t *got,
                      uint64_t expect_size, const char *what)
{
    vfmig_session *s = t->s;
    if (!*blob) {
        if (f->aux > VFMIG_MAX_STATE_BYTES || (expect_size != UINT64_MAX && f->aux != expect_size))
            return vfmig__fail(s, VFMIG_EPROTO, "%s state of %" PRIu64 " bytes refused", what, f->aux);
        *blob = malloc(f->aux ? f->aux : 1);
        if (!*blob)
            return vfmig__fail(s, VFMIG_ENOMEM, "out of memory for %s state", what);
        *size = f->aux;
        *got = 0;
    }
    if (f->aux != *size || f->page != *got || f->len > *size - *got)
        return vfmig__fail(s, VFMIG_EPROTO, "%s state chunk at %" PRIu64 " (+%u of %" PRIu64 ") out of order",
                          what, f->page, f->len, f->aux);
    memcpy(*blob + *got, t->ctl, f->len);
    *got += f->len;
    return VFMIG_OK;
}

static int refuse(target *t, int type, int status, const char *msg)
{
    vfmig__send_status(t->link, 0, type, status, msg);
    return vfmig__fail(t->s, status, "%s", msg);
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
    if ((rc = vfmig__hello_decode_first(t->ctl, f.len, &t->hello, err, sizeof(err))))
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
    size_t bound = vfmig__codec_bound(t->hello.batch_bytes);
    if (bound < t->ctl_cap)
        bound = t->ctl_cap;
    *authed = auth;
    if (!auth) {
        vfmig__link_set_max_payload(t->link, bound);
        return VFMIG_OK;
    }
    vfmig_keyring ring;
    session_keyring(s, &ring);
    rc = vfmig__auth_target(t->link, &ring, t->ctl, f.len, t->hello.nonce, t->hello.key_id,
                           (t->hello.flags & VFMIG_HELLO_FLAG_ENCRYPT) != 0, (int)s->params[VFMIG_P_TIMEOUT_MS],
                           bound, err, sizeof(err));
    explicit_bzero(&ring, sizeof(ring));
    if (rc)
        return vfmig__fail(s, rc, "%s", err);
    /* The VF's layout, keyed, now that the source proved the key. */
    vfmig_hello first = t->hello;
    if ((rc = recv_control(t, &f, "the VF's layout", false)))
        return rc;
    if (f.type != VFMIG_F_LAYOUT)
        return refuse(t, VFMIG_F_ABORT, VFMIG_EPROTO, "handshake: expected the VF's layout after authentication");
    if ((rc = vfmig__hello_decode_layout(t->ctl, f.len, &first, &t->hello, err, sizeof(err))))
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
    if ((rc = vfmig__hello_match_layout(&t->hello, s->page_size, s->dev.nranges, s->ranges, err, sizeof(err))))
        return refuse(t, ack_type, rc, err);
    if (t->hello.nstreams != t->nstreams) {
        snprintf(err, sizeof(err), "handshake: source uses %u data streams, link has %u", t->hello.nstreams, t->nstreams);
        return refuse(t, ack_type, VFMIG_EPROTO, err);
    }
    if (!authed && (rc = vfmig__send_status(t->link, 0, VFMIG_F_HELLO_ACK, VFMIG_OK, "")))
        return vfmig__fail(s, rc, "sending handshake reply: %s", vfmig__link_stream_error(t->link, 0));

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
            char why[160] = "";
            if (t->ops->describe)
                t->ops->describe(t->dev, why, sizeof(why));
            why[sizeof(why) - 1] = 0;
            snprintf(err, sizeof(err), "restore_immutable refused the VF's state: %s%s%s", vfmig_strerror(rc),
                     why[0] ? ": " : "", why);
            rc = refuse(t, VFMIG_F_IMM_ACK, rc < 0 ? rc : VFMIG_EDEVICE, err);
        }
    }
    free(imm);
    if (rc)
        return rc;
    pthread_mutex_lock(&s->lock);
    s->stats.immutable_bytes = size;
    pthread_mutex_unlock(&s->lock);
    if ((rc = vfmig__send_status(t->link, 0, VFMIG_F_IMM_ACK, VFMIG_OK, "")))
        return vfmig__fail(s, rc, "sending immutable state verdict: %s", vfmig__link_stream_error(t->link, 0));
    return VFMIG_OK;
}


/* Digest of what the device holds, for VFMIG_VERIFY_FULL. */
static int device_digest(vfmig_session *s, vfmig_digest *d)
{
    void *scratch = malloc((size_t)s->page_size);
    if (!scratch)
        return vfmig__fail(s, VFMIG_ENOMEM, "out of memory for verification");
    int rc = vfmig__image_device_digest(&s->dev, s->range_base, s->page_shift, scratch, d);
    free(scratch);
    return rc ? vfmig__dev_fail(s, rc, "read (full verification)") : VFMIG_OK;
}

/*
 * COMMIT: wait for the final round on every stream, verify, restore the mutable state. The
 * digest in the header is the source's image as sent; a 16-byte payload, when present, is the
 * digest of the source's whole VRAM re-read after the pause (VFMIG_VERIFY_FULL on either end).
 */
static int commit(target *t, const vfmig_frame *f, uint64_t *verify_ns, uint64_t *full_ns, uint64_t *restore_ns)
{
    vfmig_session *s = t->s;
    uint64_t t0 = vfmig__now_ns();
    uint64_t deadline = vfmig__deadline((int)s->params[VFMIG_P_TIMEOUT_MS]);
    bool full = f->len == 16;
    if (f->len != 0 && !full)
        return vfmig__fail(s, VFMIG_EPROTO, "COMMIT with a %u-byte payload", f->len);
    if (!full && s->params[VFMIG_P_VERIFY] == VFMIG_VERIFY_FULL)
        return vfmig__fail(s, VFMIG_EPROTO, "this target verifies the whole VRAM and the source sent no digest of it "
                                           "(set full verification on the source too)");
    vfmig__receive_commit(t->rx, f->round);
    uint32_t completed = vfmig__receive_wait(t->rx, f->round + 1, deadline);
    if (vfmig__should_stop(s))
        return s->status;
    if (completed != f->round + 1)
        return vfmig__fail(s, completed < f->round + 1 ? VFMIG_ETIMEDOUT : VFMIG_EPROTO,
                          "COMMIT for round %u, but %u rounds arrived complete", f->round, completed);
    uint64_t seen = vfmig__receive_pages_seen(t->rx);
    if (seen != s->npages)
        return vfmig__fail(s, VFMIG_EPROTO, "incomplete image: %" PRIu64 " of %" PRIu64 " pages arrived", seen, s->npages);
    if (!t->mut || t->mut_got != t->mut_size)
        return vfmig__fail(s, VFMIG_EPROTO, "COMMIT before the whole mutable state arrived");
    vfmig_digest d;
    vfmig__receive_digest(t->rx, &d);
    if (d.lo != f->page || d.hi != f->aux)
        return vfmig__fail(s, VFMIG_EDIGEST, "image digest %016" PRIx64 "%016" PRIx64 " differs from the source's %016" PRIx64 "%016" PRIx64,
                          d.hi, d.lo, f->aux, f->page);
    uint64_t t1 = vfmig__now_ns();
    if (full) {
        vfmig_digest dev;
        int rc = device_digest(s, &dev);
        if (rc)
            return rc;
        uint64_t lo = vfmig_get_u64(t->ctl), hi = vfmig_get_u64(t->ctl + 8);
        if (dev.lo != lo || dev.hi != hi)
            return vfmig__fail(s, VFMIG_EDIGEST, "VRAM re-read after the last page differs from the source's VRAM "
                                                "(digest %016" PRIx64 "%016" PRIx64 " against %016" PRIx64 "%016" PRIx64 ")",
                              dev.hi, dev.lo, hi, lo);
    }
    uint64_t t2 = vfmig__now_ns();
    *full_ns = full ? t2 - t1 : 0;
    *verify_ns = t2 - t0;
    int rc;
    if ((rc = t->ops->restore_mutable(t->dev, t->mut, t->mut_size)))
        return vfmig__dev_fail(s, rc, "restore_mutable");
    *restore_ns = vfmig__now_ns() - t2;
    return VFMIG_OK;
}

/* VERDICT: status in aux; payload u64 verify_ns, u64 restore_ns, u64 full_verify_ns, message. */
static int send_verdict(target *t, int status, uint64_t verify_ns, uint64_t restore_ns, uint64_t full_ns,
                        const char *msg)
{
    uint8_t buf[VFMIG_VERDICT_HDR + 512];
    size_t n = strnlen(msg, 512);
    vfmig_put_u64(buf, verify_ns);
    vfmig_put_u64(buf + 8, restore_ns);
    vfmig_put_u64(buf + 16, full_ns);
    memcpy(buf + VFMIG_VERDICT_HDR, msg, n);
    vfmig_frame f = {.type = VFMIG_F_VERDICT, .len = (uint32_t)(VFMIG_VERDICT_HDR + n), .aux = (uint64_t)(int64_t)status};
    pthread_mutex_lock(&t->ctl_tx);
    int rc = vfmig__link_send(t->link, 0, &f, buf);
    if (!rc)
        rc = vfmig__link_flush(t->link, 0);
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
            if (!t->mut) {
                t->t_blackout = vfmig__now_ns();
                vfmig__set_phase(s, VFMIG_PHASE_BLACKOUT);
                char why[200];
                /* Bounded by blob_chunk; a server's budget must still have room for it. */
                if (s->reserve && f.aux <= VFMIG_MAX_STATE_BYTES &&
                    (rc = s->reserve(s->reserve_user, f.aux, why, sizeof(why))))
                    return vfmig__fail(s, rc, "%s", why);
            }
            if ((rc = blob_chunk(t, &f, &t->mut, &t->mut_size, &t->mut_got, UINT64_MAX, "mutable")))
                return rc;
            continue;
        }
        if (f.type == VFMIG_F_CALLED_OFF) {
            /* The source took its VF back to pre-copy: what it sent of the mutable state is
             * void, and the rounds go on (the round it called off arrives as a pre-copy round). */
            if (f.len || f.flags)
                return vfmig__fail(s, VFMIG_EPROTO, "switch-over called off with a %u-byte payload", f.len);
            free(t->mut);
            t->mut = NULL;
            t->mut_size = t->mut_got = 0;
            t->t_blackout = 0;
            t->called_off++;
            vfmig__set_phase(s, VFMIG_PHASE_PRECOPY);
            vfmig__log(s, 2, "the source called off the switch-over after round %u: pre-copy goes on", f.round);
            continue;
        }
        if (f.type != VFMIG_F_COMMIT)
            return vfmig__fail(s, VFMIG_EPROTO, "unexpected frame type %u on the control stream", f.type);
        uint64_t verify_ns = 0, full_ns = 0, restore_ns = 0;
        rc = commit(t, &f, &verify_ns, &full_ns, &restore_ns);
        if (rc) {
            send_verdict(t, rc, 0, 0, 0, s->err);
            return rc;
        }
        pthread_mutex_lock(&s->lock);
        s->stats.blackout_verify_ns = verify_ns;
        s->stats.blackout_full_verify_ns = full_ns;
        s->stats.blackout_restore_ns = restore_ns;
        s->stats.mutable_bytes = t->mut_size;
        s->stats.rounds = f.round; /* pre-copy rounds; the final one is the blackout pass */
        s->stats.switchovers_called_off = t->called_off;
        pthread_mutex_unlock(&s->lock);
        if ((rc = send_verdict(t, VFMIG_OK, verify_ns, restore_ns, full_ns, "")))
            return vfmig__fail(s, rc, "sending the verdict: %s", vfmig__link_stream_error(t->link, 0));
        if ((rc = recv_control(t, &f, "GO", false)))
            return rc;
        if (f.type != VFMIG_F_GO)
            return vfmig__fail(s, VFMIG_EPROTO, "expected GO, got frame type %u", f.type);
        /* A receiver may have refused a frame since the verdict: then the image is not the one
         * verified, and the VF must not run here. */
        if (vfmig__should_stop(s))
            return s->status;
        if ((rc = t->ops->resume(t->dev)))
            return vfmig__dev_fail(s, rc, "resume");
        t->resumed = true;
        pthread_mutex_lock(&s->lock);
        s->stats.blackout_ns = vfmig__now_ns() - (t->t_blackout ? t->t_blackout : vfmig__now_ns());
        pthread_mutex_unlock(&s->lock);
        vfmig_frame ack = {.type = VFMIG_F_GO_ACK};
        pthread_mutex_lock(&t->ctl_tx);
        rc = vfmig__link_send(t->link, 0, &ack, NULL);
        if (!rc)
            rc = vfmig__link_flush(t->link, 0);
        pthread_mutex_unlock(&t->ctl_tx);
        /* The VF runs here now whatever becomes of the link: a lost GO_ACK leaves the source in
         * doubt, paused, which is safe. */
        return VFMIG_OK;
    }
}

int vfmig__target_run(vfmig_session *s, vfmig_link *link)
{
    target *t = calloc(1, sizeof(*t));
    if (!t)
        return vfmig__fail(s, VFMIG_ENOMEM, "out of memory");
    t->s = s;
    t->link = link;
    t->ops = s->dev.ops;
    t->dev = s->dev.dev;
    t->nstreams = (unsigned)vfmig_link_streams(link);
    t->ctl_cap = (1u << 20) + 4096;
    t->ctl = malloc(t->ctl_cap);
    pthread_mutex_init(&t->ctl_tx, NULL);
    int rc = VFMIG_OK;
    if (!t->ctl) {
        rc = vfmig__fail(s, VFMIG_ENOMEM, "out of memory");
        goto out;
    }
    vfmig__set_phase(s, VFMIG_PHASE_HANDSHAKE);
    if ((rc = t->ops->prepare(t->dev, VFMIG_ROLE_TARGET))) {
        rc = vfmig__dev_fail(s, rc, "prepare");
        goto out;
    }
    t->prepared = true;
    if ((rc = handshake(t)))
        goto out;
    /* After the handshake, as on the source: the topology load is not the peer's wait. */
    char perr[128], nic[64] = "";
    vfmig__link_local_ifname(link, nic, sizeof(nic));
    if ((rc = vfmig__pinner_create(s->pinning, (int)s->params[VFMIG_P_NUMA_NODE], nic, &t->pinner, perr,
                                  sizeof(perr)))) {
        rc = vfmig__fail(s, rc, "pinning: %s", perr);
        goto out;
    }
    pthread_mutex_lock(&s->lock);
    s->stats.streams = t->nstreams;
    s->stats.verify = (uint32_t)s->params[VFMIG_P_VERIFY];
    pthread_mutex_unlock(&s->lock);
    vfmig__set_phase(s, VFMIG_PHASE_PRECOPY);
    vfmig_receive_cfg rc_cfg = {.s = s, .link = link, .nstreams = t->nstreams, .batch_bytes = t->hello.batch_bytes,
                                .verify = (int)s->params[VFMIG_P_VERIFY], .pinner = t->pinner, .ctl_tx = &t->ctl_tx};
    if ((rc = vfmig__receive_start(&rc_cfg, &t->rx)))
        goto out;
    rc = serve(t);

out:
    if (!t->resumed && (rc || vfmig__should_stop(s))) {
        vfmig__find_peer_abort(s, link, t->ctl, t->ctl_cap, "source");
        rc = s->failed ? s->status : rc;
        /* Tell the source, unless it is the one that aborted. */
        if (rc != VFMIG_EABORTED) {
            pthread_mutex_lock(&t->ctl_tx);
            vfmig__send_status(link, 0, VFMIG_F_ABORT, rc, s->err);
            pthread_mutex_unlock(&t->ctl_tx);
        }
    }
    vfmig__link_interrupt(link);
    vfmig_round_stats tot = {0};
    uint32_t completed = t->rx ? vfmig__receive_completed(t->rx) : 0;
    vfmig__receive_stop(t->rx, &tot);
    pthread_mutex_lock(&s->lock);
    vfmig_stats *st = &s->stats;
    if (!st->rounds && completed)
        st->rounds = completed; /* rounds that arrived complete */
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
    vfmig__pinner_destroy(t->pinner);
    pthread_mutex_destroy(&t->ctl_tx);
    free(t->ctl);
    free(t->mut);
    free(t);
    return rc;
}
