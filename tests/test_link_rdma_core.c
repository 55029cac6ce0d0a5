/* tests/test_link_rdma_core.c - the verbs-independent RDMA bookkeeping: credits (including a
 * simulated two-sided exchange that must never overrun the receive queue or deadlock), the
 * buffer pool and the received-chunk queue. */
#include "transport/rdma_core.h"
#include "vfmig.h"
#include "testutil.h"

static void test_credits_basic(void)
{
    vfmig_credits c;
    vfmig__credits_init(&c, 4, 2);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(vfmig__credits_take_data(&c), 1);
    ASSERT_EQ(vfmig__credits_take_data(&c), 0);
    ASSERT_EQ(vfmig__credits_want_update(&c, 0), 0);
    /* Peer returns 3 data credits and 0 ctrl on a data message. */
    ASSERT_EQ(vfmig__credits_on_recv(&c, 3), 0);
    ASSERT_EQ(c.data_avail, 3);
    /* Returning more than ever given is a protocol violation. */
    ASSERT_EQ(vfmig__credits_on_recv(&c, 2), -1);
    ASSERT_EQ(vfmig__credits_on_recv(&c, 1u << 15), -1); /* ctrl credits while all are held */
    /* Credit-only flag. */
    ASSERT_EQ(vfmig__credits_on_recv(&c, VFMIG_IMM_CREDIT_ONLY | 1), 1);
    ASSERT_EQ(c.data_avail, 4);
    /* Returns: half a window triggers an update; the imm carries and clears them. */
    vfmig__credits_reposted(&c, 0);
    ASSERT_EQ(vfmig__credits_want_update(&c, 0), 0);
    ASSERT_EQ(vfmig__credits_want_update(&c, 1), 1);
    vfmig__credits_reposted(&c, 0);
    vfmig__credits_reposted(&c, 1);
    ASSERT_EQ(vfmig__credits_want_update(&c, 0), 1);
    ASSERT_EQ(vfmig__credits_take_ctrl(&c), 1);
    uint32_t imm = vfmig__credits_imm(&c, 1);
    ASSERT_EQ(imm, VFMIG_IMM_CREDIT_ONLY | 2 | 1u << 15);
    ASSERT_EQ(c.data_to_return, 0);
    ASSERT_EQ(c.ctrl_to_return, 0);
    ASSERT_EQ(vfmig__credits_take_ctrl(&c), 1);
    ASSERT_EQ(vfmig__credits_take_ctrl(&c), 0);
    ASSERT_EQ(vfmig__credits_want_update(&c, 1), 0); /* no ctrl credit: no update possible */
}

/* Two ends over a simulated RC QP pair: in-order message queues, receive queues of
 * window + ctrl buffers. A sends data only; B's consumer is slower (drains every few steps).
 * Checks: no message ever arrives without a posted receive; all data gets through. */
typedef struct end {
    vfmig_credits c;
    int posted;          /* receive buffers posted */
    int held;            /* data buffers received, not yet consumed */
} end;

typedef struct msg {
    uint32_t imm;
    int data;
} msg;

static void deliver(end *to, msg m, int *overrun)
{
    if (to->posted == 0) {
        (*overrun)++;
        return;
    }
    to->posted--;
    int kind = vfmig__credits_on_recv(&to->c, m.imm);
    ASSERT_TRUE(kind >= 0);
    if (kind == 1) {
        to->posted++;
        vfmig__credits_reposted(&to->c, 1);
    } else {
        to->held++;
    }
}

static void test_credits_exchange(uint64_t *seed, uint32_t W, uint32_t C)
{
    end a, b;
    vfmig__credits_init(&a.c, W, C);
    vfmig__credits_init(&b.c, W, C);
    a.posted = b.posted = (int)(W + C);
    a.held = b.held = 0;
    msg q_ab[4096], q_ba[4096];
    int nab = 0, nba = 0, overrun = 0, sent = 0, consumed = 0;
    const int total = 5000;
    for (int step = 0; step < 200000 && consumed < total; step++) {
        int r = (int)(t_rand(seed) % 4), b_offer = 0;
        if (r == 0 && sent < total) {
            int blocked = !a.c.data_avail;
            if (vfmig__credits_take_data(&a.c)) {
                q_ab[nab++] = (msg){vfmig__credits_imm(&a.c, 0), 1};
                sent++;
            } else if (vfmig__credits_want_update(&a.c, blocked) && vfmig__credits_take_ctrl(&a.c)) {
                q_ab[nab++] = (msg){vfmig__credits_imm(&a.c, 1), 0};
            }
        } else if (r == 1 && nab) {
            deliver(&b, q_ab[0], &overrun);
            memmove(q_ab, q_ab + 1, sizeof(msg) * (size_t)--nab);
        } else if (r == 2 && nba) {
            deliver(&a, q_ba[0], &overrun);
            memmove(q_ba, q_ba + 1, sizeof(msg) * (size_t)--nba);
        } else if (r == 3 && b.held && t_rand(seed) % 3 == 0) {
            /* The slow reader consumes a chunk. Like rdma_read, it offers credits back only
             * right after consuming, never idly (the old simulation offered every step and so
             * could not see a stall that needs an idle offer). */
            b.held--;
            b.posted++;
            consumed++;
            vfmig__credits_reposted(&b.c, 0);
            b_offer = 1;
        }
        if (b_offer && vfmig__credits_want_update(&b.c, 0) && vfmig__credits_take_ctrl(&b.c))
            q_ba[nba++] = (msg){vfmig__credits_imm(&b.c, 1), 0};
        ASSERT_TRUE(nab < 4000 && nba < 4000);
    }
    ASSERT_EQ(overrun, 0);
    ASSERT_EQ(consumed, total);
}

static void test_bufpool(void)
{
    static uint8_t mem[8 * 64];
    vfmig_bufpool bp;
    ASSERT_OK(vfmig__bufpool_init(&bp, mem, 64, 8));
    int64_t got[8];
    for (int i = 0; i < 8; i++) {
        got[i] = vfmig__bufpool_get(&bp);
        ASSERT_EQ(got[i], i); /* lowest first */
        ASSERT_TRUE(vfmig_bufpool_addr(&bp, (uint32_t)got[i]) == mem + 64 * i);
    }
    ASSERT_EQ(vfmig__bufpool_get(&bp), -1);
    ASSERT_OK(vfmig__bufpool_put(&bp, 5));
    ASSERT_EQ(vfmig__bufpool_put(&bp, 5), -1); /* double put */
    ASSERT_EQ(vfmig__bufpool_put(&bp, 8), -1); /* out of range */
    ASSERT_EQ(vfmig__bufpool_get(&bp), 5);
    for (int i = 0; i < 8; i++)
        ASSERT_OK(vfmig__bufpool_put(&bp, (uint32_t)i));
    ASSERT_EQ(vfmig__bufpool_put(&bp, 0), -1); /* all free already */
    vfmig__bufpool_destroy(&bp);
}

static uint32_t released[64];
static int nreleased;

static void on_release(void *arg, uint32_t idx)
{
    (void)arg;
    released[nreleased++] = idx;
}

static void test_rxq(uint64_t *seed)
{
    static uint8_t mem[4 * 100];
    vfmig_bufpool view;
    ASSERT_OK(vfmig__bufpool_init(&view, mem, 100, 4));
    for (int i = 0; i < 400; i++)
        mem[i] = (uint8_t)i;
    vfmig_rxq q;
    ASSERT_OK(vfmig__rxq_init(&q, 3)); /* rounds up to 4 */
    ASSERT_TRUE(vfmig_rxq_empty(&q));
    /* Chunks arrive out of buffer order but are read in arrival order. */
    ASSERT_OK(vfmig__rxq_push(&q, 2, 100));
    ASSERT_OK(vfmig__rxq_push(&q, 0, 30));
    ASSERT_OK(vfmig__rxq_push(&q, 3, 100));
    ASSERT_OK(vfmig__rxq_push(&q, 1, 0 + 50));
    ASSERT_EQ(vfmig__rxq_push(&q, 1, 1), -1); /* full */
    uint8_t out[280], want[280];
    memcpy(want, mem + 200, 100);
    memcpy(want + 100, mem, 30);
    memcpy(want + 130, mem + 300, 100);
    memcpy(want + 230, mem + 100, 50);
    size_t got = 0;
    nreleased = 0;
    while (got < 280) {
        size_t n = 1 + t_rand(seed) % 70;
        if (n > 280 - got)
            n = 280 - got;
        ASSERT_EQ(vfmig__rxq_read(&q, &view, out + got, n, on_release, NULL), n);
        got += n;
    }
    ASSERT_EQ(memcmp(out, want, 280), 0);
    ASSERT_EQ(nreleased, 4);
    ASSERT_EQ(released[0], 2);
    ASSERT_EQ(released[1], 0);
    ASSERT_EQ(released[2], 3);
    ASSERT_EQ(released[3], 1);
    ASSERT_TRUE(vfmig_rxq_empty(&q));
    ASSERT_EQ(vfmig__rxq_read(&q, &view, out, 10, on_release, NULL), 0);
    /* Wrap-around of the free-running indices. */
    for (int i = 0; i < 10; i++) {
        ASSERT_OK(vfmig__rxq_push(&q, (uint32_t)(i % 4), 100));
        ASSERT_EQ(vfmig__rxq_read(&q, &view, out, 100, on_release, NULL), 100);
        ASSERT_EQ(memcmp(out, mem + 100 * (i % 4), 100), 0);
    }
    vfmig__rxq_destroy(&q);
    vfmig__bufpool_destroy(&view);
}

int main(void)
{
    uint64_t seed = t_seed();
    test_credits_basic();
    /* Windows of the real link (16 data, 4 ctrl), a small one and the smallest. */
    static const uint32_t wc[][2] = {{16, 4}, {8, 2}, {2, 1}, {1, 1}};
    for (unsigned i = 0; i < sizeof(wc) / sizeof(wc[0]); i++)
        for (int k = 0; k < 8; k++)
            test_credits_exchange(&seed, wc[i][0], wc[i][1]);
    test_bufpool();
    test_rxq(&seed);
    printf("test_link_rdma_core: ok\n");
    return 0;
}
