/*
 * transport/rdma_none.c - the rdma:// back-end of a build without verbs (VFMIG_RDMA=OFF, or AUTO
 * without libibverbs/librdmacm). rdma:// endpoints still parse, so a typo and a missing feature
 * get different answers; opening one says what is missing instead of failing at link time.
 * rdma.c replaces this file when verbs are there.
 */
#include "transport/link_impl.h"

#define NOT_BUILT "not built with RDMA (rebuild with libibverbs-dev and librdmacm-dev, VFMIG_RDMA=ON)"

/* Never allocated: listen refuses, so no listener exists to pass back in. */
struct vfmig_rdma_listener {
    int unused;
};

int vfmig__rdma_listen(const vfmig_endpoint *ep, int explicit_streams, vfmig_rdma_listener **out,
                      char *err, size_t errlen)
{
    (void)ep;
    (void)explicit_streams;
    *out = NULL;
    vfmig__seterr(err, errlen, NOT_BUILT);
    return VFMIG_ENOTSUP;
}

int vfmig__rdma_listener_port(const vfmig_rdma_listener *rl)
{
    (void)rl;
    return VFMIG_ENOTSUP;
}

int vfmig__rdma_accept(vfmig_rdma_listener *rl, int timeout_ms, vfmig_link **out, char *err,
                      size_t errlen)
{
    (void)rl;
    (void)timeout_ms;
    *out = NULL;
    vfmig__seterr(err, errlen, NOT_BUILT);
    return VFMIG_ENOTSUP;
}

void vfmig__rdma_listener_close(vfmig_rdma_listener *rl)
{
    (void)rl;
}

int vfmig__rdma_connect(const vfmig_endpoint *ep, int timeout_ms, vfmig_link **out, char *err,
                       size_t errlen)
{
    (void)ep;
    (void)timeout_ms;
    *out = NULL;
    vfmig__seterr(err, errlen, NOT_BUILT);
    return VFMIG_ENOTSUP;
}
