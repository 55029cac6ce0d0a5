/*
 * tests/test_migrate.c - whole migrations of a simulated VF with a live workload, in one process
 * (two threads) or two (fork), and the failures that must leave the VF running on the source:
 *
 *   test_migrate CASE     (CASE names below; ctest runs each as its own test)
 *
 * Every successful case checks the target image byte for byte against the source's at pause and
 * the restored mutable state against the source's; every failing case checks a clear error on
 * both ends, the source VF running (its workload still writing), the target not resumed.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "migrate_util.h"

/* Longest wait on the peer: generous, since under ThreadSanitizer on a loaded 2-core machine a
 * healthy peer can be silent for seconds (3 s timed out there). */
#define TIMEOUT_MS 10000

typedef struct tcase {
    const char *name;
    /* workload and layout */
    uint64_t vram, page, rate, hot;
    uint32_t ranges;
    vfmig_pattern pattern;
    vfmig_content content;
    /* link and engine */
    unsigned streams;
    int codec, threads;
    int64_t budget_ms, max_rounds, bandwidth;
    /* faults: which end, which op, on which call, what happens */
    int fault_end; /* 0 none, 1 source, 2 target */
    int fault_op, fault_after, fault_action;
    bool two_procs;
    /* layout / version mismatch on the target */
    uint64_t target_vram;
    uint32_t target_version;
    const char *src_key, *dst_key; /* pre-shared keys (NULL: none) */
    bool src_encrypt, dst_encrypt;
    bool full_verify; /* both ends VFMIG_VERIFY_FULL */
    bool no_map;      /* devices without in-place access: pages through read/write */
    bool scripted;    /* no workload: the source's query writes (see query_scripted) */
    int expect; /* VFMIG_OK or the status the source must end with (0 = any error) */
    bool expect_error;
} tcase;

static vfmig_simvf *make_sim(const tcase *c, bool target)
{
    vfmig_simvf_config cfg;
    vfmig_simvf_config_init(&cfg);
    cfg.vram_bytes = target && c->target_vram ? c->target_vram : c->vram;
    cfg.page_size = c->page;
    cfg.nranges = c->ranges;
    cfg.dirty_rate = target ? 0 : c->rate;
    cfg.pattern = c->pattern;
    cfg.hot_bytes = c->hot;
    cfg.content = target ? VFMIG_CONTENT_ZERO : c->content;
    cfg.seed = 42;
    if (target && c->target_version)
        cfg.state_version = c->target_version;
    vfmig_simvf *sim;
    ASSERT_OK(vfmig_simvf_create(&cfg, &sim));
    return sim;
}

static vfmig_session *make_session(const tcase *c, vfmig_role role, const vfmig_device *dev)
{
    const char *key = role == VFMIG_ROLE_SOURCE ? c->src_key : c->dst_key;
    vfmig_session *s;
    char err[256];
    int rc = vfmig_session_create(role, dev, &s, err, sizeof(err));
    if (rc)
        T_FAIL("session_create: %s", err);
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_TIMEOUT_MS, TIMEOUT_MS));
    /* Fault cases count device calls: 256 KiB frames, as they were laid out. */
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_BATCH_BYTES, 256 << 10));
    if (c->codec)
        ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_CODEC, c->codec));
    if (c->threads)
        ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_THREADS, c->threads));
    if (c->budget_ms)
        ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_BUDGET_MS, c->budget_ms));
    if (c->full_verify)
        ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_VERIFY, VFMIG_VERIFY_FULL));
    /* What is checked here is the image and where the VF runs, not whether a budget is met (under
     * sanitizers on a loaded machine no budget is): over it, switch anyway. Cases with a budget
     * of their own use it to force rounds. */
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_ON_BUDGET_MISS, VFMIG_BUDGET_MISS_SWITCH));
    if (c->max_rounds)
        ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_MAX_ROUNDS, c->max_rounds));
    if (c->bandwidth)
        ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_MAX_BANDWIDTH, c->bandwidth));
    if (key)
        ASSERT_OK(vfmig_session_set_psk(s, key, strlen(key)));
    if (role == VFMIG_ROLE_SOURCE ? c->src_encrypt : c->dst_encrypt)
        ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_ENCRYPT, 1));
    return s;
}

static void listen_any(const tcase *c, vfmig_listener **l, char *ep, size_t eplen)
{
    char err[256];
    char want[128];
    snprintf(want, sizeof(want), "tcp://127.0.0.1:0?streams=%u", c->streams ? c->streams : 4);
    if (vfmig_listen(want, l, err, sizeof(err)))
        T_FAIL("listen: %s", err);
    snprintf(ep, eplen, "tcp://127.0.0.1:%d?streams=%u", vfmig_listener_port(*l), c->streams ? c->streams : 1);
}

typedef struct target_run {
    accept_run a;  /* listener, session, outcome */
    const tcase *c;
    vfmig_simvf *sim;
    fault_dev fd;
} target_run;

static void *target_thread(void *arg)
{
    return accept_run_main(&((target_run *)arg)->a);
}

static void target_setup(target_run *t, const tcase *c, vfmig_listener *l)
{
    memset(t, 0, sizeof(*t));
    t->c = c;
    t->a.l = l;
    t->a.timeout_ms = TIMEOUT_MS;
    t->sim = make_sim(c, true);
    int op = c->fault_end == 2 ? c->fault_op : -1;
    fault_wrap_ex(&t->fd, t->sim, op, c->fault_after, c->fault_end == 2 ? c->fault_action : ACT_NONE,
                  !c->no_map && op != OP_READ && op != OP_WRITE);
    t->a.s = make_session(c, VFMIG_ROLE_TARGET, &t->fd.outer);
    t->fd.cancel = t->a.s;
}

/* Source side: runs the migration with the fault wrapper; returns the status. */
/* Scripted writes, made by the source's collecting query itself (so before the round that sends
 * them, on the session's thread: the same bytes on every run): each round the 32 pages from
 * SCRIPT_WHOLE are rewritten whole and the 16 from SCRIPT_SMALL get one 8-byte write each (at a
 * place that moves every round). Those 48 pages always read as dirty; with a query cost floor
 * of 2 ms the 1 ms budget is never met, so the rounds run to MAX_ROUNDS. */
#define SCRIPT_WHOLE 64u
#define SCRIPT_SMALL 128u
static int query_scripted(void *d, uint32_t r, uint64_t fp, uint64_t n, uint64_t *bm, int clear)
{
    fault_dev *f = FD(d);
    struct timespec ts = {0, 2000000};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
    int rc = f_query(d, r, fp, n, bm, clear);
    const uint64_t ps = f->inner.page_size, base = f->inner.ranges[0].offset;
    static uint64_t calls; /* one source per process */
    uint8_t page[64 << 10];
    if (rc == VFMIG_OK && clear && ps <= sizeof(page)) {
        calls++;
        for (uint64_t p = SCRIPT_WHOLE; p < SCRIPT_WHOLE + 32; p++) {
            uint64_t x = calls * 0x9e3779b97f4a7c15ull ^ p;
            for (uint64_t i = 0; i < ps; i += 8) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                memcpy(page + i, &x, 8);
            }
            ASSERT_OK(f->inner.ops->write(f->inner.dev, base + p * ps, page, (size_t)ps));
        }
        for (uint64_t p = SCRIPT_SMALL; p < SCRIPT_SMALL + 16; p++) {
            uint64_t x = calls ^ p << 32;
            ASSERT_OK(f->inner.ops->write(f->inner.dev, base + p * ps + (calls * 8) % ps, &x, 8));
        }
    }
    for (uint64_t p = fp; rc == VFMIG_OK && r == 0 && p < fp + n; p++)
        if ((p >= SCRIPT_WHOLE && p < SCRIPT_WHOLE + 32) || (p >= SCRIPT_SMALL && p < SCRIPT_SMALL + 16))
            bm[(p - fp) / 64] |= 1ull << ((p - fp) % 64);
    return rc;
}

static int source_run(const tcase *c, const char *ep, vfmig_simvf *sim, fault_dev *fd, vfmig_session **out)
{
    int op = c->fault_end == 1 ? c->fault_op : -1;
    fault_wrap_ex(fd, sim, op, c->fault_after, c->fault_end == 1 ? c->fault_action : ACT_NONE,
                  !c->no_map && op != OP_READ && op != OP_WRITE);
    if (c->scripted)
        fd->ops.query_dirty = query_scripted;
    vfmig_session *s = make_session(c, VFMIG_ROLE_SOURCE, &fd->outer);
    fd->cancel = s;
    *out = s;
    vfmig_link *link;
    char err[256];
    int rc = vfmig_connect(ep, TIMEOUT_MS, &link, err, sizeof(err));
    if (rc)
        T_FAIL("connect %s: %s", ep, err);
    rc = vfmig_session_run(s, link);
    vfmig_link_close(link);
    return rc;
}

static void check_equal(vfmig_simvf *src, vfmig_simvf *dst, const fault_dev *srcdev)
{
    uint64_t a, b;
    const uint8_t *va = vfmig_simvf_vram(src, &a), *vb = vfmig_simvf_vram(dst, &b);
    ASSERT_EQ(a, b);
    for (uint64_t i = 0; i < a; i++)
        if (va[i] != vb[i])
            T_FAIL("target image differs from the source at byte %llu", (unsigned long long)i);
    /* The target restored exactly the blob the source saved in the blackout. */
    uint64_t m = 0;
    const uint8_t *got = vfmig_simvf_restored_mutable(dst, &m);
    ASSERT_TRUE(got != NULL && srcdev->saved_mutable != NULL);
    ASSERT_EQ(m, srcdev->saved_mutable_size);
    ASSERT_TRUE(memcmp(got, srcdev->saved_mutable, m) == 0);
}

static void report(const char *who, vfmig_session *s)
{
    vfmig_stats st;
    vfmig_session_get_stats(s, &st);
    fprintf(stderr, "%s: status %s, %u rounds, blackout %.2f ms, %llu pages sent (%llu zero), %.1f MiB wire, ratio %.2f, vf %s%s%s\n",
            who, vfmig_status_name(st.status), st.rounds, (double)st.blackout_ns / 1e6,
            (unsigned long long)st.pages_sent, (unsigned long long)st.zero_pages,
            (double)st.bytes_wire / 1048576.0, st.ratio, vfmig_vf_state_name(st.vf_state),
            st.status ? ", error: " : "", st.status ? vfmig_session_last_error(s) : "");
}

static void run_in_process(const tcase *c)
{
    vfmig_listener *l;
    char ep[160];
    listen_any(c, &l, ep, sizeof(ep));
    target_run t;
    target_setup(&t, c, l);
    vfmig_simvf *src = make_sim(c, false);
    ASSERT_OK(vfmig_simvf_start(src));
    sleep_ms(20); /* let the workload get going */
    pthread_t th;
    ASSERT_TRUE(pthread_create(&th, NULL, target_thread, &t) == 0);
    fault_dev sfd;
    vfmig_session *s;
    int rc = source_run(c, ep, src, &sfd, &s);
    pthread_join(th, NULL);
    vfmig_listener_close(l);
    report("source", s);
    report("target", t.a.s);
    vfmig_stats ss, ts;
    vfmig_session_get_stats(s, &ss);
    vfmig_session_get_stats(t.a.s, &ts);

    if (!c->expect_error) {
        if (rc || t.a.rc)
            T_FAIL("migration failed: source %s (%s), target %s (%s)", vfmig_status_name(rc),
                   vfmig_session_last_error(s), vfmig_status_name(t.a.rc), t.a.err);
        ASSERT_TRUE(ss.verified && ts.verified);
        ASSERT_EQ(ss.vf_state, VFMIG_VF_RESUMED_ON_TARGET);
        ASSERT_EQ(ts.vf_state, VFMIG_VF_RESUMED_ON_TARGET);
        ASSERT_EQ(vfmig_simvf_get_state(src), VFMIG_SIMVF_PAUSED);
        check_equal(src, t.sim, &sfd);
        vfmig_simvf_counters tc;
        vfmig_simvf_get_counters(t.sim, &tc);
        ASSERT_EQ(tc.resumes, 1);
        ASSERT_EQ(tc.ends, 1);
        ASSERT_TRUE(ss.blackout_ns > 0 && ss.rounds >= 1);
        if (c->scripted) {
            /* Rounds 1..4 and the final pass each send the 48 pages. The small writes leave the
             * pages' marks alone (or nearly all: one may land on a marked word), so those take
             * copies in round 1 and go as deltas from round 2 on; the pages rewritten whole
             * never take a copy, so never cost one. */
            const uint64_t ps = c->page;
            ASSERT_EQ(ss.rounds, (uint32_t)c->max_rounds);
            if (ss.delta_cache_bytes > 16 * ps)
                T_FAIL("delta cache holds %llu pages: more than the 16 written in small pieces",
                       (unsigned long long)(ss.delta_cache_bytes / ps));
            if (ss.codec_in[VFMIG_CODEC_DELTA] < 3 * 14 * ps)
                T_FAIL("%llu pages went as deltas: the 16 written in small pieces should, from round 2 on",
                       (unsigned long long)(ss.codec_in[VFMIG_CODEC_DELTA] / ps));
        }
    } else {
        ASSERT_TRUE(rc != VFMIG_OK);
        ASSERT_TRUE(t.a.rc != VFMIG_OK);
        if (c->expect)
            ASSERT_EQ(rc, c->expect);
        ASSERT_TRUE(strlen(vfmig_session_last_error(s)) > 0);
        ASSERT_TRUE(strlen(t.a.err) > 0);
        ASSERT_EQ(ss.vf_state, VFMIG_VF_RUNNING_ON_SOURCE);
        ASSERT_EQ(ts.vf_state, VFMIG_VF_NOT_RESUMED);
        ASSERT_TRUE(!ss.verified && !ts.verified);
        assert_running(src, "source");
        assert_not_resumed(t.sim, "target");
        vfmig_simvf_counters sc;
        vfmig_simvf_get_counters(src, &sc);
        ASSERT_EQ(sc.ends, 1); /* the migration configuration was undone */
        if (c->expect == VFMIG_EINCOMPAT && !strstr(vfmig_session_last_error(s), "state version"))
            T_FAIL("the refusal does not say why (the device's describe op): %s", vfmig_session_last_error(s));
        if (c->expect == VFMIG_EAUTH) {
            /* Without the right key nothing of the VF moved, in either direction. */
            ASSERT_EQ(atomic_load(&sfd.calls[OP_READ]), 0);
            ASSERT_EQ(atomic_load(&sfd.calls[OP_SAVE_IMM]) > 0 && atomic_load(&t.fd.calls[OP_RESTORE_IMM]) > 0, 0);
            ASSERT_EQ(atomic_load(&t.fd.calls[OP_WRITE]), 0);
            /* The target refuses, or hears from the source that it refused the target. */
            ASSERT_TRUE(t.a.rc == VFMIG_EAUTH || (t.a.rc == VFMIG_EABORTED && strstr(t.a.err, "authentication")));
        }
    }
    vfmig_session_destroy(s);
    vfmig_session_destroy(t.a.s);
    vfmig_simvf_destroy(src);
    vfmig_simvf_destroy(t.sim);
    free(sfd.saved_mutable);
    free(t.fd.saved_mutable);
}

/* Two processes: the end with the fault runs in a child, which may die (ACT_EXIT). */
static void run_two_procs(const tcase *c)
{
    vfmig_listener *l;
    char ep[160];
    listen_any(c, &l, ep, sizeof(ep));
    fflush(NULL);
    bool child_is_target = c->fault_end == 2 || c->fault_end == 0;
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        if (child_is_target) {
            target_run t;
            target_setup(&t, c, l);
            target_thread(&t);
            vfmig_listener_close(l);
            _exit(t.a.rc == 0 ? 0 : 1);
        }
        vfmig_listener_close(l);
        vfmig_simvf *src = make_sim(c, false);
        ASSERT_OK(vfmig_simvf_start(src));
        fault_dev sfd;
        vfmig_session *s;
        int rc = source_run(c, ep, src, &sfd, &s);
        _exit(rc == 0 ? 0 : 1);
    }
    int wst;
    if (child_is_target) {
        vfmig_listener_close(l);
        vfmig_simvf *src = make_sim(c, false);
        ASSERT_OK(vfmig_simvf_start(src));
        fault_dev sfd;
        vfmig_session *s;
        int rc = source_run(c, ep, src, &sfd, &s);
        report("source", s);
        ASSERT_TRUE(waitpid(pid, &wst, 0) == pid);
        vfmig_stats ss;
        vfmig_session_get_stats(s, &ss);
        if (!c->expect_error) {
            if (rc)
                T_FAIL("migration failed: %s", vfmig_session_last_error(s));
            ASSERT_TRUE(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
            ASSERT_TRUE(ss.verified);
            ASSERT_EQ(ss.vf_state, VFMIG_VF_RESUMED_ON_TARGET);
        } else {
            ASSERT_TRUE(rc != VFMIG_OK);
            ASSERT_TRUE(strlen(vfmig_session_last_error(s)) > 0);
            ASSERT_EQ(ss.vf_state, VFMIG_VF_RUNNING_ON_SOURCE);
            ASSERT_TRUE(WIFEXITED(wst) && WEXITSTATUS(wst) == 3); /* the target died as planned */
            assert_running(src, "source");
        }
        vfmig_session_destroy(s);
        vfmig_simvf_destroy(src);
        free(sfd.saved_mutable);
    } else {
        target_run t;
        target_setup(&t, c, l);
        target_thread(&t);
        vfmig_listener_close(l);
        report("target", t.a.s);
        ASSERT_TRUE(waitpid(pid, &wst, 0) == pid);
        ASSERT_TRUE(WIFEXITED(wst) && WEXITSTATUS(wst) == 3); /* the source died as planned */
        ASSERT_TRUE(t.a.rc != VFMIG_OK);
        ASSERT_TRUE(strlen(t.a.err) > 0);
        vfmig_stats ts;
        vfmig_session_get_stats(t.a.s, &ts);
        ASSERT_EQ(ts.vf_state, VFMIG_VF_NOT_RESUMED);
        assert_not_resumed(t.sim, "target");
        vfmig_session_destroy(t.a.s);
        vfmig_simvf_destroy(t.sim);
        free(t.fd.saved_mutable);
    }
}

#define MiB (1ull << 20)
#define BASE .vram = 64 * MiB, .page = 64 << 10, .ranges = 1, .rate = 100 * MiB, .pattern = VFMIG_PATTERN_HOT, \
             .hot = 8 * MiB, .content = VFMIG_CONTENT_MIX

static const tcase cases[] = {
    {"local", BASE},
    {"local_streams4", BASE, .streams = 4, .threads = 2},
    {"local_ranges_4k", .vram = 48 * MiB, .page = 4096, .ranges = 3, .rate = 50 * MiB,
     .pattern = VFMIG_PATTERN_UNIFORM, .content = VFMIG_CONTENT_MIX, .streams = 2},
    {"local_seq_2m_pages", .vram = 64 * MiB, .page = 2 * MiB, .ranges = 2, .rate = 200 * MiB,
     .pattern = VFMIG_PATTERN_SEQ, .content = VFMIG_CONTENT_TEXTURE,
     .budget_ms = 1000 /* the sweep keeps all 32 pages (64 MiB) dirty: the final pass is all of them */},
    /* more threads than streams: the target decodes on a pool, rounds still barriers */
    {"decode_pool", BASE, .streams = 1, .threads = 3},
    {"decode_pool_delta", BASE, .streams = 2, .threads = 4, .codec = VFMIG_CODEC_DELTA, .budget_ms = 1,
     .max_rounds = 6},
    {"codec_raw", BASE, .codec = VFMIG_CODEC_RAW},
    {"codec_lz4", BASE, .codec = VFMIG_CODEC_LZ4},
    {"codec_zstd", BASE, .codec = VFMIG_CODEC_ZSTD, .streams = 2},
    {"codec_delta", BASE, .codec = VFMIG_CODEC_DELTA, .streams = 3, .budget_ms = 1, .max_rounds = 6},
    {"codec_auto_capped", BASE, .codec = VFMIG_CODEC_AUTO, .bandwidth = 400 * MiB},
    /* which pages the delta cache keeps copies of: only those that change little */
    {"delta_cache_small_writes", .vram = 16 * MiB, .page = 4096, .ranges = 1, .content = VFMIG_CONTENT_RANDOM,
     .codec = VFMIG_CODEC_AUTO, .streams = 2, .budget_ms = 1, .max_rounds = 5, .scripted = true},
    {"forced_switch_rounds", .vram = 64 * MiB, .page = 64 << 10, .ranges = 1, .rate = 400 * MiB,
     .pattern = VFMIG_PATTERN_HOT, .hot = 8 * MiB, .content = VFMIG_CONTENT_MIX, .budget_ms = 1, .max_rounds = 3},
    /* two processes compare their whole VRAMs (full verification) before the target resumes */
    {"two_procs", BASE, .two_procs = true, .streams = 2, .full_verify = true},
    {"two_procs_copying", BASE, .two_procs = true, .streams = 2, .full_verify = true, .no_map = true},
    {"local_copying", BASE, .streams = 2, .no_map = true},
    {"codec_delta_copying", BASE, .codec = VFMIG_CODEC_DELTA, .streams = 2, .budget_ms = 1, .max_rounds = 6,
     .no_map = true},
    /* failures */
    {"kill_target_precopy", BASE, .two_procs = true, .fault_end = 2, .fault_op = OP_WRITE, .fault_after = 20,
     .fault_action = ACT_EXIT, .expect_error = true},
    {"kill_target_blackout", BASE, .two_procs = true, .fault_end = 2, .fault_op = OP_RESTORE_MUT, .fault_after = 1,
     .fault_action = ACT_EXIT, .expect_error = true},
    {"kill_source_precopy", BASE, .two_procs = true, .fault_end = 1, .fault_op = OP_READ, .fault_after = 30,
     .fault_action = ACT_EXIT, .expect_error = true},
    {"kill_source_blackout", BASE, .two_procs = true, .fault_end = 1, .fault_op = OP_SAVE_MUT, .fault_after = 1,
     .fault_action = ACT_EXIT, .expect_error = true},
    {"layout_mismatch", BASE, .target_vram = 32 * MiB, .expect = VFMIG_ELAYOUT, .expect_error = true},
    {"immutable_refused", BASE, .target_version = 7, .expect = VFMIG_EINCOMPAT, .expect_error = true},
    {"target_image_corrupt", BASE, .fault_end = 2, .fault_op = OP_WRITE, .fault_after = 200,
     .fault_action = ACT_CORRUPT, .expect = VFMIG_EDIGEST, .expect_error = true},
    /* a page changed on the target after it was applied: only re-reading VRAM can see it */
    {"target_stray_write", BASE, .full_verify = true, .fault_end = 2, .fault_op = OP_WRITE, .fault_after = 300,
     .fault_action = ACT_STRAY, .expect = VFMIG_EDIGEST, .expect_error = true},
    {"target_restore_fails", BASE, .fault_end = 2, .fault_op = OP_RESTORE_MUT, .fault_after = 1,
     .fault_action = ACT_FAIL, .expect = VFMIG_EDEVICE, .expect_error = true},
    {"source_read_fails", BASE, .fault_end = 1, .fault_op = OP_READ, .fault_after = 40, .fault_action = ACT_FAIL,
     .expect = VFMIG_EDEVICE, .expect_error = true},
    {"cancel_precopy", BASE, .fault_end = 1, .fault_op = OP_QUERY, .fault_after = 2, .fault_action = ACT_CANCEL,
     .expect = VFMIG_ECANCELED, .expect_error = true},
    {"cancel_blackout", BASE, .fault_end = 1, .fault_op = OP_SAVE_MUT, .fault_after = 1, .fault_action = ACT_CANCEL,
     .expect = VFMIG_ECANCELED, .expect_error = true},
    {"auth_ok", BASE, .src_key = "correct horse battery staple, 32+ bytes", .dst_key = "correct horse battery staple, 32+ bytes"},
    {"auth_wrong_key", BASE, .src_key = "correct horse battery staple, 32+ bytes", .dst_key = "correct horse battery stable, 32+ bytes",
     .expect = VFMIG_EAUTH, .expect_error = true},
    {"auth_target_has_no_key", BASE, .src_key = "correct horse battery staple, 32+ bytes", .expect = VFMIG_EAUTH,
     .expect_error = true},
    {"auth_source_has_no_key", BASE, .dst_key = "correct horse battery staple, 32+ bytes", .expect = VFMIG_EAUTH,
     .expect_error = true},
#define KEY "correct horse battery staple, 32+ bytes"
    {"encrypted", BASE, .streams = 3, .src_key = KEY, .dst_key = KEY, .src_encrypt = true},
    {"encrypted_required", BASE, .src_key = KEY, .dst_key = KEY, .src_encrypt = true, .dst_encrypt = true,
     .codec = VFMIG_CODEC_DELTA},
    {"encryption_refused", BASE, .src_key = KEY, .dst_key = KEY, .dst_encrypt = true, .expect = VFMIG_EAUTH,
     .expect_error = true},
    {"cancel_target", BASE, .fault_end = 2, .fault_op = OP_WRITE, .fault_after = 30, .fault_action = ACT_CANCEL,
     .expect = VFMIG_EABORTED, .expect_error = true},
};

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc != 2) {
        fprintf(stderr, "usage: test_migrate CASE\ncases:");
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
            fprintf(stderr, " %s", cases[i].name);
        fprintf(stderr, "\n");
        return 2;
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (strcmp(cases[i].name, argv[1]))
            continue;
        if (cases[i].two_procs)
            run_two_procs(&cases[i]);
        else
            run_in_process(&cases[i]);
        printf("%s: passed\n", argv[1]);
        return 0;
    }
    fprintf(stderr, "unknown case %s\n", argv[1]);
    return 2;
}
