//! The production [`Backend`]: one `netstack::Stack` per joined virtual network.
//!
//! A destination belongs to the first stack whose subnets or routes contain it. A
//! wildcard listener or UDP socket listens on every stack with one port (the first
//! stack's choice); a specific address listens on the stack owning it. Errors are the
//! errno values netstack maps its failures to.
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::task::Poll;

use netstack::{IcmpSocket, IpFamily, Stack, TcpListener, TcpOptions, TcpStream, UdpSocket};
use nix::errno::Errno;

use crate::backend::{canonical, Backend, Connection};

/// The joined virtual networks.
#[derive(Debug, Clone, Default)]
pub struct Networks {
    stacks: Vec<Stack>,
}

/// A UDP or ICMP echo socket bound on one or more stacks.
#[derive(Debug)]
pub struct UdpSet {
    socks: Vec<(Stack, Datagram)>,
}

#[derive(Debug)]
enum Datagram {
    Udp(UdpSocket),
    Icmp(IcmpSocket),
}

fn errno(e: netstack::Error) -> Errno {
    Errno::from_raw(e.errno())
}

impl Networks {
    /// Serve the program on `stacks` (one per joined network).
    pub fn new(stacks: Vec<Stack>) -> Self {
        Self { stacks }
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
        Ok((UdpSet { socks }, SocketAddr::new(local.ip(), port)))
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
    type Stream = TcpStream;
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

    async fn tcp_connect(&self, remote: SocketAddr) -> Result<Connection<TcpStream>, Errno> {
        let stack = self.stack_for(remote.ip()).ok_or(Errno::ENETUNREACH)?;
        let remote = SocketAddr::new(canonical(remote.ip()), remote.port());
        let stream = stack
            .tcp_connect(None, remote, TcpOptions::default())
            .await
            .map_err(errno)?;
        Ok(Connection {
            local: stream.local_addr(),
            peer: stream.peer_addr(),
            stream,
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
    ) -> Result<Connection<TcpStream>, Errno> {
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
            stream,
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

    fn stream_settled(&self, stream: &TcpStream) -> bool {
        use netstack::TcpState::{Closed, FinWait2, TimeWait};
        // Closed (also by a reset): nothing more can be delivered. Otherwise our FIN and
        // everything before it must have been acknowledged.
        let info = stream.tcp_info();
        info.state == Closed || (info.send_queue == 0 && matches!(info.state, FinWait2 | TimeWait))
    }

    fn local_addresses(&self) -> Vec<(IpAddr, u8)> {
        self.stacks.iter().flat_map(|s| s.addresses()).collect()
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
        let (_, sock) = set
            .socks
            .iter()
            .find(|(stack, _)| stack.is_virtual(dest.ip()))
            .ok_or(Errno::ENETUNREACH)?;
        match sock {
            Datagram::Udp(s) => s.send_to(data, dest).await.map_err(errno),
            Datagram::Icmp(s) => s.send_to(data, dest.ip()).await.map_err(errno),
        }
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
            UdpSet { socks },
            SocketAddr::new(family.unspecified().ip(), ident),
        ))
    }

    async fn udp_recv_from(
        &self,
        set: &UdpSet,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr, Option<IpAddr>), Errno> {
        poll_fn(|cx| {
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
                };
                if let Poll::Ready(r) = ready {
                    return Poll::Ready(
                        r.map(|(n, _, from)| (n, from, destination(stack, bound, from.ip()))),
                    );
                }
            }
            Poll::Pending
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
