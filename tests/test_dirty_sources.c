/* tests/test_dirty_sources.c - the dirty sources beyond the simulated bitmap (issue 10):
 *   - the page hash the GPU computes (its per-lane decomposition, on the host) is XXH3-64;
 *   - the hash tracker never misses a changed page: scripted changes of every kind against a
 *     shadow of what was sent, peek-then-clear reuse, partial reads, with and without a host view
 *     and the sampling pre-filter;
 *   - the hash tracker and the userfaultfd tracker under racing writers never lose a write (the
 *     simulated VF's workload, its own bits hidden; rounds copy what the tracker reports);
 *   - a live migration over loopback through each (hash, hostmem) is verified byte for byte;
 *   - soft-dirty (part "softdirty", tracker forced by the config's `tracker` field): exact pages,
 *     racing writers and a live migration verified byte for byte where the kernel has it; where it
 *     does not, the clear error and a skip (77), or a failure when VFMIG_TEST_REQUIRE_SOFT_DIRTY=1
 *     (tests/rdma-vm runs it so in a kernel that has it); and a clear error where a region cannot
 *     be tracked at all.
 */
#include "engine/devices/hashtrack_priv.h"
#include "engine/devices/pagehash.h"
#include "testutil.h"
#include "vfmig_sim.h"

#include <xxhash.h>

#include <pthread.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int bit(const uint64_t *bm, uint64_t i)
{
    return (int)(bm[i / 64] >> (i % 64) & 1);
}

/* ------------------------------------------------------------------------------------------ */
static void test_page_hash(uint64_t seed)
{
    vfmig_ph_keys k;
    vfmig_ph_keys_init(&k, vfmig_ph_secret_host);
    size_t max = 2u << 20;
    uint8_t *buf = malloc(max);
    uint64_t rng = seed;
    size_t sizes[] = {1024, 2048, 4096, 8192, 16384, 65536, 1u << 20, 2u << 20};
    for (int kind = 0; kind < 3; kind++) {
        for (size_t i = 0; i < max; i++)
            buf[i] = kind == 0 ? 0 : kind == 1 ? (uint8_t)t_rand(&rng) : (uint8_t)(i * 7 / 64);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            uint64_t x = XXH3_64bits(buf, sizes[s]);
            ASSERT_TRUE(vfmig_ph_page_ref(buf, sizes[s], &k) == x);
            ASSERT_TRUE(vfmig_ph_page_lanes(buf, sizes[s], &k) == x);
            ASSERT_TRUE(vfmig__ht_page_hash(buf, sizes[s]) == x);
        }
    }
    /* Every byte position of a 4 KiB page matters to both formulations. */
    for (int t = 0; t < 300; t++) {
        for (size_t i = 0; i < 4096; i++)
            buf[i] = (uint8_t)t_rand(&rng);
        uint64_t before = vfmig_ph_page_lanes(buf, 4096, &k);
        buf[t_rand(&rng) % 4096] ^= (uint8_t)(1u << (t % 8));
        uint64_t x = XXH3_64bits(buf, 4096);
        ASSERT_TRUE(vfmig_ph_page_lanes(buf, 4096, &k) == x);
        ASSERT_TRUE(x != before);
    }
    free(buf);
}

/* ------------------------------------------------------------------------------------------ */
/* A device with no dirty bits at all: host memory, two ranges with a gap in the segment.       */
typedef struct plain_dev {
    uint8_t *mem;
    uint64_t range_size;
    vfmig_range ranges[2];
    int paused;
} plain_dev;

static uint8_t *plain_ptr(plain_dev *p, uint64_t off, uint64_t len)
{
    for (int r = 0; r < 2; r++)
        if (off >= p->ranges[r].offset && off + len <= p->ranges[r].offset + p->ranges[r].size)
            return p->mem + r * p->range_size + (off - p->ranges[r].offset);
    return NULL;
}
static int p_ok(void *d) { (void)d; return VFMIG_OK; }
static int p_prepare(void *d, vfmig_role r) { (void)d; (void)r; return VFMIG_OK; }
static int p_read(void *d, uint64_t off, void *dst, size_t len)
{
    uint8_t *p = plain_ptr(d, off, len);
    if (!p)
        return VFMIG_EINVAL;
    memcpy(dst, p, len);
    return VFMIG_OK;
}
static int p_write(void *d, uint64_t off, const void *src, size_t len)
{
    uint8_t *p = plain_ptr(d, off, len);
    if (!p)
        return VFMIG_EINVAL;
    memcpy(p, src, len);
    return VFMIG_OK;
}
static int p_pause(void *d) { ((plain_dev *)d)->paused = 1; return VFMIG_OK; }
static int p_resume(void *d) { ((plain_dev *)d)->paused = 0; return VFMIG_OK; }
static int p_save(void *d, void *b, uint64_t *s) { (void)d; (void)b; *s = 64; return VFMIG_OK; }
static int p_restore(void *d, const void *b, uint64_t s) { (void)d; (void)b; (void)s; return VFMIG_OK; }
static const vfmig_device_ops plain_ops = {
    .prepare = p_prepare, .end = p_ok, .read = p_read, .write = p_write, .pause = p_pause, .resume = p_resume,
    .save_immutable = p_save, .save_mutable = p_save, .restore_immutable = p_restore, .restore_mutable = p_restore,
};

/* One change of the scripted kinds to page g (of `ps` bytes at `pg`). `sent` is the bytes the
 * engine last read from it. Returns whether the page now differs from what was sent. */
static int mutate(uint8_t *pg, const uint8_t *sent, uint64_t ps, uint64_t g, unsigned samples, uint64_t *rng)
{
    switch (t_rand(rng) % 6) {
    case 0: /* one bit anywhere */
        pg[t_rand(rng) % ps] ^= (uint8_t)(1u << (t_rand(rng) % 8));
        break;
    case 1: { /* one byte of a sampled line (the pre-filter's case) */
        uint64_t lines = ps / 64, n = samples ? samples : 1, stretch = lines / n;
        uint64_t z = g; /* same pick as the tracker: mix64(g) % stretch */
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        pg[(z % stretch) * 64 + t_rand(rng) % 64] ^= 0x40;
        break;
    }
    case 2: /* one byte outside every sampled line, most likely */
        pg[(t_rand(rng) % (ps / 64)) * 64 + 63 - t_rand(rng) % 3] += 1;
        break;
    case 3: /* put back what was sent: not a change */
        memcpy(pg, sent, ps);
        break;
    case 4: /* swap two different words: same bytes, other order */
    {
        uint64_t a = t_rand(rng) % (ps / 8), b = (a + 1 + t_rand(rng) % (ps / 8 - 1)) % (ps / 8), x, y;
        memcpy(&x, pg + a * 8, 8);
        memcpy(&y, pg + b * 8, 8);
        memcpy(pg + a * 8, &y, 8);
        memcpy(pg + b * 8, &x, 8);
        break;
    }
    default: /* rewrite the whole page */
        for (uint64_t i = 0; i < ps; i += 8) {
            uint64_t v = t_rand(rng);
            memcpy(pg + i, &v, 8);
        }
    }
    return memcmp(pg, sent, ps) != 0;
}

/* A hash tracker over plain_dev's first `nranges` ranges, the pre-filter always on when
 * `samples` (it is what is under test), in place when with_view. */
static vfmig_hashtrack *plain_tracker(plain_dev *p, uint32_t nranges, uint64_t ps, unsigned threads, unsigned samples,
                                      int with_view, vfmig_device *d)
{
    vfmig_device inner = {VFMIG_DEVICE_SIZES, .ops = &plain_ops, .dev = p, .page_size = ps, .nranges = nranges,
                          .ranges = p->ranges};
    vfmig_hashtrack_config hc;
    vfmig_hashtrack_config_init(&hc);
    hc.samples = samples;
    hc.sample_threshold_pct = 0;
    hc.threads = threads;
    hc.host_view = with_view ? p->mem : NULL;
    vfmig_hashtrack *t;
    ASSERT_OK(vfmig_hashtrack_create(&inner, &hc, &t));
    vfmig_hashtrack_device(t, d);
    return t;
}

static void run_never_misses(uint64_t ps, int with_view, unsigned samples, uint64_t seed)
{
    const uint64_t ppr = 300; /* not a multiple of 64 */
    plain_dev p = {0};
    p.range_size = ppr * ps;
    p.mem = malloc(2 * p.range_size);
    p.ranges[0] = (vfmig_range){3 * ps, p.range_size};
    p.ranges[1] = (vfmig_range){3 * ps + p.range_size + 5 * ps, p.range_size};
    uint64_t rng = seed;
    for (uint64_t i = 0; i < 2 * p.range_size; i += 8) {
        uint64_t v = t_rand(&rng) & (i % 4096 < 1024 ? 0 : ~0ull); /* a quarter of each 4K zero */
        memcpy(p.mem + i, &v, 8);
    }
    vfmig_device d;
    vfmig_hashtrack *t = plain_tracker(&p, 2, ps, 2, samples, with_view, &d);
    ASSERT_TRUE(d.ops->query_dirty != NULL && d.ops->throttle == NULL && d.tracking_cost != NULL);
    uint8_t *sent = calloc(2, p.range_size); /* the target's image: what reads returned */
    uint64_t *bm = calloc((ppr + 63) / 64, 8);
    ASSERT_OK(d.ops->start_tracking(d.dev));
    /* Nothing read yet: everything dirty. */
    for (uint32_t r = 0; r < 2; r++) {
        ASSERT_OK(d.ops->query_dirty(d.dev, r, 0, ppr, bm, 0));
        for (uint64_t i = 0; i < ppr; i++)
            ASSERT_EQ(bit(bm, i), 1);
    }
    /* Round 0: read everything, in runs of odd lengths, one of them unaligned (partial pages
     * keep no reference: dirty until read whole). */
    for (uint32_t r = 0; r < 2; r++) {
        uint8_t *dst = sent + r * p.range_size;
        ASSERT_OK(d.ops->read(d.dev, p.ranges[r].offset, dst, 7 * ps + 100));
        ASSERT_OK(d.ops->read(d.dev, p.ranges[r].offset + 7 * ps + 100, dst + 7 * ps + 100, (ppr - 7) * ps - 100));
    }
    ASSERT_OK(d.ops->query_dirty(d.dev, 0, 0, ppr, bm, 0));
    for (uint64_t i = 0; i < ppr; i++)
        ASSERT_EQ(bit(bm, i), i == 7); /* the page cut by the unaligned read boundary */
    /* The tracker's rule, mirrored: a full peek of a range is reused by the next clear query of
     * it unless the VF was paused in between. */
    int peeked[2] = {1, 1};
    ASSERT_OK(d.ops->read(d.dev, p.ranges[0].offset + 7 * ps, sent + 7 * ps, ps));
    ASSERT_OK(d.ops->read(d.dev, p.ranges[1].offset + 7 * ps, sent + p.range_size + 7 * ps, ps));

    uint64_t changes = 0, reported = 0, reuses = 0;
    for (int round = 0; round < 60; round++) {
        /* Changes of every kind to random pages. */
        int n = 1 + (int)(t_rand(&rng) % 40);
        for (int k = 0; k < n; k++) {
            uint32_t r = (uint32_t)(t_rand(&rng) % 2);
            uint64_t pg = t_rand(&rng) % ppr, g = r * ppr + pg;
            changes += (uint64_t)mutate(p.mem + g * ps, sent + g * ps, ps, g, samples ? samples : 4, &rng);
        }
        /* The engine's order: peek, then (maybe after more writes) fetch-and-clear. */
        int peek = round % 3 != 0, write_between = round % 5 == 1;
        if (round == 59)
            ASSERT_OK(d.ops->pause(d.dev)); /* the last one as in the blackout */
        for (uint32_t r = 0; r < 2; r++) {
            if (peek) {
                ASSERT_OK(d.ops->query_dirty(d.dev, r, 0, ppr, bm, 0));
                peeked[r] = 1;
                /* A fresh scan reports exactly the pages that differ from what was sent. */
                for (uint64_t i = 0; i < ppr; i++) {
                    uint64_t g = r * ppr + i;
                    ASSERT_EQ(bit(bm, i), memcmp(p.mem + g * ps, sent + g * ps, ps) != 0);
                }
            }
        }
        if (write_between && round != 59) {
            uint64_t g = t_rand(&rng) % (2 * ppr);
            mutate(p.mem + g * ps, sent + g * ps, ps, g, 4, &rng);
        }
        for (uint32_t r = 0; r < 2; r++) {
            /* Fetch-and-clear in two unaligned windows; copy what it reports, as the pipeline. */
            uint64_t cut = 1 + t_rand(&rng) % (ppr - 1);
            uint64_t win[2][2] = {{0, cut}, {cut, ppr - cut}};
            for (int w = 0; w < 2; w++) {
                ASSERT_OK(d.ops->query_dirty(d.dev, r, win[w][0], win[w][1], bm, 1));
                int reused = peeked[r] && round != 59;
                peeked[r] = 0;
                reuses += reused;
                for (uint64_t i = 0; i < win[w][1]; i++) {
                    uint64_t pg = win[w][0] + i, g = r * ppr + pg;
                    int differs = memcmp(p.mem + g * ps, sent + g * ps, ps) != 0;
                    /* A fresh scan (no peek, or paused) never misses; a reused answer may only
                     * miss what was written after the peek, found by the next scan. */
                    if (!reused && bit(bm, i) != differs)
                        T_FAIL("page %" PRIu64 " of range %u (window %d at %" PRIu64 ", round %d): reported %d, differs %d",
                               pg, r, w, win[w][0], round, bit(bm, i), differs);
                    if (bit(bm, i)) {
                        reported++;
                        ASSERT_OK(d.ops->read(d.dev, p.ranges[r].offset + pg * ps, sent + g * ps, ps));
                    }
                }
            }
        }
        /* At every round end, what is left different is what a fresh scan reports. */
    }
    /* Paused and fetched: the target's image is the source's. */
    ASSERT_TRUE(memcmp(sent, p.mem, 2 * p.range_size) == 0);
    vfmig_tracking_stats st;
    vfmig_hashtrack_get_stats(t, &st);
    fprintf(stderr,
            "hash tracker page %" PRIu64 " view %d samples %u: %" PRIu64 " changes, %" PRIu64 " reported, %" PRIu64
            " scans, %" PRIu64 " hashed, %" PRIu64 " by samples, %" PRIu64 " read-hashed, %" PRIu64 " reuses\n",
            ps, with_view, samples, changes, reported, st.scans, st.pages_hashed, st.pages_sampled,
            st.pages_read_hashed, reuses);
    ASSERT_TRUE(changes > 100 && st.scans > 0 && st.pages_hashed > 0);
    if (samples)
        ASSERT_TRUE(st.pages_sampled > 0);
    else
        ASSERT_EQ(st.pages_sampled, 0);
    uint64_t cost = 0;
    ASSERT_OK(d.tracking_cost(d.dev, &cost));
    ASSERT_TRUE(cost > 0);
    /* Bad queries. */
    ASSERT_EQ(d.ops->query_dirty(d.dev, 2, 0, 1, bm, 0), VFMIG_EINVAL);
    ASSERT_EQ(d.ops->query_dirty(d.dev, 0, ppr - 1, 2, bm, 0), VFMIG_EINVAL);
    ASSERT_EQ(d.ops->read(d.dev, p.ranges[0].offset + p.range_size - 8, bm, 16), VFMIG_EINVAL);
    vfmig_hashtrack_destroy(t);
    free(bm);
    free(sent);
    free(p.mem);
}

/* The scan split over threads (contiguous slices of the query's bitmap, 64-page aligned, at
 * least 1024 pages each): a changed page is never missed, whatever slice or window edge it is
 * on. One range of 5000 pages (not a multiple of 64), windows that start off the slice grid. */
static void run_parallel_scan(unsigned threads, int with_view, unsigned samples, uint64_t seed)
{
    const uint64_t ps = 4096, np = 5000;
    plain_dev p = {0};
    p.range_size = np * ps;
    p.mem = malloc(2 * p.range_size); /* plain_dev has two ranges; only the first is used */
    p.ranges[0] = (vfmig_range){0, p.range_size};
    p.ranges[1] = (vfmig_range){p.range_size, p.range_size};
    uint64_t rng = seed;
    for (uint64_t i = 0; i < p.range_size; i += 8) {
        uint64_t v = t_rand(&rng);
        memcpy(p.mem + i, &v, 8);
    }
    vfmig_device d;
    vfmig_hashtrack *t = plain_tracker(&p, 1, ps, threads, samples, with_view, &d);
    uint8_t *sent = malloc(p.range_size);
    uint64_t *bm = calloc((np + 63) / 64, 8);
    ASSERT_OK(d.ops->start_tracking(d.dev));
    ASSERT_OK(d.ops->read(d.dev, 0, sent, p.range_size));
    uint64_t changed = 0;
    for (int round = 0; round < 12; round++) {
        /* Windows: the whole range, then ones starting off the 64-page grid. */
        uint64_t first = round % 3 == 0 ? 0 : 1 + t_rand(&rng) % 700, n = np - first - (round % 3 == 2 ? 333 : 0);
        unsigned slices = threads;
        if (n / 1024 < slices)
            slices = (unsigned)(n / 1024);
        if (slices < 1)
            slices = 1;
        /* Pages on each side of every slice edge (as the tracker cuts: word k*words/slices), the
         * window's first and last, and some at random. */
        uint64_t words = (n + 63) / 64, pick[64];
        int npick = 0;
        for (unsigned k = 1; k < slices; k++) {
            uint64_t edge = words * k / slices * 64;
            pick[npick++] = edge - 1;
            pick[npick++] = edge;
        }
        pick[npick++] = 0;
        pick[npick++] = n - 1;
        while (npick < 24)
            pick[npick++] = t_rand(&rng) % n;
        for (int k = 0; k < npick; k++) {
            uint64_t g = first + pick[k];
            changed += (uint64_t)mutate(p.mem + g * ps, sent + g * ps, ps, g, samples ? samples : 4, &rng);
        }
        if (round == 11)
            ASSERT_OK(d.ops->pause(d.dev));
        /* Every query here scans: a windowed peek keeps no answer, and the only full-range
         * queries clear (a full peek's answer would be reused by the next clear query). */
        ASSERT_OK(d.ops->query_dirty(d.dev, 0, first, n, bm, first == 0 || round % 2));
        for (uint64_t i = 0; i < n; i++) {
            uint64_t g = first + i;
            int differs = memcmp(p.mem + g * ps, sent + g * ps, ps) != 0;
            if (bit(bm, i) != differs)
                T_FAIL("threads %u view %d samples %u round %d window %" PRIu64 "+%" PRIu64 ": page %" PRIu64
                       " reported %d, differs %d", threads, with_view, samples, round, first, n, g, bit(bm, i), differs);
            if (bit(bm, i))
                ASSERT_OK(d.ops->read(d.dev, g * ps, sent + g * ps, ps));
        }
    }
    ASSERT_TRUE(memcmp(sent, p.mem, p.range_size) == 0);
    ASSERT_TRUE(changed > 100);
    vfmig_hashtrack_destroy(t);
    free(bm);
    free(sent);
    free(p.mem);
}

static void test_hashtrack_never_misses(uint64_t seed)
{
    /* Split scans: 1 thread (the reference), 2, 3 and 8 (the cap; 4 slices of this window). */
    static const unsigned threads[] = {1, 2, 3, 8};
    for (unsigned k = 0; k < 4; k++) {
        run_parallel_scan(threads[k], 1, 0, seed + 10 + k);
        run_parallel_scan(threads[k], 0, 0, seed + 20 + k);
        run_parallel_scan(threads[k], 1, 4, seed + 30 + k);
    }
    run_never_misses(4096, 1, 4, seed);
    run_never_misses(4096, 0, 4, seed + 1);
    run_never_misses(4096, 1, 0, seed + 2);
    run_never_misses(65536, 1, 8, seed + 3);
    run_never_misses(8192, 0, 2, seed + 4);

    vfmig_hashtrack *t;
    vfmig_device bad = {VFMIG_DEVICE_SIZES, .ops = &plain_ops, .page_size = 3000, .nranges = 1};
    vfmig_range r = {0, 3000 * 4};
    bad.ranges = &r;
    ASSERT_EQ(vfmig_hashtrack_create(&bad, NULL, &t), VFMIG_EINVAL);
    ASSERT_EQ(vfmig_hashtrack_create(NULL, NULL, &t), VFMIG_EINVAL);
    vfmig_hashtrack_destroy(NULL);
    ASSERT_TRUE(!strcmp(vfmig_dirty_source_name(VFMIG_DIRTY_UFFD_WP), "uffd-wp"));
    ASSERT_TRUE(!strcmp(vfmig_dirty_source_name(VFMIG_DIRTY_CUDA_HASH), "cuda-hash"));
}

/* ------------------------------------------------------------------------------------------ */
/* Racing writers: the simulated VF's workload writes, its own dirty bits unused; rounds copy   */
/* what the tracker under test reports into a shadow, then pause, a final round, compare.        */
static vfmig_simvf *make_sim(uint64_t vram, uint64_t ps, uint32_t nranges, uint64_t rate, uint64_t seed)
{
    vfmig_simvf_config c;
    vfmig_simvf_config_init(&c);
    c.vram_bytes = vram;
    c.page_size = ps;
    c.nranges = nranges;
    c.dirty_rate = rate;
    c.writers = 2;
    c.pattern = VFMIG_PATTERN_UNIFORM;
    c.content = VFMIG_CONTENT_MIX;
    c.mutable_bytes = 4096;
    c.seed = seed;
    vfmig_simvf *s;
    ASSERT_OK(vfmig_simvf_create(&c, &s));
    return s;
}

static uint64_t copy_dirty(const vfmig_device *d, uint8_t *shadow)
{
    uint64_t n = 0, base = 0;
    for (uint32_t r = 0; r < d->nranges; r++) {
        uint64_t np = d->ranges[r].size / d->page_size;
        uint64_t *bm = calloc((np + 63) / 64, 8);
        ASSERT_OK(d->ops->query_dirty(d->dev, r, 0, np, bm, 1));
        for (uint64_t i = 0; i < np; i++)
            if (bit(bm, i)) {
                ASSERT_OK(d->ops->read(d->dev, d->ranges[r].offset + i * d->page_size,
                                       shadow + (base + i) * d->page_size, d->page_size));
                n++;
            }
        base += np;
        free(bm);
    }
    return n;
}

static int sim_pause(void *u) { vfmig_device d; vfmig_simvf_device(u, &d); return d.ops->pause(d.dev); }
static int sim_resume(void *u) { vfmig_device d; vfmig_simvf_device(u, &d); return d.ops->resume(d.dev); }
static int sim_save_mut(void *u, void *b, uint64_t *n) { vfmig_device d; vfmig_simvf_device(u, &d); return d.ops->save_mutable(d.dev, b, n); }
static int sim_restore_mut(void *u, const void *b, uint64_t n) { vfmig_device d; vfmig_simvf_device(u, &d); return d.ops->restore_mutable(d.dev, b, n); }

static vfmig_hostmem *hostmem_over(vfmig_simvf *s, uint64_t ps, vfmig_hostmem_tracker tr, char *err, size_t errlen,
                                   int *rc)
{
    uint64_t size;
    uint8_t *mem = (uint8_t *)vfmig_simvf_vram(s, &size);
    vfmig_hostmem_config hc;
    vfmig_hostmem_config_init(&hc);
    hc.base = mem;
    hc.size = size;
    hc.page_size = ps;
    hc.tracker = tr;
    hc.cb = (vfmig_vf_callbacks){sim_pause, sim_resume, sim_save_mut, sim_restore_mut, NULL, s};
    vfmig_hostmem *h = NULL;
    *rc = vfmig_hostmem_create(&hc, &h, err, errlen);
    return h;
}

/* kind: 0 hash tracker in place, 1 hash tracker via read(), 2 hostmem uffd-wp, 3 soft-dirty */
static void run_race(int kind, uint64_t ps, uint32_t nranges, uint64_t pages, uint64_t seed)
{
    vfmig_simvf *s = make_sim(pages * ps, ps, nranges, 400u << 20, seed);
    uint64_t n;
    const uint8_t *vram = vfmig_simvf_vram(s, &n);
    vfmig_device inner, d;
    vfmig_simvf_device(s, &inner);
    vfmig_hashtrack *t = NULL;
    vfmig_hostmem *h = NULL;
    if (kind <= 1) {
        vfmig_hashtrack_config hc;
        vfmig_hashtrack_config_init(&hc);
        hc.host_view = kind == 0 ? vram : NULL;
        hc.threads = 4; /* a range of 4096+ pages is scanned in 4 slices at once */
        ASSERT_OK(vfmig_hashtrack_create(&inner, &hc, &t));
        vfmig_hashtrack_device(t, &d);
    } else {
        char err[300];
        int rc;
        h = hostmem_over(s, ps, kind == 2 ? VFMIG_HOSTMEM_UFFD_WP : VFMIG_HOSTMEM_SOFT_DIRTY, err, sizeof err, &rc);
        if (rc)
            T_FAIL("hostmem: %s", err);
        ASSERT_EQ(vfmig_hostmem_dirty_source(h), kind == 2 ? VFMIG_DIRTY_UFFD_WP : VFMIG_DIRTY_SOFT_DIRTY);
        vfmig_hostmem_device(h, &d);
    }
    uint8_t *shadow = malloc(n);
    ASSERT_OK(vfmig_simvf_start(s));
    ASSERT_OK(d.ops->prepare(d.dev, VFMIG_ROLE_SOURCE));
    sleep_ms(3);
    ASSERT_OK(d.ops->start_tracking(d.dev));
    uint64_t base = 0;
    for (uint32_t r = 0; r < d.nranges; r++) { /* round 0, racing with the writers */
        ASSERT_OK(d.ops->read(d.dev, d.ranges[r].offset, shadow + base, d.ranges[r].size));
        base += d.ranges[r].size;
    }
    uint64_t rounds = 0, copied = 0;
    for (; rounds < 40; rounds++) {
        if (rounds % 2) { /* a peek first, as the engine does */
            uint64_t *bm = calloc((d.ranges[0].size / ps + 63) / 64, 8);
            ASSERT_OK(d.ops->query_dirty(d.dev, 0, 0, d.ranges[0].size / ps, bm, 0));
            free(bm);
        }
        copied += copy_dirty(&d, shadow);
        if (rounds % 3)
            sleep_ms(1);
    }
    ASSERT_OK(d.ops->pause(d.dev));
    uint64_t last = copy_dirty(&d, shadow);
    vfmig_simvf_counters k;
    vfmig_simvf_get_counters(s, &k);
    if (memcmp(shadow, vram, n)) {
        uint64_t bad = 0;
        for (uint64_t p = 0; p < n / ps; p++)
            bad += memcmp(shadow + p * ps, vram + p * ps, ps) != 0;
        T_FAIL("kind %d: %" PRIu64 " pages differ after the final pass (lost writes)", kind, bad);
    }
    fprintf(stderr, "race kind %d page %" PRIu64 ": %" PRIu64 " writes, %" PRIu64 " rounds, %" PRIu64
                    " pages copied, %" PRIu64 " in the last pass\n",
            kind, ps, k.writes, rounds, copied, last);
    ASSERT_TRUE(k.writes > 100 && copied > 0);
    ASSERT_EQ(copy_dirty(&d, shadow), 0); /* paused: nothing new */
    ASSERT_OK(d.ops->stop_tracking(d.dev));
    ASSERT_OK(d.ops->resume(d.dev));
    ASSERT_OK(d.ops->end(d.dev));
    vfmig_simvf_stop(s);
    vfmig_hashtrack_destroy(t);
    vfmig_hostmem_destroy(h);
    vfmig_simvf_destroy(s);
    free(shadow);
}

static void test_races(uint64_t seed)
{
    run_race(0, 4096, 2, 3000, seed);
    run_race(0, 4096, 1, 6000, seed + 5); /* split scans (4 slices) under racing writers */
    run_race(1, 8192, 3, 900, seed + 1);
    run_race(2, 4096, 1, 4000, seed + 2);
    run_race(2, 16384, 1, 500, seed + 3);
}

/* ------------------------------------------------------------------------------------------ */
static void exact_pages(int share, vfmig_hostmem_tracker tr);

/* Soft-dirty asked for explicitly over a fresh region: VFMIG_OK (the device says soft-dirty), or
 * VFMIG_ENOTSUP with `err` naming what the kernel lacks. */
static int softdirty_probe(char *err, size_t errlen)
{
    vfmig_hostmem *h = NULL;
    vfmig_hostmem_config hc;
    vfmig_hostmem_config_init(&hc);
    uint8_t *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_TRUE(m != MAP_FAILED);
    hc.base = m;
    hc.size = 1 << 20;
    hc.tracker = VFMIG_HOSTMEM_SOFT_DIRTY;
    hc.cb = (vfmig_vf_callbacks){p_ok, p_ok, NULL, NULL, NULL, NULL};
    int rc = vfmig_hostmem_create(&hc, &h, err, errlen);
    if (rc) {
        ASSERT_EQ(rc, VFMIG_ENOTSUP);
        ASSERT_TRUE(strstr(err, "soft-dirty") != NULL);
    } else {
        ASSERT_EQ(vfmig_hostmem_dirty_source(h), VFMIG_DIRTY_SOFT_DIRTY);
    }
    vfmig_hostmem_destroy(h);
    munmap(m, 1 << 20);
    return rc;
}

static void test_hostmem_errors(void)
{
    char err[300];
    vfmig_hostmem *h;
    vfmig_hostmem_config hc;
    vfmig_hostmem_config_init(&hc);
    uint8_t *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_TRUE(m != MAP_FAILED);
    hc.cb = (vfmig_vf_callbacks){sim_pause, sim_resume, NULL, NULL, NULL, NULL};
    hc.base = m + 100; /* not page aligned */
    hc.size = 1 << 19;
    ASSERT_EQ(vfmig_hostmem_create(&hc, &h, err, sizeof err), VFMIG_EINVAL);
    ASSERT_TRUE(strstr(err, "page") != NULL);
    hc.base = m;
    hc.size = 3000;
    ASSERT_EQ(vfmig_hostmem_create(&hc, &h, err, sizeof err), VFMIG_EINVAL);
    hc.size = 1 << 20;
    hc.cb.pause = NULL;
    ASSERT_EQ(vfmig_hostmem_create(&hc, &h, err, sizeof err), VFMIG_EINVAL);
    ASSERT_TRUE(strstr(err, "pause") != NULL);
    hc.cb.pause = sim_pause;
    /* A region that is not mapped memory at all: a clear error naming the tracker, no crash;
     * in auto mode, both trackers' reasons. */
    uint8_t *hole = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_TRUE(hole != MAP_FAILED);
    munmap(hole, 1 << 20);
    hc.base = hole;
    hc.tracker = VFMIG_HOSTMEM_UFFD_WP;
    int rc = vfmig_hostmem_create(&hc, &h, err, sizeof err);
    fprintf(stderr, "hostmem over unmapped memory: %s: %s\n", vfmig_status_name(rc), err);
    ASSERT_EQ(rc, VFMIG_ENOTSUP);
    ASSERT_TRUE(strstr(err, "userfaultfd") != NULL);
    hc.tracker = VFMIG_HOSTMEM_AUTO;
    rc = vfmig_hostmem_create(&hc, &h, err, sizeof err);
    fprintf(stderr, "auto: %s: %s\n", vfmig_status_name(rc), err);
    if (rc != VFMIG_OK) { /* soft-dirty reads pagemap, which has entries (zero) for holes too */
        ASSERT_EQ(rc, VFMIG_ENOTSUP);
        ASSERT_TRUE(strstr(err, "userfaultfd") != NULL && strstr(err, "soft-dirty") != NULL);
    } else {
        ASSERT_EQ(vfmig_hostmem_dirty_source(h), VFMIG_DIRTY_SOFT_DIRTY);
        vfmig_hostmem_destroy(h);
    }
    /* Soft-dirty asked for explicitly: works, or says what the kernel lacks. */
    if (softdirty_probe(err, sizeof err))
        fprintf(stderr, "soft-dirty: %s\n", err);
    munmap(m, 1 << 20);
    /* Exact pages on private and on shared anonymous memory. */
    exact_pages(MAP_PRIVATE, VFMIG_HOSTMEM_AUTO);
    exact_pages(MAP_SHARED, VFMIG_HOSTMEM_AUTO);
}

/* tr: AUTO (uffd-wp on this machine's kernel) or SOFT_DIRTY (where the kernel has it). */
static void exact_pages(int share, vfmig_hostmem_tracker tr)
{
    char err[300];
    vfmig_hostmem *h;
    vfmig_hostmem_config hc;
    vfmig_hostmem_config_init(&hc);
    hc.cb = (vfmig_vf_callbacks){p_ok, p_ok, NULL, NULL, NULL, NULL}; /* no VF runs: soft-dirty's pauses are no-ops */
    uint8_t *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, share | MAP_ANONYMOUS, -1, 0);
    ASSERT_TRUE(m != MAP_FAILED);
    memset(m, 0x11, 1 << 19); /* half populated, half never touched */
    hc.base = m;
    hc.size = 1 << 20;
    hc.tracker = tr;
    if (vfmig_hostmem_create(&hc, &h, err, sizeof err))
        T_FAIL("hostmem (%s memory): %s", share == MAP_SHARED ? "shared" : "private", err);
    vfmig_device d;
    vfmig_hostmem_device(h, &d);
    uint64_t bm[4];
    ASSERT_EQ(d.ops->query_dirty(d.dev, 0, 0, 64, bm, 1), VFMIG_ESTATE); /* not tracking */
    ASSERT_OK(d.ops->start_tracking(d.dev));
    ASSERT_EQ(d.ops->query_dirty(d.dev, 1, 0, 1, bm, 1), VFMIG_EINVAL);
    ASSERT_EQ(d.ops->query_dirty(d.dev, 0, 250, 7, bm, 1), VFMIG_EINVAL);
    ASSERT_EQ(d.ops->read(d.dev, (1 << 20) - 8, bm, 16), VFMIG_EINVAL);
    /* Exact pages: writes to pages 3, 64, 200 (and 201 twice); a peek sees them and keeps them;
     * the clear takes them; the next query is empty. */
    m[3 * 4096 + 5] = 1;
    m[64 * 4096] = 2;
    m[200 * 4096 + 4095] = 3; /* never touched before: written after the protection */
    m[201 * 4096] = 4;
    m[201 * 4096 + 1] = 5;
    for (int clear = 0; clear <= 1; clear++) {
        ASSERT_OK(d.ops->query_dirty(d.dev, 0, 0, 256, bm, clear));
        for (uint64_t i = 0; i < 256; i++)
            ASSERT_EQ(bit(bm, i), i == 3 || i == 64 || i == 200 || i == 201);
    }
    ASSERT_OK(d.ops->query_dirty(d.dev, 0, 0, 256, bm, 1));
    for (uint64_t i = 0; i < 256; i++)
        ASSERT_EQ(bit(bm, i), 0);
    /* A window query reports only its slice and clears only it. */
    m[10 * 4096] = 9;
    m[100 * 4096] = 9;
    ASSERT_OK(d.ops->query_dirty(d.dev, 0, 50, 100, bm, 1));
    for (uint64_t i = 0; i < 100; i++)
        ASSERT_EQ(bit(bm, i), i == 50);
    ASSERT_OK(d.ops->query_dirty(d.dev, 0, 0, 256, bm, 1));
    for (uint64_t i = 0; i < 256; i++)
        ASSERT_EQ(bit(bm, i), i == 10);
    vfmig_tracking_stats st;
    vfmig_hostmem_get_stats(h, &st);
    ASSERT_TRUE(st.scans >= 5);
    ASSERT_EQ(st.source, tr == VFMIG_HOSTMEM_SOFT_DIRTY ? VFMIG_DIRTY_SOFT_DIRTY : VFMIG_DIRTY_UFFD_WP);
    ASSERT_OK(d.ops->stop_tracking(d.dev));
    m[7 * 4096] = 1; /* unprotected again: plain memory */
    vfmig_hostmem_destroy(h);
    munmap(m, 1 << 20);
}

/* ------------------------------------------------------------------------------------------ */
/* Live migrations over loopback, verified byte for byte.                                       */
typedef struct target_run {
    vfmig_listener *l;
    vfmig_session *s;
    int rc;
    char err[300];
} target_run;

static void *target_main(void *arg)
{
    target_run *t = arg;
    vfmig_link *link = NULL;
    t->rc = vfmig_accept(t->l, 20000, &link, t->err, sizeof t->err);
    if (!t->rc)
        t->rc = vfmig_session_run(t->s, link);
    vfmig_link_close(link);
    return NULL;
}

/* kind: 0 hash tracker (sim with its bits hidden), 1 hostmem (auto tracker) on both ends,
 * 2 hostmem forced to soft-dirty on the source (the target, hostmem too since the layout blob is
 * hostmem's, never tracks: the one soft-dirty region per process that is tracked is the source's) */
static void run_migration(int kind, uint64_t seed)
{
    const uint64_t vram = 16u << 20, ps = 4096; /* small: it also runs under ThreadSanitizer */
    vfmig_simvf *src = make_sim(vram, ps, 1, 50u << 20, seed);
    vfmig_simvf_config tc;
    vfmig_simvf_config_init(&tc);
    tc.vram_bytes = vram;
    tc.page_size = ps;
    tc.content = VFMIG_CONTENT_ZERO;
    tc.mutable_bytes = 4096;
    tc.writers = 2;
    vfmig_simvf *dst;
    ASSERT_OK(vfmig_simvf_create(&tc, &dst));
    vfmig_device sd, td, inner;
    vfmig_hashtrack *t = NULL;
    vfmig_hostmem *hs = NULL, *ht = NULL;
    char err[300];
    int rc;
    if (kind == 0) {
        vfmig_simvf_device(src, &inner);
        vfmig_hashtrack_config hc;
        vfmig_hashtrack_config_init(&hc);
        hc.host_view = vfmig_simvf_vram(src, NULL);
        ASSERT_OK(vfmig_hashtrack_create(&inner, &hc, &t));
        vfmig_hashtrack_device(t, &sd);
        vfmig_simvf_device(dst, &td);
    } else {
        hs = hostmem_over(src, ps, kind == 2 ? VFMIG_HOSTMEM_SOFT_DIRTY : VFMIG_HOSTMEM_AUTO, err, sizeof err, &rc);
        if (rc)
            T_FAIL("hostmem: %s", err);
        if (kind == 2)
            ASSERT_EQ(vfmig_hostmem_dirty_source(hs), VFMIG_DIRTY_SOFT_DIRTY);
        ht = hostmem_over(dst, ps, VFMIG_HOSTMEM_AUTO, err, sizeof err, &rc);
        if (rc)
            T_FAIL("hostmem: %s", err);
        vfmig_hostmem_device(hs, &sd);
        vfmig_hostmem_device(ht, &td);
    }
    vfmig_session *s;
    target_run tr = {0};
    ASSERT_OK(vfmig_session_create(VFMIG_ROLE_SOURCE, &sd, &s, err, sizeof err));
    ASSERT_OK(vfmig_session_create(VFMIG_ROLE_TARGET, &td, &tr.s, err, sizeof err));
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_BUDGET_MS, 200)); /* a shared CI machine */
    ASSERT_OK(vfmig_session_set_param(s, VFMIG_P_ON_BUDGET_MISS, VFMIG_BUDGET_MISS_SWITCH)); /* under sanitizers */
    ASSERT_OK(vfmig_listen("tcp://127.0.0.1:0?streams=2", &tr.l, err, sizeof err));
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d?streams=2", vfmig_listener_port(tr.l));
    ASSERT_OK(vfmig_simvf_start(src));
    sleep_ms(10);
    pthread_t th;
    ASSERT_TRUE(pthread_create(&th, NULL, target_main, &tr) == 0);
    vfmig_link *link = NULL;
    rc = vfmig_connect(ep, 20000, &link, err, sizeof err);
    if (!rc)
        rc = vfmig_session_run(s, link);
    pthread_join(th, NULL);
    vfmig_link_close(link);
    vfmig_listener_close(tr.l);
    if (rc || tr.rc)
        T_FAIL("migration kind %d failed: source %s (%s), target %s (%s)", kind, vfmig_status_name(rc),
               vfmig_session_last_error(s), vfmig_status_name(tr.rc), tr.err[0] ? tr.err : vfmig_session_last_error(tr.s));
    vfmig_stats st;
    vfmig_session_get_stats(s, &st);
    ASSERT_TRUE(st.verified);
    ASSERT_EQ(st.vf_state, VFMIG_VF_RESUMED_ON_TARGET);
    ASSERT_EQ(vfmig_simvf_get_state(src), VFMIG_SIMVF_PAUSED);
    uint64_t a, b;
    const uint8_t *va = vfmig_simvf_vram(src, &a), *vb = vfmig_simvf_vram(dst, &b);
    ASSERT_EQ(a, b);
    if (memcmp(va, vb, a))
        T_FAIL("kind %d: target image differs from the source byte for byte", kind);
    ASSERT_TRUE(vfmig_simvf_restored_mutable(dst, &a) != NULL);
    vfmig_simvf_counters k;
    vfmig_simvf_get_counters(src, &k);
    vfmig_tracking_stats ts;
    if (t)
        vfmig_hashtrack_get_stats(t, &ts);
    else
        vfmig_hostmem_get_stats(hs, &ts);
    fprintf(stderr, "migration via %s: %u rounds, blackout %.2f ms, %" PRIu64 " final pages, %" PRIu64
                    " workload writes, %" PRIu64 " scans, last %.2f ms\n",
            vfmig_dirty_source_name(ts.source), st.rounds, (double)st.blackout_ns / 1e6, st.final_dirty_pages,
            k.writes, ts.scans, (double)ts.last_ns / 1e6);
    ASSERT_TRUE(k.writes > 0 && ts.scans >= 2);
    if (kind == 2)
        ASSERT_EQ(ts.source, VFMIG_DIRTY_SOFT_DIRTY);
    vfmig_session_destroy(s);
    vfmig_session_destroy(tr.s);
    vfmig_hashtrack_destroy(t);
    vfmig_hostmem_destroy(hs);
    vfmig_hostmem_destroy(ht);
    vfmig_simvf_destroy(src);
    vfmig_simvf_destroy(dst);
}

/* Soft-dirty where the kernel has it. Where it does not: the clear error, then a skip, unless
 * VFMIG_TEST_REQUIRE_SOFT_DIRTY=1 (a kernel known to have it, as in tests/rdma-vm) makes that a
 * failure. `part`: softdirty (all), softdirty_pages, softdirty_race or softdirty_migrate. */
static int test_softdirty(const char *part, uint64_t seed)
{
    char err[300];
    if (softdirty_probe(err, sizeof err)) {
        const char *req = getenv("VFMIG_TEST_REQUIRE_SOFT_DIRTY");
        if (req && !strcmp(req, "1"))
            T_FAIL("soft-dirty required (VFMIG_TEST_REQUIRE_SOFT_DIRTY=1) but not on this kernel: %s", err);
        fprintf(stderr, "SKIP: soft-dirty not on this kernel: %s\n", err);
        return T_SKIP;
    }
    int all = !strcmp(part, "softdirty");
    if (all || !strcmp(part, "softdirty_pages")) {
        exact_pages(MAP_PRIVATE, VFMIG_HOSTMEM_SOFT_DIRTY);
        exact_pages(MAP_SHARED, VFMIG_HOSTMEM_SOFT_DIRTY);
    }
    if (all || !strcmp(part, "softdirty_race")) {
        run_race(3, 4096, 1, 2000, seed);
        run_race(3, 16384, 1, 500, seed + 1);
    }
    if (all || !strcmp(part, "softdirty_migrate"))
        run_migration(2, seed + 2);
    fprintf(stderr, "test_dirty_sources %s: ok\n", part);
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t seed = t_seed();
    const char *only = argc > 1 ? argv[1] : NULL;
    if (only && !strncmp(only, "softdirty", 9))
        return test_softdirty(only, seed);
    if (!only || !strcmp(only, "hash")) {
        test_page_hash(seed);
        test_hashtrack_never_misses(seed);
    }
    if (!only || !strcmp(only, "hostmem"))
        test_hostmem_errors();
    if (!only || !strcmp(only, "race"))
        test_races(seed);
    if (!only || !strcmp(only, "migrate")) {
        run_migration(0, seed);
        run_migration(1, seed + 1);
    }
    if (!only)
        (void)test_softdirty("softdirty", seed + 3); /* a skip here still lets the rest pass */
    fprintf(stderr, "test_dirty_sources: ok\n");
    return 0;
}
