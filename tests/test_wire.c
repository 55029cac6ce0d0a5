/* tests/test_wire.c - frame pack/unpack/check, including every kind of corruption. */
#include "transport/wire.h"
#include "testutil.h"
#include "vfmig.h"

static void fill(uint8_t *p, size_t n, uint64_t *seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)t_rand(seed);
}

static void test_roundtrip(uint64_t *seed)
{
    static uint8_t payload[70000];
    static const size_t sizes[] = {0, 1, 7, 40, 4096, 65536, 70000};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        fill(payload, sizes[k], seed);
        vfmig_frame f = {.type = VFMIG_F_PAGES, .codec = VFMIG_CODEC_LZ4, .flags = 0xa55a,
                         .len = (uint32_t)sizes[k], .round = 0xdeadbeef, .npages = 17,
                         .page = 0x0123456789abcdefull, .aux = 0xfedcba9876543210ull};
        uint8_t hdr[VFMIG_FRAME_HDR_BYTES];
        vfmig__frame_pack(&f, payload, hdr);
        /* Explicit little-endian layout. */
        ASSERT_EQ(hdr[0], VFMIG_F_PAGES);
        ASSERT_EQ(hdr[1], VFMIG_CODEC_LZ4);
        ASSERT_EQ(hdr[2], 0x5a);
        ASSERT_EQ(hdr[3], 0xa5);
        ASSERT_EQ(hdr[4], sizes[k] & 0xff);
        ASSERT_EQ(hdr[8], 0xef);
        ASSERT_EQ(hdr[11], 0xde);
        ASSERT_EQ(hdr[16], 0xef);
        ASSERT_EQ(hdr[23], 0x01);
        ASSERT_EQ(hdr[24], 0x10);
        vfmig_frame g;
        uint64_t csum;
        ASSERT_OK(vfmig__frame_unpack(hdr, VFMIG_FRAME_MAX_PAYLOAD, &g, &csum));
        ASSERT_EQ(g.type, f.type);
        ASSERT_EQ(g.codec, f.codec);
        ASSERT_EQ(g.flags, f.flags);
        ASSERT_EQ(g.len, f.len);
        ASSERT_EQ(g.round, f.round);
        ASSERT_EQ(g.npages, f.npages);
        ASSERT_TRUE(g.page == f.page);
        ASSERT_TRUE(g.aux == f.aux);
        ASSERT_TRUE(csum == vfmig_get_u64(hdr + 32));
        ASSERT_OK(vfmig__frame_check(hdr, payload, sizes[k]));

        /* Every single bit of the header's first 32 bytes and of the checksum is covered. */
        for (unsigned bit = 0; bit < VFMIG_FRAME_HDR_BYTES * 8; bit++) {
            uint8_t bad[VFMIG_FRAME_HDR_BYTES];
            memcpy(bad, hdr, sizeof(bad));
            bad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            ASSERT_EQ(vfmig__frame_check(bad, payload, sizes[k]), VFMIG_ECHECKSUM);
        }
        /* Payload bit flips, at a few places including both ends. */
        if (sizes[k]) {
            size_t at[] = {0, sizes[k] / 2, sizes[k] - 1};
            for (int i = 0; i < 3; i++) {
                for (unsigned b = 0; b < 8; b += 7) {
                    payload[at[i]] ^= (uint8_t)(1u << b);
                    ASSERT_EQ(vfmig__frame_check(hdr, payload, sizes[k]), VFMIG_ECHECKSUM);
                    payload[at[i]] ^= (uint8_t)(1u << b);
                }
            }
            /* Truncated payload. */
            ASSERT_EQ(vfmig__frame_check(hdr, payload, sizes[k] - 1), VFMIG_ECHECKSUM);
        }
    }
}

static void test_unpack_rejects(void)
{
    vfmig_frame f = {.type = VFMIG_F_HELLO, .len = 100};
    uint8_t payload[100] = {0};
    uint8_t hdr[VFMIG_FRAME_HDR_BYTES];
    vfmig_frame g;
    uint64_t csum;
    vfmig__frame_pack(&f, payload, hdr);
    ASSERT_OK(vfmig__frame_unpack(hdr, 100, &g, &csum));
    ASSERT_EQ(vfmig__frame_unpack(hdr, 99, &g, &csum), VFMIG_EPROTO); /* over max_payload */
    ASSERT_OK(vfmig__frame_unpack(hdr, 100, &g, NULL));
    /* Every type outside 1..TYPE_MAX. */
    for (unsigned t = 0; t < 256; t++) {
        hdr[0] = (uint8_t)t;
        int r = vfmig__frame_unpack(hdr, 100, &g, &csum);
        if (t >= VFMIG_F_HELLO && t <= VFMIG_F_TYPE_MAX)
            ASSERT_OK(r);
        else
            ASSERT_EQ(r, VFMIG_EPROTO);
    }
    /* Length above the hard ceiling, whatever max_payload says. */
    hdr[0] = VFMIG_F_PAGES;
    vfmig_put_u32(hdr + 4, VFMIG_FRAME_MAX_PAYLOAD + 1);
    ASSERT_EQ(vfmig__frame_unpack(hdr, SIZE_MAX, &g, &csum), VFMIG_EPROTO);
    vfmig_put_u32(hdr + 4, 0xffffffffu);
    ASSERT_EQ(vfmig__frame_unpack(hdr, SIZE_MAX, &g, &csum), VFMIG_EPROTO);
    vfmig_put_u32(hdr + 4, VFMIG_FRAME_MAX_PAYLOAD);
    ASSERT_OK(vfmig__frame_unpack(hdr, SIZE_MAX, &g, &csum));
}

static void test_le_helpers(void)
{
    uint8_t b[8];
    vfmig_put_u64(b, 0x1122334455667788ull);
    ASSERT_EQ(b[0], 0x88);
    ASSERT_EQ(b[7], 0x11);
    ASSERT_TRUE(vfmig_get_u64(b) == 0x1122334455667788ull);
    vfmig_put_u32(b, 0xa1b2c3d4u);
    ASSERT_EQ(b[0], 0xd4);
    ASSERT_EQ(vfmig_get_u32(b), 0xa1b2c3d4u);
}

int main(void)
{
    uint64_t seed = t_seed();
    test_roundtrip(&seed);
    test_unpack_rejects();
    test_le_helpers();
    printf("test_wire: ok\n");
    return 0;
}
