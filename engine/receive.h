/*
 * engine/receive.h - target side of the page pipeline, the mirror of engine/pipeline.h:
 * one receiver thread per data stream, an optional decode pool, the appliers that put pages into
 * VRAM and account for them in the image (engine/image.h), and the round barrier.
 *
 * Rounds are barriers: a receiver that reaches ROUND_END(r) waits until every stream has, so no
 * frame of round r+1 is applied before all of round r (a delta frame always finds its base, and
 * an older page can never land on a newer one). Each page also carries the round it was applied
 * in, and a frame from an older round than the page holds is skipped for that page. When every
 * stream has finished a round the receivers acknowledge it on the control stream (ROUND_ACK).
 *
 * Where the device maps its VRAM, raw payloads are received straight into VRAM, delta payloads
 * patch VRAM in place and lz4/zstd decode into it; the page hash is then taken from VRAM (so
 * "applied" and "readback" are the same pass). Otherwise pages go through read/write.
 *
 * Threading: start/commit/wait/stop from the thread running the target session; the rest runs
 * on the receive threads. The control stream is shared with that thread through cfg.ctl_tx.
 */
#ifndef VFMIG_ENGINE_RECEIVE_H
#define VFMIG_ENGINE_RECEIVE_H

#include <pthread.h>
#include <stdint.h>

#include "engine/image.h"
#include "engine/session.h"

typedef struct vfmig_receive vfmig_receive;

typedef struct vfmig_receive_cfg {
    vfmig_session *s;
    vfmig_link *link;
    unsigned nstreams;
    uint64_t batch_bytes;     /* largest page run of a frame, from the handshake */
    int verify;               /* vfmig_verify */
    vfmig_pinner *pinner;
    pthread_mutex_t *ctl_tx;  /* held while sending on the control stream */
} vfmig_receive_cfg;

/** Starts the receivers (and the decode pool when the session has more threads than streams). */
int vfmig__receive_start(const vfmig_receive_cfg *cfg, vfmig_receive **out);
/** COMMIT of `final_round` arrived: frames of later rounds are refused from now on, and streams
 *  closing after it are the source finishing. */
void vfmig__receive_commit(vfmig_receive *rx, uint32_t final_round);
/** Waits until `rounds` rounds are complete on every stream, a failure, or the deadline (0: none);
 *  returns the number of complete rounds. */
uint32_t vfmig__receive_wait(vfmig_receive *rx, uint32_t rounds, uint64_t deadline_ns);
/** Rounds complete on every stream so far. */
uint32_t vfmig__receive_completed(vfmig_receive *rx);
/** Pages that arrived at least once. */
uint64_t vfmig__receive_pages_seen(const vfmig_receive *rx);
/** Digest of the image applied so far; only while no round is being applied (after wait). */
void vfmig__receive_digest(const vfmig_receive *rx, vfmig_digest *out);
/** Joins every thread, adds up what was applied into *tot, frees everything. Accepts NULL. */
void vfmig__receive_stop(vfmig_receive *rx, vfmig_round_stats *tot);

#endif
