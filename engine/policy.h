/*
 * engine/policy.h - when to switch over. A pure function of measurements, so it is unit-tested
 * on synthetic rates.
 *
 * After each pre-copy round the engine peeks at the dirty set (without clearing it) and asks:
 * would a switch-over now fit the blackout budget? The predicted blackout is
 *     pending dirty bytes / page bandwidth + fixed cost (mutable state, round trips, restore).
 * Bandwidth is learned from rounds that moved enough bytes to be measured. When the dirty set
 * stops shrinking the policy throttles the VF (if allowed) in steps, like QEMU's auto-converge,
 * and at the bottom of the throttle range gives up waiting and switches (reason no-progress).
 */
#ifndef VFMIG_ENGINE_POLICY_H
#define VFMIG_ENGINE_POLICY_H

#include <stdint.h>

#include "vfmig.h"

typedef struct vfmig_policy_cfg {
    double budget_ms;
    uint32_t max_rounds;      /* pre-copy rounds including round 0 */
    uint64_t max_precopy_ns;
    int throttle_allowed;     /* device has throttle and the session allows it */
} vfmig_policy_cfg;

typedef struct vfmig_policy {
    vfmig_policy_cfg cfg;
    double bw;                /* page bytes/s the pipeline moves (0 = not measured yet) */
    double dirty_rate;        /* bytes/s of new dirty pages, EWMA */
    double fixed_ms;          /* blackout cost that does not scale with pages */
    uint64_t prev_pending;
    uint32_t stalled_rounds;  /* consecutive rounds in which the dirty set did not shrink */
    unsigned throttle;        /* percent of full speed currently asked of the device */
} vfmig_policy;

typedef enum vfmig_policy_action {
    VFMIG_POLICY_CONTINUE = 0,
    VFMIG_POLICY_SWITCH = 1,
    VFMIG_POLICY_THROTTLE = 2 /* continue, with `throttle` percent asked of the device */
} vfmig_policy_action;

typedef struct vfmig_policy_round {
    uint32_t round;           /* the round that just ended (0 = full pass) */
    uint64_t round_bytes;     /* page bytes it moved (zero pages excluded) */
    uint64_t round_ns;        /* its duration */
    uint64_t pending_bytes;   /* dirty now, to be sent by the next round or the blackout */
    uint64_t since_query_ns;  /* time over which pending_bytes were dirtied */
    uint64_t precopy_ns;      /* pre-copy so far */
} vfmig_policy_round;

typedef struct vfmig_policy_decision {
    vfmig_policy_action action;
    vfmig_switch_reason reason;
    double predicted_ms;
    unsigned throttle;
} vfmig_policy_decision;

void vfmig_policy_init(vfmig_policy *p, const vfmig_policy_cfg *cfg, double fixed_ms);
vfmig_policy_decision vfmig_policy_after_round(vfmig_policy *p, const vfmig_policy_round *r);
/** Blackout the policy predicts for `bytes` of dirty pages with what it knows now. */
double vfmig_policy_predict_ms(const vfmig_policy *p, uint64_t bytes);

#endif
