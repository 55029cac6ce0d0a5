/* simvf_content.c - what the simulated VF's VRAM holds: zero, texture, tensor and random pages.
 *
 * The generators aim at the compressibility of real VRAM, since that is what the codecs and the
 * blackout numbers depend on:
 *   texture  8-bit RGBA tiles, 64 pixels a row, a smooth per-page gradient with sparse +-1 noise:
 *            runs of equal pixels and rows like the one above give lz4 matches (about 2-4x);
 *   tensor   float32 of magnitudes 2^-6..1 (geometric exponents, like weights or activations),
 *            random sign and mantissa: only the exponent byte compresses (zstd about 1.1-1.2x);
 *   random   counter-based splitmix64: incompressible.
 * All are word-wise and counter-based (no state carried between words), which keeps them at
 * several GB/s and lets a page be produced by any thread, or partly, for a workload write. */
#include "engine/devices/simvf_content.h"

#include <string.h>

/* Per-page gradient, separable: a 64-pixel row template (x slope) plus a per-row offset (y slope),
 * both 8-bit RGBA, added byte-wise with wrap-around. Slopes are in 1/256 level per pixel. */
typedef struct tex_params {
    uint64_t row[32]; /* the template, two pixels a word */
    int32_t base[3];
    int32_t dy[3];
} tex_params;

static void tex_params_of(uint64_t page_key, tex_params *p)
{
    uint64_t h = simvf_mix(page_key ^ 0x7e57u);
    uint64_t h2 = simvf_mix(h);
    int32_t dx[3];
    for (int c = 0; c < 3; c++) {
        p->base[c] = (int32_t)((h >> (c * 8)) & 0xff) << 8;
        /* Up to +-40/256 a pixel: a level changes every ~6 pixels at the steepest. */
        dx[c] = (int32_t)((h2 >> (c * 8)) & 0x7f) * 80 / 127 - 40;
        p->dy[c] = (int32_t)((h2 >> (24 + c * 8)) & 0x7f) * 80 / 127 - 40;
    }
    for (int x = 0; x < 64; x += 2) {
        uint64_t v = 0;
        for (int k = 0; k < 2; k++) {
            uint32_t px = 0xff000000u; /* opaque alpha, as most colour textures */
            for (int c = 0; c < 3; c++)
                px |= ((uint32_t)((dx[c] * (x + k)) >> 8) & 0xff) << (c * 8);
            v |= (uint64_t)px << (k * 32);
        }
        p->row[x / 2] = v;
    }
}

/* Row offset of row y, in both pixels of a word (alpha 0: the template's stays). */
static uint64_t tex_row_offset(const tex_params *p, uint64_t y)
{
    uint32_t o = 0;
    for (int c = 0; c < 3; c++)
        o |= ((uint32_t)((p->base[c] + p->dy[c] * (int64_t)y) >> 8) & 0xff) << (c * 8);
    return o | (uint64_t)o << 32;
}

/* Byte-wise a + b mod 256 in every byte, no carries between bytes. */
static inline uint64_t add_bytes(uint64_t a, uint64_t b)
{
    const uint64_t hi = 0x8080808080808080ull;
    return ((a & ~hi) + (b & ~hi)) ^ ((a ^ b) & hi);
}

static void gen_texture(uint64_t *dst, size_t nwords, uint64_t page_key, uint64_t noise_key,
                        uint64_t word_pos)
{
    tex_params p;
    tex_params_of(page_key, &p);
    uint64_t nbase = simvf_mix(noise_key ^ 0x6e6f697365ull);
    uint64_t off = tex_row_offset(&p, word_pos >> 5);
    for (size_t i = 0; i < nwords; i++) {
        uint64_t w = word_pos + i;
        if ((w & 31) == 0 && i)
            off = tex_row_offset(&p, w >> 5);
        /* Sparse noise without branches: AND of three bit fields of one random word gives bits
         * set with p = 1/8; kept at the low bit of R and G of both pixels. */
        uint64_t r = simvf_mix(nbase + w * 0x9e3779b97f4a7c15ull);
        uint64_t noise = r & (r >> 21) & (r >> 42) & 0x0000010100000101ull;
        dst[i] = add_bytes(p.row[w & 31], off) ^ noise;
    }
}

static void gen_tensor(uint64_t *dst, size_t nwords, uint64_t key, uint64_t word_pos)
{
    uint64_t base = simvf_mix(key ^ 0x74656e736f72ull);
    for (size_t i = 0; i < nwords; i++) {
        uint64_t r = simvf_mix(base + (word_pos + i) * 0x9e3779b97f4a7c15ull);
        uint64_t out = 0;
        for (int h = 0; h < 2; h++) {
            uint32_t b = (uint32_t)(r >> (h * 32));
            uint32_t mant = b & 0x7fffffu;
            uint32_t sign = (b >> 23) & 1u;
            /* Geometric exponent 126..121: half the values in [0.5,1), a quarter below... */
            unsigned tz = (unsigned)__builtin_ctz((b >> 24) | 0x20u);
            uint32_t e = 126u - tz;
            out |= (uint64_t)(sign << 31 | e << 23 | mant) << (h * 32);
        }
        dst[i] = out;
    }
}

static void gen_random(uint64_t *dst, size_t nwords, uint64_t key, uint64_t word_pos)
{
    uint64_t base = simvf_mix(key ^ 0x5eed5eedull);
    for (size_t i = 0; i < nwords; i++)
        dst[i] = simvf_mix(base + (word_pos + i) * 0x9e3779b97f4a7c15ull);
}

void vfmig__simvf_generate(uint64_t *dst, size_t nwords, int kind, uint64_t page_key, uint64_t noise_key,
                    uint64_t word_pos)
{
    switch (kind) {
    case SIMVF_TEXTURE:
        gen_texture(dst, nwords, page_key, noise_key, word_pos);
        break;
    case SIMVF_TENSOR:
        gen_tensor(dst, nwords, noise_key, word_pos);
        break;
    case SIMVF_RANDOM:
        gen_random(dst, nwords, noise_key, word_pos);
        break;
    default:
        memset(dst, 0, nwords * sizeof *dst);
        break;
    }
}

void vfmig__simvf_mix_layout(uint8_t *kinds, uint64_t npages, uint64_t page_size, uint64_t seed)
{
    static const unsigned share[SIMVF_KINDS] = {40, 25, 25, 10}; /* percent */
    uint64_t total = npages * page_size;
    /* 1..4 MiB chunks, but at least 64 chunks over the VRAM so small sims still mix. */
    uint64_t max_chunk = 4ull << 20, min_chunk = 1ull << 20;
    if (total / 64 < max_chunk) {
        max_chunk = total / 64;
        min_chunk = max_chunk / 4;
    }
    uint64_t min_pages = min_chunk / page_size, max_pages = max_chunk / page_size;
    if (min_pages == 0)
        min_pages = 1;
    if (max_pages < min_pages)
        max_pages = min_pages;

    uint64_t rng = simvf_mix(seed ^ 0x6d69786c61796f75ull);
    uint64_t given[SIMVF_KINDS] = {0};
    uint64_t p = 0;
    while (p < npages) {
        uint64_t n = min_pages + simvf_below(&rng, max_pages - min_pages + 1);
        if (n > npages - p)
            n = npages - p;
        /* Draw by share; if that kind is already past its quota, take the one most behind. */
        unsigned draw = (unsigned)simvf_below(&rng, 100), k = 0, acc = share[0];
        while (draw >= acc)
            acc += share[++k];
        uint64_t done = p + n;
        if ((given[k] + n) * 100 > (uint64_t)share[k] * done + n * 100) {
            int64_t best = INT64_MIN;
            for (unsigned j = 0; j < SIMVF_KINDS; j++) {
                int64_t behind = (int64_t)(share[j] * done) - (int64_t)(given[j] * 100);
                if (behind > best) {
                    best = behind;
                    k = j;
                }
            }
        }
        memset(kinds + p, (int)k, n);
        given[k] += n;
        p = done;
    }
}
