/*
 * bench/bench_opts.h - option parsing shared by the bench programs: getopt_long from one table
 * that also writes --help, and value parsers that refuse what they cannot read. A benchmark that
 * silently runs with a default ("--codec lz4" read as 0 = auto) prints a wrong figure, so every
 * bad value exits 2 naming the option and what was wrong.
 *
 *   static const bench_option opts[] = {
 *       {"codec", 'c', "C", "auto | raw | lz4 | zstd | delta (default auto)"},
 *       {"json", 'j', NULL, "one JSON object on stdout"},
 *   };
 *   bench_cli cli;
 *   bench_cli_init(&cli, "bench_x", "What it measures.", opts, BENCH_NOPTS(opts));
 *   for (int id; (id = bench_cli_next(&cli, argc, argv)) != -1;)
 *       switch (id) {
 *       case 'c': codec = bench_parse_codec(&cli, optarg); break;
 *       case 'j': json = 1; break;
 *       }
 *
 * Header-only (static functions): each bench program is one executable.
 */
#ifndef VFMIG_BENCH_OPTS_H
#define VFMIG_BENCH_OPTS_H

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vfmig.h"

#define BENCH_MAX_OPTS 40
#define BENCH_NOPTS(a) (sizeof(a) / sizeof((a)[0]))

typedef struct bench_option {
    const char *name; /* long name, without "--" */
    int id;           /* what bench_cli_next returns for it (not 'h', '?' or ':') */
    const char *meta; /* value placeholder for --help ("N", "SIZE"), NULL: takes no value */
    const char *help; /* one line */
} bench_option;

typedef struct bench_cli {
    const char *prog, *summary;
    const bench_option *opts;
    size_t nopts;
    const char *current; /* the option being handled, for messages */
    struct option lo[BENCH_MAX_OPTS + 2];
} bench_cli;

static inline void bench_cli_help(const bench_cli *c, FILE *f)
{
    fprintf(f, "usage: %s [OPTIONS]\n%s\n\n", c->prog, c->summary);
    for (size_t i = 0; i < c->nopts; i++) {
        char lhs[64];
        snprintf(lhs, sizeof(lhs), "--%s%s%s", c->opts[i].name, c->opts[i].meta ? " " : "",
                 c->opts[i].meta ? c->opts[i].meta : "");
        fprintf(f, "  %-24s %s\n", lhs, c->opts[i].help);
    }
    fprintf(f, "  %-24s %s\n", "-h, --help", "this text");
}

static inline void bench_fail(const bench_cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static inline void bench_fail(const bench_cli *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", c->prog);
    if (c->current)
        fprintf(stderr, "--%s: ", c->current);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see %s --help)\n", c->prog);
    va_end(ap);
    exit(2);
}

static inline void bench_cli_init(bench_cli *c, const char *prog, const char *summary, const bench_option *opts,
                           size_t nopts)
{
    memset(c, 0, sizeof(*c));
    c->prog = prog;
    c->summary = summary;
    c->opts = opts;
    c->nopts = nopts;
    if (nopts > BENCH_MAX_OPTS)
        bench_fail(c, "too many options for bench_opts.h (raise BENCH_MAX_OPTS)");
    for (size_t i = 0; i < nopts; i++)
        c->lo[i] = (struct option){opts[i].name, opts[i].meta ? required_argument : no_argument, NULL, opts[i].id};
    c->lo[nopts] = (struct option){"help", no_argument, NULL, 'h'};
}

/* The next option's id (its value in optarg), or -1 when all are read. --help prints and exits 0;
 * an unknown option, a missing value or a stray argument exits 2. */
static inline int bench_cli_next(bench_cli *c, int argc, char **argv)
{
    opterr = 0;
    c->current = NULL;
    int id = getopt_long(argc, argv, ":h", c->lo, NULL);
    const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
    switch (id) {
    case -1:
        if (optind < argc)
            bench_fail(c, "unexpected argument '%s'", argv[optind]);
        return -1;
    case 'h':
        bench_cli_help(c, stdout);
        exit(0);
    case ':':
        bench_fail(c, "%s needs a value", arg);
    case '?':
        bench_fail(c, "unknown option '%s'", arg);
    default:
        break;
    }
    for (size_t i = 0; i < c->nopts; i++)
        if (c->opts[i].id == id)
            c->current = c->opts[i].name;
    return id;
}

/* A whole number in [min, max]. */
static inline int64_t bench_parse_int(const bench_cli *c, const char *s, int64_t min, int64_t max)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (errno || end == s || *end)
        bench_fail(c, "'%s' is not a whole number", s);
    if (v < min || v > max)
        bench_fail(c, "%lld is out of range %" PRId64 "..%" PRId64, v, min, max);
    return v;
}

/* A number in [min, max]. */
static inline double bench_parse_double(const bench_cli *c, const char *s, double min, double max)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max))
        bench_fail(c, "'%s' is not a number in %g..%g", s, min, max);
    return v;
}

/* Bytes: "4096", "64K", "256M", "4G" (binary multiples), in [min, max]. */
static inline uint64_t bench_parse_size(const bench_cli *c, const char *s, uint64_t min, uint64_t max)
{
    char *end;
    errno = 0;
    if (*s == '-')
        bench_fail(c, "'%s' is not a size", s);
    unsigned long long v = strtoull(s, &end, 10);
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: break;
    }
    if (errno || end == s || *end || (shift && v > (UINT64_MAX >> shift)))
        bench_fail(c, "'%s' is not a size (e.g. 4096, 64K, 256M, 4G)", s);
    uint64_t b = (uint64_t)v << shift;
    if (b < min || b > max)
        bench_fail(c, "%s is out of range %" PRIu64 "..%" PRIu64 " bytes", s, min, max);
    return b;
}

/* A codec by name ("auto", "raw", "lz4", "zstd", "delta"; "zero" only with allow_zero). */
static inline int bench_parse_codec(const bench_cli *c, const char *s, int allow_zero)
{
    for (int k = 0; k < VFMIG_CODEC_COUNT; k++)
        if (!strcmp(s, vfmig_codec_name(k)) && (k != VFMIG_CODEC_ZERO || allow_zero))
            return k;
    bench_fail(c, "'%s' is not auto, raw, lz4, zstd or delta", s);
}

/* A comma-separated list of whole numbers in [min, max], at most `cap` of them; returns the count. */
static inline int bench_parse_int_list(const bench_cli *c, const char *s, int64_t *out, int cap, int64_t min, int64_t max)
{
    int n = 0;
    const char *p = s;
    for (;;) {
        char item[32];
        size_t len = strcspn(p, ",");
        if (!len || len >= sizeof(item))
            bench_fail(c, "'%s' is not a list like 1,2,4", s);
        if (n == cap)
            bench_fail(c, "'%s': at most %d values", s, cap);
        memcpy(item, p, len);
        item[len] = 0;
        out[n++] = bench_parse_int(c, item, min, max);
        if (!p[len])
            return n;
        p += len + 1;
    }
}

/* A comma-separated list of numbers in [min, max] (bench_parse_int_list for doubles). */
static inline int bench_parse_double_list(const bench_cli *c, const char *s, double *out, int cap, double min, double max)
{
    int n = 0;
    const char *p = s;
    for (;;) {
        char item[48];
        size_t len = strcspn(p, ",");
        if (!len || len >= sizeof(item))
            bench_fail(c, "'%s' is not a list like 0,50,200", s);
        if (n == cap)
            bench_fail(c, "'%s': at most %d values", s, cap);
        memcpy(item, p, len);
        item[len] = 0;
        out[n++] = bench_parse_double(c, item, min, max);
        if (!p[len])
            return n;
        p += len + 1;
    }
}

#endif
