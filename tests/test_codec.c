/* tests/test_codec.c - codecs (round trip, edge cases, hostile input), delta cache, chooser. */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "compress/codec.h"
#include "testutil.h"

enum { K_ZERO, K_TEXTURE, K_TENSOR, K_RANDOM, K_MIX, K_FF, K_COUNT };

static const int codecs[] = {VFMIG_CODEC_RAW, VFMIG_CODEC_ZERO, VFMIG_CODEC_LZ4, VFMIG_CODEC_ZSTD,
                             VFMIG_CODEC_DELTA};
#define NCODECS (int)(sizeof(codecs) / sizeof(codecs[0]))

#define CANARY 64
#define CANARY_BYTE 0xA5

static void fill_kind(uint8_t *p, size_t n, int kind, uint64_t *seed)
{
    switch (kind) {
    case K_ZERO:
        memset(p, 0, n);
        break;
    case K_FF:
        memset(p, 0xff, n);
        break;
    case K_TEXTURE: /* smooth RGBA gradient with a little noise, 256 px rows */
        for (size_t i = 0; i < n; i++) {
            size_t px = i / 4, x = px % 256, y = px / 256;
            uint8_t base = (uint8_t)((i % 4 == 3) ? 255 : (x * (i % 4 + 1) + y * 2) / 3);
            p[i] = (uint8_t)(base + (t_rand(seed) & 3));
        }
        break;
    case K_TENSOR: /* float32 in about [-4, 4]: exponent bytes repeat, mantissas do not */
        for (size_t i = 0; i + 4 <= n; i += 4) {
            float f = (float)((double)(t_rand(seed) >> 11) / 9007199254740992.0 * 8.0 - 4.0);
            memcpy(p + i, &f, 4);
        }
        for (size_t i = n & ~(size_t)3; i < n; i++)
            p[i] = 0;
        break;
    case K_RANDOM:
        for (size_t i = 0; i < n; i++)
            p[i] = (uint8_t)t_rand(seed);
        break;
    case K_MIX: /* 4 KiB pieces of every other kind */
        for (size_t off = 0; off < n; off += 4096) {
            size_t len = n - off < 4096 ? n - off : 4096;
            fill_kind(p + off, len, (int)(t_rand(seed) % 4), seed);
        }
        break;
    }
}

static uint8_t *alloc_canary(size_t n)
{
    uint8_t *p = malloc(n + CANARY);
    if (!p)
        T_FAIL("malloc %zu", n);
    memset(p + n, CANARY_BYTE, CANARY);
    return p;
}

static void check_canary(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < CANARY; i++)
        if (p[n + i] != CANARY_BYTE)
            T_FAIL("canary overwritten at +%zu after %zu bytes", i, n);
}

/* Encodes and decodes once, checking output, canaries, and sizes. Returns encoded size. */
static size_t roundtrip(vfmig_codec_ctx *c, int codec, int level, const uint8_t *src,
                        const uint8_t *ref, size_t n)
{
    size_t cap = vfmig__codec_bound(n);
    uint8_t *enc = alloc_canary(cap);
    size_t elen = 0;
    int rc = vfmig__encode(c, codec, level, src, n, ref, enc, cap, &elen);
    if (codec == VFMIG_CODEC_ZERO && !vfmig__is_zero(src, n)) {
        ASSERT_EQ(rc, VFMIG_EINVAL);
        free(enc);
        return 0;
    }
    if (rc)
        T_FAIL("encode %s n=%zu: %s", vfmig_codec_name(codec), n, vfmig_strerror(rc));
    ASSERT_TRUE(elen <= cap);
    check_canary(enc, cap);
    /* exact-size copy so ASan sees any read past the input */
    uint8_t *in = malloc(elen ? elen : 1);
    memcpy(in, enc, elen);
    uint8_t *dec = alloc_canary(n);
    rc = vfmig__decode(c, codec, in, elen, ref, dec, n);
    if (rc)
        T_FAIL("decode %s n=%zu elen=%zu: %s", vfmig_codec_name(codec), n, elen,
               vfmig_strerror(rc));
    ASSERT_TRUE(memcmp(dec, src, n) == 0);
    check_canary(dec, n);
    if (codec == VFMIG_CODEC_DELTA) { /* in place: ref == dst */
        memcpy(dec, ref, n);
        ASSERT_OK(vfmig__decode(c, codec, in, elen, dec, dec, n));
        ASSERT_TRUE(memcmp(dec, src, n) == 0);
        check_canary(dec, n);
    }
    free(dec);
    free(in);
    free(enc);
    return elen;
}

static void mutate(uint8_t *p, size_t n, double frac, uint64_t *seed)
{
    size_t k = (size_t)((double)n * frac);
    for (size_t i = 0; i < k; i++)
        p[t_rand(seed) % n] ^= (uint8_t)(1 + t_rand(seed) % 255);
}

static void test_roundtrip(vfmig_codec_ctx *c, uint64_t *seed)
{
    static const size_t sizes[] = {0, 1, 7, 4096, 4097, 65536, 200000, 2u << 20};
    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
        size_t n = sizes[si];
        uint8_t *src = malloc(n + 1), *ref = malloc(n + 1);
        for (int k = 0; k < K_COUNT; k++) {
            fill_kind(src, n, k, seed);
            memcpy(ref, src, n);
            if (n)
                mutate(ref, n, 0.05, seed);
            for (int ci = 0; ci < NCODECS; ci++) {
                int levels[] = {0, 0, 0};
                int nl = 1;
                if (codecs[ci] == VFMIG_CODEC_ZSTD && n <= 65536) {
                    levels[0] = -1; levels[1] = 3; levels[2] = 0;
                    nl = 3;
                } else if (codecs[ci] == VFMIG_CODEC_LZ4 && n <= 65536) {
                    levels[1] = 8;
                    nl = 2;
                }
                for (int l = 0; l < nl; l++)
                    roundtrip(c, codecs[ci], levels[l], src, ref, n);
            }
            /* delta against a random (unrelated) reference, too */
            if (n <= 65536) {
                fill_kind(ref, n, K_RANDOM, seed);
                roundtrip(c, VFMIG_CODEC_DELTA, 0, src, ref, n);
            }
        }
        free(src);
        free(ref);
    }
    fprintf(stderr, "roundtrip: ok\n");
}

static void test_delta_sizes(vfmig_codec_ctx *c, uint64_t *seed)
{
    size_t n = 65536;
    uint8_t *src = malloc(n), *ref = malloc(n);
    fill_kind(src, n, K_TEXTURE, seed);
    memcpy(ref, src, n);
    size_t same = roundtrip(c, VFMIG_CODEC_DELTA, 0, src, ref, n);
    ASSERT_TRUE(same <= 4);
    size_t positions[] = {0, 1, 31, 32767, 65534, 65535};
    for (size_t i = 0; i < sizeof(positions) / sizeof(positions[0]); i++) {
        memcpy(ref, src, n);
        ref[positions[i]] ^= 0x40;
        size_t one = roundtrip(c, VFMIG_CODEC_DELTA, 0, src, ref, n);
        if (one > 8)
            T_FAIL("one changed byte at %zu: %zu bytes", positions[i], one);
    }
    /* 5% of bytes changed, scattered: still well below raw */
    memcpy(ref, src, n);
    mutate(ref, n, 0.05, seed);
    size_t five = roundtrip(c, VFMIG_CODEC_DELTA, 0, src, ref, n);
    fprintf(stderr, "delta: same %zu B, 5%% changed %zu B of %zu\n", same, five, n);
    ASSERT_TRUE(five < n / 4);
    /* worst case stays within the bound (checked in roundtrip); alternate byte changes */
    memcpy(ref, src, n);
    for (size_t i = 0; i < n; i += 9)
        ref[i] ^= 1;
    size_t alt = roundtrip(c, VFMIG_CODEC_DELTA, 0, src, ref, n);
    ASSERT_TRUE(alt <= vfmig__codec_bound(n));
    free(src);
    free(ref);
}

/* The run encoder over pages in separate buffers: one stream the plain decoder reads, about the
 * size of the single-buffer encoding, the copies updated to exactly what is decoded, the cap
 * honoured. */
static void test_delta_pages(vfmig_codec_ctx *c, uint64_t *seed)
{
    enum { PS = 4096, NP = 9 };
    uint8_t *src = malloc(PS * NP), *ref = malloc(PS * NP), *copy = malloc(PS * NP), *enc = malloc(2 * PS * NP),
            *one = malloc(2 * PS * NP), *dec = malloc(PS * NP);
    for (int trial = 0; trial < 200; trial++) {
        fill_kind(src, PS * NP, trial % K_COUNT, seed);
        memcpy(ref, src, PS * NP);
        /* some pages unchanged, some with a word changed (at page edges too), some rewritten */
        for (int k = 0; k < NP; k++) {
            uint8_t *p = src + (size_t)k * PS;
            switch ((trial + k) % 5) {
            case 0: break;
            case 1: p[t_rand(seed) % PS] ^= 0x81; break;
            case 2: p[0] ^= 1; p[PS - 1] ^= 2; break;
            case 3: mutate(p, PS, 0.02, seed); break;
            default: fill_kind(p, PS, K_RANDOM, seed); break;
            }
        }
        memcpy(copy, ref, PS * NP);
        /* scattered buffers, in reverse memory order, for the run encoder */
        const uint8_t *s_pages[NP];
        uint8_t *c_pages[NP];
        uint8_t *cbuf = malloc(PS * NP);
        for (int k = 0; k < NP; k++) {
            s_pages[k] = src + (size_t)k * PS;
            c_pages[k] = cbuf + (size_t)(NP - 1 - k) * PS;
            memcpy(c_pages[k], ref + (size_t)k * PS, PS);
        }
        size_t n_run, n_one;
        ASSERT_OK(vfmig__delta_encode_pages(s_pages, c_pages, NP, PS, enc, 2 * PS * NP, &n_run));
        ASSERT_OK(vfmig__encode(c, VFMIG_CODEC_DELTA, 0, src, PS * NP, ref, one, 2 * PS * NP, &n_one));
        /* Literals end at page ends in a run: a few bytes more than one buffer at most. */
        ASSERT_TRUE(n_run <= n_one + 2 * NP);
        memcpy(dec, ref, PS * NP);
        ASSERT_OK(vfmig__decode(c, VFMIG_CODEC_DELTA, enc, n_run, dec, dec, PS * NP));
        ASSERT_TRUE(memcmp(dec, src, PS * NP) == 0);
        for (int k = 0; k < NP; k++)
            ASSERT_TRUE(memcmp(c_pages[k], src + (size_t)k * PS, PS) == 0);
        /* a cap below the output is refused */
        for (int k = 0; k < NP; k++)
            memcpy(c_pages[k], ref + (size_t)k * PS, PS);
        if (n_run > 1)
            ASSERT_EQ(vfmig__delta_encode_pages(s_pages, c_pages, NP, PS, enc, n_run - 1, &n_one), VFMIG_EINVAL);
        free(cbuf);
    }
    free(src);
    free(ref);
    free(copy);
    free(enc);
    free(one);
    free(dec);
    fprintf(stderr, "delta pages: ok\n");
}

static void test_is_zero(void)
{
    uint8_t buf[600];
    memset(buf, 0, sizeof(buf));
    for (size_t off = 0; off < 9; off++)
        for (size_t len = 0; len + off <= 300; len++) {
            ASSERT_TRUE(vfmig__is_zero(buf + off, len));
            for (size_t pos = 0; pos < len; pos += (len > 70 ? 13 : 1)) {
                buf[off + pos] = 1;
                ASSERT_TRUE(!vfmig__is_zero(buf + off, len));
                buf[off + pos] = 0;
            }
        }
    buf[0] = 1;
    ASSERT_TRUE(vfmig__is_zero(buf + 1, 599));
    buf[599] = 0x80;
    ASSERT_TRUE(!vfmig__is_zero(buf + 1, 599));
    ASSERT_TRUE(vfmig__is_zero(buf + 1, 598));
}

static void test_errors(vfmig_codec_ctx *c)
{
    uint8_t src[4096], dst[8192];
    size_t olen;
    memset(src, 0, sizeof(src));
    src[100] = 1;
    ASSERT_EQ(vfmig__encode(c, VFMIG_CODEC_ZERO, 0, src, sizeof(src), NULL, dst, sizeof(dst), &olen),
              VFMIG_EINVAL);
    ASSERT_EQ(vfmig__encode(c, VFMIG_CODEC_AUTO, 0, src, sizeof(src), NULL, dst, sizeof(dst), &olen),
              VFMIG_EINVAL);
    ASSERT_EQ(vfmig__encode(c, 99, 0, src, sizeof(src), NULL, dst, sizeof(dst), &olen), VFMIG_EINVAL);
    ASSERT_EQ(vfmig__encode(c, VFMIG_CODEC_DELTA, 0, src, sizeof(src), NULL, dst, sizeof(dst), &olen),
              VFMIG_EINVAL);
    ASSERT_EQ(vfmig__encode(c, VFMIG_CODEC_RAW, 0, src, sizeof(src), NULL, dst, 100, &olen),
              VFMIG_EINVAL);
    /* a cap below the bound that cannot hold the output */
    for (size_t i = 0; i < sizeof(src); i++)
        src[i] = (uint8_t)(i * 2654435761u >> 13);
    ASSERT_EQ(vfmig__encode(c, VFMIG_CODEC_LZ4, 0, src, sizeof(src), NULL, dst, 64, &olen),
              VFMIG_EINVAL);
    ASSERT_EQ(vfmig__encode(c, VFMIG_CODEC_ZSTD, 0, src, sizeof(src), NULL, dst, 64, &olen),
              VFMIG_EINVAL);
    uint8_t ref[4096] = {0};
    ASSERT_EQ(vfmig__encode(c, VFMIG_CODEC_DELTA, 0, src, sizeof(src), ref, dst, 64, &olen),
              VFMIG_EINVAL);
    /* larger than the ctx was made for */
    vfmig_codec_ctx *small;
    ASSERT_OK(vfmig__codec_ctx_create(1024, &small));
    ASSERT_EQ(vfmig__encode(small, VFMIG_CODEC_LZ4, 0, src, sizeof(src), NULL, dst, sizeof(dst), &olen),
              VFMIG_EINVAL);
    vfmig__codec_ctx_destroy(small);
    vfmig__codec_ctx_destroy(NULL);
    /* decoders: wrong sizes */
    ASSERT_EQ(vfmig__decode(c, VFMIG_CODEC_RAW, src, 10, NULL, dst, 11), VFMIG_ECODEC);
    ASSERT_EQ(vfmig__decode(c, VFMIG_CODEC_ZERO, src, 1, NULL, dst, 11), VFMIG_ECODEC);
    ASSERT_EQ(vfmig__decode(c, VFMIG_CODEC_LZ4, src, 0, NULL, dst, 11), VFMIG_ECODEC);
    ASSERT_EQ(vfmig__decode(c, 77, src, 10, NULL, dst, 10), VFMIG_ECODEC);
    ASSERT_EQ(vfmig__decode(c, VFMIG_CODEC_ZSTD, src, 0, NULL, dst, 10), VFMIG_ECODEC);
    /* zstd: a right frame for a different size, and trailing bytes / two frames */
    size_t n = 0;
    ASSERT_OK(vfmig__encode(c, VFMIG_CODEC_ZSTD, 1, src, 1000, NULL, dst, sizeof(dst), &n));
    uint8_t out[2048];
    ASSERT_OK(vfmig__decode(c, VFMIG_CODEC_ZSTD, dst, n, NULL, out, 1000));
    ASSERT_EQ(vfmig__decode(c, VFMIG_CODEC_ZSTD, dst, n, NULL, out, 999), VFMIG_ECODEC);
    ASSERT_EQ(vfmig__decode(c, VFMIG_CODEC_ZSTD, dst, n, NULL, out, 1001), VFMIG_ECODEC);
    memcpy(dst + n, dst, n);
    ASSERT_EQ(vfmig__decode(c, VFMIG_CODEC_ZSTD, dst, 2 * n, NULL, out, 1000), VFMIG_ECODEC);
    ASSERT_EQ(vfmig__decode(c, VFMIG_CODEC_ZSTD, dst, n + 1, NULL, out, 1000), VFMIG_ECODEC);
    ASSERT_OK(vfmig__encode(c, VFMIG_CODEC_LZ4, 1, src, 1000, NULL, dst, sizeof(dst), &n));
    dst[n] = 0;
    ASSERT_EQ(vfmig__decode(c, VFMIG_CODEC_LZ4, dst, n + 1, NULL, out, 1000), VFMIG_ECODEC);
    ASSERT_EQ(vfmig__decode(c, VFMIG_CODEC_LZ4, dst, n, NULL, out, 999), VFMIG_ECODEC);
    ASSERT_EQ(vfmig__decode(c, VFMIG_CODEC_LZ4, dst, n, NULL, out, 1001), VFMIG_ECODEC);

    /* delta: hand-made hostile streams (dst_len 16) */
    static const struct { uint8_t b[16]; size_t len; int ok; } ds[] = {
        {{16}, 1, 1},                                    /* all same */
        {{17}, 1, 0},                                    /* zero run past the end */
        {{15}, 1, 0},                                    /* stops short */
        {{16, 0}, 2, 0},                                 /* trailing byte */
        {{0, 0}, 2, 0},                                  /* empty literal */
        {{0, 16}, 2, 0},                                 /* literal bytes missing */
        {{0, 17, 1}, 3, 0},                              /* literal past the end */
        {{14, 2, 9, 9}, 4, 1},                           /* zero run + literal to the end */
        {{14, 1, 9, 1}, 4, 1},                           /* literal, zero run to the end */
        {{0x90, 0x00}, 2, 1},                            /* non-canonical varint 16: accepted */
        {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, 10, 0}, /* overflow */
        {{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0}, 12, 0}, /* too long */
        {{0x80}, 1, 0},                                  /* truncated varint */
    };
    uint8_t r16[16], d16[16 + CANARY];
    memset(r16, 7, sizeof(r16));
    for (size_t i = 0; i < sizeof(ds) / sizeof(ds[0]); i++) {
        memset(d16 + 16, CANARY_BYTE, CANARY);
        uint8_t *in = malloc(ds[i].len);
        memcpy(in, ds[i].b, ds[i].len);
        int rc = vfmig__decode(c, VFMIG_CODEC_DELTA, in, ds[i].len, r16, d16, 16);
        if (ds[i].ok ? rc != VFMIG_OK : rc != VFMIG_ECODEC)
            T_FAIL("delta stream %zu: rc %d", i, rc);
        check_canary(d16, 16);
        free(in);
    }
}

/* Truncation, bit flips and garbage for every codec: never crash, never write past dst,
 * and report an error unless the output has the right size (it always does: fixed dst). */
static void test_hostile(vfmig_codec_ctx *c, uint64_t *seed)
{
    size_t n = 16384;
    uint8_t *src = malloc(n), *ref = malloc(n), *dec = alloc_canary(n);
    size_t cap = vfmig__codec_bound(n);
    uint8_t *enc = malloc(cap);
    long errors = 0, tries = 0;
    for (int k = 0; k < K_COUNT; k++) {
        fill_kind(src, n, k, seed);
        memcpy(ref, src, n);
        mutate(ref, n, 0.02, seed);
        for (int ci = 0; ci < NCODECS; ci++) {
            int codec = codecs[ci];
            size_t elen;
            if (vfmig__encode(c, codec, 0, src, n, ref, enc, cap, &elen) != VFMIG_OK)
                continue; /* ZERO of non-zero data */
            /* truncations: every length for short streams, a sample otherwise */
            size_t step = elen > 512 ? elen / 256 : 1;
            for (size_t t = 0; t < elen; t += step) {
                uint8_t *in = malloc(t ? t : 1);
                memcpy(in, enc, t);
                int rc = vfmig__decode(c, codec, in, t, ref, dec, n);
                if (rc == VFMIG_OK && codec != VFMIG_CODEC_DELTA && codec != VFMIG_CODEC_ZERO)
                    T_FAIL("%s: truncated to %zu of %zu decoded OK", vfmig_codec_name(codec), t,
                           elen);
                ASSERT_TRUE(rc == VFMIG_OK || rc == VFMIG_ECODEC);
                errors += rc != VFMIG_OK;
                tries++;
                check_canary(dec, n);
                free(in);
            }
            /* bit flips */
            uint8_t *in = malloc(elen ? elen : 1);
            for (int f = 0; f < 200 && elen; f++) {
                memcpy(in, enc, elen);
                int flips = 1 + (int)(t_rand(seed) % 4);
                for (int j = 0; j < flips; j++)
                    in[t_rand(seed) % elen] ^= (uint8_t)(1u << (t_rand(seed) % 8));
                int rc = vfmig__decode(c, codec, in, elen, ref, dec, n);
                ASSERT_TRUE(rc == VFMIG_OK || rc == VFMIG_ECODEC);
                errors += rc != VFMIG_OK;
                tries++;
                check_canary(dec, n);
            }
            free(in);
        }
    }
    /* garbage of many lengths, with and without plausible headers */
    for (int g = 0; g < 3000; g++) {
        size_t len = (size_t)(t_rand(seed) % 600);
        uint8_t *in = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++)
            in[i] = (uint8_t)t_rand(seed);
        if (len >= 4 && (g & 1)) { /* zstd magic so it gets past the first check */
            in[0] = 0x28; in[1] = 0xb5; in[2] = 0x2f; in[3] = 0xfd;
        }
        int codec = codecs[g % NCODECS];
        int rc = vfmig__decode(c, codec, in, len, ref, dec, n);
        ASSERT_TRUE(rc == VFMIG_OK || rc == VFMIG_ECODEC);
        check_canary(dec, n);
        free(in);
    }
    fprintf(stderr, "hostile: %ld of %ld mangled inputs rejected; garbage ok\n", errors, tries);
    free(src);
    free(ref);
    free(dec);
    free(enc);
}

/* ---- delta cache ---------------------------------------------------------------------------- */

static void fill_page(uint8_t *p, size_t n, uint64_t page, uint8_t ver)
{
    memset(p, (int)(uint8_t)(page * 7 + ver), n);
}

static void test_cache(void)
{
    const size_t ps = 4096;
    vfmig_delta_cache *dc;
    uint8_t a[4096], b[4096];
    vfmig_delta_cache_stats st;
    ASSERT_EQ(vfmig__delta_cache_create(ps, 0, 10, &dc), VFMIG_EINVAL);
    ASSERT_OK(vfmig__delta_cache_create(4 * ps + ps / 2, ps, 100, &dc)); /* rounds down to 4 */
    vfmig__delta_cache_get_stats(dc, &st);
    ASSERT_EQ(st.capacity_pages, 4);
    ASSERT_TRUE(!vfmig__delta_cache_get(dc, 0, b));
    for (uint64_t p = 0; p < 4; p++) {
        fill_page(a, ps, p, 0);
        vfmig__delta_cache_put(dc, p, a);
    }
    for (uint64_t p = 0; p < 3; p++) { /* hits set the reference bit of 0, 1, 2 */
        ASSERT_TRUE(vfmig__delta_cache_get(dc, p, b));
        fill_page(a, ps, p, 0);
        ASSERT_TRUE(memcmp(a, b, ps) == 0);
    }
    fill_page(a, ps, 4, 0);
    vfmig__delta_cache_put(dc, 4, a); /* CLOCK passes 0, 1, 2 and evicts 3 */
    ASSERT_TRUE(!vfmig__delta_cache_get(dc, 3, b));
    for (uint64_t p = 0; p < 3; p++)
        ASSERT_TRUE(vfmig__delta_cache_get(dc, p, b));
    ASSERT_TRUE(vfmig__delta_cache_get(dc, 4, b));
    ASSERT_TRUE(memcmp(a, b, ps) == 0);
    vfmig__delta_cache_get_stats(dc, &st);
    ASSERT_EQ(st.evictions, 1);
    ASSERT_EQ(st.pages_cached, 4);
    ASSERT_EQ(st.misses, 2);
    ASSERT_EQ(st.hits, 7);
    /* overwrite keeps one slot and the newest copy */
    fill_page(a, ps, 4, 1);
    vfmig__delta_cache_put(dc, 4, a);
    ASSERT_TRUE(vfmig__delta_cache_get(dc, 4, b));
    ASSERT_TRUE(memcmp(a, b, ps) == 0);
    /* drop frees a slot that the next put reuses without evicting */
    vfmig__delta_cache_drop(dc, 4);
    vfmig__delta_cache_drop(dc, 4);
    vfmig__delta_cache_drop(dc, 99);
    ASSERT_TRUE(!vfmig__delta_cache_get(dc, 4, b));
    vfmig__delta_cache_put(dc, 50, a);
    vfmig__delta_cache_get_stats(dc, &st);
    ASSERT_EQ(st.evictions, 1);
    ASSERT_EQ(st.pages_cached, 4);
    /* out of range is ignored */
    vfmig__delta_cache_put(dc, 100, a);
    ASSERT_TRUE(!vfmig__delta_cache_get(dc, 100, b));
    /* a long stream of new pages keeps the size bounded */
    for (uint64_t p = 5; p < 100; p++) {
        fill_page(a, ps, p, 2);
        vfmig__delta_cache_put(dc, p, a);
    }
    vfmig__delta_cache_get_stats(dc, &st);
    ASSERT_EQ(st.pages_cached, 4);
    ASSERT_TRUE(vfmig__delta_cache_get(dc, 99, b));
    fill_page(a, ps, 99, 2);
    ASSERT_TRUE(memcmp(a, b, ps) == 0);
    vfmig__delta_cache_destroy(dc);
    vfmig__delta_cache_destroy(NULL);

    ASSERT_OK(vfmig__delta_cache_create(0, ps, 10, &dc)); /* zero capacity: never hits */
    vfmig__delta_cache_put(dc, 1, a);
    ASSERT_TRUE(!vfmig__delta_cache_get(dc, 1, b));
    vfmig__delta_cache_destroy(dc);

    /* Runs: acquire pins hits only; fill gives slots to the wanted misses; pinned slots are
     * never evicted, so a fill with every slot pinned gives none; release forgets keep=false. */
    ASSERT_OK(vfmig__delta_cache_create(3 * ps, ps, 20, &dc));
    uint8_t *copy[4];
    bool hit[4], want[4] = {true, false, true, true}, keep[4] = {true, true, false, true};
    vfmig__delta_cache_acquire_run(dc, 4, 4, copy, hit);
    for (int k = 0; k < 4; k++)
        ASSERT_TRUE(!hit[k] && !copy[k]);
    vfmig__delta_cache_fill_run(dc, 4, 4, want, copy);
    ASSERT_TRUE(copy[0] && !copy[1] && copy[2] && copy[3]);
    ASSERT_TRUE(copy[0] != copy[2] && copy[2] != copy[3] && copy[0] != copy[3]);
    for (int k = 0; k < 4; k++)
        if (copy[k])
            fill_page(copy[k], ps, 4 + (uint64_t)k, 3);
    uint8_t *other[1];
    bool ohit[1], owant[1] = {true};
    vfmig__delta_cache_acquire_run(dc, 12, 1, other, ohit);
    vfmig__delta_cache_fill_run(dc, 12, 1, owant, other);
    ASSERT_TRUE(!ohit[0] && !other[0]); /* all three slots pinned by the run */
    vfmig__delta_cache_release_run(dc, 4, 4, keep);
    vfmig__delta_cache_acquire_run(dc, 4, 4, copy, hit);
    ASSERT_TRUE(hit[0] && !hit[1] && !hit[2] && hit[3]); /* page 6 was forgotten */
    fill_page(a, ps, 4, 3);
    ASSERT_TRUE(memcmp(copy[0], a, ps) == 0);
    fill_page(a, ps, 7, 3);
    ASSERT_TRUE(memcmp(copy[3], a, ps) == 0);
    vfmig__delta_cache_release_run(dc, 4, 4, NULL);
    vfmig__delta_cache_fill_run(dc, 12, 1, owant, other); /* page 6's slot is free again */
    ASSERT_TRUE(other[0] != NULL);
    vfmig__delta_cache_release_run(dc, 12, 1, NULL);
    vfmig__delta_cache_get_stats(dc, &st);
    ASSERT_EQ(st.pages_cached, 3);
    ASSERT_EQ(st.evictions, 0);
    vfmig__delta_cache_destroy(dc);
}

struct cache_thr {
    vfmig_delta_cache *dc;
    uint64_t seed;
    int bad;
};

static void *cache_worker(void *arg)
{
    struct cache_thr *t = arg;
    uint8_t a[1024], b[1024];
    for (int i = 0; i < 20000; i++) {
        uint64_t p = t_rand(&t->seed) % 64;
        int op = (int)(t_rand(&t->seed) % 4);
        if (op == 0) {
            vfmig__delta_cache_drop(t->dc, p);
        } else if (op == 1) {
            fill_page(a, sizeof(a), p, (uint8_t)(t_rand(&t->seed) % 3));
            vfmig__delta_cache_put(t->dc, p, a);
        } else if (vfmig__delta_cache_get(t->dc, p, b)) {
            /* a copy must be one whole version of this page, never torn */
            for (size_t j = 1; j < sizeof(b); j++)
                if (b[j] != b[0])
                    t->bad = 1;
            uint8_t v = (uint8_t)(b[0] - (uint8_t)(p * 7));
            if (v > 2)
                t->bad = 1;
        }
    }
    return NULL;
}

static void test_cache_threads(uint64_t *seed)
{
    vfmig_delta_cache *dc;
    ASSERT_OK(vfmig__delta_cache_create(16 * 1024, 1024, 64, &dc));
    struct cache_thr t[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        t[i] = (struct cache_thr){dc, t_rand(seed), 0};
        ASSERT_EQ(pthread_create(&th[i], NULL, cache_worker, &t[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ASSERT_EQ(t[i].bad, 0);
    }
    vfmig_delta_cache_stats st;
    vfmig__delta_cache_get_stats(dc, &st);
    ASSERT_TRUE(st.pages_cached <= 16);
    vfmig__delta_cache_destroy(dc);
}

/* ---- chooser -------------------------------------------------------------------------------- */

/* Synthetic content: what each codec gives (ratio out/in, bytes/s per worker). */
struct model {
    double ratio[VFMIG_CODEC_COUNT], speed[VFMIG_CODEC_COUNT];
};

/* Runs `batches` picks with feedback from the model; returns how often each codec was picked
 * in the last `tail` batches. */
static void drive(vfmig_chooser *ch, const struct model *m, bool has_ref, int batches, int tail,
                  int counts[VFMIG_CODEC_COUNT])
{
    memset(counts, 0, sizeof(int) * VFMIG_CODEC_COUNT);
    const size_t in = 256 * 1024;
    for (int i = 0; i < batches; i++) {
        int c = vfmig__chooser_pick(ch, has_ref);
        ASSERT_TRUE(c > VFMIG_CODEC_AUTO && c < VFMIG_CODEC_COUNT && c != VFMIG_CODEC_ZERO);
        if (!has_ref)
            ASSERT_TRUE(c != VFMIG_CODEC_DELTA);
        if (i >= batches - tail)
            counts[c]++;
        size_t out = (size_t)((double)in * m->ratio[c]);
        uint64_t ns = (uint64_t)((double)in / m->speed[c] * 1e9);
        vfmig__chooser_feedback(ch, c, in, out, ns);
    }
}

static int most(const int counts[VFMIG_CODEC_COUNT])
{
    int best = 0;
    for (int c = 1; c < VFMIG_CODEC_COUNT; c++)
        if (counts[c] > counts[best])
            best = c;
    return best;
}

static void test_chooser(void)
{
    /* texture-like: compresses, lz4 0.8 GB/s, zstd 0.4 GB/s */
    const struct model tex = {.ratio = {1, 1, 0, 0.5, 0.35, 0.9},
                              .speed = {1, 10e9, 1, 0.8e9, 0.4e9, 4e9}};
    /* float tensor / random: incompressible, lz4 fast at giving up */
    const struct model rnd = {.ratio = {1, 1, 0, 1.004, 1.0, 1.05},
                              .speed = {1, 10e9, 1, 6e9, 0.9e9, 3e9}};
    /* re-sent pages that barely changed: delta shines */
    const struct model resent = {.ratio = {1, 1, 0, 0.5, 0.35, 0.02},
                                 .speed = {1, 10e9, 1, 0.8e9, 0.4e9, 5e9}};
    int n[VFMIG_CODEC_COUNT];
    vfmig_chooser ch;

    /* bootstrap tries lz4 first */
    vfmig__chooser_init(&ch, VFMIG_CODEC_AUTO, 0, 2);
    ASSERT_EQ(vfmig__chooser_pick(&ch, false), VFMIG_CODEC_LZ4);

    /* slow link (100 MB/s): the best ratio the CPUs can afford -> zstd */
    vfmig__chooser_init(&ch, VFMIG_CODEC_AUTO, 0, 1);
    vfmig__chooser_set_link(&ch, 100e6);
    drive(&ch, &tex, false, 200, 100, n);
    ASSERT_EQ(most(n), VFMIG_CODEC_ZSTD);
    ASSERT_TRUE(n[VFMIG_CODEC_ZSTD] >= 90);
    /* ... and re-probing keeps the others known */
    ASSERT_TRUE(n[VFMIG_CODEC_LZ4] >= 1 && n[VFMIG_CODEC_RAW] >= 1);

    /* medium link (1.25 GB/s) with 4 workers: lz4 (zstd would make the CPUs the bottleneck) */
    vfmig__chooser_init(&ch, VFMIG_CODEC_AUTO, 0, 4);
    vfmig__chooser_set_link(&ch, 1.25e9);
    drive(&ch, &tex, false, 200, 100, n);
    ASSERT_EQ(most(n), VFMIG_CODEC_LZ4);

    /* fast link (4 GB/s), 2 workers, compressible but slow to compress: raw */
    vfmig__chooser_init(&ch, VFMIG_CODEC_AUTO, 0, 2);
    vfmig__chooser_set_link(&ch, 4e9);
    drive(&ch, &tex, false, 200, 100, n);
    ASSERT_EQ(most(n), VFMIG_CODEC_RAW);

    /* fast link + incompressible: raw, zstd never tried */
    vfmig__chooser_init(&ch, VFMIG_CODEC_AUTO, 0, 2);
    vfmig__chooser_set_link(&ch, 10e9);
    drive(&ch, &rnd, true, 200, 100, n);
    ASSERT_EQ(most(n), VFMIG_CODEC_RAW);
    ASSERT_EQ(ch.est[0].samples[VFMIG_CODEC_ZSTD], 0);

    /* slow link + incompressible: still raw (nothing to gain) */
    vfmig__chooser_init(&ch, VFMIG_CODEC_AUTO, 0, 2);
    vfmig__chooser_set_link(&ch, 100e6);
    drive(&ch, &rnd, false, 200, 100, n);
    ASSERT_EQ(most(n), VFMIG_CODEC_RAW);

    /* unknown link: raw unless very good; delta of barely changed pages is very good */
    vfmig__chooser_init(&ch, VFMIG_CODEC_AUTO, 0, 2);
    drive(&ch, &tex, false, 200, 100, n);
    ASSERT_EQ(most(n), VFMIG_CODEC_RAW);
    vfmig__chooser_init(&ch, VFMIG_CODEC_AUTO, 0, 2);
    drive(&ch, &resent, true, 200, 100, n);
    ASSERT_EQ(most(n), VFMIG_CODEC_DELTA);
    /* known fast link: delta at 5 GB/s x2 beats sending raw at 4 GB/s */
    vfmig__chooser_init(&ch, VFMIG_CODEC_AUTO, 0, 2);
    vfmig__chooser_set_link(&ch, 4e9);
    drive(&ch, &resent, true, 200, 100, n);
    ASSERT_EQ(most(n), VFMIG_CODEC_DELTA);

    /* content change is noticed: texture -> incompressible on a medium link */
    vfmig__chooser_init(&ch, VFMIG_CODEC_AUTO, 0, 4);
    vfmig__chooser_set_link(&ch, 1.25e9);
    drive(&ch, &tex, false, 100, 50, n);
    ASSERT_EQ(most(n), VFMIG_CODEC_LZ4);
    drive(&ch, &rnd, false, 200, 50, n);
    ASSERT_EQ(most(n), VFMIG_CODEC_RAW);

    /* a preempted batch now and then (10x slower) does not flip the choice; a lasting
     * slowdown does */
    {
        const struct model rs = {.ratio = {1, 1, 0, 1.0, 1.0, 0.23},
                                 .speed = {1, 10e9, 1, 7e9, 0.9e9, 1.7e9}};
        vfmig__chooser_init(&ch, VFMIG_CODEC_AUTO, 0, 1);
        vfmig__chooser_set_link(&ch, 1.25e9);
        int picks_delta = 0;
        for (int i = 0; i < 400; i++) {
            int c = vfmig__chooser_pick(&ch, true);
            double sp = rs.speed[c] / (i % 7 == 3 ? 10.0 : 1.0);
            vfmig__chooser_feedback(&ch, c, 262144, (size_t)(262144 * rs.ratio[c]),
                                   (uint64_t)(262144 / sp * 1e9));
            if (i >= 200)
                picks_delta += c == VFMIG_CODEC_DELTA;
        }
        ASSERT_TRUE(picks_delta >= 180);
        for (int i = 0; i < 100; i++) { /* delta becomes 5x slower for good */
            int c = vfmig__chooser_pick(&ch, true);
            double sp = rs.speed[c] / (c == VFMIG_CODEC_DELTA ? 5.0 : 1.0);
            vfmig__chooser_feedback(&ch, c, 262144, (size_t)(262144 * rs.ratio[c]),
                                   (uint64_t)(262144 / sp * 1e9));
        }
        ASSERT_EQ(vfmig__chooser_pick(&ch, true), VFMIG_CODEC_RAW);
    }

    /* content classes from sampled entropy: constant bytes, 16 symbols (4 bits), random */
    {
        static uint8_t buf[1 << 20];
        memset(buf, 7, sizeof(buf));
        ASSERT_EQ(vfmig__content_class(buf, sizeof(buf)), 0);
        uint64_t x = 88172645463325252ull;
        for (size_t i = 0; i < sizeof(buf); i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            buf[i] = (uint8_t)(x >> 32);
        }
        ASSERT_EQ(vfmig__content_class(buf, sizeof(buf)), VFMIG_CONTENT_CLASSES - 1);
        ASSERT_TRUE(vfmig__content_class(buf, 100) <= 5); /* 100 bytes: at most 6.6 bits */
        for (size_t i = 0; i < sizeof(buf); i++)
            buf[i] &= 0x0f;
        ASSERT_EQ(vfmig__content_class(buf, sizeof(buf)), 2);
        ASSERT_EQ(vfmig__content_class(buf, 0), 0);

        /* Up to 2 KiB the estimate is exact: against log2 per symbol, over alphabets from 1 to
         * 256 symbols and skewed ones, whose counts reach past the table (c >= 256). */
        for (unsigned alpha = 1; alpha <= 256; alpha = alpha * 2 + 1) {
            for (size_t len = 1; len <= 2048; len = len * 3 + 7) {
                unsigned cnt[256] = {0};
                for (size_t i = 0; i < len; i++) {
                    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                    unsigned v = (unsigned)(x >> 40) % alpha;
                    buf[i] = (uint8_t)((x & 3) ? v : 0); /* 3/4 of bytes from the alphabet, 1/4 zero */
                    cnt[buf[i]]++;
                }
                double ref = 0;
                for (unsigned v = 0; v < 256; v++)
                    if (cnt[v])
                        ref -= (double)cnt[v] / (double)len * log2((double)cnt[v] / (double)len);
                double got = vfmig__content_entropy(buf, len);
                if (fabs(got - ref) > 1e-4)
                    T_FAIL("entropy of %zu bytes over %u symbols: %.6f, expected %.6f", len, alpha, got, ref);
            }
        }
        /* Beyond 2 KiB: sampled and corrected, within a few hundredths of the whole 1 MiB. */
        for (size_t i = 0; i < sizeof(buf); i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            buf[i] = (uint8_t)(x >> 56);
        }
        double e = vfmig__content_entropy(buf, sizeof(buf));
        ASSERT_TRUE(e > 7.9 && e < 8.05);
    }

    /* Two content classes batch by batch on a 125 MB/s link, one worker: textures (lz4 0.28 at
     * 660 MB/s, zstd 0.13 at 470 MB/s) and float tensors (lz4 gives up, zstd 0.92 at 900 MB/s).
     * While the link stays saturated CPU gets ever cheaper: zstd for both. With the link's load
     * unknown, the larger of CPU and wire per batch: zstd still (2.1 ns of CPU a byte against
     * lz4's 2.2 of wire on textures). With the link well below capacity CPU gets dear: raw
     * for both. One class for both would mix their estimates. */
    for (int busy = 0; busy < 3; busy++) {
        const struct model ctex = {.ratio = {1, 1, 0, 0.28, 0.13, 1}, .speed = {1, 10e9, 1, 660e6, 470e6, 1e9}};
        const struct model cten = {.ratio = {1, 1, 0, 1.004, 0.92, 1}, .speed = {1, 10e9, 1, 3e9, 900e6, 1e9}};
        vfmig__chooser_init(&ch, VFMIG_CODEC_AUTO, 0, 1);
        vfmig__chooser_set_link(&ch, 125e6);
        int zstd_tex = 0, zstd_ten = 0, raw_tex = 0, raw_ten = 0;
        for (int i = 0; i < 600; i++) {
            if (i % 8 == 0) /* as the pipeline measures it, every few batches */
                vfmig__chooser_set_link_busy(&ch, busy == 0 ? 0.97 : busy == 1 ? -1 : 0.5);
            const struct model *m = i % 3 == 0 ? &ctex : &cten;
            vfmig__chooser_set_class(&ch, m == &ctex ? 3 : 6);
            int c = vfmig__chooser_pick(&ch, false);
            vfmig__chooser_feedback(&ch, c, 262144, (size_t)(262144 * m->ratio[c]),
                                   (uint64_t)(262144 / m->speed[c] * 1e9));
            if (i >= 300 && c == VFMIG_CODEC_ZSTD)
                *(m == &ctex ? &zstd_tex : &zstd_ten) += 1;
            raw_tex += i >= 300 && m == &ctex && c == VFMIG_CODEC_RAW;
            raw_ten += i >= 300 && m == &cten && c == VFMIG_CODEC_RAW;
        }
        fprintf(stderr, "  two classes, link %s: zstd on %d of 100 textures, %d of 200 tensors\n",
                busy == 0 ? "saturated" : busy == 1 ? "load unknown" : "half idle", zstd_tex, zstd_ten);
        if (busy == 0)
            ASSERT_TRUE(zstd_tex >= 90 && zstd_ten >= 180);
        else if (busy == 1)
            ASSERT_TRUE(zstd_tex >= 90 && zstd_ten >= 180);
        else
            ASSERT_TRUE(raw_tex >= 90 && raw_ten >= 180);
    }

    /* deterministic: same feedback, same picks */
    vfmig_chooser a, b;
    vfmig__chooser_init(&a, VFMIG_CODEC_AUTO, 0, 3);
    vfmig__chooser_init(&b, VFMIG_CODEC_AUTO, 0, 3);
    vfmig__chooser_set_link(&a, 300e6);
    vfmig__chooser_set_link(&b, 300e6);
    int na[VFMIG_CODEC_COUNT], nb[VFMIG_CODEC_COUNT];
    drive(&a, &tex, true, 300, 300, na);
    drive(&b, &tex, true, 300, 300, nb);
    ASSERT_TRUE(memcmp(na, nb, sizeof(na)) == 0);

    /* fixed codecs are honored whatever the feedback */
    int fixed[] = {VFMIG_CODEC_RAW, VFMIG_CODEC_LZ4, VFMIG_CODEC_ZSTD, VFMIG_CODEC_DELTA};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        vfmig__chooser_init(&ch, fixed[i], 3, 2);
        vfmig__chooser_set_link(&ch, 10e9);
        for (int j = 0; j < 100; j++) {
            ASSERT_EQ(vfmig__chooser_pick(&ch, true), fixed[i]);
            vfmig__chooser_feedback(&ch, fixed[i], 1000, 2000, 100000);
        }
        int nr = vfmig__chooser_pick(&ch, false);
        ASSERT_EQ(nr, fixed[i] == VFMIG_CODEC_DELTA ? VFMIG_CODEC_LZ4 : fixed[i]);
    }
    vfmig__chooser_init(&ch, VFMIG_CODEC_ZERO, 0, 1);
    ASSERT_EQ(vfmig__chooser_pick(&ch, false), VFMIG_CODEC_RAW);
    /* junk feedback is ignored */
    vfmig__chooser_init(&ch, VFMIG_CODEC_AUTO, 0, 0);
    vfmig__chooser_feedback(&ch, 42, 10, 10, 10);
    vfmig__chooser_feedback(&ch, VFMIG_CODEC_LZ4, 0, 10, 10);
    ASSERT_EQ(ch.est[0].samples[VFMIG_CODEC_LZ4], 0);
    vfmig__chooser_feedback(&ch, VFMIG_CODEC_LZ4, 10, 0, 0); /* zero time / size are clamped */
    ASSERT_EQ(ch.est[0].samples[VFMIG_CODEC_LZ4], 1);
}

int main(void)
{
    uint64_t seed = t_seed();
    vfmig_codec_ctx *c;
    ASSERT_OK(vfmig__codec_ctx_create(4u << 20, &c));
    test_is_zero();
    test_errors(c);
    test_roundtrip(c, &seed);
    test_delta_sizes(c, &seed);
    test_delta_pages(c, &seed);
    test_hostile(c, &seed);
    vfmig__codec_ctx_destroy(c);
    test_cache();
    test_cache_threads(&seed);
    test_chooser();
    fprintf(stderr, "test_codec: all passed\n");
    return 0;
}
