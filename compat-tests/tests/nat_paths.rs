//! The overlay across NATs, on real processes: a root on a public host, two members each
//! behind its own NAT router, every program as an unprivileged user under `ztrun`.
//!
//! - Behind port-restricted cone NATs the members punch through and the transfer goes
//!   **direct**: the root's relay counters (`zt root --stats-every 1`) do not grow with it.
//! - Behind symmetric NATs no hole can be punched and the same transfer goes **through
//!   the relay**: the counters grow by at least its size.
//! - A capture of the public LAN during a transfer of a known marker holds the overlay's
//!   UDP traffic and not one copy of the marker, while the receiver got it intact.
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use compat_tests::testnet::{require_root, Host, NatKind, TestNet};

const NWID: &str = "ff0000000000a7a7";
const PORT: u16 = 7100;
const MARKER: &str = "ZTRUN-MARKER-9f4e2c7a-the-root-must-not-see-this\n";
/// Copies of the marker sent: 2.4 MB.
const COPIES: usize = 50_000;
const NOBODY: u32 = 65534;

/// The receiver: accepts connections and answers each with what it got.
const SERVER: &str = r#"
import socket, sys
marker, copies = sys.argv[1].encode() + b"\n", int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[3])))
s.listen(8)
while True:
    c, _ = s.accept()
    chunks = []
    while True:
        b = c.recv(65536)
        if not b:
            break
        chunks.append(b)
    data = b"".join(chunks)
    verdict = "intact" if data == marker * copies else "short" if len(data) < len(marker) else "other"
    c.sendall(f"{len(data)} {verdict}\n".encode())
    c.close()
"#;

/// The sender: "hello" once, then (when the file argv[6] exists) the marker COPIES times,
/// printing the receiver's answer to each. Retries connections for up to 30 s.
const CLIENT: &str = r#"
import os, socket, sys, time
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def exchange(payload):
    deadline = time.time() + 30
    while True:
        try:
            c = socket.create_connection((host, port), timeout=5)
            break
        except OSError as e:
            if time.time() > deadline:
                print("connect failed:", e)
                sys.exit(1)
            time.sleep(0.5)
    c.settimeout(60)
    c.sendall(payload)
    c.shutdown(socket.SHUT_WR)
    answer = b""
    while True:
        b = c.recv(4096)
        if not b:
            break
        answer += b
    return answer.decode().strip()

if mode == "ping":
    print(exchange(b"hello"))
else:
    # A first exchange lets the members find each other (and punch, if they can);
    # then "go" from the test (a file) starts the measured transfer.
    print(exchange(b"hello"), flush=True)
    go = sys.argv[6]
    deadline = time.time() + 30
    while not os.path.exists(go):
        if time.time() > deadline:
            sys.exit(3)
        time.sleep(0.05)
    print(exchange((sys.argv[4].encode() + b"\n") * int(sys.argv[5])))
"#;

/// A child killed (with its process group) when dropped.
struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory the unprivileged user can write, with the two scripts in it.
fn workdir() -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("nat-paths-").tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
    std::fs::write(dir.path().join("server.py"), SERVER)?;
    std::fs::write(dir.path().join("client.py"), CLIENT)?;
    for home in ["home-a", "home-b"] {
        let h = dir.path().join(home);
        std::fs::create_dir(&h)?;
        std::os::unix::fs::chown(&h, Some(NOBODY), Some(NOBODY))?;
    }
    Ok(dir)
}

/// The root's latest relay counters: (data packets, bytes) from its stdout log.
fn relay_counters(log: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| l.starts_with("relay "))?;
    let field = |name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))?
            .parse()
            .ok()
    };
    Some((field("data_packets")?, field("bytes")?))
}

/// Counters after the next stats line (the root prints one per second).
fn next_counters(log: &Path) -> Result<(u64, u64)> {
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("relay "))
            .count()
    };
    let before = lines(log);
    let deadline = Instant::now() + Duration::from_secs(5);
    while lines(log) < before + 2 {
        ensure!(Instant::now() < deadline, "the root printed no counters");
        std::thread::sleep(Duration::from_millis(100));
    }
    relay_counters(log).context("unreadable counters line")
}

/// A test network: root on the public LAN, members a and b each behind a NAT of `kind`.
struct World<'n> {
    root_arg: String,
    root_log: PathBuf,
    a: Host<'n>,
    b: Host<'n>,
    _root: Running,
}

fn world<'n>(net: &'n TestNet, kind: NatKind, dir: &Path) -> Result<World<'n>> {
    let public = net.lan("public", "198.18.0.0/24")?;
    let root = net.host("root")?;
    let root_addr = root.attach(&public)?.addr;
    let nat_a = net.nat_router("nat-a", &public, kind)?;
    let nat_b = net.nat_router("nat-b", &public, kind)?;
    let a = net.host("a")?;
    a.attach(&nat_a.inside)?;
    let b = net.host("b")?;
    b.attach(&nat_b.inside)?;
    // The NAT routers' public addresses differ from the members' own: a real NAT.
    ensure!(nat_a.public_addr != nat_b.public_addr);

    let root_log = dir.join("root.out");
    let out = std::fs::File::create(&root_log)?;
    let child = root
        .command_as_user(compat_tests::workspace_binary("zt"))
        .args(["root", "--listen", &format!("{root_addr}:9993")])
        .args(["--stats-every", "1"])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .context("starting zt root")?;
    let root_proc = Running(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let identity = loop {
        let text = std::fs::read_to_string(&root_log).unwrap_or_default();
        if let Some(first) = text.lines().next() {
            break first.trim().to_string();
        }
        ensure!(
            Instant::now() < deadline,
            "zt root printed no identity in 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(World {
        root_arg: format!("{identity}@{root_addr}:9993"),
        root_log,
        a,
        b,
        _root: root_proc,
    })
}

/// `ztrun` on `host` as the unprivileged user, with `home` and the world's root; the
/// program follows.
fn ztrun(host: &Host<'_>, w: &World<'_>, home: &Path, quiet: bool) -> Command {
    let mut cmd = host.command_as_user(compat_tests::workspace_binary("ztrun"));
    cmd.arg("--home").arg(home);
    if quiet {
        cmd.arg("--quiet");
    }
    cmd.args(["--nwid", NWID, "--root", &w.root_arg, "--"]);
    cmd
}

/// Start the receiver on a; returns it and a's virtual IPv4 address.
fn start_server(w: &World<'_>, dir: &Path) -> Result<(Running, Ipv4Addr)> {
    let err_log = dir.join("server.err");
    let mut child = ztrun(&w.a, w, &dir.join("home-a"), false)
        .arg("python3")
        .arg(dir.join("server.py"))
        .args([MARKER.trim_end(), &COPIES.to_string(), &PORT.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_log)?)
        .spawn()
        .context("starting the server under ztrun")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&err_log).unwrap_or_default();
        let joined = text.lines().find_map(|l| {
            let rest = l.strip_prefix(&format!("ztrun: joined {NWID} as "))?;
            rest.split_whitespace().next()?.parse::<Ipv4Addr>().ok()
        });
        if let Some(ip) = joined {
            return Ok((Running(child), ip));
        }
        if let Some(status) = child.try_wait()? {
            bail!("the server's ztrun exited ({status}): {text}");
        }
        ensure!(
            Instant::now() < deadline,
            "the server's ztrun did not join in 30 s: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sender on b under one `ztrun`: a first small exchange, then (when `before`
/// returns) the marker transfer. Returns what `before` returned and the transfer's answer.
fn send<T>(
    w: &World<'_>,
    dir: &Path,
    server: Ipv4Addr,
    before: impl FnOnce() -> Result<T>,
) -> Result<(T, String)> {
    let out = dir.join("client.out");
    let go = dir.join("go");
    let _ = std::fs::remove_file(&go);
    let child = ztrun(&w.b, w, &dir.join("home-b"), true)
        .arg("python3")
        .arg(dir.join("client.py"))
        .args([&server.to_string(), &PORT.to_string(), "marker"])
        .args([MARKER.trim_end(), &COPIES.to_string()])
        .arg(&go)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(dir.join("client.err"))?)
        .spawn()
        .context("starting the client under ztrun")?;
    let mut child = Running(child);
    let lines = || -> Vec<String> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let failed = |what: &str| {
        let err = std::fs::read_to_string(dir.join("client.err")).unwrap_or_default();
        anyhow::anyhow!("{what}: {:?} {err}", lines())
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    while lines().is_empty() {
        if child.0.try_wait()?.is_some() || Instant::now() > deadline {
            return Err(failed("no answer to the first exchange"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(
        lines()[0] == "5 short",
        "{}",
        failed("unexpected first answer")
    );
    let got = before()?;
    std::fs::write(&go, b"")?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.0.try_wait()? {
            ensure!(
                status.success(),
                "{}",
                failed(&format!("client failed ({status})"))
            );
            break;
        }
        if Instant::now() > deadline {
            return Err(failed("the transfer did not end in 90 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let answer = lines().get(1).cloned().ok_or_else(|| failed("no answer"))?;
    Ok((got, answer))
}

/// The relayed bytes while the marker crossed from b to a, and the transfer size.
fn transfer_through(kind: NatKind) -> Result<(u64, u64)> {
    let net = TestNet::new()?;
    let dir = workdir()?;
    let w = world(&net, kind, dir.path())?;
    let (_server, server_ip) = start_server(&w, dir.path())?;
    let ((_, before), answer) = send(&w, dir.path(), server_ip, || {
        // Time for hole punching after the first exchange, then the counters.
        std::thread::sleep(Duration::from_secs(3));
        next_counters(&w.root_log)
    })?;
    let (_, after) = next_counters(&w.root_log)?;
    let size = (MARKER.len() * COPIES) as u64;
    assert_eq!(
        answer,
        format!("{size} intact"),
        "the receiver got the marker intact"
    );
    Ok((after - before, size))
}

#[test]
fn behind_port_restricted_nats_the_members_talk_directly() -> Result<()> {
    require_root();
    let (relayed, size) = transfer_through(NatKind::PortRestrictedCone)?;
    eprintln!("port-restricted NATs: {relayed} bytes relayed during a {size}-byte transfer");
    // Direct: the relay may carry a handshake or a keepalive, never the transfer.
    assert!(
        relayed < size / 20,
        "{relayed} bytes passed the root during a {size}-byte transfer that should be direct"
    );
    Ok(())
}

#[test]
fn behind_symmetric_nats_the_members_talk_through_the_relay() -> Result<()> {
    require_root();
    let (relayed, size) = transfer_through(NatKind::Symmetric)?;
    eprintln!("symmetric NATs: {relayed} bytes relayed during a {size}-byte transfer");
    assert!(
        relayed >= size,
        "only {relayed} bytes passed the root during a {size}-byte transfer that can only be relayed"
    );
    Ok(())
}

#[test]
fn a_capture_of_the_physical_link_does_not_contain_the_marker() -> Result<()> {
    require_root();
    let net = TestNet::new()?;
    let dir = workdir()?;
    // Symmetric NATs: every byte crosses the public LAN twice (to and from the root).
    let w = world(&net, NatKind::Symmetric, dir.path())?;
    let (_server, server_ip) = start_server(&w, dir.path())?;
    let pcap = dir.path().join("public.pcap");
    let capture = Command::new("ip")
        .args(["netns", "exec", net.switch_namespace(), "tcpdump"])
        .args(["-i", "br0", "-U", "-s", "0", "-w"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting tcpdump (package tcpdump)")?;
    let capture = Running(capture);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0) == 0 {
        ensure!(Instant::now() < deadline, "tcpdump wrote no file header");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ((), answer) = send(&w, dir.path(), server_ip, || Ok(()))?;
    let size = MARKER.len() * COPIES;
    assert_eq!(answer, format!("{size} intact"));
    std::thread::sleep(Duration::from_millis(500));
    drop(capture);
    let bytes = std::fs::read(&pcap)?;
    // The capture holds the transfer: at least its size in UDP payloads crossed the LAN.
    assert!(
        bytes.len() > size,
        "the capture is {} bytes, less than the {size}-byte transfer",
        bytes.len()
    );
    let marker = MARKER.trim_end().as_bytes();
    let found = bytes.windows(marker.len()).filter(|w| *w == marker).count();
    assert_eq!(
        found, 0,
        "the marker appears {found} times in clear on the link"
    );
    // The capture is of the right traffic: the root's UDP port appears in it.
    let port = 9993u16.to_be_bytes();
    assert!(
        bytes.windows(2).any(|w| w == port),
        "no overlay traffic (UDP port 9993) in the capture"
    );
    Ok(())
}
