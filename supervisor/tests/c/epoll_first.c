/* nginx's upstream pattern over argv[2]: a non-blocking TCP socket is registered with
 * edge-triggered epoll *before* connect(). The registration must survive the connect:
 * one EPOLLOUT edge when the handshake ends (SO_ERROR 0), then data both ways; and for a
 * refused connect an edge with SO_ERROR = ECONNREFUSED. */
#include "common.h"

/* Wait up to ms for an event on fd with any of `events`; returns the events or 0. */
static unsigned wait_edge(int ep, int fd, unsigned events, int ms) {
    struct epoll_event ev[8];
    for (int waited = 0; waited <= ms; waited += 10) {
        int n = epoll_wait(ep, ev, 8, 10);
        for (int i = 0; i < n; i++)
            if (ev[i].data.fd == fd && (ev[i].events & events)) return ev[i].events;
    }
    return 0;
}

static int registered_socket(int ep) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(c >= 0, "socket");
    int one = 1;
    CHECK(ioctl(c, FIONBIO, &one) == 0, "FIONBIO");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.fd = c};
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) == 0, "epoll add before connect");
    return c;
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    const char *ip = argv[2];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0, "epoll_create1");

    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = v4(ip, 0);
    CHECK(bind(ls, (struct sockaddr *)&a, sizeof a) == 0, "bind");
    CHECK(listen(ls, 8) == 0, "listen");
    int port = port_of(ls);

    int c = registered_socket(ep);
    struct sockaddr_in to = v4(ip, port);
    int r = connect(c, (struct sockaddr *)&to, sizeof to);
    CHECK(r == 0 || errno == EINPROGRESS, "non-blocking connect");
    if (r == -1) printf("EINPROGRESS\n");
    CHECK(wait_edge(ep, c, EPOLLOUT, 5000), "writable edge after connect");
    int err = -1;
    socklen_t el = sizeof err;
    CHECK(getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0, "SO_ERROR 0");
    write_all(c, "GET /\n", 6);
    int s = accept(ls, NULL, NULL);
    CHECK(s >= 0, "accept");
    char buf[16] = {0};
    CHECK(read_exact(s, buf, 6) == 6 && !memcmp(buf, "GET /\n", 6), "request arrives");
    write_all(s, "200 OK\n", 7);
    CHECK(wait_edge(ep, c, EPOLLIN, 5000), "readable edge for the answer");
    memset(buf, 0, sizeof buf);
    CHECK(read(c, buf, sizeof buf) == 7 && !memcmp(buf, "200 OK\n", 7), "answer");
    printf("proxied\n");
    close(s);
    close(c);

    /* Refused (port 1: nothing listens there): the edge still comes, and SO_ERROR says
     * why. (Not our closed listener's port: a virtual listener is closed by a sweep.) */
    close(ls);
    to.sin_port = htons(1);
    int d = registered_socket(ep);
    r = connect(d, (struct sockaddr *)&to, sizeof to);
    CHECK(r == -1 && (errno == EINPROGRESS || errno == ECONNREFUSED), "connect to a closed port");
    if (errno == EINPROGRESS) {
        CHECK(wait_edge(ep, d, EPOLLOUT | EPOLLERR | EPOLLHUP, 5000), "edge after refusal");
        err = -1;
        CHECK(getsockopt(d, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == ECONNREFUSED,
              "SO_ERROR ECONNREFUSED");
    }
    printf("refused ok\n");
    return 0;
}
