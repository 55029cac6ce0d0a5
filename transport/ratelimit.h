/* transport/ratelimit.h - token bucket shared by all streams of a link. */
#ifndef VFMIG_TRANSPORT_RATELIMIT_H
#define VFMIG_TRANSPORT_RATELIMIT_H

#include <pthread.h>
#include <stdint.h>

typedef struct vfmig_ratelimit {
    pthread_mutex_t lock;
    uint64_t rate;     /* bytes/s; 0 = unlimited */
    int64_t tokens;    /* may go negative: a caller reserves, then sleeps off its debt */
    int64_t burst;     /* most tokens that can pile up while idle */
    uint64_t last_ns;  /* when tokens was last refilled */
} vfmig_ratelimit;

void vfmig__ratelimit_init(vfmig_ratelimit *rl);
void vfmig__ratelimit_destroy(vfmig_ratelimit *rl);
/** Any thread. 0 = unlimited. */
void vfmig__ratelimit_set(vfmig_ratelimit *rl, uint64_t bytes_per_s);
/**
 * Takes `bytes` tokens, sleeping (not spinning) until the rate allows them. intr_fd (or -1) is
 * polled while sleeping: readable means interrupted and gives VFMIG_ECANCELED.
 */
int vfmig__ratelimit_acquire(vfmig_ratelimit *rl, uint64_t bytes, int intr_fd);

#endif
