/*
 * transport/aead.h - private: AES-256-GCM per frame for a link (see vfmig__link_enable_aead).
 *
 * One state per link: for every stream (0..nstreams) and direction a cipher context keyed once,
 * a 64-bit frame counter and a scratch buffer, all made at creation so that a frame costs no
 * allocation. Nonce = u32 stream (LE) || u64 counter (LE); the two directions use different
 * keys, so a (key, nonce) pair is never used twice. The AAD is the first 32 bytes of the frame
 * header (everything but the checksum, with len = ciphertext + tag).
 *
 * Threading: as for links - per stream, one thread seals and one thread opens at a time.
 *
 * Why an AEAD per frame rather than TLS 1.3: the same sealing works on every link, RDMA queue
 * pairs included, where TLS has no byte stream to run on; the keys come from the pre-shared-key
 * handshake the engine already does, so no certificates or PKI are needed between two hosts of
 * one fleet; each stream is sealed independently, so N streams scale over N cores instead of
 * funnelling through N TLS sessions with their own record layers; and a frame that fails opens as
 * a precise error on that stream (tampered, replayed, reordered or dropped, since the counter is
 * never taken from the wire). The cost (bench_link --aead) is ~0.5 CPU s/GB over both ends.
 */
#ifndef VFMIG_TRANSPORT_AEAD_H
#define VFMIG_TRANSPORT_AEAD_H

#include <stddef.h>
#include <stdint.h>

#define VFMIG_AEAD_KEY_BYTES 32u
#define VFMIG_AEAD_TAG_BYTES 16u
#define VFMIG_AEAD_AAD_BYTES 32u
/* Largest plaintext when the link's max payload was left at the hard ceiling: engine frames are
 * well under 1 MiB, and 64 MiB of scratch per stream and direction would be wasteful. */
#define VFMIG_AEAD_DEFAULT_CAP (4u << 20)

typedef struct vfmig_aead vfmig_aead;

/** Keys both directions of streams 0..nstreams; cap = largest plaintext. VFMIG_OK,
 *  VFMIG_ENOMEM or VFMIG_EIO (the crypto library refused). */
int vfmig__aead_new(unsigned nstreams, const uint8_t key_tx[VFMIG_AEAD_KEY_BYTES],
                   const uint8_t key_rx[VFMIG_AEAD_KEY_BYTES], size_t cap, vfmig_aead **out);
/**
 * As vfmig__aead_new, for integrity without encryption: each frame carries a Poly1305 tag
 * (ChaCha20-Poly1305 with header prefix and payload as associated data, nothing encrypted: a
 * one-time Poly1305 key per frame from the nonce), with the same nonces and counters, so
 * tampered, replayed, reordered, dropped or foreign frames fail the same way. Chosen by
 * measurement (bench_mac, docs/benchmarks.md "Keyed integrity"): 12 GB/s per core against 7 for
 * GMAC, 1.6 for HMAC-SHA256 and 1 for keyed BLAKE2b; and it needs no copy of the payload on
 * either side (vfmig__aead_tag / vfmig__aead_verify). The receive scratch is not allocated; the
 * send scratch serves back-ends that cannot append the tag on their own.
 */
int vfmig__aead_new_mac(unsigned nstreams, const uint8_t key_tx[VFMIG_AEAD_KEY_BYTES],
                       const uint8_t key_rx[VFMIG_AEAD_KEY_BYTES], size_t cap, vfmig_aead **out);
/** Whether this state only authenticates (vfmig__aead_new_mac). */
int vfmig__aead_mac_only(const vfmig_aead *a);
/** MAC mode: the tag of stream s's next frame (aad, then the len payload bytes). Counter as for
 *  seal. VFMIG_OK, VFMIG_EPROTO (counter exhausted) or VFMIG_EIO. */
int vfmig__aead_tag(vfmig_aead *a, unsigned s, const uint8_t aad[VFMIG_AEAD_AAD_BYTES], const void *pt,
                   size_t len, uint8_t tag[VFMIG_AEAD_TAG_BYTES]);
/** MAC mode: checks the tag of stream s's next received frame; the counter advances on success.
 *  VFMIG_OK, VFMIG_EAUTH, VFMIG_EPROTO or VFMIG_EIO. */
int vfmig__aead_verify(vfmig_aead *a, unsigned s, const uint8_t aad[VFMIG_AEAD_AAD_BYTES], const void *pt,
                      size_t len, const uint8_t tag[VFMIG_AEAD_TAG_BYTES]);
/** MAC mode: stream s's send scratch (cap + 16 bytes), for payload + tag in one piece. */
uint8_t *vfmig__aead_tx_buf(vfmig_aead *a, unsigned s);
void vfmig__aead_free(vfmig_aead *a);
/** Largest plaintext a frame may carry. */
size_t vfmig__aead_cap(const vfmig_aead *a);
/**
 * Encrypts len (<= cap) bytes of stream s's next frame into its send scratch: ciphertext, then
 * the tag; *out points at the len + 16 bytes. The counter advances even on failure (a nonce that
 * may have been used is never used again). VFMIG_OK, VFMIG_EPROTO (counter exhausted) or
 * VFMIG_EIO.
 */
int vfmig__aead_seal(vfmig_aead *a, unsigned s, const uint8_t aad[VFMIG_AEAD_AAD_BYTES],
                    const void *pt, size_t len, const uint8_t **out);
/** Stream s's receive scratch (cap + 16 bytes): the receiver reads ciphertext + tag there. */
uint8_t *vfmig__aead_rx_buf(vfmig_aead *a, unsigned s);
/**
 * Decrypts and verifies the ct_len (16..cap + 16) bytes in stream s's receive scratch into pt
 * (ct_len - 16 bytes). The counter advances only on success. VFMIG_OK, VFMIG_EAUTH (pt is then
 * zeroed: it held unauthenticated bytes), VFMIG_EPROTO (counter exhausted) or VFMIG_EIO.
 */
int vfmig__aead_open(vfmig_aead *a, unsigned s, const uint8_t aad[VFMIG_AEAD_AAD_BYTES],
                    size_t ct_len, void *pt);
/** Test hook: sets stream s's next send and receive counters. */
void vfmig__aead_set_counters(vfmig_aead *a, unsigned s, uint64_t tx, uint64_t rx);

#endif
