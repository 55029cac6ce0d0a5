/* tests/test_link_rdma.c - RDMA links. Without a device: listen and connect fail cleanly with
 * VFMIG_ENODEV and the exact message, then the test skips (77). With a device (soft-RoCE or a
 * NIC on 127.0.0.1 / the address in VFMIG_TEST_RDMA_ADDR): round trips on 1 and 4 QPs. */
#include <pthread.h>

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
    static uint8_t buf[1 << 20], got[1 << 20];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7);
    static const uint32_t sizes[] = {0, 1, 40, 4096, 131072, 131073, 1 << 20};
    for (unsigned s = 0; s <= n; s++)
        for (unsigned k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
            vfmig_frame f = {.type = VFMIG_F_PAGES, .len = sizes[k], .page = k}, g;
            ASSERT_OK(vfmig_link_send(c.l, s, &f, buf));
            ASSERT_OK(vfmig_link_flush(c.l, s));
            ASSERT_OK(vfmig_link_recv(b, s, &g, got, sizeof(got), 5000));
            ASSERT_EQ(g.len, sizes[k]);
            ASSERT_EQ(memcmp(buf, got, sizes[k]), 0);
        }
    vfmig_link_close(c.l);
    vfmig_link_close(b);
    vfmig_listener_close(L);
}

int main(void)
{
    char err[256] = "", ep[128];
    vfmig_listener *L;
    vfmig_link *l;
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
        printf("SKIP: %s - RDMA link tests need a device (soft-RoCE: rdma link add rxe0 type rxe netdev lo)\n", err);
        return T_SKIP;
    }
    if (r)
        T_FAIL("rdma listen: %s (%s)", vfmig_strerror(r), err);
    vfmig_listener_close(L);
    roundtrip(addr, 1);
    roundtrip(addr, 4);
    printf("test_link_rdma: ok\n");
    return 0;
}
