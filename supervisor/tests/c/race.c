/* connect() while another thread rewrites the sockaddr between a host address
 * (argv[2]:argv[3]) and a loopback listener of our own. Prints the counts. */
#include "common.h"

static struct sockaddr_in shared;
static struct sockaddr_in host, lo;
static volatile int stop;

static void *flipper(void *arg) {
    (void)arg;
    while (!stop) {
        memcpy(&shared, &host, sizeof host);
        memcpy(&shared, &lo, sizeof lo);
    }
    return NULL;
}

static int ls;
static void *acceptor(void *arg) {
    (void)arg;
    for (;;) {
        int s = accept(ls, NULL, NULL);
        if (s < 0) return NULL;
        close(s);
    }
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    host = v4(argv[2], atoi(argv[3]));
    ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in any = v4("127.0.0.1", 0);
    CHECK(bind(ls, (struct sockaddr *)&any, sizeof any) == 0, "bind");
    CHECK(listen(ls, 1024) == 0, "listen");
    lo = v4("127.0.0.1", port_of(ls));
    shared = host;
    pthread_t t, a;
    pthread_create(&a, NULL, acceptor, NULL);
    pthread_create(&t, NULL, flipper, NULL);
    int n_lo = 0, n_unreach = 0;
    for (int i = 0; i < 1000; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(fd >= 0, "socket");
        if (connect(fd, (struct sockaddr *)&shared, sizeof shared) == 0) {
            struct sockaddr_in peer;
            socklen_t pl = sizeof peer;
            CHECK(getpeername(fd, (struct sockaddr *)&peer, &pl) == 0, "getpeername");
            CHECK(peer.sin_addr.s_addr == htonl(INADDR_LOOPBACK), "connected only to loopback");
            n_lo++;
        } else {
            CHECK(errno == ENETUNREACH, "refused with ENETUNREACH");
            n_unreach++;
        }
        close(fd);
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("loopback %d unreachable %d\n", n_lo, n_unreach);
    printf("done\n");
    return 0;
}
