/* An edge-triggered epoll echo server (its own thread) and 500 concurrent non-blocking
 * clients driven by a second epoll. argv[2] = address. */
#include "common.h"
#include <sys/resource.h>

#define CLIENTS 500
static int ls;

static void *server(void *arg) {
    (void)arg;
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    int served = 0;
    struct epoll_event evs[64];
    while (served < CLIENTS) {
        int n = epoll_wait(ep, evs, 64, 10000);
        CHECK(n > 0, "server epoll_wait");
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                for (;;) { /* edge-triggered: drain the listener */
                    int s = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
                    if (s < 0) {
                        CHECK(errno == EAGAIN, "accept4");
                        break;
                    }
                    struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.fd = s};
                    epoll_ctl(ep, EPOLL_CTL_ADD, s, &e);
                }
            } else {
                char buf[16];
                for (;;) {
                    ssize_t r = read(fd, buf, sizeof buf);
                    if (r > 0) {
                        CHECK(write(fd, buf, r) == r, "echo");
                        continue;
                    }
                    if (r == 0) {
                        close(fd);
                        served++;
                    } else {
                        CHECK(errno == EAGAIN, "server read");
                    }
                    break;
                }
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = v4(argv[2], 0);
    CHECK(bind(ls, (struct sockaddr *)&a, sizeof a) == 0, "bind");
    CHECK(listen(ls, 1024) == 0, "listen");
    a.sin_port = htons(port_of(ls));
    pthread_t t;
    pthread_create(&t, NULL, server, NULL);

    int ep = epoll_create1(0);
    static int fds[CLIENTS], state[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        CHECK(fds[i] >= 0, "client socket");
        int r = connect(fds[i], (struct sockaddr *)&a, sizeof a);
        CHECK(r == 0 || errno == EINPROGRESS, "connect");
        struct epoll_event e = {.events = EPOLLOUT | EPOLLIN | EPOLLET, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e);
    }
    int done = 0;
    struct epoll_event evs[64];
    while (done < CLIENTS) {
        int n = epoll_wait(ep, evs, 64, 10000);
        CHECK(n > 0, "client epoll_wait");
        for (int k = 0; k < n; k++) {
            int i = evs[k].data.u32;
            if (state[i] == 0 && (evs[k].events & EPOLLOUT)) {
                int err = -1;
                socklen_t el = sizeof err;
                CHECK(getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0, "SO_ERROR");
                CHECK(write(fds[i], "e", 1) == 1, "client write");
                state[i] = 1;
            }
            if (state[i] == 1 && (evs[k].events & EPOLLIN)) {
                char b;
                if (read(fds[i], &b, 1) == 1) {
                    CHECK(b == 'e', "echo byte");
                    close(fds[i]);
                    state[i] = 2;
                    done++;
                }
            }
        }
    }
    pthread_join(t, NULL);
    printf("%d clients echoed\n", CLIENTS);
    return 0;
}
