/* tests/test_session.c - the session API as an embedder meets it: device validation, parameter
 * bounds, the phase sequence a migration reports, run-once, and calls in the wrong state. */
#include <pthread.h>
#include <stddef.h>
#include <sys/socket.h>
#include <unistd.h>
#include <string.h>

#include "migrate_util.h"

static vfmig_simvf *sim(uint64_t vram, bool zero)
{
    vfmig_simvf_config c;
    vfmig_simvf_config_init(&c);
    c.vram_bytes = vram;
    c.page_size = 65536;
    c.content = zero ? VFMIG_CONTENT_ZERO : VFMIG_CONTENT_MIX;
    vfmig_simvf *s;
    ASSERT_OK(vfmig_simvf_create(&c, &s));
    return s;
}

static void test_device_validation(void)
{
    vfmig_simvf *a = sim(4 << 20, true);
    vfmig_device d;
    vfmig_simvf_device(a, &d);
    vfmig_session *s;
    char err[256];
    vfmig_range r2[2];
    vfmig_device_ops ops = *d.ops;

    vfmig_device x = d;
    x.page_size = 3000;
    ASSERT_EQ(vfmig_session_create(VFMIG_ROLE_SOURCE, &x, &s, err, sizeof(err)), VFMIG_EINVAL);
    ASSERT_TRUE(strstr(err, "page size") != NULL);
    x = d;
    x.nranges = 0;
    ASSERT_EQ(vfmig_session_create(VFMIG_ROLE_SOURCE, &x, &s, err, sizeof(err)), VFMIG_EINVAL);
    r2[0] = (vfmig_range){0, 1 << 20};
    r2[1] = (vfmig_range){1 << 19, 1 << 20};
    x = d;
    x.nranges = 2;
    x.ranges = r2;
    ASSERT_EQ(vfmig_session_create(VFMIG_ROLE_SOURCE, &x, &s, err, sizeof(err)), VFMIG_EINVAL);
    ASSERT_TRUE(strstr(err, "overlap") != NULL);
    r2[1] = (vfmig_range){4 << 20, 100};
    ASSERT_EQ(vfmig_session_create(VFMIG_ROLE_SOURCE, &x, &s, err, sizeof(err)), VFMIG_EINVAL);
    ASSERT_TRUE(strstr(err, "whole pages") != NULL);
    x = d;
    ops.pause = NULL;
    x.ops = &ops;
    ASSERT_EQ(vfmig_session_create(VFMIG_ROLE_SOURCE, &x, &s, err, sizeof(err)), VFMIG_EINVAL);
    ASSERT_TRUE(strstr(err, "op 'pause' is NULL") != NULL); /* a refusal names the op */
    /* Struct sizes: a device without them, or from a newer header, is refused with a message; an
     * older ops table (no map) is taken, map counting as NULL. */
    x = d;
    x.size = 0;
    ASSERT_EQ(vfmig_session_create(VFMIG_ROLE_SOURCE, &x, &s, err, sizeof(err)), VFMIG_EINVAL);
    ASSERT_TRUE(strstr(err, "VFMIG_DEVICE_SIZES") != NULL);
    x = d;
    x.ops_size = sizeof(vfmig_device_ops) + 8;
    ASSERT_EQ(vfmig_session_create(VFMIG_ROLE_SOURCE, &x, &s, err, sizeof(err)), VFMIG_EINVAL);
    ASSERT_TRUE(strstr(err, "ops_size") != NULL);
    x = d;
    x.ops_size = (uint32_t)offsetof(vfmig_device_ops, map);
    ASSERT_OK(vfmig_session_create(VFMIG_ROLE_SOURCE, &x, &s, err, sizeof(err)));
    vfmig_session_destroy(s);
    ASSERT_EQ(vfmig_session_create((vfmig_role)7, &d, &s, err, sizeof(err)), VFMIG_EINVAL);
    ASSERT_EQ(vfmig_session_create(VFMIG_ROLE_SOURCE, NULL, &s, NULL, 0), VFMIG_EINVAL);

    ASSERT_OK(vfmig_session_create(VFMIG_ROLE_SOURCE, &d, &s, err, sizeof(err)));
    int64_t v;
    ASSERT_OK(vfmig_session_get_param(s, VFMIG_P_BUDGET_MS, &v));
    ASSERT_EQ(v, 50);
    ASSERT_EQ(vfmig_session_set_param(s, VFMIG_P_BUDGET_MS, 0), VFMIG_EINVAL);
    ASSERT_EQ(vfmig_session_set_param(s, (vfmig_param)999, 1), VFMIG_EINVAL);
    ASSERT_EQ(vfmig_session_set_param(s, VFMIG_P_CODEC, VFMIG_CODEC_COUNT), VFMIG_EINVAL);
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_CODEC, VFMIG_CODEC_ZSTD));
    ASSERT_EQ(vfmig_session_set_pinning(s, "0-9999"), VFMIG_EINVAL);
    ASSERT_EQ(vfmig_session_set_pinning(s, "fast"), VFMIG_EINVAL);
    ASSERT_OK(vfmig_session_set_pinning(s, "none"));
    ASSERT_TRUE(strstr(vfmig_session_last_error(s), "pinning 'fast'") != NULL);
    ASSERT_EQ(vfmig_session_set_psk(s, "short", 5), VFMIG_EINVAL);
    /* every refused setter says why */
    ASSERT_TRUE(strstr(vfmig_session_last_error(s), "key of 5 bytes refused") != NULL);
    vfmig_stats st;
    vfmig_session_get_stats(s, &st);
    ASSERT_EQ(st.phase, VFMIG_PHASE_IDLE);
    ASSERT_EQ(st.vf_state, VFMIG_VF_RUNNING_ON_SOURCE);
    ASSERT_EQ(st.bytes_vram, 4 << 20);
    vfmig_session_destroy(s);
    vfmig_session_destroy(NULL);
    vfmig_simvf_destroy(a);
}

typedef struct phases {
    vfmig_phase seen[16];
    int n;
    int rounds;
} phases;

static void on_event(const vfmig_event *ev, void *user)
{
    phases *p = user;
    if (ev->type == VFMIG_EV_PHASE && p->n < 16)
        p->seen[p->n++] = ev->phase;
    if (ev->type == VFMIG_EV_ROUND)
        p->rounds++;
}

typedef struct tgt {
    vfmig_listener *l;
    vfmig_session *s;
    int rc;
} tgt;

static void *tgt_main(void *arg)
{
    tgt *t = arg;
    vfmig_link *link = NULL;
    t->rc = vfmig_accept(t->l, 5000, &link, NULL, 0);
    if (!t->rc)
        t->rc = vfmig_session_run(t->s, link);
    vfmig_link_close(link);
    return NULL;
}

/* Per-codec figures by query: every codec of the table once, the same bytes as the (deprecated)
 * fixed slots, per round as over the session; sized like the stats; out of range refused. */
static void check_codec_stats(const vfmig_session *s)
{
    unsigned n = vfmig_codec_count();
    ASSERT_TRUE(n >= 5 && n <= VFMIG_CODEC_SLOTS);
    vfmig_stats st;
    vfmig_session_get_stats(s, &st);
    uint32_t nr = vfmig_session_round_count(s);
    uint64_t seen = 0, in = 0, rounds_in = 0;
    for (unsigned i = 0; i < n; i++) {
        vfmig_codec_stats cs;
        ASSERT_OK(vfmig_session_get_codec_stats(s, i, &cs, sizeof cs));
        ASSERT_EQ(cs.codec, vfmig_codec_at(i));
        ASSERT_TRUE(cs.codec > VFMIG_CODEC_AUTO && cs.codec < VFMIG_CODEC_SLOTS);
        ASSERT_TRUE(!(seen & (1ull << cs.codec)));
        seen |= 1ull << cs.codec;
        ASSERT_TRUE(!strcmp(cs.name, vfmig_codec_name(cs.codec)));
        ASSERT_EQ(cs.bytes_in, st.codec_in[cs.codec]);
        ASSERT_EQ(cs.bytes_out, st.codec_out[cs.codec]);
        in += cs.bytes_in;
        for (uint32_t r = 0; r < nr; r++) {
            vfmig_codec_stats rc;
            vfmig_round_stats rs;
            ASSERT_OK(vfmig_session_get_round_codec_stats(s, r, i, &rc, sizeof rc));
            ASSERT_OK(vfmig_session_get_round(s, r, &rs));
            ASSERT_EQ(rc.codec, cs.codec);
            ASSERT_EQ(rc.bytes_in, rs.codec_in[cs.codec]);
            ASSERT_EQ(rc.bytes_out, rs.codec_out[cs.codec]);
            rounds_in += rc.bytes_in;
        }
    }
    ASSERT_TRUE(in > 0);
    if (nr) /* a target keeps no round records */
        ASSERT_EQ(in, rounds_in);
    ASSERT_EQ(in, st.bytes_raw + st.zero_pages * st.page_size); /* every page byte sent went through one codec */
    vfmig_codec_stats cs;
    ASSERT_EQ(vfmig_session_get_codec_stats(s, n, &cs, sizeof cs), VFMIG_EINVAL);
    ASSERT_EQ(vfmig_codec_at(n), VFMIG_EINVAL);
    ASSERT_EQ(vfmig_session_get_codec_stats(s, 0, &cs, 0), VFMIG_EINVAL);
    ASSERT_EQ(vfmig_session_get_codec_stats(s, 0, NULL, sizeof cs), VFMIG_EINVAL);
    ASSERT_EQ(vfmig_session_get_codec_stats(NULL, 0, &cs, sizeof cs), VFMIG_EINVAL);
    ASSERT_EQ(vfmig_session_get_round_codec_stats(s, nr, 0, &cs, sizeof cs), VFMIG_EINVAL);
    /* An older caller's smaller struct gets what it knows and nothing past it; a newer one's
     * extra room is zeroed. */
    struct {
        vfmig_codec_stats cs;
        uint64_t more;
    } big;
    memset(&big, 0xa5, sizeof big);
    ASSERT_OK(vfmig_session_get_codec_stats(s, 0, &big.cs, sizeof big));
    ASSERT_EQ(big.more, 0);
    _Alignas(vfmig_codec_stats) unsigned char small[sizeof(vfmig_codec_stats) + 8];
    memset(small, 0xa5, sizeof small);
    ASSERT_OK(vfmig_session_get_codec_stats(s, 0, (vfmig_codec_stats *)(void *)small, offsetof(vfmig_codec_stats, bytes_in)));
    ASSERT_EQ(small[offsetof(vfmig_codec_stats, bytes_in)], 0xa5);
}

static void test_phases_and_run_once(void)
{
    vfmig_simvf *a = sim(16 << 20, false), *b = sim(16 << 20, true);
    vfmig_device da, db;
    vfmig_simvf_device(a, &da);
    vfmig_simvf_device(b, &db);
    tgt t = {0};
    vfmig_session *s;
    ASSERT_OK(vfmig_session_create(VFMIG_ROLE_SOURCE, &da, &s, NULL, 0));
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_ON_BUDGET_MISS, VFMIG_BUDGET_MISS_SWITCH)); /* sanitizers */
    ASSERT_OK(vfmig_session_create(VFMIG_ROLE_TARGET, &db, &t.s, NULL, 0));
    phases ps = {0}, pt = {0};
    vfmig_session_set_callback(s, on_event, &ps);
    vfmig_session_set_callback(t.s, on_event, &pt);
    char err[256];
    if (vfmig_listen("tcp://127.0.0.1:0", &t.l, err, sizeof(err)))
        T_FAIL("listen: %s", err);
    char ep[64];
    snprintf(ep, sizeof(ep), "127.0.0.1:%d", vfmig_listener_port(t.l));
    pthread_t th;
    pthread_create(&th, NULL, tgt_main, &t);
    ASSERT_OK(vfmig_simvf_start(a));
    vfmig_link *link;
    ASSERT_OK(vfmig_connect(ep, 5000, &link, err, sizeof(err)));
    ASSERT_OK(vfmig_session_run(s, link));
    pthread_join(th, NULL);
    ASSERT_OK(t.rc);

    /* The source: handshake, pre-copy, blackout, done; the target the same. */
    static const vfmig_phase want[] = {VFMIG_PHASE_HANDSHAKE, VFMIG_PHASE_PRECOPY, VFMIG_PHASE_BLACKOUT,
                                       VFMIG_PHASE_DONE};
    ASSERT_EQ(ps.n, 4);
    ASSERT_EQ(pt.n, 4);
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(ps.seen[i], want[i]);
        ASSERT_EQ(pt.seen[i], want[i]);
    }
    ASSERT_TRUE(ps.rounds >= 2); /* round 0 and the final pass */
    ASSERT_EQ((uint32_t)ps.rounds, vfmig_session_round_count(s));
    vfmig_round_stats rs;
    ASSERT_OK(vfmig_session_get_round(s, 0, &rs));
    ASSERT_EQ(rs.round, 0);
    ASSERT_EQ(rs.dirty_pages, 256);
    ASSERT_EQ(vfmig_session_get_round(s, 999, &rs), VFMIG_EINVAL);
    check_codec_stats(s);
    check_codec_stats(t.s);

    /* A session runs once; parameters are frozen after. */
    ASSERT_EQ(vfmig_session_run(s, link), VFMIG_ESTATE);
    ASSERT_EQ(vfmig_session_set_param(s, VFMIG_P_BUDGET_MS, 10), VFMIG_ESTATE);
    vfmig_link_close(link);
    vfmig_listener_close(t.l);
    vfmig_session_destroy(s);
    vfmig_session_destroy(t.s);
    vfmig_simvf_destroy(a);
    vfmig_simvf_destroy(b);
}

/* Control while running: progress events with growing byte counts, a live budget change,
 * a refused change of another parameter (with a message), switch over now. */
typedef struct live {
    vfmig_session *s;
    int progress_events, refused, budget_ok, requested;
    uint64_t last_sent;
    bool sent_went_back;
    char refusal[256];
} live;

static void on_live(const vfmig_event *ev, void *user)
{
    live *l = user;
    if (ev->type == VFMIG_EV_PROGRESS) {
        ASSERT_TRUE(ev->progress && ev->progress->size == sizeof(vfmig_progress));
        if (ev->progress->bytes_sent < l->last_sent)
            l->sent_went_back = true;
        l->last_sent = ev->progress->bytes_sent;
        l->progress_events++;
    }
    if (ev->type == VFMIG_EV_ROUND && ev->round->round == 2 && !l->requested) {
        l->budget_ok = vfmig_session_set_param(l->s, VFMIG_P_BUDGET_MS, 2) == VFMIG_OK;
        if (vfmig_session_set_param(l->s, VFMIG_P_THREADS, 3) == VFMIG_ESTATE) {
            l->refused = 1;
            snprintf(l->refusal, sizeof(l->refusal), "%s", vfmig_session_last_error(l->s));
        }
        l->requested = vfmig_session_switchover_now(l->s) == VFMIG_OK;
    }
}

static void test_live_control(void)
{
    vfmig_simvf *a = sim(16 << 20, false), *b = sim(16 << 20, true);
    ASSERT_OK(vfmig_simvf_set_dirty_rate(a, 100 << 20));
    vfmig_device da, db;
    vfmig_simvf_device(a, &da);
    vfmig_simvf_device(b, &db);
    tgt t = {0};
    live l = {0};
    ASSERT_OK(vfmig_session_create(VFMIG_ROLE_SOURCE, &da, &l.s, NULL, 0));
    ASSERT_OK(vfmig_session_create(VFMIG_ROLE_TARGET, &db, &t.s, NULL, 0));
    vfmig_progress p = {.size = sizeof(p) - 1};
    ASSERT_EQ(vfmig_session_get_progress(l.s, &p), VFMIG_EINVAL);
    p.size = sizeof(p);
    ASSERT_OK(vfmig_session_get_progress(l.s, &p));
    ASSERT_EQ(p.bytes_done, 0);
    ASSERT_EQ(vfmig_session_switchover_now(t.s), VFMIG_ESTATE); /* a target has nothing to switch */
    /* A 1 ms budget that nothing meets, iterating until the caller says switch; capped so the
     * run lasts long enough for progress events every 20 ms. */
    ASSERT_OK(vfmig_session_set_param(l.s, VFMIG_P_BUDGET_MS, 1));
    ASSERT_OK(vfmig_session_set_param(l.s, VFMIG_P_MAX_ROUNDS, 1000));
    ASSERT_OK(vfmig_session_set_param(l.s, VFMIG_P_THROTTLE, 0));
    ASSERT_OK(vfmig_session_set_param(l.s, VFMIG_P_PROGRESS_MS, 20));
    ASSERT_OK(vfmig_session_set_param(l.s, VFMIG_P_MAX_BANDWIDTH, 64 << 20));
    vfmig_session_set_callback(l.s, on_live, &l);
    char err[256];
    if (vfmig_listen("tcp://127.0.0.1:0", &t.l, err, sizeof(err)))
        T_FAIL("listen: %s", err);
    char ep[64];
    snprintf(ep, sizeof(ep), "127.0.0.1:%d", vfmig_listener_port(t.l));
    pthread_t th;
    pthread_create(&th, NULL, tgt_main, &t);
    ASSERT_OK(vfmig_simvf_start(a));
    vfmig_link *link;
    ASSERT_OK(vfmig_connect(ep, 5000, &link, err, sizeof(err)));
    int rc = vfmig_session_run(l.s, link);
    pthread_join(th, NULL);
    if (rc || t.rc)
        T_FAIL("migration failed: %s / %s", vfmig_session_last_error(l.s), vfmig_session_last_error(t.s));
    vfmig_stats st;
    vfmig_session_get_stats(l.s, &st);
    if (!l.requested || st.switch_reason != VFMIG_SWITCH_REQUESTED)
        T_FAIL("switch over now: requested %d, reason %s after %u rounds", l.requested,
               vfmig_switch_reason_name(st.switch_reason), st.rounds);
    ASSERT_EQ(st.rounds, 4); /* asked during the event of round 2: round 3 was the one in flight */
    ASSERT_TRUE(l.budget_ok);
    int64_t v;
    ASSERT_OK(vfmig_session_get_param(l.s, VFMIG_P_BUDGET_MS, &v));
    ASSERT_EQ(v, 2);
    ASSERT_TRUE(l.refused && strstr(l.refusal, "cannot change while the session runs"));
    /* 16 MiB at 64 MiB/s: a quarter of a second at least, so some events came */
    ASSERT_TRUE(l.progress_events >= 1 && !l.sent_went_back);
    ASSERT_OK(vfmig_session_get_progress(l.s, &p));
    ASSERT_TRUE(p.bytes_done >= 16u << 20);
    vfmig_link_close(link);
    vfmig_listener_close(t.l);
    vfmig_session_destroy(l.s);
    vfmig_session_destroy(t.s);
    vfmig_simvf_destroy(a);
    vfmig_simvf_destroy(b);
}

/* A link from the embedder's own connections: here UNIX socket pairs (no TCP, no stream setup). */
typedef struct fd_tgt {
    vfmig_session *s;
    vfmig_link *link;
    int rc;
} fd_tgt;

static void *fd_tgt_main(void *arg)
{
    fd_tgt *t = arg;
    t->rc = vfmig_session_run(t->s, t->link);
    return NULL;
}

static void test_link_from_fds(void)
{
    int sp[3][2];
    for (int i = 0; i < 3; i++)
        ASSERT_TRUE(socketpair(AF_UNIX, SOCK_STREAM, 0, sp[i]) == 0);
    vfmig_link *la, *lb;
    char err[256];
    int da[2] = {sp[1][0], sp[2][0]}, db[2] = {sp[1][1], sp[2][1]};
    ASSERT_EQ(vfmig_link_from_fds(sp[0][0], da, 0, &la, err, sizeof(err)), VFMIG_EINVAL);
    int dup_fds[2] = {sp[1][0], sp[1][0]};
    ASSERT_EQ(vfmig_link_from_fds(sp[0][0], dup_fds, 2, &la, err, sizeof(err)), VFMIG_EINVAL);
    ASSERT_TRUE(strstr(err, "given twice") != NULL);
    int pfd[2];
    ASSERT_TRUE(pipe(pfd) == 0);
    int notsock[1] = {pfd[0]};
    ASSERT_EQ(vfmig_link_from_fds(sp[0][0], notsock, 1, &la, err, sizeof(err)), VFMIG_EINVAL);
    ASSERT_TRUE(strstr(err, "not a connected stream socket") != NULL);
    close(pfd[0]);
    close(pfd[1]);
    ASSERT_OK(vfmig_link_from_fds(sp[0][0], da, 2, &la, err, sizeof(err)));
    ASSERT_OK(vfmig_link_from_fds(sp[0][1], db, 2, &lb, err, sizeof(err)));
    ASSERT_EQ(vfmig_link_streams(la), 2);

    vfmig_simvf *a = sim(16 << 20, false), *b = sim(16 << 20, true);
    ASSERT_OK(vfmig_simvf_set_dirty_rate(a, 20 << 20));
    vfmig_device dva, dvb;
    vfmig_simvf_device(a, &dva);
    vfmig_simvf_device(b, &dvb);
    vfmig_session *s;
    fd_tgt t = {.link = lb};
    ASSERT_OK(vfmig_session_create(VFMIG_ROLE_SOURCE, &dva, &s, NULL, 0));
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_ON_BUDGET_MISS, VFMIG_BUDGET_MISS_SWITCH)); /* sanitizers */
    ASSERT_OK(vfmig_session_create(VFMIG_ROLE_TARGET, &dvb, &t.s, NULL, 0));
    static const char key[] = "a daemon's own channel, still authenticated";
    ASSERT_OK(vfmig_session_set_psk(s, key, sizeof(key) - 1));
    ASSERT_OK(vfmig_session_set_psk(t.s, key, sizeof(key) - 1));
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_VERIFY, VFMIG_VERIFY_FULL));
    ASSERT_OK(vfmig_session_set_param(t.s, VFMIG_P_VERIFY, VFMIG_VERIFY_FULL));
    pthread_t th;
    pthread_create(&th, NULL, fd_tgt_main, &t);
    ASSERT_OK(vfmig_simvf_start(a));
    int rc = vfmig_session_run(s, la);
    pthread_join(th, NULL);
    if (rc || t.rc)
        T_FAIL("migration over socket pairs failed: %s / %s", vfmig_session_last_error(s), vfmig_session_last_error(t.s));
    uint64_t na, nb;
    const uint8_t *va = vfmig_simvf_vram(a, &na), *vb = vfmig_simvf_vram(b, &nb);
    ASSERT_TRUE(na == nb && memcmp(va, vb, na) == 0);
    vfmig_link_close(la);
    vfmig_link_close(lb);
    vfmig_session_destroy(s);
    vfmig_session_destroy(t.s);
    vfmig_simvf_destroy(a);
    vfmig_simvf_destroy(b);
}

int main(void)
{
    test_device_validation();
    test_link_from_fds();
    test_phases_and_run_once();
    test_live_control();
    printf("session API tests passed\n");
    return 0;
}
