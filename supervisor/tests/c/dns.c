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

int main(int argc, char **argv) {
    setup_output(argc, argv);
    resolve(argv[2]);
    raw(atoi(argv[3]), argc > 4 && strcmp(argv[4], "nonblock") == 0);
    printf("done\n");
    return 0;
}
