/*
 * examples/daemon.c - how a host's migration daemon embeds libvfmig with a device of its own.
 *
 * The "device" here is not vfmig's simulator: it is this program's own memory region (anonymous
 * mmap, standing in for a VF's VRAM behind a BAR) with its own dirty bitmap, which its own writer
 * thread sets as hardware dirty tracking would, plus a small mutable state (the writer's counter
 * and a "register file") and an immutable state (geometry and a driver version).
 *
 * `daemon` forks: the child is the target daemon (listens on loopback TCP, reports its port on a
 * pipe, takes the VF over); the parent is the source daemon (runs the workload, migrates it live,
 * then compares the target's image digest with its own paused image). Both ends prove they hold
 * the same freshly generated pre-shared key. Exit status 0 only when the migration succeeded and
 * the target's memory and state equal the source's at the moment of pause.
 *
 * Build against an installed vfmig:
 *   cc -O2 daemon.c $(pkg-config --cflags --libs vfmig) -pthread -o daemon
 * or with CMake (examples/CMakeLists.txt): find_package(vfmig) and link vfmig::vfmig.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vfmig.h>

#define DEV_MAGIC 0x3130564544454d4dull /* "MMEDEV01" */
#define DEV_DRIVER_VERSION 7u
#define SEGMENT_BASE (1u << 20) /* the region's segment offset: offsets are not host offsets */

/* ----------------------------------------------------------------------------------------- */
/* The device                                                                                */
/* ----------------------------------------------------------------------------------------- */

typedef struct memdev {
    uint8_t *mem;
    uint64_t bytes, page, npages;
    _Atomic uint64_t *dirty; /* one bit per page, set by the writer after each write */
    vfmig_range range;
    /* The workload. `lock` is held for each write, so pause() taking it means no write is in
     * flight; the writer sleeps between writes without it. */
    pthread_mutex_t lock;
    pthread_cond_t cv;
    pthread_t writer;
    int writer_started, paused, quit;
    unsigned writes_per_s, throttle_percent;
    /* Mutable state: what save_mutable captures while paused, restore_mutable installs. */
    uint64_t generation;    /* writes done */
    uint64_t regs[6];       /* a register file the writer updates with each write */
    int restored_mutable;   /* target: a mutable state was installed */
} memdev;

typedef struct state_blob {
    uint64_t magic, bytes, page;
    uint32_t driver_version, reserved;
} state_blob;

typedef struct mutable_blob {
    uint64_t magic, generation, regs[6];
} mutable_blob;

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The engine's DMA and the writer touch the same memory at once, as they would on a device:
 * 8-byte relaxed atomics say so to the compiler (and to ThreadSanitizer). Lengths and offsets
 * are multiples of 8 (pages are). */
static void copy_in(uint8_t *dst, const uint8_t *src, size_t len)
{
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        __atomic_store_n((uint64_t *)(void *)(dst + i), v, __ATOMIC_RELAXED);
    }
}

static void copy_out(uint8_t *dst, const uint8_t *src, size_t len)
{
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = __atomic_load_n((const uint64_t *)(const void *)(src + i), __ATOMIC_RELAXED);
        memcpy(dst + i, &v, 8);
    }
}

static void *writer_main(void *arg)
{
    memdev *d = arg;
    uint64_t rng = 0x5eed;
    for (;;) {
        pthread_mutex_lock(&d->lock);
        while (d->paused && !d->quit)
            pthread_cond_wait(&d->cv, &d->lock);
        if (d->quit) {
            pthread_mutex_unlock(&d->lock);
            return NULL;
        }
        /* One write: 256 bytes somewhere in a random page, then its dirty bit. */
        uint64_t p = splitmix(&rng) % d->npages;
        uint64_t off = p * d->page + (splitmix(&rng) % (d->page / 256)) * 256;
        uint64_t buf[32];
        for (int i = 0; i < 32; i++)
            buf[i] = d->generation * 31 + (uint64_t)i + p;
        copy_in(d->mem + off, (const uint8_t *)buf, sizeof(buf));
        atomic_fetch_or(&d->dirty[p / 64], 1ull << (p % 64));
        d->generation++;
        d->regs[d->generation % 6] ^= splitmix(&rng);
        unsigned rate = d->writes_per_s * d->throttle_percent / 100;
        pthread_mutex_unlock(&d->lock);
        struct timespec ts = {0, rate ? (long)(1000000000ull / rate) : 1000000};
        nanosleep(&ts, NULL);
    }
}

static int dev_prepare(void *dev, vfmig_role role)
{
    (void)dev;
    (void)role;
    return VFMIG_OK;
}

static int dev_end(void *dev)
{
    memdev *d = dev;
    pthread_mutex_lock(&d->lock);
    d->throttle_percent = 100;
    pthread_mutex_unlock(&d->lock);
    return VFMIG_OK;
}

static int dev_start_tracking(void *dev)
{
    memdev *d = dev;
    for (uint64_t w = 0; w < (d->npages + 63) / 64; w++)
        atomic_store(&d->dirty[w], 0);
    return VFMIG_OK;
}

static int dev_stop_tracking(void *dev)
{
    (void)dev;
    return VFMIG_OK;
}

static int dev_query_dirty(void *dev, uint32_t range, uint64_t first, uint64_t n, uint64_t *bitmap, int clear)
{
    memdev *d = dev;
    if (range != 0 || first > d->npages || n > d->npages - first)
        return VFMIG_EINVAL;
    /* Word by word: the read and the reset of each word are one atomic step, so a write racing
     * with the query is either reported now or stays set for the next query. */
    for (uint64_t p = first; p < first + n;) {
        uint64_t w = p / 64, lo = p % 64, hi = first + n - w * 64 < 64 ? first + n - w * 64 : 64;
        uint64_t mask = (hi == 64 ? ~0ull : (1ull << hi) - 1) & ~((1ull << lo) - 1);
        uint64_t v = clear ? atomic_fetch_and(&d->dirty[w], ~mask) & mask : atomic_load(&d->dirty[w]) & mask;
        while (v) {
            uint64_t bit = (uint64_t)__builtin_ctzll(v);
            uint64_t i = w * 64 + bit - first;
            bitmap[i / 64] |= 1ull << (i % 64);
            v &= v - 1;
        }
        p = w * 64 + hi;
    }
    return VFMIG_OK;
}

static int dev_span(const memdev *d, uint64_t offset, size_t len, uint64_t *host)
{
    if (offset < SEGMENT_BASE || offset - SEGMENT_BASE > d->bytes || len > d->bytes - (offset - SEGMENT_BASE) ||
        (offset | len) % 8)
        return VFMIG_EINVAL;
    *host = offset - SEGMENT_BASE;
    return VFMIG_OK;
}

static int dev_read(void *dev, uint64_t offset, void *dst, size_t len)
{
    memdev *d = dev;
    uint64_t h;
    int rc = dev_span(d, offset, len, &h);
    if (!rc)
        copy_out(dst, d->mem + h, len);
    return rc;
}

static int dev_write(void *dev, uint64_t offset, const void *src, size_t len)
{
    memdev *d = dev;
    uint64_t h;
    int rc = dev_span(d, offset, len, &h);
    if (!rc)
        copy_in(d->mem + h, src, len);
    return rc;
}

static int dev_pause(void *dev)
{
    memdev *d = dev;
    pthread_mutex_lock(&d->lock); /* waits for a write in flight */
    d->paused = 1;
    pthread_mutex_unlock(&d->lock);
    return VFMIG_OK;
}

static int dev_resume(void *dev)
{
    memdev *d = dev;
    pthread_mutex_lock(&d->lock);
    d->paused = 0;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->lock);
    return VFMIG_OK;
}

static int dev_save_immutable(void *dev, void *buf, uint64_t *size)
{
    memdev *d = dev;
    if (!buf) {
        *size = sizeof(state_blob);
        return VFMIG_OK;
    }
    if (*size < sizeof(state_blob))
        return VFMIG_EINVAL;
    state_blob b = {DEV_MAGIC, d->bytes, d->page, DEV_DRIVER_VERSION, 0};
    memcpy(buf, &b, sizeof(b));
    *size = sizeof(b);
    return VFMIG_OK;
}

static int dev_restore_immutable(void *dev, const void *buf, uint64_t size)
{
    memdev *d = dev;
    state_blob b;
    if (size != sizeof(b))
        return VFMIG_EINCOMPAT;
    memcpy(&b, buf, sizeof(b));
    /* A host with another driver version or geometry cannot take this VF. */
    if (b.magic != DEV_MAGIC || b.driver_version != DEV_DRIVER_VERSION || b.bytes != d->bytes || b.page != d->page)
        return VFMIG_EINCOMPAT;
    return VFMIG_OK;
}

static int dev_save_mutable(void *dev, void *buf, uint64_t *size)
{
    memdev *d = dev;
    if (!buf) {
        *size = sizeof(mutable_blob);
        return VFMIG_OK;
    }
    pthread_mutex_lock(&d->lock);
    int paused = d->paused;
    mutable_blob b = {.magic = DEV_MAGIC, .generation = d->generation};
    memcpy(b.regs, d->regs, sizeof(b.regs));
    pthread_mutex_unlock(&d->lock);
    if (!paused || *size < sizeof(b))
        return paused ? VFMIG_EINVAL : VFMIG_ESTATE;
    memcpy(buf, &b, sizeof(b));
    *size = sizeof(b);
    return VFMIG_OK;
}

static int dev_restore_mutable(void *dev, const void *buf, uint64_t size)
{
    memdev *d = dev;
    mutable_blob b;
    if (size != sizeof(b))
        return VFMIG_EDEVICE;
    memcpy(&b, buf, sizeof(b));
    if (b.magic != DEV_MAGIC)
        return VFMIG_EDEVICE;
    pthread_mutex_lock(&d->lock);
    d->generation = b.generation;
    memcpy(d->regs, b.regs, sizeof(d->regs));
    d->restored_mutable = 1;
    pthread_mutex_unlock(&d->lock);
    return VFMIG_OK;
}

static int dev_throttle(void *dev, unsigned percent)
{
    memdev *d = dev;
    pthread_mutex_lock(&d->lock);
    d->throttle_percent = percent ? percent : 1;
    pthread_mutex_unlock(&d->lock);
    return VFMIG_OK;
}

static const vfmig_device_ops memdev_ops = {
    .prepare = dev_prepare, .end = dev_end,
    .start_tracking = dev_start_tracking, .stop_tracking = dev_stop_tracking,
    .query_dirty = dev_query_dirty, .read = dev_read, .write = dev_write,
    .pause = dev_pause, .resume = dev_resume,
    .save_immutable = dev_save_immutable, .save_mutable = dev_save_mutable,
    .restore_immutable = dev_restore_immutable, .restore_mutable = dev_restore_mutable,
    .throttle = dev_throttle,
};

/* A zeroed region; the source fills it with content and starts the writer. */
static int memdev_init(memdev *d, uint64_t bytes, uint64_t page, unsigned writes_per_s)
{
    memset(d, 0, sizeof(*d));
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->cv, NULL);
    d->bytes = bytes;
    d->page = page;
    d->npages = bytes / page;
    d->writes_per_s = writes_per_s;
    d->throttle_percent = 100;
    d->paused = 1; /* the VF is not scheduled until started (source) or resumed (target) */
    d->mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (d->mem == MAP_FAILED) {
        d->mem = NULL;
        return -1;
    }
    d->dirty = calloc((d->npages + 63) / 64, sizeof(*d->dirty));
    if (!d->dirty)
        return -1;
    d->range = (vfmig_range){.offset = SEGMENT_BASE, .size = bytes};
    return 0;
}

static void memdev_device(memdev *d, vfmig_device *out)
{
    *out = (vfmig_device){VFMIG_DEVICE_SIZES, .ops = &memdev_ops, .dev = d, .page_size = d->page, .nranges = 1, .ranges = &d->range};
}

static void memdev_fini(memdev *d)
{
    if (d->writer_started) {
        pthread_mutex_lock(&d->lock);
        d->quit = 1;
        pthread_cond_broadcast(&d->cv);
        pthread_mutex_unlock(&d->lock);
        pthread_join(d->writer, NULL);
    }
    if (d->mem)
        munmap(d->mem, d->bytes);
    free(d->dirty);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->cv);
}

/* Digest of the image and the mutable state; only meaningful while the VF is not running. */
static uint64_t memdev_digest(memdev *d)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < d->bytes; i += 8) {
        uint64_t v;
        memcpy(&v, d->mem + i, 8);
        h = (h ^ v) * 0x100000001b3ull;
    }
    h = (h ^ d->generation) * 0x100000001b3ull;
    for (int i = 0; i < 6; i++)
        h = (h ^ d->regs[i]) * 0x100000001b3ull;
    return h;
}

/* ----------------------------------------------------------------------------------------- */
/* The two daemons                                                                           */
/* ----------------------------------------------------------------------------------------- */

typedef struct config {
    uint64_t bytes, page;
    unsigned writes_per_s, streams;
    int64_t budget_ms;
    int encrypt, verbose;
    uint8_t psk[32];
} config;

static void on_event(const vfmig_event *ev, void *user)
{
    const char *who = user;
    if (ev->type == VFMIG_EV_ROUND)
        fprintf(stderr, "%s: round %u%s: %" PRIu64 " pages, %.1f ms\n", who, ev->round->round,
                ev->round->in_blackout ? " (blackout)" : "", ev->round->dirty_pages,
                (double)ev->round->duration_ns / 1e6);
    else if (ev->type == VFMIG_EV_LOG && ev->level <= 1)
        fprintf(stderr, "%s: %s\n", who, ev->message);
}

static int make_session(const config *c, vfmig_role role, memdev *d, vfmig_session **s)
{
    vfmig_device dev;
    char err[256] = "";
    memdev_device(d, &dev);
    int rc = vfmig_session_create(role, &dev, s, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "daemon: session: %s (%s)\n", vfmig_strerror(rc), err);
        return rc;
    }
    if ((rc = vfmig_session_set_psk(*s, c->psk, sizeof(c->psk))) ||
        (c->budget_ms && (rc = vfmig_session_set_param(*s, VFMIG_P_BUDGET_MS, c->budget_ms))) ||
        (rc = vfmig_session_set_param(*s, VFMIG_P_ENCRYPT, c->encrypt)) ||
        /* A daemon that must move the VF even when the budget cannot be met (a host being
         * drained) says so; the default keeps the VF here and fails with VFMIG_EBUDGET. */
        (rc = vfmig_session_set_param(*s, VFMIG_P_ON_BUDGET_MISS, VFMIG_BUDGET_MISS_SWITCH))) {
        fprintf(stderr, "daemon: session settings refused: %s\n", vfmig_strerror(rc));
        return rc;
    }
    if (c->verbose)
        vfmig_session_set_callback(*s, on_event, role == VFMIG_ROLE_SOURCE ? "source" : "target");
    return VFMIG_OK;
}

typedef struct result {
    int32_t status;
    int32_t restored;
    uint64_t digest;
} result;

/* Child process: listen, tell the parent the port, take the VF over, report its digest. */
static int target_main(const config *c, int port_fd, int result_fd)
{
    memdev d;
    vfmig_session *s = NULL;
    vfmig_listener *l = NULL;
    vfmig_link *link = NULL;
    result res = {.status = VFMIG_ENOMEM};
    char ep[64], err[256] = "";
    int32_t port = -1;
    if (memdev_init(&d, c->bytes, c->page, 0) == 0 && make_session(c, VFMIG_ROLE_TARGET, &d, &s) == 0) {
        snprintf(ep, sizeof(ep), "tcp://127.0.0.1:0?streams=%u", c->streams);
        res.status = vfmig_listen(ep, &l, err, sizeof(err));
        if (!res.status)
            port = vfmig_listener_port(l);
    }
    if (write(port_fd, &port, sizeof(port)) != (ssize_t)sizeof(port))
        res.status = VFMIG_EIO;
    close(port_fd);
    if (!res.status)
        res.status = vfmig_accept(l, 10000, &link, err, sizeof(err));
    vfmig_listener_close(l);
    if (!res.status)
        res.status = vfmig_session_run(s, link);
    if (res.status)
        fprintf(stderr, "target: %s: %s\n", vfmig_strerror(res.status), err[0] ? err : vfmig_session_last_error(s));
    else {
        /* The VF was resumed here; this device has no workload of its own on the target, so the
         * image is still the one of the moment of pause. */
        pthread_mutex_lock(&d.lock);
        res.restored = d.restored_mutable;
        pthread_mutex_unlock(&d.lock);
        res.digest = memdev_digest(&d);
    }
    if (write(result_fd, &res, sizeof(res)) != (ssize_t)sizeof(res))
        res.status = VFMIG_EIO;
    close(result_fd);
    vfmig_link_close(link);
    vfmig_session_destroy(s);
    memdev_fini(&d);
    return res.status ? 1 : 0;
}

/* Reads exactly n bytes within timeout_ms. */
static int read_full(int fd, void *buf, size_t n, int timeout_ms)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, timeout_ms);
        if (r <= 0)
            return -1;
        ssize_t k = read(fd, (char *)buf + got, n - got);
        if (k <= 0)
            return -1;
        got += (size_t)k;
    }
    return 0;
}

static int source_main(const config *c, int port_fd, int result_fd)
{
    memdev d;
    vfmig_session *s = NULL;
    vfmig_link *link = NULL;
    char ep[64], err[256] = "";
    int32_t port;
    int rc = VFMIG_ENOMEM;
    if (memdev_init(&d, c->bytes, c->page, c->writes_per_s) == 0) {
        uint64_t seed = 42;
        for (uint64_t i = 0; i < d.bytes; i += 8) {
            uint64_t v = (i / d.page) % 4 == 0 ? 0 : splitmix(&seed); /* a quarter zero pages */
            memcpy(d.mem + i, &v, 8);
        }
        rc = make_session(c, VFMIG_ROLE_SOURCE, &d, &s);
    }
    if (!rc) {
        d.paused = 0;
        rc = pthread_create(&d.writer, NULL, writer_main, &d) ? VFMIG_ENOMEM : VFMIG_OK;
        d.writer_started = !rc;
    }
    if (read_full(port_fd, &port, sizeof(port), 10000) || port <= 0) {
        fprintf(stderr, "source: the target did not start listening\n");
        rc = rc ? rc : VFMIG_EIO;
    }
    if (!rc) {
        snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d?streams=%u", (int)port, c->streams);
        rc = vfmig_connect(ep, 10000, &link, err, sizeof(err));
    }
    if (!rc)
        rc = vfmig_session_run(s, link);
    vfmig_stats st = {0};
    if (s)
        vfmig_session_get_stats(s, &st);
    result res = {.status = VFMIG_EIO};
    if (rc) {
        fprintf(stderr, "source: migration failed: %s: %s; the VF runs on: %s\n", vfmig_strerror(rc),
                err[0] ? err : vfmig_session_last_error(s), vfmig_vf_state_name(st.vf_state));
    } else if (read_full(result_fd, &res, sizeof(res), 20000) || res.status) {
        fprintf(stderr, "source: the target reported no image (%s)\n", vfmig_strerror(res.status));
        rc = VFMIG_EIO;
    } else {
        /* After a successful migration the source VF stays paused: its image is the one moved. */
        uint64_t mine = memdev_digest(&d);
        printf("migrated %.1f MiB (%" PRIu64 " pages) in %u pre-copy rounds, %.1f MiB on the wire; "
               "blackout %.2f ms; %" PRIu64 " writes by the workload\n",
               (double)d.bytes / 1048576.0, d.npages, st.rounds, (double)st.bytes_wire / 1048576.0,
               (double)st.blackout_ns / 1e6, d.generation);
        printf("target digest %016" PRIx64 ", source digest %016" PRIx64 ", mutable state %s: %s\n", res.digest,
               mine, res.restored ? "restored" : "MISSING",
               res.digest == mine && res.restored && st.verified ? "verified" : "MISMATCH");
        if (res.digest != mine || !res.restored || !st.verified)
            rc = VFMIG_EDIGEST;
    }
    vfmig_link_close(link);
    vfmig_session_destroy(s);
    memdev_fini(&d);
    return rc;
}

static uint64_t parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || v < min || v > max) {
        fprintf(stderr, "daemon: %s: '%s' is not a whole number in %" PRIu64 "..%" PRIu64 "\n", opt, s, min, max);
        exit(2);
    }
    return v;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: daemon [--mib N] [--page-kib N] [--writes-per-s N] [--streams N] [--budget-ms N]\n"
               "              [--encrypt] [--verbose]\n"
               "Migrates this program's own memory device live from a source process to a forked\n"
               "target process over loopback TCP, then checks the target's image against the source's.\n"
               "  --mib N           device memory (default 64)\n"
               "  --page-kib N      dirty-tracking page, power of two 4..2048 (default 4)\n"
               "  --writes-per-s N  workload: 256-byte writes per second (default 5000)\n"
               "  --streams N       TCP data streams (default 2)\n"
               "  --budget-ms N     blackout budget (default: the library's)\n"
               "  --encrypt         seal every frame (AES-256-GCM, keys from the pre-shared-key handshake)\n"
               "  --verbose         rounds and warnings on stderr\n");
}

int main(int argc, char **argv)
{
    config c = {.bytes = 64ull << 20, .page = 4096, .writes_per_s = 5000, .streams = 2};
    static const struct option lo[] = {
        {"mib", required_argument, 0, 'm'},          {"page-kib", required_argument, 0, 'p'},
        {"writes-per-s", required_argument, 0, 'w'}, {"streams", required_argument, 0, 's'},
        {"budget-ms", required_argument, 0, 'b'},    {"encrypt", no_argument, 0, 'e'},
        {"verbose", no_argument, 0, 'v'},            {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "hv", lo, NULL)) != -1) {
        switch (o) {
        case 'm': c.bytes = parse_u64("--mib", optarg, 1, 1 << 16) << 20; break;
        case 'p': c.page = parse_u64("--page-kib", optarg, 4, 2048) << 10; break;
        case 'w': c.writes_per_s = (unsigned)parse_u64("--writes-per-s", optarg, 0, 1000000); break;
        case 's': c.streams = (unsigned)parse_u64("--streams", optarg, 1, 64); break;
        case 'b': c.budget_ms = (int64_t)parse_u64("--budget-ms", optarg, 1, 600000); break;
        case 'e': c.encrypt = 1; break;
        case 'v': c.verbose = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || (c.page & (c.page - 1)) || c.bytes % c.page) {
        usage(stderr);
        return 2;
    }
    if (vfmig_version_number() / 100 != VFMIG_VERSION_NUMBER / 100) {
        fprintf(stderr, "daemon: built for vfmig %d.%d, running with %u.%u\n", VFMIG_VERSION_MAJOR,
                VFMIG_VERSION_MINOR, vfmig_version_number() / 10000, vfmig_version_number() / 100 % 100);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN); /* a dropped peer is an error code, not a signal */
    /* Both daemons hold the same key, as a fleet's daemons would from their provisioning. */
    if (getrandom(c.psk, sizeof(c.psk), 0) != (ssize_t)sizeof(c.psk)) {
        perror("daemon: getrandom");
        return 1;
    }
    int port_pipe[2], result_pipe[2];
    if (pipe(port_pipe) || pipe(result_pipe)) {
        perror("daemon: pipe");
        return 1;
    }
    fflush(stdout);
    pid_t pid = fork(); /* before any thread exists in this process */
    if (pid < 0) {
        perror("daemon: fork");
        return 1;
    }
    if (pid == 0) {
        close(port_pipe[0]);
        close(result_pipe[0]);
        _exit(target_main(&c, port_pipe[1], result_pipe[1]));
    }
    close(port_pipe[1]);
    close(result_pipe[1]);
    int rc = source_main(&c, port_pipe[0], result_pipe[0]);
    close(port_pipe[0]);
    close(result_pipe[0]);
    int wst;
    if (rc)
        kill(pid, SIGTERM); /* a target still waiting for a source that gave up */
    if (waitpid(pid, &wst, 0) != pid || !WIFEXITED(wst) || (WEXITSTATUS(wst) && !rc)) {
        fprintf(stderr, "daemon: the target process failed\n");
        rc = rc ? rc : VFMIG_EIO;
    }
    return rc ? 1 : 0;
}
