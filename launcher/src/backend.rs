//! The supervisor's view of the joined networks: one user-space stack per network.
//!
//! A destination belongs to the first stack whose subnets or routes contain it. A
//! wildcard listener listens on every stack of its family (IPv6 wildcard with
//! `IPV6_V6ONLY` off also takes IPv4 clients, as the kernel does).

use std::net::{IpAddr, SocketAddr};

use nix::errno::Errno;
use supervisor::backend::{Backend, Connection};

/// The joined networks.
#[derive(Debug, Clone, Default)]
pub struct Networks {
    stacks: Vec<netstack::Stack>,
}

impl Networks {
    /// Networks served by `stacks`, in order of preference.
    pub fn new(stacks: Vec<netstack::Stack>) -> Self {
        Networks { stacks }
    }

    fn stack_for(&self, ip: IpAddr) -> Option<&netstack::Stack> {
        self.stacks.iter().find(|s| s.is_virtual(ip))
    }
}

fn errno(e: netstack::Error) -> Errno {
    Errno::from_raw(e.errno())
}

/// Listeners of one listening socket: one per stack it listens on.
#[derive(Debug)]
pub struct Listeners {
    inner: Vec<netstack::TcpListener>,
}

impl Backend for Networks {
    type Stream = netstack::TcpStream;
    type Listener = Listeners;

    fn enabled(&self) -> bool {
        !self.stacks.is_empty()
    }

    fn is_virtual(&self, ip: IpAddr) -> bool {
        self.stack_for(ip).is_some()
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        self.stacks.iter().any(|s| s.is_local(ip))
    }

    async fn tcp_connect(&self, remote: SocketAddr) -> Result<Connection<Self::Stream>, Errno> {
        let stack = self.stack_for(remote.ip()).ok_or(Errno::ENETUNREACH)?;
        let stream = stack
            .tcp_connect(None, remote, netstack::TcpOptions::default())
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
    ) -> Result<(Self::Listener, SocketAddr), Errno> {
        let mut inner = Vec::new();
        if local.ip().is_unspecified() {
            // Every stack; the first one picks the port when 0, the rest use it.
            let mut addr = local;
            for s in &self.stacks {
                let l = s.tcp_listen(addr, backlog, false).map_err(errno)?;
                addr.set_port(l.local_addr().port());
                inner.push(l);
            }
            if inner.is_empty() {
                return Err(Errno::EADDRNOTAVAIL);
            }
            Ok((Listeners { inner }, addr))
        } else {
            let s = self
                .stacks
                .iter()
                .find(|s| s.is_local(local.ip()))
                .ok_or(Errno::EADDRNOTAVAIL)?;
            let l = s.tcp_listen(local, backlog, false).map_err(errno)?;
            let addr = l.local_addr();
            inner.push(l);
            Ok((Listeners { inner }, addr))
        }
    }

    async fn tcp_accept(
        &self,
        listener: &Self::Listener,
    ) -> Result<Connection<Self::Stream>, Errno> {
        let stream = std::future::poll_fn(|cx| {
            for l in &listener.inner {
                if let std::task::Poll::Ready(r) = l.poll_accept(cx) {
                    return std::task::Poll::Ready(r);
                }
            }
            std::task::Poll::Pending
        })
        .await
        .map_err(errno)?;
        Ok(Connection {
            local: stream.local_addr(),
            peer: stream.peer_addr(),
            stream,
        })
    }
}
