/* tests/test_aead.c - AES-256-GCM frames on TCP loopback links: concurrent round trips on 1 and 3
 * streams with every size from 0 up, wrong key, corrupted and forged frames, replay, reordering
 * and loss (frames captured from and injected into the raw sockets), the size limit of encrypted
 * links, one side encrypting alone, and counter exhaustion. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "transport/aead.h"
#include "transport/link_impl.h"
#include "link_util.h"
#include "testutil.h"

#define TAG VFMIG_AEAD_TAG_BYTES
#define HDR VFMIG_FRAME_HDR_BYTES

static void fill(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)t_rand(&s);
}

static uint8_t key1[32], key2[32], key3[32];
/* 1: the same cases with integrity only (vfmig__link_enable_mac: Poly1305 tags, payload in clear). */
static int mac_mode;

static int enable(vfmig_link *l, const uint8_t *tx, const uint8_t *rx)
{
    return mac_mode ? vfmig__link_enable_mac(l, tx, rx) : vfmig__link_enable_aead(l, tx, rx);
}

/* Pair with encryption on both ends, keys crosswise. */
static void make_sealed_pair(unsigned n, vfmig_link **a, vfmig_link **b)
{
    make_pair(n, a, b);
    ASSERT_TRUE(!vfmig__link_aead_enabled(*a));
    ASSERT_OK(enable(*a, key1, key2));
    ASSERT_OK(enable(*b, key2, key1));
    ASSERT_TRUE(vfmig__link_aead_enabled(*a) && vfmig__link_aead_enabled(*b));
}

static void close_pair(vfmig_link *a, vfmig_link *b)
{
    vfmig_link_close(a);
    vfmig_link_close(b);
}

/* ---- concurrent round trips ---- */

static const uint32_t sizes[] = {0, 1, 15, 16, 17, 39, 40, 4095, 4096, 65536, 65577, 327680, 524288,
                                 1048576, 3000003, VFMIG_AEAD_DEFAULT_CAP};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))
#define BIG VFMIG_AEAD_DEFAULT_CAP
#define ROUNDS 2

static void *sender(void *p)
{
    xfer *x = p;
    uint8_t *buf = malloc(BIG);
    for (unsigned r = 0; r < ROUNDS && !x->status; r++)
        for (unsigned k = 0; k < NSIZES && !x->status; k++) {
            uint64_t s = x->seed + x->stream * 1000 + r * 100 + k;
            fill(buf, sizes[k] < 70000 ? sizes[k] : 70000, s); /* the rest: whatever malloc gave */
            memset(buf + (sizes[k] < 70000 ? sizes[k] : 70000), (int)k,
                   sizes[k] < 70000 ? 0 : sizes[k] - 70000);
            vfmig_frame f = {.type = VFMIG_F_PAGES, .codec = 1, .flags = (uint16_t)k, .len = sizes[k],
                             .round = r, .npages = k, .page = s, .aux = x->stream};
            x->status = vfmig__link_send(x->l, x->stream, &f, buf);
        }
    if (!x->status)
        x->status = vfmig__link_flush(x->l, x->stream);
    free(buf);
    return NULL;
}

static void *receiver(void *p)
{
    xfer *x = p;
    uint8_t *buf = malloc(BIG), *want = malloc(BIG);
    for (unsigned r = 0; r < ROUNDS && !x->status; r++)
        for (unsigned k = 0; k < NSIZES && !x->status; k++) {
            vfmig_frame f;
            x->status = vfmig__link_recv(x->l, x->stream, &f, buf, BIG, 5000);
            if (x->status)
                break;
            uint64_t s = x->seed + x->stream * 1000 + r * 100 + k;
            size_t head = sizes[k] < 70000 ? sizes[k] : 70000;
            fill(want, head, s);
            memset(want + head, (int)k, sizes[k] - head);
            if (f.type != VFMIG_F_PAGES || f.codec != 1 || f.flags != k || f.len != sizes[k] ||
                f.round != r || f.npages != k || f.page != s || f.aux != x->stream ||
                memcmp(buf, want, sizes[k]))
                x->status = -100;
        }
    free(buf);
    free(want);
    return NULL;
}

static void roundtrip(unsigned n, uint64_t seed)
{
    vfmig_link *a, *b;
    make_sealed_pair(n, &a, &b);
    run_roundtrip(a, b, n, seed, sender, receiver);
    /* Every frame, empty ones included, carries a tag. */
    uint64_t per_stream = 0;
    for (unsigned k = 0; k < NSIZES; k++)
        per_stream += HDR + sizes[k] + TAG;
    ASSERT_TRUE(vfmig__link_bytes_sent(a) == per_stream * ROUNDS * (n + 1));
    ASSERT_TRUE(vfmig__link_bytes_sent(b) == per_stream * ROUNDS * 2);
    /* Enabling twice is refused (the counters would restart under the same keys). */
    ASSERT_EQ(enable(a, key1, key2), VFMIG_EINVAL);
    close_pair(a, b);
}

/* ---- raw capture and injection ---- */

/* Reads exactly n bytes from a (non-blocking) socket, straight from the kernel. */
static void raw_read(int fd, void *dst, size_t n)
{
    uint8_t *d = dst;
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, d + got, n - got, 0);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r == 0)
            T_FAIL("raw read: peer closed");
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            T_FAIL("raw read: %s", strerror(errno));
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 2000) != 1)
            T_FAIL("raw read: nothing within 2 s");
    }
}

static void raw_write(int fd, const void *src, size_t n)
{
    const uint8_t *s = src;
    size_t put = 0;
    while (put < n) {
        ssize_t r = send(fd, s + put, n - put, MSG_NOSIGNAL);
        if (r > 0) {
            put += (size_t)r;
            continue;
        }
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            T_FAIL("raw write: %s", strerror(errno));
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        poll(&p, 1, 2000);
    }
}

typedef struct wire_frame {
    uint8_t bytes[HDR + 4096 + TAG];
    size_t n;
} wire_frame;

/* Sends f through a's link on stream s and takes its wire bytes off b's socket, so that b's link
 * never sees it. */
static void capture(vfmig_link *a, vfmig_link *b, unsigned s, const vfmig_frame *f, const void *pay,
                    wire_frame *w)
{
    ASSERT_TRUE(f->len <= 4096);
    ASSERT_OK(vfmig__link_send(a, s, f, pay));
    ASSERT_OK(vfmig__link_flush(a, s));
    w->n = HDR + f->len + TAG;
    raw_read(vfmig__tcp_stream_fd(b, s), w->bytes, w->n);
    ASSERT_EQ(vfmig_get_u32(w->bytes + 4), f->len + TAG);
}

static void inject(vfmig_link *a, unsigned s, const void *bytes, size_t n)
{
    raw_write(vfmig__tcp_stream_fd(a, s), bytes, n);
}

/* Fixes up a frame's checksum after the test changed it, as a forger would: over what the
 * checksum covers in each mode (ciphertext + tag when encrypted, header + tag when tagged). */
static void repack(const vfmig_frame *h, uint8_t *bytes, size_t n)
{
    vfmig__frame_pack(h, bytes + HDR, bytes);
    if (mac_mode)
        vfmig_put_u64(bytes + 32, vfmig__frame_csum2(bytes, bytes + n - TAG, TAG, NULL, 0));
}

static int recv_into(vfmig_link *b, unsigned s, vfmig_frame *g, uint8_t *buf, size_t cap)
{
    memset(buf, 0xee, cap);
    return vfmig__link_recv(b, s, g, buf, cap, 2000);
}

static void expect_auth_fail(vfmig_link *b, unsigned s, uint8_t *buf, size_t cap, const char *what)
{
    vfmig_frame g;
    ASSERT_EQ(recv_into(b, s, &g, buf, cap), VFMIG_EAUTH);
    char want[64];
    snprintf(want, sizeof(want), "stream %u: frame failed authentication", s);
    if (!strstr(vfmig__link_stream_error(b, s), want))
        T_FAIL("%s: error \"%s\"", what, vfmig__link_stream_error(b, s));
    fprintf(stderr, "  %s -> %s\n", what, vfmig__link_stream_error(b, s));
    /* Unauthenticated plaintext is not left in the caller's buffer. */
    for (size_t i = 0; i < cap && i < 64; i++)
        ASSERT_EQ(buf[i], 0);
}

static void test_tamper(unsigned n)
{
    vfmig_link *a, *b;
    make_sealed_pair(n, &a, &b);
    unsigned s = n; /* the last data stream */
    uint8_t pay[100], buf[100];
    fill(pay, sizeof(pay), 42);
    vfmig_frame f = {.type = VFMIG_F_PAGES, .len = 100, .round = 3, .npages = 1, .page = 7}, g;
    wire_frame w0, w1, w2, x;

    /* Genuine frame 0, injected as captured: accepted. */
    capture(a, b, s, &f, pay, &w0);
    if (mac_mode)
        ASSERT_TRUE(memcmp(w0.bytes + HDR, pay, 100) == 0); /* integrity only: payload in clear */
    else
        ASSERT_TRUE(memcmp(w0.bytes + HDR, pay, 16) != 0); /* the payload is not in clear */
    inject(a, s, w0.bytes, w0.n);
    ASSERT_OK(recv_into(b, s, &g, buf, sizeof(buf)));
    ASSERT_EQ(g.len, 100);
    ASSERT_EQ(g.page, 7);
    ASSERT_EQ(memcmp(buf, pay, 100), 0);

    /* Replay of frame 0: the receiver expects counter 1. */
    inject(a, s, w0.bytes, w0.n);
    expect_auth_fail(b, s, buf, sizeof(buf), "replayed frame");

    /* Frames 1 and 2 captured; a bit flipped in the ciphertext with the checksum left alone is
     * corruption; with the checksum recomputed it is forgery. */
    f.page = 8;
    capture(a, b, s, &f, pay, &w1);
    f.page = 9;
    capture(a, b, s, &f, pay, &w2);
    x = w1;
    x.bytes[HDR + 33] ^= 0x10;
    inject(a, s, x.bytes, x.n);
    vfmig_frame h;
    if (mac_mode) {
        /* Tagged: the checksum covers header and tag, so the tag is what catches it. */
        expect_auth_fail(b, s, buf, sizeof(buf), "payload bit flipped");
    } else {
        ASSERT_EQ(recv_into(b, s, &g, buf, sizeof(buf)), VFMIG_ECHECKSUM);
        fprintf(stderr, "  ciphertext bit flipped -> %s\n", vfmig__link_stream_error(b, s));
    }
    ASSERT_OK(vfmig__frame_unpack(x.bytes, VFMIG_FRAME_MAX_PAYLOAD, &h, NULL));
    repack(&h, x.bytes, x.n);
    inject(a, s, x.bytes, x.n);
    expect_auth_fail(b, s, buf, sizeof(buf), "ciphertext bit flipped, checksum recomputed");
    /* The tag itself altered, checksum recomputed. */
    x = w1;
    x.bytes[x.n - 1] ^= 0x80;
    repack(&h, x.bytes, x.n);
    inject(a, s, x.bytes, x.n);
    expect_auth_fail(b, s, buf, sizeof(buf), "tag altered, checksum recomputed");
    /* Header fields changed (each in turn), checksum recomputed: the header is the AAD. */
    static const char *const fields[] = {"page", "round", "aux", "type", "codec", "flags"};
    for (int field = 0; field < 6; field++) {
        x = w1;
        ASSERT_OK(vfmig__frame_unpack(x.bytes, VFMIG_FRAME_MAX_PAYLOAD, &h, NULL));
        switch (field) {
        case 0: h.page ^= 1; break;
        case 1: h.round++; break;
        case 2: h.aux = 1; break;
        case 3: h.type = VFMIG_F_MUTABLE; break;
        case 4: h.codec = 2; break;
        default: h.flags = 2; break; /* not 1: VFMIG_FRAME_FLAG_UNCHECKED changes what the checksum covers */
        }
        repack(&h, x.bytes, x.n);
        inject(a, s, x.bytes, x.n);
        char what[64];
        snprintf(what, sizeof(what), "header %s changed, checksum recomputed", fields[field]);
        expect_auth_fail(b, s, buf, sizeof(buf), what);
    }
    /* Truncated ciphertext with the length and checksum fixed up. */
    x = w1;
    ASSERT_OK(vfmig__frame_unpack(x.bytes, VFMIG_FRAME_MAX_PAYLOAD, &h, NULL));
    memmove(x.bytes + HDR + 50, x.bytes + HDR + 51, x.n - HDR - 51);
    h.len--;
    x.n--;
    repack(&h, x.bytes, x.n);
    inject(a, s, x.bytes, x.n);
    expect_auth_fail(b, s, buf, sizeof(buf), "ciphertext shortened, length and checksum fixed");

    /* Reordered (2 before 1) and dropped (1 never comes) frames fail; the failures consumed
     * nothing, so frame 1 then 2 still go through and the stream is in step. */
    inject(a, s, w2.bytes, w2.n);
    expect_auth_fail(b, s, buf, sizeof(buf), "reordered frame");
    inject(a, s, w1.bytes, w1.n);
    ASSERT_OK(recv_into(b, s, &g, buf, sizeof(buf)));
    ASSERT_EQ(g.page, 8);
    inject(a, s, w2.bytes, w2.n);
    ASSERT_OK(recv_into(b, s, &g, buf, sizeof(buf)));
    ASSERT_EQ(g.page, 9);
    ASSERT_EQ(memcmp(buf, pay, 100), 0);

    /* Empty frames are authenticated too: with its header changed control frame 0 fails; as
     * sent it passes. */
    vfmig_frame e = {.type = VFMIG_F_GO, .aux = 5};
    capture(a, b, 0, &e, NULL, &w0);
    ASSERT_EQ(w0.n, HDR + TAG);
    x = w0;
    ASSERT_OK(vfmig__frame_unpack(x.bytes, VFMIG_FRAME_MAX_PAYLOAD, &h, NULL));
    h.aux = 0;
    repack(&h, x.bytes, x.n);
    inject(a, 0, x.bytes, x.n);
    expect_auth_fail(b, 0, buf, 0, "empty frame with its header changed");
    inject(a, 0, w0.bytes, w0.n);
    ASSERT_OK(vfmig__link_recv(b, 0, &g, NULL, 0, 2000));
    ASSERT_EQ(g.type, VFMIG_F_GO);
    ASSERT_EQ(g.aux, 5);
    ASSERT_EQ(g.len, 0);

    /* A frame moved to another stream at the same counter: the nonce holds the stream index. */
    if (n >= 3) {
        capture(a, b, 2, &f, pay, &w0);
        inject(a, 1, w0.bytes, w0.n);
        expect_auth_fail(b, 1, buf, sizeof(buf), "frame moved to another stream");
        inject(a, 2, w0.bytes, w0.n);
        ASSERT_OK(recv_into(b, 2, &g, buf, sizeof(buf)));
    }
    close_pair(a, b);
}

/* ---- keys ---- */

static void test_wrong_key(void)
{
    vfmig_link *a, *b;
    make_pair(1, &a, &b);
    ASSERT_OK(enable(a, key1, key2));
    ASSERT_OK(enable(b, key2, key3)); /* b opens with key3, a seals with key1 */
    uint8_t pay[64] = "secret", buf[64];
    vfmig_frame f = {.type = VFMIG_F_PAGES, .len = 64}, g;
    for (unsigned s = 0; s <= 1; s++) {
        ASSERT_OK(vfmig__link_send(a, s, &f, pay));
        ASSERT_OK(vfmig__link_flush(a, s));
        expect_auth_fail(b, s, buf, sizeof(buf), "wrong key");
    }
    /* The other direction has matching keys and works. */
    ASSERT_OK(vfmig__link_send(b, 1, &f, pay));
    ASSERT_OK(vfmig__link_flush(b, 1));
    ASSERT_OK(vfmig__link_recv(a, 1, &g, buf, sizeof(buf), 2000));
    ASSERT_EQ(memcmp(buf, pay, 64), 0);
    /* Crosswise mistake: both ends seal with the same key they open with. */
    close_pair(a, b);
    make_pair(1, &a, &b);
    ASSERT_OK(enable(a, key1, key2));
    ASSERT_OK(enable(b, key1, key2));
    ASSERT_OK(vfmig__link_send(a, 1, &f, pay));
    ASSERT_OK(vfmig__link_flush(a, 1));
    expect_auth_fail(b, 1, buf, sizeof(buf), "keys not crosswise");
    close_pair(a, b);
}

/* ---- limits ---- */

typedef struct big_recv {
    vfmig_link *l;
    uint8_t *buf;
    size_t cap;
    vfmig_frame f;
    int status;
} big_recv;

static void *big_receiver(void *p)
{
    big_recv *r = p;
    r->status = vfmig__link_recv(r->l, 1, &r->f, r->buf, r->cap, 5000);
    return NULL;
}

static void test_limits(void)
{
    vfmig_link *a, *b;
    make_pair(1, &a, &b);
    uint8_t *big = calloc(1, (5u << 20) + TAG), *buf = malloc((5u << 20) + TAG);
    vfmig_frame f = {.type = VFMIG_F_PAGES}, g;

    /* Default: 4 MiB payloads are the limit of an encrypted link; a larger send is refused with
     * a clear message before anything is written. */
    ASSERT_OK(enable(a, key1, key2));
    ASSERT_OK(enable(b, key2, key1));
    f.len = VFMIG_AEAD_DEFAULT_CAP + 1;
    ASSERT_EQ(vfmig__link_send(a, 1, &f, big), VFMIG_EINVAL);
    ASSERT_TRUE(strstr(vfmig__link_stream_error(a, 1), mac_mode ? "over the 4194304-byte limit of keyed links" : "over the 4194304-byte limit of encrypted links"));
    fprintf(stderr, "  oversized send -> %s\n", vfmig__link_stream_error(a, 1));
    /* Exactly the limit passes (received concurrently: it does not fit the socket buffers). */
    f.len = VFMIG_AEAD_DEFAULT_CAP;
    big_recv br = {.l = b, .buf = buf, .cap = 5u << 20};
    pthread_t t;
    pthread_create(&t, NULL, big_receiver, &br);
    ASSERT_OK(vfmig__link_send(a, 1, &f, big));
    ASSERT_OK(vfmig__link_flush(a, 1));
    pthread_join(t, NULL);
    ASSERT_OK(br.status);
    ASSERT_EQ(br.f.len, VFMIG_AEAD_DEFAULT_CAP);
    /* The receive buffer must hold the plaintext, not the ciphertext. */
    f.len = 1000;
    ASSERT_OK(vfmig__link_send(a, 1, &f, big));
    ASSERT_OK(vfmig__link_flush(a, 1));
    ASSERT_OK(vfmig__link_recv(b, 1, &g, buf, 1000, 2000));
    /* A raw header announcing more than the receiver's encryption buffer is refused before any
     * payload is read. */
    vfmig_frame o = {.type = VFMIG_F_PAGES, .len = (5u << 20) + TAG};
    uint8_t hdr[HDR];
    vfmig__frame_pack(&o, big, hdr);
    inject(a, 1, hdr, HDR);
    ASSERT_EQ(vfmig__link_recv(b, 1, &g, buf, (5u << 20) + TAG, 2000), VFMIG_EPROTO);
    ASSERT_TRUE(strstr(vfmig__link_stream_error(b, 1), mac_mode ? "limit of keyed links" : "limit of encrypted links"));
    fprintf(stderr, "  oversized frame received -> %s\n", vfmig__link_stream_error(b, 1));
    close_pair(a, b);

    /* Lowered max payload before enabling: it bounds the plaintext on both ends. */
    make_pair(1, &a, &b);
    vfmig__link_set_max_payload(a, 1000);
    vfmig__link_set_max_payload(b, 1000);
    ASSERT_OK(enable(a, key1, key2));
    ASSERT_OK(enable(b, key2, key1));
    f.len = 1001;
    ASSERT_EQ(vfmig__link_send(a, 1, &f, big), VFMIG_EINVAL);
    ASSERT_TRUE(strstr(vfmig__link_stream_error(a, 1), mac_mode ? "over the 1000-byte limit of keyed links" : "over the 1000-byte limit of encrypted links"));
    f.len = 1000;
    ASSERT_OK(vfmig__link_send(a, 1, &f, big));
    ASSERT_OK(vfmig__link_flush(a, 1));
    ASSERT_OK(vfmig__link_recv(b, 1, &g, buf, 1000, 2000)); /* 1016 bytes on the wire */
    ASSERT_EQ(g.len, 1000);
    /* Buffer one byte short of the plaintext. */
    ASSERT_OK(vfmig__link_send(a, 1, &f, big));
    ASSERT_OK(vfmig__link_flush(a, 1));
    ASSERT_EQ(vfmig__link_recv(b, 1, &g, buf, 999, 2000), VFMIG_EPROTO);
    ASSERT_TRUE(strstr(vfmig__link_stream_error(b, 1), "1000 bytes larger than the 999-byte buffer"));
    close_pair(a, b);

    /* Bad arguments. */
    ASSERT_EQ(vfmig__link_enable_aead(NULL, key1, key2), VFMIG_EINVAL);
    ASSERT_TRUE(!vfmig__link_aead_enabled(NULL));
    free(big);
    free(buf);
}

/* ---- one side only ---- */

static void test_one_side(void)
{
    vfmig_link *a, *b;
    make_pair(1, &a, &b);
    ASSERT_OK(enable(a, key1, key2)); /* b stays plain */
    uint8_t pay[200], buf[200];
    fill(pay, sizeof(pay), 9);
    vfmig_frame f = {.type = VFMIG_F_PAGES, .len = 200}, e = {.type = VFMIG_F_GO}, g;
    /* plain -> encrypting: no tag (short frame) or a tag that does not verify. */
    ASSERT_OK(vfmig__link_send(b, 0, &e, NULL));
    ASSERT_OK(vfmig__link_send(b, 1, &f, pay));
    ASSERT_OK(vfmig__link_flush(b, 0));
    ASSERT_OK(vfmig__link_flush(b, 1));
    ASSERT_EQ(vfmig__link_recv(a, 0, &g, buf, sizeof(buf), 2000), VFMIG_EAUTH);
    ASSERT_TRUE(strstr(vfmig__link_stream_error(a, 0), "has no authentication tag"));
    fprintf(stderr, "  plain empty frame at an encrypting end -> %s\n", vfmig__link_stream_error(a, 0));
    ASSERT_EQ(vfmig__link_recv(a, 1, &g, buf, sizeof(buf), 2000), VFMIG_EAUTH);
    fprintf(stderr, "  plain frame at an encrypting end -> %s\n", vfmig__link_stream_error(a, 1));
    /* encrypting -> plain: 16 bytes more than announced by the protocol, so a receiver with an
     * exact-size buffer refuses it. (With a larger buffer the link cannot tell: the engine's
     * length checks and the handshake agreeing on encryption are what catch it.) */
    ASSERT_OK(vfmig__link_send(a, 0, &e, NULL));
    ASSERT_OK(vfmig__link_send(a, 1, &f, pay));
    ASSERT_OK(vfmig__link_flush(a, 0));
    ASSERT_OK(vfmig__link_flush(a, 1));
    ASSERT_EQ(vfmig__link_recv(b, 0, &g, NULL, 0, 2000), VFMIG_EPROTO);
    fprintf(stderr, "  sealed empty frame at a plain end -> %s\n", vfmig__link_stream_error(b, 0));
    ASSERT_EQ(vfmig__link_recv(b, 1, &g, buf, sizeof(buf), 2000), VFMIG_EPROTO);
    fprintf(stderr, "  sealed frame at a plain end -> %s\n", vfmig__link_stream_error(b, 1));
    close_pair(a, b);
}

/* ---- counter exhaustion ---- */

static void test_counter_end(void)
{
    vfmig_link *a, *b;
    make_sealed_pair(1, &a, &b);
    vfmig__aead_set_counters(a->aead, 1, UINT64_MAX - 1, 0);
    vfmig__aead_set_counters(b->aead, 1, 0, UINT64_MAX - 1);
    uint8_t pay[10] = "0123456789", buf[10];
    vfmig_frame f = {.type = VFMIG_F_PAGES, .len = 10}, g;
    ASSERT_OK(vfmig__link_send(a, 1, &f, pay)); /* the last counter value that may be used */
    ASSERT_OK(vfmig__link_flush(a, 1));
    ASSERT_OK(vfmig__link_recv(b, 1, &g, buf, sizeof(buf), 2000));
    ASSERT_EQ(memcmp(buf, pay, 10), 0);
    ASSERT_EQ(vfmig__link_send(a, 1, &f, pay), VFMIG_EPROTO);
    ASSERT_TRUE(strstr(vfmig__link_stream_error(a, 1), "frame counter exhausted"));
    fprintf(stderr, "  counter at 2^64-1 -> %s\n", vfmig__link_stream_error(a, 1));
    /* Other streams keep their own counters. */
    ASSERT_OK(vfmig__link_send(a, 0, &f, pay));
    ASSERT_OK(vfmig__link_flush(a, 0));
    ASSERT_OK(vfmig__link_recv(b, 0, &g, buf, sizeof(buf), 2000));
    close_pair(a, b);
}

int main(void)
{
    uint64_t seed = t_seed();
    double t0 = now_s();
    uint64_t k = seed;
    for (int i = 0; i < 32; i++) {
        key1[i] = (uint8_t)t_rand(&k);
        key2[i] = (uint8_t)t_rand(&k);
        key3[i] = (uint8_t)t_rand(&k);
    }
    for (mac_mode = 0; mac_mode < 2; mac_mode++) {
        fprintf(stderr, "== %s\n", mac_mode ? "integrity only (Poly1305 tags)" : "AES-256-GCM");
        roundtrip(1, seed);
        roundtrip(3, seed);
        test_tamper(1);
        test_tamper(3);
        test_wrong_key();
        test_limits();
        test_one_side();
        test_counter_end();
    }
    printf("test_aead: ok (%.2f s)\n", now_s() - t0);
    return 0;
}
