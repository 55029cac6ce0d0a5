/* tests/testutil.h - tiny assertion helpers shared by the test programs.
 * Exit codes: 0 pass, 1 fail, 77 skip (ctest SKIP_RETURN_CODE). */
#ifndef VFMIG_TESTUTIL_H
#define VFMIG_TESTUTIL_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T_SKIP 77

#define T_FAIL(...)                                                                               \
    do {                                                                                          \
        fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);                                     \
        fprintf(stderr, __VA_ARGS__);                                                             \
        fprintf(stderr, "\n");                                                                    \
        exit(1);                                                                                  \
    } while (0)

#define ASSERT_TRUE(c)                                                                            \
    do {                                                                                          \
        if (!(c))                                                                                 \
            T_FAIL("expected true: %s", #c);                                                      \
    } while (0)

#define ASSERT_EQ(a, b)                                                                           \
    do {                                                                                          \
        long long a_ = (long long)(a), b_ = (long long)(b);                                       \
        if (a_ != b_)                                                                             \
            T_FAIL("%s == %s: %lld != %lld", #a, #b, a_, b_);                                     \
    } while (0)

#define ASSERT_OK(e)                                                                              \
    do {                                                                                          \
        int r_ = (e);                                                                             \
        if (r_ != 0)                                                                              \
            T_FAIL("%s returned %d (%s)", #e, r_, vfmig_strerror(r_));                            \
    } while (0)

/* Seeded PRNG (splitmix64): tests print their seed so a failure can be replayed. */
static inline uint64_t t_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t t_seed(void)
{
    const char *e = getenv("VFMIG_TEST_SEED");
    uint64_t s = e ? strtoull(e, NULL, 0) : 0x5eed1234ull;
    fprintf(stderr, "seed %" PRIu64 " (set VFMIG_TEST_SEED to replay)\n", s);
    return s;
}

#endif
