/* Socket options answered as Linux answers them (supervisor/src/options.rs).
 * argv[2]: an IPv4 address of ours to listen on (127.0.0.1, or a virtual one);
 * argv[3]: an IPv6 one (::1, or a virtual one). Prints "options as on Linux". */
#include "common.h"
#include <netinet/udp.h>
#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

static int geti(int fd, int level, int name, int *v) {
    socklen_t len = sizeof *v;
    *v = -12345;
    int r = getsockopt(fd, level, name, v, &len);
    if (r == 0 && len != sizeof *v) {
        errno = 0;
        return -2;
    }
    return r;
}

static int seti(int fd, int level, int name, int v) {
    return setsockopt(fd, level, name, &v, sizeof v);
}

#define FAILS(call, e) ((call) == -1 && errno == (e))

static void fresh(void) {
    int t4 = socket(AF_INET, SOCK_STREAM, 0), u4 = socket(AF_INET, SOCK_DGRAM, 0);
    int t6 = socket(AF_INET6, SOCK_STREAM, 0);
    CHECK(t4 >= 0 && u4 >= 0 && t6 >= 0, "sockets");
    int v;
    /* Values Linux has on a fresh socket. */
    struct linger l = {7, 7};
    socklen_t len = sizeof l;
    CHECK(getsockopt(t4, SOL_SOCKET, SO_LINGER, &l, &len) == 0 && len == sizeof l && l.l_onoff == 0,
          "SO_LINGER");
    struct timeval tv = {7, 7};
    len = sizeof tv;
    CHECK(getsockopt(t4, SOL_SOCKET, SO_RCVTIMEO, &tv, &len) == 0 && len == sizeof tv &&
              tv.tv_sec == 0 && tv.tv_usec == 0,
          "SO_RCVTIMEO");
    CHECK(geti(t4, IPPROTO_IP, IP_TTL, &v) == 0 && v > 0 && v < 256, "IP_TTL");
    CHECK(geti(t4, IPPROTO_IP, IP_TOS, &v) == 0 && v == 0, "IP_TOS");
    CHECK(geti(t4, IPPROTO_TCP, TCP_KEEPINTVL, &v) == 0 && v > 0, "TCP_KEEPINTVL");
    CHECK(geti(t4, IPPROTO_TCP, TCP_CORK, &v) == 0 && v == 0, "TCP_CORK");
    CHECK(geti(t4, SOL_SOCKET, SO_PRIORITY, &v) == 0 && v == 0, "SO_PRIORITY");
    char cc[16] = {0};
    len = sizeof cc;
    CHECK(getsockopt(t4, IPPROTO_TCP, TCP_CONGESTION, cc, &len) == 0 && len == sizeof cc && cc[0],
          "TCP_CONGESTION");
    unsigned long long c1 = 0, c2 = 1;
    len = sizeof c1;
    CHECK(getsockopt(t4, SOL_SOCKET, SO_COOKIE, &c1, &len) == 0 && len == 8, "SO_COOKIE");
    len = sizeof c2;
    CHECK(getsockopt(t4, SOL_SOCKET, SO_COOKIE, &c2, &len) == 0 && c1 == c2, "SO_COOKIE stable");
    CHECK(geti(u4, SOL_SOCKET, SO_TYPE, &v) == 0 && v == SOCK_DGRAM, "SO_TYPE");
    CHECK(geti(t6, SOL_SOCKET, SO_DOMAIN, &v) == 0 && v == AF_INET6, "SO_DOMAIN");
    CHECK(FAILS(geti(t4, IPPROTO_IP, IP_MTU, &v), ENOTCONN), "IP_MTU unconnected");
    /* Another protocol's options. */
    CHECK(FAILS(geti(u4, IPPROTO_TCP, TCP_NODELAY, &v), EOPNOTSUPP), "TCP option on UDP");
    CHECK(FAILS(geti(t4, IPPROTO_UDP, UDP_CORK, &v), EOPNOTSUPP), "UDP option on TCP");
    CHECK(FAILS(geti(t4, IPPROTO_IPV6, IPV6_V6ONLY, &v), EOPNOTSUPP), "IPv6 option on IPv4");
    CHECK(FAILS(seti(t4, IPPROTO_IPV6, IPV6_V6ONLY, 1), ENOPROTOOPT), "set IPv6 on IPv4");
    /* setsockopt refuses what Linux refuses. */
    CHECK(FAILS(seti(t4, SOL_SOCKET, SO_TYPE, 1), ENOPROTOOPT), "set SO_TYPE");
    CHECK(FAILS(seti(t4, SOL_SOCKET, SO_ERROR, 0), ENOPROTOOPT), "set SO_ERROR");
    CHECK(FAILS(seti(t4, IPPROTO_IP, IP_MTU, 1000), ENOPROTOOPT), "set IP_MTU");
    CHECK(FAILS(seti(t4, 500, 1, 1), EOPNOTSUPP) || FAILS(seti(t4, 500, 1, 1), ENOPROTOOPT),
          "set level 500");
    CHECK(FAILS(seti(t4, SOL_SOCKET, -1, 1), ENOPROTOOPT), "set option -1");
    CHECK(FAILS(seti(t4, IPPROTO_IP, IP_MULTICAST_TTL, 1000), EINVAL), "IP_MULTICAST_TTL range");
    /* The kernel's transformations of what was set. */
    CHECK(seti(t4, SOL_SOCKET, SO_RCVBUF, 65536) == 0, "set SO_RCVBUF");
    CHECK(geti(t4, SOL_SOCKET, SO_RCVBUF, &v) == 0 && v == 131072, "SO_RCVBUF doubled");
    CHECK(seti(t4, IPPROTO_TCP, TCP_DEFER_ACCEPT, 5) == 0, "set TCP_DEFER_ACCEPT");
    CHECK(geti(t4, IPPROTO_TCP, TCP_DEFER_ACCEPT, &v) == 0 && v == 7, "TCP_DEFER_ACCEPT rounded");
    CHECK(seti(t4, IPPROTO_TCP, TCP_NODELAY, 1) == 0, "set TCP_NODELAY");
    CHECK(geti(t4, IPPROTO_TCP, TCP_NODELAY, &v) == 0 && v == 1, "TCP_NODELAY kept");
    tv.tv_sec = 2;
    tv.tv_usec = 500000;
    CHECK(setsockopt(t4, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0, "set SO_SNDTIMEO");
    memset(&tv, 0, sizeof tv);
    len = sizeof tv;
    CHECK(getsockopt(t4, SOL_SOCKET, SO_SNDTIMEO, &tv, &len) == 0 && tv.tv_sec == 2 &&
              tv.tv_usec == 500000,
          "SO_SNDTIMEO kept");
    /* Argument checks in the kernel's order. */
    len = sizeof v;
    CHECK(FAILS(getsockopt(t4, SOL_SOCKET, 9999, &v, NULL), EFAULT), "NULL optlen first");
    len = (socklen_t)-1;
    CHECK(FAILS(getsockopt(t4, SOL_SOCKET, 9999, &v, &len), EINVAL), "optlen -1 first");
    CHECK(FAILS(getsockopt(t4, SOL_SOCKET, 9999, &v, (socklen_t *)8), EFAULT), "bad optlen");
    len = sizeof v;
    CHECK(FAILS(getsockopt(t4, SOL_SOCKET, SO_TYPE, (void *)8, &len), EFAULT), "bad optval");
    CHECK(FAILS(setsockopt(t4, IPPROTO_IP, 9999, (void *)8, 4), ENOPROTOOPT),
          "unknown IP option before its value");
    CHECK(FAILS(setsockopt(t4, SOL_SOCKET, SO_REUSEADDR, (void *)8, 4), EFAULT), "set bad optval");
    CHECK(FAILS(setsockopt(t4, SOL_SOCKET, SO_REUSEADDR, &v, -1), EINVAL), "set optlen -1");
    /* The supervisor's rights are not lent (TCP repair mode needs CAP_NET_ADMIN). */
    if (geteuid() != 0) {
        CHECK(FAILS(seti(t4, IPPROTO_TCP, TCP_REPAIR, 1), EPERM), "TCP_REPAIR refused");
        CHECK(FAILS(seti(t4, SOL_SOCKET, SO_DEBUG, 1), EACCES), "SO_DEBUG refused");
        CHECK(seti(t4, SOL_SOCKET, SO_DEBUG, 0) == 0, "SO_DEBUG off");
    }
    close(t4);
    close(u4);
    close(t6);
}

static void states(const char *ip4, const char *ip6) {
    int v;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = v4(ip4, 0);
    CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 4) == 0, "listen");
    CHECK(geti(l, SOL_SOCKET, SO_ACCEPTCONN, &v) == 0 && v == 1, "SO_ACCEPTCONN");
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    CHECK(getsockopt(l, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 && ti.tcpi_state == TCP_LISTEN,
          "TCP_INFO of a listener");
    CHECK(FAILS(seti(l, SOL_SOCKET, SO_ACCEPTCONN, 0), ENOPROTOOPT), "set SO_ACCEPTCONN");
    /* TCP_MAXSEG: 536 until connected, then the connection's segment size (iperf3 sizes
     * its UDP datagrams by it), below a value set before connecting. */
    len = sizeof a;
    CHECK(getsockname(l, (struct sockaddr *)&a, &len) == 0, "listener's port");
    int c = socket(AF_INET, SOCK_STREAM, 0), c2 = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(geti(c, IPPROTO_TCP, TCP_MAXSEG, &v) == 0 && v == 536, "TCP_MAXSEG unconnected");
    CHECK(seti(c2, IPPROTO_TCP, TCP_MAXSEG, 1000) == 0, "set TCP_MAXSEG");
    CHECK(connect(c, (struct sockaddr *)&a, sizeof a) == 0, "connect");
    CHECK(connect(c2, (struct sockaddr *)&a, sizeof a) == 0, "connect with TCP_MAXSEG");
    CHECK(geti(c, IPPROTO_TCP, TCP_MAXSEG, &v) == 0 && v >= 1200 && v <= 65535,
          "TCP_MAXSEG connected");
    len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    CHECK(getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 && ti.tcpi_state == TCP_ESTABLISHED &&
              (int)ti.tcpi_snd_mss == v,
          "TCP_INFO's tcpi_snd_mss is TCP_MAXSEG");
    /* The handshake gave the connection its first round-trip sample (Linux: srtt m,
     * rttvar m/2); monitoring (nginx's $tcpinfo_rtt) reads it. */
    CHECK(ti.tcpi_rtt > 0 && ti.tcpi_rtt < 10000000 && ti.tcpi_rttvar > 0,
          "TCP_INFO's tcpi_rtt after the handshake");
    /* IP_MTU is the route's MTU: room for a whole segment and its headers. */
    int mtu = 0;
    CHECK(geti(c, IPPROTO_IP, IP_MTU, &mtu) == 0 && mtu >= v + 40, "IP_MTU of a connection");
    CHECK((int)ti.tcpi_pmtu == mtu, "TCP_INFO's tcpi_pmtu is IP_MTU");
    CHECK(geti(c2, IPPROTO_TCP, TCP_MAXSEG, &v) == 0 && v > 900 && v <= 1000,
          "TCP_MAXSEG connected, below the value set");
    close(c);
    close(c2);
    close(l);
    /* Bound to a specific IPv6 address, a socket is IPv6-only (__inet6_bind). */
    int l6 = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, ip6, &a6.sin6_addr);
    CHECK(bind(l6, (struct sockaddr *)&a6, sizeof a6) == 0 && listen(l6, 4) == 0, "listen6");
    CHECK(geti(l6, IPPROTO_IPV6, IPV6_V6ONLY, &v) == 0 && v == 1, "V6ONLY after bind");
    close(l6);
    /* A connected datagram socket has a path MTU. */
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in d = v4(ip4, 9);
    CHECK(connect(u, (struct sockaddr *)&d, sizeof d) == 0, "udp connect");
    CHECK(geti(u, IPPROTO_IP, IP_MTU, &v) == 0 && v >= 1280, "IP_MTU connected");
    /* The same route as the connection's above. */
    CHECK(v == mtu, "IP_MTU of a connected datagram socket is the connection's");
    close(u);
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    CHECK(argc >= 4, "usage: options OUT IPV4 IPV6");
    fresh();
    states(argv[2], argv[3]);
    printf("options as on Linux\n");
    return 0;
}
