/* Ancillary data on UDP sockets over argv[2] (IPv4) and argv[3] (IPv6), as dnsmasq
 * uses it on a wildcard socket: IP_PKTINFO / IPV6_RECVPKTINFO and SO_TIMESTAMP on
 * receive (the destination address, an interface index that resolves to a name),
 * IP_PKTINFO / IPV6_PKTINFO choosing the source on send, EINVAL for a source that is not
 * ours, MSG_CTRUNC for a control buffer too small. */
#include "common.h"
#include <net/if.h>
#include <sys/time.h>

static int wait_readable(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 5000) == 1;
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    const char *ip = argv[2], *ip6 = argv[3];
    int one = 1;

    /* IPv4 wildcard server. */
    int srv = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(setsockopt(srv, IPPROTO_IP, IP_PKTINFO, &one, sizeof one) == 0, "IP_PKTINFO");
    CHECK(setsockopt(srv, SOL_SOCKET, SO_TIMESTAMP, &one, sizeof one) == 0, "SO_TIMESTAMP");
    struct sockaddr_in any = v4("0.0.0.0", 0);
    CHECK(bind(srv, (struct sockaddr *)&any, sizeof any) == 0, "bind wildcard");
    struct sockaddr_in to = v4(ip, port_of(srv));
    int cli = socket(AF_INET, SOCK_DGRAM, 0);
    struct timeval before;
    gettimeofday(&before, NULL);
    CHECK(sendto(cli, "query", 5, 0, (struct sockaddr *)&to, sizeof to) == 5, "sendto");
    CHECK(wait_readable(srv), "server readable");
    char buf[64];
    union { struct cmsghdr align; char b[256]; } ctl;
    struct sockaddr_in from;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr m = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov,
                       .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
    CHECK(recvmsg(srv, &m, 0) == 5 && !(m.msg_flags & MSG_CTRUNC), "recvmsg");
    int got_info = 0, got_time = 0, ifindex = 0;
    struct in_addr dst = {0};
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
            struct in_pktinfo *p = (struct in_pktinfo *)CMSG_DATA(c);
            dst = p->ipi_spec_dst;
            ifindex = p->ipi_ifindex;
            got_info = 1;
        } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMP) {
            struct timeval *t = (struct timeval *)CMSG_DATA(c);
            CHECK(t->tv_sec >= before.tv_sec && t->tv_sec <= before.tv_sec + 5, "timestamp now");
            got_time = 1;
        }
    }
    CHECK(got_info && dst.s_addr == to.sin_addr.s_addr, "IP_PKTINFO names the destination");
    char name[IF_NAMESIZE];
    CHECK(ifindex > 0 && if_indextoname(ifindex, name), "interface index resolves");
    CHECK(got_time, "SO_TIMESTAMP");
    printf("pktinfo %s ifindex ok\n", inet_ntoa(dst));

    /* Reply choosing the source with IP_PKTINFO, as dnsmasq's send_from does. */
    memset(ctl.b, 0, sizeof ctl.b);
    m.msg_control = ctl.b;
    m.msg_controllen = CMSG_SPACE(sizeof(struct in_pktinfo));
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
    struct in_pktinfo *pi = (struct in_pktinfo *)CMSG_DATA(c);
    pi->ipi_ifindex = 0;
    pi->ipi_spec_dst = dst;
    iov.iov_base = "answer";
    iov.iov_len = 6;
    m.msg_namelen = sizeof from;
    CHECK(sendmsg(srv, &m, 0) == 6, "sendmsg with IP_PKTINFO");
    CHECK(wait_readable(cli), "client readable");
    struct sockaddr_in rf;
    socklen_t rl = sizeof rf;
    CHECK(recvfrom(cli, buf, sizeof buf, 0, (struct sockaddr *)&rf, &rl) == 6 &&
          rf.sin_addr.s_addr == to.sin_addr.s_addr, "answer from the chosen source");
    inet_pton(AF_INET, "192.0.2.77", &pi->ipi_spec_dst);
    CHECK(sendmsg(srv, &m, 0) == -1 && errno == EINVAL, "a source that is not ours: EINVAL");
    printf("send pktinfo ok\n");

    /* A control buffer with no room: the data arrives, MSG_CTRUNC says what was lost. */
    CHECK(sendto(cli, "again", 5, 0, (struct sockaddr *)&to, sizeof to) == 5, "sendto 2");
    CHECK(wait_readable(srv), "server readable 2");
    iov.iov_base = buf;
    iov.iov_len = sizeof buf;
    m.msg_control = ctl.b;
    m.msg_controllen = 8;
    m.msg_namelen = sizeof from;
    CHECK(recvmsg(srv, &m, 0) == 5 && (m.msg_flags & MSG_CTRUNC) && m.msg_controllen == 0,
          "MSG_CTRUNC");
    printf("ctrunc ok\n");

    /* IPv6: IPV6_RECVPKTINFO. */
    int s6 = socket(AF_INET6, SOCK_DGRAM, 0);
    CHECK(setsockopt(s6, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one) == 0, "IPV6_RECVPKTINFO");
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = in6addr_any};
    CHECK(bind(s6, (struct sockaddr *)&a6, sizeof a6) == 0, "bind v6 wildcard");
    struct sockaddr_in6 t6 = {.sin6_family = AF_INET6, .sin6_port = htons(port_of(s6))};
    inet_pton(AF_INET6, ip6, &t6.sin6_addr);
    int c6 = socket(AF_INET6, SOCK_DGRAM, 0);
    CHECK(sendto(c6, "q6", 2, 0, (struct sockaddr *)&t6, sizeof t6) == 2, "sendto v6");
    CHECK(wait_readable(s6), "v6 readable");
    struct sockaddr_in6 f6;
    m.msg_name = &f6;
    m.msg_namelen = sizeof f6;
    m.msg_control = ctl.b;
    m.msg_controllen = sizeof ctl.b;
    CHECK(recvmsg(s6, &m, 0) == 2, "recvmsg v6");
    int got6 = 0;
    for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
            struct in6_pktinfo *p = (struct in6_pktinfo *)CMSG_DATA(c);
            got6 = !memcmp(&p->ipi6_addr, &t6.sin6_addr, 16) && p->ipi6_ifindex > 0;
        }
    CHECK(got6, "IPV6_PKTINFO names the destination");
    printf("pktinfo6 ok\n");
    return 0;
}
