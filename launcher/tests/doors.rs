//! The doors of issue 16 as a person uses them on one machine, no Docker needed:
//! `ztrun --publish` (TCP and UDP) reaches a wrapped server from an unwrapped client, and
//! `ztrun --socks5` lets an unwrapped client CONNECT to a member by its `.zt` name, with
//! and without the RFC 1929 username/password, and `ztrun --http-proxy` tunnels an HTTP
//! CONNECT to it.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{python, root, KillOnDrop, ZTRUN};

const NWID: &str = "ff0000000000d002";

fn free_port() -> u16 {
    // Free for TCP and UDP alike (the publish test uses one port for each).
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `ztrun ARGS` with its stderr lines sent to the returned channel.
fn ztrun(args: &[&str], env: &[(&str, &str)]) -> (KillOnDrop, mpsc::Receiver<String>) {
    let mut child = Command::new(ZTRUN)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (KillOnDrop(child), rx)
}

/// Waits for a stderr line containing `what`.
fn wait_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) if l.contains(what) => return l,
            Ok(l) => seen.push(l),
            Err(_) => panic!("no line with {what:?} within 20 s: {seen:#?}"),
        }
    }
}

/// A TCP server answering one line, and a UDP echo, on the same port.
const SERVER: &str = r#"
import socket, sys, threading
port = int(sys.argv[1])
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", port))
    while True:
        d, a = u.recvfrom(2048)
        u.sendto(b"udp " + d, a)
threading.Thread(target=udp, daemon=True).start()
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(8)
while True:
    c, a = s.accept()
    c.sendall(b"tcp hello\n")
    c.close()
"#;

fn read_all(mut s: TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Connect with retries while the door comes up.
fn connect(port: u16) -> TcpStream {
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

/// A SOCKS5 CONNECT to `name:port`, with `credentials` if given: the reply code (and
/// the stream, connected when the code is 0).
fn socks_connect(
    door: u16,
    credentials: Option<(&str, &str)>,
    name: &str,
    port: u16,
) -> (u8, TcpStream) {
    let mut s = connect(door);
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let method = if credentials.is_some() { 2 } else { 0 };
    s.write_all(&[5, 1, method]).unwrap();
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).unwrap();
    if choice[1] != method {
        return (0xff, s);
    }
    if let Some((user, password)) = credentials {
        let mut m = vec![1, user.len() as u8];
        m.extend_from_slice(user.as_bytes());
        m.push(password.len() as u8);
        m.extend_from_slice(password.as_bytes());
        s.write_all(&m).unwrap();
        let mut status = [0u8; 2];
        s.read_exact(&mut status).unwrap();
        if status[1] != 0 {
            return (0xfe, s);
        }
    }
    let mut req = vec![5, 1, 0, 3, name.len() as u8];
    req.extend_from_slice(name.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).unwrap();
    let mut head = [0u8; 4];
    s.read_exact(&mut head).unwrap();
    let rest = if head[3] == 4 { 16 + 2 } else { 4 + 2 };
    let mut bound = vec![0u8; rest];
    s.read_exact(&mut bound).unwrap();
    (head[1], s)
}

#[test]
fn published_ports_and_the_socks5_door_reach_a_wrapped_server() {
    let (_root, root_arg) = root();
    // --publish serves the same port number on both sides.
    let port = free_port();
    let tcp = format!("127.0.0.1:{port}");
    let udp = format!("127.0.0.1:{port}/udp");
    let (_server, server_err) = ztrun(
        &[
            "--ephemeral",
            "--nwid",
            NWID,
            "--root",
            &root_arg,
            "--publish",
            &tcp,
            "--publish",
            &udp,
            "--",
            python(),
            "-c",
            SERVER,
            &port.to_string(),
        ],
        &[],
    );
    let joined = wait_line(&server_err, "joined");
    let name = joined
        .rsplit_once("; name ")
        .map(|(_, n)| n.trim().to_owned())
        .expect("a member name");
    wait_line(&server_err, &format!("published {udp}"));

    // TCP through the published port (retried while the program starts listening).
    let mut answer = String::new();
    for _ in 0..50 {
        answer = read_all(connect(port));
        if !answer.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(answer, "tcp hello\n");
    // UDP through the published port: the answer comes back to the sender.
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut got = None;
    for _ in 0..20 {
        u.send_to(b"ping", ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 64];
        if let Ok((n, from)) = u.recv_from(&mut buf) {
            got = Some((buf[..n].to_vec(), from.port()));
            break;
        }
    }
    assert_eq!(got, Some((b"udp ping".to_vec(), port)));

    // SOCKS5 without authentication on loopback: by name, and what it refuses.
    let door = free_port();
    let (_socks, socks_err) = ztrun(
        &[
            "--ephemeral",
            "--nwid",
            NWID,
            "--root",
            &root_arg,
            "--socks5",
            &format!("127.0.0.1:{door}"),
        ],
        &[],
    );
    wait_line(&socks_err, "SOCKS5 on");
    let (code, stream) = socks_connect(door, None, &name, port);
    assert_eq!(code, 0, "CONNECT {name}:{port}");
    assert_eq!(read_all(stream), "tcp hello\n");
    let (code, _) = socks_connect(door, None, "nosuchmember.zt", port);
    assert_eq!(code, 4, "an unknown name is host unreachable");
    let (code, _) = socks_connect(door, None, "127.0.0.1", port);
    assert_eq!(code, 2, "the host's own addresses are not allowed");

    // With a username and password: the right ones pass, wrong ones do not.
    let door = free_port();
    let (_socks, socks_err) = ztrun(
        &[
            "--ephemeral",
            "--nwid",
            NWID,
            "--root",
            &root_arg,
            "--socks5",
            &format!("127.0.0.1:{door}"),
            "--socks5-user",
            "alice",
        ],
        &[("ZTRUN_SOCKS5_PASSWORD", "s3cret")],
    );
    wait_line(&socks_err, "SOCKS5 on");
    let (code, _) = socks_connect(door, Some(("alice", "wrong")), &name, port);
    assert_eq!(code, 0xfe, "a wrong password is refused");
    let (code, _) = socks_connect(door, None, &name, port);
    assert_eq!(code, 0xff, "no authentication is not offered");
    let (code, stream) = socks_connect(door, Some(("alice", "s3cret")), &name, port);
    assert_eq!(code, 0);
    assert_eq!(read_all(stream), "tcp hello\n");

    // HTTP CONNECT: a tunnel to the member by name; other methods are refused.
    let proxy = free_port();
    let (_http, http_err) = ztrun(
        &[
            "--ephemeral",
            "--nwid",
            NWID,
            "--root",
            &root_arg,
            "--http-proxy",
            &format!("127.0.0.1:{proxy}"),
        ],
        &[],
    );
    wait_line(&http_err, "HTTP CONNECT proxy on");
    let mut s = connect(proxy);
    write!(
        s,
        "CONNECT {name}:{port} HTTP/1.1\r\nHost: {name}:{port}\r\n\r\n"
    )
    .unwrap();
    let answer = read_all(s);
    assert_eq!(
        answer, "HTTP/1.1 200 Connection Established\r\n\r\ntcp hello\n",
        "through the HTTP CONNECT tunnel"
    );
    let mut s = connect(proxy);
    write!(s, "GET http://{name}:{port}/ HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_all(s).starts_with("HTTP/1.1 405 "));
    let mut s = connect(proxy);
    write!(s, "CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").unwrap();
    assert!(
        read_all(s).starts_with("HTTP/1.1 403 "),
        "the host is not a member"
    );
}

#[test]
fn a_socks5_door_off_loopback_needs_credentials() {
    let out = Command::new(ZTRUN)
        .args([
            "--ephemeral",
            "--nwid",
            NWID,
            "--root",
            "127.0.0.1:9",
            "--socks5",
        ])
        .arg(format!("0.0.0.0:{}", free_port()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("not a loopback address"), "{err}");
    let out = Command::new(ZTRUN)
        .args([
            "--ephemeral",
            "--nwid",
            NWID,
            "--http-proxy",
            "0.0.0.0:3128",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("no authentication"), "{err}");
    let out = Command::new(ZTRUN)
        .args(["--socks5", "127.0.0.1:1080"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--nwid"), "{err}");
}
