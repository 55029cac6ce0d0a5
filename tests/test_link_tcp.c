/* tests/test_link_tcp.c - TCP links on loopback: concurrent round trips on 1 and 4 streams,
 * timeouts, interruption, peer close, port in use, refusal, bandwidth cap, a data stream broken
 * mid-transfer, strangers at the listener, and hostile frames from a hand-made client. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "transport/link_impl.h"
#include "link_util.h"
#include "testutil.h"

/* ---- concurrent round trips ---- */

static const uint32_t sizes[] = {0, 1, 39, 40, 41, 4095, 4096, 65536, 65577, 300000, 524288, 1048576, 3000003};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))
#define ROUNDS 3

static void pattern(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = t_rand(&s);
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++)
        p[i] = (uint8_t)t_rand(&s);
}

static void *sender(void *p)
{
    xfer *x = p;
    uint8_t *buf = malloc(3000003);
    for (unsigned r = 0; r < ROUNDS && !x->status; r++)
        for (unsigned k = 0; k < NSIZES && !x->status; k++) {
            uint64_t s = x->seed + x->stream * 1000 + r * 100 + k;
            pattern(buf, sizes[k], s);
            vfmig_frame f = {.type = VFMIG_F_PAGES, .len = sizes[k], .round = r, .npages = k,
                             .page = s, .aux = x->stream};
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
    uint8_t *buf = malloc(3000003), *want = malloc(3000003);
    for (unsigned r = 0; r < ROUNDS && !x->status; r++)
        for (unsigned k = 0; k < NSIZES && !x->status; k++) {
            vfmig_frame f;
            x->status = vfmig__link_recv(x->l, x->stream, &f, buf, 3000003, 5000);
            if (x->status)
                break;
            uint64_t s = x->seed + x->stream * 1000 + r * 100 + k;
            pattern(want, sizes[k], s);
            if (f.type != VFMIG_F_PAGES || f.len != sizes[k] || f.round != r || f.npages != k ||
                f.page != s || f.aux != x->stream || memcmp(buf, want, sizes[k]))
                x->status = -100;
        }
    free(buf);
    free(want);
    return NULL;
}

static void roundtrip(unsigned n, uint64_t seed)
{
    vfmig_link *a, *b;
    make_pair(n, &a, &b);
    run_roundtrip(a, b, n, seed, sender, receiver);
    uint64_t per_stream = 0;
    for (unsigned k = 0; k < NSIZES; k++)
        per_stream += VFMIG_FRAME_HDR_BYTES + sizes[k];
    ASSERT_TRUE(vfmig__link_bytes_sent(a) == per_stream * ROUNDS * (n + 1));
    ASSERT_TRUE(vfmig__link_bytes_sent(b) == per_stream * ROUNDS * 2);
    vfmig_link_close(a);
    vfmig_link_close(b);
}

/* ---- timeouts, interruption, close ---- */

static void test_timeouts(void)
{
    vfmig_link *a, *b;
    make_pair(1, &a, &b);
    uint8_t buf[64];
    vfmig_frame f;
    double t0 = now_s();
    ASSERT_EQ(vfmig__link_recv(b, 1, &f, buf, sizeof(buf), 0), VFMIG_ETIMEDOUT);
    ASSERT_EQ(vfmig__link_recv(b, 0, &f, buf, sizeof(buf), 50), VFMIG_ETIMEDOUT);
    double dt = now_s() - t0;
    ASSERT_TRUE(dt >= 0.045 && dt < 2.0);
    /* A frame that starts but never finishes: header only, then silence -> link timeout. */
    vfmig__link_set_timeout(b, 100);
    int fd = vfmig__tcp_stream_fd(a, 1);
    uint8_t hdr[VFMIG_FRAME_HDR_BYTES];
    vfmig_frame g = {.type = VFMIG_F_PAGES, .len = 1000};
    uint8_t pay[1000] = {0};
    vfmig__frame_pack(&g, pay, hdr);
    ASSERT_EQ(send(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
    t0 = now_s();
    ASSERT_EQ(vfmig__link_recv(b, 1, &f, pay, sizeof(pay), 5000), VFMIG_ETIMEDOUT);
    dt = now_s() - t0;
    ASSERT_TRUE(dt >= 0.09 && dt < 2.0);
    ASSERT_TRUE(strstr(vfmig__link_stream_error(b, 1), "stream 1: rest of a frame") != NULL);
    /* Send blocked on a peer that does not read: link timeout. */
    vfmig__link_set_timeout(a, 100);
    static uint8_t big[1 << 20];
    vfmig_frame h = {.type = VFMIG_F_PAGES, .len = sizeof(big)};
    int r = VFMIG_OK;
    t0 = now_s();
    for (int i = 0; i < 400 && r == VFMIG_OK; i++)
        r = vfmig__link_send(a, 0, &h, big);
    ASSERT_EQ(r, VFMIG_ETIMEDOUT);
    ASSERT_TRUE(now_s() - t0 < 5.0);
    ASSERT_TRUE(strstr(vfmig__link_stream_error(a, 0), "stream 0: send stalled") != NULL);
    vfmig_link_close(a);
    vfmig_link_close(b);
}

typedef struct pump {
    vfmig_link *l;
    unsigned stream;
    int frames;
    int status;
} pump;

static void *pumper(void *p)
{
    pump *x = p;
    static _Thread_local uint8_t buf[1 << 16];
    vfmig_frame f = {.type = VFMIG_F_PAGES, .len = sizeof(buf)};
    for (int i = 0; i < x->frames && !x->status; i++)
        x->status = vfmig__link_send(x->l, x->stream, &f, buf);
    if (!x->status)
        x->status = vfmig__link_flush(x->l, x->stream);
    return NULL;
}

typedef struct blocked {
    vfmig_link *l;
    int status;
    double t;
} blocked;

static void *blocked_recv(void *p)
{
    blocked *x = p;
    uint8_t buf[16];
    vfmig_frame f;
    double t0 = now_s();
    x->status = vfmig__link_recv(x->l, 1, &f, buf, sizeof(buf), -1);
    x->t = now_s() - t0;
    return NULL;
}

static void test_interrupt(void)
{
    vfmig_link *a, *b;
    make_pair(2, &a, &b);
    blocked x[2] = {{.l = b}, {.l = b}};
    pthread_t t[2];
    pthread_create(&t[0], NULL, blocked_recv, &x[0]);
    usleep(50000);
    vfmig__link_interrupt(b);
    pthread_join(t[0], NULL);
    ASSERT_EQ(x[0].status, VFMIG_ECANCELED);
    ASSERT_TRUE(x[0].t < 5.0);
    /* Sticky: later calls return at once. */
    pthread_create(&t[1], NULL, blocked_recv, &x[1]);
    pthread_join(t[1], NULL);
    ASSERT_EQ(x[1].status, VFMIG_ECANCELED);
    vfmig_frame f = {.type = VFMIG_F_GO};
    ASSERT_EQ(vfmig__link_send(b, 0, &f, NULL), VFMIG_ECANCELED);
    ASSERT_EQ(vfmig__link_flush(b, 0), VFMIG_ECANCELED);
    /* A send blocked on a peer that does not read (b's stream 2) is woken too. */
    vfmig_link *c, *d;
    make_pair(2, &c, &d);
    pump q = {.l = c, .stream = 2, .frames = 1 << 20};
    pthread_t tq;
    pthread_create(&tq, NULL, pumper, &q);
    usleep(100000);
    double t1 = now_s();
    vfmig__link_interrupt(c);
    pthread_join(tq, NULL);
    ASSERT_EQ(q.status, VFMIG_ECANCELED);
    ASSERT_TRUE(now_s() - t1 < 2.0);
    vfmig_link_close(c);
    vfmig_link_close(d);
    /* An interrupt also ends a wait on the bandwidth cap (1000 B/s: the second frame waits). */
    vfmig__link_set_max_bandwidth(a, 1000);
    pump p = {.l = a, .stream = 1, .frames = 2};
    pthread_t tp;
    double t0 = now_s();
    pthread_create(&tp, NULL, pumper, &p);
    usleep(50000);
    vfmig__link_interrupt(a);
    pthread_join(tp, NULL);
    ASSERT_EQ(p.status, VFMIG_ECANCELED);
    ASSERT_TRUE(now_s() - t0 < 2.0);
    vfmig_link_close(a);
    vfmig_link_close(b);
}

static void test_peer_close(void)
{
    vfmig_link *a, *b;
    make_pair(1, &a, &b);
    vfmig_frame f = {.type = VFMIG_F_ROUND_END, .aux = 5};
    ASSERT_OK(vfmig__link_send(a, 1, &f, NULL));
    ASSERT_OK(vfmig__link_flush(a, 1));
    vfmig_link_close(a);
    uint8_t buf[16];
    vfmig_frame g;
    ASSERT_OK(vfmig__link_recv(b, 1, &g, buf, sizeof(buf), 1000)); /* what was sent still arrives */
    ASSERT_EQ(g.type, VFMIG_F_ROUND_END);
    ASSERT_EQ(g.aux, 5);
    ASSERT_EQ(vfmig__link_recv(b, 1, &g, buf, sizeof(buf), 1000), VFMIG_ECLOSED);
    ASSERT_EQ(vfmig__link_recv(b, 0, &g, buf, sizeof(buf), 1000), VFMIG_ECLOSED);
    ASSERT_TRUE(strstr(vfmig__link_stream_error(b, 0), "stream 0: connection closed by peer") != NULL);
    /* Sending into a closed peer fails with ECLOSED sooner or later (RST after the first write). */
    static uint8_t big[1 << 20];
    vfmig_frame h = {.type = VFMIG_F_PAGES, .len = sizeof(big)};
    int r = VFMIG_OK;
    for (int i = 0; i < 100 && r == VFMIG_OK; i++)
        r = vfmig__link_send(b, 1, &h, big);
    ASSERT_EQ(r, VFMIG_ECLOSED);
    vfmig_link_close(b);
}

static void test_addr_errors(void)
{
    vfmig_listener *L, *L2;
    char err[256], ep[64];
    ASSERT_OK(vfmig_listen("127.0.0.1:0", &L, err, sizeof(err)));
    int port = vfmig_listener_port(L);
    ASSERT_TRUE(port > 0);
    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", port);
    ASSERT_EQ(vfmig_listen(ep, &L2, err, sizeof(err)), VFMIG_EADDRINUSE);
    ASSERT_TRUE(strstr(err, "listen on 127.0.0.1") != NULL);
    /* Nobody completes a link: accept times out cleanly. */
    double t0 = now_s();
    vfmig_link *l;
    ASSERT_EQ(vfmig_accept(L, 50, &l, err, sizeof(err)), VFMIG_ETIMEDOUT);
    ASSERT_TRUE(now_s() - t0 < 2.0);
    vfmig_listener_close(L);
    /* The port is free now and nobody listens: refused at once. */
    t0 = now_s();
    ASSERT_EQ(vfmig_connect(ep, 5000, &l, err, sizeof(err)), VFMIG_ECONNREFUSED);
    ASSERT_TRUE(now_s() - t0 < 2.0);
    ASSERT_TRUE(strstr(err, "refused") != NULL);
    ASSERT_EQ(vfmig_connect("tcp://no-such-host.invalid:1", 1000, &l, err, sizeof(err)), VFMIG_EADDR);
    ASSERT_EQ(vfmig_connect("tcp://127.0.0.1:99999", 1000, &l, err, sizeof(err)), VFMIG_EADDR);
    ASSERT_TRUE(strstr(err, "out of range") != NULL);
    ASSERT_EQ(vfmig_listen("rdma://127.0.0.1:0", &L, err, sizeof(err)), VFMIG_HAVE_RDMA ? VFMIG_ENODEV : VFMIG_ENOTSUP);
    vfmig_listener_close(NULL);
    vfmig_link_close(NULL);
}

/* ---- bandwidth cap ---- */

typedef struct drain {
    vfmig_link *l;
    unsigned stream;
    int frames;
    int status;
} drain;

static void *drainer(void *p)
{
    drain *d = p;
    static _Thread_local uint8_t buf[1 << 16];
    for (int i = 0; i < d->frames && !d->status; i++) {
        vfmig_frame f;
        d->status = vfmig__link_recv(d->l, d->stream, &f, buf, sizeof(buf), 5000);
    }
    return NULL;
}

static void test_bandwidth_cap(void)
{
    vfmig_link *a, *b;
    make_pair(2, &a, &b);
    /* 4 MiB over two streams at 20 MB/s: at least ~0.2 s; assert a bound that cannot flake. */
    vfmig__link_set_max_bandwidth(a, 20000000);
    drain d[2] = {{.l = b, .stream = 1, .frames = 32}, {.l = b, .stream = 2, .frames = 32}};
    pump p[2] = {{.l = a, .stream = 1, .frames = 32}, {.l = a, .stream = 2, .frames = 32}};
    pthread_t td[2], tp[2];
    double t0 = now_s();
    for (int i = 0; i < 2; i++) {
        pthread_create(&td[i], NULL, drainer, &d[i]);
        pthread_create(&tp[i], NULL, pumper, &p[i]);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(tp[i], NULL);
        pthread_join(td[i], NULL);
        ASSERT_OK(p[i].status);
        ASSERT_OK(d[i].status);
    }
    double dt = now_s() - t0;
    fprintf(stderr, "bandwidth cap: 4 MiB at 20 MB/s took %.3f s\n", dt);
    ASSERT_TRUE(dt >= 0.1 && dt < 10.0);
    /* Uncapped again. */
    vfmig__link_set_max_bandwidth(a, 0);
    vfmig_link_close(a);
    vfmig_link_close(b);
}

/* ---- a data stream broken mid-transfer ---- */

static void test_stream_killed(void)
{
    vfmig_link *a, *b;
    make_pair(2, &a, &b);
    pump p = {.l = a, .stream = 2, .frames = 100000};
    drain d = {.l = b, .stream = 2, .frames = 100000};
    pthread_t tp, td;
    pthread_create(&tp, NULL, pumper, &p);
    pthread_create(&td, NULL, drainer, &d);
    usleep(30000);
    shutdown(vfmig__tcp_stream_fd(a, 2), SHUT_RDWR);
    pthread_join(tp, NULL);
    pthread_join(td, NULL);
    ASSERT_TRUE(p.status == VFMIG_ECLOSED || p.status == VFMIG_EIO);
    ASSERT_EQ(d.status, VFMIG_ECLOSED);
    ASSERT_TRUE(strncmp(vfmig__link_stream_error(a, 2), "stream 2: ", 10) == 0);
    ASSERT_TRUE(strncmp(vfmig__link_stream_error(b, 2), "stream 2: connection closed by peer", 35) == 0);
    ASSERT_TRUE(vfmig__link_stream_error(b, 1)[0] == 0);
    /* The other stream still works. */
    uint8_t buf[8] = "abcdefg";
    vfmig_frame f = {.type = VFMIG_F_PAGES, .len = 8}, g;
    ASSERT_OK(vfmig__link_send(a, 1, &f, buf));
    ASSERT_OK(vfmig__link_flush(a, 1));
    ASSERT_OK(vfmig__link_recv(b, 1, &g, buf, sizeof(buf), 2000));
    ASSERT_EQ(g.len, 8);
    vfmig_link_close(a);
    vfmig_link_close(b);
}

/* ---- listener against strangers and hand-made clients ---- */

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
        T_FAIL("raw connect: %s", strerror(errno));
    return fd;
}

static void raw_frame(int fd, const vfmig_frame *f, const void *payload)
{
    uint8_t hdr[VFMIG_FRAME_HDR_BYTES];
    vfmig__frame_pack(f, payload, hdr);
    ASSERT_EQ(send(fd, hdr, sizeof(hdr), MSG_NOSIGNAL), (ssize_t)sizeof(hdr));
    if (f->len)
        ASSERT_EQ(send(fd, payload, f->len, MSG_NOSIGNAL), (ssize_t)f->len);
}

static void test_listener_hostile(void)
{
    vfmig_listener *L;
    char err[256];
    ASSERT_OK(vfmig_listen("tcp://127.0.0.1:0?streams=2", &L, err, sizeof(err)));
    int port = vfmig_listener_port(L);
    /* Strangers: junk bytes, a silent connection, a data stream with an unknown cookie. */
    int junk = raw_connect(port);
    ASSERT_EQ(send(junk, "GET / HTTP/1.0\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxx", 43, 0), 43);
    int silent = raw_connect(port);
    int orphan = raw_connect(port);
    vfmig_frame s = {.type = VFMIG_F_STREAM, .page = 42, .round = 1, .npages = 1, .aux = VFMIG_WIRE_VERSION};
    raw_frame(orphan, &s, NULL);
    vfmig_link *l;
    ASSERT_EQ(vfmig_accept(L, 100, &l, err, sizeof(err)), VFMIG_ETIMEDOUT);
    /* The junk connection was closed by the listener. */
    char c;
    struct pollfd pf = {.fd = junk, .events = POLLIN};
    ASSERT_EQ(poll(&pf, 1, 1000), 1);
    ASSERT_TRUE(recv(junk, &c, 1, 0) <= 0);

    /* Too many streams: both ends get a clear error. */
    connect_args ca = {.timeout_ms = 2000};
    snprintf(ca.ep, sizeof(ca.ep), "tcp://127.0.0.1:%d?streams=4", port);
    pthread_t t;

    pthread_create(&t, NULL, connect_thread, &ca);
    /* The refusal goes to the connector only: the listener keeps accepting. */
    while (!atomic_load(&ca.done))
        ASSERT_EQ(vfmig_accept(L, 20, &l, err, sizeof(err)), VFMIG_ETIMEDOUT);
    pthread_join(t, NULL);
    ASSERT_EQ(ca.status, VFMIG_EINVAL);
    ASSERT_TRUE(strstr(ca.err, "refused by listener: peer asked for 4 streams") != NULL);

    /* A hand-made client: control + 1 data stream, then hostile frames. */
    int ctl = raw_connect(port), dat = raw_connect(port);
    vfmig_frame s0 = {.type = VFMIG_F_STREAM, .page = 0x77, .round = 0, .npages = 1, .aux = VFMIG_WIRE_VERSION};
    vfmig_frame s1 = s0;
    s1.round = 1;
    raw_frame(dat, &s1, NULL); /* data before control: must still be matched */
    usleep(20000);
    raw_frame(ctl, &s0, NULL);
    ASSERT_OK(vfmig_accept(L, 2000, &l, err, sizeof(err)));
    ASSERT_EQ(vfmig_link_streams(l), 1);
    uint8_t ack[VFMIG_FRAME_HDR_BYTES];
    ASSERT_EQ(recv(ctl, ack, sizeof(ack), MSG_WAITALL), (ssize_t)sizeof(ack));
    vfmig_frame fa;
    ASSERT_OK(vfmig__frame_unpack(ack, 0, &fa, NULL));
    ASSERT_EQ(fa.type, VFMIG_F_STREAM);
    ASSERT_EQ(fa.aux, 0);

    uint8_t pay[100], buf[100];
    memset(pay, 0xab, sizeof(pay));
    vfmig_frame f = {.type = VFMIG_F_PAGES, .len = 100, .page = 3}, g;
    uint8_t hdr[VFMIG_FRAME_HDR_BYTES];
    /* Good frame. */
    raw_frame(dat, &f, pay);
    ASSERT_OK(vfmig__link_recv(l, 1, &g, buf, sizeof(buf), 1000));
    ASSERT_EQ(memcmp(buf, pay, 100), 0);
    /* Payload corrupted in flight. */
    vfmig__frame_pack(&f, pay, hdr);
    pay[50] ^= 1;
    ASSERT_EQ(send(dat, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
    ASSERT_EQ(send(dat, pay, 100, 0), 100);
    ASSERT_EQ(vfmig__link_recv(l, 1, &g, buf, sizeof(buf), 1000), VFMIG_ECHECKSUM);
    ASSERT_TRUE(strstr(vfmig__link_stream_error(l, 1), "stream 1: checksum mismatch") != NULL);
    /* Header corrupted (round field). */
    vfmig__frame_pack(&f, pay, hdr);
    hdr[9] ^= 4;
    ASSERT_EQ(send(dat, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
    ASSERT_EQ(send(dat, pay, 100, 0), 100);
    ASSERT_EQ(vfmig__link_recv(l, 1, &g, buf, sizeof(buf), 1000), VFMIG_ECHECKSUM);
    /* Larger than the receiver's buffer; then over max_payload; then an unknown type. */
    raw_frame(ctl, &f, pay);
    ASSERT_EQ(vfmig__link_recv(l, 0, &g, buf, 99, 1000), VFMIG_EPROTO);
    vfmig__link_set_max_payload(l, 64);
    ASSERT_EQ(vfmig__link_recv(l, 0, &g, buf, sizeof(buf), 1000), VFMIG_EPROTO); /* reads the payload as a header: out of step */
    vfmig__frame_pack(&f, pay, hdr);
    hdr[0] = 200;
    ASSERT_EQ(send(dat, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
    ASSERT_EQ(vfmig__link_recv(l, 1, &g, buf, sizeof(buf), 1000), VFMIG_EPROTO);
    ASSERT_TRUE(strstr(vfmig__link_stream_error(l, 1), "unknown frame type 200") != NULL);
    vfmig_link_close(l);
    close(ctl);
    close(dat);
    close(junk);
    close(silent);
    close(orphan);
    vfmig_listener_close(L);
}

static void test_ipv6_and_names(void)
{
    vfmig_listener *L;
    char err[256];
    if (vfmig_listen("tcp://[::1]:0", &L, err, sizeof(err)) == VFMIG_OK) {
        vfmig_listener_close(L);
        vfmig_link *a, *b;
        make_pair_host("[::1]", 2, &a, &b);
        vfmig_frame f = {.type = VFMIG_F_GO}, g;
        ASSERT_OK(vfmig__link_send(a, 2, &f, NULL));
        ASSERT_OK(vfmig__link_flush(a, 2));
        ASSERT_OK(vfmig__link_recv(b, 2, &g, NULL, 0, 2000));
        ASSERT_EQ(g.type, VFMIG_F_GO);
        vfmig_link_close(a);
        vfmig_link_close(b);
    } else {
        fprintf(stderr, "no IPv6 loopback here (%s): IPv6 part skipped\n", err);
    }
    vfmig_link *a, *b;
    make_pair_host("localhost", 1, &a, &b);
    vfmig_link_close(a);
    vfmig_link_close(b);
}

int main(void)
{
    uint64_t seed = t_seed();
    double t0 = now_s();
    roundtrip(1, seed);
    roundtrip(4, seed);
    test_timeouts();
    test_interrupt();
    test_peer_close();
    test_addr_errors();
    test_bandwidth_cap();
    test_stream_killed();
    test_listener_hostile();
    test_ipv6_and_names();
    printf("test_link_tcp: ok (%.2f s)\n", now_s() - t0);
    return 0;
}
