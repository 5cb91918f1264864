/* sockopt.c: getsockopt and setsockopt at every level, on fresh, connected and listening
 * sockets, with valid and invalid arguments. */
#include "probe.h"

/* Blocking reads and accepts of these sockets are bounded (probe.h, bounded()). */
#define dial(f, p) bounded(dial(f, p))
#define listener(f, p) bounded(listener(f, p))

#ifndef SO_INCOMING_NAPI_ID
#define SO_INCOMING_NAPI_ID 56
#endif
#ifndef IP_LOCAL_PORT_RANGE
#define IP_LOCAL_PORT_RANGE 51
#endif
#ifndef TCP_INQ
#define TCP_INQ 36
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

enum kind { I, L, T, S, B, CRED };

struct opt {
	int level, name;
	const char *text;
	enum kind kind;
	int set; /* the value setsockopt tries for kind I */
};

#define O(l, n, k, v) {l, n, #n, k, v}
static const struct opt OPTS[] = {
	O(SOL_SOCKET, SO_DEBUG, I, 0),
	O(SOL_SOCKET, SO_REUSEADDR, I, 1),
	O(SOL_SOCKET, SO_TYPE, I, 1),
	O(SOL_SOCKET, SO_ERROR, I, 0),
	O(SOL_SOCKET, SO_DONTROUTE, I, 1),
	O(SOL_SOCKET, SO_BROADCAST, I, 1),
	O(SOL_SOCKET, SO_SNDBUF, I, 65536),
	O(SOL_SOCKET, SO_RCVBUF, I, 65536),
	O(SOL_SOCKET, SO_KEEPALIVE, I, 1),
	O(SOL_SOCKET, SO_OOBINLINE, I, 1),
	O(SOL_SOCKET, SO_NO_CHECK, I, 1),
	O(SOL_SOCKET, SO_PRIORITY, I, 3),
	O(SOL_SOCKET, SO_LINGER, L, 0),
	O(SOL_SOCKET, SO_REUSEPORT, I, 1),
	O(SOL_SOCKET, SO_PASSCRED, I, 1),
	O(SOL_SOCKET, SO_PEERCRED, CRED, 0),
	O(SOL_SOCKET, SO_RCVLOWAT, I, 10),
	O(SOL_SOCKET, SO_SNDLOWAT, I, 10),
	O(SOL_SOCKET, SO_RCVTIMEO, T, 0),
	O(SOL_SOCKET, SO_SNDTIMEO, T, 0),
	O(SOL_SOCKET, SO_BINDTODEVICE, S, 0),
	O(SOL_SOCKET, SO_TIMESTAMP, I, 1),
	O(SOL_SOCKET, SO_TIMESTAMPNS, I, 1),
	O(SOL_SOCKET, SO_ACCEPTCONN, I, 1),
	O(SOL_SOCKET, SO_PROTOCOL, I, 1),
	O(SOL_SOCKET, SO_DOMAIN, I, 1),
	O(SOL_SOCKET, SO_MARK, I, 7),
	O(SOL_SOCKET, SO_RXQ_OVFL, I, 1),
	O(SOL_SOCKET, SO_BUSY_POLL, I, 10),
	O(SOL_SOCKET, SO_INCOMING_CPU, I, 0),
	O(SOL_SOCKET, SO_COOKIE, B, 0),
	O(SOL_SOCKET, SO_ZEROCOPY, I, 1),
	O(SOL_SOCKET, SO_PEEK_OFF, I, 0),
	O(SOL_SOCKET, SO_SNDBUFFORCE, I, 65536),
	O(SOL_SOCKET, SO_PASSSEC, I, 1),
	O(SOL_SOCKET, SO_INCOMING_NAPI_ID, I, 0),
	O(IPPROTO_IP, IP_TOS, I, 0x10),
	O(IPPROTO_IP, IP_TTL, I, 33),
	O(IPPROTO_IP, IP_HDRINCL, I, 1),
	O(IPPROTO_IP, IP_OPTIONS, B, 0),
	O(IPPROTO_IP, IP_RECVOPTS, I, 1),
	O(IPPROTO_IP, IP_PKTINFO, I, 1),
	O(IPPROTO_IP, IP_RECVTTL, I, 1),
	O(IPPROTO_IP, IP_RECVTOS, I, 1),
	O(IPPROTO_IP, IP_MTU_DISCOVER, I, 0),
	O(IPPROTO_IP, IP_MTU, I, 1000),
	O(IPPROTO_IP, IP_RECVERR, I, 1),
	O(IPPROTO_IP, IP_MULTICAST_TTL, I, 5),
	O(IPPROTO_IP, IP_MULTICAST_LOOP, I, 0),
	O(IPPROTO_IP, IP_FREEBIND, I, 1),
	O(IPPROTO_IP, IP_TRANSPARENT, I, 1),
	O(IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, I, 1),
	O(IPPROTO_IP, IP_MINTTL, I, 2),
	O(IPPROTO_IP, IP_NODEFRAG, I, 1),
	O(IPPROTO_IP, IP_RECVORIGDSTADDR, I, 1),
	O(IPPROTO_IP, IP_LOCAL_PORT_RANGE, I, 0),
	O(IPPROTO_IPV6, IPV6_V6ONLY, I, 1),
	O(IPPROTO_IPV6, IPV6_UNICAST_HOPS, I, 33),
	O(IPPROTO_IPV6, IPV6_MULTICAST_HOPS, I, 5),
	O(IPPROTO_IPV6, IPV6_MULTICAST_LOOP, I, 0),
	O(IPPROTO_IPV6, IPV6_RECVPKTINFO, I, 1),
	O(IPPROTO_IPV6, IPV6_RECVHOPLIMIT, I, 1),
	O(IPPROTO_IPV6, IPV6_TCLASS, I, 0x10),
	O(IPPROTO_IPV6, IPV6_RECVTCLASS, I, 1),
	O(IPPROTO_IPV6, IPV6_MTU_DISCOVER, I, 0),
	O(IPPROTO_IPV6, IPV6_MTU, I, 1400),
	O(IPPROTO_IPV6, IPV6_RECVERR, I, 1),
	O(IPPROTO_IPV6, IPV6_DONTFRAG, I, 1),
	O(IPPROTO_IPV6, IPV6_AUTOFLOWLABEL, I, 0),
	O(IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, I, 1),
	O(IPPROTO_TCP, TCP_NODELAY, I, 1),
	O(IPPROTO_TCP, TCP_MAXSEG, I, 1000),
	O(IPPROTO_TCP, TCP_CORK, I, 1),
	O(IPPROTO_TCP, TCP_KEEPIDLE, I, 30),
	O(IPPROTO_TCP, TCP_KEEPINTVL, I, 5),
	O(IPPROTO_TCP, TCP_KEEPCNT, I, 3),
	O(IPPROTO_TCP, TCP_SYNCNT, I, 2),
	O(IPPROTO_TCP, TCP_LINGER2, I, 10),
	O(IPPROTO_TCP, TCP_DEFER_ACCEPT, I, 5),
	O(IPPROTO_TCP, TCP_WINDOW_CLAMP, I, 20000),
	O(IPPROTO_TCP, TCP_INFO, B, 0),
	O(IPPROTO_TCP, TCP_QUICKACK, I, 1),
	O(IPPROTO_TCP, TCP_CONGESTION, S, 0),
	O(IPPROTO_TCP, TCP_USER_TIMEOUT, I, 5000),
	O(IPPROTO_TCP, TCP_FASTOPEN, I, 5),
	O(IPPROTO_TCP, TCP_NOTSENT_LOWAT, I, 4096),
	O(IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, I, 1),
	O(IPPROTO_TCP, TCP_FASTOPEN_CONNECT, I, 1),
	O(IPPROTO_TCP, TCP_INQ, I, 1),
	O(IPPROTO_UDP, UDP_CORK, I, 1),
	O(IPPROTO_UDP, UDP_ENCAP, I, 0),
	O(IPPROTO_UDP, UDP_NO_CHECK6_TX, I, 1),
	O(IPPROTO_UDP, UDP_NO_CHECK6_RX, I, 1),
	O(IPPROTO_UDP, UDP_SEGMENT, I, 1000),
	O(IPPROTO_UDP, UDP_GRO, I, 1),
};
#define NOPTS (sizeof OPTS / sizeof OPTS[0])

/* The value of a successful getsockopt, made comparable. */
static const char *value(const struct opt *o, const unsigned char *buf, socklen_t len)
{
	static char s[200];
	int v = len >= sizeof(int) ? *(const int *)buf : len > 0 ? buf[0] : 0;
	switch (o->kind) {
	case I:
		if (o->level == SOL_SOCKET && o->name == SO_ERROR)
			snprintf(s, sizeof s, "len=%u val=%s", (unsigned)len, v ? ename(v) : "0");
		else if (o->level == SOL_SOCKET && (o->name == SO_INCOMING_CPU))
			snprintf(s, sizeof s, "len=%u val=%s", (unsigned)len, v < 0 ? "-1" : "cpu");
		else
			snprintf(s, sizeof s, "len=%u val=%d", (unsigned)len, v);
		break;
	case L: {
		const struct linger *l = (const void *)buf;
		snprintf(s, sizeof s, "len=%u onoff=%d linger=%d", (unsigned)len, l->l_onoff,
		         l->l_linger);
		break;
	}
	case T: {
		const struct timeval *t = (const void *)buf;
		snprintf(s, sizeof s, "len=%u sec=%ld usec=%ld", (unsigned)len, (long)t->tv_sec,
		         (long)t->tv_usec);
		break;
	}
	case S:
		snprintf(s, sizeof s, "len=%u str=%.*s", (unsigned)len, (int)len, (const char *)buf);
		break;
	case CRED: {
		const struct ucred *c = (const void *)buf;
		snprintf(s, sizeof s, "len=%u pid=%s uid=%d gid=%d", (unsigned)len,
		         c->pid == 0 ? "0" : c->pid == getpid() ? "self" : "other", (int)c->uid,
		         (int)c->gid);
		break;
	}
	case B:
		if (o->level == IPPROTO_TCP && o->name == TCP_INFO)
			snprintf(s, sizeof s, "len=%s state=%d",
			         len >= sizeof(struct tcp_info) ? "full" : "short",
			         ((const struct tcp_info *)buf)->tcpi_state);
		else
			snprintf(s, sizeof s, "len=%u", (unsigned)len);
		break;
	}
	return s;
}

static void get(const char *prefix, int s, const struct opt *o)
{
	unsigned char buf[512];
	memset(buf, 0, sizeof buf);
	socklen_t len = o->kind == I ? sizeof(int)
	                : o->kind == L ? sizeof(struct linger)
	                : o->kind == T ? sizeof(struct timeval)
	                : o->kind == CRED ? sizeof(struct ucred)
	                : o->kind == S ? 64
	                               : sizeof buf;
	char n[128];
	snprintf(n, sizeof n, "%s.get.%s", prefix, o->text);
	errno = 0;
	int r = getsockopt(s, o->level, o->name, buf, &len);
	if (r < 0)
		out(n, "%s", rstr(r, errno, 0));
	else
		out(n, "ret=0 %s", value(o, buf, len));
}

static void set_then_get(const char *prefix, int s, const struct opt *o)
{
	char n[128];
	snprintf(n, sizeof n, "%s.set.%s", prefix, o->text);
	int r;
	errno = 0;
	if (o->kind == I) {
		r = setsockopt(s, o->level, o->name, &o->set, sizeof o->set);
	} else if (o->kind == L) {
		struct linger l = {1, 5};
		r = setsockopt(s, o->level, o->name, &l, sizeof l);
	} else if (o->kind == T) {
		struct timeval t = {2, 500000};
		r = setsockopt(s, o->level, o->name, &t, sizeof t);
	} else if (o->kind == S) {
		const char *v = o->level == SOL_SOCKET ? "lo" : "reno";
		r = setsockopt(s, o->level, o->name, v, strlen(v));
	} else {
		return;
	}
	out(n, "%s", rstr(r, errno, 0));
	snprintf(n, sizeof n, "%s.after-set", prefix);
	get(n, s, o);
}

static int make(const char *k)
{
	int fam = strchr(k, '6') ? 6 : 4;
	return strncmp(k, "udp", 3) == 0 ? udp(fam) : tcp(fam);
}

static void sweep_fresh(const char *k, int with_set)
{
	char p[64];
	for (size_t i = 0; i < NOPTS; i++) {
		int s = make(k);
		if (s < 0)
			return setup_failed(k, "socket");
		snprintf(p, sizeof p, "opt.fresh.%s", k);
		if (with_set)
			set_then_get(p, s, &OPTS[i]);
		else
			get(p, s, &OPTS[i]);
		close(s);
	}
}

static void o_get_tcp4(void) { sweep_fresh("tcp4", 0); }
static void o_get_tcp6(void) { sweep_fresh("tcp6", 0); }
static void o_get_udp4(void) { sweep_fresh("udp4", 0); }
static void o_get_udp6(void) { sweep_fresh("udp6", 0); }
static void o_set_tcp4(void) { sweep_fresh("tcp4", 1); }
static void o_set_tcp6(void) { sweep_fresh("tcp6", 1); }
static void o_set_udp4(void) { sweep_fresh("udp4", 1); }
static void o_set_udp6(void) { sweep_fresh("udp6", 1); }

/* Options that depend on the socket's state, on connected and listening sockets. */
static const int STATEFUL[][2] = {
	{SOL_SOCKET, SO_ERROR},     {SOL_SOCKET, SO_ACCEPTCONN}, {SOL_SOCKET, SO_PEERCRED},
	{SOL_SOCKET, SO_TYPE},      {SOL_SOCKET, SO_LINGER},     {SOL_SOCKET, SO_KEEPALIVE},
	{IPPROTO_IP, IP_MTU},       {IPPROTO_IP, IP_TTL},        {IPPROTO_IP, IP_TOS},
	{IPPROTO_IPV6, IPV6_MTU},   {IPPROTO_IPV6, IPV6_V6ONLY}, {IPPROTO_TCP, TCP_INFO},
	{IPPROTO_TCP, TCP_NODELAY}, {IPPROTO_TCP, TCP_KEEPIDLE}, {IPPROTO_TCP, TCP_CONGESTION},
	{IPPROTO_TCP, TCP_MAXSEG},  {IPPROTO_TCP, TCP_INQ},
};

static const struct opt *find(int level, int name)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (OPTS[i].level == level && OPTS[i].name == name)
			return &OPTS[i];
	return NULL;
}

static void stateful(const char *prefix, int s)
{
	for (size_t i = 0; i < sizeof STATEFUL / sizeof STATEFUL[0]; i++) {
		const struct opt *o = find(STATEFUL[i][0], STATEFUL[i][1]);
		if (o && o->level == IPPROTO_TCP && o->name == TCP_MAXSEG && !C.loopback) {
			/* the MSS follows the link's MTU: only say whether it is the default (536,
			 * unconnected) or a connection's */
			int v = 0;
			socklen_t len = sizeof v;
			char n[128];
			snprintf(n, sizeof n, "%s.get.TCP_MAXSEG", prefix);
			errno = 0;
			int r = getsockopt(s, IPPROTO_TCP, TCP_MAXSEG, &v, &len);
			out(n, "%s%s", rstr(r, errno, 0), r == 0 ? (v > 536 ? " val>536" : v == 536 ? " val=536" : " val<536") : "");
			continue;
		}
		if (o && ((o->level == IPPROTO_IP && o->name == IP_MTU) ||
		          (o->level == IPPROTO_IPV6 && o->name == IPV6_MTU)) && !C.loopback) {
			int v = 0;
			socklen_t len = sizeof v;
			char n[128];
			snprintf(n, sizeof n, "%s.get.%s", prefix, o->text);
			errno = 0;
			int r = getsockopt(s, o->level, o->name, &v, &len);
			out(n, "%s%s", rstr(r, errno, 0), r == 0 ? (v >= 1280 ? " val>=1280" : " val<1280") : "");
			continue;
		}
		if (o)
			get(prefix, s, o);
	}
}

static void o_connected(void)
{
	for (int fam = 4; fam <= 6; fam += 2) {
		char p[64];
		int s = dial(fam, P_ECHO);
		snprintf(p, sizeof p, "opt.connected.tcp%d", fam);
		if (s < 0)
			return setup_failed(p, "connect to echo");
		stateful(p, s);
		close(s);
		s = udp(fam);
		struct sockaddr_storage ss;
		socklen_t len = peer_addr(fam, P_UDPECHO, &ss);
		snprintf(p, sizeof p, "opt.connected.udp%d", fam);
		if (connect(s, (struct sockaddr *)&ss, len) < 0)
			return setup_failed(p, "connect udp");
		stateful(p, s);
		close(s);
		int port;
		s = listener(fam, &port);
		snprintf(p, sizeof p, "opt.listening.tcp%d", fam);
		if (s < 0)
			return setup_failed(p, "listen");
		stateful(p, s);
		close(s);
	}
}

/* Argument checks: the same option with bad lengths and pointers. */
struct argcase {
	const char *name;
	const char *sock;
	int level, opt;
};
static const struct argcase ARGS[] = {
	{"so_reuseaddr", "tcp4", SOL_SOCKET, SO_REUSEADDR},
	{"so_linger", "tcp4", SOL_SOCKET, SO_LINGER},
	{"so_rcvtimeo", "tcp4", SOL_SOCKET, SO_RCVTIMEO},
	{"so_sndtimeo", "udp4", SOL_SOCKET, SO_SNDTIMEO},
	{"so_keepalive", "udp4", SOL_SOCKET, SO_KEEPALIVE},
	{"so_error", "tcp4", SOL_SOCKET, SO_ERROR},
	{"so_type", "udp4", SOL_SOCKET, SO_TYPE},
	{"ip_tos", "tcp4", IPPROTO_IP, IP_TOS},
	{"ip_ttl", "udp4", IPPROTO_IP, IP_TTL},
	{"ipv6_v6only", "tcp6", IPPROTO_IPV6, IPV6_V6ONLY},
	{"tcp_nodelay", "tcp4", IPPROTO_TCP, TCP_NODELAY},
	{"tcp_congestion", "tcp4", IPPROTO_TCP, TCP_CONGESTION},
	{"tcp_info", "tcp4", IPPROTO_TCP, TCP_INFO},
	{"udp_cork", "udp4", IPPROTO_UDP, UDP_CORK},
	{"udp-opt-on-tcp", "tcp4", IPPROTO_UDP, UDP_CORK},
	{"tcp-opt-on-udp", "udp4", IPPROTO_TCP, TCP_NODELAY},
	{"ipv6-opt-on-inet", "tcp4", IPPROTO_IPV6, IPV6_V6ONLY},
	{"ip-opt-on-inet6", "tcp6", IPPROTO_IP, IP_TOS},
	{"unknown.sol_socket", "tcp4", SOL_SOCKET, 9999},
	{"unknown.ip", "tcp4", IPPROTO_IP, 9999},
	{"unknown.ipv6", "tcp6", IPPROTO_IPV6, 9999},
	{"unknown.tcp", "tcp4", IPPROTO_TCP, 9999},
	{"unknown.udp", "udp4", IPPROTO_UDP, 9999},
	{"minus1.sol_socket", "tcp4", SOL_SOCKET, -1},
	{"minus1.ip", "udp4", IPPROTO_IP, -1},
	{"minus1.tcp", "tcp4", IPPROTO_TCP, -1},
	{"level500", "tcp4", 500, 1},
	{"level500.udp", "udp4", 500, 1},
	{"level-minus1", "tcp4", -1, 1},
};

static void args_one(const struct argcase *a)
{
	char n[128];
	int s = make(a->sock);
	if (s < 0)
		return setup_failed(a->name, "socket");
	unsigned char buf[1024];
	int one = 1;
	socklen_t len;
	int r;
#define G(suffix, optval, optlenp)                                                      \
	do {                                                                            \
		snprintf(n, sizeof n, "optarg.%s.get.%s", a->name, suffix);             \
		memset(buf, 0, sizeof buf);                                             \
		errno = 0;                                                              \
		r = getsockopt(s, a->level, a->opt, optval, optlenp);                   \
		out(n, "%s len=%u", rstr(r, errno, 0), (unsigned)len);                  \
	} while (0)
	len = sizeof(int);
	G("int", buf, &len);
	len = 0;
	G("len0", buf, &len);
	len = 2;
	G("len2", buf, &len);
	len = 1000;
	G("len1000", buf, &len);
	len = (socklen_t)-1;
	G("len-1", buf, &len);
	len = sizeof(int);
	G("null-optval", NULL, &len);
	G("null-optlen", buf, NULL);
	len = sizeof(int);
	G("bad-optval", (void *)8, &len);
	G("bad-optlen", buf, (socklen_t *)8);
#undef G
#define S(suffix, optval, optlen)                                                       \
	do {                                                                            \
		snprintf(n, sizeof n, "optarg.%s.set.%s", a->name, suffix);             \
		errno = 0;                                                              \
		r = setsockopt(s, a->level, a->opt, optval, optlen);                    \
		out(n, "%s", rstr(r, errno, 0));                                        \
	} while (0)
	/* a value each option accepts: an int, or for the structured ones zeros */
	memset(buf, 0, sizeof buf);
	memcpy(buf, &one, sizeof one);
	if (a->opt == TCP_CONGESTION && a->level == IPPROTO_TCP)
		strcpy((char *)buf, "reno");
	S("int", buf, a->opt == TCP_CONGESTION && a->level == IPPROTO_TCP ? 4 : (socklen_t)sizeof(int));
	S("len0", buf, 0);
	S("len2", buf, 2);
	S("len1000", buf, 1000);
	S("len-1", buf, (socklen_t)-1);
	S("null-optval", NULL, sizeof(int));
	S("bad-optval", (void *)8, sizeof(int));
#undef S
	close(s);
}

static void o_args(void)
{
	for (size_t i = 0; i < sizeof ARGS / sizeof ARGS[0]; i++)
		args_one(&ARGS[i]);
	int fd = open("/dev/null", O_RDONLY);
	int v = 1;
	socklen_t len = sizeof v;
	R("optarg.enotsock.get", getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len));
	R("optarg.enotsock.set", setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, sizeof v));
	R("optarg.ebadf.get", getsockopt(999, SOL_SOCKET, SO_TYPE, &v, &len));
	R("optarg.ebadf.set", setsockopt(999, SOL_SOCKET, SO_REUSEADDR, &v, sizeof v));
	close(fd);
	/* timeouts: the microseconds must be within a second, the seconds may be anything */
	static const struct {
		const char *name;
		long sec, usec;
	} TV[] = {{"zero", 0, 0},       {"usec-max", 1, 999999}, {"usec-1e6", 1, 1000000},
		  {"usec-neg", 1, -1}, {"sec-neg", -5, 0},      {"sec-huge", 1L << 40, 0}};
	int s = tcp(4);
	for (size_t i = 0; i < sizeof TV / sizeof TV[0]; i++) {
		struct timeval t = {TV[i].sec, TV[i].usec};
		char n[96];
		snprintf(n, sizeof n, "optarg.timeval.%s.rcv", TV[i].name);
		R(n, setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t));
		snprintf(n, sizeof n, "optarg.timeval.%s.snd", TV[i].name);
		R(n, setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &t, sizeof t));
		struct timeval g = {-1, -1};
		len = sizeof g;
		getsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &g, &len);
		snprintf(n, sizeof n, "optarg.timeval.%s.snd.read", TV[i].name);
		out(n, "sec=%ld usec=%ld len=%u", (long)g.tv_sec, (long)g.tv_usec, (unsigned)len);
	}
	close(s);
}

/* An option set before connect or listen is still there after. */
static void o_inherit(void)
{
	int one = 1, v = 0;
	socklen_t len;
	int port;
	int l = tcp(4);
	setsockopt(l, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	setsockopt(l, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
	struct sockaddr_storage ss;
	len = self_addr(4, 0, &ss);
	if (bind(l, (struct sockaddr *)&ss, len) < 0 || listen(l, 4) < 0)
		return setup_failed("opt.inherit", "listen");
	len = sizeof ss;
	getsockname(l, (struct sockaddr *)&ss, &len);
	port = port_of(&ss);
	len = sizeof v;
	v = 0;
	R("opt.inherit.listener.nodelay", getsockopt(l, IPPROTO_TCP, TCP_NODELAY, &v, &len));
	out("opt.inherit.listener.nodelay.val", "val=%d", v);
	int ctl = callback(4, port);
	int c = accept(l, NULL, NULL);
	if (c < 0)
		return setup_failed("opt.inherit.accepted", "accept");
	len = sizeof v;
	v = -1;
	getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, &len);
	out("opt.inherit.accepted.nodelay", "val=%d", v);
	v = -1;
	len = sizeof v;
	getsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &v, &len);
	out("opt.inherit.accepted.keepalive", "val=%d", v);
	close(c);
	close(ctl);
	close(l);

	int s = tcp(4);
	struct timeval t = {3, 0};
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	int ka = 45;
	setsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &ka, sizeof ka);
	len = peer_addr(4, P_ECHO, &ss);
	if (connect(s, (struct sockaddr *)&ss, len) < 0)
		return setup_failed("opt.inherit.connected", "connect");
	struct timeval g = {0, 0};
	len = sizeof g;
	getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &g, &len);
	out("opt.inherit.connected.rcvtimeo", "sec=%ld", (long)g.tv_sec);
	v = -1;
	len = sizeof v;
	errno = 0;
	int r = getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, &len);
	out("opt.inherit.connected.nodelay", "%s val=%d", rstr(r, errno, 0), v);
	v = -1;
	len = sizeof v;
	errno = 0;
	r = getsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &v, &len);
	out("opt.inherit.connected.keepidle", "%s val=%d", rstr(r, errno, 0), v);
	close(s);
}

static const struct probe_case cases[] = {
	{"opt-get-tcp4", o_get_tcp4}, {"opt-get-tcp6", o_get_tcp6},
	{"opt-get-udp4", o_get_udp4}, {"opt-get-udp6", o_get_udp6},
	{"opt-set-tcp4", o_set_tcp4}, {"opt-set-tcp6", o_set_tcp6},
	{"opt-set-udp4", o_set_udp4}, {"opt-set-udp6", o_set_udp6},
	{"opt-state", o_connected},   {"opt-args", o_args},
	{"opt-inherit", o_inherit},
};
PROBE_MAIN(cases)
