/* transport/link.c - the medium-independent half of a link: framing, checks, cap, counters,
 * interruption, errors; and the public listen/accept/connect entry points. */
#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include "transport/aead.h"
#include "transport/link_impl.h"

struct vfmig_listener {
    const vfmig_link_scheme *sc;
    void *impl; /* the scheme's own listener */
};

/* The schemes by endpoint kind (VFMIG_LINK_*, from 1 on). */
const vfmig_link_scheme *vfmig__link_scheme(int kind)
{
    switch (kind) {
    case VFMIG_LINK_TCP:
        return vfmig__tcp_scheme();
    case VFMIG_LINK_RDMA:
        return vfmig__rdma_scheme();
    default:
        return NULL;
    }
}

int vfmig__link_scheme_kind(const char *name, size_t len)
{
    const vfmig_link_scheme *sc;
    for (int k = 1; (sc = vfmig__link_scheme(k)) != NULL; k++)
        if (strlen(sc->name) == len && !strncmp(sc->name, name, len))
            return k;
    return 0;
}

/* The answer for an operation a scheme lacks. */
static int unsupported(const vfmig_link_scheme *sc, const char *what, char *err, size_t errlen)
{
    if (sc->missing)
        vfmig__seterr(err, errlen, "%s://: %s", sc->name, sc->missing);
    else
        vfmig__seterr(err, errlen, "%s:// links cannot %s", sc->name, what);
    return VFMIG_ENOTSUP;
}

int vfmig__errno_status(int e)
{
    switch (e) {
    case EPIPE:
    case ECONNRESET:
    case ECONNABORTED:
    case ESHUTDOWN:
        return VFMIG_ECLOSED;
    case ECONNREFUSED:
        return VFMIG_ECONNREFUSED;
    case EADDRINUSE:
        return VFMIG_EADDRINUSE;
    case ETIMEDOUT:
        return VFMIG_ETIMEDOUT;
    case ENOMEM:
    case ENOBUFS:
        return VFMIG_ENOMEM;
    default:
        return VFMIG_EIO;
    }
}

int vfmig__link_wait(vfmig_link *l, int fd, short events, int fd2, int timeout_ms)
{
    struct pollfd p[3] = {{.fd = fd, .events = events},
                          {.fd = l ? l->intr_fd : -1, .events = POLLIN},
                          {.fd = fd2, .events = POLLIN}};
    for (;;) {
        int r = poll(p, 3, timeout_ms);
        if (r < 0) {
            if (errno == EINTR)
                continue; /* a signal is not a timeout; the remaining time is re-armed by callers */
            return VFMIG_EIO;
        }
        if (r == 0)
            return VFMIG_ETIMEDOUT;
        if (p[1].revents)
            return VFMIG_ECANCELED;
        if (p[0].revents)
            return 1; /* POLLERR/POLLHUP too: the following I/O call reports what happened */
        if (p[2].revents)
            return 2;
    }
}

int vfmig__link_alloc(unsigned nstreams, vfmig_link **out)
{
    vfmig_link *l = calloc(1, sizeof(*l));
    if (!l)
        return VFMIG_ENOMEM;
    l->errs = calloc(nstreams + 1, sizeof(*l->errs));
    l->gather = calloc(nstreams + 1, sizeof(*l->gather));
    l->gather_cap = calloc(nstreams + 1, sizeof(*l->gather_cap));
    l->intr_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!l->errs || !l->gather || !l->gather_cap || l->intr_fd < 0) {
        free(l->errs);
        free(l->gather);
        free(l->gather_cap);
        if (l->intr_fd >= 0)
            close(l->intr_fd);
        free(l);
        return VFMIG_ENOMEM;
    }
    l->nstreams = nstreams;
    atomic_init(&l->timeout_ms, VFMIG_LINK_DEFAULT_TIMEOUT_MS);
    atomic_init(&l->max_payload, VFMIG_FRAME_MAX_PAYLOAD);
    atomic_init(&l->bytes_sent, 0);
    atomic_init(&l->interrupted, 0);
    vfmig__ratelimit_init(&l->rl);
    pthread_mutex_init(&l->err_lock, NULL);
    *out = l;
    return VFMIG_OK;
}

void vfmig__link_free(vfmig_link *l)
{
    if (!l)
        return;
    vfmig__aead_free(l->aead);
    for (unsigned i = 0; i <= l->nstreams; i++)
        free(l->gather[i]);
    free(l->gather);
    free(l->gather_cap);
    pthread_mutex_destroy(&l->err_lock);
    vfmig__ratelimit_destroy(&l->rl);
    close(l->intr_fd);
    free(l->errs);
    free(l);
}

int vfmig__link_fail(vfmig_link *l, unsigned s, int status, const char *fmt, ...)
{
    if (s > l->nstreams)
        return status;
    char msg[VFMIG_LINK_ERRLEN - 16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&l->err_lock);
    snprintf(l->errs[s], VFMIG_LINK_ERRLEN, "stream %u: %s", s, msg);
    pthread_mutex_unlock(&l->err_lock);
    return status;
}

/* Header bytes 0..31 of f, the AAD of an encrypted frame. vfmig__frame_pack on an empty copy
 * keeps the layout in wire.c; the 32-byte hash it spends on the unused checksum is noise. */
static void header_prefix(const vfmig_frame *f, uint8_t out[VFMIG_FRAME_HDR_BYTES])
{
    vfmig_frame g = *f;
    g.len = 0;
    vfmig__frame_pack(&g, NULL, out);
    vfmig_put_u32(out + 4, f->len);
}

/* vfmig__link_send on a MAC-keyed link: payload in clear, then its tag. */
static int send_tagged(vfmig_link *l, unsigned stream, const vfmig_frame *f, const void *payload, bool last)
{
    if (f->len > vfmig__aead_cap(l->aead))
        return vfmig__link_fail(l, stream, VFMIG_EINVAL, "frame of %u bytes over the %zu-byte limit of keyed links",
                               f->len, vfmig__aead_cap(l->aead));
    uint8_t hdr[VFMIG_FRAME_HDR_BYTES], tag[VFMIG_AEAD_TAG_BYTES];
    vfmig_frame g = *f;
    g.len += VFMIG_AEAD_TAG_BYTES;
    header_prefix(&g, hdr);
    int r = vfmig__aead_tag(l->aead, stream, hdr, payload, f->len, tag);
    if (r == VFMIG_EPROTO)
        return vfmig__link_fail(l, stream, r, "frame counter exhausted: the link needs new keys");
    if (r)
        return vfmig__link_fail(l, stream, r, "frame MAC failed in the crypto library");
    /* The checksum covers header and tag only: the tag already covers the payload, and a second
     * pass over it on each end would cost more than the MAC's margin over a plain link. A
     * corrupted payload is then reported as failing authentication. */
    const void *wire_payload = payload;
    uint8_t *joined = NULL;
    if (!l->ops->send_tail) {
        joined = vfmig__aead_tx_buf(l->aead, stream);
        if (f->len)
            memcpy(joined, payload, f->len);
        memcpy(joined + f->len, tag, sizeof(tag));
        wire_payload = joined;
    }
    vfmig_put_u64(hdr + 32, vfmig__frame_csum2(hdr, tag, sizeof(tag), NULL, 0));
    size_t wire = VFMIG_FRAME_HDR_BYTES + (size_t)g.len;
    r = last ? VFMIG_OK : vfmig__ratelimit_acquire(&l->rl, wire, l->intr_fd); /* a last word is tiny */
    if (r)
        return r;
    if (joined)
        r = l->ops->send(l, stream, hdr, wire_payload, g.len);
    else if (!(r = l->ops->send(l, stream, hdr, payload, f->len)))
        r = l->ops->send_tail(l, stream, tag, sizeof(tag));
    if (r == VFMIG_OK)
        atomic_fetch_add_explicit(&l->bytes_sent, wire, memory_order_relaxed);
    return r;
}

static int link_send(vfmig_link *l, unsigned stream, const vfmig_frame *f, const void *payload, bool last)
{
    if (!l || !f || stream > l->nstreams || (f->len && !payload))
        return VFMIG_EINVAL;
    if (f->len > VFMIG_FRAME_MAX_PAYLOAD)
        return vfmig__link_fail(l, stream, VFMIG_EINVAL, "frame of %u bytes over the %u-byte limit",
                               f->len, VFMIG_FRAME_MAX_PAYLOAD);
    if (!last && atomic_load_explicit(&l->interrupted, memory_order_relaxed))
        return VFMIG_ECANCELED;
    uint8_t hdr[VFMIG_FRAME_HDR_BYTES];
    vfmig_frame g = *f;
    if (l->aead && vfmig__aead_mac_only(l->aead))
        return send_tagged(l, stream, f, payload, last);
    if (l->aead) {
        if (f->len > vfmig__aead_cap(l->aead))
            return vfmig__link_fail(l, stream, VFMIG_EINVAL,
                                   "frame of %u bytes over the %zu-byte limit of encrypted links",
                                   f->len, vfmig__aead_cap(l->aead));
        /* The header as sent (len counting the tag) is the AAD; the checksum then covers the
         * ciphertext, so plain corruption is still told apart from forgery. */
        g.len += VFMIG_AEAD_TAG_BYTES;
        header_prefix(&g, hdr);
        const uint8_t *ct;
        int r = vfmig__aead_seal(l->aead, stream, hdr, payload, f->len, &ct);
        if (r == VFMIG_EPROTO)
            return vfmig__link_fail(l, stream, r, "frame counter exhausted: the link needs new keys");
        if (r)
            return vfmig__link_fail(l, stream, r, "encryption failed in the crypto library");
        payload = ct;
    }
    vfmig__frame_pack(&g, payload, hdr);
    size_t wire = VFMIG_FRAME_HDR_BYTES + (size_t)g.len;
    int r = last ? VFMIG_OK : vfmig__ratelimit_acquire(&l->rl, wire, l->intr_fd);
    if (r)
        return r;
    r = l->ops->send(l, stream, hdr, payload, g.len);
    if (r == VFMIG_OK)
        atomic_fetch_add_explicit(&l->bytes_sent, wire, memory_order_relaxed);
    return r;
}

bool vfmig__link_payload_transformed(const vfmig_link *l)
{
    return l && l->aead;
}

bool vfmig__link_payload_placeable(const vfmig_link *l)
{
    return l && (!l->aead || vfmig__aead_mac_only(l->aead));
}

/* Copies a gathered payload into the stream's scratch (grown as needed; one sender per stream). */
static const void *gather(vfmig_link *l, unsigned stream, const struct iovec *iov, int niov, size_t len)
{
    if (l->gather_cap[stream] < len) {
        uint8_t *b = realloc(l->gather[stream], len);
        if (!b)
            return NULL;
        l->gather[stream] = b;
        l->gather_cap[stream] = len;
    }
    size_t off = 0;
    for (int i = 0; i < niov; i++) {
        memcpy(l->gather[stream] + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    return l->gather[stream];
}

int vfmig__link_sendv(vfmig_link *l, unsigned stream, const vfmig_frame *f, const struct iovec *iov, int niov)
{
    if (!l || !f || stream > l->nstreams || niov < 0 || niov > VFMIG_LINK_MAX_IOV || (niov && !iov))
        return VFMIG_EINVAL;
    size_t len = 0;
    for (int i = 0; i < niov; i++)
        len += iov[i].iov_len;
    if (len != f->len)
        return vfmig__link_fail(l, stream, VFMIG_EINVAL, "gathered payload of %zu bytes for a %u-byte frame",
                               len, f->len);
    if ((f->flags & VFMIG_FRAME_FLAG_UNCHECKED) && l->aead)
        return vfmig__link_fail(l, stream, VFMIG_EINVAL, "unchecked payloads cannot go through frame encryption");
    if (l->aead || !l->ops->sendv) {
        /* Sealing needs the payload in one piece, and so does a back-end without sendv. */
        const void *payload = niov == 1 ? iov[0].iov_base : len ? gather(l, stream, iov, niov, len) : NULL;
        if (len && !payload)
            return vfmig__link_fail(l, stream, VFMIG_ENOMEM, "out of memory gathering a %zu-byte frame", len);
        return vfmig__link_send(l, stream, f, payload);
    }
    if (f->len > VFMIG_FRAME_MAX_PAYLOAD)
        return vfmig__link_fail(l, stream, VFMIG_EINVAL, "frame of %u bytes over the %u-byte limit",
                               f->len, VFMIG_FRAME_MAX_PAYLOAD);
    if (atomic_load_explicit(&l->interrupted, memory_order_relaxed))
        return VFMIG_ECANCELED;
    uint8_t hdr[VFMIG_FRAME_HDR_BYTES];
    vfmig__frame_pack_iov(f, iov, niov, hdr);
    size_t wire = VFMIG_FRAME_HDR_BYTES + len;
    int r = vfmig__ratelimit_acquire(&l->rl, wire, l->intr_fd);
    if (r)
        return r;
    r = l->ops->sendv(l, stream, hdr, iov, niov, len);
    if (r == VFMIG_OK)
        atomic_fetch_add_explicit(&l->bytes_sent, wire, memory_order_relaxed);
    return r;
}

int vfmig__link_send(vfmig_link *l, unsigned stream, const vfmig_frame *f, const void *payload)
{
    return link_send(l, stream, f, payload, false);
}

int vfmig__link_send_last(vfmig_link *l, unsigned stream, const vfmig_frame *f, const void *payload)
{
    /* After an interrupt every wait returns at once (the interrupt fd stays readable), so this
     * goes out only as far as the socket takes it without blocking. */
    int rc = link_send(l, stream, f, payload, true);
    return rc ? rc : (l->ops->flush(l, stream));
}

int vfmig__link_flush(vfmig_link *l, unsigned stream)
{
    if (!l || stream > l->nstreams)
        return VFMIG_EINVAL;
    if (atomic_load_explicit(&l->interrupted, memory_order_relaxed))
        return VFMIG_ECANCELED;
    return l->ops->flush(l, stream);
}

/* The rest of vfmig__link_recv on an encrypted link, once the header is in: ciphertext + tag into
 * the stream's scratch, checksum, then decryption into the caller's buffer. */
static int recv_sealed(vfmig_link *l, unsigned stream, const uint8_t hdr[VFMIG_FRAME_HDR_BYTES],
                       vfmig_frame *f, void *payload, size_t cap, uint64_t deadline)
{
    if (f->len < VFMIG_AEAD_TAG_BYTES)
        return vfmig__link_fail(l, stream, VFMIG_EAUTH,
                               "type %u frame of %u bytes has no authentication tag (peer not "
                               "encrypting?)", f->type, f->len);
    size_t plain = f->len - VFMIG_AEAD_TAG_BYTES;
    if (plain > cap)
        return vfmig__link_fail(l, stream, VFMIG_EPROTO,
                               "frame payload of %zu bytes larger than the %zu-byte buffer", plain, cap);
    if (plain > vfmig__aead_cap(l->aead))
        return vfmig__link_fail(l, stream, VFMIG_EPROTO,
                               "frame payload of %zu bytes over the %zu-byte limit of encrypted links",
                               plain, vfmig__aead_cap(l->aead));
    uint8_t *ct = vfmig__aead_rx_buf(l->aead, stream);
    int r = l->ops->read(l, stream, ct, f->len, vfmig__ms_left(deadline), &deadline);
    if (r)
        return r;
    if (vfmig__frame_check(hdr, ct, f->len))
        return vfmig__link_fail(l, stream, VFMIG_ECHECKSUM,
                               "checksum mismatch on a type %u frame of %u bytes", f->type, f->len);
    /* A replayed, reordered or dropped frame fails here too: the nonce is the receiver's own
     * next counter, never taken from the wire. */
    r = vfmig__aead_open(l->aead, stream, hdr, f->len, payload);
    if (r == VFMIG_EAUTH)
        return vfmig__link_fail(l, stream, r,
                               "frame failed authentication (tampered, replayed or wrong key)");
    if (r == VFMIG_EPROTO)
        return vfmig__link_fail(l, stream, r, "frame counter exhausted: the link needs new keys");
    if (r)
        return vfmig__link_fail(l, stream, r, "decryption failed in the crypto library");
    f->len = (uint32_t)plain;
    return VFMIG_OK;
}

/* The rest of vfmig__link_recv on a MAC-keyed link: payload straight into the caller's buffer,
 * or where `place` puts it, then the tag; the checksum (header and tag), then the tag's check.
 * A placed payload is written before it is authenticated: on a failed tag it is zeroed and the
 * stream fails, so the caller never takes it (a target whose pages fail never resumes). */
static int recv_tagged(vfmig_link *l, unsigned stream, const uint8_t hdr[VFMIG_FRAME_HDR_BYTES],
                       vfmig_frame *f, void *payload, size_t cap, vfmig_recv_place_fn place, void *ctx,
                       bool *placed, uint64_t deadline)
{
    if (f->len < VFMIG_AEAD_TAG_BYTES)
        return vfmig__link_fail(l, stream, VFMIG_EAUTH,
                               "type %u frame of %u bytes has no authentication tag (peer not keyed?)",
                               f->type, f->len);
    size_t plain = f->len - VFMIG_AEAD_TAG_BYTES;
    if (plain > vfmig__aead_cap(l->aead))
        return vfmig__link_fail(l, stream, VFMIG_EPROTO,
                               "frame payload of %zu bytes over the %zu-byte limit of keyed links", plain,
                               vfmig__aead_cap(l->aead));
    vfmig_frame pf = *f;
    pf.len = (uint32_t)plain; /* the placer sees the payload as sent */
    void *dst = place && plain ? place(ctx, &pf) : NULL;
    if (dst) {
        payload = dst;
        cap = plain;
    }
    if (plain > cap)
        return vfmig__link_fail(l, stream, VFMIG_EPROTO,
                               "frame payload of %zu bytes larger than the %zu-byte buffer", plain, cap);
    uint8_t tag[VFMIG_AEAD_TAG_BYTES];
    int r = plain ? l->ops->read(l, stream, payload, plain, vfmig__ms_left(deadline), &deadline) : VFMIG_OK;
    if (!r)
        r = l->ops->read(l, stream, tag, sizeof(tag), vfmig__ms_left(deadline), &deadline);
    if (r)
        return r;
    if (vfmig__frame_csum2(hdr, tag, sizeof(tag), NULL, 0) != vfmig_get_u64(hdr + 32)) {
        /* Only on this error path: a plain frame's checksum covers all it carries. */
        bool plain_frame = vfmig__frame_csum2(hdr, payload, plain, tag, sizeof(tag)) == vfmig_get_u64(hdr + 32);
        if (plain)
            memset(payload, 0, plain);
        if (plain_frame)
            return vfmig__link_fail(l, stream, VFMIG_EAUTH,
                                   "frame failed authentication: a plain frame without a tag (peer not keyed?)");
        return vfmig__link_fail(l, stream, VFMIG_ECHECKSUM,
                               "checksum mismatch on a type %u frame of %u bytes", f->type, f->len);
    }
    r = vfmig__aead_verify(l->aead, stream, hdr, payload, plain, tag);
    if (r == VFMIG_EAUTH) {
        if (plain)
            memset(payload, 0, plain); /* never leave unauthenticated bytes to the caller */
        return vfmig__link_fail(l, stream, r,
                               "frame failed authentication (corrupted, tampered, replayed or wrong key)");
    }
    if (r == VFMIG_EPROTO)
        return vfmig__link_fail(l, stream, r, "frame counter exhausted: the link needs new keys");
    if (r)
        return vfmig__link_fail(l, stream, r, "frame MAC failed in the crypto library");
    f->len = (uint32_t)plain;
    if (dst && placed)
        *placed = true;
    return VFMIG_OK;
}

int vfmig__link_recv(vfmig_link *l, unsigned stream, vfmig_frame *f, void *payload, size_t cap,
                    int timeout_ms)
{
    return vfmig__link_recv_placed(l, stream, f, payload, cap, NULL, NULL, NULL, timeout_ms);
}

int vfmig__link_recv_placed(vfmig_link *l, unsigned stream, vfmig_frame *f, void *payload, size_t cap,
                           vfmig_recv_place_fn place, void *ctx, bool *placed, int timeout_ms)
{
    if (placed)
        *placed = false;
    if (!l || !f || stream > l->nstreams)
        return VFMIG_EINVAL;
    if (atomic_load_explicit(&l->interrupted, memory_order_relaxed))
        return VFMIG_ECANCELED;
    uint8_t hdr[VFMIG_FRAME_HDR_BYTES];
    uint64_t deadline = 0;
    int r = l->ops->read(l, stream, hdr, sizeof(hdr), timeout_ms, &deadline);
    if (r)
        return r;
    uint64_t csum;
    size_t maxp = atomic_load_explicit(&l->max_payload, memory_order_relaxed);
    if (l->aead)
        maxp += VFMIG_AEAD_TAG_BYTES; /* max_payload bounds the plaintext */
    r = vfmig__frame_unpack(hdr, maxp, f, &csum);
    if (r) {
        if (hdr[0] < VFMIG_F_HELLO || hdr[0] > VFMIG_F_TYPE_MAX)
            return vfmig__link_fail(l, stream, r, "unknown frame type %u", hdr[0]);
        return vfmig__link_fail(l, stream, r, "frame payload of %u bytes over the limit of %zu",
                               vfmig_get_u32(hdr + 4), maxp);
    }
    /* After a refused frame the stream is out of step: the caller must treat it as fatal. */
    if (l->aead && vfmig__aead_mac_only(l->aead))
        return recv_tagged(l, stream, hdr, f, payload, cap, place, ctx, placed, deadline);
    if (l->aead)
        return recv_sealed(l, stream, hdr, f, payload, cap, deadline);
    void *dst = place && f->len ? place(ctx, f) : NULL;
    if (dst) {
        payload = dst;
        cap = f->len;
        if (placed)
            *placed = true;
    }
    if (f->len > cap)
        return vfmig__link_fail(l, stream, VFMIG_EPROTO,
                               "frame payload of %u bytes larger than the %zu-byte buffer", f->len, cap);
    if (f->len) {
        int rest = vfmig__ms_left(deadline);
        r = l->ops->read(l, stream, payload, f->len, rest, &deadline);
        if (r)
            return r;
    }
    if (vfmig__frame_check(hdr, payload, f->len))
        return vfmig__link_fail(l, stream, VFMIG_ECHECKSUM,
                               "checksum mismatch on a type %u frame of %u bytes", f->type, f->len);
    return VFMIG_OK;
}

static int enable_keyed(vfmig_link *l, const uint8_t key_tx[32], const uint8_t key_rx[32], int mac_only)
{
    if (!l || !key_tx || !key_rx || l->aead)
        return VFMIG_EINVAL;
    /* Scratch sized to the negotiated max payload where one was set (the receiver's bound), else
     * a default that covers every engine frame; the tag must still fit the wire's hard limit. */
    size_t cap = atomic_load(&l->max_payload);
    if (cap >= VFMIG_FRAME_MAX_PAYLOAD)
        cap = VFMIG_AEAD_DEFAULT_CAP;
    if (cap > VFMIG_FRAME_MAX_PAYLOAD - VFMIG_AEAD_TAG_BYTES)
        cap = VFMIG_FRAME_MAX_PAYLOAD - VFMIG_AEAD_TAG_BYTES;
    if (!cap)
        cap = 1; /* a link refusing every payload still needs room for the tag */
    return mac_only ? vfmig__aead_new_mac(l->nstreams, key_tx, key_rx, cap, &l->aead)
                    : vfmig__aead_new(l->nstreams, key_tx, key_rx, cap, &l->aead);
}

int vfmig__link_enable_aead(vfmig_link *l, const uint8_t key_tx[32], const uint8_t key_rx[32])
{
    return enable_keyed(l, key_tx, key_rx, 0);
}

int vfmig__link_enable_mac(vfmig_link *l, const uint8_t key_tx[32], const uint8_t key_rx[32])
{
    return enable_keyed(l, key_tx, key_rx, 1);
}

bool vfmig__link_aead_enabled(const vfmig_link *l)
{
    return l && l->aead;
}

void vfmig__link_interrupt(vfmig_link *l)
{
    if (!l)
        return;
    atomic_store(&l->interrupted, 1);
    uint64_t one = 1;
    /* The counter is never read back, so the fd stays readable and wakes every later poll. */
    ssize_t n = write(l->intr_fd, &one, sizeof(one));
    (void)n;
}

void vfmig__link_set_timeout(vfmig_link *l, int timeout_ms)
{
    if (l)
        atomic_store(&l->timeout_ms, timeout_ms);
}

void vfmig__link_set_max_bandwidth(vfmig_link *l, uint64_t bytes_per_s)
{
    if (l)
        vfmig__ratelimit_set(&l->rl, bytes_per_s);
}

void vfmig__link_set_max_payload(vfmig_link *l, size_t max_payload)
{
    if (l)
        atomic_store(&l->max_payload, max_payload > VFMIG_FRAME_MAX_PAYLOAD ? VFMIG_FRAME_MAX_PAYLOAD
                                                                            : max_payload);
}

uint64_t vfmig__link_bytes_sent(const vfmig_link *l)
{
    return l ? atomic_load_explicit(&l->bytes_sent, memory_order_relaxed) : 0;
}

const char *vfmig__link_stream_error(const vfmig_link *l, unsigned stream)
{
    if (!l || stream > l->nstreams)
        return "";
    return l->errs[stream];
}

int vfmig__link_local_ifname(vfmig_link *l, char *name, size_t len)
{
    struct sockaddr_storage ss;
    struct ifaddrs *ifs;
    if (!l || !l->ops->local_addr || l->ops->local_addr(l, &ss) || getifaddrs(&ifs))
        return VFMIG_ENOTSUP;
    int rc = VFMIG_ENOTSUP;
    for (struct ifaddrs *i = ifs; i && rc; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != ss.ss_family)
            continue;
        bool same = ss.ss_family == AF_INET
                        ? ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr == ((struct sockaddr_in *)&ss)->sin_addr.s_addr
                        : ss.ss_family == AF_INET6 &&
                              !memcmp(&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr,
                                      &((struct sockaddr_in6 *)&ss)->sin6_addr, sizeof(struct in6_addr));
        if (same) {
            snprintf(name, len, "%s", i->ifa_name);
            rc = VFMIG_OK;
        }
    }
    freeifaddrs(ifs);
    return rc;
}

void vfmig__link_close_after_word(vfmig_link *l, int ms)
{
    if (!l)
        return;
    if (ms > 0 && l->ops->drain)
        l->ops->drain(l, ms);
    vfmig_link_close(l);
}

int vfmig__link_control_readable(vfmig_link *l)
{
    return l && l->ops->control_readable ? l->ops->control_readable(l) : 0;
}

int vfmig__link_peer_name(vfmig_link *l, char *name, size_t len)
{
    struct sockaddr_storage ss;
    char host[INET6_ADDRSTRLEN] = "?", port[8] = "?";
    socklen_t sl = sizeof(ss);
    if (!l || !l->ops->peer_addr || l->ops->peer_addr(l, &ss) ||
        (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) ||
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV)) {
        snprintf(name, len, "?");
        return VFMIG_ENOTSUP;
    }
    snprintf(name, len, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
    return VFMIG_OK;
}

int vfmig_link_streams(const vfmig_link *link)
{
    return link ? (int)link->nstreams : 0;
}

void vfmig_link_close(vfmig_link *link)
{
    if (link)
        link->ops->close(link);
}

/* --- public entry points: dispatch on the endpoint's scheme --- */

int vfmig_listen(const char *endpoint, vfmig_listener **out, char *err, size_t errlen)
{
    vfmig_endpoint ep;
    int explicit_streams;
    if (!out)
        return VFMIG_EINVAL;
    *out = NULL;
    int r = vfmig__endpoint_parse_ex(endpoint, &ep, &explicit_streams, err, errlen);
    if (r)
        return r;
    const vfmig_link_scheme *sc = vfmig__link_scheme(ep.kind);
    if (!sc->listen)
        return unsupported(sc, "listen", err, errlen);
    vfmig_listener *L = calloc(1, sizeof(*L));
    if (!L)
        return VFMIG_ENOMEM;
    L->sc = sc;
    r = sc->listen(&ep, explicit_streams, &L->impl, err, errlen);
    if (r) {
        free(L);
        return r;
    }
    *out = L;
    return VFMIG_OK;
}

int vfmig_listener_port(const vfmig_listener *l)
{
    if (!l)
        return VFMIG_EINVAL;
    return l->sc->listener_port ? l->sc->listener_port(l->impl) : VFMIG_ENOTSUP;
}

int vfmig_accept(vfmig_listener *l, int timeout_ms, vfmig_link **out, char *err, size_t errlen)
{
    if (!l || !out)
        return VFMIG_EINVAL;
    *out = NULL;
    if (!l->sc->accept)
        return unsupported(l->sc, "accept", err, errlen);
    return l->sc->accept(l->impl, timeout_ms, out, err, errlen);
}

void vfmig_listener_close(vfmig_listener *l)
{
    if (!l)
        return;
    if (l->sc->listener_close)
        l->sc->listener_close(l->impl);
    free(l);
}

int vfmig_connect(const char *endpoint, int timeout_ms, vfmig_link **out, char *err, size_t errlen)
{
    vfmig_endpoint ep;
    int explicit_streams;
    if (!out)
        return VFMIG_EINVAL;
    *out = NULL;
    int r = vfmig__endpoint_parse_ex(endpoint, &ep, &explicit_streams, err, errlen);
    if (r)
        return r;
    const vfmig_link_scheme *sc = vfmig__link_scheme(ep.kind);
    if (!sc->connect)
        return unsupported(sc, "connect", err, errlen);
    if (!explicit_streams) {
        /* Auto: one stream per CPU, up to 8: each stream is one receiver (decoder) on the
         * target, and past a few streams a link gains nothing but buffers. */
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        ep.streams = n < 1 ? 1 : n > 8 ? 8 : (uint32_t)n;
    }
    return sc->connect(&ep, timeout_ms, out, err, errlen);
}

int vfmig_link_from_fds(int control_fd, const int *data_fds, unsigned ndata, vfmig_link **out, char *err,
                        size_t errlen)
{
    if (!out)
        return VFMIG_EINVAL;
    *out = NULL;
    if (ndata < 1 || ndata > VFMIG_MAX_STREAMS || !data_fds) {
        vfmig__seterr(err, errlen, "a link needs 1 to %d data connections, not %u", VFMIG_MAX_STREAMS, ndata);
        return VFMIG_EINVAL;
    }
    int fds[VFMIG_MAX_STREAMS + 1];
    fds[0] = control_fd;
    for (unsigned i = 0; i < ndata; i++)
        fds[i + 1] = data_fds[i];
    for (unsigned i = 0; i <= ndata; i++)
        for (unsigned j = 0; j < i; j++)
            if (fds[i] == fds[j] || fds[i] < 0) {
                vfmig__seterr(err, errlen, "connection %u: fd %d is invalid or given twice", i, fds[i]);
                return VFMIG_EINVAL;
            }
    /* Connected stream sockets of any family (TCP, vsock, UNIX) are the tcp scheme's byte pipes. */
    const vfmig_link_scheme *sc = vfmig__link_scheme(VFMIG_LINK_TCP);
    return sc->from_fds(fds, ndata, out, err, errlen);
}
