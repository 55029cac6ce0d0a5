/*
 * transport/link.h - what the engine sees of a link: numbered streams of frames.
 * Stream 0 is the control connection; streams 1..n carry pages. Knows nothing of sessions.
 *
 * Threading: each stream has at most one sending thread and one receiving thread at a time
 * (the engine serializes per stream); different streams are used concurrently.
 * vfmig__link_interrupt may be called from any thread at any time.
 * The public half (connect, listen, accept, close, endpoint strings) is in include/vfmig.h.
 */
#ifndef VFMIG_TRANSPORT_LINK_H
#define VFMIG_TRANSPORT_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vfmig.h"
#include "wire.h"

/** Parsed endpoint (also used by tests). */
typedef struct vfmig_endpoint {
    int kind;             /* VFMIG_LINK_TCP or VFMIG_LINK_RDMA */
    char host[256];       /* without brackets */
    uint16_t port;
    uint32_t streams;     /* tcp streams / rdma qps; 1..64, default 1 */
} vfmig_endpoint;
enum { VFMIG_LINK_TCP = 1, VFMIG_LINK_RDMA = 2 };
#define VFMIG_MAX_STREAMS 64

/** Parses an endpoint string; VFMIG_EADDR with a message naming what is wrong. */
int vfmig__endpoint_parse(const char *s, vfmig_endpoint *ep, char *err, size_t errlen);

/**
 * Queues a frame with its payload (f->len bytes) on a stream; may buffer. Blocks while the
 * peer does not read, up to the link timeout. Subject to the bandwidth cap.
 * Returns VFMIG_OK, VFMIG_ECLOSED, VFMIG_EIO, VFMIG_ETIMEDOUT or VFMIG_ECANCELED.
 */
int vfmig__link_send(vfmig_link *l, unsigned stream, const vfmig_frame *f, const void *payload);
/**
 * As vfmig__link_send, the payload gathered from iov[0..niov) (f->len bytes in all; niov <=
 * VFMIG_LINK_MAX_IOV). Large payloads go to the kernel straight from these buffers; small ones
 * are copied into the stream buffer. f->flags may carry VFMIG_FRAME_FLAG_UNCHECKED (refused
 * on links that transform payloads, see vfmig__link_payload_transformed).
 */
#define VFMIG_LINK_MAX_IOV 256
struct iovec;
int vfmig__link_sendv(vfmig_link *l, unsigned stream, const vfmig_frame *f, const struct iovec *iov, int niov);
/** True when payloads are sealed or authenticated per frame: they must then be stable while
 *  sent and cannot be received in place (the engine takes its copying path). */
bool vfmig__link_payload_transformed(const vfmig_link *l);
/** True when payloads arrive as they were sent (no encryption), so vfmig__link_recv_placed may
 *  read them straight into their destination; on a MAC-keyed link that destination is zeroed if
 *  the frame then fails its tag. */
bool vfmig__link_payload_placeable(const vfmig_link *l);
/** Sends and flushes a frame even after vfmig__link_interrupt, never blocking (what the socket
 *  does not take at once is lost): a canceled session's last word, its ABORT. Same returns. */
int vfmig__link_send_last(vfmig_link *l, unsigned stream, const vfmig_frame *f, const void *payload);
/** Pushes out whatever the stream buffers. */
int vfmig__link_flush(vfmig_link *l, unsigned stream);
/**
 * Receives one whole frame, checksum verified. The payload goes to `payload` (cap bytes; a
 * larger frame is VFMIG_EPROTO). timeout_ms bounds the wait for the frame to start (0 = poll:
 * VFMIG_ETIMEDOUT at once if nothing is there) and, separately, for its rest to arrive.
 */
int vfmig__link_recv(vfmig_link *l, unsigned stream, vfmig_frame *f, void *payload, size_t cap,
                    int timeout_ms);
/**
 * As vfmig__link_recv, but once the header is in and checked, `place` (if not NULL) may name where
 * the payload goes instead: a pointer to at least f->len writable bytes (e.g. straight into
 * VRAM), or NULL for `payload`. *placed tells which was used. The checksum is verified wherever
 * the payload landed (a caller placing a payload must treat those bytes as untrusted until this
 * returns OK). On a MAC-keyed link `place` sees the payload's length without the tag and the
 * tag is checked wherever the payload landed (zeroed there if it fails); on an encrypted link
 * `place` is not called.
 */
typedef void *(*vfmig_recv_place_fn)(void *ctx, const vfmig_frame *f);
int vfmig__link_recv_placed(vfmig_link *l, unsigned stream, vfmig_frame *f, void *payload, size_t cap,
                           vfmig_recv_place_fn place, void *ctx, bool *placed, int timeout_ms);
/** Any thread: every blocked and later send/recv returns VFMIG_ECANCELED. Sticky. */
void vfmig__link_interrupt(vfmig_link *l);
/** Timeout for blocking sends and for the rest of a started frame (default 10000 ms). */
void vfmig__link_set_timeout(vfmig_link *l, int timeout_ms);
/** Cap on bytes/s over all streams together (token bucket); 0 = none. */
void vfmig__link_set_max_bandwidth(vfmig_link *l, uint64_t bytes_per_s);
/** Largest payload the receiving side accepts (default VFMIG_FRAME_MAX_PAYLOAD). */
void vfmig__link_set_max_payload(vfmig_link *l, size_t max_payload);
/** Bytes put on the wire (headers included), all streams. Any thread. */
uint64_t vfmig__link_bytes_sent(const vfmig_link *l);
/** Name of the local network interface carrying the control stream ("eth0", "lo"), for NUMA
 *  placement near the NIC. VFMIG_ENOTSUP where it cannot be told (RDMA, an unknown address). */
int vfmig__link_local_ifname(vfmig_link *l, char *name, size_t len);
/**
 * Turns on authenticated encryption (AES-256-GCM) of every frame, on every stream, from now on:
 * frames this side sends are sealed with key_tx, frames it receives are opened with key_rx (the
 * peer passes the same two keys crosswise). Each frame's payload is encrypted and carries a
 * 16-byte tag on the wire (len + 16, also for empty frames); its header is authenticated too.
 * Frames must then arrive in order: a replayed, reordered, dropped or forged frame, or one sealed
 * with another key, is VFMIG_EAUTH. The largest payload is then the max payload set before this
 * call if it was lowered, else 4 MiB; a larger send is VFMIG_EINVAL (the receiver's max payload
 * keeps bounding the plaintext). RDMA sends then copy: ciphertext never lies in registered memory.
 * Call once, while no thread sends or receives on the link (e.g. right after the handshake,
 * before the data streams start); both ends must switch at the same frame boundary.
 * Returns VFMIG_OK, VFMIG_EINVAL (already on, bad arguments), VFMIG_ENOMEM or VFMIG_EIO.
 */
int vfmig__link_enable_aead(vfmig_link *l, const uint8_t key_tx[32], const uint8_t key_rx[32]);
/**
 * As vfmig__link_enable_aead, for integrity without encryption: every frame then carries a
 * 16-byte Poly1305 tag under the keys (len + 16 on the wire), header included, with the same
 * ordering and replay rules; payloads travel in clear. Same conditions and returns.
 */
int vfmig__link_enable_mac(vfmig_link *l, const uint8_t key_tx[32], const uint8_t key_rx[32]);
/** Whether vfmig__link_enable_aead or vfmig__link_enable_mac succeeded on this link. */
bool vfmig__link_aead_enabled(const vfmig_link *l);
/** Any thread: 1 if the peer has sent bytes on the control stream that nobody has read yet,
 *  else 0 (also where it cannot be told). For a server telling idle connections from busy ones. */
int vfmig__link_control_readable(vfmig_link *l);
/** Closes the link after a last word (a refusal): stops sending, then discards what the peer
 *  still sends until it closes or ms pass, so the word is not lost to a TCP reset. */
void vfmig__link_close_after_word(vfmig_link *l, int ms);
/** The peer's address ("127.0.0.1:40312") for logs; "?" and VFMIG_ENOTSUP where unknown. */
int vfmig__link_peer_name(vfmig_link *l, char *name, size_t len);
/** Human-readable description of the last error on a stream ("" if none). */
const char *vfmig__link_stream_error(const vfmig_link *l, unsigned stream);

#endif
