/* engine/auth.c - HMAC-SHA256 (OpenSSL libcrypto) and nonces for the handshake (see auth.h). */
#include "engine/auth.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <string.h>
#include <sys/random.h>

#include "vfmig.h"

int vfmig_random(void *buf, size_t len)
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

int vfmig_auth_mac(const uint8_t *key, size_t keylen, const char *label, const uint8_t *a, size_t alen,
                   const uint8_t *b, size_t blen, const uint8_t *c, size_t clen, uint8_t mac[VFMIG_AUTH_MAC])
{
    int rc = VFMIG_EAUTH;
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0), OSSL_PARAM_construct_end()};
    size_t out = 0;
    if (ctx && EVP_MAC_init(ctx, key, keylen, params) &&
        EVP_MAC_update(ctx, (const uint8_t *)label, strlen(label) + 1) && EVP_MAC_update(ctx, a, alen) &&
        (!blen || EVP_MAC_update(ctx, b, blen)) && (!clen || EVP_MAC_update(ctx, c, clen)) &&
        EVP_MAC_final(ctx, mac, &out, VFMIG_AUTH_MAC) && out == VFMIG_AUTH_MAC)
        rc = VFMIG_OK;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m);
    return rc;
}

int vfmig_auth_keys(const uint8_t *key, size_t keylen, const uint8_t *hello, size_t hello_len,
                    const uint8_t *nonce_t, const uint8_t *mac_t, uint8_t k_s2t[VFMIG_AEAD_KEY],
                    uint8_t k_t2s[VFMIG_AEAD_KEY])
{
    int rc = vfmig_auth_mac(key, keylen, "vfmig key s2t", hello, hello_len, nonce_t, VFMIG_AUTH_NONCE, mac_t,
                            VFMIG_AUTH_MAC, k_s2t);
    if (!rc)
        rc = vfmig_auth_mac(key, keylen, "vfmig key t2s", hello, hello_len, nonce_t, VFMIG_AUTH_NONCE, mac_t,
                            VFMIG_AUTH_MAC, k_t2s);
    return rc;
}

int vfmig_auth_equal(const uint8_t *a, const uint8_t *b)
{
    return CRYPTO_memcmp(a, b, VFMIG_AUTH_MAC) == 0;
}
