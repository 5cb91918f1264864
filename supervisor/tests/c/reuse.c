/* iperf3's server patterns over argv[2]:
 * - UDP: a socket bound to the port with SO_REUSEADDR is connected to its first client,
 *   and a second socket bound to the same port (SO_REUSEADDR) takes the next clients;
 *   each client's datagrams reach the right socket.
 * - TCP: a listener closed and opened again on the same port at once (after every test). */
#include "common.h"

static int reusable_udp(const char *ip, int port) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(s >= 0, "udp socket");
    int one = 1;
    CHECK(setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0, "SO_REUSEADDR");
    struct sockaddr_in a = v4(ip, port);
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) return -1;
    return s;
}

static void expect(int s, const char *what, int from_port) {
    struct pollfd p = {.fd = s, .events = POLLIN};
    CHECK(poll(&p, 1, 5000) == 1, what);
    char buf[64] = {0};
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(s, buf, sizeof buf - 1, 0, (struct sockaddr *)&from, &fl);
    CHECK(n > 0 && !strcmp(buf, what) && ntohs(from.sin_port) == from_port, what);
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    const char *ip = argv[2];

    int first = reusable_udp("0.0.0.0", 0);
    CHECK(first >= 0, "bind first");
    int port = port_of(first);
    int plain = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in same = v4("0.0.0.0", port);
    CHECK(bind(plain, (struct sockaddr *)&same, sizeof same) == -1 && errno == EADDRINUSE,
          "without SO_REUSEADDR the port is taken");
    close(plain);

    struct sockaddr_in srv = v4(ip, port);
    int c1 = socket(AF_INET, SOCK_DGRAM, 0), c2 = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(sendto(c1, "hello 1", 7, 0, (struct sockaddr *)&srv, sizeof srv) == 7, "c1 send");
    int p1 = port_of(c1);
    expect(first, "hello 1", p1);
    struct sockaddr_in back = v4(ip, p1);
    CHECK(connect(first, (struct sockaddr *)&back, sizeof back) == 0, "connect first to c1");
    int second = reusable_udp("0.0.0.0", port);
    CHECK(second >= 0, "bind a second socket to the same port");
    for (int round = 0; round < 3; round++) {
        CHECK(sendto(c2, "from c2", 7, 0, (struct sockaddr *)&srv, sizeof srv) == 7, "c2 send");
        CHECK(sendto(c1, "from c1", 7, 0, (struct sockaddr *)&srv, sizeof srv) == 7, "c1 send");
        expect(first, "from c1", p1);
        expect(second, "from c2", port_of(c2));
    }
    printf("udp reuse ok\n");

    for (int i = 0; i < 3; i++) {
        int l = reusable_listener(5299);
        int c = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in to = v4(ip, 5299);
        CHECK(connect(c, (struct sockaddr *)&to, sizeof to) == 0, "connect to the new listener");
        int s = accept(l, NULL, NULL);
        CHECK(s >= 0, "accept");
        close(s);
        close(c);
        close(l);
    }
    printf("relisten ok\n");
    return 0;
}
