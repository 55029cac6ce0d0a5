/*
 * tests/fuzz/fuzz_codec_seeds.c - writes the seed corpus of fuzz_codec into a directory:
 * one valid stream per codec and content kind (4096-byte pages, DELTA against the harness's
 * reference), plus a few near misses. Usage: fuzz_codec_seeds DIR
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress/codec.h"

#define PAGE 4096

static void make_ref(uint8_t *ref) /* must match fuzz_codec.c */
{
    for (size_t i = 0; i < PAGE; i++)
        ref[i] = (uint8_t)(i * 31u + (i >> 8));
}

static int write_seed(const char *dir, const char *name, int codec, const uint8_t *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    uint8_t id = (uint8_t)codec;
    int ok = fwrite(&id, 1, 1, f) == 1 && fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    static uint8_t ref[PAGE], page[PAGE], enc[2 * PAGE + 64];
    vfmig_codec_ctx *c;
    if (vfmig__codec_ctx_create(PAGE, &c))
        return 1;
    make_ref(ref);
    uint64_t x = 12345;
    const char *kinds[] = {"zero", "texture", "resent", "random"};
    int err = 0;
    for (int k = 0; k < 4; k++) {
        for (size_t i = 0; i < PAGE; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            uint8_t r = (uint8_t)(x >> 56);
            page[i] = k == 0 ? 0 : k == 1 ? (uint8_t)(i / 64 + (r & 3))
                    : k == 2 ? (uint8_t)(ref[i] ^ ((r < 8) ? r : 0)) : r;
        }
        static const int codecs[] = {VFMIG_CODEC_RAW, VFMIG_CODEC_ZERO, VFMIG_CODEC_LZ4,
                                     VFMIG_CODEC_ZSTD, VFMIG_CODEC_DELTA};
        for (size_t ci = 0; ci < sizeof(codecs) / sizeof(codecs[0]); ci++) {
            int codec = codecs[ci];
            size_t n;
            /* keep the corpus small (< 50 KB): big incompressible streams once each */
            if ((codec == VFMIG_CODEC_RAW && k != 3) ||
                (k == 3 && codec != VFMIG_CODEC_RAW && codec != VFMIG_CODEC_LZ4) ||
                (codec == VFMIG_CODEC_DELTA && k != 2) ||
                vfmig__encode(c, codec, 1, page, PAGE, ref, enc, sizeof(enc), &n))
                continue;
            char name[64];
            snprintf(name, sizeof(name), "%s-%s", vfmig_codec_name(codec), kinds[k]);
            err |= write_seed(argv[1], name, codec, enc, n);
            if (n > 2 && n <= 1200) { /* near misses: truncated, one trailing byte */
                snprintf(name, sizeof(name), "%s-%s-trunc", vfmig_codec_name(codec), kinds[k]);
                err |= write_seed(argv[1], name, codec, enc, n - 1);
                enc[n] = 0;
                snprintf(name, sizeof(name), "%s-%s-trail", vfmig_codec_name(codec), kinds[k]);
                err |= write_seed(argv[1], name, codec, enc, n + 1);
            }
        }
    }
    vfmig__codec_ctx_destroy(c);
    return err ? 1 : 0;
}
