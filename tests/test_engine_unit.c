/* tests/test_engine_unit.c - engine units: dirty bitmaps, switch-over policy on synthetic rates,
 * handshake messages, status names. */
#include <string.h>

#include "engine/bitmap.h"
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
    ASSERT_EQ(vfmig_bitmap_count(w, N), 0);
    uint64_t s, l;
    ASSERT_TRUE(!vfmig_bitmap_next_run(w, N, 0, 0, &s, &l));

    vfmig_bitmap_set_range(w, 3, 200);
    ASSERT_EQ(vfmig_bitmap_count(w, N), 200);
    ASSERT_TRUE(vfmig_bitmap_next_run(w, N, 0, 0, &s, &l));
    ASSERT_EQ(s, 3);
    ASSERT_EQ(l, 200);
    ASSERT_TRUE(vfmig_bitmap_next_run(w, N, 0, 64, &s, &l)); /* capped runs */
    ASSERT_EQ(s, 3);
    ASSERT_EQ(l, 64);
    ASSERT_TRUE(vfmig_bitmap_next_run(w, N, 150, 0, &s, &l));
    ASSERT_EQ(s, 150);
    ASSERT_EQ(l, 53);
    ASSERT_TRUE(!vfmig_bitmap_next_run(w, N, 203, 0, &s, &l));

    /* Junk past nbits (a device may leave it) is trimmed and never reported. */
    memset(w, 0, sizeof(w));
    w[15] = ~0ull;
    vfmig_bitmap_trim(w, N);
    ASSERT_EQ(vfmig_bitmap_count(w, N), N - 960);
    ASSERT_TRUE(vfmig_bitmap_next_run(w, N, 0, 0, &s, &l));
    ASSERT_EQ(s, 960);
    ASSERT_EQ(l, 40);

    /* Random bitmaps: the runs found cover exactly the set bits. */
    for (int iter = 0; iter < 200; iter++) {
        uint64_t a[16] = {0}, b[16] = {0};
        for (int i = 0; i < 16; i++)
            a[i] = t_rand(&seed) & t_rand(&seed);
        vfmig_bitmap_trim(a, N);
        uint64_t from = 0, cnt = 0, maxlen = 1 + t_rand(&seed) % 100;
        while (vfmig_bitmap_next_run(a, N, from, maxlen, &s, &l)) {
            ASSERT_TRUE(l >= 1 && l <= maxlen && s >= from);
            vfmig_bitmap_set_range(b, s, l);
            cnt += l;
            from = s + l;
        }
        ASSERT_EQ(cnt, vfmig_bitmap_count(a, N));
        ASSERT_EQ(memcmp(a, b, sizeof(a)), 0);
    }
}

static vfmig_policy_round rnd(uint32_t round, double round_mb, double round_ms, double pending_mb,
                              double since_ms, double precopy_ms)
{
    return (vfmig_policy_round){round, (uint64_t)(round_mb * 1e6), (uint64_t)(round_ms * 1e6),
                                (uint64_t)(pending_mb * 1e6), (uint64_t)(since_ms * 1e6),
                                (uint64_t)(precopy_ms * 1e6)};
}

static void test_policy(void)
{
    vfmig_policy_cfg cfg = {.budget_ms = 50, .max_rounds = 30, .max_precopy_ns = 60000000000ull,
                            .throttle_allowed = 1};
    vfmig_policy p;
    vfmig_policy_decision d;

    /* 1 GB at 2 GB/s; 20 MB dirty remains: 10 ms + 1 ms fixed fits a 50 ms budget, but after
     * round 0 one more round is worth it. */
    vfmig_policy_init(&p, &cfg, 1.0);
    vfmig_policy_round r = rnd(0, 1000, 500, 20, 500, 500);
    d = vfmig_policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_CONTINUE);
    ASSERT_TRUE(d.predicted_ms > 10.5 && d.predicted_ms < 11.5);
    /* It shrank to 4 MB (3 ms): still halving and page time dominates: once more. */
    r = rnd(1, 20, 10, 4, 10, 510);
    d = vfmig_policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_CONTINUE);
    /* 3 MB: no longer halving: switch. */
    r = rnd(2, 4, 2, 3, 2, 512);
    d = vfmig_policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_SWITCH);
    ASSERT_EQ(d.reason, VFMIG_SWITCH_CONVERGED);
    /* A hot set that stays fully dirty but fits: switch at once rather than spin. */
    vfmig_policy_init(&p, &cfg, 1.0);
    r = rnd(0, 1000, 500, 40, 500, 500);
    vfmig_policy_after_round(&p, &r);
    r = rnd(1, 40, 20, 40, 20, 520);
    d = vfmig_policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_SWITCH);

    /* 200 MB dirty at 2 GB/s = 100 ms: keep going. */
    vfmig_policy_init(&p, &cfg, 1.0);
    r = rnd(0, 1000, 500, 200, 500, 500);
    d = vfmig_policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_CONTINUE);
    /* Next round moved those 200 MB in 100 ms, 20 MB dirtied meanwhile: fits, still shrinking. */
    r = rnd(1, 200, 100, 20, 100, 600);
    d = vfmig_policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_CONTINUE);
    ASSERT_TRUE(p.dirty_rate > 0);
    /* With the round limit one round away, a fitting blackout is taken at once. */
    cfg.max_rounds = 3;
    r = rnd(2, 20, 10, 5, 10, 610);
    d = vfmig_policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_CONTINUE); /* p was made with max_rounds 30 */
    p.cfg.max_rounds = 4;
    r = rnd(3, 5, 3, 2, 3, 613);
    d = vfmig_policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_SWITCH);
    ASSERT_EQ(d.reason, VFMIG_SWITCH_CONVERGED);
    cfg.max_rounds = 30;

    /* Nothing dirty: switch at once, whatever the bandwidth. */
    vfmig_policy_init(&p, &cfg, 1.0);
    r = rnd(0, 0, 1, 0, 1, 1);
    d = vfmig_policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_SWITCH);

    /* A dirty rate above the bandwidth never converges: throttle step by step, then give up. */
    vfmig_policy_init(&p, &cfg, 1.0);
    r = rnd(0, 1000, 500, 500, 500, 500);
    d = vfmig_policy_after_round(&p, &r);
    ASSERT_EQ(d.action, VFMIG_POLICY_CONTINUE);
    unsigned last = 100;
    int throttles = 0;
    for (uint32_t i = 1; i < 29; i++) {
        r = rnd(i, 500, 250, 500, 250, 500 + 250.0 * i);
        d = vfmig_policy_after_round(&p, &r);
        if (d.action == VFMIG_POLICY_THROTTLE) {
            ASSERT_TRUE(d.throttle < last);
            last = d.throttle;
            throttles++;
        }
        if (d.action == VFMIG_POLICY_SWITCH)
            break;
    }
    ASSERT_EQ(d.action, VFMIG_POLICY_SWITCH);
    ASSERT_EQ(d.reason, VFMIG_SWITCH_NO_PROGRESS);
    ASSERT_EQ(throttles, 5);
    ASSERT_EQ(last, 10);

    /* Without throttling allowed the same workload gives up after the first stall. */
    cfg.throttle_allowed = 0;
    vfmig_policy_init(&p, &cfg, 1.0);
    r = rnd(0, 1000, 500, 500, 500, 500);
    vfmig_policy_after_round(&p, &r);
    int n = 1;
    do {
        r = rnd((uint32_t)n, 500, 250, 500, 250, 500 + 250.0 * n);
        d = vfmig_policy_after_round(&p, &r);
        n++;
    } while (d.action == VFMIG_POLICY_CONTINUE);
    ASSERT_EQ(d.reason, VFMIG_SWITCH_NO_PROGRESS);
    ASSERT_EQ(n, 3);

    /* Round and time limits. */
    cfg.max_rounds = 2;
    vfmig_policy_init(&p, &cfg, 1.0);
    r = rnd(0, 1000, 500, 300, 500, 500);
    ASSERT_EQ(vfmig_policy_after_round(&p, &r).action, VFMIG_POLICY_CONTINUE);
    r = rnd(1, 300, 150, 200, 150, 650);
    d = vfmig_policy_after_round(&p, &r);
    ASSERT_EQ(d.reason, VFMIG_SWITCH_MAX_ROUNDS);
    cfg.max_rounds = 30;
    cfg.max_precopy_ns = 600000000ull;
    vfmig_policy_init(&p, &cfg, 1.0);
    r = rnd(0, 1000, 700, 300, 700, 700);
    d = vfmig_policy_after_round(&p, &r);
    ASSERT_EQ(d.reason, VFMIG_SWITCH_MAX_TIME);
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
    size_t n = vfmig_hello_encode(&h, buf);
    vfmig_hello d;
    ASSERT_OK(vfmig_hello_decode(buf, n, &d, err, sizeof(err)));
    ASSERT_EQ(d.npages, 48);
    ASSERT_EQ(d.range_size[1], 32 * 65536);

    vfmig_range same[2] = {{0, 16 * 65536}, {1 << 30, 32 * 65536}};
    ASSERT_OK(vfmig_hello_match_layout(&d, 65536, 2, same, err, sizeof(err)));
    vfmig_range other[1] = {{0, 48 * 65536}};
    ASSERT_EQ(vfmig_hello_match_layout(&d, 65536, 1, other, err, sizeof(err)), VFMIG_ELAYOUT);
    ASSERT_TRUE(strstr(err, "source VF is 3 MiB in 2 ranges with 64 KiB pages") != NULL);
    ASSERT_TRUE(strstr(err, "target VF is 3 MiB in 1 range") != NULL);

    /* Wrong version: refused as such, before the rest is looked at. */
    uint8_t bad[VFMIG_HELLO_MAX_BYTES];
    memcpy(bad, buf, n);
    vfmig_put_u32(bad + 4, 2);
    ASSERT_EQ(vfmig_hello_decode(bad, n, &d, err, sizeof(err)), VFMIG_EVERSION);
    ASSERT_TRUE(strstr(err, "version 2") != NULL);
    /* Every truncation and every single-field forgery is refused. */
    for (size_t k = 0; k < n; k++)
        ASSERT_TRUE(vfmig_hello_decode(buf, k, &d, err, sizeof(err)) != VFMIG_OK);
    struct { size_t off; uint64_t v; int wide; } forged[] = {
        {0, 0x12345678, 0}, {12, 0, 0}, {12, 1000, 0}, {16, 3000, 1}, {16, 4u << 20, 1},
        {24, 49, 1}, {32, 0, 0}, {32, 65, 0}, {36, 100, 0}, {40, 1ull << 40, 1}, {48, 0, 1}, {48, 1000, 1}};
    for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
        memcpy(bad, buf, n);
        if (forged[i].wide)
            vfmig_put_u64(bad + forged[i].off, forged[i].v);
        else
            vfmig_put_u32(bad + forged[i].off, (uint32_t)forged[i].v);
        int rc = vfmig_hello_decode(bad, n, &d, err, sizeof(err));
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
    vfmig_format_size(1536, b, sizeof(b));
    ASSERT_TRUE(!strcmp(b, "1.5 KiB"));
}

int main(void)
{
    test_bitmap();
    test_policy();
    test_hello();
    test_names();
    printf("engine unit tests passed\n");
    return 0;
}
