/*
 * tests/migrate_util.h - helpers for migration tests: a device wrapper that injects faults at a
 * chosen call of a chosen op (exit the process, fail, cancel a session, corrupt data), and
 * checks of where the VF runs after a migration.
 */
#ifndef VFMIG_TESTS_MIGRATE_UTIL_H
#define VFMIG_TESTS_MIGRATE_UTIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "vfmig_sim.h"

enum fault_op {
    OP_PREPARE, OP_END, OP_START, OP_STOP, OP_QUERY, OP_READ, OP_WRITE, OP_PAUSE, OP_RESUME,
    OP_SAVE_IMM, OP_SAVE_MUT, OP_RESTORE_IMM, OP_RESTORE_MUT, OP_THROTTLE, OP_COUNT
};
enum fault_action {
    ACT_NONE,
    ACT_EXIT,    /* the process dies (_exit), like a host crash of that end */
    ACT_FAIL,    /* the op returns VFMIG_EDEVICE */
    ACT_CANCEL,  /* vfmig_session_cancel(cancel) from inside the op, then the op proceeds */
    ACT_CORRUPT, /* write: flip a byte of what is written */
    ACT_STRAY    /* from that write on: the VF's last byte changes behind the engine's back
                    after the engine last wrote it (a stray device write) */
};

typedef struct fault_dev {
    vfmig_device inner;
    vfmig_device outer; /* what the session gets */
    vfmig_device_ops ops;
    int op, after, action;
    vfmig_session *cancel;
    _Atomic int calls[OP_COUNT];
    bool stray_done;        /* ACT_STRAY: the last byte is changed since the engine wrote it */
    uint8_t *saved_mutable; /* copy of the last blob save_mutable produced */
    uint64_t saved_mutable_size;
} fault_dev;

static inline bool fault_hit(fault_dev *f, int op)
{
    int n = atomic_fetch_add(&f->calls[op], 1) + 1;
    if (f->op != op || n != f->after)
        return false;
    if (f->action == ACT_EXIT)
        _exit(3);
    if (f->action == ACT_CANCEL && f->cancel)
        vfmig_session_cancel(f->cancel);
    return f->action == ACT_FAIL || f->action == ACT_CORRUPT;
}

#define FD(d) ((fault_dev *)(d))
#define INNER(d) FD(d)->inner.dev
#define FWD(op, call)                                                                              \
    do {                                                                                           \
        if (fault_hit(FD(d), op) && FD(d)->action == ACT_FAIL)                                     \
            return VFMIG_EDEVICE;                                                                  \
        return FD(d)->inner.ops->call;                                                             \
    } while (0)

static int f_prepare(void *d, vfmig_role r) { FWD(OP_PREPARE, prepare(INNER(d), r)); }
static int f_end(void *d) { FWD(OP_END, end(INNER(d))); }
static int f_start(void *d) { FWD(OP_START, start_tracking(INNER(d))); }
static int f_stop(void *d) { FWD(OP_STOP, stop_tracking(INNER(d))); }
static int f_query(void *d, uint32_t r, uint64_t fp, uint64_t n, uint64_t *bm, int c)
{
    FWD(OP_QUERY, query_dirty(INNER(d), r, fp, n, bm, c));
}
static int f_read(void *d, uint64_t off, void *dst, size_t len) { FWD(OP_READ, read(INNER(d), off, dst, len)); }
static int f_write(void *d, uint64_t off, const void *src, size_t len)
{
    fault_dev *f = FD(d);
    if (fault_hit(f, OP_WRITE)) {
        if (f->action == ACT_FAIL)
            return VFMIG_EDEVICE;
        /* ACT_CORRUPT: the device stores something else than it was given. */
        int rc = f->inner.ops->write(INNER(d), off, src, len);
        uint8_t b;
        f->inner.ops->read(INNER(d), off + len / 2, &b, 1);
        b ^= 0x5a;
        f->inner.ops->write(INNER(d), off + len / 2, &b, 1);
        return rc;
    }
    int rc = f->inner.ops->write(INNER(d), off, src, len);
    if (f->action == ACT_STRAY && f->op == OP_WRITE && atomic_load(&f->calls[OP_WRITE]) >= f->after) {
        const vfmig_range *last = &f->inner.ranges[f->inner.nranges - 1];
        uint64_t at = last->offset + last->size - 1;
        if (at >= off && at < off + len) {
            f->stray_done = false; /* the engine wrote it: strike again at the next write */
        } else if (!f->stray_done) {
            uint8_t b;
            f->inner.ops->read(INNER(d), at, &b, 1);
            b ^= 0x5a;
            f->inner.ops->write(INNER(d), at, &b, 1);
            f->stray_done = true;
        }
    }
    return rc;
}
static int f_pause(void *d) { FWD(OP_PAUSE, pause(INNER(d))); }
static int f_resume(void *d) { FWD(OP_RESUME, resume(INNER(d))); }
static int f_save_imm(void *d, void *b, uint64_t *s) { FWD(OP_SAVE_IMM, save_immutable(INNER(d), b, s)); }
static int f_save_mut(void *d, void *b, uint64_t *s)
{
    if (fault_hit(FD(d), OP_SAVE_MUT) && FD(d)->action == ACT_FAIL)
        return VFMIG_EDEVICE;
    int rc = FD(d)->inner.ops->save_mutable(INNER(d), b, s);
    if (!rc && b) {
        free(FD(d)->saved_mutable);
        FD(d)->saved_mutable = malloc(*s);
        memcpy(FD(d)->saved_mutable, b, *s);
        FD(d)->saved_mutable_size = *s;
    }
    return rc;
}
static int f_rest_imm(void *d, const void *b, uint64_t s) { FWD(OP_RESTORE_IMM, restore_immutable(INNER(d), b, s)); }
static int f_rest_mut(void *d, const void *b, uint64_t s) { FWD(OP_RESTORE_MUT, restore_mutable(INNER(d), b, s)); }
static int f_throttle(void *d, unsigned p) { FWD(OP_THROTTLE, throttle(INNER(d), p)); }

static void *f_map(void *d, uint64_t off, uint64_t len) { return FD(d)->inner.ops->map(INNER(d), off, len); }
static void f_describe(void *d, char *buf, size_t len) { FD(d)->inner.ops->describe(INNER(d), buf, len); }

/* Wraps a sim's device; with action ACT_NONE it only counts calls. `map`: offer the sim's
 * in-place access (pages then bypass read/write, so faults in those need it off). */
static inline void fault_wrap_ex(fault_dev *f, vfmig_simvf *sim, int op, int after, int action, bool map)
{
    memset(f, 0, sizeof(*f));
    vfmig_simvf_device(sim, &f->inner);
    f->ops = (vfmig_device_ops){f_prepare, f_end, f_start, f_stop, f_query, f_read, f_write, f_pause,
                                f_resume, f_save_imm, f_save_mut, f_rest_imm, f_rest_mut,
                                f->inner.ops->throttle ? f_throttle : NULL,
                                map && f->inner.ops->map ? f_map : NULL,
                                f->inner.ops->describe ? f_describe : NULL};
    f->outer = f->inner;
    f->outer.ops = &f->ops;
    f->outer.dev = f;
    f->op = op;
    f->after = after;
    f->action = action;
}

/* As fault_wrap_ex; in-place access stays on unless the fault is in read or write. */
static inline void fault_wrap(fault_dev *f, vfmig_simvf *sim, int op, int after, int action)
{
    fault_wrap_ex(f, sim, op, after, action, op != OP_READ && op != OP_WRITE);
}

static inline void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The source VF runs: not paused, and its workload keeps writing. */
static inline void assert_running(vfmig_simvf *sim, const char *who)
{
    if (vfmig_simvf_get_state(sim) != VFMIG_SIMVF_RUNNING)
        T_FAIL("%s: VF is not running after the migration failed", who);
    vfmig_simvf_counters a, b;
    vfmig_simvf_get_counters(sim, &a);
    for (int i = 0; i < 100; i++) {
        sleep_ms(10);
        vfmig_simvf_get_counters(sim, &b);
        if (b.writes > a.writes)
            return;
    }
    T_FAIL("%s: the workload made no progress in 1 s after the failure", who);
}

static inline void assert_not_resumed(vfmig_simvf *sim, const char *who)
{
    vfmig_simvf_counters c;
    vfmig_simvf_get_counters(sim, &c);
    if (c.resumes != 0 || vfmig_simvf_get_state(sim) == VFMIG_SIMVF_RUNNING)
        T_FAIL("%s: target VF was resumed (resumes=%u)", who, c.resumes);
}

/* A target session run on its own thread: accepts one link on `l`, runs `s` over it. */
typedef struct accept_run {
    vfmig_listener *l;
    vfmig_session *s;
    int timeout_ms;
    int rc;
    char err[512];
} accept_run;

static inline void *accept_run_main(void *arg)
{
    accept_run *t = (accept_run *)arg;
    vfmig_link *link = NULL;
    char err[256];
    t->rc = vfmig_accept(t->l, t->timeout_ms, &link, err, sizeof(err));
    if (t->rc) {
        snprintf(t->err, sizeof(t->err), "accept: %s", err);
        return NULL;
    }
    t->rc = vfmig_session_run(t->s, link);
    snprintf(t->err, sizeof(t->err), "%s", vfmig_session_last_error(t->s));
    vfmig_link_close(link);
    return NULL;
}

/* Bytes at which two sims' VRAMs differ (the first `max` of them into at[]). */
static inline uint64_t vram_differences(vfmig_simvf *a, vfmig_simvf *b, uint64_t *at, uint64_t max)
{
    uint64_t na, nb, n = 0;
    const uint8_t *va = vfmig_simvf_vram(a, &na), *vb = vfmig_simvf_vram(b, &nb);
    ASSERT_EQ(na, nb);
    for (uint64_t i = 0; i < na; i++)
        if (va[i] != vb[i] && n++ < max)
            at[n - 1] = i;
    return n;
}

/* A sim with no workload of its own (the test writes it): random content for a source, zeros
 * for a target. */
static inline vfmig_simvf *idle_sim(uint64_t vram, uint64_t page, bool target, uint64_t seed)
{
    vfmig_simvf_config cfg;
    vfmig_simvf_config_init(&cfg);
    cfg.vram_bytes = vram;
    cfg.page_size = page;
    cfg.nranges = 1;
    cfg.dirty_rate = 0;
    cfg.content = target ? VFMIG_CONTENT_ZERO : VFMIG_CONTENT_RANDOM;
    cfg.seed = seed;
    vfmig_simvf *sim;
    ASSERT_OK(vfmig_simvf_create(&cfg, &sim));
    return sim;
}

/* A session over `dev` with the given peer timeout. */
static inline vfmig_session *session_with_timeout(vfmig_role role, const vfmig_device *dev, int timeout_ms)
{
    vfmig_session *s;
    char err[256];
    if (vfmig_session_create(role, dev, &s, err, sizeof(err)))
        T_FAIL("session_create: %s", err);
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_TIMEOUT_MS, timeout_ms));
    return s;
}

/* One migration over loopback with `streams` streams: the target session t->s runs on a thread
 * of its own (t->rc, t->err: its outcome), the source session on this one. Returns the source's
 * status. */
static inline int run_pair(vfmig_session *src, accept_run *t, unsigned streams)
{
    char err[256], want[64], ep[160];
    snprintf(want, sizeof(want), "tcp://127.0.0.1:0?streams=%u", streams);
    if (vfmig_listen(want, &t->l, err, sizeof(err)))
        T_FAIL("listen: %s", err);
    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d?streams=%u", vfmig_listener_port(t->l), streams);
    pthread_t th;
    ASSERT_TRUE(pthread_create(&th, NULL, accept_run_main, t) == 0);
    vfmig_link *link;
    if (vfmig_connect(ep, t->timeout_ms, &link, err, sizeof(err)))
        T_FAIL("connect %s: %s", ep, err);
    int rc = vfmig_session_run(src, link);
    vfmig_link_close(link);
    pthread_join(th, NULL);
    vfmig_listener_close(t->l);
    return rc;
}

#endif
