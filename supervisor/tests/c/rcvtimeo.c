/* SO_RCVTIMEO bounds a blocking recv on every kind of socket the program holds, however
 * the supervisor built it: a connected TCP client (set after connect), a socket accepted
 * from a listener that had it (accepted sockets inherit it on Linux), the same over a
 * wildcard listener's loopback half, and a UDP socket that had it before bind.
 * argv: out ADDR (an address of the program on the network under test) */
#include "common.h"
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static const struct timeval TV = {.tv_sec = 0, .tv_usec = 200000};

/* A recv with nothing to read returns EAGAIN after about SO_RCVTIMEO. */
static void times_out(int fd, const char *what) {
    char b;
    double t0 = now();
    ssize_t r = recv(fd, &b, 1, 0);
    double took = now() - t0;
    if (!(r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))) {
        printf("FAIL %s: recv returned %zd (errno %d)\n", what, r, errno);
        exit(1);
    }
    if (!(took >= 0.15 && took < 3.0)) {
        printf("FAIL %s: recv waited %.3f s\n", what, took);
        exit(1);
    }
    printf("%s: EAGAIN after SO_RCVTIMEO\n", what);
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(l >= 0, "socket");
    int reuse = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &reuse, sizeof reuse);
    CHECK(setsockopt(l, SOL_SOCKET, SO_RCVTIMEO, &TV, sizeof TV) == 0, "listener SO_RCVTIMEO");
    struct sockaddr_in a = v4(argv[2], 7810);
    CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0, "bind");
    CHECK(listen(l, 4) == 0, "listen");
    int c = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(connect(c, (struct sockaddr *)&a, sizeof a) == 0, "connect");
    int s = accept(l, NULL, NULL);
    CHECK(s >= 0, "accept");
    CHECK(setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &TV, sizeof TV) == 0, "client SO_RCVTIMEO");
    times_out(c, "connected client");
    struct timeval got;
    socklen_t len = sizeof got;
    CHECK(getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &got, &len) == 0, "getsockopt");
    CHECK(got.tv_sec == 0 && got.tv_usec == 200000, "the accepted socket inherited it");
    times_out(s, "accepted");
    /* The connection still works after the timeouts. */
    CHECK(send(c, "x", 1, 0) == 1, "send");
    char b;
    CHECK(recv(s, &b, 1, 0) == 1 && b == 'x', "recv after the timeouts");

    int u = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &TV, sizeof TV) == 0, "udp SO_RCVTIMEO");
    struct sockaddr_in ua = v4(argv[2], 7811);
    CHECK(bind(u, (struct sockaddr *)&ua, sizeof ua) == 0, "udp bind");
    times_out(u, "udp");
    /* A wildcard listener's loopback connection (a kernel socket under ztrun) too. */
    int wl = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(wl, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    CHECK(setsockopt(wl, SOL_SOCKET, SO_RCVTIMEO, &TV, sizeof TV) == 0, "wildcard SO_RCVTIMEO");
    struct sockaddr_in any = v4("0.0.0.0", 7812);
    CHECK(bind(wl, (struct sockaddr *)&any, sizeof any) == 0, "wildcard bind");
    CHECK(listen(wl, 4) == 0, "wildcard listen");
    int k = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in lo = v4("127.0.0.1", 7812);
    CHECK(connect(k, (struct sockaddr *)&lo, sizeof lo) == 0, "loopback connect");
    int ks = accept(wl, NULL, NULL);
    CHECK(ks >= 0, "loopback accept");
    times_out(ks, "accepted on loopback");
    printf("done\n");
    return 0;
}
