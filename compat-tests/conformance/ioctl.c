/* ioctl.c: socket ioctls (FIONREAD, SIOCATMARK, SIOCINQ/OUTQ, FIONBIO, interface
 * queries). ioctl itself is never trapped, so these show what a program sees on the
 * descriptor ztrun gave it. */
#include "probe.h"

/* Blocking reads and accepts of these sockets are bounded (probe.h, bounded()). */
#define dial(f, p) bounded(dial(f, p))
#define listener(f, p) bounded(listener(f, p))

#include <linux/sockios.h>
#include <net/if_arp.h>

static int kind_socket(int i)
{
	return i == 0 ? tcp(4) : i == 1 ? udp(4) : i == 2 ? tcp(6) : udp(6);
}
static const char *KIND[] = {"tcp4", "udp4", "tcp6", "udp6"};

static void i_interfaces(void)
{
	char n[96];
	for (int k = 0; k < 4; k++) {
		int s = kind_socket(k);
		struct ifreq ifr;
		memset(&ifr, 0, sizeof ifr);
		strcpy(ifr.ifr_name, "lo");
		errno = 0;
		int r = ioctl(s, SIOCGIFINDEX, &ifr);
		snprintf(n, sizeof n, "ioctl.SIOCGIFINDEX.lo.%s", KIND[k]);
		out(n, "%s index=%d", rstr(r, errno, 0), r ? 0 : ifr.ifr_ifindex);
		memset(&ifr, 0, sizeof ifr);
		strcpy(ifr.ifr_name, "nosuch0");
		snprintf(n, sizeof n, "ioctl.SIOCGIFINDEX.nosuch.%s", KIND[k]);
		R(n, ioctl(s, SIOCGIFINDEX, &ifr));
		memset(&ifr, 0, sizeof ifr);
		ifr.ifr_ifindex = 1;
		errno = 0;
		r = ioctl(s, SIOCGIFNAME, &ifr);
		snprintf(n, sizeof n, "ioctl.SIOCGIFNAME.1.%s", KIND[k]);
		out(n, "%s name=%s", rstr(r, errno, 0), r ? "" : ifr.ifr_name);
		memset(&ifr, 0, sizeof ifr);
		strcpy(ifr.ifr_name, "lo");
		errno = 0;
		r = ioctl(s, SIOCGIFMTU, &ifr);
		snprintf(n, sizeof n, "ioctl.SIOCGIFMTU.lo.%s", KIND[k]);
		out(n, "%s mtu=%d", rstr(r, errno, 0), r ? 0 : ifr.ifr_mtu);
		memset(&ifr, 0, sizeof ifr);
		strcpy(ifr.ifr_name, "lo");
		errno = 0;
		r = ioctl(s, SIOCGIFFLAGS, &ifr);
		snprintf(n, sizeof n, "ioctl.SIOCGIFFLAGS.lo.%s", KIND[k]);
		out(n, "%s up=%d loopback=%d running=%d", rstr(r, errno, 0),
		    !r && !!(ifr.ifr_flags & IFF_UP), !r && !!(ifr.ifr_flags & IFF_LOOPBACK),
		    !r && !!(ifr.ifr_flags & IFF_RUNNING));
		memset(&ifr, 0, sizeof ifr);
		strcpy(ifr.ifr_name, "lo");
		errno = 0;
		r = ioctl(s, SIOCGIFADDR, &ifr);
		snprintf(n, sizeof n, "ioctl.SIOCGIFADDR.lo.%s", KIND[k]);
		char ip[INET6_ADDRSTRLEN] = "";
		if (!r)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr, ip, sizeof ip);
		out(n, "%s ip=%s", rstr(r, errno, 0), r ? "" : ip_class(ip, 4));
		memset(&ifr, 0, sizeof ifr);
		strcpy(ifr.ifr_name, "lo");
		errno = 0;
		r = ioctl(s, SIOCGIFNETMASK, &ifr);
		snprintf(n, sizeof n, "ioctl.SIOCGIFNETMASK.lo.%s", KIND[k]);
		if (!r)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ifr.ifr_netmask)->sin_addr, ip, sizeof ip);
		out(n, "%s mask=%s", rstr(r, errno, 0), r ? "" : ip);
		memset(&ifr, 0, sizeof ifr);
		strcpy(ifr.ifr_name, "lo");
		errno = 0;
		r = ioctl(s, SIOCGIFHWADDR, &ifr);
		snprintf(n, sizeof n, "ioctl.SIOCGIFHWADDR.lo.%s", KIND[k]);
		out(n, "%s family=%d", rstr(r, errno, 0), r ? 0 : ifr.ifr_hwaddr.sa_family);

		/* the interface list */
		struct ifreq list[32];
		struct ifconf ifc = {.ifc_len = sizeof list, .ifc_req = list};
		errno = 0;
		r = ioctl(s, SIOCGIFCONF, &ifc);
		int count = r ? 0 : ifc.ifc_len / (int)sizeof(struct ifreq), lo = 0, self = 0;
		for (int i = 0; i < count; i++) {
			inet_ntop(AF_INET, &((struct sockaddr_in *)&list[i].ifr_addr)->sin_addr, ip, sizeof ip);
			lo += !strcmp(list[i].ifr_name, "lo");
			self += !strcmp(ip, C.self4);
		}
		snprintf(n, sizeof n, "ioctl.SIOCGIFCONF.%s", KIND[k]);
		out(n, "%s has-lo=%d has-self=%d", rstr(r, errno, 0), lo, self);
		ifc = (struct ifconf){.ifc_len = 0, .ifc_buf = NULL};
		errno = 0;
		r = ioctl(s, SIOCGIFCONF, &ifc);
		snprintf(n, sizeof n, "ioctl.SIOCGIFCONF.size.%s", KIND[k]);
		out(n, "%s entries=%s", rstr(r, errno, 0),
		    r ? "" : ifc.ifc_len / (int)sizeof(struct ifreq) == count ? "same" : "differ");
		snprintf(n, sizeof n, "ioctl.SIOCGIFCONF.bad-ptr.%s", KIND[k]);
		R(n, ioctl(s, SIOCGIFCONF, (void *)8));
		close(s);
	}
	int s = tcp(4);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	strcpy(ifr.ifr_name, "lo");
	ioctl(s, SIOCGIFMTU, &ifr);
	R("ioctl.SIOCSIFMTU.lo-same", ioctl(s, SIOCSIFMTU, &ifr));
	R("ioctl.unknown.tcp4", ioctl(s, 0x89ff, &ifr));
	R("ioctl.unknown2.tcp4", ioctl(s, 0x5401 /* TCGETS */, &ifr));
	close(s);
}

static void i_queues(void)
{
	char n[96];
	for (int k = 0; k < 4; k++) {
		int s = kind_socket(k), v = -1;
		errno = 0;
		int r = ioctl(s, FIONREAD, &v);
		snprintf(n, sizeof n, "ioctl.FIONREAD.fresh.%s", KIND[k]);
		out(n, "%s val=%d", rstr(r, errno, 0), v);
		v = -1;
		errno = 0;
		r = ioctl(s, SIOCOUTQ, &v);
		snprintf(n, sizeof n, "ioctl.SIOCOUTQ.fresh.%s", KIND[k]);
		out(n, "%s val=%d", rstr(r, errno, 0), v);
		v = -1;
		errno = 0;
		r = ioctl(s, SIOCATMARK, &v);
		snprintf(n, sizeof n, "ioctl.SIOCATMARK.fresh.%s", KIND[k]);
		out(n, "%s val=%d", rstr(r, errno, 0), v);
		snprintf(n, sizeof n, "ioctl.FIONREAD.null.%s", KIND[k]);
		R(n, ioctl(s, FIONREAD, NULL));
		struct timeval tv;
		snprintf(n, sizeof n, "ioctl.SIOCGSTAMP.fresh.%s", KIND[k]);
		R(n, ioctl(s, SIOCGSTAMP, &tv));
		int on = 1;
		errno = 0;
		r = ioctl(s, FIONBIO, &on);
		snprintf(n, sizeof n, "ioctl.FIONBIO.%s", KIND[k]);
		out(n, "%s nonblock=%d", rstr(r, errno, 0), !!(fcntl(s, F_GETFL) & O_NONBLOCK));
		close(s);
	}
	/* a bound UDP socket with a datagram waiting */
	for (int fam = 4; fam <= 6; fam += 2) {
		int s = udp(fam), v = -1;
		struct sockaddr_storage ss;
		socklen_t len = peer_addr(fam, P_UDPECHO, &ss);
		sendto(s, "1234567", 7, 0, (struct sockaddr *)&ss, len);
		readable(s, 3000);
		errno = 0;
		int r = ioctl(s, SIOCINQ, &v);
		snprintf(n, sizeof n, "ioctl.SIOCINQ.datagram.udp%d", fam);
		out(n, "%s val=%d", rstr(r, errno, 0), v);
		v = -1;
		errno = 0;
		r = ioctl(s, SIOCATMARK, &v);
		snprintf(n, sizeof n, "ioctl.SIOCATMARK.datagram.udp%d", fam);
		out(n, "%s val=%d", rstr(r, errno, 0), v);
		char b[16];
		recv(s, b, sizeof b, 0);
		struct timeval tv = {0, 0};
		errno = 0;
		r = ioctl(s, SIOCGSTAMP, &tv);
		snprintf(n, sizeof n, "ioctl.SIOCGSTAMP.after-recv.udp%d", fam);
		out(n, "%s set=%d", rstr(r, errno, 0), tv.tv_sec != 0);
		close(s);
	}
	/* connected TCP: bytes waiting, urgent data and the mark */
	for (int fam = 4; fam <= 6; fam += 2) {
		int s = dial(fam, P_ECHO), v = -1;
		snprintf(n, sizeof n, "ioctl.tcp%d", fam);
		if (s < 0)
			return setup_failed(n, "connect to echo");
		write(s, "12345", 5);
		readable(s, 3000);
		msleep(100);
		errno = 0;
		int r = ioctl(s, FIONREAD, &v);
		snprintf(n, sizeof n, "ioctl.FIONREAD.connected.tcp%d", fam);
		out(n, "%s val=%d", rstr(r, errno, 0), v);
		v = -1;
		errno = 0;
		r = ioctl(s, SIOCOUTQ, &v);
		snprintf(n, sizeof n, "ioctl.SIOCOUTQ.connected.tcp%d", fam);
		out(n, "%s val=%d", rstr(r, errno, 0), v);
		close(s);

		s = dial(fam, P_OOB);
		snprintf(n, sizeof n, "ioctl.oob.tcp%d", fam);
		if (s < 0)
			return setup_failed(n, "connect to oob");
		msleep(400); /* "abc", "!" urgent, "def" */
		v = -1;
		errno = 0;
		r = ioctl(s, SIOCATMARK, &v);
		snprintf(n, sizeof n, "ioctl.SIOCATMARK.before-mark.tcp%d", fam);
		out(n, "%s val=%d", rstr(r, errno, 0), v);
		char b[16] = "";
		r = recv(s, b, 3, 0);
		snprintf(n, sizeof n, "ioctl.oob.read-before-mark.tcp%d", fam);
		out(n, "ret=%d data=%.*s", r, r > 0 ? r : 0, b);
		v = -1;
		errno = 0;
		r = ioctl(s, SIOCATMARK, &v);
		snprintf(n, sizeof n, "ioctl.SIOCATMARK.at-mark.tcp%d", fam);
		out(n, "%s val=%d", rstr(r, errno, 0), v);
		errno = 0;
		r = recv(s, b, 1, MSG_OOB);
		snprintf(n, sizeof n, "recv.oob.tcp%d", fam);
		out(n, "%s data=%.*s", rstr(r, errno, 0), r > 0 ? r : 0, b);
		errno = 0;
		r = recv(s, b, sizeof b, MSG_DONTWAIT);
		snprintf(n, sizeof n, "recv.after-oob.tcp%d", fam);
		out(n, "%s data=%.*s", rstr(r, errno, 0), r > 0 ? r : 0, b);
		close(s);
	}
	int port;
	int l = listener(4, &port), v = -1;
	errno = 0;
	int r = ioctl(l, FIONREAD, &v);
	out("ioctl.FIONREAD.listener", "%s", rstr(r, errno, 0));
	close(l);
}

/* The interface that holds our address towards the peer: its MTU is the route's (what
 * IP_MTU says on a connected UDP or TCP socket), and its hardware address is a MAC
 * unless it is loopback. */
static void i_own_interface(void)
{
	struct sockaddr_storage ss;
	socklen_t len = peer_addr(4, P_UDPECHO, &ss);
	int u = udp(4);
	if (connect(u, (struct sockaddr *)&ss, len) != 0) {
		setup_failed("ioctl.own-if", "connect");
		close(u);
		return;
	}
	struct sockaddr_in me;
	socklen_t ml = sizeof me;
	getsockname(u, (struct sockaddr *)&me, &ml);
	struct ifreq reqs[32];
	struct ifconf ifc = {.ifc_len = sizeof reqs, .ifc_req = reqs};
	ioctl(u, SIOCGIFCONF, &ifc);
	char name[IFNAMSIZ] = "";
	for (int i = 0; i < ifc.ifc_len / (int)sizeof reqs[0]; i++) {
		struct sockaddr_in *a = (struct sockaddr_in *)&reqs[i].ifr_addr;
		if (a->sin_addr.s_addr == me.sin_addr.s_addr)
			memcpy(name, reqs[i].ifr_name, IFNAMSIZ - 1);
	}
	out("ioctl.own-if.found", "found=%d", name[0] != 0);
	if (!name[0]) {
		close(u);
		return;
	}
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	memcpy(ifr.ifr_name, name, IFNAMSIZ);
	errno = 0;
	int r = ioctl(u, SIOCGIFMTU, &ifr);
	int ifmtu = r ? -1 : ifr.ifr_mtu;
	int umtu = -1, tmtu = -2;
	socklen_t ol = sizeof umtu;
	getsockopt(u, IPPROTO_IP, IP_MTU, &umtu, &ol);
	int t = dial(4, P_ECHO);
	ol = sizeof tmtu;
	getsockopt(t, IPPROTO_IP, IP_MTU, &tmtu, &ol);
	close(t);
	out("ioctl.own-if.mtu", "%s udp-IP_MTU-same=%d tcp-IP_MTU-same=%d", rstr(r, errno, 0),
	    ifmtu == umtu, ifmtu == tmtu);
	memset(&ifr.ifr_hwaddr, 0, sizeof ifr.ifr_hwaddr);
	errno = 0;
	r = ioctl(u, SIOCGIFHWADDR, &ifr);
	static const char zero[6];
	int loop = (ntohl(me.sin_addr.s_addr) >> 24) == 127;
	out("ioctl.own-if.hwaddr", "%s family=%s mac=%s", rstr(r, errno, 0),
	    loop ? (ifr.ifr_hwaddr.sa_family == ARPHRD_LOOPBACK ? "loopback" : "other")
	         : (ifr.ifr_hwaddr.sa_family == ARPHRD_ETHER ? "ether" : "other"),
	    memcmp(ifr.ifr_hwaddr.sa_data, zero, 6) ? "set" : "zero");
	close(u);
}

static const struct probe_case cases[] = {
	{"ioctl-if", i_interfaces},
	{"ioctl-own-if", i_own_interface},
	{"ioctl-queues", i_queues},
};
PROBE_MAIN(cases)
