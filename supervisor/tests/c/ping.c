/* Ping through an unprivileged ICMP echo socket (argv[2]: target). */
#include "common.h"
#include <netinet/ip_icmp.h>

int main(int argc, char **argv) {
    setup_output(argc, argv);
    int s = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
    CHECK(s >= 0, "icmp socket");
    int v = 0;
    socklen_t vl = sizeof v;
    CHECK(getsockopt(s, SOL_SOCKET, SO_PROTOCOL, &v, &vl) == 0 && v == IPPROTO_ICMP, "SO_PROTOCOL");
    struct sockaddr_in to = v4(argv[2], 0);
    for (int seq = 1; seq <= 3; seq++) {
        unsigned char req[12] = {ICMP_ECHO, 0, 0, 0, 0, 0, 0, (unsigned char)seq, 'p', 'i', 'n', 'g'};
        CHECK(sendto(s, req, sizeof req, 0, (struct sockaddr *)&to, sizeof to) == sizeof req, "sendto");
        struct pollfd p = {.fd = s, .events = POLLIN};
        CHECK(poll(&p, 1, 5000) == 1, "reply in time");
        unsigned char rep[64];
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(s, rep, sizeof rep, 0, (struct sockaddr *)&from, &fl);
        CHECK(n == 12 && rep[0] == ICMP_ECHOREPLY && rep[7] == seq && !memcmp(rep + 8, "ping", 4), "echo reply");
        CHECK(from.sin_addr.s_addr == to.sin_addr.s_addr, "reply source");
        printf("reply seq %d\n", seq);
    }
    printf("done\n");
    return 0;
}
