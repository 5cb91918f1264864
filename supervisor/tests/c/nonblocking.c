/* Edge-triggered epoll server and non-blocking client in one process over argv[2]. */
#include "common.h"

/* Edges seen so far per fd: an edge reported while waiting for another fd is kept. */
static unsigned seen[1024];

static int wait_for(int ep, int fd, unsigned events, int ms) {
    struct epoll_event ev[8];
    for (int waited = 0; waited <= ms; waited += 10) {
        if (seen[fd] & events) {
            unsigned got = seen[fd];
            seen[fd] &= ~events;
            return (int)got;
        }
        int n = epoll_wait(ep, ev, 8, 10);
        for (int i = 0; i < n; i++) seen[ev[i].data.fd] |= ev[i].events;
    }
    return 0;
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    const char *ip = argv[2];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0, "epoll_create1");

    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    CHECK(ls >= 0, "socket");
    struct sockaddr_in a = v4(ip, 0);
    CHECK(bind(ls, (struct sockaddr *)&a, sizeof a) == 0, "bind");
    CHECK(listen(ls, 8) == 0, "listen");
    int port = port_of(ls);
    CHECK(port > 0, "listener port");
    CHECK(accept(ls, NULL, NULL) == -1 && errno == EAGAIN, "accept with nothing pending");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = ls};
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev) == 0, "epoll add listener");

    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in to = v4(ip, port);
    int r = connect(c, (struct sockaddr *)&to, sizeof to);
    CHECK(r == 0 || errno == EINPROGRESS, "non-blocking connect");
    if (r == -1) printf("EINPROGRESS\n");
    ev.events = EPOLLOUT | EPOLLET;
    ev.data.fd = c;
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) == 0, "epoll add client");
    CHECK(wait_for(ep, c, EPOLLOUT, 5000), "client writable edge");
    int err = -1;
    socklen_t el = sizeof err;
    CHECK(getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0, "SO_ERROR 0");
    struct sockaddr_in peer;
    socklen_t pl = sizeof peer;
    CHECK(getpeername(c, (struct sockaddr *)&peer, &pl) == 0 && ntohs(peer.sin_port) == port, "getpeername");
    /* Linux: the first connect after a completed non-blocking one reports success. */
    errno = 0;
    r = connect(c, (struct sockaddr *)&to, sizeof to);
    CHECK(r == 0 || errno == EISCONN, "second connect");
    CHECK(connect(c, (struct sockaddr *)&to, sizeof to) == -1 && errno == EISCONN, "third connect EISCONN");
    printf("client connected\n");

    CHECK(wait_for(ep, ls, EPOLLIN, 5000), "listener readable edge");
    int s = accept4(ls, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    CHECK(s >= 0, "accept4");
    CHECK((fcntl(s, F_GETFL) & O_NONBLOCK) != 0, "accept4 SOCK_NONBLOCK");
    CHECK((fcntl(s, F_GETFD) & FD_CLOEXEC) != 0, "accept4 SOCK_CLOEXEC");
    CHECK(accept(ls, NULL, NULL) == -1 && errno == EAGAIN, "listener drained");
    struct pollfd pf = {.fd = ls, .events = POLLIN};
    CHECK(poll(&pf, 1, 0) == 0, "listener not readable once drained");
    struct sockaddr_in me;
    socklen_t ml = sizeof me;
    CHECK(getsockname(s, (struct sockaddr *)&me, &ml) == 0 && ntohs(me.sin_port) == port, "accepted getsockname");
    CHECK(getsockname(c, (struct sockaddr *)&me, &ml) == 0 && ntohs(peer.sin_port) == ntohs(me.sin_port), "client port = peer of accepted");
    printf("accepted\n");

    write_all(c, "hello", 5);
    char buf[8];
    pf.fd = s;
    CHECK(poll(&pf, 1, 5000) == 1, "data arrives");
    CHECK(read_exact(s, buf, 5) == 5 && !memcmp(buf, "hello", 5), "server read");
    /* Half-close: the client shuts its write side, the server sees EOF, still sends. */
    CHECK(shutdown(c, SHUT_WR) == 0, "shutdown");
    pf.fd = s;
    CHECK(poll(&pf, 1, 5000) == 1 && read(s, buf, 1) == 0, "EOF after half-close");
    write_all(s, "bye", 3);
    close(s);
    pf.fd = c;
    CHECK(poll(&pf, 1, 5000) == 1, "reply arrives");
    CHECK(read_exact(c, buf, 3) == 3 && !memcmp(buf, "bye", 3), "client read after half-close");
    pf.fd = c;
    CHECK(poll(&pf, 1, 5000) == 1 && read(c, buf, 1) == 0, "EOF after server close");
    printf("half-close ok\n");

    /* A closed port: the writable edge comes with ECONNREFUSED in SO_ERROR. */
    int d = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in closed = v4(ip, 1);
    r = connect(d, (struct sockaddr *)&closed, sizeof closed);
    if (r == -1 && errno == EINPROGRESS) {
        ev.events = EPOLLOUT | EPOLLET;
        ev.data.fd = d;
        CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, d, &ev) == 0, "epoll add d");
        CHECK(wait_for(ep, d, EPOLLOUT, 5000), "refused writable edge");
        el = sizeof err;
        CHECK(getsockopt(d, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == ECONNREFUSED, "SO_ERROR ECONNREFUSED");
        el = sizeof err;
        CHECK(getsockopt(d, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0, "SO_ERROR cleared");
    } else {
        CHECK(r == -1 && errno == ECONNREFUSED, "refused");
    }
    printf("refused ok\n");
    return 0;
}
