/*
 * compress/codec_impl.h - private to compress/: what the codecs share (their per-thread state,
 * word helpers) and the functions each codec's file gives the table in codecs.c.
 */
#ifndef VFMIG_COMPRESS_CODEC_IMPL_H
#define VFMIG_COMPRESS_CODEC_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <zstd.h>

#include "compress/codec.h"

struct vfmig_codec_ctx {
    size_t max_src;
    void *lz4_state;  /* LZ4_sizeofState() bytes; reset by every extState call */
    ZSTD_CCtx *zc;
    ZSTD_DCtx *zd;
};

/* Word helpers. */

static inline uint64_t ld64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline void st64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, sizeof(v));
}

/* Index (in memory order) of the first / last non-zero byte of a non-zero word. */
static inline unsigned first_nz(uint64_t x)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (unsigned)__builtin_clzll(x) >> 3;
#else
    return (unsigned)__builtin_ctzll(x) >> 3;
#endif
}

static inline unsigned last_nz(uint64_t x)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return 7u - ((unsigned)__builtin_ctzll(x) >> 3);
#else
    return 7u - ((unsigned)__builtin_clzll(x) >> 3);
#endif
}


/* Each codec: encode and decode with the contract of vfmig__encode / vfmig__decode, arguments
 * already checked by the dispatcher (codecs.c); bound = largest output for n input bytes. */
int vfmig__raw_encode(vfmig_codec_ctx *c, int level, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst,
                     size_t cap, size_t *out_len);
int vfmig__raw_decode(vfmig_codec_ctx *c, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst, size_t n);
int vfmig__zero_encode(vfmig_codec_ctx *c, int level, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst,
                      size_t cap, size_t *out_len);
int vfmig__zero_decode(vfmig_codec_ctx *c, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst, size_t n);
size_t vfmig__lz4_bound(size_t n);
int vfmig__lz4_encode(vfmig_codec_ctx *c, int level, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst,
                     size_t cap, size_t *out_len);
int vfmig__lz4_decode(vfmig_codec_ctx *c, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst, size_t n);
size_t vfmig__zstd_bound(size_t n);
int vfmig__zstd_encode(vfmig_codec_ctx *c, int level, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst,
                      size_t cap, size_t *out_len);
int vfmig__zstd_decode(vfmig_codec_ctx *c, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst, size_t n);
size_t vfmig__delta_bound(size_t n);
int vfmig__delta_encode(vfmig_codec_ctx *c, int level, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst,
                       size_t cap, size_t *out_len);
int vfmig__delta_decode(vfmig_codec_ctx *c, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst, size_t n);

#endif
