/*
 * compress/codecs.c - the codec table and the dispatch through it. A codec is one row here
 * (id, name, whether it needs a reference, its output bound, encode, decode, a speed prior for
 * the chooser) plus its own file (codec_raw.c, codec_lz4.c, codec_zstd.c, codec_delta.c).
 *
 * Hot path: the encoders hand the caller's buffers straight to the libraries (no staging
 * copy) and use state preallocated in the ctx, so nothing is allocated per call.
 */
#include "compress/codec_impl.h"

#include <stdlib.h>

#include <lz4.h>
#include <zstd.h>

static size_t same_bound(size_t n)
{
    return n;
}

static size_t no_bound(size_t n)
{
    (void)n;
    return 0;
}

/* Speed priors (input bytes/s on one core, machine-limits.md) until a codec has a sample. */
static const vfmig_codec_desc table[] = {
    {VFMIG_CODEC_RAW, "raw", false, same_bound, vfmig__raw_encode, vfmig__raw_decode, 10e9},
    {VFMIG_CODEC_ZERO, "zero", false, no_bound, vfmig__zero_encode, vfmig__zero_decode, 20e9},
    {VFMIG_CODEC_LZ4, "lz4", false, vfmig__lz4_bound, vfmig__lz4_encode, vfmig__lz4_decode, 1e9},
    {VFMIG_CODEC_ZSTD, "zstd", false, vfmig__zstd_bound, vfmig__zstd_encode, vfmig__zstd_decode, 0.4e9},
    {VFMIG_CODEC_DELTA, "delta", true, vfmig__delta_bound, vfmig__delta_encode, vfmig__delta_decode, 4e9},
};

const vfmig_codec_desc *vfmig__codec_desc_of(int codec)
{
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (table[i].id == codec)
            return &table[i];
    return NULL;
}

/* The public per-codec figures live in fixed id slots inside the stats structs. */
_Static_assert(VFMIG_CODEC_COUNT <= VFMIG_CODEC_SLOTS, "codec ids must fit the stats slots");

const vfmig_codec_desc *vfmig__codec_desc_at(unsigned index)
{
    return index < sizeof(table) / sizeof(table[0]) ? &table[index] : NULL;
}

unsigned vfmig_codec_count(void)
{
    return (unsigned)(sizeof(table) / sizeof(table[0]));
}

int vfmig_codec_at(unsigned index)
{
    const vfmig_codec_desc *d = vfmig__codec_desc_at(index);
    return d ? d->id : VFMIG_EINVAL;
}

const char *vfmig_codec_name(int codec)
{
    if (codec == VFMIG_CODEC_AUTO)
        return "auto";
    const vfmig_codec_desc *d = vfmig__codec_desc_of(codec);
    return d ? d->name : "?";
}

int vfmig__codec_ctx_create(size_t max_src_bytes, vfmig_codec_ctx **out)
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
        vfmig__codec_ctx_destroy(c);
        return VFMIG_ENOMEM;
    }
    *out = c;
    return VFMIG_OK;
}

void vfmig__codec_ctx_destroy(vfmig_codec_ctx *c)
{
    if (!c)
        return;
    free(c->lz4_state);
    ZSTD_freeCCtx(c->zc);
    ZSTD_freeDCtx(c->zd);
    free(c);
}

size_t vfmig__codec_bound(size_t n)
{
    size_t b = n;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (table[i].bound(n) > b)
            b = table[i].bound(n);
    return b;
}

int vfmig__encode(vfmig_codec_ctx *c, int codec, int level, const void *src, size_t len,
                 const void *ref, void *dst, size_t cap, size_t *out_len)
{
    if (!out_len || (len && (!src || !dst)) || (c && len > c->max_src))
        return VFMIG_EINVAL;
    const vfmig_codec_desc *d = vfmig__codec_desc_of(codec);
    if (!d)
        return VFMIG_EINVAL;
    if ((codec == VFMIG_CODEC_LZ4 || codec == VFMIG_CODEC_ZSTD) && !c)
        return VFMIG_EINVAL; /* they keep state in the ctx */
    if (d->needs_ref && !ref && len)
        return VFMIG_EINVAL;
    return d->encode(c, level, src, len, ref, dst, cap, out_len);
}

int vfmig__decode(vfmig_codec_ctx *c, int codec, const void *src, size_t len, const void *ref,
                 void *dst, size_t dst_len)
{
    if ((len && !src) || (dst_len && !dst) || (c && dst_len > c->max_src))
        return VFMIG_EINVAL;
    const vfmig_codec_desc *d = vfmig__codec_desc_of(codec);
    if (!d)
        return VFMIG_ECODEC;
    if (codec == VFMIG_CODEC_ZSTD && !c)
        return VFMIG_EINVAL;
    if (d->needs_ref && !ref && dst_len)
        return VFMIG_EINVAL;
    return d->decode(c, src, len, ref, dst, dst_len);
}
