/* bench/baseline.c - a plain socket sender/receiver on loopback: what the machine's TCP stack
 * moves with nothing of vfmig in the way. */
#include "baseline.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double bench_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct pipe_end {
    int fd;
    uint64_t bytes;
    size_t chunk;
    int err;
} pipe_end;

static void *sender(void *arg)
{
    pipe_end *e = arg;
    char *buf = malloc(e->chunk);
    if (!buf) {
        e->err = 1;
        return NULL;
    }
    memset(buf, 0xa5, e->chunk);
    for (uint64_t left = e->bytes; left;) {
        size_t n = left < e->chunk ? (size_t)left : e->chunk;
        ssize_t w = write(e->fd, buf, n);
        if (w <= 0) {
            e->err = 1;
            break;
        }
        left -= (uint64_t)w;
    }
    shutdown(e->fd, SHUT_WR);
    free(buf);
    return NULL;
}

static void *receiver(void *arg)
{
    pipe_end *e = arg;
    char *buf = malloc(e->chunk);
    if (!buf) {
        e->err = 1;
        return NULL;
    }
    for (;;) {
        ssize_t r = read(e->fd, buf, e->chunk);
        if (r <= 0) {
            e->err = r < 0;
            break;
        }
        e->bytes += (uint64_t)r;
    }
    free(buf);
    return NULL;
}

int bench_tcp_baseline(uint64_t bytes, unsigned streams, size_t chunk, bench_tcp_result *out)
{
    enum { MAXS = 16 };
    if (streams == 0 || streams > MAXS)
        return -1;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, MAXS) ||
        getsockname(lfd, (struct sockaddr *)&a, &alen)) {
        if (lfd >= 0)
            close(lfd);
        return -1;
    }
    pipe_end tx[MAXS], rx[MAXS];
    int ok = 0;
    for (unsigned i = 0; i < streams; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)))
            break;
        int s = accept(lfd, NULL, NULL);
        if (s < 0) {
            close(c);
            break;
        }
        tx[i] = (pipe_end){.fd = c, .bytes = bytes / streams, .chunk = chunk};
        rx[i] = (pipe_end){.fd = s, .chunk = chunk};
        ok++;
    }
    close(lfd);
    if (ok != (int)streams) {
        for (int i = 0; i < ok; i++) {
            close(tx[i].fd);
            close(rx[i].fd);
        }
        return -1;
    }
    pthread_t tt[MAXS], rt[MAXS];
    double cpu0 = bench_cpu_seconds(), t0 = bench_now_s();
    for (unsigned i = 0; i < streams; i++) {
        pthread_create(&rt[i], NULL, receiver, &rx[i]);
        pthread_create(&tt[i], NULL, sender, &tx[i]);
    }
    uint64_t moved = 0;
    int err = 0;
    for (unsigned i = 0; i < streams; i++) {
        pthread_join(tt[i], NULL);
        pthread_join(rt[i], NULL);
        moved += rx[i].bytes;
        err |= tx[i].err | rx[i].err;
        close(tx[i].fd);
        close(rx[i].fd);
    }
    double dt = bench_now_s() - t0, cpu = bench_cpu_seconds() - cpu0;
    out->gbps = (double)moved / dt / 1e9;
    out->cpu_s_per_gb = moved ? cpu / ((double)moved / 1e9) : 0;
    return err ? -1 : 0;
}
