/* engine/session.h - the session object shared by the source and target halves of the engine. */
#ifndef VFMIG_ENGINE_SESSION_H
#define VFMIG_ENGINE_SESSION_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "vfmig.h"
#include "common/clock.h"
#include "transport/link.h"
#include "transport/ratelimit.h"

#define VFMIG_PARAM_MAX 16

/* Every wait inside the engine is sliced so that a cancel or a failure on another thread is
 * noticed within this time, whatever is blocking. */
#define VFMIG_WAIT_SLICE_MS 50

struct vfmig_session {
    vfmig_role role;
    vfmig_device dev;
    vfmig_device_ops ops;         /* the embedder's table, copied; ops it is too old to have NULL */
    vfmig_range ranges[VFMIG_MAX_RANGES];
    uint64_t range_base[VFMIG_MAX_RANGES + 1]; /* first global page of each range; [n] = total */
    uint64_t npages;
    uint64_t page_size;
    unsigned page_shift;
    int64_t params[VFMIG_PARAM_MAX + 1];
    char pinning[128];
    uint8_t psk[256];
    size_t psk_len;
    uint8_t psk2[256];            /* a second key a target accepts during a rotation */
    size_t psk2_len;
    const void *preauth_hello;    /* vfmig_hello: a server already ran HELLO and authentication */
    /* Set by a server: asked for `bytes` of its memory budget before a target allocates the
     * mutable state (its size comes only with it); a status refuses it, `why` says so. */
    int (*reserve)(void *user, uint64_t bytes, char *why, size_t whylen);
    void *reserve_user;
    vfmig_event_cb cb;
    void *cb_user;

    _Atomic int cancel_requested;
    _Atomic int switch_requested; /* vfmig_session_switchover_now */
    _Atomic int failed;           /* set once by the first failure */
    atomic_bool ran;
    vfmig_link *_Atomic link;     /* during run, for cancel */

    pthread_mutex_t lock;         /* guards err, stats, rounds */
    int status;
    char err[512];
    vfmig_stats stats;
    vfmig_round_stats *rounds;
    uint32_t nrounds, rounds_cap;

    /* Progress: engine threads add bytes as they handle pages; the rest is under `lock`. */
    _Atomic uint64_t prog_done, prog_round_done;
    uint32_t prog_round;
    uint64_t prog_round_total, prog_pending;
    double prog_dirty_rate, prog_expected_ms;
    uint32_t prog_throttle;
    uint64_t prog_next_ns, prog_wire, prog_wire_ns; /* the session thread's, for events */

    uint64_t *page_hash;          /* hash of each page as last sent (source) / applied (target),
                                     of the kind engine/image.h describes */
    struct vfmig_lin *lin;        /* keys of the linear page hash (engine/image.h) */
    uint64_t t_start_ns;
};

/* vfmig__now_ns(): the monotonic clock in ns, kept by the transport (transport/ratelimit.h). */

/** Waits on cond for at most one wait slice (callers re-check their condition and should_stop). */
void vfmig__cond_wait_slice(pthread_cond_t *cond, pthread_mutex_t *mutex);
/** The same, ending at deadline_ns (monotonic) if that comes sooner than a slice. */
void vfmig__cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mutex, uint64_t deadline_ns);

/**
 * Receives one frame on the control stream (payload into buf) within the session timeout, or
 * with no deadline when `patient` (only failures and cancel end the wait). An ABORT from the
 * peer fails the session with its reason. `awaiting` and `peer` name what was waited for and
 * from whom, for the error message.
 */
int vfmig__recv_control(vfmig_session *s, vfmig_link *link, vfmig_frame *f, uint8_t *buf, size_t cap,
                       const char *awaiting, const char *peer, bool patient);
/** After a broken or silent link: looks briefly on the control stream for the peer's ABORT and,
 *  if there is one, makes it the recorded failure (the cause rather than the symptom). */
void vfmig__find_peer_abort(vfmig_session *s, vfmig_link *link, uint8_t *buf, size_t cap, const char *peer);
/** Sends a frame on a stream and flushes it; on failure records "sending WHAT: ..." and fails. */
int vfmig__send_flush(vfmig_session *s, vfmig_link *link, unsigned stream, const vfmig_frame *f,
                     const void *payload, const char *what);

/** Records the first failure (later ones are ignored) and returns `status`. Any thread. */
int vfmig__fail(vfmig_session *s, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/** A failed device op: records "device WHAT failed: STATUS: the device's reason" (its describe
 *  op, where it has one) and returns the status (VFMIG_EDEVICE for a positive rc). */
int vfmig__dev_fail(vfmig_session *s, int rc, const char *what);
/** A refused call's message for vfmig_session_last_error, without failing the session (setters). */
int vfmig__fail_soft(vfmig_session *s, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/** Replaces the recorded failure with a more precise one (e.g. "peer closed" turns out to be
 *  the peer's ABORT with its reason). */
void vfmig__refine_error(vfmig_session *s, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/** Workers for this session: VFMIG_P_THREADS, or one per online CPU when it is 0. */
unsigned vfmig__session_threads(const vfmig_session *s);
/** True once a failure was recorded or a cancel requested (then records ECANCELED). */
bool vfmig__should_stop(vfmig_session *s);
/** Sends a log event (only from the session's own thread). */
void vfmig__log(vfmig_session *s, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void vfmig__set_phase(vfmig_session *s, vfmig_phase phase);
/** Progress bookkeeping (engine/session.c): a round of `total` page bytes begins; engine threads
 *  handled `bytes` more (any thread); what the policy knows after a round; and, on the session
 *  thread's waits, a VFMIG_EV_PROGRESS when the interval is up. */
void vfmig__progress_round(vfmig_session *s, uint32_t round, uint64_t total);
static inline void vfmig_progress_add(vfmig_session *s, uint64_t bytes)
{
    atomic_fetch_add_explicit(&s->prog_done, bytes, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->prog_round_done, bytes, memory_order_relaxed);
}
void vfmig__progress_policy(vfmig_session *s, uint64_t pending, double dirty_rate, double expected_ms,
                           unsigned throttle);
void vfmig__progress_tick(vfmig_session *s);
/** A parameter that may change while running, read on the engine's threads. */
int64_t vfmig__param_now(vfmig_session *s, vfmig_param p);
/** Appends a round record and announces it. */
void vfmig__add_round(vfmig_session *s, const vfmig_round_stats *r);

/** Global page -> range index and segment offset. */
static inline uint32_t vfmig_page_range(const vfmig_session *s, uint64_t page)
{
    uint32_t r = 0;
    while (page >= s->range_base[r + 1])
        r++;
    return r;
}
static inline uint64_t vfmig_page_offset(const vfmig_session *s, uint32_t range, uint64_t page)
{
    return s->ranges[range].offset + ((page - s->range_base[range]) << s->page_shift);
}

/* XXH3-64 of one page of zeros of the session's page size. */
uint64_t vfmig__zero_page_hash(uint64_t page_size);

int vfmig__source_run(vfmig_session *s, vfmig_link *link);
int vfmig__target_run(vfmig_session *s, vfmig_link *link);

/* Worker pinning (engine/pin.c): binds the calling thread for worker `index` according to the
 * spec ("auto", "none", CPU list). "auto" uses the NUMA node of the device (device_node >= 0)
 * or else of the NIC carrying the link (nic: interface name, or NULL). bind returns the first
 * CPU of the binding or -1 if not pinned. */
typedef struct vfmig_pinner vfmig_pinner;
int vfmig__pinner_create(const char *spec, int device_node, const char *nic, vfmig_pinner **out, char *err,
                        size_t errlen);
int vfmig__pinner_bind(vfmig_pinner *p, unsigned index);
void vfmig__pinner_describe(const vfmig_pinner *p, char *buf, size_t len);
void vfmig__pinner_destroy(vfmig_pinner *p);

#endif
