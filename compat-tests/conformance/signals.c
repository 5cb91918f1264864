/* signals.c: blocked accept, recv, recvfrom and connect interrupted by signals
 * (signal(7): EINTR without SA_RESTART, restart with it, EINTR with a socket timeout even
 * with SA_RESTART), fatal signals during a blocked call, SIGPIPE, and the dispositions
 * and mask the program starts with. */
#include "probe.h"

static volatile sig_atomic_t handled;
static void on_signal(int sig) { (void)sig; handled++; }

static void handle(int sig, int restart)
{
	struct sigaction sa = {0};
	sa.sa_handler = on_signal;
	sa.sa_flags = restart ? SA_RESTART : 0;
	sigemptyset(&sa.sa_mask);
	sigaction(sig, &sa, NULL);
}

/* A helper that signals us after `first` ms, then after `then` ms more calls `after`. */
static pid_t signal_later(int sig, int first, int then, void (*after)(void *), void *arg)
{
	pid_t parent = getpid();
	pid_t p = fork_helper();
	if (p == 0) {
		msleep(first);
		kill(parent, sig);
		if (after) {
			msleep(then);
			after(arg);
		}
		msleep(4000);
		_exit(0);
	}
	return p;
}

static void ask_callback(void *arg)
{
	int port = *(int *)arg;
	callback(4, port); /* left open until the helper exits */
}

static void write_to(void *arg)
{
	ssize_t w = write(*(int *)arg, "z", 1);
	(void)w;
}

static void echo_to(void *arg)
{
	int s = *(int *)arg;
	struct sockaddr_storage ss;
	socklen_t len = peer_addr(4, P_UDPECHO, &ss);
	sendto(s, "z", 1, 0, (struct sockaddr *)&ss, len);
}

static void accept_all(void *arg)
{
	int l = *(int *)arg;
	fcntl(l, F_SETFL, O_NONBLOCK);
	for (int i = 0; i < 40; i++) { /* 4 s */
		while (accept(l, NULL, NULL) >= 0)
			;
		msleep(100);
	}
}

static void set_rcvtimeo(int s, int sec)
{
	struct timeval t = {sec, 0};
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
}

static void report(const char *name, long r, int e)
{
	out(name, "%s handled=%d", rstr(r, e, 1), (int)handled);
}

static void s_start(void)
{
	out("start.SigIgn", "%s", C.sigign);
	out("start.SigBlk", "%s", C.sigblk);
	struct sigaction sa;
	sigaction(SIGPIPE, NULL, &sa);
	out("start.SIGPIPE", "%s", sa.sa_handler == SIG_IGN ? "ignored" : sa.sa_handler == SIG_DFL ? "default" : "handled");
}

/* accept: plain, SA_RESTART, SA_RESTART with SO_RCVTIMEO */
static void accept_case(const char *name, int restart, int timeo)
{
	int port;
	int l = listener(4, &port);
	if (l < 0)
		return setup_failed(name, "listen");
	if (timeo)
		set_rcvtimeo(l, timeo);
	handle(SIGUSR1, restart);
	signal_later(SIGUSR1, 300, 1200, ask_callback, &port);
	errno = 0;
	long r = accept(l, NULL, NULL);
	report(name, r, errno);
}
static void s_accept_eintr(void) { accept_case("signal.accept.no-restart", 0, 0); }
static void s_accept_restart(void) { accept_case("signal.accept.sa_restart", 1, 0); }
static void s_accept_timeo(void) { accept_case("signal.accept.sa_restart+rcvtimeo", 1, 5); }
static void s_accept4_eintr(void)
{
	int port;
	int l = listener(6, &port);
	if (l < 0)
		return setup_failed("signal.accept4.no-restart.tcp6", "listen");
	handle(SIGUSR2, 0);
	signal_later(SIGUSR2, 300, 0, NULL, NULL);
	errno = 0;
	long r = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	report("signal.accept4.no-restart.tcp6", r, errno);
}

static void s_accept_timeout_expires(void)
{
	int port;
	int l = listener(4, &port);
	if (l < 0)
		return setup_failed("timeout.accept.rcvtimeo", "listen");
	struct timeval t = {0, 300000};
	setsockopt(l, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	errno = 0;
	long r = accept(l, NULL, NULL);
	int e = errno;
	clock_gettime(CLOCK_MONOTONIC, &b);
	long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	out("timeout.accept.rcvtimeo", "%s waited=%s", rstr(r, e, 1),
	    ms < 200 ? "<200ms" : ms < 2000 ? "about-300ms" : ">2s");
}

/* recv on a TCP connection (not trapped: it reads the socketpair under ztrun) */
static void recv_case(const char *name, int restart, int timeo)
{
	int s = dial(4, P_ECHO);
	if (s < 0)
		return setup_failed(name, "connect to echo");
	if (timeo)
		set_rcvtimeo(s, timeo);
	handle(SIGUSR1, restart);
	signal_later(SIGUSR1, 300, 1200, write_to, &s);
	char b[8];
	errno = 0;
	long r = recv(s, b, sizeof b, 0);
	out(name, "%s handled=%d", rstr(r, errno, 0), (int)handled);
}
static void s_recv_eintr(void) { recv_case("signal.recv.no-restart", 0, 0); }
static void s_recv_restart(void) { recv_case("signal.recv.sa_restart", 1, 0); }
static void s_recv_timeo(void) { recv_case("signal.recv.sa_restart+rcvtimeo", 1, 5); }

/* recvfrom with an address on UDP (trapped under ztrun) */
static void recvfrom_case(const char *name, int restart, int timeo)
{
	int s = udp(4);
	struct sockaddr_storage ss;
	socklen_t len = self_addr(4, 0, &ss);
	if (bind(s, (struct sockaddr *)&ss, len) < 0)
		return setup_failed(name, "bind");
	if (timeo)
		set_rcvtimeo(s, timeo);
	handle(SIGUSR1, restart);
	signal_later(SIGUSR1, 300, 1200, echo_to, &s);
	char b[8];
	struct sockaddr_storage from;
	socklen_t fl = sizeof from;
	errno = 0;
	long r = recvfrom(s, b, sizeof b, 0, (struct sockaddr *)&from, &fl);
	out(name, "%s handled=%d", rstr(r, errno, 0), (int)handled);
}
static void s_recvfrom_eintr(void) { recvfrom_case("signal.recvfrom.udp.no-restart", 0, 0); }
static void s_recvfrom_restart(void) { recvfrom_case("signal.recvfrom.udp.sa_restart", 1, 0); }
static void s_recvfrom_timeo(void) { recvfrom_case("signal.recvfrom.udp.sa_restart+rcvtimeo", 1, 5); }

static void s_recvmsg_eintr(void)
{
	int s = udp(6);
	struct sockaddr_storage ss;
	socklen_t len = self_addr(6, 0, &ss);
	if (bind(s, (struct sockaddr *)&ss, len) < 0)
		return setup_failed("signal.recvmsg.udp6.no-restart", "bind");
	handle(SIGUSR1, 0);
	signal_later(SIGUSR1, 300, 0, NULL, NULL);
	char b[8];
	struct iovec iov = {b, sizeof b};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
	errno = 0;
	long r = recvmsg(s, &m, 0);
	out("signal.recvmsg.udp6.no-restart", "%s handled=%d", rstr(r, errno, 0), (int)handled);
}

/* A connect that blocks: to an address nobody answers (net mode), or to a listener whose
 * queue is full (loopback). */
static int blocking_connect_target(struct sockaddr_storage *ss, socklen_t *len, int *keep)
{
	*keep = -1;
	if (!C.loopback) {
		struct sockaddr_in a = sin4(blackhole4(), 7777);
		memset(ss, 0, sizeof *ss);
		memcpy(ss, &a, sizeof a);
		*len = sizeof a;
		return 0;
	}
	int l = tcp(4);
	struct sockaddr_in a = sin4("127.0.0.1", 0);
	if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 0) < 0)
		return -1;
	*len = sizeof *ss;
	getsockname(l, (struct sockaddr *)ss, len);
	for (int i = 0; i < 3; i++) { /* fill the queue */
		int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		connect(c, (struct sockaddr *)ss, *len);
	}
	msleep(100);
	*keep = l;
	return 0;
}

static void connect_case(const char *name, int restart, int sndtimeo)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int keep;
	if (blocking_connect_target(&ss, &len, &keep) < 0)
		return setup_failed(name, "a target that does not answer");
	int s = tcp(4);
	if (sndtimeo) {
		struct timeval t = {sndtimeo, 0};
		setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &t, sizeof t);
	}
	handle(SIGUSR1, restart);
	/* loopback: the helper then empties the queue, so a restarted connect can finish */
	signal_later(SIGUSR1, 300, 1200, keep >= 0 ? accept_all : NULL, &keep);
	errno = 0;
	long r = connect(s, (struct sockaddr *)&ss, len);
	out(name, "%s handled=%d", rstr(r, errno, 0), (int)handled);
}
static void s_connect_eintr(void) { connect_case("signal.connect.no-restart", 0, 0); }
static void s_connect_restart(void) { connect_case("signal.connect.sa_restart", 1, 0); }
static void s_connect_timeo(void) { connect_case("signal.connect.sa_restart+sndtimeo", 1, 5); }

/* SIGCHLD pending (blocked), then SIGTERM (default action) while blocked in accept: the
 * process dies of SIGTERM (see the .exit line). */
static void s_sigterm_after_sigchld(void)
{
	int port;
	int l = listener(4, &port);
	if (l < 0)
		return setup_failed("signal.sigterm-after-sigchld", "listen");
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	if (fork() == 0)
		_exit(0);
	msleep(100);
	sigset_t pending;
	sigpending(&pending);
	out("signal.sigterm-after-sigchld.pending", "sigchld=%d", sigismember(&pending, SIGCHLD));
	signal_later(SIGTERM, 300, 0, NULL, NULL);
	errno = 0;
	long r = accept(l, NULL, NULL);
	out("signal.sigterm-after-sigchld", "survived %s", rstr(r, errno, 1));
}

/* The same with SIGCHLD handled (SA_RESTART) and SIGTERM handled (no restart). */
static void s_sigterm_handled_after_sigchld(void)
{
	int port;
	int l = listener(4, &port);
	if (l < 0)
		return setup_failed("signal.sigterm-handled-after-sigchld", "listen");
	handle(SIGCHLD, 1);
	handle(SIGTERM, 0);
	if (fork() == 0)
		_exit(0);
	msleep(100);
	signal_later(SIGTERM, 300, 0, NULL, NULL);
	errno = 0;
	long r = accept(l, NULL, NULL);
	report("signal.sigterm-handled-after-sigchld", r, errno);
}

/* A fatal signal while blocked in an emulated recvfrom. */
static void s_sigkill_in_recvfrom(void)
{
	int s = udp(4);
	struct sockaddr_storage ss;
	socklen_t len = self_addr(4, 0, &ss);
	bind(s, (struct sockaddr *)&ss, len);
	signal_later(SIGKILL, 300, 0, NULL, NULL);
	char b[8];
	struct sockaddr_storage from;
	socklen_t fl = sizeof from;
	recvfrom(s, b, sizeof b, 0, (struct sockaddr *)&from, &fl);
	out("signal.sigkill-in-recvfrom", "survived");
}

/* Writing to a connection the peer closed, with the start disposition of SIGPIPE. */
static void s_sigpipe(void)
{
	int s = dial(4, P_CLOSE);
	if (s < 0)
		return setup_failed("signal.sigpipe", "connect to close");
	readable(s, 3000);
	char b[4];
	recv(s, b, sizeof b, 0);
	errno = 0;
	long r1 = send(s, "x", 1, 0);
	int e1 = errno;
	msleep(200);
	errno = 0;
	long r2 = send(s, "x", 1, 0);
	out("signal.sigpipe", "first=%s second=%s", rstr(r1, e1, 0), rstr(r2, errno, 0));
}

static void s_sigpipe_ignored(void)
{
	signal(SIGPIPE, SIG_IGN);
	int s = dial(4, P_CLOSE);
	if (s < 0)
		return setup_failed("signal.sigpipe-ignored", "connect to close");
	readable(s, 3000);
	char b[4];
	recv(s, b, sizeof b, 0);
	send(s, "x", 1, 0);
	msleep(200);
	R("signal.sigpipe-ignored", send(s, "x", 1, 0));
}

/* A blocked accept survives a storm of handled SA_RESTART signals and takes the
 * connection. */
static void s_accept_storm(void)
{
	int port;
	int l = listener(4, &port);
	if (l < 0)
		return setup_failed("signal.accept.storm", "listen");
	handle(SIGURG, 1);
	pid_t parent = getpid();
	pid_t p = fork_helper();
	if (p == 0) {
		for (int i = 0; i < 50; i++) {
			kill(parent, SIGURG);
			msleep(10);
		}
		callback(4, port);
		msleep(4000);
		_exit(0);
	}
	errno = 0;
	long r = accept(l, NULL, NULL);
	out("signal.accept.storm", "%s handled>0=%d", rstr(r, errno, 1), handled > 0);
}

static const struct probe_case cases[] = {
	{"sig-start", s_start},
	{"sig-accept-eintr", s_accept_eintr},
	{"sig-accept-restart", s_accept_restart},
	{"sig-accept-timeo", s_accept_timeo},
	{"sig-accept4-eintr", s_accept4_eintr},
	{"sig-accept-timeout", s_accept_timeout_expires},
	{"sig-accept-storm", s_accept_storm},
	{"sig-recv-eintr", s_recv_eintr},
	{"sig-recv-restart", s_recv_restart},
	{"sig-recv-timeo", s_recv_timeo},
	{"sig-recvfrom-eintr", s_recvfrom_eintr},
	{"sig-recvfrom-restart", s_recvfrom_restart},
	{"sig-recvfrom-timeo", s_recvfrom_timeo},
	{"sig-recvmsg-eintr", s_recvmsg_eintr},
	{"sig-connect-eintr", s_connect_eintr},
	{"sig-connect-restart", s_connect_restart},
	{"sig-connect-timeo", s_connect_timeo},
	{"sig-sigterm-sigchld", s_sigterm_after_sigchld},
	{"sig-sigterm-handled", s_sigterm_handled_after_sigchld},
	{"sig-sigkill-recvfrom", s_sigkill_in_recvfrom},
	{"sig-sigpipe", s_sigpipe},
	{"sig-sigpipe-ignored", s_sigpipe_ignored},
};
PROBE_MAIN(cases)
