/* engine/policy.c - switch-over decisions (see policy.h). */
#include "engine/policy.h"

#include <stdbool.h>

/* Rounds with fewer pages say little about per-page costs (fixed costs dominate them); they are
 * not used to learn them. */
#define POLICY_MIN_MEASURE_PAGES 64u
/* A dirty set that shrank by less than this fraction counts as a stalled round. */
#define POLICY_PROGRESS 0.95
/* Stalled rounds over budget before the VF is throttled (one more step each time). The first
 * dirty round fills the delta cache and costs more than the rounds after it, so one stalled
 * round over budget is not yet proof that rounds stopped helping. */
#define POLICY_STALL_ROUNDS 2
/* Under budget, another round is worth it only if the last one at least halved the dirty set. */
#define POLICY_HALVING 0.5
/* Throttle steps: percent of full speed asked of the device. */
static const unsigned throttle_steps[] = {100, 80, 60, 40, 20, 10};
#define THROTTLE_STEPS (sizeof(throttle_steps) / sizeof(throttle_steps[0]))

void vfmig__policy_init(vfmig_policy *p, const vfmig_policy_cfg *cfg, double link_bps)
{
    *p = (vfmig_policy){.cfg = *cfg, .link_bps = link_bps, .throttle = 100, .throttle_min = 100, .pages_scale = 1.0};
    if (!p->cfg.src_workers)
        p->cfg.src_workers = 1;
    if (!p->cfg.dst_threads)
        p->cfg.dst_threads = p->cfg.src_workers;
}

vfmig_prediction vfmig__policy_predict(const vfmig_policy *p, uint64_t pages)
{
    vfmig_prediction e = {0};
    e.fixed_ms = p->query_ms + p->cfg.state_ms + 2 * p->cfg.rtt_ms;
    if (pages) {
        double n = (double)pages;
        if (p->src_ns_per_page <= 0) {
            e.pages_ms = 1e12; /* nothing measured yet: never predict that anything fits */
        } else {
            e.src_ms = n * p->src_ns_per_page / p->cfg.src_workers / 1e6;
            e.dst_ms = n * p->dst_ns_per_page / p->cfg.dst_threads / 1e6;
            e.wire_ms = p->link_bps > 0 ? n * p->wire_per_page / p->link_bps * 1e3 : 0;
            if (p->cfg.shared_cpus) {
                unsigned busy = p->cfg.src_workers + p->cfg.dst_threads;
                unsigned cpus = busy < p->cfg.shared_cpus ? busy : p->cfg.shared_cpus;
                e.shared_ms = n * (p->src_ns_per_page + p->dst_ns_per_page) / cpus / 1e6;
            }
            e.pages_ms = e.src_ms;
            if (e.dst_ms > e.pages_ms)
                e.pages_ms = e.dst_ms;
            if (e.wire_ms > e.pages_ms)
                e.pages_ms = e.wire_ms;
            if (e.shared_ms > e.pages_ms)
                e.pages_ms = e.shared_ms;
            e.pages_ms *= p->pages_scale;
        }
    }
    e.total_ms = e.pages_ms + e.fixed_ms;
    return e;
}

void vfmig__policy_learn_blackout(vfmig_policy *p, uint64_t done, double ms)
{
    if (done < POLICY_MIN_MEASURE_PAGES)
        return;
    vfmig_prediction e = vfmig__policy_predict(p, done);
    if (e.pages_ms > 0 && ms > e.pages_ms)
        p->pages_scale *= ms / e.pages_ms;
}

static unsigned next_throttle(unsigned cur)
{
    for (unsigned i = 0; i + 1 < THROTTLE_STEPS; i++)
        if (throttle_steps[i] == cur)
            return throttle_steps[i + 1];
    return cur;
}

static void learn(vfmig_policy *p, const vfmig_policy_round *r)
{
    if (r->round_ns > 0 && r->wire_bytes >= (1u << 20)) {
        double bps = (double)r->wire_bytes * 1e9 / (double)r->round_ns;
        if (bps > p->link_bps) /* the link does at least this */
            p->link_bps = bps;
    }
    bool enough = r->pages >= POLICY_MIN_MEASURE_PAGES || p->src_ns_per_page <= 0;
    if (r->pages && r->src_cpu_ns && enough) {
        double n = (double)r->pages;
        p->src_ns_per_page = (double)r->src_cpu_ns / n;
        p->dst_ns_per_page = (double)r->dst_cpu_ns / n;
        p->wire_per_page = (double)r->wire_bytes / n;
    }
    if (r->query_ns)
        p->query_ms = (double)r->query_ns / 1e6;
    if (r->since_query_ns > 0) {
        double rate = (double)(r->pending_pages * r->page_size) * 1e9 / (double)r->since_query_ns;
        p->dirty_rate = p->dirty_rate > 0 ? 0.5 * p->dirty_rate + 0.5 * rate : rate;
    }
}

vfmig_policy_decision vfmig__policy_after_round(vfmig_policy *p, const vfmig_policy_round *r)
{
    vfmig_policy_decision d = {VFMIG_POLICY_CONTINUE, VFMIG_SWITCH_NONE, 0, {0}, p->throttle};
    learn(p, r);
    /* A scanning device: pages written while its last scan ran, after the scan had passed them
     * (half its length on average), are not in pending_pages but will be in the final pass. */
    double scan_ms = (double)r->scan_ns / 1e6;
    uint64_t during_scan = p->dirty_rate > 0 && r->page_size ? (uint64_t)(p->dirty_rate * scan_ms / 2e3 / (double)r->page_size) : 0;
    d.stages = vfmig__policy_predict(p, r->pending_pages + during_scan);
    d.predicted_ms = d.stages.total_ms;

    /* Round 0 sends everything, so "shrinking" is only judged between dirty rounds. */
    bool stalled = r->round > 0 && !r->warming && (double)r->pending_pages > POLICY_PROGRESS * (double)p->prev_pending;
    p->stalled_rounds = stalled ? p->stalled_rounds + 1 : 0;
    bool halved = r->round == 0 || (double)r->pending_pages < POLICY_HALVING * (double)p->prev_pending;
    bool shrinking = halved || r->warming;
    p->prev_pending = r->pending_pages;
    bool at_limit = r->round + 1 >= p->cfg.max_rounds || r->precopy_ns >= p->cfg.max_precopy_ns;
    bool fits = d.predicted_ms <= p->cfg.budget_ms;

    if (d.stages.fixed_ms > p->cfg.budget_ms && !p->cfg.on_miss_switch) {
        /* What no round moves (the final query or a device's scan, the state, the round trips)
         * is already over the budget: more rounds cannot help. (Told to switch anyway, rounds
         * still shorten the final pass: they go on to the limit below.) */
        d.action = VFMIG_POLICY_ABORT;
        return d;
    }
    if (r->pending_pages == 0) {
        d.action = VFMIG_POLICY_SWITCH;
        d.reason = fits ? VFMIG_SWITCH_CONVERGED : VFMIG_SWITCH_BUDGET_MISS; /* (only told to switch) */
        return d;
    }
    if (fits) {
        /* Fitting the budget is enough to switch, but while rounds still shrink the dirty set fast
         * one more round is cheap and the blackout gets shorter still: keep going as long as the
         * final pass (not fixed cost) dominates the predicted blackout. A device's scan is left
         * out of that fixed cost (no round moves it, so it makes a round no less worth it), but
         * then only while rounds really halve the dirty set: each of them scans too, and what is
         * written during one is a floor that more rounds do not lower. */
        bool worth_a_round = ((shrinking && d.stages.pages_ms > d.stages.fixed_ms) ||
                              (scan_ms > 0 && halved && d.stages.pages_ms > d.stages.fixed_ms - scan_ms)) &&
                             r->round + 2 < p->cfg.max_rounds && r->precopy_ns < p->cfg.max_precopy_ns;
        if (!worth_a_round) {
            d.action = VFMIG_POLICY_SWITCH;
            d.reason = at_limit ? (r->round + 1 >= p->cfg.max_rounds ? VFMIG_SWITCH_MAX_ROUNDS : VFMIG_SWITCH_MAX_TIME)
                       : stalled ? VFMIG_SWITCH_NO_PROGRESS
                                 : VFMIG_SWITCH_CONVERGED;
        }
        return d;
    }
    /* Over budget. */
    if (at_limit) {
        d.action = p->cfg.on_miss_switch ? VFMIG_POLICY_SWITCH : VFMIG_POLICY_ABORT;
        d.reason = p->cfg.on_miss_switch ? VFMIG_SWITCH_BUDGET_MISS : VFMIG_SWITCH_NONE;
        return d;
    }
    if (p->stalled_rounds >= POLICY_STALL_ROUNDS) {
        p->stalled_rounds = 0;
        unsigned next = p->cfg.throttle_allowed ? next_throttle(p->throttle) : p->throttle;
        if (next != p->throttle) {
            p->throttle = next;
            if (next < p->throttle_min)
                p->throttle_min = next;
            d.action = VFMIG_POLICY_THROTTLE;
            d.throttle = next;
            return d;
        }
        /* Nothing left to try: more rounds will not shorten the blackout. Told to, switch now;
         * otherwise keep going to the limit (the workload may change) and abort there. */
        if (p->cfg.on_miss_switch) {
            d.action = VFMIG_POLICY_SWITCH;
            d.reason = VFMIG_SWITCH_BUDGET_MISS;
        }
    }
    return d;
}
