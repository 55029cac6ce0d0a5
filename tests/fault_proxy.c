/*
 * tests/fault_proxy.c - the fault-injecting loopback proxy (see fault_proxy.h).
 *
 * One acceptor thread; one thread per proxied connection that polls both sockets and moves
 * bytes both ways. Each direction keeps an input buffer (bytes read, not yet a whole frame) and
 * an output buffer (frames decided, not yet written). Reading stops while the output is backed
 * up or a frame is held, so memory stays bounded and the sender feels TCP backpressure, as it
 * would behind a slow link.
 */
#define _GNU_SOURCE /* accept4 */
#include "fault_proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "transport/wire.h"
#include "vfmig.h"

#define FP_MAX_CONNS 80
#define FP_POLL_MS 20
#define FP_READ_CHUNK (256u << 10)
#define FP_OUT_HIGH (2u << 20) /* stop reading a direction while this much waits to be written */
#define FP_CONNECT_MS 2000

enum { HOLD_NONE, HOLD_REORDER, HOLD_DELAY };

typedef struct fp_dir {
    uint8_t *in;
    size_t in_pos, in_len, in_cap; /* unparsed bytes are in[in_pos, in_len) */
    uint8_t *out;
    size_t out_pos, out_len, out_cap;
    uint8_t *held;
    size_t held_len;
    int hold;
    uint64_t held_until;
    bool eof;         /* the sending end closed */
    bool shut;        /* the close was passed on (shutdown SHUT_WR) */
    bool raw;         /* not frames (should not happen): forward bytes untouched */
} fp_dir;

typedef struct fp_conn {
    struct fault_proxy *p;
    pthread_t thread;
    int fd[2];        /* [0] the source's connection, [1] ours to the target */
    int stream;       /* from the STREAM frame; -1 until seen */
    bool close_after; /* truncate: close both sides once the output is written */
    fp_dir d[2];      /* d[FP_TO_TARGET] reads fd[0] writes fd[1]; d[FP_TO_SOURCE] the reverse */
} fp_conn;

struct fault_proxy {
    fp_config cfg;
    int lfd;
    int port;
    uint64_t t_end;
    pthread_t acceptor;
    atomic_bool stop;
    atomic_bool silent;
    pthread_mutex_t lock; /* guards everything below */
    fp_conn *conns[FP_MAX_CONNS];
    unsigned nconns;
    unsigned matched;
    int fired;
    char hit[192];
    uint64_t frames[2];
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

const char *fp_action_name(fp_action a)
{
    static const char *const names[] = {"none", "truncate", "flip", "dup", "reorder", "delay", "drop", "silent"};
    return (unsigned)a < sizeof(names) / sizeof(names[0]) ? names[a] : "?";
}

static const char *type_name(unsigned t)
{
    static const char *const names[] = {"?", "HELLO", "HELLO_ACK", "IMMUTABLE", "IMM_ACK", "PAGES",
                                        "ROUND_END", "MUTABLE", "COMMIT", "VERDICT", "GO", "ABORT",
                                        "STREAM", "AUTH", "ROUND_ACK"};
    return t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

static bool finished(struct fault_proxy *p)
{
    return atomic_load(&p->stop) || now_ns() > p->t_end;
}

/* Grows a buffer to hold at least `need` bytes. */
static int reserve(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 64 << 10;
    while (n < need)
        n *= 2;
    uint8_t *b = realloc(*buf, n);
    if (!b)
        return -1;
    *buf = b;
    *cap = n;
    return 0;
}

static int out_append(fp_dir *d, const uint8_t *b, size_t n)
{
    if (d->out_pos == d->out_len)
        d->out_pos = d->out_len = 0;
    if (reserve(&d->out, &d->out_cap, d->out_len + n))
        return -1;
    memcpy(d->out + d->out_len, b, n);
    d->out_len += n;
    return 0;
}

static int hold(fp_dir *d, const uint8_t *b, size_t n, int kind, uint32_t delay_ms)
{
    d->held = malloc(n);
    if (!d->held)
        return -1;
    memcpy(d->held, b, n);
    d->held_len = n;
    d->hold = kind;
    d->held_until = now_ns() + (uint64_t)delay_ms * 1000000ull;
    return 0;
}

static int release(fp_dir *d)
{
    int rc = out_append(d, d->held, d->held_len);
    free(d->held);
    d->held = NULL;
    d->held_len = 0;
    d->hold = HOLD_NONE;
    return rc;
}

/* Is this frame the one to break? Counts matches under the proxy lock. */
static fp_action decide(fp_conn *c, int dir, const vfmig_frame *f)
{
    struct fault_proxy *p = c->p;
    const fp_match *m = &p->cfg.match;
    fp_action a = FP_NONE;
    pthread_mutex_lock(&p->lock);
    p->frames[dir]++;
    bool stream_ok = m->stream == FP_ANY || (m->stream == FP_DATA ? c->stream >= 1 : c->stream == m->stream);
    if (!p->fired && m->dir == dir && stream_ok && (m->type == FP_ANY || m->type == f->type) &&
        (m->round_min == FP_ANY || (int64_t)f->round >= m->round_min) &&
        (m->round_max == FP_ANY || (int64_t)f->round <= m->round_max) &&
        ++p->matched >= (m->nth ? m->nth : 1)) {
        p->fired = 1;
        a = p->cfg.action;
        snprintf(p->hit, sizeof(p->hit), "%s %s on stream %d to the %s: round %u, page %llu+%u, %u bytes",
                 fp_action_name(a), type_name(f->type), c->stream, dir == FP_TO_TARGET ? "target" : "source",
                 f->round, (unsigned long long)f->page, f->npages, f->len);
    }
    pthread_mutex_unlock(&p->lock);
    return a;
}

/* One whole frame (header + payload, `n` bytes) read in direction `dir`. */
static int on_frame(fp_conn *c, int dir, uint8_t *fr, size_t n, const vfmig_frame *f)
{
    struct fault_proxy *p = c->p;
    fp_dir *d = &c->d[dir];
    if (dir == FP_TO_TARGET && c->stream < 0 && f->type == VFMIG_F_STREAM)
        c->stream = (int)f->round;
    fp_action a = decide(c, dir, f);
    int rc = 0;
    switch (a) {
    case FP_NONE:
        rc = out_append(d, fr, n);
        if (!rc && d->hold == HOLD_REORDER)
            rc = release(d); /* the frame held back goes out after this one */
        break;
    case FP_TRUNCATE: {
        size_t keep = p->cfg.truncate_at < n ? p->cfg.truncate_at : n - 1;
        rc = out_append(d, fr, keep);
        c->close_after = true;
        break;
    }
    case FP_FLIP: {
        size_t at = p->cfg.flip_byte >= 0 ? (size_t)p->cfg.flip_byte
                    : n > VFMIG_FRAME_HDR_BYTES ? VFMIG_FRAME_HDR_BYTES + (n - VFMIG_FRAME_HDR_BYTES) / 2
                                                : 16;
        if (at >= n)
            at = n - 1;
        fr[at] ^= p->cfg.flip_mask ? p->cfg.flip_mask : 1;
        rc = out_append(d, fr, n);
        break;
    }
    case FP_DUP:
        rc = out_append(d, fr, n);
        if (!rc)
            rc = out_append(d, fr, n);
        break;
    case FP_REORDER:
        rc = hold(d, fr, n, HOLD_REORDER, 0);
        break;
    case FP_DELAY:
        rc = hold(d, fr, n, HOLD_DELAY, p->cfg.delay_ms);
        break;
    case FP_DROP:
        break;
    case FP_SILENT:
        atomic_store(&p->silent, true);
        break;
    }
    return rc;
}

/* Turns the bytes read in direction `dir` into frames, as far as they go. */
static int parse(fp_conn *c, int dir)
{
    fp_dir *d = &c->d[dir];
    while (d->hold != HOLD_DELAY && !c->close_after && !atomic_load(&c->p->silent)) {
        size_t avail = d->in_len - d->in_pos;
        uint8_t *b = d->in + d->in_pos;
        if (d->raw) {
            if (avail && out_append(d, b, avail))
                return -1;
            d->in_pos = d->in_len;
            break;
        }
        if (avail < VFMIG_FRAME_HDR_BYTES)
            break;
        vfmig_frame f;
        if (vfmig__frame_unpack(b, VFMIG_FRAME_MAX_PAYLOAD, &f, NULL)) {
            d->raw = true; /* not a frame: stop interpreting, keep forwarding */
            continue;
        }
        size_t n = VFMIG_FRAME_HDR_BYTES + f.len;
        if (avail < n)
            break;
        if (on_frame(c, dir, b, n, &f))
            return -1;
        d->in_pos += n;
    }
    if (d->in_pos == d->in_len)
        d->in_pos = d->in_len = 0;
    return 0;
}

/* Bytes the direction still needs before it can parse its next frame. */
static size_t in_want(const fp_dir *d)
{
    size_t avail = d->in_len - d->in_pos;
    size_t want = FP_READ_CHUNK;
    if (!d->raw && avail >= VFMIG_FRAME_HDR_BYTES) {
        size_t n = VFMIG_FRAME_HDR_BYTES + vfmig_get_u32(d->in + d->in_pos + 4);
        if (n > want)
            want = n;
    }
    return avail >= want ? 0 : want - avail;
}

static bool wants_read(const fp_conn *c, const fp_dir *d)
{
    return !d->eof && d->hold != HOLD_DELAY && !c->close_after && d->out_len - d->out_pos < FP_OUT_HIGH &&
           in_want(d) > 0;
}

static int do_read(fp_conn *c, int dir)
{
    fp_dir *d = &c->d[dir];
    size_t want = in_want(d);
    if (d->in_pos && d->in_cap - d->in_len < want) { /* compact before growing */
        memmove(d->in, d->in + d->in_pos, d->in_len - d->in_pos);
        d->in_len -= d->in_pos;
        d->in_pos = 0;
    }
    if (reserve(&d->in, &d->in_cap, d->in_len + want))
        return -1;
    ssize_t r = recv(c->fd[dir], d->in + d->in_len, want, 0);
    if (r < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (r == 0) {
        d->eof = true;
        /* A partial frame left at the close goes out as it is: the peer sees the same cut. */
        if (d->in_len > d->in_pos)
            d->raw = true;
    } else {
        d->in_len += (size_t)r;
    }
    if (parse(c, dir))
        return -1;
    if (d->eof && d->hold == HOLD_REORDER)
        return release(d);
    return 0;
}

static int do_write(fp_conn *c, int dir)
{
    fp_dir *d = &c->d[dir];
    ssize_t r = send(c->fd[1 - dir], d->out + d->out_pos, d->out_len - d->out_pos, MSG_NOSIGNAL);
    if (r < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    d->out_pos += (size_t)r;
    if (d->out_pos == d->out_len)
        d->out_pos = d->out_len = 0;
    return 0;
}

static void *conn_main(void *arg)
{
    fp_conn *c = arg;
    struct fault_proxy *p = c->p;
    while (!finished(p)) {
        if (atomic_load(&p->silent)) {
            poll(NULL, 0, FP_POLL_MS); /* sockets stay open, nothing moves */
            continue;
        }
        for (int k = 0; k < 2; k++) {
            fp_dir *d = &c->d[k];
            if (d->hold == HOLD_DELAY && now_ns() >= d->held_until) {
                if (release(d) || parse(c, k))
                    goto out;
            }
            /* Pass a close on once everything before it is written. */
            if (d->eof && !d->shut && d->hold == HOLD_NONE && d->in_pos == d->in_len &&
                d->out_pos == d->out_len) {
                shutdown(c->fd[1 - k], SHUT_WR);
                d->shut = true;
            }
        }
        if (c->close_after && c->d[0].out_pos == c->d[0].out_len && c->d[1].out_pos == c->d[1].out_len)
            break; /* truncated: both sides are closed below */
        if (c->d[0].shut && c->d[1].shut)
            break;
        struct pollfd pf[2];
        for (int s = 0; s < 2; s++) {
            /* fd[s] is read for direction s and written for direction 1 - s. */
            pf[s].fd = c->fd[s];
            pf[s].events = (short)((wants_read(c, &c->d[s]) ? POLLIN : 0) |
                                   (c->d[1 - s].out_pos < c->d[1 - s].out_len ? POLLOUT : 0));
            pf[s].revents = 0;
        }
        int n = poll(pf, 2, FP_POLL_MS);
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0)
            continue;
        bool fail = false, acted = false;
        for (int s = 0; s < 2 && !fail; s++) {
            if ((pf[s].revents & (POLLIN | POLLHUP | POLLERR)) && wants_read(c, &c->d[s])) {
                fail = do_read(c, s) != 0;
                acted = true;
            }
            if (!fail && (pf[s].revents & (POLLOUT | POLLERR)) && c->d[1 - s].out_pos < c->d[1 - s].out_len) {
                fail = do_write(c, 1 - s) != 0;
                acted = true;
            }
        }
        if (fail)
            break; /* a reset or a write to a closed peer: this connection is over */
        if (!acted)
            poll(NULL, 0, FP_POLL_MS); /* POLLHUP on a socket we are not reading (frame held): no spin */
    }
out:
    /* Closing both sides is what the peers see of a truncation or of the proxy going away. */
    for (int s = 0; s < 2; s++) {
        shutdown(c->fd[s], SHUT_RDWR);
        close(c->fd[s]);
        c->fd[s] = -1;
    }
    return NULL;
}

static int connect_target(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        return fd;
    if (errno == EINPROGRESS) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        int e = 0;
        socklen_t el = sizeof(e);
        if (poll(&pf, 1, FP_CONNECT_MS) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e == 0)
            return fd;
    }
    close(fd);
    return -1;
}

static void *accept_main(void *arg)
{
    struct fault_proxy *p = arg;
    while (!finished(p)) {
        struct pollfd pf = {.fd = p->lfd, .events = POLLIN};
        if (poll(&pf, 1, FP_POLL_MS) <= 0)
            continue;
        int fd = accept4(p->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        int tfd = connect_target(p->cfg.target_port);
        fp_conn *c = tfd >= 0 ? calloc(1, sizeof(*c)) : NULL;
        pthread_mutex_lock(&p->lock);
        bool room = p->nconns < FP_MAX_CONNS;
        pthread_mutex_unlock(&p->lock);
        if (!c || !room) {
            free(c);
            close(fd);
            if (tfd >= 0)
                close(tfd);
            continue; /* the source sees a refused stream: not a silent hang */
        }
        c->p = p;
        c->fd[0] = fd;
        c->fd[1] = tfd;
        c->stream = -1;
        if (pthread_create(&c->thread, NULL, conn_main, c)) {
            close(fd);
            close(tfd);
            free(c);
            continue;
        }
        pthread_mutex_lock(&p->lock);
        p->conns[p->nconns++] = c;
        pthread_mutex_unlock(&p->lock);
    }
    return NULL;
}

int fault_proxy_start(const fp_config *cfg, fault_proxy **out)
{
    *out = NULL;
    struct fault_proxy *p = calloc(1, sizeof(*p));
    if (!p)
        return -1;
    p->cfg = *cfg;
    p->t_end = now_ns() + (uint64_t)(cfg->max_life_ms ? cfg->max_life_ms : 60000) * 1000000ull;
    pthread_mutex_init(&p->lock, NULL);
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(p->lfd, 128) ||
        getsockname(p->lfd, (struct sockaddr *)&sa, &sl) ||
        pthread_create(&p->acceptor, NULL, accept_main, p)) {
        int e = errno;
        if (p->lfd >= 0)
            close(p->lfd);
        pthread_mutex_destroy(&p->lock);
        free(p);
        errno = e;
        return -1;
    }
    p->port = ntohs(sa.sin_port);
    *out = p;
    return 0;
}

int fault_proxy_port(const fault_proxy *p)
{
    return p->port;
}

void fault_proxy_report(fault_proxy *p, fp_report *r)
{
    pthread_mutex_lock(&p->lock);
    r->fired = p->fired;
    snprintf(r->hit, sizeof(r->hit), "%s", p->fired ? p->hit : "(no frame matched)");
    r->connections = p->nconns;
    r->frames[0] = p->frames[0];
    r->frames[1] = p->frames[1];
    pthread_mutex_unlock(&p->lock);
}

void fault_proxy_stop(fault_proxy *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, true);
    pthread_join(p->acceptor, NULL);
    for (unsigned i = 0; i < p->nconns; i++) {
        fp_conn *c = p->conns[i];
        pthread_join(c->thread, NULL);
        for (int k = 0; k < 2; k++) {
            free(c->d[k].in);
            free(c->d[k].out);
            free(c->d[k].held);
        }
        free(c);
    }
    close(p->lfd);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
