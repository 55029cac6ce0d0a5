/* compress/codec_zstd.c - ZSTD (libzstd), level 0 = 1, negative levels allowed. */
#include "compress/codec_impl.h"

#include <zstd.h>

size_t vfmig__zstd_bound(size_t n)
{
    size_t b = ZSTD_compressBound(n);
    return ZSTD_isError(b) ? n : b;
}

int vfmig__zstd_encode(vfmig_codec_ctx *c, int level, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst,
                      size_t cap, size_t *out_len)
{
    (void)ref;
    int lv = level == 0 ? 1 : level;
    if (lv > ZSTD_maxCLevel())
        lv = ZSTD_maxCLevel();
    if (lv < ZSTD_minCLevel())
        lv = ZSTD_minCLevel();
    size_t n = ZSTD_compressCCtx(c->zc, dst, cap, src, len, lv);
    if (ZSTD_isError(n))
        return VFMIG_EINVAL;
    *out_len = n;
    return VFMIG_OK;
}

int vfmig__zstd_decode(vfmig_codec_ctx *c, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst, size_t n)
{
    (void)ref;
    /* Exactly one frame that declares exactly n bytes: no trailing data, no concatenated or
     * skippable frames, no size surprises. */
    unsigned long long fcs = ZSTD_getFrameContentSize(src, len);
    if (fcs == ZSTD_CONTENTSIZE_ERROR || fcs == ZSTD_CONTENTSIZE_UNKNOWN || fcs != n)
        return VFMIG_ECODEC;
    size_t fl = ZSTD_findFrameCompressedSize(src, len);
    if (ZSTD_isError(fl) || fl != len)
        return VFMIG_ECODEC;
    size_t got = ZSTD_decompressDCtx(c->zd, dst, n, src, len);
    return !ZSTD_isError(got) && got == n ? VFMIG_OK : VFMIG_ECODEC;
}
