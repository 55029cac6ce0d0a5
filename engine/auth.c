/* engine/auth.c - the pre-shared-key handshake's cryptography (OpenSSL libcrypto: HKDF through
 * EVP_KDF, HMAC through EVP_MAC, SHA-256) and the target's half of the exchange (see auth.h). */
#include "engine/auth.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "engine/proto.h"
#include "vfmig.h"

int vfmig__random(void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return VFMIG_EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return VFMIG_OK;
}

/* out = HKDF-SHA256(key, salt, info = label | th) */
static int hkdf(const uint8_t *key, size_t keylen, const uint8_t *salt, size_t saltlen, const char *label,
                const uint8_t *th, size_t thlen, uint8_t *out, size_t outlen)
{
    uint8_t info[64 + 32];
    size_t ll = strlen(label);
    if (ll + thlen > sizeof(info))
        return VFMIG_EINVAL;
    memcpy(info, label, ll);
    if (thlen)
        memcpy(info + ll, th, thlen);
    int rc = VFMIG_EAUTH;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    char digest[] = "SHA256";
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, keylen),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, ll + thlen),
        OSSL_PARAM_construct_end()};
    if (ctx && EVP_KDF_derive(ctx, out, outlen, p) == 1)
        rc = VFMIG_OK;
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    OPENSSL_cleanse(info, sizeof(info));
    return rc;
}

/* mac = HMAC-SHA256(key, label | a | b) */
static int hmac(const uint8_t *key, size_t keylen, const char *label, const uint8_t *a, size_t alen,
                const uint8_t *b, size_t blen, uint8_t mac[VFMIG_AUTH_MAC])
{
    int rc = VFMIG_EAUTH;
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0), OSSL_PARAM_construct_end()};
    size_t out = 0;
    if (ctx && EVP_MAC_init(ctx, key, keylen, params) &&
        EVP_MAC_update(ctx, (const uint8_t *)label, strlen(label) + 1) && EVP_MAC_update(ctx, a, alen) &&
        (!blen || EVP_MAC_update(ctx, b, blen)) && EVP_MAC_final(ctx, mac, &out, VFMIG_AUTH_MAC) &&
        out == VFMIG_AUTH_MAC)
        rc = VFMIG_OK;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m);
    return rc;
}

/* SHA-256 of up to four pieces. */
static int sha256(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen, const uint8_t *c, size_t clen,
                  const uint8_t *d, size_t dlen, uint8_t out[32])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned n = 0;
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) && EVP_DigestUpdate(ctx, a, alen) &&
             (!blen || EVP_DigestUpdate(ctx, b, blen)) && (!clen || EVP_DigestUpdate(ctx, c, clen)) &&
             (!dlen || EVP_DigestUpdate(ctx, d, dlen)) && EVP_DigestFinal_ex(ctx, out, &n) && n == 32;
    EVP_MD_CTX_free(ctx);
    return ok ? VFMIG_OK : VFMIG_EAUTH;
}

int vfmig__auth_key_id(const uint8_t *key, size_t keylen, uint8_t id[VFMIG_AUTH_KEY_ID])
{
    static const uint8_t salt[] = "vfmig";
    return hkdf(key, keylen, salt, sizeof(salt) - 1, "vfmig key id", NULL, 0, id, VFMIG_AUTH_KEY_ID);
}

int vfmig__keyring_find(const vfmig_keyring *k, const uint8_t id[VFMIG_AUTH_KEY_ID])
{
    int found = -1;
    for (unsigned i = 0; i < k->n && i < 2; i++) {
        uint8_t mine[VFMIG_AUTH_KEY_ID];
        if (!vfmig__auth_key_id(k->key[i], k->len[i], mine) && !CRYPTO_memcmp(mine, id, sizeof(mine)) && found < 0)
            found = (int)i;
    }
    return found;
}

int vfmig__auth_proofs(const uint8_t *key, size_t keylen, const uint8_t *hello, size_t hello_len,
                      const uint8_t nonce_s[VFMIG_AUTH_NONCE], const uint8_t nonce_t[VFMIG_AUTH_NONCE],
                      uint8_t mac_t[VFMIG_AUTH_MAC], const uint8_t *mac_t_in, uint8_t mac_s[VFMIG_AUTH_MAC])
{
    uint8_t salt[2 * VFMIG_AUTH_NONCE], t1[32], k[64];
    memcpy(salt, nonce_s, VFMIG_AUTH_NONCE);
    memcpy(salt + VFMIG_AUTH_NONCE, nonce_t, VFMIG_AUTH_NONCE);
    int rc = sha256(hello, hello_len, nonce_t, VFMIG_AUTH_NONCE, NULL, 0, NULL, 0, t1);
    if (!rc)
        rc = hkdf(key, keylen, salt, sizeof(salt), "vfmig auth", t1, sizeof(t1), k, sizeof(k));
    if (!rc)
        rc = hmac(k, 32, "vfmig target", t1, sizeof(t1), NULL, 0, mac_t);
    /* The source's proof covers the target's proof as the source received it. */
    if (!rc)
        rc = hmac(k + 32, 32, "vfmig source", t1, sizeof(t1), mac_t_in ? mac_t_in : mac_t, VFMIG_AUTH_MAC, mac_s);
    OPENSSL_cleanse(k, sizeof(k));
    return rc;
}

int vfmig__auth_keys(const uint8_t *key, size_t keylen, const uint8_t *hello, size_t hello_len,
                    const uint8_t nonce_s[VFMIG_AUTH_NONCE], const uint8_t nonce_t[VFMIG_AUTH_NONCE],
                    const uint8_t mac_t[VFMIG_AUTH_MAC], uint8_t k_s2t[VFMIG_AEAD_KEY],
                    uint8_t k_t2s[VFMIG_AEAD_KEY])
{
    uint8_t salt[2 * VFMIG_AUTH_NONCE], t2[32], k[2 * VFMIG_AEAD_KEY];
    memcpy(salt, nonce_s, VFMIG_AUTH_NONCE);
    memcpy(salt + VFMIG_AUTH_NONCE, nonce_t, VFMIG_AUTH_NONCE);
    int rc = sha256(hello, hello_len, nonce_t, VFMIG_AUTH_NONCE, mac_t, VFMIG_AUTH_MAC, NULL, 0, t2);
    if (!rc)
        rc = hkdf(key, keylen, salt, sizeof(salt), "vfmig frames", t2, sizeof(t2), k, sizeof(k));
    if (!rc) {
        memcpy(k_s2t, k, VFMIG_AEAD_KEY);
        memcpy(k_t2s, k + VFMIG_AEAD_KEY, VFMIG_AEAD_KEY);
    }
    OPENSSL_cleanse(k, sizeof(k));
    return rc;
}

int vfmig__auth_equal(const uint8_t *a, const uint8_t *b)
{
    return CRYPTO_memcmp(a, b, VFMIG_AUTH_MAC) == 0;
}

static int refuse(vfmig_link *link, int type, int status, char *err, size_t errlen, const char *msg)
{
    vfmig__send_status(link, 0, type, status, msg);
    snprintf(err, errlen, "%s", msg);
    return status;
}

int vfmig__auth_target(vfmig_link *link, const vfmig_keyring *keys, const uint8_t *hello, size_t hello_len,
                      const uint8_t nonce_s[VFMIG_AUTH_NONCE], const uint8_t key_id[VFMIG_AUTH_KEY_ID],
                      bool encrypt, int timeout_ms, size_t max_payload, char *err, size_t errlen)
{
    int ki = vfmig__keyring_find(keys, key_id);
    if (ki < 0)
        return refuse(link, VFMIG_F_HELLO_ACK, VFMIG_EAUTH, err, errlen,
                      "source failed authentication: its key is not one this target holds");
    const uint8_t *key = keys->key[ki];
    size_t keylen = keys->len[ki];
    uint8_t reply[VFMIG_AUTH_NONCE + VFMIG_AUTH_MAC], want[VFMIG_AUTH_MAC], got[VFMIG_AUTH_MAC];
    int rc = vfmig__random(reply, VFMIG_AUTH_NONCE);
    if (!rc)
        rc = vfmig__auth_proofs(key, keylen, hello, hello_len, nonce_s, reply, reply + VFMIG_AUTH_NONCE, NULL, want);
    if (rc)
        return refuse(link, VFMIG_F_HELLO_ACK, VFMIG_EAUTH, err, errlen,
                      "authentication: no randomness or the crypto library failed");
    vfmig_frame f = {.type = VFMIG_F_HELLO_ACK, .len = sizeof(reply), .aux = VFMIG_OK};
    if ((rc = vfmig__link_send(link, 0, &f, reply)) || (rc = vfmig__link_flush(link, 0))) {
        snprintf(err, errlen, "sending the handshake reply: %s", vfmig__link_stream_error(link, 0));
        return rc;
    }
    rc = vfmig__link_recv(link, 0, &f, got, sizeof(got), timeout_ms);
    if (!rc && f.type == VFMIG_F_ABORT) {
        snprintf(err, errlen, "source aborted the handshake (it found this target's proof wrong)");
        return VFMIG_EABORTED;
    }
    bool proved = !rc && f.type == VFMIG_F_AUTH && f.len == VFMIG_AUTH_MAC && vfmig__auth_equal(want, got);
    /* The source keys everything after its AUTH frame: switch whatever became of that frame, or it
     * could not read why it is refused. Keyed-frame buffers follow the max payload: the source's
     * numbers only once it proved the key, else just enough for that refusal. */
    vfmig__link_set_max_payload(link, proved ? max_payload : 4096);
    uint8_t k_s2t[VFMIG_AEAD_KEY], k_t2s[VFMIG_AEAD_KEY];
    int kr = vfmig__auth_keys(key, keylen, hello, hello_len, nonce_s, reply, reply + VFMIG_AUTH_NONCE, k_s2t, k_t2s);
    if (!kr)
        kr = encrypt ? vfmig__link_enable_aead(link, k_t2s, k_s2t) : vfmig__link_enable_mac(link, k_t2s, k_s2t);
    OPENSSL_cleanse(k_s2t, sizeof(k_s2t));
    OPENSSL_cleanse(k_t2s, sizeof(k_t2s));
    if (rc) {
        snprintf(err, errlen, "waiting for authentication: %s (%s)", vfmig_strerror(rc),
                 rc == VFMIG_ETIMEDOUT ? "no answer" : vfmig__link_stream_error(link, 0));
        return rc;
    }
    if (kr)
        return refuse(link, VFMIG_F_ABORT, kr, err, errlen, "cannot start keyed frames");
    if (f.type != VFMIG_F_AUTH || f.len != VFMIG_AUTH_MAC)
        return refuse(link, VFMIG_F_ABORT, VFMIG_EAUTH, err, errlen, "source did not authenticate");
    if (!proved)
        return refuse(link, VFMIG_F_ABORT, VFMIG_EAUTH, err, errlen,
                      "source failed authentication: it does not hold this key");
    return VFMIG_OK;
}
