/*
 * common/json.h - the one JSON writer of the command and the benchmarks (not part of libvfmig,
 * which never prints). Compact output straight to a FILE: it writes the commas, the nesting, the
 * escaping of strings, and keeps numbers valid JSON (a NaN or infinity is written as null).
 *
 *     vfmig_json j;
 *     vfmig__json_init(&j, stdout);
 *     vfmig__json_object(&j, NULL);          // {
 *     vfmig__json_str(&j, "status", "ok");   // "status":"ok"
 *     vfmig__json_array(&j, "rounds");       // ,"rounds":[
 *     vfmig__json_end(&j);                   // ]
 *     vfmig__json_end(&j);                   // }
 *
 * `key` names the member inside an object and is NULL inside an array or at the top. Keys are
 * written as given (they are the program's own words, never escaped). Not thread-safe: one
 * writer per output; lock the FILE around a line that other threads may interleave with.
 */
#ifndef VFMIG_COMMON_JSON_H
#define VFMIG_COMMON_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define VFMIG_JSON_MAX_DEPTH 16

typedef struct vfmig_json {
    FILE *f;
    unsigned depth;                            /* open objects and arrays */
    bool has_items[VFMIG_JSON_MAX_DEPTH + 1];  /* per level: something was written (next: comma) */
    char close[VFMIG_JSON_MAX_DEPTH + 1];      /* per open level: '}' or ']' */
    bool newline;                              /* vfmig__json_newline: break before what follows */
    unsigned too_deep;                         /* levels not opened beyond the maximum */
} vfmig_json;

void vfmig__json_init(vfmig_json *j, FILE *f);
/** Opens an object / an array (as member `key`, or as an element when key is NULL). A level
 *  deeper than VFMIG_JSON_MAX_DEPTH is not opened, nor closed by its end() (a programming error:
 *  nothing written needs more than 4). */
void vfmig__json_object(vfmig_json *j, const char *key);
void vfmig__json_array(vfmig_json *j, const char *key);
/** Closes the innermost object or array. */
void vfmig__json_end(vfmig_json *j);
/** Puts a line break before whatever comes next (after its comma, before a closing bracket), for
 *  output read a line at a time, e.g. one array element a line. */
void vfmig__json_newline(vfmig_json *j);
/** A string, escaped (quotes, backslashes, control characters); NULL writes null. */
void vfmig__json_str(vfmig_json *j, const char *key, const char *v);
void vfmig__json_null(vfmig_json *j, const char *key);
void vfmig__json_bool(vfmig_json *j, const char *key, bool v);
void vfmig__json_u64(vfmig_json *j, const char *key, uint64_t v);
void vfmig__json_i64(vfmig_json *j, const char *key, int64_t v);
/** A number with `decimals` digits after the point (0: an integer-looking number). */
void vfmig__json_num(vfmig_json *j, const char *key, double v, int decimals);

#endif
