/* A server that closes accepted connections three ways: with data unread (port 7801),
 * with SO_LINGER {1, 0} (7802), and plainly (7803). On Linux the first two send a RST,
 * the last a FIN; the test's client checks what arrives.
 * argv: out ADDR */
#include "common.h"

static int accept_on(const char *ip, int port) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(l >= 0, "socket");
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = v4(ip, port);
    CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0, "bind");
    CHECK(listen(l, 4) == 0, "listen");
    printf("listening %d\n", port);
    int c = accept(l, NULL, NULL);
    CHECK(c >= 0, "accept");
    close(l);
    return c;
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    int c = accept_on(argv[2], 7801);
    usleep(300000); /* the client's bytes arrive ... */
    close(c);       /* ... and are never read */
    c = accept_on(argv[2], 7802);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    CHECK(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0, "SO_LINGER");
    close(c);
    c = accept_on(argv[2], 7803);
    close(c);
    printf("served\n");
    return 0;
}
