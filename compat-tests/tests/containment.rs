//! Containment, tried as an attacker would (issue 13): a program under `ztrun` without
//! `--fallthrough`, as uid 65534 on an "inside" test host, with an "outside" host on the
//! same LAN listening for anything that escapes. Each probe prints one line per attempt;
//! the outside host counts what reached it. Every attempt must fail the way the line
//! says, and nothing may reach the outside host.
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use compat_tests::testnet::{require_root, TestNet};

const PORT: u16 = 7311;
/// Debian's interpreter (it has `ctypes`, which the probes need for raw calls).
const PYTHON: &str = "/usr/bin/python3";

/// The probes. argv: outside IPv4, outside IPv6, port. One line per attempt.
const PROBE: &str = r#"
import ctypes, errno, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
out4, out6, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if len(sys.argv) > 4:
    # Started by a root ztrun: drop to nobody first, as a daemon does.
    os.setgroups([]); os.setgid(65534); os.setuid(65534)

def err(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

def unspec(s):
    sa = (ctypes.c_char * 16)()
    return libc.connect(s.fileno(), sa, 16)

# 1. A loopback TCP socket re-aimed: connect(AF_UNSPEC), then connect outside.
for fam, lo, out in ((socket.AF_INET, "127.0.0.1", out4), (socket.AF_INET6, "::1", out6)):
    srv = socket.socket(fam); srv.bind((lo, 0)); srv.listen(4)
    c = socket.socket(fam); c.settimeout(3); c.connect(srv.getsockname())
    unspec(c)
    print(f"reaim {fam.name}", err(lambda: c.connect((out, port))))
    # A non-blocking connect to a closed loopback port, then a second connect outside.
    d = socket.socket(fam); d.setblocking(False)
    closed = socket.socket(fam); closed.bind((lo, 0)); cport = closed.getsockname()[1]; closed.close()
    err(lambda: d.connect((lo, cport)))
    time.sleep(0.2)
    d.settimeout(3)
    print(f"reconnect {fam.name}", err(lambda: d.connect((out, port))))
    # TCP fast open: sendto with MSG_FASTOPEN on a disconnected loopback socket.
    e = socket.socket(fam); e.settimeout(3); e.connect(srv.getsockname()); unspec(e)
    print(f"fastopen {fam.name}", err(lambda: e.sendto(b"x", 0x20000000, (out, port))))

# 3. Families the supervisor does not emulate.
print("packet", err(lambda: socket.socket(17, socket.SOCK_RAW, 0x0300)))
print("vsock", err(lambda: socket.socket(40, socket.SOCK_STREAM, 0)))
print("smc", err(lambda: socket.socket(43, socket.SOCK_STREAM, 0)))
print("tipc", err(lambda: socket.socket(30, socket.SOCK_RDM, 0)))

# 4a. A network namespace of its own: loopback there is down, as natively.
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(4); lport = srv.getsockname()[1]
pid = os.fork()
if pid == 0:
    if libc.unshare(0x10000000 | 0x40000000) != 0:
        print("unshare", errno.errorcode[ctypes.get_errno()]); sys.stdout.flush(); os._exit(0)
    s = socket.socket(); s.settimeout(3)
    print("unshared loopback", err(lambda: s.connect(("127.0.0.1", lport))))
    import fcntl, struct
    ifr = struct.pack("16si12x", b"lo", 1400)
    print("unshared mtu", err(lambda: fcntl.ioctl(socket.socket(), 0x8922, ifr)))
    s = socket.socket(); s.settimeout(3)
    print("unshared outside", err(lambda: s.connect((out4, port))))
    sys.stdout.flush(); os._exit(0)
os.waitpid(pid, 0)
# setns into another namespace is refused outright.
fd = os.open("/proc/self/ns/net", os.O_RDONLY)
print("setns", "ok" if libc.setns(fd, 0x40000000) == 0 else errno.errorcode[ctypes.get_errno()])

# 4b. Privileged ports on loopback.
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    print(f"bind 464 {kind.name}", err(lambda: s.bind(("127.0.0.1", 464))))

# 2. The supervisor: its descriptors and its threads are out of reach.
def ancestors():
    p, seen = os.getpid(), []
    for _ in range(3):
        with open(f"/proc/{p}/stat") as f:
            p = int(f.read().rsplit(")", 1)[1].split()[1])
        seen.append(p)
    return seen
taken = 0
for p in ancestors()[:2]:
    pidfd = libc.syscall(434, p, 0)
    if pidfd < 0:
        continue
    for fd in range(0, 64):
        got = libc.syscall(438, pidfd, fd, 0)
        if got >= 0:
            taken += 1
print("pidfd_getfd taken", taken)
PTRACE_SEIZE = 0x4206
seized = sum(1 for p in ancestors()[:2] if libc.ptrace(PTRACE_SEIZE, p, 0, 0) == 0)
print("ptrace seized", seized)

# 5. Non-dumpable: calls that cannot be inspected fail closed.
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t = socket.socket()
libc.prctl(4, 0, 0, 0, 0)
print("nondumpable sendto", err(lambda: u.sendto(b"x", (out4, port))))
print("nondumpable bind", err(lambda: t.bind(("127.0.0.1", 0))))
sys.stdout.flush()
"#;

/// What escaped to the outside host.
#[derive(Default)]
struct Escapes {
    tcp: AtomicUsize,
    udp: AtomicUsize,
    stop: std::sync::atomic::AtomicBool,
}

/// Listen on the outside host for TCP and UDP on `PORT`, counting what arrives.
fn watch(listen: Vec<IpAddr>, escapes: Arc<Escapes>) -> Result<Vec<std::thread::JoinHandle<()>>> {
    let mut threads = Vec::new();
    for ip in listen {
        let tcp = TcpListener::bind(SocketAddr::new(ip, PORT))?;
        tcp.set_nonblocking(true)?;
        let udp = UdpSocket::bind(SocketAddr::new(ip, PORT))?;
        udp.set_read_timeout(Some(Duration::from_millis(50)))?;
        let escapes = escapes.clone();
        threads.push(std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(60);
            let mut buf = [0u8; 64];
            while Instant::now() < end {
                if tcp.accept().is_ok() {
                    escapes.tcp.fetch_add(1, Ordering::Relaxed);
                }
                if udp.recv_from(&mut buf).is_ok() {
                    escapes.udp.fetch_add(1, Ordering::Relaxed);
                }
                if escapes.stop.load(Ordering::Relaxed) {
                    return;
                }
            }
        }));
    }
    Ok(threads)
}

#[test]
fn a_wrapped_program_reaches_nothing_outside_and_gains_no_right() -> Result<()> {
    require_root();
    let net = TestNet::new()?;
    let lan = net.lan("lan", "198.18.0.0/24")?;
    let inside = net.host("inside")?;
    let outside = net.host("outside")?;
    inside.attach(&lan)?;
    let at = outside.attach(&lan)?;
    let out4 = at.addr;
    let out6 = outside.addr6(&lan).context("outside IPv6 address")?;
    let escapes = Arc::new(Escapes::default());
    let watchers = {
        let escapes = escapes.clone();
        outside.run(move || watch(vec![IpAddr::V4(out4), IpAddr::V6(out6)], escapes))??
    };
    // Natively the outside host is reachable from the inside one (so a failure under
    // ztrun is containment, not a broken test network).
    let native = inside.run(move || {
        std::net::TcpStream::connect_timeout(
            &SocketAddr::new(IpAddr::V4(out4), PORT),
            Duration::from_secs(3),
        )
    })?;
    assert!(
        native.is_ok(),
        "the outside host is not reachable natively: {native:?}"
    );
    drop(native);
    std::thread::sleep(Duration::from_millis(200));
    let natively = escapes.tcp.swap(0, Ordering::Relaxed);
    assert_eq!(
        natively, 1,
        "the outside host's watcher missed the native connection"
    );

    let dir = tempfile::tempdir()?;
    let probe = dir.path().join("probe.py");
    std::fs::write(&probe, PROBE)?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    std::fs::set_permissions(&probe, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    let args = |drop: bool| {
        let mut a = vec![
            PYTHON.to_string(),
            probe.to_string_lossy().into_owned(),
            out4.to_string(),
            out6.to_string(),
            PORT.to_string(),
        ];
        if drop {
            a.push("drop".into());
        }
        a
    };
    // As nobody under a nobody ztrun, then under a root ztrun after dropping to nobody.
    let (out, err) = probe_run(
        inside
            .command_as_user(compat_tests::workspace_binary("ztrun"))
            .arg("--")
            .args(args(false)),
    )?;
    let (dropped, dropped_err) = probe_run(
        inside
            .command(compat_tests::workspace_binary("ztrun"))
            .arg("--")
            .args(args(true)),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let (tcp, udp) = (
        escapes.tcp.load(Ordering::Relaxed),
        escapes.udp.load(Ordering::Relaxed),
    );
    escapes.stop.store(true, Ordering::Relaxed);
    for w in watchers {
        let _ = w.join();
    }

    let want = [
        "reaim AF_INET ENETUNREACH",
        "reconnect AF_INET ENETUNREACH",
        "reaim AF_INET6 ENETUNREACH",
        "reconnect AF_INET6 ENETUNREACH",
        "packet EPERM",
        "vsock EAFNOSUPPORT",
        "smc EAFNOSUPPORT",
        "tipc EAFNOSUPPORT",
        "unshared loopback ENETUNREACH",
        "unshared mtu ok",
        "unshared outside ENETUNREACH",
        "setns EPERM",
        "bind 464 SOCK_STREAM EACCES",
        "bind 464 SOCK_DGRAM EACCES",
        "pidfd_getfd taken 0",
        "ptrace seized 0",
        "nondumpable sendto EPERM",
        "nondumpable bind EPERM",
    ];
    let missing: Vec<&str> = want
        .iter()
        .copied()
        .filter(|w| !out.lines().any(|l| l == *w))
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?} in the probe's output:\n{out}\nztrun said:\n{err}"
    );
    // Under a root ztrun, the program that dropped its privileges gets none back from
    // the supervisor's (it can still be inspected: ztrun has CAP_SYS_PTRACE).
    let dropped_want = [
        "reaim AF_INET ENETUNREACH",
        "reaim AF_INET6 ENETUNREACH",
        "packet EPERM",
        "setns EPERM",
        "bind 464 SOCK_STREAM EACCES",
        "bind 464 SOCK_DGRAM EACCES",
        "pidfd_getfd taken 0",
        "ptrace seized 0",
        "nondumpable sendto ENETUNREACH",
        "nondumpable bind ok",
    ];
    let missing: Vec<&str> = dropped_want
        .iter()
        .copied()
        .filter(|w| !dropped.lines().any(|l| l == *w))
        .collect();
    assert!(
        missing.is_empty(),
        "root ztrun, program dropped to nobody: missing {missing:?} in:\n{dropped}\nztrun said:\n{dropped_err}"
    );
    // Fast open cannot succeed: it fails or times out, and never reaches outside.
    for fam in ["AF_INET", "AF_INET6"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("fastopen {fam} ")))
            .context("fastopen line")?;
        assert!(!line.ends_with(" ok"), "{line}");
    }
    assert_eq!(
        (tcp, udp),
        (0, 0),
        "connections and datagrams reached the outside host:\n{out}"
    );
    Ok(())
}

/// Run a probe command to its end (60 s at most): its stdout and stderr.
fn probe_run(cmd: &mut Command) -> Result<(String, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting ztrun")?;
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            anyhow::bail!("the probe under ztrun did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)?;
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)?;
    anyhow::ensure!(status.success(), "probe failed ({status}):\n{out}\n{err}");
    Ok((out, err))
}
