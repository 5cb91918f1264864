/* One small check per mode (argv[2]). */
#include "common.h"
#include <linux/io_uring.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <stddef.h>
#include <sys/un.h>

static volatile sig_atomic_t got_winch;
static void on_winch(int s) { (void)s; got_winch = 1; }

int main(int argc, char **argv) {
    setup_output(argc, argv);
    const char *mode = argv[2];
    if (!strcmp(mode, "io_uring")) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        long r = syscall(SYS_io_uring_setup, 8, &p);
        CHECK(r == -1 && errno == ENOSYS, "io_uring_setup gives ENOSYS");
        printf("io_uring ENOSYS\n");
    } else if (!strcmp(mode, "resolved")) {
        /* systemd-resolved's Varlink socket is refused (nss-resolve then falls back to
         * DNS); other AF_UNIX sockets connect as usual. */
        int l = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        const char name[] = "ztrun-test-unix";
        memcpy(a.sun_path + 1, name, sizeof name - 1); /* abstract: no file */
        socklen_t alen = offsetof(struct sockaddr_un, sun_path) + 1 + sizeof name - 1;
        CHECK(bind(l, (struct sockaddr *)&a, alen) == 0 && listen(l, 1) == 0, "unix listen");
        int c = socket(AF_UNIX, SOCK_STREAM, 0);
        CHECK(connect(c, (struct sockaddr *)&a, alen) == 0, "other unix sockets connect");
        struct sockaddr_un r = {.sun_family = AF_UNIX};
        strcpy(r.sun_path, "/run/systemd/resolve/io.systemd.Resolve");
        int d = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        CHECK(connect(d, (struct sockaddr *)&r, sizeof r) == -1 && errno == ECONNREFUSED,
              "resolved's socket refused");
        printf("resolved refused\n");
    } else if (!strcmp(mode, "efault")) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(fd >= 0, "socket");
        CHECK(connect(fd, (struct sockaddr *)8, 16) == -1 && errno == EFAULT, "connect EFAULT");
        CHECK(bind(fd, (struct sockaddr *)8, 16) == -1 && errno == EFAULT, "bind EFAULT");
        socklen_t len = 16;
        CHECK(getsockname(fd, (struct sockaddr *)8, &len) == -1 && errno == EFAULT, "getsockname EFAULT");
        CHECK(getsockname(fd, (struct sockaddr *)&len, (socklen_t *)8) == -1 && errno == EFAULT, "len EFAULT");
        printf("EFAULT\n");
    } else if (!strcmp(mode, "unreach")) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(fd >= 0, "socket");
        struct sockaddr_in a = v4(argv[3], atoi(argv[4]));
        CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == ENETUNREACH, "ENETUNREACH");
        int u = socket(AF_INET, SOCK_DGRAM, 0);
        CHECK(sendto(u, "x", 1, 0, (struct sockaddr *)&a, sizeof a) == -1 && errno == ENETUNREACH, "udp ENETUNREACH");
        printf("ENETUNREACH\n");
    } else if (!strcmp(mode, "udp_escape")) {
        /* A UDP socket that went to loopback must not be re-aimed at the host. */
        int sink = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in lo = v4("127.0.0.1", 0);
        CHECK(bind(sink, (struct sockaddr *)&lo, sizeof lo) == 0, "bind sink");
        lo.sin_port = htons(port_of(sink));
        int u = socket(AF_INET, SOCK_DGRAM, 0);
        CHECK(sendto(u, "x", 1, 0, (struct sockaddr *)&lo, sizeof lo) == 1, "loopback sendto");
        struct sockaddr_in host = v4(argv[3], atoi(argv[4]));
        CHECK(sendto(u, "x", 1, 0, (struct sockaddr *)&host, sizeof host) == -1 && errno == ENETUNREACH, "sendto host refused");
        struct iovec iov = {.iov_base = "y", .iov_len = 1};
        struct msghdr m = {0};
        m.msg_name = &host;
        m.msg_namelen = sizeof host;
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        CHECK(sendmsg(u, &m, 0) == -1 && errno == ENETUNREACH, "sendmsg host refused");
        CHECK(connect(u, (struct sockaddr *)&host, sizeof host) == -1 && errno == ENETUNREACH, "connect host refused");
        CHECK(connect(u, (struct sockaddr *)&lo, sizeof lo) == 0, "connect loopback");
        CHECK(send(u, "z", 1, 0) == 1, "send to the connected loopback peer");
        m.msg_name = NULL;
        m.msg_namelen = 0;
        CHECK(sendmsg(u, &m, 0) == 1, "sendmsg without a name");
        char buf[4];
        int got = 0;
        for (int i = 0; i < 4; i++) got += recv(sink, buf, sizeof buf, MSG_DONTWAIT) == 1;
        CHECK(got == 3, "the loopback sink got the three allowed datagrams");
        printf("udp escape refused\n");
    } else if (!strcmp(mode, "v6wild")) {
        /* A wildcard IPv6 listener without IPV6_V6ONLY takes IPv4 and IPv6 clients on
         * loopback, and getsockname shows the wildcard. */
        int s = socket(AF_INET6, SOCK_STREAM, 0), off = 0;
        CHECK(setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) == 0, "V6ONLY off");
        struct sockaddr_in6 any = {.sin6_family = AF_INET6, .sin6_addr = in6addr_any};
        CHECK(bind(s, (struct sockaddr *)&any, sizeof any) == 0, "bind ::");
        CHECK(listen(s, 4) == 0, "listen");
        struct sockaddr_in6 got;
        socklen_t len = sizeof got;
        CHECK(getsockname(s, (struct sockaddr *)&got, &len) == 0, "getsockname");
        CHECK(IN6_IS_ADDR_UNSPECIFIED(&got.sin6_addr), "bound to ::");
        int c4 = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in lo4 = v4("127.0.0.1", ntohs(got.sin6_port));
        CHECK(connect(c4, (struct sockaddr *)&lo4, sizeof lo4) == 0, "IPv4 client connects");
        int c6 = socket(AF_INET6, SOCK_STREAM, 0);
        struct sockaddr_in6 lo6 = {.sin6_family = AF_INET6, .sin6_port = got.sin6_port,
                                   .sin6_addr = in6addr_loopback};
        CHECK(connect(c6, (struct sockaddr *)&lo6, sizeof lo6) == 0, "IPv6 client connects");
        CHECK(accept(s, NULL, NULL) >= 0 && accept(s, NULL, NULL) >= 0, "both accepted");
        printf("v6 wildcard takes both\n");
    } else if (!strcmp(mode, "sendmmsg")) {
        /* sendmmsg(2) sends every message and sets each msg_len; MSG_OOB has no
         * meaning for datagrams (EOPNOTSUPP). argv[3]: the address to use. */
        int rx = socket(AF_INET, SOCK_DGRAM, 0), tx = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = v4(argv[3], 0);
        CHECK(bind(rx, (struct sockaddr *)&a, sizeof a) == 0, "bind receiver");
        a.sin_port = htons(port_of(rx));
        CHECK(sendto(tx, "o", 1, MSG_OOB, (struct sockaddr *)&a, sizeof a) == -1 &&
                  errno == EOPNOTSUPP, "MSG_OOB refused");
        struct iovec iov[2] = {{"one", 3}, {"second", 6}};
        struct mmsghdr m[2];
        memset(m, 0, sizeof m);
        for (int i = 0; i < 2; i++) {
            m[i].msg_hdr.msg_name = &a;
            m[i].msg_hdr.msg_namelen = sizeof a;
            m[i].msg_hdr.msg_iov = &iov[i];
            m[i].msg_hdr.msg_iovlen = 1;
        }
        CHECK(sendmmsg(tx, m, 2, 0) == 2, "both messages sent");
        CHECK(m[0].msg_len == 3 && m[1].msg_len == 6, "each msg_len set");
        char buf[16];
        CHECK(recv(rx, buf, sizeof buf, 0) == 3 && recv(rx, buf, sizeof buf, 0) == 6,
              "both datagrams received");
        CHECK(sendto(tx, "o", 1, MSG_OOB, (struct sockaddr *)&a, sizeof a) == -1 &&
                  errno == EOPNOTSUPP, "MSG_OOB refused after use");
        printf("sendmmsg sent both\n");
    } else if (!strcmp(mode, "errnos")) {
        /* Answers that differed from Linux's (argv[3]: the address to use). */
        CHECK(socket(AF_INET, SOCK_RAW, 0) == -1 && errno == EPROTONOSUPPORT,
              "a raw socket without a protocol: EPROTONOSUPPORT");
        CHECK(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) == -1 && errno == EPERM,
              "a raw ICMP socket without CAP_NET_RAW: EPERM");
        int u = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = v4(argv[3], 0);
        CHECK(bind(u, (struct sockaddr *)&a, sizeof a) == 0, "bind udp");
        CHECK(accept(u, NULL, NULL) == -1 && errno == EOPNOTSUPP, "accept on UDP: EOPNOTSUPP");
        int l = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 4) == 0, "listen");
        a.sin_port = htons(port_of(l));
        int c = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(connect(c, (struct sockaddr *)&a, sizeof a) == 0, "connect");
        CHECK(connect(c, (struct sockaddr *)&a, sizeof a) == -1 && errno == EISCONN,
              "a second connect: EISCONN");
        printf("errnos as on Linux\n");
    } else if (!strcmp(mode, "errnos2")) {
        /* More answers that differed from Linux's, found by the conformance suite
         * (argv[3]: an IPv4 address to use). */
        int b = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in any = {.sin_family = AF_UNSPEC};
        CHECK(bind(b, (struct sockaddr *)&any, sizeof any) == 0,
              "bind(AF_UNSPEC, INADDR_ANY) is taken as AF_INET");
        int rx = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = v4(argv[3], 0);
        CHECK(bind(rx, (struct sockaddr *)&a, sizeof a) == 0, "bind receiver");
        a.sin_port = htons(port_of(rx));
        int tx6 = socket(AF_INET6, SOCK_DGRAM, 0);
        CHECK(sendto(tx6, "4", 1, 0, (struct sockaddr *)&a, sizeof a) == 1,
              "an IPv6 UDP socket sends to a sockaddr_in");
        CHECK(sendto(tx6, "o", 1, MSG_OOB, (struct sockaddr *)&a, sizeof a) == -1 &&
                  errno == EOPNOTSUPP, "an IPv4 destination takes udp_sendmsg's MSG_OOB check");
        char buf[4];
        CHECK(recv(rx, buf, sizeof buf, 0) == 1, "the datagram arrives");
        int l = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in la = v4(argv[3], 0);
        CHECK(bind(l, (struct sockaddr *)&la, sizeof la) == 0 && listen(l, 4) == 0, "listen");
        CHECK(shutdown(l, SHUT_RDWR) == 0, "shutdown of a listener");
        CHECK(accept(l, NULL, NULL) == -1 && errno == EINVAL, "accept after shutdown: EINVAL");
        int mark = -1;
        CHECK(ioctl(rx, SIOCATMARK, &mark) == -1 && errno == ENOTTY, "SIOCATMARK on UDP: ENOTTY");
        int t = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(ioctl(t, SIOCATMARK, &mark) == 0 && mark == 0, "SIOCATMARK on TCP: 0");
        struct timeval stamp;
        CHECK(ioctl(t, SIOCGSTAMP, &stamp) == -1 && errno == ENOENT, "SIOCGSTAMP: ENOENT");
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        strcpy(ifr.ifr_name, "lo");
        CHECK(ioctl(t, SIOCGIFADDR, &ifr) == 0 &&
                  ((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr.s_addr == htonl(INADDR_LOOPBACK),
              "SIOCGIFADDR lo: 127.0.0.1");
        CHECK(ioctl(t, SIOCGIFFLAGS, &ifr) == 0 && (ifr.ifr_flags & IFF_LOOPBACK),
              "SIOCGIFFLAGS lo: IFF_LOOPBACK");
        CHECK(ioctl(t, SIOCGIFINDEX, &ifr) == 0 && ifr.ifr_ifindex > 0, "SIOCGIFINDEX lo");
        strcpy(ifr.ifr_name, "nosuchif0");
        CHECK(ioctl(t, SIOCGIFADDR, &ifr) == -1 && errno == ENODEV, "SIOCGIFADDR: ENODEV");
        int p[2];
        CHECK(pipe(p) == 0, "pipe");
        struct sockaddr_in far = v4("192.0.2.1", 80);
        CHECK(connect(p[0], (struct sockaddr *)&far, sizeof far) == -1 && errno == ENOTSOCK,
              "connect on a pipe: ENOTSOCK");
        printf("errnos2 as on Linux\n");
    } else if (!strcmp(mode, "bindinuse")) {
        /* A TCP port conflict is reported at bind (argv[3]: an IPv4 address). */
        int one = 1;
        int l = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0, "reuseaddr");
        struct sockaddr_in a = v4(argv[3], 0);
        CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 4) == 0, "listen");
        a.sin_port = htons(port_of(l));
        int b = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(bind(b, (struct sockaddr *)&a, sizeof a) == -1 && errno == EADDRINUSE,
              "the listened port: EADDRINUSE at bind");
        CHECK(setsockopt(b, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0, "reuseaddr");
        CHECK(bind(b, (struct sockaddr *)&a, sizeof a) == -1 && errno == EADDRINUSE,
              "SO_REUSEADDR does not share a listening port");
        int d = socket(AF_INET6, SOCK_STREAM, 0), off = 0;
        CHECK(setsockopt(d, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) == 0, "dual stack");
        struct sockaddr_in6 any6 = {.sin6_family = AF_INET6, .sin6_port = a.sin_port,
                                    .sin6_addr = in6addr_any};
        CHECK(bind(d, (struct sockaddr *)&any6, sizeof any6) == -1 && errno == EADDRINUSE,
              "a dual-stack wildcard covers the IPv4 port");
        close(l);
        int again = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(bind(again, (struct sockaddr *)&a, sizeof a) == 0, "rebound at once after close");
        printf("bind conflicts as on Linux\n");
    } else if (!strcmp(mode, "privport")) {
        /* Ports below 1024 need CAP_NET_BIND_SERVICE on every network the program can
         * bind on (argv[3]: an address, or 0.0.0.0); above, anyone's. */
        int kinds[2] = {SOCK_STREAM, SOCK_DGRAM};
        for (int k = 0; k < 2; k++) {
            int low = socket(AF_INET, kinds[k], 0), high = socket(AF_INET, kinds[k], 0);
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(80)};
            inet_pton(AF_INET, argv[3], &a.sin_addr);
            CHECK(bind(low, (struct sockaddr *)&a, sizeof a) == -1 && errno == EACCES,
                  "port 80 refused with EACCES");
            a.sin_port = htons(18080 + k);
            CHECK(bind(high, (struct sockaddr *)&a, sizeof a) == 0, "port 18080 bound");
        }
        printf("privileged ports refused\n");
    } else if (!strcmp(mode, "exit")) {
        int fd = socket(AF_INET6, SOCK_DGRAM, 0);
        CHECK(fd >= 0, "socket");
        return atoi(argv[3]);
    } else if (!strcmp(mode, "kill")) {
        raise(SIGKILL);
    } else if (!strcmp(mode, "sigwinch")) {
        signal(SIGWINCH, on_winch);
        printf("ready\n");
        for (int i = 0; i < 3000 && !got_winch; i++) usleep(10000);
        CHECK(got_winch, "SIGWINCH forwarded");
        printf("got SIGWINCH\n");
        return 7;
    } else if (!strcmp(mode, "abi")) {
        /* x32 socket(2): the 0x40000000 bit. */
        long r = syscall(0x40000000 | SYS_socket, AF_INET, SOCK_STREAM, 0);
        CHECK(r == -1 && errno == ENOSYS, "x32 socket refused");
        /* i386 socket(2) = 359 through int 0x80. */
        long ret;
        __asm__ volatile("int $0x80" : "=a"(ret) : "a"(359L), "b"(2L), "c"(1L), "d"(0L) : "memory");
        CHECK(ret == -ENOSYS, "i386 socket refused");
        /* i386 socketcall(SYS_SOCKET = 1, args) = 102. */
        unsigned int args[3] = {AF_INET, SOCK_STREAM, 0};
        __asm__ volatile("int $0x80" : "=a"(ret) : "a"(102L), "b"(1L), "c"(args) : "memory");
        CHECK(ret == -ENOSYS, "i386 socketcall refused");
        printf("foreign ABIs refused\n");
    } else if (!strcmp(mode, "fresh")) {
        /* A socket nobody connected answers as a fresh INET socket would. */
        int fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
        CHECK(fd >= 0, "socket");
        CHECK((fcntl(fd, F_GETFL) & O_NONBLOCK) != 0, "SOCK_NONBLOCK kept");
        CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) == 0, "no FD_CLOEXEC");
        struct sockaddr_in6 sa;
        socklen_t len = sizeof sa;
        CHECK(getpeername(fd, (struct sockaddr *)&sa, &len) == -1 && errno == ENOTCONN, "getpeername ENOTCONN");
        len = sizeof sa;
        CHECK(getsockname(fd, (struct sockaddr *)&sa, &len) == 0 && len == sizeof sa && sa.sin6_family == AF_INET6, "getsockname");
        int v = 0;
        socklen_t vl = sizeof v;
        CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &vl) == 0 && v == 0, "SO_ERROR");
        CHECK(shutdown(fd, SHUT_RDWR) == -1 && errno == ENOTCONN, "shutdown ENOTCONN");
        CHECK(listen(socket(AF_INET, SOCK_DGRAM, 0), 1) == -1 && errno == EOPNOTSUPP, "udp listen");
        CHECK(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) == -1 && errno == EPERM, "raw EPERM");
        v = 1;
        CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) == 0, "TCP_NODELAY");
        v = 0;
        vl = sizeof v;
        CHECK(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &vl) == 0 && v == 1, "TCP_NODELAY read back");
        /* Unix sockets are not ours: they must work natively. */
        int sp[2];
        CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0, "socketpair");
        vl = sizeof v;
        CHECK(getsockopt(sp[0], SOL_SOCKET, SO_DOMAIN, &v, &vl) == 0 && v == AF_UNIX, "unix SO_DOMAIN");
        printf("fresh ok\n");
    } else {
        printf("unknown mode\n");
        return 3;
    }
    return 0;
}
