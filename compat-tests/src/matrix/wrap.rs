//! How programs are started on member hosts ([`Wrap`]), and the hosts a scenario runs on
//! ([`Topology`]). This is the only module that differs between native and ztrun mode.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::stage::{chown_nobody, run_with_timeout, MatrixError};
use crate::testnet::{Host, NatKind, TestNet};

/// Native (the kernel's network between test hosts) or ztrun (the virtual network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Programs run as they are; members share one LAN.
    Native,
    /// Programs run under `ztrun`; members are behind two NATs.
    Ztrun,
}

impl Mode {
    /// `native` or `ztrun`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Ztrun => "ztrun",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The network id members join in ztrun mode: an ad-hoc network (no controller yet in the
/// launcher).
pub const NWID: &str = "ff00000000c0ffee";

/// The UDP port the root listens on in the root host.
const ROOT_PORT: u16 = 9993;

/// Where the `ztrun` and `zt` binaries are. Unset paths are looked up next to the running
/// executable (cargo puts every binary of the workspace in one directory), then in `PATH`.
#[derive(Debug, Clone, Default)]
pub struct ZtrunBinaries {
    /// `ztrun`, the launcher.
    pub ztrun: Option<PathBuf>,
    /// `zt`, for the root and identities.
    pub zt: Option<PathBuf>,
}

impl ZtrunBinaries {
    /// The `ztrun` binary: the given path, else beside this runner, else in `PATH`.
    pub fn ztrun_path(&self) -> Result<PathBuf, MatrixError> {
        Self::resolve(&self.ztrun, "ztrun")
    }

    /// The `zt` binary, found like [`ztrun_path`](Self::ztrun_path).
    pub fn zt_path(&self) -> Result<PathBuf, MatrixError> {
        Self::resolve(&self.zt, "zt")
    }

    fn resolve(given: &Option<PathBuf>, name: &str) -> Result<PathBuf, MatrixError> {
        if let Some(path) = given {
            return if path.is_file() {
                Ok(path.clone())
            } else {
                Err(MatrixError::Overlay {
                    step: format!("finding {name}"),
                    reason: format!("{} does not exist", path.display()),
                })
            };
        }
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join(name)))
            .filter(|p| p.is_file());
        beside
            .or_else(|| super::find_program(name))
            .ok_or_else(|| MatrixError::Overlay {
                step: format!("finding {name}"),
                reason: format!(
                    "no {name} beside this runner or in PATH; build it with \
                     `cargo build -p launcher` or pass --{name} PATH"
                ),
            })
    }
}

/// How a member host's programs are started.
#[derive(Debug, Clone)]
pub enum Wrap {
    /// Run the program directly; it uses the kernel's network of its host.
    Native,
    /// Run it under `ztrun`, joined to a virtual network.
    Ztrun(ZtrunWrap),
}

/// What `ztrun` needs to join the scenario's network.
#[derive(Debug, Clone)]
pub struct ZtrunWrap {
    /// The `ztrun` binary.
    pub ztrun: PathBuf,
    /// The network id (16 hex digits).
    pub nwid: String,
    /// The root's UDP address on the public LAN.
    pub root: SocketAddr,
}

impl ZtrunWrap {
    /// The UDP port a root listens on, on its host's address.
    pub const ROOT_PORT: u16 = ROOT_PORT;

    /// Start a root on `root` (it must listen on `self.root`; its output goes to
    /// `state/root.out`) and join each member (a host and its `ztrun --home`, owned by uid
    /// 65534) to `self.nwid` with a probe program. Returns each member's virtual IPv4 and
    /// IPv6 address, in order. This is the overlay set-up of the matrix's ztrun mode,
    /// shared with the benchmarks; the `overlay` module below describes every step.
    pub fn join_overlay(
        &self,
        root: &Host<'_>,
        state: &Path,
        members: &[(Host<'_>, &Path)],
        zt: &Path,
    ) -> Result<Vec<(IpAddr, Option<IpAddr>)>, MatrixError> {
        overlay::set_up(root, state, members, zt, self)
    }
}

impl Wrap {
    /// The command line that runs `program args...` on the member whose `ztrun` state
    /// directory is `home`: the program itself in native mode,
    /// `ztrun --nwid N --home H --root R -- program args...` in ztrun mode.
    pub fn argv(&self, home: &Path, program: &OsStr, args: &[OsString]) -> Vec<OsString> {
        let mut argv = Vec::new();
        if let Wrap::Ztrun(z) = self {
            argv.push(z.ztrun.clone().into_os_string());
            argv.extend(["--nwid".into(), z.nwid.clone().into()]);
            argv.extend(["--home".into(), home.as_os_str().to_owned()]);
            argv.extend(["--root".into(), z.root.to_string().into()]);
            argv.push("--".into());
        }
        argv.push(program.to_owned());
        argv.extend(args.iter().cloned());
        argv
    }
}

/// A member host: where a server or a client runs.
#[derive(Debug)]
pub struct Member<'n> {
    /// The test host.
    pub host: Host<'n>,
    /// The address other members use to reach programs on this one: its LAN address in
    /// native mode, its virtual address in ztrun mode.
    pub addr: IpAddr,
    /// The same for IPv6, when the member has an IPv6 address there.
    pub addr6: Option<IpAddr>,
    /// Its `ztrun --home` state directory (unused in native mode).
    pub home: PathBuf,
}

/// The hosts one scenario runs on; see the [module documentation](super).
#[derive(Debug)]
pub struct Topology<'n> {
    /// Native or ztrun.
    pub mode: Mode,
    /// How member programs are started.
    pub wrap: Wrap,
    /// The root host (ztrun mode only).
    pub root: Option<Host<'n>>,
    /// Member 1: the servers.
    pub server: Member<'n>,
    /// Member 2: the clients.
    pub client: Member<'n>,
    /// A second identity on member 2's host, for a server that runs there while clients
    /// run too (nginx's proxy backend): two `ztrun` processes at once never share a
    /// `--home`. In native mode the same host and address as `client`.
    pub backend: Member<'n>,
    /// State directories of the overlay (homes), removed with the topology.
    _state: tempfile::TempDir,
}

impl<'n> Topology<'n> {
    /// Build the hosts of one scenario on `net`, and in ztrun mode the overlay (member
    /// identities, the root, a join probe, the members' virtual addresses). Fails with the
    /// step that failed.
    pub fn build(
        net: &'n TestNet,
        mode: Mode,
        binaries: &ZtrunBinaries,
    ) -> Result<Topology<'n>, MatrixError> {
        let state = tempfile::Builder::new()
            .prefix("ztmatrix-overlay-")
            .tempdir()
            .map_err(|e| MatrixError::io("creating the overlay state directory", e))?;
        let homes = [
            state.path().join("member1"),
            state.path().join("member2"),
            state.path().join("member2-backend"),
        ];
        for dir in std::iter::once(state.path()).chain(homes.iter().map(PathBuf::as_path)) {
            std::fs::create_dir_all(dir)
                .map_err(|e| MatrixError::io(format!("creating {}", dir.display()), e))?;
            chown_nobody(dir)?;
        }
        match mode {
            Mode::Native => {
                // Two members behind separate NATs cannot reach each other natively, so
                // the reference run puts them on one LAN.
                let lan = net.lan("lan", "198.18.1.0/24")?;
                let server = net.host("member1")?;
                let client = net.host("member2")?;
                let server_at = server.attach(&lan)?;
                let client_at = client.attach(&lan)?;
                let [home1, home2, home3] = homes;
                Ok(Topology {
                    mode,
                    wrap: Wrap::Native,
                    root: None,
                    server: Member {
                        host: server,
                        addr: server_at.addr.into(),
                        addr6: Some(server_at.addr6.into()),
                        home: home1,
                    },
                    client: Member {
                        host: client,
                        addr: client_at.addr.into(),
                        addr6: Some(client_at.addr6.into()),
                        home: home2,
                    },
                    backend: Member {
                        host: client,
                        addr: client_at.addr.into(),
                        addr6: Some(client_at.addr6.into()),
                        home: home3,
                    },
                    _state: state,
                })
            }
            Mode::Ztrun => {
                let public = net.lan("public", "198.18.0.0/24")?;
                let root = net.host("root")?;
                let root_addr = root.attach(&public)?.addr;
                let nat_a = net.nat_router("nat-a", &public, NatKind::PortRestrictedCone)?;
                let nat_b = net.nat_router("nat-b", &public, NatKind::PortRestrictedCone)?;
                let server = net.host("member1")?;
                let client = net.host("member2")?;
                server.attach(&nat_a.inside)?;
                client.attach(&nat_b.inside)?;
                let ztrun = binaries.ztrun_path()?;
                let zt = binaries.zt_path()?;
                let root_udp = SocketAddr::new(root_addr.into(), ROOT_PORT);
                let wrap = ZtrunWrap {
                    ztrun,
                    nwid: NWID.into(),
                    root: root_udp,
                };
                let members = [
                    (server, homes[0].as_path()),
                    (client, homes[1].as_path()),
                    (client, homes[2].as_path()),
                ];
                let addrs = wrap.join_overlay(&root, state.path(), &members, &zt)?;
                let [home1, home2, home3] = homes;
                Ok(Topology {
                    mode,
                    wrap: Wrap::Ztrun(wrap),
                    root: Some(root),
                    server: Member {
                        host: server,
                        addr: addrs[0].0,
                        addr6: addrs[0].1,
                        home: home1,
                    },
                    client: Member {
                        host: client,
                        addr: addrs[1].0,
                        addr6: addrs[1].1,
                        home: home2,
                    },
                    backend: Member {
                        host: client,
                        addr: addrs[2].0,
                        addr6: addrs[2].1,
                        home: home3,
                    },
                    _state: state,
                })
            }
        }
    }
}

/// The set-up of the virtual network, written against the `zt`/`ztrun` command lines
/// the launcher provides or is to provide (see docs/COMPAT.md). Each step is one command;
/// the first that fails ends the set-up, and every scenario is BROKEN with its command
/// line and output.
mod overlay {
    use super::*;

    /// The addresses in ztrun's `ztrun: joined NWID as V4 [and V6] in N ms` line.
    pub(super) fn joined_addresses(stderr: &str) -> Option<(IpAddr, Option<IpAddr>)> {
        let line = stderr.lines().find(|l| l.starts_with("ztrun: joined "))?;
        let (_, rest) = line.split_once(" as ")?;
        let rest = rest.rsplit_once(" in ").map_or(rest, |(addrs, _)| addrs);
        let addrs: Vec<IpAddr> = rest
            .split(" and ")
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        let v4 = addrs.iter().copied().find(IpAddr::is_ipv4)?;
        let v6 = addrs.iter().copied().find(IpAddr::is_ipv6);
        Some((v4, v6))
    }

    /// 1. the root on the public LAN (`zt root --listen ADDR:9993`, left running; it prints
    ///    its public identity once it listens);
    /// 2. a join probe on each member: `ztrun --nwid N --home H --root R -- /bin/true`
    ///    must exit 0 within 30 s. On the way it creates the member's identity in its
    ///    home, and reports where it joined on stderr:
    ///    `ztrun: joined NWID as A.B.C.D and IPV6 in N ms`;
    /// 3. those addresses are the member's on the network (they are stable: ad-hoc
    ///    addresses derive from the network id and the node address, and a controller
    ///    assigns a member the same address again).
    ///
    /// Returns the members' virtual IPv4 and IPv6 addresses.
    pub(super) fn set_up(
        root: &Host<'_>,
        state: &Path,
        members: &[(Host<'_>, &Path)],
        zt: &Path,
        wrap: &ZtrunWrap,
    ) -> Result<Vec<(IpAddr, Option<IpAddr>)>, MatrixError> {
        let mut cmd = root.command_as_user(zt);
        cmd.args(["root", "--listen", &wrap.root.to_string()]);
        let log = state.join("root.out");
        let file = std::fs::File::create(&log)
            .map_err(|e| MatrixError::io(format!("creating {}", log.display()), e))?;
        cmd.stdin(std::process::Stdio::null())
            .stdout(file)
            .stderr(std::process::Stdio::null());
        // Left running: the TestNet's teardown kills it with the root host.
        let mut child = cmd.spawn().map_err(|e| MatrixError::Overlay {
            step: "starting the root".into(),
            reason: e.to_string(),
        })?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let printed = std::fs::read_to_string(&log).unwrap_or_default();
            if !printed.trim().is_empty() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(MatrixError::Overlay {
                    step: "starting the root".into(),
                    reason: format!("`zt root` exited ({status})"),
                });
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return Err(MatrixError::Overlay {
                    step: "starting the root".into(),
                    reason: "`zt root` printed no identity within 10 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }

        let mut addrs = vec![(IpAddr::V4(Ipv4Addr::UNSPECIFIED), None); members.len()];
        for ((member, home), addr) in members.iter().zip(&mut addrs) {
            let argv = Wrap::Ztrun(wrap.clone()).argv(home, OsStr::new("/bin/true"), &[]);
            let mut cmd = member.command_as_user(&argv[0]);
            cmd.args(&argv[1..]);
            let ran = run_with_timeout(&mut cmd, "ztrun join probe", Duration::from_secs(30))?;
            if ran.timed_out || !ran.status.success() {
                return Err(MatrixError::Overlay {
                    step: "joining the network".into(),
                    reason: format!(
                        "ztrun cannot run a program on network {} in this build ({}): {}",
                        wrap.nwid,
                        if ran.timed_out {
                            "timed out after 30 s".to_string()
                        } else {
                            ran.status.to_string()
                        },
                        ran.stderr_tail()
                    ),
                });
            }
            *addr = joined_addresses(&ran.stderr).ok_or_else(|| MatrixError::Overlay {
                step: "learning a member's virtual address".into(),
                reason: format!(
                    "no `ztrun: joined {} as A.B.C.D ...` line in ztrun's stderr: {}",
                    wrap.nwid,
                    ran.stderr_tail()
                ),
            })?;
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_line_gives_the_addresses() {
        let stderr = "ztrun: new identity 1a2b3c4d5e in /h\n\
                      ztrun: joined 8056c2e21c000001 as 100.77.1.2 and fd80:56c2:e21c:1:99:931a:2b3c:4d5e in 812 ms\n";
        let (v4, v6) = overlay::joined_addresses(stderr).unwrap();
        assert_eq!(v4, "100.77.1.2".parse::<IpAddr>().unwrap());
        assert_eq!(
            v6,
            Some("fd80:56c2:e21c:1:99:931a:2b3c:4d5e".parse().unwrap())
        );
        let v4_only =
            overlay::joined_addresses("ztrun: joined 8056c2e21c000001 as 100.77.1.2 in 3 ms");
        assert_eq!(v4_only, Some(("100.77.1.2".parse().unwrap(), None)));
        assert_eq!(overlay::joined_addresses("ztrun: something else"), None);
    }

    #[test]
    fn ztrun_wrap_prefixes_the_program_with_its_flags() {
        let wrap = Wrap::Ztrun(ZtrunWrap {
            ztrun: "/opt/ztrun".into(),
            nwid: "8056c2e21c000001".into(),
            root: "198.18.0.1:9993".parse().unwrap(),
        });
        let argv = |wrap: &Wrap| -> Vec<String> {
            wrap.argv(Path::new("/home/m1"), OsStr::new("curl"), &["-s".into()])
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect()
        };
        assert_eq!(
            argv(&wrap),
            [
                "/opt/ztrun",
                "--nwid",
                "8056c2e21c000001",
                "--home",
                "/home/m1",
                "--root",
                "198.18.0.1:9993",
                "--",
                "curl",
                "-s"
            ]
        );
        assert_eq!(argv(&Wrap::Native), ["curl", "-s"]);
    }
}
