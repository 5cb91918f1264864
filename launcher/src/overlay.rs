//! Joining networks: the node driver, one user-space stack per network, and the frame
//! pumps between them.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::watch;
use zt_core::controller::ConfigDenied;
use zt_core::driver::{spawn_node, spawn_root, FrameDevice, NetworkPort, NodeHandle, Sockets};
use zt_core::node::NetworkState;
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
    /// How its members are named in DNS.
    pub names: crate::names::NetworkNames,
    /// How long the controller refused this node (access denied) before the
    /// configuration came: the time spent waiting for `zt member authorize`.
    pub waited_for_authorization: Duration,
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
    tracing::debug!(endpoint = %roots::DEFAULT_ROOT_ENDPOINT, "hosting the default root");
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

/// Where the messages of a join (why it waits, what the controller later changes) go:
/// stderr for a `ztrun` that runs its node itself, the attached programs' terminals for
/// a shared node ([`crate::node`]).
pub type Say = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// Messages to this process's stderr.
pub fn say_on_stderr() -> Say {
    std::sync::Arc::new(|line: &str| eprintln!("{line}"))
}

/// Join `nwid`: get its port from the node (waiting for the controller's configuration
/// on controller networks), build the stack, start the frame pumps.
///
/// Ad-hoc networks use `ztrun`'s own addressing ([`netconf`]); on controller networks the
/// addresses, routes and MTU come from the signed configuration. While the controller
/// refuses this node, this waits and says on stderr what to run on the controller.
pub async fn join(
    node: &NodeHandle,
    nwid: NetworkId,
    me: zt_core::Address,
    say: Say,
) -> anyhow::Result<Joined> {
    let (port, waited_for_authorization) = if nwid.is_adhoc() {
        let port = node
            .join(nwid)
            .await
            .with_context(|| format!("cannot join network {nwid}"))?;
        (port, Duration::ZERO)
    } else {
        wait_for_config(node, nwid, me, &say).await?
    };
    let mut cfg = netstack::StackConfig::new(port.config.mac.0);
    cfg.mtu = port.config.mtu;
    if nwid.is_adhoc() {
        cfg.ipv4
            .push((netconf::adhoc_v4(nwid, me), netconf::ADHOC_V4_PREFIX));
        cfg.ipv6
            .push((netconf::rfc4193(nwid, me), netconf::RFC4193_PREFIX));
    } else {
        for (ip, prefix) in &port.config.addresses {
            match ip {
                IpAddr::V4(a) => cfg.ipv4.push((*a, *prefix)),
                IpAddr::V6(a) => cfg.ipv6.push((*a, *prefix)),
            }
        }
        cfg.routes = port
            .config
            .routes
            .iter()
            .map(|r| netstack::Route {
                dest: r.target,
                prefix_len: r.prefix,
                via: r.via,
            })
            .collect();
        if cfg.ipv4.is_empty() && cfg.ipv6.is_empty() {
            say(&format!(
                "ztrun: warning: the controller assigned this node no address on {nwid}; \
                 give the network an IPv4 pool or IPv6 assignment"
            ));
        }
    }
    let (ipv4, ipv6) = (cfg.ipv4.first().map(|a| a.0), cfg.ipv6.first().map(|a| a.0));
    let own: Vec<IpAddr> = (cfg.ipv4.iter().map(|a| IpAddr::V4(a.0)))
        .chain(cfg.ipv6.iter().map(|a| IpAddr::V6(a.0)))
        .collect();
    let names = crate::names::NetworkNames::new(nwid, me, &own, port.config.directory.clone());
    watch_state(nwid, me, port.state.clone(), names.clone(), say.clone());
    let (stack, link) = netstack::Stack::new(cfg);
    attach(node, nwid, port.rx, link).await?;
    Ok(Joined {
        nwid,
        stack,
        ipv4,
        ipv6,
        names,
        waited_for_authorization,
    })
}

/// How long a configuration request may go unanswered before `ztrun` says so.
const SILENT_CONTROLLER: Duration = Duration::from_secs(5);

/// Joins a controller network, telling the user why it waits (access denied, unknown
/// network, silent controller) until the configuration arrives. Returns the port and how
/// long access was denied (as seen at 200 ms polls).
async fn wait_for_config(
    node: &NodeHandle,
    nwid: NetworkId,
    me: zt_core::Address,
    say: &Say,
) -> anyhow::Result<(NetworkPort, Duration)> {
    let ctl = nwid
        .controller()
        .map_or_else(|| "?".to_string(), |a| a.to_string());
    let join = node.join(nwid);
    tokio::pin!(join);
    let started = Instant::now();
    let mut said: Option<NetworkState> = None;
    // Time spent denied so far, and since when it is denied now.
    let mut denied = Duration::ZERO;
    let mut denied_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            r = &mut join => {
                let port = r.with_context(|| format!("cannot join network {nwid}"))?;
                denied += denied_since.map_or(Duration::ZERO, |t| t.elapsed());
                return Ok((port, denied));
            }
            _ = tick.tick() => {
                let Ok(st) = node.status().await else { continue };
                let Some(state) = st.networks.into_iter().find(|n| n.nwid == nwid).map(|n| n.state)
                else { continue };
                let is_denied = state == NetworkState::Denied(ConfigDenied::AccessDenied);
                match (is_denied, denied_since) {
                    (true, None) => denied_since = Some(Instant::now()),
                    (false, Some(t)) => {
                        denied += t.elapsed();
                        denied_since = None;
                    }
                    _ => {}
                }
                if said.as_ref() == Some(&state) {
                    continue;
                }
                match &state {
                    NetworkState::Denied(ConfigDenied::AccessDenied) => say(&format!(
                        "ztrun: network {nwid} is private and this node ({me}) is not \
                         authorized: run `zt member authorize {nwid} {me}` on the controller \
                         (waiting; Ctrl-C to give up)"
                    )),
                    NetworkState::Denied(ConfigDenied::NotFound) => say(&format!(
                        "ztrun: controller {ctl} has no network {nwid}: check the ID (`zt net \
                         list` on the controller shows its networks) (waiting; Ctrl-C to give up)"
                    )),
                    NetworkState::Requesting if started.elapsed() >= SILENT_CONTROLLER => {
                        say(&format!(
                            "ztrun: no answer yet from controller {ctl} of network {nwid}: is \
                             `zt controller` running there, registered with the same root as \
                             this node? (waiting; Ctrl-C to give up)"
                        ))
                    }
                    _ => continue,
                }
                said = Some(state);
            }
        }
    }
}

/// Tells the user when the controller revokes this node (its traffic is then dropped by
/// the other members) and when it is authorized again.
fn watch_state(
    nwid: NetworkId,
    me: zt_core::Address,
    mut state: watch::Receiver<NetworkState>,
    names: crate::names::NetworkNames,
    say: Say,
) {
    tokio::spawn(async move {
        let mut denied = false;
        while state.changed().await.is_ok() {
            let now = state.borrow_and_update().clone();
            if let NetworkState::Ok(config) = &now {
                names.update(config.directory.clone());
            }
            match now {
                NetworkState::Denied(ConfigDenied::NotFound) if !denied => {
                    denied = true;
                    say(&format!(
                        "ztrun: the controller deleted network {nwid}: this node has no address \
                         on it any more and its traffic there stops; the program goes on \
                         (ztrun picks the network up again if the controller recreates it)"
                    ));
                }
                NetworkState::Denied(ConfigDenied::AccessDenied) if !denied => {
                    denied = true;
                    say(&format!(
                        "ztrun: the controller withdrew network {nwid} from this node ({me}): \
                         access denied; its traffic is dropped until `zt member authorize \
                         {nwid} {me}`"
                    ));
                }
                NetworkState::Ok(_) if denied => {
                    denied = false;
                    say(&format!("ztrun: network {nwid} is configured again"));
                }
                _ => {}
            }
        }
    });
}

/// The stack as the node driver's device: its frames cross no channel and no task.
struct StackDevice(netstack::FrameLink);

impl FrameDevice for StackDevice {
    fn deliver(&mut self, frames: &mut Vec<Vec<u8>>) {
        self.0.receive(frames);
    }

    fn poll_outgoing(
        &mut self,
        cx: &mut std::task::Context<'_>,
        out: &mut Vec<Vec<u8>>,
        max: usize,
    ) -> std::task::Poll<usize> {
        self.0.poll_recv_many(cx, out, max)
    }

    fn recycle(&mut self, spent: &mut Vec<Vec<u8>>) {
        self.0.recycle(spent.drain(..));
    }
}

/// Attach the stack to the node driver, after handing the stack the frames that
/// arrived on the port before. (A frame arriving between the two is lost, as one
/// arriving at a NIC being brought up is.)
async fn attach(
    node: &NodeHandle,
    nwid: NetworkId,
    mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    link: netstack::FrameLink,
) -> anyhow::Result<()> {
    let mut early = Vec::new();
    while let Ok(frame) = rx.try_recv() {
        early.push(frame);
    }
    link.receive(&mut early);
    node.attach(nwid, StackDevice(link))
        .await
        .with_context(|| format!("cannot attach the stack of network {nwid}"))
}

/// `; name NODE.NWID.zt` (or the member's name) as the joined line ends: the name other
/// programs on the network can use for this node, when it resolves; empty otherwise.
pub fn name_suffix(j: &Joined, me: zt_core::Address) -> String {
    let nwid = j.nwid;
    match j.names.name_of(me) {
        Some(n) => format!("; name {n}.{nwid}.zt"),
        None if j.names.addresses(me).is_empty() => String::new(),
        None => format!("; name {me}.{nwid}.zt"),
    }
}

/// `in N ms` of the joined line, or `in N ms after M ms waiting for authorization`: time
/// spent waiting for `zt member authorize` is the administrator's, not the join's.
pub fn join_time(total: Duration, waited_for_authorization: Duration) -> String {
    let waited = waited_for_authorization.min(total);
    if waited.is_zero() {
        format!("in {} ms", total.as_millis())
    } else {
        format!(
            "in {} ms after {} ms waiting for authorization",
            (total - waited).as_millis(),
            waited.as_millis()
        )
    }
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
