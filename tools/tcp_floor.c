/*
 * The floor of kernel TCP on loopback for a busy-polling ping-pong: two
 * single-threaded processes pinned to cores 0 and 1, each doing nothing but
 * non-blocking recv() until a whole message is in, then one send(). Prints
 * the one-way p50 and p99 (half the round trip), for comparison with
 * `comm-perf pair --transport tcp --test lat --size 8` (whose frames are 40
 * bytes: a 32-byte header and 8 bytes) and `ucx.sh tcp tag_lat 8`.
 *
 * With a third argument `threaded`, each process also starts a thread that
 * only sleeps: the descriptor table is then shared, and every socket call
 * takes and drops a reference on its file, as in any threaded process whose
 * progress thread keeps the process's table (comm's default; see
 * `EngineBuilder::private_fd_table`).
 *
 *   gcc -O2 tools/tcp_floor.c -o /tmp/tcp_floor -lpthread && /tmp/tcp_floor [iters] [bytes] [threaded]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int size = 40;
static int threaded = 0;

static void *sleeper(void *arg) {
    (void)arg;
    for (;;) pause();
    return 0;
}

/* A second thread in the process: the descriptor table is shared from now. */
static void share_table(void) {
    pthread_t t;
    if (threaded && pthread_create(&t, 0, sleeper, 0) != 0) {
        perror("pthread_create");
        exit(1);
    }
}

static void pin(int core) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(core, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) perror("sched_setaffinity");
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static void receive(int fd, char *buf) {
    for (int got = 0; got < size;) {
        ssize_t n = recv(fd, buf + got, 4096, MSG_DONTWAIT);
        if (n > 0) got += n;
        else if (n == 0) exit(0);
    }
}

static void transmit(int fd, char *buf) {
    if (send(fd, buf, size, MSG_DONTWAIT) != size) {
        perror("send");
        exit(1);
    }
}

static int by_value(const void *a, const void *b) {
    double d = *(const double *)a - *(const double *)b;
    return d < 0 ? -1 : d > 0;
}

int main(int argc, char **argv) {
    int iters = argc > 1 ? atoi(argv[1]) : 200000;
    if (argc > 2) size = atoi(argv[2]);
    if (argc > 3) threaded = strcmp(argv[3], "threaded") == 0;
    if (iters <= 0 || size <= 0 || size > 4096) {
        fprintf(stderr, "usage: tcp_floor [iters] [bytes <= 4096] [threaded]\n");
        return 2;
    }
    int one = 1;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(listener, (void *)&addr, sizeof addr) || listen(listener, 1) ||
        getsockname(listener, (void *)&addr, &len)) {
        perror("listen");
        return 1;
    }
    pid_t echo = fork();
    if (echo == 0) {
        pin(1);
        share_table();
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (void *)&addr, sizeof addr)) {
            perror("connect");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char buf[4096];
        for (;;) {
            receive(fd, buf);
            transmit(fd, buf);
        }
    }
    pin(0);
    share_table();
    int fd = accept(listener, 0, 0);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[4096] = {0};
    double *lat = malloc(sizeof(double) * iters);
    for (int i = 0; i < iters / 10; i++) {
        transmit(fd, buf);
        receive(fd, buf);
    }
    /* One clock read per round trip, as comm-perf does: a reply's arrival
     * is the next request's departure. */
    double last = now_ns();
    for (int i = 0; i < iters; i++) {
        transmit(fd, buf);
        receive(fd, buf);
        double t = now_ns();
        lat[i] = (t - last) / 2;
        last = t;
    }
    qsort(lat, iters, sizeof(double), by_value);
    printf("tcp_floor %d B%s: one-way p50 %.1f ns, p99 %.1f ns\n", size,
           threaded ? " threaded" : "", lat[iters / 2], lat[iters * 99 / 100]);
    close(fd);
    kill(echo, SIGKILL);
    waitpid(echo, 0, 0);
    return 0;
}
