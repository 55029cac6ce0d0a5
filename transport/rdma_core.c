/* transport/rdma_core.c - credits, buffer pool, received-chunk queue (see rdma_core.h). */
#include "transport/rdma_core.h"

#include <stdlib.h>
#include <string.h>

void vfmig__credits_init(vfmig_credits *c, uint32_t window, uint32_t ctrl_slots)
{
    memset(c, 0, sizeof(*c));
    c->window = window;
    c->ctrl_slots = ctrl_slots;
    c->data_avail = window;
    c->ctrl_avail = ctrl_slots;
}

int vfmig__credits_take_data(vfmig_credits *c)
{
    if (!c->data_avail)
        return 0;
    c->data_avail--;
    return 1;
}

int vfmig__credits_want_update(const vfmig_credits *c, int blocked)
{
    if (!c->ctrl_avail)
        return 0;
    uint32_t half = c->window / 2 ? c->window / 2 : 1;
    return c->data_to_return >= half || (blocked && (c->ctrl_to_return || c->data_to_return));
}

int vfmig__credits_take_ctrl(vfmig_credits *c)
{
    if (!c->ctrl_avail)
        return 0;
    c->ctrl_avail--;
    return 1;
}

uint32_t vfmig__credits_imm(vfmig_credits *c, int credit_only)
{
    /* Counts never exceed window/ctrl_slots (<= 0x7fff), so they fit their fields. */
    uint32_t imm = (c->data_to_return & VFMIG_CREDITS_MAX) |
                   (c->ctrl_to_return & VFMIG_CREDITS_MAX) << 15 |
                   (credit_only ? VFMIG_IMM_CREDIT_ONLY : 0);
    c->data_to_return = 0;
    c->ctrl_to_return = 0;
    return imm;
}

int vfmig__credits_on_recv(vfmig_credits *c, uint32_t imm)
{
    uint32_t d = imm & VFMIG_CREDITS_MAX, k = imm >> 15 & VFMIG_CREDITS_MAX;
    if (c->data_avail + d > c->window || c->ctrl_avail + k > c->ctrl_slots)
        return -1;
    c->data_avail += d;
    c->ctrl_avail += k;
    return (imm & VFMIG_IMM_CREDIT_ONLY) ? 1 : 0;
}

void vfmig__credits_reposted(vfmig_credits *c, int ctrl)
{
    if (ctrl)
        c->ctrl_to_return++;
    else
        c->data_to_return++;
}

int vfmig__bufpool_init(vfmig_bufpool *bp, void *base, size_t bufsize, uint32_t count)
{
    bp->base = base;
    bp->bufsize = bufsize;
    bp->count = count;
    bp->free = malloc(sizeof(uint32_t) * (count ? count : 1));
    if (!bp->free)
        return -1;
    /* Lowest index on top: buffers are reused warm, in address order. */
    for (uint32_t i = 0; i < count; i++)
        bp->free[i] = count - 1 - i;
    bp->nfree = count;
    return 0;
}

void vfmig__bufpool_destroy(vfmig_bufpool *bp)
{
    free(bp->free);
    bp->free = NULL;
    bp->nfree = bp->count = 0;
}

int64_t vfmig__bufpool_get(vfmig_bufpool *bp)
{
    return bp->nfree ? (int64_t)bp->free[--bp->nfree] : -1;
}

int vfmig__bufpool_put(vfmig_bufpool *bp, uint32_t idx)
{
    if (idx >= bp->count || bp->nfree >= bp->count)
        return -1;
    /* Double-put check is O(free); pools are small (tens of buffers) and puts are per chunk. */
    for (uint32_t i = 0; i < bp->nfree; i++)
        if (bp->free[i] == idx)
            return -1;
    bp->free[bp->nfree++] = idx;
    return 0;
}

int vfmig__rxq_init(vfmig_rxq *q, uint32_t cap)
{
    uint32_t n = 1;
    while (n < cap)
        n <<= 1;
    q->e = calloc(n, sizeof(*q->e));
    q->mask = n - 1;
    q->head = q->tail = 0;
    return q->e ? 0 : -1;
}

void vfmig__rxq_destroy(vfmig_rxq *q)
{
    free(q->e);
    q->e = NULL;
}

int vfmig__rxq_push(vfmig_rxq *q, uint32_t idx, uint32_t len)
{
    if (q->tail - q->head > q->mask)
        return -1;
    q->e[q->tail++ & q->mask] = (vfmig_rxq_entry){idx, len, 0};
    return 0;
}

size_t vfmig__rxq_read(vfmig_rxq *q, const vfmig_bufpool *bp, void *dst, size_t n,
                      void (*release)(void *arg, uint32_t idx), void *arg)
{
    uint8_t *d = dst;
    size_t got = 0;
    while (got < n && q->head != q->tail) {
        vfmig_rxq_entry *e = &q->e[q->head & q->mask];
        size_t c = e->len - e->pos;
        if (c > n - got)
            c = n - got;
        memcpy(d + got, vfmig_bufpool_addr(bp, e->idx) + e->pos, c);
        e->pos += (uint32_t)c;
        got += c;
        if (e->pos == e->len) {
            uint32_t idx = e->idx;
            q->head++;
            release(arg, idx);
        }
    }
    return got;
}
