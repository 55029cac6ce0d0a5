/*
 * engine/source.c - the source side of one migration (DESIGN.md, "One migration, source side").
 *
 * The rule that shapes every error path: until the target has verified and restored the image
 * and said so (VERDICT ok), the VF belongs to the source. Any failure before that resumes the VF
 * (if it was paused), tells the target to ABORT, stops tracking and ends the migration
 * configuration, so the VF runs on as if nothing happened.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compress/codec.h"
#include "engine/auth.h"
#include "engine/bitmap.h"
#include "engine/pipeline.h"
#include "engine/policy.h"
#include "engine/proto.h"
#include "engine/session.h"

typedef struct source {
    vfmig_session *s;
    vfmig_link *link;
    const vfmig_device_ops *ops;
    void *dev;
    unsigned nstreams;
    uint64_t batch_pages;
    uint64_t *bm[VFMIG_MAX_RANGES];   /* dirty pages to send this round */
    uint64_t *peek[VFMIG_MAX_RANGES]; /* dirty pages seen without clearing, for the policy */
    vfmig_pipeline *pipe;
    vfmig_pinner *pinner;
    uint8_t *frame_buf;
    size_t frame_cap;
    bool prepared, tracking, paused, throttled;
    bool in_doubt;   /* GO sent, target silent: neither end may resume on its own */
    uint64_t t_pause;
    uint64_t ack_lag_ns; /* quickest ROUND_END -> ROUND_ACK so far */
    vfmig_policy pol;
    uint64_t t_start, t_query, query_ns; /* pre-copy start, last clearing query, quickest query */
    unsigned throttle;
    /* Pages of a called-off final pass that were never sent: dirty for the next round. */
    uint64_t *carry[VFMIG_MAX_RANGES];
    bool have_carry;
    uint32_t called_off; /* switch-overs called off so far */
} source;

/* The blackout's budget watch: a final pass predicted (from its exact page count, after the
 * pause) over this many budgets is called off at once; one still sending at this many budgets,
 * less what must follow it, is called off then; a verdict that comes later than this gets ABORT
 * instead of GO. */
#define CALL_OFF_PREDICTED 1.25
#define CALL_OFF_AT 1.10

static int wait_go_ack(source *src);

static uint64_t range_pages(const source *src, uint32_t r)
{
    return src->s->ranges[r].size >> src->s->page_shift;
}

static int recv_control(source *src, vfmig_frame *f, const char *awaiting)
{
    return vfmig__recv_control(src->s, src->link, f, src->frame_buf, src->frame_cap, awaiting, "target", false);
}

/* A reply carrying a status (HELLO_ACK, IMM_ACK): expected type and status OK. The frame is left
 * in *f (payload in src->frame_buf) for replies that carry more. */
static int expect_status(source *src, int type, const char *what, vfmig_frame *out)
{
    vfmig_frame f;
    int rc = recv_control(src, &f, what);
    if (rc)
        return rc;
    if (f.type != type)
        return vfmig__fail(src->s, VFMIG_EPROTO, "expected %s, got frame type %u", what, f.type);
    char msg[300];
    int st = vfmig__frame_status(&f, src->frame_buf, msg, sizeof(msg));
    if (st)
        return vfmig__fail(src->s, st, "target refused: %s", msg[0] ? msg : vfmig_strerror(st));
    if (out)
        *out = f;
    return VFMIG_OK;
}

/* Checks the target's proof of the key, answers with ours and keys every later frame
 * (engine/auth.h). */
static int authenticate(source *src, const uint8_t *hello, size_t hello_len, const uint8_t *nonce_s,
                        const vfmig_frame *ack, bool encrypt)
{
    vfmig_session *s = src->s;
    if (ack->len != VFMIG_AUTH_NONCE + VFMIG_AUTH_MAC)
        return vfmig__fail(s, VFMIG_EAUTH, "target did not authenticate (it may have no key)");
    uint8_t nonce_t[VFMIG_AUTH_NONCE], mac_t[VFMIG_AUTH_MAC], want[VFMIG_AUTH_MAC], mac_s[VFMIG_AUTH_MAC];
    memcpy(nonce_t, src->frame_buf, VFMIG_AUTH_NONCE);
    memcpy(mac_t, src->frame_buf + VFMIG_AUTH_NONCE, VFMIG_AUTH_MAC);
    int rc = vfmig__auth_proofs(s->psk, s->psk_len, hello, hello_len, nonce_s, nonce_t, want, mac_t, mac_s);
    if (rc)
        return vfmig__fail(s, rc, "authentication: the crypto library failed");
    if (!vfmig__auth_equal(want, mac_t))
        return vfmig__fail(s, VFMIG_EAUTH, "target failed authentication: it does not hold this key");
    vfmig_frame f = {.type = VFMIG_F_AUTH, .len = VFMIG_AUTH_MAC};
    if ((rc = vfmig__send_flush(s, src->link, 0, &f, mac_s, "authentication")))
        return rc;
    /* From here on every frame either way is keyed (sealed, or tagged); the target switches as it
     * checks our proof. */
    uint8_t k_s2t[VFMIG_AEAD_KEY], k_t2s[VFMIG_AEAD_KEY];
    rc = vfmig__auth_keys(s->psk, s->psk_len, hello, hello_len, nonce_s, nonce_t, mac_t, k_s2t, k_t2s);
    if (!rc)
        rc = encrypt ? vfmig__link_enable_aead(src->link, k_s2t, k_t2s) : vfmig__link_enable_mac(src->link, k_s2t, k_t2s);
    explicit_bzero(k_s2t, sizeof(k_s2t));
    explicit_bzero(k_t2s, sizeof(k_t2s));
    if (rc)
        return vfmig__fail(s, rc, "cannot start keyed frames: %s", vfmig_strerror(rc));
    return VFMIG_OK;
}

static int handshake(source *src, double *rtt_ms)
{
    vfmig_session *s = src->s;
    vfmig_hello h = {.magic = VFMIG_WIRE_MAGIC, .version = VFMIG_WIRE_VERSION,
                     .nstreams = src->nstreams, .page_size = s->page_size, .npages = s->npages,
                     .nranges = s->dev.nranges, .batch_bytes = (uint32_t)(src->batch_pages * s->page_size)};
    uint64_t imm_size = 0;
    int rc = src->ops->save_immutable(src->dev, NULL, &imm_size);
    if (rc)
        return vfmig__dev_fail(s, rc, "save_immutable (size)");
    if (imm_size > VFMIG_MAX_STATE_BYTES)
        return vfmig__fail(s, VFMIG_EDEVICE, "immutable state of %" PRIu64 " bytes is over the limit", imm_size);
    h.immutable_bytes = imm_size;
    for (uint32_t i = 0; i < s->dev.nranges; i++)
        h.range_size[i] = s->ranges[i].size;
    if (s->params[VFMIG_P_ENCRYPT] && !s->psk_len)
        return vfmig__fail(s, VFMIG_EINVAL, "encryption needs a pre-shared key (vfmig_session_set_psk)");
    if (s->psk_len) {
        h.flags |= VFMIG_HELLO_FLAG_AUTH;
        if (s->params[VFMIG_P_ENCRYPT])
            h.flags |= VFMIG_HELLO_FLAG_ENCRYPT;
        if ((rc = vfmig__random(h.nonce, sizeof(h.nonce))))
            return vfmig__fail(s, rc, "no randomness for the handshake nonce");
        if ((rc = vfmig__auth_key_id(s->psk, s->psk_len, h.key_id)))
            return vfmig__fail(s, rc, "authentication: the crypto library failed");
    }
    /* With a key, the HELLO withholds the VF's layout: it follows in a keyed LAYOUT frame once
     * the target has proved the key (engine/proto.h). */
    vfmig_hello first = h;
    if (s->psk_len) {
        first.nranges = 0;
        first.page_size = first.npages = first.immutable_bytes = 0;
    }
    uint8_t buf[VFMIG_HELLO_MAX_BYTES];
    size_t n = vfmig__hello_encode(&first, buf);
    vfmig_frame f = {.type = VFMIG_F_HELLO, .len = (uint32_t)n};
    uint64_t t0 = vfmig__now_ns();
    if ((rc = vfmig__send_flush(s, src->link, 0, &f, buf, "HELLO")))
        return rc;
    vfmig_frame ack;
    if ((rc = expect_status(src, VFMIG_F_HELLO_ACK, "handshake reply", &ack)))
        return rc;
    *rtt_ms = (double)(vfmig__now_ns() - t0) / 1e6;
    size_t bound = vfmig__codec_bound(h.batch_bytes);
    vfmig__link_set_max_payload(src->link, bound > (2u << 20) ? bound : (2u << 20));
    if (s->psk_len) {
        if ((rc = authenticate(src, buf, n, h.nonce, &ack, (h.flags & VFMIG_HELLO_FLAG_ENCRYPT) != 0)))
            return rc;
        uint8_t lay[VFMIG_HELLO_MAX_BYTES];
        vfmig_frame lf = {.type = VFMIG_F_LAYOUT, .len = (uint32_t)vfmig__hello_encode(&h, lay)};
        if ((rc = vfmig__send_flush(s, src->link, 0, &lf, lay, "the VF's layout")))
            return rc;
    }

    void *imm = malloc(imm_size ? imm_size : 1);
    if (!imm)
        return vfmig__fail(s, VFMIG_ENOMEM, "out of memory for immutable state");
    uint64_t got = imm_size;
    rc = src->ops->save_immutable(src->dev, imm, &got);
    if (rc || got != imm_size) {
        free(imm);
        return rc ? vfmig__dev_fail(s, rc, "save_immutable") : vfmig__fail(s, VFMIG_EDEVICE, "save_immutable changed size");
    }
    uint64_t t1 = vfmig__now_ns();
    rc = vfmig__send_blob(src->link, 0, VFMIG_F_IMMUTABLE, imm, imm_size, 1u << 20);
    free(imm);
    pthread_mutex_lock(&s->lock);
    s->stats.immutable_bytes = imm_size;
    pthread_mutex_unlock(&s->lock);
    if (rc)
        return vfmig__fail(s, rc, "sending immutable state: %s", vfmig__link_stream_error(src->link, 0));
    if ((rc = expect_status(src, VFMIG_F_IMM_ACK, "immutable state verdict", NULL)))
        return rc;
    /* The round trip the policy counts twice in a blackout: the quicker of the two exchanges
     * (one slow wake-up on a busy host must not make every blackout look long). */
    double imm_ms = (double)(vfmig__now_ns() - t1) / 1e6;
    if (imm_ms < *rtt_ms)
        *rtt_ms = imm_ms;
    return VFMIG_OK;
}

/* Fetches the dirty bitmap of every range into `into`; clear = atomic read-and-reset. Pages
 * carried over from a called-off final pass count as dirty (and are consumed by a clear). */
static int query(source *src, uint64_t **into, int clear, uint64_t *count)
{
    vfmig_session *s = src->s;
    *count = 0;
    for (uint32_t r = 0; r < s->dev.nranges; r++) {
        uint64_t np = range_pages(src, r);
        memset(into[r], 0, vfmig_bitmap_words(np) * 8);
        int rc = src->ops->query_dirty(src->dev, r, 0, np, into[r], clear);
        if (rc)
            return vfmig__dev_fail(s, rc, "query_dirty");
        vfmig__bitmap_trim(into[r], np);
        if (src->have_carry) {
            vfmig__bitmap_or(into[r], src->carry[r], np);
            if (clear)
                memset(src->carry[r], 0, vfmig_bitmap_words(np) * 8);
        }
        *count += vfmig__bitmap_count(into[r], np);
    }
    if (clear)
        src->have_carry = false;
    return VFMIG_OK;
}

/* Waits until the target reports every stream applied `round`. Rounds are timed to this point,
 * so the bandwidth the policy learns is what the target absorbs, and a backlog of pre-copy pages
 * is never left to drain inside the blackout. */
static int wait_round_ack(source *src, uint32_t round, uint64_t *peer_cpu_ns)
{
    for (;;) {
        vfmig_frame f;
        int rc = recv_control(src, &f, "round acknowledgement");
        if (rc)
            return rc;
        if (f.type != VFMIG_F_ROUND_ACK || f.round > round)
            return vfmig__fail(src->s, VFMIG_EPROTO, "expected the acknowledgement of round %u, got frame type %u (round %u)",
                              round, f.type, f.round);
        if (f.round == round) {
            *peer_cpu_ns = f.aux;
            return VFMIG_OK;
        }
    }
}

/* Sets in src->carry the pages of src->bm from page `from` of range `r0` on. */
static void carry_rest(source *src, uint32_t r0, uint64_t from)
{
    for (uint32_t r = r0; r < src->s->dev.nranges; r++, from = 0) {
        uint64_t np = range_pages(src, r), st, len;
        while (vfmig__bitmap_next_run(src->bm[r], np, from, np, &st, &len)) {
            vfmig__bitmap_set_range(src->carry[r], st, len);
            from = st + len;
        }
    }
    src->have_carry = true;
}

/* Queues every run of src->bm. Stopped by the pipeline's watch (VFMIG_ETIMEDOUT), the runs not
 * queued go to src->carry. */
static int submit_dirty(source *src)
{
    vfmig_session *s = src->s;
    for (uint32_t r = 0; r < s->dev.nranges; r++) {
        uint64_t np = range_pages(src, r), st, len, from = 0;
        while (vfmig__bitmap_next_run(src->bm[r], np, from, src->batch_pages, &st, &len)) {
            int rc = vfmig__pipeline_submit(src->pipe, r, s->range_base[r] + st, len);
            if (rc == VFMIG_ETIMEDOUT)
                carry_rest(src, r, st);
            if (rc)
                return rc;
            from = st + len;
        }
    }
    return VFMIG_OK;
}

/* Sends one round: every page (round 0) or the pages of src->bm. */
static int send_round(source *src, uint32_t round, bool all, bool blackout, uint64_t pages, vfmig_round_stats *rs)
{
    vfmig_session *s = src->s;
    uint64_t t0 = vfmig__now_ns();
    vfmig__pipeline_begin_round(src->pipe, round, blackout);
    vfmig__progress_round(s, round, pages * s->page_size);
    if (all)
        for (uint32_t r = 0; r < s->dev.nranges; r++)
            vfmig__bitmap_set_range(src->bm[r], 0, range_pages(src, r));
    int rc = submit_dirty(src);
    if (!rc)
        rc = vfmig__pipeline_end_round(src->pipe, rs);
    uint64_t t_end = vfmig__now_ns();
    if (!rc && !blackout)
        rc = wait_round_ack(src, round, &rs->peer_cpu_ns);
    /* ROUND_END out to ROUND_ACK back: a round trip at most (plus the target's last frames). */
    if (!rc && !blackout && (!src->ack_lag_ns || vfmig__now_ns() - t_end < src->ack_lag_ns))
        src->ack_lag_ns = vfmig__now_ns() - t_end;
    if (rc)
        return rc;
    rs->in_blackout = blackout;
    rs->duration_ns = vfmig__now_ns() - t0;
    rs->throughput = rs->duration_ns ? (double)rs->bytes_raw * 1e9 / (double)rs->duration_ns : 0;
    return VFMIG_OK;
}

/* Before the first round: what the policy knows of this session and link. */
static void policy_setup(source *src, double rtt_ms, vfmig_policy *pol)
{
    vfmig_session *s = src->s;
    char ifname[32] = "";
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    /* A loopback link means both ends run on this host and share its CPUs. */
    bool same_host = vfmig__link_local_ifname(src->link, ifname, sizeof(ifname)) == VFMIG_OK && !strcmp(ifname, "lo");
    vfmig_policy_cfg pc = {
        .budget_ms = (double)s->params[VFMIG_P_BUDGET_MS],
        .max_rounds = (uint32_t)s->params[VFMIG_P_MAX_ROUNDS],
        .max_precopy_ns = (uint64_t)s->params[VFMIG_P_MAX_PRECOPY_MS] * 1000000ull,
        .throttle_allowed = s->params[VFMIG_P_THROTTLE] && src->ops->throttle != NULL,
        .on_miss_switch = s->params[VFMIG_P_ON_BUDGET_MISS] == VFMIG_BUDGET_MISS_SWITCH,
        .src_workers = vfmig__session_threads(s),
        .dst_threads = src->nstreams,
        .shared_cpus = same_host && cpus > 0 ? (unsigned)cpus : 0,
        .rtt_ms = rtt_ms,
        /* Save, send and restore of the mutable state: its size is only known once paused. */
        .state_ms = 0.5,
    };
    vfmig__policy_init(pol, &pc, (double)s->params[VFMIG_P_MAX_BANDWIDTH]);
}

/* Pre-copy rounds from `round` on (src->bm holds its pages unless it is round 0), until the
 * policy switches over (*final_round: the blackout's round) or fails. */
static int precopy(source *src, uint32_t round, uint64_t pending, uint32_t *final_round)
{
    vfmig_session *s = src->s;
    vfmig_policy *pol = &src->pol;
    for (;;) {
        vfmig_round_stats rs;
        int rc = send_round(src, round, round == 0, false, pending, &rs);
        if (rc)
            return rc;
        uint64_t tq = vfmig__now_ns();
        if ((rc = query(src, src->peek, 0, &pending)))
            return rc;
        uint64_t now = vfmig__now_ns(), track_ns = 0;
        if (!src->query_ns || now - tq < src->query_ns)
            src->query_ns = now - tq; /* the quickest: in the blackout nothing competes with it */
        /* A device that scans for dirty pages pays a whole scan in the blackout. */
        uint64_t final_query_ns = src->query_ns;
        if (s->dev.tracking_cost && s->dev.tracking_cost(s->dev.dev, &track_ns) == VFMIG_OK && track_ns > final_query_ns)
            final_query_ns = track_ns;
        vfmig_policy_round in = {
            .round = round, .pages = rs.dirty_pages, .wire_bytes = rs.bytes_wire, .round_ns = rs.duration_ns,
            .src_cpu_ns = rs.cpu_ns, .dst_cpu_ns = rs.peer_cpu_ns, .pending_pages = pending,
            .page_size = s->page_size, .query_ns = final_query_ns, .scan_ns = track_ns, .since_query_ns = now - src->t_query,
            .precopy_ns = now - src->t_start,
            /* A round that gave most of its data pages delta-cache copies makes the next one a
             * delta round, which is what a final pass of the same pages would be too. And a
             * page's first delta computes its linear hash whole on both ends; the ones after it
             * only touch the changed bytes: measure such a round before predicting from it. */
            .warming = round > 0 && (2 * vfmig__pipeline_newly_cached_pages(src->pipe) > rs.dirty_pages - rs.zero_pages ||
                                     2 * vfmig__pipeline_lin_full_pages(src->pipe) > rs.dirty_pages),
        };
        if (src->ack_lag_ns && (double)src->ack_lag_ns / 1e6 < pol->cfg.rtt_ms)
            pol->cfg.rtt_ms = (double)src->ack_lag_ns / 1e6;
        /* What may change while running: the budget, throttling allowed. */
        pol->cfg.budget_ms = (double)vfmig__param_now(s, VFMIG_P_BUDGET_MS);
        pol->cfg.throttle_allowed = vfmig__param_now(s, VFMIG_P_THROTTLE) && src->ops->throttle != NULL;
        vfmig_policy_decision d = vfmig__policy_after_round(pol, &in);
        if (atomic_load(&s->switch_requested)) {
            d.action = VFMIG_POLICY_SWITCH;
            d.reason = VFMIG_SWITCH_REQUESTED;
        }
        vfmig__progress_policy(s, pending * s->page_size, pol->dirty_rate, d.predicted_ms, src->throttle);
        rs.dirty_rate = pol->dirty_rate;
        rs.predicted_blackout_ms = d.predicted_ms;
        rs.throttle_percent = src->throttle;
        vfmig__add_round(s, &rs);
        pthread_mutex_lock(&s->lock);
        s->stats.rounds = round + 1;
        s->stats.predicted_blackout_ms = d.predicted_ms;
        s->stats.predicted_pages_ms = d.stages.pages_ms;
        s->stats.predicted_fixed_ms = d.stages.fixed_ms;
        s->stats.throttle_min_percent = pol->throttle_min;
        pthread_mutex_unlock(&s->lock);
        vfmig__pipeline_set_link_bps(src->pipe, (double)vfmig__param_now(s, VFMIG_P_MAX_BANDWIDTH));
        if (d.action == VFMIG_POLICY_ABORT)
            return vfmig__fail(s, VFMIG_EBUDGET,
                              "cannot meet the %" PRId64 " ms budget: predicted %.0f ms for %" PRIu64 " pages (final pass "
                              "%.1f ms, fixed %.1f ms) after %u rounds%s; the VF keeps running here (allow more with "
                              "a larger budget, or switch anyway with on-budget-miss switch)",
                              s->params[VFMIG_P_BUDGET_MS], d.predicted_ms, pending, d.stages.pages_ms, d.stages.fixed_ms,
                              round + 1, pol->throttle_min < 100 ? " even throttled" : "");
        if (d.action == VFMIG_POLICY_SWITCH) {
            *final_round = round + 1;
            pthread_mutex_lock(&s->lock);
            s->stats.switch_reason = d.reason;
            pthread_mutex_unlock(&s->lock);
            vfmig__log(s, d.reason == VFMIG_SWITCH_BUDGET_MISS ? 1 : 2,
                      "switching over after %u rounds (%s): %" PRIu64 " dirty pages, predicted blackout %.1f ms "
                      "(final pass %.1f: source %.1f, target %.1f, wire %.1f, shared CPUs %.1f; fixed %.1f)",
                      round + 1, vfmig_switch_reason_name(d.reason), pending, d.predicted_ms, d.stages.pages_ms,
                      d.stages.src_ms, d.stages.dst_ms, d.stages.wire_ms, d.stages.shared_ms, d.stages.fixed_ms);
            return VFMIG_OK;
        }
        if (d.action == VFMIG_POLICY_THROTTLE) {
            rc = src->ops->throttle(src->dev, d.throttle);
            if (rc)
                return vfmig__dev_fail(s, rc, "throttle");
            src->throttle = d.throttle;
            src->throttled = true;
            vfmig__log(s, 1, "pre-copy is not converging (predicted %.1f ms against the %" PRId64 " ms budget): "
                      "throttling the VF to %u%%", d.predicted_ms, s->params[VFMIG_P_BUDGET_MS], src->throttle);
        }
        round++;
        src->t_query = vfmig__now_ns();
        if ((rc = query(src, src->bm, 1, &pending)))
            return rc;
    }
}

/*
 * The switch-over of `round` is called off (see vfmig_budget_miss): the workers finish the
 * frames they hold, with the VF still paused; the runs not sent are carried to the next round;
 * the VF resumes. Unless it may retry (once, with VFMIG_BUDGET_MISS_RETRY) that fails EBUDGET;
 * to retry, the round ends as a pre-copy round, which the target acknowledges, CALLED_OFF voids
 * the mutable state it got, the policy learns how slow the final pass really was, and *retry is
 * set.
 */
static int call_off(source *src, uint32_t round, uint64_t t_queried, double budget, const char *why, bool *retry)
{
    vfmig_session *s = src->s;
    vfmig__pipeline_call_off(src->pipe, src->carry);
    src->have_carry = true;
    uint64_t t_drained = vfmig__now_ns();
    int rc = src->ops->resume(src->dev);
    src->paused = false;
    if (rc)
        return vfmig__dev_fail(s, rc, "resume (switch-over called off)");
    uint64_t frozen_ns = vfmig__now_ns() - src->t_pause;
    src->called_off++;
    pthread_mutex_lock(&s->lock);
    s->stats.switchovers_called_off = src->called_off;
    s->stats.called_off_ns += frozen_ns;
    pthread_mutex_unlock(&s->lock);
    /* Not to go on: the rollback's ABORT ends the target's side of it. */
    if (s->params[VFMIG_P_ON_BUDGET_MISS] != VFMIG_BUDGET_MISS_RETRY || src->called_off > 1)
        return vfmig__fail(s, VFMIG_EBUDGET,
                          "cannot meet the %.0f ms budget: %s, so the switch-over was called off (the VF was paused "
                          "%.1f ms and runs here again)%s", budget, why, (double)frozen_ns / 1e6,
                          src->called_off > 1 ? " for the second time" : "");
    vfmig__set_phase(s, VFMIG_PHASE_PRECOPY);
    vfmig_round_stats rs;
    if ((rc = vfmig__pipeline_end_round(src->pipe, &rs)))
        return rc;
    if ((rc = wait_round_ack(src, round, &rs.peer_cpu_ns)))
        return rc;
    vfmig_frame f = {.type = VFMIG_F_CALLED_OFF, .round = round};
    if ((rc = vfmig__send_flush(s, src->link, 0, &f, NULL, "the called-off switch-over")))
        return rc;
    rs.duration_ns = vfmig__now_ns() - t_queried;
    rs.throughput = rs.duration_ns ? (double)rs.bytes_raw * 1e9 / (double)rs.duration_ns : 0;
    rs.throttle_percent = src->throttle;
    vfmig__add_round(s, &rs);
    vfmig__policy_learn_blackout(&src->pol, rs.dirty_pages, (double)(t_drained - t_queried) / 1e6);
    pthread_mutex_lock(&s->lock);
    s->stats.rounds = round + 1;
    pthread_mutex_unlock(&s->lock);
    vfmig__log(s, 1, "switch-over called off: %s against the %.0f ms budget; the VF ran again after %.1f ms "
                     "paused; pre-copy goes on", why, budget, (double)frozen_ns / 1e6);
    *retry = true;
    return VFMIG_OK;
}

/* The switch-over of `round`. *retry: it was called off and pre-copy goes on. */
static int blackout(source *src, uint32_t round, bool *retry)
{
    vfmig_session *s = src->s;
    *retry = false;
    src->t_pause = vfmig__now_ns();
    int rc = src->ops->pause(src->dev);
    src->paused = true; /* even a failed pause is followed by resume, to be safe */
    if (rc)
        return vfmig__dev_fail(s, rc, "pause");
    uint64_t t_paused = vfmig__now_ns();
    vfmig__set_phase(s, VFMIG_PHASE_BLACKOUT);
    uint64_t final_pages;
    if ((rc = query(src, src->bm, 1, &final_pages)))
        return rc;
    uint64_t t_queried = vfmig__now_ns();

    /* The final pages go out on the data streams while this thread saves and sends the mutable
     * state on the control stream. */
    vfmig__pipeline_begin_round(src->pipe, round, true);
    vfmig__progress_round(s, round, final_pages * s->page_size);
    /* The budget watch, unless told to switch whatever it costs. */
    double budget = (double)vfmig__param_now(s, VFMIG_P_BUDGET_MS);
    pthread_mutex_lock(&s->lock);
    bool watch = s->params[VFMIG_P_ON_BUDGET_MISS] != VFMIG_BUDGET_MISS_SWITCH &&
                 s->stats.switch_reason != VFMIG_SWITCH_REQUESTED;
    pthread_mutex_unlock(&s->lock);
    vfmig_prediction e = vfmig__policy_predict(&src->pol, final_pages);
    char why[160];
    if (watch && e.total_ms > CALL_OFF_PREDICTED * budget) {
        snprintf(why, sizeof(why), "%" PRIu64 " pages were dirty at the pause, a blackout predicted at %.1f ms",
                 final_pages, e.total_ms);
        return call_off(src, round, t_queried, budget, why, retry);
    }
    if (watch) {
        /* After the last page: COMMIT, the verdict, GO and its answer. */
        double after_ms = e.fixed_ms - src->pol.query_ms;
        double until_ms = CALL_OFF_AT * budget - after_ms;
        vfmig__pipeline_watch(src->pipe, src->t_pause + (uint64_t)(until_ms > 0 ? until_ms * 1e6 : 0));
    }
    rc = submit_dirty(src);
    if (rc == VFMIG_ETIMEDOUT && !atomic_load(&s->failed)) {
        snprintf(why, sizeof(why), "the final pass of %" PRIu64 " pages was still being queued at %.1f ms",
                 final_pages, (double)(vfmig__now_ns() - src->t_pause) / 1e6);
        return call_off(src, round, t_queried, budget, why, retry);
    }
    if (rc)
        return rc;
    uint64_t t_mut = vfmig__now_ns(), mut_size = 0;
    if ((rc = src->ops->save_mutable(src->dev, NULL, &mut_size)))
        return vfmig__dev_fail(s, rc, "save_mutable (size)");
    if (mut_size > VFMIG_MAX_STATE_BYTES)
        return vfmig__fail(s, VFMIG_EDEVICE, "mutable state of %" PRIu64 " bytes is over the limit", mut_size);
    void *mut = malloc(mut_size ? mut_size : 1);
    if (!mut)
        return vfmig__fail(s, VFMIG_ENOMEM, "out of memory for mutable state");
    uint64_t got = mut_size;
    rc = src->ops->save_mutable(src->dev, mut, &got);
    if (!rc && got == mut_size)
        rc = vfmig__send_blob(src->link, 0, VFMIG_F_MUTABLE, mut, mut_size, 1u << 20);
    else if (!rc)
        rc = vfmig__fail(s, VFMIG_EDEVICE, "save_mutable changed size");
    else
        vfmig__dev_fail(s, rc, "save_mutable");
    free(mut);
    if (rc)
        return vfmig__fail(s, rc, "sending mutable state: %s", vfmig__link_stream_error(src->link, 0));
    uint64_t mut_ns = vfmig__now_ns() - t_mut;

    /* Full verification: the digest of what VRAM holds, re-read while the last pages fly. */
    uint8_t full[16];
    uint64_t full_ns = 0;
    bool want_full = s->params[VFMIG_P_VERIFY] == VFMIG_VERIFY_FULL;
    if (want_full) {
        uint64_t t_full = vfmig__now_ns();
        void *scratch = malloc((size_t)s->page_size);
        vfmig_digest dd;
        rc = scratch ? vfmig__image_device_digest(&s->dev, s->range_base, s->page_shift, scratch, &dd) : VFMIG_ENOMEM;
        free(scratch);
        if (rc)
            return rc == VFMIG_ENOMEM ? vfmig__fail(s, rc, "out of memory for verification")
                                      : vfmig__dev_fail(s, rc, "read (full verification)");
        vfmig_put_u64(full, dd.lo);
        vfmig_put_u64(full + 8, dd.hi);
        full_ns = vfmig__now_ns() - t_full;
    }

    vfmig_round_stats rs;
    rc = vfmig__pipeline_end_round(src->pipe, &rs);
    if (rc == VFMIG_ETIMEDOUT && !atomic_load(&s->failed)) {
        snprintf(why, sizeof(why), "the final pass of %" PRIu64 " pages (predicted %.1f ms) was still being sent at %.1f ms",
                 final_pages, e.pages_ms, (double)(vfmig__now_ns() - src->t_pause) / 1e6);
        return call_off(src, round, t_queried, budget, why, retry);
    }
    if (rc)
        return rc;
    vfmig__pipeline_watch(src->pipe, 0);
    rs.in_blackout = 1;
    rs.duration_ns = vfmig__now_ns() - t_queried;
    rs.throughput = rs.duration_ns ? (double)rs.bytes_raw * 1e9 / (double)rs.duration_ns : 0;
    uint64_t pages_ns = rs.duration_ns;

    vfmig_digest digest;
    vfmig__pipeline_digest(src->pipe, &digest);
    vfmig_frame f = {.type = VFMIG_F_COMMIT, .round = round, .page = digest.lo, .aux = digest.hi,
                     .len = want_full ? 16 : 0};
    if ((rc = vfmig__send_flush(s, src->link, 0, &f, want_full ? full : NULL, "COMMIT")))
        return rc;
    uint64_t t_sent = vfmig__now_ns();

    /* VERDICT: status in aux, then u64 verify_ns, u64 restore_ns, then a message. The final
     * round's acknowledgement comes first. */
    do {
        if ((rc = recv_control(src, &f, "verdict")))
            return rc;
    } while (f.type == VFMIG_F_ROUND_ACK && f.round == round);
    if (f.type != VFMIG_F_VERDICT || f.len < VFMIG_VERDICT_HDR)
        return vfmig__fail(s, VFMIG_EPROTO, "expected the target's verdict, got frame type %u", f.type);
    uint64_t verify_ns = vfmig_get_u64(src->frame_buf), restore_ns = vfmig_get_u64(src->frame_buf + 8);
    uint64_t peer_full_ns = vfmig_get_u64(src->frame_buf + 16);
    vfmig_frame msgf = f;
    msgf.len -= VFMIG_VERDICT_HDR;
    char msg[300];
    int st = vfmig__frame_status(&msgf, src->frame_buf + VFMIG_VERDICT_HDR, msg, sizeof(msg));
    if (st)
        return vfmig__fail(s, st, "target rejected the image: %s", msg[0] ? msg : vfmig_strerror(st));
    /* Verified, but too late: GO and its answer would end the blackout past the budget. The
     * target has not resumed; ABORT (the rollback) leaves the VF here. */
    double at_verdict_ms = (double)(vfmig__now_ns() - src->t_pause) / 1e6;
    if (watch && at_verdict_ms + src->pol.cfg.rtt_ms > CALL_OFF_AT * budget)
        return vfmig__fail(s, VFMIG_EBUDGET,
                          "cannot meet the %.0f ms budget: the target verified the image %.1f ms into the blackout "
                          "(predicted %.1f ms), so the VF stays here instead of resuming there", budget,
                          at_verdict_ms, e.total_ms);

    vfmig__add_round(s, &rs);
    pthread_mutex_lock(&s->lock);
    s->stats.blackout_final_pages_ns = pages_ns;
    s->stats.blackout_mutable_ns = mut_ns;
    s->stats.blackout_verify_ns = verify_ns;
    s->stats.blackout_restore_ns = restore_ns;
    s->stats.blackout_full_verify_ns = full_ns + peer_full_ns;
    s->stats.blackout_pause_ns = t_paused - src->t_pause;
    s->stats.blackout_query_ns = t_queried - t_paused;
    s->stats.blackout_send_ns = t_sent - t_queried;
    s->stats.blackout_target_ns = verify_ns + restore_ns;
    s->stats.final_dirty_pages = final_pages;
    s->stats.mutable_bytes = mut_size;
    s->stats.verified = 1;
    s->stats.precopy_ns = src->t_pause - s->t_start_ns;
    s->stats.wire_rate = s->stats.precopy_ns ? (double)(s->stats.bytes_wire - rs.bytes_wire) * 1e9 / (double)s->stats.precopy_ns : 0;
    s->stats.delta_cache_bytes = vfmig__pipeline_delta_cache_bytes(src->pipe);
    pthread_mutex_unlock(&s->lock);

    /* Past this point the target holds a verified image: the VF is the target's. */
    f = (vfmig_frame){.type = VFMIG_F_GO};
    if ((rc = vfmig__send_flush(s, src->link, 0, &f, NULL, "GO to the target")))
        return rc;
    if ((rc = wait_go_ack(src)))
        return rc;
    /* The blackout ends when the target confirms it runs the VF; what the stages above do not
     * cover is time on the network (COMMIT/VERDICT, GO/GO_ACK). */
    uint64_t t_end = vfmig__now_ns();
    pthread_mutex_lock(&s->lock);
    vfmig_stats *st2 = &s->stats;
    st2->blackout_ns = t_end - src->t_pause;
    uint64_t staged = st2->blackout_pause_ns + st2->blackout_query_ns + st2->blackout_send_ns + st2->blackout_target_ns;
    st2->blackout_roundtrip_ns = st2->blackout_ns > staged ? st2->blackout_ns - staged : 0;
    st2->budget_margin_ms = budget - (double)st2->blackout_ns / 1e6;
    st2->budget_met = st2->budget_margin_ms >= 0;
    pthread_mutex_unlock(&s->lock);
    return VFMIG_OK;
}

/*
 * After GO the target either confirms it runs the VF (GO_ACK) or says it will not (ABORT: the
 * source may take the VF back). The wait outlasts the target's own wait for GO, so a target that
 * gave up has told us before we give up. Hearing neither, the source cannot know whether GO got
 * through: it keeps the VF paused rather than risk two running copies.
 */
static int wait_go_ack(source *src)
{
    vfmig_session *s = src->s;
    uint64_t deadline = vfmig__deadline((int)(2 * s->params[VFMIG_P_TIMEOUT_MS])); /* at most 2 days: an int */
    for (;;) {
        vfmig_frame f;
        int rc = vfmig__link_recv(src->link, 0, &f, src->frame_buf, src->frame_cap, VFMIG_WAIT_SLICE_MS);
        if (rc == VFMIG_ETIMEDOUT && !vfmig__expired(deadline))
            continue;
        if (!rc && f.type == VFMIG_F_GO_ACK)
            return VFMIG_OK;
        if (!rc && f.type == VFMIG_F_ABORT) {
            char msg[300];
            int st = vfmig__frame_status(&f, src->frame_buf, msg, sizeof(msg));
            return vfmig__fail(s, VFMIG_EABORTED, "target did not take the VF over: %s (%s)", msg, vfmig_strerror(st));
        }
        if (!rc && (f.type == VFMIG_F_ROUND_ACK || f.type == VFMIG_F_VERDICT))
            continue; /* acknowledgements already acted on */
        src->in_doubt = true;
        if (!rc)
            return vfmig__fail(s, VFMIG_EINDOUBT, "target answered GO with frame type %u: whether it runs the VF is "
                                                 "unknown; the VF stays paused here", f.type);
        return vfmig__fail(s, VFMIG_EINDOUBT, "no confirmation from the target after GO (%s): whether it runs the VF "
                                             "is unknown; the VF stays paused here", vfmig_strerror(rc));
    }
}

/* Undo everything: the VF keeps running on the source. */
static void rollback(source *src)
{
    vfmig_session *s = src->s;
    if (src->in_doubt) {
        vfmig__link_interrupt(src->link);
        pthread_mutex_lock(&s->lock);
        s->stats.vf_state = VFMIG_VF_IN_DOUBT;
        pthread_mutex_unlock(&s->lock);
        return;
    }
    if (src->paused) {
        int rc = src->ops->resume(src->dev);
        if (rc)
            vfmig__log(s, 0, "resume after failure failed: %s", vfmig_strerror(rc));
        src->paused = false;
    }
    if (src->throttled && src->ops->throttle)
        src->ops->throttle(src->dev, 100);
    vfmig__find_peer_abort(s, src->link, src->frame_buf, src->frame_cap, "target");
    /* Best effort: the link may be what failed. */
    vfmig__send_status(src->link, 0, VFMIG_F_ABORT, s->status, s->err);
    vfmig__link_interrupt(src->link);
    pthread_mutex_lock(&s->lock);
    s->stats.vf_state = VFMIG_VF_RUNNING_ON_SOURCE;
    s->stats.verified = 0;
    pthread_mutex_unlock(&s->lock);
}

int vfmig__source_run(vfmig_session *s, vfmig_link *link)
{
    source src = {.s = s, .link = link, .ops = s->dev.ops, .dev = s->dev.dev};
    int rc = VFMIG_OK;
    char perr[128];
    src.nstreams = (unsigned)vfmig_link_streams(link);
    src.batch_pages = (uint64_t)s->params[VFMIG_P_BATCH_BYTES] / s->page_size;
    if (src.batch_pages == 0)
        src.batch_pages = 1;
    src.frame_cap = 64 << 10;
    src.frame_buf = malloc(src.frame_cap);
    for (uint32_t r = 0; r < s->dev.nranges; r++) {
        src.bm[r] = calloc(vfmig_bitmap_words(range_pages(&src, r)), 8);
        src.peek[r] = calloc(vfmig_bitmap_words(range_pages(&src, r)), 8);
        src.carry[r] = calloc(vfmig_bitmap_words(range_pages(&src, r)), 8);
        if (!src.bm[r] || !src.peek[r] || !src.carry[r])
            rc = VFMIG_ENOMEM;
    }
    if (rc || !src.frame_buf) {
        rc = vfmig__fail(s, VFMIG_ENOMEM, "out of memory for dirty bitmaps");
        goto out_free;
    }
    if (s->params[VFMIG_P_MAX_BANDWIDTH])
        vfmig__link_set_max_bandwidth(link, (uint64_t)s->params[VFMIG_P_MAX_BANDWIDTH]);

    vfmig__set_phase(s, VFMIG_PHASE_HANDSHAKE);
    if ((rc = src.ops->prepare(src.dev, VFMIG_ROLE_SOURCE))) {
        rc = vfmig__dev_fail(s, rc, "prepare");
        goto out_free;
    }
    src.prepared = true;
    double rtt_ms = 0;
    if ((rc = handshake(&src, &rtt_ms)))
        goto out_fail;
    /* Only after the HELLO: loading the topology takes tens of ms, a window in which a target
     * under a flood of connections could expire this one as idle. */
    char nic[64] = "";
    vfmig__link_local_ifname(link, nic, sizeof(nic));
    if ((rc = vfmig__pinner_create(s->pinning, (int)s->params[VFMIG_P_NUMA_NODE], nic, &src.pinner, perr,
                                  sizeof(perr)))) {
        rc = vfmig__fail(s, rc, "pinning: %s", perr);
        goto out_fail;
    }

    unsigned threads = vfmig__session_threads(s);
    vfmig_pipeline_cfg pc = {
        .s = s, .link = link, .nstreams = src.nstreams, .nworkers = threads,
        .batch_pages = src.batch_pages, .codec = (int)s->params[VFMIG_P_CODEC],
        .level = (int)s->params[VFMIG_P_CODEC_LEVEL],
        .delta_cache_bytes = (uint64_t)s->params[VFMIG_P_DELTA_CACHE_BYTES],
        .link_bps = (double)s->params[VFMIG_P_MAX_BANDWIDTH], .pinner = src.pinner,
    };
    pthread_mutex_lock(&s->lock);
    s->stats.streams = src.nstreams;
    s->stats.threads = threads;
    s->stats.verify = (uint32_t)s->params[VFMIG_P_VERIFY];
    s->stats.throttle_min_percent = 100;
    pthread_mutex_unlock(&s->lock);
    if ((rc = src.ops->start_tracking(src.dev))) {
        rc = vfmig__dev_fail(s, rc, "start_tracking");
        goto out_fail;
    }
    src.tracking = true;
    if ((rc = vfmig__pipeline_start(&pc, &src.pipe)))
        goto out_fail;
    char pins[160];
    vfmig__pinner_describe(src.pinner, pins, sizeof(pins));
    vfmig__log(s, 3, "%u encode workers, %u streams, pinning: %s", threads, src.nstreams, pins);

    vfmig__set_phase(s, VFMIG_PHASE_PRECOPY);
    policy_setup(&src, rtt_ms, &src.pol);
    src.t_start = src.t_query = vfmig__now_ns();
    src.throttle = 100;
    uint32_t round = 0;
    uint64_t pending = s->npages;
    for (;;) {
        uint32_t final_round = 0;
        bool retry = false;
        if ((rc = precopy(&src, round, pending, &final_round)))
            goto out_fail;
        if ((rc = blackout(&src, final_round, &retry)))
            goto out_fail;
        if (!retry)
            break;
        /* Called off: the round was a pre-copy round; the next one sends what is dirty now and
         * what the final pass did not send. */
        round = final_round + 1;
        src.t_query = vfmig__now_ns();
        if ((rc = query(&src, src.bm, 1, &pending)))
            goto out_fail;
    }

    vfmig__pipeline_stop(src.pipe);
    src.pipe = NULL;
    src.ops->stop_tracking(src.dev);
    src.ops->end(src.dev);
    pthread_mutex_lock(&s->lock);
    s->stats.vf_state = VFMIG_VF_RESUMED_ON_TARGET;
    pthread_mutex_unlock(&s->lock);
    goto out_free;

out_fail:
    if (!atomic_load(&s->failed))
        vfmig__fail(s, rc, "%s", vfmig_strerror(rc));
    rc = s->status;
    rollback(&src);
    vfmig__pipeline_stop(src.pipe);
    src.pipe = NULL;
    if (src.tracking)
        src.ops->stop_tracking(src.dev);
    if (src.prepared)
        src.ops->end(src.dev);
out_free:
    if (rc && !atomic_load(&s->failed))
        vfmig__fail(s, rc, "%s", vfmig_strerror(rc));
    if (rc)
        rc = s->status;
    vfmig__pipeline_stop(src.pipe);
    vfmig__pinner_destroy(src.pinner);
    for (uint32_t r = 0; r < s->dev.nranges; r++) {
        free(src.bm[r]);
        free(src.peek[r]);
        free(src.carry[r]);
    }
    free(src.frame_buf);
    return rc;
}
