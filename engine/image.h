/*
 * engine/image.h - the VF image as both ends account for it: one XXH3-64 per page (as last sent
 * on the source, as applied on the target) and the image digest, kept incrementally.
 *
 * Digest: D = sum over pages p of (M(p, h_p) - M(p, 0)), lane-wise mod 2^64, where
 * M(p, h) = XXH3-128 of the page hash h seeded with p. Each thread that changes page hashes adds
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

/** Hash of one page (the function both ends and the digest use). */
uint64_t vfmig_page_hash(const void *page, size_t page_size);

/**
 * Zero test and page hash in one pass: returns true (and *hash = zero_hash) when the page is all
 * zero, else false with *hash = vfmig_page_hash(page). Non-zero pages usually fail the zero test
 * in their first bytes, so the hash is the only full pass over them.
 */
bool vfmig_page_zero_or_hash(const void *page, size_t page_size, uint64_t zero_hash, uint64_t *hash);

/** Sets page p's hash to h in `table`, adding the change to `acc`. */
void vfmig_image_set(uint64_t *table, vfmig_digest *acc, uint64_t p, uint64_t h);

/** acc += x, lane-wise. */
static inline void vfmig_digest_add(vfmig_digest *acc, const vfmig_digest *x)
{
    acc->lo += x->lo;
    acc->hi += x->hi;
}

/**
 * Digest of what a device holds: reads every page (in place through `map` where the device
 * offers it, else through `read` into `scratch` of page_size bytes) and sums M(p, hash) - M(p, 0)
 * as above, so it equals the incremental digest of an image whose page hashes are the device's.
 * For VFMIG_VERIFY_FULL, on a paused VF.
 */
int vfmig_image_device_digest(const vfmig_device *dev, const uint64_t *range_base, unsigned page_shift,
                              void *scratch, vfmig_digest *out);

#endif
