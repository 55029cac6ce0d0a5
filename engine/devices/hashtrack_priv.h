/* hashtrack_priv.h - private: the hash tracker's page functions, for its tests and benchmarks. */
#ifndef VFMIG_HASHTRACK_PRIV_H
#define VFMIG_HASHTRACK_PRIV_H

#include <stdint.h>

/* XXH3-64 of one tracking page (the function the CUDA kernel computes too, see pagehash.h), in
 * the fastest build this CPU runs. */
uint64_t vfmig__ht_page_hash(const void *page, uint64_t ps);
/* The AVX2 build of it (x86-64 only, VFMIG_HT_AVX2; call only where the CPU has AVX2). */
uint64_t vfmig__ht_hash_avx2(const void *page, uint64_t ps);
/* The sampling pre-filter's fold of `samples` cache lines of page g. */
uint64_t vfmig__ht_sample_fold(const uint8_t *page, uint64_t ps, uint64_t g, unsigned samples);

#endif
