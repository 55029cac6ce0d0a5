/* tests/test_cuda.c - the CUDA device, on a machine with a GPU: the page hash the kernel computes
 * equals XXH3-64 of the same bytes read back to the host, and a CUDA VF with its workload kernel
 * writing migrates over loopback and is equal byte for byte (compared on the GPU). Without CUDA or
 * a GPU it skips (exit 77) saying why. */
#include "testutil.h"
#include "vfmig_sim.h"

#include <xxhash.h>

#include <pthread.h>
#include <time.h>

typedef struct target_run {
    vfmig_listener *l;
    vfmig_session *s;
    int rc;
    char err[300];
} target_run;

static void *target_main(void *arg)
{
    target_run *t = arg;
    vfmig_link *link = NULL;
    t->rc = vfmig_accept(t->l, 30000, &link, t->err, sizeof t->err);
    if (!t->rc)
        t->rc = vfmig_session_run(t->s, link);
    vfmig_link_close(link);
    return NULL;
}

static vfmig_cuda_sim *make(uint64_t size, uint64_t ps, int content, uint64_t rate)
{
    vfmig_cuda_config c;
    vfmig_cuda_config_init(&c);
    c.size = size;
    c.page_size = ps;
    vfmig_cuda_sim *s;
    char err[300];
    if (vfmig_cuda_sim_create(&c, content, rate, 16u << 20, 7, &s, err, sizeof err))
        T_FAIL("%s", err);
    return s;
}

static void test_hash_equals_host(void)
{
    const uint64_t size = 32u << 20, ps = 64u << 10, np = size / ps;
    vfmig_cuda_sim *s = make(size, ps, VFMIG_CONTENT_MIX, 0);
    vfmig_device d;
    vfmig_cuda_device(vfmig_cuda_sim_device(s), &d);
    uint8_t *host = malloc(size);
    uint64_t *h = malloc(np * 8);
    ASSERT_OK(d.ops->read(d.dev, 0, host, size)); /* several staging chunks */
    ASSERT_OK(vfmig_cuda_hash_pages(vfmig_cuda_sim_device(s), 0, np, h));
    for (uint64_t p = 0; p < np; p++)
        if (h[p] != XXH3_64bits(host + p * ps, ps))
            T_FAIL("page %llu: GPU hash %016llx, host XXH3 %016llx", (unsigned long long)p,
                   (unsigned long long)h[p], (unsigned long long)XXH3_64bits(host + p * ps, ps));
    /* Write a page from the host, read it back, dirty bits exact. */
    ASSERT_OK(d.ops->start_tracking(d.dev));
    ASSERT_OK(d.ops->read(d.dev, 0, host, size));
    uint64_t bm[(32u << 20) / (64u << 10) / 64];
    ASSERT_OK(d.ops->query_dirty(d.dev, 0, 0, np, bm, 1));
    for (uint64_t p = 0; p < np; p++)
        ASSERT_EQ(bm[p / 64] >> (p % 64) & 1, 0);
    memset(host + 5 * ps + 17, 0x5a, 3);
    ASSERT_OK(d.ops->write(d.dev, 5 * ps, host + 5 * ps, ps));
    ASSERT_OK(d.ops->query_dirty(d.dev, 0, 0, np, bm, 1));
    for (uint64_t p = 0; p < np; p++)
        ASSERT_EQ(bm[p / 64] >> (p % 64) & 1, p == 5); /* engine writes leave no reference */
    free(h);
    free(host);
    vfmig_cuda_sim_destroy(s);
}

static void test_migration(void)
{
    const uint64_t size = 256u << 20, ps = 64u << 10;
    vfmig_cuda_sim *src = make(size, ps, VFMIG_CONTENT_MIX, 200u << 20);
    vfmig_cuda_sim *dst = make(size, ps, VFMIG_CONTENT_ZERO, 0);
    vfmig_device sd, td;
    vfmig_cuda_device(vfmig_cuda_sim_device(src), &sd);
    vfmig_cuda_device(vfmig_cuda_sim_device(dst), &td);
    char err[300];
    vfmig_session *s;
    target_run tr = {0};
    ASSERT_OK(vfmig_session_create(VFMIG_ROLE_SOURCE, &sd, &s, err, sizeof err));
    ASSERT_OK(vfmig_session_create(VFMIG_ROLE_TARGET, &td, &tr.s, err, sizeof err));
    ASSERT_OK(vfmig_listen("tcp://127.0.0.1:0?streams=2", &tr.l, err, sizeof err));
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d?streams=2", vfmig_listener_port(tr.l));
    ASSERT_OK(vfmig_cuda_sim_start(src));
    pthread_t th;
    ASSERT_TRUE(pthread_create(&th, NULL, target_main, &tr) == 0);
    vfmig_link *link = NULL;
    int rc = vfmig_connect(ep, 30000, &link, err, sizeof err);
    if (!rc)
        rc = vfmig_session_run(s, link);
    pthread_join(th, NULL);
    vfmig_link_close(link);
    vfmig_listener_close(tr.l);
    if (rc || tr.rc)
        T_FAIL("migration failed: source %s (%s), target %s (%s)", vfmig_status_name(rc), vfmig_session_last_error(s),
               vfmig_status_name(tr.rc), tr.err);
    vfmig_stats st;
    vfmig_session_get_stats(s, &st);
    ASSERT_TRUE(st.verified);
    ASSERT_EQ(vfmig_cuda_sim_compare(src, dst), 1);
    vfmig_tracking_stats ts;
    vfmig_cuda_get_stats(vfmig_cuda_sim_device(src), &ts);
    fprintf(stderr, "cuda migration: %u rounds, blackout %.2f ms, %llu scans, last scan %.3f ms\n", st.rounds,
            (double)st.blackout_ns / 1e6, (unsigned long long)ts.scans, (double)ts.last_ns / 1e6);
    vfmig_session_destroy(s);
    vfmig_session_destroy(tr.s);
    vfmig_cuda_sim_destroy(src);
    vfmig_cuda_sim_destroy(dst);
}

int main(void)
{
    char why[300];
    if (!vfmig_cuda_available(why, sizeof why)) {
        fprintf(stderr, "test_cuda: skipped: %s\n", why);
        ASSERT_TRUE(strstr(why, "CUDA") != NULL);
        return T_SKIP;
    }
    test_hash_equals_host();
    test_migration();
    fprintf(stderr, "test_cuda: ok\n");
    return 0;
}
