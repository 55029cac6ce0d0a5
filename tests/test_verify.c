/*
 * tests/test_verify.c - what each verification mode proves, shown by corrupting target VRAM.
 *
 *   test_verify KIND WHEN MODE     (ctest runs each combination as verify_KIND_WHEN_MODE)
 *
 * A scripted source (no workload: its collecting query writes the same bytes on every run) keeps
 * one page of each KIND dirty every round, so the page travels the way KIND names:
 *   raw           raw frames received straight into a mapped target's VRAM
 *   delta         delta frames patched in place in a mapped target's VRAM
 *   delta_copied  delta frames on a target without map (base read, patched, written back)
 *   lz4_copied    lz4 frames on a target without map (decoded, written through the device)
 *   zero          zero-page frames (the page is rewritten to zeros every round)
 * After round FLIP_ROUND has been applied (the source's query after the round's acknowledgement,
 * so the target's receivers are idle), one bit of that page is flipped in target VRAM behind
 * the engine's back. WHEN:
 *   none     no flip: the control run, which must migrate with images equal
 *   resent   the page is sent again after the flip (rounds FLIP_ROUND+1.. and the final pass)
 *   after    the page is not written again, so never re-sent: the flip is a write after its
 *            last apply
 * MODE is the verification both ends run (applied, readback, full). What must happen:
 *   - a page re-sent whole (raw, lz4, zero) overwrites the flip: every mode migrates, images equal;
 *   - a page patched by a delta keeps the flipped bit: readback and full must refuse the image
 *     with EDIGEST from the page-hash digest ("image digest"); applied hashes the patch it
 *     applied, not VRAM, and resumes the wrong image - that is what "applied" means;
 *   - a write after the last apply: only full (VRAM re-read at COMMIT, "VRAM re-read") refuses
 *     it; applied and readback prove what landed, and resume an image that differs in that bit.
 * A refusal also checks that the target did not resume and the source VF runs again.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "migrate_util.h"

#define TIMEOUT_MS 10000
#define VRAM (4ull << 20)
#define PS 4096ull
#define MAX_ROUNDS 5 /* rounds 0..4 (1 ms budget never met, switch on a miss), final pass 5 */
#define FLIP_ROUND 2 /* flipped after round 2 is applied: delta pages go as deltas from round 2 */
#define FLIP_AT 2001 /* byte of the page flipped: never one the 8-byte writes touch */
#define PAGE_DATA 64u  /* the page of the kind under test */
#define PAGE_OTHER 96u /* another page, rewritten whole every round, so each round moves data */

typedef enum kind { K_RAW, K_DELTA, K_DELTA_COPIED, K_LZ4_COPIED, K_ZERO, K_COUNT } kind;
static const char *const kind_names[K_COUNT] = {"raw", "delta", "delta_copied", "lz4_copied", "zero"};
typedef enum when { W_NONE, W_RESENT, W_AFTER, W_COUNT } when;
static const char *const when_names[W_COUNT] = {"none", "resent", "after"};
static const char *const mode_names[] = {"applied", "readback", "full"};

/* The case, for the scripted query (one migration per process). */
static kind g_kind;
static when g_when;
static fault_dev *g_target;
static uint64_t g_calls;
static bool g_flipped;

static void fill_random(uint8_t *page, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull | 1;
    for (uint64_t i = 0; i < PS; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(page + i, &x, 8);
    }
}

static void flip_target(void)
{
    vfmig_device *d = &g_target->inner;
    uint64_t at = d->ranges[0].offset + PAGE_DATA * PS + FLIP_AT;
    uint8_t b;
    ASSERT_OK(d->ops->read(d->dev, at, &b, 1));
    b ^= 0x04;
    ASSERT_OK(d->ops->write(d->dev, at, &b, 1));
    g_flipped = true;
}

/* The source's collecting query: after round n-1 (call n) it writes the pages of the case, so
 * they are dirty in round n; with a 2 ms cost floor the 1 ms budget is never met. */
static int query_scripted(void *d, uint32_t r, uint64_t fp, uint64_t n, uint64_t *bm, int clear)
{
    fault_dev *f = FD(d);
    struct timespec ts = {0, 2000000};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
    int rc = f_query(d, r, fp, n, bm, clear);
    /* The pages written here are dirty in every query (the device's own tracking does not see
     * writes through its write op). */
    for (uint64_t p = fp; rc == VFMIG_OK && p < fp + n; p++)
        if (p == PAGE_OTHER || (p == PAGE_DATA && !(g_when == W_AFTER && g_calls >= FLIP_ROUND)))
            bm[(p - fp) / 64] |= 1ull << ((p - fp) % 64);
    if (rc || !clear)
        return rc;
    const uint64_t base = f->inner.ranges[0].offset;
    uint8_t page[PS];
    g_calls++;
    if (g_calls == FLIP_ROUND + 1 && g_when != W_NONE)
        flip_target();
    fill_random(page, g_calls * 7 + 1);
    ASSERT_OK(f->inner.ops->write(f->inner.dev, base + PAGE_OTHER * PS, page, PS));
    if (g_when == W_AFTER && g_calls > FLIP_ROUND)
        return rc; /* the page under test is never written (so never sent) again */
    switch (g_kind) {
    case K_RAW:
        fill_random(page, g_calls * 7 + 2);
        ASSERT_OK(f->inner.ops->write(f->inner.dev, base + PAGE_DATA * PS, page, PS));
        break;
    case K_DELTA:
    case K_DELTA_COPIED: {
        uint64_t x = g_calls * 0x100000001b3ull;
        ASSERT_OK(f->inner.ops->write(f->inner.dev, base + PAGE_DATA * PS + (g_calls * 8) % 512, &x, 8));
        break;
    }
    case K_LZ4_COPIED:
        for (uint64_t i = 0; i < PS; i++)
            page[i] = (uint8_t)(g_calls + i / 64);
        ASSERT_OK(f->inner.ops->write(f->inner.dev, base + PAGE_DATA * PS, page, PS));
        break;
    case K_ZERO:
        /* Round 0 sent data; from round 1 on the page is zeros, re-sent as a zero frame. */
        memset(page, 0, sizeof(page));
        ASSERT_OK(f->inner.ops->write(f->inner.dev, base + PAGE_DATA * PS, page, PS));
        break;
    default:
        break;
    }
    return rc;
}

static vfmig_session *make_session(vfmig_role role, const vfmig_device *dev, int codec, int mode)
{
    vfmig_session *s = session_with_timeout(role, dev, TIMEOUT_MS);
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_CODEC, codec));
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_VERIFY, mode));
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_BUDGET_MS, 1));
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_MAX_ROUNDS, MAX_ROUNDS));
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_ON_BUDGET_MISS, VFMIG_BUDGET_MISS_SWITCH));
    return s;
}

static int find(const char *const *names, int count, const char *name)
{
    for (int i = 0; i < count; i++)
        if (!strcmp(names[i], name))
            return i;
    return -1;
}

int main(int argc, char **argv)
{
    int k = argc == 4 ? find(kind_names, K_COUNT, argv[1]) : -1;
    int w = argc == 4 ? find(when_names, W_COUNT, argv[2]) : -1;
    int mode = argc == 4 ? find(mode_names, 3, argv[3]) : -1;
    if (k < 0 || w < 0 || mode < 0) {
        fprintf(stderr, "usage: test_verify raw|delta|delta_copied|lz4_copied|zero none|resent|after "
                        "applied|readback|full\n");
        return 2;
    }
    g_kind = (kind)k;
    g_when = (when)w;
    bool copied = g_kind == K_DELTA_COPIED || g_kind == K_LZ4_COPIED;
    int codec = g_kind == K_DELTA || g_kind == K_DELTA_COPIED ? VFMIG_CODEC_DELTA
                : g_kind == K_LZ4_COPIED                    ? VFMIG_CODEC_LZ4
                                                            : VFMIG_CODEC_RAW;


    vfmig_simvf *dst = idle_sim(VRAM, PS, true, 42), *src = idle_sim(VRAM, PS, false, 42);
    fault_dev tfd, sfd;
    fault_wrap_ex(&tfd, dst, -1, 0, ACT_NONE, !copied);
    fault_wrap_ex(&sfd, src, -1, 0, ACT_NONE, true);
    sfd.ops.query_dirty = query_scripted;
    g_target = &tfd;
    accept_run t = {.s = make_session(VFMIG_ROLE_TARGET, &tfd.outer, codec, mode), .timeout_ms = TIMEOUT_MS};
    vfmig_session *s = make_session(VFMIG_ROLE_SOURCE, &sfd.outer, codec, mode);
    ASSERT_OK(vfmig_simvf_start(src));
    int rc = run_pair(s, &t, 2);

    vfmig_stats ss, ts;
    vfmig_session_get_stats(s, &ss);
    vfmig_session_get_stats(t.s, &ts);
    fprintf(stderr, "%s %s %s: source %s (%s), target %s (%s), %u rounds, delta pages %llu, flipped %d\n",
            argv[1], argv[2], argv[3], vfmig_status_name(rc), vfmig_session_last_error(s), vfmig_status_name(t.rc),
            t.err, ss.rounds, (unsigned long long)(ss.codec_in[VFMIG_CODEC_DELTA] / PS), g_flipped);
    ASSERT_TRUE(g_when == W_NONE || g_flipped);
    /* The page went the way the case says (else the test proves nothing). */
    ASSERT_EQ(ss.rounds, MAX_ROUNDS);
    if (codec == VFMIG_CODEC_DELTA && g_when != W_AFTER && ss.codec_in[VFMIG_CODEC_DELTA] < 2 * PS)
        T_FAIL("the page under test did not travel as deltas after the flip");
    if (g_kind == K_ZERO && g_when != W_AFTER && ss.zero_pages < MAX_ROUNDS - 1)
        T_FAIL("the page under test did not travel as zero pages");

    bool delta_kept = (g_kind == K_DELTA || g_kind == K_DELTA_COPIED) && g_when == W_RESENT;
    bool caught = (delta_kept && mode != VFMIG_VERIFY_APPLIED) || (g_when == W_AFTER && mode == VFMIG_VERIFY_FULL);
    /* The flipped bit survives in target VRAM unless the page was re-sent whole. */
    bool wrong = delta_kept || g_when == W_AFTER;
    if (caught) {
        const char *check = g_when == W_AFTER ? "VRAM re-read" : "image digest";
        if (rc != VFMIG_EDIGEST || t.rc != VFMIG_EDIGEST)
            T_FAIL("the corruption was not refused with EDIGEST: source %s, target %s", vfmig_status_name(rc),
                   vfmig_status_name(t.rc));
        if (!strstr(t.err, check))
            T_FAIL("the wrong check fired: expected \"%s\", target said: %s", check, t.err);
        ASSERT_EQ(ss.vf_state, VFMIG_VF_RUNNING_ON_SOURCE);
        ASSERT_EQ(ts.vf_state, VFMIG_VF_NOT_RESUMED);
        ASSERT_TRUE(!ss.verified && !ts.verified);
        assert_not_resumed(dst, "target");
        ASSERT_EQ(vfmig_simvf_get_state(src), VFMIG_SIMVF_RUNNING);
    } else {
        if (rc || t.rc)
            T_FAIL("migration failed: source %s (%s), target %s (%s)", vfmig_status_name(rc),
                   vfmig_session_last_error(s), vfmig_status_name(t.rc), t.err);
        ASSERT_TRUE(ss.verified && ts.verified);
        ASSERT_EQ(ts.vf_state, VFMIG_VF_RESUMED_ON_TARGET);
        uint64_t at[4];
        uint64_t n = vram_differences(src, dst, at, 4);
        uint64_t flip_at = PAGE_DATA * PS + FLIP_AT; /* in the sim's buffer, which starts at range 0 */
        if (wrong) {
            /* What this mode does not claim to catch: exactly the flipped byte differs. */
            if (n != 1 || at[0] != flip_at)
                T_FAIL("expected the image to differ in byte %llu only, it differs in %llu bytes (first %llu)",
                       (unsigned long long)flip_at, (unsigned long long)n, (unsigned long long)(n ? at[0] : 0));
        } else if (n) {
            T_FAIL("target image differs from the source in %llu bytes (first %llu)", (unsigned long long)n,
                   (unsigned long long)at[0]);
        }
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
