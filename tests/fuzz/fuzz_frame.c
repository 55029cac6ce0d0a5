/* tests/fuzz/fuzz_frame.c - libFuzzer target for the frame decoder: any bytes as a header plus
 * payload must give OK/EPROTO/ECHECKSUM, never a crash or an out-of-bounds read. A frame that
 * passes must survive a re-pack unchanged. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "transport/wire.h"
#include "vfmig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < VFMIG_FRAME_HDR_BYTES)
        return 0;
    uint8_t hdr[VFMIG_FRAME_HDR_BYTES];
    memcpy(hdr, data, sizeof(hdr));
    const uint8_t *payload = data + VFMIG_FRAME_HDR_BYTES;
    size_t avail = size - VFMIG_FRAME_HDR_BYTES;
    vfmig_frame f;
    uint64_t csum;
    /* The max_payload a receiver would use: the bytes it has room for. */
    int r = vfmig__frame_unpack(hdr, avail, &f, &csum);
    if (r != VFMIG_OK && r != VFMIG_EPROTO)
        __builtin_trap();
    if (r)
        return 0;
    if (f.len > avail || f.type < VFMIG_F_HELLO || f.type > VFMIG_F_TYPE_MAX)
        __builtin_trap();
    r = vfmig__frame_check(hdr, payload, f.len);
    if (r != VFMIG_OK && r != VFMIG_ECHECKSUM)
        __builtin_trap();
    if (r == VFMIG_OK) {
        uint8_t again[VFMIG_FRAME_HDR_BYTES];
        vfmig__frame_pack(&f, payload, again);
        if (memcmp(again, hdr, sizeof(hdr)))
            __builtin_trap();
    }
    return 0;
}
