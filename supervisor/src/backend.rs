//! Where a socket's traffic goes, decided on an address the supervisor copied out of the
//! program (never on memory the program can still change).
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use nix::errno::Errno;
use tokio::io::{AsyncRead, AsyncWrite};

/// The program's TCP options that tune its connection rather than its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamTuning {
    /// `TCP_NODELAY`: no Nagle delay for small writes.
    pub nodelay: bool,
    /// With `SO_KEEPALIVE` on: probe after this much idle time (`TCP_KEEPIDLE`, default
    /// two hours as on Linux). `None`: keepalive off.
    pub keepalive: Option<Duration>,
    /// `TCP_USER_TIMEOUT` when set to a non-zero value; `None`: the stack's default.
    pub user_timeout: Option<Duration>,
}

/// A TCP connection on a virtual network, with both ends' addresses.
#[derive(Debug)]
pub struct Connection<S> {
    /// The byte stream.
    pub stream: S,
    /// Our address.
    pub local: SocketAddr,
    /// The peer's address.
    pub peer: SocketAddr,
}

/// A virtual network as the program's interface on it shows it ([`Backend::link_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The network's MTU (`SIOCGIFMTU`, `IP_MTU`).
    pub mtu: u32,
    /// The program's MAC address on it (`SIOCGIFHWADDR`).
    pub mac: [u8; 6],
}

/// The virtual networks the program is joined to.
///
/// The emulation asks the backend whether an address belongs to a virtual network and
/// opens TCP connections and listeners there; the supervisor pumps each stream to the
/// program's socketpair end. Errors are the errno the program should see
/// (`ECONNREFUSED`, `EADDRINUSE`, `ETIMEDOUT`, ...).
pub trait Backend: Send + Sync + 'static {
    /// A connected byte stream.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// A listening socket.
    type Listener: Send + Sync + 'static;

    /// Ready once `stream` can no longer send (a reset or timeout on the network),
    /// registering `cx` to be woken otherwise. Default: never.
    fn poll_stream_closed(
        _stream: &Self::Stream,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        std::task::Poll::Pending
    }

    /// Is the connection over in both directions (closed, reset, or in TIME_WAIT), so
    /// that Linux's socket would be in TCP_CLOSE? Default: no.
    fn stream_closed(&self, _stream: &Self::Stream) -> bool {
        false
    }

    /// Is any virtual network joined? When not, wildcard binds go to loopback.
    fn enabled(&self) -> bool {
        true
    }
    /// Is `ip` reachable on a joined virtual network?
    fn is_virtual(&self, ip: IpAddr) -> bool;
    /// Is `ip` one of our own addresses on a virtual network (bindable)?
    fn is_local(&self, ip: IpAddr) -> bool;
    /// Do datagrams to `dest` go to the virtual network? Default: when its address is
    /// virtual; a backend may also serve some destinations itself (the DNS resolver
    /// behind the host's nameserver addresses).
    fn is_virtual_dgram(&self, dest: SocketAddr) -> bool {
        self.is_virtual(dest.ip())
    }
    /// Do TCP connections to `dest` go to this backend although `dest` is not on a
    /// virtual network (the DNS resolver behind the host's nameserver addresses, for DNS
    /// over TCP)? Default: no.
    fn serves_stream(&self, _dest: SocketAddr) -> bool {
        false
    }
    /// Open a TCP connection to `remote`, from `local` when the program bound the socket
    /// first (its port, and its address unless unspecified; `None`: the backend picks).
    fn tcp_connect(
        &self,
        local: Option<SocketAddr>,
        remote: SocketAddr,
    ) -> impl Future<Output = Result<Connection<Self::Stream>, Errno>> + Send;
    /// Listen on `local` (unspecified address: every virtual address of that family;
    /// port 0: pick one; `v6only` as `IPV6_V6ONLY`). Returns the listener and its actual
    /// address.
    fn tcp_listen(
        &self,
        local: SocketAddr,
        backlog: usize,
        v6only: bool,
    ) -> Result<(Self::Listener, SocketAddr), Errno>;
    /// Wait for the next established connection on `listener`.
    fn tcp_accept(
        &self,
        listener: &Self::Listener,
    ) -> impl Future<Output = Result<Connection<Self::Stream>, Errno>> + Send;

    /// A bound UDP socket.
    type Udp: Send + Sync + 'static;
    /// Bind a UDP socket to `local` (unspecified address and port 0 allowed); returns it
    /// with its actual address.
    fn udp_bind(&self, local: SocketAddr, v6only: bool) -> Result<(Self::Udp, SocketAddr), Errno>;
    /// [`Backend::udp_bind`] for a socket with `SO_REUSEADDR`: it may share its address
    /// with other sockets bound this way. Default: an ordinary bind.
    fn udp_bind_reuse(
        &self,
        local: SocketAddr,
        v6only: bool,
    ) -> Result<(Self::Udp, SocketAddr), Errno> {
        self.udp_bind(local, v6only)
    }
    /// Has everything written to `stream` before its shutdown reached the peer (all data
    /// and the FIN acknowledged)? Asked when the program is gone, so that `supervise`
    /// returns only once what the program sent is delivered, as the kernel would go on
    /// delivering after the process exits. Default: yes.
    fn stream_settled(&self, _stream: &Self::Stream) -> bool {
        true
    }
    /// Apply the TCP options the program set that act on the connection itself
    /// (`TCP_NODELAY`, keepalive, `TCP_USER_TIMEOUT`): when its connection is made or
    /// accepted (an accepted one inherits its listener's, as on Linux) and whenever it
    /// sets one later. Default: nothing.
    fn stream_tune(&self, _stream: &Self::Stream, _tuning: StreamTuning) {}
    /// The segment size `stream` sends, once known (what `TCP_MAXSEG` reports on a
    /// connected Linux socket; programs size their writes and datagrams by it, as iperf3
    /// does). Default: not known (the model's answer, 536, stands).
    fn stream_mss(&self, _stream: &Self::Stream) -> Option<u16> {
        None
    }
    /// The IP MTU of the network `stream` runs on (what `IP_MTU`/`IPV6_MTU` report on a
    /// connected Linux socket). Default: not known ([`crate::options`]'s conservative
    /// path MTU stands).
    fn stream_path_mtu(&self, _stream: &Self::Stream) -> Option<u32> {
        None
    }
    /// The round-trip time `stream` measured over its handshake, once known (what
    /// `TCP_INFO`'s `tcpi_rtt` reports on a fresh Linux connection). Default: not known.
    fn stream_rtt(&self, _stream: &Self::Stream) -> Option<std::time::Duration> {
        None
    }
    /// Reset `stream` (send RST, drop what is queued): what Linux does when a program
    /// closes a TCP socket with unread data or with `SO_LINGER` zero. Default: nothing
    /// (the stream is shut down normally).
    fn stream_abort(&self, _stream: &Self::Stream) {}
    /// The virtual network that `ip` is on or reached through (one of the program's own
    /// addresses, or a peer's): its MTU and the program's MAC address there, what the
    /// interface ioctls and a connected socket's `IP_MTU` report. Default: not known.
    fn link_of(&self, _ip: IpAddr) -> Option<Link> {
        None
    }
    /// The addresses the program has on the virtual networks, with prefix lengths (what
    /// an rtnetlink address dump adds). Default: none.
    fn local_addresses(&self) -> Vec<(IpAddr, u8)> {
        Vec::new()
    }
    /// Tell the network a UDP socket is connected to `peer` (`None`: dissolved), so that
    /// among sockets sharing a port its peer's datagrams reach it. Default: nothing to do.
    fn udp_connect(&self, _sock: &Self::Udp, _peer: Option<SocketAddr>) -> Result<(), Errno> {
        Ok(())
    }
    /// Open an ICMP echo socket (Linux "ping socket") of `family` with identifier
    /// `ident` (`None`: pick one); it is driven through the same datagram calls, the
    /// identifier standing in for the port. Default: `EPROTONOSUPPORT`.
    fn icmp_bind(
        &self,
        _family: crate::Family,
        _ident: Option<u16>,
    ) -> Result<(Self::Udp, SocketAddr), Errno> {
        Err(Errno::EPROTONOSUPPORT)
    }
    /// Open a raw socket of `family` for IP protocol `protocol` (`IPPROTO_ICMP`,
    /// `IPPROTO_ICMPV6`, or `IPPROTO_RAW` on IPv4; the caller checked `CAP_NET_RAW`),
    /// driven through the same datagram calls: IPv4 packets are received with their IP
    /// header, the source's port is 0. Default: `EPROTONOSUPPORT`.
    fn raw_bind(&self, _family: crate::Family, _protocol: i32) -> Result<Self::Udp, Errno> {
        Err(Errno::EPROTONOSUPPORT)
    }
    /// Send one datagram.
    fn udp_send_to(
        &self,
        sock: &Self::Udp,
        data: &[u8],
        dest: SocketAddr,
    ) -> impl Future<Output = Result<usize, Errno>> + Send;
    /// Receive one datagram: (its bytes, source, the local address it was sent to when
    /// known; what `IP_PKTINFO` reports). The bytes are the datagram's own allocation, so
    /// that an idle socket holds no receive buffer.
    fn udp_recv_from(
        &self,
        sock: &Self::Udp,
    ) -> impl Future<Output = Result<(Vec<u8>, SocketAddr, Option<IpAddr>), Errno>> + Send;
}

/// No virtual network: only loopback (and, with fall-through, the host network).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoNetwork;

impl Backend for NoNetwork {
    type Stream = tokio::io::DuplexStream;
    type Listener = ();

    fn enabled(&self) -> bool {
        false
    }
    fn is_virtual(&self, _ip: IpAddr) -> bool {
        false
    }
    fn is_local(&self, _ip: IpAddr) -> bool {
        false
    }
    async fn tcp_connect(
        &self,
        _local: Option<SocketAddr>,
        _remote: SocketAddr,
    ) -> Result<Connection<Self::Stream>, Errno> {
        Err(Errno::ENETUNREACH)
    }
    fn tcp_listen(
        &self,
        _local: SocketAddr,
        _backlog: usize,
        _v6: bool,
    ) -> Result<((), SocketAddr), Errno> {
        Err(Errno::EADDRNOTAVAIL)
    }
    async fn tcp_accept(&self, _listener: &()) -> Result<Connection<Self::Stream>, Errno> {
        std::future::pending().await
    }
    type Udp = ();
    fn udp_bind(&self, _local: SocketAddr, _v6: bool) -> Result<((), SocketAddr), Errno> {
        Err(Errno::EADDRNOTAVAIL)
    }
    async fn udp_send_to(&self, _s: &(), _d: &[u8], _to: SocketAddr) -> Result<usize, Errno> {
        Err(Errno::ENETUNREACH)
    }
    async fn udp_recv_from(&self, _s: &()) -> Result<(Vec<u8>, SocketAddr, Option<IpAddr>), Errno> {
        std::future::pending().await
    }
}

/// Supervisor-wide policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--fallthrough`: addresses outside the virtual networks use the host network
    /// through real kernel sockets. Off by default: such a `connect` gets `ENETUNREACH`.
    pub fallthrough: bool,
}

/// The decision for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// 127.0.0.0/8, ::1, the unspecified address, or their v4-mapped forms: a real kernel
    /// socket on the host's loopback.
    Loopback,
    /// A joined virtual network.
    Virtual,
    /// The host network (fall-through on).
    Host,
    /// Refused with `ENETUNREACH`.
    Unreachable,
}

/// Canonical form: v4-mapped IPv6 addresses become IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `canonical` applied to a socket address (keeps the port).
pub(crate) fn canonical_addr(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(a.ip()), a.port())
}

/// Route a destination of `connect`/`sendto` for a stream socket or (`datagram`) a UDP
/// or ICMP socket.
pub(crate) fn route<B: Backend + ?Sized>(
    backend: &B,
    policy: Policy,
    dest: SocketAddr,
    datagram: bool,
) -> Route {
    let ip = canonical(dest.ip());
    let canon = SocketAddr::new(ip, dest.port());
    if datagram && backend.is_virtual_dgram(canon) || !datagram && backend.serves_stream(canon) {
        Route::Virtual
    } else if ip.is_loopback() || ip.is_unspecified() {
        Route::Loopback
    } else if backend.is_virtual(ip) {
        Route::Virtual
    } else if policy.fallthrough {
        Route::Host
    } else {
        Route::Unreachable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Net10;
    impl Backend for Net10 {
        type Stream = tokio::io::DuplexStream;
        type Listener = ();
        fn is_virtual(&self, ip: IpAddr) -> bool {
            matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 10)
        }
        fn is_local(&self, _ip: IpAddr) -> bool {
            false
        }
        async fn tcp_connect(
            &self,
            _l: Option<SocketAddr>,
            _r: SocketAddr,
        ) -> Result<Connection<Self::Stream>, Errno> {
            Err(Errno::ENETUNREACH)
        }
        fn tcp_listen(
            &self,
            _l: SocketAddr,
            _b: usize,
            _v6: bool,
        ) -> Result<((), SocketAddr), Errno> {
            Err(Errno::EADDRNOTAVAIL)
        }
        async fn tcp_accept(&self, _l: &()) -> Result<Connection<Self::Stream>, Errno> {
            Err(Errno::EINVAL)
        }
        type Udp = ();
        fn udp_bind(&self, _l: SocketAddr, _v6: bool) -> Result<((), SocketAddr), Errno> {
            Err(Errno::EADDRNOTAVAIL)
        }
        async fn udp_send_to(&self, _s: &(), _d: &[u8], _t: SocketAddr) -> Result<usize, Errno> {
            Err(Errno::ENETUNREACH)
        }
        async fn udp_recv_from(
            &self,
            _s: &(),
        ) -> Result<(Vec<u8>, SocketAddr, Option<IpAddr>), Errno> {
            Err(Errno::EINVAL)
        }
    }

    #[test]
    fn routes() {
        let strict = Policy::default();
        let open = Policy { fallthrough: true };
        let r = |p, a: &str| route(&Net10, p, a.parse().unwrap(), false);
        assert_eq!(r(strict, "127.0.0.1:80"), Route::Loopback);
        assert_eq!(r(strict, "127.3.2.1:80"), Route::Loopback);
        assert_eq!(r(strict, "[::1]:80"), Route::Loopback);
        assert_eq!(r(strict, "[::ffff:127.0.0.1]:80"), Route::Loopback);
        assert_eq!(r(strict, "10.1.2.3:80"), Route::Virtual);
        assert_eq!(r(strict, "[::ffff:10.1.2.3]:80"), Route::Virtual);
        assert_eq!(r(strict, "192.0.2.1:80"), Route::Unreachable);
        assert_eq!(r(open, "192.0.2.1:80"), Route::Host);
        assert_eq!(r(strict, "[2001:db8::1]:80"), Route::Unreachable);
    }
}
