//! Authorizing a member of a network of 10,000 members stays under 2 ms, measured end to
//! end: an HTTP request to a running `zt controller` (one kept-alive connection), the
//! controller, and the durable commit of the member's record. The database is filled
//! beforehand through zt-core's store, in one transaction. Alone in its test binary, so
//! that other tests do not share the two cores while it measures.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zt_core::controller::store::{Change, RedbStore, Store as _, Writer};
use zt_core::controller::{Member, NetworkSettings};
use zt_core::{Address, NetworkId};

const ZT: &str = env!("CARGO_BIN_EXE_zt");
const MEMBERS: u64 = 10_000;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

/// One request on a kept-alive connection; returns the status and the body.
fn request(s: &mut BufReader<TcpStream>, token: &str, path: &str, body: &str) -> (u16, String) {
    // One write: several small ones would wait on Nagle's algorithm and delayed ACKs.
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: zt\r\nX-ZT-Auth: {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.get_mut().write_all(req.as_bytes()).unwrap();
    let mut status = String::new();
    s.read_line(&mut status).unwrap();
    let code = status.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut length = 0;
    loop {
        let mut h = String::new();
        s.read_line(&mut h).unwrap();
        if h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    s.read_exact(&mut body).unwrap();
    (code, String::from_utf8(body).unwrap())
}

#[test]
fn authorize_at_10000_members_is_under_2_ms() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("ctl");
    std::fs::create_dir(&home).unwrap();
    let out = Command::new(ZT)
        .args(["id", "new"])
        .arg(home.join("identity.secret"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = Command::new(ZT)
        .args(["id", "show"])
        .arg(&home)
        .output()
        .unwrap();
    let shown = String::from_utf8(shown.stdout).unwrap();
    let address: Address = shown
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("zt id show prints the address first")
        .parse()
        .unwrap();
    let nwid = NetworkId((address.to_u64() << 24) | 1);
    {
        let (store, _) = RedbStore::open(&home.join("controller.redb")).unwrap();
        let mut changes = vec![Change::Network {
            nwid,
            settings: Some(NetworkSettings::default()),
        }];
        changes.extend((0..MEMBERS).map(|i| Change::Member {
            nwid,
            member: Address::new(0x01_0000_0000 + i).unwrap(),
            record: Some(Member {
                authorized: true,
                ..Member::default()
            }),
            by: Writer::Administrator,
        }));
        store.apply(&changes).unwrap();
    }

    let mut child = Command::new(ZT)
        .arg("controller")
        .arg("--home")
        .arg(&home)
        .args(["--root", "127.0.0.1:9", "--api", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ctl = Killed(child);
    let api: SocketAddr = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let token = std::fs::read_to_string(home.join("authtoken.secret")).unwrap();
    let conn = TcpStream::connect(api).unwrap();
    conn.set_nodelay(true).unwrap();
    let mut conn = BufReader::new(conn);

    let mut times = Vec::new();
    for i in 0..101u64 {
        let member = Address::new(0x02_0000_0000 + i).unwrap();
        let path = format!("/controller/network/{nwid}/member/{member}");
        let start = Instant::now();
        let (code, body) = request(&mut conn, token.trim(), &path, r#"{"authorized":true}"#);
        times.push(start.elapsed());
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"authorized\": true"), "{body}");
    }
    times.sort();
    let (median, p90, max) = (times[50], times[90], times[100]);
    eprintln!(
        "authorize over HTTP at {MEMBERS} members: median {median:?}, p90 {p90:?}, max {max:?} \
         ({} build of the test, zt from the same profile)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    assert!(
        median < Duration::from_millis(2),
        "authorize took {median:?} (median), {p90:?} (p90) at {MEMBERS} members"
    );
}
