/* The peer resets the connection: reads give ECONNRESET (not end of file), as on Linux.
 * Serves one connection on ADDR:7840: reads "hello", answers "ok", then waits for the
 * peer's reset.
 * argv: out ADDR */
#include "common.h"

int main(int argc, char **argv) {
    setup_output(argc, argv);
    int one = 1;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(l >= 0, "socket");
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = v4(argv[2], 7840);
    CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0, "bind");
    CHECK(listen(l, 4) == 0, "listen");
    int c = accept(l, NULL, NULL);
    CHECK(c >= 0, "accept");
    char buf[8];
    CHECK(read_exact(c, buf, 5) == 5 && !memcmp(buf, "hello", 5), "hello");
    write_all(c, "ok", 2);
    ssize_t r = read(c, buf, sizeof buf);
    if (!(r == -1 && errno == ECONNRESET)) {
        printf("FAIL read after the reset returned %zd (errno %d %s)\n", r, errno,
               r == 0 ? "end of file" : strerror(errno));
        return 1;
    }
    printf("ECONNRESET\n");
    CHECK(read(c, buf, sizeof buf) == 0, "then end of file");
    signal(SIGPIPE, SIG_IGN);
    CHECK(write(c, "x", 1) == -1 && errno == EPIPE, "write after the reset: EPIPE");
    printf("done\n");
    return 0;
}
