/* Blocked socket calls interrupted by signals, as signal(7) says ("Interruption of
 * system calls and library functions by signal handlers"): argv[2] is the address to
 * listen on. Each step prints one line; the same program passes natively. */
#include "common.h"

static volatile sig_atomic_t caught;
static void on_signal(int sig) { caught = sig; }

static void handle(int sig, int flags) {
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(sig, &sa, NULL) == 0, "sigaction");
}

/* A helper process: after `delay_ms`, send `sig` to the parent; then, when `port` is
 * set, connect to it once (so a restarted accept has a connection to return). */
static pid_t later(int delay_ms, int sig, const char *ip, int port) {
    pid_t parent = getpid(), pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        usleep(delay_ms * 1000);
        kill(parent, sig);
        if (port) {
            usleep(300 * 1000);
            int c = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in a = v4(ip, port);
            for (int i = 0; i < 50 && connect(c, (struct sockaddr *)&a, sizeof a) != 0; i++)
                usleep(20000);
            usleep(200 * 1000);
        }
        _exit(0);
    }
    return pid;
}

static int listener(const char *ip) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = v4(ip, 0);
    CHECK(bind(s, (struct sockaddr *)&a, sizeof a) == 0, "bind");
    CHECK(listen(s, 8) == 0, "listen");
    return s;
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    const char *ip = argv[2];

    /* 1. Without SA_RESTART: accept fails with EINTR once the handler ran. */
    handle(SIGUSR1, 0);
    int s = listener(ip);
    pid_t h = later(200, SIGUSR1, ip, 0);
    caught = 0;
    int r = accept(s, NULL, NULL);
    CHECK(r == -1 && errno == EINTR && caught == SIGUSR1, "accept interrupted with EINTR");
    waitpid(h, NULL, 0);
    printf("accept EINTR\n");

    /* 2. With SA_RESTART: the handler runs and accept goes on, returning the
     * connection that arrives afterwards. */
    handle(SIGUSR1, SA_RESTART);
    h = later(200, SIGUSR1, ip, port_of(s));
    caught = 0;
    r = accept(s, NULL, NULL);
    CHECK(r >= 0 && caught == SIGUSR1, "accept restarted after the handler");
    close(r);
    waitpid(h, NULL, 0);
    printf("accept restarted\n");

    /* 3. SO_RCVTIMEO: EINTR even under SA_RESTART. */
    struct timeval tv = {5, 0};
    CHECK(setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0, "SO_RCVTIMEO");
    h = later(200, SIGUSR1, ip, 0);
    caught = 0;
    r = accept(s, NULL, NULL);
    CHECK(r == -1 && errno == EINTR && caught == SIGUSR1, "timed accept interrupted with EINTR");
    waitpid(h, NULL, 0);
    printf("timed accept EINTR\n");
    close(s);

    /* 4. A datagram receive without SA_RESTART. */
    handle(SIGUSR2, 0);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = v4(ip, 0);
    CHECK(bind(u, (struct sockaddr *)&a, sizeof a) == 0, "bind udp");
    h = later(200, SIGUSR2, ip, 0);
    caught = 0;
    char buf[16];
    ssize_t n = recv(u, buf, sizeof buf, 0);
    CHECK(n == -1 && errno == EINTR && caught == SIGUSR2, "recv interrupted with EINTR");
    waitpid(h, NULL, 0);
    printf("recv EINTR\n");

    /* 5. A forking daemon: SIGCHLD handled (SA_RESTART) and pending, then SIGTERM with
     * its default action while blocked in accept: the process ends by SIGTERM. */
    handle(SIGCHLD, SA_RESTART);
    s = listener(ip);
    pid_t child = fork();
    CHECK(child >= 0, "fork daemon child");
    if (child == 0) _exit(0); /* a served client's process ends: SIGCHLD */
    pid_t term = later(300, SIGTERM, ip, 0);
    (void)term;
    printf("blocking until SIGTERM\n");
    fflush(stdout);
    accept(s, NULL, NULL);
    printf("FAIL accept returned instead of dying by SIGTERM (errno %d)\n", errno);
    return 1;
}
