/*
 * engine/policy.h - when to switch over. A pure function of measurements, so it is unit-tested
 * on synthetic rates.
 *
 * After each pre-copy round the engine peeks at the dirty set (without clearing it) and asks:
 * what would a switch-over now cost? The prediction is built per stage, each from what pre-copy
 * measured:
 *   pages   the final pass: the larger of the source's CPU (its workers' CPU time per page in
 *           the last round, over its workers), the target's (the apply CPU per page it reported
 *           in its round acknowledgement, over its threads), the wire (bytes per page over the
 *           fastest link rate seen) and, when both ends share one host, both CPUs over its cores.
 *           CPU time, not wall time: in pre-copy the VF's workload competes for the cores, in the
 *           blackout it is paused. Zero pages count at what they cost (they are in the mix).
 *   fixed   the final dirty query (measured), mutable state, and the round trips (COMMIT/VERDICT,
 *           GO/GO_ACK).
 * A working set that no number of rounds shrinks (the dirty set stays the same) is recognised
 * after one such round: if the prediction fits the budget the policy switches at once. Over the
 * budget it throttles the VF (if allowed) in steps, like QEMU's auto-converge, only when rounds
 * have stopped helping; when neither full speed nor the allowed throttle meets the budget it keeps
 * iterating to the round or time limit and then aborts (the budget is a contract), or, with
 * on_miss_switch, switches anyway once more rounds stop helping.
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
    int on_miss_switch;       /* VFMIG_BUDGET_MISS_SWITCH */
    unsigned src_workers;     /* source encode workers */
    unsigned dst_threads;     /* target threads that apply pages (0: as many as src_workers) */
    unsigned shared_cpus;     /* > 0: both ends run on one host with this many CPUs */
    double rtt_ms;            /* one round trip on the control stream */
    double state_ms;          /* mutable state save, send and restore (estimate) */
} vfmig_policy_cfg;

/* What a switch-over now is expected to cost, by stage (ms). */
typedef struct vfmig_prediction {
    double src_ms, dst_ms, wire_ms, shared_ms; /* candidates for the final pass */
    double pages_ms;          /* the final pass: the largest of the above */
    double fixed_ms;          /* query, mutable state, round trips */
    double total_ms;
} vfmig_prediction;

typedef struct vfmig_policy {
    vfmig_policy_cfg cfg;
    double link_bps;          /* fastest wire bytes/s seen (or the cap) */
    double src_ns_per_page;   /* source worker CPU per page, last round that moved enough pages */
    double dst_ns_per_page;   /* target apply CPU per page, same round */
    double wire_per_page;     /* wire bytes per page, same round */
    double query_ms;          /* a dirty-bitmap query */
    double dirty_rate;        /* bytes/s of new dirty pages, EWMA */
    uint64_t prev_pending;
    uint32_t stalled_rounds;  /* consecutive rounds in which the dirty set did not shrink */
    unsigned throttle;        /* percent of full speed currently asked of the device */
    unsigned throttle_min;
    double pages_scale;       /* >= 1: how much slower than predicted a final pass ran (a
                                 blackout called off); applied to every later prediction */
} vfmig_policy;

typedef enum vfmig_policy_action {
    VFMIG_POLICY_CONTINUE = 0,
    VFMIG_POLICY_SWITCH = 1,
    VFMIG_POLICY_THROTTLE = 2, /* continue, with `throttle` percent asked of the device */
    VFMIG_POLICY_ABORT = 3     /* the budget cannot be met: keep the VF on the source */
} vfmig_policy_action;

typedef struct vfmig_policy_round {
    uint32_t round;           /* the round that just ended (0 = full pass) */
    uint64_t pages;           /* pages it sent, zero pages included */
    uint64_t wire_bytes;      /* bytes it put on the link */
    uint64_t round_ns;        /* its duration, until the target acknowledged it */
    uint64_t src_cpu_ns;      /* source worker CPU time in it */
    uint64_t dst_cpu_ns;      /* target apply CPU time in it (0 = not reported) */
    uint64_t pending_pages;   /* dirty now, to be sent by the next round or the blackout */
    uint64_t page_size;
    uint64_t query_ns;        /* time the last dirty query took */
    uint64_t scan_ns;         /* of it, a scan of all VRAM the device repeats in the blackout (a
                                 device without dirty bits: vfmig_device.tracking_cost); 0 = none */
    uint64_t since_query_ns;  /* time over which pending pages were dirtied */
    uint64_t precopy_ns;      /* pre-copy so far */
    int warming;              /* the round filled the delta cache more than it used it: the next
                                 round of the same pages costs less, so it is measured first */
} vfmig_policy_round;

typedef struct vfmig_policy_decision {
    vfmig_policy_action action;
    vfmig_switch_reason reason;
    double predicted_ms;
    vfmig_prediction stages;
    unsigned throttle;
} vfmig_policy_decision;

/** link_bps: a known cap on the link (0 = learn it). */
void vfmig__policy_init(vfmig_policy *p, const vfmig_policy_cfg *cfg, double link_bps);
vfmig_policy_decision vfmig__policy_after_round(vfmig_policy *p, const vfmig_policy_round *r);
/** Blackout the policy predicts for `pages` dirty pages with what it knows now. */
vfmig_prediction vfmig__policy_predict(const vfmig_policy *p, uint64_t pages);
/** A final pass measured in a blackout: `done` pages of it took `ms`. Later predictions of the
 *  final pass are scaled up by what that shows (never down: a called-off blackout ran with the
 *  VF paused, the cheapest it gets). */
void vfmig__policy_learn_blackout(vfmig_policy *p, uint64_t done, double ms);

#endif
