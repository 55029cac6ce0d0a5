/* engine/proto.c - protocol messages (see proto.h). Every field from the peer is range-checked
 * here before the engine uses it. */
#include "engine/proto.h"

#include "engine/auth.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

size_t vfmig__hello_encode(const vfmig_hello *h, uint8_t *buf)
{
    vfmig_put_u32(buf + 0, h->magic);
    vfmig_put_u32(buf + 4, h->version);
    vfmig_put_u32(buf + 8, h->flags);
    vfmig_put_u32(buf + 12, h->nstreams);
    vfmig_put_u64(buf + 16, h->page_size);
    vfmig_put_u64(buf + 24, h->npages);
    vfmig_put_u32(buf + 32, h->nranges);
    vfmig_put_u32(buf + 36, h->batch_bytes);
    vfmig_put_u64(buf + 40, h->immutable_bytes);
    size_t off = VFMIG_HELLO_FIXED_BYTES;
    for (uint32_t i = 0; i < h->nranges && i < VFMIG_MAX_RANGES; i++, off += 8)
        vfmig_put_u64(buf + off, h->range_size[i]);
    if (h->flags & VFMIG_HELLO_FLAG_AUTH) {
        memcpy(buf + off, h->nonce, sizeof(h->nonce));
        off += sizeof(h->nonce);
        memcpy(buf + off, h->key_id, sizeof(h->key_id));
        off += sizeof(h->key_id);
    }
    return off;
}

int vfmig__hello_decode(const uint8_t *buf, size_t len, vfmig_hello *h, char *err, size_t errlen)
{
    memset(h, 0, sizeof(*h));
    if (len < 8 || vfmig_get_u32(buf) != VFMIG_WIRE_MAGIC) {
        snprintf(err, errlen, "handshake: not a vfmig peer (bad magic)");
        return VFMIG_EPROTO;
    }
    h->magic = vfmig_get_u32(buf);
    h->version = vfmig_get_u32(buf + 4);
    if (h->version != VFMIG_WIRE_VERSION) {
        snprintf(err, errlen, "handshake: peer speaks protocol version %" PRIu32 ", this build speaks %u",
                 h->version, VFMIG_WIRE_VERSION);
        return VFMIG_EVERSION;
    }
    if (len < VFMIG_HELLO_FIXED_BYTES) {
        snprintf(err, errlen, "handshake: HELLO truncated (%zu bytes)", len);
        return VFMIG_EPROTO;
    }
    h->flags = vfmig_get_u32(buf + 8);
    h->nstreams = vfmig_get_u32(buf + 12);
    h->page_size = vfmig_get_u64(buf + 16);
    h->npages = vfmig_get_u64(buf + 24);
    h->nranges = vfmig_get_u32(buf + 32);
    h->batch_bytes = vfmig_get_u32(buf + 36);
    h->immutable_bytes = vfmig_get_u64(buf + 40);
    if ((h->flags & ~(VFMIG_HELLO_FLAG_AUTH | VFMIG_HELLO_FLAG_ENCRYPT)) ||
        ((h->flags & VFMIG_HELLO_FLAG_ENCRYPT) && !(h->flags & VFMIG_HELLO_FLAG_AUTH))) {
        snprintf(err, errlen, "handshake: bad option flags 0x%" PRIx32, h->flags);
        return VFMIG_EPROTO;
    }
    size_t nonce_len = h->flags & VFMIG_HELLO_FLAG_AUTH ? sizeof(h->nonce) + sizeof(h->key_id) : 0;
    if (h->nranges == 0 || h->nranges > VFMIG_MAX_RANGES ||
        len != VFMIG_HELLO_FIXED_BYTES + 8u * h->nranges + nonce_len) {
        snprintf(err, errlen, "handshake: bad range count %" PRIu32 " for a %zu-byte HELLO", h->nranges, len);
        return VFMIG_EPROTO;
    }
    if (h->page_size < VFMIG_MIN_PAGE_SIZE || h->page_size > VFMIG_MAX_PAGE_SIZE ||
        (h->page_size & (h->page_size - 1))) {
        snprintf(err, errlen, "handshake: bad page size %" PRIu64, h->page_size);
        return VFMIG_EPROTO;
    }
    uint64_t pages = 0;
    for (uint32_t i = 0; i < h->nranges; i++) {
        h->range_size[i] = vfmig_get_u64(buf + VFMIG_HELLO_FIXED_BYTES + 8u * i);
        if (h->range_size[i] == 0 || h->range_size[i] % h->page_size ||
            h->range_size[i] / h->page_size > (UINT64_C(1) << 40)) {
            snprintf(err, errlen, "handshake: bad size %" PRIu64 " of range %" PRIu32, h->range_size[i], i);
            return VFMIG_EPROTO;
        }
        pages += h->range_size[i] / h->page_size;
    }
    if (nonce_len) {
        memcpy(h->nonce, buf + VFMIG_HELLO_FIXED_BYTES + 8u * h->nranges, sizeof(h->nonce));
        memcpy(h->key_id, buf + VFMIG_HELLO_FIXED_BYTES + 8u * h->nranges + sizeof(h->nonce), sizeof(h->key_id));
    }
    if (pages != h->npages) {
        snprintf(err, errlen, "handshake: page count %" PRIu64 " does not match ranges (%" PRIu64 ")",
                 h->npages, pages);
        return VFMIG_EPROTO;
    }
    if (h->batch_bytes < h->page_size || h->batch_bytes > (64u << 20) || h->batch_bytes % h->page_size) {
        snprintf(err, errlen, "handshake: bad batch size %" PRIu32, h->batch_bytes);
        return VFMIG_EPROTO;
    }
    if (h->nstreams == 0 || h->nstreams > VFMIG_MAX_STREAMS) {
        snprintf(err, errlen, "handshake: bad stream count %" PRIu32, h->nstreams);
        return VFMIG_EPROTO;
    }
    if (h->immutable_bytes > VFMIG_MAX_STATE_BYTES) {
        snprintf(err, errlen, "handshake: immutable state of %" PRIu64 " bytes is over the limit", h->immutable_bytes);
        return VFMIG_EPROTO;
    }
    return VFMIG_OK;
}

int vfmig__hello_decode_first(const uint8_t *buf, size_t len, vfmig_hello *h, char *err, size_t errlen)
{
    if (len < VFMIG_HELLO_FIXED_BYTES || !(vfmig_get_u32(buf + 8) & VFMIG_HELLO_FLAG_AUTH))
        return vfmig__hello_decode(buf, len, h, err, errlen);
    if (vfmig_get_u32(buf + 32) != 0) {
        int rc = vfmig__hello_decode(buf, len, h, err, errlen); /* version and magic errors first */
        if (rc)
            return rc;
        snprintf(err, errlen, "handshake: an authenticating source announced its layout before the key was proved");
        return VFMIG_EPROTO;
    }
    /* The announcement form: the full decode's checks, but no layout. */
    memset(h, 0, sizeof(*h));
    if (vfmig_get_u32(buf) != VFMIG_WIRE_MAGIC) {
        snprintf(err, errlen, "handshake: not a vfmig peer (bad magic)");
        return VFMIG_EPROTO;
    }
    h->magic = VFMIG_WIRE_MAGIC;
    h->version = vfmig_get_u32(buf + 4);
    if (h->version != VFMIG_WIRE_VERSION) {
        snprintf(err, errlen, "handshake: peer speaks protocol version %" PRIu32 ", this build speaks %u",
                 h->version, VFMIG_WIRE_VERSION);
        return VFMIG_EVERSION;
    }
    h->flags = vfmig_get_u32(buf + 8);
    h->nstreams = vfmig_get_u32(buf + 12);
    h->batch_bytes = vfmig_get_u32(buf + 36);
    if (h->flags & ~(VFMIG_HELLO_FLAG_AUTH | VFMIG_HELLO_FLAG_ENCRYPT)) {
        snprintf(err, errlen, "handshake: bad option flags 0x%" PRIx32, h->flags);
        return VFMIG_EPROTO;
    }
    if (len != VFMIG_HELLO_FIXED_BYTES + sizeof(h->nonce) + sizeof(h->key_id) || vfmig_get_u64(buf + 16) ||
        vfmig_get_u64(buf + 24) || vfmig_get_u64(buf + 40)) {
        snprintf(err, errlen, "handshake: malformed %zu-byte HELLO", len);
        return VFMIG_EPROTO;
    }
    if (h->batch_bytes < VFMIG_MIN_PAGE_SIZE || h->batch_bytes > (64u << 20)) {
        snprintf(err, errlen, "handshake: bad batch size %" PRIu32, h->batch_bytes);
        return VFMIG_EPROTO;
    }
    if (h->nstreams == 0 || h->nstreams > VFMIG_MAX_STREAMS) {
        snprintf(err, errlen, "handshake: bad stream count %" PRIu32, h->nstreams);
        return VFMIG_EPROTO;
    }
    memcpy(h->nonce, buf + VFMIG_HELLO_FIXED_BYTES, sizeof(h->nonce));
    memcpy(h->key_id, buf + VFMIG_HELLO_FIXED_BYTES + sizeof(h->nonce), sizeof(h->key_id));
    return VFMIG_OK;
}

int vfmig__hello_decode_layout(const uint8_t *buf, size_t len, const vfmig_hello *first, vfmig_hello *h,
                              char *err, size_t errlen)
{
    int rc = vfmig__hello_decode(buf, len, h, err, errlen);
    if (rc)
        return rc;
    if (h->flags != first->flags || h->nstreams != first->nstreams || h->batch_bytes != first->batch_bytes ||
        memcmp(h->nonce, first->nonce, sizeof(h->nonce)) || memcmp(h->key_id, first->key_id, sizeof(h->key_id))) {
        snprintf(err, errlen, "handshake: LAYOUT does not repeat the HELLO's options");
        return VFMIG_EPROTO;
    }
    return VFMIG_OK;
}

void vfmig__format_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    unsigned u = 0;
    double v = (double)bytes;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (v == (double)(uint64_t)v)
        snprintf(buf, len, "%" PRIu64 " %s", (uint64_t)v, unit[u]);
    else
        snprintf(buf, len, "%.1f %s", v, unit[u]);
}

static void describe_layout(uint64_t page_size, uint32_t nranges, const uint64_t *sizes, char *buf,
                            size_t len)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < nranges; i++)
        total += sizes[i];
    char t[32], p[32];
    vfmig__format_size(total, t, sizeof(t));
    vfmig__format_size(page_size, p, sizeof(p));
    snprintf(buf, len, "%s in %" PRIu32 " range%s with %s pages", t, nranges, nranges == 1 ? "" : "s", p);
}

int vfmig__hello_match_layout(const vfmig_hello *h, uint64_t page_size, uint32_t nranges,
                             const vfmig_range *ranges, char *err, size_t errlen)
{
    bool same = h->page_size == page_size && h->nranges == nranges;
    uint64_t sizes[VFMIG_MAX_RANGES];
    for (uint32_t i = 0; i < nranges; i++) {
        sizes[i] = ranges[i].size;
        if (same && h->range_size[i] != sizes[i])
            same = false;
    }
    if (same)
        return VFMIG_OK;
    char a[96], b[96];
    describe_layout(h->page_size, h->nranges, h->range_size, a, sizeof(a));
    describe_layout(page_size, nranges, sizes, b, sizeof(b));
    snprintf(err, errlen, "VF layout mismatch: source VF is %s, target VF is %s", a, b);
    return VFMIG_ELAYOUT;
}

int vfmig__send_status(vfmig_link *l, unsigned stream, int type, int status, const char *msg)
{
    size_t n = msg ? strnlen(msg, 1024) : 0;
    vfmig_frame f = {.type = (uint8_t)type, .len = (uint32_t)n, .aux = (uint64_t)(int64_t)status};
    /* An ABORT also goes out after a cancel interrupted the link, so the peer hears why. */
    if (type == VFMIG_F_ABORT)
        return vfmig__link_send_last(l, stream, &f, msg);
    int rc = vfmig__link_send(l, stream, &f, msg);
    return rc ? rc : vfmig__link_flush(l, stream);
}

int vfmig__frame_status(const vfmig_frame *f, const uint8_t *payload, char *msg, size_t msglen)
{
    size_t n = f->len < msglen ? f->len : msglen - 1;
    memcpy(msg, payload, n);
    msg[n] = 0;
    for (size_t i = 0; i < n; i++) /* a message from the peer goes to logs and terminals */
        if ((unsigned char)msg[i] < 0x20 || (unsigned char)msg[i] == 0x7f)
            msg[i] = '?';
    int64_t st = (int64_t)f->aux;
    if (st > 0 || st < -1000)
        return VFMIG_EPROTO;
    return (int)st;
}

int vfmig__send_blob(vfmig_link *l, unsigned stream, int type, const void *blob, uint64_t size,
                    size_t chunk)
{
    uint64_t off = 0;
    do {
        uint64_t n = size - off < chunk ? size - off : chunk;
        vfmig_frame f = {.type = (uint8_t)type, .len = (uint32_t)n, .page = off, .aux = size};
        int rc = vfmig__link_send(l, stream, &f, (const uint8_t *)blob + off);
        if (rc)
            return rc;
        off += n;
    } while (off < size);
    return vfmig__link_flush(l, stream);
}
