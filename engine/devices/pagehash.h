/* pagehash.h - private: the page hash of the dirty trackers, written once for the host and the GPU.
 *
 * The hash is XXH3_64bits (seed 0, default secret) of one tracking page. The host tracker calls
 * libxxhash (vectorized); the CUDA device computes the same function in a kernel, from the
 * portable formulation below, which the test suite checks against libxxhash on the host
 * (tests/test_hashtrack.c). Tracking pages are multiples of 1 KiB above 240 bytes, so only XXH3's
 * long-input path is needed: 1 KiB blocks of 16 stripes, a scramble after every block but the
 * last, whose 16th stripe is taken with a secret shifted by 7 bytes ("last stripe").
 *
 * That structure is what makes it GPU friendly: inside a block the eight accumulators only add,
 * so the 16 stripes of a block can be summed in any order (a warp reduces them), and only the
 * scrambles between blocks are sequential. vfmig_ph_block() below is that per-block step; the
 * host reference and the kernel both use it.
 */
#ifndef VFMIG_PAGEHASH_H
#define VFMIG_PAGEHASH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define VFMIG_PH_FN static __host__ __device__ inline
#define VFMIG_PH_CONST __device__ __constant__
#else
#define VFMIG_PH_FN static inline
#define VFMIG_PH_CONST
#endif

#define VFMIG_PH_P32_1 0x9E3779B1u
#define VFMIG_PH_P32_2 0x85EBCA77u
#define VFMIG_PH_P32_3 0xC2B2AE3Du
#define VFMIG_PH_P64_1 0x9E3779B185EBCA87ull
#define VFMIG_PH_P64_2 0xC2B2AE3D27D4EB4Full
#define VFMIG_PH_P64_3 0x165667B19E3779F9ull
#define VFMIG_PH_P64_4 0x85EBCA77C2B2AE63ull
#define VFMIG_PH_P64_5 0x27D4EB2F165667C5ull
#define VFMIG_PH_BLOCK 1024u /* 16 stripes of 64 bytes */

/* XXH3's default secret (kSecret, 192 bytes), as 8-byte words at every byte offset we need:
 * words at 8*k (accumulate: k = 0..23), the scramble key at 128, the last-stripe key at 121 and
 * the merge keys at 11. Kept as bytes and read little-endian, so both compilers agree. */
static const uint8_t vfmig_ph_secret_host[192] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

VFMIG_PH_FN uint64_t vfmig_ph_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* The keys a page hash needs, unpacked once from the secret (host or constant memory). */
typedef struct vfmig_ph_keys {
    uint64_t acc[16 + 8]; /* word of stripe s, lane i: acc[s + i] (secret + 8*(s+i)) */
    uint64_t last[8];     /* last stripe, lane i: secret + 121 + 8*i */
    uint64_t scramble[8]; /* secret + 128 + 8*i */
    uint64_t merge[8];    /* secret + 11 + 8*i */
} vfmig_ph_keys;

VFMIG_PH_FN void vfmig_ph_keys_init(vfmig_ph_keys *k, const uint8_t *secret)
{
    for (int i = 0; i < 24; i++)
        k->acc[i] = vfmig_ph_le64(secret + 8 * i);
    for (int i = 0; i < 8; i++) {
        k->last[i] = vfmig_ph_le64(secret + 121 + 8 * i);
        k->scramble[i] = vfmig_ph_le64(secret + 128 + 8 * i);
        k->merge[i] = vfmig_ph_le64(secret + 11 + 8 * i);
    }
}

/* One word's contributions: `data` goes to lane i^1, the folded product to lane i. */
VFMIG_PH_FN uint64_t vfmig_ph_mul(uint64_t data, uint64_t key)
{
    uint64_t dk = data ^ key;
    return (uint64_t)(uint32_t)dk * (uint64_t)(uint32_t)(dk >> 32);
}

VFMIG_PH_FN uint64_t vfmig_ph_scramble(uint64_t acc, uint64_t key)
{
    acc ^= acc >> 47;
    acc ^= key;
    return acc * VFMIG_PH_P32_1;
}

VFMIG_PH_FN uint64_t vfmig_ph_fold128(uint64_t a, uint64_t b)
{
#ifdef __CUDA_ARCH__
    return (a * b) ^ __umul64hi(a, b);
#else
    unsigned __int128 p = (unsigned __int128)a * b;
    return (uint64_t)p ^ (uint64_t)(p >> 64);
#endif
}

VFMIG_PH_FN void vfmig_ph_acc_init(uint64_t acc[8])
{
    acc[0] = VFMIG_PH_P32_3;
    acc[1] = VFMIG_PH_P64_1;
    acc[2] = VFMIG_PH_P64_2;
    acc[3] = VFMIG_PH_P64_3;
    acc[4] = VFMIG_PH_P64_4;
    acc[5] = VFMIG_PH_P32_2;
    acc[6] = VFMIG_PH_P64_5;
    acc[7] = VFMIG_PH_P32_1;
}

/* Final merge of the eight accumulators for an input of `len` bytes. */
VFMIG_PH_FN uint64_t vfmig_ph_merge(const uint64_t acc[8], const vfmig_ph_keys *k, uint64_t len)
{
    uint64_t h = len * VFMIG_PH_P64_1;
    for (int i = 0; i < 4; i++)
        h += vfmig_ph_fold128(acc[2 * i] ^ k->merge[2 * i], acc[2 * i + 1] ^ k->merge[2 * i + 1]);
    h ^= h >> 37;
    h *= 0x165667919E3779F9ull;
    h ^= h >> 32;
    return h;
}

/* Word w (0..127) of a 1 KiB block, little-endian. */
VFMIG_PH_FN uint64_t vfmig_ph_word(const uint8_t *block, unsigned w)
{
#ifdef __CUDA_ARCH__
    return ((const uint64_t *)(const void *)block)[w]; /* GPUs are little-endian; pages aligned */
#else
    return vfmig_ph_le64(block + 8 * w);
#endif
}

/* Key of word w of a block; in the page's last block the 16th stripe uses the last-stripe key. */
VFMIG_PH_FN uint64_t vfmig_ph_key(const vfmig_ph_keys *k, unsigned w, int last_block)
{
    unsigned s = w / 8, i = w % 8;
    return last_block && s == 15 ? k->last[i] : k->acc[s + i];
}

/*
 * The kernel's decomposition (a warp per page): lane l (0..31) takes words l, l+32, l+64, l+96
 * of each block - all of accumulator lane i = l % 8 - and returns their product sum (for
 * accumulator i) and value sum (for accumulator i^1). The kernel adds the partials of lanes of
 * equal i with shuffles; vfmig_ph_page_lanes() below does the same additions on the host, so the
 * test suite checks the kernel's arithmetic, not just XXH3's.
 */
VFMIG_PH_FN void vfmig_ph_lane_partials(const uint8_t *block, unsigned lane, int last_block, const vfmig_ph_keys *k,
                                        uint64_t *m, uint64_t *d)
{
    uint64_t ms = 0, ds = 0;
    for (unsigned j = 0; j < 4; j++) {
        unsigned w = lane + 32 * j;
        uint64_t v = vfmig_ph_word(block, w);
        ms += vfmig_ph_mul(v, vfmig_ph_key(k, w, last_block));
        ds += v;
    }
    *m = ms;
    *d = ds;
}

/* Host emulation of the warp: the same partials, summed lane group by lane group. */
VFMIG_PH_FN uint64_t vfmig_ph_page_lanes(const uint8_t *page, size_t len, const vfmig_ph_keys *k)
{
    uint64_t acc[8];
    vfmig_ph_acc_init(acc);
    size_t nblocks = len / VFMIG_PH_BLOCK;
    for (size_t b = 0; b < nblocks; b++) {
        int last = b + 1 == nblocks;
        uint64_t m[32], d[32], msum[8] = {0}, dsum[8] = {0};
        for (unsigned l = 0; l < 32; l++) {
            vfmig_ph_lane_partials(page + b * VFMIG_PH_BLOCK, l, last, k, &m[l], &d[l]);
            msum[l % 8] += m[l];
            dsum[l % 8] += d[l];
        }
        for (int i = 0; i < 8; i++) {
            acc[i] += msum[i] + dsum[i ^ 1];
            if (!last)
                acc[i] = vfmig_ph_scramble(acc[i], k->scramble[i]);
        }
    }
    return vfmig_ph_merge(acc, k, len);
}

/*
 * Reference page hash: XXH3_64bits(page, len) for len a multiple of 1 KiB (>= 1 KiB), written as
 * the per-block sums the kernel computes in parallel. Slow (byte loads); for tests and for hosts
 * without libxxhash's result to compare against.
 */
VFMIG_PH_FN uint64_t vfmig_ph_page_ref(const uint8_t *page, size_t len, const vfmig_ph_keys *k)
{
    uint64_t acc[8];
    vfmig_ph_acc_init(acc);
    size_t nblocks = len / VFMIG_PH_BLOCK;
    for (size_t b = 0; b < nblocks; b++) {
        int last = b + 1 == nblocks;
        const uint8_t *blk = page + b * VFMIG_PH_BLOCK;
        uint64_t sum[8] = {0};
        for (unsigned w = 0; w < 128; w++) {
            uint64_t d = vfmig_ph_word(blk, w);
            sum[(w % 8) ^ 1] += d;
            sum[w % 8] += vfmig_ph_mul(d, vfmig_ph_key(k, w, last));
        }
        for (int i = 0; i < 8; i++) {
            acc[i] += sum[i];
            if (!last)
                acc[i] = vfmig_ph_scramble(acc[i], k->scramble[i]);
        }
    }
    return vfmig_ph_merge(acc, k, len);
}

#endif
