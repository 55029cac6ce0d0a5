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

uint64_t vfmig_page_hash(const void *page, size_t page_size)
{
    return page_hash_fn(page, page_size);
}

bool vfmig_page_zero_or_hash(const void *page, size_t page_size, uint64_t zero_hash, uint64_t *hash)
{
    /* The zero test reads 64 bytes at a time and leaves at the first non-zero word: on data it
     * costs a cache line, on zero pages it is the pass (and the hash is known). */
    const uint8_t *p = page;
    size_t i = 0;
    for (; i + 64 <= page_size; i += 64) {
        uint64_t w[8];
        memcpy(w, p + i, 64);
        if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7])
            break;
    }
    if (i + 64 > page_size) {
        for (; i < page_size && !p[i]; i++)
            ;
        if (i == page_size) {
            *hash = zero_hash;
            return true;
        }
    }
    *hash = page_hash_fn(page, page_size);
    return false;
}

static inline vfmig_digest mix(uint64_t p, uint64_t h)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(h >> (8 * i));
    XXH128_hash_t m = XXH3_128bits_withSeed(b, sizeof(b), p);
    return (vfmig_digest){m.low64, m.high64};
}

void vfmig_image_set(uint64_t *table, vfmig_digest *acc, uint64_t p, uint64_t h)
{
    uint64_t old = table[p];
    if (old == h)
        return;
    vfmig_digest a = mix(p, h), b = mix(p, old);
    acc->lo += a.lo - b.lo;
    acc->hi += a.hi - b.hi;
    table[p] = h;
}

int vfmig_image_device_digest(const vfmig_device *dev, const uint64_t *range_base, unsigned page_shift,
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
            vfmig_digest a = mix(p, page_hash_fn(pg, ps)), b = mix(p, 0);
            d.lo += a.lo - b.lo;
            d.hi += a.hi - b.hi;
        }
    }
    *out = d;
    return VFMIG_OK;
}
