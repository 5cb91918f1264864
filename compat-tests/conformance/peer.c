/* peer.c: the other end for the conformance probes (see probe.h for the ports).
 *
 * peer --addr4 A --addr6 A6 --ready FILE
 *
 * Listens on A and A6 (IPv6 only), writes FILE once every service is up, and serves until
 * killed (at most 15 minutes). Each TCP connection is served by a child that lives at
 * most 30 s.
 */
#include "probe.h"

static int serve_tcp(const struct sockaddr *a, socklen_t len, int v6)
{
	int s = socket(a->sa_family, SOCK_STREAM, 0);
	int one = 1;
	if (s < 0)
		return -1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (v6)
		setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(s, a, len) < 0 || listen(s, 64) < 0)
		return -1;
	return s;
}

static int serve_udp(const struct sockaddr *a, socklen_t len, int v6)
{
	int s = socket(a->sa_family, SOCK_DGRAM, 0);
	int one = 1;
	if (s < 0)
		return -1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (v6)
		setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(s, a, len) < 0)
		return -1;
	return s;
}

static void drain(int c)
{
	char buf[4096];
	while (read(c, buf, sizeof buf) > 0)
		;
}

static void handle(int service, int c)
{
	char buf[4096];
	ssize_t n;
	switch (service) {
	case P_ECHO:
		while ((n = read(c, buf, sizeof buf)) > 0)
			if (write(c, buf, n) != n)
				break;
		break;
	case P_HOLD:
		drain(c);
		break;
	case P_OOB:
		send(c, "abc", 3, MSG_NOSIGNAL);
		msleep(50);
		send(c, "!", 1, MSG_OOB | MSG_NOSIGNAL);
		msleep(50);
		send(c, "def", 3, MSG_NOSIGNAL);
		drain(c);
		break;
	case P_CALLBACK: {
		size_t have = 0;
		while (have < sizeof buf - 1 && !memchr(buf, '\n', have)) {
			n = read(c, buf + have, sizeof buf - 1 - have);
			if (n <= 0)
				return;
			have += n;
		}
		buf[have] = 0;
		int port = 0;
		char addr[80] = "";
		if (sscanf(buf, "%d %79s", &port, addr) != 2)
			return;
		struct sockaddr_storage ss = {0};
		socklen_t len;
		if (strchr(addr, ':')) {
			struct sockaddr_in6 a = sin6(addr, port);
			memcpy(&ss, &a, sizeof a);
			len = sizeof a;
		} else {
			struct sockaddr_in a = sin4(addr, port);
			memcpy(&ss, &a, sizeof a);
			len = sizeof a;
		}
		int b = socket(ss.ss_family, SOCK_STREAM, 0);
		if (b < 0 || connect(b, (struct sockaddr *)&ss, len) < 0)
			return;
		send(b, "hi", 2, MSG_NOSIGNAL);
		struct pollfd p[2] = {{.fd = c, .events = POLLIN}, {.fd = b, .events = POLLIN}};
		for (int i = 0; i < 150; i++) {
			if (poll(p, 2, 100) > 0) {
				if (p[0].revents && read(c, buf, sizeof buf) <= 0)
					break;
				if (p[1].revents && read(b, buf, sizeof buf) <= 0)
					break;
			}
		}
		close(b);
		break;
	}
	}
}

int main(int argc, char **argv)
{
	const char *a4 = "127.0.0.1", *a6 = "::1", *ready = NULL;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--addr4"))
			a4 = argv[i + 1];
		else if (!strcmp(argv[i], "--addr6"))
			a6 = argv[i + 1];
		else if (!strcmp(argv[i], "--ready"))
			ready = argv[i + 1];
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */
	alarm(900);
	static const int tcp_ports[] = {P_ECHO, P_HOLD, P_OOB, P_CALLBACK, P_CLOSE};
	enum { NT = sizeof tcp_ports / sizeof tcp_ports[0] };
	struct pollfd pf[2 * NT + 2];
	int service[2 * NT + 2];
	int n = 0;
	for (int fam = 4; fam <= 6; fam += 2) {
		for (int i = 0; i < NT; i++) {
			struct sockaddr_storage ss = {0};
			socklen_t len;
			if (fam == 4) {
				struct sockaddr_in a = sin4(a4, tcp_ports[i]);
				memcpy(&ss, &a, sizeof a);
				len = sizeof a;
			} else {
				struct sockaddr_in6 a = sin6(a6, tcp_ports[i]);
				memcpy(&ss, &a, sizeof a);
				len = sizeof a;
			}
			int s = serve_tcp((struct sockaddr *)&ss, len, fam == 6);
			if (s < 0) {
				fprintf(stderr, "peer: tcp %d on IPv%d: %s\n", tcp_ports[i], fam,
				        strerror(errno));
				return 1;
			}
			pf[n] = (struct pollfd){.fd = s, .events = POLLIN};
			service[n++] = tcp_ports[i];
		}
		struct sockaddr_storage ss = {0};
		socklen_t len;
		if (fam == 4) {
			struct sockaddr_in a = sin4(a4, P_UDPECHO);
			memcpy(&ss, &a, sizeof a);
			len = sizeof a;
		} else {
			struct sockaddr_in6 a = sin6(a6, P_UDPECHO);
			memcpy(&ss, &a, sizeof a);
			len = sizeof a;
		}
		int u = serve_udp((struct sockaddr *)&ss, len, fam == 6);
		if (u < 0) {
			fprintf(stderr, "peer: udp on IPv%d: %s\n", fam, strerror(errno));
			return 1;
		}
		pf[n] = (struct pollfd){.fd = u, .events = POLLIN};
		service[n++] = P_UDPECHO;
	}
	if (ready) {
		FILE *f = fopen(ready, "w");
		if (f)
			fclose(f);
	}
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		if (poll(pf, n, 1000) <= 0)
			continue;
		for (int i = 0; i < n; i++) {
			if (!(pf[i].revents & POLLIN))
				continue;
			if (service[i] == P_UDPECHO) {
				char buf[65536];
				struct sockaddr_storage from;
				socklen_t fl = sizeof from;
				ssize_t got = recvfrom(pf[i].fd, buf, sizeof buf, MSG_DONTWAIT,
				                       (struct sockaddr *)&from, &fl);
				if (got >= 0)
					sendto(pf[i].fd, buf, got, 0, (struct sockaddr *)&from, fl);
				continue;
			}
			int c = accept(pf[i].fd, NULL, NULL);
			if (c < 0)
				continue;
			if (service[i] == P_CLOSE) {
				close(c);
				continue;
			}
			pid_t p = fork();
			if (p == 0) {
				alarm(30);
				for (int j = 0; j < n; j++)
					close(pf[j].fd);
				handle(service[i], c);
				_exit(0);
			}
			close(c);
		}
	}
}
