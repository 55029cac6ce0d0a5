/* simvf_content.h - private: content generators and PRNGs of the simulated VF.
 *
 * Every generator is counter-based: word i of a run depends only on (key, word position), so a
 * page can be generated in any order, by any thread, and the same seed gives the same image. */
#ifndef VFMIG_SIMVF_CONTENT_H
#define VFMIG_SIMVF_CONTENT_H

#include <stddef.h>
#include <stdint.h>

/* Content kind of one page (VFMIG_CONTENT_ZERO..RANDOM share these values). */
enum { SIMVF_ZERO = 0, SIMVF_TEXTURE = 1, SIMVF_TENSOR = 2, SIMVF_RANDOM = 3, SIMVF_KINDS = 4 };

/* splitmix64 finalizer: a good 64-bit mix, used both as hash and as counter-based PRNG. */
static inline uint64_t simvf_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t simvf_hash2(uint64_t a, uint64_t b)
{
    return simvf_mix(a * 0x9e3779b97f4a7c15ull + simvf_mix(b + 0x632be59bd9b4e019ull));
}

/* Sequential PRNG (splitmix64) for the writers: one add and a mix per draw. */
static inline uint64_t simvf_next(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ull;
    return simvf_mix(*s);
}

/* Uniform in [0, n) without division bias worth caring about (n < 2^32 in practice). */
static inline uint64_t simvf_below(uint64_t *s, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)simvf_next(s) * n) >> 64);
}

/*
 * Generates `nwords` 64-bit words of content `kind` into `dst`, as words word_pos.. of a page
 * whose look is set by `page_key` (texture gradient); `noise_key` varies the fine detail (a write
 * re-renders the same texture with fresh noise). SIMVF_ZERO writes zeros.
 */
void vfmig__simvf_generate(uint64_t *dst, size_t nwords, int kind, uint64_t page_key, uint64_t noise_key,
                    uint64_t word_pos);

/*
 * Kind of every page for VFMIG_CONTENT_MIX: contiguous chunks of 1..4 MiB (smaller for a small
 * VRAM so the mix still shows), kinds drawn 40/25/25/10 % with a quota correction so that the
 * byte shares land close to those targets at any size. Deterministic in `seed`.
 */
void vfmig__simvf_mix_layout(uint8_t *kinds, uint64_t npages, uint64_t page_size, uint64_t seed);

#endif
