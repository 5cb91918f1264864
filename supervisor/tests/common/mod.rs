//! Shared harness: compile a C program at test time and run it under the supervisor.
#![allow(dead_code, unreachable_pub)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command as Proc;
use std::sync::Arc;
use std::time::Duration;

use supervisor::backend::{Backend, NoNetwork, Policy};
use supervisor::launch::{self, Command, ExitStatus};

/// uid/gid the wrapped programs run as when the tests run as root.
pub const NOBODY: (u32, u32) = (65534, 65534);

/// A scratch directory every user can use (the program runs as nobody).
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("supervisor-test")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        Self { dir }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// Compile `tests/c/<name>.c` (plus `common.h`) with `cc -pthread`.
    pub fn compile(&self, name: &str) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/c")
            .join(format!("{name}.c"));
        let out = self.path(name);
        let st = Proc::new("cc")
            .args(["-O1", "-Wall", "-pthread", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("cc is installed (gcc, libc6-dev)");
        assert!(st.success(), "compiling {name}.c failed");
        out
    }
    pub fn output(&self) -> PathBuf {
        self.path("out.txt")
    }
    pub fn read_output(&self) -> String {
        std::fs::read_to_string(self.output()).unwrap_or_default()
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The command for `prog`, whose first argument is the output file. Runs as nobody when
/// we are root, proving the wrapped program needs no privilege.
pub fn command(s: &Scratch, prog: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(prog).arg(s.output()).args(args);
    if is_root() {
        c = c.user(NOBODY.0, NOBODY.1);
    }
    c
}

/// Run `cmd` under the supervisor with `policy`, bounded in time.
pub async fn run_with<B: Backend>(cmd: &Command, policy: Policy, backend: Arc<B>) -> ExitStatus {
    tokio::time::timeout(Duration::from_secs(60), launch::run(cmd, policy, backend))
        .await
        .expect("program under supervisor timed out")
        .expect("launch failed")
}

pub async fn run(cmd: &Command) -> ExitStatus {
    run_with(cmd, Policy::default(), Arc::new(NoNetwork)).await
}

/// Assert the program succeeded and printed `want` lines (each must appear).
pub fn assert_ok(s: &Scratch, status: ExitStatus, want: &[&str]) {
    let out = s.read_output();
    assert_eq!(
        status,
        ExitStatus::Exited(0),
        "program failed; output:\n{out}"
    );
    for w in want {
        assert!(
            out.lines().any(|l| l == *w),
            "missing line {w:?} in output:\n{out}"
        );
    }
}

/// A stand-in virtual network for the supervisor's virtual path: 10.77.0.0/16 where only
/// 10.77.0.1 (this node) exists, carried over kernel TCP on 127.77.0.1 (so it never
/// collides with the real loopback the program may also use). It exercises the
/// supervisor's socketpair pumps, listener tokens and connect edges without netstack.
#[derive(Debug, Default)]
pub struct LoopbackNet;

pub const VIRTUAL_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 77, 0, 1);
const CARRIER: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 77, 0, 1);

fn io_errno(e: std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

impl Backend for LoopbackNet {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    fn is_virtual(&self, ip: std::net::IpAddr) -> bool {
        matches!(ip, std::net::IpAddr::V4(v4) if v4.octets()[..2] == [10, 77])
    }
    fn is_local(&self, ip: std::net::IpAddr) -> bool {
        ip == VIRTUAL_IP
    }
    async fn tcp_connect(
        &self,
        _local: Option<std::net::SocketAddr>,
        remote: std::net::SocketAddr,
    ) -> Result<supervisor::backend::Connection<Self::Stream>, nix::errno::Errno> {
        if remote.ip() != VIRTUAL_IP {
            return Err(nix::errno::Errno::EHOSTUNREACH);
        }
        let s = tokio::net::TcpStream::connect((CARRIER, remote.port()))
            .await
            .map_err(io_errno)?;
        let local = s.local_addr().map_err(io_errno)?;
        Ok(supervisor::backend::Connection {
            stream: s,
            local: (VIRTUAL_IP, local.port()).into(),
            peer: remote,
        })
    }
    fn tcp_listen(
        &self,
        local: std::net::SocketAddr,
        _backlog: usize,
        _v6only: bool,
    ) -> Result<(Self::Listener, std::net::SocketAddr), nix::errno::Errno> {
        let l = std::net::TcpListener::bind((CARRIER, local.port())).map_err(io_errno)?;
        l.set_nonblocking(true).map_err(io_errno)?;
        let port = l.local_addr().map_err(io_errno)?.port();
        let l = tokio::net::TcpListener::from_std(l).map_err(io_errno)?;
        Ok((l, (VIRTUAL_IP, port).into()))
    }
    async fn tcp_accept(
        &self,
        l: &Self::Listener,
    ) -> Result<supervisor::backend::Connection<Self::Stream>, nix::errno::Errno> {
        let (s, peer) = l.accept().await.map_err(io_errno)?;
        let local = s.local_addr().map_err(io_errno)?;
        Ok(supervisor::backend::Connection {
            stream: s,
            local: (VIRTUAL_IP, local.port()).into(),
            peer: (VIRTUAL_IP, peer.port()).into(),
        })
    }

    type Udp = CarrierUdp;
    fn udp_bind(
        &self,
        local: std::net::SocketAddr,
        _v6only: bool,
    ) -> Result<(CarrierUdp, std::net::SocketAddr), nix::errno::Errno> {
        Self::udp_impl_bind(local)
    }
    async fn udp_send_to(
        &self,
        sock: &CarrierUdp,
        data: &[u8],
        dest: std::net::SocketAddr,
    ) -> Result<usize, nix::errno::Errno> {
        if dest.ip() != VIRTUAL_IP {
            return Err(nix::errno::Errno::EHOSTUNREACH);
        }
        sock.0
            .send_to(data, (CARRIER, dest.port()))
            .await
            .map_err(io_errno)
    }
    async fn udp_recv_from(
        &self,
        sock: &CarrierUdp,
    ) -> Result<(Vec<u8>, std::net::SocketAddr, Option<std::net::IpAddr>), nix::errno::Errno> {
        let mut buf = vec![0u8; 65_536];
        let (n, from) = sock.0.recv_from(&mut buf).await.map_err(io_errno)?;
        buf.truncate(n);
        Ok((buf, Self::carried(from), Some(VIRTUAL_IP.into())))
    }
}

impl LoopbackNet {
    fn carried(a: std::net::SocketAddr) -> std::net::SocketAddr {
        (VIRTUAL_IP, a.port()).into()
    }
}

pub struct CarrierUdp(tokio::net::UdpSocket);

impl LoopbackNet {
    pub fn udp_impl_bind(
        local: std::net::SocketAddr,
    ) -> Result<(CarrierUdp, std::net::SocketAddr), nix::errno::Errno> {
        let s = std::net::UdpSocket::bind((CARRIER, local.port())).map_err(io_errno)?;
        s.set_nonblocking(true).map_err(io_errno)?;
        let port = s.local_addr().map_err(io_errno)?.port();
        let s = tokio::net::UdpSocket::from_std(s).map_err(io_errno)?;
        Ok((CarrierUdp(s), (VIRTUAL_IP, port).into()))
    }
}

pub async fn run_virtual(cmd: &Command) -> ExitStatus {
    run_with(cmd, Policy::default(), Arc::new(LoopbackNet)).await
}
