/*
 * cli/main.c - the `vfmig` command: migrate a simulated VF between two processes (source,
 * target) or inside one (local), printing a round table and blackout breakdown for people, or
 * one JSON object for tools (--json).
 *
 * Exit codes: 0 migrated, 1 migration failed (the VF runs on the source), 2 bad usage,
 * 3 outcome in doubt (the target was told to resume and the link broke before it confirmed: the
 *   VF is left paused on the source; resume it wherever the target side says it is not running).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_getaffinity and the CPU_*_S macros (--pin) */
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vfmig_sim.h"

#include "cli/key.h"
#include "common/json.h"

/* An option not given keeps the library's default. */
#define NOTSET INT64_MIN
/* --max-bandwidth's floor, bytes/s: 1 MiB/s moves 1 GiB in 17 minutes; 1 byte/s would take days
 * over the handshake alone. */
#define MIN_BANDWIDTH (INT64_C(1) << 20)

typedef struct opts {
    const char *cmd;
    const char *endpoint;
    vfmig_simvf_config sim;
    uint32_t target_state_version; /* 0 = same as source */
    int64_t budget_ms, max_rounds, max_precopy_ms, timeout_ms, threads, codec, level;
    int64_t max_bandwidth, delta_cache, batch_bytes, throttle, readback, numa_node, encrypt, budget_miss;
    int accept_timeout_ms;
    const char *pin;
    const char *psk_file;
    bool psk_pass;             /* psk_file holds a passphrase (--psk-passphrase): stretched */
    uint8_t psk[257];
    size_t psk_len;
    /* serve / keys (issue 13) */
    const char *psk_file2;     /* a second key: the one being rotated out (target, serve) */
    bool psk2_pass;
    uint8_t psk2[257];
    size_t psk2_len;
    /* As given, checked once all options are read (issue 18): */
    uint64_t write_bytes;      /* 0: the simulated VF's default */
    bool no_readback;          /* --no-readback (= --verify applied) */
    bool verify_given;         /* --verify */
    bool insecure;             /* listen beyond loopback without a key */
    unsigned max_sessions;     /* serve: 0 = the library's default */
    uint64_t max_vram;         /* serve --max-vram: 0 = --vram */
    uint64_t max_memory;       /* serve --max-memory: 0 = the library's default */
    const char *codec_str;
    const char *pattern_str;
    const char *content_str;
    const char *device_str; /* --device: sim | hash | hostmem | cuda */
    bool json, verbose, quiet;
    int progress; /* PROGRESS_* */
} opts;

enum { PROGRESS_NONE, PROGRESS_BAR, PROGRESS_JSON };

/* What the event callback needs: the options, and the source's VF to measure its workload. */
typedef struct cbctx {
    const struct opts *o;
    vfmig_simvf *sim;                  /* source VF, or NULL */
    uint64_t pc_t0, pc_b0, pc_t1, pc_b1; /* workload bytes at pre-copy start and at the pause */
    bool no_progress;                  /* local: only the source's progress is shown */
} cbctx;

typedef struct report {
    const char *role;
    int status;
    char error[600];
    vfmig_stats st;
    vfmig_round_stats *rounds;
    uint32_t nrounds;
    /* Per-codec figures, asked of the library by codec index: ncodecs for the session, then
     * ncodecs for each round (row 1 + round index). */
    vfmig_codec_stats *codecs;
    unsigned ncodecs;
    int byte_compare; /* local: -1 not done, 0 differs, 1 equal */
    double pre_rate;  /* workload bytes/s measured just before the migration (0: none) */
    double cpu0, cpu; /* process CPU seconds when the migration started, and spent in it */
    double slowdown;  /* workload rate before / during pre-copy (1: no workload) */
    cbctx cb;
    char endpoint[400];
    const char *dirty_source;       /* the source VF's (--device) */
    vfmig_tracking_stats tracking;  /* its dirty tracking cost */
} report;

/* ------------------------------------------------------------------------------------------ */
/* Parsing of sizes, rates and enums: errors name the option and what was wrong.              */
/* ------------------------------------------------------------------------------------------ */

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "vfmig: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see vfmig --help)\n");
    va_end(ap);
    exit(2);
}

static const char *human_bytes(uint64_t b, char *buf, size_t n)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
    return buf;
}

/* Numbers are read at 64 bits with every error checked (no sign, no blanks, no overflow, no
 * rounding through a double), and range-checked with the option's name before they are narrowed
 * into a field. A decimal fraction takes up to 6 digits ("1.5G"). */
typedef struct decimal {
    uint64_t whole;
    uint64_t frac;    /* the digits after the point, as a number */
    uint64_t frac_div; /* 10^(number of those digits), 1 without a point */
} decimal;

/* The number at the start of `s` (digits, optionally '.' and up to 6 more); the rest in *rest.
 * false when there is no number or it overflows. */
static bool parse_decimal(const char *s, decimal *d, const char **rest)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return false;
    *d = (decimal){.whole = v, .frac = 0, .frac_div = 1};
    if (*end == '.') {
        end++;
        for (int n = 0; *end >= '0' && *end <= '9'; n++, end++) {
            if (n == 6)
                return false;
            d->frac = d->frac * 10 + (uint64_t)(*end - '0');
            d->frac_div *= 10;
        }
    }
    *rest = end;
    return true;
}

/* d * mul / div, truncated; false on overflow, or when `exact` and it is not a whole number. */
static bool decimal_scale(const decimal *d, uint64_t mul, uint64_t div, bool exact, uint64_t *out)
{
    uint64_t a, b = d->frac * mul; /* frac < 10^6 and mul <= 2^40: no overflow */
    if (__builtin_mul_overflow(d->whole, mul, &a) || __builtin_add_overflow(a, b / d->frac_div, &a))
        return false;
    if (exact && (b % d->frac_div || a % div))
        return false;
    *out = a / div;
    return true;
}

/* "1G", "512M", "4K", "4096", "1.5G": binary multiples, a whole number of bytes. */
static uint64_t parse_size(const char *opt, const char *s)
{
    decimal d;
    const char *end;
    if (!parse_decimal(s, &d, &end))
        usage_error("%s: '%s' is not a size (use e.g. 4K, 512M, 1G)%s", opt, s ? s : "",
                    s && *s >= '0' && *s <= '9' ? ", or it is too large" : "");
    uint64_t mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1ull << 10; end++; break;
    case 'm': case 'M': mul = 1ull << 20; end++; break;
    case 'g': case 'G': mul = 1ull << 30; end++; break;
    case 't': case 'T': mul = 1ull << 40; end++; break;
    default: break;
    }
    if (mul > 1 && (*end == 'i' || *end == 'I'))
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end)
        usage_error("%s: '%s' is not a size (use e.g. 4K, 512M, 1G)", opt, s);
    uint64_t r;
    if (!decimal_scale(&d, mul, 1, false, &r))
        usage_error("%s: '%s' is too large (at most %" PRIu64 " bytes)", opt, s, UINT64_MAX);
    if (!decimal_scale(&d, mul, 1, true, &r))
        usage_error("%s: '%s' is not a whole number of bytes", opt, s);
    return r;
}

/* Bytes per second: "200M" (binary, like sizes; a fraction is truncated to whole bytes), or bits
 * with a decimal unit: "10Gbit". */
static uint64_t parse_rate(const char *opt, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (s && n && (s[n - 1] == 's' || s[n - 1] == 'S'))
        usage_error("%s: '%s': give the rate without '/s' (e.g. 200M means 200 MiB/s)", opt, s);
    decimal d;
    const char *end;
    if (!parse_decimal(s, &d, &end))
        usage_error("%s: '%s' is not a rate (use e.g. 200M for bytes/s or 10Gbit), or it is too large", opt,
                    s ? s : "");
    bool bits = n > 3 && !strcasecmp(s + n - 3, "bit");
    uint64_t mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = bits ? 1000 : 1ull << 10; end++; break;
    case 'm': case 'M': mul = bits ? 1000000 : 1ull << 20; end++; break;
    case 'g': case 'G': mul = bits ? 1000000000 : 1ull << 30; end++; break;
    case 't': case 'T': mul = bits ? 1000000000000ull : 1ull << 40; end++; break;
    default: break;
    }
    if (!bits && mul > 1 && (*end == 'i' || *end == 'I'))
        end++;
    if (!bits && (*end == 'b' || *end == 'B'))
        end++;
    if (bits ? strcasecmp(end, "bit") : *end != 0)
        usage_error("%s: '%s' is not a rate (use e.g. 200M for bytes/s or 10Gbit)", opt, s);
    uint64_t r;
    if (!decimal_scale(&d, mul, bits ? 8 : 1, false, &r))
        usage_error("%s: '%s' is too large", opt, s);
    return r;
}

/* A whole number in min..max (at 64 bits: strtoll, every error checked). */
static int64_t parse_int(const char *opt, const char *s, int64_t min, int64_t max)
{
    char *end;
    errno = 0;
    if (!s || !((*s >= '0' && *s <= '9') || (*s == '-' && s[1] >= '0' && s[1] <= '9')))
        usage_error("%s: '%s' is not a whole number", opt, s ? s : "");
    long long v = strtoll(s, &end, 10);
    if (*end)
        usage_error("%s: '%s' is not a whole number", opt, s);
    if (errno == ERANGE || v < min || v > max)
        usage_error("%s: %s is out of range %" PRId64 "..%" PRId64, opt, s, min, max);
    return v;
}

/* An unsigned 64-bit number (a seed): strtoull, every error checked. */
static uint64_t parse_u64(const char *opt, const char *s)
{
    decimal d;
    const char *end;
    if (!parse_decimal(s, &d, &end) || *end || d.frac_div != 1)
        usage_error("%s: '%s' is not a whole number from 0 to %" PRIu64, opt, s ? s : "", UINT64_MAX);
    return d.whole;
}

/* A size in lo..hi, said in the message in the option's own units. */
static uint64_t check_size(const char *opt, uint64_t v, uint64_t lo, uint64_t hi)
{
    if (v < lo || v > hi) {
        char a[32], b[32], c[32];
        usage_error("%s: %s is out of range %s..%s", opt, human_bytes(v, c, sizeof(c)), human_bytes(lo, a, sizeof(a)),
                    human_bytes(hi, b, sizeof(b)));
    }
    return v;
}

static int64_t parse_param(const char *opt, const char *s, vfmig_param p)
{
    int64_t min, max;
    vfmig_param_bounds(p, &min, &max, NULL);
    return parse_int(opt, s, min, max);
}

/* A size option the library bounds (vfmig_param_bounds). */
static int64_t parse_size_param(const char *opt, const char *s, vfmig_param p)
{
    int64_t min, max;
    vfmig_param_bounds(p, &min, &max, NULL);
    return (int64_t)check_size(opt, parse_size(opt, s), (uint64_t)min, (uint64_t)max);
}

/* The index of `s` in the NULL-terminated `words` (an option's keywords, in the order of their
 * values), or a usage error listing them. */
static int parse_word(const char *opt, const char *s, const char *const *words)
{
    char list[200] = "";
    for (int i = 0; words[i]; i++) {
        if (!strcmp(s, words[i]))
            return i;
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "", words[i]);
    }
    usage_error("%s: '%s' is not one of %s", opt, s, list);
}

static void parse_pattern(opts *o, const char *s)
{
    if (!strcmp(s, "uniform")) {
        o->sim.pattern = VFMIG_PATTERN_UNIFORM;
    } else if (!strcmp(s, "seq")) {
        o->sim.pattern = VFMIG_PATTERN_SEQ;
    } else if (!strncmp(s, "hot:", 4) || !strncmp(s, "hot-seq:", 8)) {
        bool seq = s[3] == '-';
        o->sim.pattern = seq ? VFMIG_PATTERN_HOT_SEQ : VFMIG_PATTERN_HOT;
        o->sim.hot_bytes = parse_size(seq ? "--pattern hot-seq:SIZE" : "--pattern hot:SIZE", s + (seq ? 8 : 4));
        if (!o->sim.hot_bytes)
            usage_error("--pattern: the hot set must not be empty");
    } else {
        usage_error("--pattern: '%s' is not uniform, hot:SIZE, hot-seq:SIZE or seq", s);
    }
}

static void parse_content(opts *o, const char *s)
{
    static const char *const names[] = {"zero", "texture", "tensor", "random", "mix"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, names[i])) {
            o->sim.content = (vfmig_content)i;
            return;
        }
    usage_error("--content: '%s' is not zero, texture, tensor, random or mix", s);
}

static void parse_codec(opts *o, const char *s)
{
    char name[16];
    const char *colon = strchr(s, ':');
    size_t n = colon ? (size_t)(colon - s) : strlen(s);
    if (n >= sizeof(name))
        usage_error("--codec: '%s' is not auto, raw, lz4, zstd[:LEVEL] or delta", s);
    memcpy(name, s, n);
    name[n] = 0;
    static const struct { const char *name; int id; } codecs[] = {
        {"auto", VFMIG_CODEC_AUTO}, {"raw", VFMIG_CODEC_RAW}, {"lz4", VFMIG_CODEC_LZ4},
        {"zstd", VFMIG_CODEC_ZSTD}, {"delta", VFMIG_CODEC_DELTA}};
    for (size_t i = 0; i < sizeof(codecs) / sizeof(codecs[0]); i++)
        if (!strcmp(name, codecs[i].name)) {
            o->codec = codecs[i].id;
            if (colon) {
                if (o->codec != VFMIG_CODEC_ZSTD && o->codec != VFMIG_CODEC_LZ4)
                    usage_error("--codec: only lz4 and zstd take a level");
                o->level = parse_param("--codec LEVEL", colon + 1, VFMIG_P_CODEC_LEVEL);
            }
            return;
        }
    usage_error("--codec: '%s' is not auto, raw, lz4, zstd[:LEVEL] or delta", s);
}

/* ------------------------------------------------------------------------------------------ */
/* Packaging: version, JSON schema version, refusing a VF that cannot fit in memory.          */
/* ------------------------------------------------------------------------------------------ */

/* The "schema_version" of the --json result (schema/vfmig-result.schema.json): bumped when a
 * key changes meaning or goes away; new keys come with a schema update and the same number. */
#define VFMIG_CLI_SCHEMA_VERSION 1

static void print_version(void)
{
    unsigned v = vfmig_version_number();
    printf("vfmig %u.%u.%u (library %u.%u.%u)\n", VFMIG_VERSION_MAJOR, VFMIG_VERSION_MINOR,
           VFMIG_VERSION_PATCH, v / 10000, v / 100 % 100, v % 100);
}

/* Bytes of MemAvailable in /proc/meminfo, 0 when it cannot be read. */
static uint64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[128];
    unsigned long long kib = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1)
            break;
    fclose(f);
    return (uint64_t)kib * 1024;
}

/* The simulated VRAM lives in this process's memory (twice in `local`: both ends). Too much of it
 * is refused before anything is allocated, rather than left to the OOM killer minutes later. */
static void check_memory(const opts *o)
{
    int ends = !strcmp(o->cmd, "local") ? 2 : 1;
    uint64_t vram = o->sim.vram_bytes;
    if (vram > UINT64_MAX / 2)
        usage_error("--vram: %" PRIu64 " bytes is too large", vram);
    uint64_t need = vram * (uint64_t)ends;
    char a[32], b[32], c[32];
    const char *what = ends == 2 ? " (the VRAM of both ends: 'local' runs source and target here)" : "";
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && need >= (uint64_t)rl.rlim_cur)
        usage_error("--vram %s: needs %s of memory%s, over this process's address-space limit of %s "
                    "(RLIMIT_AS, ulimit -v)", human_bytes(vram, c, sizeof(c)), human_bytes(need, a, sizeof(a)),
                    what, human_bytes((uint64_t)rl.rlim_cur, b, sizeof(b)));
    uint64_t avail = mem_available();
    if (avail && need > avail)
        usage_error("--vram %s: needs %s of memory%s, but only %s is available (MemAvailable)",
                    human_bytes(vram, c, sizeof(c)), human_bytes(need, a, sizeof(a)), what,
                    human_bytes(avail, b, sizeof(b)));
}

/* ------------------------------------------------------------------------------------------ */

static void help(const char *cmd)
{
    if (!cmd) {
        printf("usage: vfmig COMMAND [OPTIONS]\n\n"
               "Live-migrates the VRAM and state of a (simulated) GPU virtual function.\n\n"
               "commands:\n"
               "  local    both ends in one process over loopback; checks the target image byte for byte\n"
               "  source   run a simulated VF with a live workload and migrate it to a target\n"
               "  target   wait for a source and take the VF over (one migration)\n"
               "  serve    keep taking migrations: each gets its own simulated VF shaped like its source's\n"
               "  keygen   write a fresh random 32-byte key to FILE (mode 0600) for --psk-file\n\n"
               "Every option is checked before anything runs: a bad value, an option of another command\n"
               "or two options that contradict each other are refused (exit 2) naming the option.\n"
               "'vfmig COMMAND --help' lists the options of a command.\n"
               "Exit status: 0 migrated, 1 failed (the VF runs on the source), 2 bad usage,\n"
               "3 in doubt (the target was told to resume but never confirmed; the VF stays paused here).\n");
        return;
    }
    printf("usage: vfmig %s %s[OPTIONS]\n\n", cmd,
           !strcmp(cmd, "source") ? "--connect ENDPOINT " : !strcmp(cmd, "target") || !strcmp(cmd, "serve") ? "--listen ENDPOINT " : "");
    if (!strcmp(cmd, "source"))
        printf("  -c, --connect ENDPOINT   target to migrate to: tcp://HOST:PORT?streams=N, rdma://HOST:PORT?qps=N or HOST:PORT\n");
    else if (!strcmp(cmd, "target"))
        printf("  -l, --listen ENDPOINT    where to wait for the source (same forms; streams=N is the most accepted)\n"
               "      --accept-timeout-ms N  give up if no migration has started in time (default: wait forever);\n"
               "                           connections refused before a migration (a wrong key, garbage,\n"
               "                           silence) do not end the wait\n"
               "      --target-state-version N  driver/firmware version of this host (default: the source's)\n");
    else if (!strcmp(cmd, "serve"))
        printf("  -l, --listen ENDPOINT    where to wait for sources (same forms as target)\n"
               "      --max-sessions N     migrations at once (default 4; more are told the target is busy)\n"
               "      --max-vram SIZE      largest VF taken (default: --vram); a larger one is refused before\n"
               "                           anything is allocated for it, its source told why\n"
               "      --max-memory SIZE    memory budget of all migrations together (default: this host's\n"
               "                           physical memory): each reserves its VF and its buffers when it is\n"
               "                           admitted; one that does not fit is refused until others end\n"
               "      --insecure           allow listening beyond loopback without a key (anyone who reaches\n"
               "                           the port could write a VF): a warning is printed\n"
               "  SIGINT/SIGTERM stop accepting, cancel the migrations in flight (their sources keep\n"
               "  their VFs) and exit 0. With --json: one JSON object per line per migration.\n");
    else
        printf("      --link ENDPOINT      loopback link to use (default tcp://127.0.0.1:0; ?streams=N for more streams)\n"
               "      --target-state-version N  version the target accepts (differs from 1: the target refuses)\n");
    printf("\nsimulated VF (sizes take K/M/G, binary):\n"
           "      --vram SIZE          VRAM of the VF (default 1G)\n"
           "      --page SIZE          dirty-tracking page, power of two 4K..2M (default 4K)\n"
           "      --ranges N           memory-basis ranges (default 1)\n"
           "      --dirty-rate RATE    bytes/s the workload writes: 200M, or 10Gbit (default 0)\n"
           "      --pattern P          uniform | hot:SIZE | hot-seq:SIZE | seq (default uniform); hot-seq\n"
           "                           sweeps the hot set in page order, one write per page, as GPU\n"
           "                           kernels rewrite their buffers\n"
           "      --write-bytes N      bytes per write of the workload, 8 .. page size (default 4096);\n"
           "                           the rate stays --dirty-rate bytes/s\n"
           "      --content C          zero | texture | tensor | random | mix (default mix)\n"
           "      --writers N          workload threads (default 1)\n"
           "      --seed N             content and workload seed\n"
           "      --mutable-size SIZE  mutable device state, 64 bytes .. 1G (default 64K)\n"
           "      --immutable-size SIZE  immutable device state, 64 bytes .. 1G (default 4K)\n"
           "      --device D           where the VF's memory lives and how its dirty pages are found:\n"
           "                           sim (dirty bitmap, default) | hash (sim with the bitmap hidden,\n"
           "                           pages hashed) | hostmem (host memory, userfaultfd write-protect or\n"
           "                           soft-dirty) | cuda (VRAM of GPU 0, hashed on the GPU)\n"
           "\nmigration:\n"
           "      --budget-ms N        blackout budget for the switch-over (default 50)\n"
           "      --max-rounds N       pre-copy rounds before a forced switch-over (default 30)\n"
           "      --max-precopy-ms N   pre-copy time before a forced switch-over (default 60000)\n"
           "      --timeout-ms N       longest wait on the peer (default 10000)\n"
           "      --threads N          encode (source) / decode (target) workers (default: one per CPU)\n"
           "      --codec C            auto | raw | lz4 | zstd[:LEVEL] | delta (default auto)\n"
           "      --max-bandwidth RATE cap on the link, all streams, at least 1M (e.g. 10Gbit; default none)\n"
           "      --delta-cache SIZE   cap on the copies kept for delta encoding; the cache grows to the\n"
           "                           pages re-sent that changed little since last sent (default 1G)\n"
           "      --batch SIZE         largest page run per frame (default 1M)\n"
           "      --no-throttle        never throttle the VF when pre-copy does not converge\n"
           "      --verify V           applied | readback | full: what the target checks before it may\n"
           "                           resume (default readback; full re-reads both VRAMs in the blackout)\n"
           "      --no-readback        same as --verify applied (with another --verify: refused)\n"
           "      --on-budget-miss A   retry (default) | abort | switch: when the budget cannot be met, keep\n"
           "                           the VF on the source and fail; a blackout that would overrun is\n"
           "                           called off (the VF resumes here), retried once with retry; or\n"
           "                           switch over anyway\n"
           "      --pin P              auto | none | CPU list like 0-3 (worker placement; CPUs this process\n"
           "                           may run on)\n"
           "      --numa-node N        NUMA node of the device: with --pin auto, workers run there\n"
           "      --psk-file PATH      pre-shared key both ends must hold: mutual authentication before\n"
           "                           anything of the VF moves, and every frame keyed (Poly1305). The file\n"
           "                           must be private (chmod 600) and hold 32..256 bytes with 128 bits of\n"
           "                           randomness: 'vfmig keygen' output, or 64 hex digits / padded base64\n"
           "                           of random bytes; text that looks typed is refused. A target or\n"
           "                           server takes a second key during a key rotation\n"
           "      --psk-passphrase PATH  the key is a passphrase (8..1024 characters, the file's line end\n"
           "                           not part of it; chmod 600), stretched with scrypt (N=2^17, r=8,\n"
           "                           p=1: 128 MiB, ~0.4 s) into the key; give it on both ends\n"
           "      --encrypt            with --psk-file: seal every frame (AES-256-GCM)\n"
           "      --insecure           target: listen beyond loopback without a key (warned)\n"
           "\noutput:\n"
           "      --json               one JSON object on stdout, nothing else\n"
           "      --progress P         auto | bar | json | none: live progress on stderr every 200 ms (auto:\n"
           "                           a bar when stderr is a terminal; json: one object per line), the\n"
           "                           VF's setup (its VRAM filled) first\n"
           "  -v, --verbose            progress, topology and decisions on stderr\n"
           "  -q, --quiet              only the summary line (not with --verbose)\n"
           "  -h, --help               this text\n"
           "  -V, --version            version of the command and of the library it runs\n");
}

enum {
    O_VRAM = 256, O_PAGE, O_RANGES, O_RATE, O_PATTERN, O_CONTENT, O_WRITERS, O_SEED, O_MUT, O_IMM,
    O_BUDGET, O_ROUNDS, O_PRECOPY, O_TIMEOUT, O_THREADS, O_CODEC, O_BW, O_DELTA, O_BATCH,
    O_NOTHROTTLE, O_READBACK, O_PIN, O_JSON, O_LINK, O_ACCEPT, O_TSV, O_PSK, O_NUMA, O_ENCRYPT,
    O_WRITE_BYTES, O_VERIFY, O_BUDGET_MISS, O_DEVICE, O_PROGRESS,
    O_INSECURE, O_MAXSESS /* serve (issue 13) */, O_MAXVRAM, O_MAXMEM /* serve (issue 18) */,
    O_PSKPASS
};

/* The key a file of n bytes holds: all of them, or without its line end when it is text. */
static size_t key_as_read(const uint8_t *buf, size_t n)
{
    size_t text = n;
    while (text && (buf[text - 1] == '\n' || buf[text - 1] == '\r'))
        text--;
    return n <= 256 && vfmig__key_is_text(buf, text) ? text : n;
}

/* A key file, read as ssh reads one: refused when group or others may read or write it (the fix
 * named). Its line end is not part of a text key (written with echo); a random key keeps every
 * byte, a last one of 0x0a or 0x0d included. A key (--psk-file) is 32..256 bytes holding at least
 * 128 bits of randomness by vfmig__key_bits: a captured handshake lets anyone test guesses
 * offline, so a key must be too random to guess ('vfmig keygen' writes 32 random bytes). A
 * passphrase (--psk-passphrase: said so explicitly) is 8..1024 characters, stretched with scrypt
 * into the 32-byte key both ends derive alike. */
static size_t read_key(const char *path, bool passphrase, uint8_t key[257])
{
    const char *opt = passphrase ? "--psk-passphrase" : "--psk-file";
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb))
        usage_error("%s %s: %s", opt, path, strerror(errno));
    if (sb.st_mode & 077) {
        close(fd);
        usage_error("%s %s: permissions %04o are too open: group or others may %s it, and a key others "
                    "can read is no secret. Run 'chmod 600 %s'", opt, path, (unsigned)(sb.st_mode & 07777),
                    sb.st_mode & 044 ? "read" : "write", path);
    }
    uint8_t buf[VFMIG__PASSPHRASE_MAX + 1];
    size_t n = 0, cap = passphrase ? sizeof(buf) : 257;
    while (n < cap) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            explicit_bzero(buf, sizeof(buf));
            usage_error("%s %s: %s", opt, path, strerror(e));
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    size_t text = n;
    while (text && (buf[text - 1] == '\n' || buf[text - 1] == '\r'))
        text--;
    if (passphrase) {
        if (text < VFMIG__PASSPHRASE_MIN || n > VFMIG__PASSPHRASE_MAX) {
            explicit_bzero(buf, sizeof(buf));
            usage_error("%s %s: a passphrase is %d to %d characters (this one is %s%zu)", opt, path,
                        VFMIG__PASSPHRASE_MIN, VFMIG__PASSPHRASE_MAX, n > VFMIG__PASSPHRASE_MAX ? "over " : "",
                        n > VFMIG__PASSPHRASE_MAX ? (size_t)VFMIG__PASSPHRASE_MAX : text);
        }
        int rc = vfmig__key_stretch(buf, text, key);
        explicit_bzero(buf, sizeof(buf));
        if (rc) {
            fprintf(stderr, "vfmig: %s %s: scrypt failed (it needs %" PRIu64 " MiB of memory)\n", opt, path,
                    VFMIG__SCRYPT_MEM >> 20);
            exit(1);
        }
        return VFMIG__STRETCHED;
    }
    n = key_as_read(buf, n);
    memcpy(key, buf, n);
    explicit_bzero(buf, sizeof(buf));
    if (n < 32 || n > 256)
        usage_error("--psk-file %s: the key must be 32 to 256 bytes long (it is %s%zu); make one with "
                    "'vfmig keygen FILE', or give a passphrase with --psk-passphrase %s", path,
                    n > 256 ? "over " : "", n > 256 ? (size_t)256 : n, path);
    vfmig__key_form form;
    double bits = vfmig__key_bits(key, n, &form);
    if (form == VFMIG__KEY_TEXT)
        usage_error("--psk-file %s: the key is text that is neither hex nor base64 of random bytes: a passphrase, "
                    "which anyone holding a captured handshake can guess offline. Make a key with 'vfmig "
                    "keygen FILE', or say it is a passphrase with --psk-passphrase %s (stretched with scrypt)",
                    path, path);
    if (bits < VFMIG__KEY_MIN_BITS)
        usage_error("--psk-file %s: the key holds about %.0f bits of randomness (by its look: %s), under the %d "
                    "a key needs, since anyone holding a captured handshake can test guesses offline. Make a "
                    "key with 'vfmig keygen FILE', or say it is a passphrase with --psk-passphrase %s "
                    "(stretched with scrypt)", path, bits,
                    form == VFMIG__KEY_HEX ? "hex digits" : form == VFMIG__KEY_BASE64 ? "base64" : "bytes",
                    VFMIG__KEY_MIN_BITS, path);
    return n;
}

/* vfmig keygen FILE: 32 bytes from the kernel's generator, written to a new file only its owner
 * can read (an existing file is not replaced). A draw that read_key would take for text or judge
 * under 128 bits (about 1 in 10^14) is drawn again, so keygen's keys are always accepted. */
static int cmd_keygen(int argc, char **argv)
{
    if (argc != 3 || argv[2][0] == '-') {
        if (argc == 3 && (!strcmp(argv[2], "-h") || !strcmp(argv[2], "--help"))) {
            printf("usage: vfmig keygen FILE\n\nWrites a fresh random 32-byte key to FILE (mode 0600; an "
                   "existing FILE is left alone).\nGive it to both ends with --psk-file FILE.\n");
            return 0;
        }
        usage_error("usage: vfmig keygen FILE");
    }
    uint8_t key[32];
    vfmig__key_form form;
    do {
        size_t got = 0;
        while (got < sizeof(key)) {
            ssize_t n = getrandom(key + got, sizeof(key) - got, 0);
            if (n < 0 && errno != EINTR) {
                fprintf(stderr, "vfmig: keygen: no randomness: %s\n", strerror(errno));
                return 1;
            }
            if (n > 0)
                got += (size_t)n;
        }
    } while (key_as_read(key, sizeof(key)) != sizeof(key) ||
             vfmig__key_bits(key, sizeof(key), &form) < VFMIG__KEY_MIN_BITS);
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "vfmig: keygen: %s: %s\n", argv[2], strerror(errno));
        explicit_bzero(key, sizeof(key));
        return 1;
    }
    ssize_t w = write(fd, key, sizeof(key));
    explicit_bzero(key, sizeof(key));
    if (w != (ssize_t)sizeof(key) || fsync(fd) || close(fd)) {
        fprintf(stderr, "vfmig: keygen: writing %s failed\n", argv[2]);
        unlink(argv[2]);
        return 1;
    }
    fprintf(stderr, "vfmig: wrote a 32-byte key to %s (mode 0600): give it to both ends with --psk-file\n",
            argv[2]);
    return 0;
}

/* --pin: auto, none, or a CPU list like 0-3,8 (each CPU 0..4095, a range never backwards) of
 * CPUs this process may run on. Checked here, as the library will check it, so that a typo is a
 * usage error and not a failed migration. */
static void check_pin(const char *spec)
{
    if (!strcmp(spec, "auto") || !strcmp(spec, "none"))
        return;
    enum { MAXCPU = 4096 };
    size_t setsize = CPU_ALLOC_SIZE(MAXCPU);
    cpu_set_t *allowed = CPU_ALLOC(MAXCPU);
    bool known = allowed && sched_getaffinity(0, setsize, allowed) == 0;
    const char *c = spec;
    while (*c) {
        char *end;
        if (*c < '0' || *c > '9')
            break;
        long a = strtol(c, &end, 10), b = a;
        if (*end == '-') {
            c = end + 1;
            if (*c < '0' || *c > '9')
                break;
            b = strtol(c, &end, 10);
        }
        if (a >= MAXCPU || b >= MAXCPU || b < a) {
            if (allowed)
                CPU_FREE(allowed);
            usage_error("--pin: '%s': %ld-%ld is not a range of CPUs (from low to high, each under %d)", spec, a,
                        b, MAXCPU);
        }
        for (long cpu = a; known && cpu <= b; cpu++)
            if (!CPU_ISSET_S((size_t)cpu, setsize, allowed)) {
                char list[128] = "";
                for (int i = 0, n = 0; i < MAXCPU && n < 8; i++)
                    if (CPU_ISSET_S((size_t)i, setsize, allowed) && (!i || !CPU_ISSET_S((size_t)i - 1, setsize, allowed))) {
                        int j = i;
                        while (j + 1 < MAXCPU && CPU_ISSET_S((size_t)j + 1, setsize, allowed))
                            j++;
                        snprintf(list + strlen(list), sizeof(list) - strlen(list), j > i ? "%s%d-%d" : "%s%d",
                                 n++ ? "," : "", i, j);
                    }
                CPU_FREE(allowed);
                usage_error("--pin: '%s': CPU %ld is not one this process may run on (it may use %s)", spec, cpu,
                            list);
            }
        c = end;
        if (*c == ',')
            c++;
        else if (*c)
            break;
    }
    if (allowed)
        CPU_FREE(allowed);
    if (*c)
        usage_error("--pin: '%s' is not auto, none or a CPU list like 0-3,8", spec);
}

static const char *verify_name(uint32_t v);

static void parse_args(opts *o, int argc, char **argv)
{
    static const struct option lo[] = {
        {"connect", required_argument, 0, 'c'}, {"listen", required_argument, 0, 'l'},
        {"link", required_argument, 0, O_LINK}, {"accept-timeout-ms", required_argument, 0, O_ACCEPT},
        {"target-state-version", required_argument, 0, O_TSV},
        {"vram", required_argument, 0, O_VRAM}, {"page", required_argument, 0, O_PAGE},
        {"ranges", required_argument, 0, O_RANGES}, {"dirty-rate", required_argument, 0, O_RATE},
        {"pattern", required_argument, 0, O_PATTERN}, {"content", required_argument, 0, O_CONTENT},
        {"writers", required_argument, 0, O_WRITERS}, {"seed", required_argument, 0, O_SEED},
        {"mutable-size", required_argument, 0, O_MUT}, {"immutable-size", required_argument, 0, O_IMM},
        {"budget-ms", required_argument, 0, O_BUDGET}, {"max-rounds", required_argument, 0, O_ROUNDS},
        {"max-precopy-ms", required_argument, 0, O_PRECOPY}, {"timeout-ms", required_argument, 0, O_TIMEOUT},
        {"threads", required_argument, 0, O_THREADS}, {"codec", required_argument, 0, O_CODEC},
        {"max-bandwidth", required_argument, 0, O_BW}, {"delta-cache", required_argument, 0, O_DELTA},
        {"batch", required_argument, 0, O_BATCH}, {"no-throttle", no_argument, 0, O_NOTHROTTLE},
        {"no-readback", no_argument, 0, O_READBACK}, {"pin", required_argument, 0, O_PIN},
        {"json", no_argument, 0, O_JSON}, {"psk-file", required_argument, 0, O_PSK},
        {"psk-passphrase", required_argument, 0, O_PSKPASS},
        {"numa-node", required_argument, 0, O_NUMA}, {"encrypt", no_argument, 0, O_ENCRYPT},
        {"write-bytes", required_argument, 0, O_WRITE_BYTES}, {"verify", required_argument, 0, O_VERIFY},
        {"on-budget-miss", required_argument, 0, O_BUDGET_MISS}, {"verbose", no_argument, 0, 'v'},
        {"device", required_argument, 0, O_DEVICE}, {"progress", required_argument, 0, O_PROGRESS},
        {"insecure", no_argument, 0, O_INSECURE}, {"max-sessions", required_argument, 0, O_MAXSESS},
        {"max-vram", required_argument, 0, O_MAXVRAM}, {"max-memory", required_argument, 0, O_MAXMEM},
        {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {"version", no_argument, 0, 'V'},
        {0, 0, 0, 0}};
    int c, li = -1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:l:vqhV", lo, &li)) != -1) {
        /* The option as its long name ("--max-sessions"), whether its value came after '=' or as
         * the next word; what was typed for an unknown one or one missing its value. */
        char name[48];
        if (li >= 0 && c != ':' && c != '?')
            snprintf(name, sizeof(name), "--%s", lo[li].name);
        else
            snprintf(name, sizeof(name), "%s", optind > 0 && optind <= argc ? argv[optind - 1] : "?");
        li = -1;
        switch (c) {
        case 'c':
            if (strcmp(o->cmd, "source"))
                usage_error("--connect belongs to 'vfmig source'");
            o->endpoint = optarg;
            break;
        case 'l':
            if (strcmp(o->cmd, "target") && strcmp(o->cmd, "serve"))
                usage_error("--listen belongs to 'vfmig target' and 'vfmig serve'");
            o->endpoint = optarg;
            break;
        case O_LINK:
            if (strcmp(o->cmd, "local"))
                usage_error("--link belongs to 'vfmig local' (source uses --connect, target --listen)");
            o->endpoint = optarg;
            break;
        case O_ACCEPT:
            if (strcmp(o->cmd, "target"))
                usage_error("--accept-timeout-ms belongs to 'vfmig target'");
            o->accept_timeout_ms = (int)parse_int(name, optarg, 1, INT32_MAX);
            break;
        case O_TSV:
            if (!strcmp(o->cmd, "source"))
                usage_error("--target-state-version belongs to 'vfmig target', 'serve' and 'local' (the "
                            "version the receiving host has)");
            o->target_state_version = (uint32_t)parse_int(name, optarg, 1, UINT32_MAX);
            break;
        case O_VRAM: o->sim.vram_bytes = parse_size(name, optarg); break;
        case O_PAGE: o->sim.page_size = parse_size(name, optarg); break;
        case O_RANGES: o->sim.nranges = (uint32_t)parse_int(name, optarg, 1, VFMIG_MAX_RANGES); break;
        case O_RATE: o->sim.dirty_rate = parse_rate(name, optarg); break;
        case O_PATTERN: o->pattern_str = optarg; parse_pattern(o, optarg); break;
        case O_CONTENT: o->content_str = optarg; parse_content(o, optarg); break;
        case O_WRITERS: o->sim.writers = (uint32_t)parse_int(name, optarg, 1, 64); break;
        case O_SEED: o->sim.seed = parse_u64(name, optarg); break;
        /* the simulated VF's bounds on its state blobs */
        case O_MUT: o->sim.mutable_bytes = check_size(name, parse_size(name, optarg), 64, 1ull << 30); break;
        case O_IMM: o->sim.immutable_bytes = check_size(name, parse_size(name, optarg), 64, 1ull << 30); break;
        case O_BUDGET: o->budget_ms = parse_param(name, optarg, VFMIG_P_BUDGET_MS); break;
        case O_ROUNDS: o->max_rounds = parse_param(name, optarg, VFMIG_P_MAX_ROUNDS); break;
        case O_PRECOPY: o->max_precopy_ms = parse_param(name, optarg, VFMIG_P_MAX_PRECOPY_MS); break;
        case O_TIMEOUT: o->timeout_ms = parse_param(name, optarg, VFMIG_P_TIMEOUT_MS); break;
        case O_THREADS: o->threads = parse_int(name, optarg, 1, 256); break;
        case O_CODEC: o->codec_str = optarg; parse_codec(o, optarg); break;
        case O_BW:
            o->max_bandwidth = (int64_t)parse_rate(name, optarg);
            if (o->max_bandwidth < MIN_BANDWIDTH)
                usage_error("%s: %s (%" PRId64 " bytes/s) is under the floor of 1M (1 MiB/s): a cap that low "
                            "would keep a migration going for hours or days. Leave the option out for no cap",
                            name, optarg, o->max_bandwidth);
            break;
        case O_DELTA: o->delta_cache = parse_size_param(name, optarg, VFMIG_P_DELTA_CACHE_BYTES); break;
        case O_BATCH: o->batch_bytes = parse_size_param(name, optarg, VFMIG_P_BATCH_BYTES); break;
        case O_NOTHROTTLE: o->throttle = 0; break;
        case O_READBACK: o->no_readback = true; break;
        case O_VERIFY:
            o->readback = parse_word(name, optarg, (const char *const[]){"applied", "readback", "full", NULL});
            o->verify_given = true;
            break;
        case O_PROGRESS: {
            static const int modes[] = {-1, PROGRESS_BAR, PROGRESS_JSON, PROGRESS_NONE};
            o->progress = modes[parse_word(name, optarg, (const char *const[]){"auto", "bar", "json", "none", NULL})];
            if (o->progress < 0)
                o->progress = isatty(STDERR_FILENO) ? PROGRESS_BAR : PROGRESS_NONE;
            break;
        }
        case O_BUDGET_MISS:
            o->budget_miss = parse_word(name, optarg, (const char *const[]){"abort", "switch", "retry", NULL});
            break;
        case O_WRITE_BYTES: o->write_bytes = parse_size(name, optarg); break; /* checked below */
        case O_PIN: o->pin = optarg; break; /* checked below */
        case O_PSK:
        case O_PSKPASS:
            if (o->psk_file && (o->psk_file2 || !strcmp(o->cmd, "source") || !strcmp(o->cmd, "local")))
                usage_error("%s: one key (--psk-file or --psk-passphrase) for a source or local; a target or "
                            "server takes two during a rotation", name);
            if (o->psk_file) {
                o->psk_file2 = optarg;
                o->psk2_pass = c == O_PSKPASS;
            } else {
                o->psk_file = optarg;
                o->psk_pass = c == O_PSKPASS;
            }
            break;
        case O_INSECURE:
            if (strcmp(o->cmd, "target") && strcmp(o->cmd, "serve"))
                usage_error("--insecure belongs to 'vfmig target' and 'vfmig serve'");
            o->insecure = true;
            break;
        case O_MAXSESS:
            if (strcmp(o->cmd, "serve"))
                usage_error("--max-sessions belongs to 'vfmig serve'");
            o->max_sessions = (unsigned)parse_int(name, optarg, 1, 1024);
            break;
        case O_MAXVRAM:
        case O_MAXMEM: {
            const char *opt = c == O_MAXVRAM ? "--max-vram" : "--max-memory";
            if (strcmp(o->cmd, "serve"))
                usage_error("%s belongs to 'vfmig serve'", opt);
            /* A VF is at least a page; a budget at least one small VF with its buffers. */
            uint64_t v = parse_size(opt, optarg), least = c == O_MAXVRAM ? VFMIG_MIN_PAGE_SIZE : 16u << 20;
            if (v < least || v > (1ull << 50))
                usage_error("%s: '%s' is out of range %s..1024T", opt, optarg, c == O_MAXVRAM ? "4K" : "16M");
            *(c == O_MAXVRAM ? &o->max_vram : &o->max_memory) = v;
            break;
        }
        case O_ENCRYPT: o->encrypt = 1; break;
        case O_NUMA: o->numa_node = parse_param(name, optarg, VFMIG_P_NUMA_NODE); break;
        case O_JSON: o->json = true; break;
        case O_DEVICE:
            if (strcmp(optarg, "sim") && strcmp(optarg, "hash") && strcmp(optarg, "hostmem") && strcmp(optarg, "cuda"))
                usage_error("%s: '%s' is not sim, hash, hostmem or cuda", name, optarg);
            o->device_str = optarg;
            break;
        case 'v': o->verbose = true; break;
        case 'q': o->quiet = true; break;
        case 'h': help(o->cmd); exit(0);
        case 'V': print_version(); exit(0);
        case ':': usage_error("%s needs a value", name);
        default: usage_error("unknown option '%s' for 'vfmig %s'", name, o->cmd);
        }
    }
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);
    /* Options that contradict each other are refused, not resolved one way silently. */
    if (o->no_readback && o->verify_given && o->readback != VFMIG_VERIFY_APPLIED)
        usage_error("--no-readback (the same as --verify applied) conflicts with --verify %s: give one of them",
                    verify_name((uint32_t)o->readback));
    if (o->no_readback)
        o->readback = VFMIG_VERIFY_APPLIED;
    if (o->quiet && o->verbose)
        usage_error("--quiet and --verbose conflict: give one of them");
    if (o->numa_node != NOTSET && o->pin && strcmp(o->pin, "auto"))
        usage_error("--numa-node places the workers only with --pin auto; it conflicts with --pin %s", o->pin);
    if (o->pin)
        check_pin(o->pin);
    if (o->psk_file)
        o->psk_len = read_key(o->psk_file, o->psk_pass, o->psk);
    if (o->psk_file2)
        o->psk2_len = read_key(o->psk_file2, o->psk2_pass, o->psk2);
    if (o->encrypt == 1 && !o->psk_file)
        usage_error("--encrypt needs --psk-file or --psk-passphrase (the keys come from the authenticated "
                    "handshake)");
    if (!strcmp(o->cmd, "source") && !o->endpoint)
        usage_error("vfmig source needs --connect ENDPOINT");
    char eperr[300];
    if (o->endpoint && vfmig_endpoint_validate(o->endpoint, eperr, sizeof(eperr)))
        usage_error("%s", eperr);
    if ((!strcmp(o->cmd, "target") || !strcmp(o->cmd, "serve")) && !o->endpoint)
        usage_error("vfmig %s needs --listen ENDPOINT", o->cmd);
    if ((!strcmp(o->cmd, "target") || !strcmp(o->cmd, "serve")) && !o->psk_len &&
        vfmig_endpoint_is_loopback(o->endpoint) != 1) {
        if (!o->insecure)
            usage_error("refusing to listen on %s without a key: anyone who reaches it could write the VF's "
                        "memory and have it run. Make a key with 'vfmig keygen FILE', give --psk-file FILE "
                        "on both ends, or listen on loopback; --insecure allows it anyway", o->endpoint);
        fprintf(stderr, "vfmig: WARNING: listening on %s without a key (--insecure): anyone who reaches "
                        "this port can write a VF's memory and have it run\n", o->endpoint);
    }
    uint64_t ps = o->sim.page_size;
    if (ps < VFMIG_MIN_PAGE_SIZE || ps > VFMIG_MAX_PAGE_SIZE || (ps & (ps - 1)))
        usage_error("--page: %" PRIu64 " is not a power of two between 4K and 2M", ps);
    if (!o->sim.vram_bytes || o->sim.vram_bytes % (ps * o->sim.nranges))
        usage_error("--vram: %" PRIu64 " bytes is not a whole number of %" PRIu64 "-byte pages in each of %u ranges",
                    o->sim.vram_bytes, ps, o->sim.nranges);
    if ((o->sim.pattern == VFMIG_PATTERN_HOT || o->sim.pattern == VFMIG_PATTERN_HOT_SEQ) &&
        o->sim.hot_bytes > o->sim.vram_bytes)
        usage_error("--pattern: the hot set is larger than --vram");
    if (o->write_bytes && (o->write_bytes < 8 || o->write_bytes > ps))
        usage_error("--write-bytes: %" PRIu64 " is not between 8 and the page size (%" PRIu64 ")", o->write_bytes, ps);
    if (o->write_bytes)
        o->sim.write_bytes = (uint32_t)o->write_bytes;
    if (o->sim.write_bytes < 8 || o->sim.write_bytes > ps)
        usage_error("--write-bytes: the default %u is over the page size (%" PRIu64 "): give --write-bytes",
                    o->sim.write_bytes, ps);
    if (o->batch_bytes != NOTSET && o->batch_bytes < (int64_t)ps)
        usage_error("--batch: %" PRId64 " is under the page size (%" PRIu64 ")", o->batch_bytes, ps);
    check_memory(o);
}

/* ------------------------------------------------------------------------------------------ */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t workload_bytes(vfmig_simvf *sim)
{
    vfmig_simvf_counters c;
    vfmig_simvf_get_counters(sim, &c);
    return c.bytes_written;
}

/* The workload's own rate before anything of the migration runs, to tell how much pre-copy
 * slowed it (throttling, or competition for the CPU). */
static double measure_workload(const opts *o, vfmig_simvf *sim)
{
    if (!o->sim.dirty_rate)
        return 0;
    uint64_t t0 = now_ns(), b0 = workload_bytes(sim);
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
    uint64_t t1 = now_ns(), b1 = workload_bytes(sim);
    return t1 > t0 ? (double)(b1 - b0) * 1e9 / (double)(t1 - t0) : 0;
}

/* Workload rate before the migration / during pre-copy (1 without a workload). */
static double workload_slowdown(const report *r)
{
    const cbctx *c = &r->cb;
    uint64_t t1 = c->pc_t1 ? c->pc_t1 : now_ns(), b1 = c->pc_t1 ? c->pc_b1 : (c->sim ? workload_bytes(c->sim) : 0);
    if (r->pre_rate <= 0 || !c->pc_t0 || t1 <= c->pc_t0)
        return 1.0;
    double during = (double)(b1 - c->pc_b0) * 1e9 / (double)(t1 - c->pc_t0);
    return during > 0 ? r->pre_rate / during : 0;
}

/* A --progress json line on stderr: {"progress":{"phase":...,...}} (schema/vfmig-progress). */
static void progress_line(vfmig_json *j, const char *phase)
{
    vfmig__json_init(j, stderr);
    vfmig__json_object(j, NULL);
    vfmig__json_object(j, "progress");
    vfmig__json_str(j, "phase", phase);
}

static void progress_line_end(vfmig_json *j)
{
    vfmig__json_end(j);
    vfmig__json_end(j);
    fputc('\n', stderr);
}

static void on_event(const vfmig_event *ev, void *user)
{
    cbctx *c = user;
    const opts *o = c->o;
    if (ev->type == VFMIG_EV_PHASE && c->sim && ev->phase == VFMIG_PHASE_PRECOPY) {
        c->pc_t0 = now_ns();
        c->pc_b0 = workload_bytes(c->sim);
    } else if (ev->type == VFMIG_EV_PHASE && c->sim && ev->phase == VFMIG_PHASE_BLACKOUT) {
        c->pc_t1 = now_ns();
        c->pc_b1 = workload_bytes(c->sim);
    }
    if (ev->type == VFMIG_EV_PROGRESS && c->no_progress) {
        /* the other end of a local migration */
    } else if (ev->type == VFMIG_EV_PROGRESS && ev->progress && o->progress == PROGRESS_JSON) {
        const vfmig_progress *p = ev->progress;
        vfmig_json j;
        flockfile(stderr); /* one whole line, whatever else writes to stderr */
        progress_line(&j, vfmig_phase_name(p->phase));
        vfmig__json_u64(&j, "round", p->round);
        vfmig__json_u64(&j, "bytes_sent", p->bytes_sent);
        vfmig__json_u64(&j, "bytes_done", p->bytes_done);
        vfmig__json_u64(&j, "bytes_remaining", p->bytes_remaining);
        vfmig__json_num(&j, "wire_rate", p->wire_rate, 0);
        vfmig__json_num(&j, "dirty_rate", p->dirty_rate, 0);
        vfmig__json_num(&j, "expected_blackout_ms", p->expected_blackout_ms, 3);
        vfmig__json_num(&j, "eta_ms", p->eta_ms, 1);
        vfmig__json_u64(&j, "throttle", p->throttle_percent);
        vfmig__json_num(&j, "elapsed_ms", (double)p->elapsed_ns / 1e6, 1);
        progress_line_end(&j);
        funlockfile(stderr);
    } else if (ev->type == VFMIG_EV_PROGRESS && ev->progress && o->progress == PROGRESS_BAR) {
        const vfmig_progress *p = ev->progress;
        double pct = p->round_total ? 100.0 * (double)p->round_done / (double)p->round_total : 0;
        fprintf(stderr, "\r%-9s round %-3u %5.1f%% of %8.1f MiB  wire %7.1f MiB/s  left %8.1f MiB", vfmig_phase_name(p->phase),
                p->round, pct, (double)p->round_total / 1048576.0, p->wire_rate / 1048576.0,
                (double)p->bytes_remaining / 1048576.0);
        if (p->eta_ms >= 0)
            fprintf(stderr, "  ETA %6.1f s  blackout ~%.1f ms", p->eta_ms / 1e3, p->expected_blackout_ms);
        if (p->throttle_percent < 100)
            fprintf(stderr, "  THROTTLED %u%%", p->throttle_percent);
        fprintf(stderr, "\033[K");
        fflush(stderr);
    } else if (ev->type == VFMIG_EV_PHASE && o->progress == PROGRESS_BAR && !c->no_progress &&
               (ev->phase == VFMIG_PHASE_DONE || ev->phase == VFMIG_PHASE_FAILED)) {
        fprintf(stderr, "\r\033[K");
    }
    if (!o->verbose)
        return;
    if (ev->type == VFMIG_EV_LOG)
        fprintf(stderr, "vfmig: %s\n", ev->message);
    else if (ev->type == VFMIG_EV_PHASE)
        fprintf(stderr, "vfmig: phase %s\n", vfmig_phase_name(ev->phase));
    else if (ev->type == VFMIG_EV_ROUND)
        fprintf(stderr, "vfmig: round %u%s: %" PRIu64 " pages in %.1f ms\n", ev->round->round,
                ev->round->in_blackout ? " (blackout)" : "", ev->round->dirty_pages,
                (double)ev->round->duration_ns / 1e6);
}

static int apply_opts(const opts *o, vfmig_session *s, cbctx *cb, char *err, size_t errlen);

/* `sim`: the source's simulated VF (its workload is measured), or NULL. */
static int make_session(const opts *o, vfmig_role role, const vfmig_device *dev, vfmig_simvf *sim, cbctx *cb,
                        vfmig_session **out, char *err, size_t errlen)
{
    int rc = vfmig_session_create(role, dev, out, err, errlen);
    if (rc)
        return rc;
    cb->sim = role == VFMIG_ROLE_SOURCE ? sim : NULL;
    return apply_opts(o, *out, cb, err, errlen);
}

/* The command line's parameters, pinning, keys and event callback on a session. */
static int apply_opts(const opts *o, vfmig_session *s, cbctx *cb, char *err, size_t errlen)
{
    int rc;
    struct { vfmig_param p; int64_t v; } set[] = {
        {VFMIG_P_BUDGET_MS, o->budget_ms}, {VFMIG_P_MAX_ROUNDS, o->max_rounds},
        {VFMIG_P_MAX_PRECOPY_MS, o->max_precopy_ms}, {VFMIG_P_TIMEOUT_MS, o->timeout_ms},
        {VFMIG_P_THREADS, o->threads}, {VFMIG_P_CODEC, o->codec}, {VFMIG_P_CODEC_LEVEL, o->level},
        {VFMIG_P_MAX_BANDWIDTH, o->max_bandwidth}, {VFMIG_P_DELTA_CACHE_BYTES, o->delta_cache},
        {VFMIG_P_BATCH_BYTES, o->batch_bytes}, {VFMIG_P_THROTTLE, o->throttle},
        {VFMIG_P_VERIFY, o->readback}, {VFMIG_P_NUMA_NODE, o->numa_node},
        {VFMIG_P_ENCRYPT, o->encrypt}, {VFMIG_P_ON_BUDGET_MISS, o->budget_miss}};
    for (size_t i = 0; i < sizeof(set) / sizeof(set[0]); i++) {
        if (set[i].v == NOTSET)
            continue; /* not given: the library's default */
        if ((rc = vfmig_session_set_param(s, set[i].p, set[i].v))) {
            snprintf(err, errlen, "parameter %d = %" PRId64 " refused", (int)set[i].p, set[i].v);
            return rc;
        }
    }
    if (o->pin && (rc = vfmig_session_set_pinning(s, o->pin))) {
        snprintf(err, errlen, "--pin '%s': expected auto, none or a CPU list of this machine", o->pin);
        return rc;
    }
    if (o->psk_len && (rc = vfmig_session_set_psk(s, o->psk, o->psk_len))) {
        snprintf(err, errlen, "the pre-shared key was refused");
        return rc;
    }
    if (o->psk2_len && (rc = vfmig_session_set_psk2(s, o->psk2, o->psk2_len))) {
        snprintf(err, errlen, "the second pre-shared key was refused");
        return rc;
    }
    cb->o = o;
    vfmig_session_set_callback(s, on_event, cb);
    return VFMIG_OK;
}

/* CPU seconds of this process so far, user and system: both ends with `local`, one end else. */
static double process_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

static void collect(report *r, vfmig_session *s, int rc)
{
    r->cpu = r->cpu0 > 0 ? process_cpu_s() - r->cpu0 : 0;
    r->slowdown = workload_slowdown(r); /* now: the VF is gone by the time the report prints */
    r->status = rc;
    if (rc && !r->error[0])
        snprintf(r->error, sizeof(r->error), "%s", vfmig_session_last_error(s));
    vfmig_session_get_stats(s, &r->st);
    r->nrounds = vfmig_session_round_count(s);
    r->rounds = calloc(r->nrounds ? r->nrounds : 1, sizeof(vfmig_round_stats));
    for (uint32_t i = 0; r->rounds && i < r->nrounds; i++)
        vfmig_session_get_round(s, i, &r->rounds[i]);
    r->ncodecs = vfmig_codec_count();
    r->codecs = calloc(((size_t)r->nrounds + 1) * r->ncodecs, sizeof(vfmig_codec_stats));
    if (!r->codecs)
        r->ncodecs = 0; /* the output then names no codec */
    for (unsigned c = 0; c < r->ncodecs; c++) {
        vfmig_session_get_codec_stats(s, c, &r->codecs[c], sizeof(vfmig_codec_stats));
        for (uint32_t i = 0; i < r->nrounds; i++)
            vfmig_session_get_round_codec_stats(s, i, c, &r->codecs[(i + 1) * r->ncodecs + c],
                                                sizeof(vfmig_codec_stats));
    }
}

/* The per-codec figures of the session (row 0) or of round record i (row i + 1). */
static const vfmig_codec_stats *codec_row(const report *r, uint32_t row)
{
    return r->codecs ? &r->codecs[(size_t)row * r->ncodecs] : NULL;
}

static void report_free(report *r)
{
    free(r->rounds);
    free(r->codecs);
}

/* ------------------------------------------------------------------------------------------ */
/* Output                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static double mib(uint64_t b) { return (double)b / (1024.0 * 1024.0); }
static double ms(uint64_t ns) { return (double)ns / 1e6; }

/* "codec_bytes":{"raw":{"in":N,"out":N},...} for the codecs that carried anything */
static void json_codec_bytes(vfmig_json *j, const report *r, uint32_t row)
{
    vfmig__json_object(j, "codec_bytes");
    const vfmig_codec_stats *cs = codec_row(r, row);
    for (unsigned c = 0; c < r->ncodecs; c++) {
        if (!cs[c].bytes_in)
            continue;
        vfmig__json_object(j, cs[c].name);
        vfmig__json_u64(j, "in", cs[c].bytes_in);
        vfmig__json_u64(j, "out", cs[c].bytes_out);
        vfmig__json_end(j);
    }
    vfmig__json_end(j);
}

static const char *verify_name(uint32_t v)
{
    return v == VFMIG_VERIFY_APPLIED ? "applied" : v == VFMIG_VERIFY_FULL ? "full" : "readback";
}

/* Milliseconds with three decimals, the unit of every duration in the result. */
static void json_ms(vfmig_json *j, const char *key, uint64_t ns)
{
    vfmig__json_num(j, key, ms(ns), 3);
}

static void print_json(const opts *o, const report *r)
{
    const vfmig_stats *st = &r->st;
    vfmig_json j;
    vfmig__json_init(&j, stdout);
    vfmig__json_object(&j, NULL);
    vfmig__json_i64(&j, "schema_version", VFMIG_CLI_SCHEMA_VERSION);
    vfmig__json_str(&j, "status", r->status ? "error" : "ok");
    vfmig__json_str(&j, "error", r->status ? r->error : NULL);
    if (r->status)
        vfmig__json_str(&j, "error_code", vfmig_status_name(r->status));
    vfmig__json_str(&j, "role", r->role);
    vfmig__json_str(&j, "endpoint", r->endpoint);
    if (r->dirty_source) {
        const vfmig_tracking_stats *tk = &r->tracking;
        /* One scan a round: last_* is the final (blackout) query, avg_* the mean over rounds. */
        double avg = tk->total_bytes ? (double)tk->total_cpu_ns * 1073741824.0 / (double)tk->total_bytes : 0;
        vfmig__json_str(&j, "dirty_source", r->dirty_source);
        vfmig__json_object(&j, "tracking");
        vfmig__json_u64(&j, "scans", tk->scans);
        json_ms(&j, "last_ms", tk->last_ns);
        json_ms(&j, "last_cpu_ms", tk->last_cpu_ns);
        json_ms(&j, "total_ms", tk->total_ns);
        json_ms(&j, "total_cpu_ms", tk->total_cpu_ns);
        vfmig__json_num(&j, "cpu_ns_per_gib", tk->cpu_ns_per_gib, 0);
        vfmig__json_num(&j, "avg_cpu_ns_per_gib", avg, 0);
        vfmig__json_u64(&j, "pages_hashed", tk->pages_hashed);
        vfmig__json_u64(&j, "pages_sampled", tk->pages_sampled);
        vfmig__json_u64(&j, "pages_read_hashed", tk->pages_read_hashed);
        vfmig__json_end(&j);
    }
    vfmig__json_str(&j, "vf_state", vfmig_vf_state_name(st->vf_state));
    vfmig__json_bool(&j, "verified", st->verified && r->byte_compare != 0);
    if (r->byte_compare >= 0)
        vfmig__json_bool(&j, "byte_compare", r->byte_compare);
    json_ms(&j, "blackout_ms", st->blackout_ns);
    json_ms(&j, "total_ms", st->total_ns);
    json_ms(&j, "precopy_ms", st->precopy_ns);
    vfmig__json_object(&j, "blackout");
    json_ms(&j, "final_pages_ms", st->blackout_final_pages_ns);
    json_ms(&j, "mutable_state_ms", st->blackout_mutable_ns);
    json_ms(&j, "verify_ms", st->blackout_verify_ns);
    json_ms(&j, "restore_ms", st->blackout_restore_ns);
    vfmig__json_u64(&j, "final_dirty_pages", st->final_dirty_pages);
    vfmig__json_num(&j, "predicted_ms", st->predicted_blackout_ms, 3);
    vfmig__json_i64(&j, "budget_ms", o->budget_ms != NOTSET ? o->budget_ms : 50);
    vfmig__json_num(&j, "predicted_pages_ms", st->predicted_pages_ms, 3);
    vfmig__json_num(&j, "predicted_fixed_ms", st->predicted_fixed_ms, 3);
    vfmig__json_object(&j, "stages");
    json_ms(&j, "pause_ms", st->blackout_pause_ns);
    json_ms(&j, "query_ms", st->blackout_query_ns);
    json_ms(&j, "send_ms", st->blackout_send_ns);
    json_ms(&j, "target_ms", st->blackout_target_ns);
    json_ms(&j, "roundtrip_ms", st->blackout_roundtrip_ns);
    vfmig__json_end(&j);
    json_ms(&j, "full_verify_ms", st->blackout_full_verify_ns);
    vfmig__json_end(&j);
    vfmig__json_num(&j, "predicted_blackout_ms", st->predicted_blackout_ms, 3);
    vfmig__json_str(&j, "switchover_reason", vfmig_switch_reason_name(st->switch_reason));
    if (st->budget_met < 0)
        vfmig__json_null(&j, "budget_met");
    else
        vfmig__json_bool(&j, "budget_met", st->budget_met == 1);
    vfmig__json_num(&j, "budget_margin_ms", st->budget_met < 0 ? 0.0 : st->budget_margin_ms, 3);
    vfmig__json_u64(&j, "switchovers_called_off", st->switchovers_called_off);
    json_ms(&j, "called_off_ms", st->called_off_ns);
    vfmig__json_u64(&j, "throttle_min_percent", st->throttle_min_percent ? st->throttle_min_percent : 100);
    vfmig__json_num(&j, "workload_slowdown", r->slowdown, 3);
    vfmig__json_num(&j, "wire_rate", st->wire_rate, 0);
    vfmig__json_str(&j, "verify", verify_name(st->verify));
    vfmig__json_u64(&j, "delta_cache_bytes", st->delta_cache_bytes);
    vfmig__json_u64(&j, "rounds", st->rounds);
    vfmig__json_str(&j, "switch_reason", vfmig_switch_reason_name(st->switch_reason));
    vfmig__json_u64(&j, "streams", st->streams);
    vfmig__json_u64(&j, "threads", st->threads);
    vfmig__json_u64(&j, "bytes_vram", st->bytes_vram);
    vfmig__json_u64(&j, "bytes_wire", st->bytes_wire);
    vfmig__json_u64(&j, "bytes_raw", st->bytes_raw);
    vfmig__json_u64(&j, "pages", st->pages);
    vfmig__json_u64(&j, "page_size", st->page_size);
    vfmig__json_u64(&j, "pages_sent", st->pages_sent);
    vfmig__json_u64(&j, "zero_pages", st->zero_pages);
    vfmig__json_num(&j, "ratio", st->ratio, 4);
    vfmig__json_num(&j, "cpu_s", r->cpu, 3);
    json_codec_bytes(&j, r, 0);
    vfmig__json_object(&j, "state_bytes");
    vfmig__json_u64(&j, "immutable", st->immutable_bytes);
    vfmig__json_u64(&j, "mutable", st->mutable_bytes);
    vfmig__json_end(&j);
    vfmig__json_object(&j, "workload");
    vfmig__json_u64(&j, "vram", o->sim.vram_bytes);
    vfmig__json_u64(&j, "page", o->sim.page_size);
    vfmig__json_u64(&j, "dirty_rate", o->sim.dirty_rate);
    vfmig__json_str(&j, "pattern", o->pattern_str);
    vfmig__json_str(&j, "content", o->content_str);
    vfmig__json_u64(&j, "write_bytes", o->sim.write_bytes);
    vfmig__json_num(&j, "rate_before", r->pre_rate, 0);
    vfmig__json_end(&j);
    vfmig__json_array(&j, "round_stats");
    for (uint32_t i = 0; i < r->nrounds; i++) {
        const vfmig_round_stats *rs = &r->rounds[i];
        vfmig__json_object(&j, NULL);
        vfmig__json_u64(&j, "round", rs->round);
        vfmig__json_bool(&j, "blackout", rs->in_blackout);
        vfmig__json_u64(&j, "pages", rs->dirty_pages);
        vfmig__json_u64(&j, "zero_pages", rs->zero_pages);
        vfmig__json_u64(&j, "bytes_raw", rs->bytes_raw);
        vfmig__json_u64(&j, "bytes_wire", rs->bytes_wire);
        json_ms(&j, "ms", rs->duration_ns);
        vfmig__json_num(&j, "throughput", rs->throughput, 0);
        vfmig__json_num(&j, "dirty_rate", rs->dirty_rate, 0);
        vfmig__json_num(&j, "predicted_blackout_ms", rs->in_blackout ? 0.0 : rs->predicted_blackout_ms, 3);
        vfmig__json_u64(&j, "throttle", rs->throttle_percent);
        json_ms(&j, "encode_ms", rs->encode_ns);
        json_ms(&j, "cpu_ms", rs->cpu_ns);
        json_ms(&j, "peer_cpu_ms", rs->peer_cpu_ns);
        json_codec_bytes(&j, r, i + 1);
        vfmig__json_end(&j);
    }
    vfmig__json_end(&j);
    vfmig__json_end(&j);
    fputc('\n', stdout);
}

static void print_human(const opts *o, const report *r)
{
    const vfmig_stats *st = &r->st;
    if (!o->quiet && r->nrounds) {
        printf("%-6s %9s %8s %10s %10s %9s %9s %11s %10s\n", "round", "pages", "zero", "data MiB",
               "wire MiB", "ms", "MiB/s", "dirty MiB/s", "predict ms");
        for (uint32_t i = 0; i < r->nrounds; i++) {
            const vfmig_round_stats *rs = &r->rounds[i];
            char name[16];
            if (rs->in_blackout)
                snprintf(name, sizeof(name), "final");
            else
                snprintf(name, sizeof(name), "%u", rs->round);
            printf("%-6s %9" PRIu64 " %8" PRIu64 " %10.1f %10.1f %9.1f %9.0f", name, rs->dirty_pages,
                   rs->zero_pages, mib(rs->bytes_raw), mib(rs->bytes_wire), ms(rs->duration_ns),
                   rs->throughput / 1048576.0);
            if (rs->in_blackout)
                printf(" %11s %10s\n", "-", "-");
            else
                printf(" %11.0f %10.1f\n", rs->dirty_rate / 1048576.0, rs->predicted_blackout_ms);
        }
    }
    if (r->status) {
        printf("migration FAILED: %s\n", r->error);
        printf("VF state: %s\n", vfmig_vf_state_name(st->vf_state));
        if (st->vf_state == VFMIG_VF_IN_DOUBT)
            printf("The target verified the image and was told to resume, but never confirmed. The VF is\n"
                   "paused here. Check the target: if it does not run the VF, resume it on this host.\n");
        return;
    }
    if (st->role == VFMIG_ROLE_SOURCE || !strcmp(r->role, "local")) {
        printf("blackout %.2f ms (budget %" PRId64 " ms, predicted %.2f ms) for %" PRIu64 " final pages: pause %.2f, "
               "query %.2f, pages and state %.2f, target %.2f (of which restore %.2f), network %.2f\n",
               ms(st->blackout_ns), o->budget_ms != NOTSET ? o->budget_ms : 50, st->predicted_blackout_ms,
               st->final_dirty_pages, ms(st->blackout_pause_ns), ms(st->blackout_query_ns), ms(st->blackout_send_ns),
               ms(st->blackout_target_ns), ms(st->blackout_restore_ns), ms(st->blackout_roundtrip_ns));
        if (st->blackout_full_verify_ns)
            printf("full verification (VRAM re-read on both ends): %.2f ms of it\n", ms(st->blackout_full_verify_ns));
        if (st->budget_met == 0)
            printf("budget missed by %.2f ms (switched over anyway)\n", -st->budget_margin_ms);
        if (st->switchovers_called_off)
            printf("switch-over called off %u time(s) as the blackout would have overrun the budget: the VF ran on "
                   "the source again after %.2f ms paused, and pre-copy went on\n",
                   st->switchovers_called_off, ms(st->called_off_ns));
        printf("total %.0f ms, %u pre-copy rounds (%s), %.1f MiB on the wire for %.1f MiB of VRAM, ratio %.2f, "
               "wire %.0f MiB/s\n",
               ms(st->total_ns), st->rounds, vfmig_switch_reason_name(st->switch_reason), mib(st->bytes_wire),
               mib(st->bytes_vram), st->ratio, st->wire_rate / 1048576.0);
        double slow = r->slowdown;
        if (st->throttle_min_percent && st->throttle_min_percent < 100)
            printf("the VF was THROTTLED down to %u%% of its speed during pre-copy (workload %.2fx slower)\n",
                   st->throttle_min_percent, slow);
        else if (r->pre_rate > 0)
            printf("the VF ran at full speed (workload slowdown %.2fx)\n", slow);
        if (!o->quiet) {
            printf("codecs:");
            const vfmig_codec_stats *cs = codec_row(r, 0);
            for (unsigned c = 0; c < r->ncodecs; c++)
                if (cs[c].bytes_in)
                    printf(" %s %.1f->%.1f MiB", cs[c].name, mib(cs[c].bytes_in), mib(cs[c].bytes_out));
            printf("\n");
        }
    } else {
        printf("received %.1f MiB on the wire (%" PRIu64 " pages, %" PRIu64 " zero), verify %.2f ms, restore %.2f ms\n",
               mib(st->bytes_wire), st->pages_sent, st->zero_pages, ms(st->blackout_verify_ns),
               ms(st->blackout_restore_ns));
    }
    if (r->dirty_source && r->tracking.source != VFMIG_DIRTY_BITMAP &&
        (st->role == VFMIG_ROLE_SOURCE || !strcmp(r->role, "local")) && !o->quiet)
        printf("dirty source: %s (%" PRIu64 " scans, last %.2f ms wall / %.2f ms CPU, %.0f CPU ms per GiB scanned)\n",
               r->dirty_source, r->tracking.scans, ms(r->tracking.last_ns), ms(r->tracking.last_cpu_ns),
               r->tracking.cpu_ns_per_gib / 1e6);
    printf("verified: %s; dirty source: %s; VF state: %s\n",
           st->verified ? (r->byte_compare == 1 ? "yes (digest and byte-for-byte compare)" : "yes (digest)") : "no",
           r->dirty_source ? r->dirty_source : "-", vfmig_vf_state_name(st->vf_state));
}

static int finish(const opts *o, report *r)
{
    if (o->json)
        print_json(o, r);
    else
        print_human(o, r);
    if (r->status && o->json)
        fprintf(stderr, "vfmig: migration failed: %s\n", r->error);
    report_free(r);
    if (r->st.vf_state == VFMIG_VF_IN_DOUBT)
        return 3;
    return r->status ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Commands                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------------------------ */
/* The VF behind --device: the simulated VF as it is (sim), the same with its dirty bits hidden */
/* and found by hashing (hash), its memory as plain host memory tracked by the kernel (hostmem:  */
/* the simulated VF's workload writes, the engine sees only the hostmem device), or a CUDA VF.   */
/* ------------------------------------------------------------------------------------------ */
typedef struct cli_vf {
    vfmig_simvf *sim;      /* sim, hash, hostmem: the memory and its workload */
    vfmig_hashtrack *ht;   /* hash (source only) */
    vfmig_hostmem *hm;     /* hostmem */
    vfmig_cuda_sim *cuda;  /* cuda */
    vfmig_device dev;      /* what the session is given */
} cli_vf;

/* hostmem's scheduler edges and state are the simulated VF's own (its workload is the VF). */
static int vf_cb_pause(void *u) { vfmig_device d; vfmig_simvf_device(u, &d); return d.ops->pause(d.dev); }
static int vf_cb_resume(void *u) { vfmig_device d; vfmig_simvf_device(u, &d); return d.ops->resume(d.dev); }
static int vf_cb_throttle(void *u, unsigned p) { vfmig_device d; vfmig_simvf_device(u, &d); return d.ops->throttle(d.dev, p); }
static int vf_cb_save_mut(void *u, void *b, uint64_t *n)
{
    vfmig_device d;
    vfmig_simvf_device(u, &d);
    return d.ops->save_mutable(d.dev, b, n);
}
static int vf_cb_restore_mut(void *u, const void *b, uint64_t n)
{
    vfmig_device d;
    vfmig_simvf_device(u, &d);
    return d.ops->restore_mutable(d.dev, b, n);
}

static const char *vf_kind(const opts *o) { return o->device_str ? o->device_str : "sim"; }

/* The simulated VF's initial fill (seconds for a few GiB), shown like a migration's progress:
 * json lines with phase "setup", or the bar; every 200 ms, plus its start and end. */
typedef struct setup_view {
    const opts *o;
    const char *role;
    uint64_t session; /* serve: the migration it is for (its id), 0 elsewhere */
    uint64_t t0, last;
} setup_view;

static void on_setup(void *user, uint64_t done, uint64_t total)
{
    setup_view *v = user;
    uint64_t now = now_ns();
    if (!v->t0)
        v->t0 = now;
    if (done && done < total && now - v->last < 200000000ull)
        return;
    v->last = now;
    double elapsed = (double)(now - v->t0) / 1e6;
    if (v->o->progress == PROGRESS_JSON) {
        vfmig_json j;
        flockfile(stderr);
        progress_line(&j, "setup");
        vfmig__json_str(&j, "role", v->role);
        if (v->session)
            vfmig__json_u64(&j, "session", v->session);
        vfmig__json_u64(&j, "bytes_done", done);
        vfmig__json_u64(&j, "bytes_total", total);
        vfmig__json_num(&j, "elapsed_ms", elapsed, 1);
        progress_line_end(&j);
        funlockfile(stderr);
    } else if (done >= total) {
        fprintf(stderr, "\r\033[K");
    } else {
        fprintf(stderr, "\rsetup     %s VF %5.1f%% of %8.1f MiB  %7.1f MiB/s\033[K", v->role,
                total ? 100.0 * (double)done / (double)total : 0, (double)total / 1048576.0,
                elapsed > 0 ? (double)done / 1048576.0 / (elapsed / 1e3) : 0);
    }
    fflush(stderr);
}

static int vf_create(const opts *o, bool target, cli_vf *vf, char *err, size_t errlen)
{
    memset(vf, 0, sizeof *vf);
    vfmig_simvf_config c = o->sim;
    if (target) {
        /* The target VF starts empty and idle; its workload starts when it resumes. */
        c.content = VFMIG_CONTENT_ZERO;
        c.dirty_rate = 0;
        if (o->target_state_version)
            c.state_version = o->target_state_version;
    }
    const char *kind = vf_kind(o);
    if (!strcmp(kind, "cuda")) {
        vfmig_cuda_config cc;
        vfmig_cuda_config_init(&cc);
        cc.size = c.vram_bytes;
        cc.page_size = c.page_size;
        cc.state_version = c.state_version;
        int rc = vfmig_cuda_sim_create(&cc, (int)c.content, c.dirty_rate,
                                       c.pattern == VFMIG_PATTERN_HOT ? c.hot_bytes : 0, c.seed, &vf->cuda, err,
                                       errlen);
        if (!rc)
            vfmig_cuda_device(vfmig_cuda_sim_device(vf->cuda), &vf->dev);
        return rc;
    }
    if (!strcmp(kind, "hostmem"))
        c.nranges = 1; /* one region */
    setup_view view = {.o = o, .role = target ? "target" : "source"};
    if (o->progress != PROGRESS_NONE) {
        c.setup_progress = on_setup;
        c.setup_user = &view;
    }
    int rc = vfmig_simvf_create(&c, &vf->sim);
    if (rc) {
        snprintf(err, errlen, "cannot create the simulated VF: %s", vfmig_strerror(rc));
        return rc;
    }
    vfmig_simvf_device(vf->sim, &vf->dev);
    uint64_t size;
    uint8_t *mem = (uint8_t *)vfmig_simvf_vram(vf->sim, &size);
    if (!strcmp(kind, "hash") && !target) {
        vfmig_hashtrack_config hc;
        vfmig_hashtrack_config_init(&hc);
        hc.host_view = mem;
        vfmig_device inner = vf->dev;
        inner.ops = vf->dev.ops;
        if ((rc = vfmig_hashtrack_create(&inner, &hc, &vf->ht))) {
            snprintf(err, errlen, "cannot create the hash tracker: %s", vfmig_strerror(rc));
            return rc;
        }
        vfmig_hashtrack_device(vf->ht, &vf->dev);
    } else if (!strcmp(kind, "hostmem")) {
        vfmig_hostmem_config hc;
        vfmig_hostmem_config_init(&hc);
        hc.base = mem;
        hc.size = size;
        hc.page_size = c.page_size;
        hc.state_version = c.state_version;
        hc.cb = (vfmig_vf_callbacks){vf_cb_pause, vf_cb_resume, vf_cb_save_mut, vf_cb_restore_mut, vf_cb_throttle,
                                     vf->sim};
        if ((rc = vfmig_hostmem_create(&hc, &vf->hm, err, errlen)))
            return rc;
        vfmig_hostmem_device(vf->hm, &vf->dev);
    }
    return VFMIG_OK;
}

static int vf_start(cli_vf *vf)
{
    return vf->cuda ? vfmig_cuda_sim_start(vf->cuda) : vfmig_simvf_start(vf->sim);
}

static void vf_destroy(cli_vf *vf)
{
    vfmig_hashtrack_destroy(vf->ht);
    vfmig_hostmem_destroy(vf->hm); /* before the memory goes */
    vfmig_simvf_destroy(vf->sim);
    vfmig_cuda_sim_destroy(vf->cuda);
    memset(vf, 0, sizeof *vf);
}

static bool vf_running(const cli_vf *vf)
{
    return vf->sim ? vfmig_simvf_get_state(vf->sim) == VFMIG_SIMVF_RUNNING : vf->cuda != NULL;
}

/* Dirty source and tracking cost of a source VF, for the report. */
static void vf_report(const cli_vf *vf, report *r)
{
    if (vf->ht) {
        vfmig_hashtrack_get_stats(vf->ht, &r->tracking);
    } else if (vf->hm) {
        vfmig_hostmem_get_stats(vf->hm, &r->tracking);
    } else if (vf->cuda) {
        vfmig_cuda_get_stats(vfmig_cuda_sim_device(vf->cuda), &r->tracking);
    } else {
        memset(&r->tracking, 0, sizeof r->tracking);
        r->tracking.source = VFMIG_DIRTY_BITMAP;
    }
    r->dirty_source = vfmig_dirty_source_name(r->tracking.source);
}

/* local: 1 if the target's memory (and mutable state) equals the paused source's, byte for byte. */
static int vf_compare(const cli_vf *a, const cli_vf *b)
{
    if (a->cuda || b->cuda)
        return a->cuda && b->cuda && vfmig_cuda_sim_compare(a->cuda, b->cuda) == 1;
    uint64_t na, nb;
    const uint8_t *va = vfmig_simvf_vram(a->sim, &na), *vb = vfmig_simvf_vram(b->sim, &nb);
    if (na != nb || memcmp(va, vb, na))
        return 0;
    return vfmig_simvf_restored_mutable(b->sim, &na) != NULL;
}

/* Whether the target VF was ever resumed (a bug after a failed migration). */
static bool vf_resumed(const cli_vf *vf)
{
    if (!vf->sim)
        return false;
    vfmig_simvf_counters c;
    vfmig_simvf_get_counters(vf->sim, &c);
    return c.resumes != 0;
}

static void announce(const opts *o, const char *role, const char *endpoint)
{
    if (o->json || o->quiet)
        return;
    char desc[128];
    snprintf(desc, sizeof(desc), "%s", o->pattern_str);
    printf("vfmig %s: %.0f MiB VF, %.0f KiB pages, %u range%s; workload %.0f MiB/s %s, content %s; link %s\n",
           role, mib(o->sim.vram_bytes), (double)o->sim.page_size / 1024, o->sim.nranges,
           o->sim.nranges == 1 ? "" : "s", mib(o->sim.dirty_rate), desc, o->content_str, endpoint);
    fflush(stdout);
}

/* ------------------------------------------------------------------------------------------ */
/* Signals and serve (issue 13)                                                               */
/* ------------------------------------------------------------------------------------------ */

static uint64_t now_ms_cli(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* SIGINT and SIGTERM are blocked in every thread and taken by one thread of their own (sigwait),
 * which cancels the session or stops the server: the library never runs in a signal handler. */
typedef struct sigwatch {
    sigset_t set;
    pthread_mutex_t lock;
    vfmig_session *session;
    vfmig_server *server;
    atomic_int sig;
} sigwatch;

static void *sigwatch_main(void *arg)
{
    sigwatch *w = arg;
    for (;;) {
        int sig;
        if (sigwait(&w->set, &sig))
            continue;
        pthread_mutex_lock(&w->lock);
        atomic_store(&w->sig, sig);
        if (w->session)
            vfmig_session_cancel(w->session);
        if (w->server)
            vfmig_server_stop(w->server);
        pthread_mutex_unlock(&w->lock);
    }
    return NULL;
}

/* Before any other thread starts, so that they all inherit the blocked mask. */
static void sigwatch_start(sigwatch *w)
{
    sigemptyset(&w->set);
    sigaddset(&w->set, SIGINT);
    sigaddset(&w->set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &w->set, NULL);
    pthread_mutex_init(&w->lock, NULL);
    atomic_init(&w->sig, 0);
    pthread_t th;
    if (pthread_create(&th, NULL, sigwatch_main, w) == 0)
        pthread_detach(th);
}

/* What a signal acts on from now (NULL: nothing); a signal already taken acts at once. */
static void sigwatch_set(sigwatch *w, vfmig_session *s, vfmig_server *srv)
{
    pthread_mutex_lock(&w->lock);
    w->session = s;
    w->server = srv;
    if (atomic_load(&w->sig)) {
        if (s)
            vfmig_session_cancel(s);
        if (srv)
            vfmig_server_stop(srv);
    }
    pthread_mutex_unlock(&w->lock);
}

static const char *signame(int sig)
{
    return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal";
}

typedef struct serve_ctx {
    const opts *o;
    cbctx cb;                 /* events of every session (targets: nothing per session in it) */
    pthread_mutex_t out_lock; /* one session's output at a time */
} serve_ctx;

/* A fresh simulated VF shaped like the announced one (the sim makes equal ranges). */
static int serve_open(void *user, const vfmig_incoming *in, vfmig_device *dev, void **dev_user)
{
    serve_ctx *c = user;
    vfmig_simvf_config cfg = c->o->sim;
    uint64_t total = 0;
    for (uint32_t i = 0; i < in->nranges; i++) {
        if (in->range_size[i] != in->range_size[0])
            return VFMIG_ELAYOUT;
        total += in->range_size[i];
    }
    cfg.vram_bytes = total;
    cfg.nranges = in->nranges;
    cfg.page_size = in->page_size;
    cfg.content = VFMIG_CONTENT_ZERO;
    cfg.dirty_rate = 0; /* the image is the source's; this sim only holds it */
    cfg.immutable_bytes = in->immutable_bytes;
    if (c->o->target_state_version)
        cfg.state_version = c->o->target_state_version;
    /* Setup lines carry the migration's id: several may be set up at once (no bar for that). */
    setup_view view = {.o = c->o, .role = "target", .session = in->id};
    if (c->o->progress == PROGRESS_JSON) {
        cfg.setup_progress = on_setup;
        cfg.setup_user = &view;
    }
    vfmig_simvf *sim;
    int rc = vfmig_simvf_create(&cfg, &sim);
    if (rc)
        return rc;
    vfmig_simvf_device(sim, dev);
    *dev_user = sim;
    return VFMIG_OK;
}

static void serve_configure(void *user, const vfmig_incoming *in, vfmig_session *s, void *dev_user)
{
    (void)in;
    (void)dev_user;
    serve_ctx *c = user;
    char err[128];
    apply_opts(c->o, s, &c->cb, err, sizeof(err)); /* every option was checked by parse_args */
}

static void serve_finished(void *user, const vfmig_incoming *in, vfmig_session *s, int status, void *dev_user)
{
    serve_ctx *c = user;
    report r = {.role = "target", .byte_compare = -1, .slowdown = 1};
    snprintf(r.endpoint, sizeof(r.endpoint), "%s (migration %" PRIu64 ")", in->peer, in->id);
    if (s) {
        collect(&r, s, status);
    } else {
        r.status = status;
        snprintf(r.error, sizeof(r.error), "no device for this VF: %s", vfmig_strerror(status));
        r.st.vf_state = VFMIG_VF_NOT_RESUMED;
    }
    pthread_mutex_lock(&c->out_lock);
    if (!c->o->json)
        printf("--- migration %" PRIu64 " from %s: %s\n", in->id, in->peer, status ? "FAILED" : "ok");
    if (c->o->json)
        print_json(c->o, &r);
    else
        print_human(c->o, &r);
    fflush(stdout);
    pthread_mutex_unlock(&c->out_lock);
    report_free(&r);
    vfmig_simvf_destroy(dev_user);
}

static void serve_refused(void *user, const char *peer, int status, const char *why)
{
    serve_ctx *c = user;
    if (c->o->verbose)
        fprintf(stderr, "vfmig: dropped a connection from %s: %s (%s)\n", peer, why, vfmig_status_name(status));
}

static int cmd_serve(const opts *o, sigwatch *w)
{
    serve_ctx c = {.o = o};
    pthread_mutex_init(&c.out_lock, NULL);
    vfmig_server_config cfg;
    vfmig_server_config_init(&cfg);
    cfg.endpoint = o->endpoint;
    cfg.psk = o->psk_len ? o->psk : NULL;
    cfg.psk_len = o->psk_len;
    cfg.psk2 = o->psk2_len ? o->psk2 : NULL;
    cfg.psk2_len = o->psk2_len;
    cfg.require_encrypt = o->encrypt == 1;
    cfg.allow_insecure = o->insecure;
    if (o->max_sessions)
        cfg.max_sessions = o->max_sessions;
    if (o->timeout_ms != NOTSET)
        cfg.timeout_ms = (int)o->timeout_ms;
    /* Without --max-vram, the --vram this command was given (within the budget when one is). */
    cfg.max_memory_bytes = o->max_memory;
    cfg.max_vram_bytes = o->max_vram ? o->max_vram : o->sim.vram_bytes;
    if (o->max_memory && cfg.max_vram_bytes > o->max_memory) {
        char v[32], m[32];
        human_bytes(cfg.max_vram_bytes, v, sizeof(v));
        human_bytes(o->max_memory, m, sizeof(m));
        if (o->max_vram)
            usage_error("--max-vram %s is over --max-memory %s: no such VF could ever be taken", v, m);
        cfg.max_vram_bytes = o->max_memory;
    }
    vfmig_server_callbacks cb = {.open_device = serve_open, .configure = serve_configure,
                                 .finished = serve_finished, .refused = serve_refused, .user = &c};
    vfmig_server *srv;
    char err[600];
    int rc = vfmig_server_create(&cfg, &cb, &srv, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "vfmig: serve: %s\n", err);
        return 1;
    }
    /* Always said (on stderr): scripts that listen on port 0 read the port from here. */
    vfmig_server_counters k;
    vfmig_server_get_counters(srv, &k);
    char kv[32], km[32];
    fprintf(stderr, "vfmig: serving on port %d (%s, at most %u migrations at once, VFs up to %s, memory budget %s)\n",
            vfmig_server_port(srv), o->psk_len ? (o->encrypt == 1 ? "key required, encrypted" : "key required") : "no key",
            cfg.max_sessions, human_bytes(k.max_vram_bytes, kv, sizeof(kv)), human_bytes(k.max_memory_bytes, km, sizeof(km)));
    sigwatch_set(w, NULL, srv);
    vfmig_server_run(srv);
    sigwatch_set(w, NULL, NULL);
    vfmig_server_get_counters(srv, &k);
    vfmig_server_destroy(srv);
    int sig = atomic_load(&w->sig);
    fprintf(stderr, "vfmig: %s: stopped serving: %" PRIu64 " migrated, %" PRIu64 " failed or canceled, %" PRIu64
                    " connections dropped before a session (of them %" PRIu64 " busy, %" PRIu64 " VF too large, %" PRIu64
                    " over the memory budget)\n",
            signame(sig), k.sessions_ok, k.sessions_failed, k.refused, k.refused_busy, k.refused_vram, k.refused_memory);
    pthread_mutex_destroy(&c.out_lock);
    return 0;
}

static int cmd_source(const opts *o, sigwatch *w)
{
    report r = {.role = "source", .byte_compare = -1, .slowdown = 1};
    snprintf(r.endpoint, sizeof(r.endpoint), "%s", o->endpoint);
    cli_vf vf;
    vfmig_session *s = NULL;
    vfmig_link *link = NULL;
    int rc = vf_create(o, false, &vf, r.error, sizeof(r.error));
    if (!rc)
        rc = vf_start(&vf);
    if (!rc)
        r.pre_rate = measure_workload(o, vf.sim);
    if (!rc)
        rc = make_session(o, VFMIG_ROLE_SOURCE, &vf.dev, vf.sim, &r.cb, &s, r.error, sizeof(r.error));
    if (s)
        sigwatch_set(w, s, NULL); /* Ctrl-C: cancel, the VF keeps running here, summary printed */
    announce(o, "source", o->endpoint);
    if (!rc)
        rc = vfmig_connect(o->endpoint, (int)(o->timeout_ms != NOTSET ? o->timeout_ms : 10000), &link, r.error,
                           sizeof(r.error));
    r.cpu0 = process_cpu_s();
    if (!rc)
        rc = vfmig_session_run(s, link);
    sigwatch_set(w, NULL, NULL);
    if (s)
        collect(&r, s, rc);
    else
        r.status = rc;
    if (atomic_load(&w->sig))
        fprintf(stderr, "vfmig: %s: migration canceled\n", signame(atomic_load(&w->sig)));
    if (rc && !o->json && vf_running(&vf))
        fprintf(stderr, "vfmig: the VF keeps running on this host\n");
    vf_report(&vf, &r);
    vfmig_session_destroy(s);
    vfmig_link_close(link);
    vf_destroy(&vf);
    return finish(o, &r);
}

/* vfmig target: a server for one migration. Connections that end before a session (garbage,
 * a wrong key, silence) are refused and it keeps waiting; the first session, whatever its
 * outcome, is the one it reports on and exits with. */
typedef struct target_ctx {
    const opts *o;
    cli_vf vf;
    report *r;
    vfmig_server *srv;
    atomic_bool used, done;
} target_ctx;

static int target_open(void *user, const vfmig_incoming *in, vfmig_device *dev, void **dev_user)
{
    (void)in;
    target_ctx *c = user;
    if (atomic_exchange(&c->used, true))
        return VFMIG_EBUSY; /* one migration only */
    *dev = c->vf.dev;
    *dev_user = c;
    c->r->cpu0 = process_cpu_s();
    return VFMIG_OK;
}

static void target_configure(void *user, const vfmig_incoming *in, vfmig_session *s, void *dev_user)
{
    (void)in;
    (void)dev_user;
    target_ctx *c = user;
    char err[128];
    apply_opts(c->o, s, &c->r->cb, err, sizeof(err));
}

static void target_finished(void *user, const vfmig_incoming *in, vfmig_session *s, int status, void *dev_user)
{
    (void)in;
    (void)dev_user;
    target_ctx *c = user;
    if (s) {
        collect(c->r, s, status);
    } else {
        c->r->status = status;
        snprintf(c->r->error, sizeof(c->r->error), "the target device refused the migration: %s",
                 vfmig_strerror(status));
    }
    atomic_store(&c->done, true);
    vfmig_server_stop(c->srv);
}

static void target_refused(void *user, const char *peer, int status, const char *why)
{
    target_ctx *c = user;
    if (!c->o->json && !c->o->quiet)
        fprintf(stderr, "vfmig: dropped a connection from %s: %s (%s); still waiting\n", peer, why,
                vfmig_status_name(status));
}

static void *target_server_main(void *arg)
{
    vfmig_server_run(arg);
    return NULL;
}

static int cmd_target(const opts *o, sigwatch *w)
{
    report r = {.role = "target", .byte_compare = -1, .slowdown = 1};
    snprintf(r.endpoint, sizeof(r.endpoint), "%s", o->endpoint);
    target_ctx c = {.o = o, .r = &r};
    int rc = vf_create(o, true, &c.vf, r.error, sizeof(r.error));
    if (!rc) {
        vfmig_server_config cfg;
        vfmig_server_config_init(&cfg);
        cfg.endpoint = o->endpoint;
        cfg.psk = o->psk_len ? o->psk : NULL;
        cfg.psk_len = o->psk_len;
        cfg.psk2 = o->psk2_len ? o->psk2 : NULL;
        cfg.psk2_len = o->psk2_len;
        cfg.require_encrypt = o->encrypt == 1;
        cfg.allow_insecure = o->insecure;
        cfg.max_sessions = 1;
        /* Its VF exists already: larger ones are refused as such, and no budget to keep. */
        cfg.max_vram_bytes = o->sim.vram_bytes;
        cfg.max_memory_bytes = UINT64_MAX;
        if (o->timeout_ms != NOTSET)
            cfg.timeout_ms = (int)o->timeout_ms;
        vfmig_server_callbacks cb = {.open_device = target_open, .configure = target_configure,
                                     .finished = target_finished, .refused = target_refused, .user = &c};
        rc = vfmig_server_create(&cfg, &cb, &c.srv, r.error, sizeof(r.error));
    }
    if (!rc) {
        int port = vfmig_server_port(c.srv);
        char where[320];
        snprintf(where, sizeof(where), "%s (port %d)", o->endpoint, port);
        announce(o, "target", where);
        /* Always said (on stderr): scripts that listen on port 0 read the port from here. */
        fprintf(stderr, "vfmig: waiting for a source on port %d\n", port);
        pthread_t th;
        if (pthread_create(&th, NULL, target_server_main, c.srv)) {
            rc = VFMIG_ENOMEM;
        } else {
            sigwatch_set(w, NULL, c.srv); /* a signal stops it; a session in flight is canceled */
            uint64_t t0 = now_ms_cli();
            while (!atomic_load(&c.done) && !atomic_load(&w->sig) && !atomic_load(&c.used) &&
                   (!o->accept_timeout_ms || now_ms_cli() - t0 < (uint64_t)o->accept_timeout_ms)) {
                struct timespec ts = {0, 20 * 1000000L};
                nanosleep(&ts, NULL);
            }
            /* Once a migration started, it decides the outcome: wait for it. */
            while (atomic_load(&c.used) && !atomic_load(&c.done)) {
                struct timespec ts = {0, 20 * 1000000L};
                nanosleep(&ts, NULL);
            }
            vfmig_server_stop(c.srv);
            pthread_join(th, NULL);
            sigwatch_set(w, NULL, NULL);
            if (atomic_load(&c.done)) {
                rc = r.status;
            } else if (atomic_load(&w->sig)) {
                rc = VFMIG_ECANCELED;
                snprintf(r.error, sizeof(r.error), "canceled by %s before a source connected",
                         signame(atomic_load(&w->sig)));
            } else {
                rc = VFMIG_ETIMEDOUT;
                snprintf(r.error, sizeof(r.error), "no source migrated within %d ms", o->accept_timeout_ms);
            }
        }
    }
    if (!atomic_load(&c.done)) {
        /* No session ran: the report is of the VF that waited. */
        r.status = rc;
        r.st.vf_state = VFMIG_VF_NOT_RESUMED;
        r.st.role = VFMIG_ROLE_TARGET;
        r.st.page_size = o->sim.page_size;
        r.st.bytes_vram = o->sim.vram_bytes;
        r.st.pages = o->sim.page_size ? o->sim.vram_bytes / o->sim.page_size : 0;
        r.st.throttle_min_percent = 100;
    }
    vfmig_server_destroy(c.srv);
    vf_destroy(&c.vf);
    return finish(o, &r);
}

typedef struct local_target {
    vfmig_listener *l;
    vfmig_session *s;
    cbctx cb;
    int timeout_ms;
    int rc;
    char err[400];
} local_target;

static void *local_target_main(void *arg)
{
    local_target *t = arg;
    vfmig_link *link = NULL;
    t->rc = vfmig_accept(t->l, t->timeout_ms, &link, t->err, sizeof(t->err));
    if (!t->rc)
        t->rc = vfmig_session_run(t->s, link);
    vfmig_link_close(link);
    return NULL;
}

static int cmd_local(const opts *o)
{
    report r = {.role = "local", .byte_compare = -1, .slowdown = 1};
    const char *ep = o->endpoint ? o->endpoint : "tcp://127.0.0.1:0";
    cli_vf src_vf, dst_vf;
    vfmig_session *src = NULL;
    local_target t = {.timeout_ms = (int)(o->timeout_ms != NOTSET ? o->timeout_ms : 10000)};
    vfmig_link *link = NULL;
    pthread_t th;
    bool thread = false;
    memset(&dst_vf, 0, sizeof dst_vf);
    int rc = vf_create(o, false, &src_vf, r.error, sizeof(r.error));
    if (!rc)
        rc = vf_create(o, true, &dst_vf, r.error, sizeof(r.error));
    if (!rc)
        rc = make_session(o, VFMIG_ROLE_SOURCE, &src_vf.dev, src_vf.sim, &r.cb, &src, r.error, sizeof(r.error));
    if (!rc)
        rc = make_session(o, VFMIG_ROLE_TARGET, &dst_vf.dev, dst_vf.sim, &t.cb, &t.s, r.error, sizeof(r.error));
    t.cb.no_progress = true;
    if (!rc)
        rc = vfmig_listen(ep, &t.l, r.error, sizeof(r.error));
    if (!rc) {
        /* Connect to the port actually bound (the endpoint may say port 0). */
        char conn[400];
        const char *q = strchr(ep, '?');
        const char *colon = strrchr(ep, ':');
        if (q && colon > q)
            colon = NULL;
        int hostlen = colon ? (int)(colon - ep) : (int)strlen(ep);
        snprintf(conn, sizeof(conn), "%.*s:%d%s", hostlen, ep, vfmig_listener_port(t.l), q ? q : "");
        snprintf(r.endpoint, sizeof(r.endpoint), "%s", conn);
        announce(o, "local", conn);
        rc = vf_start(&src_vf);
        if (!rc)
            r.pre_rate = measure_workload(o, src_vf.sim);
        if (!rc && pthread_create(&th, NULL, local_target_main, &t) == 0)
            thread = true;
        if (!rc && !thread)
            rc = VFMIG_ENOMEM;
        r.cpu0 = process_cpu_s();
        if (!rc)
            rc = vfmig_connect(conn, t.timeout_ms, &link, r.error, sizeof(r.error));
        if (!rc)
            rc = vfmig_session_run(src, link);
        else if (thread)
            vfmig_session_cancel(t.s);
    }
    if (thread)
        pthread_join(th, NULL);
    vfmig_link_close(link);
    vfmig_listener_close(t.l);
    if (src) {
        collect(&r, src, rc);
        if (!rc && t.rc) {
            r.status = t.rc;
            snprintf(r.error, sizeof(r.error), "target: %s", t.err[0] ? t.err : vfmig_session_last_error(t.s));
        }
    } else {
        r.status = rc;
    }
    if (!r.status) {
        /* The source stays paused after a successful migration, and the target VF has no
         * workload, so both images are still those of the moment of pause. */
        r.byte_compare = vf_compare(&src_vf, &dst_vf);
        if (!r.byte_compare) {
            r.status = VFMIG_EDIGEST;
            snprintf(r.error, sizeof(r.error), "target image differs from the source image byte for byte");
        }
    } else if (src_vf.sim || src_vf.cuda) {
        /* vf_state is the source's view: after a failure the VF runs on the source. */
        if (vf_resumed(&dst_vf))
            snprintf(r.error + strlen(r.error), sizeof(r.error) - strlen(r.error), " [BUG: target resumed]");
    }
    vf_report(&src_vf, &r);
    vfmig_session_destroy(src);
    vfmig_session_destroy(t.s);
    vf_destroy(&src_vf);
    vf_destroy(&dst_vf);
    return finish(o, &r);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a dropped peer is an error code, not a signal */
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        help(NULL);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        print_version();
        return 0;
    }
    opts o = {.cmd = argv[1], .budget_ms = NOTSET, .max_rounds = NOTSET, .max_precopy_ms = NOTSET,
              .timeout_ms = NOTSET, .threads = NOTSET, .codec = NOTSET, .level = NOTSET,
              .max_bandwidth = NOTSET, .delta_cache = NOTSET, .batch_bytes = NOTSET, .throttle = NOTSET,
              .readback = NOTSET, .numa_node = NOTSET, .encrypt = NOTSET, .budget_miss = NOTSET, .pattern_str = "uniform",
              .codec_str = "auto", .content_str = "mix",
              .progress = isatty(STDERR_FILENO) ? PROGRESS_BAR : PROGRESS_NONE /* --progress auto */};
    if (!strcmp(o.cmd, "keygen"))
        return cmd_keygen(argc, argv);
    if (strcmp(o.cmd, "local") && strcmp(o.cmd, "source") && strcmp(o.cmd, "target") && strcmp(o.cmd, "serve"))
        usage_error("unknown command '%s' (local, source, target, serve or keygen)", o.cmd);
    vfmig_simvf_config_init(&o.sim);
    o.sim.vram_bytes = 1ull << 30;
    o.sim.page_size = 4 << 10;
    parse_args(&o, argc - 1, argv + 1);
    if (o.device_str && !strcmp(o.device_str, "cuda")) {
        /* Before any work: a machine without a usable GPU says so at once. */
        char why[300];
        if (!vfmig_cuda_available(why, sizeof(why))) {
            fprintf(stderr, "vfmig: --device cuda: %s\n", why);
            return 1;
        }
    }
    static sigwatch w; /* lives until exit: its thread never ends */
    if (strcmp(o.cmd, "local"))
        sigwatch_start(&w);
    if (!strcmp(o.cmd, "source"))
        return cmd_source(&o, &w);
    if (!strcmp(o.cmd, "target"))
        return cmd_target(&o, &w);
    if (!strcmp(o.cmd, "serve"))
        return cmd_serve(&o, &w);
    return cmd_local(&o);
}
