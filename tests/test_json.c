/* tests/test_json.c - the JSON writer the command and the benchmarks share (common/json.h):
 * commas and nesting, escaping, numbers (NaN and infinity as null), line breaks, depth limit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "testutil.h"

static char *buf;
static size_t len;

static FILE *start(vfmig_json *j)
{
    free(buf);
    buf = NULL;
    FILE *f = open_memstream(&buf, &len);
    ASSERT_TRUE(f != NULL);
    vfmig__json_init(j, f);
    return f;
}

static void expect(FILE *f, const char *want)
{
    fclose(f);
    if (strcmp(buf, want))
        T_FAIL("wrote\n  %s\nwanted\n  %s", buf, want);
}

int main(void)
{
    vfmig_json j;
    FILE *f = start(&j);
    vfmig__json_object(&j, NULL);
    vfmig__json_i64(&j, "schema_version", 1);
    vfmig__json_str(&j, "error", NULL);
    vfmig__json_str(&j, "s", "a\"b\\c\n\x01 \xc3\xa9"); /* UTF-8 passes through */
    vfmig__json_bool(&j, "t", true);
    vfmig__json_bool(&j, "f", false);
    vfmig__json_u64(&j, "big", UINT64_MAX);
    vfmig__json_i64(&j, "neg", -5);
    vfmig__json_num(&j, "ms", 1.23456, 3);
    vfmig__json_num(&j, "rate", 1e9 / 3, 0);
    vfmig__json_num(&j, "nan", NAN, 3);
    vfmig__json_num(&j, "inf", -INFINITY, 1);
    vfmig__json_object(&j, "empty");
    vfmig__json_end(&j);
    vfmig__json_array(&j, "list");
    for (int i = 0; i < 3; i++) {
        vfmig__json_object(&j, NULL);
        vfmig__json_i64(&j, "i", i);
        vfmig__json_array(&j, "no");
        vfmig__json_end(&j);
        vfmig__json_end(&j);
    }
    vfmig__json_u64(&j, NULL, 7);
    vfmig__json_end(&j);
    vfmig__json_end(&j);
    expect(f, "{\"schema_version\":1,\"error\":null,\"s\":\"a\\\"b\\\\c\\u000a\\u0001 \xc3\xa9\",\"t\":true,"
              "\"f\":false,\"big\":18446744073709551615,\"neg\":-5,\"ms\":1.235,\"rate\":333333333,"
              "\"nan\":null,\"inf\":null,\"empty\":{},\"list\":[{\"i\":0,\"no\":[]},{\"i\":1,\"no\":[]},"
              "{\"i\":2,\"no\":[]},7]}");

    /* One element a line (bench_codec --json), the closing bracket on its own line. */
    f = start(&j);
    vfmig__json_object(&j, NULL);
    vfmig__json_array(&j, "rows");
    for (int i = 0; i < 2; i++) {
        vfmig__json_newline(&j);
        vfmig__json_object(&j, NULL);
        vfmig__json_i64(&j, "i", i);
        vfmig__json_end(&j);
    }
    vfmig__json_newline(&j);
    vfmig__json_end(&j);
    vfmig__json_end(&j);
    expect(f, "{\"rows\":[\n{\"i\":0},\n{\"i\":1}\n]}");

    /* Too deep: the extra levels are neither opened nor closed, so the rest stays matched; extra
     * ends at the top close nothing. */
    f = start(&j);
    for (int i = 0; i < VFMIG_JSON_MAX_DEPTH + 2; i++)
        vfmig__json_array(&j, NULL);
    for (int i = 0; i < VFMIG_JSON_MAX_DEPTH + 4; i++)
        vfmig__json_end(&j);
    char want[2 * VFMIG_JSON_MAX_DEPTH + 1];
    memset(want, '[', VFMIG_JSON_MAX_DEPTH);
    memset(want + VFMIG_JSON_MAX_DEPTH, ']', VFMIG_JSON_MAX_DEPTH);
    want[2 * VFMIG_JSON_MAX_DEPTH] = 0;
    expect(f, want);
    free(buf);
    fprintf(stderr, "test_json: all passed\n");
    return 0;
}
