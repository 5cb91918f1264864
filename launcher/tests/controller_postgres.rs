//! Controllers on PostgreSQL as an operator runs them (issue 17): two replicas of one
//! controller on one database, `zt net`/`zt member` against either, `ztrun` members, a
//! root; and a move of a controller's state from the embedded store to PostgreSQL.
//!
//! Each test starts its own PostgreSQL server from the Debian package (`postgresql`, in
//! .ci/packages) in a temporary directory: `initdb`, then `postgres -D … -k …` on a free
//! loopback port, stopped and removed after. PostgreSQL refuses to run as root, so as root
//! both run as uid 65534 in a directory that uid owns; otherwise as the current user. A
//! machine without the server binaries fails these tests with what to install.

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
use common::{is_root, python, root, StopOnDrop as Killed, ZT, ZTRUN};

/// `program` run as uid 65534 when this test runs as root.
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
    c.env_remove("PGDATA").env("LC_ALL", "C");
    c
}

/// The directory of the newest installed PostgreSQL server's binaries.
fn postgres_bin() -> PathBuf {
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
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server under /usr/lib/postgresql/*/bin: these tests need the Debian \
             package `postgresql` (apt-get install postgresql; .ci/packages lists it)"
        ),
    }
}

/// A PostgreSQL server of its own in a temporary directory.
struct Postgres {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Postgres {
    fn start() -> Postgres {
        let bin = postgres_bin();
        let dir = tempfile::Builder::new().prefix("zt-pg").tempdir().unwrap();
        if is_root() {
            std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        }
        let data = dir.path().join("data");
        let out = unprivileged(&[
            bin.join("initdb").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-U",
            "zt",
            "--auth=trust",
            "--no-locale",
            "-E",
            "UTF8",
            "--no-sync",
        ])
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).unwrap();
        let child = unprivileged(&[
            bin.join("postgres").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-k",
            dir.path().to_str().unwrap(),
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
        let pg = Postgres { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(pg.dir.path().join("postgres.log")).unwrap();
            if log.contains("ready to accept connections")
                && TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start within 30 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pg
    }

    fn url(&self) -> String {
        format!("postgres://zt@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs `sql` with psql; returns its unaligned output.
    fn sql(&self, sql: &str) -> String {
        let out = Command::new(postgres_bin().join("psql"))
            .args(["-X", "-A", "-t", "-d", &self.url(), "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fast shutdown: clients are disconnected.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
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

/// A process whose stderr (and stdout) lines arrive with their arrival time.
struct Watched {
    child: Killed,
    stderr: mpsc::Receiver<(Instant, String)>,
    stdout: mpsc::Receiver<(Instant, String)>,
    seen: Vec<String>,
}

impl Watched {
    fn spawn(mut cmd: Command) -> Watched {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = lines(child.stderr.take().unwrap());
        let stdout = lines(child.stdout.take().unwrap());
        Watched {
            child: Killed(child),
            stderr,
            stdout,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle`; returns it and when it arrived.
    fn wait_stderr(&mut self, needle: &str, limit: Duration) -> (Instant, String) {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok((at, line)) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return (at, line);
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no stderr line with {needle:?} within {limit:?}; got:\n{}",
            self.seen.join("\n")
        );
    }
}

/// A replica of a controller: `zt controller --store URL` with its home; returns it and
/// its API address once the API is up.
fn replica(home: &Path, root: &str, url: &str) -> (Watched, SocketAddr) {
    let mut cmd = Command::new(ZT);
    cmd.arg("controller").arg("--home").arg(home).args([
        "--root",
        root,
        "--api",
        "127.0.0.1:0",
        "--store",
        url,
    ]);
    let w = Watched::spawn(cmd);
    let (_, line) = w
        .stdout
        .recv_timeout(Duration::from_secs(20))
        .expect("zt controller printed no ready line");
    let api = line
        .split_whitespace()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("ready line {line:?}"));
    (w, api)
}

/// The identity of controller home `from` copied into a new home `to` (a second replica).
fn copy_identity(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["identity.secret", "identity.public"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

fn zt(home: &Path, args: &[&str]) -> Output {
    Command::new(ZT)
        .args(args)
        .arg("--home")
        .arg(home)
        .output()
        .unwrap()
}

fn ok_stdout(out: Output) -> String {
    assert!(
        out.status.success(),
        "zt failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A `ztrun` member running `program` (as uid 65534 when root).
fn member(home: &Path, nwid: &str, root: &str, program: &[&str]) -> Watched {
    std::fs::create_dir_all(home).unwrap();
    let mut cmd = Command::new(ZTRUN);
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
    cmd.args(program);
    Watched::spawn(cmd)
}

/// Creates the identity of state directory `home`; returns its address.
fn new_identity(home: &Path) -> String {
    std::fs::create_dir_all(home).unwrap();
    ok_stdout(
        Command::new(ZT)
            .args(["id", "new"])
            .arg(home.join("identity.secret"))
            .output()
            .unwrap(),
    );
    let shown = ok_stdout(
        Command::new(ZT)
            .args(["id", "show"])
            .arg(home)
            .output()
            .unwrap(),
    );
    shown
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("zt id show prints the address first")
        .to_string()
}

/// The members of `nwid` as `zt member list --json` on the controller in `home` shows them.
fn members(home: &Path, nwid: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok_stdout(zt(home, &["member", "list", nwid, "--json"]))).unwrap()
}

fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// "ztrun: joined NWID as V4 and V6 in N ms" → V4.
fn joined_v4(line: &str) -> String {
    let rest = line.split(" as ").nth(1).expect("a `joined … as …` line");
    rest.split_whitespace().next().unwrap().to_string()
}

/// A UDP receiver printing each datagram, and its command line.
fn receiver_program() -> Vec<&'static str> {
    vec![
        python(),
        "-u",
        "-c",
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.bind(('0.0.0.0',9999))\nwhile True:\n d,a=s.recvfrom(100)\n print(d.decode())",
    ]
}

fn sender_program(to: &str) -> String {
    format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         i=0\nwhile True:\n s.sendto(b'seq %d' % i, ('{to}',9999))\n i+=1\n time.sleep(0.1)"
    )
}

#[test]
fn authorization_through_either_replica_reaches_members_within_1s() {
    let pg = Postgres::start();
    let (_root, root_arg) = root();
    let dir = scratch();
    let (a_home, b_home) = (dir.path().join("a"), dir.path().join("b"));
    let (mut a, _) = replica(&a_home, &root_arg, &pg.url());
    a.wait_stderr("active:", Duration::from_secs(10));
    copy_identity(&a_home, &b_home);
    let (mut b, _) = replica(&b_home, &root_arg, &pg.url());
    b.wait_stderr("standing by", Duration::from_secs(10));

    // A network made through the standby replica.
    let nwid = ok_stdout(zt(
        &b_home,
        &["net", "create", "--ipv4-pool", "10.147.40.0/24"],
    ))
    .trim()
    .to_string();
    let m_home = dir.path().join("m");
    let addr = new_identity(&m_home);
    let mut m = member(&m_home, &nwid, &root_arg, &["sleep", "60"]);
    m.wait_stderr("is not authorized", Duration::from_secs(20));

    // Authorized through B: the member, served by A, joins within 1 s.
    let t = Instant::now();
    ok_stdout(zt(&b_home, &["member", "authorize", &nwid, &addr]));
    let (at, line) = m.wait_stderr(&format!("joined {nwid} as "), Duration::from_secs(10));
    let took = at.duration_since(t);
    eprintln!("authorize through B → joined via A: {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "joined {took:?} after authorization: {line}"
    );
    let v4 = joined_v4(&line);
    assert!(v4.starts_with("10.147.40."), "{line}");

    // Both replicas list it authorized with that address.
    for home in [&a_home, &b_home] {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let list = members(home, &nwid);
            let me = list.iter().find(|x| x["id"] == addr.as_str());
            if me.is_some_and(|x| x["authorized"] == true && x["ipAssignments"][0] == v4.as_str()) {
                break;
            }
            assert!(Instant::now() < deadline, "{}: {list:?}", home.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Deauthorized through B: the member hears it within 1 s.
    let t = Instant::now();
    ok_stdout(zt(&b_home, &["member", "deauthorize", &nwid, &addr]));
    let (at, line) = m.wait_stderr("withdrew network", Duration::from_secs(10));
    let took = at.duration_since(t);
    eprintln!("deauthorize through B → withdrawn via A: {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}: {line}");
    drop(b);
    drop(a);
}

#[test]
fn standby_takes_over_after_sigkill_and_members_keep_talking() {
    let pg = Postgres::start();
    let (_root, root_arg) = root();
    let dir = scratch();
    let (a_home, b_home) = (dir.path().join("a"), dir.path().join("b"));
    let (mut a, _) = replica(&a_home, &root_arg, &pg.url());
    a.wait_stderr("active:", Duration::from_secs(10));
    copy_identity(&a_home, &b_home);
    let (mut b, _) = replica(&b_home, &root_arg, &pg.url());
    b.wait_stderr("standing by", Duration::from_secs(10));

    let nwid = ok_stdout(zt(
        &a_home,
        &["net", "create", "--ipv4-pool", "10.147.41.0/24"],
    ))
    .trim()
    .to_string();
    let (rx_home, tx_home) = (dir.path().join("rx"), dir.path().join("tx"));
    for h in [&rx_home, &tx_home] {
        let a = new_identity(h);
        ok_stdout(zt(&a_home, &["member", "authorize", &nwid, &a]));
    }
    let mut receiver = member(&rx_home, &nwid, &root_arg, &receiver_program());
    let (_, line) = receiver.wait_stderr(&format!("joined {nwid} as "), Duration::from_secs(20));
    let rx_addr = joined_v4(&line);
    let mut sender = member(
        &tx_home,
        &nwid,
        &root_arg,
        &[python(), "-c", &sender_program(&rx_addr)],
    );
    let (_, line) = sender.wait_stderr(&format!("joined {nwid} as "), Duration::from_secs(20));
    let tx_addr = joined_v4(&line);
    receiver
        .stdout
        .recv_timeout(Duration::from_secs(20))
        .expect("the receiver got nothing from the sender");

    // SIGKILL the active replica: no goodbye, its lock goes with its connection.
    let killed = Instant::now();
    a.child.0.kill().unwrap();
    let _ = a.child.0.wait();
    let (at, line) = b.wait_stderr("active:", Duration::from_secs(10));
    let takeover = at.duration_since(killed);
    eprintln!("takeover: {takeover:?} ({line})");
    assert!(takeover < Duration::from_secs(5), "{takeover:?}");

    // A member authorized through the new active replica joins within 5 s.
    let late_home = dir.path().join("late");
    let late = new_identity(&late_home);
    ok_stdout(zt(&b_home, &["member", "authorize", &nwid, &late]));
    let started = Instant::now();
    let mut late_member = member(&late_home, &nwid, &root_arg, &["sleep", "60"]);
    let (at, line) =
        late_member.wait_stderr(&format!("joined {nwid} as "), Duration::from_secs(10));
    let took = at.duration_since(started);
    eprintln!("member after takeover joined in {took:?}: {line}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The new active replica knows the addresses the old one handed out.
    let late_addr = joined_v4(&line);
    assert!(
        late_addr != rx_addr && late_addr != tx_addr,
        "{late_addr} was given before the takeover ({rx_addr}, {tx_addr})"
    );

    // The existing members kept passing traffic throughout: no gap of 2 s from the kill
    // to 3 s after the late member joined.
    let until = Instant::now() + Duration::from_secs(3);
    let mut last = killed;
    let mut count = 0;
    let mut worst = Duration::ZERO;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match receiver.stdout.recv_timeout(left) {
            Ok((t, _)) => {
                if t > killed {
                    worst = worst.max(t.duration_since(last));
                    last = t;
                    count += 1;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(e) => panic!("the receiver ended: {e}"),
        }
    }
    worst = worst.max(until.saturating_duration_since(last));
    eprintln!("{count} datagrams after the kill, longest gap {worst:?}");
    assert!(
        worst < Duration::from_secs(2),
        "traffic stopped for {worst:?}"
    );

    // The members that joined before the kill get renewed configurations from the new
    // active replica without rejoining: a new network name reaches them.
    let t = Instant::now();
    ok_stdout(zt(
        &b_home,
        &["net", "set", &nwid, "--name", "after-takeover"],
    ));
    for home in [&rx_home, &tx_home] {
        wait_status(home, "after-takeover", Duration::from_secs(3));
    }
    eprintln!(
        "renamed network seen by both old members in {:?}",
        t.elapsed()
    );
    drop(sender);
}

/// Waits until `zt status --home HOME` shows `needle`.
fn wait_status(home: &Path, needle: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = Command::new(ZT)
            .args(["status", "--home"])
            .arg(home)
            .output()
            .unwrap();
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        if last.contains(needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("zt status never showed {needle:?}; last:\n{last}");
}

#[test]
fn export_from_redb_import_into_postgres_keeps_members() {
    let pg = Postgres::start();
    let (_root, root_arg) = root();
    let dir = scratch();
    let home = dir.path().join("ctl");
    // A controller on the embedded store, with a member that joined and one refused.
    let mut cmd = Command::new(ZT);
    cmd.arg("controller").arg("--home").arg(&home).args([
        "--root",
        &root_arg,
        "--api",
        "127.0.0.1:0",
    ]);
    let embedded = Watched::spawn(cmd);
    embedded
        .stdout
        .recv_timeout(Duration::from_secs(20))
        .expect("zt controller printed no ready line");
    let nwid = ok_stdout(zt(
        &home,
        &[
            "net",
            "create",
            "--name",
            "moved",
            "--ipv4-pool",
            "10.147.42.0/24",
        ],
    ))
    .trim()
    .to_string();
    let m_home = dir.path().join("m");
    let addr = new_identity(&m_home);
    ok_stdout(zt(&home, &["member", "authorize", &nwid, &addr]));
    for change in ["authorize", "deauthorize"] {
        ok_stdout(zt(&home, &["member", change, &nwid, "0123456788"]));
    }
    let mut m = member(&m_home, &nwid, &root_arg, &["true"]);
    let (_, line) = m.wait_stderr(&format!("joined {nwid} as "), Duration::from_secs(20));
    let v4 = joined_v4(&line);
    drop(m);
    let before = members(&home, &nwid);
    drop(embedded);

    // Export, import into PostgreSQL.
    let export = dir.path().join("export.json");
    let text = ok_stdout(zt(&home, &["controller", "export"]));
    std::fs::write(&export, &text).unwrap();
    let out = zt(
        &home,
        &[
            "controller",
            "import",
            "--store",
            &pg.url(),
            export.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("imported 1 network(s) with 2 member(s)"),
        "{out:?}"
    );
    // A second import is refused: the database is no longer empty.
    let again = zt(
        &home,
        &[
            "controller",
            "import",
            "--store",
            &pg.url(),
            export.to_str().unwrap(),
        ],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("import only into an empty store"));
    // The database exports the same.
    let from_pg = ok_stdout(zt(&home, &["controller", "export", "--store", &pg.url()]));
    let parse = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
    assert_eq!(parse(&from_pg), parse(&text));

    // The controller on PostgreSQL: same members, same authorizations and address.
    let (mut on_pg, _) = replica(&home, &root_arg, &pg.url());
    on_pg.wait_stderr("active:", Duration::from_secs(10));
    let after = members(&home, &nwid);
    let strip = |list: &[serde_json::Value]| -> Vec<(String, bool, serde_json::Value)> {
        list.iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap().to_string(),
                    m["authorized"].as_bool().unwrap(),
                    m["ipAssignments"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(strip(&after), strip(&before));
    let mine = after.iter().find(|x| x["id"] == addr.as_str()).unwrap();
    assert_eq!(mine["authorized"], true);
    assert_eq!(mine["ipAssignments"][0], v4.as_str());
    // And the member joins again with its address.
    let mut m = member(&m_home, &nwid, &root_arg, &["true"]);
    let (_, line) = m.wait_stderr(&format!("joined {nwid} as "), Duration::from_secs(20));
    assert_eq!(joined_v4(&line), v4);
}

#[test]
fn active_replica_that_loses_the_database_stands_by_and_the_standby_takes_over() {
    let pg = Postgres::start();
    let (_root, root_arg) = root();
    let dir = scratch();
    let (a_home, b_home) = (dir.path().join("a"), dir.path().join("b"));
    let (mut a, _) = replica(&a_home, &root_arg, &pg.url());
    a.wait_stderr("active:", Duration::from_secs(10));
    copy_identity(&a_home, &b_home);
    let (mut b, _) = replica(&b_home, &root_arg, &pg.url());
    b.wait_stderr("standing by", Duration::from_secs(10));
    let nwid = ok_stdout(zt(
        &a_home,
        &["net", "create", "--ipv4-pool", "10.147.43.0/24"],
    ))
    .trim()
    .to_string();

    // The server ends the connection that holds the lock (as a network cut or a restart
    // of the database would): A stands by, B takes over.
    let holder = pg.sql("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted");
    let holder = holder.trim();
    assert!(!holder.is_empty() && !holder.contains('\n'), "{holder:?}");
    let cut = Instant::now();
    pg.sql(&format!("SELECT pg_terminate_backend({holder})"));
    let (at, _) = a.wait_stderr("standing by", Duration::from_secs(5));
    eprintln!("A stood by after {:?}", at.duration_since(cut));
    let (at, _) = b.wait_stderr("active:", Duration::from_secs(5));
    eprintln!("B active after {:?}", at.duration_since(cut));
    // A waits for the lock again, B holds it: one holder.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        pg.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
            .trim(),
        "1"
    );
    // A member joins through B within 5 s, authorized through A (which still serves the
    // API).
    let m_home = dir.path().join("m");
    let addr = new_identity(&m_home);
    ok_stdout(zt(&a_home, &["member", "authorize", &nwid, &addr]));
    let started = Instant::now();
    let mut m = member(&m_home, &nwid, &root_arg, &["sleep", "30"]);
    let (at, line) = m.wait_stderr(&format!("joined {nwid} as "), Duration::from_secs(10));
    assert!(
        at.duration_since(started) < Duration::from_secs(5),
        "{:?}: {line}",
        at.duration_since(started)
    );
}
