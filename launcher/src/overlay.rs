//! Joining networks: the node driver, one user-space stack per network, and the frame
//! pumps between them.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use zt_core::driver::{spawn_node, spawn_root, NetworkPort, NodeHandle, Sockets};
use zt_core::{NetworkId, Node, NodeConfig, Root, RootSpec, SecretIdentity, Timing};

use crate::{identity, netconf, roots};

/// A joined network, as the rest of `ztrun` sees it.
#[derive(Debug)]
pub struct Joined {
    /// The network.
    pub nwid: NetworkId,
    /// Its stack.
    pub stack: netstack::Stack,
    /// Our IPv4 address on it.
    pub ipv4: Option<std::net::Ipv4Addr>,
    /// Our IPv6 address on it.
    pub ipv6: Option<std::net::Ipv6Addr>,
}

/// Host the embedded default root in this process if nobody serves its endpoint yet.
/// Returns whether this process now hosts it.
pub fn host_default_root_if_free() -> anyhow::Result<bool> {
    let sock = match std::net::UdpSocket::bind(roots::DEFAULT_ROOT_ENDPOINT) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Ok(false),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot host the default root on {}",
                    roots::DEFAULT_ROOT_ENDPOINT
                )
            })
        }
    };
    sock.set_nonblocking(true)
        .context("cannot configure the default root's socket")?;
    let sockets = Sockets::from_std(Some(sock), None).context("default root socket")?;
    let root = Root::new(
        roots::default_root_secret(),
        identity::os_seed()?,
        Timing::default(),
        Instant::now(),
    );
    let (handle, _task) = spawn_root(root, sockets);
    // The root runs as long as this process; keep its handle alive with it.
    std::mem::forget(handle);
    tracing::info!(endpoint = %roots::DEFAULT_ROOT_ENDPOINT, "hosting the default root");
    Ok(true)
}

/// Start the node driver on an ephemeral UDP port.
pub async fn start_node(id: SecretIdentity, roots: Vec<RootSpec>) -> anyhow::Result<NodeHandle> {
    let sockets = Sockets::bind(0)
        .await
        .context("cannot open the overlay's UDP socket")?;
    let node = Node::new(
        NodeConfig::new(id, roots, identity::os_seed()?),
        Instant::now(),
    );
    let (handle, _task) = spawn_node(node, sockets);
    Ok(handle)
}

/// Wait until some root has answered (the node knows its observed endpoint), at most
/// `limit`. Returns the observed endpoint.
pub async fn wait_for_root(node: &NodeHandle, limit: Duration) -> Option<SocketAddr> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(st) = node.status().await {
            if st.observed.is_some() {
                return st.observed;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Join `nwid`: get its port from the node, build the stack, start the frame pumps.
pub async fn join(
    node: &NodeHandle,
    nwid: NetworkId,
    me: zt_core::Address,
) -> anyhow::Result<Joined> {
    if !nwid.is_adhoc() {
        anyhow::bail!(
            "network {nwid} has a controller, and this build of ztrun joins ad-hoc networks \
             (IDs starting with ff) only"
        );
    }
    let port = node
        .join(nwid)
        .await
        .with_context(|| format!("cannot join network {nwid}"))?;
    let mut cfg = netstack::StackConfig::new(port.config.mac.0);
    cfg.mtu = port.config.mtu;
    let v4 = netconf::adhoc_v4(nwid, me);
    let v6 = netconf::rfc4193(nwid, me);
    cfg.ipv4.push((v4, netconf::ADHOC_V4_PREFIX));
    cfg.ipv6.push((v6, netconf::RFC4193_PREFIX));
    let (ipv4, ipv6) = (Some(v4), Some(v6));
    let (stack, link) = netstack::Stack::new(cfg);
    pump(port, link);
    Ok(Joined {
        nwid,
        stack,
        ipv4,
        ipv6,
    })
}

/// Move frames between the overlay port and the stack until either side stops.
fn pump(port: NetworkPort, link: netstack::FrameLink) {
    let link = std::sync::Arc::new(link);
    let NetworkPort { tx, mut rx, .. } = port;
    let out_link = link.clone();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(64);
        loop {
            if out_link.recv_many(&mut batch, 64).await == 0 {
                break;
            }
            for frame in batch.drain(..) {
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            link.send(frame).await;
            if link.is_closed() {
                break;
            }
        }
    });
}

/// The addresses to show for a joined network.
pub fn describe(j: &Joined) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(v4) = j.ipv4 {
        parts.push(IpAddr::V4(v4).to_string());
    }
    if let Some(v6) = j.ipv6 {
        parts.push(IpAddr::V6(v6).to_string());
    }
    parts.join(" and ")
}
