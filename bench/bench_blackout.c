/*
 * bench/bench_blackout.c - blackout of a live migration across workloads shaped like GPU kernels.
 *
 * Sweeps write size x pattern x hot set x throttle (each a list), N migrations each, of a
 * simulated VF with a live workload, both ends in this process over loopback TCP; the VF moves
 * back and forth between two simulators so no run pays the first touch of fresh memory. For each
 * configuration: blackout p50 and p95 (labelled "max" when there are too few runs for p95 to be
 * anything else), the policy's prediction against the actual blackout, the workload's slowdown
 * (its write rate before the migration / during pre-copy), the lowest throttle, switch-over
 * reasons and runs refused for the budget (VFMIG_EBUDGET). Then an idle VF at each --idle size
 * (the blackout must not grow with VRAM). The plain-socket loopback throughput of the same run is
 * printed beside it. --json-out writes every figure; --plot draws blackout against working set,
 * one line per configuration, with the budget (needs gnuplot: `bash setup.sh bench` installs it).
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "baseline.h"
#include "bench_opts.h"
#include "common/json.h"
#include "vfmig_sim.h"

#define MAXL 8

typedef struct cfg {
    uint64_t vram, page, idle[MAXL];
    int64_t wbytes[MAXL], hot_mib[MAXL], throttle[MAXL];
    int npat, nwb, nhot, nthr, nidle;
    int pattern[MAXL];
    double rate;
    int runs, streams, threads, codec, budget_ms, max_precopy_ms;
    const char *json_out, *plot;
} cfg;

typedef struct side {
    vfmig_listener *l;
    vfmig_session *s;
    int rc;
} side;

/* Workload bytes at the start of pre-copy and at the pause, from the source's phase events. */
typedef struct watch {
    vfmig_simvf *sim;
    double t0, t1;
    uint64_t b0, b1;
} watch;

static double now_s(void)
{
    return bench_now_s();
}

static uint64_t written(vfmig_simvf *sim)
{
    vfmig_simvf_counters c;
    vfmig_simvf_get_counters(sim, &c);
    return c.bytes_written;
}

static void on_event(const vfmig_event *ev, void *user)
{
    watch *w = user;
    if (ev->type != VFMIG_EV_PHASE)
        return;
    if (ev->phase == VFMIG_PHASE_PRECOPY) {
        w->t0 = now_s();
        w->b0 = written(w->sim);
    } else if (ev->phase == VFMIG_PHASE_BLACKOUT) {
        w->t1 = now_s();
        w->b1 = written(w->sim);
    }
}

static void *target_main(void *arg)
{
    side *t = arg;
    vfmig_link *link = NULL;
    t->rc = vfmig_accept(t->l, 30000, &link, NULL, 0);
    if (!t->rc)
        t->rc = vfmig_session_run(t->s, link);
    vfmig_link_close(link);
    return NULL;
}

static vfmig_session *session(const cfg *c, vfmig_role role, vfmig_simvf *sim, int throttle)
{
    vfmig_device dev;
    vfmig_simvf_device(sim, &dev);
    vfmig_session *s;
    char err[256];
    if (vfmig_session_create(role, &dev, &s, err, sizeof(err))) {
        fprintf(stderr, "session: %s\n", err);
        exit(1);
    }
    if (c->threads)
        vfmig_session_set_param(s, VFMIG_P_THREADS, c->threads);
    vfmig_session_set_param(s, VFMIG_P_CODEC, c->codec);
    vfmig_session_set_param(s, VFMIG_P_BUDGET_MS, c->budget_ms);
    vfmig_session_set_param(s, VFMIG_P_THROTTLE, throttle);
    vfmig_session_set_param(s, VFMIG_P_MAX_PRECOPY_MS, c->max_precopy_ms);
    return s;
}

/* One migration from `from` to `to`; fills the source's stats. Returns the source's status. */
static int migrate(const cfg *c, vfmig_simvf *from, vfmig_simvf *to, int throttle, vfmig_stats *st, watch *w)
{
    side t = {0};
    char ep[128], err[256];
    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:0?streams=%d", c->streams);
    if (vfmig_listen(ep, &t.l, err, sizeof(err))) {
        fprintf(stderr, "listen: %s\n", err);
        return VFMIG_EIO;
    }
    t.s = session(c, VFMIG_ROLE_TARGET, to, throttle);
    vfmig_session *s = session(c, VFMIG_ROLE_SOURCE, from, throttle);
    vfmig_session_set_callback(s, on_event, w);
    pthread_t th;
    pthread_create(&th, NULL, target_main, &t);
    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d?streams=%d", vfmig_listener_port(t.l), c->streams);
    vfmig_link *link = NULL;
    int rc = vfmig_connect(ep, 10000, &link, err, sizeof(err));
    if (!rc)
        rc = vfmig_session_run(s, link);
    else
        vfmig_session_cancel(t.s);
    pthread_join(th, NULL);
    vfmig_session_get_stats(s, st);
    if (rc && rc != VFMIG_EBUDGET)
        fprintf(stderr, "migration failed: %s / %s\n", vfmig_session_last_error(s), vfmig_session_last_error(t.s));
    vfmig_link_close(link);
    vfmig_listener_close(t.l);
    vfmig_session_destroy(s);
    vfmig_session_destroy(t.s);
    return rc ? rc : t.rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile (sorts v). */
static double pct(double *v, int n, double p)
{
    if (n <= 0)
        return NAN;
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    int k = (int)ceil(p / 100.0 * n) - 1;
    return v[k < 0 ? 0 : k];
}

static const char *pattern_name(int p)
{
    return p == VFMIG_PATTERN_HOT_SEQ ? "hot-seq" : "hot";
}

static int parse_patterns(const bench_cli *cli, const char *s, int *out)
{
    int n = 0;
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (n == MAXL)
            bench_fail(cli, "at most %d patterns", MAXL);
        if (!strcmp(tok, "hot"))
            out[n++] = VFMIG_PATTERN_HOT;
        else if (!strcmp(tok, "hot-seq"))
            out[n++] = VFMIG_PATTERN_HOT_SEQ;
        else
            bench_fail(cli, "'%s' is not hot or hot-seq", tok);
    }
    return n;
}

static int parse_sizes(const bench_cli *cli, const char *s, uint64_t *out)
{
    int n = 0;
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (n == MAXL)
            bench_fail(cli, "at most %d sizes", MAXL);
        out[n++] = bench_parse_size(cli, tok, 1 << 20, 1ull << 40);
    }
    return n;
}

typedef struct result {
    int write_bytes, pattern, hot_mib, throttle, runs_ok, budget_miss, failures;
    double p50, p95, pred_err, slowdown, throttle_min, predicted_p50;
    char reasons[96];
} result;

/* The configurations' runs of one simulator pair. */
static void run_config(const cfg *c, int wb, int pat, int hot, int thr, result *out)
{
    vfmig_simvf_config sc;
    vfmig_simvf_config_init(&sc);
    sc.vram_bytes = c->vram;
    sc.page_size = c->page;
    sc.pattern = pat;
    sc.hot_bytes = (uint64_t)hot << 20;
    sc.content = VFMIG_CONTENT_RANDOM;
    sc.write_bytes = (uint32_t)wb;
    vfmig_simvf *a, *b;
    if (vfmig_simvf_create(&sc, &a)) {
        fprintf(stderr, "cannot create the simulated VF\n");
        exit(1);
    }
    sc.content = VFMIG_CONTENT_ZERO;
    if (vfmig_simvf_create(&sc, &b)) {
        fprintf(stderr, "cannot create the simulated VF\n");
        exit(1);
    }
    double *bo = calloc((size_t)c->runs, sizeof(double)), *err = calloc((size_t)c->runs, sizeof(double)),
           *slow = calloc((size_t)c->runs, sizeof(double)), *pred = calloc((size_t)c->runs, sizeof(double));
    *out = (result){.write_bytes = wb, .pattern = pat, .hot_mib = hot, .throttle = thr, .throttle_min = 100};
    int reason_count[8] = {0};
    for (int run = 0; run < c->runs; run++) {
        vfmig_simvf *from = run % 2 ? b : a, *to = run % 2 ? a : b;
        vfmig_simvf_stop(to);
        vfmig_simvf_stop(from);
        vfmig_simvf_set_dirty_rate(to, 0);
        vfmig_simvf_set_dirty_rate(from, (uint64_t)c->rate);
        if (vfmig_simvf_start(from))
            exit(1);
        /* The workload's own rate, before anything of the migration runs. */
        struct timespec settle = {0, 50 * 1000000L}, window = {0, 150 * 1000000L};
        nanosleep(&settle, NULL);
        double t0 = now_s();
        uint64_t b0 = written(from);
        nanosleep(&window, NULL);
        double before = (double)(written(from) - b0) / (now_s() - t0);
        watch w = {.sim = from};
        vfmig_stats st;
        int rc = migrate(c, from, to, thr, &st, &w);
        if (rc == VFMIG_EBUDGET) {
            out->budget_miss++; /* the VF kept running on `from`; the next run starts from it too */
            continue;
        }
        if (rc) {
            out->failures++;
            continue;
        }
        int k = out->runs_ok++;
        bo[k] = (double)st.blackout_ns / 1e6;
        pred[k] = st.predicted_blackout_ms;
        err[k] = fabs(st.predicted_blackout_ms - bo[k]) / bo[k];
        double during = w.t1 > w.t0 ? (double)(w.b1 - w.b0) / (w.t1 - w.t0) : 0;
        slow[k] = before > 0 && during > 0 ? before / during : 1.0;
        if (st.throttle_min_percent && st.throttle_min_percent < out->throttle_min)
            out->throttle_min = st.throttle_min_percent;
        if ((unsigned)st.switch_reason < 8)
            reason_count[st.switch_reason]++;
    }
    int n = out->runs_ok;
    out->p50 = pct(bo, n, 50);
    out->p95 = pct(bo, n, 95);
    out->pred_err = pct(err, n, 50);
    out->slowdown = pct(slow, n, 50);
    out->predicted_p50 = pct(pred, n, 50);
    out->reasons[0] = 0;
    for (int r = 0; r < 8; r++)
        if (reason_count[r])
            snprintf(out->reasons + strlen(out->reasons), sizeof(out->reasons) - strlen(out->reasons), "%s%s:%d",
                     out->reasons[0] ? "," : "", vfmig_switch_reason_name((vfmig_switch_reason)r), reason_count[r]);
    free(bo);
    free(err);
    free(slow);
    free(pred);
    vfmig_simvf_destroy(a);
    vfmig_simvf_destroy(b);
}

/* An idle VF of `vram` bytes: p50 blackout of c->runs migrations. */
static double run_idle(const cfg *c, uint64_t vram)
{
    vfmig_simvf_config sc;
    vfmig_simvf_config_init(&sc);
    sc.vram_bytes = vram;
    sc.page_size = c->page;
    sc.content = VFMIG_CONTENT_RANDOM;
    vfmig_simvf *a, *b;
    if (vfmig_simvf_create(&sc, &a))
        return NAN;
    sc.content = VFMIG_CONTENT_ZERO;
    if (vfmig_simvf_create(&sc, &b)) {
        vfmig_simvf_destroy(a);
        return NAN;
    }
    double *bo = calloc((size_t)c->runs, sizeof(double));
    int ok = 0;
    for (int run = 0; run < c->runs; run++) {
        vfmig_simvf *from = run % 2 ? b : a, *to = run % 2 ? a : b;
        vfmig_simvf_stop(to);
        vfmig_simvf_stop(from);
        vfmig_simvf_set_dirty_rate(from, 0);
        vfmig_simvf_set_dirty_rate(to, 0);
        watch w = {.sim = from};
        vfmig_stats st;
        if (migrate(c, from, to, 1, &st, &w) == 0)
            bo[ok++] = (double)st.blackout_ns / 1e6;
    }
    double p = pct(bo, ok, 50);
    free(bo);
    vfmig_simvf_destroy(a);
    vfmig_simvf_destroy(b);
    return p;
}

static void plot(const cfg *c, const result *res, int nres)
{
    char data[512];
    snprintf(data, sizeof(data), "%s.dat", c->plot);
    FILE *f = fopen(data, "w");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", data);
        return;
    }
    /* One block per configuration (write size, pattern, throttle), x = hot set. */
    int blocks = 0;
    char titles[64][80];
    for (int wb = 0; wb < c->nwb; wb++)
        for (int p = 0; p < c->npat; p++)
            for (int t = 0; t < c->nthr; t++) {
                snprintf(titles[blocks], sizeof(titles[0]), "%d-byte writes, %s, %s", (int)c->wbytes[wb],
                         pattern_name(c->pattern[p]), c->throttle[t] ? "throttle allowed" : "no throttle");
                fprintf(f, "# %s\n", titles[blocks]);
                for (int i = 0; i < nres; i++)
                    if (res[i].write_bytes == c->wbytes[wb] && res[i].pattern == c->pattern[p] &&
                        res[i].throttle == c->throttle[t] && res[i].runs_ok)
                        fprintf(f, "%d %.3f %.3f\n", res[i].hot_mib, res[i].p50, res[i].p95);
                fprintf(f, "\n\n");
                blocks++;
            }
    fclose(f);
    char script[512];
    snprintf(script, sizeof(script), "%s.gp", c->plot);
    f = fopen(script, "w");
    if (!f)
        return;
    fprintf(f, "set terminal pngcairo size 1000,600 noenhanced\nset output '%s'\n", c->plot);
    fprintf(f, "set title 'vfmig blackout p50 (bars up to the %s of %d runs) - %llu MiB VF, %llu KiB pages, %.1f MB/s of writes'\n",
            c->runs >= 20 ? "p95" : "slowest", c->runs, (unsigned long long)(c->vram >> 20),
            (unsigned long long)(c->page >> 10), c->rate / 1e6);
    fprintf(f, "set xlabel 'hot set (MiB)'\nset ylabel 'blackout (ms)'\nset key top left\nset grid\n"
               "set logscale x 2\nset xrange [32:1024]\n");
    fprintf(f, "plot %d title 'budget (%d ms)' with lines dashtype 2 lw 2 lc rgb 'red'", c->budget_ms, c->budget_ms);
    for (int b = 0; b < blocks; b++)
        fprintf(f, ", '%s' index %d using 1:2:2:3 with yerrorlines title '%s'", data, b, titles[b]);
    fprintf(f, "\n");
    fclose(f);
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "gnuplot '%s' 2>/dev/null || gnuplot -e \"set terminal png size 1000,600\" '%s'",
             script, script);
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        fprintf(stderr, "no plot: gnuplot is not installed (bash setup.sh bench installs it); data in %s\n", data);
        return;
    }
    if (system(cmd) != 0)
        fprintf(stderr, "gnuplot failed on %s\n", script);
    else
        printf("plot: %s\n", c->plot);
}

int main(int argc, char **argv)
{
    cfg c = {.vram = 1ull << 30, .page = 4096, .rate = 15.2e6, .runs = 9, .streams = 2, .codec = VFMIG_CODEC_AUTO,
             .budget_ms = 50, .max_precopy_ms = 10000};
    c.wbytes[0] = 8;
    c.wbytes[1] = 4096;
    c.nwb = 2;
    c.pattern[0] = VFMIG_PATTERN_HOT;
    c.pattern[1] = VFMIG_PATTERN_HOT_SEQ;
    c.npat = 2;
    c.hot_mib[0] = 64;
    c.hot_mib[1] = 256;
    c.hot_mib[2] = 512;
    c.nhot = 3;
    c.throttle[0] = 1;
    c.throttle[1] = 0;
    c.nthr = 2;
    c.idle[0] = 256ull << 20;
    c.idle[1] = 4ull << 30;
    c.nidle = 2;
    static const bench_option opts[] = {
        {"vram", 'v', "SIZE", "VRAM of the VF (default 1G)"},
        {"page", 'p', "SIZE", "tracking page (default 4K)"},
        {"write-bytes", 'w', "LIST", "bytes per workload write (default 8,4096)"},
        {"patterns", 'P', "LIST", "hot | hot-seq (default hot,hot-seq)"},
        {"hot", 'H', "LIST", "hot sets in MiB (default 64,256,512)"},
        {"throttle", 't', "LIST", "1 throttle allowed, 0 not (default 1,0)"},
        {"rate", 'r', "MBPS", "workload bytes/s in MB/s (default 15.2: 1.9 M 8-byte writes/s)"},
        {"runs", 'n', "N", "migrations per configuration (default 9)"},
        {"streams", 's', "N", "TCP data streams (default 2)"},
        {"threads", 'T', "N", "workers per end (default: one per CPU)"},
        {"codec", 'c', "C", "auto | raw | lz4 | zstd | delta (default auto)"},
        {"budget-ms", 'b', "N", "blackout budget (default 50)"},
        {"max-precopy-ms", 'm', "N", "pre-copy limit before a budget miss aborts (default 10000)"},
        {"idle", 'i', "LIST", "VRAM sizes of an idle VF to migrate (default 256M,4G; 0 for none)"},
        {"json-out", 'j', "path.json", "write every figure as JSON"},
        {"plot", 'o', "path.png", "draw blackout against working set (gnuplot)"},
    };
    bench_cli cli;
    bench_cli_init(&cli, "bench_blackout", "Blackout of live migrations of a simulated VF under GPU-shaped workloads.",
                   opts, BENCH_NOPTS(opts));
    for (int id; (id = bench_cli_next(&cli, argc, argv)) != -1;) {
        switch (id) {
        case 'v': c.vram = bench_parse_size(&cli, optarg, 1 << 20, 1ull << 40); break;
        case 'p': c.page = bench_parse_size(&cli, optarg, 4096, 2 << 20); break;
        case 'w': c.nwb = bench_parse_int_list(&cli, optarg, c.wbytes, MAXL, 8, 2 << 20); break;
        case 'P': c.npat = parse_patterns(&cli, optarg, c.pattern); break;
        case 'H': c.nhot = bench_parse_int_list(&cli, optarg, c.hot_mib, MAXL, 1, 1 << 20); break;
        case 't': c.nthr = bench_parse_int_list(&cli, optarg, c.throttle, MAXL, 0, 1); break;
        case 'r': c.rate = bench_parse_double(&cli, optarg, 0, 1e6) * 1e6; break;
        case 'n': c.runs = (int)bench_parse_int(&cli, optarg, 1, 1000); break;
        case 's': c.streams = (int)bench_parse_int(&cli, optarg, 1, 64); break;
        case 'T': c.threads = (int)bench_parse_int(&cli, optarg, 1, 256); break;
        case 'c': c.codec = bench_parse_codec(&cli, optarg, 0); break;
        case 'b': c.budget_ms = (int)bench_parse_int(&cli, optarg, 1, 3600000); break;
        case 'm': c.max_precopy_ms = (int)bench_parse_int(&cli, optarg, 1, 86400000); break;
        case 'i':
            if (!strcmp(optarg, "0"))
                c.nidle = 0;
            else
                c.nidle = parse_sizes(&cli, optarg, c.idle);
            break;
        case 'j': c.json_out = optarg; break;
        case 'o': c.plot = optarg; break;
        }
    }
    for (int i = 0; i < c.nwb; i++)
        if ((uint64_t)c.wbytes[i] > c.page)
            bench_fail(&cli, "--write-bytes %d is larger than the page", (int)c.wbytes[i]);
    for (int i = 0; i < c.nhot; i++)
        if (((uint64_t)c.hot_mib[i] << 20) > c.vram)
            bench_fail(&cli, "--hot %d MiB is larger than the VF", (int)c.hot_mib[i]);

    bench_tcp_result base;
    if (bench_tcp_baseline(2ull << 30, 1, 1 << 20, &base)) {
        fprintf(stderr, "baseline socket test failed\n");
        return 1;
    }
    const char *pname = c.runs >= 20 ? "p95" : "max";
    printf("loopback TCP baseline (plain sockets, 1 stream, 1 MiB writes): %.2f GB/s\n"
           "VF %llu MiB, %llu KiB pages, random content, workload %.1f MB/s, budget %d ms, %d runs each"
           " (%s: %s of the runs)\n\n",
           base.gbps, (unsigned long long)(c.vram >> 20), (unsigned long long)(c.page >> 10), c.rate / 1e6,
           c.budget_ms, c.runs, pname, c.runs >= 20 ? "95th percentile" : "the slowest");
    printf("%6s %-8s %7s %8s | %8s %8s %9s %8s %8s %6s %6s  %s\n", "write", "pattern", "hot MiB", "throttle",
           "bo p50", pname, "pred p50", "pred err", "slowdown", "min %", "miss", "switch reasons");
    int nres = 0, maxres = c.nwb * c.npat * c.nhot * c.nthr;
    result *res = calloc((size_t)maxres, sizeof(result));
    int failures = 0;
    for (int wb = 0; wb < c.nwb; wb++)
        for (int p = 0; p < c.npat; p++)
            for (int h = 0; h < c.nhot; h++)
                for (int t = 0; t < c.nthr; t++) {
                    result *r = &res[nres++];
                    run_config(&c, (int)c.wbytes[wb], c.pattern[p], (int)c.hot_mib[h], (int)c.throttle[t], r);
                    failures += r->failures;
                    printf("%6d %-8s %7d %8s | %8.2f %8.2f %9.2f %7.0f%% %8.2f %6.0f %6d  %s\n", r->write_bytes,
                           pattern_name(r->pattern), r->hot_mib, r->throttle ? "allowed" : "no", r->p50, r->p95,
                           r->predicted_p50, r->pred_err * 100, r->slowdown, r->throttle_min, r->budget_miss,
                           r->reasons);
                    fflush(stdout);
                }
    double idle[MAXL];
    if (c.nidle)
        printf("\nidle VF (nothing dirty): blackout p50\n");
    for (int i = 0; i < c.nidle; i++) {
        idle[i] = run_idle(&c, c.idle[i]);
        printf("  %6llu MiB: %6.2f ms%s", (unsigned long long)(c.idle[i] >> 20), idle[i],
               i ? "" : "\n");
        if (i)
            printf("  (%.2fx the %llu MiB figure)\n", idle[i] / idle[0], (unsigned long long)(c.idle[0] >> 20));
    }
    if (c.json_out) {
        FILE *f = fopen(c.json_out, "w");
        if (f) {
            /* A NaN (no successful run) is written as 0, as the plot expects. */
#define NZ(x) (isnan(x) ? 0 : (x))
            vfmig_json j;
            vfmig__json_init(&j, f);
            vfmig__json_object(&j, NULL);
            vfmig__json_num(&j, "baseline_tcp_gbps", base.gbps, 3);
            vfmig__json_u64(&j, "vram", c.vram);
            vfmig__json_u64(&j, "page", c.page);
            vfmig__json_num(&j, "rate", c.rate, 0);
            vfmig__json_i64(&j, "budget_ms", c.budget_ms);
            vfmig__json_i64(&j, "runs", c.runs);
            vfmig__json_str(&j, "tail", pname);
            vfmig__json_array(&j, "configs");
            for (int i = 0; i < nres; i++) {
                const result *r = &res[i];
                vfmig__json_object(&j, NULL);
                vfmig__json_i64(&j, "write_bytes", r->write_bytes);
                vfmig__json_str(&j, "pattern", pattern_name(r->pattern));
                vfmig__json_i64(&j, "hot_mib", r->hot_mib);
                vfmig__json_bool(&j, "throttle", r->throttle);
                vfmig__json_i64(&j, "runs_ok", r->runs_ok);
                vfmig__json_num(&j, "blackout_p50_ms", NZ(r->p50), 3);
                vfmig__json_num(&j, "blackout_tail_ms", NZ(r->p95), 3);
                vfmig__json_num(&j, "predicted_p50_ms", NZ(r->predicted_p50), 3);
                vfmig__json_num(&j, "prediction_error_p50", NZ(r->pred_err), 4);
                vfmig__json_num(&j, "workload_slowdown_p50", NZ(r->slowdown), 3);
                vfmig__json_num(&j, "throttle_min_percent", r->throttle_min, 0);
                vfmig__json_i64(&j, "budget_miss", r->budget_miss);
                vfmig__json_i64(&j, "failures", r->failures);
                vfmig__json_str(&j, "reasons", r->reasons);
                vfmig__json_end(&j);
            }
            vfmig__json_end(&j);
            vfmig__json_array(&j, "idle");
            for (int i = 0; i < c.nidle; i++) {
                vfmig__json_object(&j, NULL);
                vfmig__json_u64(&j, "vram", c.idle[i]);
                vfmig__json_num(&j, "blackout_p50_ms", NZ(idle[i]), 3);
                vfmig__json_end(&j);
            }
            vfmig__json_end(&j);
            vfmig__json_i64(&j, "failures", failures);
            vfmig__json_end(&j);
            fputc('\n', f);
#undef NZ
            fclose(f);
        }
    }
    if (c.plot)
        plot(&c, res, nres);
    free(res);
    if (failures)
        printf("%d migrations failed\n", failures);
    return failures ? 1 : 0;
}
