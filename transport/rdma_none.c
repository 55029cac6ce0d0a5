/*
 * transport/rdma_none.c - the rdma:// scheme of a build without verbs (VFMIG_RDMA=OFF, or AUTO
 * without libibverbs/librdmacm). rdma:// endpoints still parse, so a typo and a missing feature
 * get different answers; opening one says what is missing instead of failing at link time.
 * rdma.c replaces this file when verbs are there.
 */
#include "transport/link_impl.h"

/* No operations: link.c answers each with VFMIG_ENOTSUP and this reason. */
static const vfmig_link_scheme rdma_scheme = {
    .name = "rdma",
    .count_opt = "qps",
    .missing = "not built with RDMA (rebuild with libibverbs-dev and librdmacm-dev, VFMIG_RDMA=ON)",
};

const vfmig_link_scheme *vfmig__rdma_scheme(void)
{
    return &rdma_scheme;
}
