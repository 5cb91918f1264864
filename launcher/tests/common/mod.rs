//! What the launcher's integration tests share: the binaries, process guards, a root on
//! a free loopback port, and the wrapped program's user.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const ZTRUN: &str = env!("CARGO_BIN_EXE_ztrun");
pub(crate) const ZT: &str = env!("CARGO_BIN_EXE_zt");

/// A child killed (SIGKILL) and reaped when dropped.
pub(crate) struct KillOnDrop(pub Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child sent SIGTERM when dropped, so that a `ztrun` forwards it to its program and
/// cleans up; killed if it has not ended within 3 s.
pub(crate) struct StopOnDrop(pub Child);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A root on a free loopback port (killed when dropped: it has nothing to clean up);
/// returns it and its `--root` argument.
pub(crate) fn root() -> (KillOnDrop, String) {
    let endpoint = format!("127.0.0.1:{}", free_udp_port());
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
    (KillOnDrop(child), format!("{}@{endpoint}", line.trim()))
}

pub(crate) fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// CPU time (user + system) of process `pid` so far.
pub(crate) fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses; utime and
    // stime are fields 14 and 15 (proc(5)), in clock ticks.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The wrapped program's command line: as uid 65534 through setpriv when running as root.
pub(crate) fn as_user(program: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    if is_root() {
        v.extend(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
            ]
            .map(String::from),
        );
    }
    v.extend(program.iter().map(|s| s.to_string()));
    v
}
