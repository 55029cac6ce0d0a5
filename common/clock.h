/*
 * common/clock.h - time as every part of the library counts it: monotonic nanoseconds, a
 * thread's CPU time, and deadlines (absolute monotonic ns; 0 = none) for waits given in ms.
 */
#ifndef VFMIG_COMMON_CLOCK_H
#define VFMIG_COMMON_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* engine/devices/cuda.cu is C++ */
#endif

/** CLOCK_MONOTONIC in ns. */
uint64_t vfmig__now_ns(void);
/** CPU time of the calling thread in ns (CLOCK_THREAD_CPUTIME_ID). */
uint64_t vfmig__thread_cpu_ns(void);
/** timeout_ms (<0: none) to an absolute deadline (0 = none). */
uint64_t vfmig__deadline(int timeout_ms);
/** Milliseconds left until deadline_ns (0 = none: -1), at least 0, rounded up (a wait of that
 *  many ms does not end before the deadline). */
int vfmig__ms_left(uint64_t deadline_ns);
/** True once a deadline (not 0) has passed. */
bool vfmig__expired(uint64_t deadline_ns);

#ifdef __cplusplus
}
#endif
#endif
