//! The production [`Backend`]: one `netstack::Stack` per joined virtual network.
//!
//! A destination belongs to the first stack whose subnets or routes contain it. A
//! wildcard listener or UDP socket listens on every stack with one port (the first
//! stack's choice); a specific address listens on the stack owning it. Errors are the
//! errno values netstack maps its failures to.
use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use netstack::{
    IcmpSocket, IpFamily, RawSocket, Stack, TcpListener, TcpOptions, TcpStream, UdpSocket,
};
use nix::errno::Errno;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

use crate::backend::{canonical, canonical_addr, Backend, Connection};
use crate::dns::{Answer, Resolver};

/// The joined virtual networks.
#[derive(Debug, Clone, Default)]
pub struct Networks {
    stacks: Vec<Stack>,
    resolver: Option<Arc<Resolver>>,
}

/// A UDP or ICMP echo socket bound on one or more stacks.
#[derive(Debug)]
pub struct UdpSet {
    socks: Vec<(Stack, Datagram)>,
    /// Answers of the resolver, received before anything from the stacks.
    inbox: Arc<Inbox>,
}

impl UdpSet {
    fn new(socks: Vec<(Stack, Datagram)>) -> Self {
        Self {
            socks,
            inbox: Arc::default(),
        }
    }
}

/// Datagrams for a [`UdpSet`] that did not come from a stack: the resolver's answers.
#[derive(Debug, Default)]
struct Inbox {
    state: Mutex<InboxState>,
    /// Queries forwarded to the host's nameserver and not answered yet.
    forwarding: AtomicUsize,
}

#[derive(Debug, Default)]
struct InboxState {
    queue: VecDeque<(Vec<u8>, SocketAddr)>,
    waker: Option<Waker>,
}

/// Answers queued for one socket, at most (as a socket's receive buffer would drop).
const INBOX_CAP: usize = 64;
/// Queries of one socket forwarded at once, at most; more are dropped (the program's
/// resolver retries).
const FORWARDING_CAP: usize = 16;
/// How long the host's nameserver has to answer a forwarded query.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

impl Inbox {
    fn push(&self, data: Vec<u8>, from: SocketAddr) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.queue.len() < INBOX_CAP {
            st.queue.push_back((data, from));
        }
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }

    fn poll(&self, cx: &mut std::task::Context<'_>) -> Option<(Vec<u8>, SocketAddr)> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let got = st.queue.pop_front();
        if got.is_none() {
            st.waker = Some(cx.waker().clone());
        }
        got
    }
}

/// Send `query` to the host's nameserver `server` from a kernel socket and queue its
/// answer for the program.
async fn forward(query: Vec<u8>, server: SocketAddr, inbox: Weak<Inbox>) {
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let exchange = async {
        let sock = tokio::net::UdpSocket::bind(local).await?;
        sock.connect(server).await?;
        sock.send(&query).await?;
        let mut buf = vec![0u8; 65_535];
        loop {
            let n = sock.recv(&mut buf).await?;
            // Only the answer to this query (same id) is passed on.
            if n >= 2 && buf[..2] == query[..2] {
                buf.truncate(n);
                return Ok::<_, std::io::Error>(buf);
            }
        }
    };
    let result = tokio::time::timeout(FORWARD_TIMEOUT, exchange).await;
    let Some(inbox) = inbox.upgrade() else { return };
    inbox.forwarding.fetch_sub(1, Ordering::Relaxed);
    match result {
        Ok(Ok(answer)) => inbox.push(answer, server),
        Ok(Err(e)) => tracing::debug!(%server, %e, "forwarded DNS query failed"),
        Err(_) => tracing::debug!(%server, "forwarded DNS query unanswered"),
    }
}

/// A stream the program's TCP socket is pumped to: a connection on a virtual network, or
/// a DNS-over-TCP exchange with the resolver behind a nameserver address.
#[derive(Debug)]
pub enum NetStream {
    /// A TCP connection on a joined network.
    Tcp(TcpStream),
    /// Our end of an in-process pipe served by [`serve_dns_tcp`].
    Dns(DuplexStream),
}

impl AsyncRead for NetStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            NetStream::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            NetStream::Dns(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NetStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            NetStream::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, data),
            NetStream::Dns(s) => std::pin::Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            NetStream::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            NetStream::Dns(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            NetStream::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            NetStream::Dns(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Largest DNS message over TCP (its length prefix is 16 bits).
const DNS_TCP_MAX: usize = 65_535;

/// Serve DNS over TCP (RFC 7766: each message behind a 2-byte length) on `pipe` for a
/// program that connected to nameserver `server`: our names are answered by `resolver`,
/// others forwarded to `server` over a kernel TCP connection when fall-through is on. Ends
/// at the program's EOF, a malformed length or a failed forward.
async fn serve_dns_tcp(mut pipe: DuplexStream, resolver: Arc<Resolver>, server: SocketAddr) {
    let mut upstream: Option<tokio::net::TcpStream> = None;
    let mut query = vec![0u8; DNS_TCP_MAX];
    loop {
        let mut len = [0u8; 2];
        if pipe.read_exact(&mut len).await.is_err() {
            return;
        }
        let len = usize::from(u16::from_be_bytes(len));
        if pipe.read_exact(&mut query[..len]).await.is_err() {
            return;
        }
        let answer = match resolver.answer(&query[..len]) {
            Answer::Reply(a) => a,
            Answer::Drop => return,
            Answer::Forward => {
                let exchange = forward_tcp(&mut upstream, server, &query[..len]);
                match tokio::time::timeout(FORWARD_TIMEOUT, exchange).await {
                    Ok(Ok(a)) => a,
                    Ok(Err(e)) => {
                        tracing::debug!(%server, %e, "forwarded DNS query over TCP failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%server, "forwarded DNS query over TCP unanswered");
                        return;
                    }
                }
            }
        };
        let Ok(n) = u16::try_from(answer.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(2 + answer.len());
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&answer);
        if pipe.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// One query to the host's nameserver over TCP, on a connection kept for the next ones.
async fn forward_tcp(
    upstream: &mut Option<tokio::net::TcpStream>,
    server: SocketAddr,
    query: &[u8],
) -> std::io::Result<Vec<u8>> {
    if upstream.is_none() {
        *upstream = Some(tokio::net::TcpStream::connect(server).await?);
    }
    let conn = upstream.as_mut().expect("connected above");
    let mut msg = Vec::with_capacity(2 + query.len());
    msg.extend_from_slice(&(query.len() as u16).to_be_bytes());
    msg.extend_from_slice(query);
    conn.write_all(&msg).await?;
    let mut len = [0u8; 2];
    conn.read_exact(&mut len).await?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    conn.read_exact(&mut answer).await?;
    Ok(answer)
}

#[derive(Debug)]
enum Datagram {
    Udp(UdpSocket),
    Icmp(IcmpSocket),
    Raw(RawSocket),
}

fn errno(e: netstack::Error) -> Errno {
    Errno::from_raw(e.errno())
}

impl Networks {
    /// Serve the program on `stacks` (one per joined network).
    pub fn new(stacks: Vec<Stack>) -> Self {
        Self {
            stacks,
            resolver: None,
        }
    }

    /// Answer DNS queries sent to the host's nameservers with `resolver` (see
    /// [`crate::dns`]).
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = Some(Arc::new(resolver));
        self
    }

    /// The stacks.
    pub fn stacks(&self) -> &[Stack] {
        &self.stacks
    }

    fn stack_for(&self, ip: IpAddr) -> Option<&Stack> {
        let ip = canonical(ip);
        self.stacks.iter().find(|s| s.is_virtual(ip))
    }

    /// Bind `local` on every stack it belongs to, one port for all.
    fn bind_udp(
        &self,
        local: SocketAddr,
        v6only: bool,
        reuse: bool,
    ) -> Result<(UdpSet, SocketAddr), Errno> {
        let mut port = local.port();
        let mut socks = Vec::new();
        for stack in self.binding(local)? {
            let at = SocketAddr::new(local.ip(), port);
            let s = if reuse {
                stack.udp_bind_reuse(at, v6only)
            } else {
                stack.udp_bind(at, v6only)
            }
            .map_err(errno)?;
            port = s.local_addr().port();
            socks.push((stack.clone(), Datagram::Udp(s)));
        }
        if socks.is_empty() {
            return Err(Errno::EADDRNOTAVAIL);
        }
        Ok((UdpSet::new(socks), SocketAddr::new(local.ip(), port)))
    }

    /// The stacks a bind to `local` covers: all for a wildcard, else the owner.
    fn binding(&self, local: SocketAddr) -> Result<Vec<&Stack>, Errno> {
        let ip = canonical(local.ip());
        if ip.is_unspecified() {
            return Ok(self.stacks.iter().collect());
        }
        self.stacks
            .iter()
            .find(|s| s.is_local(ip))
            .map(|s| vec![s])
            .ok_or(Errno::EADDRNOTAVAIL)
    }
}

impl Backend for Networks {
    type Stream = NetStream;
    type Listener = Vec<TcpListener>;
    type Udp = UdpSet;

    fn enabled(&self) -> bool {
        !self.stacks.is_empty()
    }

    fn is_virtual(&self, ip: IpAddr) -> bool {
        self.stack_for(ip).is_some()
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.stacks.iter().any(|s| s.is_local(ip))
    }

    fn is_virtual_dgram(&self, dest: SocketAddr) -> bool {
        self.is_virtual(dest.ip()) || self.resolver.as_ref().is_some_and(|r| r.serves(dest))
    }

    fn serves_stream(&self, dest: SocketAddr) -> bool {
        self.resolver.as_ref().is_some_and(|r| r.serves(dest))
    }

    async fn tcp_connect(
        &self,
        local: Option<SocketAddr>,
        remote: SocketAddr,
    ) -> Result<Connection<NetStream>, Errno> {
        if let Some(resolver) = self.resolver.as_ref().filter(|r| r.serves(remote)) {
            // DNS over TCP to a nameserver: answered here, like its datagrams.
            let (ours, theirs) = tokio::io::duplex(2 * (2 + DNS_TCP_MAX));
            tokio::spawn(serve_dns_tcp(theirs, resolver.clone(), remote));
            let local = if remote.is_ipv4() {
                SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))
            } else {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))
            };
            return Ok(Connection {
                stream: NetStream::Dns(ours),
                local,
                peer: remote,
            });
        }
        let stack = self.stack_for(remote.ip()).ok_or(Errno::ENETUNREACH)?;
        let remote = SocketAddr::new(canonical(remote.ip()), remote.port());
        let stream = stack
            .tcp_connect(local.map(canonical_addr), remote, TcpOptions::default())
            .await
            .map_err(errno)?;
        Ok(Connection {
            local: stream.local_addr(),
            peer: stream.peer_addr(),
            stream: NetStream::Tcp(stream),
        })
    }

    fn tcp_listen(
        &self,
        local: SocketAddr,
        backlog: usize,
        v6only: bool,
    ) -> Result<(Vec<TcpListener>, SocketAddr), Errno> {
        let mut port = local.port();
        let mut out = Vec::new();
        for stack in self.binding(local)? {
            let l = stack
                .tcp_listen(SocketAddr::new(local.ip(), port), backlog.max(1), v6only)
                .map_err(errno)?;
            port = l.local_addr().port();
            out.push(l);
        }
        if out.is_empty() {
            return Err(Errno::EADDRNOTAVAIL);
        }
        Ok((out, SocketAddr::new(local.ip(), port)))
    }

    async fn tcp_accept(
        &self,
        listeners: &Vec<TcpListener>,
    ) -> Result<Connection<NetStream>, Errno> {
        let stream = poll_fn(|cx| {
            for l in listeners {
                if let Poll::Ready(r) = l.poll_accept(cx) {
                    return Poll::Ready(r);
                }
            }
            Poll::Pending
        })
        .await
        .map_err(errno)?;
        Ok(Connection {
            local: stream.local_addr(),
            peer: stream.peer_addr(),
            stream: NetStream::Tcp(stream),
        })
    }

    fn udp_bind(&self, local: SocketAddr, v6only: bool) -> Result<(UdpSet, SocketAddr), Errno> {
        self.bind_udp(local, v6only, false)
    }

    fn udp_bind_reuse(
        &self,
        local: SocketAddr,
        v6only: bool,
    ) -> Result<(UdpSet, SocketAddr), Errno> {
        self.bind_udp(local, v6only, true)
    }

    fn poll_stream_closed(
        stream: &NetStream,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        match stream {
            NetStream::Tcp(s) => s.poll_send_closed(cx),
            NetStream::Dns(_) => std::task::Poll::Pending,
        }
    }

    fn stream_closed(&self, stream: &NetStream) -> bool {
        use netstack::TcpState::{Closed, TimeWait};
        match stream {
            NetStream::Tcp(s) => matches!(s.tcp_info().state, Closed | TimeWait),
            NetStream::Dns(_) => false,
        }
    }

    fn stream_settled(&self, stream: &NetStream) -> bool {
        use netstack::TcpState::{Closed, FinWait2, TimeWait};
        let NetStream::Tcp(stream) = stream else {
            return true;
        };
        // Closed (also by a reset): nothing more can be delivered. Otherwise our FIN and
        // everything before it must have been acknowledged.
        let info = stream.tcp_info();
        info.state == Closed || (info.send_queue == 0 && matches!(info.state, FinWait2 | TimeWait))
    }

    fn stream_tune(&self, stream: &NetStream, t: crate::backend::StreamTuning) {
        if let NetStream::Tcp(stream) = stream {
            let user_timeout = t.user_timeout.or(TcpOptions::default().user_timeout);
            stream.set_tuning(t.nodelay, t.keepalive, user_timeout);
        }
    }

    fn stream_mss(&self, stream: &NetStream) -> Option<u16> {
        match stream {
            NetStream::Tcp(stream) => stream.tcp_info().mss,
            _ => None,
        }
    }

    fn stream_path_mtu(&self, stream: &NetStream) -> Option<u32> {
        match stream {
            NetStream::Tcp(stream) => u32::try_from(stream.path_mtu()).ok(),
            _ => None,
        }
    }

    fn stream_rtt(&self, stream: &NetStream) -> Option<std::time::Duration> {
        match stream {
            NetStream::Tcp(stream) => stream.tcp_info().rtt,
            _ => None,
        }
    }

    fn stream_abort(&self, stream: &NetStream) {
        if let NetStream::Tcp(stream) = stream {
            stream.abort();
        }
    }

    fn local_addresses(&self) -> Vec<(IpAddr, u8)> {
        self.stacks.iter().flat_map(|s| s.addresses()).collect()
    }

    fn link_of(&self, ip: IpAddr) -> Option<crate::backend::Link> {
        let ip = canonical(ip);
        // Our own address first: with overlapping routes, the interface that holds it.
        let stack = self
            .stacks
            .iter()
            .find(|s| s.is_local(ip))
            .or_else(|| self.stacks.iter().find(|s| s.is_virtual(ip)))?;
        Some(crate::backend::Link {
            mtu: u32::try_from(stack.mtu()).ok()?,
            mac: stack.mac(),
        })
    }

    fn udp_connect(&self, set: &UdpSet, peer: Option<SocketAddr>) -> Result<(), Errno> {
        for (stack, s) in &set.socks {
            let Datagram::Udp(s) = s else { continue };
            match peer {
                // Only the stack that reaches the peer can be connected to it.
                Some(p) if stack.is_virtual(canonical(p.ip())) => {
                    s.connect(SocketAddr::new(canonical(p.ip()), p.port()))
                        .map_err(errno)?;
                }
                Some(_) => {}
                None => {
                    let any: IpAddr = if s.local_addr().is_ipv4() {
                        std::net::Ipv4Addr::UNSPECIFIED.into()
                    } else {
                        std::net::Ipv6Addr::UNSPECIFIED.into()
                    };
                    s.connect(SocketAddr::new(any, 0)).map_err(errno)?;
                }
            }
        }
        Ok(())
    }

    async fn udp_send_to(
        &self,
        set: &UdpSet,
        data: &[u8],
        dest: SocketAddr,
    ) -> Result<usize, Errno> {
        let dest = SocketAddr::new(canonical(dest.ip()), dest.port());
        let raw = set.socks.iter().any(|(_, s)| matches!(s, Datagram::Raw(_)));
        if let Some(resolver) = self.resolver.as_ref().filter(|r| !raw && r.serves(dest)) {
            if !self.is_virtual(dest.ip()) {
                match resolver.answer(data) {
                    Answer::Reply(reply) => set.inbox.push(reply, dest),
                    Answer::Forward
                        if set.inbox.forwarding.fetch_add(1, Ordering::Relaxed)
                            < FORWARDING_CAP =>
                    {
                        let inbox = Arc::downgrade(&set.inbox);
                        tokio::spawn(forward(data.to_vec(), dest, inbox));
                    }
                    Answer::Forward => {
                        set.inbox.forwarding.fetch_sub(1, Ordering::Relaxed);
                    }
                    Answer::Drop => {}
                }
                return Ok(data.len());
            }
        }
        let (_, sock) = set
            .socks
            .iter()
            .find(|(stack, _)| stack.is_virtual(dest.ip()))
            .ok_or(Errno::ENETUNREACH)?;
        match sock {
            Datagram::Udp(s) => s.send_to(data, dest).await.map_err(errno),
            Datagram::Icmp(s) => s.send_to(data, dest.ip()).await.map_err(errno),
            Datagram::Raw(s) => s.send_to(data, dest.ip()).await.map_err(errno),
        }
    }

    fn raw_bind(&self, family: crate::Family, protocol: i32) -> Result<UdpSet, Errno> {
        let fam = match family {
            crate::Family::V4 => IpFamily::V4,
            crate::Family::V6 => IpFamily::V6,
        };
        let protocol = u8::try_from(protocol).map_err(|_| Errno::EPROTONOSUPPORT)?;
        let mut socks = Vec::new();
        for stack in &self.stacks {
            let s = stack.raw_bind(fam, protocol).map_err(errno)?;
            socks.push((stack.clone(), Datagram::Raw(s)));
        }
        if socks.is_empty() {
            return Err(Errno::ENETUNREACH);
        }
        Ok(UdpSet::new(socks))
    }

    fn icmp_bind(
        &self,
        family: crate::Family,
        ident: Option<u16>,
    ) -> Result<(UdpSet, SocketAddr), Errno> {
        let fam = match family {
            crate::Family::V4 => IpFamily::V4,
            crate::Family::V6 => IpFamily::V6,
        };
        let mut ident = ident;
        let mut socks = Vec::new();
        for stack in &self.stacks {
            let s = stack.icmp_bind(fam, ident).map_err(errno)?;
            ident = Some(s.ident());
            socks.push((stack.clone(), Datagram::Icmp(s)));
        }
        let ident = ident.ok_or(Errno::ENETUNREACH)?;
        Ok((
            UdpSet::new(socks),
            SocketAddr::new(family.unspecified().ip(), ident),
        ))
    }

    async fn udp_recv_from(
        &self,
        set: &UdpSet,
    ) -> Result<(Vec<u8>, SocketAddr, Option<IpAddr>), Errno> {
        poll_fn(|cx| {
            if let Some((data, from)) = set.inbox.poll(cx) {
                return Poll::Ready(Ok((data, from, None)));
            }
            // Datagrams land in this thread's scratch buffer and leave it in one of their
            // own size: a socket waiting for one holds no buffer.
            crate::udp::with_scratch(|buf| {
                for (stack, s) in &set.socks {
                    let (ready, bound) = match s {
                        Datagram::Udp(s) => (
                            s.poll_recv_from(Some(&mut *cx), buf, false),
                            Some(s.local_addr().ip()),
                        ),
                        Datagram::Icmp(s) => (
                            s.poll_recv_from(Some(&mut *cx), buf)
                                .map(|r| r.map(|(n, full, ip)| (n, full, SocketAddr::new(ip, 0)))),
                            None,
                        ),
                        Datagram::Raw(s) => (
                            s.poll_recv_from(Some(&mut *cx), buf)
                                .map(|r| r.map(|(n, full, ip)| (n, full, SocketAddr::new(ip, 0)))),
                            None,
                        ),
                    };
                    if let Poll::Ready(r) = ready {
                        return Poll::Ready(r.map(|(n, _, from)| {
                            (
                                buf[..n].to_vec(),
                                from,
                                destination(stack, bound, from.ip()),
                            )
                        }));
                    }
                }
                Poll::Pending
            })
        })
        .await
        .map_err(errno)
    }
}

/// The local address a datagram from `from` reached on `stack`: the socket's own address
/// when it is bound to one, else the stack's address of `from`'s family (the stack
/// delivers only unicast datagrams addressed to it; with several addresses of one family
/// the first is reported).
fn destination(stack: &Stack, bound: Option<IpAddr>, from: IpAddr) -> Option<IpAddr> {
    if let Some(ip) = bound.map(canonical).filter(|ip| !ip.is_unspecified()) {
        return Some(ip);
    }
    let v4 = canonical(from).is_ipv4();
    stack
        .addresses()
        .into_iter()
        .map(|(ip, _)| ip)
        .find(|ip| ip.is_ipv4() == v4)
}
