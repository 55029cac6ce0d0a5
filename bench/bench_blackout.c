/*
 * bench/bench_blackout.c - blackout of a live migration across dirty rates.
 *
 *   bench_blackout [--vram SIZE_MIB] [--page KIB] [--hot MIB] [--rates MBPS,...] [--runs N]
 *                  [--streams N] [--threads N] [--codec N] [--bandwidth MBPS] [--json]
 *
 * For each dirty rate, N migrations of a simulated VF with a hot-set workload, both ends in this
 * process over loopback TCP, the VF kept between runs (it moves back and forth so no run pays the
 * first touch of fresh memory). Prints p50/p99 of blackout and total time, rounds, final dirty
 * pages and bytes on the wire, beside the plain-socket loopback throughput measured in the same
 * run (the link's limit on this machine).
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "baseline.h"
#include "vfmig.h"

typedef struct cfg {
    uint64_t vram_mib, page_kib, hot_mib;
    double rates[16];
    int nrates, runs, streams, threads, codec, json;
    double bandwidth_mbps;
} cfg;

typedef struct side {
    vfmig_listener *l;
    vfmig_session *s;
    int rc;
} side;

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

static vfmig_session *session(const cfg *c, vfmig_role role, vfmig_simvf *sim)
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
    if (c->bandwidth_mbps > 0)
        vfmig_session_set_param(s, VFMIG_P_MAX_BANDWIDTH, (int64_t)(c->bandwidth_mbps * 1e6));
    return s;
}

/* One migration from `from` to `to`; fills the source's stats. */
static int migrate(const cfg *c, vfmig_simvf *from, vfmig_simvf *to, vfmig_stats *st)
{
    side t = {0};
    char ep[128], err[256];
    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:0?streams=%d", c->streams);
    if (vfmig_listen(ep, &t.l, err, sizeof(err))) {
        fprintf(stderr, "listen: %s\n", err);
        return -1;
    }
    t.s = session(c, VFMIG_ROLE_TARGET, to);
    vfmig_session *s = session(c, VFMIG_ROLE_SOURCE, from);
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
    if (rc || t.rc)
        fprintf(stderr, "migration failed: %s / %s\n", vfmig_session_last_error(s), vfmig_session_last_error(t.s));
    vfmig_link_close(link);
    vfmig_listener_close(t.l);
    vfmig_session_destroy(s);
    vfmig_session_destroy(t.s);
    return rc || t.rc ? -1 : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile. */
static double pct(double *v, int n, double p)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    int k = (int)ceil(p / 100.0 * n) - 1;
    return v[k < 0 ? 0 : k];
}

int main(int argc, char **argv)
{
    cfg c = {.vram_mib = 1024, .page_kib = 4, .hot_mib = 64, .runs = 5, .streams = 1, .codec = VFMIG_CODEC_AUTO};
    double defrates[] = {0, 50, 200, 800};
    memcpy(c.rates, defrates, sizeof(defrates));
    c.nrates = 4;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) {
            c.json = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "%s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--vram")) c.vram_mib = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--page")) c.page_kib = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--hot")) c.hot_mib = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--runs")) c.runs = atoi(v);
        else if (!strcmp(a, "--streams")) c.streams = atoi(v);
        else if (!strcmp(a, "--threads")) c.threads = atoi(v);
        else if (!strcmp(a, "--codec")) c.codec = atoi(v);
        else if (!strcmp(a, "--bandwidth")) c.bandwidth_mbps = atof(v);
        else if (!strcmp(a, "--rates")) {
            c.nrates = 0;
            for (char *p = (char *)v; *p && c.nrates < 16;) {
                c.rates[c.nrates++] = strtod(p, &p);
                if (*p == ',')
                    p++;
                else
                    break;
            }
        } else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    if (c.runs < 1 || c.runs > 1000 || !c.vram_mib || !c.page_kib)
        return 2;

    bench_tcp_result base;
    if (bench_tcp_baseline(4ull << 30, 1, 1 << 20, &base)) {
        fprintf(stderr, "baseline socket test failed\n");
        return 1;
    }
    if (!c.json)
        printf("loopback TCP baseline (plain sockets, 1 stream, 1 MiB writes): %.2f GB/s\n"
               "VF %llu MiB, %llu KiB pages, hot set %llu MiB, %d stream(s), codec %s, %d runs per rate\n\n"
               "%-9s %9s %9s %9s %9s %7s %11s %10s\n",
               base.gbps, (unsigned long long)c.vram_mib, (unsigned long long)c.page_kib,
               (unsigned long long)c.hot_mib, c.streams, vfmig_codec_name(c.codec), c.runs, "MB/s",
               "bo p50", "bo p99", "tot p50", "tot p99", "rounds", "final pages", "wire MiB");
    else
        printf("{\"baseline_tcp_gbps\":%.3f,\"vram_mib\":%llu,\"page_kib\":%llu,\"hot_mib\":%llu,\"streams\":%d,"
               "\"codec\":\"%s\",\"runs\":%d,\"rates\":[",
               base.gbps, (unsigned long long)c.vram_mib, (unsigned long long)c.page_kib,
               (unsigned long long)c.hot_mib, c.streams, vfmig_codec_name(c.codec), c.runs);

    vfmig_simvf_config sc;
    vfmig_simvf_config_init(&sc);
    sc.vram_bytes = c.vram_mib << 20;
    sc.page_size = c.page_kib << 10;
    sc.pattern = VFMIG_PATTERN_HOT;
    sc.hot_bytes = c.hot_mib << 20;
    sc.content = VFMIG_CONTENT_MIX;
    vfmig_simvf *a, *b;
    if (vfmig_simvf_create(&sc, &a))
        return 1;
    sc.content = VFMIG_CONTENT_ZERO;
    if (vfmig_simvf_create(&sc, &b))
        return 1;

    double *bo = calloc((size_t)c.runs, sizeof(double)), *tot = calloc((size_t)c.runs, sizeof(double));
    int failures = 0;
    for (int ri = 0; ri < c.nrates; ri++) {
        double rounds = 0, final_pages = 0, wire = 0;
        int ok = 0;
        for (int run = 0; run < c.runs; run++) {
            /* The VF runs on `a`; it migrates to `b`, then the roles swap. */
            vfmig_simvf *from = run % 2 ? b : a, *to = run % 2 ? a : b;
            vfmig_simvf_stop(to);
            vfmig_simvf_stop(from);
            vfmig_simvf_set_dirty_rate(from, (uint64_t)(c.rates[ri] * 1e6));
            vfmig_simvf_set_dirty_rate(to, 0);
            if (vfmig_simvf_start(from))
                return 1;
            vfmig_stats st;
            if (migrate(&c, from, to, &st)) {
                failures++;
                continue;
            }
            bo[ok] = (double)st.blackout_ns / 1e6;
            tot[ok] = (double)st.total_ns / 1e6;
            rounds += st.rounds;
            final_pages += (double)st.final_dirty_pages;
            wire += (double)st.bytes_wire / 1048576.0;
            ok++;
        }
        if (!ok)
            continue;
        double p50 = pct(bo, ok, 50), p99 = pct(bo, ok, 99), t50 = pct(tot, ok, 50), t99 = pct(tot, ok, 99);
        if (!c.json)
            printf("%-9.0f %9.2f %9.2f %9.0f %9.0f %7.1f %11.0f %10.1f\n", c.rates[ri], p50, p99, t50, t99,
                   rounds / ok, final_pages / ok, wire / ok);
        else
            printf("%s{\"dirty_mbps\":%.0f,\"blackout_p50_ms\":%.3f,\"blackout_p99_ms\":%.3f,\"total_p50_ms\":%.1f,"
                   "\"total_p99_ms\":%.1f,\"rounds\":%.2f,\"final_pages\":%.1f,\"wire_mib\":%.1f,\"ok_runs\":%d}",
                   ri ? "," : "", c.rates[ri], p50, p99, t50, t99, rounds / ok, final_pages / ok, wire / ok, ok);
    }
    if (c.json)
        printf("],\"failures\":%d}\n", failures);
    else if (failures)
        printf("%d migrations failed\n", failures);
    free(bo);
    free(tot);
    vfmig_simvf_destroy(a);
    vfmig_simvf_destroy(b);
    return failures ? 1 : 0;
}
