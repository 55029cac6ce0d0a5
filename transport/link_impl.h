/*
 * transport/link_impl.h - private: the link object shared by the TCP and RDMA back-ends.
 *
 * link.c owns everything that does not depend on the medium: argument checks, framing and
 * checksums, frame encryption (aead.c), the bandwidth cap, counters, interruption and per-stream
 * error messages. A back-end supplies a byte pipe per stream through vfmig_link_ops:
 *   send  - header + payload of one frame (may buffer; must not keep `payload` after return)
 *   sendv - the same with a gathered payload (optional: without it link.c gathers into a
 *           per-stream scratch buffer and calls send)
 *   flush - push out what send buffered
 *   read  - exactly n bytes; waits first_ms for the first byte, then until *deadline_ns
 *           (set by the back-end when the first byte arrives, if it was 0) for the rest
 *   close - free everything
 * plus optional questions about the medium (addresses, control bytes waiting). How links of a
 * kind are made (listen, accept, connect, from fds) is the kind's vfmig_link_scheme, one table
 * per back-end that link.c and the endpoint parser look up by kind or name.
 * Stream 0 is control; 1..nstreams carry data.
 */
#ifndef VFMIG_TRANSPORT_LINK_IMPL_H
#define VFMIG_TRANSPORT_LINK_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/clock.h" /* deadlines: absolute monotonic ns, 0 = none */
#include "transport/link.h"
#include "transport/ratelimit.h"

#define VFMIG_LINK_ERRLEN 160
#define VFMIG_LINK_DEFAULT_TIMEOUT_MS 10000
/* Small frames gathered into a stream buffer (TCP) or chunk (RDMA) wait at most this long for it to
 * fill: a pass of small frames (deltas of a hot set: 10-20 bytes a page) would otherwise reach the
 * peer only at the round's flush, and in the blackout the target would apply nothing while the
 * source encodes (measured: the two ends ran one after the other). Long enough that a stream of
 * compressed frames (~1 GB/s a core) still writes near-full buffers; a lag this short behind the
 * source is all the overlap needs. */
#define VFMIG_LINK_PUSH_NS 500000u

typedef struct vfmig_link_ops {
    const char *name;
    int (*send)(vfmig_link *l, unsigned s, const uint8_t hdr[VFMIG_FRAME_HDR_BYTES],
                const void *payload, size_t len);
    int (*sendv)(vfmig_link *l, unsigned s, const uint8_t hdr[VFMIG_FRAME_HDR_BYTES],
                 const struct iovec *iov, int niov, size_t len);
    int (*flush)(vfmig_link *l, unsigned s);
    /* Optional: appends n raw bytes to the frame just sent (keyed frames' tag), so the payload
     * needs no copy; without it link.c copies payload and tag into one piece. */
    int (*send_tail)(vfmig_link *l, unsigned s, const void *tail, size_t n);
    int (*read)(vfmig_link *l, unsigned s, void *dst, size_t n, int first_ms, uint64_t *deadline_ns);
    void (*close)(vfmig_link *l);
    /* Optional questions about the medium (NULL: cannot be told, VFMIG_ENOTSUP / 0). */
    /* This end's and the peer's address of the control connection. */
    int (*local_addr)(vfmig_link *l, struct sockaddr_storage *ss);
    int (*peer_addr)(vfmig_link *l, struct sockaddr_storage *ss);
    /* 1 if bytes the peer sent on the control stream wait to be read; any thread. */
    int (*control_readable)(vfmig_link *l);
    /* Ends sending and reads the peer's leftovers until it closes or ms pass, so that a last
     * word already sent is not lost to a reset (closing with unread bytes resets). */
    void (*drain)(vfmig_link *l, int ms);
} vfmig_link_ops;

/*
 * One endpoint scheme (tcp://, rdma://): how links of that kind are made. A NULL entry is an
 * operation the scheme does not have; link.c then answers VFMIG_ENOTSUP with `missing` (or a
 * generic message). Listener handles are the back-end's own, opaque to link.c.
 */
typedef struct vfmig_link_scheme {
    const char *name;      /* as written in endpoints, before "://" */
    const char *count_opt; /* the endpoint option giving the stream count ("streams", "qps") */
    const char *missing;   /* why operations are absent (a build without the medium), or NULL */
    int (*listen)(const vfmig_endpoint *ep, int explicit_streams, void **listener, char *err, size_t errlen);
    int (*listener_port)(const void *listener);
    int (*accept)(void *listener, int timeout_ms, vfmig_link **out, char *err, size_t errlen);
    void (*listener_close)(void *listener);
    int (*connect)(const vfmig_endpoint *ep, int timeout_ms, vfmig_link **out, char *err, size_t errlen);
    /* fds[0] control, fds[1..n] data: connections the embedder made, taken over. */
    int (*from_fds)(const int *fds, unsigned n, vfmig_link **out, char *err, size_t errlen);
} vfmig_link_scheme;

/** The scheme of an endpoint kind (VFMIG_LINK_*), or NULL for an unknown kind. */
const vfmig_link_scheme *vfmig__link_scheme(int kind);
/** The kind whose scheme is named name[0..len) (no "://"), or 0. */
int vfmig__link_scheme_kind(const char *name, size_t len);

struct vfmig_link {
    const vfmig_link_ops *ops;
    unsigned nstreams;          /* data streams */
    atomic_int timeout_ms;
    atomic_size_t max_payload;
    atomic_uint_fast64_t bytes_sent;
    atomic_int interrupted;
    int intr_fd;                /* eventfd, written once by vfmig__link_interrupt: stays readable */
    vfmig_ratelimit rl;
    pthread_mutex_t err_lock;   /* a stream's send and recv threads may both record errors */
    char (*errs)[VFMIG_LINK_ERRLEN]; /* nstreams + 1 entries */
    /* Frame encryption (vfmig__link_enable_aead), NULL while off. Set once, while no stream is in
     * use; the engine's own synchronization orders it before the I/O threads read it. */
    struct vfmig_aead *aead;
    uint8_t **gather;           /* per stream: scratch for sendv on back-ends without it */
    size_t *gather_cap;
    void *impl;                 /* back-end state */
};

/* link.c */
/** Allocates the common part; the back-end then sets ops and impl. */
int vfmig__link_alloc(unsigned nstreams, vfmig_link **out);
/** Frees the common part (after the back-end freed its own). */
void vfmig__link_free(vfmig_link *l);
/** Records "stream N: <message>" and returns status. */
int vfmig__link_fail(vfmig_link *l, unsigned s, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/** errno -> status, as documented for links. */
int vfmig__errno_status(int e);
/**
 * Waits for `events` on fd (and, if fd2 >= 0, POLLIN on fd2) or the interrupt, up to
 * timeout_ms (<0 forever). Returns 1 (fd ready), 2 (fd2 ready), VFMIG_ETIMEDOUT,
 * VFMIG_ECANCELED or VFMIG_EIO.
 */
int vfmig__link_wait(vfmig_link *l, int fd, short events, int fd2, int timeout_ms);

/* endpoint.c */
void vfmig__seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/** As vfmig__endpoint_parse; *explicit_streams says whether ?streams=/?qps= was given. */
int vfmig__endpoint_parse_ex(const char *s, vfmig_endpoint *ep, int *explicit_streams, char *err,
                            size_t errlen);

/* tcp.c */
/* Functions, not exported data: data symbols of a library are ABI (and sanitizers decorate them). */
const vfmig_link_scheme *vfmig__tcp_scheme(void);
/** A link over connections the embedder made (fds[0] control, fds[1..n] data), taken over. */
int vfmig__tcp_link_from_fds(const int *fds, unsigned n, vfmig_link **out, char *err, size_t errlen);
/** Test hook: the socket of a stream (to break it on purpose). -1 if not TCP. */
int vfmig__tcp_stream_fd(vfmig_link *l, unsigned s);
/** Tuning knobs (measured in bench_link): payloads of at least copy_threshold bytes go out by
 *  sendmsg from the caller's memory instead of through the stream buffer; payload rests of at
 *  least direct_read_min bytes are read straight into the caller's buffer; MSG_ZEROCOPY on data
 *  streams (off by default: slower on loopback). Call before the first send/recv. */
void vfmig__tcp_set_tuning(vfmig_link *l, size_t copy_threshold, size_t direct_read_min, int zerocopy);

/* rdma.c, or rdma_none.c in a build without verbs */
const vfmig_link_scheme *vfmig__rdma_scheme(void);

#endif
