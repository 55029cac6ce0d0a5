/*
 * tests/test_budget.c - the budget as a contract in the blackout (vfmig_budget_miss): a
 * switch-over whose final pass turns out far slower than pre-copy measured is called off, the
 * VF resumes on the source and pre-copy goes on once (retry), the migration fails with EBUDGET
 * (abort), or the blackout runs over and says so (switch: budget_met = 0).
 *
 *   test_budget MODE        MODE: retry | abort | switch | verdict
 *
 * The source device has no map, so pages are read through its read op, one page a frame; while
 * the VF is paused for the first time each read takes SLOW_MS more (a final pass that pre-copy
 * could not foresee). The dirty set is written by the source's own query (48 pages every round,
 * none once the VF was paused: a workload gone idle), so the rounds are the same on any machine.
 * "verdict": the target's restore of the mutable state is slow instead, past the point where a
 * switch-over can be called off: the verified image gets ABORT instead of GO, and the VF runs on
 * the source.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "migrate_util.h"

#define TIMEOUT_MS 20000
#define VRAM (8ull << 20)
#define PS 4096ull
#define BUDGET_MS 300
#define SLOW_MS 40            /* per read in the first blackout: its 48 pages take ~2 s */
#define SLOW_RESTORE_MS 1000  /* the target's restore in "verdict" */
#define HOT_FIRST 64u
#define HOT_PAGES 48u

static _Atomic int g_pauses;
static _Atomic bool g_paused;
static bool g_slow_reads;
static uint64_t g_calls;

static void nap(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

static int slow_read(void *d, uint64_t off, void *dst, size_t len)
{
    if (g_slow_reads && atomic_load(&g_paused) && atomic_load(&g_pauses) == 1)
        nap(SLOW_MS);
    return f_read(d, off, dst, len);
}

static int counting_pause(void *d)
{
    atomic_fetch_add(&g_pauses, 1);
    atomic_store(&g_paused, true);
    return f_pause(d);
}

static int counting_resume(void *d)
{
    atomic_store(&g_paused, false);
    return f_resume(d);
}

static int slow_restore(void *d, const void *b, uint64_t size)
{
    nap(SLOW_RESTORE_MS);
    return f_rest_mut(d, b, size);
}

static int query_scripted(void *d, uint32_t r, uint64_t fp, uint64_t n, uint64_t *bm, int clear)
{
    fault_dev *f = FD(d);
    int rc = f_query(d, r, fp, n, bm, clear);
    bool idle = atomic_load(&g_pauses) > 0 && !atomic_load(&g_paused); /* after the first blackout */
    for (uint64_t p = HOT_FIRST; !idle && rc == VFMIG_OK && p < HOT_FIRST + HOT_PAGES; p++)
        if (p >= fp && p < fp + n)
            bm[(p - fp) / 64] |= 1ull << ((p - fp) % 64);
    if (rc || !clear || idle)
        return rc;
    g_calls++;
    for (uint64_t p = HOT_FIRST; p < HOT_FIRST + HOT_PAGES; p++) {
        uint64_t x = g_calls ^ p << 32;
        ASSERT_OK(f->inner.ops->write(f->inner.dev, f->inner.ranges[0].offset + p * PS + (g_calls * 8) % PS, &x, 8));
    }
    return rc;
}

static vfmig_session *make_session(vfmig_role role, const vfmig_device *dev, int miss)
{
    vfmig_session *s = session_with_timeout(role, dev, TIMEOUT_MS);
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_CODEC, VFMIG_CODEC_RAW));
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_BATCH_BYTES, PS)); /* one read per page */
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_BUDGET_MS, BUDGET_MS));
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_ON_BUDGET_MISS, miss));
    return s;
}

int main(int argc, char **argv)
{
    const char *mode = argc == 2 ? argv[1] : "";
    int miss = !strcmp(mode, "abort")    ? VFMIG_BUDGET_MISS_ABORT
               : !strcmp(mode, "switch") ? VFMIG_BUDGET_MISS_SWITCH
               : !strcmp(mode, "retry") || !strcmp(mode, "verdict") ? VFMIG_BUDGET_MISS_RETRY
                                                                    : -1;
    if (miss < 0) {
        fprintf(stderr, "usage: test_budget retry|abort|switch|verdict\n");
        return 2;
    }
    bool verdict = !strcmp(mode, "verdict");
    g_slow_reads = !verdict;

    vfmig_simvf *dst = idle_sim(VRAM, PS, true, 7), *src = idle_sim(VRAM, PS, false, 7);
    fault_dev tfd, sfd;
    fault_wrap_ex(&tfd, dst, -1, 0, ACT_NONE, true);
    fault_wrap_ex(&sfd, src, -1, 0, ACT_NONE, false);
    sfd.ops.query_dirty = query_scripted;
    sfd.ops.read = slow_read;
    sfd.ops.pause = counting_pause;
    sfd.ops.resume = counting_resume;
    if (verdict)
        tfd.ops.restore_mutable = slow_restore;
    accept_run t = {.s = make_session(VFMIG_ROLE_TARGET, &tfd.outer, miss), .timeout_ms = TIMEOUT_MS};
    vfmig_session *s = make_session(VFMIG_ROLE_SOURCE, &sfd.outer, miss);
    ASSERT_OK(vfmig_simvf_start(src));
    int rc = run_pair(s, &t, 1);

    vfmig_stats ss, ts;
    vfmig_session_get_stats(s, &ss);
    vfmig_session_get_stats(t.s, &ts);
    double blackout_ms = (double)ss.blackout_ns / 1e6;
    fprintf(stderr, "%s: source %s (%s), target %s (%s), %u rounds, %u called off (%.1f ms paused), blackout %.1f ms, "
                    "budget met %d (margin %.1f ms), pauses %d\n",
            mode, vfmig_status_name(rc), vfmig_session_last_error(s), vfmig_status_name(t.rc), t.err, ss.rounds,
            ss.switchovers_called_off, (double)ss.called_off_ns / 1e6, blackout_ms, ss.budget_met,
            ss.budget_margin_ms, atomic_load(&g_pauses));

    if (!strcmp(mode, "retry") || !strcmp(mode, "switch")) {
        if (rc || t.rc)
            T_FAIL("migration failed: source %s (%s), target %s (%s)", vfmig_status_name(rc),
                   vfmig_session_last_error(s), vfmig_status_name(t.rc), t.err);
        ASSERT_TRUE(ss.verified && ts.verified);
        ASSERT_EQ(ts.vf_state, VFMIG_VF_RESUMED_ON_TARGET);
        uint64_t at[1];
        ASSERT_EQ(vram_differences(src, dst, at, 1), 0);
        bool retry = !strcmp(mode, "retry");
        /* retry: called off once (the VF resumed, paused again later), then within the budget;
         * switch: never called off, over the budget and saying so. */
        ASSERT_EQ(ss.switchovers_called_off, retry ? 1 : 0);
        ASSERT_EQ(ts.switchovers_called_off, retry ? 1 : 0);
        ASSERT_EQ(atomic_load(&g_pauses), retry ? 2 : 1);
        ASSERT_EQ(ss.budget_met, retry ? 1 : 0);
        ASSERT_TRUE(retry ? ss.budget_margin_ms >= 0 : ss.budget_margin_ms < 0);
        ASSERT_TRUE(retry == (ss.called_off_ns > 0));
        if (retry && blackout_ms > BUDGET_MS)
            T_FAIL("reported ok over the budget: %.1f ms", blackout_ms);
    } else {
        /* abort: the first call-off ends it; verdict: verified too late, ABORT instead of GO. */
        if (rc != VFMIG_EBUDGET)
            T_FAIL("expected EBUDGET, got %s (%s)", vfmig_status_name(rc), vfmig_session_last_error(s));
        const char *why = verdict ? "verified the image" : "called off";
        if (!strstr(vfmig_session_last_error(s), why))
            T_FAIL("the error does not say \"%s\": %s", why, vfmig_session_last_error(s));
        ASSERT_TRUE(t.rc != VFMIG_OK);
        ASSERT_EQ(ss.vf_state, VFMIG_VF_RUNNING_ON_SOURCE);
        ASSERT_EQ(ts.vf_state, VFMIG_VF_NOT_RESUMED);
        ASSERT_TRUE(!ss.verified && !ts.verified);
        ASSERT_EQ(ss.switchovers_called_off, verdict ? 0 : 1);
        assert_not_resumed(dst, "target");
        ASSERT_EQ(vfmig_simvf_get_state(src), VFMIG_SIMVF_RUNNING);
    }
    vfmig_session_destroy(s);
    vfmig_session_destroy(t.s);
    vfmig_simvf_destroy(src);
    vfmig_simvf_destroy(dst);
    free(sfd.saved_mutable);
    free(tfd.saved_mutable);
    fprintf(stderr, "ok\n");
    return 0;
}
