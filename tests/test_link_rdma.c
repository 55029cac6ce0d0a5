/* tests/test_link_rdma.c - RDMA links. Without a device: listen and connect fail cleanly with
 * VFMIG_ENODEV and the exact message, then the test skips (77). With a device (soft-RoCE or a
 * NIC on 127.0.0.1 / the address in VFMIG_TEST_RDMA_ADDR; tests/rdma-vm/run.sh makes one):
 * round trips on 1 and 4 QPs with the link's interface, peer name and control readiness; a listener that outlives strangers, half-made links and a peer
 * asking for too many QPs; a peer's close seen as a disconnect by a blocked reader. */
#include <netdb.h>
#include <pthread.h>
#include <sched.h>

#include <rdma/rdma_cma.h>

#include "transport/link_impl.h"
#include "testutil.h"

typedef struct conn {
    char ep[128];
    vfmig_link *l;
    int st;
    char err[256];
} conn;

static void *connect_thread(void *p)
{
    conn *c = p;
    c->st = vfmig_connect(c->ep, 5000, &c->l, c->err, sizeof(c->err));
    return NULL;
}

/* Two connects in order: the first is expected to be refused, the second to be accepted. */
static void *connect_pair_thread(void *p)
{
    conn **pair = p;
    connect_thread(pair[0]);
    connect_thread(pair[1]);
    return NULL;
}

static void roundtrip(const char *addr, unsigned n)
{
    char ep[128], err[256];
    vfmig_listener *L;
    snprintf(ep, sizeof(ep), "rdma://%s:0", addr);
    int r = vfmig_listen(ep, &L, err, sizeof(err));
    if (r)
        T_FAIL("rdma listen: %s", err);
    conn c;
    snprintf(c.ep, sizeof(c.ep), "rdma://%s:%d?qps=%u", addr, vfmig_listener_port(L), n);
    pthread_t t;
    pthread_create(&t, NULL, connect_thread, &c);
    vfmig_link *b;
    r = vfmig_accept(L, 5000, &b, err, sizeof(err));
    pthread_join(t, NULL);
    if (r || c.st)
        T_FAIL("rdma accept/connect: %s / %s", err, c.err);
    /* The medium's questions: which interface carries the link (for NIC-local pinning), who the
     * peer is (for logs), and whether control bytes wait (a server telling idle from busy). */
    char name[80];
    ASSERT_OK(vfmig__link_local_ifname(b, name, sizeof(name)));
    ASSERT_TRUE(name[0] != 0);
    ASSERT_OK(vfmig__link_peer_name(b, name, sizeof(name)));
    ASSERT_TRUE(strstr(name, addr) == name);
    ASSERT_EQ(vfmig__link_control_readable(b), 0);
    {
        vfmig_frame f = {.type = VFMIG_F_GO}, g;
        ASSERT_OK(vfmig__link_send(c.l, 0, &f, NULL));
        ASSERT_OK(vfmig__link_flush(c.l, 0));
        uint64_t until = vfmig__now_ns() + 10000000000ull; /* arrival is asynchronous: wait for it */
        while (!vfmig__link_control_readable(b) && vfmig__now_ns() < until)
            sched_yield();
        ASSERT_EQ(vfmig__link_control_readable(b), 1);
        ASSERT_OK(vfmig__link_recv(b, 0, &g, NULL, 0, 5000));
        ASSERT_EQ(vfmig__link_control_readable(b), 0);
    }
    static uint8_t buf[1 << 20], got[1 << 20];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7);
    static const uint32_t sizes[] = {0, 1, 40, 4096, 131072, 131073, 1 << 20};
    for (unsigned s = 0; s <= n; s++)
        for (unsigned k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
            vfmig_frame f = {.type = VFMIG_F_PAGES, .len = sizes[k], .page = k}, g;
            ASSERT_OK(vfmig__link_send(c.l, s, &f, buf));
            ASSERT_OK(vfmig__link_flush(c.l, s));
            ASSERT_OK(vfmig__link_recv(b, s, &g, got, sizeof(got), 5000));
            ASSERT_EQ(g.len, sizes[k]);
            ASSERT_EQ(memcmp(buf, got, sizes[k]), 0);
        }
    vfmig_link_close(c.l);
    vfmig_link_close(b);
    vfmig_listener_close(L);
}

/* ---- a raw librdmacm peer, to send the listener what vfmig never would ---- */

#define T_RMAGIC 0x52474d56u
#define T_RCHUNK (128u << 10)

typedef struct raw {
    struct rdma_event_channel *ec;
    struct rdma_cm_id *id;
} raw;

static enum rdma_cm_event_type raw_event(raw *c)
{
    struct rdma_cm_event *ev;
    if (rdma_get_cm_event(c->ec, &ev))
        T_FAIL("rdma_get_cm_event: %s", strerror(errno));
    enum rdma_cm_event_type t = ev->event;
    rdma_ack_cm_event(ev);
    return t;
}

/* Connects with the given private data; returns the event that ends the attempt. */
static enum rdma_cm_event_type raw_connect(raw *c, const char *addr, int port, const void *priv, uint8_t len)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    char ps[8];
    snprintf(ps, sizeof(ps), "%d", port);
    ASSERT_EQ(getaddrinfo(addr, ps, &hints, &res), 0);
    ASSERT_TRUE((c->ec = rdma_create_event_channel()) != NULL);
    ASSERT_EQ(rdma_create_id(c->ec, &c->id, NULL, RDMA_PS_TCP), 0);
    ASSERT_EQ(rdma_resolve_addr(c->id, NULL, res->ai_addr, 5000), 0);
    freeaddrinfo(res);
    ASSERT_EQ(raw_event(c), RDMA_CM_EVENT_ADDR_RESOLVED);
    ASSERT_EQ(rdma_resolve_route(c->id, 5000), 0);
    ASSERT_EQ(raw_event(c), RDMA_CM_EVENT_ROUTE_RESOLVED);
    struct ibv_qp_init_attr qa = {.qp_type = IBV_QPT_RC,
                                  .cap = {.max_send_wr = 1, .max_recv_wr = 1, .max_send_sge = 1, .max_recv_sge = 1}};
    ASSERT_EQ(rdma_create_qp(c->id, NULL, &qa), 0);
    struct rdma_conn_param cp = {.private_data = priv, .private_data_len = len,
                                 .responder_resources = 1, .initiator_depth = 1, .retry_count = 7};
    ASSERT_EQ(rdma_connect(c->id, &cp), 0);
    return raw_event(c);
}

static void raw_close(raw *c)
{
    rdma_disconnect(c->id);
    rdma_destroy_qp(c->id);
    rdma_destroy_id(c->id);
    rdma_destroy_event_channel(c->ec);
}

static void priv(uint8_t p[32], uint32_t magic, uint64_t cookie, uint32_t index, uint32_t n)
{
    memset(p, 0, 32);
    vfmig_put_u32(p, magic);
    vfmig_put_u32(p + 4, VFMIG_WIRE_VERSION);
    vfmig_put_u64(p + 8, cookie);
    vfmig_put_u32(p + 16, index);
    vfmig_put_u32(p + 20, n);
    vfmig_put_u32(p + 24, T_RCHUNK);
}

typedef struct hostile {
    char addr[64];
    int port;
    raw half;
    conn good;
} hostile;

/* Strangers first, each answered before the next; a half-made link left open; then a real one. */
static void *hostile_thread(void *p)
{
    hostile *h = p;
    raw c;
    ASSERT_EQ(raw_connect(&c, h->addr, h->port, NULL, 0), RDMA_CM_EVENT_REJECTED); /* no private data */
    raw_close(&c);
    uint8_t pd[32];
    priv(pd, 0x12345678, 1, 0, 1); /* not our magic */
    ASSERT_EQ(raw_connect(&c, h->addr, h->port, pd, 32), RDMA_CM_EVENT_REJECTED);
    raw_close(&c);
    priv(pd, T_RMAGIC, 2, 5, 1); /* stream index beyond the count */
    ASSERT_EQ(raw_connect(&c, h->addr, h->port, pd, 32), RDMA_CM_EVENT_REJECTED);
    raw_close(&c);
    priv(pd, T_RMAGIC, 3, 0, 1); /* control QP of a 1-QP link whose data QP never comes */
    ASSERT_EQ(raw_connect(&h->half, h->addr, h->port, pd, 32), RDMA_CM_EVENT_ESTABLISHED);
    snprintf(h->good.ep, sizeof(h->good.ep), "rdma://%s:%d?qps=2", h->addr, h->port);
    connect_thread(&h->good);
    return NULL;
}

static void listener_survives(const char *addr)
{
    char ep[128], err[256];
    vfmig_listener *L;
    snprintf(ep, sizeof(ep), "rdma://%s:0?qps=2", addr);
    int r = vfmig_listen(ep, &L, err, sizeof(err));
    if (r)
        T_FAIL("rdma listen: %s", err);
    hostile h = {.port = vfmig_listener_port(L)};
    snprintf(h.addr, sizeof(h.addr), "%s", addr);
    pthread_t t;
    pthread_create(&t, NULL, hostile_thread, &h);
    vfmig_link *b;
    r = vfmig_accept(L, 30000, &b, err, sizeof(err));
    pthread_join(t, NULL);
    if (r || h.good.st)
        T_FAIL("accept after strangers: %s / %s", r ? err : "ok", h.good.st ? h.good.err : "ok");
    ASSERT_EQ(vfmig_link_streams(b), 2);
    vfmig_frame f = {.type = VFMIG_F_PAGES, .len = 5, .page = 9}, g;
    uint8_t got[8];
    ASSERT_OK(vfmig__link_send(h.good.l, 2, &f, "hello"));
    ASSERT_OK(vfmig__link_flush(h.good.l, 2));
    ASSERT_OK(vfmig__link_recv(b, 2, &g, got, sizeof(got), 5000));
    ASSERT_EQ(memcmp(got, "hello", 5), 0);

    /* A peer asking for more QPs than allowed is refused with the reason, as over TCP, and the
     * same accept goes on to serve the next peer: one bad connection never ends it. */
    conn c, bad;
    snprintf(bad.ep, sizeof(bad.ep), "rdma://%s:%d?qps=4", addr, h.port);
    snprintf(c.ep, sizeof(c.ep), "rdma://%s:%d?qps=1", addr, h.port);
    conn *pair[2] = {&bad, &c};
    pthread_create(&t, NULL, connect_pair_thread, pair);
    vfmig_link *x;
    r = vfmig_accept(L, 30000, &x, err, sizeof(err));
    pthread_join(t, NULL);
    ASSERT_EQ(bad.st, VFMIG_ECONNREFUSED);
    if (r || c.st)
        T_FAIL("accept after a refusal: %s / %s", r ? err : "ok", c.st ? c.err : "ok");

    /* The peer closes: a reader blocked on it ends with a disconnect, long before its timeout;
     * what was sent before the close still arrives first. */
    ASSERT_OK(vfmig__link_send(c.l, 1, &f, "bye!!"));
    ASSERT_OK(vfmig__link_flush(c.l, 1));
    vfmig_link_close(c.l);
    ASSERT_OK(vfmig__link_recv(x, 1, &g, got, sizeof(got), 60000));
    ASSERT_EQ(memcmp(got, "bye!!", 5), 0);
    r = vfmig__link_recv(x, 1, &g, got, sizeof(got), 60000);
    ASSERT_EQ(r, VFMIG_ECLOSED);
    ASSERT_TRUE(strstr(vfmig__link_stream_error(x, 1), "the peer disconnected") != NULL);
    vfmig_link_close(x);

    vfmig_link_close(h.good.l);
    vfmig_link_close(b);
    raw_close(&h.half);
    vfmig_listener_close(L); /* drops the half-made link */
}

int main(void)
{
    char err[256] = "", ep[128];
    vfmig_listener *L;
    vfmig_link *l;
#if !VFMIG_HAVE_RDMA
    /* Built without verbs (VFMIG_RDMA=OFF): both ends say so, with VFMIG_ENOTSUP. */
    ASSERT_EQ(vfmig_listen("rdma://127.0.0.1:0", &L, err, sizeof(err)), VFMIG_ENOTSUP);
    ASSERT_TRUE(L == NULL && strncmp(err, "not built with RDMA", 19) == 0);
    err[0] = 0;
    ASSERT_EQ(vfmig_connect("rdma://127.0.0.1:4791?qps=2", 1000, &l, err, sizeof(err)), VFMIG_ENOTSUP);
    ASSERT_TRUE(l == NULL && strncmp(err, "not built with RDMA", 19) == 0);
    printf("SKIP: %s\n", err);
    return T_SKIP;
#endif
    const char *addr = getenv("VFMIG_TEST_RDMA_ADDR");
    addr = addr ? addr : "127.0.0.1";
    snprintf(ep, sizeof(ep), "rdma://%s:0", addr);
    int r = vfmig_listen(ep, &L, err, sizeof(err));
    if (r == VFMIG_ENODEV) {
        ASSERT_EQ(strcmp(err, "no RDMA device found (ibv_get_device_list returned none)"), 0);
        err[0] = 0;
        ASSERT_EQ(vfmig_connect("rdma://127.0.0.1:4791?qps=2", 1000, &l, err, sizeof(err)), VFMIG_ENODEV);
        ASSERT_EQ(strcmp(err, "no RDMA device found (ibv_get_device_list returned none)"), 0);
        ASSERT_TRUE(l == NULL);
        printf("SKIP: %s - RDMA link tests need a device (soft-RoCE: rdma link add rxe0 type rxe "
               "netdev IFACE; tests/rdma-vm/run.sh runs them in a VM)\n", err);
        return T_SKIP;
    }
    if (r)
        T_FAIL("rdma listen: %s (%s)", vfmig_strerror(r), err);
    vfmig_listener_close(L);
    roundtrip(addr, 1);
    roundtrip(addr, 4);
    listener_survives(addr);
    printf("test_link_rdma: ok\n");
    return 0;
}
