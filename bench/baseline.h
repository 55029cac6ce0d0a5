/* bench/baseline.h - same-run baselines the benchmarks compare against (the machine is shared
 * and noisy, so absolute figures from another run mean little). */
#ifndef VFMIG_BENCH_BASELINE_H
#define VFMIG_BENCH_BASELINE_H

#include <stddef.h>
#include <stdint.h>

typedef struct bench_tcp_result {
    double gbps;       /* payload GB/s (1e9 bytes/s) */
    double cpu_s_per_gb; /* CPU seconds (both ends) per GB moved */
} bench_tcp_result;

/**
 * Plain loopback TCP: `streams` connections, one sender and one receiver thread each, `bytes`
 * in total written in `chunk`-byte write() calls. Returns 0 or -1 (socket error).
 */
int bench_tcp_baseline(uint64_t bytes, unsigned streams, size_t chunk, bench_tcp_result *out);

/** CPU seconds used by this process so far (all threads). */
double bench_cpu_seconds(void);
double bench_now_s(void);

#endif
