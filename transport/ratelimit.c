/* transport/ratelimit.c - token bucket. Callers reserve tokens under the lock (going into debt
 * if needed) and sleep outside it for exactly the debt's duration, so concurrent streams share
 * the rate fairly in arrival order and nobody spins. */
#define _GNU_SOURCE /* ppoll */
#include "transport/ratelimit.h"

#include <errno.h>
#include <poll.h>
#include <time.h>

#include "common/clock.h"
#include "vfmig.h"

/* Bursts of ~5 ms of rate: enough to keep a few frames in flight, small enough that a cap
 * measured over 100 ms is respected within a few percent. */
#define BURST_NS 5000000ull
#define MIN_BURST (64 << 10)

void vfmig__ratelimit_init(vfmig_ratelimit *rl)
{
    pthread_mutex_init(&rl->lock, NULL);
    rl->rate = 0;
    rl->tokens = 0;
    rl->burst = 0;
    rl->last_ns = vfmig__now_ns();
}

void vfmig__ratelimit_destroy(vfmig_ratelimit *rl)
{
    pthread_mutex_destroy(&rl->lock);
}

void vfmig__ratelimit_set(vfmig_ratelimit *rl, uint64_t bytes_per_s)
{
    pthread_mutex_lock(&rl->lock);
    rl->rate = bytes_per_s;
    uint64_t b = bytes_per_s / (1000000000ull / BURST_NS);
    rl->burst = (int64_t)(b < MIN_BURST ? MIN_BURST : b);
    rl->tokens = rl->burst;
    rl->last_ns = vfmig__now_ns();
    pthread_mutex_unlock(&rl->lock);
}

int vfmig__ratelimit_acquire(vfmig_ratelimit *rl, uint64_t bytes, int intr_fd)
{
    pthread_mutex_lock(&rl->lock);
    if (!rl->rate) {
        pthread_mutex_unlock(&rl->lock);
        return VFMIG_OK;
    }
    uint64_t now = vfmig__now_ns();
    uint64_t rate = rl->rate;
    /* Refill; whole tokens only, keeping the remainder of time for the next refill. */
    uint64_t dt = now - rl->last_ns;
    uint64_t add = (uint64_t)((unsigned __int128)dt * rate / 1000000000ull);
    if (add) {
        rl->last_ns += (uint64_t)((unsigned __int128)add * 1000000000ull / rate);
        rl->tokens += (int64_t)add;
        if (rl->tokens > rl->burst) {
            rl->tokens = rl->burst;
            rl->last_ns = now;
        }
    }
    rl->tokens -= (int64_t)bytes;
    int64_t debt = -rl->tokens;
    pthread_mutex_unlock(&rl->lock);
    if (debt <= 0)
        return VFMIG_OK;
    uint64_t wake = now + (uint64_t)((unsigned __int128)(uint64_t)debt * 1000000000ull / rate);
    for (;;) {
        now = vfmig__now_ns();
        if (now >= wake)
            return VFMIG_OK;
        /* ppoll: nanosecond sleeps, so many small frames do not each oversleep a millisecond. */
        uint64_t left = wake - now;
        struct timespec ts = {.tv_sec = (time_t)(left / 1000000000ull),
                              .tv_nsec = (long)(left % 1000000000ull)};
        struct pollfd pfd = {.fd = intr_fd, .events = POLLIN};
        int r = ppoll(&pfd, intr_fd >= 0 ? 1 : 0, &ts, NULL);
        if (r > 0)
            return VFMIG_ECANCELED;
        if (r < 0 && errno != EINTR)
            return VFMIG_EIO;
    }
}
