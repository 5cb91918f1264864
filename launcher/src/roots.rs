//! Which roots a node registers with, and the embedded default root.
//!
//! `--root ADDR` or `--root IDENTITY@ADDR` (repeatable) names roots; ADDR is `IP:PORT` or
//! `HOST:PORT`, a name resolved once when the argument is read (a container's name on a
//! Docker network, say). With no `--root`,
//! the node uses the **embedded default root** on `127.0.0.1:9993`, and the first `ztrun`
//! on a machine hosts it in-process when nobody serves that port yet, so two programs on
//! one machine meet with nothing else running. `zt root` serves the same identity for a
//! longer-lived or LAN-wide deployment (`zt root --listen 0.0.0.0:9993`).
//!
//! The default root's secret key ships in this binary on purpose: anyone can run it. A
//! root sees who meets whom and relays packets it cannot read (sessions between nodes are
//! end-to-end encrypted with the nodes' own keys, and addresses are bound to keys, so a
//! root cannot impersonate a node); a deployment that wants its own rendezvous point
//! generates an identity with `zt id new` and passes `--root IDENTITY@ADDR`.

use std::net::SocketAddr;
use std::str::FromStr;

use zt_core::{Identity, RootSpec, SecretIdentity};

/// Where the embedded default root listens.
pub const DEFAULT_ROOT_ENDPOINT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9993,
));

const DEFAULT_ROOT_SECRET: &str = include_str!("default-root.identity");

/// The embedded default root's identity, secret keys included (see the module docs).
pub fn default_root_secret() -> SecretIdentity {
    DEFAULT_ROOT_SECRET
        .parse()
        .expect("the embedded default root identity is valid (checked by a unit test)")
}

/// A `--root` argument.
#[derive(Debug, Clone)]
pub struct RootArg {
    /// The root's identity; `None` means the embedded default identity.
    pub identity: Option<Identity>,
    /// Its UDP endpoint.
    pub endpoint: SocketAddr,
}

/// Why a `--root` argument was refused.
#[derive(Debug, thiserror::Error)]
pub enum RootArgError {
    /// The endpoint is neither `IP:PORT` nor `HOST:PORT`.
    #[error(
        "root endpoint {0:?} is not IP:PORT or HOST:PORT (e.g. 198.18.0.2:9993, [fd00::2]:9993 or root:9993)"
    )]
    Endpoint(String),
    /// `HOST:PORT` did not resolve to an address.
    #[error("root endpoint {endpoint:?} does not resolve: {source}")]
    Resolve {
        /// The argument as given.
        endpoint: String,
        /// The resolver's error (or "no address").
        #[source]
        source: std::io::Error,
    },
    /// The identity does not parse or does not verify.
    #[error("root identity is invalid: {0}")]
    Identity(#[source] zt_core::IdentityError),
}

impl FromStr for RootArg {
    type Err = RootArgError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (identity, endpoint) = match s.rsplit_once('@') {
            Some((id, ep)) => {
                let id: Identity = id.parse().map_err(RootArgError::Identity)?;
                id.verify().map_err(RootArgError::Identity)?;
                (Some(id), ep)
            }
            None => (None, s),
        };
        let endpoint = match endpoint.parse() {
            Ok(ep) => ep,
            Err(_) => resolve(endpoint)?,
        };
        Ok(RootArg { identity, endpoint })
    }
}

/// `HOST:PORT` through the system's resolver (`/etc/hosts`, DNS), IPv4 first: a root
/// is named once, at start; a name that later moves needs a restart.
fn resolve(endpoint: &str) -> Result<SocketAddr, RootArgError> {
    use std::net::ToSocketAddrs as _;
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return Err(RootArgError::Endpoint(endpoint.to_owned()));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| RootArgError::Endpoint(endpoint.to_owned()))?;
    let hostname_like = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !hostname_like {
        return Err(RootArgError::Endpoint(endpoint.to_owned()));
    }
    let resolve_err = |source| RootArgError::Resolve {
        endpoint: endpoint.to_owned(),
        source,
    };
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(resolve_err)?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| resolve_err(std::io::Error::other("no address")))
}

/// The form [`FromStr`] reads.
impl std::fmt::Display for RootArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.identity {
            Some(id) => write!(f, "{id}@{}", self.endpoint),
            None => write!(f, "{}", self.endpoint),
        }
    }
}

/// Turn `--root` arguments into root specifications (grouping endpoints per identity).
pub fn specs(args: &[RootArg]) -> Vec<RootSpec> {
    let default = default_root_secret().public().clone();
    let mut out: Vec<RootSpec> = Vec::new();
    for a in args {
        let id = a.identity.clone().unwrap_or_else(|| default.clone());
        match out
            .iter_mut()
            .find(|s| s.identity.address() == id.address())
        {
            Some(s) => s.endpoints.push(a.endpoint),
            None => out.push(RootSpec {
                identity: id,
                endpoints: vec![a.endpoint],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_root_is_valid() {
        let id = default_root_secret();
        id.public().verify().unwrap();
    }

    #[test]
    fn parses_plain_and_identified_roots() {
        let r: RootArg = "198.18.0.2:9993".parse().unwrap();
        assert!(r.identity.is_none());
        assert_eq!(r.endpoint, "198.18.0.2:9993".parse().unwrap());
        let pubid = default_root_secret().public().to_string();
        let r: RootArg = format!("{pubid}@[fd00::2]:9993").parse().unwrap();
        assert_eq!(
            r.identity.unwrap().address(),
            default_root_secret().address()
        );
        assert!("nonsense".parse::<RootArg>().is_err());
        assert!("bad host:9993".parse::<RootArg>().is_err());
        assert!("localhost:99999".parse::<RootArg>().is_err());
        let r: RootArg = "localhost:9993".parse().unwrap();
        assert_eq!(r.endpoint, "127.0.0.1:9993".parse().unwrap());
        let err = "x@1.2.3.4:5".parse::<RootArg>().unwrap_err();
        assert!(err.to_string().contains("identity"), "{err}");
    }

    #[test]
    fn endpoints_of_one_identity_are_grouped() {
        let a: RootArg = "198.18.0.2:9993".parse().unwrap();
        let b: RootArg = "[fd00::2]:9993".parse().unwrap();
        let s = specs(&[a, b]);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].endpoints.len(), 2);
    }
}
