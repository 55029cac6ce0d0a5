/*
 * engine/server.c - a target that keeps serving (include/vfmig.h, "Server").
 *
 * The thread that calls vfmig_server_run accepts links (transport/tcp.c does stream setup with
 * its own limits) and starts one thread per link. That thread authenticates the source with a
 * 4 KiB buffer and a bounded wait, and only then asks the embedder for a device, creates a
 * target session that starts after the HELLO (session.preauth_hello) and runs it. The accept
 * thread also keeps the handshake limits: a link that is not authenticated within
 * handshake_timeout_ms is interrupted, and when max_handshakes are pending the oldest idle one is
 * interrupted to make room (real sources authenticate within a round trip or two, so the oldest
 * pending link is the likeliest stranger). Nothing one connection does reaches another: each has
 * its own link, session, device and thread, and every error ends only that thread.
 *
 * Admission (admit) comes between authentication and the device: a session slot, the VF within
 * max_vram_bytes, and what the session will hold (session_bytes) reserved from the memory
 * budget, all under one lock so that concurrent announcements cannot sum past it. Nothing sized
 * by the source's numbers is allocated before it (an unkeyed source is not even answered: its
 * HELLO_ACK, and the larger frames it allows, come after admission).
 */
#define _GNU_SOURCE
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "compress/codec.h"
#include "engine/auth.h"
#include "engine/image.h"
#include "engine/proto.h"
#include "engine/session.h"
#include "transport/link.h"

#define HS_BUF 4096 /* handshake payloads: a HELLO is at most VFMIG_HELLO_MAX_BYTES */
#define REFUSAL_LINGER_MS 200 /* how long a refused source gets to read why before we close */
#define CONN_STACK (512u << 10)
/* The struct as it was before sizes came (it ended with timeout_ms): older binaries' size. */
#define CFG_V1_SIZE offsetof(vfmig_server_config, max_vram_bytes)
#define CTR_V1_SIZE offsetof(vfmig_server_counters, refused_busy)

enum { INTR_DEADLINE = 1, INTR_EVICTED = 2, INTR_STOP = 3 };

typedef enum conn_state { C_HANDSHAKE, C_AUTHED, C_SESSION, C_DONE } conn_state;

typedef struct conn {
    struct vfmig_server *srv;
    struct conn *next;
    pthread_t thread;
    vfmig_link *link;          /* closed and cleared under srv->lock */
    _Atomic int state;
    _Atomic int interrupted;   /* why its link was interrupted: INTR_* */
    atomic_bool heard;         /* its HELLO arrived: not an idle connection */
    bool told;                 /* refused with a reason it should get to read (its own thread) */
    uint64_t start_ns;
    vfmig_session *session;    /* under srv->lock, while C_SESSION */
    uint64_t reserved;         /* of srv->reserved, under srv->lock: this session's memory */
    vfmig_incoming in;
    vfmig_hello hello;
    uint8_t buf[HS_BUF];
} conn;

struct vfmig_server {
    vfmig_server_config cfg;
    vfmig_server_callbacks cb;
    char endpoint[512];
    vfmig_keyring keys;
    vfmig_listener *listener;
    atomic_int stop;
    atomic_bool ran;
    pthread_mutex_t lock;      /* conns, counters, active */
    conn *conns;
    uint64_t next_id;
    unsigned active;           /* sessions running */
    uint64_t reserved;         /* memory reserved by admitted sessions (the budget's used part) */
    vfmig_server_counters ctr;
};

/* The host's memory: the budget when none is given. */
static uint64_t phys_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : UINT64_MAX;
}

void vfmig_server_config_init_sized(vfmig_server_config *cfg, size_t size)
{
    if (!cfg || !size)
        return;
    vfmig_server_config d;
    memset(&d, 0, sizeof(d));
    d.max_sessions = 4;
    d.max_handshakes = 128;
    d.handshake_timeout_ms = 5000;
    /* max_vram_bytes, max_memory_bytes: 0, their defaults (create works them out). */
    memcpy(cfg, &d, size < sizeof(d) ? size : sizeof(d));
}

/* The exported names behind the header's macros (parenthesised: not expanded). */
void(vfmig_server_config_init)(vfmig_server_config *cfg)
{
    vfmig_server_config_init_sized(cfg, CFG_V1_SIZE);
}

int vfmig_endpoint_is_loopback(const char *endpoint)
{
    vfmig_endpoint ep;
    char err[8];
    if (vfmig__endpoint_parse(endpoint, &ep, err, sizeof(err)))
        return VFMIG_EADDR;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    /* An empty host (or "*") would bind every address: not loopback. */
    if (!ep.host[0] || getaddrinfo(ep.host, NULL, &hints, &res))
        return 0;
    int lo = 1;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
            uint32_t ip = ntohl(((struct sockaddr_in *)a->ai_addr)->sin_addr.s_addr);
            lo &= (ip >> 24) == 127;
        } else if (a->ai_family == AF_INET6) {
            lo &= IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr) != 0;
        } else {
            lo = 0;
        }
    }
    freeaddrinfo(res);
    return lo;
}

static void seterr(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

int vfmig_server_create_sized(const vfmig_server_config *cfg_in, size_t cfg_size, const vfmig_server_callbacks *cb,
                              vfmig_server **out, char *err, size_t errlen)
{
    if (!cfg_in || !cb || !out || !cfg_in->endpoint || !cb->open_device || !cb->finished) {
        seterr(err, errlen, "server: endpoint, open_device and finished are required");
        return VFMIG_EINVAL;
    }
    *out = NULL;
    if (cfg_size < CFG_V1_SIZE) {
        seterr(err, errlen, "server: config size smaller than any vfmig_server_config");
        return VFMIG_EINVAL;
    }
    /* Only what the caller's struct has; later fields stay 0, which means their default. */
    vfmig_server_config cfg_copy;
    memset(&cfg_copy, 0, sizeof(cfg_copy));
    memcpy(&cfg_copy, cfg_in, cfg_size < sizeof(cfg_copy) ? cfg_size : sizeof(cfg_copy));
    const vfmig_server_config *cfg = &cfg_copy;
    uint64_t max_mem = cfg->max_memory_bytes ? cfg->max_memory_bytes : phys_memory();
    uint64_t max_vram = cfg->max_vram_bytes ? cfg->max_vram_bytes : VFMIG_SERVER_DEFAULT_MAX_VRAM;
    if (!cfg->max_vram_bytes && max_vram > max_mem)
        max_vram = max_mem;
    if (max_vram > max_mem) {
        if (err && errlen) {
            char v[32], m[32];
            vfmig__format_size(max_vram, v, sizeof(v));
            vfmig__format_size(max_mem, m, sizeof(m));
            snprintf(err, errlen, "server: the largest VF (%s) is over the memory budget (%s): none that size "
                     "could ever be admitted", v, m);
        }
        return VFMIG_EINVAL;
    }
    if ((cfg->psk && (cfg->psk_len < VFMIG_PSK_MIN || cfg->psk_len > VFMIG_PSK_MAX)) ||
        (cfg->psk2 && (cfg->psk2_len < VFMIG_PSK_MIN || cfg->psk2_len > VFMIG_PSK_MAX)) || (cfg->psk2 && !cfg->psk)) {
        seterr(err, errlen, "server: keys must be 32 to 256 bytes (a second key only beside a first)");
        return VFMIG_EINVAL;
    }
    if (cfg->require_encrypt && !cfg->psk) {
        seterr(err, errlen, "server: encryption needs a key");
        return VFMIG_EINVAL;
    }
    if (strlen(cfg->endpoint) >= sizeof(((vfmig_server *)0)->endpoint)) {
        seterr(err, errlen, "server: endpoint too long");
        return VFMIG_EADDR;
    }
    int lo = vfmig_endpoint_is_loopback(cfg->endpoint);
    if (lo < 0) {
        char e2[256];
        vfmig_endpoint_validate(cfg->endpoint, e2, sizeof(e2));
        seterr(err, errlen, e2);
        return lo;
    }
    if (!cfg->psk && !lo && !cfg->allow_insecure) {
        if (err && errlen)
            snprintf(err, errlen,
                     "refusing to listen on %s without a key: anyone who reaches it could write a VF's memory "
                     "and have it run; give a key (vfmig keygen FILE, then --psk-file FILE on both ends), "
                     "listen on loopback, or allow it explicitly (--insecure)",
                     cfg->endpoint);
        return VFMIG_EAUTH;
    }
    vfmig_server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return VFMIG_ENOMEM;
    srv->cfg = *cfg;
    srv->cb = *cb;
    snprintf(srv->endpoint, sizeof(srv->endpoint), "%s", cfg->endpoint);
    srv->cfg.endpoint = srv->endpoint;
    srv->cfg.psk = srv->cfg.psk2 = NULL; /* only the keyring keeps them */
    if (cfg->psk) {
        memcpy(srv->keys.key[0], cfg->psk, cfg->psk_len);
        srv->keys.len[0] = cfg->psk_len;
        srv->keys.n = 1;
        if (cfg->psk2) {
            memcpy(srv->keys.key[1], cfg->psk2, cfg->psk2_len);
            srv->keys.len[1] = cfg->psk2_len;
            srv->keys.n = 2;
        }
    }
    if (!srv->cfg.max_sessions)
        srv->cfg.max_sessions = 4;
    if (!srv->cfg.max_handshakes)
        srv->cfg.max_handshakes = 128;
    if (srv->cfg.handshake_timeout_ms <= 0)
        srv->cfg.handshake_timeout_ms = 5000;
    srv->cfg.max_vram_bytes = max_vram;
    srv->cfg.max_memory_bytes = max_mem;
    srv->next_id = 1;
    pthread_mutex_init(&srv->lock, NULL);
    int rc = vfmig_listen(srv->endpoint, &srv->listener, err, errlen);
    if (rc) {
        vfmig_server_destroy(srv);
        return rc;
    }
    *out = srv;
    return VFMIG_OK;
}

int(vfmig_server_create)(const vfmig_server_config *cfg, const vfmig_server_callbacks *cb, vfmig_server **out,
                         char *err, size_t errlen)
{
    return vfmig_server_create_sized(cfg, CFG_V1_SIZE, cb, out, err, errlen);
}

int vfmig_server_port(const vfmig_server *srv)
{
    return srv ? vfmig_listener_port(srv->listener) : VFMIG_EINVAL;
}

void vfmig_server_stop(vfmig_server *srv)
{
    if (srv)
        atomic_store(&srv->stop, 1);
}

int vfmig_server_get_counters_sized(vfmig_server *srv, vfmig_server_counters *out, size_t size)
{
    if (!srv || !out || !size)
        return VFMIG_EINVAL;
    pthread_mutex_lock(&srv->lock);
    vfmig_server_counters k = srv->ctr;
    k.active_sessions = srv->active;
    unsigned pending = 0;
    for (conn *c = srv->conns; c; c = c->next) /* those interrupted are only winding down */
        pending += atomic_load(&c->state) == C_HANDSHAKE && !atomic_load(&c->interrupted);
    k.pending_handshakes = pending;
    k.reserved_bytes = srv->reserved;
    pthread_mutex_unlock(&srv->lock);
    k.max_memory_bytes = srv->cfg.max_memory_bytes;
    k.max_vram_bytes = srv->cfg.max_vram_bytes;
    memcpy(out, &k, size < sizeof(k) ? size : sizeof(k));
    return VFMIG_OK;
}

void(vfmig_server_get_counters)(vfmig_server *srv, vfmig_server_counters *out)
{
    vfmig_server_get_counters_sized(srv, out, CTR_V1_SIZE);
}

/* ---- Admission ---------------------------------------------------------------------------- */

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    return b && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

/* The payload bound the source's batch implies (its frames, and the keyed scratch at auth). */
static size_t frame_bound(const vfmig_hello *h)
{
    size_t bound = vfmig__codec_bound(h->batch_bytes);
    return bound < (1u << 20) + 4096 ? (1u << 20) + 4096 : bound; /* the target's control buffer */
}

/* The VF as announced: the sum of its ranges (each may be up to 2^61 bytes: saturated). */
static uint64_t vf_bytes(const vfmig_hello *h)
{
    uint64_t v = 0;
    for (uint32_t i = 0; i < h->nranges; i++)
        v = sat_add(v, h->range_size[i]);
    return v;
}

/* An estimate of what a target session holds for this VF, from what engine/target.c,
 * receive.c, session.c and transport/tcp.c, aead.c allocate for it. Thread stacks and the
 * allocator's slack are left out; the codec contexts are taken at their decoding size. */
#define EST_CODEC_CTX (256u << 10)                     /* lz4 state + zstd contexts of one applier */
#define EST_STREAM_BUFS (2u << 20)                     /* tcp.c: 1 MiB send + 1 MiB receive a data stream */
#define EST_CONTROL ((1u << 20) + 4096 + (128u << 10)) /* target.c's control buffer, tcp.c's control stream */
static uint64_t session_bytes(const vfmig_hello *h, unsigned threads)
{
    uint64_t n = h->nstreams, batch = h->batch_bytes, cap = vfmig__codec_bound(batch), t = threads;
    uint64_t applier = 2 * batch + (batch / h->page_size + 1) * sizeof(uint64_t) + EST_CODEC_CTX;
    /* receive.c: with more threads than streams, a decode pool (2 buffers a decoder, one a
     * receiver) and an applier each; else one payload buffer and applier a receiver. */
    uint64_t rx = t > n ? (2 * t + n) * cap + (t + n) * applier : n * (cap + applier);
    /* Keyed frames: a scratch a stream for sending, and one for receiving when sealed. */
    uint64_t keyed = 0;
    if (h->flags & VFMIG_HELLO_FLAG_AUTH)
        keyed = (n + 1) * (frame_bound(h) + 16) * (h->flags & VFMIG_HELLO_FLAG_ENCRYPT ? 2 : 1);
    uint64_t fixed = EST_CONTROL + sizeof(vfmig_lin) + batch /* zero page run */ + n * EST_STREAM_BUFS + rx + keyed +
                     h->immutable_bytes;
    /* The VF itself, and per page its hash and its round (session.c, receive.c). */
    uint64_t b = sat_add(vf_bytes(h), sat_mul(h->npages, sizeof(uint64_t) + sizeof(uint32_t)));
    return sat_add(b, fixed);
}

/* The session's default thread count (vfmig__session_threads before configure sets one). */
static unsigned default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

/* Takes `bytes` more of the budget for c's session, or says why not. Under srv->lock. */
static int reserve_locked(conn *c, uint64_t bytes, const char *what, char *why, size_t whylen)
{
    vfmig_server *srv = c->srv;
    uint64_t budget = srv->cfg.max_memory_bytes, used = srv->reserved;
    if (bytes <= budget - used) {
        c->reserved += bytes;
        srv->reserved += bytes;
        return VFMIG_OK;
    }
    srv->ctr.refused_memory++;
    char need[32], fr[32], all[32];
    vfmig__format_size(bytes, need, sizeof(need));
    vfmig__format_size(budget - used, fr, sizeof(fr));
    vfmig__format_size(budget, all, sizeof(all));
    snprintf(why, whylen, "no room in this target's memory budget: %s needs %s, %s of its %s is free "
             "(%u migrations running); try later or another target", what, need, fr, all, srv->active);
    return VFMIG_EMEMLIMIT;
}

/* A session slot, the VF within max_vram_bytes, and its memory reserved: all before any device
 * or buffer for it. VFMIG_OK, or the status and why (nothing taken). */
static int admit(conn *c, char *why, size_t whylen)
{
    vfmig_server *srv = c->srv;
    uint64_t vf = vf_bytes(&c->hello), need = session_bytes(&c->hello, default_threads());
    char what[96], v[32], m[32];
    vfmig__format_size(vf, v, sizeof(v));
    snprintf(what, sizeof(what), "a VF of %s with its buffers", v);
    int rc = VFMIG_OK;
    pthread_mutex_lock(&srv->lock);
    atomic_store(&c->state, C_AUTHED);
    if (srv->active >= srv->cfg.max_sessions || atomic_load(&srv->stop)) {
        srv->ctr.refused_busy++;
        snprintf(why, whylen, "target busy: %u migrations running (the most it allows)", srv->cfg.max_sessions);
        rc = VFMIG_EBUSY;
    } else if (vf > srv->cfg.max_vram_bytes) {
        srv->ctr.refused_vram++;
        vfmig__format_size(srv->cfg.max_vram_bytes, m, sizeof(m));
        snprintf(why, whylen, "the VF of %s is larger than this target accepts (at most %s)", v, m);
        rc = VFMIG_ETOOBIG;
    } else if (!(rc = reserve_locked(c, need, what, why, whylen))) {
        srv->active++;
        c->in.id = srv->next_id++;
    }
    pthread_mutex_unlock(&srv->lock);
    return rc;
}

/* After configure: the session's own thread count may differ from the default estimated with;
 * the reservation follows it (more of the budget, or some given back). */
static int readmit(conn *c, vfmig_session *s, char *why, size_t whylen)
{
    vfmig_server *srv = c->srv;
    uint64_t want = session_bytes(&c->hello, vfmig__session_threads(s)), old = session_bytes(&c->hello, default_threads());
    int rc = VFMIG_OK;
    pthread_mutex_lock(&srv->lock);
    if (want < old) {
        c->reserved -= old - want;
        srv->reserved -= old - want;
    } else if (want > old) {
        rc = reserve_locked(c, want - old, "this session's decode threads", why, whylen);
    }
    pthread_mutex_unlock(&srv->lock);
    return rc;
}

/* session.reserve: the mutable state, when its size arrives. */
static int reserve_mutable(void *user, uint64_t bytes, char *why, size_t whylen)
{
    conn *c = user;
    pthread_mutex_lock(&c->srv->lock);
    int rc = reserve_locked(c, bytes, "the VF's mutable state", why, whylen);
    pthread_mutex_unlock(&c->srv->lock);
    return rc;
}

/* Ends a connection before any session: tells the embedder, counts it. */
static void refused(conn *c, int status, const char *why)
{
    vfmig_server *srv = c->srv;
    pthread_mutex_lock(&srv->lock);
    srv->ctr.refused++;
    pthread_mutex_unlock(&srv->lock);
    /* Not for links cut by a deadline, an eviction or a stop: those peers are idle or we leave. */
    c->told = !atomic_load(&c->interrupted);
    if (srv->cb.refused)
        srv->cb.refused(srv->cb.user, c->in.peer, status, why);
}

/* HELLO and authentication, with no device or session yet. VFMIG_OK once the source proved the
 * key (or, for a server without keys, sent a valid HELLO). On failure the source was told why. */
static int server_handshake(conn *c, char *why, size_t whylen)
{
    vfmig_server *srv = c->srv;
    vfmig_link *link = c->link;
    int hs_ms = srv->cfg.handshake_timeout_ms;
    /* Until the source proved the key, no frame may make us hold more than this buffer. */
    vfmig__link_set_max_payload(link, HS_BUF);
    vfmig__link_set_timeout(link, hs_ms);
    vfmig_frame f;
    int rc = vfmig__link_recv(link, 0, &f, c->buf, sizeof(c->buf), hs_ms);
    if (rc) {
        snprintf(why, whylen, "no HELLO: %s (%s)", vfmig_strerror(rc),
                 rc == VFMIG_ETIMEDOUT || rc == VFMIG_ECANCELED ? "handshake deadline" : vfmig__link_stream_error(link, 0));
        return rc;
    }
    if (f.type != VFMIG_F_HELLO) {
        snprintf(why, whylen, "handshake: expected HELLO, got frame type %u", f.type);
        vfmig__send_status(link, 0, VFMIG_F_HELLO_ACK, VFMIG_EPROTO, why);
        return VFMIG_EPROTO;
    }
    size_t hello_len = f.len;
    atomic_store(&c->heard, true);
    if ((rc = vfmig__hello_decode_first(c->buf, hello_len, &c->hello, why, whylen))) {
        vfmig__send_status(link, 0, VFMIG_F_HELLO_ACK, rc, why);
        return rc;
    }
    vfmig_hello *h = &c->hello;
    bool auth = h->flags & VFMIG_HELLO_FLAG_AUTH;
    const char *refuse = NULL;
    if (srv->keys.n && !auth)
        refuse = "this target requires authentication and the source offered none (no key?)";
    else if (!srv->keys.n && auth)
        refuse = "the source asks for authentication but this target has no key";
    else if (srv->cfg.require_encrypt && !(h->flags & VFMIG_HELLO_FLAG_ENCRYPT))
        refuse = "this target requires an encrypted link and the source did not ask for one";
    if (refuse) {
        snprintf(why, whylen, "%s", refuse);
        vfmig__send_status(link, 0, VFMIG_F_HELLO_ACK, VFMIG_EAUTH, refuse);
        return VFMIG_EAUTH;
    }
    size_t bound = frame_bound(h);
    if (auth) {
        rc = vfmig__auth_target(link, &srv->keys, c->buf, hello_len, h->nonce, h->key_id,
                               (h->flags & VFMIG_HELLO_FLAG_ENCRYPT) != 0, hs_ms, bound, why, whylen);
        if (rc)
            return rc;
        /* Authenticated: the VF's layout comes keyed, into the same small buffer. */
        vfmig_hello first = *h;
        if ((rc = vfmig__link_recv(link, 0, &f, c->buf, sizeof(c->buf), hs_ms))) {
            snprintf(why, whylen, "no layout after authentication: %s (%s)", vfmig_strerror(rc),
                     vfmig__link_stream_error(link, 0));
            return rc;
        }
        if (f.type != VFMIG_F_LAYOUT) {
            snprintf(why, whylen, "handshake: expected the VF's layout after authentication, got frame type %u",
                     f.type);
            return VFMIG_EPROTO;
        }
        if ((rc = vfmig__hello_decode_layout(c->buf, f.len, &first, h, why, whylen)))
            return rc;
    }
    /* Unkeyed: the HELLO_ACK (and frames beyond HS_BUF) wait for admission. */
    c->in.page_size = h->page_size;
    c->in.nranges = h->nranges;
    memcpy(c->in.range_size, h->range_size, sizeof(c->in.range_size));
    c->in.immutable_bytes = h->immutable_bytes;
    c->in.streams = h->nstreams;
    c->in.authenticated = auth;
    c->in.encrypted = (h->flags & VFMIG_HELLO_FLAG_ENCRYPT) != 0;
    return VFMIG_OK;
}

static void *conn_main(void *arg)
{
    conn *c = arg;
    vfmig_server *srv = c->srv;
    char why[400] = "";
    vfmig__link_peer_name(c->link, c->in.peer, sizeof(c->in.peer));
    int rc = server_handshake(c, why, sizeof(why));
    int intr = atomic_load(&c->interrupted);
    if (rc && intr) {
        /* The accept thread ended the wait: say which limit, not "canceled". */
        rc = intr == INTR_DEADLINE ? VFMIG_ETIMEDOUT : VFMIG_ECANCELED;
        snprintf(why, sizeof(why), "%s",
                 intr == INTR_DEADLINE ? "not authenticated within the handshake deadline"
                 : intr == INTR_EVICTED ? "dropped to make room: too many connections authenticating"
                                        : "server stopping");
    }
    if (rc) {
        /* Tell the source why, as a one-shot target would (a second word after a refusal already
         * sent is harmless: the source stops at the first; after a deadline the link is
         * interrupted and this still goes out). */
        if (rc != VFMIG_EABORTED)
            vfmig__send_status(c->link, 0, VFMIG_F_ABORT, rc, why);
        refused(c, rc, why);
        goto out;
    }
    /* Authenticated: admission. A refusal answers what the source waits for (the HELLO_ACK
     * unkeyed; keyed, the verdict on its immutable state), so its run returns this status. */
    int reply = c->in.authenticated ? VFMIG_F_IMM_ACK : VFMIG_F_HELLO_ACK;
    if ((rc = admit(c, why, sizeof(why)))) {
        vfmig__send_status(c->link, 0, reply, rc, why);
        refused(c, rc, why);
        goto out;
    }
    if (!c->in.authenticated) {
        vfmig__link_set_max_payload(c->link, frame_bound(&c->hello));
        if ((rc = vfmig__send_status(c->link, 0, VFMIG_F_HELLO_ACK, VFMIG_OK, ""))) {
            snprintf(why, sizeof(why), "sending the handshake reply: %s", vfmig__link_stream_error(c->link, 0));
            refused(c, rc, why);
            goto release;
        }
    }
    vfmig_device dev;
    void *dev_user = NULL;
    memset(&dev, 0, sizeof(dev));
    vfmig_session *s = NULL;
    rc = srv->cb.open_device(srv->cb.user, &c->in, &dev, &dev_user);
    if (rc) {
        snprintf(why, sizeof(why), "no device for this VF: %s", vfmig_strerror(rc));
        vfmig__send_status(c->link, 0, VFMIG_F_ABORT, rc, why);
        refused(c, rc, why);
    } else if ((rc = vfmig_session_create(VFMIG_ROLE_TARGET, &dev, &s, why, sizeof(why)))) {
        char msg[450];
        snprintf(msg, sizeof(msg), "target device refused: %s", why);
        vfmig__send_status(c->link, 0, VFMIG_F_ABORT, rc, msg);
        refused(c, rc, msg);
        srv->cb.finished(srv->cb.user, &c->in, NULL, rc, dev_user); /* the device goes back */
    } else {
        if (srv->cfg.timeout_ms > 0)
            vfmig_session_set_param(s, VFMIG_P_TIMEOUT_MS, srv->cfg.timeout_ms);
        s->preauth_hello = &c->hello;
        s->reserve = reserve_mutable;
        s->reserve_user = c;
        if (srv->cb.configure)
            srv->cb.configure(srv->cb.user, &c->in, s, dev_user);
        if ((rc = readmit(c, s, why, sizeof(why)))) {
            /* More threads than estimated with, and no room for them: refused before it runs
             * (the source now waits for the verdict on its immutable state). */
            vfmig__send_status(c->link, 0, VFMIG_F_IMM_ACK, rc, why);
            refused(c, rc, why);
            srv->cb.finished(srv->cb.user, &c->in, s, rc, dev_user);
            vfmig_session_destroy(s);
            goto release;
        }
        pthread_mutex_lock(&srv->lock);
        c->session = s;
        atomic_store(&c->state, C_SESSION);
        bool stopping = atomic_load(&srv->stop);
        pthread_mutex_unlock(&srv->lock);
        if (stopping)
            vfmig_session_cancel(s);
        rc = vfmig_session_run(s, c->link);
        pthread_mutex_lock(&srv->lock);
        c->session = NULL;
        if (rc)
            srv->ctr.sessions_failed++;
        else
            srv->ctr.sessions_ok++;
        pthread_mutex_unlock(&srv->lock);
        srv->cb.finished(srv->cb.user, &c->in, s, rc, dev_user);
        vfmig_session_destroy(s);
    }
release:
    pthread_mutex_lock(&srv->lock);
    srv->active--;
    srv->reserved -= c->reserved; /* the session and its device are gone */
    c->reserved = 0;
    pthread_mutex_unlock(&srv->lock);
out:
    pthread_mutex_lock(&srv->lock);
    vfmig_link *link = c->link;
    c->link = NULL;
    atomic_store(&c->state, C_DONE);
    pthread_mutex_unlock(&srv->lock);
    /* After a refusal the source is to read why: closing on its unread frames would reset the
     * connection and could lose the word. A bounded wait, on this connection's own thread. */
    vfmig__link_close_after_word(link, c->told ? REFUSAL_LINGER_MS : 0);
    return NULL;
}

/* Joins finished connection threads; with `all`, every one (after stop). */
static void reap(vfmig_server *srv, bool all)
{
    for (;;) {
        conn *done = NULL;
        pthread_mutex_lock(&srv->lock);
        for (conn **pp = &srv->conns; *pp; pp = &(*pp)->next)
            if (all || atomic_load(&(*pp)->state) == C_DONE) {
                done = *pp;
                *pp = done->next;
                break;
            }
        pthread_mutex_unlock(&srv->lock);
        if (!done)
            return;
        pthread_join(done->thread, NULL);
        free(done);
    }
}

/* Handshake limits: deadline per link, and room for a new one by dropping the oldest idle one
 * (no HELLO received nor waiting to be read), else the oldest: a real source sends its HELLO at
 * once, so a burst of strangers cannot push it out. Links are interrupted under the lock, while
 * their thread (which closes them) cannot be done. */
static void police(vfmig_server *srv, bool make_room)
{
    uint64_t now = vfmig__now_ns(), dl = (uint64_t)srv->cfg.handshake_timeout_ms * 1000000ull;
    pthread_mutex_lock(&srv->lock);
    unsigned pending = 0;
    conn *oldest = NULL, *oldest_idle = NULL;
    for (conn *c = srv->conns; c; c = c->next) {
        if (atomic_load(&c->state) != C_HANDSHAKE || atomic_load(&c->interrupted) || !c->link)
            continue;
        if (now - c->start_ns > dl) {
            atomic_store(&c->interrupted, INTR_DEADLINE);
            vfmig__link_interrupt(c->link);
            continue;
        }
        pending++;
        if (!oldest || c->start_ns < oldest->start_ns)
            oldest = c;
        if (make_room && !atomic_load(&c->heard) && !vfmig__link_control_readable(c->link) &&
            (!oldest_idle || c->start_ns < oldest_idle->start_ns))
            oldest_idle = c;
    }
    conn *victim = oldest_idle ? oldest_idle : oldest;
    if (make_room && pending >= srv->cfg.max_handshakes && victim) {
        atomic_store(&victim->interrupted, INTR_EVICTED);
        vfmig__link_interrupt(victim->link);
    }
    pthread_mutex_unlock(&srv->lock);
}

int vfmig_server_run(vfmig_server *srv)
{
    if (!srv)
        return VFMIG_EINVAL;
    bool expected = false;
    if (!atomic_compare_exchange_strong(&srv->ran, &expected, true))
        return VFMIG_ESTATE;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, CONN_STACK);
    while (!atomic_load(&srv->stop)) {
        reap(srv, false);
        police(srv, false);
        vfmig_link *link = NULL;
        char err[256];
        /* Short slices: stop, deadlines and reaping are looked at between them. */
        int rc = vfmig_accept(srv->listener, 50, &link, err, sizeof(err));
        if (rc)
            continue; /* a timeout, or one connection's trouble: the listener goes on */
        police(srv, true);
        conn *c = calloc(1, sizeof(*c));
        if (!c) {
            vfmig_link_close(link);
            continue;
        }
        c->srv = srv;
        c->link = link;
        c->start_ns = vfmig__now_ns();
        atomic_init(&c->state, C_HANDSHAKE);
        pthread_mutex_lock(&srv->lock);
        srv->ctr.links++;
        if (pthread_create(&c->thread, &attr, conn_main, c)) {
            pthread_mutex_unlock(&srv->lock);
            vfmig_link_close(link);
            free(c);
            continue;
        }
        c->next = srv->conns;
        srv->conns = c;
        pthread_mutex_unlock(&srv->lock);
    }
    pthread_attr_destroy(&attr);
    /* Stop: no new links; pending handshakes end now, sessions in flight are canceled with the
     * usual rollback, then every thread is joined. */
    pthread_mutex_lock(&srv->lock);
    for (conn *c = srv->conns; c; c = c->next) {
        if (c->session) {
            vfmig_session_cancel(c->session);
        } else if (c->link && atomic_load(&c->state) != C_SESSION) {
            atomic_store(&c->interrupted, INTR_STOP);
            vfmig__link_interrupt(c->link);
        }
    }
    pthread_mutex_unlock(&srv->lock);
    reap(srv, true);
    return VFMIG_OK;
}

void vfmig_server_destroy(vfmig_server *srv)
{
    if (!srv)
        return;
    reap(srv, true);
    vfmig_listener_close(srv->listener);
    explicit_bzero(&srv->keys, sizeof(srv->keys));
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}
