/*
 * transport/wire.h - the frame: versioned, self-describing, checksummed. Shared by every link
 * (TCP, RDMA) and by the engine, which gives frame types their meaning.
 *
 * Header, 40 bytes, little-endian:
 *   0 u8  type       vfmig_frame_type
 *   1 u8  codec      vfmig_codec of the payload (PAGES), else 0
 *   2 u16 flags
 *   4 u32 len        payload bytes that follow the header
 *   8 u32 round
 *  12 u32 npages     pages in the run (PAGES)
 *  16 u64 page       first page of the run (PAGES), else type-specific
 *  24 u64 aux        type-specific (status, digest half, base round, ...)
 *  32 u64 csum       XXH3-64 of the payload, seeded with XXH3-64 of bytes 0..31
 * A receiver checks the checksum before it looks at the payload, and the engine checks every
 * length and index against the handshake before it uses them.
 */
#ifndef VFMIG_TRANSPORT_WIRE_H
#define VFMIG_TRANSPORT_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define VFMIG_WIRE_MAGIC 0x47494d56u /* "VMIG" little-endian, first bytes of HELLO payloads */
#define VFMIG_WIRE_VERSION 2u /* 2: CALLED_OFF */
#define VFMIG_FRAME_HDR_BYTES 40u
/* Hard ceiling of one payload; the handshake negotiates a smaller one. */
#define VFMIG_FRAME_MAX_PAYLOAD (64u << 20)

typedef enum vfmig_frame_type {
    VFMIG_F_HELLO = 1,      /* source -> target: version, layout, options (control) */
    VFMIG_F_HELLO_ACK = 2,  /* target -> source: status + message */
    VFMIG_F_IMMUTABLE = 3,  /* source -> target: immutable state blob */
    VFMIG_F_IMM_ACK = 4,    /* target -> source: restore_immutable status + message */
    VFMIG_F_PAGES = 5,      /* a run of pages of one round (data streams) */
    VFMIG_F_ROUND_END = 6,  /* end of a round on one data stream; aux = frames sent in it */
    VFMIG_F_MUTABLE = 7,    /* mutable state blob (control, in blackout) */
    VFMIG_F_COMMIT = 8,     /* digest of the image at pause (control) */
    VFMIG_F_VERDICT = 9,    /* target -> source: status, timings */
    VFMIG_F_GO = 10,        /* source -> target: resume the VF */
    VFMIG_F_ABORT = 11,     /* either way: status in aux, message in payload */
    VFMIG_F_STREAM = 12,    /* transport-internal: binds a data connection to a link */
    VFMIG_F_AUTH = 13,      /* handshake authentication messages */
    VFMIG_F_ROUND_ACK = 14, /* target -> source: every stream finished round `round` (control) */
    VFMIG_F_GO_ACK = 15,    /* target -> source: the VF runs on the target now (control) */
    VFMIG_F_LAYOUT = 16,    /* source -> target, keyed, after AUTH: the HELLO with the VF's layout */
    VFMIG_F_CALLED_OFF = 17, /* source -> target: the switch-over of round `round` was called off
                                (the blackout would overrun its budget) and the VF runs on the
                                source again; that round was a pre-copy round, the mutable state
                                sent is void, more rounds follow (control) */
    VFMIG_F_TYPE_MAX = 17
} vfmig_frame_type;

/* Frame flags (header bytes 2-3). UNCHECKED: the checksum covers the header only. Set for page
 * payloads sent straight out of a running VF's memory, which may change while the kernel copies
 * them; the engine checks those bytes through the image digest instead (engine/image.h). */
#define VFMIG_FRAME_FLAG_UNCHECKED 0x0001u

typedef struct vfmig_frame {
    uint8_t type;
    uint8_t codec;
    uint16_t flags;
    uint32_t len;
    uint32_t round;
    uint32_t npages;
    uint64_t page;
    uint64_t aux;
} vfmig_frame;

/** Writes the 40-byte header for f and its payload (checksum computed here). */
void vfmig__frame_pack(const vfmig_frame *f, const void *payload, uint8_t out[VFMIG_FRAME_HDR_BYTES]);
/** As vfmig__frame_pack, the payload (f->len bytes) gathered from iov[0..niov). */
struct iovec;
void vfmig__frame_pack_iov(const vfmig_frame *f, const struct iovec *iov, int niov,
                          uint8_t out[VFMIG_FRAME_HDR_BYTES]);
/**
 * Parses a header. Returns VFMIG_OK, or VFMIG_EPROTO for an unknown type or a length over
 * max_payload. *csum receives the checksum to verify once the payload is read.
 */
int vfmig__frame_unpack(const uint8_t in[VFMIG_FRAME_HDR_BYTES], size_t max_payload, vfmig_frame *f,
                       uint64_t *csum);
/** The checksum of a frame whose payload is a followed by b (a keyed frame's payload and tag,
 *  kept apart), equal to the one of the joined payload. */
uint64_t vfmig__frame_csum2(const uint8_t hdr[VFMIG_FRAME_HDR_BYTES], const void *a, size_t alen, const void *b,
                           size_t blen);
/** VFMIG_OK if the checksum in hdr matches hdr and payload, else VFMIG_ECHECKSUM. */
int vfmig__frame_check(const uint8_t hdr[VFMIG_FRAME_HDR_BYTES], const void *payload, size_t len);

/* Little-endian helpers for payload encoding (handshake, verdict). */
static inline void vfmig_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void vfmig_put_u64(uint8_t *p, uint64_t v)
{
    vfmig_put_u32(p, (uint32_t)v);
    vfmig_put_u32(p + 4, (uint32_t)(v >> 32));
}
static inline uint32_t vfmig_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t vfmig_get_u64(const uint8_t *p)
{
    return (uint64_t)vfmig_get_u32(p) | (uint64_t)vfmig_get_u32(p + 4) << 32;
}

#endif
