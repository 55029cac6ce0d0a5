/* cuda_none.c - the CUDA device's API in a build without the CUDA toolkit: every call says so
 * (VFMIG_ENODEV with a message naming CUDA), so a program asks at run time, not at link time. */
#include "vfmig_sim.h"

#include <stdio.h>
#include <string.h>

#define NO_CUDA "CUDA: this vfmig was built without the CUDA toolkit (CMake did not find CUDAToolkit / nvcc)"

static void say(char *err, size_t errlen)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", NO_CUDA);
}

int vfmig_cuda_available(char *err, size_t errlen)
{
    say(err, errlen);
    return 0;
}

int vfmig_cuda_create(const vfmig_cuda_config *cfg, vfmig_cuda **out, char *err, size_t errlen)
{
    (void)cfg;
    if (out)
        *out = NULL;
    say(err, errlen);
    return VFMIG_ENODEV;
}

void vfmig_cuda_destroy(vfmig_cuda *c) { (void)c; }

void vfmig_cuda_device(vfmig_cuda *c, vfmig_device *out)
{
    (void)c;
    if (out)
        memset(out, 0, sizeof *out);
}

void vfmig_cuda_get_stats(const vfmig_cuda *c, vfmig_tracking_stats *out)
{
    (void)c;
    if (out) {
        memset(out, 0, sizeof *out);
        out->source = VFMIG_DIRTY_CUDA_HASH;
    }
}

int vfmig_cuda_measure(vfmig_cuda *c, double *hash_gbps, double *copy_gbps)
{
    (void)c;
    (void)hash_gbps;
    (void)copy_gbps;
    return VFMIG_ENODEV;
}

int vfmig_cuda_hash_pages(vfmig_cuda *c, uint64_t offset, uint64_t npages, uint64_t *hashes)
{
    (void)c;
    (void)offset;
    (void)npages;
    (void)hashes;
    return VFMIG_ENODEV;
}

int vfmig_cuda_sim_create(const vfmig_cuda_config *cfg, int content, uint64_t dirty_rate, uint64_t hot_bytes,
                          uint64_t seed, vfmig_cuda_sim **out, char *err, size_t errlen)
{
    (void)cfg;
    (void)content;
    (void)dirty_rate;
    (void)hot_bytes;
    (void)seed;
    if (out)
        *out = NULL;
    say(err, errlen);
    return VFMIG_ENODEV;
}

void vfmig_cuda_sim_destroy(vfmig_cuda_sim *s) { (void)s; }
vfmig_cuda *vfmig_cuda_sim_device(vfmig_cuda_sim *s)
{
    (void)s;
    return NULL;
}
int vfmig_cuda_sim_start(vfmig_cuda_sim *s)
{
    (void)s;
    return VFMIG_ENODEV;
}
int vfmig_cuda_sim_compare(vfmig_cuda_sim *a, vfmig_cuda_sim *b)
{
    (void)a;
    (void)b;
    return VFMIG_ENODEV;
}
