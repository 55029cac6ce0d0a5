/* hostmem.c - a region of the embedding process's memory as a VF, its dirty pages tracked by the
 * kernel (see vfmig.h).
 *
 * uffd-wp (preferred). The region is registered with a userfaultfd in write-protect mode with
 * UFFD_FEATURE_WP_ASYNC: a write to a protected page is resolved by the kernel itself (no fault
 * thread), which clears the page's protection, and that cleared bit is the dirty bit.
 * PAGEMAP_SCAN with PM_SCAN_WP_MATCHING reports the written pages and protects them again in
 * one walk, under the page-table lock of each page: a write is either seen by this scan or faults
 * after the re-protect and is seen by the next one - the atomic read-and-clear the contract asks.
 * start_tracking protects the whole region; stop_tracking lifts the protection.
 *
 * soft-dirty (fallback). Writing "4" to /proc/self/clear_refs clears the soft-dirty bit of every
 * page of the process; a write sets it again (bit 55 of /proc/self/pagemap). Reading the bits and
 * clearing them are two calls, so a write between them would be lost: a clearing query takes the
 * VF off the scheduler (callbacks) for the read-and-clear unless it is already paused. The clear
 * is process-wide and covers the whole region, so bits read for pages outside the queried window
 * are carried to the next query instead of being lost.
 */
#include "vfmig.h"

#include "common/clock.h"
#include "transport/wire.h" /* little-endian field helpers for the state blobs */

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Kernel interfaces newer than the distribution's headers (Linux 6.7 UAPI, values pinned). */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef PAGEMAP_SCAN
struct page_region {
    uint64_t start, end, categories;
};
struct pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_WRITTEN (1 << 1)
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#endif

#if defined(__SANITIZE_THREAD__)
#define HM_ATOMIC_COPY 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HM_ATOMIC_COPY 1
#endif
#endif

#define HM_VEC 4096u
#define HM_PM_SOFT_DIRTY (1ull << 55)
#define HM_IMM_MAGIC 0x4d494d48u /* "HMIM" */
#define HM_MUT_MAGIC 0x554d4d48u /* "HMMU" */
#define HM_BLOB 32u

struct vfmig_hostmem {
    vfmig_hostmem_config cfg;
    uint8_t *base;
    uint64_t size, ps, npages, sys_page;
    unsigned shift;
    vfmig_range range;
    vfmig_dirty_source source;
    int uffd, pagemap, clear_refs;
    int registered, tracking, paused; /* session thread only */
    struct page_region *vec;
    uint64_t *pm_buf;    /* soft-dirty: pagemap entries of one chunk */
    uint64_t *carry;     /* soft-dirty: bits read but outside the window of the query */
    pthread_mutex_t lock;
    vfmig_tracking_stats st;
};

/* ----------------------------------------------------------------------------------------- */
/* Trackers                                                                                   */
/* ----------------------------------------------------------------------------------------- */
static int uffd_open(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 && errno == EPERM) /* vm.unprivileged_userfaultfd=0: user faults only is enough */
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0) {
        int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (dev >= 0) {
            fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
            close(dev);
        }
    }
    return fd;
}

/* Opens the uffd-wp tracker over the region; 0, or errno with `why` set. */
static int uffd_setup(vfmig_hostmem *h, const char **why)
{
    h->uffd = uffd_open();
    if (h->uffd < 0) {
        *why = "userfaultfd";
        return errno;
    }
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED};
    if (ioctl(h->uffd, UFFDIO_API, &api) < 0 || !(api.features & UFFD_FEATURE_WP_ASYNC)) {
        /* Older kernels refuse unknown features: ask for async alone before giving up. */
        close(h->uffd);
        h->uffd = uffd_open();
        struct uffdio_api api2 = {.api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC};
        if (h->uffd < 0 || ioctl(h->uffd, UFFDIO_API, &api2) < 0 || !(api2.features & UFFD_FEATURE_WP_ASYNC)) {
            *why = "userfaultfd asynchronous write-protect (UFFD_FEATURE_WP_ASYNC)";
            return errno ? errno : ENOTSUP;
        }
    }
    struct uffdio_register reg = {.range = {.start = (uintptr_t)h->base, .len = h->size},
                                  .mode = UFFDIO_REGISTER_MODE_WP};
    if (ioctl(h->uffd, UFFDIO_REGISTER, &reg) < 0) {
        *why = "userfaultfd write-protect registration of the region (anonymous or shared memory only)";
        return errno;
    }
    h->registered = 1;
    h->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (h->pagemap < 0) {
        *why = "/proc/self/pagemap";
        return errno;
    }
    /* An empty scan tells whether the ioctl exists (ENOTTY before Linux 6.7). */
    struct page_region one;
    struct pm_scan_arg a = {.size = sizeof a, .start = (uintptr_t)h->base, .end = (uintptr_t)h->base,
                            .vec = (uintptr_t)&one, .vec_len = 1, .category_mask = PAGE_IS_WRITTEN,
                            .return_mask = PAGE_IS_WRITTEN};
    if (ioctl(h->pagemap, PAGEMAP_SCAN, &a) < 0) {
        *why = "the PAGEMAP_SCAN ioctl";
        return errno;
    }
    h->source = VFMIG_DIRTY_UFFD_WP;
    return 0;
}

static int write_clear_refs(vfmig_hostmem *h)
{
    return pwrite(h->clear_refs, "4", 1, 0) == 1 ? 0 : errno;
}

/* Opens the soft-dirty tracker; checks on a probe page of its own that the kernel sets the bit
 * (a kernel without CONFIG_MEM_SOFT_DIRTY accepts the clear and never sets it). */
static int softdirty_setup(vfmig_hostmem *h, const char **why)
{
    h->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    h->clear_refs = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (h->pagemap < 0 || h->clear_refs < 0) {
        *why = "/proc/self/pagemap and /proc/self/clear_refs";
        return errno;
    }
    volatile uint8_t *probe = aligned_alloc(h->sys_page, h->sys_page);
    if (!probe) {
        *why = "memory for the soft-dirty probe";
        return ENOMEM;
    }
    probe[0] = 1;
    int e = write_clear_refs(h);
    uint64_t ent = 0;
    if (!e) {
        probe[0] = 2;
        if (pread(h->pagemap, &ent, 8, (off_t)((uintptr_t)probe / h->sys_page * 8)) != 8)
            e = errno ? errno : EIO;
    }
    free((void *)probe);
    if (e) {
        *why = "soft-dirty bits (/proc/self/clear_refs)";
        return e;
    }
    if (!(ent & HM_PM_SOFT_DIRTY)) {
        *why = "soft-dirty bits (kernel without CONFIG_MEM_SOFT_DIRTY)";
        return ENOTSUP;
    }
    h->pm_buf = malloc(HM_VEC * 8);
    h->carry = calloc((size_t)((h->npages + 63) / 64), 8);
    if (!h->pm_buf || !h->carry) {
        *why = "memory for the soft-dirty bitmaps";
        return ENOMEM;
    }
    h->source = VFMIG_DIRTY_SOFT_DIRTY;
    return 0;
}

static void uffd_teardown(vfmig_hostmem *h)
{
    if (h->uffd >= 0 && h->registered) {
        struct uffdio_writeprotect wp = {.range = {.start = (uintptr_t)h->base, .len = h->size}, .mode = 0};
        (void)ioctl(h->uffd, UFFDIO_WRITEPROTECT, &wp);
        struct uffdio_range r = {.start = (uintptr_t)h->base, .len = h->size};
        (void)ioctl(h->uffd, UFFDIO_UNREGISTER, &r);
    }
    h->registered = 0;
    if (h->uffd >= 0)
        close(h->uffd);
    h->uffd = -1;
}

static void record_scan(vfmig_hostmem *h, uint64_t wall, uint64_t cpu, uint64_t bytes, uint64_t dirty)
{
    pthread_mutex_lock(&h->lock);
    h->st.scans++;
    h->st.last_ns = wall;
    h->st.last_cpu_ns = cpu;
    h->st.last_bytes = bytes;
    h->st.last_dirty = dirty;
    h->st.total_ns += wall;
    h->st.total_cpu_ns += cpu;
    h->st.total_bytes += bytes;
    h->st.cpu_ns_per_gib = bytes ? (double)cpu * (double)(1ull << 30) / (double)bytes : 0;
    pthread_mutex_unlock(&h->lock);
}

static void set_bits(uint64_t *bm, uint64_t from, uint64_t to)
{
    for (uint64_t i = from; i < to; i++)
        bm[i / 64] |= 1ull << (i % 64);
}

/* uffd: written pages of [first, first+n) into bitmap; with clear, protected again. */
static int uffd_query(vfmig_hostmem *h, uint64_t first, uint64_t n, uint64_t *bitmap, int clear, uint64_t *dirty)
{
    uintptr_t lo = (uintptr_t)h->base + (first << h->shift), hi = lo + (n << h->shift);
    struct pm_scan_arg a = {.size = sizeof a, .flags = clear ? PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC : 0,
                            .start = lo, .end = hi, .vec = (uintptr_t)h->vec, .vec_len = HM_VEC,
                            .category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN};
    for (;;) {
        long got = ioctl(h->pagemap, PAGEMAP_SCAN, &a);
        if (got < 0) /* the walk only stops early for a full vec (walk_end) or a fatal signal */
            return VFMIG_EDEVICE;
        for (long i = 0; i < got; i++) {
            /* Regions are in system pages; a tracking page is dirty if any of its part is. */
            uint64_t s = (h->vec[i].start - lo) >> h->shift, e = (h->vec[i].end - lo + h->ps - 1) >> h->shift;
            set_bits(bitmap, s, e > n ? n : e);
        }
        if (a.walk_end >= hi || a.walk_end == 0)
            break;
        a.start = a.walk_end; /* vec was full: carry on from where the walk stopped */
    }
    uint64_t c = 0;
    for (uint64_t w = 0; w < (n + 63) / 64; w++)
        c += (uint64_t)__builtin_popcountll(bitmap[w]);
    *dirty = c;
    return VFMIG_OK;
}

/* soft-dirty: bits of the whole region OR'd into `all` (one word per 64 tracking pages). */
static int softdirty_read(vfmig_hostmem *h, uint64_t *all)
{
    uint64_t per = h->ps / h->sys_page, total = h->size / h->sys_page;
    uint64_t first = (uintptr_t)h->base / h->sys_page;
    for (uint64_t i = 0; i < total;) {
        uint64_t n = total - i < HM_VEC ? total - i : HM_VEC;
        ssize_t got = pread(h->pagemap, h->pm_buf, (size_t)(n * 8), (off_t)((first + i) * 8));
        if (got != (ssize_t)(n * 8))
            return VFMIG_EDEVICE;
        for (uint64_t k = 0; k < n; k++)
            if (h->pm_buf[k] & HM_PM_SOFT_DIRTY) {
                uint64_t p = (i + k) / per;
                all[p / 64] |= 1ull << (p % 64);
            }
        i += n;
    }
    return VFMIG_OK;
}

static int softdirty_query(vfmig_hostmem *h, uint64_t first, uint64_t n, uint64_t *bitmap, int clear,
                           uint64_t *dirty)
{
    uint64_t words = (h->npages + 63) / 64;
    uint64_t *all = calloc((size_t)words, 8);
    if (!all)
        return VFMIG_ENOMEM;
    int paused_here = 0, rc = VFMIG_OK;
    if (clear && !h->paused) {
        if ((rc = h->cfg.cb.pause(h->cfg.cb.user))) {
            free(all);
            return rc;
        }
        paused_here = 1;
    }
    rc = softdirty_read(h, all);
    if (rc == VFMIG_OK && clear && write_clear_refs(h))
        rc = VFMIG_EDEVICE;
    if (paused_here) {
        int r2 = h->cfg.cb.resume(h->cfg.cb.user);
        if (rc == VFMIG_OK)
            rc = r2;
    }
    if (rc == VFMIG_OK) {
        uint64_t c = 0;
        for (uint64_t w = 0; w < words; w++)
            all[w] |= h->carry[w];
        for (uint64_t i = 0; i < n; i++) {
            uint64_t p = first + i;
            if (all[p / 64] >> (p % 64) & 1) {
                bitmap[i / 64] |= 1ull << (i % 64);
                all[p / 64] &= ~(1ull << (p % 64));
                c++;
            }
        }
        if (clear) /* what the clear took outside the window waits for its own query */
            memcpy(h->carry, all, (size_t)words * 8);
        *dirty = c;
    }
    free(all);
    return rc;
}

/* ----------------------------------------------------------------------------------------- */
/* Device ops                                                                                 */
/* ----------------------------------------------------------------------------------------- */
static void copy_in(uint8_t *dst, const uint8_t *src, size_t len)
{
#ifdef HM_ATOMIC_COPY
    /* Under TSan the embedder's writers may be atomic (the simulated workload is): match them. */
    size_t i = 0;
    for (; i < len && (((uintptr_t)(src + i) | (uintptr_t)(dst + i)) & 7); i++)
        __atomic_store_n(dst + i, __atomic_load_n(src + i, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
    for (; i + 8 <= len; i += 8)
        __atomic_store_n((uint64_t *)(void *)(dst + i),
                         __atomic_load_n((const uint64_t *)(const void *)(src + i), __ATOMIC_RELAXED),
                         __ATOMIC_RELAXED);
    for (; i < len; i++)
        __atomic_store_n(dst + i, __atomic_load_n(src + i, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
#else
    memcpy(dst, src, len);
#endif
}

static int in_region(const vfmig_hostmem *h, uint64_t off, uint64_t len)
{
    return off <= h->size && len <= h->size - off;
}

static int op_prepare(void *dev, vfmig_role role)
{
    (void)dev;
    return role == VFMIG_ROLE_SOURCE || role == VFMIG_ROLE_TARGET ? VFMIG_OK : VFMIG_EINVAL;
}

static int op_end(void *dev)
{
    vfmig_hostmem *h = dev;
    if (h->cfg.cb.throttle)
        (void)h->cfg.cb.throttle(h->cfg.cb.user, 100);
    return VFMIG_OK;
}

static int op_start_tracking(void *dev)
{
    vfmig_hostmem *h = dev;
    if (h->source == VFMIG_DIRTY_UFFD_WP) {
        /* Everything protected: from here a write leaves its page "written". Pages written
         * before are in round 0's full read. */
        struct uffdio_writeprotect wp = {.range = {.start = (uintptr_t)h->base, .len = h->size},
                                         .mode = UFFDIO_WRITEPROTECT_MODE_WP};
        uint64_t t0 = vfmig__now_ns();
        if (ioctl(h->uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
            return VFMIG_EDEVICE;
        pthread_mutex_lock(&h->lock);
        h->st.total_ns += vfmig__now_ns() - t0;
        pthread_mutex_unlock(&h->lock);
    } else {
        memset(h->carry, 0, (size_t)((h->npages + 63) / 64) * 8);
        if (write_clear_refs(h))
            return VFMIG_EDEVICE;
    }
    h->tracking = 1;
    return VFMIG_OK;
}

static int op_stop_tracking(void *dev)
{
    vfmig_hostmem *h = dev;
    if (h->tracking && h->source == VFMIG_DIRTY_UFFD_WP) {
        /* Lifted so that the VF, running on here after a failed migration, stops faulting. */
        struct uffdio_writeprotect wp = {.range = {.start = (uintptr_t)h->base, .len = h->size}, .mode = 0};
        (void)ioctl(h->uffd, UFFDIO_WRITEPROTECT, &wp);
    }
    h->tracking = 0;
    return VFMIG_OK;
}

static int op_query_dirty(void *dev, uint32_t range, uint64_t first_page, uint64_t npages, uint64_t *bitmap,
                          int clear)
{
    vfmig_hostmem *h = dev;
    if (!h->tracking)
        return VFMIG_ESTATE;
    if (range != 0 || first_page > h->npages || npages > h->npages - first_page || (npages && !bitmap))
        return VFMIG_EINVAL;
    if (npages == 0)
        return VFMIG_OK;
    memset(bitmap, 0, (size_t)((npages + 63) / 64) * 8);
    uint64_t t0 = vfmig__now_ns(), c0 = vfmig__thread_cpu_ns(), dirty = 0;
    int rc = h->source == VFMIG_DIRTY_UFFD_WP ? uffd_query(h, first_page, npages, bitmap, clear, &dirty)
                                              : softdirty_query(h, first_page, npages, bitmap, clear, &dirty);
    if (rc == VFMIG_OK)
        record_scan(h, vfmig__now_ns() - t0, vfmig__thread_cpu_ns() - c0, npages << h->shift,
                    dirty);
    return rc;
}

static int op_read(void *dev, uint64_t offset, void *dst, size_t len)
{
    vfmig_hostmem *h = dev;
    if (!in_region(h, offset, len) || (len && !dst))
        return VFMIG_EINVAL;
    copy_in(dst, h->base + offset, len);
    return VFMIG_OK;
}

static int op_write(void *dev, uint64_t offset, const void *src, size_t len)
{
    vfmig_hostmem *h = dev;
    if (!in_region(h, offset, len) || (len && !src))
        return VFMIG_EINVAL;
    copy_in(h->base + offset, src, len);
    return VFMIG_OK;
}

static int op_pause(void *dev)
{
    vfmig_hostmem *h = dev;
    int rc = h->cfg.cb.pause(h->cfg.cb.user);
    h->paused = 1; /* even a failed pause may have stopped part of the VF */
    return rc;
}

static int op_resume(void *dev)
{
    vfmig_hostmem *h = dev;
    int rc = h->cfg.cb.resume(h->cfg.cb.user);
    if (rc == VFMIG_OK)
        h->paused = 0;
    return rc;
}

/* Layout blob: the target refuses a region of another size, page size or version. */
static int op_save_immutable(void *dev, void *buf, uint64_t *size)
{
    vfmig_hostmem *h = dev;
    if (!size)
        return VFMIG_EINVAL;
    if (buf) {
        if (*size < HM_BLOB)
            return VFMIG_EINVAL;
        uint8_t *b = buf;
        vfmig_put_u64(b, HM_IMM_MAGIC);
        vfmig_put_u64(b + 8, h->cfg.state_version);
        vfmig_put_u64(b + 16, h->size);
        vfmig_put_u64(b + 24, h->ps);
    }
    *size = HM_BLOB;
    return VFMIG_OK;
}

static int op_restore_immutable(void *dev, const void *buf, uint64_t size)
{
    vfmig_hostmem *h = dev;
    const uint8_t *b = buf;
    if (!b || size != HM_BLOB || vfmig_get_u64(b) != HM_IMM_MAGIC)
        return VFMIG_EINVAL;
    if (vfmig_get_u64(b + 8) != h->cfg.state_version || vfmig_get_u64(b + 16) != h->size || vfmig_get_u64(b + 24) != h->ps)
        return VFMIG_EINCOMPAT;
    return VFMIG_OK;
}

static int op_save_mutable(void *dev, void *buf, uint64_t *size)
{
    vfmig_hostmem *h = dev;
    if (h->cfg.cb.save_mutable)
        return h->cfg.cb.save_mutable(h->cfg.cb.user, buf, size);
    if (!size)
        return VFMIG_EINVAL;
    if (buf) {
        if (*size < 16)
            return VFMIG_EINVAL;
        vfmig_put_u64(buf, HM_MUT_MAGIC);
        vfmig_put_u64((uint8_t *)buf + 8, h->size);
    }
    *size = 16;
    return VFMIG_OK;
}

static int op_restore_mutable(void *dev, const void *buf, uint64_t size)
{
    vfmig_hostmem *h = dev;
    if (h->cfg.cb.restore_mutable)
        return h->cfg.cb.restore_mutable(h->cfg.cb.user, buf, size);
    if (!buf || size != 16 || vfmig_get_u64(buf) != HM_MUT_MAGIC || vfmig_get_u64((const uint8_t *)buf + 8) != h->size)
        return VFMIG_EINVAL;
    return VFMIG_OK;
}

static int op_throttle(void *dev, unsigned percent)
{
    vfmig_hostmem *h = dev;
    return h->cfg.cb.throttle(h->cfg.cb.user, percent);
}

static int op_tracking_cost(void *dev, uint64_t *ns)
{
    vfmig_hostmem *h = dev;
    if (!ns)
        return VFMIG_EINVAL;
    pthread_mutex_lock(&h->lock);
    *ns = h->st.last_ns;
    pthread_mutex_unlock(&h->lock);
    return VFMIG_OK;
}

#define HM_OPS_COMMON                                                                               \
    .prepare = op_prepare, .end = op_end, .start_tracking = op_start_tracking,                      \
    .stop_tracking = op_stop_tracking, .query_dirty = op_query_dirty, .read = op_read,              \
    .write = op_write, .pause = op_pause, .resume = op_resume, .save_immutable = op_save_immutable, \
    .save_mutable = op_save_mutable, .restore_immutable = op_restore_immutable,                     \
    .restore_mutable = op_restore_mutable

static const vfmig_device_ops hm_ops = {HM_OPS_COMMON, .throttle = op_throttle};
static const vfmig_device_ops hm_ops_nothrottle = {HM_OPS_COMMON};

/* ----------------------------------------------------------------------------------------- */
/* Public API                                                                                 */
/* ----------------------------------------------------------------------------------------- */
void vfmig_hostmem_config_init(vfmig_hostmem_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->page_size = 4096;
    cfg->tracker = VFMIG_HOSTMEM_AUTO;
    cfg->state_version = 1;
}

int vfmig_hostmem_create(const vfmig_hostmem_config *cfg, vfmig_hostmem **out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = 0;
    if (!out || !cfg) {
        if (err && errlen)
            snprintf(err, errlen, "hostmem: no configuration");
        return VFMIG_EINVAL;
    }
    *out = NULL;
    long sp = sysconf(_SC_PAGESIZE);
    uint64_t sys_page = sp > 0 ? (uint64_t)sp : 4096, ps = cfg->page_size;
    if (!cfg->base || (uintptr_t)cfg->base % sys_page || ps < sys_page || ps < VFMIG_MIN_PAGE_SIZE ||
        ps > VFMIG_MAX_PAGE_SIZE || (ps & (ps - 1)) || cfg->size == 0 || cfg->size % ps) {
        if (err && errlen)
            snprintf(err, errlen,
                     "hostmem: the region must start on a page boundary and be a whole number of tracking "
                     "pages (a power of two from the system page to 2 MiB)");
        return VFMIG_EINVAL;
    }
    if (!cfg->cb.pause || !cfg->cb.resume || (uint32_t)cfg->tracker > VFMIG_HOSTMEM_SOFT_DIRTY) {
        if (err && errlen)
            snprintf(err, errlen, "hostmem: pause and resume callbacks are required");
        return VFMIG_EINVAL;
    }
    vfmig_hostmem *h = calloc(1, sizeof *h);
    if (!h)
        return VFMIG_ENOMEM;
    h->cfg = *cfg;
    h->base = cfg->base;
    h->size = cfg->size;
    h->ps = ps;
    h->shift = (unsigned)__builtin_ctzll(ps);
    h->npages = cfg->size >> h->shift;
    h->sys_page = sys_page;
    h->range = (vfmig_range){0, cfg->size};
    h->uffd = h->pagemap = h->clear_refs = -1;
    pthread_mutex_init(&h->lock, NULL);
    h->vec = malloc(HM_VEC * sizeof *h->vec);
    if (!h->vec) {
        vfmig_hostmem_destroy(h);
        return VFMIG_ENOMEM;
    }
    const char *why_u = NULL, *why_s = NULL;
    int eu = 0, es = 0;
    if (cfg->tracker != VFMIG_HOSTMEM_SOFT_DIRTY) {
        eu = uffd_setup(h, &why_u);
        if (eu) {
            uffd_teardown(h);
            if (h->pagemap >= 0)
                close(h->pagemap);
            h->pagemap = -1;
        }
    }
    if ((eu && cfg->tracker == VFMIG_HOSTMEM_AUTO) || cfg->tracker == VFMIG_HOSTMEM_SOFT_DIRTY)
        es = softdirty_setup(h, &why_s);
    int ok = (cfg->tracker == VFMIG_HOSTMEM_UFFD_WP && !eu) || (cfg->tracker == VFMIG_HOSTMEM_SOFT_DIRTY && !es) ||
             (cfg->tracker == VFMIG_HOSTMEM_AUTO && (!eu || !es));
    if (!ok) {
        if (err && errlen) {
            int n = 0;
            if (why_u)
                n = snprintf(err, errlen, "hostmem: no dirty tracking: %s: %s", why_u, strerror(eu));
            if (why_s && n >= 0 && (size_t)n < errlen)
                snprintf(err + n, errlen - (size_t)n, "%s%s: %s", n ? "; " : "hostmem: no dirty tracking: ", why_s,
                         strerror(es));
        }
        vfmig_hostmem_destroy(h);
        return VFMIG_ENOTSUP;
    }
    h->st.source = h->source;
    *out = h;
    return VFMIG_OK;
}

void vfmig_hostmem_destroy(vfmig_hostmem *h)
{
    if (!h)
        return;
    uffd_teardown(h);
    if (h->pagemap >= 0)
        close(h->pagemap);
    if (h->clear_refs >= 0)
        close(h->clear_refs);
    free(h->vec);
    free(h->pm_buf);
    free(h->carry);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

void vfmig_hostmem_device(vfmig_hostmem *h, vfmig_device *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!h)
        return;
    out->size = sizeof(*out);
    out->ops_size = sizeof(vfmig_device_ops);
    out->ops = h->cfg.cb.throttle ? &hm_ops : &hm_ops_nothrottle;
    out->dev = h;
    out->page_size = h->ps;
    out->nranges = 1;
    out->ranges = &h->range;
    out->tracking_cost = op_tracking_cost;
}

vfmig_dirty_source vfmig_hostmem_dirty_source(const vfmig_hostmem *h)
{
    return h ? h->source : VFMIG_DIRTY_UFFD_WP;
}

void vfmig_hostmem_get_stats(const vfmig_hostmem *h, vfmig_tracking_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!h)
        return;
    vfmig_hostmem *m = (vfmig_hostmem *)h;
    pthread_mutex_lock(&m->lock);
    *out = m->st;
    pthread_mutex_unlock(&m->lock);
}
