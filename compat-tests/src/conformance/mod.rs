//! The differential conformance suite (`compat-tests conformance`): C probe programs run
//! natively and under `ztrun`, every result compared.
//!
//! ```text
//! cargo run -p compat-tests -- conformance                 # every mode and user
//! cargo run -p compat-tests -- conformance --mode loopback --user nobody --only sig-
//! ```
//!
//! # The probes
//!
//! `compat-tests/conformance/*.c` (built into this runner with `include_str!`, written to
//! a temporary directory and compiled with `cc` at run time): `calls` (socket, bind,
//! listen, connect, accept, accept4, getsockname, getpeername, shutdown), `sockopt` (every
//! level, get and set, invalid arguments), `data` (sendto, recvfrom, sendmsg, recvmsg,
//! sendmmsg, recvmmsg), `ioctl` (socket ioctls) and `signals` (blocked calls interrupted
//! by signals, the signal state at start), plus `peer`, the other end they talk to. Each
//! probe runs every case in a forked child killed after 10 s and prints one line per
//! result, `case: outcome`, made comparable in C (symbolic errno names, descriptors as
//! `fd`, addresses classified as self/peer/lo/any and ports as 0/exp/eph); `probe.h`
//! describes the format.
//!
//! # Modes, users, hosts
//!
//! Each (mode, user) pair is one native run and one ztrun run of every probe, compared
//! case by case:
//!
//! * **loopback**: the probes on one host talk to 127.0.0.1 and ::1, where the driver
//!   script starts the peer first (under the same `ztrun` in a ztrun run);
//! * **net**: the probes on host 1 talk to the peer on host 2. Under ztrun the hosts
//!   `z1`/`z2` are members of an ad-hoc network (a root host on the same LAN, the
//!   members' identities joined with [`ZtrunWrap::join_overlay`], as the matrix and the
//!   benchmarks do) and the peer runs under its own `ztrun` on `z2`. Natively the hosts
//!   `n1`/`n2` share a veth LAN whose interfaces are given the very addresses the ztrun
//!   members have on the virtual network (IPv4 /10 and IPv6 /88), so both runs use the
//!   same addresses.
//!
//! Users: root, and uid 65534 ([`Host::command_as_user`]); each has its own pair of
//! identities (homes), so no identity is restarted towards a peer that still holds a
//! session with its previous process.
//!
//! # Output
//!
//! One line per difference, `DIFF <mode> <user> <case>: native=<...> ztrun=<...>`
//! (`ALLOWED` instead of `DIFF` for a case in the allowlist, `SETUP` for a case whose
//! native run failed to set up or timed out: never counted as same), a table of how many
//! cases each mode/user compared, then `N same, M differ`. The exit status is 1 when a
//! difference is not in the allowlist (the `## Conformance allowlist` section of
//! docs/COMPAT.md, at most five entries), 2 when the runner itself failed.

mod compare;

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

pub(crate) use compare::{compare, Allowlist, Known, Outcomes, Verdict};

use compat_tests::matrix::{
    chown_nobody, find_program, run_with_timeout, Wrap, ZtrunBinaries, ZtrunWrap, NWID,
};
use compat_tests::testnet::{Host, TestNet};

/// The probe sources, compiled at run time. `peer` is the other end, not a probe.
const SOURCES: &[(&str, &str)] = &[
    ("probe.h", include_str!("../../conformance/probe.h")),
    ("calls.c", include_str!("../../conformance/calls.c")),
    ("sockopt.c", include_str!("../../conformance/sockopt.c")),
    ("data.c", include_str!("../../conformance/data.c")),
    ("ioctl.c", include_str!("../../conformance/ioctl.c")),
    ("signals.c", include_str!("../../conformance/signals.c")),
    ("peer.c", include_str!("../../conformance/peer.c")),
];

/// The probe programs, in the order the driver runs them.
const PROBES: &[&str] = &["calls", "sockopt", "data", "ioctl", "signals"];

/// The driver: runs every probe in sequence (in loopback mode after starting the peer on
/// loopback, so that under ztrun the peer runs under the same supervisor).
const DRIVER: &str = r#"#!/bin/sh
# conformance driver: run.sh MODE SELF4 SELF6 PEER4 PEER6 READY [ONLY]
dir=$(dirname "$0")
mode=$1 self4=$2 self6=$3 peer4=$4 peer6=$5 ready=$6 only=$7
peer=
if [ "$mode" = loopback ]; then
    "$dir/peer" --addr4 127.0.0.1 --addr6 ::1 --ready "$ready" >/dev/null 2>&1 &
    peer=$!
    i=0
    while [ ! -e "$ready" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e "$ready" ] || echo "driver: the loopback peer did not start" >&2
fi
for p in PROBES; do
    if [ -n "$only" ]; then
        "$dir/$p" --mode "$mode" --self4 "$self4" --self6 "$self6" --peer4 "$peer4" --peer6 "$peer6" --only "$only"
    else
        "$dir/$p" --mode "$mode" --self4 "$self4" --self6 "$self6" --peer4 "$peer4" --peer6 "$peer6"
    fi
done
[ -n "$peer" ] && kill "$peer"
exit 0
"#;

/// How long one run of every probe may take before it is killed (each case has 10 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(900);
/// How long a peer may take to start (under ztrun it joins the network first).
const PEER_START: Duration = Duration::from_secs(30);

/// Where the probes' traffic goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetMode {
    /// 127.0.0.1 and ::1 on one host.
    Loopback,
    /// Between two hosts: a veth LAN natively, the virtual network under ztrun.
    Net,
}

impl NetMode {
    /// `loopback` or `net`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            NetMode::Loopback => "loopback",
            NetMode::Net => "net",
        }
    }
}

/// As whom the probes (and the peer) run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum User {
    /// uid 0.
    Root,
    /// uid/gid 65534, no capabilities.
    Nobody,
}

impl User {
    /// `root` or `nobody`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            User::Root => "root",
            User::Nobody => "nobody",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The launcher binaries.
    pub(crate) binaries: ZtrunBinaries,
    /// The modes to run (in this order).
    pub(crate) modes: Vec<NetMode>,
    /// The users to run as (in this order).
    pub(crate) users: Vec<User>,
    /// Only case functions whose name starts with this (probe `--only`).
    pub(crate) only: Option<String>,
    /// Keep the working directory (sources, binaries, outputs).
    pub(crate) keep: bool,
    /// Print progress.
    pub(crate) verbose: bool,
}

/// One compared case.
#[derive(Debug, Clone)]
pub(crate) struct Compared {
    /// The mode.
    pub(crate) mode: NetMode,
    /// The user.
    pub(crate) user: User,
    /// The case name.
    pub(crate) case: String,
    /// How it compares.
    pub(crate) verdict: Verdict,
}

/// Counts of one mode/user.
#[derive(Debug, Clone)]
pub(crate) struct RunSummary {
    /// The mode.
    pub(crate) mode: NetMode,
    /// The user.
    pub(crate) user: User,
    /// Results the native run printed.
    pub(crate) native_results: usize,
    /// Results the ztrun run printed.
    pub(crate) ztrun_results: usize,
    /// Cases compared (same + differ).
    pub(crate) compared: usize,
    /// Same outcome.
    pub(crate) same: usize,
    /// Different outcome.
    pub(crate) differ: usize,
    /// Native set-up failed or timed out.
    pub(crate) native_failed: usize,
    /// The two native runs disagree.
    pub(crate) unstable: usize,
    /// Problems with the runs themselves (a run that timed out, printed nothing, ...).
    pub(crate) notes: Vec<String>,
}

/// The whole result.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    /// Every case of every mode/user.
    pub(crate) cases: Vec<Compared>,
    /// One per mode/user.
    pub(crate) runs: Vec<RunSummary>,
}

/// The addresses of one user's run in net mode.
#[derive(Debug, Clone)]
struct Addrs {
    self4: IpAddr,
    self6: IpAddr,
    peer4: IpAddr,
    peer6: IpAddr,
}

/// The hosts and identities of the whole suite.
struct Lab<'n> {
    z1: Host<'n>,
    z2: Host<'n>,
    n1: Host<'n>,
    n2: Host<'n>,
    n1_if: String,
    n2_if: String,
    wrap: Wrap,
    /// Per user: (z1 home, z2 home, virtual addresses).
    homes: Vec<(User, PathBuf, PathBuf, Addrs)>,
    dir: PathBuf,
    options: Options,
}

/// Write the sources into `dir` and compile each program there.
pub(crate) fn compile(dir: &Path) -> anyhow::Result<()> {
    let cc = find_program("cc")
        .or_else(|| find_program("gcc"))
        .context("no C compiler (cc or gcc) in PATH; install gcc")?;
    for (name, text) in SOURCES {
        std::fs::write(dir.join(name), text).with_context(|| format!("writing {name}"))?;
    }
    let driver = dir.join("run.sh");
    std::fs::write(&driver, DRIVER.replace("PROBES", &PROBES.join(" ")))
        .context("writing run.sh")?;
    std::fs::set_permissions(&driver, std::fs::Permissions::from_mode(0o755))
        .context("chmod run.sh")?;
    for program in PROBES.iter().chain(std::iter::once(&"peer")) {
        let out = Command::new(&cc)
            .current_dir(dir)
            .args(["-O1", "-Wall", "-Wno-unused-function", "-o", program])
            .arg(format!("{program}.c"))
            .output()
            .with_context(|| format!("running {}", cc.display()))?;
        if !out.status.success() {
            bail!(
                "compiling {program}.c failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

/// Run the suite: build the hosts and the network, run every mode/user natively and under
/// ztrun, compare. Needs root.
pub(crate) fn run(options: &Options) -> anyhow::Result<Report> {
    let work = tempfile::Builder::new()
        .prefix("ztconf-")
        .tempdir()
        .context("creating the working directory")?;
    let dir = work.path().to_path_buf();
    compile(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    chown_nobody(&dir)?;
    if options.verbose {
        eprintln!("conformance: probes compiled in {}", dir.display());
    }

    let net = TestNet::new()?;
    let lab = Lab::build(&net, options, &dir)?;
    let mut report = Report::default();
    for &user in &options.users {
        for &mode in &options.modes {
            let started = Instant::now();
            let (summary, cases) = lab.run_pair(mode, user)?;
            eprintln!(
                "conformance: {} {}: {} compared, {} differ, {} native set-up failures, {} unstable ({:.0} s)",
                mode.name(),
                user.name(),
                summary.compared,
                summary.differ,
                summary.native_failed,
                summary.unstable,
                started.elapsed().as_secs_f64()
            );
            report.runs.push(summary);
            report.cases.extend(cases);
        }
    }
    drop(lab);
    net.teardown()?;
    if options.keep {
        let kept = work.keep();
        eprintln!("conformance: kept {}", kept.display());
    }
    Ok(report)
}

impl<'n> Lab<'n> {
    fn build(net: &'n TestNet, options: &Options, dir: &Path) -> anyhow::Result<Lab<'n>> {
        // ztrun side: a root and two members on one LAN (direct paths, as the benchmark)
        let zlan = net.lan("zlan", "198.18.1.0/24")?;
        let root = net.host("root")?;
        let root_addr = root.attach(&zlan)?.addr;
        let z1 = net.host("z1")?;
        let z2 = net.host("z2")?;
        z1.attach(&zlan)?;
        z2.attach(&zlan)?;
        // native side: two hosts on a veth LAN, given the members' virtual addresses below
        let vnet = net.lan("vnet", "198.18.2.0/24")?;
        let n1 = net.host("n1")?;
        let n2 = net.host("n2")?;
        let n1_if = n1.attach(&vnet)?.ifname;
        let n2_if = n2.attach(&vnet)?.ifname;

        let wrap = ZtrunWrap {
            ztrun: options.binaries.ztrun_path()?,
            nwid: NWID.into(),
            root: std::net::SocketAddr::new(root_addr.into(), ZtrunWrap::ROOT_PORT),
        };
        let zt = options.binaries.zt_path()?;
        let state = dir.join("state");
        std::fs::create_dir_all(&state)?;
        chown_nobody(&state)?;
        let mut members = Vec::new();
        let mut paths = Vec::new();
        for user in &options.users {
            for host in ["z1", "z2"] {
                let home = state.join(format!("{host}-{}", user.name()));
                std::fs::create_dir_all(&home)?;
                chown_nobody(&home)?;
                paths.push(home);
            }
        }
        for (i, home) in paths.iter().enumerate() {
            members.push((if i % 2 == 0 { z1 } else { z2 }, home.as_path()));
        }
        let set_up = Instant::now();
        let addrs = wrap
            .join_overlay(&root, &state, &members, &zt)
            .context("setting up the virtual network")?;
        if options.verbose {
            eprintln!(
                "conformance: network up in {:.1} s: {addrs:?}",
                set_up.elapsed().as_secs_f64()
            );
        }
        // The homes joined as uid 65534 (the probes' user). A home is its owner's alone
        // (`ztrun` refuses another's), so the root runs' homes go back to root once the
        // node the join started there has ended (it releases the home when idle).
        for (k, user) in options.users.iter().enumerate() {
            if *user != User::Root {
                continue;
            }
            for home in &paths[2 * k..2 * k + 2] {
                let deadline = Instant::now() + Duration::from_secs(10);
                while home.join("status.json").exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                chown_tree(home, 0)?;
            }
        }
        let mut homes = Vec::new();
        for (k, user) in options.users.iter().enumerate() {
            let (a1, a2) = (addrs[2 * k], addrs[2 * k + 1]);
            let (Some(s6), Some(p6)) = (a1.1, a2.1) else {
                bail!("a member has no IPv6 address on the network: {addrs:?}");
            };
            homes.push((
                *user,
                paths[2 * k].clone(),
                paths[2 * k + 1].clone(),
                Addrs {
                    self4: a1.0,
                    self6: s6,
                    peer4: a2.0,
                    peer6: p6,
                },
            ));
        }
        Ok(Lab {
            z1,
            z2,
            n1,
            n2,
            n1_if,
            n2_if,
            wrap: Wrap::Ztrun(wrap),
            homes,
            dir: dir.to_path_buf(),
            options: options.clone(),
        })
    }

    fn user_state(&self, user: User) -> &(User, PathBuf, PathBuf, Addrs) {
        self.homes
            .iter()
            .find(|h| h.0 == user)
            .expect("every user in the options has homes")
    }

    /// A command on `host` as `user`, wrapped in ztrun (with `home`) when `home` is given.
    fn command(
        &self,
        host: &Host<'_>,
        user: User,
        home: Option<&Path>,
        argv: &[String],
    ) -> Command {
        let program = std::ffi::OsString::from(&argv[0]);
        let args: Vec<std::ffi::OsString> = argv[1..].iter().map(Into::into).collect();
        let full = match home {
            Some(home) => self.wrap.argv(home, &program, &args),
            None => Wrap::Native.argv(Path::new("/"), &program, &args),
        };
        let mut cmd = match user {
            User::Root => host.command(&full[0]),
            User::Nobody => host.command_as_user(&full[0]),
        };
        cmd.args(&full[1..]);
        cmd
    }

    /// The native and the ztrun run of one mode/user, compared.
    fn run_pair(&self, mode: NetMode, user: User) -> anyhow::Result<(RunSummary, Vec<Compared>)> {
        let (_, home1, home2, addrs) = self.user_state(user);
        let mut notes = Vec::new();
        let known = Known {
            words: vec![
                (addrs.self4.to_string(), "SELF4"),
                (addrs.self6.to_string(), "SELF6"),
                (addrs.peer4.to_string(), "PEER4"),
                (addrs.peer6.to_string(), "PEER6"),
            ],
        };
        // Two native runs: a case whose native outcome is not reproducible is not judged.
        let twice = |notes: &mut Vec<String>| -> anyhow::Result<(String, String)> {
            let first = self.probes(&self.n1, user, None, mode, addrs, "native", notes)?;
            let again = self.probes(&self.n1, user, None, mode, addrs, "native-again", notes)?;
            Ok((first, again))
        };
        let (native, again) = match mode {
            NetMode::Loopback => twice(&mut notes)?,
            NetMode::Net => {
                self.mirror(addrs, true)?;
                let result =
                    self.with_peer(&self.n2, user, None, addrs, "native", &mut notes, twice);
                self.mirror(addrs, false)?;
                result?
            }
        };
        let ztrun = match mode {
            NetMode::Loopback => self.probes(
                &self.z1,
                user,
                Some(home1),
                mode,
                addrs,
                "ztrun",
                &mut notes,
            )?,
            NetMode::Net => self.with_peer(
                &self.z2,
                user,
                Some(home2),
                addrs,
                "ztrun",
                &mut notes,
                |notes| self.probes(&self.z1, user, Some(home1), mode, addrs, "ztrun", notes),
            )?,
        };
        let native = Outcomes::parse(&native, &known);
        let again = Outcomes::parse(&again, &known);
        let ztrun = Outcomes::parse(&ztrun, &known);
        if ztrun.is_empty() {
            notes.push("the ztrun run printed no result".into());
        }
        let cases: Vec<Compared> = compare(&native, Some(&again), &ztrun)
            .into_iter()
            .map(|(case, verdict)| Compared {
                mode,
                user,
                case,
                verdict,
            })
            .collect();
        let count = |f: fn(&Verdict) -> bool| cases.iter().filter(|c| f(&c.verdict)).count();
        let same = count(|v| matches!(v, Verdict::Same));
        let differ = count(|v| matches!(v, Verdict::Differ { .. }));
        let native_failed = count(|v| matches!(v, Verdict::NativeFailed { .. }));
        let unstable = count(|v| matches!(v, Verdict::Unstable { .. }));
        Ok((
            RunSummary {
                mode,
                user,
                native_results: native.len(),
                ztrun_results: ztrun.len(),
                compared: same + differ,
                same,
                differ,
                native_failed,
                unstable,
                notes,
            },
            cases,
        ))
    }

    /// Add (or remove) the members' virtual addresses on the native hosts' LAN interfaces.
    fn mirror(&self, addrs: &Addrs, add: bool) -> anyhow::Result<()> {
        let verb = if add { "add" } else { "del" };
        for (host, ifname, v4, v6) in [
            (&self.n1, &self.n1_if, addrs.self4, addrs.self6),
            (&self.n2, &self.n2_if, addrs.peer4, addrs.peer6),
        ] {
            host.ip(["addr", verb, &format!("{v4}/10"), "dev", ifname])?;
            let v6 = format!("{v6}/88");
            if add {
                host.ip(["addr", "add", &v6, "dev", ifname, "nodad"])?;
            } else {
                host.ip(["addr", "del", &v6, "dev", ifname])?;
            }
        }
        Ok(())
    }

    /// Start the peer on `host` (under ztrun with `home`), run `f`, stop the peer.
    #[allow(clippy::too_many_arguments)]
    fn with_peer<T>(
        &self,
        host: &Host<'_>,
        user: User,
        home: Option<&Path>,
        addrs: &Addrs,
        side: &str,
        notes: &mut Vec<String>,
        f: impl FnOnce(&mut Vec<String>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let tag = format!("peer-net-{}-{side}", user.name());
        let ready = self.dir.join(format!("{tag}.ready"));
        let _ = std::fs::remove_file(&ready);
        let argv = vec![
            self.dir.join("peer").display().to_string(),
            "--addr4".into(),
            addrs.peer4.to_string(),
            "--addr6".into(),
            addrs.peer6.to_string(),
            "--ready".into(),
            ready.display().to_string(),
        ];
        let mut cmd = self.command(host, user, home, &argv);
        let log = std::fs::File::create(self.dir.join(format!("{tag}.log")))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting the peer ({side})"))?;
        let deadline = Instant::now() + PEER_START;
        while !ready.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join(format!("{tag}.log")))
                    .unwrap_or_default();
                notes.push(format!(
                    "the {side} peer exited at start ({status}): {}",
                    log.trim()
                ));
                break;
            }
            if Instant::now() > deadline {
                notes.push(format!(
                    "the {side} peer was not ready within {PEER_START:?}"
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let result = f(notes);
        stop(&mut child);
        result
    }

    /// One run of every probe; returns its stdout.
    #[allow(clippy::too_many_arguments)]
    fn probes(
        &self,
        host: &Host<'_>,
        user: User,
        home: Option<&Path>,
        mode: NetMode,
        addrs: &Addrs,
        side: &str,
        notes: &mut Vec<String>,
    ) -> anyhow::Result<String> {
        let tag = format!("{}-{}-{side}", mode.name(), user.name());
        let ready = self.dir.join(format!("{tag}.ready"));
        let _ = std::fs::remove_file(&ready);
        let (s4, s6, p4, p6) = match mode {
            NetMode::Loopback => (
                "127.0.0.1".to_string(),
                "::1".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ),
            NetMode::Net => (
                addrs.self4.to_string(),
                addrs.self6.to_string(),
                addrs.peer4.to_string(),
                addrs.peer6.to_string(),
            ),
        };
        let mut argv = vec![
            "/bin/sh".to_string(),
            self.dir.join("run.sh").display().to_string(),
            mode.name().into(),
            s4,
            s6,
            p4,
            p6,
            ready.display().to_string(),
        ];
        if let Some(only) = &self.options.only {
            argv.push(only.clone());
        }
        let mut cmd = self.command(host, user, home, &argv);
        if self.options.verbose {
            eprintln!("conformance: {tag}: {}", argv.join(" "));
        }
        let ran = run_with_timeout(&mut cmd, &format!("the {tag} probes"), RUN_TIMEOUT)?;
        let _ = std::fs::write(self.dir.join(format!("{tag}.out")), &ran.stdout);
        let _ = std::fs::write(self.dir.join(format!("{tag}.err")), &ran.stderr);
        if ran.timed_out {
            notes.push(format!("the {tag} run was killed after {RUN_TIMEOUT:?}"));
        } else if !ran.status.success() {
            notes.push(format!(
                "the {tag} run exited with {}: {}",
                ran.status,
                ran.stderr_tail()
            ));
        }
        Ok(ran.stdout)
    }
}

/// Stop a peer: SIGTERM (ztrun forwards it to the program), then SIGKILL after 3 s.
fn stop(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    for _ in 0..60 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Print the differences and the summary; returns true when every difference is allowed
/// or a known open one and, on a full run (`full`), every open one still differs.
pub(crate) fn print(
    report: &Report,
    allow: &Allowlist,
    full: bool,
    out: &mut impl std::io::Write,
) -> std::io::Result<bool> {
    let mut same = 0;
    let mut differ = 0;
    let mut allowed = 0;
    let mut known = 0;
    let mut still_open = std::collections::HashSet::new();
    let mut failed = 0;
    let mut unstable = 0;
    for c in &report.cases {
        let (mode, user) = (c.mode.name(), c.user.name());
        match &c.verdict {
            Verdict::Same => same += 1,
            Verdict::Differ { native, ztrun } => {
                differ += 1;
                let word = if allow.allows(&c.case) {
                    allowed += 1;
                    "ALLOWED"
                } else if allow.is_open(&c.case) {
                    known += 1;
                    still_open.insert(c.case.as_str());
                    "OPEN"
                } else {
                    "DIFF"
                };
                writeln!(
                    out,
                    "{word} {mode} {user} {}: native={native} ztrun={ztrun}",
                    c.case
                )?;
            }
            Verdict::Unstable {
                native,
                again,
                ztrun,
            } => {
                unstable += 1;
                writeln!(
                    out,
                    "UNSTABLE {mode} {user} {}: native={native} native-again={again} ztrun={ztrun} (not compared)",
                    c.case
                )?;
            }
            Verdict::NativeFailed { native, ztrun } => {
                failed += 1;
                writeln!(
                    out,
                    "SETUP {mode} {user} {}: native={native} ztrun={ztrun} (native run failed; not compared)",
                    c.case
                )?;
            }
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<10} {:<7} {:>8} {:>8} {:>6} {:>6} {:>8} {:>14}",
        "mode", "user", "compared", "same", "differ", "setup", "unstable", "results n/z"
    )?;
    for r in &report.runs {
        writeln!(
            out,
            "{:<10} {:<7} {:>8} {:>8} {:>6} {:>6} {:>8} {:>14}",
            r.mode.name(),
            r.user.name(),
            r.compared,
            r.same,
            r.differ,
            r.native_failed,
            r.unstable,
            format!("{}/{}", r.native_results, r.ztrun_results)
        )?;
        for note in &r.notes {
            writeln!(out, "  note: {note}")?;
        }
    }
    writeln!(out)?;
    if unstable > 0 {
        writeln!(
            out,
            "{unstable} cases not compared: two native runs disagree (UNSTABLE lines)"
        )?;
    }
    if failed > 0 {
        writeln!(out, "{failed} cases not compared: their native run failed to set up or timed out (SETUP lines)")?;
    }
    let mut fixed = 0;
    if full {
        for (case, _) in &allow.open {
            if !still_open.contains(case.as_str()) {
                fixed += 1;
                writeln!(
                    out,
                    "FIXED {case}: listed as an open difference in docs/COMPAT.md but the same everywhere; remove it from the list"
                )?;
            }
        }
    }
    writeln!(
        out,
        "{same} same, {differ} differ ({allowed} allowed, {known} open, {} new, by docs/COMPAT.md){}",
        differ - allowed - known,
        if fixed > 0 {
            format!("; {fixed} open entries no longer differ")
        } else {
            String::new()
        }
    )?;
    out.flush()?;
    Ok(differ == allowed + known && fixed == 0)
}

/// `chown -R uid:uid path`.
fn chown_tree(path: &std::path::Path, uid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))
        .with_context(|| format!("chown {}", path.display()))?;
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(case: &str, verdict: Verdict) -> Compared {
        Compared {
            mode: NetMode::Loopback,
            user: User::Nobody,
            case: case.into(),
            verdict,
        }
    }

    #[test]
    fn print_lists_differences_and_fails_only_on_unallowed_ones() {
        let differ = |n: &str, z: &str| Verdict::Differ {
            native: n.into(),
            ztrun: z.into(),
        };
        let mut report = Report {
            cases: vec![
                case("a", Verdict::Same),
                case("b", differ("ret=-1 errno=EISCONN", "ret=0")),
                case(
                    "c",
                    Verdict::NativeFailed {
                        native: "setup-failed listen errno=EPERM".into(),
                        ztrun: "ret=0".into(),
                    },
                ),
            ],
            runs: vec![],
        };
        let allow = Allowlist::parse("## Conformance allowlist\n- `b`: known\n").unwrap();
        let mut out = Vec::new();
        assert!(print(&report, &allow, true, &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("ALLOWED loopback nobody b: native=ret=-1 errno=EISCONN ztrun=ret=0"));
        assert!(text.contains("SETUP loopback nobody c: native=setup-failed"));
        assert!(text.contains("1 same, 1 differ (1 allowed, 0 open, 0 new"));

        report.cases.push(case("d", differ("ret=2", "ret=1")));
        let mut out = Vec::new();
        assert!(!print(&report, &allow, true, &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("DIFF loopback nobody d: native=ret=2 ztrun=ret=1\n"));
        assert!(text.contains("1 same, 2 differ (1 allowed, 0 open, 1 new"));
    }

    #[test]
    fn open_differences_pass_but_say_so_and_fixed_ones_must_leave_the_list() {
        let differ = Verdict::Differ {
            native: "ret=-1 errno=EPIPE".into(),
            ztrun: "ret=1".into(),
        };
        let report = Report {
            cases: vec![case("a", Verdict::Same), case("b", differ)],
            runs: vec![],
        };
        let doc = "## Conformance allowlist\n\n## Conformance: open differences\n- `b`: bug\n";
        let allow = Allowlist::parse(doc).unwrap();
        let mut out = Vec::new();
        assert!(print(&report, &allow, true, &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("OPEN loopback nobody b: native=ret=-1 errno=EPIPE ztrun=ret=1"));
        assert!(text.contains("1 same, 1 differ (0 allowed, 1 open, 0 new"));

        let doc = format!("{doc}- `a`: fixed since\n");
        let allow = Allowlist::parse(&doc).unwrap();
        let mut out = Vec::new();
        assert!(!print(&report, &allow, true, &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("FIXED a: listed as an open difference"),
            "{text}"
        );
        // A partial run (--only, one mode or user) cannot tell.
        assert!(print(&report, &allow, false, &mut Vec::new()).unwrap());
    }
}
