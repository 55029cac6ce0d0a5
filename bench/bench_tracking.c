/* bench_tracking.c - what finding dirty pages costs, per GiB and per round, for each dirty source
 * without a hardware bitmap:
 *   hash tracker  CPU per GiB of one scan (all pages clean = the worst case: every page hashed in
 *                 full after its samples matched; then 10% dirty), against one plain XXH3_64bits
 *                 pass over the same memory in 4 KiB calls (the libxxhash .so call, and inlined);
 *   uffd-wp       scan-and-re-protect (PAGEMAP_SCAN) time with 0, 100, 10k and all pages dirty;
 *   soft-dirty    the same with pagemap + clear_refs.
 * Single-threaded scans unless --threads says otherwise, so CPU and wall compare directly.
 * The floor: the blackout's scan (in place, every page clean, so every page hashed) in wall time
 * and GB/s beside a plain read of the same bytes and a plain XXH3 pass over them, both split over
 * the same --threads as the scan; no scan can beat the read.
 *
 *   bench_tracking [--vram MiB] [--page KiB] [--reps N] [--threads N] [--rewrite]
 */
#include "vfmig_sim.h"

#include "engine/devices/hashtrack_priv.h"

#include <xxhash.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t median(uint64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_u64);
    return v[n / 2];
}

static int nop(void *u)
{
    (void)u;
    return 0;
}

/* --rewrite: dirty pages are rewritten whole (every word: the pre-filter's best case, its samples
 * always differ) instead of by one 8-byte store at a varying offset (its worst: they seldom do). */
static int rewrite_whole;

/* Dirties `n` pages spread over the region. */
static void dirty_pages(uint8_t *mem, uint64_t npages, uint64_t ps, uint64_t n, uint64_t salt)
{
    for (uint64_t i = 0; i < n; i++) {
        uint64_t g = n >= npages ? i : (i * (npages / n) + salt % (npages / n));
        uint64_t off = ((g * 2654435761u + salt) % (ps / 8)) * 8;
        for (uint64_t w = rewrite_whole ? 0 : off; w < (rewrite_whole ? ps : off + 8); w += 8) {
            uint64_t v;
            memcpy(&v, mem + g * ps + w, 8);
            v ^= 0x5a5a5a5a5a5a5a5aull + salt;
            memcpy(mem + g * ps + w, &v, 8);
        }
    }
}

/* One slice of a floor pass: every 8-byte word read (four XOR chains; the compiler vectorizes
 * them; lines fetched 8 KiB ahead, as the tracker does, which the read needs too on one core), or
 * every page hashed with the tracker's XXH3 (plainly: no prefetch). */
typedef struct pass_job {
    const uint8_t *p;
    uint64_t bytes, ps, sink;
    int hash;
    pthread_t tid;
} pass_job;

static void *pass_main(void *arg)
{
    pass_job *j = arg;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    if (j->hash) {
        for (uint64_t o = 0; o < j->bytes; o += j->ps)
            a ^= vfmig__ht_page_hash(j->p + o, j->ps);
    } else {
        for (uint64_t o = 0; o + 32 <= j->bytes; o += 32) {
            if (o % 64 == 0 && o + (8u << 10) < j->bytes)
                __builtin_prefetch(j->p + o + (8u << 10));
            uint64_t w[4];
            memcpy(w, j->p + o, 32);
            a ^= w[0];
            b ^= w[1];
            c ^= w[2];
            d ^= w[3];
        }
    }
    j->sink = a ^ b ^ c ^ d;
    return NULL;
}

/* Wall ns of one pass over mem split into `threads` page-aligned slices, as the scan splits it. */
static uint64_t floor_pass(const uint8_t *mem, uint64_t bytes, uint64_t ps, unsigned threads, int hash, uint64_t *sink)
{
    pass_job j[64];
    if (threads < 1 || threads > 64)
        threads = 1;
    uint64_t pages = bytes / ps, t0 = wall_ns();
    for (unsigned k = 0; k < threads; k++) {
        uint64_t p0 = pages * k / threads, p1 = pages * (k + 1) / threads;
        j[k] = (pass_job){.p = mem + p0 * ps, .bytes = (p1 - p0) * ps, .ps = ps, .hash = hash};
        if (k && pthread_create(&j[k].tid, NULL, pass_main, &j[k]))
            pass_main(&j[k]), j[k].tid = 0;
    }
    pass_main(&j[0]);
    for (unsigned k = 0; k < threads; k++) {
        if (k && j[k].tid)
            pthread_join(j[k].tid, NULL);
        *sink ^= j[k].sink;
    }
    return wall_ns() - t0;
}

/* A tracker over the simulated VF whose references are set by reading every page through it
 * once, as round 0 does. */
static vfmig_hashtrack *tracker_after_round0(vfmig_simvf *sim, const vfmig_hashtrack_config *hc, uint64_t vram,
                                             vfmig_device *d)
{
    vfmig_device inner;
    vfmig_simvf_device(sim, &inner);
    vfmig_hashtrack *ht;
    if (vfmig_hashtrack_create(&inner, hc, &ht))
        return NULL;
    vfmig_hashtrack_device(ht, d);
    d->ops->start_tracking(d->dev);
    uint64_t chunk = 256u << 10;
    uint8_t *buf = malloc(chunk);
    for (uint64_t off = 0; buf && off < vram; off += chunk)
        d->ops->read(d->dev, d->ranges[0].offset + off, buf, chunk);
    free(buf);
    return ht;
}

int main(int argc, char **argv)
{
    uint64_t vram = 1024ull << 20, ps = 4096;
    int reps = 5;
    unsigned threads = 1;
    for (int i = 1; i < argc; i += 2) {
        if (!strcmp(argv[i], "--rewrite")) {
            rewrite_whole = 1;
            i--;
        } else if (i + 1 >= argc) {
            fprintf(stderr, "bench_tracking: %s needs a value\n", argv[i]);
            return 2;
        } else if (!strcmp(argv[i], "--vram"))
            vram = strtoull(argv[i + 1], NULL, 10) << 20;
        else if (!strcmp(argv[i], "--page"))
            ps = strtoull(argv[i + 1], NULL, 10) << 10;
        else if (!strcmp(argv[i], "--reps"))
            reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = (unsigned)atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: bench_tracking [--vram MiB] [--page KiB] [--reps N] [--threads N] [--rewrite]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 99)
        reps = 5;
    vfmig_simvf_config sc;
    vfmig_simvf_config_init(&sc);
    sc.vram_bytes = vram;
    sc.page_size = ps;
    vfmig_simvf *sim;
    if (vfmig_simvf_create(&sc, &sim)) {
        fprintf(stderr, "bench_tracking: cannot create a %llu MiB simulated VF\n", (unsigned long long)(vram >> 20));
        return 1;
    }
    uint64_t size, npages = vram / ps;
    uint8_t *mem = (uint8_t *)vfmig_simvf_vram(sim, &size);
    double gib = (double)vram / (double)(1ull << 30);
    printf("memory %llu MiB, %llu KiB pages, content mix, %d reps (median), scan threads %u, dirty pages %s\n",
           (unsigned long long)(vram >> 20), (unsigned long long)(ps >> 10), reps, threads,
           rewrite_whole ? "rewritten whole" : "one 8-byte store each");

    /* Plain XXH3 passes. */
    uint64_t t[100], sink = 0;
    for (int r = 0; r < reps; r++) {
        uint64_t c0 = cpu_ns();
        for (uint64_t g = 0; g < npages; g++)
            sink ^= XXH3_64bits(mem + g * ps, (size_t)ps);
        t[r] = cpu_ns() - c0;
    }
    double plain = (double)median(t, reps) / gib;
    for (int r = 0; r < reps; r++) {
        uint64_t c0 = cpu_ns();
        for (uint64_t g = 0; g < npages; g++)
            sink ^= vfmig__ht_page_hash(mem + g * ps, ps);
        t[r] = cpu_ns() - c0;
    }
    double inl = (double)median(t, reps) / gib;
    printf("\nplain XXH3_64bits pass (libxxhash call): %8.1f ms CPU per GiB (%.1f GB/s)\n", plain / 1e6,
           1.073741824e9 / plain);
    printf("inlined XXH3 pass (the tracker's):       %8.1f ms CPU per GiB (%.1f GB/s)\n", inl / 1e6,
           1.073741824e9 / inl);

    /* Hash tracker: references from one full read through the wrapper, then scans. */
    /* Each scan rep is paired with a plain pass right before it (the machine is shared: a ratio
     * of neighbours is steadier than one against a baseline measured minutes earlier). */
    printf("\n%-44s %12s %10s %14s %14s\n", "hash tracker scan", "CPU ms/GiB", "wall ms", "plain ms/GiB", "x plain XXH3");
    for (int view = 1; view >= 0; view--) {
        for (unsigned samples = 4; ; samples = 0) {
            vfmig_hashtrack_config hc;
            vfmig_hashtrack_config_init(&hc);
            hc.threads = threads;
            hc.samples = samples;
            hc.sample_threshold_pct = 0; /* measure the pre-filter itself */
            hc.host_view = view ? mem : NULL;
            vfmig_device d;
            vfmig_hashtrack *ht = tracker_after_round0(sim, &hc, vram, &d);
            if (!ht)
                return 1;
            uint64_t *bm = calloc((npages + 63) / 64, 8);
            static const int pcts[] = {0, 10, 50, 100}; /* where the pre-filter starts to pay */
            for (unsigned pi = 0; pi < sizeof pcts / sizeof pcts[0]; pi++) {
                int pct = pcts[pi];
                uint64_t cpu[100], wall[100], pl[100];
                for (int r = 0; r < reps; r++) {
                    uint64_t c0 = cpu_ns();
                    for (uint64_t g = 0; g < npages; g++)
                        sink ^= XXH3_64bits(mem + g * ps, (size_t)ps);
                    pl[r] = cpu_ns() - c0;
                    if (pct)
                        dirty_pages(mem, npages, ps, npages * (uint64_t)pct / 100, (uint64_t)r + 1);
                    d.ops->query_dirty(d.dev, 0, 0, npages, bm, 1);
                    vfmig_tracking_stats st;
                    vfmig_hashtrack_get_stats(ht, &st);
                    cpu[r] = st.last_cpu_ns;
                    wall[r] = st.last_ns;
                }
                char name[80];
                snprintf(name, sizeof(name), "%s, %u samples, %d%% dirty", view ? "in place" : "via read()", samples, pct);
                double c = (double)median(cpu, reps) / gib, pm = (double)median(pl, reps) / gib;
                printf("%-44s %12.1f %10.1f %14.1f %14.2f\n", name, c / 1e6, (double)median(wall, reps) / 1e6, pm / 1e6,
                       c / pm);
            }
            free(bm);
            vfmig_hashtrack_destroy(ht);
            if (samples == 0)
                break;
        }
    }

    /* The blackout's scan against the floor, interleaved rep by rep. The tracker is configured
     * as the CLI's --device hash (defaults, host view); all pages clean, so all are hashed. */
    {
        vfmig_hashtrack_config hc;
        vfmig_hashtrack_config_init(&hc);
        hc.threads = threads;
        hc.host_view = mem;
        vfmig_device d;
        vfmig_hashtrack *ht = tracker_after_round0(sim, &hc, vram, &d);
        if (!ht)
            return 1;
        uint64_t *bm = calloc((npages + 63) / 64, 8), rd[100], xx[100], scan_ns[100];
        for (int r = 0; r < reps; r++) {
            rd[r] = floor_pass(mem, vram, ps, threads, 0, &sink);
            xx[r] = floor_pass(mem, vram, ps, threads, 1, &sink);
            d.ops->query_dirty(d.dev, 0, 0, npages, bm, 1);
            vfmig_tracking_stats st;
            vfmig_hashtrack_get_stats(ht, &st);
            scan_ns[r] = st.last_ns;
        }
        double mr = (double)median(rd, reps), mx = (double)median(xx, reps), ms = (double)median(scan_ns, reps);
        printf("\nfloor, %u thread(s), wall (median)     %10s %10s %12s\n", threads, "ms", "GB/s", "x read");
        printf("  plain read of every byte               %10.2f %10.1f %12.2f\n", mr / 1e6, (double)vram / mr, 1.0);
        printf("  plain XXH3 pass (tracker's build)      %10.2f %10.1f %12.2f\n", mx / 1e6, (double)vram / mx, mx / mr);
        printf("  tracker scan, all clean (the final)    %10.2f %10.1f %12.2f\n", ms / 1e6, (double)vram / ms, ms / mr);
        free(bm);
        vfmig_hashtrack_destroy(ht);
    }

    /* Kernel trackers on an anonymous region of the same size. */
    uint8_t *region = mmap(NULL, (size_t)vram, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        return 1;
    memcpy(region, mem, (size_t)vram);
    vfmig_simvf_destroy(sim);
    printf("\n%-44s %10s %10s %10s %10s\n", "kernel tracker: query with clear (re-arm)", "0 dirty", "100", "10k", "all");
    for (int kind = VFMIG_HOSTMEM_UFFD_WP; kind <= VFMIG_HOSTMEM_SOFT_DIRTY; kind++) {
        vfmig_hostmem_config hc;
        vfmig_hostmem_config_init(&hc);
        hc.base = region;
        hc.size = vram;
        hc.page_size = ps;
        hc.tracker = (vfmig_hostmem_tracker)kind;
        hc.cb.pause = nop;
        hc.cb.resume = nop;
        vfmig_hostmem *h;
        char err[300];
        if (vfmig_hostmem_create(&hc, &h, err, sizeof(err))) {
            printf("%-44s %s\n", kind == VFMIG_HOSTMEM_UFFD_WP ? "uffd-wp" : "soft-dirty", err);
            continue;
        }
        vfmig_device d;
        vfmig_hostmem_device(h, &d);
        d.ops->start_tracking(d.dev);
        uint64_t *bm = calloc((npages + 63) / 64, 8);
        d.ops->query_dirty(d.dev, 0, 0, npages, bm, 1);
        printf("%-44s", kind == VFMIG_HOSTMEM_UFFD_WP ? "uffd-wp + PAGEMAP_SCAN, ms" : "soft-dirty (pagemap + clear_refs), ms");
        uint64_t counts[4] = {0, 100, 10000, npages};
        for (int k = 0; k < 4; k++) {
            uint64_t w[100];
            for (int r = 0; r < reps; r++) {
                dirty_pages(region, npages, ps, counts[k], (uint64_t)r + 7);
                uint64_t t0 = wall_ns();
                d.ops->query_dirty(d.dev, 0, 0, npages, bm, 1);
                w[r] = wall_ns() - t0;
            }
            printf(" %10.2f", (double)median(w, reps) / 1e6);
        }
        printf("\n");
        free(bm);
        vfmig_hostmem_destroy(h);
    }
    munmap(region, (size_t)vram);
    return sink == 42 ? 3 : 0;
}
