/* UDP unconnected and connected, sendmsg/recvmsg, sendmmsg/recvmmsg, MSG_TRUNC,
 * MSG_DONTWAIT, over argv[2]. */
#include "common.h"

static int wait_readable(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 5000) == 1;
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    const char *ip = argv[2];
    int srv = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(srv >= 0, "socket");
    struct sockaddr_in a = v4(ip, 0);
    CHECK(bind(srv, (struct sockaddr *)&a, sizeof a) == 0, "bind");
    int sport = port_of(srv);
    CHECK(sport > 0, "server port");
    struct sockaddr_in to = v4(ip, sport);
    char buf[256];
    CHECK(recv(srv, buf, sizeof buf, MSG_DONTWAIT) == -1 && errno == EAGAIN, "empty EAGAIN");
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    CHECK(recvfrom(srv, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl) == -1 && errno == EAGAIN, "empty recvfrom EAGAIN");

    /* Unconnected client. */
    int cli = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(sendto(cli, "ping1", 5, 0, (struct sockaddr *)&to, sizeof to) == 5, "sendto");
    int cport = port_of(cli);
    CHECK(cport > 0, "client got a port");
    CHECK(wait_readable(srv), "server readable");
    fl = sizeof from;
    ssize_t n = recvfrom(srv, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    CHECK(n == 5 && !memcmp(buf, "ping1", 5), "recvfrom data");
    CHECK(fl == sizeof from && ntohs(from.sin_port) == cport, "recvfrom source");
    CHECK(sendto(srv, "pong1", 5, 0, (struct sockaddr *)&from, fl) == 5, "reply");
    fl = sizeof from;
    n = recvfrom(cli, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    CHECK(n == 5 && !memcmp(buf, "pong1", 5) && ntohs(from.sin_port) == sport, "client recvfrom");
    printf("unconnected ok\n");

    /* Connected client: native send/recv. */
    int cc = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(connect(cc, (struct sockaddr *)&to, sizeof to) == 0, "connect");
    struct sockaddr_in peer;
    socklen_t pl = sizeof peer;
    CHECK(getpeername(cc, (struct sockaddr *)&peer, &pl) == 0 && ntohs(peer.sin_port) == sport, "getpeername");
    CHECK(send(cc, "c2", 2, 0) == 2, "send");
    CHECK(wait_readable(srv), "server readable 2");
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr m = {0};
    m.msg_name = &from;
    m.msg_namelen = sizeof from;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    n = recvmsg(srv, &m, 0);
    CHECK(n == 2 && !memcmp(buf, "c2", 2) && m.msg_namelen == sizeof from, "recvmsg");
    CHECK(ntohs(from.sin_port) == port_of(cc), "recvmsg source");
    iov.iov_base = "r2";
    iov.iov_len = 2;
    CHECK(sendmsg(srv, &m, 0) == 2, "sendmsg");
    CHECK(wait_readable(cc), "client readable");
    CHECK(recv(cc, buf, sizeof buf, 0) == 2 && !memcmp(buf, "r2", 2), "native recv");
    printf("connected ok\n");

    /* Truncation. */
    char big[100];
    memset(big, 'b', sizeof big);
    CHECK(sendto(cli, big, sizeof big, 0, (struct sockaddr *)&to, sizeof to) == 100, "big");
    CHECK(wait_readable(srv), "big arrives");
    fl = sizeof from;
    n = recvfrom(srv, buf, 10, MSG_TRUNC, (struct sockaddr *)&from, &fl);
    CHECK(n == 100, "MSG_TRUNC reports the full length");
    printf("trunc ok\n");

    /* sendmmsg / recvmmsg. */
    struct mmsghdr out[3], in[8];
    struct iovec oi[3], ii[8];
    char ib[8][16];
    const char *words[3] = {"m0", "m1", "m2"};
    memset(out, 0, sizeof out);
    for (int i = 0; i < 3; i++) {
        oi[i].iov_base = (void *)words[i];
        oi[i].iov_len = 2;
        out[i].msg_hdr.msg_iov = &oi[i];
        out[i].msg_hdr.msg_iovlen = 1;
        out[i].msg_hdr.msg_name = &to;
        out[i].msg_hdr.msg_namelen = sizeof to;
    }
    int sent = 0;
    while (sent < 3) {
        int r = sendmmsg(cli, out + sent, 3 - sent, 0);
        CHECK(r > 0, "sendmmsg");
        sent += r;
    }
    int got = 0;
    while (got < 3) {
        memset(in, 0, sizeof in);
        for (int i = 0; i < 8; i++) {
            ii[i].iov_base = ib[i];
            ii[i].iov_len = sizeof ib[i];
            in[i].msg_hdr.msg_iov = &ii[i];
            in[i].msg_hdr.msg_iovlen = 1;
        }
        int r = recvmmsg(srv, in, 8, MSG_WAITFORONE, NULL);
        CHECK(r > 0, "recvmmsg");
        for (int i = 0; i < r; i++) {
            CHECK(in[i].msg_len == 2 && ib[i][0] == 'm' && ib[i][1] == '0' + got, "recvmmsg order");
            got++;
        }
    }
    printf("mmsg ok\n");
    close(cc);
    close(cli);
    close(srv);
    printf("done\n");
    return 0;
}
