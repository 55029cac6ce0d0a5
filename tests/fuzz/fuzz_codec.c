/*
 * tests/fuzz/fuzz_codec.c - libFuzzer entry for the page decoders.
 * Input: byte 0 picks the codec (id = byte % 8, so invalid ids are fuzzed too), the rest is the
 * encoded stream, decoded into a FUZZ_CODEC_DST-byte page (DELTA against a fixed reference).
 * A stream that decodes must re-encode and decode to the same page (round-trip property).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compress/codec.h"

#define FUZZ_CODEC_DST 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void make_ref(uint8_t *ref)
{
    for (size_t i = 0; i < FUZZ_CODEC_DST; i++)
        ref[i] = (uint8_t)(i * 31u + (i >> 8));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int codec = data[0] % 8;
    size_t len = size - 1;
    /* exact-size copies so ASan catches any access outside the buffers */
    uint8_t *in = malloc(len ? len : 1);
    uint8_t *ref = malloc(FUZZ_CODEC_DST);
    uint8_t *dst = malloc(FUZZ_CODEC_DST);
    size_t cap = vfmig__codec_bound(FUZZ_CODEC_DST);
    uint8_t *enc = malloc(cap);
    uint8_t *again = malloc(FUZZ_CODEC_DST);
    vfmig_codec_ctx *c = NULL;
    if (!in || !ref || !dst || !enc || !again || vfmig__codec_ctx_create(FUZZ_CODEC_DST, &c))
        abort();
    memcpy(in, data + 1, len);
    make_ref(ref);
    int rc = vfmig__decode(c, codec, in, len, ref, dst, FUZZ_CODEC_DST);
    if (rc != VFMIG_OK && rc != VFMIG_ECODEC && rc != VFMIG_EINVAL)
        abort();
    if (rc == VFMIG_OK) {
        size_t elen = 0;
        rc = vfmig__encode(c, codec, 1, dst, FUZZ_CODEC_DST, ref, enc, cap, &elen);
        if (rc != VFMIG_OK ||
            vfmig__decode(c, codec, enc, elen, ref, again, FUZZ_CODEC_DST) != VFMIG_OK ||
            memcmp(dst, again, FUZZ_CODEC_DST) != 0)
            abort();
    }
    vfmig__codec_ctx_destroy(c);
    free(again);
    free(enc);
    free(dst);
    free(ref);
    free(in);
    return 0;
}
