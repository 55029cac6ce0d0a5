/* engine/image.c - page hashes and the incremental image digest (see image.h). */
#include "engine/image.h"

#include <string.h>
#include <xxhash.h>
#if defined(__x86_64__) && XXH_VERSION_NUMBER >= 800
/* Run-time dispatch to AVX2/AVX-512: the build has no -march, and the page hash is the one pass
 * over every page each end makes, so it runs at the widest vectors the CPU has. */
#include <xxh_x86dispatch.h>
#define page_hash_fn XXH3_64bits_dispatch
#else
#define page_hash_fn XXH3_64bits
#endif

uint64_t vfmig__page_hash(const void *page, size_t page_size)
{
    return page_hash_fn(page, page_size) & ~VFMIG_HASH_LIN;
}

/* ---- GF(2^64), modulo x^64 + x^4 + x^3 + x + 1 ------------------------------------------ */

typedef struct u128 {
    uint64_t lo, hi;
} u128;

static inline uint64_t ld64le(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static u128 clmul_soft(uint64_t a, uint64_t b)
{
    u128 r = {0, 0};
    for (int i = 0; i < 64; i++)
        if (b >> i & 1) {
            r.lo ^= a << i;
            r.hi ^= i ? a >> (64 - i) : 0;
        }
    return r;
}

/* x^64 = x^4 + x^3 + x + 1 (0x1b): fold the high half in twice. */
static inline uint64_t reduce_with(u128 x, u128 (*mul)(uint64_t, uint64_t))
{
    u128 t = mul(x.hi, 0x1b);
    u128 t2 = mul(t.hi, 0x1b);
    return x.lo ^ t.lo ^ t2.lo;
}

static uint64_t gf_mul_soft(uint64_t a, uint64_t b)
{
    return reduce_with(clmul_soft(a, b), clmul_soft);
}

/* Sum of w_i * k_i over `n` words of `p` (not reduced), the portable way. */
static u128 dot_soft(const vfmig_lin *lin, const uint8_t *p, size_t n)
{
    u128 acc = {0, 0};
    for (size_t i = 0; i < n; i++) {
        u128 m = clmul_soft(ld64le(p + 8 * i), lin->k[i]);
        acc.lo ^= m.lo;
        acc.hi ^= m.hi;
    }
    return acc;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <wmmintrin.h>
#define LIN_HW 1
__attribute__((target("pclmul,sse2"))) static u128 clmul_hw(uint64_t a, uint64_t b)
{
    __m128i x = _mm_clmulepi64_si128(_mm_cvtsi64_si128((long long)a), _mm_cvtsi64_si128((long long)b), 0);
    u128 r;
    r.lo = (uint64_t)_mm_cvtsi128_si64(x);
    r.hi = (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(x, x));
    return r;
}

/* Two words per step (one 128-bit load of data and of keys), four accumulators for the
 * multiplier's latency. */
__attribute__((target("pclmul,sse2"))) static u128 dot_hw(const vfmig_lin *lin, const uint8_t *p, size_t n)
{
    __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m128i d0 = _mm_loadu_si128((const __m128i *)(const void *)(p + 8 * i));
        __m128i d1 = _mm_loadu_si128((const __m128i *)(const void *)(p + 8 * i + 16));
        __m128i k0 = _mm_loadu_si128((const __m128i *)(const void *)(lin->k + i));
        __m128i k1 = _mm_loadu_si128((const __m128i *)(const void *)(lin->k + i + 2));
        a0 = _mm_xor_si128(a0, _mm_clmulepi64_si128(d0, k0, 0x00));
        a1 = _mm_xor_si128(a1, _mm_clmulepi64_si128(d0, k0, 0x11));
        a2 = _mm_xor_si128(a2, _mm_clmulepi64_si128(d1, k1, 0x00));
        a3 = _mm_xor_si128(a3, _mm_clmulepi64_si128(d1, k1, 0x11));
    }
    __m128i a = _mm_xor_si128(_mm_xor_si128(a0, a1), _mm_xor_si128(a2, a3));
    u128 r;
    r.lo = (uint64_t)_mm_cvtsi128_si64(a);
    r.hi = (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(a, a));
    for (; i < n; i++) {
        u128 m = clmul_hw(ld64le(p + 8 * i), lin->k[i]);
        r.lo ^= m.lo;
        r.hi ^= m.hi;
    }
    return r;
}

/* VPCLMULQDQ on 256-bit vectors: four words per multiply pair, eight accumulators. A 4 KiB page
 * hashes in ~200 ns in cache against ~470 with the 128-bit loop (this VM's EPYC), so the
 * target's read-back of a hot set's pages runs near the speed its memory delivers them. */
#include <immintrin.h>
__attribute__((target("vpclmulqdq,avx2,pclmul"))) static u128 dot_hw256(const vfmig_lin *lin, const uint8_t *p,
                                                                        size_t n)
{
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i d0 = _mm256_loadu_si256((const __m256i *)(const void *)(p + 8 * i));
        __m256i d1 = _mm256_loadu_si256((const __m256i *)(const void *)(p + 8 * i + 32));
        __m256i d2 = _mm256_loadu_si256((const __m256i *)(const void *)(p + 8 * i + 64));
        __m256i d3 = _mm256_loadu_si256((const __m256i *)(const void *)(p + 8 * i + 96));
        __m256i k0 = _mm256_loadu_si256((const __m256i *)(const void *)(lin->k + i));
        __m256i k1 = _mm256_loadu_si256((const __m256i *)(const void *)(lin->k + i + 4));
        __m256i k2 = _mm256_loadu_si256((const __m256i *)(const void *)(lin->k + i + 8));
        __m256i k3 = _mm256_loadu_si256((const __m256i *)(const void *)(lin->k + i + 12));
        a0 = _mm256_xor_si256(a0, _mm256_clmulepi64_epi128(d0, k0, 0x00));
        a1 = _mm256_xor_si256(a1, _mm256_clmulepi64_epi128(d0, k0, 0x11));
        a2 = _mm256_xor_si256(a2, _mm256_clmulepi64_epi128(d1, k1, 0x00));
        a3 = _mm256_xor_si256(a3, _mm256_clmulepi64_epi128(d1, k1, 0x11));
        a4 = _mm256_xor_si256(a4, _mm256_clmulepi64_epi128(d2, k2, 0x00));
        a5 = _mm256_xor_si256(a5, _mm256_clmulepi64_epi128(d2, k2, 0x11));
        a6 = _mm256_xor_si256(a6, _mm256_clmulepi64_epi128(d3, k3, 0x00));
        a7 = _mm256_xor_si256(a7, _mm256_clmulepi64_epi128(d3, k3, 0x11));
    }
    __m256i a = _mm256_xor_si256(_mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3)),
                                 _mm256_xor_si256(_mm256_xor_si256(a4, a5), _mm256_xor_si256(a6, a7)));
    __m128i x = _mm_xor_si128(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    u128 r;
    r.lo = (uint64_t)_mm_cvtsi128_si64(x);
    r.hi = (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(x, x));
    for (; i < n; i++) {
        u128 m = clmul_hw(ld64le(p + 8 * i), lin->k[i]);
        r.lo ^= m.lo;
        r.hi ^= m.hi;
    }
    return r;
}
#endif

static uint64_t gf_mul(const vfmig_lin *lin, uint64_t a, uint64_t b)
{
#ifdef LIN_HW
    if (lin->hw)
        return reduce_with(clmul_hw(a, b), clmul_hw);
#endif
    (void)lin;
    return gf_mul_soft(a, b);
}

static uint64_t reduce(const vfmig_lin *lin, u128 x)
{
#ifdef LIN_HW
    if (lin->hw)
        return reduce_with(x, clmul_hw);
#endif
    (void)lin;
    return reduce_with(x, clmul_soft);
}

void vfmig__lin_init(vfmig_lin *lin, size_t page_size)
{
    lin->page_size = page_size;
    lin->hw = 0;
#ifdef LIN_HW
    __builtin_cpu_init();
    lin->hw = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse2");
    if (lin->hw && __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("avx2"))
        lin->hw = 2;
#endif
    /* Keys: powers of two odd constants; any fixed nonzero elements serve against accidents. */
    const uint64_t g = 0x9e3779b97f4a7c15ull, h = 0xc2b2ae3d27d4eb4full;
    uint64_t x = g;
    for (unsigned i = 0; i < VFMIG_LIN_WORDS; i++, x = gf_mul_soft(x, g))
        lin->k[i] = x;
    x = h;
    for (unsigned i = 0; i < VFMIG_LIN_CHUNKS; i++, x = gf_mul_soft(x, h))
        lin->l[i] = x;
}

uint64_t vfmig__lin_page(const vfmig_lin *lin, const void *page)
{
    const uint8_t *p = page;
    size_t words = lin->page_size / 8, chunk = VFMIG_LIN_WORDS;
    uint64_t h = 0;
    for (size_t c = 0; c * chunk < words; c++) {
        size_t n = words - c * chunk < chunk ? words - c * chunk : chunk;
#ifdef LIN_HW
        const uint8_t *q = p + c * chunk * 8;
        u128 acc = lin->hw == 2 ? dot_hw256(lin, q, n) : lin->hw ? dot_hw(lin, q, n) : dot_soft(lin, q, n);
#else
        u128 acc = dot_soft(lin, p + c * chunk * 8, n);
#endif
        h ^= gf_mul(lin, reduce(lin, acc), lin->l[c]);
    }
    return h | VFMIG_HASH_LIN;
}

/* The contribution of one changed word `d` at word index `wi` of a page. */
static uint64_t lin_word(const vfmig_lin *lin, uint64_t d, size_t wi)
{
    return gf_mul(lin, gf_mul(lin, d, lin->k[wi % VFMIG_LIN_WORDS]), lin->l[wi / VFMIG_LIN_WORDS]);
}

/* LEB128 as the DELTA format writes it (compress/codec.c); NULL past the end or on overflow. */
static const uint8_t *varint(const uint8_t *ip, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned shift = 0; shift < 64 && ip < end; shift += 7) {
        uint8_t b = *ip++;
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return ip;
        }
    }
    return NULL;
}

int vfmig__lin_delta(const vfmig_lin *lin, const uint8_t *stream, size_t len, uint32_t npages, uint64_t *dh)
{
    const size_t ps = lin->page_size;
    const uint64_t total = (uint64_t)npages * ps;
    const uint8_t *ip = stream, *end = stream + len;
    for (uint32_t k = 0; k < npages; k++)
        dh[k] = 0;
    uint64_t pos = 0;
    for (;;) {
        uint64_t z, lit;
        if (!(ip = varint(ip, end, &z)) || z > total - pos)
            return VFMIG_ECODEC;
        pos += z;
        if (pos == total)
            break;
        if (!(ip = varint(ip, end, &lit)) || !lit || lit > total - pos || lit > (uint64_t)(end - ip))
            return VFMIG_ECODEC;
        /* The literal's bytes are the XOR of new and old: gather them word by word. */
        for (uint64_t b = pos; b < pos + lit;) {
            uint64_t page = b / ps, in_page = b % ps, wi = in_page / 8, lane = in_page % 8;
            uint64_t stop = (b - lane) + 8 < pos + lit ? (b - lane) + 8 : pos + lit;
            uint64_t d = 0;
            for (uint64_t x = b; x < stop; x++)
                d |= (uint64_t)ip[x - pos] << (8 * ((x - (b - lane))));
            dh[page] ^= lin_word(lin, d, (size_t)wi);
            b = stop;
        }
        ip += lit;
        pos += lit;
        if (pos == total)
            break;
    }
    return ip == end ? VFMIG_OK : VFMIG_ECODEC;
}

bool vfmig__page_is_zero(const void *page, size_t page_size)
{
    /* 64 bytes at a time, leaving at the first non-zero word: on data it costs a cache line. */
    const uint8_t *p = page;
    size_t i = 0;
    for (; i + 64 <= page_size; i += 64) {
        uint64_t w[8];
        memcpy(w, p + i, 64);
        if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7])
            return false;
    }
    for (; i < page_size; i++)
        if (p[i])
            return false;
    return true;
}

bool vfmig__page_zero_or_hash(const void *page, size_t page_size, uint64_t zero_hash, uint64_t *hash)
{
    /* On zero pages the zero test is the pass (and the hash is known). */
    if (vfmig__page_is_zero(page, page_size)) {
        *hash = zero_hash;
        return true;
    }
    *hash = page_hash_fn(page, page_size) & ~VFMIG_HASH_LIN;
    return false;
}

/* MurmurHash3's 64-bit finalizer: a bijection that spreads every input bit over the output. */
static inline uint64_t fmix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* M(p, h): two lanes, each a bijection of h for a given page, keyed differently by the page, so
 * a change of any page hash changes each lane of the sum to a value unrelated to the rest. A
 * few multiplies, paid twice per page each time a page is applied. */
static inline vfmig_digest mix(uint64_t p, uint64_t h)
{
    return (vfmig_digest){fmix64(h ^ (p * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull)),
                          fmix64((h + 0xd6e8feb86659fd93ull) ^ fmix64(p + 0xa0761d6478bd642full))};
}

void vfmig__image_set(uint64_t *table, vfmig_digest *acc, uint64_t p, uint64_t h)
{
    uint64_t old = table[p];
    if (old == h)
        return;
    vfmig_digest a = mix(p, h), b = mix(p, old);
    acc->lo += a.lo - b.lo;
    acc->hi += a.hi - b.hi;
    table[p] = h;
}

int vfmig__image_device_digest(const vfmig_device *dev, const uint64_t *range_base, unsigned page_shift,
                              void *scratch, vfmig_digest *out)
{
    const size_t ps = (size_t)1 << page_shift;
    vfmig_digest d = {0, 0};
    for (uint32_t r = 0; r < dev->nranges; r++) {
        const vfmig_range *rg = &dev->ranges[r];
        const uint8_t *base = dev->ops->map ? dev->ops->map(dev->dev, rg->offset, rg->size) : NULL;
        uint64_t np = rg->size >> page_shift;
        for (uint64_t i = 0; i < np; i++) {
            const uint8_t *pg = base ? base + (i << page_shift) : scratch;
            if (!base) {
                int rc = dev->ops->read(dev->dev, rg->offset + (i << page_shift), scratch, ps);
                if (rc)
                    return rc < 0 ? rc : VFMIG_EDEVICE;
            }
            uint64_t p = range_base[r] + i;
            uint64_t h = vfmig__page_hash(pg, ps);
            vfmig_digest a = mix(p, h), b = mix(p, 0);
            d.lo += a.lo - b.lo;
            d.hi += a.hi - b.hi;
        }
    }
    *out = d;
    return VFMIG_OK;
}
