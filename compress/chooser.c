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
 *
 * All of that is learned per content class (vfmig__content_class: an entropy estimate of 2 KiB
 * sampled from the batch, ~1.2 us): on a VF mixing textures, tensors and random data
 * one set of averages sends tensors through lz4 (which gives up on them) and random pages
 * through zstd, where per class each gets its own best codec.
 */
#include "compress/codec.h"

#include <math.h>
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
/* The link counts as saturated when it carries at least this fraction of its capacity, and as
 * starved (the CPUs bound) below the second; the price of CPU time moves by LAMBDA_STEP per
 * measurement towards the balance, within [LAMBDA_MIN, LAMBDA_MAX]. A saturated capped link
 * reads ~0.96 (raw at 10 Gbit: 616 MB in 514 ms); the band is narrow because any load under
 * saturation means the CPUs bound: with it at 0.70-0.85, auto at 10 Gbit settled at a load of
 * ~0.73, still compressing textures, 1.10-1.14x raw's time. */
#define LINK_BUSY 0.93
#define LINK_IDLE 0.85
#define LAMBDA_STEP 1.5
#define LAMBDA_MIN 0.01
#define LAMBDA_MAX 100.0
/* With the link unknown, classes from this one on (order-0 entropy >= 5 bits) start raw. */
#define UNKNOWN_LINK_CLASSES 3u
#define MIN_SPEED 1e6
#define MAX_SPEED 1e12

void vfmig__chooser_init(vfmig_chooser *ch, int codec, int level, uint32_t workers)
{
    memset(ch, 0, sizeof(*ch));
    ch->fixed_codec = codec;
    ch->level = level;
    ch->workers = workers ? workers : 1;
    ch->probe_every = 64; /* per class the estimates hold longer: probes cost wire (a texture probed with lz4) */
    ch->cpu_share = 1.0;
    ch->link_busy = -1.0;
    /* Where a capped link starts: textures through lz4 at 10 Gbit, zstd at 1 Gbit, tensors
     * through zstd only at 1 Gbit (by this machine's codec speeds). */
    ch->lambda = 0.4;
    /* Priors from the codec table, used only until a codec has a sample. */
    for (unsigned k = 0; k < VFMIG_CONTENT_CLASSES; k++)
        for (int c = 0; c < VFMIG_CODEC_COUNT; c++) {
            const vfmig_codec_desc *d = vfmig__codec_desc_of(c);
            ch->est[k].ratio[c] = 1.0;
            ch->est[k].speed[c] = d ? d->speed : 1e9;
        }
}

void vfmig__chooser_set_class(vfmig_chooser *ch, unsigned cls)
{
    ch->cls = cls < VFMIG_CONTENT_CLASSES ? cls : VFMIG_CONTENT_CLASSES - 1;
}

/* Upper bounds (bits per byte) of classes 0..6; the rest is class 7. Finer near 8 bits, where
 * float tensors (~6.5-7.5: skewed exponent bytes, random mantissas) sit just below random data,
 * and the whole difference between "zstd shrinks it" and "nothing does" is there. */
static const double class_bound[VFMIG_CONTENT_CLASSES - 1] = {1.0, 3.0, 5.0, 6.0, 6.75, 7.25, 7.75};

/* c log2 c for the counts of a sample's symbols below 256 (generated; larger ones are rare
 * and computed): a log per symbol cost more than the histogram. */
static const float clog2c[256] = {
    0.000000f, 0.000000f, 2.000000f, 4.754888f, 8.000000f, 11.609640f,
    15.509775f, 19.651484f, 24.000000f, 28.529325f, 33.219281f, 38.053748f,
    43.019550f, 48.105716f, 53.302969f, 58.603359f, 64.000000f, 69.486868f,
    75.058650f, 80.710623f, 86.438562f, 92.238666f, 98.107496f, 104.041925f,
    110.039100f, 116.096405f, 122.211433f, 128.381963f, 134.605938f, 140.881449f,
    147.206718f, 153.580086f, 160.000000f, 166.465006f, 172.973737f, 179.524906f,
    186.117300f, 192.749775f, 199.421246f, 206.130687f, 212.877124f, 219.659632f,
    226.477332f, 233.329384f, 240.214991f, 247.133389f, 254.083850f, 261.065676f,
    268.078200f, 275.120782f, 282.192809f, 289.293692f, 296.422865f, 303.579784f,
    310.763925f, 317.974784f, 325.211876f, 332.474731f, 339.762898f, 347.075940f,
    354.413436f, 361.774978f, 369.160171f, 376.568635f, 384.000000f, 391.453908f,
    398.930012f, 406.427976f, 413.947473f, 421.488188f, 429.049811f, 436.632045f,
    444.234600f, 451.857193f, 459.499549f, 467.161402f, 474.842491f, 482.542564f,
    490.261373f, 497.998679f, 505.754248f, 513.527850f, 521.319264f, 529.128273f,
    536.954664f, 544.798230f, 552.658769f, 560.536084f, 568.429982f, 576.340275f,
    584.266779f, 592.209312f, 600.167700f, 608.141769f, 616.131352f, 624.136283f,
    632.156400f, 640.191546f, 648.241565f, 656.306305f, 664.385619f, 672.479360f,
    680.587385f, 688.709554f, 696.845731f, 704.995779f, 713.159568f, 721.336968f,
    729.527850f, 737.732091f, 745.949568f, 754.180161f, 762.423751f, 770.680223f,
    778.949462f, 787.231356f, 795.525795f, 803.832672f, 812.151880f, 820.483314f,
    828.826871f, 837.182452f, 845.549955f, 853.929284f, 862.320342f, 870.723036f,
    879.137270f, 887.562955f, 896.000000f, 904.448316f, 912.907816f, 921.378413f,
    929.860024f, 938.352564f, 946.855952f, 955.370106f, 963.894946f, 972.430395f,
    980.976375f, 989.532809f, 998.099622f, 1006.676741f, 1015.264091f, 1023.861601f,
    1032.469200f, 1041.086818f, 1049.714386f, 1058.351835f, 1066.999098f, 1075.656110f,
    1084.322804f, 1092.999116f, 1101.684982f, 1110.380340f, 1119.085127f, 1127.799283f,
    1136.522746f, 1145.255458f, 1153.997358f, 1162.748390f, 1171.508495f, 1180.277617f,
    1189.055700f, 1197.842689f, 1206.638529f, 1215.443165f, 1224.256546f, 1233.078617f,
    1241.909327f, 1250.748625f, 1259.596459f, 1268.452780f, 1277.317538f, 1286.190683f,
    1295.072168f, 1303.961945f, 1312.859965f, 1321.766182f, 1330.680551f, 1339.603024f,
    1348.533557f, 1357.472106f, 1366.418625f, 1375.373070f, 1384.335400f, 1393.305570f,
    1402.283539f, 1411.269264f, 1420.262704f, 1429.263818f, 1438.272566f, 1447.288906f,
    1456.312800f, 1465.344208f, 1474.383091f, 1483.429411f, 1492.483129f, 1501.544208f,
    1510.612611f, 1519.688299f, 1528.771238f, 1537.861390f, 1546.958720f, 1556.063191f,
    1565.174770f, 1574.293420f, 1583.419109f, 1592.551800f, 1601.691461f, 1610.838059f,
    1619.991559f, 1629.151929f, 1638.319136f, 1647.493149f, 1656.673935f, 1665.861463f,
    1675.055700f, 1684.256617f, 1693.464183f, 1702.678366f, 1711.899137f, 1721.126466f,
    1730.360322f, 1739.600678f, 1748.847503f, 1758.100768f, 1767.360446f, 1776.626507f,
    1785.898923f, 1795.177667f, 1804.462712f, 1813.754029f, 1823.051591f, 1832.355372f,
    1841.665344f, 1850.981482f, 1860.303760f, 1869.632150f, 1878.966628f, 1888.307167f,
    1897.653743f, 1907.006330f, 1916.364903f, 1925.729438f, 1935.099910f, 1944.476295f,
    1953.858568f, 1963.246706f, 1972.640685f, 1982.040481f, 1991.446071f, 2000.857432f,
    2010.274541f, 2019.697374f, 2029.125910f, 2038.560126f,
};

/* The bounds were set on estimates from 4 KiB samples; a sample of n bytes reads lower by about
 * (symbols seen - 1) / (2 n ln 2) bits (the Miller-Madow bias), which is added back for the
 * difference (96% of 4 KiB pages of mixed content keep their class, the rest move by one). 2 KiB
 * are sampled: with a log per symbol a whole 4 KiB page took 2.3-5 us per batch, more than
 * sending it raw, and rounds after the first are batches of one or two pages; now ~1.2 us. */
#define CLASS_SAMPLE 2048u
#define CLASS_TUNED_SAMPLE 4096.0

double vfmig__content_entropy(const void *p, size_t len)
{
    enum { SPANS = 4, SPAN = CLASS_SAMPLE / 4 };
    const uint8_t *b = p;
    /* Four tables: consecutive equal bytes do not wait on each other's increments. */
    uint16_t hist[4][256];
    memset(hist, 0, sizeof(hist));
    size_t n = len <= CLASS_SAMPLE ? len : CLASS_SAMPLE;
    size_t step = len <= CLASS_SAMPLE ? 0 : (len - SPAN) / (SPANS - 1);
    for (unsigned k = 0; k < (step ? SPANS : 1); k++) {
        /* Spans spread over the batch: a batch may straddle two kinds of content. */
        const uint8_t *s = b + (size_t)k * step;
        size_t m = step ? SPAN : n, i = 0;
        for (; i + 4 <= m; i += 4) {
            hist[0][s[i]]++;
            hist[1][s[i + 1]]++;
            hist[2][s[i + 2]]++;
            hist[3][s[i + 3]]++;
        }
        for (; i < m; i++)
            hist[0][s[i]]++;
    }
    if (!n)
        return 0.0;
    /* H = log2 n - sum(c log2 c) / n over the symbol counts c (four sums: no chain of adds). */
    double part[4] = {0, 0, 0, 0};
    unsigned seen = 0;
    for (unsigned v = 0; v < 256; v++) {
        unsigned c = (unsigned)hist[0][v] + hist[1][v] + hist[2][v] + hist[3][v];
        part[v & 3] += c < 256 ? (double)clog2c[c] : (double)c * log2((double)c);
        seen += c != 0;
    }
    double sum = (part[0] + part[1]) + (part[2] + part[3]);
    double h = log2((double)n) - sum / (double)n;
    if (step)
        h += (double)(seen - 1) / (2.0 * 0.69314718055994531) * (1.0 / (double)n - 1.0 / CLASS_TUNED_SAMPLE);
    return h;
}

unsigned vfmig__content_class(const void *p, size_t len)
{
    double h = vfmig__content_entropy(p, len);
    unsigned c = 0;
    while (c < VFMIG_CONTENT_CLASSES - 1 && h >= class_bound[c])
        c++;
    return c;
}

void vfmig__chooser_set_link(vfmig_chooser *ch, double link_bps)
{
    ch->link_bps = link_bps > 0 ? link_bps : 0;
}

void vfmig__chooser_set_link_busy(vfmig_chooser *ch, double fraction)
{
    ch->link_busy = fraction < 0 ? -1.0 : fraction;
    if (fraction < 0)
        return;
    if (fraction >= LINK_BUSY && ch->lambda > LAMBDA_MIN)
        ch->lambda /= LAMBDA_STEP;
    else if (fraction < LINK_IDLE && ch->lambda < LAMBDA_MAX)
        ch->lambda *= LAMBDA_STEP;
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

/* The estimates of the batch at hand's class. */
static const vfmig_codec_estimates *est_of(const vfmig_chooser *ch)
{
    return &ch->est[ch->cls];
}

static bool zstd_allowed(const vfmig_chooser *ch)
{
    return ch->link_bps > 0 &&
           ch->link_bps < ZSTD_LINK_FRACTION * est_of(ch)->speed[VFMIG_CODEC_LZ4] * workers_of(ch);
}

/* CPU seconds per input byte on the workers' whole cores... */
static double core_cpu_of(const vfmig_chooser *ch, int c)
{
    return 1.0 / (est_of(ch)->speed[c] * (ch->workers ? (double)ch->workers : 1.0));
}

/* ... and in wall time, at the share of their cores they get. */
static double cpu_of(const vfmig_chooser *ch, int c)
{
    return core_cpu_of(ch, c) / ch->cpu_share;
}

static double wire_of(const vfmig_chooser *ch, int c)
{
    return est_of(ch)->ratio[c] / ch->link_bps;
}

/*
 * Seconds per input byte with codec c. CPU and link overlap, so over the stream the total of
 * the saturated resource bounds the time, not the larger of the two modelled per batch: on a
 * link-bound mix of textures and incompressible pages zstd's CPU on the textures is free (the
 * cores wait for the wire anyway), and the model's CPU figures (encode time scaled by the core
 * share) cannot see how much CPU the rest of the pipeline leaves. So once the link's load is
 * measured, a codec costs its wire time plus its CPU time at a price `lambda` that the load
 * moves: while the link is saturated CPU gets cheaper (more compression, starting where it
 * saves the most wire per CPU second), while it is starved dearer. The price settles where the
 * CPUs just keep the link full. Unmeasured: the larger of the two per batch.
 */
static double cost(const vfmig_chooser *ch, int c)
{
    double wire = wire_of(ch, c);
    /* The price already holds what the core share would say, measured where it counts. */
    if (ch->link_busy >= 0)
        return wire + ch->lambda * core_cpu_of(ch, c);
    double cpu = cpu_of(ch, c);
    return cpu > wire ? cpu : wire;
}

/* Cost for deciding whether a probe is worth it: cost() or, with the link unknown, CPU. */
static double probe_cost(const vfmig_chooser *ch, int c)
{
    return ch->link_bps > 0 ? cost(ch, c) : cpu_of(ch, c);
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
            if (est_of(ch)->ratio[cand[i]] <= VERY_GOOD_RATIO && est_of(ch)->speed[cand[i]] > bs) {
                best = cand[i];
                bs = est_of(ch)->speed[cand[i]];
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

static int choose(vfmig_chooser *ch, bool has_ref)
{
    ch->batches++;
    bool zstd_ok = zstd_allowed(ch);
    /* Bootstrap: one sample of every candidate before trusting the model (RAW's prior is
     * good enough: it is a copy). */
    const vfmig_codec_estimates *e = est_of(ch);
    /* Two samples of lz4 where a link cap makes compression matter: the faster stands. With the
     * link unknown only a very good ratio pays (VERY_GOOD_RATIO), which bytes of 5 bits of
     * entropy and more do not reach in VRAM content (textures of classes 2-3 give 0.27-0.33):
     * those classes stay raw without a sample, and re-probes still look now and then. */
    if (e->samples[VFMIG_CODEC_LZ4] < (ch->link_bps > 0 ? 2u : ch->cls < UNKNOWN_LINK_CLASSES ? 1u : 0u))
        return VFMIG_CODEC_LZ4;
    if (has_ref && e->samples[VFMIG_CODEC_DELTA] == 0)
        return VFMIG_CODEC_DELTA;
    if (zstd_ok && e->samples[VFMIG_CODEC_ZSTD] == 0)
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
    return choose(ch, has_ref);
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
    vfmig_codec_estimates *e = &ch->est[ch->cls];
    if (e->samples[codec] == 0) {
        e->ratio[codec] = r;
        e->speed[codec] = s;
    } else if (e->samples[codec] == 1) {
        /* The first batch of a class often runs cold (faults, caches, a preemption): of the
         * first two speeds the faster stands, or one bad start keeps a codec out for good. */
        e->ratio[codec] = 0.5 * (e->ratio[codec] + r);
        if (s > e->speed[codec])
            e->speed[codec] = s;
    } else {
        /* A preempted worker makes one batch look many times slower. Ignore the speed of an
         * isolated far-too-slow sample (a second one in a row too), and bound how far any
         * sample pulls the estimate; real content changes persist, and show in the ratio at
         * once anyway. */
        double cur = e->speed[codec];
        if (s < cur / OUTLIER_FACTOR && e->slow_run[codec] < OUTLIER_SKIP) {
            e->slow_run[codec]++;
            s = cur;
        } else if (s >= cur / OUTLIER_FACTOR) {
            e->slow_run[codec] = 0;
        }
        if (s < cur / SPEED_STEP)
            s = cur / SPEED_STEP;
        if (s > cur * SPEED_STEP)
            s = cur * SPEED_STEP;
        e->ratio[codec] += EWMA_ALPHA * (r - e->ratio[codec]);
        e->speed[codec] += EWMA_ALPHA * (s - cur);
    }
    if (e->samples[codec] != UINT32_MAX)
        e->samples[codec]++;
}
