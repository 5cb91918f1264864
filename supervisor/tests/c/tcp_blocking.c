/* Blocking TCP server and client (forked) over argv[2], checking names and options. */
#include "common.h"

int main(int argc, char **argv) {
    setup_output(argc, argv);
    const char *ip = argc > 2 ? argv[2] : "127.0.0.1";

    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(ls >= 0, "socket");
    int v = 0;
    socklen_t vl = sizeof v;
    CHECK(getsockopt(ls, SOL_SOCKET, SO_TYPE, &v, &vl) == 0 && v == SOCK_STREAM, "SO_TYPE");
    vl = sizeof v;
    CHECK(getsockopt(ls, SOL_SOCKET, SO_DOMAIN, &v, &vl) == 0 && v == AF_INET, "SO_DOMAIN");
    vl = sizeof v;
    CHECK(getsockopt(ls, SOL_SOCKET, SO_PROTOCOL, &v, &vl) == 0 && v == IPPROTO_TCP, "SO_PROTOCOL");
    CHECK((fcntl(ls, F_GETFD) & FD_CLOEXEC) != 0, "SOCK_CLOEXEC kept");
    v = 1;
    CHECK(setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &v, sizeof v) == 0, "SO_REUSEADDR");
    struct sockaddr_in a = v4(ip, 0);
    CHECK(bind(ls, (struct sockaddr *)&a, sizeof a) == 0, "bind");
    int port = port_of(ls);
    CHECK(port > 0, "getsockname after bind");
    CHECK(listen(ls, 16) == 0, "listen");
    vl = sizeof v;
    CHECK(getsockopt(ls, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl) == 0 && v == 1, "SO_ACCEPTCONN");
    CHECK((fcntl(ls, F_GETFD) & FD_CLOEXEC) != 0, "FD_CLOEXEC kept across the swap");
    printf("listening\n");

    pid_t child = fork();
    CHECK(child >= 0, "fork");
    if (child == 0) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(c >= 0, "client socket");
        struct sockaddr_in to = v4(ip, port);
        CHECK(connect(c, (struct sockaddr *)&to, sizeof to) == 0, "connect");
        struct sockaddr_in peer;
        socklen_t pl = sizeof peer;
        CHECK(getpeername(c, (struct sockaddr *)&peer, &pl) == 0, "getpeername");
        CHECK(ntohs(peer.sin_port) == port, "peer port");
        write_all(c, "ping", 4);
        char buf[4];
        CHECK(read_exact(c, buf, 4) == 4 && memcmp(buf, "pong", 4) == 0, "client read");
        printf("client got pong\n");
        CHECK(read(c, buf, 1) == 0, "EOF after server close");
        close(c);
        exit(0);
    }
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    int s = accept(ls, (struct sockaddr *)&from, &fl);
    CHECK(s >= 0, "accept");
    printf("accepted\n");
    char buf[4];
    CHECK(read_exact(s, buf, 4) == 4 && memcmp(buf, "ping", 4) == 0, "server read");
    printf("server got ping\n");
    write_all(s, "pong", 4);
    close(s);
    int st = 0;
    CHECK(waitpid(child, &st, 0) == child, "waitpid");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client exit");
    printf("done\n");
    return 0;
}
