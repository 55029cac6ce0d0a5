/* engine/policy.c - switch-over decisions (see policy.h). */
#include "engine/policy.h"

#include <stdbool.h>

/* Rounds smaller than this are dominated by per-round fixed costs and say little about the
 * pipeline's bandwidth; they are not used to learn it. */
#define POLICY_MIN_MEASURE_BYTES (1u << 20)
/* A dirty set that shrank by less than this fraction counts as a stalled round. */
#define POLICY_PROGRESS 0.95
#define POLICY_STALL_ROUNDS 2
/* Under budget, another round is worth it only if the last one at least halved the dirty set. */
#define POLICY_HALVING 0.5
/* Throttle steps: percent of full speed asked of the device. */
static const unsigned throttle_steps[] = {100, 80, 60, 40, 20, 10};
#define THROTTLE_STEPS (sizeof(throttle_steps) / sizeof(throttle_steps[0]))

void vfmig_policy_init(vfmig_policy *p, const vfmig_policy_cfg *cfg, double fixed_ms)
{
    *p = (vfmig_policy){.cfg = *cfg, .fixed_ms = fixed_ms, .throttle = 100};
}

double vfmig_policy_predict_ms(const vfmig_policy *p, uint64_t bytes)
{
    if (bytes == 0)
        return p->fixed_ms;
    if (p->bw <= 0)
        return 1e12; /* unknown bandwidth: never predict that anything fits */
    return p->fixed_ms + (double)bytes / p->bw * 1000.0;
}

static unsigned next_throttle(unsigned cur)
{
    for (unsigned i = 0; i + 1 < THROTTLE_STEPS; i++)
        if (throttle_steps[i] == cur)
            return throttle_steps[i + 1];
    return cur;
}

vfmig_policy_decision vfmig_policy_after_round(vfmig_policy *p, const vfmig_policy_round *r)
{
    vfmig_policy_decision d = {VFMIG_POLICY_CONTINUE, VFMIG_SWITCH_NONE, 0, p->throttle};

    if (r->round_bytes >= POLICY_MIN_MEASURE_BYTES && r->round_ns > 0) {
        double bw = (double)r->round_bytes * 1e9 / (double)r->round_ns;
        /* The first measurement stands alone; later ones are blended so one noisy round does
         * not swing the decision. */
        p->bw = p->bw > 0 ? 0.5 * p->bw + 0.5 * bw : bw;
    } else if (p->bw <= 0 && r->round_ns > 0 && r->round_bytes > 0) {
        /* Nothing better yet: a small round still gives a (pessimistic) lower bound. */
        p->bw = (double)r->round_bytes * 1e9 / (double)r->round_ns;
    }
    if (r->since_query_ns > 0) {
        double rate = (double)r->pending_bytes * 1e9 / (double)r->since_query_ns;
        p->dirty_rate = p->dirty_rate > 0 ? 0.5 * p->dirty_rate + 0.5 * rate : rate;
    }

    d.predicted_ms = vfmig_policy_predict_ms(p, r->pending_bytes);
    /* Fitting the budget is enough to switch, but while rounds still shrink the dirty set fast
     * one more round is cheap and the blackout gets shorter still: keep going as long as page
     * transfer (not fixed cost) dominates the predicted blackout. */
    bool shrinking = r->round == 0 || (double)r->pending_bytes < POLICY_HALVING * (double)p->prev_pending;
    bool worth_a_round = shrinking && d.predicted_ms > 2 * p->fixed_ms && r->round + 2 < p->cfg.max_rounds &&
                         r->precopy_ns < p->cfg.max_precopy_ns;
    if (r->pending_bytes == 0 || (d.predicted_ms <= p->cfg.budget_ms && !worth_a_round)) {
        d.action = VFMIG_POLICY_SWITCH;
        d.reason = VFMIG_SWITCH_CONVERGED;
        return d;
    }
    if (r->round + 1 >= p->cfg.max_rounds) {
        d.action = VFMIG_POLICY_SWITCH;
        d.reason = VFMIG_SWITCH_MAX_ROUNDS;
        return d;
    }
    if (r->precopy_ns >= p->cfg.max_precopy_ns) {
        d.action = VFMIG_POLICY_SWITCH;
        d.reason = VFMIG_SWITCH_MAX_TIME;
        return d;
    }

    /* Round 0 sends everything, so "shrinking" is only judged between dirty rounds. */
    if (r->round > 0 && (double)r->pending_bytes > POLICY_PROGRESS * (double)p->prev_pending)
        p->stalled_rounds++;
    else
        p->stalled_rounds = 0;
    p->prev_pending = r->pending_bytes;

    if (p->stalled_rounds >= POLICY_STALL_ROUNDS) {
        p->stalled_rounds = 0;
        unsigned next = p->cfg.throttle_allowed ? next_throttle(p->throttle) : p->throttle;
        if (next != p->throttle) {
            p->throttle = next;
            d.action = VFMIG_POLICY_THROTTLE;
            d.throttle = next;
            return d;
        }
        /* Nothing left to try: more rounds will not make the blackout shorter. */
        d.action = VFMIG_POLICY_SWITCH;
        d.reason = VFMIG_SWITCH_NO_PROGRESS;
    }
    return d;
}
