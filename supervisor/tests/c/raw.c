/* Raw sockets and UDP-Lite (raw.rs). argv[2]: an IPv4 address on the virtual network,
 * argv[3]: an IPv6 one, argv[4]: "root" (holds CAP_NET_RAW) or "nobody". */
#include "common.h"
#include <netinet/icmp6.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>

#ifndef ICMP_FILTER
#define ICMP_FILTER 1
#endif

static unsigned short csum(const unsigned char *p, size_t n) {
    unsigned long a = 0;
    for (size_t i = 0; i + 1 < n; i += 2) a += (p[i] << 8) | p[i + 1];
    if (n & 1) a += p[n - 1] << 8;
    while (a >> 16) a = (a & 0xffff) + (a >> 16);
    return htons(~a & 0xffff);
}

/* Wait for an echo reply with identifier 0x4242 and sequence `seq`; returns its length
 * (-1: none within `ms`). `hdr`: the packets carry an IPv4 header first. */
static int reply(int s, int seq, int hdr, int ms, unsigned char *buf, size_t cap,
                 struct sockaddr_storage *from) {
    for (;;) {
        struct pollfd p = {.fd = s, .events = POLLIN};
        if (poll(&p, 1, ms) != 1) return -1;
        socklen_t fl = sizeof *from;
        ssize_t n = recvfrom(s, buf, cap, 0, (struct sockaddr *)from, &fl);
        if (n < 0) return -1;
        int at = hdr ? (buf[0] & 0x0f) * 4 : 0;
        int want = hdr ? ICMP_ECHOREPLY : ICMP6_ECHO_REPLY;
        if (n >= at + 8 && buf[at] == want && buf[at + 4] == 0x42 && buf[at + 5] == 0x42 &&
            buf[at + 7] == seq)
            return (int)n;
    }
}

static void echo(unsigned char *m, int type, int seq) {
    memset(m, 0, 16);
    m[0] = type;
    m[4] = m[5] = 0x42;
    m[7] = seq;
    memcpy(m + 8, "rawping!", 8);
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    int root = !strcmp(argv[4], "root");
    CHECK(socket(AF_INET, SOCK_RAW, 0) == -1 && errno == EPROTONOSUPPORT, "raw 0");
    int u = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE);
    CHECK(u >= 0, "udplite socket");
    int v = 0;
    socklen_t vl = sizeof v;
    CHECK(getsockopt(u, SOL_SOCKET, SO_PROTOCOL, &v, &vl) == 0 && v == IPPROTO_UDPLITE,
          "udplite SO_PROTOCOL");
    struct sockaddr_in virt = v4(argv[2], 9), lo = v4("127.0.0.1", 9);
    CHECK(sendto(u, "x", 1, 0, (struct sockaddr *)&virt, sizeof virt) == -1 &&
              errno == ENETUNREACH,
          "udplite on the virtual network");
    CHECK(sendto(u, "x", 1, 0, (struct sockaddr *)&lo, sizeof lo) == 1, "udplite on loopback");
    printf("udplite ok\n");
    if (!root) {
        CHECK(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) == -1 && errno == EPERM, "raw EPERM");
        CHECK(socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6) == -1 && errno == EPERM, "raw6 EPERM");
        printf("raw refused\n");
        printf("done\n");
        return 0;
    }
    unsigned char m[16], buf[256];
    struct sockaddr_storage from;

    /* IPv4 ICMP: the program's checksum, replies with their IP header. */
    int s = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    CHECK(s >= 0, "raw socket");
    CHECK(getsockopt(s, SOL_SOCKET, SO_TYPE, &v, &vl) == 0 && v == SOCK_RAW, "SO_TYPE");
    struct sockaddr_in to = v4(argv[2], 0);
    echo(m, ICMP_ECHO, 1);
    unsigned short c = csum(m, sizeof m);
    memcpy(m + 2, &c, 2);
    CHECK(sendto(s, m, sizeof m, 0, (struct sockaddr *)&to, sizeof to) == sizeof m, "sendto");
    int n = reply(s, 1, 1, 5000, buf, sizeof buf, &from);
    CHECK(n == 20 + 16 && buf[0] == 0x45 && buf[9] == IPPROTO_ICMP, "reply with IP header");
    CHECK(!memcmp(buf + 12, &to.sin_addr, 4) && !memcmp(buf + 28, "rawping!", 8), "reply");
    CHECK(((struct sockaddr_in *)&from)->sin_addr.s_addr == to.sin_addr.s_addr &&
              ((struct sockaddr_in *)&from)->sin_port == 0,
          "reply source");
    printf("raw icmp ok\n");
    int one = 1;
    CHECK(setsockopt(s, IPPROTO_IP, IP_HDRINCL, &one, sizeof one) == -1 && errno == ENOPROTOOPT,
          "IP_HDRINCL is the protocol's");
    /* ICMP_FILTER: echo requests and replies blocked. */
    unsigned int mask = (1u << ICMP_ECHOREPLY) | (1u << ICMP_ECHO);
    CHECK(setsockopt(s, SOL_RAW, ICMP_FILTER, &mask, sizeof mask) == 0, "ICMP_FILTER");
    echo(m, ICMP_ECHO, 2);
    c = csum(m, sizeof m);
    memcpy(m + 2, &c, 2);
    CHECK(sendto(s, m, sizeof m, 0, (struct sockaddr *)&to, sizeof to) == sizeof m, "sendto 2");
    struct pollfd p = {.fd = s, .events = POLLIN};
    CHECK(poll(&p, 1, 500) == 0, "filtered");
    printf("icmp filter ok\n");
    mask = 0;
    CHECK(setsockopt(s, SOL_RAW, ICMP_FILTER, &mask, sizeof mask) == 0, "ICMP_FILTER off");

    /* IPPROTO_RAW: the whole packet, answered to the ICMP socket. */
    int h = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
    CHECK(h >= 0, "IPPROTO_RAW socket");
    unsigned char pkt[36] = {0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, IPPROTO_ICMP};
    memcpy(pkt + 16, &to.sin_addr, 4);
    echo(m, ICMP_ECHO, 3);
    c = csum(m, sizeof m);
    memcpy(m + 2, &c, 2);
    memcpy(pkt + 20, m, 16);
    CHECK(sendto(h, pkt, sizeof pkt, 0, (struct sockaddr *)&to, sizeof to) == sizeof pkt,
          "IPPROTO_RAW sendto");
    CHECK(reply(s, 3, 1, 5000, buf, sizeof buf, &from) == 36, "reply to the built packet");
    printf("ipproto_raw ok\n");

    /* Loopback: a kernel raw socket confined to lo. */
    int l = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    CHECK(l >= 0, "raw socket (loopback)");
    echo(m, ICMP_ECHO, 4);
    c = csum(m, sizeof m);
    memcpy(m + 2, &c, 2);
    CHECK(sendto(l, m, sizeof m, 0, (struct sockaddr *)&lo, sizeof lo) == sizeof m,
          "sendto loopback");
    CHECK(reply(l, 4, 1, 5000, buf, sizeof buf, &from) == 36, "loopback reply");
    CHECK(setsockopt(l, IPPROTO_IP, IP_HDRINCL, &one, sizeof one) == -1 && errno == ENOPROTOOPT,
          "IP_HDRINCL on a kernel raw socket");
    CHECK(sendto(l, m, sizeof m, 0, (struct sockaddr *)&virt, sizeof virt) == -1 &&
              errno == ENETUNREACH,
          "a loopback raw socket stays there");
    struct sockaddr_in host = v4("192.0.2.1", 0);
    CHECK(sendto(l, m, sizeof m, 0, (struct sockaddr *)&host, sizeof host) == -1 &&
              errno == ENETUNREACH,
          "nor reaches the host's network");
    int fresh = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    CHECK(sendto(fresh, m, sizeof m, 0, (struct sockaddr *)&host, sizeof host) == -1 &&
              errno == ENETUNREACH,
          "a raw socket reaches no host address");
    int h2 = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
    CHECK(sendto(h2, pkt, sizeof pkt, 0, (struct sockaddr *)&lo, sizeof lo) == -1 &&
              errno == EPERM,
          "a header-including socket gets no kernel socket");
    printf("raw loopback ok\n");

    /* ICMPv6: no header, checksum computed for us. */
    int s6 = socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6);
    CHECK(s6 >= 0, "raw6 socket");
    struct icmp6_filter f;
    ICMP6_FILTER_SETBLOCKALL(&f);
    ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &f);
    CHECK(setsockopt(s6, IPPROTO_ICMPV6, ICMP6_FILTER, &f, sizeof f) == 0, "ICMP6_FILTER");
    struct sockaddr_in6 to6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, argv[3], &to6.sin6_addr);
    echo(m, ICMP6_ECHO_REQUEST, 5);
    CHECK(sendto(s6, m, sizeof m, 0, (struct sockaddr *)&to6, sizeof to6) == sizeof m,
          "sendto6");
    n = reply(s6, 5, 0, 5000, buf, sizeof buf, &from);
    CHECK(n == 16 && !memcmp(buf + 8, "rawping!", 8), "v6 reply without header");
    p.fd = s6;
    CHECK(poll(&p, 1, 300) == 0, "only echo replies pass the filter");
    printf("raw icmpv6 ok\n");
    printf("done\n");
    return 0;
}
