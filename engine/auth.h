/*
 * engine/auth.h - mutual authentication with a pre-shared key, in the handshake.
 *
 *   source -> HELLO (flag AUTH, nonce_s)
 *   target -> HELLO_ACK ok: nonce_t, mac_t = HMAC-SHA256(key, "vfmig target" | HELLO | nonce_t)
 *   source -> AUTH: mac_s = HMAC-SHA256(key, "vfmig source" | HELLO | nonce_t | mac_t)
 *
 * The source sends nothing of the VF (not even its immutable state) before it has checked mac_t,
 * and the target accepts nothing before it has checked mac_s. Both nonces are fresh per session,
 * so a recorded exchange replayed to either side fails: the side that did not choose a nonce
 * cannot answer for the other's new one.
 */
#ifndef VFMIG_ENGINE_AUTH_H
#define VFMIG_ENGINE_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define VFMIG_AUTH_NONCE 32
#define VFMIG_AUTH_MAC 32
#define VFMIG_PSK_MAX 256
#define VFMIG_HELLO_FLAG_AUTH 1u
#define VFMIG_HELLO_FLAG_ENCRYPT 2u /* with AUTH: every frame after the handshake is AES-256-GCM */
#define VFMIG_AEAD_KEY 32

/** Fills buf with `len` random bytes from the kernel. VFMIG_OK or VFMIG_EIO. */
int vfmig_random(void *buf, size_t len);
/** mac = HMAC-SHA256(key, label | a | b | c) (b, c may be NULL with length 0). */
int vfmig_auth_mac(const uint8_t *key, size_t keylen, const char *label, const uint8_t *a, size_t alen,
                   const uint8_t *b, size_t blen, const uint8_t *c, size_t clen, uint8_t mac[VFMIG_AUTH_MAC]);
/**
 * Direction keys for frame encryption, from the key and the whole handshake (both nonces and
 * the target's proof), so every session has its own keys:
 *   k_s2t = HMAC(key, "vfmig key s2t" | HELLO | nonce_t | mac_t), k_t2s likewise.
 */
int vfmig_auth_keys(const uint8_t *key, size_t keylen, const uint8_t *hello, size_t hello_len,
                    const uint8_t *nonce_t, const uint8_t *mac_t, uint8_t k_s2t[VFMIG_AEAD_KEY],
                    uint8_t k_t2s[VFMIG_AEAD_KEY]);
/** Constant-time comparison of two MACs: 1 if equal. */
int vfmig_auth_equal(const uint8_t *a, const uint8_t *b);

#endif
