/*
 * transport/rdma_core.h - the verbs-independent half of the RDMA link, unit-tested without a NIC:
 * send credits, the registered buffer pool, and the queue of received chunks.
 *
 * Flow control (credits). Each side keeps `window + ctrl_slots` receive buffers posted on each
 * QP. A data message (a chunk of the frame byte stream) may be sent only with a data credit; the
 * peer returns credits as it reposts buffers, in the 32-bit immediate of every message it sends:
 *   bit 31      this message is credit-only (no payload, uses a ctrl slot)
 *   bits 15..29 ctrl credits returned
 *   bits 0..14  data credits returned
 * Credit-only messages are sent when half a window of credits waits to go back and no data is
 * flowing the other way, or when a sender is blocked and holds ctrl credits to return (that
 * breaks the one circular wait: both sides out of ctrl credits). Receiving never overruns the
 * receive queue, so RNR retries never happen.
 */
#ifndef VFMIG_TRANSPORT_RDMA_CORE_H
#define VFMIG_TRANSPORT_RDMA_CORE_H

#include <stddef.h>
#include <stdint.h>

#define VFMIG_IMM_CREDIT_ONLY (1u << 31)
#define VFMIG_CREDITS_MAX 0x7fffu

typedef struct vfmig_credits {
    uint32_t window, ctrl_slots;
    uint32_t data_avail, ctrl_avail;        /* messages we may send */
    uint32_t data_to_return, ctrl_to_return; /* buffers we reposted, not yet reported */
} vfmig_credits;

/** window, ctrl_slots: 1 .. VFMIG_CREDITS_MAX. */
void vfmig__credits_init(vfmig_credits *c, uint32_t window, uint32_t ctrl_slots);
/** Takes a data credit: 1, or 0 when none is left. */
int vfmig__credits_take_data(vfmig_credits *c);
/** Whether a credit-only message should go now (`blocked`: our sender waits for credits). */
int vfmig__credits_want_update(const vfmig_credits *c, int blocked);
/** Takes a ctrl credit for a credit-only message: 1, or 0 when none is left. */
int vfmig__credits_take_ctrl(vfmig_credits *c);
/** The immediate for an outgoing message; hands over (and zeroes) the credits to return. */
uint32_t vfmig__credits_imm(vfmig_credits *c, int credit_only);
/** Applies a received immediate. Returns 1 for a credit-only message, 0 for data, -1 when the
 *  peer returns more credits than we ever gave (protocol violation). */
int vfmig__credits_on_recv(vfmig_credits *c, uint32_t imm);
/** A receive buffer was posted again (ctrl: it held a credit-only message). */
void vfmig__credits_reposted(vfmig_credits *c, int ctrl);

/** Fixed-size buffers carved from one region (registered once); a LIFO of free indices. */
typedef struct vfmig_bufpool {
    uint8_t *base;
    size_t bufsize;
    uint32_t count, nfree;
    uint32_t *free;
} vfmig_bufpool;

int vfmig__bufpool_init(vfmig_bufpool *bp, void *base, size_t bufsize, uint32_t count);
void vfmig__bufpool_destroy(vfmig_bufpool *bp);
/** A free buffer's index, or -1. */
int64_t vfmig__bufpool_get(vfmig_bufpool *bp);
/** Returns a buffer; -1 for an index out of range or already free (double put). */
int vfmig__bufpool_put(vfmig_bufpool *bp, uint32_t idx);
static inline uint8_t *vfmig_bufpool_addr(const vfmig_bufpool *bp, uint32_t idx)
{
    return bp->base + (size_t)idx * bp->bufsize;
}

/** Received chunks in arrival order (RC delivers in order); free-running head/tail. */
typedef struct vfmig_rxq_entry {
    uint32_t idx, len, pos;
} vfmig_rxq_entry;

typedef struct vfmig_rxq {
    vfmig_rxq_entry *e;
    uint32_t mask, head, tail;
} vfmig_rxq;

/** cap: rounded up to a power of two. */
int vfmig__rxq_init(vfmig_rxq *q, uint32_t cap);
void vfmig__rxq_destroy(vfmig_rxq *q);
/** -1 when full. */
int vfmig__rxq_push(vfmig_rxq *q, uint32_t idx, uint32_t len);
static inline int vfmig_rxq_empty(const vfmig_rxq *q)
{
    return q->head == q->tail;
}
/**
 * Copies up to n bytes of the chunk stream to dst (buffer bytes at vfmig_bufpool_addr(bp, idx)).
 * Each chunk read to its end is handed to release(arg, idx) to be reposted. Returns bytes copied.
 */
size_t vfmig__rxq_read(vfmig_rxq *q, const vfmig_bufpool *bp, void *dst, size_t n,
                      void (*release)(void *arg, uint32_t idx), void *arg);

#endif
