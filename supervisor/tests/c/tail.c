/* A client that writes and exits at once, and a server that counts what arrives.
 * argv[2]: "serve" or "send"; argv[3]: IPv4 address; argv[4]: port; argv[5]: bytes. */
#include "common.h"

int main(int argc, char **argv) {
    setup_output(argc, argv);
    struct sockaddr_in a = v4(argv[3], atoi(argv[4]));
    long want = atol(argv[5]);
    static char buf[65536];
    if (!strcmp(argv[2], "serve")) {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0, "bind");
        CHECK(listen(l, 4) == 0, "listen");
        printf("listening\n");
        int c = accept(l, NULL, NULL);
        CHECK(c >= 0, "accept");
        long got = 0;
        ssize_t n;
        while ((n = read(c, buf, sizeof buf)) > 0) got += n;
        CHECK(n == 0, "end of stream");
        printf("got %ld\n", got);
        CHECK(got == want, "every byte the client wrote arrived");
        return 0;
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(connect(s, (struct sockaddr *)&a, sizeof a) == 0, "connect");
    memset(buf, 'x', sizeof buf);
    for (long sent = 0; sent < want;) {
        long chunk = want - sent < (long)sizeof buf ? want - sent : (long)sizeof buf;
        ssize_t w = write(s, buf, (size_t)chunk);
        CHECK(w > 0, "write");
        sent += w;
    }
    /* Leave at once: the kernel would still deliver what is queued. */
    printf("sent %ld\n", want);
    return 0;
}
