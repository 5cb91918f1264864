//! What a running `ztrun` tells `zt status`, through its state directory.
//!
//! While it runs, `ztrun` holds an exclusive lock on `<home>/lock` (so one identity is
//! never online twice from one directory) and rewrites `<home>/status.json` every second:
//! node address, joined networks with their addresses, and peers with their path
//! (direct or relayed) and latency. `zt status` reads that file.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use zt_core::controller::ConfigDenied;
use zt_core::driver::NodeHandle;
use zt_core::node::{NetworkState, NetworkStatus, PathKind};

/// Name of the status file inside the state directory.
pub const STATUS_FILE: &str = "status.json";
const LOCK_FILE: &str = "lock";

/// A snapshot of a running node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The `ztrun` process.
    pub pid: u32,
    /// Node address (10 hex digits).
    pub address: String,
    /// Where the roots see this node, if any root answered.
    pub observed: Option<String>,
    /// Joined networks.
    pub networks: Vec<NetworkReport>,
    /// Known peers.
    pub peers: Vec<PeerReport>,
    /// Handshake initiations this node received and what it did with them (absent in
    /// files written before it was reported).
    #[serde(default)]
    pub handshakes: Option<HandshakeReport>,
    /// Seconds since the Unix epoch when this was written.
    pub updated: u64,
    /// The programs running on this node (a home's node is shared by every `ztrun` of
    /// that home; absent in files written before it was reported).
    #[serde(default)]
    pub programs: Vec<ProgramReport>,
}

/// A program attached to the node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProgramReport {
    /// Its pid.
    pub pid: u32,
    /// Its command line, as `ztrun` was given it.
    pub command: String,
    /// The networks it was started on.
    pub networks: Vec<String>,
}

/// The programs a node serves, shared with its status writer.
pub type Programs = Arc<Mutex<Vec<ProgramReport>>>;

/// Handshake initiations received since `ztrun` started (docs/PROTOCOL.md, section 3,
/// "Admission"): a growing `cookies` count means the node is under load, being flooded.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandshakeReport {
    /// Initiations received (well-formed, addressed to this node).
    pub initiations: u64,
    /// Of which answered with crypto.
    pub admitted: u64,
    /// Of which answered with a cookie only (while under load).
    pub cookies: u64,
    /// Of which dropped: their source was over its budget.
    pub rate_limited: u64,
}

/// One joined network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetworkReport {
    /// Network ID.
    pub nwid: String,
    /// `ok`, `requesting configuration`, `access denied` or `not found`.
    #[serde(default)]
    pub state: String,
    /// IPv4 address on it.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address on it.
    pub ipv6: Option<Ipv6Addr>,
    /// The name the controller gives it, once configured (absent on ad-hoc networks and
    /// in files written before it was reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerReport {
    /// Peer address.
    pub address: String,
    /// A root of this node.
    pub root: bool,
    /// Live: a session is up and the peer was heard from within 20 s (a keepalive
    /// interval and a third), with no ping unanswered for over 2 s.
    pub up: bool,
    /// `direct IP:PORT`, `relayed` or `none`.
    pub path: String,
    /// Last round trip in milliseconds.
    pub latency_ms: Option<f64>,
    /// Seconds since an authenticated packet last came from it (absent before its
    /// session came up, and in files written before it was reported).
    #[serde(default)]
    pub last_heard_s: Option<f64>,
    /// The session's transport cipher, `AES-256-GCM` or `ChaCha20-Poly1305` (absent
    /// without a session, and in files written before it was reported).
    #[serde(default)]
    pub cipher: Option<String>,
}

/// What `zt status --json` prints, whether or not a node runs: `running` says whether a
/// process holds the state directory, `node` is its report when it could be read, and
/// `reason` says why there is none.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusJson {
    /// The state directory asked about.
    pub home: PathBuf,
    /// Whether a `ztrun` or `zt controller` holds it.
    pub running: bool,
    /// The node's report.
    pub node: Option<Report>,
    /// Why `node` is absent.
    pub reason: Option<String>,
}

impl StatusJson {
    /// The status of `home`, read as [`read`] does; errors become `reason`.
    pub fn of(home: &Path) -> StatusJson {
        match read(home) {
            Ok(r) => StatusJson {
                home: home.to_owned(),
                running: true,
                node: Some(r),
                reason: None,
            },
            Err(e) => StatusJson {
                home: home.to_owned(),
                running: in_use(home),
                node: None,
                reason: Some(format!("{e:#}")),
            },
        }
    }
}

/// The exclusive lock on a state directory, held while `ztrun` runs.
#[derive(Debug)]
pub struct HomeLock {
    _lock: Flock<File>,
    status: PathBuf,
    /// Whether status.json may be written; cleared (under the mutex) when the lock goes,
    /// so a writer never recreates the file after its removal.
    open: Arc<Mutex<bool>>,
}

impl HomeLock {
    /// Take the lock, or say which process holds it.
    pub fn acquire(home: &Path) -> anyhow::Result<HomeLock> {
        let path = home.join(LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(HomeLock {
                _lock: lock,
                status: home.join(STATUS_FILE),
                open: Arc::new(Mutex::new(true)),
            }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let holder = read_unchecked(home)
                    .map(|r| format!(" (pid {})", r.pid))
                    .unwrap_or_default();
                anyhow::bail!(
                    "state directory {} is in use by another ztrun or zt controller{holder}; \
                     give each one that runs at the same time its own --home",
                    home.display()
                )
            }
            Err((_, e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
    }
}

impl Drop for HomeLock {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        *open = false;
        let _ = std::fs::remove_file(&self.status);
    }
}

fn read_unchecked(home: &Path) -> anyhow::Result<Report> {
    let path = home.join(STATUS_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no ztrun is running with state directory {} ({} is missing)",
            home.display(),
            STATUS_FILE
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("{} is malformed", path.display()))
}

/// Read the status file of `home`, which must belong to a running process.
pub fn read(home: &Path) -> anyhow::Result<Report> {
    let report = read_unchecked(home)?;
    // A ztrun killed without cleaning up leaves its status behind; the lock tells.
    if !in_use(home) {
        anyhow::bail!(
            "no ztrun is running with state directory {} ({} is left over from pid {}, \
             which is gone)",
            home.display(),
            STATUS_FILE,
            report.pid
        );
    }
    Ok(report)
}

/// Whether some process holds the lock of `home` (a lock file that exists but cannot be
/// opened counts as held: do not call a running node dead for lack of permission).
pub fn in_use(home: &Path) -> bool {
    let Ok(file) = File::open(home.join(LOCK_FILE)) else {
        return false;
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => false,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => true,
        Err(_) => true,
    }
}

fn path_text(p: &PathKind) -> String {
    match p {
        PathKind::Direct(a) => format!("direct {a}"),
        PathKind::Relayed => "relayed".into(),
        PathKind::None => "none".into(),
    }
}

/// How a joined network is reported: its state and this node's addresses on it (ad-hoc
/// networks use `ztrun`'s own addressing, [`crate::netconf`]).
pub fn network_report(me: zt_core::Address, n: &NetworkStatus) -> NetworkReport {
    let (state, ipv4, ipv6) = match &n.state {
        NetworkState::Ok(_) if n.nwid.is_adhoc() => (
            "ok",
            Some(crate::netconf::adhoc_v4(n.nwid, me)),
            Some(crate::netconf::rfc4193(n.nwid, me)),
        ),
        NetworkState::Ok(c) => (
            "ok",
            c.addresses.iter().find_map(|(a, _)| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            }),
            c.addresses.iter().find_map(|(a, _)| match a {
                IpAddr::V6(v6) => Some(*v6),
                IpAddr::V4(_) => None,
            }),
        ),
        NetworkState::Requesting => ("requesting configuration", None, None),
        NetworkState::Denied(ConfigDenied::AccessDenied) => ("access denied", None, None),
        NetworkState::Denied(ConfigDenied::NotFound) => ("not found", None, None),
    };
    let name = match &n.state {
        NetworkState::Ok(c) if !c.name.is_empty() => Some(c.name.clone()),
        _ => None,
    };
    NetworkReport {
        nwid: n.nwid.to_string(),
        state: state.to_string(),
        ipv4,
        ipv6,
        name,
    }
}

/// Asks the status writer for a fresh `status.json` now (after joining a network),
/// rather than at its next one-second turn.
#[derive(Debug, Clone)]
pub struct Refresh(Arc<tokio::sync::Notify>);

impl Refresh {
    /// Rewrite the status file as soon as possible.
    pub fn now(&self) {
        self.0.notify_one();
    }
}

/// Rewrite `<home>/status.json` every second, and when asked through the returned
/// [`Refresh`], while the node runs and `lock` is held.
pub fn spawn_writer(lock: &HomeLock, node: NodeHandle, programs: Programs) -> Refresh {
    let open = lock.open.clone();
    let file = lock.status.clone();
    let refresh = Refresh(Arc::new(tokio::sync::Notify::new()));
    let asked = refresh.0.clone();
    tokio::spawn(async move {
        loop {
            let Ok(st) = node.status().await else { break };
            let report = Report {
                pid: std::process::id(),
                address: st.address.to_string(),
                observed: st.observed.map(|a| a.to_string()),
                networks: st
                    .networks
                    .iter()
                    .map(|n| network_report(st.address, n))
                    .collect(),
                peers: st
                    .peers
                    .iter()
                    .map(|p| PeerReport {
                        address: p.address.to_string(),
                        root: p.is_root,
                        up: p.up,
                        path: path_text(&p.path),
                        latency_ms: p.latency.map(|d| d.as_secs_f64() * 1e3),
                        last_heard_s: p.last_heard.map(|d| d.as_secs_f64()),
                        cipher: p.cipher.map(|c| c.to_string()),
                    })
                    .collect(),
                handshakes: Some(HandshakeReport {
                    initiations: st.admission.initiations,
                    admitted: st.admission.admitted,
                    cookies: st.admission.cookies_sent,
                    rate_limited: st.admission.rate_limited,
                }),
                updated: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                programs: programs.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            };
            if let Ok(json) = serde_json::to_vec_pretty(&report) {
                let open = open.lock().unwrap_or_else(|e| e.into_inner());
                if !*open {
                    break;
                }
                if let Err(e) = crate::home::write_private(&file, &json) {
                    tracing::debug!(error = %e, "cannot write the status file");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = asked.notified() => {}
            }
        }
    });
    refresh
}

/// The human form `zt status` prints.
pub fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "node     {} (pid {})", r.address, r.pid);
    let _ = writeln!(
        s,
        "observed {}",
        r.observed.as_deref().unwrap_or("no root answered yet")
    );
    for n in &r.networks {
        let v4 = n.ipv4.map(|a| a.to_string()).unwrap_or_default();
        let v6 = n.ipv6.map(|a| a.to_string()).unwrap_or_default();
        let name = n
            .name
            .as_deref()
            .map_or(String::new(), |n| format!(" name {n}"));
        let _ = writeln!(s, "network  {} {} {v4} {v6}{name}", n.nwid, n.state);
    }
    if let Some(h) = &r.handshakes {
        let _ = writeln!(
            s,
            "handshakes {} received: {} answered, {} asked for a cookie (under load), {} over \
             their source's budget",
            h.initiations, h.admitted, h.cookies, h.rate_limited
        );
    }
    for p in &r.programs {
        let _ = writeln!(
            s,
            "program  pid {} on {}: {}",
            p.pid,
            p.networks.join(","),
            p.command
        );
    }
    let _ = writeln!(s, "peers");
    for p in &r.peers {
        let lat = p
            .latency_ms
            .map_or("-".to_string(), |l| format!("{l:.2} ms"));
        let heard = p
            .last_heard_s
            .map_or(String::new(), |h| format!(" heard {h:.0} s ago"));
        let cipher = p
            .cipher
            .as_deref()
            .map_or(String::new(), |c| format!(" {c}"));
        let _ = writeln!(
            s,
            "  {} {:<5} {:<4} {:<28} {lat}{heard}{cipher}",
            p.address,
            if p.root { "root" } else { "leaf" },
            if p.up { "up" } else { "down" },
            p.path
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let first = HomeLock::acquire(dir.path()).unwrap();
        let err = HomeLock::acquire(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("its own --home"), "{err:#}");
        drop(first);
        HomeLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn report_round_trips_and_renders() {
        let dir = tempfile::tempdir().unwrap();
        let lock = HomeLock::acquire(dir.path()).unwrap();
        let r = Report {
            pid: 42,
            address: "89e92ceba1".into(),
            observed: Some("198.18.0.7:40000".into()),
            networks: vec![NetworkReport {
                nwid: "ff00000000c0ffee".into(),
                state: "ok".into(),
                ipv4: Some(Ipv4Addr::new(100, 64, 1, 2)),
                ipv6: None,
                name: Some("lab".into()),
            }],
            peers: vec![PeerReport {
                address: "0123456789".into(),
                root: false,
                up: true,
                path: "relayed".into(),
                latency_ms: Some(1.5),
                last_heard_s: Some(3.2),
                cipher: Some("AES-256-GCM".into()),
            }],
            handshakes: Some(HandshakeReport {
                initiations: 12,
                admitted: 10,
                cookies: 2,
                rate_limited: 0,
            }),
            updated: 1,
            programs: vec![ProgramReport {
                pid: 7,
                command: "curl http://web.zt/".into(),
                networks: vec!["ff00000000c0ffee".into()],
            }],
        };
        crate::home::write_private(
            &dir.path().join(STATUS_FILE),
            &serde_json::to_vec(&r).unwrap(),
        )
        .unwrap();
        assert_eq!(read(dir.path()).unwrap(), r);
        let text = render(&r);
        assert!(
            text.contains("ff00000000c0ffee ok 100.64.1.2  name lab"),
            "{text}"
        );
        assert!(
            text.contains("program  pid 7 on ff00000000c0ffee: curl http://web.zt/"),
            "{text}"
        );
        assert!(text.contains("heard 3 s ago AES-256-GCM"), "{text}");
        assert!(text.contains("relayed"), "{text}");
        assert!(text.contains("1.50 ms"), "{text}");
        assert!(
            text.contains("handshakes 12 received: 10 answered, 2 asked for a cookie"),
            "{text}"
        );
        drop(lock);
    }

    #[test]
    fn a_status_file_without_its_lock_holder_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "").unwrap();
        std::fs::write(
            dir.path().join(STATUS_FILE),
            r#"{"pid":7,"address":"0123456789","observed":null,"networks":[],"peers":[],"updated":0}"#,
        )
        .unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("left over from pid 7"),
            "{err:#}"
        );
    }

    #[test]
    fn status_json_without_a_node_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let st = StatusJson::of(dir.path());
        assert!(!st.running && st.node.is_none(), "{st:?}");
        assert!(st.reason.unwrap().contains("no ztrun is running"));
        let lock = HomeLock::acquire(dir.path()).unwrap();
        // Held but no report yet (a ztrun still joining).
        let st = StatusJson::of(dir.path());
        assert!(st.running && st.node.is_none(), "{st:?}");
        drop(lock);
    }

    #[test]
    fn no_status_file_says_no_ztrun_is_running() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("no ztrun is running"),
            "{err:#}"
        );
    }
}
