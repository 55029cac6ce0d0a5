/*
 * compress/chooser.c - adaptive codec choice per batch.
 *
 * Model: a batch of `in` bytes costs in/(speed*workers*share) of CPU and in*ratio/link of wire;
 * the pipeline runs both at once, so the time per input byte is the larger of the two. `speed`
 * is per core (thread CPU time); `share` is what each worker really gets of its core, measured by
 * the pipeline from the scheduler (time run against time waiting to run): on a host where both
 * ends, the workload and other work compete, compressing costs more wall time than CPU time. The
 * chooser learns speed and ratio per codec (EWMA over the batches that used it), bootstraps
 * each candidate once, and re-probes another candidate every `probe_every` batches so that a
 * change of content is noticed. Everything is a pure function of the feedback: no clocks, no
 * randomness, so tests drive it with synthetic numbers.
 */
#include "compress/codec.h"

#include <string.h>

#define EWMA_ALPHA 0.25
/* out/in at or below which compressing pays even when the link is not the bottleneck. */
#define VERY_GOOD_RATIO 0.20
/* zstd only when the link is this much slower than lz4 on all workers. */
#define ZSTD_LINK_FRACTION 0.5
/* A codec that costs more CPU must beat the cheaper choice by this fraction: estimates are
 * noisy, and an EWMA creeping towards a tie must not flip the choice on rounding. */
#define MARGIN 0.03
#define HOPELESS_COST 3.0
#define HOPELESS_EVERY 8
#define SPEED_STEP 4.0
#define OUTLIER_FACTOR 3.0
#define OUTLIER_SKIP 2
#define MIN_SPEED 1e6
#define MAX_SPEED 1e12

void vfmig__chooser_init(vfmig_chooser *ch, int codec, int level, uint32_t workers)
{
    memset(ch, 0, sizeof(*ch));
    ch->fixed_codec = codec;
    ch->level = level;
    ch->workers = workers ? workers : 1;
    ch->probe_every = 16;
    ch->cpu_share = 1.0;
    /* Priors from the codec table, used only until a codec has a sample. */
    for (int c = 0; c < VFMIG_CODEC_COUNT; c++) {
        const vfmig_codec_desc *d = vfmig__codec_desc_of(c);
        ch->ratio[c] = 1.0;
        ch->speed[c] = d ? d->speed : 1e9;
    }
}

void vfmig__chooser_set_link(vfmig_chooser *ch, double link_bps)
{
    ch->link_bps = link_bps > 0 ? link_bps : 0;
}

void vfmig__chooser_set_cpu_share(vfmig_chooser *ch, double share)
{
    ch->cpu_share = share > 0.05 ? (share < 1.0 ? share : 1.0) : 0.05;
}

/* Whole cores the workers get: their count times the share each is given. */
static double workers_of(const vfmig_chooser *ch)
{
    return (ch->workers ? (double)ch->workers : 1.0) * ch->cpu_share;
}

static bool zstd_allowed(const vfmig_chooser *ch)
{
    return ch->link_bps > 0 &&
           ch->link_bps < ZSTD_LINK_FRACTION * ch->speed[VFMIG_CODEC_LZ4] * workers_of(ch);
}

/* Seconds per input byte with codec c: CPU and link overlap, the slower one bounds. */
static double cost(const vfmig_chooser *ch, int c)
{
    double cpu = 1.0 / (ch->speed[c] * workers_of(ch));
    double wire = ch->ratio[c] / ch->link_bps;
    return cpu > wire ? cpu : wire;
}

/* Cost for deciding whether a probe is worth it: cost() or, with the link unknown, CPU. */
static double probe_cost(const vfmig_chooser *ch, int c)
{
    return ch->link_bps > 0 ? cost(ch, c) : 1.0 / (ch->speed[c] * workers_of(ch));
}

static int best_codec(const vfmig_chooser *ch, bool has_ref, bool zstd_ok)
{
    int cand[4], n = 0;
    cand[n++] = VFMIG_CODEC_RAW; /* cheapest CPU first: earlier ones win near-ties */
    if (has_ref)
        cand[n++] = VFMIG_CODEC_DELTA;
    cand[n++] = VFMIG_CODEC_LZ4;
    if (zstd_ok)
        cand[n++] = VFMIG_CODEC_ZSTD;

    if (ch->link_bps <= 0) {
        /* Link unknown: assume it keeps up, so only very good compression is worth CPU;
         * among such codecs the fastest. */
        int best = VFMIG_CODEC_RAW;
        double bs = 0;
        for (int i = 1; i < n; i++)
            if (ch->ratio[cand[i]] <= VERY_GOOD_RATIO && ch->speed[cand[i]] > bs) {
                best = cand[i];
                bs = ch->speed[cand[i]];
            }
        return best;
    }
    int best = cand[0];
    double bt = cost(ch, best);
    for (int i = 1; i < n; i++) {
        double t = cost(ch, cand[i]);
        if (t < bt * (1.0 - MARGIN)) {
            best = cand[i];
            bt = t;
        }
    }
    return best;
}

int vfmig__chooser_pick(vfmig_chooser *ch, bool has_ref)
{
    int f = ch->fixed_codec;
    if (f != VFMIG_CODEC_AUTO) {
        if (f == VFMIG_CODEC_DELTA && !has_ref)
            return VFMIG_CODEC_LZ4;
        if (f <= VFMIG_CODEC_AUTO || f >= VFMIG_CODEC_COUNT || f == VFMIG_CODEC_ZERO)
            return VFMIG_CODEC_RAW;
        return f;
    }
    ch->batches++;
    bool zstd_ok = zstd_allowed(ch);
    /* Bootstrap: one sample of every candidate before trusting the model (RAW's prior is
     * good enough: it is a copy). */
    if (ch->samples[VFMIG_CODEC_LZ4] == 0)
        return VFMIG_CODEC_LZ4;
    if (has_ref && ch->samples[VFMIG_CODEC_DELTA] == 0)
        return VFMIG_CODEC_DELTA;
    if (zstd_ok && ch->samples[VFMIG_CODEC_ZSTD] == 0)
        return VFMIG_CODEC_ZSTD;

    int best = best_codec(ch, has_ref, zstd_ok);
    if (ch->probe_every && ch->batches % ch->probe_every == 0) {
        /* Re-probe the next other candidate, round robin, so stale estimates get refreshed. */
        static const int order[4] = {VFMIG_CODEC_LZ4, VFMIG_CODEC_DELTA, VFMIG_CODEC_ZSTD,
                                     VFMIG_CODEC_RAW};
        /* A codec that looked far costlier than the best is re-probed only every
         * HOPELESS_EVERY-th probe: a probe of zstd on incompressible data costs ~10 batches. */
        bool rare = (ch->batches / ch->probe_every) % HOPELESS_EVERY == 0;
        for (int k = 0; k < 4; k++) {
            int c = order[(ch->probe_next + (uint32_t)k) % 4];
            if (c == best || (c == VFMIG_CODEC_DELTA && !has_ref) ||
                (c == VFMIG_CODEC_ZSTD && !zstd_ok) ||
                (!rare && probe_cost(ch, c) > HOPELESS_COST * probe_cost(ch, best)))
                continue;
            ch->probe_next = (ch->probe_next + (uint32_t)k + 1) % 4;
            return c;
        }
    }
    return best;
}

void vfmig__chooser_feedback(vfmig_chooser *ch, int codec, size_t in, size_t out, uint64_t ns)
{
    if (codec <= VFMIG_CODEC_AUTO || codec >= VFMIG_CODEC_COUNT || codec == VFMIG_CODEC_ZERO ||
        in == 0)
        return;
    double r = (double)out / (double)in;
    if (r < 1e-6)
        r = 1e-6;
    double s = ns ? (double)in * 1e9 / (double)ns : MAX_SPEED;
    if (s < MIN_SPEED)
        s = MIN_SPEED;
    if (s > MAX_SPEED)
        s = MAX_SPEED;
    if (ch->samples[codec] == 0) {
        ch->ratio[codec] = r;
        ch->speed[codec] = s;
    } else {
        /* A preempted worker makes one batch look many times slower. Ignore the speed of an
         * isolated far-too-slow sample (a second one in a row too), and bound how far any
         * sample pulls the estimate; real content changes persist, and show in the ratio at
         * once anyway. */
        double cur = ch->speed[codec];
        if (s < cur / OUTLIER_FACTOR && ch->slow_run[codec] < OUTLIER_SKIP) {
            ch->slow_run[codec]++;
            s = cur;
        } else if (s >= cur / OUTLIER_FACTOR) {
            ch->slow_run[codec] = 0;
        }
        if (s < cur / SPEED_STEP)
            s = cur / SPEED_STEP;
        if (s > cur * SPEED_STEP)
            s = cur * SPEED_STEP;
        ch->ratio[codec] += EWMA_ALPHA * (r - ch->ratio[codec]);
        ch->speed[codec] += EWMA_ALPHA * (s - cur);
    }
    if (ch->samples[codec] != UINT32_MAX)
        ch->samples[codec]++;
}
