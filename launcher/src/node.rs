//! One node per home, shared by every program run with that home.
//!
//! A home (the state directory) is a node: one identity, one overlay node, its networks
//! and its addresses on them. The first `ztrun` of a home starts the node as a process of
//! its own (`ztrun` re-executed with the hidden [`DAEMON_FLAG`], in a session of its own,
//! its log in `node.log`); every `ztrun` of that home then *attaches* to it through
//! `node.sock` in the home, a `SOCK_SEQPACKET` Unix socket (mode 0600 in a home of mode
//! 0700, and every peer checked to run as the node's user), one JSON message a packet:
//!
//! 1. [`ToNode::Attach`]: the node joins the networks it has not joined yet (saying why
//!    it waits to every attached `ztrun`) and answers [`FromNode::Ready`] with its pid,
//!    or [`FromNode::Error`].
//! 2. `ztrun` starts the program under the filter, naming the node with
//!    `PR_SET_PTRACER` (Yama lets only an ancestor, or a named process, read the
//!    program's memory), and sends [`ToNode::Supervise`] with the seccomp listener
//!    attached (`SCM_RIGHTS`). The node serves it with [`Networks`] over the shared
//!    stacks: the programs of a home share its addresses and port space, as the programs
//!    of a host share its IP.
//! 3. `ztrun` waits for the program and forwards signals, as it does alone. The
//!    connection stays open: when the node dies, `ztrun` ends with an error and the
//!    reaper takes the program's tree with it; when `ztrun` ends, the node counts one
//!    program less.
//!
//! The node ends [`IDLE`] after the last program and the last attached `ztrun` are gone,
//! releasing the home. `zt status` lists the programs it serves.
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType, UnixAddr};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, OnceCell};
use zt_core::NetworkId;

use crate::overlay::{self, Say};
use crate::roots::RootArg;
use crate::status::{self, HomeLock, ProgramReport, Programs};

/// The socket a home's node listens on, inside the home.
pub const SOCKET_FILE: &str = "node.sock";
/// Where a node started in the background writes its log, inside the home.
pub const LOG_FILE: &str = "node.log";
/// The first argument that makes `ztrun` a home's node: `ztrun --node-daemon HOME [ROOT]...`.
pub const DAEMON_FLAG: &str = "--node-daemon";
/// How long a node outlives its last program (so that programs run one after another
/// reuse it rather than start a node each).
pub const IDLE: Duration = Duration::from_secs(2);
/// How long a new node waits for its first `ztrun`.
const FIRST_ATTACH: Duration = Duration::from_secs(30);
/// The largest message.
const MAX_MESSAGE: usize = 64 * 1024;

/// What an attached `ztrun` asks of the node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ToNode {
    /// Join these networks (16 hex digits each) for a program.
    Attach {
        /// The networks.
        nwids: Vec<String>,
        /// The `--root` arguments this `ztrun` was given: they must be the node's.
        roots: Vec<String>,
    },
    /// Serve the program whose seccomp listener comes attached.
    Supervise {
        /// Its pid.
        pid: u32,
        /// Its command line.
        command: String,
        /// `--fallthrough`.
        fallthrough: bool,
    },
}

/// What the node tells an attached `ztrun`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FromNode {
    /// A line for the user (joined, waiting for authorization, revoked, ...).
    Say(String),
    /// The networks are joined; name this pid with `PR_SET_PTRACER`.
    Ready {
        /// The node's pid.
        pid: u32,
    },
    /// The request failed.
    Error(String),
}

/// One end of a node connection: whole JSON messages, one per packet.
#[derive(Debug)]
pub struct Link(AsyncFd<OwnedFd>);

impl Link {
    fn new(fd: OwnedFd) -> std::io::Result<Self> {
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        Ok(Link(crate::sys::async_fd(
            fd,
            Interest::READABLE | Interest::WRITABLE,
        )?))
    }

    /// Send `msg`, with `fd` attached.
    pub async fn send(
        &self,
        msg: &impl Serialize,
        fd: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(msg)?;
        loop {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|inner| crate::sys::send_packet(inner.as_fd(), &bytes, fd)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// The next message and the descriptor it carries; `None` at end of stream.
    pub async fn recv<T: serde::de::DeserializeOwned>(
        &self,
    ) -> std::io::Result<Option<(T, Option<OwnedFd>)>> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|inner| crate::sys::recv_packet(inner.as_fd(), MAX_MESSAGE)) {
                Ok(Ok(None)) => return Ok(None),
                Ok(Ok(Some((bytes, fd)))) => {
                    let msg = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
                    return Ok(Some((msg, fd)));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The socket path of `home`'s node.
pub fn socket_path(home: &Path) -> PathBuf {
    home.join(SOCKET_FILE)
}

fn seqpacket() -> std::io::Result<OwnedFd> {
    Ok(sock::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// Connect to `home`'s node, if one listens.
fn connect(home: &Path) -> std::io::Result<Link> {
    let fd = seqpacket()?;
    let addr = UnixAddr::new(&socket_path(home))?;
    sock::connect(fd.as_raw_fd(), &addr)?;
    check_peer(fd.as_fd())?;
    Link::new(fd)
}

/// The other end must run as this user: a socket in someone else's reach is not ours.
fn check_peer(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    let cred = sock::getsockopt(&fd, sock::sockopt::PeerCredentials)?;
    if cred.uid() != nix::unistd::geteuid().as_raw() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("the other end runs as uid {}, not as this user", cred.uid()),
        ));
    }
    Ok(())
}

/// The connecting process must not be a program the filter wraps: one could otherwise
/// hand the node a seccomp listener of its own making (a child under a filter it
/// installed) and have its calls served with `--fallthrough` or on other networks. A
/// wrapped program runs under at least one more seccomp filter than `ztrun` and its node
/// (filters are inherited and never removed), so the counts must be equal.
fn check_not_wrapped(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    let cred = sock::getsockopt(&fd, sock::sockopt::PeerCredentials)?;
    let theirs = seccomp_filters(&format!("/proc/{}/status", cred.pid()))?;
    let ours = seccomp_filters("/proc/self/status")?;
    if theirs != ours {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "pid {} runs under {theirs} seccomp filter(s), this node under {ours}: a                  program that ztrun wraps may not attach",
                cred.pid()
            ),
        ));
    }
    Ok(())
}

/// `Seccomp_filters` of a `/proc/PID/status` (Linux 5.9), else its `Seccomp` mode.
fn seccomp_filters(path: &str) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    parse_seccomp_filters(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no Seccomp in {path}"),
        )
    })
}

fn parse_seccomp_filters(status: &str) -> Option<u64> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    field("Seccomp_filters:").or_else(|| field("Seccomp:"))
}

/// Attach to `home`'s node, starting it when none runs; then ask it to join `nwids`.
/// Lines the node has for the user go to `say`. Returns the link and the node's pid.
pub async fn attach(
    home: &Path,
    roots: &[RootArg],
    nwids: &[NetworkId],
    say: &Say,
) -> anyhow::Result<(Link, u32)> {
    let link = match connect(home) {
        Ok(l) => l,
        Err(_) => {
            // The home's identity, checked (or made) here so that its errors reach the
            // user as they are, not through the node's log.
            let (id, created) = crate::identity::load_or_create(home)?;
            if created {
                say(&format!(
                    "ztrun: new identity {} in {}",
                    id.address(),
                    home.display()
                ));
            }
            start(home, roots).await?
        }
    };
    link.send(
        &ToNode::Attach {
            nwids: nwids.iter().map(ToString::to_string).collect(),
            roots: roots.iter().map(ToString::to_string).collect(),
        },
        None,
    )
    .await
    .context("cannot talk to the node")?;
    loop {
        match link.recv::<FromNode>().await {
            Ok(Some((FromNode::Say(line), _))) => say(&line),
            Ok(Some((FromNode::Ready { pid }, _))) => return Ok((link, pid)),
            Ok(Some((FromNode::Error(e), _))) => anyhow::bail!("{e}"),
            Ok(None) | Err(_) => anyhow::bail!(
                "the node of {} stopped while joining{}; its log is {}",
                home.display(),
                last_error(home),
                home.join(LOG_FILE).display()
            ),
        }
    }
}

/// Start `home`'s node in the background and connect to it.
async fn start(home: &Path, roots: &[RootArg]) -> anyhow::Result<Link> {
    let exe = std::env::current_exe().context("cannot find the ztrun executable")?;
    let log_path = home.join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(DAEMON_FLAG).arg(home);
    for r in roots {
        cmd.arg(r.to_string());
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    crate::sys::own_session(&mut cmd);
    let mut child = cmd.spawn().context("cannot start the node")?;
    let started = Instant::now();
    loop {
        match connect(home) {
            Ok(l) => {
                // Reaped by init once we are gone; a node that ends before we do is reaped
                // here, so it never lingers as a zombie.
                std::thread::spawn(move || child.wait());
                return Ok(l);
            }
            Err(e) if started.elapsed() > Duration::from_secs(10) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e).with_context(|| {
                    format!(
                        "the node of {} did not start; its log is {}",
                        home.display(),
                        log_path.display()
                    )
                });
            }
            Err(_) => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Another ztrun's node may have won the home: try it once more.
            if let Ok(l) = connect(home) {
                return Ok(l);
            }
            anyhow::bail!(
                "the node of {} exited ({status}) before it listened{}; its log is {}",
                home.display(),
                last_error(home),
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `: MESSAGE` of the last error the node logged, or nothing.
pub fn last_error(home: &Path) -> String {
    let Ok(log) = std::fs::read_to_string(home.join(LOG_FILE)) else {
        return String::new();
    };
    log.lines()
        .rev()
        .find_map(|l| {
            l.split_once(" ERROR ")
                .map(|(_, m)| format!(": {}", m.trim()))
        })
        .unwrap_or_default()
}

/// A joined network, shared by the programs on it.
#[derive(Debug, Clone)]
struct Member {
    stack: netstack::Stack,
    names: crate::names::NetworkNames,
    /// `ADDRESSES (NAME)` as the joined line shows it.
    description: String,
    /// `; name NODE.NWID.zt`, or empty.
    name: String,
    /// How long the join waited for `zt member authorize`.
    waited: Duration,
}

/// The node's shared state.
struct Node {
    node: zt_core::driver::NodeHandle,
    me: zt_core::Address,
    roots: Vec<String>,
    networks: Mutex<HashMap<NetworkId, Arc<OnceCell<Member>>>>,
    /// Attached `ztrun`s, to tell every one of them what happens to the networks.
    clients: Mutex<HashMap<u64, mpsc::UnboundedSender<FromNode>>>,
    /// The networks each attached `ztrun` joined.
    attached: Mutex<HashMap<u64, Vec<String>>>,
    next_client: AtomicU64,
    /// Attached `ztrun`s plus programs still served.
    active: AtomicUsize,
    programs: Programs,
    refresh: status::Refresh,
    /// Said once, to the first `ztrun` that attaches (no root answered, ...).
    notes: Mutex<Vec<String>>,
}

impl Node {
    fn say_to_all(self: &Arc<Self>) -> Say {
        let me = Arc::downgrade(self);
        Arc::new(move |line: &str| {
            tracing::info!("{line}");
            if let Some(me) = me.upgrade() {
                for tx in me
                    .clients
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                {
                    let _ = tx.send(FromNode::Say(line.to_string()));
                }
            }
        })
    }

    /// The network `nwid`, joined once whoever asks first.
    async fn member(self: &Arc<Self>, nwid: NetworkId) -> anyhow::Result<(Member, bool)> {
        let cell = self
            .networks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(nwid)
            .or_default()
            .clone();
        let mut joined_now = false;
        let member = cell
            .get_or_try_init(|| async {
                joined_now = true;
                let j = overlay::join(&self.node, nwid, self.me, self.say_to_all()).await?;
                self.refresh.now();
                let name = overlay::name_suffix(&j, self.me);
                anyhow::Ok(Member {
                    waited: j.waited_for_authorization,
                    description: overlay::describe(&j),
                    stack: j.stack,
                    names: j.names,
                    name,
                })
            })
            .await?;
        Ok((member.clone(), joined_now))
    }
}

/// `ztrun --node-daemon HOME [ROOT]...`: run `home`'s node until it has been idle for
/// [`IDLE`]. Returns the process exit code.
pub fn daemon_main(args: &[String]) -> i32 {
    let Some(home) = args.first().map(PathBuf::from) else {
        eprintln!("ztrun {DAEMON_FLAG}: no home");
        return 2;
    };
    let roots: Result<Vec<RootArg>, _> = args[1..].iter().map(|r| r.parse()).collect();
    let roots = match roots {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ztrun {DAEMON_FLAG}: {e}");
            return 2;
        }
    };
    crate::cli::init_tracing("info");
    if let Err(e) = crate::sys::set_non_dumpable() {
        tracing::error!(%e, "cannot make the node non-dumpable");
        return 1;
    }
    let rt = match crate::spin::runtime(crate::runtime_workers(), crate::spin::window_from_env()) {
        Ok((rt, _)) => rt,
        Err(e) => {
            tracing::error!(%e, "cannot start the runtime");
            return 1;
        }
    };
    match rt.block_on(serve(&home, roots)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            1
        }
    }
}

async fn serve(home: &Path, roots: Vec<RootArg>) -> anyhow::Result<()> {
    // A second node for the same home (two ztruns started together) finds the lock taken
    // and leaves: the ztruns connect to the first.
    let Ok(lock) = HomeLock::acquire(home) else {
        tracing::info!("another node holds {}", home.display());
        return Ok(());
    };
    let path = socket_path(home);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
    let listener = seqpacket()?;
    sock::bind(listener.as_raw_fd(), &UnixAddr::new(&path)?)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    sock::listen(&listener, sock::Backlog::new(64)?)?;
    nix::fcntl::fcntl(
        &listener,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    let listener = crate::sys::async_fd(listener, Interest::READABLE)?;

    let (id, created) = crate::identity::load_or_create(home)?;
    let mut notes = Vec::new();
    if created {
        notes.push(format!(
            "ztrun: new identity {} in {}",
            id.address(),
            home.display()
        ));
    }
    let me = id.address();
    let root_args = if roots.is_empty() {
        overlay::host_default_root_if_free()?;
        vec![RootArg {
            identity: None,
            endpoint: crate::roots::DEFAULT_ROOT_ENDPOINT,
        }]
    } else {
        roots.clone()
    };
    let handle = overlay::start_node(id, crate::roots::specs(&root_args)).await?;
    if overlay::wait_for_root(&handle, Duration::from_secs(5))
        .await
        .is_none()
    {
        let eps: Vec<String> = root_args.iter().map(|r| r.endpoint.to_string()).collect();
        notes.push(format!(
            "ztrun: warning: no root answered within 5 s ({}); peers that know this node can \
             still reach it, others cannot find it",
            eps.join(", ")
        ));
    }
    let programs = Programs::default();
    let refresh = status::spawn_writer(&lock, handle.clone(), programs.clone());
    let mut key: Vec<String> = roots.iter().map(ToString::to_string).collect();
    key.sort();
    let node = Arc::new(Node {
        node: handle,
        me,
        roots: key,
        networks: Mutex::new(HashMap::new()),
        clients: Mutex::new(HashMap::new()),
        attached: Mutex::new(HashMap::new()),
        next_client: AtomicU64::new(0),
        active: AtomicUsize::new(0),
        programs,
        refresh,
        notes: Mutex::new(notes),
    });
    tracing::info!(address = %me, home = %home.display(), "node up");

    let mut idle_since = Some(Instant::now());
    let mut grace = FIRST_ATTACH;
    loop {
        tokio::select! {
            r = listener.readable() => {
                let mut guard = r?;
                match sock::accept4(listener.get_ref().as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                    Ok(fd) => {
                        let fd = crate::sys::own_fd(fd);
                        node.active.fetch_add(1, Ordering::SeqCst);
                        idle_since = None;
                        grace = IDLE;
                        tokio::spawn(client(node.clone(), fd));
                    }
                    Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                    Err(e) => tracing::warn!(%e, "accept on the node socket failed"),
                }
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if node.active.load(Ordering::SeqCst) == 0 {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= grace {
                        break;
                    }
                } else {
                    idle_since = None;
                }
            }
        }
    }
    // Leave: no new ztrun may attach to a node that is going.
    let _ = std::fs::remove_file(&path);
    tracing::info!("no program left: node down");
    drop(lock);
    Ok(())
}

/// One attached `ztrun`.
async fn client(node: Arc<Node>, fd: OwnedFd) {
    let n = node.clone();
    let done = scopeguard(move || {
        n.active.fetch_sub(1, Ordering::SeqCst);
    });
    if let Err(e) = check_peer(fd.as_fd()).and_then(|()| check_not_wrapped(fd.as_fd())) {
        tracing::warn!(%e, "refused a connection on the node socket");
        return;
    }
    let link = match Link::new(fd) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            tracing::warn!(%e, "cannot serve a node connection");
            return;
        }
    };
    let id = node.next_client.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel();
    node.clients
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, tx.clone());
    let writer = {
        let link = link.clone();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if link.send(&msg, None).await.is_err() {
                    break;
                }
            }
        })
    };
    let result = serve_client(&node, id, &link, &tx).await;
    if let Err(e) = result {
        let _ = tx.send(FromNode::Error(format!("{e:#}")));
    }
    node.clients
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    node.attached
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    drop(tx);
    let _ = writer.await;
    drop(done);
}

async fn serve_client(
    node: &Arc<Node>,
    id: u64,
    link: &Link,
    tx: &mpsc::UnboundedSender<FromNode>,
) -> anyhow::Result<()> {
    let say = |line: String| {
        let _ = tx.send(FromNode::Say(line));
    };
    let Some((ToNode::Attach { nwids, roots }, _)) = link.recv::<ToNode>().await? else {
        return Ok(());
    };
    let mut roots = roots;
    roots.sort();
    if roots != node.roots {
        anyhow::bail!(
            "this home's node runs with root(s) [{}], not [{}]: give this ztrun the same \
             --root, or another --home",
            node.roots.join(", "),
            roots.join(", ")
        );
    }
    for line in std::mem::take(&mut *node.notes.lock().unwrap_or_else(|e| e.into_inner())) {
        say(line);
    }
    let started = Instant::now();
    let mut members = Vec::new();
    for text in &nwids {
        let nwid: NetworkId = text
            .parse()
            .map_err(|e| anyhow::anyhow!("--nwid {text}: {e}"))?;
        // The ztrun may give up while the node waits (Ctrl-C while not authorized): it
        // sends nothing until Ready, so anything from it, or its end, ends the wait.
        let (m, joined_now) = tokio::select! {
            r = node.member(nwid) => r?,
            _ = link.recv::<ToNode>() => return Ok(()),
        };
        let shared = node
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|n| n.contains(text))
            .count();
        let how = if joined_now {
            overlay::join_time(started.elapsed(), m.waited)
        } else {
            format!(
                "(node {}, shared with {shared} other program{})",
                node.me,
                if shared == 1 { "" } else { "s" }
            )
        };
        say(format!(
            "ztrun: joined {nwid} as {} {how}{}",
            m.description, m.name
        ));
        members.push(m);
    }
    node.attached
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, nwids.clone());
    tx.send(FromNode::Ready {
        pid: std::process::id(),
    })
    .ok();
    let Some((
        ToNode::Supervise {
            pid,
            command,
            fallthrough,
        },
        Some(listener),
    )) = link.recv::<ToNode>().await?
    else {
        return Ok(());
    };
    let resolver = supervisor::dns::Resolver::new(
        supervisor::dns::system_nameservers(),
        crate::names::MemberNames::new(members.iter().map(|m| m.names.clone()).collect()),
        fallthrough,
    );
    let networks =
        supervisor::network::Networks::new(members.iter().map(|m| m.stack.clone()).collect())
            .with_resolver(resolver);
    let report = ProgramReport {
        pid,
        command,
        networks: nwids.clone(),
    };
    node.programs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(report.clone());
    node.refresh.now();
    node.active.fetch_add(1, Ordering::SeqCst);
    let n = node.clone();
    tokio::spawn(async move {
        let policy = supervisor::backend::Policy { fallthrough };
        if let Err(e) = supervisor::supervise(listener, policy, Arc::new(networks)).await {
            tracing::warn!(pid, %e, "supervising a program failed");
        }
        n.programs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p != report);
        n.refresh.now();
        n.active.fetch_sub(1, Ordering::SeqCst);
    });
    // Held until the ztrun goes (its program ended, or it was killed).
    while let Ok(Some(_)) = link.recv::<ToNode>().await {}
    Ok(())
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json() {
        let m = ToNode::Attach {
            nwids: vec!["ff00000000c0ffee".into()],
            roots: vec![],
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(
            text,
            r#"{"attach":{"nwids":["ff00000000c0ffee"],"roots":[]}}"#
        );
        assert_eq!(serde_json::from_str::<ToNode>(&text).unwrap(), m);
        let r = FromNode::Ready { pid: 7 };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<FromNode>(&text).unwrap(), r);
    }

    #[test]
    fn filter_counts_come_from_proc_status() {
        let status = "Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t3\n";
        assert_eq!(parse_seccomp_filters(status), Some(3));
        assert_eq!(parse_seccomp_filters("Seccomp:\t0\n"), Some(0));
        assert_eq!(parse_seccomp_filters("Name:\tx\n"), None);
        assert!(seccomp_filters("/proc/self/status").is_ok());
    }

    #[tokio::test]
    async fn a_link_carries_messages_and_a_descriptor() {
        let (a, b) = sock::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (a, b) = (Link::new(a).unwrap(), Link::new(b).unwrap());
        let file = std::fs::File::open("/dev/null").unwrap();
        let m = ToNode::Supervise {
            pid: 1,
            command: "true".into(),
            fallthrough: false,
        };
        a.send(&m, Some(file.as_fd())).await.unwrap();
        let (got, fd) = b.recv::<ToNode>().await.unwrap().unwrap();
        assert_eq!(got, m);
        let fd = fd.expect("the descriptor travels with the message");
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(link, Path::new("/dev/null"));
        drop(a);
        assert!(b.recv::<ToNode>().await.unwrap().is_none(), "end of stream");
    }
}
