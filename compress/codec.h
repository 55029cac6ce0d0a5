/*
 * compress/codec.h - page codecs behind one small interface, the delta cache and the adaptive
 * codec chooser. Knows nothing of sessions or links (DESIGN.md: arrows point one way).
 *
 * All encoders and decoders work on whole page runs held in caller buffers; nothing here
 * allocates after *_create. Decoders never read or write outside the buffers they are given,
 * whatever the input: corrupt, truncated or oversized input returns VFMIG_ECODEC.
 */
#ifndef VFMIG_COMPRESS_CODEC_H
#define VFMIG_COMPRESS_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vfmig.h" /* vfmig_codec ids and status codes */

/* Per-worker codec state (lz4 state, zstd contexts, scratch). One per thread; not shared. */
typedef struct vfmig_codec_ctx vfmig_codec_ctx;

/* One row of the codec table (compress/codecs.c): everything the engine needs to know of a
 * codec. A new codec is a row there plus its own file. */
typedef struct vfmig_codec_desc {
    int id;              /* vfmig_codec */
    const char *name;
    bool needs_ref;      /* decodes against the receiver's current copy (DELTA) */
    size_t (*bound)(size_t n);
    int (*encode)(vfmig_codec_ctx *c, int level, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst,
                  size_t cap, size_t *out_len);
    int (*decode)(vfmig_codec_ctx *c, const uint8_t *src, size_t len, const uint8_t *ref, uint8_t *dst, size_t n);
    double speed;        /* prior: input bytes/s on one core, until measured */
} vfmig_codec_desc;

/** The row of a codec id, NULL for AUTO or an unknown id (a frame's codec byte from the wire). */
const vfmig_codec_desc *vfmig__codec_desc_of(int codec);
/** Row `index` of the table (0 .. vfmig_codec_count()-1), NULL beyond it. */
const vfmig_codec_desc *vfmig__codec_desc_at(unsigned index);
/** State for runs of up to max_src_bytes. */
int vfmig__codec_ctx_create(size_t max_src_bytes, vfmig_codec_ctx **out);
void vfmig__codec_ctx_destroy(vfmig_codec_ctx *c);

/** Output bytes any codec may need for src_len input bytes (size dst buffers with this). */
size_t vfmig__codec_bound(size_t src_len);

/**
 * Encodes `len` bytes of `src` with `codec` (RAW, ZERO, LZ4, ZSTD, DELTA; not AUTO) into dst
 * (cap >= vfmig__codec_bound(len)). `level`: lz4 acceleration (0 = 1) or zstd level (0 = 1,
 * negative levels allowed). DELTA needs `ref`, the copy last sent (same length); the others
 * ignore it. ZERO requires src to be all zero (VFMIG_EINVAL otherwise) and writes nothing.
 * *out_len may be >= len: the caller then sends RAW instead. A cap below the bound is allowed;
 * output that does not fit returns VFMIG_EINVAL. `c` may be NULL for RAW, ZERO and DELTA.
 */
int vfmig__encode(vfmig_codec_ctx *c, int codec, int level, const void *src, size_t len,
                 const void *ref, void *dst, size_t cap, size_t *out_len);

/**
 * Decodes `len` bytes of `src` into exactly `dst_len` bytes of `dst`. DELTA reads `ref` (the
 * receiver's current copy, dst_len bytes; `ref` may equal `dst` for an in-place update).
 * Any mismatch (size, corrupt stream, trailing bytes) returns VFMIG_ECODEC; dst may then hold
 * partial output. `ref` must equal `dst` or not overlap it. `c` may be NULL except for ZSTD.
 */
int vfmig__decode(vfmig_codec_ctx *c, int codec, const void *src, size_t len, const void *ref,
                 void *dst, size_t dst_len);

/**
 * DELTA over a run of `npages` pages held in separate buffers: page k is src[k] against ref[k]
 * (page_size bytes each), encoded as one DELTA stream of the whole run (vfmig__decode of
 * npages * page_size bytes decodes it). In the same pass ref[k] becomes exactly the page the
 * decoder will produce: src may change while it is read (a running VF) and ref still ends up
 * equal to what was encoded. VFMIG_EINVAL when the output does not fit in cap (then the ref
 * pages are partly updated: the caller must send them whole or forget them).
 */
int vfmig__delta_encode_pages(const uint8_t *const *src, uint8_t *const *ref, size_t npages, size_t page_size,
                             uint8_t *dst, size_t cap, size_t *out_len);

/** True if all `len` bytes are zero (fast, early exit on the first non-zero word). */
bool vfmig__is_zero(const void *p, size_t len);

/* -------------------------------------------------------------------------------------------
 * Delta cache: the last sent copy of pages, bounded (like QEMU's XBZRLE cache), thread-safe.
 * Capacity is rounded down to whole pages and is a cap: memory is faulted in as slots are used.
 * An insert evicts an old page (CLOCK) that no worker holds.
 */
typedef struct vfmig_delta_cache vfmig_delta_cache;

int vfmig__delta_cache_create(size_t capacity_bytes, size_t page_size, uint64_t npages,
                             vfmig_delta_cache **out);
void vfmig__delta_cache_destroy(vfmig_delta_cache *dc);
/**
 * Pins the copies of pages [first, first+n) under one lock: copy[k] points at page first+k's
 * copy with hit[k] = true when one is cached, else copy[k] is NULL (see fill_run). The caller
 * reads and writes pinned copies without locking; release unpins them.
 */
void vfmig__delta_cache_acquire_run(vfmig_delta_cache *dc, uint64_t first, uint32_t n, uint8_t **copy, bool *hit);
/** After an acquire: fresh pinned slots (into copy[k]) for the pages that missed and have want[k]
 *  (copy[k] stays NULL when every slot is pinned). One lock; for deciding on misses only. */
void vfmig__delta_cache_fill_run(vfmig_delta_cache *dc, uint64_t first, uint32_t n, const bool *want, uint8_t **copy);
/** Unpins a run; pages with keep[k] false are forgotten (keep NULL keeps all). */
void vfmig__delta_cache_release_run(vfmig_delta_cache *dc, uint64_t first, uint32_t n, const bool *keep);
/** One-page calls, copying under the lock (safe however threads share pages). */
bool vfmig__delta_cache_get(vfmig_delta_cache *dc, uint64_t page, void *dst);
bool vfmig__delta_cache_contains(vfmig_delta_cache *dc, uint64_t page);
void vfmig__delta_cache_put(vfmig_delta_cache *dc, uint64_t page, const void *src);
/** Forgets a page (e.g., it was sent as zero). */
void vfmig__delta_cache_drop(vfmig_delta_cache *dc, uint64_t page);
typedef struct vfmig_delta_cache_stats {
    uint64_t hits, misses, evictions, pages_cached, capacity_pages;
    uint64_t bytes_used; /* memory faulted in for copies */
} vfmig_delta_cache_stats;
void vfmig__delta_cache_get_stats(vfmig_delta_cache *dc, vfmig_delta_cache_stats *out);

/* -------------------------------------------------------------------------------------------
 * Adaptive codec choice per batch, by content (what recent batches of each kind gave) and by
 * bottleneck (link bytes/s against codec bytes/s). One chooser per worker (not thread-safe).
 */
/* What the chooser has learned of one content class: EWMA of ratio (out/in) and speed (in
 * bytes/s) per codec. */
typedef struct vfmig_codec_estimates {
    double ratio[VFMIG_CODEC_COUNT];
    double speed[VFMIG_CODEC_COUNT];
    uint32_t samples[VFMIG_CODEC_COUNT];
    uint32_t slow_run[VFMIG_CODEC_COUNT]; /* consecutive samples far slower than the estimate */
} vfmig_codec_estimates;

/* Content classes: a worker meets textures, tensors and random data mixed batch by batch, and
 * the same codec pays very differently on each (lz4 gives up on float tensors that zstd's
 * entropy stage shrinks by a fifth), so one average over all of them picks wrong for most. */
#define VFMIG_CONTENT_CLASSES 8

typedef struct vfmig_chooser {
    int fixed_codec;       /* VFMIG_CODEC_AUTO or a fixed codec */
    int level;
    double link_bps;       /* current estimate of the link's bytes/s (0 = unknown) */
    uint32_t batches;      /* batches seen; drives periodic re-probing */
    uint32_t workers;      /* encode workers sharing the link */
    uint32_t probe_every;  /* re-probe another codec every this many batches (init: 64) */
    uint32_t probe_next;   /* round-robin position of the next re-probe */
    double cpu_share;      /* fraction of a core the workers actually get (1 = all of one each) */
    unsigned cls;          /* content class of the batch at hand (vfmig__chooser_set_class) */
    double link_busy;      /* bytes the link carried / its capacity, recently (< 0: unknown) */
    double lambda;         /* price of a CPU second against a wire second, moved by link_busy */
    vfmig_codec_estimates est[VFMIG_CONTENT_CLASSES];
} vfmig_chooser;

/** Content class (0 .. VFMIG_CONTENT_CLASSES-1) of len bytes at p, from the order-0 entropy of
 *  up to 2 KiB sampled across them: 0 for near-constant bytes, the last for random ones. */
unsigned vfmig__content_class(const void *p, size_t len);
/** The order-0 entropy (bits per byte) that class is taken from: exact for up to 2 KiB, sampled
 *  and bias-corrected to a 4 KiB sample's level beyond. 0 for no bytes. */
double vfmig__content_entropy(const void *p, size_t len);
void vfmig__chooser_init(vfmig_chooser *ch, int codec, int level, uint32_t workers);
/** Sets the link estimate (bytes/s for all workers together). */
void vfmig__chooser_set_link(vfmig_chooser *ch, double link_bps);
/** Sets what the link recently carried as a fraction of link_bps (< 0: unknown): whether the
 *  link or the CPUs bound the stream, which decides what a codec's cost is. */
void vfmig__chooser_set_link_busy(vfmig_chooser *ch, double fraction);
/** Sets the share of a core each worker gets (time running / time runnable): on a busy host a
 *  codec's CPU cost is its speed on a whole core divided by this. */
void vfmig__chooser_set_cpu_share(vfmig_chooser *ch, double share);
/** The content class of the next batches' pick and feedback (0 until set; out of range: the
 *  last class). */
void vfmig__chooser_set_class(vfmig_chooser *ch, unsigned cls);
/** Codec for a non-zero batch. has_ref: a delta reference exists for every page of it.
 *  Deterministic given the feedback. A fixed DELTA without has_ref gives LZ4; a fixed ZERO
 *  (meaningless for a non-zero batch) gives RAW. */
int vfmig__chooser_pick(vfmig_chooser *ch, bool has_ref);
/** What the chosen codec gave (in, out bytes; time spent encoding). Pass the encoder's
 *  out_len even when the batch then went out RAW because it did not shrink. */
void vfmig__chooser_feedback(vfmig_chooser *ch, int codec, size_t in, size_t out, uint64_t ns);

#endif
