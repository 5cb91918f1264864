/* SO_SNDTIMEO bounds a blocking connect: EINPROGRESS when it expires (socket(7)), the
 * attempt goes on; a second blocking connect waits for it (bounded by SO_SNDTIMEO again)
 * and says EALREADY, a non-blocking one says EALREADY at once.
 * argv: out ADDR (an address on the virtual network where nobody answers) */
#include "common.h"
#include <fcntl.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    setup_output(argc, argv);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s >= 0, "socket");
    struct timeval tv = {.tv_sec = 0, .tv_usec = 300000};
    CHECK(setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0, "SO_SNDTIMEO");
    struct sockaddr_in a = v4(argv[2], 9);
    double t0 = now();
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    double took = now() - t0;
    CHECK(r == -1 && errno == EINPROGRESS, "connect times out with EINPROGRESS");
    CHECK(took >= 0.25 && took < 3.0, "connect waited about SO_SNDTIMEO");
    printf("EINPROGRESS after SO_SNDTIMEO\n");
    /* A second blocking connect waits for the one in progress, again bounded by
     * SO_SNDTIMEO, then says EALREADY. */
    t0 = now();
    r = connect(s, (struct sockaddr *)&a, sizeof a);
    took = now() - t0;
    CHECK(r == -1 && errno == EALREADY, "second connect: EALREADY");
    CHECK(took >= 0.25 && took < 3.0, "second connect waited about SO_SNDTIMEO");
    printf("EALREADY ok\n");
    /* Non-blocking, it says so at once. */
    fcntl(s, F_SETFL, O_NONBLOCK);
    t0 = now();
    r = connect(s, (struct sockaddr *)&a, sizeof a);
    CHECK(r == -1 && errno == EALREADY && now() - t0 < 0.2, "non-blocking: EALREADY at once");
    printf("non-blocking EALREADY ok\n");
    close(s);
    return 0;
}
