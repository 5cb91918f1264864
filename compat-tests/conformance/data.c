/* data.c: sendto, recvfrom, sendmsg, recvmsg, sendmmsg, recvmmsg on UDP and TCP. */
#include "probe.h"

/* The family the case runs in (each case function runs once per family). */
static int FAM = 4;

#define udp(f) bounded(udp(f))
#define dial(f, p) bounded(dial(f, p))

/* A datagram round trip through the peer's UDP echo, then what recvfrom says. */
static void d_udp(void)
{
	char n[96], buf[256];
	struct sockaddr_storage ss, from;
	socklen_t len, fl;
	{
		int fam = FAM;
		int s = udp(fam);
		len = peer_addr(fam, P_UDPECHO, &ss);
		snprintf(n, sizeof n, "sendto.udp%d", fam);
		R(n, sendto(s, "hello", 5, 0, (struct sockaddr *)&ss, len));
		snprintf(n, sizeof n, "sendto.udp%d.sockname", fam);
		fl = sizeof from;
		getsockname(s, (struct sockaddr *)&from, &fl);
		out(n, "%s", addr_str(&from, fl, -1));
		readable(s, 3000);
		int v = -1;
		snprintf(n, sizeof n, "fionread.udp%d", fam);
		errno = 0;
		int r = ioctl(s, FIONREAD, &v);
		out(n, "%s val=%d", rstr(r, errno, 0), v);
		fl = sizeof from;
		errno = 0;
		r = recvfrom(s, buf, sizeof buf, MSG_PEEK, (struct sockaddr *)&from, &fl);
		snprintf(n, sizeof n, "recvfrom.peek.udp%d", fam);
		out(n, "%s %s", rstr(r, errno, 0), r < 0 ? "" : addr_str(&from, fl, P_UDPECHO));
		fl = 4;
		errno = 0;
		r = recvfrom(s, buf, 2, MSG_PEEK | MSG_TRUNC, (struct sockaddr *)&from, &fl);
		snprintf(n, sizeof n, "recvfrom.trunc-small-addr.udp%d", fam);
		out(n, "%s len=%u", rstr(r, errno, 0), (unsigned)fl);
		fl = sizeof from;
		errno = 0;
		r = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
		snprintf(n, sizeof n, "recvfrom.udp%d", fam);
		out(n, "%s %s data=%.*s", rstr(r, errno, 0), r < 0 ? "" : addr_str(&from, fl, P_UDPECHO),
		    r > 0 ? r : 0, buf);
		fl = sizeof from;
		snprintf(n, sizeof n, "recvfrom.empty-dontwait.udp%d", fam);
		R(n, recvfrom(s, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl));
		fl = (socklen_t)-1;
		snprintf(n, sizeof n, "recvfrom.neg-len.udp%d", fam);
		R(n, recvfrom(s, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl));

		/* a datagram bigger than the buffer: MSG_TRUNC says its real size */
		sendto(s, "0123456789", 10, 0, (struct sockaddr *)&ss, len);
		readable(s, 3000);
		fl = sizeof from;
		snprintf(n, sizeof n, "recvfrom.msg_trunc.udp%d", fam);
		R(n, recvfrom(s, buf, 4, MSG_TRUNC, (struct sockaddr *)&from, &fl));
		sendto(s, "0123456789", 10, 0, (struct sockaddr *)&ss, len);
		readable(s, 3000);
		fl = sizeof from;
		snprintf(n, sizeof n, "recvfrom.short-buf.udp%d", fam);
		R(n, recvfrom(s, buf, 4, 0, (struct sockaddr *)&from, &fl));
		snprintf(n, sizeof n, "recvfrom.short-buf.udp%d.rest", fam);
		R(n, recvfrom(s, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl));

		/* argument checks on sendto */
		snprintf(n, sizeof n, "sendto.short-len.udp%d", fam);
		R(n, sendto(s, "x", 1, 0, (struct sockaddr *)&ss, fam == 6 ? 20 : 8));
		snprintf(n, sizeof n, "sendto.huge-len.udp%d", fam);
		R(n, sendto(s, "x", 1, 0, (struct sockaddr *)&ss, 4096));
		snprintf(n, sizeof n, "sendto.bad-addr.udp%d", fam);
		R(n, sendto(s, "x", 1, 0, (struct sockaddr *)8, len));
		snprintf(n, sizeof n, "sendto.bad-buf.udp%d", fam);
		R(n, sendto(s, (void *)8, 1, 0, (struct sockaddr *)&ss, len));
		snprintf(n, sizeof n, "sendto.oob.udp%d", fam);
		R(n, sendto(s, "x", 1, MSG_OOB, (struct sockaddr *)&ss, len));
		drain_dgrams(s);
		snprintf(n, sizeof n, "sendto.zero-len.udp%d", fam);
		R(n, sendto(s, "", 0, 0, (struct sockaddr *)&ss, len));
		readable(s, 3000);
		fl = sizeof from;
		snprintf(n, sizeof n, "recvfrom.zero-len-datagram.udp%d", fam);
		R(n, recvfrom(s, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl));
		struct sockaddr_storage other;
		socklen_t ol = peer_addr(fam == 6 ? 4 : 6, P_UDPECHO, &other);
		snprintf(n, sizeof n, "sendto.wrong-family.udp%d", fam);
		R(n, sendto(s, "x", 1, 0, (struct sockaddr *)&other, fam == 6 ? ol : sizeof(struct sockaddr_in6)));
		drain_dgrams(s);
		struct sockaddr_storage p0;
		socklen_t p0l = peer_addr(fam, 0, &p0);
		snprintf(n, sizeof n, "sendto.port0.udp%d", fam);
		R(n, sendto(s, "x", 1, 0, (struct sockaddr *)&p0, p0l));
		char big[70000];
		memset(big, 'b', sizeof big);
		snprintf(n, sizeof n, "sendto.too-big.udp%d", fam);
		R(n, sendto(s, big, sizeof big, 0, (struct sockaddr *)&ss, len));
		close(s);

		/* unconnected send without an address */
		s = udp(fam);
		snprintf(n, sizeof n, "send.unconnected.udp%d", fam);
		R(n, send(s, "x", 1, 0));
		snprintf(n, sizeof n, "sendto.null-addr.udp%d", fam);
		R(n, sendto(s, "x", 1, 0, NULL, 0));
		close(s);

		/* connected */
		s = udp(fam);
		connect(s, (struct sockaddr *)&ss, len);
		snprintf(n, sizeof n, "send.connected.udp%d", fam);
		R(n, send(s, "abc", 3, 0));
		readable(s, 3000);
		fl = sizeof from;
		errno = 0;
		r = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
		snprintf(n, sizeof n, "recvfrom.connected.udp%d", fam);
		out(n, "%s %s", rstr(r, errno, 0), r < 0 ? "" : addr_str(&from, fl, P_UDPECHO));
		snprintf(n, sizeof n, "sendto.connected-same-addr.udp%d", fam);
		R(n, sendto(s, "abc", 3, 0, (struct sockaddr *)&ss, len));
		readable(s, 3000);
		recv(s, buf, sizeof buf, MSG_DONTWAIT);
		snprintf(n, sizeof n, "sendto.connected-other-port.udp%d", fam);
		R(n, sendto(s, "abc", 3, 0, (struct sockaddr *)&p0, p0l));
		snprintf(n, sizeof n, "send.connected.oob.udp%d", fam);
		R(n, send(s, "x", 1, MSG_OOB));
		close(s);

		/* connected to a port where nothing listens: the next call says so */
		s = udp(fam);
		struct sockaddr_storage rf;
		socklen_t rfl = peer_addr(fam, P_REFUSED, &rf);
		connect(s, (struct sockaddr *)&rf, rfl);
		snprintf(n, sizeof n, "send.refused.udp%d", fam);
		R(n, send(s, "x", 1, 0));
		msleep(300);
		snprintf(n, sizeof n, "send.refused.udp%d.next", fam);
		R(n, send(s, "x", 1, 0));
		msleep(300);
		snprintf(n, sizeof n, "recv.refused.udp%d", fam);
		R(n, recv(s, buf, sizeof buf, MSG_DONTWAIT));
		int e = -1;
		socklen_t el = sizeof e;
		getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el);
		snprintf(n, sizeof n, "recv.refused.udp%d.so_error", fam);
		out(n, "val=%s", e ? ename(e) : "0");
		close(s);
	}
}

static void d_msg(void)
{
	char n[96];
	{
		int fam = FAM;
		struct sockaddr_storage ss, from;
		socklen_t len = peer_addr(fam, P_UDPECHO, &ss);
		int s = udp(fam);
		char a[] = "sendmsg", b[] = "-two";
		struct iovec iov[2] = {{a, 7}, {b, 4}};
		struct msghdr m = {.msg_name = &ss, .msg_namelen = len, .msg_iov = iov, .msg_iovlen = 2};
		snprintf(n, sizeof n, "sendmsg.udp%d", fam);
		R(n, sendmsg(s, &m, 0));
		readable(s, 3000);
		char buf[64] = "";
		struct iovec riov = {buf, sizeof buf};
		char ctl[256];
		struct msghdr rm = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &riov,
		                    .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
		errno = 0;
		int r = recvmsg(s, &rm, 0);
		snprintf(n, sizeof n, "recvmsg.udp%d", fam);
		out(n, "%s %s flags=%#x controllen=%zu data=%.*s", rstr(r, errno, 0),
		    r < 0 ? "" : addr_str(&from, rm.msg_namelen, P_UDPECHO), rm.msg_flags,
		    (size_t)rm.msg_controllen, r > 0 ? r : 0, buf);

		/* packet info asked for */
		int one = 1;
		if (fam == 4)
			setsockopt(s, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
		else
			setsockopt(s, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
		sendmsg(s, &m, 0);
		readable(s, 3000);
		rm = (struct msghdr){.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &riov,
		                     .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
		errno = 0;
		r = recvmsg(s, &rm, 0);
		snprintf(n, sizeof n, "recvmsg.pktinfo.udp%d", fam);
		char what[128] = "";
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&rm); c; c = CMSG_NXTHDR(&rm, c)) {
			char ip[INET6_ADDRSTRLEN] = "?";
			if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
				struct in_pktinfo pi;
				memcpy(&pi, CMSG_DATA(c), sizeof pi);
				inet_ntop(AF_INET, &pi.ipi_addr, ip, sizeof ip);
				snprintf(what, sizeof what, "IP_PKTINFO dst=%s", ip_class(ip, 4));
			} else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
				struct in6_pktinfo pi;
				memcpy(&pi, CMSG_DATA(c), sizeof pi);
				inet_ntop(AF_INET6, &pi.ipi6_addr, ip, sizeof ip);
				snprintf(what, sizeof what, "IPV6_PKTINFO dst=%s", ip_class(ip, 6));
			} else {
				snprintf(what, sizeof what, "cmsg=%d/%d", c->cmsg_level, c->cmsg_type);
			}
		}
		out(n, "%s %s", rstr(r, errno, 0), what);

		/* control messages due and no room for them: a buffer too small or none
		 * (put_cmsg truncates: MSG_CTRUNC), an unwritable one (they are left out); the
		 * datagram arrives either way */
		struct {
			const char *name;
			void *ctl;
			size_t len;
		} noroom[] = {
			{"ctrunc", ctl, 4}, {"null-control", NULL, 64}, {"bad-control", (void *)8, 64}};
		for (int i = 0; i < 3; i++) {
			sendmsg(s, &m, 0);
			readable(s, 3000);
			rm = (struct msghdr){.msg_iov = &riov, .msg_iovlen = 1,
			                     .msg_control = noroom[i].ctl, .msg_controllen = noroom[i].len};
			errno = 0;
			r = recvmsg(s, &rm, 0);
			snprintf(n, sizeof n, "recvmsg.%s.udp%d", noroom[i].name, fam);
			out(n, "%s ctrunc=%d controllen=%zu", rstr(r, errno, 0),
			    !!(rm.msg_flags & MSG_CTRUNC), (size_t)rm.msg_controllen);
		}
		one = 0;
		if (fam == 4)
			setsockopt(s, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
		else
			setsockopt(s, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);

		/* truncated data: MSG_TRUNC in flags */
		sendmsg(s, &m, 0);
		readable(s, 3000);
		struct iovec small = {buf, 3};
		rm = (struct msghdr){.msg_iov = &small, .msg_iovlen = 1};
		errno = 0;
		r = recvmsg(s, &rm, 0);
		snprintf(n, sizeof n, "recvmsg.trunc.udp%d", fam);
		out(n, "%s trunc=%d", rstr(r, errno, 0), !!(rm.msg_flags & MSG_TRUNC));

		/* argument checks */
		snprintf(n, sizeof n, "sendmsg.null-msg.udp%d", fam);
		R(n, sendmsg(s, NULL, 0));
		struct msghdr bad = m;
		bad.msg_iovlen = 2000;
		snprintf(n, sizeof n, "sendmsg.iovlen-huge.udp%d", fam);
		R(n, sendmsg(s, &bad, 0));
		bad = m;
		bad.msg_namelen = 3;
		snprintf(n, sizeof n, "sendmsg.namelen3.udp%d", fam);
		R(n, sendmsg(s, &bad, 0));
		bad = m;
		bad.msg_name = (void *)8;
		snprintf(n, sizeof n, "sendmsg.bad-name.udp%d", fam);
		R(n, sendmsg(s, &bad, 0));
		bad = m;
		char junk[16] = {0};
		bad.msg_control = junk;
		bad.msg_controllen = sizeof junk;
		snprintf(n, sizeof n, "sendmsg.bad-control.udp%d", fam);
		R(n, sendmsg(s, &bad, 0));
		snprintf(n, sizeof n, "sendmsg.oob.udp%d", fam);
		R(n, sendmsg(s, &m, MSG_OOB));
		bad = m;
		bad.msg_name = NULL;
		bad.msg_namelen = 0;
		snprintf(n, sizeof n, "sendmsg.no-name-unconnected.udp%d", fam);
		R(n, sendmsg(s, &bad, 0));
		drain_dgrams(s);
		snprintf(n, sizeof n, "recvmsg.null-msg.udp%d", fam);
		R(n, recvmsg(s, NULL, MSG_DONTWAIT));
		rm = (struct msghdr){.msg_iov = &riov, .msg_iovlen = 1};
		snprintf(n, sizeof n, "recvmsg.empty-dontwait.udp%d", fam);
		R(n, recvmsg(s, &rm, MSG_DONTWAIT));
		snprintf(n, sizeof n, "recvmsg.errqueue-empty.udp%d", fam);
		R(n, recvmsg(s, &rm, MSG_ERRQUEUE | MSG_DONTWAIT));
		close(s);
	}
}

static void d_mmsg(void)
{
	char n[96];
	{
		int fam = FAM;
		struct sockaddr_storage ss;
		socklen_t len = peer_addr(fam, P_UDPECHO, &ss);
		int s = udp(fam);
		char d1[] = "one", d2[] = "two!";
		struct iovec i1 = {d1, 3}, i2 = {d2, 4};
		struct mmsghdr mm[2] = {
			{.msg_hdr = {.msg_name = &ss, .msg_namelen = len, .msg_iov = &i1, .msg_iovlen = 1}},
			{.msg_hdr = {.msg_name = &ss, .msg_namelen = len, .msg_iov = &i2, .msg_iovlen = 1}},
		};
		snprintf(n, sizeof n, "sendmmsg.two.udp%d", fam);
		errno = 0;
		int r = sendmmsg(s, mm, 2, 0);
		out(n, "%s len0=%u len1=%u", rstr(r, errno, 0), mm[0].msg_len, mm[1].msg_len);
		readable(s, 3000);
		msleep(500); /* both echoes queued */
		char b1[16], b2[16];
		struct sockaddr_storage f1, f2;
		struct iovec r1 = {b1, sizeof b1}, r2 = {b2, sizeof b2};
		struct mmsghdr rm[2] = {
			{.msg_hdr = {.msg_name = &f1, .msg_namelen = sizeof f1, .msg_iov = &r1, .msg_iovlen = 1}},
			{.msg_hdr = {.msg_name = &f2, .msg_namelen = sizeof f2, .msg_iov = &r2, .msg_iovlen = 1}},
		};
		struct timespec to = {2, 0};
		errno = 0;
		r = recvmmsg(s, rm, 2, MSG_WAITFORONE, &to);
		snprintf(n, sizeof n, "recvmmsg.two.udp%d", fam);
		out(n, "%s len0=%u from0=[%s]", rstr(r, errno, 0), rm[0].msg_len,
		    r > 0 ? addr_str(&f1, rm[0].msg_hdr.msg_namelen, P_UDPECHO) : "");
		if (r == 1) { /* the second may come in the next call */
			errno = 0;
			r = recvmmsg(s, rm, 2, MSG_DONTWAIT, NULL);
			snprintf(n, sizeof n, "recvmmsg.two.udp%d.rest", fam);
			out(n, "%s", rstr(r, errno, 0));
		} else {
			snprintf(n, sizeof n, "recvmmsg.two.udp%d.rest", fam);
			out(n, "none-needed");
		}
		drain_dgrams(s);
		snprintf(n, sizeof n, "recvmmsg.empty-dontwait.udp%d", fam);
		R(n, recvmmsg(s, rm, 2, MSG_DONTWAIT, NULL));
		struct timespec zero = {0, 1000000};
		snprintf(n, sizeof n, "recvmmsg.empty-timeout.udp%d", fam);
		fcntl(s, F_SETFL, O_NONBLOCK);
		R(n, recvmmsg(s, rm, 2, 0, &zero));
		fcntl(s, F_SETFL, 0);
		snprintf(n, sizeof n, "sendmmsg.zero.udp%d", fam);
		R(n, sendmmsg(s, mm, 0, 0));
		snprintf(n, sizeof n, "sendmmsg.null.udp%d", fam);
		R(n, sendmmsg(s, NULL, 2, 0));
		snprintf(n, sizeof n, "recvmmsg.null.udp%d", fam);
		R(n, recvmmsg(s, NULL, 2, MSG_DONTWAIT, NULL));
		struct timespec badts = {0, 2000000000L};
		snprintf(n, sizeof n, "recvmmsg.bad-timeout.udp%d", fam);
		R(n, recvmmsg(s, rm, 2, 0, &badts));
		mm[1].msg_hdr.msg_namelen = 3;
		errno = 0;
		r = sendmmsg(s, mm, 2, 0);
		snprintf(n, sizeof n, "sendmmsg.second-bad.udp%d", fam);
		out(n, "%s", rstr(r, errno, 0));
		close(s);
	}
}

/* The data calls on a connected TCP socket. Reads of data that should have arrived use
 * MSG_DONTWAIT after a wait, so one that never comes reads EAGAIN instead of blocking. */
static void d_tcp(void)
{
	char n[96], buf[64];
	{
		int fam = FAM;
		int s = dial(fam, P_ECHO);
		if (s < 0) {
			snprintf(n, sizeof n, "tcpdata.tcp%d", fam);
			return setup_failed(n, "connect to echo");
		}
		struct sockaddr_storage ss, from;
		socklen_t len = peer_addr(fam, P_ECHO, &ss), fl;
		snprintf(n, sizeof n, "sendto.tcp-with-addr.tcp%d", fam);
		R(n, sendto(s, "ab", 2, 0, (struct sockaddr *)&ss, len));
		readable(s, 3000);
		msleep(50);
		fl = sizeof from;
		errno = 0;
		int r = recvfrom(s, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		snprintf(n, sizeof n, "recvfrom.tcp-with-addr.tcp%d", fam);
		out(n, "%s addrlen=%u", rstr(r, errno, 0), (unsigned)fl);
		snprintf(n, sizeof n, "recvfrom.tcp-empty-dontwait.tcp%d", fam);
		fl = sizeof from;
		R(n, recvfrom(s, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl));
		struct iovec iov = {"msg", 3};
		struct msghdr m = {.msg_name = &ss, .msg_namelen = len, .msg_iov = &iov, .msg_iovlen = 1};
		snprintf(n, sizeof n, "sendmsg.tcp-with-name.tcp%d", fam);
		R(n, sendmsg(s, &m, 0));
		readable(s, 3000);
		msleep(50);
		struct iovec riov = {buf, sizeof buf};
		struct msghdr rm = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &riov,
		                    .msg_iovlen = 1};
		errno = 0;
		r = recvmsg(s, &rm, MSG_DONTWAIT);
		snprintf(n, sizeof n, "recvmsg.tcp.tcp%d", fam);
		out(n, "%s namelen=%u", rstr(r, errno, 0), (unsigned)rm.msg_namelen);
		struct iovec i1 = {"a", 1}, i2 = {"b", 1};
		struct mmsghdr mm[2] = {{.msg_hdr = {.msg_iov = &i1, .msg_iovlen = 1}},
		                        {.msg_hdr = {.msg_iov = &i2, .msg_iovlen = 1}}};
		snprintf(n, sizeof n, "sendmmsg.tcp.tcp%d", fam);
		R(n, sendmmsg(s, mm, 2, 0));
		readable(s, 3000);
		msleep(100);
		struct iovec r1 = {buf, 1}, r2 = {buf + 1, 1};
		struct mmsghdr rmm[2] = {{.msg_hdr = {.msg_iov = &r1, .msg_iovlen = 1}},
		                         {.msg_hdr = {.msg_iov = &r2, .msg_iovlen = 1}}};
		snprintf(n, sizeof n, "recvmmsg.tcp.tcp%d", fam);
		R(n, recvmmsg(s, rmm, 2, MSG_DONTWAIT, NULL));
		snprintf(n, sizeof n, "send.oob.tcp%d", fam);
		R(n, send(s, "u", 1, MSG_OOB));
		snprintf(n, sizeof n, "recv.oob-none.tcp%d", fam);
		R(n, recv(s, buf, 1, MSG_OOB | MSG_DONTWAIT));
		close(s);

		/* a fresh (unconnected) TCP socket */
		s = tcp(fam);
		snprintf(n, sizeof n, "sendto.unconnected.tcp%d", fam);
		R(n, sendto(s, "x", 1, MSG_NOSIGNAL, (struct sockaddr *)&ss, len));
		snprintf(n, sizeof n, "send.unconnected.tcp%d", fam);
		R(n, send(s, "x", 1, MSG_NOSIGNAL));
		fl = sizeof from;
		snprintf(n, sizeof n, "recvfrom.unconnected.tcp%d", fam);
		R(n, recvfrom(s, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl));
		snprintf(n, sizeof n, "recv.unconnected.tcp%d", fam);
		R(n, recv(s, buf, sizeof buf, MSG_DONTWAIT));
		struct msghdr em = {.msg_name = &ss, .msg_namelen = len, .msg_iov = &iov, .msg_iovlen = 1};
		snprintf(n, sizeof n, "sendmsg.unconnected.tcp%d", fam);
		R(n, sendmsg(s, &em, MSG_NOSIGNAL));
		close(s);

		/* the peer closes: EOF, then EPIPE */
		s = dial(fam, P_CLOSE);
		if (s < 0) {
			snprintf(n, sizeof n, "tcpdata.closed.tcp%d", fam);
			return setup_failed(n, "connect to close");
		}
		readable(s, 3000);
		snprintf(n, sizeof n, "recv.peer-closed.tcp%d", fam);
		R(n, recv(s, buf, sizeof buf, MSG_DONTWAIT));
		snprintf(n, sizeof n, "send.peer-closed.tcp%d", fam);
		R(n, send(s, "x", 1, MSG_NOSIGNAL));
		msleep(200);
		snprintf(n, sizeof n, "send.peer-closed.tcp%d.next", fam);
		R(n, send(s, "x", 1, MSG_NOSIGNAL));
		close(s);
	}
}

/* Raw ICMP (root: CAP_NET_RAW; uid 65534: EPERM): an echo request to the peer, whose
 * network stack answers; IPv4 replies carry their IP header, an ICMPv6 request's checksum
 * is the kernel's to compute; ICMP_FILTER hides the replies. */
static unsigned short icmp_csum(const unsigned char *p, size_t n)
{
	unsigned long a = 0;
	for (size_t i = 0; i + 1 < n; i += 2)
		a += (p[i] << 8) | p[i + 1];
	if (n & 1)
		a += p[n - 1] << 8;
	while (a >> 16)
		a = (a & 0xffff) + (a >> 16);
	return htons(~a & 0xffff);
}

/* The echo reply with identifier 0x7a7a and sequence SEQ, within MS: its length, or -1. */
static int raw_reply(int s, int v6, int seq, int ms, unsigned char *buf, size_t cap,
                     struct sockaddr_storage *from, socklen_t *fl)
{
	for (;;) {
		if (!readable(s, ms))
			return -1;
		*fl = sizeof *from;
		ssize_t n = recvfrom(s, buf, cap, MSG_DONTWAIT, (struct sockaddr *)from, fl);
		if (n < 0)
			return -1;
		int at = v6 ? 0 : (buf[0] & 0x0f) * 4;
		if (n >= at + 8 && buf[at] == (v6 ? 129 : 0) && buf[at + 4] == 0x7a &&
		    buf[at + 5] == 0x7a && buf[at + 7] == seq)
			return (int)n;
	}
}

static void d_raw(void)
{
	int fam = FAM, v6 = fam == 6;
	char n[64];
	int s = socket(v6 ? AF_INET6 : AF_INET, SOCK_RAW, v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP);
	snprintf(n, sizeof n, "raw.socket.icmp%d", fam);
	out(n, "%s", rstr(s, errno, 1));
	if (s < 0)
		return;
	struct sockaddr_storage ss, from;
	socklen_t len = peer_addr(fam, 0, &ss), fl;
	unsigned char m[16] = {v6 ? 128 : 8, 0, 0, 0, 0x7a, 0x7a, 0, 1, 'r', 'a', 'w', 'p', 'r', 'o', 'b', 'e'};
	unsigned char buf[512];
	if (!v6) {
		unsigned short c = icmp_csum(m, sizeof m);
		memcpy(m + 2, &c, 2);
	}
	snprintf(n, sizeof n, "raw.sendto.icmp%d", fam);
	R(n, sendto(s, m, sizeof m, 0, (struct sockaddr *)&ss, len));
	int r = raw_reply(s, v6, 1, 3000, buf, sizeof buf, &from, &fl);
	int at = v6 ? 0 : (buf[0] & 0x0f) * 4;
	snprintf(n, sizeof n, "raw.reply.icmp%d", fam);
	if (r < 0)
		out(n, "got=0");
	else
		out(n, "got=1 len=%d iphdr=%d data=%s from=%s", r - at, !v6 && buf[0] >> 4 == 4,
		    memcmp(buf + at + 8, "rawprobe", 8) ? "bad" : "ok", addr_str(&from, fl, 0));
	if (!v6) {
		unsigned int mask = 1u << 0; /* echo replies */
		snprintf(n, sizeof n, "raw.filter.icmp%d", fam);
		R(n, setsockopt(s, SOL_RAW, 1 /* ICMP_FILTER */, &mask, sizeof mask));
		m[7] = 2;
		m[2] = m[3] = 0;
		unsigned short c = icmp_csum(m, sizeof m);
		memcpy(m + 2, &c, 2);
		sendto(s, m, sizeof m, 0, (struct sockaddr *)&ss, len);
		snprintf(n, sizeof n, "raw.filtered.icmp%d", fam);
		out(n, "got=%d", raw_reply(s, v6, 2, 500, buf, sizeof buf, &from, &fl) >= 0);
	}
	close(s);
}

#define BOTH(name, fn)                                  \
	static void fn##4(void) { FAM = 4; fn(); }      \
	static void fn##6(void) { FAM = 6; fn(); }
BOTH(udp, d_udp)
BOTH(msg, d_msg)
BOTH(mmsg, d_mmsg)
BOTH(tcp, d_tcp)
BOTH(raw, d_raw)

static const struct probe_case cases[] = {
	{"data-udp4", d_udp4}, {"data-udp6", d_udp6},   {"data-msg4", d_msg4},
	{"data-msg6", d_msg6}, {"data-mmsg4", d_mmsg4}, {"data-mmsg6", d_mmsg6},
	{"data-tcp4", d_tcp4}, {"data-tcp6", d_tcp6}, {"data-raw4", d_raw4},
	{"data-raw6", d_raw6},
};
PROBE_MAIN(cases)
