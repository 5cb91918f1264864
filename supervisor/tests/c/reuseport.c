/* A graceful reload (caddy, nginx binary upgrade, envoy hot restart): a second listener
 * opens on the same port with SO_REUSEPORT, both serve, the first closes, and no client
 * is refused. argv[2]: the address. */
#include "common.h"

static int listener(const char *ip, int port, int reuse) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    if (reuse) CHECK(setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0, "SO_REUSEPORT");
    struct sockaddr_in a = v4(ip, port);
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 64) != 0) {
        int e = errno;
        close(s);
        errno = e;
        return -1;
    }
    return s;
}

/* Connect `n` clients one after the other; count accepts on each listener (each within
 * 3 s: a closed listener is noticed within a second, and its queue handed over). */
static void clients(const char *ip, int port, int *ls, int nl, int n, int *counts) {
    for (int i = 0; i < n; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = v4(ip, port);
        CHECK(connect(c, (struct sockaddr *)&a, sizeof a) == 0, "client connects");
        int got = 0;
        for (int t = 0; t < 1500 && !got; t++) {
            for (int j = 0; j < nl; j++) {
                int f = accept(ls[j], NULL, NULL);
                if (f >= 0) {
                    counts[j]++;
                    got = 1;
                    close(f);
                    break;
                }
                CHECK(errno == EAGAIN, "accept");
            }
            if (!got) usleep(2000);
        }
        CHECK(got, "the connection was accepted by a listener");
        close(c);
    }
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    const char *ip = argv[2];
    int first = listener(ip, 0, 1);
    CHECK(first >= 0, "first listener");
    int port = port_of(first);
    CHECK(listener(ip, port, 0) == -1 && errno == EADDRINUSE,
          "a listener without SO_REUSEPORT on the same port: EADDRINUSE");
    int second = listener(ip, port, 1);
    CHECK(second >= 0, "second listener with SO_REUSEPORT");
    int ls[2] = {first, second}, counts[2] = {0, 0};
    clients(ip, port, ls, 2, 20, counts);
    printf("both: %d %d\n", counts[0], counts[1]);
    CHECK(counts[0] > 0 && counts[1] > 0, "both listeners serve");
    close(first);
    int after[1] = {0};
    clients(ip, port, &second, 1, 20, after);
    CHECK(after[0] == 20, "every client served after the first listener closed");
    printf("graceful reload ok\n");
    return 0;
}
