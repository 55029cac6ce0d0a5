/* test_simvf.c - the built-in simulated VF: layout, content, dirty tracking under a live
 * workload (the engine's own copy loop, checked byte for byte), pause/resume, state blobs. */
#include "vfmig_sim.h"
#include "testutil.h"

#include <lz4.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <time.h>
#include <zstd.h>

/* Not in vfmig.h yet (see engine/devices/simvf.c). */
int vfmig_simvf_set_dirty_rate(vfmig_simvf *sim, uint64_t bytes_per_s);

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static vfmig_simvf_config small_cfg(uint64_t vram, uint64_t page, uint32_t nranges)
{
    vfmig_simvf_config c;
    vfmig_simvf_config_init(&c);
    c.vram_bytes = vram;
    c.page_size = page;
    c.nranges = nranges;
    return c;
}

static vfmig_simvf *make(const vfmig_simvf_config *c)
{
    vfmig_simvf *s = NULL;
    ASSERT_OK(vfmig_simvf_create(c, &s));
    ASSERT_TRUE(s != NULL);
    return s;
}

/* ------------------------------------------------------------------------------------------ */
static void test_config(void)
{
    vfmig_simvf_config c;
    vfmig_simvf_config_init(&c);
    ASSERT_EQ(c.vram_bytes, 1ull << 30);
    ASSERT_EQ(c.page_size, 64u << 10);
    ASSERT_EQ(c.nranges, 1);
    ASSERT_EQ(c.content, VFMIG_CONTENT_MIX);
    ASSERT_EQ(c.writers, 1);
    ASSERT_EQ(c.write_bytes, 4096);
    ASSERT_EQ(c.immutable_bytes, 4096);
    ASSERT_EQ(c.mutable_bytes, 64u << 10);

    vfmig_simvf *s = (vfmig_simvf *)1;
    ASSERT_EQ(vfmig_simvf_create(NULL, &s), VFMIG_EINVAL);
    const uint64_t bad_pages[] = {0, 2048, 4096 * 3, 8192 + 4096, 4u << 20, 1};
    for (size_t i = 0; i < sizeof bad_pages / sizeof bad_pages[0]; i++) {
        c = small_cfg(8u << 20, bad_pages[i], 1);
        s = (vfmig_simvf *)1;
        ASSERT_EQ(vfmig_simvf_create(&c, &s), VFMIG_EINVAL);
        ASSERT_TRUE(s == NULL);
    }
    c = small_cfg(8u << 20, 2u << 20, 1); /* 2 MiB pages are the largest allowed */
    ASSERT_OK(vfmig_simvf_create(&c, &s));
    vfmig_simvf_destroy(s);
    c = small_cfg((8u << 20) + 4096, 8192, 1); /* not a multiple of the page */
    ASSERT_EQ(vfmig_simvf_create(&c, &s), VFMIG_EINVAL);
    c = small_cfg(3u << 20, 64u << 10, 2); /* 48 pages: 24 a range */
    ASSERT_OK(vfmig_simvf_create(&c, &s));
    vfmig_simvf_destroy(s);
    c = small_cfg(5 * 65536, 65536, 2); /* 5 pages into 2 ranges */
    ASSERT_EQ(vfmig_simvf_create(&c, &s), VFMIG_EINVAL);
    c = small_cfg(0, 4096, 1);
    ASSERT_EQ(vfmig_simvf_create(&c, &s), VFMIG_EINVAL);
    c = small_cfg(1u << 20, 4096, 0);
    ASSERT_EQ(vfmig_simvf_create(&c, &s), VFMIG_EINVAL);
    c = small_cfg(65u << 20, 4096, 65);
    ASSERT_EQ(vfmig_simvf_create(&c, &s), VFMIG_EINVAL);
    c = small_cfg(1u << 20, 4096, 1);
    c.writers = 0;
    ASSERT_EQ(vfmig_simvf_create(&c, &s), VFMIG_EINVAL);
    c = small_cfg(1u << 20, 4096, 1);
    c.write_bytes = 0;
    ASSERT_EQ(vfmig_simvf_create(&c, &s), VFMIG_EINVAL);
    c = small_cfg(1u << 20, 4096, 1);
    c.immutable_bytes = 63;
    ASSERT_EQ(vfmig_simvf_create(&c, &s), VFMIG_EINVAL);
    c = small_cfg(1u << 20, 4096, 1);
    c.content = (vfmig_content)9;
    ASSERT_EQ(vfmig_simvf_create(&c, &s), VFMIG_EINVAL);
    vfmig_simvf_destroy(NULL);
}

/* ------------------------------------------------------------------------------------------ */
static void test_layout_and_bounds(void)
{
    const uint64_t psz = 4096, ppr = 64;
    vfmig_simvf_config c = small_cfg(3 * ppr * psz, psz, 3);
    c.content = VFMIG_CONTENT_ZERO;
    vfmig_simvf *s = make(&c);
    vfmig_device d;
    vfmig_simvf_device(s, &d);
    ASSERT_TRUE(d.ops && d.dev == s);
    ASSERT_TRUE(d.ops->prepare && d.ops->end && d.ops->start_tracking && d.ops->stop_tracking &&
                d.ops->query_dirty && d.ops->read && d.ops->write && d.ops->pause &&
                d.ops->resume && d.ops->save_immutable && d.ops->save_mutable &&
                d.ops->restore_immutable && d.ops->restore_mutable && d.ops->throttle);
    ASSERT_EQ(d.page_size, psz);
    ASSERT_EQ(d.nranges, 3);
    int differs = 0;
    for (uint32_t r = 0; r < 3; r++) {
        ASSERT_EQ(d.ranges[r].size, ppr * psz);
        ASSERT_EQ(d.ranges[r].offset % psz, 0);
        if (r) /* disjoint, in order, with a gap: segment offsets are not host offsets */
            ASSERT_TRUE(d.ranges[r].offset > d.ranges[r - 1].offset + d.ranges[r - 1].size);
        differs |= d.ranges[r].offset != r * ppr * psz;
    }
    ASSERT_TRUE(differs);

    uint64_t vsz;
    const uint8_t *vram = vfmig_simvf_vram(s, &vsz);
    ASSERT_EQ(vsz, 3 * ppr * psz);
    uint8_t buf[256], back[256];
    for (uint32_t r = 0; r < 3; r++) {
        /* First and last bytes of each range land at the host image's range r. */
        memset(buf, 0x10 + (int)r, sizeof buf);
        ASSERT_OK(d.ops->write(d.dev, d.ranges[r].offset, buf, sizeof buf));
        ASSERT_OK(d.ops->write(d.dev, d.ranges[r].offset + d.ranges[r].size - 16, buf, 16));
        ASSERT_TRUE(memcmp(vram + r * ppr * psz, buf, sizeof buf) == 0);
        ASSERT_TRUE(memcmp(vram + (r + 1) * ppr * psz - 16, buf, 16) == 0);
        ASSERT_OK(d.ops->read(d.dev, d.ranges[r].offset, back, sizeof back));
        ASSERT_TRUE(memcmp(back, buf, sizeof buf) == 0);
        /* Crossing the end of the range, or starting in the gap after it. */
        ASSERT_EQ(d.ops->read(d.dev, d.ranges[r].offset + d.ranges[r].size - 16, back, 17),
                  VFMIG_EINVAL);
        ASSERT_EQ(d.ops->write(d.dev, d.ranges[r].offset + d.ranges[r].size - 1, buf, 2),
                  VFMIG_EINVAL);
        ASSERT_EQ(d.ops->read(d.dev, d.ranges[r].offset + d.ranges[r].size, back, 1),
                  VFMIG_EINVAL);
        ASSERT_EQ(d.ops->read(d.dev, d.ranges[r].offset, back, SIZE_MAX), VFMIG_EINVAL);
        ASSERT_OK(d.ops->read(d.dev, d.ranges[r].offset + 5, back, 0));
    }
    if (d.ranges[0].offset > 0)
        ASSERT_EQ(d.ops->read(d.dev, d.ranges[0].offset - 1, back, 1), VFMIG_EINVAL);
    ASSERT_EQ(d.ops->read(d.dev, d.ranges[2].offset + d.ranges[2].size * 4, back, 1), VFMIG_EINVAL);
    ASSERT_EQ(d.ops->read(d.dev, UINT64_MAX, back, 1), VFMIG_EINVAL);
    /* Unaligned access inside a range works. */
    ASSERT_OK(d.ops->write(d.dev, d.ranges[1].offset + 4093, buf, 7));
    ASSERT_TRUE(memcmp(vram + ppr * psz + 4093, buf, 7) == 0);
    vfmig_simvf_destroy(s);
}

/* ------------------------------------------------------------------------------------------ */
static double lz4_ratio(const uint8_t *p, size_t n, size_t chunk)
{
    int cap = LZ4_compressBound((int)chunk);
    char *dst = malloc((size_t)cap);
    size_t out = 0;
    for (size_t off = 0; off < n; off += chunk)
        out += (size_t)LZ4_compress_default((const char *)p + off, dst, (int)chunk, cap);
    free(dst);
    return (double)n / (double)out;
}

static double zstd_ratio(const uint8_t *p, size_t n, size_t chunk)
{
    size_t cap = ZSTD_compressBound(chunk), out = 0;
    void *dst = malloc(cap);
    for (size_t off = 0; off < n; off += chunk) {
        size_t z = ZSTD_compress(dst, cap, p + off, chunk, 1);
        ASSERT_TRUE(!ZSTD_isError(z));
        out += z;
    }
    free(dst);
    return (double)n / (double)out;
}

static double zero_page_share(const uint8_t *p, size_t n, size_t page)
{
    size_t zero = 0;
    for (size_t off = 0; off < n; off += page) {
        size_t i = 0;
        while (i < page && p[off + i] == 0)
            i++;
        zero += i == page;
    }
    return (double)zero / (double)(n / page);
}

static void test_content(void)
{
    const uint64_t vram = 8u << 20, psz = 64u << 10;
    for (int k = VFMIG_CONTENT_ZERO; k <= VFMIG_CONTENT_MIX; k++) {
        vfmig_simvf_config c = small_cfg(vram, psz, 2);
        c.content = (vfmig_content)k;
        c.seed = 77;
        vfmig_simvf *a = make(&c), *b = make(&c);
        c.seed = 78;
        vfmig_simvf *o = make(&c);
        uint64_t n;
        const uint8_t *va = vfmig_simvf_vram(a, &n), *vb = vfmig_simvf_vram(b, NULL),
                      *vo = vfmig_simvf_vram(o, NULL);
        ASSERT_TRUE(memcmp(va, vb, n) == 0); /* same seed, same image */
        if (k != VFMIG_CONTENT_ZERO)
            ASSERT_TRUE(memcmp(va, vo, n) != 0);
        double zs = zero_page_share(va, n, 4096);
        switch (k) {
        case VFMIG_CONTENT_ZERO:
            ASSERT_TRUE(zs == 1.0);
            break;
        case VFMIG_CONTENT_TEXTURE: {
            double r = lz4_ratio(va, n, psz);
            fprintf(stderr, "texture: lz4 %.2fx\n", r);
            ASSERT_TRUE(r > 2.0 && r < 4.5);
            /* Opaque RGBA: every 4th byte is 0xff. */
            for (size_t i = 3; i < n; i += 4 * 1021)
                ASSERT_EQ(va[i], 0xff);
            break;
        }
        case VFMIG_CONTENT_TENSOR: {
            double r = zstd_ratio(va, n, psz);
            fprintf(stderr, "tensor: zstd %.3fx\n", r);
            ASSERT_TRUE(r > 1.03 && r < 1.35);
            for (size_t i = 0; i < n; i += 4 * 997) {
                float f;
                memcpy(&f, va + i, 4);
                ASSERT_TRUE(isfinite(f) && fabsf(f) < 1.0f && fabsf(f) >= 1.0f / 64);
            }
            break;
        }
        case VFMIG_CONTENT_RANDOM: {
            double r = lz4_ratio(va, n, psz);
            ASSERT_TRUE(r < 1.01);
            uint64_t hist[256] = {0};
            for (size_t i = 0; i < n; i++)
                hist[va[i]]++;
            for (int v = 0; v < 256; v++) /* each byte value near n/256 */
                ASSERT_TRUE(hist[v] > n / 256 * 9 / 10 && hist[v] < n / 256 * 11 / 10);
            ASSERT_TRUE(zs == 0.0);
            break;
        }
        case VFMIG_CONTENT_MIX: {
            double r = lz4_ratio(va, n, psz);
            fprintf(stderr, "mix: zero pages %.1f%%, lz4 %.2fx\n", zs * 100, r);
            ASSERT_TRUE(zs > 0.35 && zs < 0.45);
            ASSERT_TRUE(r > 1.6 && r < 4.0);
            break;
        }
        }
        vfmig_simvf_destroy(a);
        vfmig_simvf_destroy(b);
        vfmig_simvf_destroy(o);
    }
    /* The mix also holds at a larger size with the default page (the 1-4 MiB regions). */
    vfmig_simvf_config c = small_cfg(128u << 20, 64u << 10, 1);
    c.seed = 5;
    double t0 = now_s();
    vfmig_simvf *s = make(&c);
    double t = now_s() - t0;
    uint64_t n;
    const uint8_t *v = vfmig_simvf_vram(s, &n);
    double zs = zero_page_share(v, n, 64u << 10);
    fprintf(stderr, "mix 128 MiB: filled in %.3f s (%.2f GB/s), zero pages %.1f%%\n", t,
            (double)n / t / 1e9, zs * 100);
    ASSERT_TRUE(zs > 0.35 && zs < 0.45);
    vfmig_simvf_destroy(s);
}

/* ------------------------------------------------------------------------------------------ */
/* Query-and-clear every range in chunks whose starts and lengths are not multiples of 64, and
 * copy each dirty page into `shadow` (host order). Returns the number of dirty pages. */
static uint64_t copy_dirty(const vfmig_device *d, uint8_t *shadow, uint64_t ppr, uint64_t chunk)
{
    uint64_t *bm = calloc((chunk + 63) / 64, 8), found = 0;
    for (uint32_t r = 0; r < d->nranges; r++) {
        for (uint64_t first = 0; first < ppr; first += chunk) {
            uint64_t n = ppr - first < chunk ? ppr - first : chunk;
            ASSERT_OK(d->ops->query_dirty(d->dev, r, first, n, bm, 1));
            for (uint64_t i = 0; i < n; i++) {
                if (!(bm[i / 64] >> (i % 64) & 1))
                    continue;
                uint64_t p = first + i;
                ASSERT_OK(d->ops->read(d->dev, d->ranges[r].offset + p * d->page_size,
                                       shadow + (r * ppr + p) * d->page_size, d->page_size));
                found++;
            }
        }
    }
    free(bm);
    return found;
}

/* The key property: the engine's loop (snapshot, then rounds of query-and-clear + copy while the
 * writers run, then pause and a last round) ends with a copy equal to VRAM, byte for byte. */
static void run_exactness(vfmig_pattern pattern, uint32_t writers, uint64_t psz, uint32_t nranges,
                          uint64_t pages_per_range, uint32_t write_bytes)
{
    vfmig_simvf_config c = small_cfg(nranges * psz * pages_per_range, psz, nranges);
    c.pattern = pattern;
    c.hot_bytes = psz * 40;
    c.writers = writers;
    c.write_bytes = write_bytes;
    c.dirty_rate = 300u << 20;
    c.seed = 1000 + pattern;
    vfmig_simvf *s = make(&c);
    vfmig_device d;
    vfmig_simvf_device(s, &d);
    uint64_t ppr = d.ranges[0].size / psz, n;
    const uint8_t *vram = vfmig_simvf_vram(s, &n);
    uint8_t *shadow = malloc(n);

    ASSERT_OK(vfmig_simvf_start(s));
    ASSERT_EQ(vfmig_simvf_get_state(s), VFMIG_SIMVF_RUNNING);
    ASSERT_OK(d.ops->prepare(d.dev, VFMIG_ROLE_SOURCE));
    sleep_ms(5);
    ASSERT_OK(d.ops->start_tracking(d.dev));
    for (uint32_t r = 0; r < nranges; r++) /* round 0: everything, racing with the writers */
        ASSERT_OK(d.ops->read(d.dev, d.ranges[r].offset, shadow + r * ppr * psz, ppr * psz));
    uint64_t rounds = 0, pages = 0;
    double t_end = now_s() + 0.12;
    while (now_s() < t_end) {
        pages += copy_dirty(&d, shadow, ppr, 37 + rounds % 50);
        rounds++;
        if (rounds % 4) /* let dirt pile up between most rounds, as a real round takes time */
            sleep_ms((unsigned)(rounds % 3));
    }
    ASSERT_OK(d.ops->pause(d.dev));
    ASSERT_EQ(vfmig_simvf_get_state(s), VFMIG_SIMVF_PAUSED);
    uint64_t last = copy_dirty(&d, shadow, ppr, 64);
    vfmig_simvf_counters k;
    vfmig_simvf_get_counters(s, &k);
    if (memcmp(shadow, vram, n) != 0) {
        uint64_t bad = 0;
        for (uint64_t p = 0; p < n / psz; p++)
            bad += memcmp(shadow + p * psz, vram + p * psz, psz) != 0;
        T_FAIL("pattern %d: %" PRIu64 " pages differ after the final pass (lost writes)", pattern,
               bad);
    }
    fprintf(stderr,
            "exactness pattern %d writers %u page %" PRIu64 ": %" PRIu64 " writes, %" PRIu64
            " rounds, %" PRIu64 " pages copied, %" PRIu64 " in the last pass\n",
            pattern, writers, psz, k.writes, rounds, pages, last);
    ASSERT_TRUE(k.writes > 0 && pages > 0);
    /* Nothing left after the final pass while paused. */
    ASSERT_EQ(copy_dirty(&d, shadow, ppr, 200), 0);
    ASSERT_OK(d.ops->stop_tracking(d.dev));
    uint64_t bm[2];
    ASSERT_EQ(d.ops->query_dirty(d.dev, 0, 0, 64, bm, 1), VFMIG_ESTATE);
    ASSERT_OK(d.ops->resume(d.dev));
    ASSERT_OK(d.ops->end(d.dev));
    vfmig_simvf_destroy(s);
    free(shadow);
}

static void test_dirty_exactness(void)
{
    /* Small VRAMs: pages rewritten many times, rounds racing with writes to the same pages. */
    run_exactness(VFMIG_PATTERN_UNIFORM, 2, 4096, 3, 96, 4096);
    run_exactness(VFMIG_PATTERN_HOT, 2, 64u << 10, 2, 96, 4096);
    run_exactness(VFMIG_PATTERN_SEQ, 1, 8192, 1, 96, 1000);
    run_exactness(VFMIG_PATTERN_UNIFORM, 3, 16384, 5, 96, 16384);
    /* A large one: most pages written once or twice, so any single lost write shows. */
    run_exactness(VFMIG_PATTERN_UNIFORM, 2, 4096, 2, 4000, 4096);
}

/* ------------------------------------------------------------------------------------------ */
static int bit(const uint64_t *bm, uint64_t i)
{
    return (int)(bm[i / 64] >> (i % 64) & 1);
}

static void test_query_unaligned(uint64_t seed)
{
    const uint64_t psz = 4096, ppr = 333; /* not a multiple of 64 */
    vfmig_simvf_config c = small_cfg(2 * ppr * psz, psz, 2);
    c.content = VFMIG_CONTENT_ZERO;
    c.dirty_rate = 20u << 20; /* slow: even a late wake-up leaves clean pages */
    c.writers = 2;
    vfmig_simvf *s = make(&c);
    vfmig_device d;
    vfmig_simvf_device(s, &d);
    uint64_t bm[8];
    ASSERT_EQ(d.ops->query_dirty(d.dev, 0, 0, ppr, bm, 0), VFMIG_ESTATE); /* not tracking */
    ASSERT_OK(d.ops->start_tracking(d.dev));
    ASSERT_EQ(d.ops->query_dirty(d.dev, 2, 0, 1, bm, 0), VFMIG_EINVAL);
    ASSERT_EQ(d.ops->query_dirty(d.dev, 0, ppr - 3, 4, bm, 0), VFMIG_EINVAL);
    ASSERT_EQ(d.ops->query_dirty(d.dev, 0, ppr + 1, 0, bm, 0), VFMIG_EINVAL);
    ASSERT_EQ(d.ops->query_dirty(d.dev, 0, UINT64_MAX, 2, bm, 0), VFMIG_EINVAL);
    ASSERT_OK(d.ops->query_dirty(d.dev, 0, ppr, 0, bm, 0));

    /* Dirty about half of the pages, then pause so the bits hold still. */
    ASSERT_OK(vfmig_simvf_start(s));
    vfmig_simvf_counters k;
    for (int i = 0; i < 2000; i++) {
        vfmig_simvf_get_counters(s, &k);
        if (k.writes >= ppr / 2)
            break;
        sleep_ms(1);
    }
    ASSERT_OK(d.ops->pause(d.dev));
    uint64_t ref[2][8];
    uint64_t set = 0;
    for (uint32_t r = 0; r < 2; r++) {
        memset(ref[r], 0xa5, sizeof ref[r]); /* the op must zero what it does not set */
        ASSERT_OK(d.ops->query_dirty(d.dev, r, 0, ppr, ref[r], 0));
        for (uint64_t i = ppr; i < 6 * 64; i++)
            ASSERT_EQ(bit(ref[r], i), 0);
        for (uint64_t i = 0; i < ppr; i++)
            set += (uint64_t)bit(ref[r], i);
    }
    fprintf(stderr, "query: %" PRIu64 " of %" PRIu64 " pages dirty\n", set, 2 * ppr);
    ASSERT_TRUE(set > 0 && set < 2 * ppr);

    /* Non-clearing partial reads see exactly their slice and disturb nothing. */
    uint64_t rng = seed;
    for (int t = 0; t < 200; t++) {
        uint32_t r = (uint32_t)(t_rand(&rng) % 2);
        uint64_t first = t_rand(&rng) % ppr, n = t_rand(&rng) % (ppr - first + 1);
        if (n > 5 * 64)
            n = 5 * 64;
        memset(bm, 0xff, sizeof bm);
        ASSERT_OK(d.ops->query_dirty(d.dev, r, first, n, bm, 0));
        for (uint64_t i = 0; i < n; i++)
            ASSERT_EQ(bit(bm, i), bit(ref[r], first + i));
        for (uint64_t i = n; i < (n + 63) / 64 * 64; i++)
            ASSERT_EQ(bit(bm, i), 0);
    }
    /* Clearing in shuffled unaligned pieces returns each bit once, and clears only its slice. */
    for (uint32_t r = 0; r < 2; r++) {
        uint64_t cuts[64], ncuts = 0, pos = 0;
        while (pos < ppr) {
            cuts[ncuts++] = pos;
            pos += 1 + t_rand(&rng) % 100;
        }
        cuts[ncuts] = ppr;
        /* Visit pieces in a scrambled order: odd indices first, then even. */
        for (int pass = 0; pass < 2; pass++) {
            for (uint64_t i = (uint64_t)(1 - pass); i < ncuts; i += 2) {
                uint64_t first = cuts[i], n = cuts[i + 1] - cuts[i];
                ASSERT_OK(d.ops->query_dirty(d.dev, r, first, n, bm, 1));
                for (uint64_t b = 0; b < n; b++)
                    ASSERT_EQ(bit(bm, b), bit(ref[r], first + b));
                /* Again: now empty. */
                ASSERT_OK(d.ops->query_dirty(d.dev, r, first, n, bm, 1));
                for (uint64_t b = 0; b < n; b++)
                    ASSERT_EQ(bit(bm, b), 0);
            }
        }
        ASSERT_OK(d.ops->query_dirty(d.dev, r, 0, ppr, bm, 0));
        for (uint64_t i = 0; i < ppr; i++)
            ASSERT_EQ(bit(bm, i), 0);
    }
    /* start_tracking clears the plane. */
    ASSERT_OK(d.ops->resume(d.dev));
    sleep_ms(3);
    ASSERT_OK(d.ops->pause(d.dev));
    ASSERT_OK(d.ops->start_tracking(d.dev));
    for (uint32_t r = 0; r < 2; r++) {
        ASSERT_OK(d.ops->query_dirty(d.dev, r, 0, ppr, bm, 0));
        for (uint64_t i = 0; i < ppr; i++)
            ASSERT_EQ(bit(bm, i), 0);
    }
    vfmig_simvf_destroy(s);
}

/* ------------------------------------------------------------------------------------------ */
static void test_pause_resume(void)
{
    vfmig_simvf_config c = small_cfg(16u << 20, 64u << 10, 1);
    c.dirty_rate = 200u << 20;
    c.writers = 2;
    vfmig_simvf *s = make(&c);
    vfmig_device d;
    vfmig_simvf_device(s, &d);
    uint64_t n;
    const uint8_t *vram = vfmig_simvf_vram(s, &n);
    uint8_t *snap = malloc(n);
    ASSERT_EQ(vfmig_simvf_get_state(s), VFMIG_SIMVF_IDLE);
    ASSERT_OK(vfmig_simvf_start(s));
    ASSERT_OK(vfmig_simvf_start(s)); /* idempotent */
    ASSERT_EQ(vfmig_simvf_get_state(s), VFMIG_SIMVF_RUNNING);
    vfmig_simvf_counters k0, k1;
    for (int i = 0; i < 3; i++) {
        sleep_ms(20);
        ASSERT_OK(d.ops->pause(d.dev));
        ASSERT_EQ(vfmig_simvf_get_state(s), VFMIG_SIMVF_PAUSED);
        vfmig_simvf_get_counters(s, &k0);
        ASSERT_TRUE(k0.writes > 0);
        memcpy(snap, vram, n);
        sleep_ms(50);
        vfmig_simvf_get_counters(s, &k1);
        ASSERT_EQ(k1.writes, k0.writes);
        ASSERT_EQ(k1.bytes_written, k0.bytes_written);
        ASSERT_TRUE(memcmp(snap, vram, n) == 0);
        ASSERT_OK(d.ops->resume(d.dev));
        ASSERT_EQ(vfmig_simvf_get_state(s), VFMIG_SIMVF_RUNNING);
        for (int w = 0; w < 2000; w++) { /* writes come back (no timing bound: a loaded box) */
            vfmig_simvf_get_counters(s, &k1);
            if (k1.writes > k0.writes)
                break;
            sleep_ms(1);
        }
        ASSERT_TRUE(k1.writes > k0.writes);
        ASSERT_EQ(k1.pauses, (uint32_t)i + 1);
        ASSERT_EQ(k1.resumes, (uint32_t)i + 1);
    }
    /* Stop waits for the writers; nothing changes afterwards. */
    vfmig_simvf_stop(s);
    ASSERT_EQ(vfmig_simvf_get_state(s), VFMIG_SIMVF_IDLE);
    vfmig_simvf_get_counters(s, &k0);
    memcpy(snap, vram, n);
    sleep_ms(20);
    vfmig_simvf_get_counters(s, &k1);
    ASSERT_EQ(k1.writes, k0.writes);
    ASSERT_TRUE(memcmp(snap, vram, n) == 0);
    /* Start again after a stop; stop while paused keeps it paused. */
    ASSERT_OK(vfmig_simvf_start(s));
    ASSERT_OK(d.ops->pause(d.dev));
    vfmig_simvf_stop(s);
    ASSERT_EQ(vfmig_simvf_get_state(s), VFMIG_SIMVF_PAUSED);
    vfmig_simvf_stop(s);
    vfmig_simvf_destroy(s); /* destroy while running is covered by the other tests */
    free(snap);
}

/* Dirty rate honoured loosely: never much above the target; throttle lowers it; 0 is idle. */
static void test_rate(void)
{
    vfmig_simvf_config c = small_cfg(16u << 20, 64u << 10, 1);
    c.dirty_rate = 40u << 20;
    vfmig_simvf *s = make(&c);
    vfmig_device d;
    vfmig_simvf_device(s, &d);
    vfmig_simvf_counters k0, k1;
    ASSERT_OK(vfmig_simvf_start(s));
    double t0 = now_s();
    sleep_ms(200);
    vfmig_simvf_get_counters(s, &k1);
    double t = now_s() - t0, want = (double)c.dirty_rate * t;
    fprintf(stderr, "rate: %.1f MB/s for a target of %.1f MB/s\n", k1.bytes_written / t / 1e6,
            c.dirty_rate / 1e6);
    ASSERT_TRUE(k1.bytes_written > 0);
    ASSERT_TRUE((double)k1.bytes_written < want * 1.25 + 2 * 4096);
    ASSERT_EQ(k1.bytes_written, k1.writes * 4096);

    ASSERT_EQ(d.ops->throttle(d.dev, 0), VFMIG_EINVAL);
    ASSERT_EQ(d.ops->throttle(d.dev, 101), VFMIG_EINVAL);
    ASSERT_OK(d.ops->throttle(d.dev, 10));
    vfmig_simvf_get_counters(s, &k0);
    ASSERT_EQ(k0.throttle_percent, 10);
    t0 = now_s();
    sleep_ms(200);
    vfmig_simvf_get_counters(s, &k1);
    t = now_s() - t0;
    double got = (double)(k1.bytes_written - k0.bytes_written);
    fprintf(stderr, "throttled 10%%: %.1f MB/s\n", got / t / 1e6);
    ASSERT_TRUE(got < (double)c.dirty_rate * t * 0.1 * 1.25 + 2 * 4096);
    ASSERT_OK(d.ops->end(d.dev)); /* end lifts the throttle */
    vfmig_simvf_get_counters(s, &k1);
    ASSERT_EQ(k1.throttle_percent, 100);
    vfmig_simvf_destroy(s);

    /* Rate 0: running, but no writes; a rate set later starts them, and 0 again stops them. */
    c.dirty_rate = 0;
    s = make(&c);
    ASSERT_OK(vfmig_simvf_start(s));
    ASSERT_EQ(vfmig_simvf_get_state(s), VFMIG_SIMVF_RUNNING);
    sleep_ms(20);
    vfmig_simvf_get_counters(s, &k1);
    ASSERT_EQ(k1.writes, 0);
    ASSERT_OK(vfmig_simvf_set_dirty_rate(s, 20u << 20));
    for (int i = 0; i < 2000 && k1.writes == 0; i++) {
        sleep_ms(1);
        vfmig_simvf_get_counters(s, &k1);
    }
    ASSERT_TRUE(k1.writes > 0);
    ASSERT_OK(vfmig_simvf_set_dirty_rate(s, 0));
    int quiet = 0; /* writes paced before the change may still land: wait for 30 quiet ms */
    for (int i = 0; i < 100 && !quiet; i++) {
        vfmig_simvf_get_counters(s, &k0);
        sleep_ms(30);
        vfmig_simvf_get_counters(s, &k1);
        quiet = k1.writes == k0.writes;
    }
    ASSERT_TRUE(quiet);
    ASSERT_EQ(vfmig_simvf_set_dirty_rate(NULL, 1), VFMIG_EINVAL);
    vfmig_simvf_destroy(s);
}

/* ------------------------------------------------------------------------------------------ */
static void *save_blob(const vfmig_device *d, int mutable_blob, uint64_t *size, int *rc)
{
    uint64_t n = 0;
    int r = mutable_blob ? d->ops->save_mutable(d->dev, NULL, &n)
                         : d->ops->save_immutable(d->dev, NULL, &n);
    ASSERT_OK(r);
    void *buf = malloc(n);
    *size = n;
    *rc = mutable_blob ? d->ops->save_mutable(d->dev, buf, size)
                       : d->ops->save_immutable(d->dev, buf, size);
    return buf;
}

static void test_blobs(void)
{
    vfmig_simvf_config c = small_cfg(8u << 20, 64u << 10, 2);
    c.immutable_bytes = 1000;
    c.mutable_bytes = 5000;
    c.dirty_rate = 50u << 20;
    c.state_version = 7;
    vfmig_simvf *src = make(&c);
    vfmig_simvf_config tc = c;
    tc.dirty_rate = 0;
    vfmig_simvf *tgt = make(&tc);
    tc.state_version = 8;
    vfmig_simvf *newer = make(&tc);
    tc = c;
    tc.page_size = 32u << 10;
    vfmig_simvf *other = make(&tc);
    vfmig_device ds, dt, dn, dother;
    vfmig_simvf_device(src, &ds);
    vfmig_simvf_device(tgt, &dt);
    vfmig_simvf_device(newer, &dn);
    vfmig_simvf_device(other, &dother);

    ASSERT_OK(ds.ops->prepare(ds.dev, VFMIG_ROLE_SOURCE));
    ASSERT_OK(dt.ops->prepare(dt.dev, VFMIG_ROLE_TARGET)); /* fine on an idle sim */
    ASSERT_EQ(ds.ops->prepare(ds.dev, (vfmig_role)5), VFMIG_EINVAL);

    /* Immutable: two passes, exact size, same bytes from a sim of the same version. */
    uint64_t isz;
    int rc;
    uint8_t *imm = save_blob(&ds, 0, &isz, &rc);
    ASSERT_OK(rc);
    ASSERT_EQ(isz, 1000);
    uint64_t isz2;
    uint8_t *imm2 = save_blob(&dt, 0, &isz2, &rc);
    ASSERT_OK(rc);
    ASSERT_TRUE(isz2 == isz && memcmp(imm, imm2, isz) == 0);
    uint64_t small = isz - 1;
    ASSERT_EQ(ds.ops->save_immutable(ds.dev, imm2, &small), VFMIG_EINVAL);
    ASSERT_EQ(ds.ops->save_immutable(ds.dev, NULL, NULL), VFMIG_EINVAL);

    ASSERT_OK(dt.ops->restore_immutable(dt.dev, imm, isz));
    ASSERT_EQ(dn.ops->restore_immutable(dn.dev, imm, isz), VFMIG_EINCOMPAT);
    ASSERT_EQ(dother.ops->restore_immutable(dother.dev, imm, isz), VFMIG_EINCOMPAT);
    imm2[isz / 2] ^= 1; /* corrupt */
    ASSERT_EQ(dt.ops->restore_immutable(dt.dev, imm2, isz), VFMIG_EINVAL);
    ASSERT_EQ(dt.ops->restore_immutable(dt.dev, imm, isz - 1), VFMIG_EINVAL);
    ASSERT_EQ(dt.ops->restore_immutable(dt.dev, imm, 10), VFMIG_EINVAL);
    ASSERT_EQ(dt.ops->restore_immutable(dt.dev, NULL, 0), VFMIG_EINVAL);
    vfmig_simvf_counters k;
    vfmig_simvf_get_counters(tgt, &k);
    ASSERT_EQ(k.immutable_restores, 1);
    ASSERT_EQ(k.immutable_refusals, 4);
    vfmig_simvf_get_counters(newer, &k);
    ASSERT_EQ(k.immutable_refusals, 1);
    ASSERT_EQ(k.immutable_restores, 0);

    /* Mutable: only while paused. */
    ASSERT_OK(vfmig_simvf_start(src));
    sleep_ms(10);
    uint64_t msz;
    uint8_t *mut = save_blob(&ds, 1, &msz, &rc);
    ASSERT_EQ(rc, VFMIG_ESTATE);
    free(mut);
    ASSERT_OK(ds.ops->pause(ds.dev));
    mut = save_blob(&ds, 1, &msz, &rc);
    ASSERT_OK(rc);
    ASSERT_EQ(msz, 5000);
    uint64_t msz2;
    uint8_t *mut2 = save_blob(&ds, 1, &msz2, &rc); /* paused: the same state again */
    ASSERT_OK(rc);
    ASSERT_TRUE(msz2 == msz && memcmp(mut, mut2, msz) == 0);
    free(mut2);

    ASSERT_TRUE(vfmig_simvf_restored_mutable(tgt, NULL) == NULL);
    mut[100] ^= 0x40;
    ASSERT_EQ(dt.ops->restore_mutable(dt.dev, mut, msz), VFMIG_EINVAL);
    mut[100] ^= 0x40;
    ASSERT_EQ(dt.ops->restore_mutable(dt.dev, imm, isz), VFMIG_EINVAL); /* wrong kind of blob */
    ASSERT_OK(dt.ops->restore_mutable(dt.dev, mut, msz));
    uint8_t keep = mut[200];
    mut[200] ^= 0xff; /* the sim holds its own copy */
    uint64_t rsz;
    const uint8_t *kept = vfmig_simvf_restored_mutable(tgt, &rsz);
    ASSERT_TRUE(kept != NULL && rsz == msz && kept[200] == keep);
    mut[200] = keep;
    ASSERT_TRUE(memcmp(kept, mut, msz) == 0);
    vfmig_simvf_get_counters(tgt, &k);
    ASSERT_EQ(k.mutable_restores, 1);

    /* The target finishes: end, resume (rate 0: runs, no workload threads). */
    ASSERT_OK(dt.ops->end(dt.dev));
    ASSERT_OK(dt.ops->resume(dt.dev));
    ASSERT_EQ(vfmig_simvf_get_state(tgt), VFMIG_SIMVF_RUNNING);
    ASSERT_EQ(dt.ops->restore_mutable(dt.dev, mut, msz), VFMIG_ESTATE); /* not on a running VF */
    vfmig_simvf_get_counters(tgt, &k);
    ASSERT_EQ(k.prepares, 1);
    ASSERT_EQ(k.ends, 1);
    ASSERT_EQ(k.resumes, 1);

    /* The source rolls back: resume, end. */
    ASSERT_OK(ds.ops->resume(ds.dev));
    ASSERT_OK(ds.ops->end(ds.dev));
    ASSERT_EQ(vfmig_simvf_get_state(src), VFMIG_SIMVF_RUNNING);

    free(imm);
    free(imm2);
    free(mut);
    vfmig_simvf_destroy(src);
    vfmig_simvf_destroy(tgt);
    vfmig_simvf_destroy(newer);
    vfmig_simvf_destroy(other);
}

/* A target resumed with a dirty rate starts its workload (the migrated VM carries on). */
static void test_target_resume_starts(void)
{
    vfmig_simvf_config c = small_cfg(4u << 20, 4096, 1);
    c.dirty_rate = 20u << 20;
    vfmig_simvf *s = make(&c);
    vfmig_device d;
    vfmig_simvf_device(s, &d);
    ASSERT_OK(d.ops->prepare(d.dev, VFMIG_ROLE_TARGET));
    ASSERT_OK(d.ops->pause(d.dev)); /* pause on an idle VF is fine */
    ASSERT_EQ(vfmig_simvf_get_state(s), VFMIG_SIMVF_PAUSED);
    ASSERT_OK(d.ops->resume(d.dev));
    ASSERT_EQ(vfmig_simvf_get_state(s), VFMIG_SIMVF_RUNNING);
    vfmig_simvf_counters k;
    for (int i = 0; i < 2000; i++) {
        vfmig_simvf_get_counters(s, &k);
        if (k.writes > 0)
            break;
        sleep_ms(1);
    }
    ASSERT_TRUE(k.writes > 0);
    vfmig_simvf_destroy(s);
}

/* ------------------------------------------------------------------------------------------ */
/* The initial fill reports progress on the creating thread, from 0 to the whole VRAM, without
 * changing the image; the config's size is honoured. */
typedef struct setup_log {
    pthread_t thread;
    unsigned calls, other_thread, went_back;
    uint64_t first, last, total;
} setup_log;

static void on_setup(void *user, uint64_t done, uint64_t total)
{
    setup_log *l = user;
    if (!pthread_equal(pthread_self(), l->thread))
        l->other_thread++;
    if (l->calls == 0)
        l->first = done;
    else if (done < l->last)
        l->went_back++;
    l->calls++;
    l->last = done;
    l->total = total;
}

static void test_setup_progress(void)
{
    const uint64_t vram = 64u << 20; /* above 32 MiB: filled by several threads */
    vfmig_simvf_config c = small_cfg(vram, 64u << 10, 2);
    c.content = VFMIG_CONTENT_MIX;
    c.seed = 5;
    vfmig_simvf *plain = make(&c);
    setup_log log = {.thread = pthread_self()};
    c.setup_progress = on_setup;
    c.setup_user = &log;
    vfmig_simvf *watched = make(&c);
    ASSERT_TRUE(log.calls >= 2);
    ASSERT_EQ(log.first, 0);
    ASSERT_EQ(log.last, vram);
    ASSERT_EQ(log.total, vram);
    ASSERT_EQ(log.went_back, 0);
    ASSERT_EQ(log.other_thread, 0);
    uint64_t n;
    const uint8_t *a = vfmig_simvf_vram(plain, &n), *b = vfmig_simvf_vram(watched, NULL);
    ASSERT_TRUE(memcmp(a, b, n) == 0); /* watching changes nothing in the image */
    vfmig_simvf_destroy(plain);
    vfmig_simvf_destroy(watched);

    /* A size from before the size field (or none) is refused; a newer caller's larger struct is
     * read as far as this library knows it. */
    vfmig_simvf *s = (vfmig_simvf *)1;
    c = small_cfg(1u << 20, 4096, 1);
    c.size = 0;
    ASSERT_EQ(vfmig_simvf_create(&c, &s), VFMIG_EINVAL);
    ASSERT_TRUE(s == NULL);
    c.size = (uint32_t)offsetof(vfmig_simvf_config, setup_progress);
    ASSERT_EQ(vfmig_simvf_create(&c, &s), VFMIG_EINVAL);
    struct {
        vfmig_simvf_config cfg;
        uint64_t future_field;
    } newer = {.cfg = small_cfg(1u << 20, 4096, 1), .future_field = 0};
    newer.cfg.size = (uint32_t)sizeof newer;
    ASSERT_OK(vfmig_simvf_create(&newer.cfg, &s));
    vfmig_simvf_destroy(s);
}

#define RUN(call)                                                                                  \
    do {                                                                                           \
        double t0_ = now_s();                                                                      \
        call;                                                                                      \
        fprintf(stderr, "%-40s %.2f s\n", #call, now_s() - t0_);                                 \
    } while (0)

int main(void)
{
    uint64_t seed = t_seed();
    RUN(test_config());
    RUN(test_layout_and_bounds());
    RUN(test_content());
    RUN(test_query_unaligned(seed));
    RUN(test_dirty_exactness());
    RUN(test_pause_resume());
    RUN(test_rate());
    RUN(test_blobs());
    RUN(test_target_resume_starts());
    RUN(test_setup_progress());
    fprintf(stderr, "test_simvf: all passed\n");
    return 0;
}
