/*
 * transport/tcp.c - links over TCP: one control connection plus N data connections.
 *
 * Binding streams to a link: the connector draws a random 64-bit cookie and opens the control
 * connection first, then the data connections. The first frame on every connection is a
 * VFMIG_F_STREAM frame {page = cookie, round = stream index (0 = control), npages = N data
 * streams, aux = wire version}. The listener groups connections by cookie; a connection whose
 * first frame is not a valid STREAM frame is closed at once, and unmatched ones expire. When the
 * group is complete the listener answers on control with a STREAM frame whose aux is 0, or a
 * negative status with a message as payload (e.g. too many streams); only then do both sides
 * return the link. The cookie is not authentication (the session handshake does that); it only
 * keeps concurrent connectors from mixing their streams.
 *
 * The listener faces whatever can reach its port, so nothing a stranger sends ends accept: a bad
 * first frame closes that connection, a refused control connection gets its reason and is closed,
 * and accept goes on. Each connection costs a fixed 40-byte slot until its first frame is in, and
 * must send it within the setup deadline (slow or silent connections are dropped); when the
 * tables are full the oldest entry makes room, so idle connections cannot lock real peers out
 * (a real connector sends its first frame at once). Link buffers are allocated when a stream is
 * first used, and small on the control stream, so an accepted but unauthenticated link holds
 * ~130 KiB, not 2 MiB per stream.
 *
 * Sockets are non-blocking; every wait is a poll() on the socket and the link's interrupt fd.
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/errqueue.h>

#include "transport/link_impl.h"

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif

/* 1 MiB stream buffers: the baseline shows 1 MiB writes near the loopback ceiling and 128 KiB
 * writes ~40% slower (machine-limits.md), so small frames are gathered to this size. */
#define SBUF_BYTES (1u << 20)
#define RBUF_BYTES (1u << 20)
/* Payloads at least this large skip the stream buffer and go out by sendmsg from the caller's
 * memory. bench_link (2 GiB of 64 KiB frames, 2 streams, same run): one sendmsg per 64 KiB frame
 * cost 0.82-0.85 CPU s/GB against 0.36-0.65 for copying into the 1 MiB buffer - on this
 * paravirtualized host a syscall costs more than copying 64 KiB - so only big payloads skip it. */
#define DEFAULT_COPY_THRESHOLD (128u << 10)
#define MAX_PENDING 256
/* A connection must send its STREAM frame, and a group must complete, within this. */
#define SETUP_DEADLINE_MS 3000
/* Control-stream buffers: control frames are small (blob chunks of 1 MiB take the direct paths),
 * and the control stream is the one an unauthenticated peer can make us use. */
#define CTL_BUF_BYTES (64u << 10)
/* Payload rests at least this large are read straight into the caller's buffer (plus what
 * follows into ours); smaller ones come through 1 MiB reads and a copy, for the same reason. */
#define DIRECT_READ_MIN (64u << 10)
/* Read size while payloads come in large: a header and a little more. */
#define SMALL_READ_BYTES (4u << 10)

typedef struct tcp_stream {
    int fd;
    uint8_t *sbuf;
    size_t sfill, scap;
    uint8_t *rbuf;
    size_t rpos, rend, rcap; /* buffers allocated on first use (sbuf_ready, rbuf_ready) */
    uint32_t zc_sent, zc_done; /* MSG_ZEROCOPY sends issued / completions seen */
    int corked;                /* bytes sent with MSG_MORE may wait in the kernel */
    int big;                   /* the last payload was read in place */
    uint64_t sfill_since_ns;   /* when the gathered bytes began (sfill went above 0) */
} tcp_stream;

typedef struct tcp_link {
    tcp_stream *st; /* nstreams + 1 */
    size_t copy_threshold;
    size_t direct_read_min;
    int zerocopy;
} tcp_link;

static tcp_stream *stream_of(vfmig_link *l, unsigned s)
{
    return &((tcp_link *)l->impl)->st[s];
}

/* A stream's buffers, allocated the first time each is used: the send buffer by the stream's
 * sending thread, the receive buffer by its receiving thread (the two may run at once). */
static int sbuf_ready(vfmig_link *l, unsigned s, tcp_stream *st)
{
    if (st->sbuf)
        return VFMIG_OK;
    size_t cap = s == 0 ? CTL_BUF_BYTES : SBUF_BYTES;
    if (!(st->sbuf = malloc(cap)))
        return vfmig__link_fail(l, s, VFMIG_ENOMEM, "out of memory for stream buffers");
    st->scap = cap;
    return VFMIG_OK;
}

static int rbuf_ready(vfmig_link *l, unsigned s, tcp_stream *st)
{
    if (st->rbuf)
        return VFMIG_OK;
    size_t cap = s == 0 ? CTL_BUF_BYTES : RBUF_BYTES;
    if (!(st->rbuf = malloc(cap)))
        return vfmig__link_fail(l, s, VFMIG_ENOMEM, "out of memory for stream buffers");
    st->rcap = cap;
    return VFMIG_OK;
}

static int link_timeout(vfmig_link *l)
{
    return atomic_load_explicit(&l->timeout_ms, memory_order_relaxed);
}

static int io_fail(vfmig_link *l, unsigned s, int e, const char *what)
{
    int st = vfmig__errno_status(e);
    if (st == VFMIG_ECLOSED)
        return vfmig__link_fail(l, s, st, "%s: %s", what, e == EPIPE ? "connection closed by peer"
                                                                    : "connection reset by peer");
    return vfmig__link_fail(l, s, st, "%s: %s", what, strerror(e));
}

/* Waits for MSG_ZEROCOPY completions until every send issued on the stream is done, so the
 * caller's payload is no longer referenced by the kernel. */
static int zc_reap(vfmig_link *l, unsigned s, tcp_stream *st)
{
    while (st->zc_done != st->zc_sent) {
        char ctrl[128];
        struct msghdr m = {.msg_control = ctrl, .msg_controllen = sizeof(ctrl)};
        ssize_t r = recvmsg(st->fd, &m, MSG_ERRQUEUE);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                int w = vfmig__link_wait(l, st->fd, 0, -1, link_timeout(l)); /* POLLERR is implied */
                if (w < 0)
                    return w == VFMIG_ETIMEDOUT ? vfmig__link_fail(l, s, w, "zero-copy completion timed out") : w;
                continue;
            }
            if (errno == EINTR)
                continue;
            return io_fail(l, s, errno, "zero-copy completion");
        }
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            struct sock_extended_err ee;
            memcpy(&ee, CMSG_DATA(c), sizeof(ee));
            if (ee.ee_origin == SO_EE_ORIGIN_ZEROCOPY)
                st->zc_done = ee.ee_data + 1; /* completions arrive as ranges [ee_info, ee_data] */
        }
    }
    return VFMIG_OK;
}

/* Writes all of iov, waiting (link timeout per stall) while the socket is full. */
static int write_all(vfmig_link *l, unsigned s, struct iovec *iov, int n, int flags)
{
    int zc = flags == MSG_ZEROCOPY;
    tcp_stream *st = stream_of(l, s);
    while (n > 0) {
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t r = sendmsg(st->fd, &m, MSG_NOSIGNAL | flags);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                int w = vfmig__link_wait(l, st->fd, POLLOUT, -1, link_timeout(l));
                if (w == VFMIG_ETIMEDOUT)
                    return vfmig__link_fail(l, s, w, "send stalled for %d ms (peer not reading)",
                                           link_timeout(l));
                if (w < 0)
                    return w;
                continue;
            }
            return io_fail(l, s, errno, "send");
        }
        if (zc)
            st->zc_sent++;
        size_t done = (size_t)r;
        while (n > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + done;
            iov->iov_len -= done;
        }
    }
    return zc ? zc_reap(l, s, st) : VFMIG_OK;
}

static int tcp_flush(vfmig_link *l, unsigned s)
{
    tcp_stream *st = stream_of(l, s);
    if (!st->sfill) {
        if (st->corked) {
            /* Nothing left to send without MSG_MORE: uncorking pushes what the kernel holds. */
            int zero = 0;
            st->corked = 0;
            setsockopt(st->fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof(zero));
        }
        return VFMIG_OK;
    }
    struct iovec iov = {st->sbuf, st->sfill};
    st->sfill = 0; /* on failure the stream is dead anyway */
    st->corked = 0; /* a send without MSG_MORE pushes everything queued before it */
    return write_all(l, s, &iov, 1, 0);
}

static int tcp_sendv(vfmig_link *l, unsigned s, const uint8_t hdr[VFMIG_FRAME_HDR_BYTES],
                     const struct iovec *payload, int niov, size_t len)
{
    tcp_link *t = l->impl;
    tcp_stream *st = &t->st[s];
    int br = sbuf_ready(l, s, st);
    if (br)
        return br;
    if (len < t->copy_threshold && VFMIG_FRAME_HDR_BYTES + len <= st->scap) {
        uint64_t now = vfmig__now_ns();
        if (st->sfill + VFMIG_FRAME_HDR_BYTES + len > st->scap ||
            (st->sfill && now - st->sfill_since_ns >= VFMIG_LINK_PUSH_NS)) {
            int r = tcp_flush(l, s);
            if (r)
                return r;
        }
        if (!st->sfill)
            st->sfill_since_ns = now;
        memcpy(st->sbuf + st->sfill, hdr, VFMIG_FRAME_HDR_BYTES);
        st->sfill += VFMIG_FRAME_HDR_BYTES;
        for (int i = 0; i < niov; i++) {
            memcpy(st->sbuf + st->sfill, payload[i].iov_base, payload[i].iov_len);
            st->sfill += payload[i].iov_len;
        }
        return VFMIG_OK;
    }
    /* Large payload: buffered bytes, header and payload in one sendmsg, no copy. */
    if (st->sfill + VFMIG_FRAME_HDR_BYTES > st->scap) {
        int r = tcp_flush(l, s);
        if (r)
            return r;
    }
    struct iovec iov[VFMIG_LINK_MAX_IOV + 1];
    int n = 0;
    size_t hoff = st->sfill;
    memcpy(st->sbuf + hoff, hdr, VFMIG_FRAME_HDR_BYTES); /* fits: flushed above otherwise */
    iov[n++] = (struct iovec){st->sbuf, st->sfill + VFMIG_FRAME_HDR_BYTES};
    for (int i = 0; i < niov; i++)
        iov[n++] = payload[i];
    st->sfill = 0;
    if (t->zerocopy && s > 0) {
        /* Only the payload goes zero-copy: small buffered bytes are cheaper to copy. */
        int r = write_all(l, s, iov, 1, 0);
        return r ? r : write_all(l, s, iov + 1, n - 1, MSG_ZEROCOPY);
    }
    /* MSG_MORE lets the kernel pack consecutive frames into full segments instead of pushing
     * each one (bench_link: fewer tcp_write_xmit calls); flush pushes the rest. */
    st->corked = 1;
    return write_all(l, s, iov, n, MSG_MORE);
}

static int tcp_send(vfmig_link *l, unsigned s, const uint8_t hdr[VFMIG_FRAME_HDR_BYTES],
                    const void *payload, size_t len)
{
    struct iovec iov = {(void *)payload, len};
    return tcp_sendv(l, s, hdr, &iov, len ? 1 : 0, len);
}

/* A keyed frame's tag after its payload: into the stream buffer (tcp_send left room or flushed). */
static int tcp_send_tail(vfmig_link *l, unsigned s, const void *tail, size_t n)
{
    tcp_stream *st = stream_of(l, s);
    int br = sbuf_ready(l, s, st);
    if (br)
        return br;
    if (st->sfill + n > st->scap) {
        int r = tcp_flush(l, s);
        if (r)
            return r;
    }
    memcpy(st->sbuf + st->sfill, tail, n);
    st->sfill += n;
    return VFMIG_OK;
}

static int tcp_read(vfmig_link *l, unsigned s, void *dst, size_t n, int first_ms, uint64_t *deadline)
{
    tcp_stream *st = stream_of(l, s);
    uint8_t *d = dst;
    size_t got = 0;
    int br = rbuf_ready(l, s, st);
    if (br)
        return br;
    while (got < n) {
        if (st->rpos < st->rend) {
            size_t c = st->rend - st->rpos;
            if (c > n - got)
                c = n - got;
            memcpy(d + got, st->rbuf + st->rpos, c);
            st->rpos += c;
            got += c;
            if (!*deadline)
                *deadline = vfmig__deadline(link_timeout(l));
            continue;
        }
        size_t rest = n - got;
        ssize_t r;
        if (rest >= ((tcp_link *)l->impl)->direct_read_min) {
            /* Large rest: straight into the caller's buffer (which may be VRAM), plus at most
             * the next frame's header into ours, in one call. Taking more would pull the next
             * payload into our buffer and cost a copy out of it. */
            struct iovec iov[2] = {{d + got, rest}, {st->rbuf, VFMIG_FRAME_HDR_BYTES}};
            struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
            r = recvmsg(st->fd, &m, 0);
            if (r > 0) {
                st->big = 1;
                if ((size_t)r <= rest) {
                    got += (size_t)r;
                } else {
                    got = n;
                    st->rpos = 0;
                    st->rend = (size_t)r - rest;
                }
            }
        } else {
            /* After a large payload the next one is likely large too: read a little, so that
             * its payload is read in place rather than through our buffer. Small frames are
             * gathered in reads of the whole buffer. */
            size_t want = st->big && st->rcap > SMALL_READ_BYTES ? SMALL_READ_BYTES : st->rcap;
            r = recv(st->fd, st->rbuf, want, 0);
            if (r > 0) {
                st->rpos = 0;
                st->rend = (size_t)r;
                if ((size_t)r == want && st->big)
                    st->big = 0; /* a full small read: small frames again */
            }
        }
        if (r > 0) {
            if (!*deadline)
                *deadline = vfmig__deadline(link_timeout(l));
            continue;
        }
        if (r == 0)
            return vfmig__link_fail(l, s, VFMIG_ECLOSED, "connection closed by peer%s",
                                   got || *deadline ? " in the middle of a frame" : "");
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return io_fail(l, s, errno, "receive");
        int started = got || *deadline;
        int w = vfmig__link_wait(l, st->fd, POLLIN, -1, started ? vfmig__ms_left(*deadline) : first_ms);
        if (w == VFMIG_ETIMEDOUT && started)
            return vfmig__link_fail(l, s, w, "rest of a frame did not arrive within %d ms", link_timeout(l));
        if (w < 0)
            return w;
    }
    return VFMIG_OK;
}

static void tcp_close(vfmig_link *l)
{
    tcp_link *t = l->impl;
    if (t) {
        for (unsigned i = 0; i <= l->nstreams; i++) {
            if (t->st[i].fd >= 0)
                close(t->st[i].fd);
            free(t->st[i].sbuf);
            free(t->st[i].rbuf);
        }
        free(t->st);
        free(t);
    }
    vfmig__link_free(l);
}

static int tcp_local_addr(vfmig_link *l, struct sockaddr_storage *ss);
static int tcp_peer_addr(vfmig_link *l, struct sockaddr_storage *ss);
static int tcp_control_readable(vfmig_link *l);
static void tcp_drain(vfmig_link *l, int ms);

static const vfmig_link_ops tcp_ops = {
    .name = "tcp",
    .send = tcp_send,
    .sendv = tcp_sendv,
    .flush = tcp_flush,
    .send_tail = tcp_send_tail,
    .read = tcp_read,
    .close = tcp_close,
    .local_addr = tcp_local_addr,
    .peer_addr = tcp_peer_addr,
    .control_readable = tcp_control_readable,
    .drain = tcp_drain,
};

/* Makes a link over fds[0..n] (taking them over, even on failure). */
static int tcp_link_make(int *fds, unsigned n, vfmig_link **out)
{
    vfmig_link *l;
    int r = vfmig__link_alloc(n, &l);
    tcp_link *t = NULL;
    if (r == VFMIG_OK) {
        t = calloc(1, sizeof(*t));
        if (t)
            t->st = calloc(n + 1, sizeof(*t->st));
        if (!t || !t->st) {
            free(t);
            vfmig__link_free(l);
            r = VFMIG_ENOMEM;
        }
    }
    if (r) {
        for (unsigned i = 0; i <= n; i++)
            close(fds[i]);
        return r;
    }
    l->ops = &tcp_ops;
    l->impl = t;
    t->copy_threshold = DEFAULT_COPY_THRESHOLD;
    t->direct_read_min = DIRECT_READ_MIN;
    for (unsigned i = 0; i <= n; i++)
        t->st[i].fd = fds[i];
    *out = l;
    return VFMIG_OK;
}

int vfmig__tcp_stream_fd(vfmig_link *l, unsigned s)
{
    if (!l || l->ops != &tcp_ops || s > l->nstreams)
        return -1;
    return stream_of(l, s)->fd;
}

static int tcp_local_addr(vfmig_link *l, struct sockaddr_storage *ss)
{
    socklen_t sl = sizeof(*ss);
    return getsockname(stream_of(l, 0)->fd, (struct sockaddr *)ss, &sl) ? VFMIG_ENOTSUP : VFMIG_OK;
}

static int tcp_peer_addr(vfmig_link *l, struct sockaddr_storage *ss)
{
    socklen_t sl = sizeof(*ss);
    return getpeername(stream_of(l, 0)->fd, (struct sockaddr *)ss, &sl) ? VFMIG_ENOTSUP : VFMIG_OK;
}

static void tcp_drain(vfmig_link *l, int ms)
{
    for (unsigned i = 0; i <= l->nstreams; i++)
        shutdown(stream_of(l, i)->fd, SHUT_WR);
    int fd = stream_of(l, 0)->fd;
    uint64_t deadline = vfmig__deadline(ms);
    char junk[4096];
    size_t left = 1u << 20; /* a peer that keeps sending does not keep us */
    while (left) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, vfmig__ms_left(deadline));
        if (pr <= 0)
            break;
        ssize_t n = recv(fd, junk, sizeof(junk), 0);
        if (n <= 0 && !(n < 0 && (errno == EINTR || errno == EAGAIN)))
            break; /* the peer closed (it read our word) or the connection is gone */
        if (n > 0)
            left = (size_t)n >= left ? 0 : left - (size_t)n;
    }
}

static int tcp_control_readable(vfmig_link *l)
{
    struct pollfd p = {.fd = stream_of(l, 0)->fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

void vfmig__tcp_set_tuning(vfmig_link *l, size_t copy_threshold, size_t direct_read_min, int zerocopy)
{
    if (!l || l->ops != &tcp_ops)
        return;
    tcp_link *t = l->impl;
    /* Frames that do not fit a stream's buffer take the direct path whatever the threshold. */
    t->copy_threshold = copy_threshold;
    t->direct_read_min = direct_read_min;
    t->zerocopy = 0;
    if (zerocopy) {
        int one = 1;
        t->zerocopy = 1;
        for (unsigned i = 1; i <= l->nstreams; i++)
            if (setsockopt(t->st[i].fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)))
                t->zerocopy = 0;
    }
}

/* ---------------- sockets ---------------- */

static void tune_socket(int fd)
{
    int one = 1;
    /* Control frames are small and latency-bound (blackout); data frames are flushed in large
     * writes, so Nagle only ever delays the last small frame of a round: off everywhere.
     * SO_SNDBUF/SO_RCVBUF are left to kernel autotuning: fixed 4 MiB buffers on the same
     * connections (bench_link --plain-sockbuf 4194304) measured within run-to-run noise of it on
     * loopback, and a fixed size would cap the window that autotuning grows on long-fat links. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int resolve(const vfmig_endpoint *ep, int passive, struct addrinfo **res, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = passive ? AI_PASSIVE : 0};
    char port[8];
    snprintf(port, sizeof(port), "%u", ep->port);
    int g = getaddrinfo(ep->host, port, &hints, res);
    if (g) {
        vfmig__seterr(err, errlen, "cannot resolve '%s': %s", ep->host, gai_strerror(g));
        return VFMIG_EADDR;
    }
    return VFMIG_OK;
}

/* Non-blocking connect within timeout_ms. Returns the fd or a negative status. */
static int connect_addr(const struct sockaddr *sa, socklen_t salen, int timeout_ms, int *err_no)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err_no = errno;
        return vfmig__errno_status(errno);
    }
    tune_socket(fd);
    if (connect(fd, sa, salen) == 0)
        return fd;
    if (errno != EINPROGRESS) {
        *err_no = errno;
        close(fd);
        return vfmig__errno_status(*err_no);
    }
    int w = vfmig__link_wait(NULL, fd, POLLOUT, -1, timeout_ms);
    if (w < 0) {
        *err_no = ETIMEDOUT;
        close(fd);
        return w;
    }
    int e = 0;
    socklen_t el = sizeof(e);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
    if (e) {
        *err_no = e;
        close(fd);
        return vfmig__errno_status(e);
    }
    return fd;
}

static void stream_frame(vfmig_frame *f, uint64_t cookie, uint32_t index, uint32_t n, uint64_t aux)
{
    memset(f, 0, sizeof(*f));
    f->type = VFMIG_F_STREAM;
    f->page = cookie;
    f->round = index;
    f->npages = n;
    f->aux = aux;
}

/* Writes a whole small frame on a fresh non-blocking socket (it fits in the empty send buffer). */
static int send_small(int fd, const vfmig_frame *f, const void *payload)
{
    uint8_t buf[VFMIG_FRAME_HDR_BYTES + 256];
    vfmig__frame_pack(f, payload, buf);
    /* Callers pass NULL with len 0; testing payload too keeps -O3's inlined memcpy(NULL) quiet. */
    if (payload && f->len)
        memcpy(buf + VFMIG_FRAME_HDR_BYTES, payload, f->len);
    size_t n = VFMIG_FRAME_HDR_BYTES + f->len;
    return send(fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

static int tcp_connect(const vfmig_endpoint *ep, int timeout_ms, vfmig_link **out, char *err, size_t errlen)
{
    uint64_t deadline = vfmig__deadline(timeout_ms);
    struct addrinfo *res;
    int r = resolve(ep, 0, &res, err, errlen);
    if (r)
        return r;
    int fds[VFMIG_MAX_STREAMS + 1];
    unsigned n = ep->streams, opened = 0;
    int st = VFMIG_ECONNREFUSED, e = ECONNREFUSED;
    struct addrinfo *ai;
    /* Every address of the name is tried; refusal is final (no retry), as tests and people
     * want to hear at once that nobody listens. */
    for (ai = res; ai; ai = ai->ai_next) {
        int fd = connect_addr(ai->ai_addr, ai->ai_addrlen, vfmig__ms_left(deadline), &e);
        if (fd >= 0) {
            fds[opened++] = fd;
            break;
        }
        st = fd;
        if (st == VFMIG_ETIMEDOUT)
            break;
    }
    if (!opened) {
        freeaddrinfo(res);
        vfmig__seterr(err, errlen, "connect to %s:%u: %s", ep->host, ep->port,
                     st == VFMIG_ETIMEDOUT ? "timed out" : strerror(e));
        return st;
    }
    uint64_t cookie;
    if (getrandom(&cookie, sizeof(cookie), 0) != sizeof(cookie))
        cookie = vfmig__now_ns() ^ ((uint64_t)getpid() << 32); /* only needs to differ between peers */
    vfmig_frame f;
    stream_frame(&f, cookie, 0, n, VFMIG_WIRE_VERSION);
    if (send_small(fds[0], &f, NULL)) {
        e = errno;
        goto fail_io;
    }
    for (unsigned i = 1; i <= n; i++) {
        int fd = connect_addr(ai->ai_addr, ai->ai_addrlen, vfmig__ms_left(deadline), &e);
        if (fd < 0) {
            st = fd;
            vfmig__seterr(err, errlen, "connect data stream %u of %u to %s:%u: %s", i, n, ep->host,
                         ep->port, fd == VFMIG_ETIMEDOUT ? "timed out" : strerror(e));
            goto fail;
        }
        fds[opened++] = fd;
        stream_frame(&f, cookie, i, n, VFMIG_WIRE_VERSION);
        if (send_small(fd, &f, NULL)) {
            e = errno;
            goto fail_io;
        }
    }
    freeaddrinfo(res);
    res = NULL;
    vfmig_link *l;
    r = tcp_link_make(fds, n, &l);
    if (r) {
        vfmig__seterr(err, errlen, "out of memory for link buffers");
        return r;
    }
    /* The listener's answer: accepted, or refused with a reason. */
    char msg[256];
    r = vfmig__link_recv(l, 0, &f, msg, sizeof(msg) - 1, vfmig__ms_left(deadline));
    if (r) {
        vfmig__seterr(err, errlen, "connect to %s:%u: no answer to stream setup: %s", ep->host,
                     ep->port, r == VFMIG_ETIMEDOUT ? "timed out" : vfmig__link_stream_error(l, 0));
        vfmig_link_close(l);
        return r;
    }
    if (f.type != VFMIG_F_STREAM || f.page != cookie) {
        vfmig__seterr(err, errlen, "connect to %s:%u: unexpected answer to stream setup (type %u)",
                     ep->host, ep->port, f.type);
        vfmig_link_close(l);
        return VFMIG_EPROTO;
    }
    if (f.aux) {
        msg[f.len] = 0;
        int64_t sv = (int64_t)f.aux;
        vfmig__seterr(err, errlen, "connect to %s:%u: refused by listener: %s", ep->host, ep->port, msg);
        vfmig_link_close(l);
        return sv < 0 && sv >= -1000 ? (int)sv : VFMIG_EPROTO;
    }
    *out = l;
    return VFMIG_OK;
fail_io:
    st = vfmig__errno_status(e);
    vfmig__seterr(err, errlen, "connect to %s:%u: stream setup: %s", ep->host, ep->port, strerror(e));
fail:
    for (unsigned i = 0; i < opened; i++)
        close(fds[i]);
    if (res)
        freeaddrinfo(res);
    return st;
}

/* ---------------- listener ---------------- */

typedef struct pending {
    int fd;
    uint8_t hdr[VFMIG_FRAME_HDR_BYTES];
    size_t got;
    uint64_t since_ns;
    int identified;    /* a data connection whose control connection is not here yet */
    vfmig_frame f;
} pending;

typedef struct group {
    uint64_t cookie;
    unsigned n, have;
    uint64_t since_ns;
    int fds[VFMIG_MAX_STREAMS + 1];
} group;

typedef struct vfmig_tcp_listener vfmig_tcp_listener;
struct vfmig_tcp_listener {
    int fd;
    int port;
    unsigned max_streams;
    pending p[MAX_PENDING];
    unsigned np;
    group *g[MAX_PENDING];
    unsigned ng;
};

static int tcp_listen(const vfmig_endpoint *ep, int explicit_streams, void **out, char *err, size_t errlen)
{
    struct addrinfo *res;
    int r = resolve(ep, 1, &res, err, errlen);
    if (r)
        return r;
    int fd = -1, e = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            e = errno;
            continue;
        }
        int one = 1;
        /* SO_REUSEADDR only skips TIME_WAIT leftovers; Linux still refuses a port that another
         * socket listens on (no SO_REUSEPORT), which gives VFMIG_EADDRINUSE. */
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        tune_socket(fd);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0)
            break;
        e = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        vfmig__seterr(err, errlen, "listen on %s:%u: %s", ep->host, ep->port, strerror(e));
        return vfmig__errno_status(e);
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    vfmig_tcp_listener *tl = calloc(1, sizeof(*tl));
    if (!tl) {
        close(fd);
        return VFMIG_ENOMEM;
    }
    tl->fd = fd;
    tl->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    /* Without ?streams= a listener takes whatever the connector asks for. */
    tl->max_streams = explicit_streams ? ep->streams : VFMIG_MAX_STREAMS;
    *out = tl;
    return VFMIG_OK;
}

static int tcp_listener_port(const void *listener)
{
    const vfmig_tcp_listener *tl = listener;
    return tl->port;
}

static void drop_pending(vfmig_tcp_listener *tl, unsigned i, int close_fd)
{
    if (close_fd)
        close(tl->p[i].fd);
    tl->p[i] = tl->p[--tl->np];
}

static void drop_group(vfmig_tcp_listener *tl, unsigned i)
{
    group *g = tl->g[i];
    for (unsigned k = 0; k <= g->n; k++)
        if (g->fds[k] >= 0)
            close(g->fds[k]);
    free(g);
    tl->g[i] = tl->g[--tl->ng];
}

static group *find_group(vfmig_tcp_listener *tl, uint64_t cookie)
{
    for (unsigned i = 0; i < tl->ng; i++)
        if (tl->g[i]->cookie == cookie)
            return tl->g[i];
    return NULL;
}

/* Places an identified data connection in its group. 1: placed, 0: no group yet, -1: bad. */
static int place(vfmig_tcp_listener *tl, pending *p)
{
    group *g = find_group(tl, p->f.page);
    if (!g)
        return 0;
    if (p->f.round < 1 || p->f.round > g->n || p->f.npages != g->n || g->fds[p->f.round] >= 0)
        return -1;
    g->fds[p->f.round] = p->fd;
    g->have++;
    return 1;
}

/* Makes room for one more pending connection: drops the oldest (a real connector sends its first
 * frame at once, so the oldest is the likeliest stranger). */
static void evict_oldest_pending(vfmig_tcp_listener *tl)
{
    unsigned old = 0;
    for (unsigned i = 1; i < tl->np; i++)
        if (tl->p[i].since_ns < tl->p[old].since_ns)
            old = i;
    if (tl->np)
        drop_pending(tl, old, 1);
}

static void evict_oldest_group(vfmig_tcp_listener *tl)
{
    unsigned old = 0;
    for (unsigned i = 1; i < tl->ng; i++)
        if (tl->g[i]->since_ns < tl->g[old]->since_ns)
            old = i;
    if (tl->ng)
        drop_group(tl, old);
}

/* Handles a connection whose first frame has arrived. Whatever it says, accept goes on: a bad
 * frame closes the connection, a refused control connection is told why and closed. */
static void classify(vfmig_tcp_listener *tl, unsigned i)
{
    pending *p = &tl->p[i];
    vfmig_frame f;
    if (vfmig__frame_unpack(p->hdr, 0, &f, NULL) || f.type != VFMIG_F_STREAM ||
        vfmig__frame_check(p->hdr, NULL, 0) || f.aux != VFMIG_WIRE_VERSION) {
        drop_pending(tl, i, 1); /* a stranger, or a peer speaking another version */
        return;
    }
    p->f = f;
    if (f.round == 0) {
        if (f.npages < 1 || f.npages > tl->max_streams || find_group(tl, f.page)) {
            vfmig_frame a;
            char msg[160];
            if (f.npages < 1 || f.npages > tl->max_streams)
                snprintf(msg, sizeof(msg), "peer asked for %u streams; this listener allows 1-%u", f.npages,
                         tl->max_streams);
            else
                snprintf(msg, sizeof(msg), "stream setup cookie already in use");
            int st = f.npages > tl->max_streams || f.npages < 1 ? VFMIG_EINVAL : VFMIG_EPROTO;
            stream_frame(&a, f.page, 0, 0, (uint64_t)(int64_t)st);
            a.len = (uint32_t)strlen(msg);
            send_small(p->fd, &a, msg);
            drop_pending(tl, i, 1);
            return;
        }
        if (tl->ng == MAX_PENDING)
            evict_oldest_group(tl);
        group *g = calloc(1, sizeof(*g));
        if (!g) {
            drop_pending(tl, i, 1);
            return;
        }
        g->cookie = f.page;
        g->n = f.npages;
        g->since_ns = p->since_ns;
        for (unsigned k = 0; k <= g->n; k++)
            g->fds[k] = -1;
        g->fds[0] = p->fd;
        tl->g[tl->ng++] = g;
        drop_pending(tl, i, 0);
        /* Data connections that raced ahead of their control connection. */
        for (unsigned k = 0; k < tl->np;) {
            if (tl->p[k].identified) {
                int pl = place(tl, &tl->p[k]);
                if (pl) {
                    drop_pending(tl, k, pl < 0);
                    continue;
                }
            }
            k++;
        }
        return;
    }
    int pl = place(tl, p);
    if (pl)
        drop_pending(tl, i, pl < 0);
    else
        p->identified = 1;
}

static int tcp_accept(void *listener, int timeout_ms, vfmig_link **out, char *err, size_t errlen)
{
    vfmig_tcp_listener *tl = listener;
    uint64_t deadline = vfmig__deadline(timeout_ms);
    struct pollfd pf[MAX_PENDING + 1];
    for (;;) {
        /* A complete group is a link. */
        for (unsigned i = 0; i < tl->ng; i++) {
            group *g = tl->g[i];
            if (g->have < g->n)
                continue;
            vfmig_frame a;
            stream_frame(&a, g->cookie, 0, g->n, 0);
            int fds[VFMIG_MAX_STREAMS + 1];
            unsigned n = g->n;
            memcpy(fds, g->fds, sizeof(int) * (n + 1));
            int ok = send_small(fds[0], &a, NULL) == 0;
            for (unsigned k = 0; k <= n; k++)
                g->fds[k] = -1;
            drop_group(tl, i);
            if (!ok) {
                for (unsigned k = 0; k <= n; k++)
                    close(fds[k]);
                continue;
            }
            int r = tcp_link_make(fds, n, out);
            if (r)
                vfmig__seterr(err, errlen, "out of memory for link buffers");
            return r;
        }
        /* Expire connections and groups that did not finish stream setup in time: slow or
         * silent peers hold a slot for at most the setup deadline. */
        uint64_t now = vfmig__now_ns();
        uint64_t stale = (uint64_t)SETUP_DEADLINE_MS * 1000000ull;
        uint64_t next = 0; /* earliest expiry, to wake for it */
        for (unsigned i = 0; i < tl->np;)
            if (now - tl->p[i].since_ns > stale) {
                drop_pending(tl, i, 1);
            } else {
                if (!next || tl->p[i].since_ns + stale < next)
                    next = tl->p[i].since_ns + stale;
                i++;
            }
        for (unsigned i = 0; i < tl->ng;)
            if (now - tl->g[i]->since_ns > stale) {
                drop_group(tl, i);
            } else {
                if (!next || tl->g[i]->since_ns + stale < next)
                    next = tl->g[i]->since_ns + stale;
                i++;
            }

        unsigned n = 0;
        pf[n++] = (struct pollfd){.fd = tl->fd, .events = POLLIN};
        for (unsigned i = 0; i < tl->np; i++)
            pf[n++] = (struct pollfd){.fd = tl->p[i].identified ? -1 : tl->p[i].fd, .events = POLLIN};
        int left = vfmig__ms_left(deadline);
        int wake = next ? vfmig__ms_left(next + 1000000ull) : -1;
        int pr = poll(pf, n, left < 0 || (wake >= 0 && wake < left) ? wake : left);
        if (pr < 0 && errno != EINTR) {
            vfmig__seterr(err, errlen, "accept: poll: %s", strerror(errno));
            return VFMIG_EIO;
        }
        if (pr == 0 && vfmig__ms_left(deadline) == 0) {
            vfmig__seterr(err, errlen, "accept: no complete connection within %d ms", timeout_ms);
            return VFMIG_ETIMEDOUT;
        }
        if (pr <= 0)
            continue;
        /* Read first frames (pending indices shift as entries drop: walk backwards). */
        for (unsigned i = n - 1; i >= 1; i--) {
            if (!pf[i].revents || i - 1 >= tl->np)
                continue; /* classify() may have reordered the list: a stale index only costs an EAGAIN */
            pending *p = &tl->p[i - 1];
            ssize_t got = recv(p->fd, p->hdr + p->got, sizeof(p->hdr) - p->got, 0);
            if (got <= 0) {
                if (got < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                drop_pending(tl, i - 1, 1);
                continue;
            }
            p->got += (size_t)got;
            if (p->got == sizeof(p->hdr))
                classify(tl, i - 1);
        }
        if (pf[0].revents) {
            /* Drain the backlog; a full table makes room by dropping its oldest entry. */
            for (int k = 0; k < 64; k++) {
                int fd = accept4(tl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0)
                    break;
                if (tl->np == MAX_PENDING)
                    evict_oldest_pending(tl);
                tune_socket(fd);
                tl->p[tl->np++] = (pending){.fd = fd, .since_ns = vfmig__now_ns()};
            }
        }
    }
}

static void tcp_listener_close(void *listener)
{
    vfmig_tcp_listener *tl = listener;
    if (!tl)
        return;
    while (tl->np)
        drop_pending(tl, 0, 1);
    while (tl->ng)
        drop_group(tl, 0);
    close(tl->fd);
    free(tl);
}

/* ---------------- links from the embedder's connections ---------------- */

int vfmig__tcp_link_from_fds(const int *fds, unsigned n, vfmig_link **out, char *err, size_t errlen)
{
    int own[VFMIG_MAX_STREAMS + 1];
    for (unsigned i = 0; i <= n; i++) {
        int type = 0;
        socklen_t tl = sizeof(type);
        int fl = fcntl(fds[i], F_GETFL);
        if (fl < 0 || getsockopt(fds[i], SOL_SOCKET, SO_TYPE, &type, &tl) || type != SOCK_STREAM) {
            vfmig__seterr(err, errlen, "connection %u (fd %d) is not a connected stream socket", i, fds[i]);
            return VFMIG_EINVAL;
        }
        own[i] = fds[i];
    }
    for (unsigned i = 0; i <= n; i++) {
        /* Every wait is a poll(): the sockets must not block. */
        fcntl(own[i], F_SETFL, fcntl(own[i], F_GETFL) | O_NONBLOCK);
        fcntl(own[i], F_SETFD, FD_CLOEXEC);
        tune_socket(own[i]); /* TCP_NODELAY; harmless on other stream sockets (vsock, unix) */
    }
    int r = tcp_link_make(own, n, out);
    if (r)
        vfmig__seterr(err, errlen, "out of memory for link buffers");
    return r;
}

static const vfmig_link_scheme tcp_scheme = {
    .name = "tcp",
    .count_opt = "streams",
    .listen = tcp_listen,
    .listener_port = tcp_listener_port,
    .accept = tcp_accept,
    .listener_close = tcp_listener_close,
    .connect = tcp_connect,
    .from_fds = vfmig__tcp_link_from_fds,
};

const vfmig_link_scheme *vfmig__tcp_scheme(void)
{
    return &tcp_scheme;
}
