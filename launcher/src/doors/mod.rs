//! Doors between the host and the virtual networks, for programs that are not wrapped.
//!
//! - **publish** (`ztrun --publish [HOSTADDR:]PORT[/udp]`): a kernel listener on the host
//!   side of `ztrun` (in a container: the container's interfaces, so `docker run -p`
//!   reaches it) whose connections and datagrams are carried to the node's own virtual
//!   address on PORT, where the wrapped program listens. The program sees them come
//!   from its own virtual address, as behind a reverse proxy.
//! - **SOCKS5** (`ztrun --socks5 ADDR`, RFC 1928): CONNECT to members by virtual address
//!   or by `.zt` name, so that `curl --socks5-hostname` or a browser reaches them
//!   unwrapped. No authentication on a loopback address; elsewhere the username/password
//!   method of RFC 1929 is required (`--socks5-user`, the password in
//!   `ZTRUN_SOCKS5_PASSWORD`). BIND and UDP ASSOCIATE are answered "command not
//!   supported". Only virtual destinations are reached: the door is no way around
//!   `--fallthrough`.
//!
//! - **HTTP CONNECT** (`ztrun --http-proxy ADDR`, RFC 9110 section 9.3.6, loopback
//!   only): the same reach for programs that speak to an HTTP proxy (`https_proxy=`,
//!   `curl -p -x`). Other methods are answered 405: a tunnel only.
//!
//! All use the stacks of the node in this process, so they need `--own-node` (implied).

mod http;
mod publish;
mod socks;
pub(crate) mod wire;

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use supervisor::dns::{Directory as _, Lookup};

pub use http::serve_http_connect;
pub use publish::publish;
pub use socks::{serve_socks5, SocksConfig};

/// The stacks of the joined networks and their members' names: what a door reaches.
#[derive(Debug, Clone)]
pub struct Doors {
    stacks: Vec<netstack::Stack>,
    names: crate::names::MemberNames,
}

impl Doors {
    /// Doors onto `stacks`, with `names` for `.zt` names.
    pub fn new(stacks: Vec<netstack::Stack>, names: crate::names::MemberNames) -> Self {
        Self { stacks, names }
    }

    /// The node's own addresses, IPv4 first, network by network.
    fn own_addresses(&self) -> Vec<(netstack::Stack, IpAddr)> {
        let mut out = Vec::new();
        for s in &self.stacks {
            let mut addrs: Vec<IpAddr> = s.addresses().into_iter().map(|(a, _)| a).collect();
            addrs.sort_by_key(|a| a.is_ipv6());
            out.extend(addrs.into_iter().map(|a| (s.clone(), a)));
        }
        out
    }

    /// The stack whose network holds `ip`.
    fn stack_for(&self, ip: IpAddr) -> Option<&netstack::Stack> {
        self.stacks.iter().find(|s| s.is_virtual(ip))
    }

    /// The virtual addresses of a `.zt` member name (lower-cased, a trailing dot
    /// dropped); a textual IP address is itself.
    fn resolve(&self, name: &str) -> Vec<IpAddr> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(ip) = name.parse::<IpAddr>() {
            return vec![ip];
        }
        match self.names.lookup(&name) {
            Lookup::Found(a) => a,
            Lookup::Unknown => Vec::new(),
        }
    }
}

/// Bind a door's listener on `listen` now and, in the background for as long as the
/// runtime runs, serve every connection with `session` in a task of its own. `flag`
/// names the door in errors (`--socks5`), `label` in logs (`SOCKS5`). Returns the bound
/// address.
async fn serve_each<F, Fut, E>(
    listen: SocketAddr,
    (flag, label): (&'static str, &'static str),
    session: F,
) -> Result<SocketAddr, DoorError>
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DoorError::Listen {
            addr: listen,
            what: flag.into(),
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(listen);
    tokio::spawn(async move {
        loop {
            let (conn, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%e, "{label}: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let session = session(conn);
            tokio::spawn(async move {
                if let Err(e) = session.await {
                    tracing::debug!(%peer, %e, "{label} session ended");
                }
            });
        }
    });
    Ok(bound)
}

/// Why a door could not open.
#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    /// The host-side socket could not be bound.
    #[error("cannot listen on {addr} for {what}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Which door (`--publish …`, `--socks5`).
        what: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP CONNECT door off loopback.
    #[error("--http-proxy {0} is not a loopback address: the HTTP door has no authentication")]
    HttpOffLoopback(SocketAddr),
    /// A SOCKS5 door off loopback without credentials.
    #[error(
        "--socks5 {0} is not a loopback address: anyone who reaches it would reach the \
         network; give --socks5-user NAME and the password in ZTRUN_SOCKS5_PASSWORD"
    )]
    NeedsCredentials(SocketAddr),
    /// The node has no address of its own to publish on.
    #[error("the node has no virtual address to publish on")]
    NoAddress,
}

/// Why a door could not reach a target.
#[derive(Debug)]
pub(crate) enum Unreached {
    /// A name no member has.
    UnknownName,
    /// Not on a virtual network: doors reach members only.
    NotVirtual,
    /// The stack's answer (refused, timed out, ...).
    Failed(netstack::Error),
}

impl Doors {
    /// A TCP connection to `target` (a member's virtual address or `.zt` name), trying
    /// each address of a name in turn.
    pub(crate) async fn connect(
        &self,
        target: &wire::Target,
    ) -> Result<netstack::TcpStream, Unreached> {
        let targets: Vec<SocketAddr> = match target {
            wire::Target::Addr(a) => vec![*a],
            wire::Target::Name(name, port) => self
                .resolve(name)
                .into_iter()
                .map(|ip| SocketAddr::new(ip, *port))
                .collect(),
        };
        if targets.is_empty() {
            return Err(Unreached::UnknownName);
        }
        let mut why = Unreached::NotVirtual;
        for t in targets {
            let Some(stack) = self.stack_for(t.ip()) else {
                continue;
            };
            match stack
                .tcp_connect(None, t, netstack::TcpOptions::default())
                .await
            {
                Ok(v) => return Ok(v),
                Err(e) => why = Unreached::Failed(e),
            }
        }
        Err(why)
    }
}

/// A `--publish` argument: `[HOSTADDR:]PORT[/udp]` (or `/tcp`, the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishArg {
    /// Where the host side listens (`0.0.0.0:PORT` when no address is given).
    pub host: SocketAddr,
    /// UDP instead of TCP.
    pub udp: bool,
}

/// Why a `--publish` argument was refused.
#[derive(Debug, thiserror::Error)]
#[error("--publish {0:?} is not [HOSTADDR:]PORT[/udp] (e.g. 8080, 127.0.0.1:8080, [::]:53/udp)")]
pub struct PublishArgError(String);

impl FromStr for PublishArg {
    type Err = PublishArgError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PublishArgError(s.to_owned());
        let (addr, udp) = match s.rsplit_once('/') {
            Some((a, "udp")) => (a, true),
            Some((a, "tcp")) => (a, false),
            Some(_) => return Err(bad()),
            None => (s, false),
        };
        let host = match addr.parse::<u16>() {
            Ok(port) => SocketAddr::from(([0, 0, 0, 0], port)),
            Err(_) => addr.parse().map_err(|_| bad())?,
        };
        if host.port() == 0 {
            return Err(bad());
        }
        Ok(PublishArg { host, udp })
    }
}

impl std::fmt::Display for PublishArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, if self.udp { "udp" } else { "tcp" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_arguments() {
        let p: PublishArg = "8080".parse().unwrap();
        assert_eq!(p.host, "0.0.0.0:8080".parse().unwrap());
        assert!(!p.udp);
        let p: PublishArg = "127.0.0.1:5353/udp".parse().unwrap();
        assert_eq!((p.host, p.udp), ("127.0.0.1:5353".parse().unwrap(), true));
        let p: PublishArg = "[::]:443/tcp".parse().unwrap();
        assert_eq!(p.host, "[::]:443".parse().unwrap());
        for bad in ["", "0", "x", "8080/sctp", "host:80", "70000", "1.2.3.4"] {
            assert!(bad.parse::<PublishArg>().is_err(), "{bad}");
        }
    }
}
