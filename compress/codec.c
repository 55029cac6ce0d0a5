/*
 * compress/codec.c - RAW, ZERO, LZ4, ZSTD and DELTA page codecs.
 *
 * Hot path: the encoders hand the caller's buffers straight to the libraries (no staging
 * copy) and use state preallocated in the ctx, so nothing is allocated per call.
 *
 * DELTA format (the XOR of src against ref, run-length coded; no header, the decoded size is
 * known from the frame):
 *     stream := token*        token := ZRUN [LLEN LITERAL]
 *     ZRUN   : LEB128 varint, bytes equal to ref (XOR zero) - copied from ref
 *     LLEN   : LEB128 varint >= 1, then LLEN bytes of XOR values
 * Decoding stops when the position reaches dst_len right after a ZRUN or a LITERAL; the
 * input must then be exhausted. An unchanged page is one varint (3 bytes for 64 KiB); one
 * changed byte costs about 6 bytes. The encoder only ends a literal at a whole zero word, so
 * short equal gaps stay inside literals (cheaper than a new token and keeps tokens few).
 */
#include "compress/codec.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>
#include <zstd.h>

struct vfmig_codec_ctx {
    size_t max_src;
    void *lz4_state;  /* LZ4_sizeofState() bytes; reset by every extState call */
    ZSTD_CCtx *zc;
    ZSTD_DCtx *zd;
};

int vfmig_codec_ctx_create(size_t max_src_bytes, vfmig_codec_ctx **out)
{
    if (!out)
        return VFMIG_EINVAL;
    *out = NULL;
    vfmig_codec_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return VFMIG_ENOMEM;
    c->max_src = max_src_bytes;
    c->lz4_state = malloc((size_t)LZ4_sizeofState());
    c->zc = ZSTD_createCCtx();
    c->zd = ZSTD_createDCtx();
    if (!c->lz4_state || !c->zc || !c->zd) {
        vfmig_codec_ctx_destroy(c);
        return VFMIG_ENOMEM;
    }
    *out = c;
    return VFMIG_OK;
}

void vfmig_codec_ctx_destroy(vfmig_codec_ctx *c)
{
    if (!c)
        return;
    free(c->lz4_state);
    ZSTD_freeCCtx(c->zc);
    ZSTD_freeDCtx(c->zd);
    free(c);
}

static size_t delta_bound(size_t n)
{
    /* Literals end only at a zero word, so tokens <= n/9 + 2, each with two varints. */
    return n + n / 4 + 16;
}

size_t vfmig_codec_bound(size_t n)
{
    size_t b = delta_bound(n);
    size_t lz = n + n / 255 + 16; /* LZ4_COMPRESSBOUND, without its int limit */
    size_t zs = ZSTD_compressBound(n);
    if (lz > b)
        b = lz;
    if (!ZSTD_isError(zs) && zs > b)
        b = zs;
    return b;
}

/* ---- word helpers ------------------------------------------------------------------------ */

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

bool vfmig_is_zero(const void *p, size_t len)
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

/* ---- DELTA ------------------------------------------------------------------------------- */

static inline size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *varint_put(uint8_t *op, uint64_t v)
{
    while (v >= 0x80) {
        *op++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *op++ = (uint8_t)v;
    return op;
}

/* Reads a varint of at most `max` value; NULL on truncation, overflow or a value > max. */
static inline const uint8_t *varint_get(const uint8_t *ip, const uint8_t *iend, uint64_t max,
                                        uint64_t *v)
{
    if (ip < iend && *ip < 0x80) { /* most tokens are short */
        if (*ip > max)
            return NULL;
        *v = *ip;
        return ip + 1;
    }
    uint64_t r = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (ip >= iend)
            return NULL;
        uint8_t b = *ip++;
        uint64_t part = (uint64_t)(b & 0x7f);
        if (shift == 63 && part > 1)
            return NULL;
        r |= part << shift;
        if (!(b & 0x80)) {
            if (r > max)
                return NULL;
            *v = r;
            return ip;
        }
    }
    return NULL;
}

/* First index >= pos where s and r differ, or n. */
static size_t zero_run_end(const uint8_t *s, const uint8_t *r, size_t pos, size_t n)
{
    while (pos + 32 <= n) {
        uint64_t x0 = ld64(s + pos) ^ ld64(r + pos);
        uint64_t x1 = ld64(s + pos + 8) ^ ld64(r + pos + 8);
        uint64_t x2 = ld64(s + pos + 16) ^ ld64(r + pos + 16);
        uint64_t x3 = ld64(s + pos + 24) ^ ld64(r + pos + 24);
        if (!(x0 | x1 | x2 | x3)) {
            pos += 32;
            continue;
        }
        if (x0)
            return pos + first_nz(x0);
        if (x1)
            return pos + 8 + first_nz(x1);
        if (x2)
            return pos + 16 + first_nz(x2);
        return pos + 24 + first_nz(x3);
    }
    while (pos + 8 <= n) {
        uint64_t x = ld64(s + pos) ^ ld64(r + pos);
        if (x)
            return pos + first_nz(x);
        pos += 8;
    }
    while (pos < n && s[pos] == r[pos])
        pos++;
    return pos;
}

/* End (exclusive, after the last differing byte) of a literal starting at a differing pos:
 * the literal stops before the first whole word (8 bytes from its stride) of equal bytes. */
static size_t literal_end(const uint8_t *s, const uint8_t *r, size_t pos, size_t n)
{
    size_t end = pos + 1;
    while (pos + 8 <= n) {
        uint64_t x = ld64(s + pos) ^ ld64(r + pos);
        if (!x)
            return end;
        end = pos + last_nz(x) + 1;
        pos += 8;
    }
    for (; pos < n; pos++)
        if (s[pos] != r[pos])
            end = pos + 1;
    return end;
}

static inline void xor_into(uint8_t *d, const uint8_t *a, const uint8_t *b, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        st64(d + i, ld64(a + i) ^ ld64(b + i));
    for (; i < n; i++)
        d[i] = (uint8_t)(a[i] ^ b[i]);
}

/* One DELTA stream over `npages` pages of `ps` bytes held in separate buffers. A zero run may
 * span page boundaries (it is carried over); literals end at a page's end (the next one starts
 * after a zero run of length 0). With `update`, each literal is XORed into ref in the same pass,
 * from the output just written, so ref becomes what the decoder will produce even if src
 * changes while it is read. */
static int delta_encode_core(const uint8_t *const *src, uint8_t *const *ref, size_t npages, size_t ps,
                             bool update, uint8_t *dst, size_t cap, size_t *out_len)
{
    uint8_t *op = dst;
    size_t room = cap;
    uint64_t zrun = 0;
    for (size_t k = 0; k < npages; k++) {
        const uint8_t *s = src[k];
        uint8_t *r = ref[k];
        size_t pos = 0;
        while (pos < ps) {
            size_t z = zero_run_end(s, r, pos, ps);
            zrun += z - pos;
            pos = z;
            if (pos == ps)
                break;
            size_t e = literal_end(s, r, pos, ps);
            size_t lit = e - pos;
            size_t need = varint_len(zrun) + varint_len(lit) + lit;
            if (need > room)
                return VFMIG_EINVAL;
            op = varint_put(op, zrun);
            op = varint_put(op, lit);
            zrun = 0;
            if (!update && lit <= 16 && pos + 16 <= ps && room >= need + 16) {
                /* short literal: two fixed words; the spill past it is overwritten next */
                st64(op, ld64(s + pos) ^ ld64(r + pos));
                st64(op + 8, ld64(s + pos + 8) ^ ld64(r + pos + 8));
            } else {
                xor_into(op, s + pos, r + pos, lit);
            }
            if (update)
                xor_into(r + pos, r + pos, op, lit);
            op += lit;
            room -= need;
            pos = e;
        }
    }
    /* A trailing zero run (or, for an empty run, the one token a stream needs). */
    if (zrun || op == dst) {
        size_t need = varint_len(zrun);
        if (need > room)
            return VFMIG_EINVAL;
        op = varint_put(op, zrun);
    }
    *out_len = (size_t)(op - dst);
    return VFMIG_OK;
}

static int delta_encode(const uint8_t *s, const uint8_t *r, size_t n, uint8_t *dst, size_t cap,
                        size_t *out_len)
{
    uint8_t *rw = (uint8_t *)(uintptr_t)r; /* not written: update is off */
    return delta_encode_core(&s, &rw, 1, n, false, dst, cap, out_len);
}

int vfmig_delta_encode_pages(const uint8_t *const *src, uint8_t *const *ref, size_t npages, size_t page_size,
                             uint8_t *dst, size_t cap, size_t *out_len)
{
    if (!src || !ref || !dst || !out_len || !page_size)
        return VFMIG_EINVAL;
    return delta_encode_core(src, ref, npages, page_size, true, dst, cap, out_len);
}

static int delta_decode(const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst,
                        size_t n)
{
    const uint8_t *ip = src, *iend = src + len;
    const bool in_place = ref == dst;
    size_t pos = 0;
    for (;;) {
        uint64_t v;
        ip = varint_get(ip, iend, n - pos, &v);
        if (!ip)
            return VFMIG_ECODEC;
        /* Short runs and literals use fixed 16-byte moves when they fit in the buffers:
         * the spill is rewritten by the next token, since tokens write dst in order. In
         * place (ref == dst) nothing may spill: zero runs write nothing there. */
        if (!in_place) {
            if (v <= 16 && pos + 16 <= n)
                memcpy(dst + pos, ref + pos, 16);
            else if (v)
                memcpy(dst + pos, ref + pos, (size_t)v);
        }
        pos += (size_t)v;
        if (pos == n)
            break;
        ip = varint_get(ip, iend, n - pos, &v);
        if (!ip || v == 0 || v > (uint64_t)(iend - ip))
            return VFMIG_ECODEC;
        if (!in_place && v <= 16 && pos + 16 <= n && iend - ip >= 16) {
            st64(dst + pos, ld64(ref + pos) ^ ld64(ip));
            st64(dst + pos + 8, ld64(ref + pos + 8) ^ ld64(ip + 8));
        } else {
            xor_into(dst + pos, ref + pos, ip, (size_t)v);
        }
        ip += v;
        pos += (size_t)v;
        if (pos == n)
            break;
    }
    return ip == iend ? VFMIG_OK : VFMIG_ECODEC;
}

/* ---- dispatch ---------------------------------------------------------------------------- */

int vfmig_encode(vfmig_codec_ctx *c, int codec, int level, const void *src, size_t len,
                 const void *ref, void *dst, size_t cap, size_t *out_len)
{
    if (!out_len || (len && (!src || !dst)) || (c && len > c->max_src))
        return VFMIG_EINVAL;
    switch (codec) {
    case VFMIG_CODEC_RAW:
        if (cap < len)
            return VFMIG_EINVAL;
        if (len)
            memcpy(dst, src, len);
        *out_len = len;
        return VFMIG_OK;
    case VFMIG_CODEC_ZERO:
        if (len && !vfmig_is_zero(src, len))
            return VFMIG_EINVAL;
        *out_len = 0;
        return VFMIG_OK;
    case VFMIG_CODEC_LZ4: {
        if (!c || len > (size_t)LZ4_MAX_INPUT_SIZE)
            return VFMIG_EINVAL;
        int capi = cap > (size_t)INT_MAX ? INT_MAX : (int)cap;
        int n = LZ4_compress_fast_extState(c->lz4_state, src, dst, (int)len, capi,
                                           level > 0 ? level : 1);
        if (n <= 0)
            return VFMIG_EINVAL; /* cap too small */
        *out_len = (size_t)n;
        return VFMIG_OK;
    }
    case VFMIG_CODEC_ZSTD: {
        if (!c)
            return VFMIG_EINVAL;
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
    case VFMIG_CODEC_DELTA:
        if (!ref && len)
            return VFMIG_EINVAL;
        return delta_encode(src, ref, len, dst, cap, out_len);
    default:
        return VFMIG_EINVAL;
    }
}

int vfmig_decode(vfmig_codec_ctx *c, int codec, const void *src, size_t len, const void *ref,
                 void *dst, size_t dst_len)
{
    if ((len && !src) || (dst_len && !dst) || (c && dst_len > c->max_src))
        return VFMIG_EINVAL;
    switch (codec) {
    case VFMIG_CODEC_RAW:
        if (len != dst_len)
            return VFMIG_ECODEC;
        if (len)
            memcpy(dst, src, len);
        return VFMIG_OK;
    case VFMIG_CODEC_ZERO:
        if (len != 0)
            return VFMIG_ECODEC;
        if (dst_len)
            memset(dst, 0, dst_len);
        return VFMIG_OK;
    case VFMIG_CODEC_LZ4: {
        if (len > (size_t)INT_MAX || dst_len > (size_t)INT_MAX || len == 0)
            return VFMIG_ECODEC;
        int n = LZ4_decompress_safe(src, dst, (int)len, (int)dst_len);
        return n >= 0 && (size_t)n == dst_len ? VFMIG_OK : VFMIG_ECODEC;
    }
    case VFMIG_CODEC_ZSTD: {
        if (!c)
            return VFMIG_EINVAL;
        /* Exactly one frame that declares exactly dst_len bytes: no trailing data, no
         * concatenated or skippable frames, no size surprises. */
        unsigned long long fcs = ZSTD_getFrameContentSize(src, len);
        if (fcs == ZSTD_CONTENTSIZE_ERROR || fcs == ZSTD_CONTENTSIZE_UNKNOWN || fcs != dst_len)
            return VFMIG_ECODEC;
        size_t fl = ZSTD_findFrameCompressedSize(src, len);
        if (ZSTD_isError(fl) || fl != len)
            return VFMIG_ECODEC;
        size_t n = ZSTD_decompressDCtx(c->zd, dst, dst_len, src, len);
        return !ZSTD_isError(n) && n == dst_len ? VFMIG_OK : VFMIG_ECODEC;
    }
    case VFMIG_CODEC_DELTA:
        if (!ref && dst_len)
            return VFMIG_EINVAL;
        return delta_decode(src, len, ref, dst, dst_len);
    default:
        return VFMIG_ECODEC;
    }
}
