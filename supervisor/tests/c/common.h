/* Helpers for the supervisor's test programs: argv[1] is the output file. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(cond, what)                                                        \
    do {                                                                         \
        if (!(cond)) {                                                           \
            printf("FAIL %s: %s (errno %d %s)\n", what, #cond, errno, strerror(errno)); \
            fflush(stdout);                                                      \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

static void setup_output(int argc, char **argv) {
    if (argc < 2 || !freopen(argv[1], "a", stdout)) exit(2);
    setvbuf(stdout, NULL, _IOLBF, 0);
}

static inline struct sockaddr_in v4(const char *ip, int port) {
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static inline int port_of(int fd) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return -1;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* A TCP listener on 0.0.0.0:port with SO_REUSEADDR, as servers that reopen their port
 * make it (iperf3 after every test). */
static inline int reusable_listener(int port) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    CHECK(setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0, "tcp SO_REUSEADDR");
    struct sockaddr_in a = v4("0.0.0.0", port);
    CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0, "bind listener");
    CHECK(listen(l, 4) == 0, "listen again right after close");
    return l;
}

static inline void write_all(int fd, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        CHECK(w > 0, "write");
        s += w;
        n -= (size_t)w;
    }
}

static inline int read_exact(int fd, char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0) return (int)got;
        got += (size_t)r;
    }
    return (int)got;
}
