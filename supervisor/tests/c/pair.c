/* Two programs, two hosts: "serve <ip> <port>" echoes one line over TCP and one UDP
 * datagram; "dial <ip> <port>" sends them and checks the echoes. */
#include "common.h"

int main(int argc, char **argv) {
    setup_output(argc, argv);
    const char *mode = argv[2], *ip = argv[3];
    int port = atoi(argv[4]);
    struct sockaddr_in a = v4(ip, port);
    char buf[64];
    if (!strcmp(mode, "serve")) {
        int ls = socket(AF_INET, SOCK_STREAM, 0);
        int u = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in any = v4("0.0.0.0", port);
        CHECK(bind(ls, (struct sockaddr *)&any, sizeof any) == 0, "bind");
        CHECK(bind(u, (struct sockaddr *)&any, sizeof any) == 0, "udp bind");
        CHECK(listen(ls, 4) == 0, "listen");
        printf("listening\n");
        struct sockaddr_in peer;
        socklen_t pl = sizeof peer;
        int s = accept(ls, (struct sockaddr *)&peer, &pl);
        CHECK(s >= 0, "accept");
        inet_ntop(AF_INET, &peer.sin_addr, buf, sizeof buf);
        printf("tcp peer %s\n", buf);
        int n = read(s, buf, sizeof buf);
        CHECK(n > 0, "read");
        write_all(s, buf, n);
        pl = sizeof peer;
        n = recvfrom(u, buf, sizeof buf, 0, (struct sockaddr *)&peer, &pl);
        CHECK(n > 0, "recvfrom");
        CHECK(sendto(u, buf, n, 0, (struct sockaddr *)&peer, pl) == n, "udp echo");
        inet_ntop(AF_INET, &peer.sin_addr, buf, sizeof buf);
        printf("udp peer %s\n", buf);
        CHECK(read(s, buf, 1) == 0, "client closed");
    } else {
        int c = -1;
        for (int i = 0; i < 100; i++) {
            c = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(c, (struct sockaddr *)&a, sizeof a) == 0) break;
            CHECK(errno == ECONNREFUSED, "connect");
            close(c);
            c = -1;
            usleep(50000);
        }
        CHECK(c >= 0, "connected");
        write_all(c, "hello over the overlay", 22);
        CHECK(read_exact(c, buf, 22) == 22 && !memcmp(buf, "hello over the overlay", 22), "tcp echo");
        printf("tcp echo ok\n");
        int u = socket(AF_INET, SOCK_DGRAM, 0);
        CHECK(connect(u, (struct sockaddr *)&a, sizeof a) == 0, "udp connect");
        CHECK(send(u, "dgram", 5, 0) == 5, "udp send");
        struct pollfd p = {.fd = u, .events = POLLIN};
        CHECK(poll(&p, 1, 5000) == 1, "udp reply");
        CHECK(recv(u, buf, sizeof buf, 0) == 5 && !memcmp(buf, "dgram", 5), "udp echo");
        printf("udp echo ok\n");
        close(c);
    }
    printf("done\n");
    return 0;
}
