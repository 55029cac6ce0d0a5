/*
 * engine/proto.h - the migration protocol's messages on top of frames (transport/wire.h):
 * HELLO (version, layout, options), status replies, state blobs in chunks, COMMIT, VERDICT.
 *
 * Order on the control stream (stream 0):
 *   source: HELLO ->            <- HELLO_ACK(status)      target
 *           (with a key: AUTH -> LAYOUT ->, engine/auth.h; the HELLO withholds the layout)
 *           IMMUTABLE chunks -> <- IMM_ACK(status)
 *           (pages on data streams, ROUND_END per stream per round)
 *                               <- ROUND_ACK(r) once every stream has applied round r
 *           MUTABLE chunks -> COMMIT(final round, image digest [, VRAM digest]) ->
 *                               <- VERDICT(status, timings)
 *           GO ->                                         (target resumes the VF)
 *                               <- GO_ACK once it runs, or ABORT if it will not run there
 *   A source that hears neither cannot tell whether the target runs the VF: it leaves the VF
 *   paused and reports the outcome in doubt (VFMIG_EINDOUBT), never risking two running copies.
 *   either side, at any point: ABORT(status, message), after which the sender closes.
 */
#ifndef VFMIG_ENGINE_PROTO_H
#define VFMIG_ENGINE_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "vfmig.h"
#include "transport/link.h"

typedef struct vfmig_hello {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nstreams;
    uint64_t page_size;
    uint64_t npages;
    uint32_t nranges;
    uint32_t batch_bytes;     /* largest page run in one frame, decoded */
    uint64_t immutable_bytes;
    uint64_t range_size[VFMIG_MAX_RANGES];
    uint8_t nonce[32];        /* with VFMIG_HELLO_FLAG_AUTH (engine/auth.h) */
    uint8_t key_id[8];        /* with VFMIG_HELLO_FLAG_AUTH: which key the source holds */
} vfmig_hello;

#define VFMIG_HELLO_FIXED_BYTES 48u
#define VFMIG_HELLO_MAX_BYTES (VFMIG_HELLO_FIXED_BYTES + 8u * VFMIG_MAX_RANGES + 40u)
/* VERDICT payload: u64 verify_ns, u64 restore_ns, u64 full_verify_ns, then the message. */
#define VFMIG_VERDICT_HDR 24u
/* Largest state blob accepted from a peer (a forged size must not make us allocate anything). */
#define VFMIG_MAX_STATE_BYTES (256ull << 20)

/** Encodes into buf (VFMIG_HELLO_MAX_BYTES); returns the length. */
size_t vfmig__hello_encode(const vfmig_hello *h, uint8_t *buf);
/** Decodes and sanity-checks a HELLO payload: VFMIG_EVERSION for another protocol version,
 *  VFMIG_EPROTO for anything malformed; err says what. */
int vfmig__hello_decode(const uint8_t *buf, size_t len, vfmig_hello *h, char *err, size_t errlen);
/**
 * The first HELLO of an authenticated source withholds the VF (nothing of it before the target
 * proved the key): flag AUTH, nranges = page_size = npages = immutable_bytes = 0, range sizes
 * absent; the whole HELLO follows in a keyed LAYOUT frame after AUTH. This decodes a first HELLO:
 * that form with AUTH, the full one without. Same statuses as vfmig__hello_decode.
 */
int vfmig__hello_decode_first(const uint8_t *buf, size_t len, vfmig_hello *h, char *err, size_t errlen);
/** Decodes a LAYOUT payload (a full HELLO) and checks it repeats the first HELLO's options,
 *  nonce and key id; VFMIG_EPROTO with a message otherwise. */
int vfmig__hello_decode_layout(const uint8_t *buf, size_t len, const vfmig_hello *first, vfmig_hello *h,
                              char *err, size_t errlen);
/** VFMIG_OK if the source's layout (hello) equals the local one, else VFMIG_ELAYOUT + message. */
int vfmig__hello_match_layout(const vfmig_hello *h, uint64_t page_size, uint32_t nranges,
                             const vfmig_range *ranges, char *err, size_t errlen);

/** "1 GiB", "64 KiB", "1.5 MiB". */
void vfmig__format_size(uint64_t bytes, char *buf, size_t len);

/** A frame carrying a status in aux and a message as payload (HELLO_ACK, IMM_ACK, ABORT). */
int vfmig__send_status(vfmig_link *l, unsigned stream, int type, int status, const char *msg);
/** Extracts status and NUL-terminated message of such a frame (payload in buf, f->len bytes). */
int vfmig__frame_status(const vfmig_frame *f, const uint8_t *payload, char *msg, size_t msglen);

/** Sends a blob as chunks of `type` frames (page = offset, aux = total size). */
int vfmig__send_blob(vfmig_link *l, unsigned stream, int type, const void *blob, uint64_t size,
                    size_t chunk);

#endif
