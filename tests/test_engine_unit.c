/* tests/test_engine_unit.c - engine units: dirty bitmaps, switch-over policy on synthetic rates,
 * page hashes and the image digest, handshake messages, status names. */
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "compress/codec.h"
#include "engine/bitmap.h"
#include "engine/image.h"
#include "engine/policy.h"
#include "engine/proto.h"
#include "testutil.h"
#include "vfmig.h"

static void test_bitmap(void)
{
    uint64_t seed = t_seed();
    enum { N = 1000 };
    uint64_t w[16];
    memset(w, 0, sizeof(w));
    ASSERT_EQ(vfmig__bitmap_count(w, N), 0);
    uint64_t s, l;
    ASSERT_TRUE(!vfmig__bitmap_next_run(w, N, 0, 0, &s, &l));

    vfmig__bitmap_set_range(w, 3, 200);
    ASSERT_EQ(vfmig__bitmap_count(w, N), 200);
    ASSERT_TRUE(vfmig__bitmap_next_run(w, N, 0, 0, &s, &l));
    ASSERT_EQ(s, 3);
    ASSERT_EQ(l, 200);
    ASSERT_TRUE(vfmig__bitmap_next_run(w, N, 0, 64, &s, &l)); /* capped runs */
    ASSERT_EQ(s, 3);
    ASSERT_EQ(l, 64);
    ASSERT_TRUE(vfmig__bitmap_next_run(w, N, 150, 0, &s, &l));
    ASSERT_EQ(s, 150);
    ASSERT_EQ(l, 53);
    ASSERT_TRUE(!vfmig__bitmap_next_run(w, N, 203, 0, &s, &l));

    /* Junk past nbits (a device may leave it) is trimmed and never reported. */
    memset(w, 0, sizeof(w));
    w[15] = ~0ull;
    vfmig__bitmap_trim(w, N);
    ASSERT_EQ(vfmig__bitmap_count(w, N), N - 960);
    ASSERT_TRUE(vfmig__bitmap_next_run(w, N, 0, 0, &s, &l));
    ASSERT_EQ(s, 960);
    ASSERT_EQ(l, 40);

    /* Random bitmaps: the runs found cover exactly the set bits. */
    for (int iter = 0; iter < 200; iter++) {
        uint64_t a[16] = {0}, b[16] = {0};
        for (int i = 0; i < 16; i++)
            a[i] = t_rand(&seed) & t_rand(&seed);
        vfmig__bitmap_trim(a, N);
        uint64_t from = 0, cnt = 0, maxlen = 1 + t_rand(&seed) % 100;
        while (vfmig__bitmap_next_run(a, N, from, maxlen, &s, &l)) {
            ASSERT_TRUE(l >= 1 && l <= maxlen && s >= from);
            vfmig__bitmap_set_range(b, s, l);
            cnt += l;
            from = s + l;
        }
        ASSERT_EQ(cnt, vfmig__bitmap_count(a, N));
        ASSERT_EQ(memcmp(a, b, sizeof(a)), 0);
    }
}

/* A round of `pages` pages of 4 KiB: `ms` long, `src_us`/`dst_us` CPU microseconds per page on
 * each end, raw on the wire, leaving `pending` pages dirty, `precopy_ms` into pre-copy. */
static vfmig_policy_round rnd(uint32_t round, uint64_t pages, double ms, double src_us, double dst_us,
                              uint64_t pending, double precopy_ms)
{
    return (vfmig_policy_round){.round = round, .pages = pages, .wire_bytes = pages * 4096,
                                .round_ns = (uint64_t)(ms * 1e6), .src_cpu_ns = (uint64_t)(src_us * 1e3 * (double)pages),
                                .dst_cpu_ns = (uint64_t)(dst_us * 1e3 * (double)pages), .pending_pages = pending,
                                .page_size = 4096, .query_ns = 100000, .since_query_ns = (uint64_t)(ms * 1e6),
                                .precopy_ns = (uint64_t)(precopy_ms * 1e6)};
}

static void test_policy(void)
{
    vfmig_policy_cfg cfg = {.budget_ms = 50, .max_rounds = 30, .max_precopy_ns = 60000000000ull,
                            .throttle_allowed = 1, .src_workers = 2, .dst_threads = 2, .rtt_ms = 0.2,
                            .state_ms = 0.5};
    vfmig_policy p;
    vfmig_policy_decision d;
    vfmig_policy_round r;

    /* Fixed cost: query 0.1 + state 0.5 + 2 x 0.2 round trips = 1.0 ms. 20000 pages at 1 us of
     * CPU per page on two workers each end: 10 ms of final pass (the wire, at the 10.7 GB/s round
     * 0 showed, needs 7.6). Fits, but one more round after round 0 is worth it. */
    vfmig__policy_init(&p, &cfg, 0);
    r = rnd(0, 262144, 100, 1, 1, 20000, 100);
    d = vfmig__policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_CONTINUE);
    ASSERT_TRUE(d.stages.fixed_ms > 0.99 && d.stages.fixed_ms < 1.01);
    ASSERT_TRUE(d.stages.pages_ms > 9.9 && d.stages.pages_ms < 10.1);
    /* Shrank to 1000 pages (0.5 ms of pages, below the fixed cost): switch. */
    r = rnd(1, 20000, 20, 1, 1, 1000, 120);
    d = vfmig__policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_SWITCH);
    ASSERT_EQ(d.reason, VFMIG_SWITCH_CONVERGED);
    ASSERT_TRUE(d.predicted_ms > 1.4 && d.predicted_ms < 1.6);

    /* A device that scans all VRAM in the blackout (hash tracker: 20 ms, reported as scan_ns):
     * 3000 pages (1.5 ms) left after round 0. The scan dominates the fixed cost, but no round
     * moves it: one more round is still worth it. Pages written while the scan ran (100 MB/s
     * dirtied over the round, half of the 20 ms scan: 244 pages) count in the final pass. */
    vfmig__policy_init(&p, &cfg, 0);
    r = rnd(0, 262144, 100, 1, 1, 3000, 100);
    r.query_ns = r.scan_ns = 20000000;
    r.since_query_ns = (uint64_t)(3000 * 4096 / 100e6 * 1e9);
    d = vfmig__policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_CONTINUE);
    ASSERT_TRUE(d.stages.fixed_ms > 20.8 && d.stages.fixed_ms < 20.95);
    ASSERT_TRUE(d.stages.pages_ms > 1.6 && d.stages.pages_ms < 1.65); /* (3000 + 244) x 1 us / 2 */
    /* Shrank to 300 pages: the final pass no longer outweighs the rest: switch. */
    r = rnd(1, 3000, 5, 1, 1, 300, 105);
    r.query_ns = r.scan_ns = 20000000;
    d = vfmig__policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_SWITCH);
    ASSERT_EQ(d.reason, VFMIG_SWITCH_CONVERGED);

    /* The prediction is per stage: the slower end bounds it; wall time does not enter it (the
     * workload competes in pre-copy, not in the blackout). */
    vfmig__policy_init(&p, &cfg, 0);
    r = rnd(0, 262144, 100, 0.5, 3, 10000, 100);
    d = vfmig__policy_after_round(&p, &r);
    ASSERT_TRUE(d.stages.dst_ms > 14.9 && d.stages.dst_ms < 15.1 && d.stages.src_ms < 2.6);
    ASSERT_TRUE(d.stages.pages_ms == d.stages.dst_ms);
    /* Both ends on one 2-CPU host: their CPU adds up over the two cores. */
    cfg.shared_cpus = 2;
    vfmig__policy_init(&p, &cfg, 0);
    d = vfmig__policy_after_round(&p, &r);
    ASSERT_TRUE(d.stages.shared_ms > 17.4 && d.stages.shared_ms < 17.6);
    ASSERT_TRUE(d.stages.pages_ms == d.stages.shared_ms);
    cfg.shared_cpus = 0;
    /* A 100 MB/s cap makes the wire the bound: 10000 raw pages = 41 MB = 410 ms. */
    vfmig__policy_init(&p, &cfg, 100e6);
    r = rnd(0, 262144, 11000, 1, 1, 10000, 11000);
    d = vfmig__policy_after_round(&p, &r);
    ASSERT_TRUE(d.stages.wire_ms > 400 && d.stages.wire_ms < 420);

    /* A hot set that stays fully dirty but fits: switch as soon as a round stops shrinking it. */
    vfmig__policy_init(&p, &cfg, 0);
    r = rnd(0, 262144, 500, 1, 1, 16384, 500);
    ASSERT_EQ(vfmig__policy_after_round(&p, &r).action, VFMIG_POLICY_CONTINUE);
    r = rnd(1, 16384, 30, 1, 1, 16384, 530);
    d = vfmig__policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_SWITCH);
    ASSERT_EQ(d.reason, VFMIG_SWITCH_NO_PROGRESS);

    /* Nothing dirty: switch at once. */
    vfmig__policy_init(&p, &cfg, 0);
    r = rnd(0, 262144, 500, 1, 1, 0, 500);
    d = vfmig__policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_SWITCH);
    ASSERT_EQ(d.reason, VFMIG_SWITCH_CONVERGED);

    /* Over budget and not shrinking (16384 pages at 10 us = 82 ms): throttle only after rounds
     * stopped helping, step by step; at the bottom keep going to the time limit, then abort. */
    vfmig__policy_init(&p, &cfg, 0);
    r = rnd(0, 262144, 500, 10, 10, 16384, 500);
    ASSERT_EQ(vfmig__policy_after_round(&p, &r).action, VFMIG_POLICY_CONTINUE);
    unsigned last = 100;
    int throttles = 0;
    uint32_t i;
    for (i = 1; i < 40; i++) {
        r = rnd(i, 16384, 200, 10, 10, 16384, 500 + 200.0 * i);
        d = vfmig__policy_after_round(&p, &r);
        if (i == 1)
            ASSERT_EQ(d.action, VFMIG_POLICY_CONTINUE); /* one stalled round is not yet proof */
        if (d.action == VFMIG_POLICY_THROTTLE) {
            ASSERT_TRUE(d.throttle < last);
            last = d.throttle;
            throttles++;
        }
        if (d.action == VFMIG_POLICY_SWITCH || d.action == VFMIG_POLICY_ABORT)
            break;
    }
    ASSERT_EQ(d.action, VFMIG_POLICY_ABORT);
    ASSERT_EQ(i, 29); /* the round limit: 30 rounds, round 0 included */
    ASSERT_EQ(throttles, 5);
    ASSERT_EQ(last, 10);
    ASSERT_EQ(p.throttle_min, 10);
    /* The same told to switch anyway: once throttling is exhausted, switch (budget-miss). */
    cfg.on_miss_switch = 1;
    vfmig__policy_init(&p, &cfg, 0);
    r = rnd(0, 262144, 500, 10, 10, 16384, 500);
    vfmig__policy_after_round(&p, &r);
    for (i = 1; i < 29; i++) {
        r = rnd(i, 16384, 200, 10, 10, 16384, 500 + 200.0 * i);
        d = vfmig__policy_after_round(&p, &r);
        if (d.action == VFMIG_POLICY_SWITCH || d.action == VFMIG_POLICY_ABORT)
            break;
    }
    ASSERT_EQ(d.action, VFMIG_POLICY_SWITCH);
    ASSERT_EQ(d.reason, VFMIG_SWITCH_BUDGET_MISS);
    ASSERT_TRUE(i < 29);
    /* Without throttling, told to switch: after two stalled rounds. */
    cfg.throttle_allowed = 0;
    vfmig__policy_init(&p, &cfg, 0);
    r = rnd(0, 262144, 500, 10, 10, 16384, 500);
    vfmig__policy_after_round(&p, &r);
    r = rnd(1, 16384, 200, 10, 10, 16384, 700);
    ASSERT_EQ(vfmig__policy_after_round(&p, &r).action, VFMIG_POLICY_CONTINUE);
    r = rnd(2, 16384, 200, 10, 10, 16384, 900);
    d = vfmig__policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_SWITCH);
    ASSERT_EQ(d.reason, VFMIG_SWITCH_BUDGET_MISS);
    cfg.on_miss_switch = 0;
    cfg.throttle_allowed = 1;

    /* Limits: over budget at the time limit aborts; fitting at the round limit switches. */
    cfg.max_precopy_ns = 600000000ull;
    vfmig__policy_init(&p, &cfg, 0);
    r = rnd(0, 262144, 700, 10, 10, 100000, 700);
    d = vfmig__policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_ABORT);
    cfg.max_precopy_ns = 60000000000ull;
    cfg.max_rounds = 2;
    vfmig__policy_init(&p, &cfg, 0);
    r = rnd(0, 262144, 500, 1, 1, 60000, 500);
    ASSERT_EQ(vfmig__policy_after_round(&p, &r).action, VFMIG_POLICY_CONTINUE);
    r = rnd(1, 60000, 100, 1, 1, 20000, 600);
    d = vfmig__policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_SWITCH);
    ASSERT_EQ(d.reason, VFMIG_SWITCH_MAX_ROUNDS);
}

static void test_hello(void)
{
    vfmig_hello h = {.magic = VFMIG_WIRE_MAGIC, .version = VFMIG_WIRE_VERSION, .nstreams = 2,
                     .page_size = 65536, .npages = 48, .nranges = 2, .batch_bytes = 262144,
                     .immutable_bytes = 4096};
    h.range_size[0] = 16 * 65536;
    h.range_size[1] = 32 * 65536;
    uint8_t buf[VFMIG_HELLO_MAX_BYTES];
    char err[256];
    size_t n = vfmig__hello_encode(&h, buf);
    vfmig_hello d;
    ASSERT_OK(vfmig__hello_decode(buf, n, &d, err, sizeof(err)));
    ASSERT_EQ(d.npages, 48);
    ASSERT_EQ(d.range_size[1], 32 * 65536);

    vfmig_range same[2] = {{0, 16 * 65536}, {1 << 30, 32 * 65536}};
    ASSERT_OK(vfmig__hello_match_layout(&d, 65536, 2, same, err, sizeof(err)));
    vfmig_range other[1] = {{0, 48 * 65536}};
    ASSERT_EQ(vfmig__hello_match_layout(&d, 65536, 1, other, err, sizeof(err)), VFMIG_ELAYOUT);
    ASSERT_TRUE(strstr(err, "source VF is 3 MiB in 2 ranges with 64 KiB pages") != NULL);
    ASSERT_TRUE(strstr(err, "target VF is 3 MiB in 1 range") != NULL);

    /* Wrong version: refused as such, before the rest is looked at. */
    uint8_t bad[VFMIG_HELLO_MAX_BYTES];
    memcpy(bad, buf, n);
    vfmig_put_u32(bad + 4, VFMIG_WIRE_VERSION + 1);
    ASSERT_EQ(vfmig__hello_decode(bad, n, &d, err, sizeof(err)), VFMIG_EVERSION);
    ASSERT_TRUE(strstr(err, "version 3") != NULL);
    /* Every truncation and every single-field forgery is refused. */
    for (size_t k = 0; k < n; k++)
        ASSERT_TRUE(vfmig__hello_decode(buf, k, &d, err, sizeof(err)) != VFMIG_OK);
    struct { size_t off; uint64_t v; int wide; } forged[] = {
        {0, 0x12345678, 0}, {12, 0, 0}, {12, 1000, 0}, {16, 3000, 1}, {16, 4u << 20, 1},
        {24, 49, 1}, {32, 0, 0}, {32, 65, 0}, {36, 100, 0}, {40, 1ull << 40, 1}, {48, 0, 1}, {48, 1000, 1}};
    for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
        memcpy(bad, buf, n);
        if (forged[i].wide)
            vfmig_put_u64(bad + forged[i].off, forged[i].v);
        else
            vfmig_put_u32(bad + forged[i].off, (uint32_t)forged[i].v);
        int rc = vfmig__hello_decode(bad, n, &d, err, sizeof(err));
        if (rc == VFMIG_OK)
            T_FAIL("forged field at %zu = %llu accepted", forged[i].off, (unsigned long long)forged[i].v);
    }
}

static void test_names(void)
{
    ASSERT_TRUE(!strcmp(vfmig_strerror(VFMIG_OK), "success"));
    ASSERT_TRUE(!strcmp(vfmig_status_name(VFMIG_ELAYOUT), "VFMIG_ELAYOUT"));
    ASSERT_TRUE(!strcmp(vfmig_strerror(12345), "unknown status"));
    ASSERT_TRUE(!strcmp(vfmig_vf_state_name(VFMIG_VF_NOT_RESUMED), "not-resumed"));
    ASSERT_TRUE(!strcmp(vfmig_codec_name(VFMIG_CODEC_ZSTD), "zstd"));
    int64_t lo, hi, def;
    ASSERT_OK(vfmig_param_bounds(VFMIG_P_BUDGET_MS, &lo, &hi, &def));
    ASSERT_EQ(def, 50);
    ASSERT_EQ(vfmig_param_bounds((vfmig_param)99, &lo, &hi, &def), VFMIG_EINVAL);
    char b[32];
    vfmig__format_size(1536, b, sizeof(b));
    ASSERT_TRUE(!strcmp(b, "1.5 KiB"));
}

/* The linear page hash: the CPU's carry-less multiply and the portable one agree; a delta frame's
 * literals alone give the new hash; it is linear (L(a^b) = L(a)^L(b)); single-bit and word-swap
 * changes always show; the incremental digest is order-independent and equals the digest of the
 * device read whole. */
static void test_image(void)
{
    uint64_t seed = t_seed();
    static const size_t sizes[] = {4096, 65536, 2u << 20};
    for (size_t si = 0; si < 3; si++) {
        size_t ps = sizes[si];
        vfmig_lin *hw = malloc(sizeof(*hw)), *sw = malloc(sizeof(*sw)), *h128 = malloc(sizeof(*h128));
        vfmig__lin_init(hw, ps);
        *sw = *hw;
        sw->hw = 0;
        *h128 = *hw; /* the 128-bit multiply where the CPU also has the 256-bit one */
        h128->hw = hw->hw ? 1 : 0;
        uint8_t *a = malloc(ps), *b = malloc(ps), *x = malloc(ps), *enc = malloc(vfmig__codec_bound(ps));
        for (size_t i = 0; i < ps; i++)
            a[i] = (uint8_t)t_rand(&seed);
        uint64_t ha = vfmig__lin_page(hw, a);
        ASSERT_EQ(ha, vfmig__lin_page(sw, a));
        ASSERT_TRUE(ha & VFMIG_HASH_LIN);
        ASSERT_TRUE(!(vfmig__page_hash(a, ps) & VFMIG_HASH_LIN));
        for (int t = 0; t < 20; t++) {
            memcpy(b, a, ps);
            int changes = 1 + (int)(t_rand(&seed) % 40);
            for (int c = 0; c < changes; c++)
                b[t_rand(&seed) % ps] ^= (uint8_t)(1 + t_rand(&seed) % 255);
            /* the delta stream's literals give the new hash without reading the page */
            size_t n;
            ASSERT_OK(vfmig__encode(NULL, VFMIG_CODEC_DELTA, 0, b, ps, a, enc, vfmig__codec_bound(ps), &n));
            uint64_t dh;
            ASSERT_OK(vfmig__lin_delta(hw, enc, n, 1, &dh));
            uint64_t hb = vfmig__lin_page(hw, b);
            ASSERT_EQ(vfmig_lin_after_delta(hw, ha, dh, b), hb);
            ASSERT_EQ(hb, vfmig__lin_page(sw, b));
            ASSERT_EQ(hb, vfmig__lin_page(h128, b));
            /* linear: L(a ^ b) = L(a) ^ L(b) (kind bit aside) */
            for (size_t i = 0; i < ps; i++)
                x[i] = a[i] ^ b[i];
            ASSERT_EQ(vfmig__lin_page(hw, x) & ~VFMIG_HASH_LIN, (ha ^ hb) & ~VFMIG_HASH_LIN);
            ASSERT_TRUE(ha != hb);
        }
        /* any one bit, and two words swapped, change it */
        for (int t = 0; t < 200; t++) {
            memcpy(b, a, ps);
            b[t_rand(&seed) % ps] ^= (uint8_t)(1u << (t_rand(&seed) % 8));
            ASSERT_TRUE(vfmig__lin_page(hw, b) != ha);
        }
        memcpy(b, a, ps);
        memcpy(b, a + 8, 8);
        memcpy(b + 8, a, 8);
        if (memcmp(a, a + 8, 8))
            ASSERT_TRUE(vfmig__lin_page(hw, b) != ha);
        /* a stream that does not parse is refused */
        uint8_t junk[3] = {0xff, 0xff, 0xff};
        uint64_t dh;
        ASSERT_EQ(vfmig__lin_delta(hw, junk, sizeof(junk), 1, &dh), VFMIG_ECODEC);
        free(a);
        free(b);
        free(x);
        free(enc);
        free(hw);
        free(sw);
        free(h128);
    }
    /* The digest: the same set of page hashes gives the same digest in any order of updates,
     * any change of one page changes it, and going back restores it. */
    enum { NP = 1000 };
    uint64_t t1[NP] = {0}, t2[NP] = {0}, hs[NP];
    vfmig_digest d1 = {0, 0}, d2 = {0, 0};
    for (int i = 0; i < NP; i++)
        hs[i] = t_rand(&seed);
    for (int i = 0; i < NP; i++)
        vfmig__image_set(t1, &d1, (uint64_t)i, hs[i]);
    for (int i = NP - 1; i >= 0; i--) {
        vfmig__image_set(t2, &d2, (uint64_t)i, t_rand(&seed)); /* an older copy first */
        vfmig__image_set(t2, &d2, (uint64_t)i, hs[i]);
    }
    ASSERT_TRUE(d1.lo == d2.lo && d1.hi == d2.hi);
    vfmig__image_set(t2, &d2, 7, hs[7] ^ 1);
    ASSERT_TRUE(d1.lo != d2.lo && d1.hi != d2.hi);
    vfmig__image_set(t2, &d2, 7, hs[7]);
    ASSERT_TRUE(d1.lo == d2.lo && d1.hi == d2.hi);
    /* two pages' hashes swapped: a misplaced page shows */
    vfmig__image_set(t2, &d2, 1, hs[2]);
    vfmig__image_set(t2, &d2, 2, hs[1]);
    ASSERT_TRUE(d1.lo != d2.lo || d1.hi != d2.hi);
}

/* The shared clock and deadlines (common/clock.h): 0 is "no deadline", waits round up. */
static void test_clock(void)
{
    uint64_t a = vfmig__now_ns(), b = vfmig__now_ns();
    ASSERT_TRUE(a > 0 && b >= a);
    uint64_t c0 = vfmig__thread_cpu_ns();
    for (volatile int i = 0; i < 1000000; i++) {
    }
    ASSERT_TRUE(vfmig__thread_cpu_ns() > c0);
    ASSERT_EQ(vfmig__deadline(-1), 0);
    ASSERT_EQ(vfmig__ms_left(0), -1);
    ASSERT_TRUE(!vfmig__expired(0));
    uint64_t d = vfmig__deadline(1000);
    ASSERT_TRUE(d >= b + 1000000000ull);
    int left = vfmig__ms_left(d);
    ASSERT_TRUE(left > 990 && left <= 1000);
    ASSERT_TRUE(!vfmig__expired(d));
    uint64_t now = vfmig__deadline(0);
    ASSERT_EQ(vfmig__ms_left(now), 0);
    ASSERT_TRUE(vfmig__expired(now));
    left = vfmig__ms_left(vfmig__now_ns() + 1500000); /* rounded up: 2, or 1 if 0.5 ms went by */
    ASSERT_TRUE(left == 2 || left == 1);
    ASSERT_EQ(vfmig__ms_left(UINT64_MAX), 0x7fffffff);
}

int main(void)
{
    test_clock();
    test_bitmap();
    test_image();
    test_policy();
    test_hello();
    test_names();
    printf("engine unit tests passed\n");
    return 0;
}
