//! `compat-tests controller-bench`: a controller with 10,000 members, on the embedded
//! redb store and on PostgreSQL, measured as an operator sees it (issue 17).
//!
//! ```text
//! cargo run --release -p compat-tests -- controller-bench [--members 10000] [--samples 20]
//! ```
//!
//! For each store, on loopback: a `zt root`, a `zt controller` (on PostgreSQL: a server of
//! its own started from the Debian package in a temporary directory, as uid 65534 when
//! run as root), then
//!
//! - **create and authorize**: one network, then N members authorized one by one through
//!   the management API on one kept-alive HTTP connection (each answer comes after the
//!   record is durably stored);
//! - **RSS**: the controller's resident memory afterwards;
//! - **push latency**: a real `ztrun` member waits unauthorized; the time from the
//!   authorizing API request to its `joined` line (the pushed configuration), repeated;
//! - **takeover**: PostgreSQL: a second replica with the same identity stands by, the
//!   active one is killed (SIGKILL), the time to the standby's `active:` line and to a new
//!   member's `joined` line; redb: the time to restart the controller (SIGTERM, start, API
//!   up), its only way back;
//! - **configuration size**: computed in-process with zt-core's controller for a network
//!   of N members each with an address and a name (the worst case for the member
//!   directory), and the time to issue every member's configuration (a push to all).
//!
//! Every step has a deadline; the run stops on the first failure with what failed.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use compat_tests::matrix::ZtrunBinaries;

/// How to run the controller benchmark.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) binaries: ZtrunBinaries,
    /// Members of the network.
    pub(crate) members: u32,
    /// Push-latency samples per store.
    pub(crate) samples: usize,
    pub(crate) verbose: bool,
}

/// One store's figures.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) store: &'static str,
    pub(crate) create_authorize: Duration,
    pub(crate) rss_kib: u64,
    pub(crate) push: Vec<Duration>,
    /// PostgreSQL: (to `active:`, to a new member's `joined`); redb: (restart, joined).
    pub(crate) takeover: (Duration, Duration),
}

/// The whole run.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) members: u32,
    pub(crate) rows: Vec<Row>,
    pub(crate) config: ConfigSize,
}

/// Configuration sizes computed with zt-core.
#[derive(Debug, Clone)]
pub(crate) struct ConfigSize {
    pub(crate) bytes_full: usize,
    pub(crate) bytes_bare: usize,
    pub(crate) directory: usize,
    pub(crate) issue_all: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl Report {
    /// The Markdown table.
    pub(crate) fn markdown(&self) -> String {
        let mut s = format!(
            "| store | create + authorize {} members | per member | controller RSS | push p50 | \
             push p99 (n) | takeover | new member joined after |\n|---|---|---|---|---|---|---|---|\n",
            self.members
        );
        for r in &self.rows {
            let mut push = r.push.clone();
            push.sort();
            let (what, joined) = r.takeover;
            s.push_str(&format!(
                "| {} | {:.1} s | {:.2} ms | {:.1} MiB | {:.0} ms | {:.0} ms ({}) | {} {:.0} ms | {:.0} ms |\n",
                r.store,
                r.create_authorize.as_secs_f64(),
                r.create_authorize.as_secs_f64() * 1000.0 / f64::from(self.members),
                r.rss_kib as f64 / 1024.0,
                percentile(&push, 0.5).as_secs_f64() * 1000.0,
                percentile(&push, 0.99).as_secs_f64() * 1000.0,
                push.len(),
                if r.store == "redb" { "restart" } else { "standby active in" },
                what.as_secs_f64() * 1000.0,
                joined.as_secs_f64() * 1000.0,
            ));
        }
        s.push_str(&format!(
            "\nConfiguration of one member at {} members (each with an address and a name): \
             {} bytes, directory of {} entries; without addresses or names: {} bytes. \
             Issuing every member's configuration (a push to all): {:.0} ms.\n",
            self.members,
            self.config.bytes_full,
            self.config.directory,
            self.config.bytes_bare,
            self.config.issue_all.as_secs_f64() * 1000.0
        ));
        s
    }
}

/// Runs both stores.
pub(crate) fn run(opts: &Options) -> anyhow::Result<Report> {
    let zt = opts.binaries.zt_path()?;
    let ztrun = opts.binaries.ztrun_path()?;
    let config = config_size(opts.members);
    eprintln!(
        "controller-bench: configuration {} bytes, all issued in {:?}",
        config.bytes_full, config.issue_all
    );
    let mut rows = Vec::new();
    for store in ["redb", "postgresql"] {
        eprintln!("controller-bench: {store}");
        rows.push(run_store(opts, store, &zt, &ztrun).context(store)?);
    }
    Ok(Report {
        members: opts.members,
        rows,
        config,
    })
}

/// The configuration sizes and the time to issue N configurations, with zt-core.
fn config_size(members: u32) -> ConfigSize {
    use zt_core::controller::{Controller, NetworkSettings};
    use zt_core::{Address, SecretIdentity};
    let now = Instant::now();
    let id = SecretIdentity::generate_from_seed([9; 32]);
    let mut c = Controller::new(id, 1, now);
    let settings = NetworkSettings {
        ipv4_pool: Some(([10, 200, 0, 1].into(), [10, 200, 255, 254].into(), 16)),
        ..NetworkSettings::default()
    };
    let nwid = c.create_network(1, settings).expect("valid settings");
    let bare = c
        .create_network(2, NetworkSettings::default())
        .expect("valid");
    let addr = |i: u32| Address::new(0x01_0000_0000 + u64::from(i)).expect("address");
    for i in 0..members {
        let a = addr(i);
        let _ = c.set_authorized(now, nwid, a, true);
        let _ = c.set_member_name(nwid, a, Some(format!("host-{i}")));
        let _ = c.set_authorized(now, bare, a, true);
    }
    // Every member asks once (addresses assigned), then a push issues them all again.
    for i in 0..members {
        let _ = c.request(now, nwid, addr(i));
    }
    let t = Instant::now();
    let mut full = 0;
    for i in 0..members {
        if let Ok(cfg) = c.issue(now, nwid, addr(i)) {
            full = full.max(cfg.to_vec().len());
        }
    }
    let issue_all = t.elapsed();
    let one = c.issue(now, nwid, addr(0)).expect("authorized");
    let bytes_bare = c
        .issue(now, bare, addr(0))
        .map(|c| c.to_vec().len())
        .unwrap_or(0);
    ConfigSize {
        bytes_full: full,
        bytes_bare,
        directory: one.directory.len(),
        issue_all,
    }
}

/// A child killed (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    child: Child,
    stderr: mpsc::Receiver<(Instant, String)>,
    stdout: mpsc::Receiver<(Instant, String)>,
    seen: Vec<String>,
}

fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

impl Proc {
    fn spawn(cmd: &mut Command) -> anyhow::Result<Proc> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        let stderr = lines(child.stderr.take().context("stderr")?);
        let stdout = lines(child.stdout.take().context("stdout")?);
        Ok(Proc {
            child,
            stderr,
            stdout,
            seen: Vec::new(),
        })
    }

    fn wait_stderr(&mut self, needle: &str, limit: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok((at, line)) => {
                    if line.contains(needle) {
                        return Ok(at);
                    }
                    self.seen.push(line);
                }
                Err(_) => break,
            }
        }
        bail!(
            "no line with {needle:?} within {limit:?}; got:\n{}",
            self.seen.join("\n")
        )
    }

    fn first_stdout(&mut self, limit: Duration) -> anyhow::Result<String> {
        self.stdout
            .recv_timeout(limit)
            .map(|(_, l)| l)
            .map_err(|_| anyhow::anyhow!("no output within {limit:?}"))
    }

    fn signal(&mut self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn unprivileged(program: &[&str]) -> Command {
    let mut c = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.args(program);
        c
    } else {
        let mut c = Command::new(program[0]);
        c.args(&program[1..]);
        c
    };
    c.env("LC_ALL", "C");
    c
}

/// A PostgreSQL server in a temporary directory.
struct Postgres {
    server: Proc,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Postgres {
    fn start() -> anyhow::Result<Postgres> {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("postgres").exists().then_some((v, bin))
            })
            .collect();
        found.sort();
        let Some((_, bin)) = found.pop() else {
            bail!(
                "no PostgreSQL server under /usr/lib/postgresql/*/bin: apt-get install postgresql"
            )
        };
        let dir = tempfile::Builder::new().prefix("zt-bench-pg").tempdir()?;
        if is_root() {
            std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534))?;
        }
        let data = dir.path().join("data");
        let s = |p: &Path| p.to_str().unwrap_or_default().to_string();
        let out = unprivileged(&[
            &s(&bin.join("initdb")),
            "-D",
            &s(&data),
            "-U",
            "zt",
            "--auth=trust",
            "--no-locale",
            "-E",
            "UTF8",
        ])
        .output()?;
        if !out.status.success() {
            bail!("initdb: {}", String::from_utf8_lossy(&out.stderr));
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // Durable commits (fsync on), as a controller's database would run.
        let mut server = Proc::spawn(&mut unprivileged(&[
            &s(&bin.join("postgres")),
            "-D",
            &s(&data),
            "-k",
            &s(dir.path()),
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
        ]))?;
        server.wait_stderr("ready to accept connections", Duration::from_secs(30))?;
        Ok(Postgres {
            server,
            port,
            _dir: dir,
        })
    }

    fn url(&self) -> String {
        format!("postgres://zt@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.server.signal(nix::sys::signal::Signal::SIGINT);
    }
}

/// One HTTP/1.1 request on a kept-alive connection; returns the status and body.
fn request(
    conn: &mut BufReader<TcpStream>,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nX-ZT-Auth: {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.get_mut().write_all(req.as_bytes())?;
    let mut status = String::new();
    conn.read_line(&mut status)?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line {status:?}"))?;
    let mut length = 0;
    loop {
        let mut h = String::new();
        conn.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body)?;
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn free_udp() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn controller(
    zt: &Path,
    home: &Path,
    root: &str,
    store: Option<&str>,
) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut cmd = Command::new(zt);
    cmd.arg("controller")
        .arg("--home")
        .arg(home)
        .args(["--root", root, "--api", "127.0.0.1:0"]);
    if let Some(url) = store {
        cmd.args(["--store", url]);
    }
    let mut p = Proc::spawn(&mut cmd)?;
    let line = p.first_stdout(Duration::from_secs(120))?;
    let api = line
        .split_whitespace()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("ready line {line:?}"))?;
    Ok((p, api))
}

fn new_identity(zt: &Path, home: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(home)?;
    let out = Command::new(zt)
        .args(["id", "new"])
        .arg(home.join("identity.secret"))
        .output()?;
    anyhow::ensure!(out.status.success(), "zt id new failed");
    let out = Command::new(zt).args(["id", "show"]).arg(home).output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
        .context("zt id show printed no address")
}

fn member(ztrun: &Path, home: &Path, nwid: &str, root: &str) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(ztrun);
    cmd.arg("--home")
        .arg(home)
        .args(["--nwid", nwid, "--root", root, "--"]);
    if is_root() {
        cmd.args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ]);
    }
    cmd.args(["sleep", "30"]);
    Proc::spawn(&mut cmd)
}

fn run_store(opts: &Options, store: &'static str, zt: &Path, ztrun: &Path) -> anyhow::Result<Row> {
    let dir = tempfile::Builder::new().prefix("zt-ctl-bench").tempdir()?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let pg = match store {
        "postgresql" => Some(Postgres::start()?),
        _ => None,
    };
    let url = pg.as_ref().map(Postgres::url);
    let endpoint = format!("127.0.0.1:{}", free_udp()?);
    let mut root = Proc::spawn(Command::new(zt).args(["root", "--listen", &endpoint]))?;
    let root_arg = format!("{}@{endpoint}", root.first_stdout(Duration::from_secs(10))?);
    let home = dir.path().join("ctl");
    let (mut ctl, api) = controller(zt, &home, &root_arg, url.as_deref())?;
    if url.is_some() {
        ctl.wait_stderr("active:", Duration::from_secs(20))?;
    }
    let token = std::fs::read_to_string(home.join("authtoken.secret"))?
        .trim()
        .to_string();
    let mut conn = BufReader::new(TcpStream::connect(api)?);
    let (code, body) = request(
        &mut conn,
        &token,
        "POST",
        "/controller/network",
        r#"{"name":"bench","ipv4Pool":{"start":"10.200.0.1","end":"10.200.255.254","prefix":16}}"#,
    )?;
    anyhow::ensure!(code == 200, "create network: {code} {body}");
    let nwid = serde_json::from_str::<serde_json::Value>(&body)?["id"]
        .as_str()
        .context("network id")?
        .to_string();

    let t = Instant::now();
    for i in 0..opts.members {
        let addr = format!("{:010x}", 0x01_0000_0000_u64 + u64::from(i));
        let (code, body) = request(
            &mut conn,
            &token,
            "POST",
            &format!("/controller/network/{nwid}/member/{addr}"),
            r#"{"authorized":true}"#,
        )?;
        anyhow::ensure!(code == 200, "authorize {addr}: {code} {body}");
        if opts.verbose && i % 1000 == 999 {
            eprintln!("  {} members in {:?}", i + 1, t.elapsed());
        }
    }
    let create_authorize = t.elapsed();
    eprintln!(
        "  {} members created and authorized in {create_authorize:?}",
        opts.members
    );

    let mut push = Vec::new();
    for s in 0..opts.samples {
        let mhome = dir.path().join(format!("m{s}"));
        let addr = new_identity(zt, &mhome)?;
        let mut m = member(ztrun, &mhome, &nwid, &root_arg)?;
        m.wait_stderr("is not authorized", Duration::from_secs(30))?;
        // The API closes connections idle for a few seconds: a fresh one, opened first.
        conn = BufReader::new(TcpStream::connect(api)?);
        let t = Instant::now();
        let (code, body) = request(
            &mut conn,
            &token,
            "POST",
            &format!("/controller/network/{nwid}/member/{addr}"),
            r#"{"authorized":true}"#,
        )?;
        anyhow::ensure!(code == 200, "authorize {addr}: {code} {body}");
        let at = m.wait_stderr(&format!("joined {nwid}"), Duration::from_secs(10))?;
        push.push(at.saturating_duration_since(t));
    }
    let rss_kib = vm_rss_kib(ctl.child.id());
    eprintln!("  push samples {push:?}, RSS {rss_kib} KiB");
    drop(conn);

    let takeover = match &url {
        Some(url) => {
            let b_home = dir.path().join("standby");
            std::fs::create_dir_all(&b_home)?;
            for f in ["identity.secret", "identity.public"] {
                std::fs::copy(home.join(f), b_home.join(f))?;
            }
            let (mut b, _) = controller(zt, &b_home, &root_arg, Some(url))?;
            b.wait_stderr("standing by", Duration::from_secs(60))?;
            let mhome = dir.path().join("late");
            let addr = new_identity(zt, &mhome)?;
            let out = Command::new(zt)
                .args(["member", "authorize", &nwid, &addr, "--home"])
                .arg(&b_home)
                .output()?;
            anyhow::ensure!(out.status.success(), "authorize through the standby");
            let killed = Instant::now();
            ctl.signal(nix::sys::signal::Signal::SIGKILL);
            let active = b.wait_stderr("active:", Duration::from_secs(30))?;
            let started = Instant::now();
            let mut m = member(ztrun, &mhome, &nwid, &root_arg)?;
            let joined = m.wait_stderr(&format!("joined {nwid}"), Duration::from_secs(30))?;
            (
                active.saturating_duration_since(killed),
                joined.saturating_duration_since(started),
            )
        }
        None => {
            let mhome = dir.path().join("late");
            let addr = new_identity(zt, &mhome)?;
            let out = Command::new(zt)
                .args(["member", "authorize", &nwid, &addr, "--home"])
                .arg(&home)
                .output()?;
            anyhow::ensure!(out.status.success(), "authorize");
            let stopped = Instant::now();
            drop(ctl);
            let (_again, _) = controller(zt, &home, &root_arg, None)?;
            let restarted = stopped.elapsed();
            let started = Instant::now();
            let mut m = member(ztrun, &mhome, &nwid, &root_arg)?;
            let joined = m.wait_stderr(&format!("joined {nwid}"), Duration::from_secs(30))?;
            (restarted, joined.saturating_duration_since(started))
        }
    };
    eprintln!("  takeover {takeover:?}");
    root.signal(nix::sys::signal::Signal::SIGTERM);
    Ok(Row {
        store,
        create_authorize,
        rss_kib,
        push,
        takeover,
    })
}
