/* A client that binds before connecting connects from that port: blocking from ADDR:7830,
 * non-blocking from the wildcard address with port 7832. getsockname agrees.
 * argv: out ADDR PEER (the test listens on PEER:7831) */
#include "common.h"
#include <fcntl.h>
#include <poll.h>

static void from_port(int fd, int port, const char *what) {
    struct sockaddr_in me;
    socklen_t len = sizeof me;
    CHECK(getsockname(fd, (struct sockaddr *)&me, &len) == 0, "getsockname");
    if (ntohs(me.sin_port) != port) {
        printf("FAIL %s: local port %d, not %d\n", what, ntohs(me.sin_port), port);
        exit(1);
    }
    printf("%s from port %d\n", what, port);
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    struct sockaddr_in peer = v4(argv[3], 7831);

    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = v4(argv[2], 7830);
    CHECK(bind(s, (struct sockaddr *)&a, sizeof a) == 0, "bind");
    CHECK(connect(s, (struct sockaddr *)&peer, sizeof peer) == 0, "connect");
    from_port(s, 7830, "blocking");
    write_all(s, "a", 1);

    int t = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in any = v4("0.0.0.0", 7832);
    CHECK(bind(t, (struct sockaddr *)&any, sizeof any) == 0, "wildcard bind");
    fcntl(t, F_SETFL, O_NONBLOCK);
    CHECK(connect(t, (struct sockaddr *)&peer, sizeof peer) == -1 && errno == EINPROGRESS,
          "non-blocking connect");
    struct pollfd p = {.fd = t, .events = POLLOUT};
    CHECK(poll(&p, 1, 5000) == 1, "connected in time");
    int err = -1;
    socklen_t len = sizeof err;
    CHECK(getsockopt(t, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0, "SO_ERROR 0");
    from_port(t, 7832, "non-blocking");
    write_all(t, "b", 1);
    /* Wait for the test to close both. */
    fcntl(t, F_SETFL, 0);
    char c;
    CHECK(read(s, &c, 1) == 0 && read(t, &c, 1) == 0, "closed by the test");
    printf("done\n");
    return 0;
}
