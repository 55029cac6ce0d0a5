/* hashtrack.c - dirty bits for a device that has none, by hashing its pages (see vfmig.h).
 *
 * Why this is exact. The reference a page is compared with is the hash of the bytes the engine
 * last read from it through this wrapper, i.e. of what was sent, not of what the page held at some
 * earlier scan. So "dirty" means "differs from what the target has", whatever raced with the
 * read: a write after the read changes the page against that hash and the next scan finds it. A
 * page never read whole since tracking started has no reference and is always dirty. The only
 * page not reported is one whose bytes equal what was sent (nothing to send), or a 64-bit hash
 * collision (2^-64 a page).
 *
 * Cost. A clean page costs the sampled lines plus one full XXH3 (inlined, ~1.05 passes over it);
 * a page whose samples differ costs only the samples. Without samples (the usual case, and the
 * final scan's) an in-place scan prefetches pages ahead and runs at the speed of a plain read of
 * the same memory, split over `threads` contiguous slices: without dirty bits, the floor of the
 * blackout. Reads cost one XXH3 of what was read, in the engine's worker threads (overlapped with
 * the transfer). A clear query that follows a peek of the same range reuses the peek's answer (see
 * the header), so the engine's peek-then-fetch round costs one scan, not two.
 */
#include "vfmig.h"

#include "common/clock.h"
#include "engine/devices/hashtrack_priv.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Under ThreadSanitizer the host view is not hashed in place: plain loads racing with a running
 * VF's writes are the intended behaviour (the hash only has to notice), but TSan cannot be told
 * so for a vectorized hash. Scans then go through the device's read op, as without a view. */
#if defined(__SANITIZE_THREAD__)
#define HT_NO_INPLACE 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HT_NO_INPLACE 1
#endif
#endif

#define HT_MAX_THREADS 8u
#define HT_CHUNK_BYTES (256u << 10) /* per read when scanning without a host view: fits L2 */
#define HT_MIN_PAGES_PER_THREAD 1024u
/* In place, a scan prefetches the page this far ahead of the one it hashes: the hardware
 * prefetcher stops at 4 KiB boundaries and XXH3 alone keeps too few misses in flight to stream
 * memory (512 MiB on one core here: 27 ms without, 17 ms with, the speed of a plain read). */
#define HT_PREFETCH_AHEAD (8u << 10)

typedef uint64_t (*ht_hash_fn)(const void *page, uint64_t ps);

struct vfmig_hashtrack {
    vfmig_device inner;
    vfmig_device_ops ops; /* ht_ops, less what the inner device lacks */
    vfmig_range ranges[VFMIG_MAX_RANGES];
    vfmig_hashtrack_config cfg;
    uint64_t ps;
    unsigned shift;
    uint64_t npages;
    uint64_t range_first[VFMIG_MAX_RANGES]; /* global index of each range's first page */
    uint64_t range_pages[VFMIG_MAX_RANGES];
    _Atomic uint64_t *hash;   /* XXH3 of the page as last read */
    _Atomic uint64_t *samp;   /* sample fold of the page as last read */
    _Atomic uint8_t *valid;   /* 1: hash/samp describe what was read (released after them) */
    uint64_t *cache[VFMIG_MAX_RANGES]; /* a peek's answer, reusable by the next clear query */
    int cached[VFMIG_MAX_RANGES];
    uint64_t range_scan_ns[VFMIG_MAX_RANGES];
    double range_dirty_frac[VFMIG_MAX_RANGES]; /* of the range's latest scan; 0 before any */
    int paused;               /* session thread only */
    int inplace;              /* scans hash cfg.host_view (not under TSan, see HT_NO_INPLACE) */
    unsigned threads;
    ht_hash_fn hash_fn;

    pthread_mutex_t lock;     /* stats */
    vfmig_tracking_stats st;
    _Atomic uint64_t read_hashed;
};

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/*
 * Sample fold of page g: `samples` cache lines, one in each of as many equal stretches of the
 * page, at a position that varies from page to page (so a workload that always writes the same
 * line of every page is still caught early on most pages). Any deterministic function of the
 * bytes is sound: equal folds only send the page on to the full hash.
 */
uint64_t vfmig__ht_sample_fold(const uint8_t *page, uint64_t ps, uint64_t g, unsigned samples)
{
    uint64_t lines = ps / 64, acc = g * 0x9e3779b97f4a7c15ull;
    if (samples > lines)
        samples = (unsigned)lines;
    uint64_t stretch = lines / samples, pick = mix64(g) % stretch;
    for (unsigned j = 0; j < samples; j++) {
        const uint8_t *line = page + (j * stretch + pick) * 64;
        for (int w = 0; w < 8; w++) {
            uint64_t v;
            memcpy(&v, line + 8 * w, 8);
            acc = ((acc << 5) | (acc >> 59)) ^ v;
        }
        acc *= 0xff51afd7ed558ccdull;
    }
    return acc;
}

static uint64_t hash_baseline(const void *page, uint64_t ps)
{
    return XXH3_64bits(page, (size_t)ps);
}

/* The same XXH3 in the fastest build this CPU runs (a scan is bound by it). */
static ht_hash_fn pick_hash(void)
{
#if defined(VFMIG_HT_AVX2) && (defined(__x86_64__) || defined(__i386__))
    if (__builtin_cpu_supports("avx2"))
        return vfmig__ht_hash_avx2;
#endif
    return hash_baseline;
}

static void prefetch_samples(const uint8_t *page, uint64_t ps, uint64_t g, unsigned samples)
{
    uint64_t lines = ps / 64;
    if (samples > lines)
        samples = (unsigned)lines;
    uint64_t stretch = lines / samples, pick = mix64(g) % stretch;
    for (unsigned j = 0; j < samples; j++)
        __builtin_prefetch(page + (j * stretch + pick) * 64);
}

uint64_t vfmig__ht_page_hash(const void *page, uint64_t ps)
{
    return pick_hash()(page, ps);
}

/* Range holding segment [off, off+len), or -1. */
static int find_range(const vfmig_hashtrack *t, uint64_t off, uint64_t len)
{
    for (uint32_t r = 0; r < t->inner.nranges; r++) {
        const vfmig_range *g = &t->ranges[r];
        if (off >= g->offset && off - g->offset < g->size && len <= g->size - (off - g->offset))
            return (int)r;
    }
    return -1;
}

/* ----------------------------------------------------------------------------------------- */
/* Scanning                                                                                   */
/* ----------------------------------------------------------------------------------------- */
typedef struct scan_job {
    vfmig_hashtrack *t;
    uint32_t range;
    uint64_t first;       /* first page of the query (within the range) */
    uint64_t i0, i1;      /* bits [i0, i1) of the query's bitmap, i0 a multiple of 64 */
    uint64_t *bitmap;
    unsigned samples; /* 0: this scan hashes every page directly */
    int rc;
    uint64_t cpu_ns, hashed, sampled, dirty;
    pthread_t tid;
} scan_job;

/* Compares one page's bytes with its reference; 1 if dirty. */
static int page_dirty(vfmig_hashtrack *t, scan_job *j, uint64_t g, const uint8_t *p)
{
    if (!atomic_load_explicit(&t->valid[g], memory_order_acquire))
        return 1;
    if (j->samples &&
        vfmig__ht_sample_fold(p, t->ps, g, j->samples) !=
            atomic_load_explicit(&t->samp[g], memory_order_relaxed)) {
        j->sampled++;
        return 1;
    }
    j->hashed++;
    return t->hash_fn(p, t->ps) != atomic_load_explicit(&t->hash[g], memory_order_relaxed);
}

static void *scan_main(void *arg)
{
    scan_job *j = arg;
    vfmig_hashtrack *t = j->t;
    uint64_t c0 = vfmig__thread_cpu_ns();
    const vfmig_range *rg = &t->ranges[j->range];
    uint64_t base_g = t->range_first[j->range];
    const uint8_t *view = NULL;
    if (t->inplace)
        view = t->cfg.host_view + (base_g << t->shift);
    uint8_t *buf = NULL;
    uint64_t chunk_pages = HT_CHUNK_BYTES >> t->shift;
    if (chunk_pages == 0)
        chunk_pages = 1;
    if (!view && !(buf = malloc((size_t)(chunk_pages << t->shift)))) {
        j->rc = VFMIG_ENOMEM;
        return NULL;
    }
    /* Whole pages ahead only when every page is hashed (no pre-filter): with samples, a page whose
     * samples differ is never read whole, and its samples are fetched ahead instead. */
    uint64_t ahead = view && !j->samples ? (HT_PREFETCH_AHEAD + t->ps - 1) >> t->shift : 0;
    for (uint64_t i = j->i0; i < j->i1;) {
        uint64_t n = j->i1 - i < chunk_pages ? j->i1 - i : chunk_pages;
        uint64_t p0 = j->first + i;
        const uint8_t *src;
        if (view) {
            src = view + (p0 << t->shift);
        } else {
            int rc = t->inner.ops->read(t->inner.dev, rg->offset + (p0 << t->shift), buf, (size_t)(n << t->shift));
            if (rc) {
                j->rc = rc;
                break;
            }
            src = buf;
        }
        for (uint64_t k = 0; k < n; k++) {
            /* The samples of a page four ahead are scattered misses: start them now, so they
             * arrive while this page is hashed (in place they cost ~50% more otherwise). */
            if (j->samples && k + 4 < n)
                prefetch_samples(src + ((k + 4) << t->shift), t->ps, base_g + p0 + k + 4, j->samples);
            else if (ahead && i + k + ahead < j->i1)
                for (uint64_t o = 0; o < t->ps; o += 64)
                    __builtin_prefetch(src + ((k + ahead) << t->shift) + o);
            if (page_dirty(t, j, base_g + p0 + k, src + (k << t->shift))) {
                j->bitmap[(i + k) / 64] |= 1ull << ((i + k) % 64);
                j->dirty++;
            }
        }
        i += n;
    }
    free(buf);
    j->cpu_ns = vfmig__thread_cpu_ns() - c0;
    return NULL;
}

/* Scans pages [first, first+npages) of range r into bitmap (zeroed by the caller). */
static int scan(vfmig_hashtrack *t, uint32_t r, uint64_t first, uint64_t npages, uint64_t *bitmap)
{
    uint64_t t0 = vfmig__now_ns();
    unsigned n = t->threads;
    if (npages / HT_MIN_PAGES_PER_THREAD < n)
        n = (unsigned)(npages / HT_MIN_PAGES_PER_THREAD);
    if (n < 1)
        n = 1;
    scan_job jobs[HT_MAX_THREADS];
    uint64_t words = (npages + 63) / 64;
    /* The pre-filter saves the hash of a page whose samples changed and costs the samples on
     * every other page (scattered misses). Through read() it pays from about half the range
     * dirty (pages rewritten whole, bench_tracking --rewrite), so it runs where the previous scan
     * found at least sample_threshold_pct % dirty. In place it never paid, up to 100% dirty: the
     * direct scan streams at a read's speed (prefetch), the samples do not; there it runs only
     * when asked always (0). Either way a page whose samples match is hashed in full. */
    unsigned thr = t->cfg.sample_threshold_pct;
    unsigned samples = t->cfg.samples && (thr == 0 || (!t->inplace && t->range_dirty_frac[r] * 100.0 >= (double)thr))
                           ? t->cfg.samples
                           : 0;
    for (unsigned k = 0; k < n; k++) {
        uint64_t w0 = words * k / n, w1 = words * (k + 1) / n;
        jobs[k] = (scan_job){.t = t, .range = r, .first = first, .i0 = w0 * 64,
                             .i1 = w1 * 64 < npages ? w1 * 64 : npages, .bitmap = bitmap, .samples = samples};
    }
    int up[HT_MAX_THREADS] = {0};
    for (unsigned k = 1; k < n; k++)
        up[k] = pthread_create(&jobs[k].tid, NULL, scan_main, &jobs[k]) == 0;
    scan_main(&jobs[0]);
    int rc = jobs[0].rc;
    uint64_t cpu = jobs[0].cpu_ns, hashed = jobs[0].hashed, sampled = jobs[0].sampled, dirty = jobs[0].dirty;
    for (unsigned k = 1; k < n; k++) {
        if (up[k])
            pthread_join(jobs[k].tid, NULL);
        else
            scan_main(&jobs[k]); /* no thread: do its share here, the answer must be whole */
        if (!rc)
            rc = jobs[k].rc;
        cpu += jobs[k].cpu_ns;
        hashed += jobs[k].hashed;
        sampled += jobs[k].sampled;
        dirty += jobs[k].dirty;
    }
    uint64_t wall = vfmig__now_ns() - t0, bytes = npages << t->shift;
    t->range_scan_ns[r] = wall;
    t->range_dirty_frac[r] = (double)dirty / (double)npages;
    pthread_mutex_lock(&t->lock);
    t->st.scans++;
    t->st.last_ns = wall;
    t->st.last_cpu_ns = cpu;
    t->st.last_bytes = bytes;
    t->st.last_dirty = dirty;
    t->st.total_ns += wall;
    t->st.total_cpu_ns += cpu;
    t->st.total_bytes += bytes;
    t->st.pages_hashed += hashed;
    t->st.pages_sampled += sampled;
    t->st.cpu_ns_per_gib = bytes ? (double)cpu * (double)(1ull << 30) / (double)bytes : 0;
    pthread_mutex_unlock(&t->lock);
    return rc;
}

/* ----------------------------------------------------------------------------------------- */
/* Device ops: the inner device's, with dirty tracking added                                  */
/* ----------------------------------------------------------------------------------------- */
static int op_prepare(void *dev, vfmig_role role)
{
    vfmig_hashtrack *t = dev;
    return t->inner.ops->prepare(t->inner.dev, role);
}

static int op_end(void *dev)
{
    vfmig_hashtrack *t = dev;
    return t->inner.ops->end(t->inner.dev);
}

static void forget_all(vfmig_hashtrack *t)
{
    for (uint64_t g = 0; g < t->npages; g++)
        atomic_store_explicit(&t->valid[g], 0, memory_order_relaxed);
    for (uint32_t r = 0; r < t->inner.nranges; r++)
        t->cached[r] = 0;
}

/* Nothing read yet counts as sent: every page is dirty until read whole. */
static int op_start_tracking(void *dev)
{
    vfmig_hashtrack *t = dev;
    if (t->inner.ops->start_tracking) {
        int rc = t->inner.ops->start_tracking(t->inner.dev);
        if (rc)
            return rc;
    }
    forget_all(t);
    return VFMIG_OK;
}

static int op_stop_tracking(void *dev)
{
    vfmig_hashtrack *t = dev;
    for (uint32_t r = 0; r < t->inner.nranges; r++)
        t->cached[r] = 0;
    return t->inner.ops->stop_tracking ? t->inner.ops->stop_tracking(t->inner.dev) : VFMIG_OK;
}

static int op_query_dirty(void *dev, uint32_t range, uint64_t first_page, uint64_t npages, uint64_t *bitmap,
                          int clear)
{
    vfmig_hashtrack *t = dev;
    if (range >= t->inner.nranges || first_page > t->range_pages[range] ||
        npages > t->range_pages[range] - first_page || (npages && !bitmap))
        return VFMIG_EINVAL;
    if (npages == 0)
        return VFMIG_OK;
    uint64_t nout = (npages + 63) / 64;
    memset(bitmap, 0, nout * 8);
    if (clear && t->cached[range] && !t->paused) {
        /* The peek just before: pages written since then differ from what was sent and are
         * found by the next scan (there always is one: the final query runs paused). */
        t->cached[range] = 0;
        const uint64_t *c = t->cache[range];
        for (uint64_t i = 0; i < npages; i++) {
            uint64_t p = first_page + i;
            if (c[p / 64] >> (p % 64) & 1)
                bitmap[i / 64] |= 1ull << (i % 64);
        }
        return VFMIG_OK;
    }
    int rc = scan(t, range, first_page, npages, bitmap);
    t->cached[range] = 0;
    if (rc == VFMIG_OK && !clear && first_page == 0 && npages == t->range_pages[range]) {
        memcpy(t->cache[range], bitmap, nout * 8);
        t->cached[range] = 1;
    }
    return rc;
}

/* What the engine reads is what the target gets: its hash is the reference from now on. Pages
 * the read covers only partly lose their reference (dirty until read whole). */
static int op_read(void *dev, uint64_t offset, void *dst, size_t len)
{
    vfmig_hashtrack *t = dev;
    int r = find_range(t, offset, len);
    if (r < 0 || (len && !dst))
        return VFMIG_EINVAL;
    int rc = t->inner.ops->read(t->inner.dev, offset, dst, len);
    if (rc || len == 0)
        return rc;
    uint64_t rel = offset - t->ranges[r].offset;
    uint64_t p0 = rel >> t->shift, p1 = (rel + len - 1) >> t->shift; /* pages touched */
    uint64_t base = t->range_first[r];
    uint64_t n = 0;
    for (uint64_t p = p0; p <= p1; p++) {
        uint64_t g = base + p, start = p << t->shift;
        if (start < rel || start + t->ps > rel + len) {
            atomic_store_explicit(&t->valid[g], 0, memory_order_relaxed);
            continue;
        }
        const uint8_t *pg = (const uint8_t *)dst + (start - rel);
        atomic_store_explicit(&t->valid[g], 0, memory_order_relaxed);
        atomic_store_explicit(&t->hash[g], t->hash_fn(pg, t->ps), memory_order_relaxed);
        if (t->cfg.samples)
            atomic_store_explicit(&t->samp[g], vfmig__ht_sample_fold(pg, t->ps, g, t->cfg.samples),
                                  memory_order_relaxed);
        atomic_store_explicit(&t->valid[g], 1, memory_order_release);
        n++;
    }
    atomic_fetch_add_explicit(&t->read_hashed, n, memory_order_relaxed);
    return VFMIG_OK;
}

/* Engine writes (a target) change pages behind any reference. */
static int op_write(void *dev, uint64_t offset, const void *src, size_t len)
{
    vfmig_hashtrack *t = dev;
    int r = find_range(t, offset, len);
    if (r < 0 || (len && !src))
        return VFMIG_EINVAL;
    int rc = t->inner.ops->write(t->inner.dev, offset, src, len);
    if (len) {
        uint64_t rel = offset - t->ranges[r].offset;
        for (uint64_t p = rel >> t->shift; p <= (rel + len - 1) >> t->shift; p++)
            atomic_store_explicit(&t->valid[t->range_first[r] + p], 0, memory_order_relaxed);
    }
    return rc;
}

static int op_pause(void *dev)
{
    vfmig_hashtrack *t = dev;
    int rc = t->inner.ops->pause(t->inner.dev);
    /* Even a failed pause may have stopped part of the VF: from here every query scans. */
    t->paused = 1;
    for (uint32_t r = 0; r < t->inner.nranges; r++)
        t->cached[r] = 0;
    return rc;
}

static int op_resume(void *dev)
{
    vfmig_hashtrack *t = dev;
    int rc = t->inner.ops->resume(t->inner.dev);
    if (rc == VFMIG_OK)
        t->paused = 0;
    return rc;
}

static int op_save_immutable(void *dev, void *buf, uint64_t *size)
{
    vfmig_hashtrack *t = dev;
    return t->inner.ops->save_immutable(t->inner.dev, buf, size);
}

static int op_save_mutable(void *dev, void *buf, uint64_t *size)
{
    vfmig_hashtrack *t = dev;
    return t->inner.ops->save_mutable(t->inner.dev, buf, size);
}

static int op_restore_immutable(void *dev, const void *buf, uint64_t size)
{
    vfmig_hashtrack *t = dev;
    return t->inner.ops->restore_immutable(t->inner.dev, buf, size);
}

static int op_restore_mutable(void *dev, const void *buf, uint64_t size)
{
    vfmig_hashtrack *t = dev;
    return t->inner.ops->restore_mutable(t->inner.dev, buf, size);
}

static int op_throttle(void *dev, unsigned percent)
{
    vfmig_hashtrack *t = dev;
    return t->inner.ops->throttle(t->inner.dev, percent);
}

/* The final query scans every range in the blackout: that is what the policy should expect. */
static int op_tracking_cost(void *dev, uint64_t *ns)
{
    vfmig_hashtrack *t = dev;
    if (!ns)
        return VFMIG_EINVAL;
    uint64_t sum = 0;
    for (uint32_t r = 0; r < t->inner.nranges; r++)
        sum += t->range_scan_ns[r];
    *ns = sum;
    return VFMIG_OK;
}

static const vfmig_device_ops ht_ops = {
    .prepare = op_prepare,
    .end = op_end,
    .start_tracking = op_start_tracking,
    .stop_tracking = op_stop_tracking,
    .query_dirty = op_query_dirty,
    .read = op_read,
    .write = op_write,
    .pause = op_pause,
    .resume = op_resume,
    .save_immutable = op_save_immutable,
    .save_mutable = op_save_mutable,
    .restore_immutable = op_restore_immutable,
    .restore_mutable = op_restore_mutable,
    .throttle = op_throttle,
};


/* ----------------------------------------------------------------------------------------- */
/* Public API                                                                                 */
/* ----------------------------------------------------------------------------------------- */
const char *vfmig_dirty_source_name(vfmig_dirty_source s)
{
    switch (s) {
    case VFMIG_DIRTY_BITMAP: return "bitmap";
    case VFMIG_DIRTY_HASH: return "hash";
    case VFMIG_DIRTY_UFFD_WP: return "uffd-wp";
    case VFMIG_DIRTY_SOFT_DIRTY: return "soft-dirty";
    case VFMIG_DIRTY_CUDA_HASH: return "cuda-hash";
    }
    return "unknown";
}

void vfmig_hashtrack_config_init(vfmig_hashtrack_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->samples = 4;
    cfg->sample_threshold_pct = 50;
}

int vfmig_hashtrack_create(const vfmig_device *inner, const vfmig_hashtrack_config *cfg, vfmig_hashtrack **out)
{
    if (!out)
        return VFMIG_EINVAL;
    *out = NULL;
    if (!inner || !inner->ops || !inner->ranges || inner->nranges < 1 || inner->nranges > VFMIG_MAX_RANGES)
        return VFMIG_EINVAL;
    const vfmig_device_ops *o = inner->ops;
    if (!o->prepare || !o->end || !o->read || !o->write || !o->pause || !o->resume || !o->save_immutable ||
        !o->save_mutable || !o->restore_immutable || !o->restore_mutable)
        return VFMIG_EINVAL;
    uint64_t ps = inner->page_size;
    if (ps < VFMIG_MIN_PAGE_SIZE || ps > VFMIG_MAX_PAGE_SIZE || (ps & (ps - 1)))
        return VFMIG_EINVAL;
    vfmig_hashtrack_config c;
    vfmig_hashtrack_config_init(&c);
    if (cfg)
        c = *cfg;
    if (c.samples > ps / 64)
        c.samples = (uint32_t)(ps / 64);
    vfmig_hashtrack *t = calloc(1, sizeof *t);
    if (!t)
        return VFMIG_ENOMEM;
    t->inner = *inner;
    t->ops = ht_ops;
    if (!inner->ops->throttle)
        t->ops.throttle = NULL; /* offer no throttle the inner device lacks (the engine checks NULL) */
    memcpy(t->ranges, inner->ranges, inner->nranges * sizeof(vfmig_range));
    t->inner.ranges = t->ranges;
    t->cfg = c;
#ifndef HT_NO_INPLACE
    t->inplace = c.host_view != NULL;
#endif
    t->ps = ps;
    t->shift = (unsigned)__builtin_ctzll(ps);
    for (uint32_t r = 0; r < inner->nranges; r++) {
        if (t->ranges[r].size == 0 || t->ranges[r].size % ps || t->ranges[r].offset % ps) {
            free(t);
            return VFMIG_EINVAL;
        }
        t->range_first[r] = t->npages;
        t->range_pages[r] = t->ranges[r].size >> t->shift;
        /* Nothing measured yet: the first scan hashes directly (see scan()). */
        t->range_dirty_frac[r] = 0.0;
        t->npages += t->range_pages[r];
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    t->threads = c.threads ? c.threads : ncpu > 0 ? (unsigned)ncpu : 1;
    if (t->threads > HT_MAX_THREADS)
        t->threads = HT_MAX_THREADS;
    t->st.source = VFMIG_DIRTY_HASH;
    t->hash_fn = pick_hash();
    pthread_mutex_init(&t->lock, NULL);
    t->hash = calloc((size_t)t->npages, sizeof *t->hash);
    t->samp = calloc((size_t)t->npages, sizeof *t->samp);
    t->valid = calloc((size_t)t->npages, sizeof *t->valid);
    int ok = t->hash && t->samp && t->valid;
    for (uint32_t r = 0; ok && r < inner->nranges; r++)
        ok = (t->cache[r] = calloc((size_t)((t->range_pages[r] + 63) / 64), 8)) != NULL;
    if (!ok) {
        vfmig_hashtrack_destroy(t);
        return VFMIG_ENOMEM;
    }
    *out = t;
    return VFMIG_OK;
}

void vfmig_hashtrack_destroy(vfmig_hashtrack *t)
{
    if (!t)
        return;
    for (uint32_t r = 0; r < t->inner.nranges; r++)
        free(t->cache[r]);
    free(t->hash);
    free(t->samp);
    free(t->valid);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

void vfmig_hashtrack_device(vfmig_hashtrack *t, vfmig_device *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!t)
        return;
    out->size = sizeof(*out);
    out->ops_size = sizeof(vfmig_device_ops);
    out->ops = &t->ops;
    out->dev = t;
    out->page_size = t->ps;
    out->nranges = t->inner.nranges;
    out->ranges = t->ranges;
    out->tracking_cost = op_tracking_cost;
}

void vfmig_hashtrack_get_stats(const vfmig_hashtrack *t, vfmig_tracking_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    out->source = VFMIG_DIRTY_HASH;
    if (!t)
        return;
    vfmig_hashtrack *m = (vfmig_hashtrack *)t; /* the lock only guards the copy */
    pthread_mutex_lock(&m->lock);
    *out = m->st;
    pthread_mutex_unlock(&m->lock);
    out->pages_read_hashed = atomic_load_explicit(&m->read_hashed, memory_order_relaxed);
}
