/*
 * compress/codec_delta.c - DELTA: the XOR of a page run against the copy last sent, run-length
 * coded (no header, the decoded size is known from the frame):
 *     stream := token*        token := ZRUN [LLEN LITERAL]
 *     ZRUN   : LEB128 varint, bytes equal to ref (XOR zero) - copied from ref
 *     LLEN   : LEB128 varint >= 1, then LLEN bytes of XOR values
 * Decoding stops when the position reaches dst_len right after a ZRUN or a LITERAL; the
 * input must then be exhausted. An unchanged page is one varint (3 bytes for 64 KiB); one
 * changed byte costs about 6 bytes. The encoder only ends a literal at a whole zero word, so
 * short equal gaps stay inside literals (cheaper than a new token and keeps tokens few).
 */
#include "compress/codec_impl.h"

#include <stdatomic.h>

size_t vfmig__delta_bound(size_t n)
{
    /* Literals end only at a zero word, so tokens <= n/9 + 2, each with two varints. */
    return n + n / 4 + 16;
}


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

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* Skips whole 64-byte blocks where s and r are equal: a re-sent page of a hot set is mostly equal
 * bytes, and this scan is the source's whole cost for it (two reads per byte, at what the memory
 * gives on AVX2 against ~half that with the 64-bit words below). The build has no -march: picked
 * at run time. */
__attribute__((target("avx2"))) static size_t equal_blocks_avx2(const uint8_t *s, const uint8_t *r, size_t pos,
                                                                size_t n)
{
    while (pos + 64 <= n) {
        __m256i x0 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(const void *)(s + pos)),
                                      _mm256_loadu_si256((const __m256i *)(const void *)(r + pos)));
        __m256i x1 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(const void *)(s + pos + 32)),
                                      _mm256_loadu_si256((const __m256i *)(const void *)(r + pos + 32)));
        __m256i x = _mm256_or_si256(x0, x1);
        if (!_mm256_testz_si256(x, x))
            break;
        pos += 64;
    }
    return pos;
}

static int have_avx2(void)
{
    static _Atomic int known; /* 0 = not asked yet, 1 = no, 2 = yes */
    int k = atomic_load_explicit(&known, memory_order_relaxed);
    if (!k) {
        __builtin_cpu_init();
        k = __builtin_cpu_supports("avx2") ? 2 : 1;
        atomic_store_explicit(&known, k, memory_order_relaxed);
    }
    return k == 2;
}
#define EQUAL_BLOCKS(s, r, pos, n) (have_avx2() ? equal_blocks_avx2(s, r, pos, n) : (pos))
#else
#define EQUAL_BLOCKS(s, r, pos, n) (pos)
#endif

/* First index >= pos where s and r differ, or n. */
static size_t zero_run_end(const uint8_t *s, const uint8_t *r, size_t pos, size_t n)
{
    pos = EQUAL_BLOCKS(s, r, pos, n);
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

int vfmig__delta_encode(vfmig_codec_ctx *c, int level, const uint8_t *s, size_t n, const uint8_t *r, uint8_t *dst,
                       size_t cap, size_t *out_len)
{
    (void)c;
    (void)level;
    uint8_t *rw = (uint8_t *)(uintptr_t)r; /* not written: update is off */
    return delta_encode_core(&s, &rw, 1, n, false, dst, cap, out_len);
}

int vfmig__delta_encode_pages(const uint8_t *const *src, uint8_t *const *ref, size_t npages, size_t page_size,
                             uint8_t *dst, size_t cap, size_t *out_len)
{
    if (!src || !ref || !dst || !out_len || !page_size)
        return VFMIG_EINVAL;
    return delta_encode_core(src, ref, npages, page_size, true, dst, cap, out_len);
}

int vfmig__delta_decode(vfmig_codec_ctx *c, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst,
                       size_t n)
{
    (void)c;
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

