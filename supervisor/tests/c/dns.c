/* Name resolution under the supervisor.
 * argv: out NAME PORT MODE
 *   getaddrinfo(NAME) through the system resolver: prints "addr <ip>" per address (one
 *   line per distinct address) or "gai <error>";
 *   then a raw query for example.com (type A) sent with connect+send to 127.0.0.1:PORT
 *   (a nameserver of the test's resolver): prints "raw rcode=<n> answers=<n>" or "raw
 *   timeout". MODE "nonblock" uses a non-blocking socket and poll. */
#include "common.h"
#include <netdb.h>

static void resolve(const char *name) {
    struct addrinfo hints = {0}, *res, *p;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(name, NULL, &hints, &res);
    if (rc != 0) {
        printf("gai %s\n", rc == EAI_NONAME ? "EAI_NONAME" : gai_strerror(rc));
        return;
    }
    for (p = res; p; p = p->ai_next) {
        char buf[INET6_ADDRSTRLEN];
        void *a = p->ai_family == AF_INET ? (void *)&((struct sockaddr_in *)p->ai_addr)->sin_addr
                                          : (void *)&((struct sockaddr_in6 *)p->ai_addr)->sin6_addr;
        inet_ntop(p->ai_family, a, buf, sizeof buf);
        printf("addr %s\n", buf);
    }
    freeaddrinfo(res);
}

static void raw(int port, int nonblock) {
    static const unsigned char q[] = {
        0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
        7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0, 0, 1, 0, 1};
    int s = socket(AF_INET, SOCK_DGRAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
    CHECK(s >= 0, "socket");
    struct sockaddr_in a = v4("127.0.0.1", port);
    CHECK(connect(s, (struct sockaddr *)&a, sizeof a) == 0, "connect");
    CHECK(send(s, q, sizeof q, 0) == (ssize_t)sizeof q, "send");
    struct pollfd pfd = {.fd = s, .events = POLLIN};
    if (poll(&pfd, 1, 8000) != 1) {
        printf("raw timeout\n");
        return;
    }
    unsigned char r[512];
    ssize_t n = recv(s, r, sizeof r, 0);
    CHECK(n >= 12, "recv");
    CHECK(r[0] == 0x12 && r[1] == 0x34, "reply id");
    printf("raw rcode=%d answers=%d\n", r[3] & 15, (r[6] << 8) | r[7]);
    close(s);
}

/* Two queries over one TCP connection to 127.0.0.1:PORT (RFC 7766 framing): type ANY for
 * the member name 89e92ceba1.ff00000000001234.zt, then type A for example.com; prints
 * "tcp member|other rcode=<n> answers=<n>", or "tcp refused/closed". */
static void tcp_query(int s, const char *label, const unsigned char *q, size_t len) {
    unsigned char msg[2 + 128];
    msg[0] = (unsigned char)(len >> 8);
    msg[1] = (unsigned char)len;
    memcpy(msg + 2, q, len);
    CHECK(write(s, msg, 2 + len) == (ssize_t)(2 + len), "tcp write");
    unsigned char r[2 + 512];
    size_t got = 0, want = 2;
    while (got < want) {
        ssize_t n = read(s, r + got, sizeof r - got);
        if (n <= 0) {
            printf("tcp closed\n");
            return;
        }
        got += (size_t)n;
        if (got >= 2) want = 2 + (size_t)((r[0] << 8) | r[1]);
        CHECK(want <= sizeof r, "tcp answer fits");
    }
    CHECK(want >= 2 + 12 && r[2] == q[0] && r[3] == q[1], "tcp reply id");
    printf("tcp %s rcode=%d answers=%d\n", label, r[5] & 15, (r[8] << 8) | r[9]);
}

static void tcp(int port) {
    static const unsigned char member[] = {
        0x56, 0x78, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
        10, '8', '9', 'e', '9', '2', 'c', 'e', 'b', 'a', '1',
        16, 'f', 'f', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '1', '2', '3', '4',
        2, 'z', 't', 0, 0, 255, 0, 1};
    static const unsigned char other[] = {
        0x9a, 0xbc, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
        7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0, 0, 1, 0, 1};
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s >= 0, "tcp socket");
    struct sockaddr_in a = v4("127.0.0.1", port);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        printf("tcp refused errno=%d\n", errno);
        return;
    }
    tcp_query(s, "member", member, sizeof member);
    tcp_query(s, "other", other, sizeof other);
    close(s);
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    resolve(argv[2]);
    raw(atoi(argv[3]), argc > 4 && strcmp(argv[4], "nonblock") == 0);
    tcp(atoi(argv[3]));
    printf("done\n");
    return 0;
}
