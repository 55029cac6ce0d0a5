/* tests/link_util.h - link tests' shared helpers: a connected pair of links over loopback, and
 * the driver that runs senders and receivers on every stream at once. */
#ifndef VFMIG_TESTS_LINK_UTIL_H
#define VFMIG_TESTS_LINK_UTIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "testutil.h"
#include "transport/link.h"

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct connect_args {
    char ep[128];
    int timeout_ms;
    vfmig_link *link;
    int status;
    char err[256];
    atomic_int done; /* set once connect returned */
} connect_args;

static inline void *connect_thread(void *p)
{
    connect_args *a = p;
    a->status = vfmig_connect(a->ep, a->timeout_ms, &a->link, a->err, sizeof(a->err));
    atomic_store(&a->done, 1);
    return NULL;
}

/* A connected pair over `host` (a loopback address) with n data streams: *a is the connector. */
static inline void make_pair_host(const char *host, unsigned n, vfmig_link **a, vfmig_link **b)
{
    char ep[128], err[256];
    vfmig_listener *L;
    snprintf(ep, sizeof(ep), "tcp://%s:0", host);
    int r = vfmig_listen(ep, &L, err, sizeof(err));
    if (r)
        T_FAIL("listen %s: %s (%s)", ep, vfmig_strerror(r), err);
    connect_args ca = {.timeout_ms = 5000};
    snprintf(ca.ep, sizeof(ca.ep), "tcp://%s:%d?streams=%u", host, vfmig_listener_port(L), n);
    pthread_t t;
    pthread_create(&t, NULL, connect_thread, &ca);
    r = vfmig_accept(L, 5000, b, err, sizeof(err));
    pthread_join(t, NULL);
    if (r)
        T_FAIL("accept: %s (%s)", vfmig_strerror(r), err);
    if (ca.status)
        T_FAIL("connect: %s (%s)", vfmig_strerror(ca.status), ca.err);
    *a = ca.link;
    ASSERT_EQ(vfmig_link_streams(*a), n);
    ASSERT_EQ(vfmig_link_streams(*b), n);
    vfmig_listener_close(L);
}

static inline void make_pair(unsigned n, vfmig_link **a, vfmig_link **b)
{
    make_pair_host("127.0.0.1", n, a, b);
}

/* One direction of one stream in a round-trip test. */
typedef struct xfer {
    vfmig_link *l;
    unsigned stream;
    uint64_t seed;
    int status;
} xfer;

/*
 * Round trip on a pair with n data streams, all at once: a -> b on every stream (control
 * included) and b -> a on control and stream 1. `send`/`recv` are the test's own thread bodies
 * (they take an xfer). Fails the test on any status.
 */
static inline void run_roundtrip(vfmig_link *a, vfmig_link *b, unsigned n, uint64_t seed, void *(*send)(void *),
                                 void *(*recv)(void *))
{
    enum { MAXX = 2 * (VFMIG_MAX_STREAMS + 1) };
    xfer xs[MAXX], xr[MAXX];
    pthread_t ts[MAXX], tr[MAXX];
    unsigned m = 0;
    for (unsigned s = 0; s <= n; s++, m++) {
        xs[m] = (xfer){.l = a, .stream = s, .seed = seed};
        xr[m] = (xfer){.l = b, .stream = s, .seed = seed};
    }
    for (unsigned s = 0; s <= 1; s++, m++) {
        xs[m] = (xfer){.l = b, .stream = s, .seed = seed + 77};
        xr[m] = (xfer){.l = a, .stream = s, .seed = seed + 77};
    }
    for (unsigned i = 0; i < m; i++) {
        pthread_create(&ts[i], NULL, send, &xs[i]);
        pthread_create(&tr[i], NULL, recv, &xr[i]);
    }
    for (unsigned i = 0; i < m; i++) {
        pthread_join(ts[i], NULL);
        pthread_join(tr[i], NULL);
        if (xs[i].status || xr[i].status)
            T_FAIL("streams=%u stream %u: send %d recv %d (%s / %s)", n, xs[i].stream, xs[i].status,
                   xr[i].status, vfmig__link_stream_error(xs[i].l, xs[i].stream),
                   vfmig__link_stream_error(xr[i].l, xr[i].stream));
    }
}

#endif
