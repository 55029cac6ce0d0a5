/* engine/bitmap.c - dirty bitmap scans. A 1 GiB VF of 4 KiB pages is 4096 words: the scans
 * skip whole zero words and use count-trailing-zeros inside a word. */
#include "engine/bitmap.h"

uint64_t vfmig__bitmap_count(const uint64_t *w, uint64_t nbits)
{
    uint64_t n = 0;
    size_t full = (size_t)(nbits / 64);
    for (size_t i = 0; i < full; i++)
        n += (uint64_t)__builtin_popcountll(w[i]);
    if (nbits % 64)
        n += (uint64_t)__builtin_popcountll(w[full] & ((1ull << (nbits % 64)) - 1));
    return n;
}

void vfmig__bitmap_set_range(uint64_t *w, uint64_t first, uint64_t n)
{
    uint64_t i = first, end = first + n;
    while (i < end && (i % 64)) {
        vfmig_bitmap_set(w, i);
        i++;
    }
    for (; i + 64 <= end; i += 64)
        w[i / 64] = ~0ull;
    for (; i < end; i++)
        vfmig_bitmap_set(w, i);
}

void vfmig__bitmap_trim(uint64_t *w, uint64_t nbits)
{
    if (nbits % 64)
        w[nbits / 64] &= (1ull << (nbits % 64)) - 1;
}

void vfmig__bitmap_or(uint64_t *dst, const uint64_t *src, uint64_t nbits)
{
    size_t n = vfmig_bitmap_words(nbits);
    for (size_t i = 0; i < n; i++)
        dst[i] |= src[i];
    vfmig__bitmap_trim(dst, nbits);
}

/* First set bit at or after `from`, or nbits. */
static uint64_t find_set(const uint64_t *w, uint64_t nbits, uint64_t from)
{
    if (from >= nbits)
        return nbits;
    size_t wi = (size_t)(from / 64);
    uint64_t word = w[wi] & (~0ull << (from % 64));
    size_t nw = vfmig_bitmap_words(nbits);
    while (!word) {
        if (++wi >= nw)
            return nbits;
        word = w[wi];
    }
    uint64_t i = (uint64_t)wi * 64 + (uint64_t)__builtin_ctzll(word);
    return i < nbits ? i : nbits;
}

/* First clear bit at or after `from`, or nbits. */
static uint64_t find_clear(const uint64_t *w, uint64_t nbits, uint64_t from)
{
    if (from >= nbits)
        return nbits;
    size_t wi = (size_t)(from / 64);
    uint64_t word = ~w[wi] & (~0ull << (from % 64));
    size_t nw = vfmig_bitmap_words(nbits);
    while (!word) {
        if (++wi >= nw)
            return nbits;
        word = ~w[wi];
    }
    uint64_t i = (uint64_t)wi * 64 + (uint64_t)__builtin_ctzll(word);
    return i < nbits ? i : nbits;
}

bool vfmig__bitmap_next_run(const uint64_t *w, uint64_t nbits, uint64_t from, uint64_t max_len,
                           uint64_t *start, uint64_t *len)
{
    uint64_t s = find_set(w, nbits, from);
    if (s >= nbits)
        return false;
    uint64_t e = find_clear(w, nbits, s);
    if (max_len && e - s > max_len)
        e = s + max_len;
    *start = s;
    *len = e - s;
    return true;
}
