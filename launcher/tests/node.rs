//! One node per home: the `ztrun`s of a home share one node (identity, address), `zt
//! status` lists their programs, the node ends after the last one, and a wrapped program
//! cannot attach to it. Wrapped programs run as uid 65534 when the test runs as root.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
use common::{as_user, python, root, KillOnDrop as Killed, ZT, ZTRUN};

const NWID: &str = "ff00000000c0ffee";

/// `ztrun --home HOME --nwid NWID --root ROOT -- PROGRAM`, its stderr lines on a channel.
fn ztrun(home: &Path, root: &str, program: &[&str]) -> (Killed, mpsc::Receiver<String>) {
    let mut child = Command::new(ZTRUN)
        .arg("--home")
        .arg(home)
        .args(["--nwid", NWID, "--root", root, "--"])
        .args(as_user(program))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Killed(child), rx)
}

fn wait_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line with {needle:?}; got:\n{}", seen.join("\n"));
}

fn status_json(home: &Path) -> serde_json::Value {
    let out = Command::new(ZT)
        .args(["status", "--json", "--home"])
        .arg(home)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).expect("zt status --json prints JSON")
}

/// Waits until `zt status --json` satisfies `check`; returns it.
fn wait_status(
    home: &Path,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status_json(home);
        if check(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "zt status never showed {what}: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn programs(s: &serde_json::Value) -> usize {
    s["node"]["programs"].as_array().map_or(0, Vec::len)
}

fn home() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

const SERVE: &str = "import socket,time\n\
l=socket.socket(); l.bind(('0.0.0.0',8080)); l.listen()\n\
print('listening', flush=True)\n\
c,_=l.accept(); c.sendall(b'hello from the same node'); c.close(); time.sleep(60)";

#[test]
fn programs_of_one_home_share_its_node_and_zt_status_lists_them() {
    let (_root, root) = root();
    let dir = home();
    let h = dir.path();
    let (server, server_err) = ztrun(h, &root, &[python(), "-c", SERVE]);
    let first = wait_line(&server_err, "joined");
    let (waiter, waiter_err) = ztrun(h, &root, &[python(), "-c", "import time; time.sleep(60)"]);
    let second = wait_line(&waiter_err, "joined");
    assert!(second.contains("shared with 1 other program"), "{second}");
    let address = |l: &str| {
        l.split(" as ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(address(&first), address(&second), "one node, one address");

    let s = wait_status(h, "both programs", |s| programs(s) == 2);
    let commands: Vec<&str> = s["node"]["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["command"].as_str().unwrap())
        .collect();
    assert!(
        commands.iter().any(|c| c.contains("sleep(60)")),
        "{commands:?}"
    );
    assert!(
        commands.iter().any(|c| c.contains("listening")),
        "{commands:?}"
    );
    let text = String::from_utf8(
        Command::new(ZT)
            .args(["status", "--home"])
            .arg(h)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(text.matches("program  pid").count(), 2, "{text}");

    // A third program reaches the first over the node's own address.
    let v4 = address(&first);
    let client = format!(
        "import socket; s=socket.create_connection(('{v4}',8080),timeout=5); print(s.recv(100).decode())"
    );
    let out = Command::new(ZTRUN)
        .arg("--home")
        .arg(h)
        .args(["--nwid", NWID, "--root", &root, "--"])
        .args(as_user(&[python(), "-c", &client]))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello from the same node"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // One program less, then none: the node goes, and the home is free.
    drop(waiter);
    wait_status(h, "one program", |s| programs(s) == 1);
    drop(server);
    let gone = Instant::now();
    wait_status(h, "no node", |s| s["running"] == false);
    assert!(
        gone.elapsed() < Duration::from_secs(5),
        "the node outlived its programs by {:?}",
        gone.elapsed()
    );
    assert!(
        !h.join("node.sock").exists(),
        "the node's socket is left behind"
    );
}

#[test]
fn an_ephemeral_program_gets_a_node_of_its_own() {
    let (_root, root) = root();
    let dir = home();
    let h = dir.path();
    let (_server, server_err) = ztrun(h, &root, &[python(), "-c", SERVE]);
    let first = wait_line(&server_err, "joined");
    let out = Command::new(ZTRUN)
        .args(["--ephemeral", "--nwid", NWID, "--root", &root, "--", "true"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let joined = err
        .lines()
        .find(|l| l.contains("joined"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(!joined.contains("shared"), "{joined}");
    assert_ne!(
        first
            .split(" as ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next(),
        joined
            .split(" as ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next(),
        "an ephemeral program has its own address"
    );
}

/// `ztrun ARGS`, itself as uid 65534 when the test runs as root (a root program may
/// inspect any process: the promise is to programs of the node's own unprivileged user).
fn ztrun_as_user(args: &[&str]) -> Command {
    let mut c;
    if nix::unistd::geteuid().is_root() {
        c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            ZTRUN,
        ]);
    } else {
        c = Command::new(ZTRUN);
    }
    c.args(args);
    c
}

#[test]
fn a_wrapped_program_cannot_attach_to_its_node() {
    let (_root, root) = root();
    let dir = home();
    let h = dir.path().join("home");
    let h = h.as_path();
    std::fs::create_dir(h).unwrap();
    if nix::unistd::geteuid().is_root() {
        let nobody = Some(nix::unistd::Uid::from_raw(65534));
        nix::unistd::chown(h, nobody, Some(nix::unistd::Gid::from_raw(65534))).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // ztrun, its node and the programs all run as one unprivileged user: the uid check
    // would refuse any other, and this is about a program that passes it.
    let home_arg = h.to_str().unwrap();
    let mut server = ztrun_as_user(&[
        "--home",
        home_arg,
        "--nwid",
        NWID,
        "--root",
        &root,
        "--",
        python(),
        "-c",
        SERVE,
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (tx, server_err) = mpsc::channel();
    let err = server.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let _server = Killed(server);
    wait_line(&server_err, "joined");
    let sock = h.join("node.sock");
    let node_pid = wait_status(h, "the node's pid", |s| s["node"]["pid"].is_u64())["node"]["pid"]
        .as_u64()
        .unwrap();
    let probe = format!(
        "import ctypes, socket\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         pidfd = libc.syscall(434, {node_pid}, 0)\n\
         taken = sum(1 for fd in range(64) if pidfd >= 0 and libc.syscall(438, pidfd, fd, 0) >= 0)\n\
         print('pidfd_getfd taken', taken)\n\
         s=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n\
         s.connect({sock:?})\n\
         s.settimeout(5)\n\
         try:\n\
         \x20 s.send(b'{{\"attach\":{{\"nwids\":[\"{NWID}\"],\"roots\":[]}}}}')\n\
         \x20 got=s.recv(65536)\n\
         except (ConnectionResetError, BrokenPipeError): got=b''\n\
         print('answer', got)\n"
    );
    let out = ztrun_as_user(&[
        "--ephemeral",
        "--nwid",
        NWID,
        "--root",
        &root,
        "--",
        python(),
        "-c",
        &probe,
    ])
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("answer b''"),
        "the node answered a wrapped program: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("pidfd_getfd taken 0"),
        "the node's descriptors are within a program's reach: {stdout}"
    );
    let log = std::fs::read_to_string(h.join("node.log")).unwrap();
    assert!(log.contains("may not attach"), "{log}");
}
