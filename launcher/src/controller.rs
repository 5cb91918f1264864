//! `zt controller`: a node that hosts a network controller, its embedded store, and the
//! JSON-over-HTTP management API (see [`crate::api`] for the endpoints).
//!
//! The controller's home directory holds:
//!
//! - `identity.secret` / `identity.public`: the controller node's identity. Its address is
//!   the first 10 hex digits of every network it creates.
//! - `controller.redb`: networks and members (zt-core's `RedbStore`, one record per
//!   network and per member), the changed records saved after every change made through
//!   the API and, every 10 s, when members' last-request times changed; restored at start.
//!   A database that cannot be read completely stops the start with the reason and what
//!   to do; nothing is written then. `--reset` moves it aside
//!   (`controller.redb.reset-UNIXTIME`) and starts with no networks.
//! - `controller.redb.schema1.backup`: the database as it was before an upgrade of its
//!   layout.
//! - `authtoken.secret` (mode 0600): the API token, generated on first start.
//! - `controller.api`: the address the API listens on, for `zt net` and `zt member`.
//!
//! The API listens on loopback only; anyone who can read the token file can manage the
//! networks. Every change goes through the node driver, so changes, revocations and saves
//! happen in one order.
//!
//! Start-up checks before it writes anything: the API address can be bound, the home is a
//! home ([`home::prepare`]), the database loads completely, and the identity beside an
//! existing database is the one whose networks it holds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use zt_core::controller::store::{ControllerState, RedbStore, Store, StoreError};
use zt_core::controller::{
    rfc4193_address, sixplane_address, Controller, ControllerError, Member, NetworkSettings,
};
use zt_core::driver::{DriverError, NodeHandle, Sockets};
use zt_core::node::RootSpec;
use zt_core::wire::credential::Route;
use zt_core::{Address, NetworkId, Node, NodeConfig};

use crate::api::{
    parse_cidr, ControllerInfo, ErrorJson, Ipv4Pool, MemberChange, MemberJson, NetworkChange,
    NetworkJson, RouteJson, V6AssignMode, API_FILE, AUTH_HEADER, MAX_BODY, TOKEN_FILE,
};
use crate::connections::{self, Connections, Proof};
use crate::roots::RootArg;
use crate::{home, identity, overlay, roots};

pub mod postgres;
mod replica;

/// Name of the controller database inside the controller's home.
pub const STORE_FILE: &str = "controller.redb";
const SAVE_EVERY: Duration = Duration::from_secs(10);
/// As [`SAVE_EVERY`] for replicas on PostgreSQL: an address assigned to a member must be
/// in the database before a standby that takes over hands out addresses.
const SAVE_EVERY_SHARED: Duration = Duration::from_millis(250);
/// A member that asked for its configuration this recently is online ([`MemberJson`]):
/// members ask every `Timing::config_refresh` (30 s), so this allows one lost request.
pub const ONLINE_WITHIN: Duration = Duration::from_secs(65);

/// How to run a controller.
#[derive(Debug, Clone)]
pub struct Options {
    /// The controller's home directory.
    pub home: PathBuf,
    /// UDP address of the node (default: an ephemeral port on every interface).
    pub listen: Option<SocketAddr>,
    /// Roots to register with (default: the embedded root on 127.0.0.1:9993).
    pub roots: Vec<RootArg>,
    /// Where the API listens; must be a loopback address.
    pub api: SocketAddr,
    /// Move an existing database aside and start with no networks.
    pub reset: bool,
    /// A PostgreSQL database (`postgres://…`) instead of the embedded store; replicas
    /// with the same identity and database take turns on the overlay.
    pub store: Option<String>,
}

/// The controller's home directory: `--home`, else `controller/` inside the directory
/// `ztrun` would use (so the controller never shares a `ztrun`'s identity).
pub fn resolve_home(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    match explicit {
        Some(p) => Ok(p.to_owned()),
        None => Ok(home::resolve(None)?.join("controller")),
    }
}

/// Reads the API token of `home`, generating it on first use.
pub fn load_or_create_token(home: &Path) -> anyhow::Result<String> {
    let file = home.join(TOKEN_FILE);
    match std::fs::read_to_string(&file) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        Ok(_) => anyhow::bail!("{} is empty; delete it to get a new token", file.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed = identity::os_seed()?;
            let token: String = seed[..24].iter().map(|b| format!("{b:02x}")).collect();
            home::write_private(&file, token.as_bytes())
                .with_context(|| format!("cannot write {}", file.display()))?;
            Ok(token)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

/// How many API connections this process can hold: its descriptor limit is first raised
/// to the hard limit, and descriptors are kept for its own files
/// ([`connections::capacity`]).
fn api_capacity() -> usize {
    crate::sys::raise_nofile_limit();
    let nofile = crate::sys::nofile_soft_limit().unwrap_or(1024);
    let in_use = std::fs::read_dir("/proc/self/fd").map_or(64, |d| d.count());
    let capacity = connections::capacity(nofile, in_use);
    tracing::debug!(nofile, in_use, capacity, "API connection limit");
    capacity
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs a controller until SIGINT or SIGTERM. `ready` is called once the API listens,
/// with the controller's address and the API address.
pub async fn run(opts: Options, ready: impl FnOnce(Address, SocketAddr)) -> anyhow::Result<()> {
    if !opts.api.ip().is_loopback() {
        anyhow::bail!(
            "--api {}: the management API listens on loopback only (e.g. 127.0.0.1:9994)",
            opts.api
        );
    }
    // The API address first: a controller that cannot serve writes nothing.
    let listener = tokio::net::TcpListener::bind(opts.api)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the API (another controller? choose --api); \
                 nothing was written",
                opts.api
            )
        })?;
    home::prepare(&opts.home)?;
    let lock = crate::status::HomeLock::acquire(&opts.home)?;
    let store_path = opts.home.join(STORE_FILE);
    if opts.reset {
        if opts.store.is_some() {
            anyhow::bail!(
                "--reset moves the embedded database aside; a controller on PostgreSQL starts \
                 anew with an empty database"
            );
        }
        reset(&store_path)?;
    }
    let (id, store, controller, shared) = match &opts.store {
        Some(url) => open_postgres(&opts.home, url)?,
        None => {
            let (id, store, controller) = open_state(&opts.home, &store_path)?;
            (id, store, controller, None)
        }
    };
    let token = load_or_create_token(&opts.home)?;
    let api_file = opts.home.join(API_FILE);
    let _ = std::fs::remove_file(&api_file);
    let networks = controller.networks().len();

    // Without --root, the machine's default root: hosted here if nobody serves it yet,
    // which the start-up line says (it goes when the controller stops).
    let mut hosting_root = false;
    let root_args = if opts.roots.is_empty() {
        hosting_root = overlay::host_default_root_if_free()?;
        vec![RootArg {
            identity: None,
            endpoint: roots::DEFAULT_ROOT_ENDPOINT,
        }]
    } else {
        opts.roots.clone()
    };
    let overlay = Overlay {
        id: id.clone(),
        store: store.clone(),
        roots: roots::specs(&root_args),
        listen: opts.listen,
        lock: &lock,
    };
    // On PostgreSQL the node goes on the overlay once this replica holds the lock.
    let node = overlay.start(controller, shared.is_none()).await?;

    let api_addr = listener.local_addr().context("API socket")?;
    home::write_private(&api_file, format!("{api_addr}\n").as_bytes())
        .with_context(|| format!("cannot write {}", api_file.display()))?;
    let location = store.location().to_string();
    let service = Arc::new(Service {
        node: std::sync::RwLock::new(node),
        store,
        token,
        address: id.address(),
    });
    eprintln!(
        "zt: controller {} with {networks} network(s) from {location}; API on \
         http://{api_addr} (token in {})",
        id.address(),
        opts.home.join(TOKEN_FILE).display()
    );
    if hosting_root {
        eprintln!(
            "zt: this controller also hosts the machine's default root on {} (no process \
             served it): ztruns and controllers without --root register with it, and it stops \
             with the controller; pass --root to use another root",
            roots::DEFAULT_ROOT_ENDPOINT
        );
    }
    ready(id.address(), api_addr);

    let saver = service.clone();
    let periodic = service.clone();
    let replicas = service.clone();
    let save_every = if shared.is_some() {
        SAVE_EVERY_SHARED
    } else {
        SAVE_EVERY
    };
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(save_every).await;
            match periodic.save_pending().await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot save the controller state"),
                // A replica replacing its node; at exit the process ends this task.
                Err(DriverError::Stopped) => {}
                Err(e) => tracing::warn!(error = %e, "cannot save the controller state"),
            }
        }
    });

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    let conns = Arc::new(Connections::new(api_capacity()));
    let api = connections::serve(listener, conns, move |req, proof| {
        let svc = service.clone();
        async move { svc.serve(req, &proof).await }
    });
    let replicas = async {
        match &shared {
            Some(db) => {
                tokio::join!(
                    replica::hold_active(&replicas, &overlay, db),
                    replica::follow(&replicas, db)
                );
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = api => {}
        () = replicas => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = std::fs::remove_file(&api_file);
    saver.save_pending().await??;
    Ok(())
}

/// How the controller's node is made: on the overlay (with its roots), or, for a replica
/// standing by, with no roots (it serves the API and reaches nobody).
struct Overlay<'a> {
    id: zt_core::SecretIdentity,
    store: Arc<dyn Store>,
    roots: Vec<RootSpec>,
    listen: Option<SocketAddr>,
    lock: &'a crate::status::HomeLock,
}

/// A running node and its driver's task.
struct Running {
    handle: NodeHandle,
    task: tokio::task::JoinHandle<()>,
}

impl Overlay<'_> {
    /// Starts a node hosting `controller`, on the overlay or not.
    async fn start(&self, controller: Controller, online: bool) -> anyhow::Result<Running> {
        let sockets = if online {
            let mut tries = 0;
            loop {
                // A node this process just stopped may hold the port for a moment.
                let bound = match self.listen {
                    Some(a) => Sockets::bind_addrs(&[a]).await,
                    None => Sockets::bind(0).await,
                };
                match bound {
                    Ok(s) => break s,
                    Err(e) if tries < 20 && self.listen.is_some() => {
                        tracing::debug!(error = %e, "UDP address busy; trying again");
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => {
                        return Err(e).context("cannot open the controller node's UDP socket")
                    }
                }
            }
        } else {
            Sockets::bind_addrs(&[SocketAddr::from(([127, 0, 0, 1], 0))])
                .await
                .context("cannot open the standby node's UDP socket")?
        };
        let roots = if online {
            self.roots.clone()
        } else {
            Vec::new()
        };
        let mut node = Node::new(
            NodeConfig::new(self.id.clone(), roots, identity::os_seed()?),
            Instant::now(),
        );
        node.attach_controller(controller);
        // Addresses assigned go to the database before the configurations carrying
        // them: a standby taking over must not hand them out again.
        let store = self.store.clone();
        let before_send: zt_core::driver::BeforeSend = Box::new(move |c| {
            let changes = c.take_changes();
            if let Err(e) = store.apply(&changes) {
                tracing::warn!(error = %e, "cannot store an assigned address");
                c.unsaved(&changes);
            }
        });
        let (handle, task) = zt_core::driver::spawn_node_with(node, sockets, Some(before_send));
        if online {
            // Ends when the node stops.
            let _ = crate::status::spawn_writer(self.lock, handle.clone(), Default::default());
        }
        Ok(Running { handle, task })
    }
}

/// The identity of `home` and the state in the PostgreSQL database `url`, checked against
/// each other (the database records whose networks it holds).
type Opened = (
    zt_core::SecretIdentity,
    Arc<dyn Store>,
    Controller,
    Option<replica::Shared>,
);

fn open_postgres(home: &Path, url: &str) -> anyhow::Result<Opened> {
    let (id, _) = identity::load_or_create(home)?;
    let (store, state, _) = postgres::PgStore::open(url, Some(id.address()))
        .map_err(|e| anyhow::anyhow!("{e}; the controller did not start"))?;
    if let Some(other) = state
        .networks
        .keys()
        .find(|n| n.controller() != Some(id.address()))
    {
        anyhow::bail!(
            "{} holds network {other}, which is not run by this controller ({})",
            store.location(),
            id.address()
        );
    }
    let shared = replica::Shared {
        cfg: postgres::config(url)?,
        location: store.location().to_string(),
        replica: store.replica(),
    };
    let controller = Controller::from_state(id.clone(), unix_ms(), Instant::now(), state);
    Ok((id, Arc::new(store), controller, Some(shared)))
}

/// The identity of `home`, which must exist.
fn existing_identity(home: &Path) -> anyhow::Result<zt_core::SecretIdentity> {
    let path = home.join(identity::SECRET_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (the controller's identity; export and import need it)",
            path.display()
        )
    })?;
    identity::parse(&text, &path)
}

/// `zt controller export`: the state of the controller in `home` (or in the PostgreSQL
/// database `store`) as JSON ([`zt_core::controller::store::export_json`]).
pub fn export(home: &Path, store: Option<&str>) -> anyhow::Result<String> {
    let (address, state) = match store {
        Some(url) => {
            let (_, state, owner) = postgres::PgStore::open(url, None)?;
            let address = match owner {
                Some(a) => a,
                None if state.networks.is_empty() => existing_identity(home)?.address(),
                None => anyhow::bail!("{}: no controller address recorded", postgres::redact(url)),
            };
            (address, state)
        }
        None => {
            let path = home.join(STORE_FILE);
            if std::fs::symlink_metadata(&path).is_err() {
                anyhow::bail!("{} does not exist: nothing to export", path.display());
            }
            let id = existing_identity(home)?;
            let (_, state) = open_store(&path).context(
                "cannot open the controller database (a running controller keeps it open: \
                 stop it first, or run it on PostgreSQL)",
            )?;
            (id.address(), state)
        }
    };
    Ok(zt_core::controller::store::export_json(address, &state))
}

/// `zt controller import`: writes an export into the embedded store of `home` or into the
/// PostgreSQL database `store`, which must hold no networks. The identity in `home` must
/// be the exported controller's (it signs the networks' configurations). Returns the
/// number of networks and members imported.
pub fn import(home: &Path, store: Option<&str>, text: &str) -> anyhow::Result<(usize, usize)> {
    use zt_core::controller::store::{changes_of, import_json};
    let (address, state) = import_json(text)?;
    let id = existing_identity(home)?;
    if id.address() != address {
        anyhow::bail!(
            "the export is of controller {address}, and the identity in {} is {}: copy the \
             exported controller's identity.secret and identity.public there first",
            home.display(),
            id.address()
        );
    }
    let target: Box<dyn Store> = match store {
        Some(url) => Box::new(postgres::PgStore::open(url, Some(address))?.0),
        None => {
            home::prepare(home)?;
            Box::new(open_store(&home.join(STORE_FILE))?.0)
        }
    };
    let held = target.load()?;
    if !held.networks.is_empty() {
        anyhow::bail!(
            "{} already holds {} network(s); import only into an empty store",
            target.location(),
            held.networks.len()
        );
    }
    target.apply(&changes_of(&state))?;
    let members = state.networks.values().map(|n| n.members.len()).sum();
    Ok((state.networks.len(), members))
}

/// What to do about a database that does not load.
fn advice(path: &Path) -> String {
    let backup = RedbStore::backup_path(path, 1);
    let backup = if backup.exists() {
        format!(
            " (the copy made before its last upgrade is {})",
            backup.display()
        )
    } else {
        String::new()
    };
    format!(
        "the controller did not start and wrote nothing. Restore {} from a backup{backup}, \
         or, to start with no networks on purpose, run `zt controller --reset` (it keeps the \
         file aside)",
        path.display()
    )
}

/// Opens the database at `path` (see [`RedbStore::open`]), adding what to do to an error.
/// The database engine can panic on some damaged files; the panic is caught there, and
/// the default panic message is kept off the terminal meanwhile.
fn open_store(path: &Path) -> anyhow::Result<(RedbStore, ControllerState)> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened = RedbStore::open(path);
    std::panic::set_hook(hook);
    opened.map_err(|e| {
        let more = match &e {
            StoreError::Newer { .. } | StoreError::Backup { .. } => {
                "the controller did not start".to_string()
            }
            _ => advice(path),
        };
        anyhow::anyhow!("{e}; {more}")
    })
}

/// The controller's identity, store and state from `home`, checked against each other:
/// an existing database needs the identity whose networks it holds. Fails before writing
/// anything if the database does not load or the identity is missing.
fn open_state(
    home: &Path,
    store_path: &Path,
) -> anyhow::Result<(zt_core::SecretIdentity, Arc<dyn Store>, Controller)> {
    let secret = home.join(identity::SECRET_FILE);
    let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    let existing = if exists(store_path) {
        if !exists(&secret) {
            anyhow::bail!(
                "{} is missing, but {} exists: its networks belong to the controller identity \
                 that file held, and a new identity could not serve them. Restore {} (and \
                 identity.public) from a backup, or, to start over with a new identity and no \
                 networks, run `zt controller --reset` (it keeps the database aside)",
                secret.display(),
                store_path.display(),
                secret.display()
            );
        }
        Some(open_store(store_path)?)
    } else {
        None
    };
    let (id, _) = identity::load_or_create(home)?;
    if let Some((_, state)) = &existing {
        if let Some(other) = state
            .networks
            .keys()
            .find(|n| n.controller() != Some(id.address()))
        {
            anyhow::bail!(
                "{} holds network {other}, which is not run by the identity in {} ({}): \
                 restore the controller's own identity file, or run `zt controller --reset` \
                 to start with no networks",
                store_path.display(),
                secret.display(),
                id.address()
            );
        }
    }
    let (store, state) = match existing {
        Some(x) => x,
        None => open_store(store_path)?,
    };
    let controller = Controller::from_state(id.clone(), unix_ms(), Instant::now(), state);
    Ok((id, Arc::new(store), controller))
}

/// Moves the database aside (`--reset`).
fn reset(store_path: &Path) -> anyhow::Result<()> {
    if std::fs::symlink_metadata(store_path).is_err() {
        return Ok(());
    }
    let mut name = store_path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".reset-{}", unix_ms() / 1000));
    let aside = store_path.with_file_name(name);
    if std::fs::symlink_metadata(&aside).is_ok() {
        anyhow::bail!("{} exists already; try again in a second", aside.display());
    }
    std::fs::rename(store_path, &aside).with_context(|| {
        format!(
            "cannot move {} aside to {}",
            store_path.display(),
            aside.display()
        )
    })?;
    eprintln!(
        "zt: --reset: the controller database is now {}; starting with no networks",
        aside.display()
    );
    Ok(())
}

/// An error answer of the API.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Failure::new(StatusCode::NOT_FOUND, message)
    }
    fn internal(message: impl Into<String>) -> Self {
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<DriverError> for Failure {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::Controller(ControllerError::UnknownNetwork { nwid }) => {
                Failure::not_found(format!("network {nwid} not found on this controller"))
            }
            DriverError::Controller(ControllerError::UnknownMember { nwid, member }) => {
                Failure::not_found(format!(
                    "{member} is not a member of network {nwid} (`zt member list {nwid}` \
                     shows its members)"
                ))
            }
            DriverError::Controller(
                e @ (ControllerError::Settings { .. } | ControllerError::MemberName { .. }),
            ) => Failure::bad(e.to_string()),
            e => Failure::internal(e.to_string()),
        }
    }
}

type Answer = Result<(StatusCode, serde_json::Value), Failure>;

fn ok(v: impl Serialize) -> Answer {
    serde_json::to_value(v)
        .map(|v| (StatusCode::OK, v))
        .map_err(|e| Failure::internal(e.to_string()))
}

/// The API's state: the node that hosts the controller, the store and the token.
struct Service {
    /// Replaced when a replica goes on or off the overlay.
    node: std::sync::RwLock<Running>,
    store: Arc<dyn Store>,
    token: String,
    address: Address,
}

/// Compares without stopping at the first difference (the token is a secret).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `counts`: the network's members and how many are authorized.
fn network_json(nwid: NetworkId, s: &NetworkSettings, counts: (usize, usize)) -> NetworkJson {
    NetworkJson {
        id: nwid.to_string(),
        name: s.name.clone(),
        private: s.private,
        mtu: s.mtu,
        ipv4_pool: s
            .ipv4_pool
            .map(|(start, end, prefix)| Ipv4Pool { start, end, prefix }),
        v6_assign_mode: V6AssignMode {
            rfc4193: s.rfc4193,
            sixplane: s.sixplane,
        },
        routes: s
            .routes
            .iter()
            .map(|r| RouteJson {
                target: format!("{}/{}", r.target, r.prefix),
                via: r.via,
            })
            .collect(),
        member_count: counts.0,
        authorized_member_count: counts.1,
    }
}

fn member_json(nwid: NetworkId, s: &NetworkSettings, a: Address, m: &Member) -> MemberJson {
    let mut ips: Vec<std::net::IpAddr> = m.ipv4.into_iter().map(Into::into).collect();
    if s.rfc4193 {
        ips.push(rfc4193_address(nwid, a).into());
    }
    if s.sixplane {
        ips.push(sixplane_address(nwid, a).into());
    }
    MemberJson {
        id: a.to_string(),
        nwid: nwid.to_string(),
        authorized: m.authorized,
        ip_assignments: ips,
        last_request: m.last_request,
        name: m.name.clone(),
        online: m
            .last_request
            .is_some_and(|t| unix_ms().saturating_sub(t) <= ONLINE_WITHIN.as_millis() as u64),
    }
}

/// Applies a change to settings.
fn apply(mut s: NetworkSettings, c: NetworkChange) -> Result<NetworkSettings, Failure> {
    if let Some(n) = c.name {
        s.name = n;
    }
    if let Some(p) = c.private {
        s.private = p;
    }
    if let Some(m) = c.mtu {
        s.mtu = m;
    }
    if let Some(pool) = c.ipv4_pool {
        s.ipv4_pool = pool.map(|p| (p.start, p.end, p.prefix));
    }
    if let Some(v6) = c.v6_assign_mode {
        s.rfc4193 = v6.rfc4193;
        s.sixplane = v6.sixplane;
    }
    if let Some(routes) = c.routes {
        s.routes = routes
            .into_iter()
            .map(|r| {
                let (target, prefix) = parse_cidr(&r.target).map_err(Failure::bad)?;
                Ok(Route {
                    target,
                    prefix,
                    via: r.via,
                })
            })
            .collect::<Result<_, Failure>>()?;
    }
    s.validate().map_err(|e| Failure::bad(e.to_string()))?;
    Ok(s)
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Failure::bad(format!("malformed JSON body: {e}")))
}

impl Service {
    /// The node that hosts the controller now.
    fn node(&self) -> NodeHandle {
        self.node
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .handle
            .clone()
    }

    /// Hosts the controller on `node` from now on; the previous node stops.
    fn replace_node(&self, node: Running) {
        let old = std::mem::replace(
            &mut *self
                .node
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            node,
        );
        old.task.abort();
    }

    /// Answers one request; tells `proof` when it carries the token. Answers to requests
    /// without the token, or whose body is too large or too slow, close the connection.
    async fn serve(&self, req: Request<Incoming>, proof: &Proof) -> Response<Full<Bytes>> {
        let authorized = {
            let h = req.headers();
            let given = h
                .get(AUTH_HEADER)
                .and_then(|v| v.to_str().ok())
                .or_else(|| {
                    h.get(hyper::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                });
            given.is_some_and(|t| same_secret(t.trim().as_bytes(), self.token.as_bytes()))
        };
        let method = req.method().clone();
        let path = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
        if authorized {
            proof.token_shown();
        }
        let answer = if !authorized {
            Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                format!(
                    "missing or wrong token: send the token from the controller's {TOKEN_FILE} \
                     in an {AUTH_HEADER} header or as Authorization: Bearer"
                ),
            ))
        } else {
            let body = Limited::new(req.into_body(), MAX_BODY).collect();
            match tokio::time::timeout(connections::BODY_TIMEOUT, body).await {
                Ok(Ok(body)) => self.handle(&method, &path, &body.to_bytes()).await,
                Ok(Err(e)) => Err(Failure::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("cannot read the request body (at most {MAX_BODY} bytes): {e}"),
                )),
                Err(_) => Err(Failure::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} s",
                        connections::BODY_TIMEOUT.as_secs()
                    ),
                )),
            }
        };
        let close = matches!(
            &answer,
            Err(f) if matches!(
                f.status,
                StatusCode::UNAUTHORIZED | StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
            )
        );
        let (status, value) = match answer {
            Ok(x) => x,
            Err(f) => {
                tracing::debug!(%method, %path, status = %f.status, error = %f.message, "API error");
                let v = serde_json::to_value(ErrorJson { error: f.message })
                    .unwrap_or(serde_json::Value::Null);
                (f.status, v)
            }
        };
        let mut body = serde_json::to_vec_pretty(&value).unwrap_or_default();
        body.push(b'\n');
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        if close {
            resp.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
        }
        resp
    }

    /// Routes one authorized request.
    async fn handle(&self, method: &Method, path: &str, body: &[u8]) -> Answer {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let nwid = |s: &str| {
            s.parse::<NetworkId>()
                .map_err(|e| Failure::bad(format!("network ID {s:?}: {e}")))
        };
        let member = |s: &str| {
            s.parse::<Address>()
                .map_err(|e| Failure::bad(format!("node address {s:?}: {e}")))
        };
        let m = method.clone();
        match (segs.as_slice(), m) {
            (["controller"], Method::GET) => {
                let clock = self
                    .node()
                    .with_controller(|c| c.clock(Instant::now()))
                    .await?;
                ok(ControllerInfo {
                    controller: true,
                    address: self.address.to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    clock,
                })
            }
            (["controller", "network"], Method::GET) => {
                let list = self
                    .node()
                    .with_controller(|c| {
                        c.networks()
                            .into_iter()
                            .map(|(n, s)| {
                                network_json(n, &s, c.member_count(n).unwrap_or_default())
                            })
                            .collect::<Vec<_>>()
                    })
                    .await?;
                ok(list)
            }
            (["controller", "network"], Method::POST) => {
                let change: NetworkChange = parse_body(body)?;
                let settings = apply(NetworkSettings::default(), change)?;
                let seed = identity::os_seed().map_err(|e| Failure::internal(e.to_string()))?;
                let net = self
                    .node()
                    .with_controller(move |c| {
                        let taken: Vec<u32> = c
                            .networks()
                            .iter()
                            .map(|(n, _)| n.network_number())
                            .collect();
                        let start = u32::from_be_bytes([0, seed[0], seed[1], seed[2]]);
                        let number = (0..1u32 << 24)
                            .map(|i| (start + i) & 0xff_ffff)
                            .find(|n| !taken.contains(n))
                            .ok_or(ControllerError::Settings {
                                reason: "every network number is taken",
                            })?;
                        let nwid = c.create_network(number, settings.clone())?;
                        Ok::<_, ControllerError>(network_json(nwid, &settings, (0, 0)))
                    })
                    .await?
                    .map_err(DriverError::from)?;
                self.save().await?;
                ok(net)
            }
            (["controller", "network", n], m) => {
                let nwid = nwid(n)?;
                match m {
                    Method::GET => ok(self.network(nwid).await?),
                    Method::POST => {
                        if nwid.controller() != Some(self.address) {
                            return Err(Failure::bad(format!(
                                "network {nwid} belongs to another controller; this one \
                                 ({}) runs networks {}xxxxxx",
                                self.address, self.address
                            )));
                        }
                        let change: NetworkChange = parse_body(body)?;
                        let net = self
                            .node()
                            .with_controller(move |c| {
                                let old = c
                                    .networks()
                                    .into_iter()
                                    .find(|(n, _)| *n == nwid)
                                    .map(|(_, s)| s)
                                    .unwrap_or_default();
                                let s = apply(old, change)?;
                                c.create_network(nwid.network_number(), s.clone())
                                    .map_err(|e| Failure::bad(e.to_string()))?;
                                Ok::<_, Failure>(network_json(
                                    nwid,
                                    &s,
                                    c.member_count(nwid).unwrap_or_default(),
                                ))
                            })
                            .await??;
                        self.save().await?;
                        // Online members get the new settings now, not at their next refresh.
                        self.node().push_configs(nwid).await?;
                        ok(net)
                    }
                    Method::DELETE => {
                        let net = self.network(nwid).await?;
                        // Members that asked are told at once that it is gone.
                        self.node().delete_network(nwid).await?;
                        self.save().await?;
                        ok(net)
                    }
                    _ => Err(not_allowed(method, path)),
                }
            }
            (["controller", "network", n, "member"], Method::GET) => {
                let nwid = nwid(n)?;
                let page = Page::parse(query)?;
                let list = self
                    .node()
                    .with_controller(move |c| {
                        let s = settings_of(c, nwid)?;
                        Ok::<_, ControllerError>(
                            c.members(nwid)?
                                .iter()
                                .skip(page.offset)
                                .take(page.limit)
                                .map(|(a, m)| member_json(nwid, &s, *a, m))
                                .collect::<Vec<_>>(),
                        )
                    })
                    .await?
                    .map_err(DriverError::from)?;
                ok(list)
            }
            (["controller", "network", n, "member", a], m) => {
                let (nwid, addr) = (nwid(n)?, member(a)?);
                match m {
                    Method::GET => {}
                    Method::DELETE => {
                        let s = self
                            .node()
                            .with_controller(move |c| settings_of(c, nwid))
                            .await?
                            .map_err(DriverError::from)?;
                        let record = self.node().delete_member(nwid, addr).await?;
                        self.save().await?;
                        return ok(member_json(nwid, &s, addr, &record));
                    }
                    Method::POST => {
                        let change: MemberChange = parse_body(body)?;
                        if let Some(name) = change.name {
                            // Named before authorized is fine: the name waits with the
                            // member's record.
                            self.node()
                                .with_controller(move |c| c.set_member_name(nwid, addr, name))
                                .await?
                                .map_err(DriverError::from)?;
                            // Members resolve the name at once, not at their next refresh.
                            self.node().push_configs(nwid).await?;
                        }
                        match change.authorized {
                            Some(auth) => {
                                self.node().set_member_authorized(nwid, addr, auth).await?;
                            }
                            None => {
                                // Record the member (not authorized) if it is new.
                                self.node()
                                    .with_controller(move |c| {
                                        if c.member(nwid, addr)?.is_some() {
                                            return Ok(None);
                                        }
                                        c.set_authorized(Instant::now(), nwid, addr, false)
                                    })
                                    .await?
                                    .map_err(DriverError::from)?;
                            }
                        }
                        self.save().await?;
                    }
                    _ => return Err(not_allowed(method, path)),
                }
                let found = self
                    .node()
                    .with_controller(move |c| {
                        let s = settings_of(c, nwid)?;
                        Ok::<_, ControllerError>(
                            c.member(nwid, addr)?
                                .map(|m| member_json(nwid, &s, addr, m)),
                        )
                    })
                    .await?
                    .map_err(DriverError::from)?;
                match found {
                    Some(m) => ok(m),
                    None => Err(Failure::not_found(format!(
                        "{addr} is not a member of network {nwid} (it appears once it asks \
                         to join, or after `zt member authorize`)"
                    ))),
                }
            }
            (
                ["controller"] | ["controller", "network"] | ["controller", "network", _, "member"],
                _,
            ) => Err(not_allowed(method, path)),
            _ => Err(Failure::not_found(format!("no such API path: {path}"))),
        }
    }

    async fn network(&self, nwid: NetworkId) -> Result<NetworkJson, Failure> {
        Ok(self
            .node()
            .with_controller(move |c| {
                let s = settings_of(c, nwid)?;
                Ok::<_, ControllerError>(network_json(nwid, &s, c.member_count(nwid)?))
            })
            .await?
            .map_err(DriverError::from)?)
    }

    /// Stores the records changed since the last save (inside the driver, so saves keep
    /// the changes' order). Records a failed save could not store stay pending.
    async fn save(&self) -> Result<(), Failure> {
        self.save_pending()
            .await?
            .map_err(|e| Failure::internal(format!("the change is not saved: {e}")))
    }

    /// As [`Service::save`], keeping the driver's and the store's errors apart.
    async fn save_pending(&self) -> Result<Result<(), StoreError>, DriverError> {
        let store = self.store.clone();
        self.node()
            .with_controller(move |c| {
                if !c.has_changes() {
                    return Ok(());
                }
                let changes = c.take_changes();
                store.apply(&changes).inspect_err(|_| c.unsaved(&changes))
            })
            .await
    }
}

/// A page of a list: `?offset=N&limit=M` (members in address order; the network's
/// `memberCount` says how many there are). Without them, the whole list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Page {
    offset: usize,
    limit: usize,
}

impl Page {
    fn parse(query: &str) -> Result<Page, Failure> {
        let mut page = Page {
            offset: 0,
            limit: usize::MAX,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let n: usize = v.parse().map_err(|_| {
                Failure::bad(format!("{k}={v:?}: a page is ?offset=N&limit=M (numbers)"))
            })?;
            match k {
                "offset" => page.offset = n,
                "limit" => page.limit = n,
                _ => {
                    return Err(Failure::bad(format!(
                        "unknown parameter {k:?}: a page is ?offset=N&limit=M"
                    )))
                }
            }
        }
        Ok(page)
    }
}

fn settings_of(c: &Controller, nwid: NetworkId) -> Result<NetworkSettings, ControllerError> {
    c.networks()
        .into_iter()
        .find(|(n, _)| *n == nwid)
        .map(|(_, s)| s)
        .ok_or(ControllerError::UnknownNetwork { nwid })
}

fn not_allowed(method: &Method, path: &str) -> Failure {
    Failure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {path}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use zt_core::driver::spawn_node;

    async fn service(dir: &Path) -> Service {
        let id = identity::generate().unwrap();
        let (store, state) = RedbStore::open(&dir.join(STORE_FILE)).unwrap();
        let c = Controller::from_state(id.clone(), unix_ms(), Instant::now(), state);
        let mut node = Node::new(NodeConfig::new(id.clone(), vec![], [7; 32]), Instant::now());
        node.attach_controller(c);
        let sockets = Sockets::bind_addrs(&["127.0.0.1:0".parse().unwrap()])
            .await
            .unwrap();
        let (handle, task) = spawn_node(node, sockets);
        Service {
            node: std::sync::RwLock::new(Running { handle, task }),
            store: Arc::new(store),
            token: "secret".into(),
            address: id.address(),
        }
    }

    #[tokio::test]
    async fn routes_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path()).await;
        let (st, net) = svc
            .handle(
                &Method::POST,
                "/controller/network",
                br#"{"name":"lab","ipv4Pool":{"start":"10.1.0.1","end":"10.1.0.9","prefix":24}}"#,
            )
            .await
            .unwrap();
        assert_eq!(st, StatusCode::OK);
        let net: NetworkJson = serde_json::from_value(net).unwrap();
        assert!(net.id.starts_with(&svc.address.to_string()));
        assert!(net.private);
        let nwid = net.id.clone();
        // Authorize a member that never asked: it is recorded with its IPv6 address.
        let (_, m) = svc
            .handle(
                &Method::POST,
                &format!("/controller/network/{nwid}/member/0123456789"),
                br#"{"authorized": true}"#,
            )
            .await
            .unwrap();
        let m: MemberJson = serde_json::from_value(m).unwrap();
        assert!(m.authorized);
        assert_eq!(m.ip_assignments.len(), 1, "{m:?}");
        // Member lists come in pages.
        for a in ["0123456790", "0123456791"] {
            svc.handle(
                &Method::POST,
                &format!("/controller/network/{nwid}/member/{a}"),
                b"{}",
            )
            .await
            .unwrap();
        }
        let page = |q: &str| {
            let path = format!("/controller/network/{nwid}/member{q}");
            let svc = &svc;
            async move { svc.handle(&Method::GET, &path, b"").await }
        };
        let ids = |v: serde_json::Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(ids(page("").await.unwrap().1).len(), 3);
        assert_eq!(
            ids(page("?offset=1&limit=1").await.unwrap().1),
            ["0123456790"]
        );
        assert_eq!(ids(page("?offset=5").await.unwrap().1).len(), 0);
        for bad in ["?limit=x", "?sort=id"] {
            assert_eq!(
                page(bad).await.unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        // Errors a client can act on.
        let status = |r: Answer| r.err().map(|f| f.status);
        let unknown = format!("/controller/network/{}ffffff", svc.address);
        assert_eq!(
            status(svc.handle(&Method::GET, &unknown, b"").await),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(
                svc.handle(&Method::GET, &format!("{unknown}/member"), b"")
                    .await
            ),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(
                svc.handle(
                    &Method::GET,
                    &format!("/controller/network/{nwid}/member/0123456788"),
                    b""
                )
                .await
            ),
            Some(StatusCode::NOT_FOUND)
        );
        let bad = svc
            .handle(&Method::POST, "/controller/network", b"{nope")
            .await
            .unwrap_err();
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert!(bad.message.contains("malformed JSON"), "{}", bad.message);
        let bad = svc
            .handle(&Method::POST, "/controller/network", br#"{"mtu": 10001}"#)
            .await
            .unwrap_err();
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert!(bad.message.contains("MTU"), "{}", bad.message);
        assert_eq!(
            status(
                svc.handle(&Method::POST, "/controller/network/ffffffffffffffff", b"{}")
                    .await
            ),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(svc.handle(&Method::DELETE, "/controller", b"").await),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(
            status(svc.handle(&Method::GET, "/nope", b"").await),
            Some(StatusCode::NOT_FOUND)
        );
        // Changes are in the store.
        let saved = svc.store.load().unwrap();
        assert_eq!(saved.networks.len(), 1);
        // Delete.
        svc.handle(&Method::DELETE, &format!("/controller/network/{nwid}"), b"")
            .await
            .unwrap();
        let (_, list) = svc
            .handle(&Method::GET, "/controller/network", b"")
            .await
            .unwrap();
        assert_eq!(list, serde_json::json!([]));
    }

    /// A store that records what it is asked to write, in front of a real one.
    #[derive(Debug)]
    struct Recording {
        inner: RedbStore,
        applied: std::sync::Mutex<Vec<Vec<zt_core::controller::store::Change>>>,
    }

    impl Store for Recording {
        fn location(&self) -> &str {
            self.inner.location()
        }
        fn load(&self) -> Result<ControllerState, StoreError> {
            self.inner.load()
        }
        fn apply(&self, changes: &[zt_core::controller::store::Change]) -> Result<(), StoreError> {
            self.applied.lock().unwrap().push(changes.to_vec());
            self.inner.apply(changes)
        }
    }

    /// Authorizing one member of a network of 10,000 through the API writes that member's
    /// record and nothing else. (Its time is measured end to end, over HTTP against the
    /// binary, in tests/controller_scale.rs, a test binary that runs alone.)
    #[tokio::test]
    async fn authorize_writes_one_record_at_10000_members() {
        use zt_core::controller::store::Change;
        const MEMBERS: u64 = 10_000;
        let dir = tempfile::tempdir().unwrap();
        let mut svc = service(dir.path()).await;
        let (inner, _) = RedbStore::open(&dir.path().join("recorded.redb")).unwrap();
        let recording = Arc::new(Recording {
            inner,
            applied: Default::default(),
        });
        svc.store = recording.clone();
        let (_, net) = svc
            .handle(&Method::POST, "/controller/network", br#"{"name":"big"}"#)
            .await
            .unwrap();
        let nwid: NetworkId = net["id"].as_str().unwrap().parse().unwrap();
        svc.node()
            .with_controller(move |c| {
                for i in 0..MEMBERS {
                    let a = Address::new(0x01_0000_0000 + i).unwrap();
                    c.set_authorized(Instant::now(), nwid, a, true).unwrap();
                }
            })
            .await
            .unwrap();
        svc.save().await.unwrap();
        recording.applied.lock().unwrap().clear();
        let member = Address::new(0x02_0000_0000).unwrap();
        let (st, m) = svc
            .handle(
                &Method::POST,
                &format!("/controller/network/{nwid}/member/{member}"),
                br#"{"authorized": true}"#,
            )
            .await
            .unwrap();
        assert_eq!(st, StatusCode::OK);
        assert_eq!(m["authorized"], true);
        let applied = recording.applied.lock().unwrap().clone();
        assert_eq!(
            applied,
            vec![vec![Change::Member {
                nwid,
                member,
                record: Some(Member {
                    authorized: true,
                    ..Member::default()
                }),
                by: zt_core::controller::store::Writer::Administrator,
            }]]
        );
        let saved = recording.load().unwrap();
        assert_eq!(saved.networks[&nwid].members.len(), MEMBERS as usize + 1);
    }

    #[test]
    fn secret_comparison() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }

    #[test]
    fn token_is_made_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let t = load_or_create_token(dir.path()).unwrap();
        assert_eq!(t.len(), 48);
        assert_eq!(load_or_create_token(dir.path()).unwrap(), t);
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
