/* IPv6 TCP with and without IPV6_V6ONLY. argv[2] = our IPv6 address, argv[3] = IPv4. */
#include "common.h"

static struct sockaddr_in6 v6(const char *ip, int port) {
    struct sockaddr_in6 a = {0};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    inet_pton(AF_INET6, ip, &a.sin6_addr);
    return a;
}

static int dial(int family, struct sockaddr *to, socklen_t len) {
    int c = socket(family, SOCK_STREAM, 0);
    CHECK(c >= 0, "socket");
    CHECK(connect(c, to, len) == 0, "connect");
    return c;
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    /* Dual-stack wildcard listener. */
    int ls = socket(AF_INET6, SOCK_STREAM, 0);
    int off = 0;
    CHECK(setsockopt(ls, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) == 0, "V6ONLY off");
    struct sockaddr_in6 any = v6("::", 0);
    CHECK(bind(ls, (struct sockaddr *)&any, sizeof any) == 0, "bind [::]");
    CHECK(listen(ls, 8) == 0, "listen");
    int port = port_of(ls);
    struct sockaddr_in6 to6 = v6(argv[2], port);
    int c6 = dial(AF_INET6, (struct sockaddr *)&to6, sizeof to6);
    struct sockaddr_in6 peer;
    socklen_t pl = sizeof peer;
    int s6 = accept(ls, (struct sockaddr *)&peer, &pl);
    CHECK(s6 >= 0 && peer.sin6_family == AF_INET6 && pl == sizeof peer, "accept v6");
    char ip[64];
    inet_ntop(AF_INET6, &peer.sin6_addr, ip, sizeof ip);
    printf("v6 peer %s\n", ip);
    write_all(c6, "6", 1);
    char b;
    CHECK(read(s6, &b, 1) == 1 && b == '6', "v6 data");
    struct sockaddr_in to4 = v4(argv[3], port);
    int c4 = dial(AF_INET, (struct sockaddr *)&to4, sizeof to4);
    pl = sizeof peer;
    int s4 = accept(ls, (struct sockaddr *)&peer, &pl);
    CHECK(s4 >= 0, "accept v4 on dual-stack");
    inet_ntop(AF_INET6, &peer.sin6_addr, ip, sizeof ip);
    printf("v4 peer %s\n", ip);
    write_all(c4, "4", 1);
    CHECK(read(s4, &b, 1) == 1 && b == '4', "v4 data");

    /* V6ONLY listener and an IPv4 listener share one port. */
    int l6 = socket(AF_INET6, SOCK_STREAM, 0);
    int on = 1;
    CHECK(setsockopt(l6, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) == 0, "V6ONLY on");
    struct sockaddr_in6 a6 = v6("::", port + 1);
    CHECK(bind(l6, (struct sockaddr *)&a6, sizeof a6) == 0 && listen(l6, 8) == 0, "v6only listen");
    int l4 = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a4 = v4("0.0.0.0", port + 1);
    CHECK(bind(l4, (struct sockaddr *)&a4, sizeof a4) == 0 && listen(l4, 8) == 0, "v4 listen on the same port");
    to4.sin_port = htons(port + 1);
    int c = dial(AF_INET, (struct sockaddr *)&to4, sizeof to4);
    struct sockaddr_in p4;
    socklen_t p4l = sizeof p4;
    int s = accept(l4, (struct sockaddr *)&p4, &p4l);
    CHECK(s >= 0 && p4.sin_family == AF_INET, "v4 client reaches the v4 listener");
    close(c);
    close(s);
    printf("v6only ok\n");
    printf("done\n");
    return 0;
}
