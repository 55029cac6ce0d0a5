/* cli/key.c - a key's randomness judged from the key, and passphrases stretched with scrypt
 * (OpenSSL's EVP_KDF "SCRYPT"); see key.h. */
#include "cli/key.h"

#include <math.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <string.h>

bool vfmig__key_is_text(const uint8_t *key, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((key[i] < 0x20 || key[i] > 0x7e) && key[i] != '\t')
            return false;
    return true;
}

/* n times the observed (plug-in) entropy of the n symbols s[0..n), in bits. */
static double entropy_bits(const uint8_t *s, size_t n)
{
    unsigned count[256] = {0};
    for (size_t i = 0; i < n; i++)
        count[s[i]]++;
    double h = 0;
    for (unsigned c = 0; c < 256; c++)
        if (count[c])
            h -= (double)count[c] * log2((double)count[c] / (double)n);
    return h;
}

static bool is_hex(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_base64(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '+' || c == '/';
}

/* Padded base64 as encoders write it: a multiple of 4 characters, one or two '=' at the end and
 * nowhere else. The number of data characters, or 0 when it is not that. */
static size_t base64_data(const uint8_t *key, size_t n)
{
    if (n < 4 || n % 4 || key[n - 1] != '=')
        return 0;
    size_t m = key[n - 2] == '=' ? n - 2 : n - 1;
    for (size_t i = 0; i < m; i++)
        if (!is_base64(key[i]))
            return 0;
    return m;
}

double vfmig__key_bits(const uint8_t *key, size_t n, vfmig__key_form *form)
{
    uint8_t sym[1024] = {0}, diff[1024] = {0};
    double per_symbol = 8;
    size_t m = n;
    *form = VFMIG__KEY_BINARY;
    if (vfmig__key_is_text(key, n)) {
        bool hex = true;
        for (size_t i = 0; i < n && hex; i++)
            hex = is_hex(key[i]);
        if (hex) {
            *form = VFMIG__KEY_HEX;
            per_symbol = 4;
        } else if ((m = base64_data(key, n))) {
            *form = VFMIG__KEY_BASE64;
            per_symbol = 6;
        } else {
            *form = VFMIG__KEY_TEXT;
            return 0;
        }
    }
    if (m > sizeof(sym))
        m = sizeof(sym);
    for (size_t i = 0; i < m; i++) /* hex digits of either case are the same digit */
        sym[i] = *form == VFMIG__KEY_HEX && key[i] >= 'A' && key[i] <= 'F' ? (uint8_t)(key[i] + 32) : key[i];
    for (size_t i = 0; i + 1 < m; i++)
        diff[i] = (uint8_t)(sym[i + 1] - sym[i]);
    double bits = per_symbol * (double)m, e = entropy_bits(sym, m);
    if (e < bits)
        bits = e;
    if (m > 1) {
        /* n - 1 differences stand for n symbols */
        double d = entropy_bits(diff, m - 1) * (double)m / (double)(m - 1);
        if (d < bits)
            bits = d;
    }
    return bits;
}

int vfmig__key_stretch(const uint8_t *pass, size_t n, uint8_t out[VFMIG__STRETCHED])
{
    static const char salt[] = VFMIG__SCRYPT_SALT;
    uint64_t cost = (uint64_t)1 << VFMIG__SCRYPT_LOG2_N, maxmem = VFMIG__SCRYPT_MEM + ((uint64_t)16 << 20);
    uint32_t r = VFMIG__SCRYPT_R, p = VFMIG__SCRYPT_P;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, (void *)pass, n),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, sizeof(salt) - 1),
        OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &cost),
        OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r),
        OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p),
        OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem),
        OSSL_PARAM_construct_end()};
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
    EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    int rc = ctx && EVP_KDF_derive(ctx, out, VFMIG__STRETCHED, params) == 1 ? 0 : -1;
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    if (rc)
        OPENSSL_cleanse(out, VFMIG__STRETCHED);
    return rc;
}
