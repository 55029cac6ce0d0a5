/* common/clock.c - the clock and deadline helpers of common/clock.h. */
#include "common/clock.h"

#include <time.h>

static uint64_t clock_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t vfmig__now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

uint64_t vfmig__thread_cpu_ns(void)
{
    return clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

uint64_t vfmig__deadline(int timeout_ms)
{
    return timeout_ms < 0 ? 0 : vfmig__now_ns() + (uint64_t)timeout_ms * 1000000ull;
}

int vfmig__ms_left(uint64_t deadline_ns)
{
    if (!deadline_ns)
        return -1;
    uint64_t now = vfmig__now_ns();
    if (now >= deadline_ns)
        return 0;
    uint64_t ms = (deadline_ns - now + 999999) / 1000000;
    return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

bool vfmig__expired(uint64_t deadline_ns)
{
    return deadline_ns && vfmig__now_ns() >= deadline_ns;
}
