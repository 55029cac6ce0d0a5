/* bench_gpu.c - the CUDA device's hash kernel against the GPU's own device-to-device copy, and one
 * dirty query (scan of all VRAM, bitmap to the host) with its cost, on a CUDA VF of --vram MiB.
 * Exit 77 without CUDA or a GPU (says why).
 *
 *   bench_gpu [--vram MiB] [--page KiB]
 */
#include "vfmig_sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    uint64_t vram = 4096ull << 20, ps = 64u << 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--vram"))
            vram = strtoull(argv[i + 1], NULL, 10) << 20;
        else if (!strcmp(argv[i], "--page"))
            ps = strtoull(argv[i + 1], NULL, 10) << 10;
        else {
            fprintf(stderr, "usage: bench_gpu [--vram MiB] [--page KiB]\n");
            return 2;
        }
    }
    char err[300];
    if (!vfmig_cuda_available(err, sizeof err)) {
        fprintf(stderr, "bench_gpu: %s\n", err);
        return 77;
    }
    vfmig_cuda_config c;
    vfmig_cuda_config_init(&c);
    c.size = vram;
    c.page_size = ps;
    vfmig_cuda_sim *s;
    if (vfmig_cuda_sim_create(&c, VFMIG_CONTENT_MIX, 0, 0, 1, &s, err, sizeof err)) {
        fprintf(stderr, "bench_gpu: %s\n", err);
        return 1;
    }
    vfmig_cuda *cu = vfmig_cuda_sim_device(s);
    double hash, copy;
    if (vfmig_cuda_measure(cu, &hash, &copy)) {
        fprintf(stderr, "bench_gpu: measuring failed\n");
        return 1;
    }
    vfmig_device d;
    vfmig_cuda_device(cu, &d);
    uint64_t np = vram / ps, *bm = calloc((np + 63) / 64, 8);
    d.ops->start_tracking(d.dev);
    for (int i = 0; i < 3; i++)
        d.ops->query_dirty(d.dev, 0, 0, np, bm, 1);
    vfmig_tracking_stats st;
    vfmig_cuda_get_stats(cu, &st);
    printf("VRAM %llu MiB, %llu KiB pages\n", (unsigned long long)(vram >> 20), (unsigned long long)(ps >> 10));
    printf("hash kernel            %8.1f GB/s (XXH3-64 of every page, a warp per page)\n", hash);
    printf("device-to-device copy  %8.1f GB/s (cudaMemcpy, bytes copied per second)\n", copy);
    printf("ratio                  %8.2f (issue 10 asks >= 0.50)\n", hash / copy);
    printf("dirty query            %8.3f ms wall, %.3f ms host CPU (scan + %llu-byte bitmap to the host)\n",
           (double)st.last_ns / 1e6, (double)st.last_cpu_ns / 1e6, (unsigned long long)((np + 63) / 64 * 8));
    free(bm);
    vfmig_cuda_sim_destroy(s);
    return 0;
}
