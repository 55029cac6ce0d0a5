/*
 * engine/auth.h - mutual authentication with a pre-shared key, in the handshake, and the keys
 * that protect every frame after it.
 *
 *   source -> HELLO (flag AUTH, nonce_s, key id; the VF's layout withheld)
 *   target -> HELLO_ACK ok: nonce_t, mac_t
 *   source -> AUTH: mac_s, then (keyed) LAYOUT: the whole HELLO with the layout
 * with, over T1 = SHA-256(HELLO | nonce_t) and T2 = SHA-256(HELLO | nonce_t | mac_t):
 *   k_t | k_s     = HKDF-SHA256(key, salt = nonce_s | nonce_t, info = "vfmig auth" | T1)
 *   mac_t         = HMAC-SHA256(k_t, "vfmig target" | T1)
 *   mac_s         = HMAC-SHA256(k_s, "vfmig source" | T1 | mac_t)
 *   k_s2t | k_t2s = HKDF-SHA256(key, salt = nonce_s | nonce_t, info = "vfmig frames" | T2)
 * After AUTH every frame either way is keyed with the direction keys: AES-256-GCM with
 * encryption, otherwise a Poly1305 tag per frame (transport/aead.h) - so the COMMIT frame and its
 * image digest cannot be forged or altered either.
 *
 * The source sends nothing of the VF before it has checked mac_t, and the target
 * takes nothing of the VF (and tells nothing of its own) before it has checked mac_s. Both nonces
 * are fresh per session, so a recorded exchange replayed to either side fails. The key id
 * (HKDF of the key, 8 bytes) lets a target hold two keys during a rotation and pick the one the
 * source uses. A captured handshake allows an offline guess of the key only if the key can be
 * guessed: keys are 32 random bytes or more (vfmig keygen), which HKDF cannot make stronger and a
 * passphrase would make weaker - so shorter keys are refused.
 */
#ifndef VFMIG_ENGINE_AUTH_H
#define VFMIG_ENGINE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/link.h"

#define VFMIG_AUTH_NONCE 32
#define VFMIG_AUTH_MAC 32
#define VFMIG_AUTH_KEY_ID 8
#define VFMIG_PSK_MIN 32
#define VFMIG_PSK_MAX 256
#define VFMIG_HELLO_FLAG_AUTH 1u
#define VFMIG_HELLO_FLAG_ENCRYPT 2u /* with AUTH: every frame after the handshake is AES-256-GCM */
#define VFMIG_AEAD_KEY 32

/** Up to two keys (a target during a rotation); the first is the one a source uses. */
typedef struct vfmig_keyring {
    unsigned n;
    size_t len[2];
    uint8_t key[2][VFMIG_PSK_MAX];
} vfmig_keyring;

/** Fills buf with `len` random bytes from the kernel. VFMIG_OK or VFMIG_EIO. */
int vfmig__random(void *buf, size_t len);
/** The key's id: 8 bytes of HKDF(key, info "vfmig key id"). */
int vfmig__auth_key_id(const uint8_t *key, size_t keylen, uint8_t id[VFMIG_AUTH_KEY_ID]);
/** Index in the ring of the key with this id, or -1. */
int vfmig__keyring_find(const vfmig_keyring *k, const uint8_t id[VFMIG_AUTH_KEY_ID]);
/** Both proofs of a handshake (see above); nonce_s is the HELLO's. */
int vfmig__auth_proofs(const uint8_t *key, size_t keylen, const uint8_t *hello, size_t hello_len,
                      const uint8_t nonce_s[VFMIG_AUTH_NONCE], const uint8_t nonce_t[VFMIG_AUTH_NONCE],
                      uint8_t mac_t[VFMIG_AUTH_MAC], const uint8_t *mac_t_in, uint8_t mac_s[VFMIG_AUTH_MAC]);
/** Direction keys of the session (see above). */
int vfmig__auth_keys(const uint8_t *key, size_t keylen, const uint8_t *hello, size_t hello_len,
                    const uint8_t nonce_s[VFMIG_AUTH_NONCE], const uint8_t nonce_t[VFMIG_AUTH_NONCE],
                    const uint8_t mac_t[VFMIG_AUTH_MAC], uint8_t k_s2t[VFMIG_AEAD_KEY],
                    uint8_t k_t2s[VFMIG_AEAD_KEY]);
/** Constant-time comparison of two MACs: 1 if equal. */
int vfmig__auth_equal(const uint8_t *a, const uint8_t *b);

/**
 * The target's half of the exchange, on a link whose HELLO (hello_len bytes; nonce_s and key id
 * decoded from it) has just been received: HELLO_ACK with the proof, AUTH checked, then keyed
 * frames switched on (AEAD when `encrypt`, else a Poly1305 tag) with max_payload as the largest payload
 * accepted from then on - only once the source proved the key: a stranger's numbers size
 * nothing. Waits at most timeout_ms for AUTH. On
 * failure it has told the source why (sealed, if the source already switched) and returns
 * VFMIG_EAUTH (or the link's status) with a message in err. Needs no session or device, so a
 * server can run it before it picks the device.
 */
int vfmig__auth_target(vfmig_link *link, const vfmig_keyring *keys, const uint8_t *hello, size_t hello_len,
                      const uint8_t nonce_s[VFMIG_AUTH_NONCE], const uint8_t key_id[VFMIG_AUTH_KEY_ID],
                      bool encrypt, int timeout_ms, size_t max_payload, char *err, size_t errlen);

#endif
