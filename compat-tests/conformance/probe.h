/* probe.h: the shared part of the conformance probes (compat-tests/conformance/).
 *
 * Every probe program includes this file once and ends with PROBE_MAIN(cases). A probe
 * runs each case function in a forked child (so a case cannot disturb the next: fds,
 * signal dispositions, masks), kills it after CASE_TIMEOUT seconds, and prints one line
 * per result:
 *
 *     <case>: <outcome>
 *
 * where the outcome is stable and comparable between a native run and a run under ztrun:
 * symbolic errno names, file descriptors as "fd", addresses classified against the
 * addresses the probe was given (self, peer, loopback, any) and ports as 0, "exp" (the
 * one expected) or "eph". After each case function the runner prints
 * `<function>.exit: ok|exit=N|signal=SIG...|timeout`.
 *
 * A result whose set-up failed (a socket the case needs could not be made, a peer did
 * not answer) is printed as `setup-failed <what> errno=E`; the harness never counts it
 * as "same".
 *
 * Usage: PROBE --self4 A --self6 A6 --peer4 P --peer6 P6 --mode loopback|net
 *        [--only PREFIX]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CASE_TIMEOUT 10

/* The peer's services (peer.c), on the peer addresses. */
#define P_ECHO 7101     /* TCP: echoes until EOF */
#define P_HOLD 7102     /* TCP: accepts and sends nothing until EOF */
#define P_OOB 7103      /* TCP: sends "abc", urgent "!", "def", then holds */
#define P_CALLBACK 7104 /* TCP: reads "PORT ADDR\n", connects to ADDR:PORT, sends "hi" */
#define P_UDPECHO 7105  /* UDP: echoes every datagram */
#define P_CLOSE 7106    /* TCP: accepts and closes at once */
#define P_REFUSED 7109  /* nothing listens here */

struct probe_ctx {
	int loopback;           /* --mode loopback */
	char self4[64], self6[64], peer4[64], peer6[64];
	char sigign[32], sigblk[32]; /* /proc/self/status at start */
};
static struct probe_ctx C;

struct probe_case {
	const char *name;
	void (*fn)(void);
};

/* ---- output ---------------------------------------------------------------- */

static void out(const char *name, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void out(const char *name, const char *fmt, ...)
{
	char buf[1024];
	int n = snprintf(buf, sizeof buf, "%s: ", name);
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof buf - n - 2, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof buf - 2)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	ssize_t w = write(1, buf, n);
	(void)w;
}

static const char *ename(int e)
{
	static char other[32];
	const char *n = strerrorname_np(e);
	if (n)
		return n;
	snprintf(other, sizeof other, "E%d", e);
	return other;
}

/* "ret=R" or "ret=-1 errno=E" (R printed as "fd" when fd is set and R >= 0). */
static const char *rstr(long r, int e, int fd)
{
	static char b[8][96];
	static int i;
	char *s = b[i++ % 8];
	if (r < 0)
		snprintf(s, 96, "ret=%ld errno=%s", r, ename(e));
	else if (fd)
		snprintf(s, 96, "ret=fd");
	else
		snprintf(s, 96, "ret=%ld", r);
	return s;
}

/* Run CALL, print its return value and errno as the result NAME. */
#define R(name, call)                                          \
	do {                                                   \
		errno = 0;                                     \
		long r_ = (long)(call);                        \
		int e_ = errno;                                \
		out(name, "%s", rstr(r_, e_, 0));              \
	} while (0)
/* The same for a call that returns a file descriptor. */
#define RFD(name, call)                                        \
	do {                                                   \
		errno = 0;                                     \
		long r_ = (long)(call);                        \
		int e_ = errno;                                \
		out(name, "%s", rstr(r_, e_, 1));              \
		if (r_ >= 0)                                   \
			close((int)r_);                        \
	} while (0)

static void setup_failed(const char *name, const char *what)
{
	out(name, "setup-failed %s errno=%s", what, ename(errno));
}

/* ---- addresses ----------------------------------------------------------------- */

static struct sockaddr_in sin4(const char *ip, int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

static struct sockaddr_in6 sin6(const char *ip, int port)
{
	struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
	inet_pton(AF_INET6, ip, &a.sin6_addr);
	return a;
}

/* The peer's address (family 4 or 6) at port, and its length. */
static socklen_t peer_addr(int fam, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof *ss);
	if (fam == 6) {
		struct sockaddr_in6 a = sin6(C.peer6, port);
		memcpy(ss, &a, sizeof a);
		return sizeof a;
	}
	struct sockaddr_in a = sin4(C.peer4, port);
	memcpy(ss, &a, sizeof a);
	return sizeof a;
}

static socklen_t self_addr(int fam, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof *ss);
	if (fam == 6) {
		struct sockaddr_in6 a = sin6(C.self6, port);
		memcpy(ss, &a, sizeof a);
		return sizeof a;
	}
	struct sockaddr_in a = sin4(C.self4, port);
	memcpy(ss, &a, sizeof a);
	return sizeof a;
}

static int port_of(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return -1;
}

/* Classify an IP (text) against the addresses we know. */
static const char *ip_class(const char *ip, int fam)
{
	if (!strcmp(ip, fam == 4 ? C.self4 : C.self6))
		return C.loopback ? "lo" : "self";
	if (!strcmp(ip, fam == 4 ? C.peer4 : C.peer6))
		return C.loopback ? "lo" : "peer";
	if (!strcmp(ip, "127.0.0.1") || !strcmp(ip, "::1"))
		return "lo";
	if (!strcmp(ip, "0.0.0.0") || !strcmp(ip, "::"))
		return "any";
	if (!strncmp(ip, "::ffff:", 7))
		return strcmp(ip + 7, C.self4) == 0   ? (C.loopback ? "mapped-lo" : "mapped-self")
		       : strcmp(ip + 7, C.peer4) == 0 ? (C.loopback ? "mapped-lo" : "mapped-peer")
		       : strcmp(ip + 7, "127.0.0.1") == 0 ? "mapped-lo"
		                                          : "mapped-other";
	return "other";
}

/* A returned address as "fam=INET len=16 ip=self port=exp". */
static const char *addr_str(const struct sockaddr_storage *ss, socklen_t len, int expect_port)
{
	static char b[4][160];
	static int i;
	char *s = b[i++ % 4];
	char ip[INET6_ADDRSTRLEN] = "?";
	const char *fam = "?";
	int f = 0;
	if (len == 0) {
		snprintf(s, 160, "len=0");
		return s;
	}
	if (ss->ss_family == AF_INET) {
		fam = "INET";
		f = 4;
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, ip, sizeof ip);
	} else if (ss->ss_family == AF_INET6) {
		fam = "INET6";
		f = 6;
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, ip, sizeof ip);
	} else if (ss->ss_family == AF_UNIX) {
		fam = "UNIX";
	} else if (ss->ss_family == AF_UNSPEC) {
		fam = "UNSPEC";
	}
	int p = port_of(ss);
	const char *pc = p == 0 ? "0" : p == expect_port ? "exp" : p < 0 ? "-" : "eph";
	snprintf(s, 160, "fam=%s len=%u ip=%s port=%s", fam, (unsigned)len,
	         f ? ip_class(ip, f) : "-", pc);
	return s;
}

/* ---- sockets and the peer --------------------------------------------------------- */

static int tcp(int fam) { return socket(fam == 6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0); }
static int udp(int fam) { return socket(fam == 6 ? AF_INET6 : AF_INET, SOCK_DGRAM, 0); }

/* Blocking reads (and accepts) on s give up after 3 s, so that one that never returns
 * costs one result, not the rest of the case. */
static int bounded(int s)
{
	struct timeval t = {3, 0};
	if (s >= 0)
		setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
	return s;
}

/* A TCP connection to the peer's service, or -1 (errno set). */
static int dial(int fam, int port)
{
	int s = tcp(fam);
	if (s < 0)
		return -1;
	struct sockaddr_storage ss;
	socklen_t len = peer_addr(fam, port, &ss);
	if (connect(s, (struct sockaddr *)&ss, len) < 0) {
		int e = errno;
		close(s);
		errno = e;
		return -1;
	}
	return s;
}

/* A listener on our own address (family 4 or 6) with an ephemeral port; *port gets it. */
static int listener(int fam, int *port)
{
	int s = tcp(fam);
	if (s < 0)
		return -1;
	struct sockaddr_storage ss;
	socklen_t len = self_addr(fam, 0, &ss);
	if (bind(s, (struct sockaddr *)&ss, len) < 0 || listen(s, 16) < 0) {
		int e = errno;
		close(s);
		errno = e;
		return -1;
	}
	len = sizeof ss;
	if (getsockname(s, (struct sockaddr *)&ss, &len) < 0) {
		close(s);
		return -1;
	}
	*port = port_of(&ss);
	return s;
}

/* Ask the peer to connect to our address at `port`; returns the control connection (keep
 * it open while the peer's connection is wanted), or -1. */
static int callback(int fam, int port)
{
	int c = dial(fam, P_CALLBACK);
	if (c < 0)
		return -1;
	char line[128];
	int n = snprintf(line, sizeof line, "%d %s\n", port, fam == 6 ? C.self6 : C.self4);
	if (write(c, line, n) != n) {
		close(c);
		return -1;
	}
	return c;
}

/* Wait until fd is readable (or ms pass); 1 when readable. */
static int readable(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, ms) == 1;
}

static void msleep(int ms)
{
	struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&t, &t) < 0 && errno == EINTR)
		;
}

/* Wait for stray echoes (200 ms) and discard every queued datagram (at most 64). */
static void drain_dgrams(int s)
{
	char b[2048];
	msleep(200);
	for (int i = 0; i < 64 && recv(s, b, sizeof b, MSG_DONTWAIT) >= 0; i++)
		;
}

/* A child that dies with us. */
static pid_t fork_helper(void)
{
	pid_t parent = getpid();
	pid_t p = fork();
	if (p == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(0);
		alarm(CASE_TIMEOUT + 2);
	}
	return p;
}

/* An address no host answers on: in net mode a free address of the peer's subnet, in
 * loopback mode none (the caller falls back). */
static const char *blackhole4(void)
{
	static char b[64];
	struct in_addr a;
	inet_pton(AF_INET, C.peer4, &a);
	uint32_t h = ntohl(a.s_addr) ^ 0x5501;
	a.s_addr = htonl(h);
	inet_ntop(AF_INET, &a, b, sizeof b);
	return b;
}

/* ---- the runner --------------------------------------------------------------- */

static const char *signame(int s)
{
	static char b[16];
	const char *n = sigabbrev_np(s);
	if (n) {
		snprintf(b, sizeof b, "SIG%s", n);
		return b;
	}
	snprintf(b, sizeof b, "SIG%d", s);
	return b;
}

static void read_status_masks(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	strcpy(C.sigign, "?");
	strcpy(C.sigblk, "?");
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		if (!strncmp(line, "SigIgn:", 7))
			sscanf(line + 7, "%31s", C.sigign);
		if (!strncmp(line, "SigBlk:", 7))
			sscanf(line + 7, "%31s", C.sigblk);
	}
	fclose(f);
}

static void run_case(const struct probe_case *c)
{
	fflush(stdout);
	pid_t p = fork();
	if (p < 0) {
		out(c->name, "setup-failed fork errno=%s", ename(errno));
		return;
	}
	if (p == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		c->fn();
		fflush(stdout);
		_exit(0);
	}
	char name[128];
	snprintf(name, sizeof name, "%s.exit", c->name);
	int status;
	for (int i = 0; i < CASE_TIMEOUT * 100; i++) {
		pid_t w = waitpid(p, &status, WNOHANG);
		if (w == p) {
			if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
				out(name, "ok");
			else if (WIFEXITED(status))
				out(name, "exit=%d", WEXITSTATUS(status));
			else
				out(name, "signal=%s", signame(WTERMSIG(status)));
			return;
		}
		msleep(10);
	}
	kill(p, SIGKILL);
	waitpid(p, &status, 0);
	out(name, "timeout");
}

static int probe_main(int argc, char **argv, const struct probe_case *cases, size_t n)
{
	read_status_masks();
	const char *only = NULL;
	strcpy(C.self4, "127.0.0.1");
	strcpy(C.self6, "::1");
	strcpy(C.peer4, "127.0.0.1");
	strcpy(C.peer6, "::1");
	C.loopback = 1;
	for (int i = 1; i + 1 < argc; i += 2) {
		char *dst = !strcmp(argv[i], "--self4")   ? C.self4
		            : !strcmp(argv[i], "--self6") ? C.self6
		            : !strcmp(argv[i], "--peer4") ? C.peer4
		            : !strcmp(argv[i], "--peer6") ? C.peer6
		                                          : NULL;
		if (dst)
			snprintf(dst, 64, "%s", argv[i + 1]);
		else if (!strcmp(argv[i], "--mode"))
			C.loopback = strcmp(argv[i + 1], "net") != 0;
		else if (!strcmp(argv[i], "--only"))
			only = argv[i + 1];
		else {
			fprintf(stderr, "probe: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	setvbuf(stdout, NULL, _IONBF, 0);
	for (size_t i = 0; i < n; i++)
		if (!only || !strncmp(cases[i].name, only, strlen(only)))
			run_case(&cases[i]);
	return 0;
}

#define PROBE_MAIN(cases)                                                              \
	int main(int argc, char **argv)                                                \
	{                                                                              \
		return probe_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0])); \
	}
