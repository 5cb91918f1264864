/* calls.c: socket, bind, connect, listen, accept, accept4, getsockname, getpeername,
 * shutdown. */
#include "probe.h"

/* Blocking reads and accepts of these sockets are bounded (probe.h, bounded()). */
#define dial(f, p) bounded(dial(f, p))
#define listener(f, p) bounded(listener(f, p))

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

static void c_socket(void)
{
	static const struct {
		const char *name;
		int dom, type, proto;
	} t[] = {
		{"socket.inet.stream", AF_INET, SOCK_STREAM, 0},
		{"socket.inet.stream.tcp", AF_INET, SOCK_STREAM, IPPROTO_TCP},
		{"socket.inet.stream.udp", AF_INET, SOCK_STREAM, IPPROTO_UDP},
		{"socket.inet.stream.sctp", AF_INET, SOCK_STREAM, 132},
		{"socket.inet.dgram", AF_INET, SOCK_DGRAM, 0},
		{"socket.inet.dgram.udp", AF_INET, SOCK_DGRAM, IPPROTO_UDP},
		{"socket.inet.dgram.tcp", AF_INET, SOCK_DGRAM, IPPROTO_TCP},
		{"socket.inet.dgram.icmp", AF_INET, SOCK_DGRAM, IPPROTO_ICMP},
		{"socket.inet.dgram.udplite", AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE},
		{"socket.inet.raw.0", AF_INET, SOCK_RAW, 0},
		{"socket.inet.raw.icmp", AF_INET, SOCK_RAW, IPPROTO_ICMP},
		{"socket.inet.raw.raw", AF_INET, SOCK_RAW, IPPROTO_RAW},
		{"socket.inet.seqpacket", AF_INET, SOCK_SEQPACKET, 0},
		{"socket.inet.rdm", AF_INET, SOCK_RDM, 0},
		{"socket.inet.type99", AF_INET, 99, 0},
		{"socket.inet.badflag", AF_INET, SOCK_STREAM | 0x1000, 0},
		{"socket.inet.proto-neg", AF_INET, SOCK_STREAM, -1},
		{"socket.inet6.stream", AF_INET6, SOCK_STREAM, 0},
		{"socket.inet6.dgram", AF_INET6, SOCK_DGRAM, 0},
		{"socket.inet6.dgram.icmpv6", AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6},
		{"socket.inet6.raw.0", AF_INET6, SOCK_RAW, 0},
		{"socket.inet6.raw.icmpv6", AF_INET6, SOCK_RAW, IPPROTO_ICMPV6},
		{"socket.inet6.stream.udp", AF_INET6, SOCK_STREAM, IPPROTO_UDP},
		{"socket.inet6.seqpacket", AF_INET6, SOCK_SEQPACKET, 0},
		{"socket.unix.stream", AF_UNIX, SOCK_STREAM, 0},
		{"socket.unix.dgram", AF_UNIX, SOCK_DGRAM, 0},
		{"socket.netlink.route", AF_NETLINK, SOCK_RAW, 0},
		{"socket.netlink.dgram", AF_NETLINK, SOCK_DGRAM, 0},
		{"socket.netlink.proto99", AF_NETLINK, SOCK_RAW, 99},
		{"socket.packet.raw", AF_PACKET, SOCK_RAW, 0},
		{"socket.packet.dgram", AF_PACKET, SOCK_DGRAM, 0},
		{"socket.vsock.stream", AF_VSOCK, SOCK_STREAM, 0},
		{"socket.bluetooth", 31, SOCK_STREAM, 0},
		{"socket.alg", 38, SOCK_SEQPACKET, 0},
		{"socket.ax25", 3, SOCK_DGRAM, 0},
		{"socket.family255", 255, SOCK_STREAM, 0},
		{"socket.family-neg", -1, SOCK_STREAM, 0},
		{"socket.unspec", AF_UNSPEC, SOCK_STREAM, 0},
		{"socket.inet.highbits", (int)(0x100000000LL | AF_INET), SOCK_STREAM, 0},
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
		RFD(t[i].name, socket(t[i].dom, t[i].type, t[i].proto));

	/* flags land on the descriptor */
	int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0)
		return setup_failed("socket.flags", "socket");
	out("socket.flags", "nonblock=%d cloexec=%d", !!(fcntl(s, F_GETFL) & O_NONBLOCK),
	    !!(fcntl(s, F_GETFD) & FD_CLOEXEC));
	close(s);
	s = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	out("socket.flags6", "nonblock=%d cloexec=%d", !!(fcntl(s, F_GETFL) & O_NONBLOCK),
	    !!(fcntl(s, F_GETFD) & FD_CLOEXEC));
	close(s);
}

static void c_names_fresh(void)
{
	for (int fam = 4; fam <= 6; fam += 2)
		for (int t = 0; t < 2; t++) {
			char n[64];
			int s = t ? udp(fam) : tcp(fam);
			struct sockaddr_storage ss;
			socklen_t len = sizeof ss;
			snprintf(n, sizeof n, "getsockname.fresh.%s%d", t ? "udp" : "tcp", fam);
			errno = 0;
			int r = getsockname(s, (struct sockaddr *)&ss, &len);
			out(n, "%s %s", rstr(r, errno, 0), r ? "" : addr_str(&ss, len, -1));
			snprintf(n, sizeof n, "getpeername.fresh.%s%d", t ? "udp" : "tcp", fam);
			len = sizeof ss;
			R(n, getpeername(s, (struct sockaddr *)&ss, &len));
			close(s);
		}
	int s = tcp(4);
	struct sockaddr_storage ss;
	socklen_t len = 4;
	errno = 0;
	int r = getsockname(s, (struct sockaddr *)&ss, &len);
	out("getsockname.short-len", "%s len=%u", rstr(r, errno, 0), (unsigned)len);
	len = 0;
	r = getsockname(s, (struct sockaddr *)&ss, &len);
	out("getsockname.zero-len", "%s len=%u", rstr(r, errno, 0), (unsigned)len);
	len = (socklen_t)-1;
	R("getsockname.neg-len", getsockname(s, (struct sockaddr *)&ss, &len));
	R("getsockname.null-len", getsockname(s, (struct sockaddr *)&ss, NULL));
	len = sizeof ss;
	R("getsockname.null-addr", getsockname(s, NULL, &len));
	len = sizeof ss;
	R("getsockname.bad-addr", getsockname(s, (struct sockaddr *)8, &len));
	R("getsockname.ebadf", getsockname(999, (struct sockaddr *)&ss, &len));
	int fd = open("/dev/null", O_RDONLY);
	R("getsockname.enotsock", getsockname(fd, (struct sockaddr *)&ss, &len));
	R("getpeername.null-len", getpeername(s, (struct sockaddr *)&ss, NULL));
	close(s);
}

static void c_bind(void)
{
	struct sockaddr_storage ss, got;
	socklen_t len, gl;
	int s;
	char n[80];
	for (int fam = 4; fam <= 6; fam += 2) {
		for (int t = 0; t < 2; t++) {
			const char *k = t ? "udp" : "tcp";
			s = t ? udp(fam) : tcp(fam);
			len = self_addr(fam, 0, &ss);
			snprintf(n, sizeof n, "bind.self0.%s%d", k, fam);
			R(n, bind(s, (struct sockaddr *)&ss, len));
			gl = sizeof got;
			getsockname(s, (struct sockaddr *)&got, &gl);
			snprintf(n, sizeof n, "bind.self0.%s%d.name", k, fam);
			out(n, "%s", addr_str(&got, gl, -1));
			snprintf(n, sizeof n, "bind.twice.%s%d", k, fam);
			R(n, bind(s, (struct sockaddr *)&ss, len));
			close(s);

			s = t ? udp(fam) : tcp(fam);
			memset(&ss, 0, sizeof ss);
			ss.ss_family = fam == 6 ? AF_INET6 : AF_INET;
			len = fam == 6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
			snprintf(n, sizeof n, "bind.any.%s%d", k, fam);
			R(n, bind(s, (struct sockaddr *)&ss, len));
			gl = sizeof got;
			getsockname(s, (struct sockaddr *)&got, &gl);
			snprintf(n, sizeof n, "bind.any.%s%d.name", k, fam);
			out(n, "%s", addr_str(&got, gl, -1));
			close(s);

			s = t ? udp(fam) : tcp(fam);
			len = peer_addr(fam, 0, &ss);
			snprintf(n, sizeof n, "bind.peer-addr.%s%d", k, fam);
			if (C.loopback) /* the peer is us: any non-local address will do */
				len = fam == 6 ? (ss = (struct sockaddr_storage){0},
				                  *(struct sockaddr_in6 *)&ss = sin6("2001:db8::1", 0),
				                  sizeof(struct sockaddr_in6))
				               : (ss = (struct sockaddr_storage){0},
				                  *(struct sockaddr_in *)&ss = sin4("192.0.2.1", 0),
				                  sizeof(struct sockaddr_in));
			R(n, bind(s, (struct sockaddr *)&ss, len));
			close(s);

			s = t ? udp(fam) : tcp(fam);
			len = self_addr(fam, 80, &ss);
			snprintf(n, sizeof n, "bind.port80.%s%d", k, fam);
			R(n, bind(s, (struct sockaddr *)&ss, len));
			close(s);

			s = t ? udp(fam) : tcp(fam);
			len = self_addr(fam, 0, &ss);
			snprintf(n, sizeof n, "bind.short-len.%s%d", k, fam);
			R(n, bind(s, (struct sockaddr *)&ss, fam == 6 ? 20 : 8));
			snprintf(n, sizeof n, "bind.zero-len.%s%d", k, fam);
			R(n, bind(s, (struct sockaddr *)&ss, 0));
			snprintf(n, sizeof n, "bind.null.%s%d", k, fam);
			R(n, bind(s, NULL, len));
			snprintf(n, sizeof n, "bind.bad-ptr.%s%d", k, fam);
			R(n, bind(s, (struct sockaddr *)8, len));
			snprintf(n, sizeof n, "bind.huge-len.%s%d", k, fam);
			R(n, bind(s, (struct sockaddr *)&ss, 4096));
			close(s);

			/* the other family's address */
			s = t ? udp(fam) : tcp(fam);
			len = self_addr(fam == 6 ? 4 : 6, 0, &ss);
			snprintf(n, sizeof n, "bind.wrong-family.%s%d", k, fam);
			R(n, bind(s, (struct sockaddr *)&ss, fam == 6 ? sizeof(struct sockaddr_in6) : len));
			close(s);

			s = t ? udp(fam) : tcp(fam);
			memset(&ss, 0, sizeof ss);
			ss.ss_family = AF_UNSPEC;
			snprintf(n, sizeof n, "bind.unspec.%s%d", k, fam);
			R(n, bind(s, (struct sockaddr *)&ss,
			          fam == 6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in)));
			close(s);
		}
	}
	/* in use */
	for (int t = 0; t < 2; t++) {
		const char *k = t ? "udp" : "tcp";
		int a = t ? udp(4) : tcp(4), b = t ? udp(4) : tcp(4);
		len = self_addr(4, 0, &ss);
		if (bind(a, (struct sockaddr *)&ss, len) < 0)
			return setup_failed("bind.inuse", "bind");
		if (!t)
			listen(a, 1);
		gl = sizeof got;
		getsockname(a, (struct sockaddr *)&got, &gl);
		snprintf(n, sizeof n, "bind.inuse.%s", k);
		R(n, bind(b, (struct sockaddr *)&got, gl));
		close(b);
		int one = 1;
		b = t ? udp(4) : tcp(4);
		setsockopt(b, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		snprintf(n, sizeof n, "bind.inuse.reuseaddr-one-side.%s", k);
		R(n, bind(b, (struct sockaddr *)&got, gl));
		close(b);
		close(a);
	}
	/* SO_REUSEPORT: two TCP listeners and two UDP sockets on one port */
	for (int t = 0; t < 2; t++) {
		const char *k = t ? "udp" : "tcp";
		int one = 1;
		int a = t ? udp(4) : tcp(4), b = t ? udp(4) : tcp(4);
		setsockopt(a, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
		setsockopt(b, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
		len = self_addr(4, 0, &ss);
		bind(a, (struct sockaddr *)&ss, len);
		if (!t)
			listen(a, 4);
		gl = sizeof got;
		getsockname(a, (struct sockaddr *)&got, &gl);
		snprintf(n, sizeof n, "bind.reuseport.%s", k);
		R(n, bind(b, (struct sockaddr *)&got, gl));
		if (!t) {
			R("listen.reuseport.second", listen(b, 4));
		}
		close(a);
		close(b);
	}
	/* dual stack: :: with V6ONLY off takes the IPv4 port too */
	{
		int a = tcp(6), b = tcp(4), zero = 0;
		setsockopt(a, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
		struct sockaddr_in6 any6 = {.sin6_family = AF_INET6};
		R("bind.dualstack.v6", bind(a, (struct sockaddr *)&any6, sizeof any6));
		listen(a, 4);
		gl = sizeof got;
		getsockname(a, (struct sockaddr *)&got, &gl);
		struct sockaddr_in any4 = {.sin_family = AF_INET, .sin_port = htons(port_of(&got))};
		R("bind.dualstack.v4-same-port", bind(b, (struct sockaddr *)&any4, sizeof any4));
		close(a);
		close(b);
		a = tcp(6);
		int one = 1;
		setsockopt(a, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
		bind(a, (struct sockaddr *)&any6, sizeof any6);
		listen(a, 4);
		gl = sizeof got;
		getsockname(a, (struct sockaddr *)&got, &gl);
		b = tcp(4);
		any4.sin_port = htons(port_of(&got));
		R("bind.v6only.v4-same-port", bind(b, (struct sockaddr *)&any4, sizeof any4));
		close(a);
		close(b);
		/* a v4-mapped address on an IPv6 socket */
		a = tcp(6);
		char m[80];
		snprintf(m, sizeof m, "::ffff:%s", C.self4);
		struct sockaddr_in6 mapped = sin6(m, 0);
		R("bind.v4mapped.tcp6", bind(a, (struct sockaddr *)&mapped, sizeof mapped));
		close(a);
		a = tcp(6);
		setsockopt(a, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
		R("bind.v4mapped.v6only", bind(a, (struct sockaddr *)&mapped, sizeof mapped));
		close(a);
	}
	R("bind.ebadf", bind(999, (struct sockaddr *)&ss, 16));
	int fd = open("/dev/null", O_RDONLY);
	R("bind.enotsock", bind(fd, (struct sockaddr *)&ss, 16));
}

static void c_listen(void)
{
	for (int fam = 4; fam <= 6; fam += 2) {
		char n[80];
		int s = tcp(fam);
		snprintf(n, sizeof n, "listen.unbound.tcp%d", fam);
		R(n, listen(s, 4));
		struct sockaddr_storage ss;
		socklen_t len = sizeof ss;
		getsockname(s, (struct sockaddr *)&ss, &len);
		snprintf(n, sizeof n, "listen.unbound.tcp%d.name", fam);
		out(n, "%s", addr_str(&ss, len, -1));
		snprintf(n, sizeof n, "listen.again.tcp%d", fam);
		R(n, listen(s, 8));
		close(s);
		s = udp(fam);
		snprintf(n, sizeof n, "listen.udp%d", fam);
		R(n, listen(s, 4));
		len = self_addr(fam, 0, &ss);
		bind(s, (struct sockaddr *)&ss, len);
		snprintf(n, sizeof n, "listen.bound-udp%d", fam);
		R(n, listen(s, 4));
		close(s);
	}
	int s = tcp(4);
	R("listen.backlog-neg", listen(s, -1));
	close(s);
	s = tcp(4);
	R("listen.backlog-huge", listen(s, 1 << 30));
	close(s);
	s = dial(4, P_ECHO);
	if (s < 0)
		return setup_failed("listen.connected", "connect to echo");
	R("listen.connected", listen(s, 4));
	close(s);
	R("listen.ebadf", listen(999, 4));
}

static void c_connect(void)
{
	struct sockaddr_storage ss, got;
	socklen_t len, gl;
	char n[80];
	for (int fam = 4; fam <= 6; fam += 2) {
		int s = tcp(fam);
		len = peer_addr(fam, P_ECHO, &ss);
		snprintf(n, sizeof n, "connect.tcp%d", fam);
		R(n, connect(s, (struct sockaddr *)&ss, len));
		gl = sizeof got;
		errno = 0;
		int r = getpeername(s, (struct sockaddr *)&got, &gl);
		snprintf(n, sizeof n, "connect.tcp%d.peername", fam);
		out(n, "%s %s", rstr(r, errno, 0), r ? "" : addr_str(&got, gl, P_ECHO));
		gl = sizeof got;
		r = getsockname(s, (struct sockaddr *)&got, &gl);
		snprintf(n, sizeof n, "connect.tcp%d.sockname", fam);
		out(n, "%s %s", rstr(r, errno, 0), r ? "" : addr_str(&got, gl, -1));
		snprintf(n, sizeof n, "connect.tcp%d.again", fam);
		R(n, connect(s, (struct sockaddr *)&ss, len));
		int e = -1;
		socklen_t el = sizeof e;
		getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el);
		snprintf(n, sizeof n, "connect.tcp%d.so_error", fam);
		out(n, "val=%s", e ? ename(e) : "0");
		/* data goes through */
		snprintf(n, sizeof n, "connect.tcp%d.echo", fam);
		char buf[8] = "";
		if (write(s, "ping", 4) == 4 && readable(s, 3000))
			out(n, "read=%zd", read(s, buf, sizeof buf));
		else
			out(n, "no-echo");
		close(s);

		s = tcp(fam);
		len = peer_addr(fam, P_REFUSED, &ss);
		snprintf(n, sizeof n, "connect.refused.tcp%d", fam);
		R(n, connect(s, (struct sockaddr *)&ss, len));
		snprintf(n, sizeof n, "connect.refused.tcp%d.again", fam);
		R(n, connect(s, (struct sockaddr *)&ss, len));
		close(s);

		/* non-blocking */
		s = socket(fam == 6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		len = peer_addr(fam, P_ECHO, &ss);
		errno = 0;
		r = connect(s, (struct sockaddr *)&ss, len);
		snprintf(n, sizeof n, "connect.nonblock.tcp%d", fam);
		/* loopback connects may finish at once; both are Linux */
		out(n, "%s", r == 0 || errno == EINPROGRESS ? "ret=0|EINPROGRESS" : rstr(r, errno, 0));
		struct pollfd p = {.fd = s, .events = POLLOUT};
		poll(&p, 1, 3000);
		snprintf(n, sizeof n, "connect.nonblock.tcp%d.poll", fam);
		out(n, "revents=%#x", p.revents);
		e = -1;
		el = sizeof e;
		getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el);
		snprintf(n, sizeof n, "connect.nonblock.tcp%d.so_error", fam);
		out(n, "val=%s", e ? ename(e) : "0");
		snprintf(n, sizeof n, "connect.nonblock.tcp%d.again", fam);
		R(n, connect(s, (struct sockaddr *)&ss, len));
		close(s);

		s = socket(fam == 6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		len = peer_addr(fam, P_REFUSED, &ss);
		connect(s, (struct sockaddr *)&ss, len);
		p = (struct pollfd){.fd = s, .events = POLLOUT};
		poll(&p, 1, 3000);
		e = -1;
		el = sizeof e;
		getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el);
		snprintf(n, sizeof n, "connect.nonblock-refused.tcp%d.so_error", fam);
		out(n, "val=%s", e ? ename(e) : "0");
		snprintf(n, sizeof n, "connect.nonblock-refused.tcp%d.so_error2", fam);
		el = sizeof e;
		getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el);
		out(n, "val=%s", e ? ename(e) : "0");
		close(s);

		/* UDP */
		s = udp(fam);
		len = peer_addr(fam, P_UDPECHO, &ss);
		snprintf(n, sizeof n, "connect.udp%d", fam);
		R(n, connect(s, (struct sockaddr *)&ss, len));
		gl = sizeof got;
		r = getpeername(s, (struct sockaddr *)&got, &gl);
		snprintf(n, sizeof n, "connect.udp%d.peername", fam);
		out(n, "%s %s", rstr(r, errno, 0), r ? "" : addr_str(&got, gl, P_UDPECHO));
		gl = sizeof got;
		r = getsockname(s, (struct sockaddr *)&got, &gl);
		snprintf(n, sizeof n, "connect.udp%d.sockname", fam);
		out(n, "%s %s", rstr(r, errno, 0), r ? "" : addr_str(&got, gl, -1));
		snprintf(n, sizeof n, "connect.udp%d.reconnect", fam);
		R(n, connect(s, (struct sockaddr *)&ss, len));
		struct sockaddr_storage un = {.ss_family = AF_UNSPEC};
		snprintf(n, sizeof n, "connect.udp%d.unspec", fam);
		R(n, connect(s, (struct sockaddr *)&un, sizeof(struct sockaddr)));
		gl = sizeof got;
		snprintf(n, sizeof n, "connect.udp%d.unspec.peername", fam);
		R(n, getpeername(s, (struct sockaddr *)&got, &gl));
		close(s);

		s = udp(fam);
		len = peer_addr(fam, 0, &ss);
		snprintf(n, sizeof n, "connect.udp%d.port0", fam);
		R(n, connect(s, (struct sockaddr *)&ss, len));
		close(s);

		/* argument checks */
		s = tcp(fam);
		len = peer_addr(fam, P_ECHO, &ss);
		snprintf(n, sizeof n, "connect.short-len.tcp%d", fam);
		R(n, connect(s, (struct sockaddr *)&ss, fam == 6 ? 20 : 8));
		snprintf(n, sizeof n, "connect.zero-len.tcp%d", fam);
		R(n, connect(s, (struct sockaddr *)&ss, 0));
		snprintf(n, sizeof n, "connect.null.tcp%d", fam);
		R(n, connect(s, NULL, len));
		snprintf(n, sizeof n, "connect.bad-ptr.tcp%d", fam);
		R(n, connect(s, (struct sockaddr *)8, len));
		snprintf(n, sizeof n, "connect.huge-len.tcp%d", fam);
		R(n, connect(s, (struct sockaddr *)&ss, 4096));
		len = peer_addr(fam == 6 ? 4 : 6, P_ECHO, &ss);
		snprintf(n, sizeof n, "connect.wrong-family.tcp%d", fam);
		R(n, connect(s, (struct sockaddr *)&ss, sizeof(struct sockaddr_in6)));
		close(s);
		s = tcp(fam);
		snprintf(n, sizeof n, "connect.unspec.tcp%d", fam);
		R(n, connect(s, (struct sockaddr *)&un, sizeof(struct sockaddr_in6)));
		close(s);
		s = udp(fam);
		len = peer_addr(fam == 6 ? 4 : 6, P_UDPECHO, &ss);
		snprintf(n, sizeof n, "connect.wrong-family.udp%d", fam);
		R(n, connect(s, (struct sockaddr *)&ss, sizeof(struct sockaddr_in6)));
		close(s);
	}
	/* IPv4 peer through a dual-stack IPv6 socket */
	{
		int s = tcp(6);
		char m[80];
		snprintf(m, sizeof m, "::ffff:%s", C.peer4);
		struct sockaddr_in6 a = sin6(m, P_ECHO);
		R("connect.v4mapped.tcp6", connect(s, (struct sockaddr *)&a, sizeof a));
		struct sockaddr_storage g;
		socklen_t gl2 = sizeof g;
		errno = 0;
		int r = getsockname(s, (struct sockaddr *)&g, &gl2);
		out("connect.v4mapped.tcp6.sockname", "%s %s", rstr(r, errno, 0),
		    r ? "" : addr_str(&g, gl2, -1));
		close(s);
		s = tcp(6);
		int one = 1;
		setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
		R("connect.v4mapped.v6only", connect(s, (struct sockaddr *)&a, sizeof a));
		close(s);
	}
	/* a bound source port is kept */
	{
		int s = tcp(4);
		len = self_addr(4, 0, &ss);
		bind(s, (struct sockaddr *)&ss, len);
		gl = sizeof got;
		getsockname(s, (struct sockaddr *)&got, &gl);
		int port = port_of(&got);
		len = peer_addr(4, P_ECHO, &ss);
		R("connect.after-bind", connect(s, (struct sockaddr *)&ss, len));
		gl = sizeof got;
		getsockname(s, (struct sockaddr *)&got, &gl);
		out("connect.after-bind.sockname", "%s", addr_str(&got, gl, port));
		close(s);
	}
	/* a listening socket */
	{
		int port;
		int l = listener(4, &port);
		if (l < 0)
			return setup_failed("connect.listener", "listen");
		len = peer_addr(4, P_ECHO, &ss);
		R("connect.listener", connect(l, (struct sockaddr *)&ss, len));
		close(l);
	}
	R("connect.ebadf", connect(999, (struct sockaddr *)&ss, 16));
	int fd = open("/dev/null", O_RDONLY);
	R("connect.enotsock", connect(fd, (struct sockaddr *)&ss, 16));
}

static void c_accept(void)
{
	char n[80];
	struct sockaddr_storage ss;
	socklen_t len;
	for (int fam = 4; fam <= 6; fam += 2) {
		int port;
		int l = listener(fam, &port);
		if (l < 0) {
			snprintf(n, sizeof n, "accept.tcp%d", fam);
			return setup_failed(n, "listen");
		}
		int ctl = callback(fam, port);
		if (ctl < 0) {
			snprintf(n, sizeof n, "accept.tcp%d", fam);
			return setup_failed(n, "callback request");
		}
		len = sizeof ss;
		errno = 0;
		int c = accept(l, (struct sockaddr *)&ss, &len);
		snprintf(n, sizeof n, "accept.tcp%d", fam);
		out(n, "%s %s", rstr(c, errno, 1), c < 0 ? "" : addr_str(&ss, len, -1));
		if (c >= 0) {
			char buf[8] = "";
			snprintf(n, sizeof n, "accept.tcp%d.read", fam);
			if (readable(c, 3000))
				out(n, "read=%zd", read(c, buf, sizeof buf));
			else
				out(n, "nothing");
			len = sizeof ss;
			getsockname(c, (struct sockaddr *)&ss, &len);
			snprintf(n, sizeof n, "accept.tcp%d.sockname", fam);
			out(n, "%s", addr_str(&ss, len, port));
			len = sizeof ss;
			getpeername(c, (struct sockaddr *)&ss, &len);
			snprintf(n, sizeof n, "accept.tcp%d.peername", fam);
			out(n, "%s", addr_str(&ss, len, -1));
			int flags = fcntl(c, F_GETFL);
			snprintf(n, sizeof n, "accept.tcp%d.flags", fam);
			out(n, "nonblock=%d cloexec=%d", !!(flags & O_NONBLOCK),
			    !!(fcntl(c, F_GETFD) & FD_CLOEXEC));
			close(c);
		}
		close(ctl);

		/* accept4 flags, NULL address, small address buffer */
		ctl = callback(fam, port);
		errno = 0;
		c = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		snprintf(n, sizeof n, "accept4.flags.tcp%d", fam);
		out(n, "%s nonblock=%d cloexec=%d", rstr(c, errno, 1),
		    c >= 0 && !!(fcntl(c, F_GETFL) & O_NONBLOCK),
		    c >= 0 && !!(fcntl(c, F_GETFD) & FD_CLOEXEC));
		if (c >= 0)
			close(c);
		close(ctl);
		ctl = callback(fam, port);
		len = 4;
		errno = 0;
		c = accept(l, (struct sockaddr *)&ss, &len);
		snprintf(n, sizeof n, "accept.small-len.tcp%d", fam);
		out(n, "%s len=%u", rstr(c, errno, 1), (unsigned)len);
		if (c >= 0)
			close(c);
		close(ctl);

		/* errors on the listener, nothing waiting */
		fcntl(l, F_SETFL, O_NONBLOCK);
		snprintf(n, sizeof n, "accept.nonblock-empty.tcp%d", fam);
		RFD(n, accept(l, NULL, NULL));
		snprintf(n, sizeof n, "accept4.bad-flags.tcp%d", fam);
		RFD(n, accept4(l, NULL, NULL, 0x40));
		fcntl(l, F_SETFL, 0);
		/* Linux checks the address length after taking the connection */
		ctl = callback(fam, port);
		len = (socklen_t)-1;
		snprintf(n, sizeof n, "accept.neg-len.tcp%d", fam);
		RFD(n, accept(l, (struct sockaddr *)&ss, &len));
		close(ctl);
		ctl = callback(fam, port);
		snprintf(n, sizeof n, "accept.null-len.tcp%d", fam);
		RFD(n, accept4(l, (struct sockaddr *)&ss, NULL, SOCK_NONBLOCK));
		close(ctl);
		ctl = callback(fam, port);
		len = sizeof ss;
		snprintf(n, sizeof n, "accept.bad-addr.tcp%d", fam);
		RFD(n, accept(l, (struct sockaddr *)8, &len));
		close(ctl);
		close(l);
	}
	/* accept on what is not a listener */
	int s = tcp(4);
	RFD("accept.unbound-tcp", accept(s, NULL, NULL));
	close(s);
	s = dial(4, P_ECHO);
	RFD("accept.connected-tcp", accept(s, NULL, NULL));
	close(s);
	s = udp(4);
	RFD("accept.udp", accept(s, NULL, NULL));
	len = self_addr(4, 0, &ss);
	bind(s, (struct sockaddr *)&ss, len);
	RFD("accept.bound-udp", accept(s, NULL, NULL));
	RFD("accept4.bound-udp", accept4(s, NULL, NULL, SOCK_CLOEXEC));
	close(s);
	s = udp(6);
	RFD("accept.udp6", accept(s, NULL, NULL));
	close(s);
	RFD("accept.ebadf", accept(999, NULL, NULL));
	int fd = open("/dev/null", O_RDONLY);
	RFD("accept.enotsock", accept(fd, NULL, NULL));
}

/* Wildcard listeners reached from loopback and from the peer: `::` with V6ONLY off
 * takes IPv4 connections too (as v4-mapped addresses), `0.0.0.0` takes both sources. */
static void wildcard_accepts(const char *name, int l, int port)
{
	char n[96];
	static const struct {
		const char *from;
		int fam; /* 4 or 6 */
		int via_peer;
	} src[] = {{"lo4", 4, 0}, {"lo6", 6, 0}, {"peer4", 4, 1}, {"peer6", 6, 1}};
	fcntl(l, F_SETFL, O_NONBLOCK);
	for (size_t i = 0; i < sizeof src / sizeof src[0]; i++) {
		int c = -1, ctl = -1;
		if (src[i].via_peer) {
			ctl = callback(src[i].fam, port);
		} else {
			c = socket(src[i].fam == 6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
			struct sockaddr_storage ss = {0};
			socklen_t len;
			if (src[i].fam == 6) {
				struct sockaddr_in6 a = sin6("::1", port);
				memcpy(&ss, &a, sizeof a);
				len = sizeof a;
			} else {
				struct sockaddr_in a = sin4("127.0.0.1", port);
				memcpy(&ss, &a, sizeof a);
				len = sizeof a;
			}
			connect(c, (struct sockaddr *)&ss, len);
		}
		snprintf(n, sizeof n, "%s.from-%s", name, src[i].from);
		struct sockaddr_storage from;
		socklen_t fl = sizeof from;
		int a = -1;
		for (int t = 0; t < 20 && a < 0; t++) { /* 2 s */
			readable(l, 100);
			fl = sizeof from;
			a = accept(l, (struct sockaddr *)&from, &fl);
		}
		if (a < 0) {
			out(n, "%s", rstr(a, errno, 1));
		} else {
			struct sockaddr_storage me;
			socklen_t ml = sizeof me;
			getsockname(a, (struct sockaddr *)&me, &ml);
			out(n, "ret=fd peer=[%s] local=[%s]", addr_str(&from, fl, -1), addr_str(&me, ml, port));
			close(a);
		}
		if (c >= 0)
			close(c);
		if (ctl >= 0)
			close(ctl);
	}
}

static void c_wildcard(void)
{
	int zero = 0, port;
	struct sockaddr_storage ss;
	socklen_t len;
	int l = tcp(6);
	setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
	struct sockaddr_in6 any6 = {.sin6_family = AF_INET6};
	if (bind(l, (struct sockaddr *)&any6, sizeof any6) < 0 || listen(l, 8) < 0)
		return setup_failed("accept.wildcard6-dual", "listen on ::");
	len = sizeof ss;
	getsockname(l, (struct sockaddr *)&ss, &len);
	port = port_of(&ss);
	wildcard_accepts("accept.wildcard6-dual", l, port);
	close(l);
}

static void c_wildcard_v6only(void)
{
	int one = 1, port;
	struct sockaddr_storage ss;
	socklen_t len;
	struct sockaddr_in6 any6 = {.sin6_family = AF_INET6};
	int l = tcp(6);
	setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(l, (struct sockaddr *)&any6, sizeof any6) < 0 || listen(l, 8) < 0)
		return setup_failed("accept.wildcard6-v6only", "listen on ::");
	len = sizeof ss;
	getsockname(l, (struct sockaddr *)&ss, &len);
	port = port_of(&ss);
	wildcard_accepts("accept.wildcard6-v6only", l, port);
	close(l);
}

static void c_wildcard4(void)
{
	int port;
	struct sockaddr_storage ss;
	socklen_t len;
	int l = tcp(4);
	struct sockaddr_in any4 = {.sin_family = AF_INET};
	if (bind(l, (struct sockaddr *)&any4, sizeof any4) < 0 || listen(l, 8) < 0)
		return setup_failed("accept.wildcard4", "listen on 0.0.0.0");
	len = sizeof ss;
	getsockname(l, (struct sockaddr *)&ss, &len);
	port = port_of(&ss);
	wildcard_accepts("accept.wildcard4", l, port);
	close(l);
}

static void c_shutdown(void)
{
	char n[80];
	for (int fam = 4; fam <= 6; fam += 2) {
		int s = tcp(fam);
		snprintf(n, sizeof n, "shutdown.fresh.tcp%d", fam);
		R(n, shutdown(s, SHUT_RDWR));
		close(s);
		s = udp(fam);
		snprintf(n, sizeof n, "shutdown.fresh.udp%d", fam);
		R(n, shutdown(s, SHUT_RDWR));
		close(s);
		s = dial(fam, P_ECHO);
		if (s < 0) {
			snprintf(n, sizeof n, "shutdown.tcp%d", fam);
			return setup_failed(n, "connect to echo");
		}
		snprintf(n, sizeof n, "shutdown.how3.tcp%d", fam);
		R(n, shutdown(s, 3));
		snprintf(n, sizeof n, "shutdown.howneg.tcp%d", fam);
		R(n, shutdown(s, -1));
		snprintf(n, sizeof n, "shutdown.wr.tcp%d", fam);
		R(n, shutdown(s, SHUT_WR));
		snprintf(n, sizeof n, "shutdown.wr.tcp%d.send", fam);
		R(n, send(s, "x", 1, MSG_NOSIGNAL));
		snprintf(n, sizeof n, "shutdown.wr.tcp%d.read-eof", fam);
		char buf[8];
		out(n, "%s", readable(s, 3000) ? rstr(read(s, buf, sizeof buf), errno, 0) : "nothing");
		snprintf(n, sizeof n, "shutdown.wr.tcp%d.again", fam);
		R(n, shutdown(s, SHUT_WR));
		snprintf(n, sizeof n, "shutdown.rd.tcp%d", fam);
		R(n, shutdown(s, SHUT_RD));
		snprintf(n, sizeof n, "shutdown.rd.tcp%d.recv", fam);
		R(n, recv(s, buf, sizeof buf, MSG_DONTWAIT));
		close(s);

		s = udp(fam);
		struct sockaddr_storage ss;
		socklen_t len = peer_addr(fam, P_UDPECHO, &ss);
		connect(s, (struct sockaddr *)&ss, len);
		snprintf(n, sizeof n, "shutdown.connected.udp%d", fam);
		R(n, shutdown(s, SHUT_RDWR));
		snprintf(n, sizeof n, "shutdown.connected.udp%d.send", fam);
		R(n, send(s, "x", 1, MSG_NOSIGNAL));
		close(s);

		int port;
		int l = listener(fam, &port);
		snprintf(n, sizeof n, "shutdown.listener.tcp%d", fam);
		R(n, shutdown(l, SHUT_RDWR));
		snprintf(n, sizeof n, "shutdown.listener.tcp%d.accept", fam);
		fcntl(l, F_SETFL, O_NONBLOCK);
		RFD(n, accept(l, NULL, NULL));
		close(l);
	}
	R("shutdown.ebadf", shutdown(999, SHUT_RDWR));
	int fd = open("/dev/null", O_RDONLY);
	R("shutdown.enotsock", shutdown(fd, SHUT_RDWR));
}

static const struct probe_case cases[] = {
	{"socket", c_socket},     {"names", c_names_fresh}, {"bind", c_bind},
	{"listen", c_listen},     {"connect", c_connect},   {"accept", c_accept},
	{"shutdown", c_shutdown}, {"wildcard6", c_wildcard},
	{"wildcard6-v6only", c_wildcard_v6only}, {"wildcard4", c_wildcard4},
};
PROBE_MAIN(cases)
