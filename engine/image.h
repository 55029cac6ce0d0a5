/*
 * engine/image.h - the VF image as both ends account for it: one 64-bit hash per page (as last
 * sent on the source, as applied on the target) and the image digest, kept incrementally.
 *
 * Page hashes come in two kinds, told apart by bit 63, and both ends pick the same kind for a
 * page because it follows the codec of the last frame that carried the page:
 *   - XXH3-64 (bit 63 clear) after a raw, zero, lz4 or zstd frame: the fastest full pass;
 *   - a linear hash over GF(2^64) (bit 63 set) after a delta frame:
 *         L(P) = sum over 64-bit words w_i of P of w_i * K_i   (carry-less, mod x^64+x^4+x^3+x+1)
 *     with fixed keys K_i (powers of a constant). L is linear in the bytes, so a delta frame's
 *     XOR literals alone give L(new) = L(old) + L(literals): a page re-sent as a delta is never
 *     read again on either end to update its hash - the final pass of a hot set that is rewritten
 *     a few words per page costs both ends only the changed words. L(P) = L(Q) for P != Q has
 *     probability at most (words per page) / 2^64 for an accidental difference; it is not a MAC.
 *
 * Digest: D = sum over pages p of (M(p, h_p) - M(p, 0)), lane-wise mod 2^64, where M(p, h) is
 * two 64-bit lanes, each a bijective mix (MurmurHash3's finalizer) of h keyed by p. Each thread that changes page hashes adds
 * its changes into its own accumulator (vfmig_digest); COMMIT adds the accumulators up. So no
 * pass over the page table ever happens inside the blackout, and the sum does not depend on the
 * order pages were handled in. Both ends start from all-zero hashes (D = 0).
 *
 * Threading: a page's hash is written by the one worker that handles the page in a round;
 * rounds are barriers on both ends, so no page is touched by two threads at once.
 */
#ifndef VFMIG_ENGINE_IMAGE_H
#define VFMIG_ENGINE_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vfmig.h"

typedef struct vfmig_digest {
    uint64_t lo, hi;
} vfmig_digest;

#define VFMIG_HASH_LIN (1ull << 63) /* the page's hash is the linear kind */

/** XXH3 kind hash of one page (bit 63 clear). */
uint64_t vfmig__page_hash(const void *page, size_t page_size);

/* The linear hash: keys for pages up to 2 MiB, and the CPU's carry-less multiply where it has
 * one. Set up once per session (vfmig__lin_init); read-only after, so threads share it. */
#define VFMIG_LIN_WORDS 8192u  /* keys per 64 KiB chunk */
#define VFMIG_LIN_CHUNKS 32u   /* chunks of a 2 MiB page */
typedef struct vfmig_lin {
    uint64_t k[VFMIG_LIN_WORDS];
    uint64_t l[VFMIG_LIN_CHUNKS];
    size_t page_size;
    int hw;                     /* 1: PCLMULQDQ, 2: VPCLMULQDQ on 256 bits, 0: neither */
} vfmig_lin;

void vfmig__lin_init(vfmig_lin *lin, size_t page_size);
/** Linear kind hash of one page (bit 63 set). */
uint64_t vfmig__lin_page(const vfmig_lin *lin, const void *page);
/**
 * What a DELTA stream over `npages` pages changes in each page's linear hash: dh[k] for page k
 * (0 where nothing changed). The stream must already have decoded (or been produced) without
 * error; VFMIG_ECODEC otherwise.
 */
int vfmig__lin_delta(const vfmig_lin *lin, const uint8_t *stream, size_t len, uint32_t npages, uint64_t *dh);
/** The page's new hash after a delta frame: incremental when it was already linear, else a full
 *  linear pass over `page` (its new content). */
static inline uint64_t vfmig_lin_after_delta(const vfmig_lin *lin, uint64_t old, uint64_t dh, const void *page)
{
    return (old & VFMIG_HASH_LIN) ? old ^ (dh & ~VFMIG_HASH_LIN) : vfmig__lin_page(lin, page);
}

/**
 * Zero test and page hash in one pass: returns true (and *hash = zero_hash) when the page is all
 * zero, else false with *hash = vfmig__page_hash(page). Non-zero pages usually fail the zero test
 * in their first bytes, so the hash is the only full pass over them.
 */
bool vfmig__page_zero_or_hash(const void *page, size_t page_size, uint64_t zero_hash, uint64_t *hash);
/** Whether the page is all zero; a data page is usually told by its first cache line. */
bool vfmig__page_is_zero(const void *page, size_t page_size);

/** Sets page p's hash to h in `table`, adding the change to `acc`. */
void vfmig__image_set(uint64_t *table, vfmig_digest *acc, uint64_t p, uint64_t h);

/** acc += x, lane-wise. */
static inline void vfmig_digest_add(vfmig_digest *acc, const vfmig_digest *x)
{
    acc->lo += x->lo;
    acc->hi += x->hi;
}

/**
 * Digest of what a device holds: reads every page (in place through `map` where the device
 * offers it, else through `read` into `scratch` of page_size bytes) and sums M(p, XXH3 kind hash)
 * - M(p, 0), whatever kind the image's table holds, so it depends on VRAM alone (and can be
 * taken while the final pass updates the table). For VFMIG_VERIFY_FULL, on a paused VF.
 */
int vfmig__image_device_digest(const vfmig_device *dev, const uint64_t *range_base, unsigned page_shift,
                              void *scratch, vfmig_digest *out);

#endif
