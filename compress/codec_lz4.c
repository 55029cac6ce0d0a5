/* compress/codec_lz4.c - LZ4 (liblz4), level = acceleration. State preallocated in the ctx. */
#include "compress/codec_impl.h"

#include <limits.h>
#include <lz4.h>

size_t vfmig__lz4_bound(size_t n)
{
    return n + n / 255 + 16; /* LZ4_COMPRESSBOUND, without its int limit */
}

int vfmig__lz4_encode(vfmig_codec_ctx *c, int level, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst,
                     size_t cap, size_t *out_len)
{
    (void)ref;
    if (len > (size_t)LZ4_MAX_INPUT_SIZE)
        return VFMIG_EINVAL;
    int capi = cap > (size_t)INT_MAX ? INT_MAX : (int)cap;
    int n = LZ4_compress_fast_extState(c->lz4_state, (const char *)src, (char *)dst, (int)len, capi,
                                       level > 0 ? level : 1);
    if (n <= 0)
        return VFMIG_EINVAL; /* cap too small */
    *out_len = (size_t)n;
    return VFMIG_OK;
}

int vfmig__lz4_decode(vfmig_codec_ctx *c, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst, size_t n)
{
    (void)c;
    (void)ref;
    if (len > (size_t)INT_MAX || n > (size_t)INT_MAX || len == 0)
        return VFMIG_ECODEC;
    int got = LZ4_decompress_safe((const char *)src, (char *)dst, (int)len, (int)n);
    return got >= 0 && (size_t)got == n ? VFMIG_OK : VFMIG_ECODEC;
}
