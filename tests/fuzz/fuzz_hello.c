/*
 * tests/fuzz/fuzz_hello.c - libFuzzer target for the handshake: any bytes as a HELLO payload must
 * decode to OK / EPROTO / EVERSION with a message, never crash or read past the input. A HELLO
 * that decodes must re-encode to the very same bytes (every field is checked and kept), and its
 * layout must match itself and be compared against a fixed local layout without trouble.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vfmig_hello h;
    char err[256];
    err[0] = 0;
    int rc = vfmig__hello_decode(data, size, &h, err, sizeof(err));
    if (rc != VFMIG_OK && rc != VFMIG_EPROTO && rc != VFMIG_EVERSION)
        abort();
    if (rc != VFMIG_OK) {
        if (!err[0] || !memchr(err, 0, sizeof(err))) /* a refusal always says why */
            abort();
        return 0;
    }
    uint8_t again[VFMIG_HELLO_MAX_BYTES];
    size_t n = vfmig__hello_encode(&h, again);
    if (n != size || memcmp(again, data, size))
        abort();

    /* The decoded layout matches itself ... */
    vfmig_range r[VFMIG_MAX_RANGES];
    uint64_t off = 0;
    for (uint32_t i = 0; i < h.nranges; i++) {
        r[i].offset = off;
        r[i].size = h.range_size[i];
        off += h.range_size[i] + h.page_size; /* gaps, as the simulated VF places them */
    }
    err[0] = 0;
    if (vfmig__hello_match_layout(&h, h.page_size, h.nranges, r, err, sizeof(err)) != VFMIG_OK)
        abort();
    /* ... and is matched against a fixed local one: 32 MiB in 2 ranges of 64 KiB pages. */
    const vfmig_range local[2] = {{0, 16u << 20}, {32u << 20, 16u << 20}};
    rc = vfmig__hello_match_layout(&h, 64u << 10, 2, local, err, sizeof(err));
    if (rc != VFMIG_OK && (rc != VFMIG_ELAYOUT || !err[0] || !memchr(err, 0, sizeof(err))))
        abort();
    return 0;
}
