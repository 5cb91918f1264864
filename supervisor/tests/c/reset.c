/* A server that closes connections four ways: accepted with data unread (port 7801),
 * accepted with SO_LINGER {1, 0} (7802), accepted and closed plainly (7803), and never
 * accepted, its listener closed while it waits (7804). On Linux all but the third send
 * a RST, the third a FIN; the test's client checks what arrives. Then the last case on
 * loopback (7805), checked by the program itself.
 * argv: out ADDR */
#include "common.h"
#include <poll.h>

static int listen_on(const char *ip, int port) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(l >= 0, "socket");
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = v4(ip, port);
    CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0, "bind");
    CHECK(listen(l, 4) == 0, "listen");
    printf("listening %d\n", port);
    return l;
}

static int accept_on(const char *ip, int port) {
    int l = listen_on(ip, port);
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
    int l = listen_on(argv[2], 7804);
    struct pollfd waiting = {.fd = l, .events = POLLIN};
    CHECK(poll(&waiting, 1, 10000) == 1, "a connection waits");
    close(l);
    /* The same on loopback, through a wildcard listener's kernel half: the program's
     * own client, queued and never accepted, reads ECONNRESET once the listener closes. */
    l = listen_on("0.0.0.0", 7805);
    int k = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in lo = v4("127.0.0.1", 7805);
    CHECK(connect(k, (struct sockaddr *)&lo, sizeof lo) == 0, "loopback connect");
    waiting.fd = l;
    CHECK(poll(&waiting, 1, 10000) == 1, "the loopback connection waits");
    close(l);
    struct pollfd told = {.fd = k, .events = POLLIN};
    CHECK(poll(&told, 1, 10000) == 1, "the loopback client hears of the close");
    char byte;
    CHECK(read(k, &byte, 1) == -1 && errno == ECONNRESET, "the loopback client is reset");
    printf("loopback reset\n");
    printf("served\n");
    return 0;
}
