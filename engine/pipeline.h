/* engine/pipeline.h - the source's page pipeline: a queue of page runs consumed by encode
 * workers that read, hash, encode and send on their stream. */
#ifndef VFMIG_ENGINE_PIPELINE_H
#define VFMIG_ENGINE_PIPELINE_H

#include <pthread.h>
#include <stdint.h>

#include "compress/codec.h"
#include "engine/image.h"
#include "engine/session.h"

typedef struct vfmig_pipeline vfmig_pipeline;

typedef struct vfmig_pipeline_cfg {
    vfmig_session *s;
    vfmig_link *link;
    unsigned nstreams;
    unsigned nworkers;
    uint64_t batch_pages;
    int codec;             /* VFMIG_CODEC_AUTO or fixed */
    int level;
    uint64_t delta_cache_bytes;
    double link_bps;       /* known link limit (cap), 0 = unknown */
    vfmig_pinner *pinner;  /* may be NULL */
} vfmig_pipeline_cfg;

int vfmig__pipeline_start(const vfmig_pipeline_cfg *cfg, vfmig_pipeline **out);
/** Starts round `round`: later submits belong to it. `paused`: the VF is paused (its memory
 *  holds still, so frames read in place are checksummed whole). */
void vfmig__pipeline_begin_round(vfmig_pipeline *p, uint32_t round, bool paused);
/** Queues a run of pages (global index, within range `range`, at most batch_pages). Blocks while
 *  the queue is full. */
int vfmig__pipeline_submit(vfmig_pipeline *p, uint32_t range, uint64_t page, uint64_t npages);
/** Waits until every queued run is sent, ends the round on every stream (ROUND_END) and
 *  returns its statistics (fields the pipeline measures). */
int vfmig__pipeline_end_round(vfmig_pipeline *p, vfmig_round_stats *out);
/** From now on submit and end_round return VFMIG_ETIMEDOUT (failing nothing) once `until_ns`
 *  (monotonic) has passed while they wait; 0 = no watch. The blackout's budget watch. */
void vfmig__pipeline_watch(vfmig_pipeline *p, uint64_t until_ns);
/** The switch-over is called off: the runs not yet taken by a worker are dropped and their
 *  pages set in carry[range] (range-local bits) to be sent in a later round; waits until the
 *  workers finished what they hold (sent whole, so the VF may resume after) and clears the
 *  watch. end_round then ends the round as usual. Returns the pages dropped. */
uint64_t vfmig__pipeline_call_off(vfmig_pipeline *p, uint64_t *const *carry);
/** Stops the workers (after a failure, queued runs are dropped) and frees everything. */
void vfmig__pipeline_stop(vfmig_pipeline *p);
/** Image digest of everything sent so far (call between rounds). */
void vfmig__pipeline_digest(const vfmig_pipeline *p, vfmig_digest *out);
/** True when pages are read in place (the device maps its VRAM). */
bool vfmig__pipeline_in_place(const vfmig_pipeline *p);
/** Of the last round's delta pages, those whose linear hash was computed whole (their first
 *  delta: later ones update it from the changed bytes alone, on both ends). */
uint64_t vfmig__pipeline_lin_full_pages(const vfmig_pipeline *p);
/** Pages the last round gave a delta-cache copy (sent raw or compressed this time, as deltas
 *  against it next time). */
uint64_t vfmig__pipeline_newly_cached_pages(const vfmig_pipeline *p);
/** Memory the delta cache uses now. */
uint64_t vfmig__pipeline_delta_cache_bytes(const vfmig_pipeline *p);
/** Sets the link estimate the codec choice uses. */
void vfmig__pipeline_set_link_bps(vfmig_pipeline *p, double bps);

#endif
