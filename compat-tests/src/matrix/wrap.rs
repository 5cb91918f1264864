//! How programs are started on member hosts ([`Wrap`]), and the hosts a scenario runs on
//! ([`Topology`]). This is the only module that differs between native and ztrun mode.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
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

/// The virtual network's IPv4 subnet in ztrun mode. Member `n` (1 = server, 2 = client)
/// is given `198.19.17.n` by the controller. It lies in the RFC 2544 block like every
/// other test address, so nothing can leak to a real network even by mistake.
pub const VIRTUAL_SUBNET: &str = "198.19.17.0/24";

/// The network id used in ztrun mode: the controller's address followed by network
/// number 1 is what a real controller makes; until identities exist this is a fixed
/// placeholder the runner replaces with what `zt controller network create` prints.
const PLACEHOLDER_NWID: &str = "0000000000000001";

/// The UDP port the root and controller listen on in the root host.
const ROOT_PORT: u16 = 9993;

/// Where the `ztrun` and `zt` binaries are. Unset paths are looked up next to the running
/// executable (cargo puts every binary of the workspace in one directory), then in `PATH`.
#[derive(Debug, Clone, Default)]
pub struct ZtrunBinaries {
    /// `ztrun`, the launcher.
    pub ztrun: Option<PathBuf>,
    /// `zt`, for roots, controllers and identities.
    pub zt: Option<PathBuf>,
}

impl ZtrunBinaries {
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
    /// The root/controller host (ztrun mode only).
    pub root: Option<Host<'n>>,
    /// Member 1: the servers.
    pub server: Member<'n>,
    /// Member 2: the clients.
    pub client: Member<'n>,
    /// State directories of the overlay (homes), removed with the topology.
    _state: tempfile::TempDir,
}

impl<'n> Topology<'n> {
    /// Build the hosts of one scenario on `net`, and in ztrun mode the overlay (identities,
    /// root, controller, network, member authorizations). Fails with the step that failed.
    pub fn build(
        net: &'n TestNet,
        mode: Mode,
        binaries: &ZtrunBinaries,
    ) -> Result<Topology<'n>, MatrixError> {
        let state = tempfile::Builder::new()
            .prefix("ztmatrix-overlay-")
            .tempdir()
            .map_err(|e| MatrixError::io("creating the overlay state directory", e))?;
        let homes = [state.path().join("member1"), state.path().join("member2")];
        for dir in [state.path(), &homes[0], &homes[1]] {
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
                let server_addr = server.attach(&lan)?.addr;
                client.attach(&lan)?;
                let [home1, home2] = homes;
                Ok(Topology {
                    mode,
                    wrap: Wrap::Native,
                    root: None,
                    server: Member {
                        host: server,
                        addr: server_addr.into(),
                        home: home1,
                    },
                    client: Member {
                        host: client,
                        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        home: home2,
                    },
                    _state: state,
                })
                .map(|mut t| {
                    t.client.addr = t
                        .client
                        .host
                        .addr(&lan)
                        .map(IpAddr::V4)
                        .unwrap_or(t.client.addr);
                    t
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
                let ztrun = ZtrunBinaries::resolve(&binaries.ztrun, "ztrun")?;
                let zt = ZtrunBinaries::resolve(&binaries.zt, "zt")?;
                let root_udp = SocketAddr::new(root_addr.into(), ROOT_PORT);
                probe_join(&server, &ztrun, &homes[0], root_udp)?;
                let nwid = overlay::set_up(&root, &zt, state.path(), &homes, root_udp)?;
                let [home1, home2] = homes;
                Ok(Topology {
                    mode,
                    wrap: Wrap::Ztrun(ZtrunWrap {
                        ztrun,
                        nwid,
                        root: root_udp,
                    }),
                    root: Some(root),
                    server: Member {
                        host: server,
                        addr: overlay::member_addr(1).into(),
                        home: home1,
                    },
                    client: Member {
                        host: client,
                        addr: overlay::member_addr(2).into(),
                        home: home2,
                    },
                    _state: state,
                })
            }
        }
    }
}

/// Ask `ztrun` to run `/bin/true` on a network. A build that cannot join networks refuses
/// at once with a reason, which becomes every scenario's BROKEN note; one that can join
/// keeps trying to reach the (not yet started) root until the probe gives up, which is
/// the sign to go on.
fn probe_join(
    member: &Host<'_>,
    ztrun: &Path,
    home: &Path,
    root: SocketAddr,
) -> Result<(), MatrixError> {
    let mut cmd = member.command_as_user(ztrun);
    cmd.args(["--nwid", PLACEHOLDER_NWID, "--home"])
        .arg(home)
        .args(["--root", &root.to_string(), "--", "/bin/true"]);
    match run_with_timeout(&mut cmd, "ztrun join probe", Duration::from_secs(3))? {
        ran if ran.timed_out => Ok(()),
        ran if ran.status.success() => Ok(()),
        ran => Err(MatrixError::Overlay {
            step: "joining a network with ztrun".into(),
            reason: format!(
                "ztrun refused to run a program on a network ({}): {}",
                ran.status,
                ran.stderr_tail()
            ),
        }),
    }
}

/// The set-up of the virtual network in the root host, written against the `zt` commands
/// the launcher is to provide. Each step is one command; the first that fails ends the
/// set-up with its command line and output.
mod overlay {
    use super::*;

    /// Member `n`'s virtual address: host `n` of [`VIRTUAL_SUBNET`].
    pub(super) fn member_addr(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, 17, n)
    }

    fn zt_step(cmd: &mut Command, step: &str) -> Result<String, MatrixError> {
        let ran = run_with_timeout(cmd, step, Duration::from_secs(20))?;
        if ran.timed_out || !ran.status.success() {
            return Err(MatrixError::Overlay {
                step: step.into(),
                reason: format!("{} ({}): {}", ran.command, ran.status, ran.stderr_tail()),
            });
        }
        Ok(ran.stdout.trim().to_owned())
    }

    /// 1. an identity for the root/controller and for each member (`zt identity new`,
    ///    which prints the 10-hex-digit address);
    /// 2. the root and controller in the root host (`zt root`, left running);
    /// 3. a network on the controller (`zt network create`, which prints the id);
    /// 4. each member authorized with its fixed virtual address (`zt member authorize`),
    ///    so the runner knows the server's address before anything starts.
    pub(super) fn set_up(
        root: &Host<'_>,
        zt: &Path,
        state: &Path,
        homes: &[PathBuf; 2],
        listen: SocketAddr,
    ) -> Result<String, MatrixError> {
        let root_home = state.join("root");
        std::fs::create_dir_all(&root_home)
            .map_err(|e| MatrixError::io(format!("creating {}", root_home.display()), e))?;
        chown_nobody(&root_home)?;
        let mut addresses = Vec::new();
        for home in std::iter::once(&root_home).chain(homes) {
            let mut cmd = root.command_as_user(zt);
            cmd.args(["identity", "new", "--home"]).arg(home);
            addresses.push(zt_step(&mut cmd, "creating an identity")?);
        }
        let mut cmd = root.command_as_user(zt);
        cmd.args(["root", "--controller", "--home"])
            .arg(&root_home)
            .args(["--listen", &listen.to_string()]);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // Left running: the TestNet's teardown kills it with the root host.
        cmd.spawn().map_err(|e| MatrixError::Overlay {
            step: "starting the root and controller".into(),
            reason: e.to_string(),
        })?;
        let mut cmd = root.command_as_user(zt);
        cmd.args(["network", "create", "--home"])
            .arg(&root_home)
            .args(["--ipv4-pool", VIRTUAL_SUBNET]);
        let nwid = zt_step(&mut cmd, "creating the network")?;
        for (n, member) in [1u8, 2].into_iter().zip(&addresses[1..]) {
            let mut cmd = root.command_as_user(zt);
            cmd.args(["member", "authorize", "--home"])
                .arg(&root_home)
                .args(["--nwid", &nwid, "--member", member, "--ip"])
                .arg(member_addr(n).to_string());
            zt_step(&mut cmd, "authorizing a member")?;
        }
        Ok(nwid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn virtual_addresses_lie_in_the_virtual_subnet() {
        let subnet: crate::testnet::Subnet = VIRTUAL_SUBNET.parse().unwrap();
        assert!(subnet.contains(overlay::member_addr(1)));
        assert!(subnet.contains(overlay::member_addr(2)));
    }
}
