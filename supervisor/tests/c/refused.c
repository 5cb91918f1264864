/* A connected UDP socket to a closed port (argv[2]: IPv4, argv[3]: IPv6 address of the
 * peer): the ICMP port unreachable that comes back is the socket's pending error, reported
 * once by the next call that the supervisor sees (recvfrom with an address, SO_ERROR,
 * sendto), and consumed by a plain send (which cannot report it, docs/SUPERVISOR.md). */
#include "common.h"

static void check(int fam, const char *ip) {
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (fam == AF_INET) {
        struct sockaddr_in a = v4(ip, 7109);
        memcpy(&ss, &a, sizeof a);
        len = sizeof a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(7109);
        inet_pton(AF_INET6, ip, &a->sin6_addr);
        len = sizeof *a;
    }
    int s = socket(fam, SOCK_DGRAM, 0);
    CHECK(s >= 0 && connect(s, (struct sockaddr *)&ss, len) == 0, "connect");
    char buf[16];
    struct sockaddr_storage from;
    socklen_t fl = sizeof from;
    int e = 0;
    socklen_t el = sizeof e;

    CHECK(send(s, "x", 1, 0) == 1, "send");
    usleep(300000);
    CHECK(recvfrom(s, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl) == -1 &&
              errno == ECONNREFUSED,
          "recvfrom reports it");
    CHECK(recvfrom(s, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl) == -1 &&
              errno == EAGAIN,
          "once");

    CHECK(send(s, "x", 1, 0) == 1, "send 2");
    usleep(300000);
    CHECK(getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e == ECONNREFUSED, "SO_ERROR");
    CHECK(getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e == 0, "SO_ERROR cleared");

    CHECK(send(s, "x", 1, 0) == 1, "send 3");
    usleep(300000);
    CHECK(sendto(s, "x", 1, 0, (struct sockaddr *)&ss, len) == -1 && errno == ECONNREFUSED,
          "sendto reports it");

    CHECK(send(s, "x", 1, 0) == 1, "send 4");
    usleep(300000);
    CHECK(send(s, "x", 1, 0) == 1, "a plain send consumes it");
    usleep(300000);
    CHECK(getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e == 0, "nothing left");
    close(s);
    printf("refused %s ok\n", fam == AF_INET ? "v4" : "v6");
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    check(AF_INET, argv[2]);
    check(AF_INET6, argv[3]);
    printf("done\n");
    return 0;
}
