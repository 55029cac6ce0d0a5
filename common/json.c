/* common/json.c - the JSON writer of common/json.h. */
#include "common/json.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

void vfmig__json_init(vfmig_json *j, FILE *f)
{
    memset(j, 0, sizeof *j);
    j->f = f;
}

/* The comma before anything but the first item of its level, then the member's key. */
static void item(vfmig_json *j, const char *key)
{
    if (j->has_items[j->depth])
        fputc(',', j->f);
    if (j->newline)
        fputc('\n', j->f);
    j->newline = false;
    j->has_items[j->depth] = true;
    if (key)
        fprintf(j->f, "\"%s\":", key);
}

static void open_level(vfmig_json *j, const char *key, char open, char close)
{
    if (j->depth >= VFMIG_JSON_MAX_DEPTH) {
        j->too_deep++; /* its end() then closes nothing, so the levels above stay matched */
        return;
    }
    item(j, key);
    fputc(open, j->f);
    j->depth++;
    j->has_items[j->depth] = false;
    j->close[j->depth] = close;
}

void vfmig__json_object(vfmig_json *j, const char *key)
{
    open_level(j, key, '{', '}');
}

void vfmig__json_array(vfmig_json *j, const char *key)
{
    open_level(j, key, '[', ']');
}

void vfmig__json_newline(vfmig_json *j)
{
    j->newline = true;
}

void vfmig__json_end(vfmig_json *j)
{
    if (j->too_deep) {
        j->too_deep--;
        return;
    }
    if (!j->depth)
        return;
    if (j->newline)
        fputc('\n', j->f);
    j->newline = false;
    fputc(j->close[j->depth], j->f);
    j->depth--;
}

void vfmig__json_str(vfmig_json *j, const char *key, const char *v)
{
    if (!v) {
        vfmig__json_null(j, key);
        return;
    }
    item(j, key);
    fputc('"', j->f);
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(j->f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(j->f, "\\u%04x", *p);
        else
            fputc(*p, j->f);
    }
    fputc('"', j->f);
}

void vfmig__json_null(vfmig_json *j, const char *key)
{
    item(j, key);
    fputs("null", j->f);
}

void vfmig__json_bool(vfmig_json *j, const char *key, bool v)
{
    item(j, key);
    fputs(v ? "true" : "false", j->f);
}

void vfmig__json_u64(vfmig_json *j, const char *key, uint64_t v)
{
    item(j, key);
    fprintf(j->f, "%" PRIu64, v);
}

void vfmig__json_i64(vfmig_json *j, const char *key, int64_t v)
{
    item(j, key);
    fprintf(j->f, "%" PRId64, v);
}

void vfmig__json_num(vfmig_json *j, const char *key, double v, int decimals)
{
    if (!isfinite(v)) { /* RFC 8259 has no NaN or infinity */
        vfmig__json_null(j, key);
        return;
    }
    item(j, key);
    fprintf(j->f, "%.*f", decimals, v);
}
