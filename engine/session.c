/* engine/session.c - session lifetime, parameters, errors, statistics; run() dispatches to the
 * source or target half. */
#include "engine/session.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "compress/codec.h"
#include "engine/image.h"
#include "engine/proto.h"

typedef struct param_info {
    int64_t min, max, def;
} param_info;

static const param_info params[VFMIG_PARAM_MAX + 1] = {
    [VFMIG_P_BUDGET_MS] = {1, 3600000, 50},
    [VFMIG_P_MAX_ROUNDS] = {1, 100000, 30},
    [VFMIG_P_MAX_PRECOPY_MS] = {1, INT64_C(86400000), 60000},
    [VFMIG_P_TIMEOUT_MS] = {10, INT64_C(86400000), 10000},
    [VFMIG_P_THREADS] = {0, 256, 0},
    [VFMIG_P_CODEC] = {VFMIG_CODEC_AUTO, VFMIG_CODEC_COUNT - 1, VFMIG_CODEC_AUTO},
    [VFMIG_P_CODEC_LEVEL] = {-100, 22, 0},
    [VFMIG_P_MAX_BANDWIDTH] = {0, INT64_MAX, 0},
    [VFMIG_P_DELTA_CACHE_BYTES] = {0, INT64_C(1) << 40, INT64_C(1) << 30},
    [VFMIG_P_BATCH_BYTES] = {4096, 64 << 20, 1 << 20},
    [VFMIG_P_THROTTLE] = {0, 1, 1},
    [VFMIG_P_VERIFY] = {VFMIG_VERIFY_APPLIED, VFMIG_VERIFY_FULL, VFMIG_VERIFY_READBACK},
    [VFMIG_P_NUMA_NODE] = {-1, 4095, -1},
    [VFMIG_P_ENCRYPT] = {0, 1, 0},
    [VFMIG_P_ON_BUDGET_MISS] = {VFMIG_BUDGET_MISS_ABORT, VFMIG_BUDGET_MISS_RETRY, VFMIG_BUDGET_MISS_RETRY},
    [VFMIG_P_PROGRESS_MS] = {0, 3600000, 200},
};

void vfmig__cond_wait_slice(pthread_cond_t *cond, pthread_mutex_t *mutex)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += VFMIG_WAIT_SLICE_MS * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(cond, mutex, &ts);
}

void vfmig__cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mutex, uint64_t deadline_ns)
{
    uint64_t now = vfmig__now_ns(), wait = (uint64_t)VFMIG_WAIT_SLICE_MS * 1000000u;
    if (deadline_ns <= now)
        return;
    if (deadline_ns - now < wait)
        wait = deadline_ns - now;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + wait;
    ts.tv_sec += (time_t)(ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    pthread_cond_timedwait(cond, mutex, &ts);
}

int vfmig__recv_control(vfmig_session *s, vfmig_link *link, vfmig_frame *f, uint8_t *buf, size_t cap,
                       const char *awaiting, const char *peer, bool patient)
{
    int timeout = (int)s->params[VFMIG_P_TIMEOUT_MS];
    uint64_t deadline = vfmig__deadline(timeout);
    for (;;) {
        if (vfmig__should_stop(s))
            return s->status;
        int rc = vfmig__link_recv(link, 0, f, buf, cap, VFMIG_WAIT_SLICE_MS);
        if (rc == VFMIG_ETIMEDOUT) {
            vfmig__progress_tick(s);
            if (patient || !vfmig__expired(deadline))
                continue;
            return vfmig__fail(s, rc, "no %s from the %s within %d ms", awaiting, peer, timeout);
        }
        if (rc)
            return vfmig__fail(s, rc, "waiting for %s: %s (%s)", awaiting, vfmig_strerror(rc),
                              vfmig__link_stream_error(link, 0));
        if (f->type == VFMIG_F_ABORT) {
            char msg[300];
            int st = vfmig__frame_status(f, buf, msg, sizeof(msg));
            return vfmig__fail(s, VFMIG_EABORTED, "%s aborted the migration: %s (%s)", peer, msg, vfmig_strerror(st));
        }
        return VFMIG_OK;
    }
}

void vfmig__find_peer_abort(vfmig_session *s, vfmig_link *link, uint8_t *buf, size_t cap, const char *peer)
{
    if (s->status != VFMIG_ECLOSED && s->status != VFMIG_EIO && s->status != VFMIG_ETIMEDOUT)
        return;
    uint64_t deadline = vfmig__deadline(200);
    while (!vfmig__expired(deadline)) {
        vfmig_frame f;
        int rc = vfmig__link_recv(link, 0, &f, buf, cap, 20);
        if (rc == VFMIG_ETIMEDOUT)
            continue;
        if (rc)
            return;
        if (f.type == VFMIG_F_ABORT) {
            char msg[300];
            int st = vfmig__frame_status(&f, buf, msg, sizeof(msg));
            vfmig__refine_error(s, VFMIG_EABORTED, "%s aborted the migration: %s (%s)", peer, msg, vfmig_strerror(st));
            return;
        }
    }
}

int vfmig__send_flush(vfmig_session *s, vfmig_link *link, unsigned stream, const vfmig_frame *f,
                     const void *payload, const char *what)
{
    int rc = vfmig__link_send(link, stream, f, payload);
    if (!rc)
        rc = vfmig__link_flush(link, stream);
    if (rc)
        return vfmig__fail(s, rc, "sending %s: %s", what, vfmig__link_stream_error(link, stream));
    return VFMIG_OK;
}

int vfmig_param_bounds(vfmig_param p, int64_t *min, int64_t *max, int64_t *def)
{
    if ((int)p < 1 || (int)p > VFMIG_PARAM_MAX || params[p].max == 0)
        return VFMIG_EINVAL;
    if (min)
        *min = params[p].min;
    if (max)
        *max = params[p].max;
    if (def)
        *def = params[p].def;
    return VFMIG_OK;
}

static int validate_device(const vfmig_device *d, char *err, size_t errlen)
{
    if (!d || !d->ops) {
        snprintf(err, errlen, "device: no ops table");
        return VFMIG_EINVAL;
    }
    /* The sizes say which version of the structs the embedder was built with: from the first one
     * with sizes (ops up to throttle, the device up to tracking_cost) to this one. */
    if (d->size < offsetof(vfmig_device, tracking_cost) || d->size > sizeof(vfmig_device)) {
        snprintf(err, errlen, "device: size %u is not that of a vfmig_device (%zu here; set .size = "
                              "sizeof(vfmig_device), see VFMIG_DEVICE_SIZES)", d->size, sizeof(vfmig_device));
        return VFMIG_EINVAL;
    }
    if (d->ops_size < offsetof(vfmig_device_ops, map) || d->ops_size > sizeof(vfmig_device_ops)) {
        snprintf(err, errlen, "device: ops_size %u is not that of a vfmig_device_ops (%zu here; set .ops_size = "
                              "sizeof(vfmig_device_ops))", d->ops_size, sizeof(vfmig_device_ops));
        return VFMIG_EINVAL;
    }
    const vfmig_device_ops *o = d->ops;
    static const struct { size_t off; const char *name; } required[] = {
#define REQ(op) {offsetof(vfmig_device_ops, op), #op}
        REQ(prepare), REQ(end), REQ(start_tracking), REQ(stop_tracking), REQ(query_dirty), REQ(read),
        REQ(write), REQ(pause), REQ(resume), REQ(save_immutable), REQ(save_mutable), REQ(restore_immutable),
        REQ(restore_mutable),
#undef REQ
    };
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        void *fn;
        memcpy(&fn, (const char *)o + required[i].off, sizeof(fn));
        if (!fn) {
            snprintf(err, errlen, "device: op '%s' is NULL (every op but throttle and map is required)",
                     required[i].name);
            return VFMIG_EINVAL;
        }
    }
    if (d->page_size < VFMIG_MIN_PAGE_SIZE || d->page_size > VFMIG_MAX_PAGE_SIZE ||
        (d->page_size & (d->page_size - 1))) {
        snprintf(err, errlen, "device: tracking page size %llu is not a power of two in 4 KiB..2 MiB",
                 (unsigned long long)d->page_size);
        return VFMIG_EINVAL;
    }
    if (d->nranges == 0 || d->nranges > VFMIG_MAX_RANGES || !d->ranges) {
        snprintf(err, errlen, "device: %u ranges (1..%d allowed)", d->nranges, VFMIG_MAX_RANGES);
        return VFMIG_EINVAL;
    }
    for (uint32_t i = 0; i < d->nranges; i++) {
        const vfmig_range *r = &d->ranges[i];
        if (r->size == 0 || r->size % d->page_size || r->offset % d->page_size ||
            r->offset + r->size < r->offset) {
            snprintf(err, errlen, "device: range %u (offset %llu, size %llu) is not whole pages", i,
                     (unsigned long long)r->offset, (unsigned long long)r->size);
            return VFMIG_EINVAL;
        }
        for (uint32_t j = 0; j < i; j++) {
            const vfmig_range *q = &d->ranges[j];
            if (r->offset < q->offset + q->size && q->offset < r->offset + r->size) {
                snprintf(err, errlen, "device: ranges %u and %u overlap", j, i);
                return VFMIG_EINVAL;
            }
        }
    }
    return VFMIG_OK;
}

int vfmig_session_create(vfmig_role role, const vfmig_device *device, vfmig_session **out,
                         char *err, size_t errlen)
{
    char dummy[8];
    if (!err) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    if (!out || (role != VFMIG_ROLE_SOURCE && role != VFMIG_ROLE_TARGET)) {
        snprintf(err, errlen, "bad arguments");
        return VFMIG_EINVAL;
    }
    *out = NULL;
    int rc = validate_device(device, err, errlen);
    if (rc)
        return rc;
    vfmig_session *s = calloc(1, sizeof(*s));
    if (!s)
        return VFMIG_ENOMEM;
    s->role = role;
    memset(&s->dev, 0, sizeof(s->dev));
    memcpy(&s->dev, device, device->size); /* fields an older embedder lacks stay zero */
    memset(&s->ops, 0, sizeof(s->ops));
    memcpy(&s->ops, device->ops, device->ops_size);
    s->dev.ops = &s->ops;
    s->dev.size = sizeof(s->dev);
    s->dev.ops_size = sizeof(s->ops);
    memcpy(s->ranges, device->ranges, device->nranges * sizeof(vfmig_range));
    s->dev.ranges = s->ranges;
    s->page_size = device->page_size;
    s->page_shift = (unsigned)__builtin_ctzll(device->page_size);
    for (uint32_t i = 0; i < device->nranges; i++)
        s->range_base[i + 1] = s->range_base[i] + (s->ranges[i].size >> s->page_shift);
    s->npages = s->range_base[device->nranges];
    for (int p = 1; p <= VFMIG_PARAM_MAX; p++)
        s->params[p] = params[p].def;
    snprintf(s->pinning, sizeof(s->pinning), "auto");
    pthread_mutex_init(&s->lock, NULL);
    s->stats.role = role;
    s->stats.page_size = s->page_size;
    s->stats.pages = s->npages;
    s->stats.bytes_vram = s->npages * s->page_size;
    s->stats.vf_state = role == VFMIG_ROLE_SOURCE ? VFMIG_VF_RUNNING_ON_SOURCE : VFMIG_VF_NOT_RESUMED;
    s->stats.budget_met = -1;
    *out = s;
    return VFMIG_OK;
}

void vfmig_session_destroy(vfmig_session *s)
{
    if (!s)
        return;
    explicit_bzero(s->psk, sizeof(s->psk));
    explicit_bzero(s->psk2, sizeof(s->psk2));
    pthread_mutex_destroy(&s->lock);
    free(s->rounds);
    free(s->page_hash);
    free(s->lin);
    free(s);
}

static bool live_param(vfmig_param p)
{
    return p == VFMIG_P_BUDGET_MS || p == VFMIG_P_MAX_BANDWIDTH || p == VFMIG_P_THROTTLE || p == VFMIG_P_PROGRESS_MS;
}

int vfmig_session_set_param(vfmig_session *s, vfmig_param p, int64_t value)
{
    int64_t min, max;
    if (!s || vfmig_param_bounds(p, &min, &max, NULL))
        return VFMIG_EINVAL;
    if (value < min || value > max)
        return vfmig__fail_soft(s, VFMIG_EINVAL, "parameter %s: %lld is out of range %lld..%lld", vfmig_param_name(p),
                               (long long)value, (long long)min, (long long)max);
    bool running = atomic_load(&s->link) != NULL;
    if (atomic_load(&s->ran) && (!running || !live_param(p)))
        return vfmig__fail_soft(s, VFMIG_ESTATE, running ? "parameter %s cannot change while the session runs"
                                                        : "parameter %s: the session has run", vfmig_param_name(p));
    pthread_mutex_lock(&s->lock);
    s->params[p] = value;
    pthread_mutex_unlock(&s->lock);
    vfmig_link *l = atomic_load(&s->link);
    if (p == VFMIG_P_MAX_BANDWIDTH && l)
        vfmig__link_set_max_bandwidth(l, (uint64_t)value); /* the link has its own lock */
    return VFMIG_OK;
}

int vfmig_session_get_param(const vfmig_session *s, vfmig_param p, int64_t *value)
{
    if (!s || !value || vfmig_param_bounds(p, NULL, NULL, NULL))
        return VFMIG_EINVAL;
    pthread_mutex_lock((pthread_mutex_t *)&s->lock);
    *value = s->params[p];
    pthread_mutex_unlock((pthread_mutex_t *)&s->lock);
    return VFMIG_OK;
}

int64_t vfmig__param_now(vfmig_session *s, vfmig_param p)
{
    pthread_mutex_lock(&s->lock);
    int64_t v = s->params[p];
    pthread_mutex_unlock(&s->lock);
    return v;
}

int vfmig_session_switchover_now(vfmig_session *s)
{
    if (!s || s->role != VFMIG_ROLE_SOURCE)
        return VFMIG_ESTATE;
    pthread_mutex_lock(&s->lock);
    bool precopy = s->stats.phase == VFMIG_PHASE_PRECOPY || s->stats.phase == VFMIG_PHASE_HANDSHAKE;
    pthread_mutex_unlock(&s->lock);
    if (!precopy)
        return VFMIG_ESTATE;
    atomic_store(&s->switch_requested, 1);
    return VFMIG_OK;
}

void vfmig__progress_round(vfmig_session *s, uint32_t round, uint64_t total)
{
    pthread_mutex_lock(&s->lock);
    s->prog_round = round;
    s->prog_round_total = total;
    atomic_store(&s->prog_round_done, 0);
    pthread_mutex_unlock(&s->lock);
}

void vfmig__progress_policy(vfmig_session *s, uint64_t pending, double dirty_rate, double expected_ms,
                           unsigned throttle)
{
    pthread_mutex_lock(&s->lock);
    s->prog_pending = pending;
    s->prog_dirty_rate = dirty_rate;
    s->prog_expected_ms = expected_ms;
    s->prog_throttle = throttle;
    pthread_mutex_unlock(&s->lock);
}

int vfmig_session_get_progress(const vfmig_session *s, vfmig_progress *out)
{
    if (!s || !out || out->size < sizeof(*out))
        return VFMIG_EINVAL;
    vfmig_session *m = (vfmig_session *)s;
    uint64_t now = vfmig__now_ns();
    vfmig_link *l = atomic_load(&m->link);
    pthread_mutex_lock(&m->lock);
    *out = (vfmig_progress){.size = sizeof(*out), .phase = s->stats.phase, .round = s->prog_round,
                            .throttle_percent = s->prog_throttle ? s->prog_throttle : 100,
                            .elapsed_ns = s->t_start_ns ? now - s->t_start_ns : 0,
                            .bytes_sent = l ? vfmig__link_bytes_sent(l) : s->stats.bytes_wire,
                            .bytes_done = atomic_load(&m->prog_done), .round_done = atomic_load(&m->prog_round_done),
                            .round_total = s->prog_round_total, .dirty_rate = s->prog_dirty_rate,
                            .expected_blackout_ms = s->prog_expected_ms, .eta_ms = -1};
    if (s->role == VFMIG_ROLE_TARGET && l)
        out->bytes_sent = 0; /* the target's link counts what it sent: acknowledgements */
    uint64_t left = out->round_total > out->round_done ? out->round_total - out->round_done : 0;
    out->bytes_remaining = left + (s->prog_pending > left ? s->prog_pending - left : 0);
    uint64_t wire_ns = now - (s->prog_wire_ns ? s->prog_wire_ns : s->t_start_ns);
    if (s->prog_wire_ns && wire_ns)
        out->wire_rate = (double)(out->bytes_sent - s->prog_wire) * 1e9 / (double)wire_ns;
    double elapsed_round = (double)out->elapsed_ns; /* rate over the session: steady enough for an ETA */
    if (out->bytes_done && elapsed_round > 0 && s->role == VFMIG_ROLE_SOURCE) {
        double rate = (double)out->bytes_done * 1e9 / elapsed_round;
        out->eta_ms = (double)left / rate * 1e3 + out->expected_blackout_ms;
    }
    pthread_mutex_unlock(&m->lock);
    return VFMIG_OK;
}

void vfmig__progress_tick(vfmig_session *s)
{
    int64_t every = vfmig__param_now(s, VFMIG_P_PROGRESS_MS);
    if (!s->cb || every <= 0)
        return;
    uint64_t now = vfmig__now_ns();
    if (now < s->prog_next_ns)
        return;
    bool first = s->prog_next_ns == 0;
    s->prog_next_ns = now + (uint64_t)every * 1000000ull;
    vfmig_progress p = {.size = sizeof(p)};
    vfmig_session_get_progress(s, &p);
    pthread_mutex_lock(&s->lock);
    s->prog_wire = p.bytes_sent;
    s->prog_wire_ns = now;
    pthread_mutex_unlock(&s->lock);
    if (first)
        return; /* the first tick only starts the interval the wire rate is measured over */
    vfmig_event ev = {.type = VFMIG_EV_PROGRESS, .phase = p.phase, .done = p.round_done, .total = p.round_total,
                      .progress = &p};
    s->cb(&ev, s->cb_user);
}

int vfmig_session_set_pinning(vfmig_session *s, const char *spec)
{
    if (!s)
        return VFMIG_EINVAL;
    if (!spec || strlen(spec) >= sizeof(s->pinning))
        return vfmig__fail_soft(s, VFMIG_EINVAL, "pinning: no spec, or one over %zu characters", sizeof(s->pinning) - 1);
    vfmig_pinner *p;
    char err[128];
    int rc = vfmig__pinner_create(spec, -1, NULL, &p, err, sizeof(err));
    if (rc)
        return vfmig__fail_soft(s, rc, "pinning '%s': %s", spec, err);
    vfmig__pinner_destroy(p);
    snprintf(s->pinning, sizeof(s->pinning), "%s", spec);
    return VFMIG_OK;
}

int vfmig_session_set_psk(vfmig_session *s, const void *key, size_t len)
{
    if (!s)
        return VFMIG_EINVAL;
    if ((len && !key) || len > sizeof(s->psk) || (len && len < 32))
        return vfmig__fail_soft(s, VFMIG_EINVAL, "pre-shared key of %zu bytes refused: 32 to %zu bytes", len,
                               sizeof(s->psk));
    if (atomic_load(&s->ran))
        return vfmig__fail_soft(s, VFMIG_ESTATE, "the key cannot change once the session has run");
    explicit_bzero(s->psk, sizeof(s->psk));
    if (len)
        memcpy(s->psk, key, len);
    s->psk_len = len;
    return VFMIG_OK;
}

int vfmig_session_set_psk2(vfmig_session *s, const void *key, size_t len)
{
    if (!s || (len && !key) || len > sizeof(s->psk2) || (len && len < 32))
        return VFMIG_EINVAL;
    if (atomic_load(&s->ran))
        return VFMIG_ESTATE;
    explicit_bzero(s->psk2, sizeof(s->psk2));
    if (len)
        memcpy(s->psk2, key, len);
    s->psk2_len = len;
    return VFMIG_OK;
}

void vfmig_session_set_callback(vfmig_session *s, vfmig_event_cb cb, void *user)
{
    if (!s)
        return;
    s->cb = cb;
    s->cb_user = user;
}

void vfmig_session_cancel(vfmig_session *s)
{
    if (!s)
        return;
    atomic_store(&s->cancel_requested, 1);
    /* Recorded now, so that the I/O it interrupts is not taken for the cause; not after a run. */
    if (!atomic_load(&s->ran) || atomic_load(&s->link))
        vfmig__fail(s, VFMIG_ECANCELED, "migration canceled by the caller");
    /* Wake every blocked send and receive at once rather than at the link timeout; the lock keeps
     * run() from handing the link back (to be closed) while it is being interrupted. */
    pthread_mutex_lock(&s->lock);
    vfmig_link *l = atomic_load(&s->link);
    if (l)
        vfmig__link_interrupt(l);
    pthread_mutex_unlock(&s->lock);
}

/* Records a failure; `replace` overrides one already recorded. */
static void record_error(vfmig_session *s, bool replace, int status, const char *fmt, va_list ap)
{
    pthread_mutex_lock(&s->lock);
    if (replace || !s->failed) {
        s->status = status;
        vsnprintf(s->err, sizeof(s->err), fmt, ap);
        atomic_store(&s->failed, 1);
    }
    pthread_mutex_unlock(&s->lock);
}

int vfmig__dev_fail(vfmig_session *s, int rc, const char *what)
{
    int st = rc < 0 ? rc : VFMIG_EDEVICE;
    char why[256] = "";
    if (s->dev.ops->describe)
        s->dev.ops->describe(s->dev.dev, why, sizeof(why));
    why[sizeof(why) - 1] = 0;
    return vfmig__fail(s, st, "device %s failed: %s%s%s", what, vfmig_strerror(st), why[0] ? ": " : "", why);
}

const char *vfmig_param_name(vfmig_param p)
{
    static const char *const names[VFMIG_PARAM_MAX + 1] = {
        [VFMIG_P_BUDGET_MS] = "budget-ms", [VFMIG_P_MAX_ROUNDS] = "max-rounds",
        [VFMIG_P_MAX_PRECOPY_MS] = "max-precopy-ms", [VFMIG_P_TIMEOUT_MS] = "timeout-ms",
        [VFMIG_P_THREADS] = "threads", [VFMIG_P_CODEC] = "codec", [VFMIG_P_CODEC_LEVEL] = "codec-level",
        [VFMIG_P_MAX_BANDWIDTH] = "max-bandwidth", [VFMIG_P_DELTA_CACHE_BYTES] = "delta-cache",
        [VFMIG_P_BATCH_BYTES] = "batch", [VFMIG_P_THROTTLE] = "throttle", [VFMIG_P_VERIFY] = "verify",
        [VFMIG_P_NUMA_NODE] = "numa-node", [VFMIG_P_ENCRYPT] = "encrypt",
        [VFMIG_P_ON_BUDGET_MISS] = "on-budget-miss", [VFMIG_P_PROGRESS_MS] = "progress-ms",
    };
    return (int)p >= 1 && (int)p <= VFMIG_PARAM_MAX && names[p] ? names[p] : "?";
}

int vfmig__fail_soft(vfmig_session *s, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&s->lock);
    if (!s->failed)
        vsnprintf(s->err, sizeof(s->err), fmt, ap);
    pthread_mutex_unlock(&s->lock);
    va_end(ap);
    return status;
}

int vfmig__fail(vfmig_session *s, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record_error(s, false, status, fmt, ap);
    va_end(ap);
    return status;
}

void vfmig__refine_error(vfmig_session *s, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record_error(s, true, status, fmt, ap);
    va_end(ap);
}

unsigned vfmig__session_threads(const vfmig_session *s)
{
    if (s->params[VFMIG_P_THREADS])
        return (unsigned)s->params[VFMIG_P_THREADS];
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

bool vfmig__should_stop(vfmig_session *s)
{
    if (atomic_load(&s->failed))
        return true;
    if (atomic_load(&s->cancel_requested)) {
        vfmig__fail(s, VFMIG_ECANCELED, "migration canceled by the caller");
        return true;
    }
    return false;
}

void vfmig__log(vfmig_session *s, int level, const char *fmt, ...)
{
    if (!s->cb)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    vfmig_event ev = {.type = VFMIG_EV_LOG, .phase = s->stats.phase, .message = msg, .level = level};
    s->cb(&ev, s->cb_user);
}

void vfmig__set_phase(vfmig_session *s, vfmig_phase phase)
{
    pthread_mutex_lock(&s->lock);
    s->stats.phase = phase;
    pthread_mutex_unlock(&s->lock);
    if (s->cb) {
        vfmig_event ev = {.type = VFMIG_EV_PHASE, .phase = phase};
        s->cb(&ev, s->cb_user);
    }
}

void vfmig__add_round(vfmig_session *s, const vfmig_round_stats *r)
{
    pthread_mutex_lock(&s->lock);
    if (s->nrounds == s->rounds_cap) {
        uint32_t cap = s->rounds_cap ? s->rounds_cap * 2 : 16;
        vfmig_round_stats *n = realloc(s->rounds, cap * sizeof(*n));
        if (n) {
            s->rounds = n;
            s->rounds_cap = cap;
        }
    }
    if (s->nrounds < s->rounds_cap)
        s->rounds[s->nrounds++] = *r;
    vfmig_stats *st = &s->stats;
    st->bytes_raw += r->bytes_raw;
    st->bytes_wire += r->bytes_wire;
    st->pages_sent += r->dirty_pages;
    st->zero_pages += r->zero_pages;
    uint64_t in = 0, outb = 0;
    for (int c = 0; c < VFMIG_CODEC_COUNT; c++) {
        st->codec_in[c] += r->codec_in[c];
        st->codec_out[c] += r->codec_out[c];
        in += st->codec_in[c];
        outb += st->codec_out[c];
    }
    st->ratio = outb ? (double)in / (double)outb : 1.0;
    pthread_mutex_unlock(&s->lock);
    if (s->cb) {
        vfmig_event ev = {.type = VFMIG_EV_ROUND, .phase = s->stats.phase, .round = r};
        s->cb(&ev, s->cb_user);
    }
}

void vfmig_session_get_stats(const vfmig_session *s, vfmig_stats *out)
{
    if (!s || !out)
        return;
    pthread_mutex_lock((pthread_mutex_t *)&s->lock);
    *out = s->stats;
    pthread_mutex_unlock((pthread_mutex_t *)&s->lock);
}

/* A library-filled struct into the caller's `size` bytes: the fields it knows, zeros for those of
 * a newer header (unknown here). */
static void copy_sized(void *out, size_t size, const void *src, size_t src_size)
{
    memcpy(out, src, size < src_size ? size : src_size);
    if (size > src_size)
        memset((char *)out + src_size, 0, size - src_size);
}

int vfmig_session_get_stats_sized(const vfmig_session *s, vfmig_stats *out, size_t size)
{
    if (!s || !out || !size)
        return VFMIG_EINVAL;
    vfmig_stats st;
    vfmig_session_get_stats(s, &st);
    copy_sized(out, size, &st, sizeof(st));
    return VFMIG_OK;
}

int vfmig_session_get_round_sized(const vfmig_session *s, uint32_t index, vfmig_round_stats *out, size_t size)
{
    if (!out || !size)
        return VFMIG_EINVAL;
    vfmig_round_stats r;
    int rc = vfmig_session_get_round(s, index, &r);
    if (rc)
        return rc;
    copy_sized(out, size, &r, sizeof(r));
    return VFMIG_OK;
}

/* The engine still counts per codec id in the fixed slots; the query reads them in the codec
 * table's order, so callers need not know ids or how many slots there are. */
static int codec_stats(const uint64_t *in, const uint64_t *outb, unsigned index, vfmig_codec_stats *out, size_t size)
{
    const vfmig_codec_desc *d = vfmig__codec_desc_at(index);
    if (!d || !out || !size)
        return VFMIG_EINVAL;
    vfmig_codec_stats cs = {.codec = d->id, .name = d->name, .bytes_in = in[d->id], .bytes_out = outb[d->id]};
    copy_sized(out, size, &cs, sizeof(cs));
    return VFMIG_OK;
}

int vfmig_session_get_codec_stats(const vfmig_session *s, unsigned codec_index, vfmig_codec_stats *out,
                                  size_t out_size)
{
    if (!s)
        return VFMIG_EINVAL;
    vfmig_stats st;
    vfmig_session_get_stats(s, &st);
    return codec_stats(st.codec_in, st.codec_out, codec_index, out, out_size);
}

int vfmig_session_get_round_codec_stats(const vfmig_session *s, uint32_t round_index, unsigned codec_index,
                                        vfmig_codec_stats *out, size_t out_size)
{
    vfmig_round_stats r;
    int rc = vfmig_session_get_round(s, round_index, &r);
    if (rc)
        return rc;
    return codec_stats(r.codec_in, r.codec_out, codec_index, out, out_size);
}

uint32_t vfmig_session_round_count(const vfmig_session *s)
{
    if (!s)
        return 0;
    pthread_mutex_lock((pthread_mutex_t *)&s->lock);
    uint32_t n = s->nrounds;
    pthread_mutex_unlock((pthread_mutex_t *)&s->lock);
    return n;
}

int vfmig_session_get_round(const vfmig_session *s, uint32_t index, vfmig_round_stats *out)
{
    if (!s || !out)
        return VFMIG_EINVAL;
    int rc = VFMIG_EINVAL;
    pthread_mutex_lock((pthread_mutex_t *)&s->lock);
    if (index < s->nrounds) {
        *out = s->rounds[index];
        rc = VFMIG_OK;
    }
    pthread_mutex_unlock((pthread_mutex_t *)&s->lock);
    return rc;
}

const char *vfmig_session_last_error(const vfmig_session *s)
{
    return s ? s->err : "";
}

uint64_t vfmig__zero_page_hash(uint64_t page_size)
{
    /* Hashing zeros in slices keeps this off the heap for 2 MiB pages. */
    static const uint8_t zeros[4096];
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    for (uint64_t off = 0; off < page_size; off += sizeof(zeros))
        XXH3_64bits_update(&st, zeros, sizeof(zeros));
    return XXH3_64bits_digest(&st) & ~(1ull << 63); /* the XXH3 kind of engine/image.h */
}

int vfmig_session_run(vfmig_session *s, vfmig_link *link)
{
    if (!s || !link)
        return VFMIG_EINVAL;
    bool expected = false;
    if (!atomic_compare_exchange_strong(&s->ran, &expected, true))
        return VFMIG_ESTATE;
    s->page_hash = calloc(s->npages, sizeof(uint64_t));
    s->lin = malloc(sizeof(*s->lin));
    if (!s->page_hash || !s->lin)
        return vfmig__fail(s, VFMIG_ENOMEM, "out of memory for %llu page hashes",
                          (unsigned long long)s->npages);
    vfmig__lin_init(s->lin, (size_t)s->page_size);
    s->t_start_ns = vfmig__now_ns();
    pthread_mutex_lock(&s->lock);
    atomic_store(&s->link, link);
    pthread_mutex_unlock(&s->lock);
    vfmig__link_set_timeout(link, (int)s->params[VFMIG_P_TIMEOUT_MS]);
    if (atomic_load(&s->cancel_requested))
        vfmig__link_interrupt(link); /* canceled before run: nothing blocks */
    int rc = s->role == VFMIG_ROLE_SOURCE ? vfmig__source_run(s, link) : vfmig__target_run(s, link);
    pthread_mutex_lock(&s->lock);
    atomic_store(&s->link, NULL);
    s->stats.total_ns = vfmig__now_ns() - s->t_start_ns;
    s->stats.status = rc;
    if (rc && !s->failed) {
        s->status = rc;
        snprintf(s->err, sizeof(s->err), "%s", vfmig_strerror(rc));
    }
    pthread_mutex_unlock(&s->lock);
    vfmig__set_phase(s, rc ? VFMIG_PHASE_FAILED : VFMIG_PHASE_DONE);
    return rc;
}
