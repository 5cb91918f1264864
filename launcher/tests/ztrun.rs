//! `ztrun` and `zt` as a person runs them on one machine: a root, a server and a client,
//! each its own process, talking over the overlay on loopback.

use std::io::{BufRead as _, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ZTRUN: &str = env!("CARGO_BIN_EXE_ztrun");
const ZT: &str = env!("CARGO_BIN_EXE_zt");
const NWID: &str = "ff0000000000e2e0";

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A root on a free loopback port; returns it and its `--root` argument.
fn root() -> (Killed, String) {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    let mut child = Command::new(ZT)
        .args(["root", "--listen", &endpoint])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains(':'), "zt root printed no identity: {line:?}");
    (Killed(child), format!("{}@{endpoint}", line.trim()))
}

fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

#[test]
fn a_client_reaches_a_server_over_the_overlay() {
    let (_root, root_arg) = root();
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "marker-7f3a over the overlay\n").unwrap();
    let server_home = dir.path().join("server");
    let mut server = Command::new(ZTRUN)
        .arg("--home")
        .arg(&server_home)
        .args(["--nwid", NWID, "--root", &root_arg, "--", python()])
        .args(["-m", "http.server", "18080", "--directory"])
        .arg(&www)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(server.stderr.take().unwrap());
    let _server = Killed(server);
    let mut addr = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    while addr.is_none() && Instant::now() < deadline {
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        // "ztrun: joined NWID as V4 and V6 in N ms"
        if let Some(rest) = line.strip_prefix(&format!("ztrun: joined {NWID} as ")) {
            addr = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    let addr = addr.expect("the server's ztrun printed no `joined` line");
    assert!(
        addr.starts_with("100."),
        "ad-hoc IPv4 address expected: {addr}"
    );

    // The server may need a moment to listen; bounded retries.
    let client_home = dir.path().join("client");
    let mut last = String::new();
    for _ in 0..20 {
        let out = Command::new(ZTRUN)
            .arg("--home")
            .arg(&client_home)
            .args(["--quiet", "--nwid", NWID, "--root", &root_arg, "--"])
            .args(["curl", "-sS", "--max-time", "5"])
            .arg(format!("http://{addr}:18080/"))
            .output()
            .unwrap();
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "marker-7f3a over the overlay\n"
            );
            // --quiet: nothing on stderr from ztrun itself.
            assert!(out.stderr.is_empty(), "{last}");
            // The server's node shows the client as a peer.
            let status = Command::new(ZT)
                .args(["status", "--home"])
                .arg(&server_home)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&status.stdout);
            assert!(text.contains(NWID), "{text}");
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("the client never got the page: {last}");
}

#[test]
fn without_a_network_only_loopback_is_reachable() {
    let out = Command::new(ZTRUN)
        .args(["--", python(), "-c"])
        .arg(
            "import socket,errno; s=socket.socket(); s.settimeout(3); \
             print(errno.errorcode.get(s.connect_ex(('198.18.0.1', 9)), 'connected'))",
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ENETUNREACH");
}

#[test]
fn the_program_exit_status_is_returned() {
    let st = Command::new(ZTRUN)
        .args(["--", "sh", "-c", "exit 7"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(7));
}

#[test]
fn bad_input_gets_an_actionable_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(ZTRUN)
        .args(["--nwid", "not-a-network", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("16 hex digits"));

    std::fs::write(dir.path().join("identity.secret"), "garbage").unwrap();
    let out = Command::new(ZTRUN)
        .arg("--home")
        .arg(dir.path())
        .args(["--nwid", NWID, "--root", "127.0.0.1:9", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("identity.secret"), "{err}");

    let out = Command::new(ZTRUN)
        .args([
            "--nwid",
            "0000000000000001",
            "--root",
            "127.0.0.1:9",
            "--",
            "true",
        ])
        .env("ZTRUN_HOME", dir.path().join("other"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("controller") && err.contains("0000000000"),
        "{err}"
    );
}
