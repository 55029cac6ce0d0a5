/* engine/bitmap.h - dirty bitmaps: 64-bit words, bit i of word i/64 is page i (LSB first). */
#ifndef VFMIG_ENGINE_BITMAP_H
#define VFMIG_ENGINE_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

static inline size_t vfmig_bitmap_words(uint64_t nbits)
{
    return (size_t)((nbits + 63) / 64);
}

static inline bool vfmig_bitmap_test(const uint64_t *w, uint64_t i)
{
    return (w[i / 64] >> (i % 64)) & 1u;
}

static inline void vfmig_bitmap_set(uint64_t *w, uint64_t i)
{
    w[i / 64] |= 1ull << (i % 64);
}

/** Number of set bits among the first nbits. */
uint64_t vfmig__bitmap_count(const uint64_t *w, uint64_t nbits);
/** Sets bits [first, first + n). */
void vfmig__bitmap_set_range(uint64_t *w, uint64_t first, uint64_t n);
/** Clears bits at and beyond nbits in the last word (devices may leave junk there). */
void vfmig__bitmap_trim(uint64_t *w, uint64_t nbits);
/** dst |= src over nbits. */
void vfmig__bitmap_or(uint64_t *dst, const uint64_t *src, uint64_t nbits);
/**
 * Finds the next run of set bits at or after `from`, at most max_len long.
 * Returns false when there is none; else *start and *len describe it.
 */
bool vfmig__bitmap_next_run(const uint64_t *w, uint64_t nbits, uint64_t from, uint64_t max_len,
                           uint64_t *start, uint64_t *len);

#endif
