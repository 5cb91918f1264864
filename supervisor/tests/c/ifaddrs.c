/* The program's own view of its addresses over rtnetlink: getifaddrs(3) (glibc sends
 * RTM_GETLINK and RTM_GETADDR dumps on a NETLINK_ROUTE socket) must list the virtual
 * network's addresses argv[2] (IPv4) and argv[3] (IPv6), on an interface whose index
 * resolves, beside the host's own loopback address. */
#include "common.h"
#include <ifaddrs.h>
#include <net/if.h>

int main(int argc, char **argv) {
    setup_output(argc, argv);
    struct ifaddrs *all;
    CHECK(getifaddrs(&all) == 0, "getifaddrs");
    int v4 = 0, v6 = 0, lo = 0;
    for (struct ifaddrs *i = all; i; i = i->ifa_next) {
        if (!i->ifa_addr) continue;
        char text[INET6_ADDRSTRLEN] = "";
        if (i->ifa_addr->sa_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, text, sizeof text);
        else if (i->ifa_addr->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, text, sizeof text);
        else
            continue;
        if (!strcmp(text, "127.0.0.1")) lo = 1;
        if (!strcmp(text, argv[2]) || !strcmp(text, argv[3])) {
            CHECK(if_nametoindex(i->ifa_name) > 0, "the interface exists");
            if (!strcmp(text, argv[2])) v4 = 1; else v6 = 1;
            printf("%s on %s\n", text, i->ifa_name);
        }
    }
    freeifaddrs(all);
    CHECK(lo, "the host's loopback address is still listed");
    CHECK(v4 && v6, "the virtual addresses are listed");
    printf("ifaddrs ok\n");
    return 0;
}
