/*
 * bench/bench_pump.c - the plain-socket pump the page path is measured against: two processes on
 * loopback TCP, one writing `--bytes` in 1 MiB write() calls, the other reading them. Prints one
 * JSON object: GB/s and CPU seconds per GB of each process (what vfmig's two ends compare with).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "baseline.h"
#include "bench_opts.h"
#include "common/json.h"

static double cpu_of(int who)
{
    struct rusage ru;
    getrusage(who, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    uint64_t bytes = 2ull << 30;
    size_t chunk = 1u << 20;
    static const bench_option opts[] = {
        {"bytes", 'b', "SIZE", "bytes to move (default 2G)"},
        {"chunk", 'c', "SIZE", "bytes per write() (default 1M)"},
    };
    bench_cli cli;
    bench_cli_init(&cli, "bench_pump", "Plain loopback TCP between two processes: the page path's baseline.", opts,
                   BENCH_NOPTS(opts));
    for (int id; (id = bench_cli_next(&cli, argc, argv)) != -1;) {
        if (id == 'b')
            bytes = bench_parse_size(&cli, optarg, 1 << 20, 1ull << 40);
        else if (id == 'c')
            chunk = (size_t)bench_parse_size(&cli, optarg, 4096, 64 << 20);
    }
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 1) ||
        getsockname(lfd, (struct sockaddr *)&a, &alen)) {
        perror("bench_pump: listen");
        return 1;
    }
    int pfd[2];
    if (pipe(pfd)) {
        perror("bench_pump: pipe");
        return 1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("bench_pump: fork");
        return 1;
    }
    char *buf = malloc(chunk);
    if (!buf)
        return 1;
    memset(buf, 0xa5, chunk);
    if (pid == 0) {
        /* Receiver: reports its CPU seconds through the pipe. */
        int s = accept(lfd, NULL, NULL);
        double c0 = cpu_of(RUSAGE_SELF);
        uint64_t got = 0;
        for (ssize_t r; (r = read(s, buf, chunk)) > 0;)
            got += (uint64_t)r;
        double cpu = cpu_of(RUSAGE_SELF) - c0;
        ssize_t w = write(pfd[1], &cpu, sizeof(cpu));
        _exit(got == bytes && w == (ssize_t)sizeof(cpu) ? 0 : 1);
    }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a))) {
        perror("bench_pump: connect");
        return 1;
    }
    double c0 = cpu_of(RUSAGE_SELF), t0 = bench_now_s();
    for (uint64_t left = bytes; left;) {
        size_t n = left < chunk ? (size_t)left : chunk;
        ssize_t w = write(c, buf, n);
        if (w <= 0) {
            perror("bench_pump: write");
            return 1;
        }
        left -= (uint64_t)w;
    }
    shutdown(c, SHUT_WR);
    double rx_cpu = 0;
    if (read(pfd[0], &rx_cpu, sizeof(rx_cpu)) != (ssize_t)sizeof(rx_cpu))
        return 1;
    double t = bench_now_s() - t0, tx_cpu = cpu_of(RUSAGE_SELF) - c0;
    int st;
    waitpid(pid, &st, 0);
    double gb = (double)bytes / 1e9;
    vfmig_json j;
    vfmig__json_init(&j, stdout);
    vfmig__json_object(&j, NULL);
    vfmig__json_u64(&j, "bytes", bytes);
    vfmig__json_num(&j, "seconds", t, 4);
    vfmig__json_num(&j, "gbps", gb / t, 3);
    vfmig__json_num(&j, "sender_cpu_s_per_gb", tx_cpu / gb, 3);
    vfmig__json_num(&j, "receiver_cpu_s_per_gb", rx_cpu / gb, 3);
    vfmig__json_end(&j);
    putchar('\n');
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
