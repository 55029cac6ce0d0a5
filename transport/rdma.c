/*
 * transport/rdma.c - links over RDMA (librdmacm + libibverbs): one RC QP per stream, control
 * included, all in one protection domain.
 *
 * Why SEND/RECV with credits and not RDMA WRITE with immediate: frames are a byte stream of
 * variable-length records, and the engine reads them into its own buffers. With SEND/RECV the
 * receiver owns placement (a ring of pre-posted, pre-registered buffers), message boundaries
 * come for free, and no remote addresses or rkeys ever cross the wire. WRITE-with-immediate
 * would save the receive-side copy only if the engine's buffers were registered and advertised
 * to the peer per frame - a round trip, or a shared ring protocol - for a gain that matters above
 * ~10 GB/s per QP; the copy out of a received chunk runs at memcpy speed (~14 GB/s).
 * Credits (rdma_core.h) keep every SEND matched by a posted RECV, so RNR never happens.
 *
 * Frames are cut into chunks of RCHUNK bytes: small frames are gathered into one chunk (like the
 * TCP stream buffer), large ones span several. Registration happens once per stream at setup;
 * the hot path only copies into registered buffers. (A zero-copy path for registered device
 * memory existed and was removed: nothing in the engine could hand it device memory, and the
 * copy costs little next to the wire - see docs/benchmarks.md, "RDMA under soft-RoCE".)
 *
 * Threads: a stream's sender and receiver share its CQ under the stream's lock. Whoever polls
 * the CQ handles every completion and wakes the other through an eventfd, since only one of them
 * can consume a completion-channel event. Waits poll the channel fd, that eventfd, the link's
 * RDMA CM event channel and the link's interrupt fd.
 *
 * Connection events: the link reads its CM event channel for its whole life (whichever waiting
 * thread sees it readable, under ec_lock), so a peer that disconnects or dies (the kernel sends
 * the disconnect request for a dead process) and a removed device end waits at once rather than
 * after a QP retry timeout or the link timeout. A disconnect is reported on a stream only once
 * its completion queue is drained: what the peer sent before leaving is still read.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "transport/link_impl.h"
#include "transport/rdma_core.h"

#define RCHUNK (128u << 10)  /* bytes per SEND and per receive buffer */
#define RWINDOW 16u          /* data receive buffers per QP */
#define RCTRL 4u             /* receive buffers for credit-only messages */
#define RSEND 16u            /* send staging buffers per QP */
#define RNRECV (RWINDOW + RCTRL)
#define RSEND_WR (RSEND + RCTRL + 4)
#define RCQ_DEPTH (RSEND_WR + RNRECV)
#define RMAGIC 0x52474d56u   /* "VMGR" */
#define RCLOSE_DRAIN_MS 2000 /* close waits this long at most for posted sends to complete */

/* wr_id tags: send staging buffer index, receive buffer, credit-only message. */
#define WR_RECV (1ull << 32)
#define WR_CREDIT (2ull << 32)
#define WR_TAG(w) ((w) & ~0xffffffffull)

enum { ROLE_SEND = 0, ROLE_RECV = 1 };

typedef struct rstream {
    struct rdma_cm_id *id;
    struct ibv_comp_channel *ch;
    struct ibv_cq *cq;
    struct ibv_mr *mr;
    uint8_t *mem;             /* RSEND staging buffers, then RNRECV receive buffers */
    vfmig_bufpool sendpool;
    vfmig_bufpool recvview;   /* addressing of the receive buffers for the rx queue */
    vfmig_rxq rxq;
    vfmig_credits cr;
    pthread_mutex_t lock;
    int wake[2];              /* eventfds: wake a waiting sender / receiver */
    int64_t open_buf;         /* staging buffer being filled, or -1 */
    size_t open_fill;
    uint64_t open_since_ns;   /* when the open chunk was taken */
    uint32_t sends_out;       /* SENDs posted, not completed (close waits for them) */
    int err;                  /* sticky: after a failed completion the QP is in error state */
    int ready;                /* all resources made (teardown checks it) */
    _Atomic int cm_event;     /* 0, or the CM event that ended this QP's connection, + 1 */
} rstream;

typedef struct rdma_link {
    struct rdma_event_channel *ec; /* the link's own (set for its whole life), non-blocking */
    pthread_mutex_t ec_lock;  /* one reader of ec at a time; taken inside a stream lock, never
                                 while taking one */
    struct ibv_pd *pd;
    struct ibv_context *verbs;
    rstream *st;              /* nstreams + 1 */
} rdma_link;

/* Connection request / reply private data, little-endian: fits the 56 bytes RC allows. */
#define PRIV_BYTES 32
static void priv_pack(uint8_t *p, uint64_t cookie, uint32_t index, uint32_t n, int32_t status)
{
    vfmig_put_u32(p, RMAGIC);
    vfmig_put_u32(p + 4, VFMIG_WIRE_VERSION);
    vfmig_put_u64(p + 8, cookie);
    vfmig_put_u32(p + 16, index);
    vfmig_put_u32(p + 20, n);
    vfmig_put_u32(p + 24, RCHUNK);
    vfmig_put_u32(p + 28, (uint32_t)status);
}

static int no_device(char *err, size_t errlen)
{
    int n = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    if (list)
        ibv_free_device_list(list);
    if (!list || n == 0) {
        vfmig__seterr(err, errlen, "no RDMA device found (ibv_get_device_list returned none)");
        return 1;
    }
    return 0;
}

static int wc_status(enum ibv_wc_status s)
{
    switch (s) {
    case IBV_WC_WR_FLUSH_ERR:    /* QP went to error: the connection is gone */
    case IBV_WC_RETRY_EXC_ERR:   /* peer unreachable / dead */
    case IBV_WC_RNR_RETRY_EXC_ERR:
        return VFMIG_ECLOSED;
    default:
        return VFMIG_EIO;
    }
}

/* ---------------- data path ---------------- */

static uint8_t *send_addr(rstream *st, uint32_t i)
{
    return st->mem + (size_t)i * RCHUNK;
}

static int post_recv(rstream *st, uint32_t k)
{
    struct ibv_sge sge = {.addr = (uintptr_t)vfmig_bufpool_addr(&st->recvview, k), .length = RCHUNK,
                          .lkey = st->mr->lkey};
    struct ibv_recv_wr wr = {.wr_id = WR_RECV | k, .sg_list = &sge, .num_sge = 1}, *bad;
    return ibv_post_recv(st->id->qp, &wr, &bad);
}

static int post_send(vfmig_link *l, unsigned s, rstream *st, struct ibv_sge *sge, int nsge,
                     uint64_t wr_id, int credit_only)
{
    struct ibv_send_wr wr = {.wr_id = wr_id, .sg_list = sge, .num_sge = nsge,
                             .opcode = IBV_WR_SEND_WITH_IMM, .send_flags = IBV_SEND_SIGNALED},
                       *bad;
    wr.imm_data = htonl(vfmig__credits_imm(&st->cr, credit_only));
    int e = ibv_post_send(st->id->qp, &wr, &bad);
    if (e)
        return st->err = vfmig__link_fail(l, s, VFMIG_EIO, "ibv_post_send: %s", strerror(e));
    st->sends_out++;
    return VFMIG_OK;
}

static void release_recv(void *arg, uint32_t k)
{
    rstream *st = arg;
    if (post_recv(st, k) == 0)
        vfmig__credits_reposted(&st->cr, 0);
    else if (!st->err)
        st->err = VFMIG_EIO; /* the QP is in error (the peer left): the next call reports it */
}

static const char *cm_event_what(int ev)
{
    return ev == RDMA_CM_EVENT_DEVICE_REMOVAL ? "the RDMA device was removed"
                                              : "the peer disconnected";
}

/* Reads every pending event of the link's CM channel and marks the QPs they end: a
 * disconnect (peer closed or died) ends its QP, a device removal all of them. Wakes the
 * waiters of the marked QPs. Any thread; takes ec_lock only. */
static void cm_poll(rdma_link *rl, unsigned nstreams)
{
    if (!rl->ec || pthread_mutex_trylock(&rl->ec_lock))
        return; /* someone else is reading it */
    struct rdma_cm_event *ev;
    while (rdma_get_cm_event(rl->ec, &ev) == 0) {
        int t = ev->event;
        struct rdma_cm_id *id = ev->id;
        rdma_ack_cm_event(ev);
        if (t != RDMA_CM_EVENT_DISCONNECTED && t != RDMA_CM_EVENT_DEVICE_REMOVAL)
            continue; /* TIMEWAIT_EXIT and the like: nothing ends */
        for (unsigned k = 0; k <= nstreams; k++) {
            rstream *st = &rl->st[k];
            if (t == RDMA_CM_EVENT_DISCONNECTED && st->id != id)
                continue;
            int none = 0;
            atomic_compare_exchange_strong(&st->cm_event, &none, t + 1);
            uint64_t one = 1;
            ssize_t w = write(st->wake[ROLE_SEND], &one, 8);
            w = write(st->wake[ROLE_RECV], &one, 8);
            (void)w;
        }
    }
    pthread_mutex_unlock(&rl->ec_lock);
}

/* Handles every completion there is. Returns how many, or a negative status. Lock held. */
static int progress(vfmig_link *l, unsigned s, rstream *st)
{
    struct ibv_wc wc[32];
    int total = 0, n;
    while ((n = ibv_poll_cq(st->cq, 32, wc)) > 0) {
        for (int i = 0; i < n; i++) {
            uint64_t tag = WR_TAG(wc[i].wr_id);
            if (wc[i].status != IBV_WC_SUCCESS) {
                if (tag != WR_RECV)
                    st->sends_out--;
                if (!st->err)
                    st->err = vfmig__link_fail(l, s, wc_status(wc[i].status), "%s completion failed: %s",
                                              tag == WR_RECV ? "receive" : "send",
                                              ibv_wc_status_str(wc[i].status));
                continue;
            }
            if (tag == WR_RECV) {
                uint32_t k = (uint32_t)wc[i].wr_id;
                int kind = (wc[i].wc_flags & IBV_WC_WITH_IMM)
                               ? vfmig__credits_on_recv(&st->cr, ntohl(wc[i].imm_data)) : -1;
                if (kind < 0) {
                    st->err = vfmig__link_fail(l, s, VFMIG_EPROTO, "peer broke the credit protocol");
                } else if (kind == 1) {
                    if (post_recv(st, k) == 0)
                        vfmig__credits_reposted(&st->cr, 1);
                } else if (vfmig__rxq_push(&st->rxq, k, wc[i].byte_len)) {
                    st->err = vfmig__link_fail(l, s, VFMIG_EPROTO, "receive queue overrun");
                }
            } else {
                st->sends_out--;
                if (tag == 0)
                    vfmig__bufpool_put(&st->sendpool, (uint32_t)wc[i].wr_id);
            }
        }
        total += n;
    }
    if (n < 0 && !st->err)
        st->err = vfmig__link_fail(l, s, VFMIG_EIO, "ibv_poll_cq failed");
    int cm = atomic_load(&st->cm_event);
    if (cm && !total && !st->err) /* only once what arrived before it is drained */
        st->err = vfmig__link_fail(l, s, cm - 1 == RDMA_CM_EVENT_DEVICE_REMOVAL ? VFMIG_EIO : VFMIG_ECLOSED,
                                  "%s (%s)", cm_event_what(cm - 1), rdma_event_str(cm - 1));
    if (total) {
        uint64_t one = 1;
        ssize_t w = write(st->wake[ROLE_SEND], &one, 8);
        w = write(st->wake[ROLE_RECV], &one, 8);
        (void)w;
    }
    return st->err ? st->err : total;
}

/* Sends credits back if due (credit-only message, no payload). Lock held. */
static int maybe_credit_update(vfmig_link *l, unsigned s, rstream *st, int blocked)
{
    if (!vfmig__credits_want_update(&st->cr, blocked) || !vfmig__credits_take_ctrl(&st->cr))
        return VFMIG_OK;
    return post_send(l, s, st, NULL, 0, WR_CREDIT, 1);
}

/* Sleeps until a completion or a wake for `role`, up to timeout_ms. Lock held on entry and exit
 * (released while sleeping). Returns OK (re-check), or ETIMEDOUT / ECANCELED / EIO. */
static int rwait(vfmig_link *l, unsigned s, rstream *st, int role, int timeout_ms)
{
    if (ibv_req_notify_cq(st->cq, 0))
        return st->err = vfmig__link_fail(l, s, VFMIG_EIO, "ibv_req_notify_cq failed");
    int p = progress(l, s, st); /* completions that raced with arming the notification */
    if (p != 0)
        return p < 0 ? p : VFMIG_OK;
    rdma_link *rl = l->impl;
    struct pollfd pf[4] = {{.fd = st->ch->fd, .events = POLLIN},
                           {.fd = st->wake[role], .events = POLLIN},
                           {.fd = rl->ec ? rl->ec->fd : -1, .events = POLLIN},
                           {.fd = l->intr_fd, .events = POLLIN}};
    pthread_mutex_unlock(&st->lock);
    int w;
    do
        w = poll(pf, 4, timeout_ms);
    while (w < 0 && errno == EINTR); /* callers re-arm with the time left */
    pthread_mutex_lock(&st->lock);
    if (w < 0)
        return VFMIG_EIO;
    if (w == 0)
        return VFMIG_ETIMEDOUT;
    if (pf[3].revents)
        return VFMIG_ECANCELED;
    if (pf[0].revents) {
        struct ibv_cq *cq;
        void *ctx;
        if (ibv_get_cq_event(st->ch, &cq, &ctx) == 0) /* non-blocking fd: the other may have it */
            ibv_ack_cq_events(cq, 1);
    }
    if (pf[1].revents) {
        uint64_t v;
        ssize_t r = read(st->wake[role], &v, 8);
        (void)r;
    }
    if (pf[2].revents)
        cm_poll(rl, l->nstreams);
    return VFMIG_OK;
}

static int wait_fail(vfmig_link *l, unsigned s, int r, const char *what)
{
    if (r == VFMIG_ETIMEDOUT)
        return vfmig__link_fail(l, s, r, "%s for %d ms", what, atomic_load(&l->timeout_ms));
    return r;
}

/* Posts the open staging buffer as one SEND, waiting for a data credit. Lock held. */
static int post_open(vfmig_link *l, unsigned s, rstream *st)
{
    while (!vfmig__credits_take_data(&st->cr)) {
        int r = maybe_credit_update(l, s, st, 1);
        if (!r)
            r = rwait(l, s, st, ROLE_SEND, atomic_load(&l->timeout_ms));
        if (r)
            return wait_fail(l, s, r, "no send credit from the peer");
    }
    struct ibv_sge sge = {.addr = (uintptr_t)send_addr(st, (uint32_t)st->open_buf),
                          .length = (uint32_t)st->open_fill, .lkey = st->mr->lkey};
    int r = post_send(l, s, st, &sge, 1, (uint64_t)st->open_buf, 0);
    st->open_buf = -1;
    st->open_fill = 0;
    return r;
}

/* Appends bytes to the chunk stream through staging buffers. Lock held. */
static int append(vfmig_link *l, unsigned s, rstream *st, const uint8_t *p, size_t n)
{
    while (n) {
        if (st->open_buf < 0) {
            int64_t b;
            while ((b = vfmig__bufpool_get(&st->sendpool)) < 0) {
                int r = rwait(l, s, st, ROLE_SEND, atomic_load(&l->timeout_ms));
                if (r)
                    return wait_fail(l, s, r, "no send buffer completed");
            }
            st->open_buf = b;
            st->open_fill = 0;
            st->open_since_ns = vfmig__now_ns();
        }
        size_t c = RCHUNK - st->open_fill;
        if (c > n)
            c = n;
        memcpy(send_addr(st, (uint32_t)st->open_buf) + st->open_fill, p, c);
        st->open_fill += c;
        p += c;
        n -= c;
        if (st->open_fill == RCHUNK) {
            int r = post_open(l, s, st);
            if (r)
                return r;
        }
    }
    return VFMIG_OK;
}

static int rdma_send_frame(vfmig_link *l, unsigned s, const uint8_t hdr[VFMIG_FRAME_HDR_BYTES],
                           const void *payload, size_t len)
{
    rdma_link *rl = l->impl;
    rstream *st = &rl->st[s];
    pthread_mutex_lock(&st->lock);
    int r = st->err ? st->err : progress(l, s, st);
    if (r > 0)
        r = VFMIG_OK;
    if (!r && st->open_buf >= 0 && st->open_fill && vfmig__now_ns() - st->open_since_ns >= VFMIG_LINK_PUSH_NS)
        r = post_open(l, s, st); /* gathered long enough: the peer gets to work on it */
    if (!r)
        r = append(l, s, st, hdr, VFMIG_FRAME_HDR_BYTES);
    if (!r)
        r = append(l, s, st, payload, len);
    pthread_mutex_unlock(&st->lock);
    return r;
}

/* A keyed frame's tag: appended to the same send ring as its frame, so the payload is copied once
 * (into the registered buffer) and never gathered with its tag first. */
static int rdma_send_tail(vfmig_link *l, unsigned s, const void *tail, size_t n)
{
    rdma_link *rl = l->impl;
    rstream *st = &rl->st[s];
    pthread_mutex_lock(&st->lock);
    int r = st->err ? st->err : append(l, s, st, tail, n);
    pthread_mutex_unlock(&st->lock);
    return r;
}

static int rdma_flush(vfmig_link *l, unsigned s)
{
    rstream *st = &((rdma_link *)l->impl)->st[s];
    pthread_mutex_lock(&st->lock);
    int r = st->err;
    if (!r && st->open_buf >= 0 && st->open_fill)
        r = post_open(l, s, st);
    pthread_mutex_unlock(&st->lock);
    return r;
}

static int rdma_read(vfmig_link *l, unsigned s, void *dst, size_t n, int first_ms, uint64_t *deadline)
{
    rstream *st = &((rdma_link *)l->impl)->st[s];
    uint8_t *d = dst;
    size_t got = 0;
    int r = VFMIG_OK;
    pthread_mutex_lock(&st->lock);
    while (got < n) {
        int p = progress(l, s, st);
        size_t c = vfmig__rxq_read(&st->rxq, &st->recvview, d + got, n - got, release_recv, st);
        if (c) {
            got += c;
            if (!*deadline)
                *deadline = vfmig__deadline(atomic_load(&l->timeout_ms));
            if ((r = maybe_credit_update(l, s, st, 0)))
                break;
            continue;
        }
        if (p < 0) {
            r = p;
            break;
        }
        int started = got || *deadline;
        r = rwait(l, s, st, ROLE_RECV, started ? vfmig__ms_left(*deadline) : first_ms);
        if (r) {
            if (started)
                r = wait_fail(l, s, r, "rest of a frame did not arrive");
            break;
        }
    }
    pthread_mutex_unlock(&st->lock);
    return r;
}

/* ---------------- setup and teardown ---------------- */

/* Releases one stream's resources in exact reverse order of stream_setup. */
static void stream_teardown(rstream *st)
{
    if (st->ready) {
        close(st->wake[1]);
        close(st->wake[0]);
        vfmig__rxq_destroy(&st->rxq);
        vfmig__bufpool_destroy(&st->recvview);
        vfmig__bufpool_destroy(&st->sendpool);
        pthread_mutex_destroy(&st->lock);
        rdma_destroy_qp(st->id);
        ibv_dereg_mr(st->mr);
        free(st->mem);
        ibv_destroy_cq(st->cq);
        ibv_destroy_comp_channel(st->ch);
        st->ready = 0;
    }
    if (st->id) {
        rdma_destroy_id(st->id);
        st->id = NULL;
    }
}

static int stream_setup(rstream *st, struct rdma_cm_id *id, struct ibv_pd *pd, char *err, size_t errlen)
{
    int st_code = VFMIG_EIO;
    const char *what;
    size_t bytes = (size_t)(RSEND + RNRECV) * RCHUNK;
    st->id = id;
    st->open_buf = -1;
    what = "ibv_create_comp_channel";
    st->ch = ibv_create_comp_channel(id->verbs);
    if (!st->ch)
        goto err;
    fcntl(st->ch->fd, F_SETFL, fcntl(st->ch->fd, F_GETFL) | O_NONBLOCK);
    what = "ibv_create_cq";
    st->cq = ibv_create_cq(id->verbs, (int)RCQ_DEPTH, st, st->ch, 0);
    if (!st->cq)
        goto err_ch;
    what = "buffer allocation";
    st->mem = aligned_alloc(4096, bytes);
    if (!st->mem) {
        st_code = VFMIG_ENOMEM;
        goto err_cq;
    }
    what = "ibv_reg_mr";
    st->mr = ibv_reg_mr(pd, st->mem, bytes, IBV_ACCESS_LOCAL_WRITE);
    if (!st->mr)
        goto err_mem;
    struct ibv_qp_init_attr qa = {
        .send_cq = st->cq, .recv_cq = st->cq, .qp_type = IBV_QPT_RC,
        .cap = {.max_send_wr = RSEND_WR, .max_recv_wr = RNRECV, .max_send_sge = 1, .max_recv_sge = 1},
    };
    what = "rdma_create_qp";
    if (rdma_create_qp(id, pd, &qa))
        goto err_mr;
    what = "bookkeeping";
    if (pthread_mutex_init(&st->lock, NULL))
        goto err_qp;
    if (vfmig__bufpool_init(&st->sendpool, st->mem, RCHUNK, RSEND))
        goto err_lock;
    if (vfmig__bufpool_init(&st->recvview, st->mem + (size_t)RSEND * RCHUNK, RCHUNK, RNRECV))
        goto err_sendpool;
    if (vfmig__rxq_init(&st->rxq, RNRECV))
        goto err_recvview;
    st->wake[0] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (st->wake[0] < 0)
        goto err_rxq;
    st->wake[1] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (st->wake[1] < 0)
        goto err_wake0;
    vfmig__credits_init(&st->cr, RWINDOW, RCTRL);
    what = "ibv_post_recv";
    for (uint32_t k = 0; k < RNRECV; k++)
        if (post_recv(st, k))
            goto err_wake1; /* posted receives are flushed when the QP is destroyed */
    st->ready = 1;
    return VFMIG_OK;
err_wake1:
    close(st->wake[1]);
err_wake0:
    close(st->wake[0]);
err_rxq:
    vfmig__rxq_destroy(&st->rxq);
err_recvview:
    vfmig__bufpool_destroy(&st->recvview);
err_sendpool:
    vfmig__bufpool_destroy(&st->sendpool);
err_lock:
    pthread_mutex_destroy(&st->lock);
err_qp:
    rdma_destroy_qp(id);
err_mr:
    ibv_dereg_mr(st->mr);
err_mem:
    free(st->mem);
err_cq:
    ibv_destroy_cq(st->cq);
err_ch:
    ibv_destroy_comp_channel(st->ch);
err:
    vfmig__seterr(err, errlen, "RDMA stream setup: %s failed: %s", what, strerror(errno));
    st->id = NULL; /* the caller owns the id on failure */
    return st_code;
}

/* Waits (bounded) until the NIC has sent everything posted on a healthy stream: a disconnect
 * flushes unsent work, so without this the last frames before close could be lost - unlike
 * TCP, whose close delivers what was written. */
static void drain_sends(vfmig_link *l, unsigned s, rstream *st, uint64_t deadline)
{
    pthread_mutex_lock(&st->lock);
    while (!st->err && st->sends_out) {
        int ms = vfmig__ms_left(deadline);
        if (ms == 0 || rwait(l, s, st, ROLE_SEND, ms))
            break;
    }
    pthread_mutex_unlock(&st->lock);
}

static void rdma_close(vfmig_link *l)
{
    rdma_link *rl = l->impl;
    if (rl) {
        uint64_t deadline = vfmig__deadline(RCLOSE_DRAIN_MS);
        for (unsigned i = 0; i <= l->nstreams; i++)
            if (rl->st[i].ready)
                drain_sends(l, i, &rl->st[i], deadline);
        for (unsigned i = 0; i <= l->nstreams; i++)
            if (rl->st[i].id)
                rdma_disconnect(rl->st[i].id);
        for (unsigned i = l->nstreams + 1; i-- > 0;)
            stream_teardown(&rl->st[i]);
        if (rl->pd)
            ibv_dealloc_pd(rl->pd);
        if (rl->ec)
            rdma_destroy_event_channel(rl->ec);
        pthread_mutex_destroy(&rl->ec_lock);
        free(rl->st);
        free(rl);
    }
    vfmig__link_free(l);
}

static int rdma_addr(vfmig_link *l, struct sockaddr_storage *ss, int peer)
{
    rdma_link *rl = l->impl;
    struct rdma_cm_id *id = rl->st[0].id;
    const struct sockaddr *sa = !id ? NULL : peer ? rdma_get_peer_addr(id) : rdma_get_local_addr(id);
    if (!sa || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
        return VFMIG_ENOTSUP;
    memcpy(ss, sa, sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    return VFMIG_OK;
}

static int rdma_local_addr(vfmig_link *l, struct sockaddr_storage *ss)
{
    return rdma_addr(l, ss, 0);
}

static int rdma_peer_addr(vfmig_link *l, struct sockaddr_storage *ss)
{
    return rdma_addr(l, ss, 1);
}

/* Completions not yet polled count too: they are what the peer has sent. */
static int rdma_control_readable(vfmig_link *l)
{
    rstream *st = &((rdma_link *)l->impl)->st[0];
    pthread_mutex_lock(&st->lock);
    int r = !st->err && progress(l, 0, st) >= 0 && !vfmig_rxq_empty(&st->rxq);
    pthread_mutex_unlock(&st->lock);
    return r;
}

static const vfmig_link_ops rdma_ops = {
    .name = "rdma",
    .send = rdma_send_frame,
    .send_tail = rdma_send_tail,
    .flush = rdma_flush,
    .read = rdma_read,
    .close = rdma_close,
    .local_addr = rdma_local_addr,
    .peer_addr = rdma_peer_addr,
    .control_readable = rdma_control_readable,
};

static int rdma_link_new(unsigned n, vfmig_link **out)
{
    vfmig_link *l;
    int r = vfmig__link_alloc(n, &l);
    if (r)
        return r;
    rdma_link *rl = calloc(1, sizeof(*rl));
    if (rl)
        rl->st = calloc(n + 1, sizeof(*rl->st));
    if (!rl || !rl->st) {
        free(rl);
        vfmig__link_free(l);
        return VFMIG_ENOMEM;
    }
    pthread_mutex_init(&rl->ec_lock, NULL);
    for (unsigned i = 0; i <= n; i++)
        atomic_init(&rl->st[i].cm_event, 0);
    l->ops = &rdma_ops;
    l->impl = rl;
    *out = l;
    return VFMIG_OK;
}

/* The link's PD, made from the first stream's device; every stream must be on that device. */
static int link_pd(rdma_link *rl, struct rdma_cm_id *id, char *err, size_t errlen)
{
    if (!rl->pd) {
        rl->pd = ibv_alloc_pd(id->verbs);
        if (!rl->pd) {
            vfmig__seterr(err, errlen, "ibv_alloc_pd failed: %s", strerror(errno));
            return VFMIG_EIO;
        }
        rl->verbs = id->verbs;
    } else if (rl->verbs != id->verbs) {
        vfmig__seterr(err, errlen, "RDMA streams of one link reached different devices");
        return VFMIG_EIO;
    }
    return VFMIG_OK;
}

/* Waits for the next CM event on ec within deadline. */
static int next_event(struct rdma_event_channel *ec, uint64_t deadline, struct rdma_cm_event **ev)
{
    for (;;) {
        if (rdma_get_cm_event(ec, ev) == 0)
            return VFMIG_OK;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return VFMIG_EIO;
        int w = vfmig__link_wait(NULL, ec->fd, POLLIN, -1, vfmig__ms_left(deadline));
        if (w < 0)
            return w;
    }
}

/* Waits for one specific event on id (connector side). */
static int expect(struct rdma_event_channel *ec, enum rdma_cm_event_type want, uint64_t deadline,
                  char *err, size_t errlen, const char *step)
{
    struct rdma_cm_event *ev;
    int r = next_event(ec, deadline, &ev);
    if (r) {
        vfmig__seterr(err, errlen, "RDMA %s: %s", step, r == VFMIG_ETIMEDOUT ? "timed out" : strerror(errno));
        return r;
    }
    enum rdma_cm_event_type got = ev->event;
    int status = ev->status;
    char msg[64] = "";
    if (got == RDMA_CM_EVENT_REJECTED && ev->param.conn.private_data_len >= PRIV_BYTES) {
        const uint8_t *p = ev->param.conn.private_data;
        if (vfmig_get_u32(p) == RMAGIC)
            snprintf(msg, sizeof(msg), " (listener status %d)", (int32_t)vfmig_get_u32(p + 28));
    }
    rdma_ack_cm_event(ev);
    if (got == want)
        return VFMIG_OK;
    vfmig__seterr(err, errlen, "RDMA %s: %s (status %d)%s", step, rdma_event_str(got), status, msg);
    return got == RDMA_CM_EVENT_REJECTED ? VFMIG_ECONNREFUSED
         : got == RDMA_CM_EVENT_ADDR_ERROR ? VFMIG_EADDR : VFMIG_EIO;
}

static int rdma_connect_ep(const vfmig_endpoint *ep, int timeout_ms, vfmig_link **out, char *err, size_t errlen)
{
    if (no_device(err, errlen))
        return VFMIG_ENODEV;
    uint64_t deadline = vfmig__deadline(timeout_ms);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    char port[8];
    snprintf(port, sizeof(port), "%u", ep->port);
    int g = getaddrinfo(ep->host, port, &hints, &res);
    if (g) {
        vfmig__seterr(err, errlen, "cannot resolve '%s': %s", ep->host, gai_strerror(g));
        return VFMIG_EADDR;
    }
    vfmig_link *l;
    int r = rdma_link_new(ep->streams, &l);
    if (r) {
        freeaddrinfo(res);
        return r;
    }
    rdma_link *rl = l->impl;
    uint64_t cookie;
    if (getrandom(&cookie, sizeof(cookie), 0) != sizeof(cookie))
        cookie = vfmig__now_ns() ^ (uint64_t)(uintptr_t)l; /* only needs to differ between peers */
    rl->ec = rdma_create_event_channel();
    if (!rl->ec) {
        vfmig__seterr(err, errlen, "rdma_create_event_channel: %s", strerror(errno));
        r = VFMIG_EIO;
        goto fail;
    }
    fcntl(rl->ec->fd, F_SETFL, fcntl(rl->ec->fd, F_GETFL) | O_NONBLOCK);
    for (unsigned i = 0; i <= ep->streams; i++) {
        struct rdma_cm_id *id;
        if (rdma_create_id(rl->ec, &id, NULL, RDMA_PS_TCP)) {
            vfmig__seterr(err, errlen, "rdma_create_id: %s", strerror(errno));
            r = VFMIG_EIO;
            goto fail;
        }
        int ms = vfmig__ms_left(deadline);
        ms = ms < 0 || ms > 60000 ? 60000 : ms;
        if (rdma_resolve_addr(id, NULL, res->ai_addr, ms) ||
            (r = expect(rl->ec, RDMA_CM_EVENT_ADDR_RESOLVED, deadline, err, errlen, "address resolution")) ||
            rdma_resolve_route(id, ms) ||
            (r = expect(rl->ec, RDMA_CM_EVENT_ROUTE_RESOLVED, deadline, err, errlen, "route resolution")) ||
            (r = link_pd(rl, id, err, errlen)) || (r = stream_setup(&rl->st[i], id, rl->pd, err, errlen))) {
            if (!r) {
                vfmig__seterr(err, errlen, "RDMA resolve %s:%u: %s", ep->host, ep->port, strerror(errno));
                r = VFMIG_EADDR;
            }
            rdma_destroy_id(id);
            goto fail;
        }
        uint8_t priv[PRIV_BYTES];
        priv_pack(priv, cookie, i, ep->streams, 0);
        struct rdma_conn_param cp = {.private_data = priv, .private_data_len = PRIV_BYTES,
                                     .responder_resources = 1, .initiator_depth = 1,
                                     .retry_count = 7, .rnr_retry_count = 7};
        if (rdma_connect(id, &cp)) {
            vfmig__seterr(err, errlen, "rdma_connect: %s", strerror(errno));
            r = VFMIG_EIO;
            goto fail;
        }
        if ((r = expect(rl->ec, RDMA_CM_EVENT_ESTABLISHED, deadline, err, errlen, "connect")))
            goto fail;
    }
    freeaddrinfo(res);
    *out = l;
    return VFMIG_OK;
fail:
    freeaddrinfo(res);
    rdma_close(l);
    return r;
}

/* ---------------- listener ---------------- */

/* Limits against hostile or broken peers, as the TCP listener has them: a connection request
 * costs a QP and ~4.5 MiB of registered memory at once, so links still being assembled are few
 * and their QPs capped (a whole 64-QP link fits); a group not complete within the link timeout
 * goes. Whatever one connection does, accept refuses or drops it and goes on listening. */
#define RGROUPS 8
#define RPENDING_QPS (2 * (VFMIG_MAX_STREAMS + 1))

typedef struct rgroup {
    uint64_t cookie;
    unsigned n, established, setup;
    uint64_t since_ns;
    vfmig_link *l;
} rgroup;

typedef struct vfmig_rdma_listener vfmig_rdma_listener;
struct vfmig_rdma_listener {
    struct rdma_event_channel *ec;
    struct rdma_cm_id *lid;
    int port;
    unsigned max_streams;
    rgroup g[RGROUPS];
    unsigned ng;
};

static int rdma_listen_ep(const vfmig_endpoint *ep, int explicit_streams, void **out, char *err, size_t errlen)
{
    if (no_device(err, errlen))
        return VFMIG_ENODEV;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    char port[8];
    snprintf(port, sizeof(port), "%u", ep->port);
    int g = getaddrinfo(ep->host, port, &hints, &res);
    if (g) {
        vfmig__seterr(err, errlen, "cannot resolve '%s': %s", ep->host, gai_strerror(g));
        return VFMIG_EADDR;
    }
    int r = VFMIG_EIO;
    vfmig_rdma_listener *L = calloc(1, sizeof(*L));
    if (!L) {
        r = VFMIG_ENOMEM;
        goto err_res;
    }
    L->ec = rdma_create_event_channel();
    if (!L->ec) {
        vfmig__seterr(err, errlen, "rdma_create_event_channel: %s", strerror(errno));
        goto err_free;
    }
    fcntl(L->ec->fd, F_SETFL, fcntl(L->ec->fd, F_GETFL) | O_NONBLOCK);
    if (rdma_create_id(L->ec, &L->lid, NULL, RDMA_PS_TCP)) {
        vfmig__seterr(err, errlen, "rdma_create_id: %s", strerror(errno));
        goto err_ec;
    }
    if (rdma_bind_addr(L->lid, res->ai_addr) || rdma_listen(L->lid, 128)) {
        r = vfmig__errno_status(errno);
        vfmig__seterr(err, errlen, "RDMA listen on %s:%u: %s", ep->host, ep->port, strerror(errno));
        goto err_id;
    }
    L->port = ntohs(rdma_get_src_port(L->lid));
    L->max_streams = explicit_streams ? ep->streams : VFMIG_MAX_STREAMS;
    freeaddrinfo(res);
    *out = L;
    return VFMIG_OK;
err_id:
    rdma_destroy_id(L->lid);
err_ec:
    rdma_destroy_event_channel(L->ec);
err_free:
    free(L);
err_res:
    freeaddrinfo(res);
    return r;
}

static int rdma_listener_port(const void *listener)
{
    const vfmig_rdma_listener *L = listener;
    return L->port;
}

static void reject(struct rdma_cm_id *id, uint64_t cookie, int status)
{
    uint8_t priv[PRIV_BYTES];
    priv_pack(priv, cookie, 0, 0, status);
    rdma_reject(id, priv, PRIV_BYTES);
}

static void drop_rgroup(vfmig_rdma_listener *L, unsigned i)
{
    rdma_close(L->g[i].l);
    L->g[i] = L->g[--L->ng];
}

static unsigned pending_qps(const vfmig_rdma_listener *L)
{
    unsigned n = 0;
    for (unsigned i = 0; i < L->ng; i++)
        n += L->g[i].setup;
    return n;
}

/* A connection request: validate, find or start its group, set the stream up, accept.
 * *destroy: the request was rejected and its id is to be destroyed once the event is acked. */
static void on_request(vfmig_rdma_listener *L, struct rdma_cm_event *ev, int *destroy)
{
    struct rdma_cm_id *id = ev->id;
    *destroy = 1;
    const uint8_t *p = ev->param.conn.private_data;
    if (ev->param.conn.private_data_len < PRIV_BYTES || vfmig_get_u32(p) != RMAGIC ||
        vfmig_get_u32(p + 4) != VFMIG_WIRE_VERSION || vfmig_get_u32(p + 24) != RCHUNK) {
        reject(id, 0, VFMIG_EPROTO); /* a stranger or another version */
        return;
    }
    uint64_t cookie = vfmig_get_u64(p + 8);
    uint32_t index = vfmig_get_u32(p + 16), n = vfmig_get_u32(p + 20);
    if (n < 1 || n > L->max_streams) {
        /* The peer learns why from the status; the listener goes on, as over TCP. */
        reject(id, cookie, VFMIG_EINVAL);
        return;
    }
    if (index > n) {
        reject(id, cookie, VFMIG_EPROTO);
        return;
    }
    rgroup *g = NULL;
    for (unsigned i = 0; i < L->ng; i++)
        if (L->g[i].cookie == cookie)
            g = &L->g[i];
    if (pending_qps(L) >= RPENDING_QPS) {
        reject(id, cookie, VFMIG_ENOMEM); /* busy: too many half-made links */
        return;
    }
    if (!g) {
        if (L->ng == RGROUPS || rdma_link_new(n, &L->g[L->ng].l)) {
            reject(id, cookie, VFMIG_ENOMEM);
            return;
        }
        g = &L->g[L->ng++];
        g->cookie = cookie;
        g->n = n;
        g->established = 0;
        g->setup = 0;
        g->since_ns = vfmig__now_ns();
    }
    rdma_link *rl = g->l->impl;
    char e2[160];
    if (index > n || n != g->n || rl->st[index].id || link_pd(rl, id, e2, sizeof(e2)) ||
        stream_setup(&rl->st[index], id, rl->pd, e2, sizeof(e2))) {
        reject(id, cookie, VFMIG_EPROTO);
        return;
    }
    id->context = g->l;
    *destroy = 0; /* the stream owns the id now */
    g->setup++;
    uint8_t priv[PRIV_BYTES];
    priv_pack(priv, cookie, index, n, 0);
    struct rdma_conn_param cp = {.private_data = priv, .private_data_len = PRIV_BYTES,
                                 .responder_resources = 1, .initiator_depth = 1,
                                 .retry_count = 7, .rnr_retry_count = 7};
    if (rdma_accept(id, &cp)) {
        /* The id now belongs to the stream: the group is torn down on its next event/expiry. */
        g->since_ns = 0;
    }
}

static int rdma_accept_link(void *listener, int timeout_ms, vfmig_link **out, char *err, size_t errlen)
{
    vfmig_rdma_listener *L = listener;
    uint64_t deadline = vfmig__deadline(timeout_ms);
    uint64_t stale = (uint64_t)VFMIG_LINK_DEFAULT_TIMEOUT_MS * 1000000ull;
    for (;;) {
        for (unsigned i = 0; i < L->ng; i++) {
            if (L->g[i].established == L->g[i].n + 1) {
                vfmig_link *l = L->g[i].l;
                rdma_link *rl = l->impl;
                /* The link gets its own event channel, read for the link's life (disconnects),
                 * so the listener can go away first. Failing that, this link is dropped and
                 * listening goes on: the peer sees a disconnect. */
                int ok = (rl->ec = rdma_create_event_channel()) != NULL &&
                         fcntl(rl->ec->fd, F_SETFL, fcntl(rl->ec->fd, F_GETFL) | O_NONBLOCK) == 0;
                for (unsigned k = 0; ok && k <= l->nstreams; k++)
                    ok = rdma_migrate_id(rl->st[k].id, rl->ec) == 0;
                if (!ok) {
                    drop_rgroup(L, i);
                    i--;
                    continue;
                }
                L->g[i] = L->g[--L->ng];
                *out = l;
                return VFMIG_OK;
            }
            if (vfmig__now_ns() - L->g[i].since_ns > stale) {
                drop_rgroup(L, i);
                i--;
            }
        }
        struct rdma_cm_event *ev;
        int r = next_event(L->ec, deadline, &ev);
        if (r) {
            vfmig__seterr(err, errlen, "RDMA accept: %s", r == VFMIG_ETIMEDOUT ? "no complete connection in time"
                                                                             : strerror(errno));
            return r;
        }
        struct rdma_cm_id *id = ev->id;
        if (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST) {
            int destroy;
            on_request(L, ev, &destroy);
            rdma_ack_cm_event(ev);
            if (destroy)
                rdma_destroy_id(id);
            continue;
        }
        enum rdma_cm_event_type t = ev->event;
        rdma_ack_cm_event(ev);
        if (id == L->lid && t == RDMA_CM_EVENT_DEVICE_REMOVAL) {
            vfmig__seterr(err, errlen, "RDMA accept: the RDMA device was removed");
            return VFMIG_EIO;
        }
        for (unsigned i = 0; i < L->ng; i++) {
            if (id->context != L->g[i].l)
                continue;
            if (t == RDMA_CM_EVENT_ESTABLISHED)
                L->g[i].established++;
            else
                drop_rgroup(L, i); /* rejected, unreachable, disconnected: the whole group goes */
            break;
        }
    }
}

static void rdma_listener_close(void *listener)
{
    vfmig_rdma_listener *L = listener;
    if (!L)
        return;
    while (L->ng)
        drop_rgroup(L, 0);
    rdma_destroy_id(L->lid);
    rdma_destroy_event_channel(L->ec);
    free(L);
}

static const vfmig_link_scheme rdma_scheme = {
    .name = "rdma",
    .count_opt = "qps",
    .listen = rdma_listen_ep,
    .listener_port = rdma_listener_port,
    .accept = rdma_accept_link,
    .listener_close = rdma_listener_close,
    .connect = rdma_connect_ep,
};

const vfmig_link_scheme *vfmig__rdma_scheme(void)
{
    return &rdma_scheme;
}
