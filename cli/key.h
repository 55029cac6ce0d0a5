/*
 * cli/key.h - the command's pre-shared keys: how much randomness a key file holds, judged from
 * the key itself, and the stretching of a passphrase (scrypt) into a key. The command reads the
 * files (cli/main.c: read_key); the library takes only keys (vfmig_session_set_psk).
 *
 * Why: every HELLO names the key by an id derived from it, and a captured handshake lets anyone
 * test guesses offline at the speed of HKDF. Only a key too random to guess defeats that, so a
 * key file must hold 128 bits of randomness; a passphrase, which cannot, is taken only when the
 * user says it is one, and then stretched with a memory-hard KDF so that each guess costs
 * VFMIG__SCRYPT_MEM of memory and a fraction of a second.
 */
#ifndef VFMIG_CLI_KEY_H
#define VFMIG_CLI_KEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VFMIG__KEY_MIN_BITS 128 /* randomness a key file must hold */
#define VFMIG__PASSPHRASE_MIN 8 /* characters of a passphrase, at least */
#define VFMIG__PASSPHRASE_MAX 1024
#define VFMIG__STRETCHED 32     /* bytes of a stretched passphrase (the key the library gets) */
/* scrypt's cost: N = 2^17, r = 8, p = 1 (128 MiB and ~0.3 s a derivation here), and the salt,
 * fixed (both ends must derive the same key) and naming what it is for. */
#define VFMIG__SCRYPT_LOG2_N 17
#define VFMIG__SCRYPT_R 8
#define VFMIG__SCRYPT_P 1
#define VFMIG__SCRYPT_MEM ((uint64_t)128 * VFMIG__SCRYPT_R << VFMIG__SCRYPT_LOG2_N)
#define VFMIG__SCRYPT_SALT "vfmig --psk-passphrase v1"

/** What a key file looks like: bytes from a generator, or their text forms, or other text. */
typedef enum vfmig__key_form {
    VFMIG__KEY_BINARY = 0, /* not all printable: bytes as a generator wrote them */
    VFMIG__KEY_HEX = 1,    /* hex digits (openssl rand -hex 32) */
    VFMIG__KEY_BASE64 = 2, /* padded base64 (openssl rand -base64 32, wg genkey) */
    VFMIG__KEY_TEXT = 3    /* any other printable text: what people type, a passphrase */
} vfmig__key_form;

/** Printable text (tabs included), as opposed to random bytes. */
bool vfmig__key_is_text(const uint8_t *key, size_t n);

/**
 * The bits of randomness a key holds by its look, and its form: the length in symbols of its form
 * (bytes, hex digits, base64 characters) times the least of the form's bits per symbol, the
 * observed entropy of its symbols and that of the differences of neighbouring symbols (which
 * catches runs like "abcd..." and repeats). An estimate that errs low: it refuses what looks
 * made by a person, and cannot prove a key random. 0 for VFMIG__KEY_TEXT.
 */
double vfmig__key_bits(const uint8_t *key, size_t n, vfmig__key_form *form);

/** The key of a passphrase: scrypt (parameters above) into VFMIG__STRETCHED bytes. 0, or -1 when
 *  the crypto library cannot (no memory). */
int vfmig__key_stretch(const uint8_t *pass, size_t n, uint8_t out[VFMIG__STRETCHED]);

#endif
