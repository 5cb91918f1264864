/* Server shapes: a wildcard listener reached over the virtual network and loopback;
 * four forked workers sharing one listener with 100 client threads; a blocking accept
 * under a SIGURG storm. argv[2] = mode, argv[3] = virtual address. */
#include "common.h"
#include <time.h>

static const char *vip;
static int port;

static int dial(const char *ip) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(c >= 0, "socket");
    struct sockaddr_in to = v4(ip, port);
    CHECK(connect(c, (struct sockaddr *)&to, sizeof to) == 0, "connect");
    return c;
}

static void echo_once(int s) {
    char b;
    CHECK(read(s, &b, 1) == 1, "worker read");
    write_all(s, &b, 1);
    close(s);
}

static void *client(void *arg) {
    int c = dial(vip);
    char b = (char)(long)arg, r = 0;
    write_all(c, &b, 1);
    CHECK(read(c, &r, 1) == 1 && r == b, "echo");
    close(c);
    return NULL;
}

static volatile sig_atomic_t urgs;
static void on_urg(int s) { (void)s; urgs++; }
static int ls;
static void *blocking_accept(void *arg) {
    (void)arg;
    struct sockaddr_in peer;
    socklen_t pl = sizeof peer;
    int s = accept(ls, (struct sockaddr *)&peer, &pl);
    CHECK(s >= 0, "accept under SIGURG");
    echo_once(s);
    return NULL;
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    const char *mode = argv[2];
    vip = argv[3];
    ls = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(ls >= 0, "socket");
    struct sockaddr_in a = v4(strcmp(mode, "wildcard") ? vip : "0.0.0.0", 0);
    CHECK(bind(ls, (struct sockaddr *)&a, sizeof a) == 0, "bind");
    CHECK(listen(ls, 128) == 0, "listen");
    port = port_of(ls);

    if (!strcmp(mode, "wildcard")) {
        const char *targets[2] = {vip, "127.0.0.1"};
        for (int i = 0; i < 2; i++) {
            pid_t p = fork();
            if (p == 0) {
                int c = dial(targets[i]);
                write_all(c, "x", 1);
                char r;
                CHECK(read(c, &r, 1) == 1, "echo");
                exit(0);
            }
            struct sockaddr_in peer;
            socklen_t pl = sizeof peer;
            int s = accept(ls, (struct sockaddr *)&peer, &pl);
            CHECK(s >= 0, "accept");
            char ip[32];
            inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
            printf("peer %s\n", ip);
            echo_once(s);
            int st;
            CHECK(waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == 0, "client");
        }
    } else if (!strcmp(mode, "workers")) {
        pid_t workers[4];
        for (int i = 0; i < 4; i++) {
            workers[i] = fork();
            if (workers[i] == 0) {
                int dupfd = dup(ls); /* a dup is the same socket */
                close(ls);
                for (;;) {
                    int s = accept(dupfd, NULL, NULL);
                    CHECK(s >= 0, "worker accept");
                    echo_once(s);
                }
            }
        }
        close(ls);
        pthread_t t[100];
        for (long i = 0; i < 100; i++) CHECK(pthread_create(&t[i], NULL, client, (void *)i) == 0, "thread");
        for (int i = 0; i < 100; i++) pthread_join(t[i], NULL);
        printf("100 clients served\n");
        for (int i = 0; i < 4; i++) kill(workers[i], SIGTERM);
        for (int i = 0; i < 4; i++) waitpid(workers[i], NULL, 0);
    } else if (!strcmp(mode, "timeout")) {
        struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
        CHECK(setsockopt(ls, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0, "SO_RCVTIMEO");
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        CHECK(accept(ls, NULL, NULL) == -1 && errno == EAGAIN, "accept times out with EAGAIN");
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double waited = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
        CHECK(waited >= 0.15 && waited < 5, "waited about SO_RCVTIMEO");
        printf("accept timed out\n");
    } else if (!strcmp(mode, "sigurg")) {
        struct sigaction sa = {0};
        sa.sa_handler = on_urg;
        sa.sa_flags = SA_RESTART;
        sigaction(SIGURG, &sa, NULL);
        pthread_t t;
        pthread_create(&t, NULL, blocking_accept, NULL);
        usleep(50000);
        for (int i = 0; i < 5000; i++) pthread_kill(t, SIGURG);
        usleep(50000);
        int c = dial(vip);
        write_all(c, "u", 1);
        char r;
        CHECK(read(c, &r, 1) == 1 && r == 'u', "echo after storm");
        pthread_join(t, NULL);
        printf("accept survived %d SIGURG\n", urgs > 0 ? 1 : 0);
    }
    printf("done\n");
    return 0;
}
