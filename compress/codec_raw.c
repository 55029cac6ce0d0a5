/* compress/codec_raw.c - RAW (the pages as they are) and ZERO (all pages zero: no payload). */
#include "compress/codec_impl.h"

int vfmig__raw_encode(vfmig_codec_ctx *c, int level, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst,
                     size_t cap, size_t *out_len)
{
    (void)c;
    (void)level;
    (void)ref;
    if (cap < len)
        return VFMIG_EINVAL;
    if (len)
        memcpy(dst, src, len);
    *out_len = len;
    return VFMIG_OK;
}

int vfmig__raw_decode(vfmig_codec_ctx *c, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst, size_t n)
{
    (void)c;
    (void)ref;
    if (len != n)
        return VFMIG_ECODEC;
    if (len)
        memcpy(dst, src, len);
    return VFMIG_OK;
}

int vfmig__zero_encode(vfmig_codec_ctx *c, int level, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst,
                      size_t cap, size_t *out_len)
{
    (void)c;
    (void)level;
    (void)ref;
    (void)dst;
    (void)cap;
    if (len && !vfmig__is_zero(src, len))
        return VFMIG_EINVAL;
    *out_len = 0;
    return VFMIG_OK;
}

int vfmig__zero_decode(vfmig_codec_ctx *c, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst, size_t n)
{
    (void)c;
    (void)src;
    (void)ref;
    if (len != 0)
        return VFMIG_ECODEC;
    if (n)
        memset(dst, 0, n);
    return VFMIG_OK;
}

bool vfmig__is_zero(const void *p, size_t len)
{
    const uint8_t *b = p;
    /* Align so the wide loop reads whole cache lines; exit early per 64 bytes. */
    while (len && ((uintptr_t)b & 7u)) {
        if (*b)
            return false;
        b++;
        len--;
    }
    while (len >= 64) {
        uint64_t acc = ld64(b) | ld64(b + 8) | ld64(b + 16) | ld64(b + 24) | ld64(b + 32) |
                       ld64(b + 40) | ld64(b + 48) | ld64(b + 56);
        if (acc)
            return false;
        b += 64;
        len -= 64;
    }
    while (len >= 8) {
        if (ld64(b))
            return false;
        b += 8;
        len -= 8;
    }
    while (len) {
        if (*b)
            return false;
        b++;
        len--;
    }
    return true;
}
