/* TCP options that tune the connection, not the socket: TCP_NODELAY set on the listener
 * (accepted sockets inherit it, as on Linux), SO_KEEPALIVE and TCP_KEEPIDLE set on the
 * accepted socket. Sends a line once they are set, then waits for the client's close;
 * the test checks the connection on the network stack.
 * argv: out ADDR */
#include "common.h"
#include <netinet/tcp.h>

int main(int argc, char **argv) {
    setup_output(argc, argv);
    int one = 1, idle = 30;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(l >= 0, "socket");
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    CHECK(setsockopt(l, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0, "TCP_NODELAY");
    struct sockaddr_in a = v4(argv[2], 7820);
    CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0, "bind");
    CHECK(listen(l, 4) == 0, "listen");
    int c = accept(l, NULL, NULL);
    CHECK(c >= 0, "accept");
    CHECK(setsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) == 0, "SO_KEEPALIVE");
    CHECK(setsockopt(c, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) == 0, "TCP_KEEPIDLE");
    write_all(c, "tuned\n", 6);
    char b[16];
    while (read(c, b, sizeof b) > 0) {
    }
    printf("served\n");
    return 0;
}
