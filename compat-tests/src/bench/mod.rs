//! `compat-tests bench`: ztrun measured against the kernel, in one run.
//!
//! ```text
//! cargo run --release -p compat-tests -- bench            # full run, writes BENCHMARKS.md
//! cargo run --release -p compat-tests -- bench --quick    # a small run, writes nothing
//! ```
//!
//! # What runs where
//!
//! One [`TestNet`] with one LAN (veth pairs on a bridge, 198.18.1.0/24) holding three
//! hosts: a root host running `zt root`, host 1 (servers) and host 2 (clients). Every
//! program runs as uid 65534. Each measurement is taken on three paths:
//!
//! * **(a) loopback**: server and client on host 1, over `127.0.0.1` (the kernel alone);
//! * **(b) veth**: server on host 1, client on host 2, kernel TCP over the LAN. This is the
//!   reference every ratio is taken against;
//! * **(c) ztrun**: the same two programs each under its own `ztrun` (started with the
//!   matrix's [`ZtrunWrap`]), the client reaching the server's address on the virtual
//!   network, so every byte crosses both supervisors, both user-space stacks and the
//!   encrypted overlay between the hosts.
//!
//! The measurements: iperf3 TCP with one and four streams; a 64-byte request/response
//! ping-pong on one connection (rate, p50 and p99 round trip) and new connections per
//! second (connect, one request, the server closes), both made by this binary's hidden
//! `rr-server`/`rr-client` ([`rr`]); redis-benchmark SET and GET against redis-server; the
//! time from spawning the client to its first answered request; a CPU-bound Python program
//! with and without `ztrun`; the resident memory of `ztrun` idle, under load and while
//! 10,000 connections are held open between two wrapped programs, with the throughput of
//! one more bulk flow alongside them.
//!
//! Every step has a deadline and every loop a bound. A measurement that fails does not end
//! the run: its cell says why, and a target that depends on it is not met.

pub(crate) mod controller;
pub(crate) mod flood;
mod machine;
mod parse;
mod process;
mod report;
pub(crate) mod rr;
pub(crate) mod sockets;
mod svg;

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use compat_tests::matrix::{find_program, Wrap, ZtrunBinaries, ZtrunWrap, NWID};
use compat_tests::testnet::{Host, TestNet};

pub(crate) use machine::{load_average, machine, source_version};
use parse::{first_reply_ms, json_f64, last_json_line, median, parse_two_seconds, redis_rps};
use process::{
    chown_nobody, cpu_ticks, describe, read_all, start_perf, tail, ticks_percent, vm_rss_kb,
    wait_with_deadline, Finished, Server, ZtrunStats,
};
pub(crate) use report::{merge_kept, Metric, Path, Report};
pub(crate) use svg::chart;

/// How to run the benchmark.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// A small run (about a minute) that checks the command works; writes nothing unless
    /// told where.
    pub(crate) quick: bool,
    /// Where `ztrun` and `zt` are.
    pub(crate) binaries: ZtrunBinaries,
    /// Record a perf profile of both `ztrun` processes during the single-stream iperf3
    /// run of path (c) into this directory.
    pub(crate) perf: Option<PathBuf>,
    /// Keep the state directory (logs, homes) instead of deleting it.
    pub(crate) keep: bool,
    /// Print each step.
    pub(crate) verbose: bool,
}

/// The sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Seconds of each timed measurement (iperf3, ping-pong, new connections).
    seconds: f64,
    /// Requests per redis-benchmark test.
    redis_requests: u32,
    /// Wall time the CPU-bound program aims at.
    cpu_seconds: f64,
    /// Repetitions of the start-up measurement (the median is reported).
    repeats: usize,
    /// Repetitions of the CPU-bound program, alternating with and without ztrun (the
    /// median is reported; more than start-up, as other work on the machine skews it).
    cpu_repeats: usize,
    /// Connections held in the many-connections test.
    conns: usize,
    /// The deadline of opening and holding them.
    hold_seconds: f64,
    /// Runs of the request/response and iperf3 phases (the table shows the median and
    /// the spread).
    runs: usize,
    /// Idle listeners and UDP sockets opened in the scale phase (fewer when the
    /// descriptor limit would not hold them).
    idle_sockets: usize,
    /// Seconds over which the CPU of idle sockets is measured.
    idle_window: f64,
    /// Loopback connect/close cycles.
    loop_cycles: u64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                seconds: 1.0,
                redis_requests: 2_000,
                cpu_seconds: 0.3,
                repeats: 1,
                cpu_repeats: 1,
                conns: 200,
                hold_seconds: 30.0,
                runs: 1,
                idle_sockets: 1_000,
                idle_window: 2.0,
                loop_cycles: 10_000,
            }
        } else {
            Plan {
                seconds: 3.0,
                redis_requests: 20_000,
                cpu_seconds: 2.0,
                repeats: 3,
                cpu_repeats: 9,
                conns: 10_000,
                hold_seconds: 150.0,
                runs: 3,
                idle_sockets: 10_000,
                idle_window: 10.0,
                loop_cycles: 20_000,
            }
        }
    }
}

/// Programs the benchmark runs, with the Debian package that has each.
const PROGRAMS: &[(&str, &str)] = &[
    ("iperf3", "iperf3"),
    ("redis-server", "redis-server"),
    ("redis-benchmark", "redis-tools"),
    ("/usr/bin/python3", "python3"),
];

/// The open-files limit (soft and hard) every program of the run inherits: what an
/// administrator sets for a server of 10,000 connections. The wrapped program needs one
/// descriptor per connection; `ztrun` today needs two (see BENCHMARKS.md).
const NOFILE_LIMIT: u64 = 65_536;

/// Fresh client identities available for retries over ztrun.
const SPARE_HOMES: usize = 8;

const RR_PORT: u16 = 7000;
const IPERF_PORT: u16 = 5201;
const REDIS_PORT: u16 = 6379;
const HOLD_RR_PORT: u16 = 7001;
const HOLD_IPERF_PORT: u16 = 5202;

/// Run the whole benchmark and return its results.
pub(crate) fn run(options: &Options) -> anyhow::Result<Report> {
    preflight(options)?;
    let plan = Plan::new(options.quick);
    let started = Instant::now();
    let hard = raise_nofile_limit(NOFILE_LIMIT)?;
    if (hard as usize) < plan.conns + 1_000 {
        bail!(
            "the hard limit of open files is {hard}; holding {} connections needs at least {} \
             (raise it with `ulimit -Hn` or in limits.conf)",
            plan.conns,
            plan.conns + 1_000
        );
    }
    let net = TestNet::new().context("creating the test network")?;
    let result = {
        let lab = Lab::build(&net, options)?;
        let mut report = Report::new(options.quick, plan.conns);
        report.nofile = hard;
        lab.measure_all(&plan, &mut report);
        report.elapsed = started.elapsed();
        if options.keep {
            let kept = lab.state.keep();
            eprintln!("bench: kept {}", kept.display());
        }
        Ok(report)
    };
    net.teardown().context("tearing down the test network")?;
    result
}

/// Raise this process's open-files limit, soft and hard, to at least `want` (root may
/// raise the hard limit up to `fs.nr_open`); every program of the run inherits it.
/// Returns the hard limit in force.
fn raise_nofile_limit(want: u64) -> anyhow::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    let target = hard.max(want);
    if setrlimit(Resource::RLIMIT_NOFILE, target, target).is_ok() {
        return Ok(target);
    }
    rr::raise_nofile()
}

/// Fail early, with what to do, when the run cannot work.
fn preflight(options: &Options) -> anyhow::Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    if euid != 0 {
        bail!(
            "needs root (it creates network namespaces); the effective uid is \
             {euid}. Run it with sudo, or as root in CI"
        );
    }
    let missing: Vec<_> = PROGRAMS
        .iter()
        .filter(|(program, _)| find_program(program).is_none())
        .collect();
    if !missing.is_empty() {
        let programs: Vec<_> = missing.iter().map(|(p, _)| *p).collect();
        let packages: Vec<_> = missing.iter().map(|(_, p)| *p).collect();
        bail!(
            "missing program(s) {}: install them with `apt-get install -y \
             --no-install-recommends {}` (they are listed in .ci/packages-matrix)",
            programs.join(", "),
            packages.join(" ")
        );
    }
    if options.perf.is_some() && find_program("perf").is_none() {
        bail!("--perf needs perf: `apt-get install -y --no-install-recommends linux-perf`");
    }
    options.binaries.ztrun_path()?;
    options.binaries.zt_path()?;
    Ok(())
}

/// The `ztrun` state directories, one per `ztrun` that may run at once.
#[derive(Debug)]
struct Homes {
    /// Host 1, the main server.
    server: PathBuf,
    /// Host 1, a second server alongside (the bulk flow of the many-connections test).
    server2: PathBuf,
    /// Host 2, the main client.
    client: PathBuf,
    /// Host 2, a second client alongside.
    client2: PathBuf,
}

/// How a program is started.
#[derive(Debug, Clone, Copy)]
enum On<'h> {
    /// As it is.
    Native,
    /// Under `ztrun --home HOME`.
    Ztrun(&'h FsPath),
}

/// The hosts, addresses and directories of one run.
struct Lab<'n> {
    host1: Host<'n>,
    host2: Host<'n>,
    /// Host 1's address on the LAN.
    lan1: IpAddr,
    /// The virtual addresses of the server homes.
    virt1: IpAddr,
    virt2: IpAddr,
    wrap: ZtrunWrap,
    homes: Homes,
    /// Logs and redis's directory.
    state: tempfile::TempDir,
    /// This binary (the rr-server and rr-client).
    exe: PathBuf,
    options: Options,
    /// Remarks for the report (retries).
    notes: std::cell::RefCell<Vec<String>>,
    /// Fresh client homes (new identities) for retries; see [`Lab::retried`].
    spare: Vec<PathBuf>,
    /// The spare home the client uses now, if any, and the next unused one.
    spare_in_use: std::cell::Cell<Option<usize>>,
    spare_next: std::cell::Cell<usize>,
    /// Numbers the `ZTRUN_STATS` files of the run's `ztrun`s.
    stats_next: std::cell::Cell<u32>,
}

impl<'n> Lab<'n> {
    fn build(net: &'n TestNet, options: &Options) -> anyhow::Result<Lab<'n>> {
        let lan = net.lan("lan", "198.18.1.0/24")?;
        let root = net.host("root")?;
        let root_addr = root.attach(&lan)?.addr;
        let host1 = net.host("host1")?;
        let lan1 = host1.attach(&lan)?.addr;
        let host2 = net.host("host2")?;
        host2.attach(&lan)?;
        // Many short connections from one client: use every port.
        for host in [host1, host2] {
            host.sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
        }
        let state = tempfile::Builder::new()
            .prefix("ztbench-")
            .tempdir()
            .context("creating the state directory")?;
        let dir = |name: &str| -> anyhow::Result<PathBuf> {
            let path = state.path().join(name);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            chown_nobody(&path)?;
            Ok(path)
        };
        chown_nobody(state.path())?;
        let homes = Homes {
            server: dir("server")?,
            server2: dir("server2")?,
            client: dir("client")?,
            client2: dir("client2")?,
        };
        dir("redis")?;
        let spare = (0..SPARE_HOMES)
            .map(|i| dir(&format!("client-spare-{i}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let wrap = ZtrunWrap {
            ztrun: options.binaries.ztrun_path()?,
            nwid: NWID.into(),
            root: SocketAddr::new(root_addr.into(), ZtrunWrap::ROOT_PORT),
        };
        let zt = options.binaries.zt_path()?;
        let set_up = Instant::now();
        let members = [
            (host1, homes.server.as_path()),
            (host1, homes.server2.as_path()),
            (host2, homes.client.as_path()),
            (host2, homes.client2.as_path()),
        ];
        let addrs = wrap
            .join_overlay(&root, state.path(), &members, &zt)
            .context("setting up the overlay")?;
        if options.verbose {
            eprintln!(
                "bench: overlay up in {:.1} s: {addrs:?}",
                set_up.elapsed().as_secs_f64()
            );
        }
        let exe = std::env::current_exe().context("finding this binary")?;
        Ok(Lab {
            host1,
            host2,
            lan1: lan1.into(),
            virt1: addrs[0].0,
            virt2: addrs[1].0,
            wrap,
            homes,
            state,
            exe,
            options: options.clone(),
            notes: Default::default(),
            spare,
            spare_in_use: Default::default(),
            spare_next: Default::default(),
            stats_next: Default::default(),
        })
    }

    /// Run `attempt`; on path (c), once more if it fails, with the client under a new
    /// identity (a spare home), noting the first failure. A `ztrun` restarted with the
    /// same identity (every client here) often cannot reach a peer that still holds a
    /// session with its previous run; see BENCHMARKS.md.
    fn retried<T>(
        &self,
        path: Path,
        what: &str,
        attempt: impl Fn() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        match attempt() {
            Err(e) if path == Path::Ztrun => {
                eprintln!("bench: {what} on {} failed, retrying: {e:#}", path.label());
                self.notes.borrow_mut().push(format!(
                    "{what} on {}: the first attempt failed and was retried with a new client \
                     identity ({})",
                    path.label(),
                    tail(&format!("{e:#}"))
                ));
                let spare = self.spare_next.get();
                if spare < self.spare.len() {
                    self.spare_next.set(spare + 1);
                    self.spare_in_use.set(Some(spare));
                }
                let result = attempt();
                self.spare_in_use.set(None);
                result
            }
            other => other,
        }
    }

    /// The home of the main client under ztrun: its own, or a spare one during a retry.
    fn client_home(&self) -> &FsPath {
        match self.spare_in_use.get() {
            Some(i) => &self.spare[i],
            None => &self.homes.client,
        }
    }

    fn say(&self, what: impl AsRef<str>) {
        if self.options.verbose {
            eprintln!("bench: {}", what.as_ref());
        }
    }

    /// The command that runs `program args` on `host` as uid 65534, wrapped as `on` says.
    fn command<S: AsRef<OsStr>>(
        &self,
        host: Host<'n>,
        on: On<'_>,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = S>,
    ) -> Command {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let (wrap, home) = match on {
            On::Native => (Wrap::Native, self.state.path()),
            On::Ztrun(home) => (Wrap::Ztrun(self.wrap.clone()), home),
        };
        let mut argv = wrap.argv(home, program.as_ref(), &args);
        if matches!(on, On::Ztrun(_)) {
            // The node in the ztrun process measured (its CPU and RSS), not in a
            // background process of the home.
            argv.insert(1, "--own-node".into());
        }
        let mut cmd = host.command_as_user(&argv[0]);
        cmd.args(&argv[1..]);
        if matches!(on, On::Ztrun(_)) {
            // Its trapped calls and context switches (launcher::stats), in the state
            // directory (which uid 65534 may write).
            let n = self.stats_next.get();
            self.stats_next.set(n + 1);
            let file = self.state.path().join(format!("ztrun-stats-{n}.json"));
            cmd.env(process::STATS_VAR, file);
        }
        if self.options.verbose {
            eprintln!("bench: $ {}", describe(&cmd));
        }
        cmd
    }

    /// Where the server and client of `path` run, the address the client uses for a
    /// server home, and how each is wrapped.
    fn placement(&self, path: Path, second: bool) -> Placement<'_, 'n> {
        match path {
            Path::Loopback => Placement {
                server: On::Native,
                client: On::Native,
                client_host: self.host1,
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            },
            Path::Veth => Placement {
                server: On::Native,
                client: On::Native,
                client_host: self.host2,
                addr: self.lan1,
            },
            Path::Ztrun => Placement {
                server: On::Ztrun(if second {
                    &self.homes.server2
                } else {
                    &self.homes.server
                }),
                client: On::Ztrun(if second {
                    &self.homes.client2
                } else {
                    self.client_home()
                }),
                client_host: self.host2,
                addr: if second { self.virt2 } else { self.virt1 },
            },
        }
    }

    /// Start a server on host 1; it is ready when its output contains `ready`.
    fn start_server<S: AsRef<OsStr>>(
        &self,
        name: &str,
        on: On<'_>,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = S>,
        ready: &str,
    ) -> anyhow::Result<Server> {
        let mut cmd = self.command(self.host1, on, program, args);
        let log = self.state.path().join(format!("{name}.log"));
        let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {}", describe(&cmd)))?;
        let mut server = Server {
            name: name.into(),
            child,
            log,
            stats: process::stats_file(&cmd),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = server.output();
            if text.contains(ready) {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!(
                    "{name} exited ({status}) before it was ready: {}",
                    tail(&text)
                );
            }
            if Instant::now() > deadline {
                bail!("{name} was not ready within 30 s: {}", tail(&text));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Run a client to completion within `timeout`, sampling the resident memory of the
    /// processes in `watch` (and of the client itself when `watch_self`) every 50 ms.
    fn run_client(
        &self,
        what: &str,
        mut cmd: Command,
        timeout: Duration,
        watch: &[u32],
        watch_self: bool,
        on_start: &mut dyn FnMut(u32),
    ) -> anyhow::Result<Finished> {
        let (mut out, mut err) = (tempfile::tempfile()?, tempfile::tempfile()?);
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(err.try_clone()?);
        let spawned_at = SystemTime::now();
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {what}: {}", describe(&cmd)))?;
        on_start(child.id());
        let mut pids: Vec<u32> = watch.to_vec();
        if watch_self {
            pids.push(child.id());
        }
        let mut rss_kb = vec![0u64; pids.len()];
        let status = loop {
            for (pid, max) in pids.iter().zip(&mut rss_kb) {
                if let Some(kb) = vm_rss_kb(*pid) {
                    *max = (*max).max(kb);
                }
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{what} did not finish within {} s: {}",
                    timeout.as_secs(),
                    tail(&read_all(&mut err))
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let (stdout, stderr) = (read_all(&mut out), read_all(&mut err));
        if !status.success() {
            bail!(
                "{what} failed ({status}): {}",
                tail(&format!("{stderr}\n{stdout}"))
            );
        }
        Ok(Finished {
            stdout,
            spawned_at,
            rss_kb,
            stats: process::stats_file(&cmd)
                .as_deref()
                .and_then(process::ZtrunStats::read),
        })
    }

    /// Run `rr-client` with `args` from `path`'s client host against `port`.
    fn rr_client(
        &self,
        path: Path,
        second: bool,
        port: u16,
        args: &[String],
        timeout: Duration,
    ) -> anyhow::Result<(serde_json::Value, Finished)> {
        let place = self.placement(path, second);
        let mut argv = vec![
            "rr-client".to_string(),
            "--connect".into(),
            SocketAddr::new(place.addr, port).to_string(),
        ];
        argv.extend(args.iter().cloned());
        let cmd = self.command(place.client_host, place.client, &self.exe, &argv);
        let done = self.run_client("rr-client", cmd, timeout, &[], false, &mut |_| {})?;
        let json = last_json_line(&done.stdout)?;
        Ok((json, done))
    }

    fn measure_all(&self, plan: &Plan, report: &mut Report) {
        // The timed phases run `plan.runs` times, one after the other (the table shows
        // their median and spread); the others once.
        let mut phases: Vec<(String, Phase<'_, 'n>)> = Vec::new();
        for run in 1..=plan.runs {
            let of = if plan.runs > 1 {
                format!(" (run {run} of {})", plan.runs)
            } else {
                String::new()
            };
            phases.push((format!("request/response{of}"), Self::phase_rr));
            phases.push((format!("iperf3{of}"), Self::phase_iperf));
        }
        phases.push(("redis".into(), Self::phase_redis));
        phases.push(("CPU-bound program".into(), Self::phase_cpu));
        phases.push(("many connections".into(), Self::phase_hold));
        phases.push(("idle sockets and a connect loop".into(), Self::phase_scale));
        for (name, phase) in phases {
            let t = Instant::now();
            eprintln!("bench: {name} ...");
            if let Err(e) = phase(self, plan, report) {
                eprintln!("bench: {name} failed: {e:#}");
                report.note(format!("{name}: {e:#}"));
            }
            eprintln!("bench: {name} done in {:.1} s", t.elapsed().as_secs_f64());
        }
        for note in self.notes.borrow_mut().drain(..) {
            report.note(note);
        }
    }

    fn rr_server(&self, on: On<'_>, port: u16) -> anyhow::Result<Server> {
        let listen = format!("0.0.0.0:{port}");
        self.start_server(
            &format!("rr-server-{port}-{}", on.tag()),
            on,
            &self.exe,
            ["rr-server", "--listen", &listen],
            "rr-server: listening",
        )
    }

    /// First reply, ping-pong and new connections on each path; idle RSS of `ztrun`.
    fn phase_rr(&self, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
        let secs = format!("{}", plan.seconds);
        let timeout = Duration::from_secs_f64(plan.seconds + 30.0);
        for path in Path::ALL {
            let place = self.placement(path, false);
            let server = match path {
                Path::Loopback | Path::Veth => self.rr_server(On::Native, RR_PORT),
                Path::Ztrun => self.rr_server(place.server, RR_PORT),
            };
            let server = match server {
                Ok(s) => s,
                Err(e) => {
                    report.fail_all(
                        &[
                            Metric::FirstReply,
                            Metric::RrRate,
                            Metric::RrP50,
                            Metric::RrP99,
                        ],
                        path,
                        &e,
                    );
                    report.fail_all(&[Metric::ConnRate, Metric::RssIdle], path, &e);
                    continue;
                }
            };
            if path == Path::Ztrun {
                // Idle: the server's ztrun is online and has served nothing yet.
                let window = Duration::from_secs_f64(plan.seconds.min(2.0));
                let ticks_before = cpu_ticks(server.pid());
                std::thread::sleep(window);
                let cpu = match (ticks_before, cpu_ticks(server.pid())) {
                    (Some(a), Some(b)) => Ok(ticks_percent(b.saturating_sub(a), window)),
                    _ => Err(anyhow::anyhow!("no /proc/{}/stat", server.pid())),
                };
                report.set(Metric::CpuIdle, path, cpu);
                let idle = vm_rss_kb(server.pid())
                    .map(|kb| kb as f64 / 1024.0)
                    .ok_or_else(|| anyhow::anyhow!("no VmRSS for ztrun pid {}", server.pid()));
                report.set(Metric::RssIdle, path, idle);
            }
            // Time to the first answered request, from spawning the client (median).
            let mut firsts = Vec::new();
            let mut first_error = None;
            for _ in 0..plan.repeats {
                match self.rr_client(
                    path,
                    false,
                    RR_PORT,
                    &[
                        "--mode".into(),
                        "first".into(),
                        "--seconds".into(),
                        "10".into(),
                    ],
                    Duration::from_secs(40),
                ) {
                    Ok((json, done)) => match first_reply_ms(&json, done.spawned_at) {
                        Ok(ms) => firsts.push(ms),
                        Err(e) => first_error = Some(e),
                    },
                    Err(e) => first_error = Some(e),
                }
            }
            if firsts.len() < plan.repeats {
                self.notes.borrow_mut().push(format!(
                    "spawn to first answered request on {}: {} of {} runs got no answer within \
                     10 s; the median is of the others",
                    path.label(),
                    plan.repeats - firsts.len(),
                    plan.repeats
                ));
            }
            match (median(&firsts), first_error) {
                (Some(ms), _) => report.set(Metric::FirstReply, path, Ok(ms)),
                (None, Some(e)) => report.set(Metric::FirstReply, path, Err(e)),
                (None, None) => {}
            }
            self.say(format!("{path:?}: first reply {firsts:?} ms"));

            let pingpong = [
                "--mode".into(),
                "pingpong".into(),
                "--seconds".into(),
                secs.clone(),
            ];
            let server_stats = || server.stats.as_deref().and_then(ZtrunStats::read_settled);
            let before = server_stats();
            match self.retried(path, "ping-pong", || {
                self.rr_client(path, false, RR_PORT, &pingpong, timeout)
            }) {
                Ok((json, done)) => {
                    report.set(Metric::RrRate, path, json_f64(&json, "rate"));
                    report.set(Metric::RrP50, path, json_f64(&json, "p50_us"));
                    report.set(Metric::RrP99, path, json_f64(&json, "p99_us"));
                    if let Some(cost) = both_sides(before, server_stats(), done.stats) {
                        report.set(
                            Metric::SwitchesPerRequest,
                            path,
                            json_f64(&json, "count").map(|n| cost.switches / n.max(1.0)),
                        );
                        report.set(
                            Metric::CpuPerRequest,
                            path,
                            json_f64(&json, "count").map(|n| cost.cpu_us / n.max(1.0)),
                        );
                    }
                }
                Err(e) => {
                    report.fail_all(&[Metric::RrRate, Metric::RrP50, Metric::RrP99], path, &e)
                }
            }
            let connect = [
                "--mode".into(),
                "connect".into(),
                "--seconds".into(),
                secs.clone(),
            ];
            let before = server_stats();
            match self.retried(path, "new connections", || {
                self.rr_client(path, false, RR_PORT, &connect, timeout)
            }) {
                Ok((json, done)) => {
                    report.set(Metric::ConnRate, path, json_f64(&json, "rate"));
                    if let Some(cost) = both_sides(before, server_stats(), done.stats) {
                        let n = json_f64(&json, "count").map(|n| n.max(1.0));
                        let per = |v: f64| {
                            n.as_ref()
                                .map(|n| v / n)
                                .map_err(|e| anyhow::anyhow!("{e:#}"))
                        };
                        report.set(Metric::TrapsPerConn, path, per(cost.trapped_calls));
                        report.set(Metric::SwitchesPerConn, path, per(cost.switches));
                        report.set(Metric::CpuPerConn, path, per(cost.cpu_us));
                    }
                }
                Err(e) => report.set(Metric::ConnRate, path, Err(e)),
            }
            server.stop();
        }
        Ok(())
    }

    /// iperf3 TCP, one and four streams, on each path; `ztrun` RSS under that load.
    fn phase_iperf(&self, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
        for path in Path::ALL {
            let place = self.placement(path, false);
            let mut rss_max = 0u64;
            for (metric, streams) in [(Metric::Iperf1, 1), (Metric::Iperf4, 4)] {
                let perf = (path == Path::Ztrun && streams == 1)
                    .then_some(self.options.perf.as_deref())
                    .flatten();
                // A fresh one-off server per run: under ztrun, iperf3's server cannot
                // listen again on its port after a test (EADDRINUSE), see BENCHMARKS.md.
                let result = self.retried(path, &format!("iperf3 -P {streams}"), || {
                    let server = self.iperf_server(place.server, IPERF_PORT)?;
                    let measured = self.iperf_client(
                        path,
                        false,
                        IPERF_PORT,
                        streams,
                        plan.seconds,
                        server.pid(),
                        perf,
                    );
                    server.stop();
                    measured
                });
                match result {
                    Ok((gbps, rss)) => {
                        report.set(metric, path, Ok(gbps));
                        rss_max = rss_max.max(rss);
                    }
                    Err(e) => report.set(metric, path, Err(e)),
                }
            }
            if path == Path::Ztrun {
                let rss = if rss_max > 0 {
                    Ok(rss_max as f64 / 1024.0)
                } else {
                    Err(anyhow::anyhow!("no sample taken (iperf3 failed)"))
                };
                report.set(Metric::RssLoad, path, rss);
            }
        }
        Ok(())
    }

    fn iperf_server(&self, on: On<'_>, port: u16) -> anyhow::Result<Server> {
        self.start_server(
            &format!("iperf3-{port}-{}", on.tag()),
            on,
            "iperf3",
            ["-s", "-1", "-p", &port.to_string(), "--forceflush"],
            "Server listening",
        )
    }

    /// One iperf3 TCP run; returns Gbit/s received and the largest RSS (KiB) of the
    /// `ztrun` processes of both ends (0 on native paths).
    #[allow(clippy::too_many_arguments)]
    fn iperf_client(
        &self,
        path: Path,
        second: bool,
        port: u16,
        streams: u32,
        seconds: f64,
        server_pid: u32,
        perf: Option<&FsPath>,
    ) -> anyhow::Result<(f64, u64)> {
        let place = self.placement(path, second);
        let addr = place.addr.to_string();
        let secs = format!("{}", seconds.ceil().max(1.0) as u64);
        let cmd = self.command(
            place.client_host,
            place.client,
            "iperf3",
            [
                "-c",
                &addr,
                "-p",
                &port.to_string(),
                "-t",
                &secs,
                "-P",
                &streams.to_string(),
                "-J",
                "--connect-timeout",
                "10000",
            ],
        );
        let wrapped = path == Path::Ztrun;
        let watch: &[u32] = if wrapped { &[server_pid] } else { &[] };
        let mut profiler: Option<Child> = None;
        let mut on_start = |client_pid: u32| {
            if let Some(dir) = perf {
                profiler = start_perf(
                    dir,
                    &[server_pid, client_pid],
                    seconds,
                    self.options.verbose,
                );
            }
        };
        let done = self.run_client(
            &format!("iperf3 -P {streams}"),
            cmd,
            Duration::from_secs_f64(seconds + 40.0),
            watch,
            wrapped,
            &mut on_start,
        );
        if let Some(mut p) = profiler {
            let _ = wait_with_deadline(&mut p, Duration::from_secs(60));
        }
        let done = done?;
        let json: serde_json::Value = serde_json::from_str(&done.stdout)
            .with_context(|| format!("iperf3's JSON report: {}", tail(&done.stdout)))?;
        if let Some(error) = json.get("error").and_then(|e| e.as_str()) {
            bail!("iperf3: {error}");
        }
        let bps = json
            .pointer("/end/sum_received/bits_per_second")
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| {
                anyhow::anyhow!("no end.sum_received.bits_per_second in iperf3's report")
            })?;
        Ok((bps / 1e9, done.rss_kb.iter().copied().max().unwrap_or(0)))
    }

    /// redis-benchmark SET and GET (10 clients) on each path.
    fn phase_redis(&self, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
        let redis_dir = self.state.path().join("redis");
        for path in Path::ALL {
            let place = self.placement(path, false);
            let server = self.start_server(
                &format!("redis-{}", place.server.tag()),
                place.server,
                "redis-server",
                [
                    "--port",
                    &REDIS_PORT.to_string(),
                    "--bind",
                    "0.0.0.0",
                    "--protected-mode",
                    "no",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    &redis_dir.to_string_lossy(),
                ],
                "Ready to accept connections",
            );
            let server = match server {
                Ok(s) => s,
                Err(e) => {
                    report.fail_all(&[Metric::RedisSet, Metric::RedisGet], path, &e);
                    continue;
                }
            };
            let cmd = || {
                self.command(
                    place.client_host,
                    place.client,
                    "redis-benchmark",
                    [
                        "-h",
                        &place.addr.to_string(),
                        "-p",
                        &REDIS_PORT.to_string(),
                        "-t",
                        "set,get",
                        "-n",
                        &plan.redis_requests.to_string(),
                        "-c",
                        "10",
                        "--csv",
                    ],
                )
            };
            match self.retried(path, "redis-benchmark", || {
                self.run_client(
                    "redis-benchmark",
                    cmd(),
                    Duration::from_secs(180),
                    &[],
                    false,
                    &mut |_| {},
                )
            }) {
                Ok(done) => {
                    report.set(Metric::RedisSet, path, redis_rps(&done.stdout, "SET"));
                    report.set(Metric::RedisGet, path, redis_rps(&done.stdout, "GET"));
                }
                Err(e) => report.fail_all(&[Metric::RedisSet, Metric::RedisGet], path, &e),
            }
            server.stop();
        }
        Ok(())
    }

    /// A CPU-bound Python program (SHA-256 over 1 MiB, repeated) on host 2, natively and
    /// under `ztrun`, alternating; the program times its own loop. Median of the repeats.
    fn phase_cpu(&self, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
        // Calibrate the loop count so a native run takes about `cpu_seconds`.
        let per_round = self.cpu_run(On::Native, 20)?.0 / 20.0;
        let rounds = ((plan.cpu_seconds / per_round.max(1e-6)) as u64).clamp(10, 100_000);
        self.say(format!("CPU: {rounds} rounds of {:.2} ms", per_round * 1e3));
        let (mut native, mut wrapped) = (Vec::new(), Vec::new());
        let mut wrapped_error = None;
        for _ in 0..plan.cpu_repeats {
            native.push(self.cpu_run(On::Native, rounds)?);
            match self.retried(Path::Ztrun, "CPU-bound program", || {
                self.cpu_run(On::Ztrun(self.client_home()), rounds)
            }) {
                Ok(t) => wrapped.push(t),
                Err(e) => wrapped_error = Some(format!("{e:#}")),
            }
        }
        self.say(format!(
            "CPU (wall, cpu) native {native:?}, ztrun {wrapped:?}"
        ));
        let pick = |runs: &[(f64, f64)], wall: bool| {
            let values: Vec<f64> = runs.iter().map(|r| if wall { r.0 } else { r.1 }).collect();
            median(&values).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}",
                    wrapped_error.clone().unwrap_or_else(|| "no run".into())
                )
            })
        };
        report.set(Metric::CpuTime, Path::Veth, pick(&native, true));
        report.set(Metric::CpuProcess, Path::Veth, pick(&native, false));
        report.set(Metric::CpuTime, Path::Ztrun, pick(&wrapped, true));
        report.set(Metric::CpuProcess, Path::Ztrun, pick(&wrapped, false));
        Ok(())
    }

    /// Wall and CPU seconds the CPU-bound loop of `rounds` took, as the program measured.
    fn cpu_run(&self, on: On<'_>, rounds: u64) -> anyhow::Result<(f64, f64)> {
        let program = format!(
            "import hashlib, time\n\
             b = bytes(1 << 20)\n\
             t, c = time.perf_counter(), time.process_time()\n\
             for _ in range({rounds}):\n    hashlib.sha256(b).digest()\n\
             print(time.perf_counter() - t, time.process_time() - c)\n"
        );
        let cmd = self.command(self.host2, on, "/usr/bin/python3", ["-c", &program]);
        let done = self.run_client(
            "python3",
            cmd,
            Duration::from_secs(120),
            &[],
            false,
            &mut |_| {},
        )?;
        parse_two_seconds(&done.stdout)
    }

    /// `conns` connections held between two programs, and one bulk flow alongside, on
    /// (b) and (c).
    fn phase_hold(&self, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
        for path in [Path::Veth, Path::Ztrun] {
            match self.retried(path, "many connections", || self.hold_on(path, plan)) {
                Ok(values) => {
                    for (metric, value) in values {
                        report.set(metric, path, value);
                    }
                    if path == Path::Ztrun {
                        // Memory per idle held connection: the larger side once they have
                        // sat idle (before the bulk flow, whose buffers are not theirs),
                        // over an idle ztrun's RSS.
                        let per = report
                            .value(Metric::RssHeldIdle, path)
                            .zip(report.value(Metric::RssIdle, path))
                            .zip(report.value(Metric::Held, path))
                            .map(|((held, idle), n)| (held - idle) * 1024.0 / n.max(1.0))
                            .ok_or_else(|| anyhow::anyhow!("no RSS with and without them"));
                        report.set(Metric::IdleConnsKib, path, per);
                    }
                }
                Err(e) => {
                    report.fail_all(&[Metric::Held, Metric::BulkAlongside], path, &e);
                    if path == Path::Ztrun {
                        report.fail_all(
                            &[
                                Metric::RssHeldServer,
                                Metric::RssHeldClient,
                                Metric::RssHeldIdle,
                            ],
                            path,
                            &e,
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn hold_on(
        &self,
        path: Path,
        plan: &Plan,
    ) -> anyhow::Result<Vec<(Metric, anyhow::Result<f64>)>> {
        let mut values = Vec::new();
        let place = self.placement(path, false);
        let bulk = self.placement(path, true);
        let rr = self.rr_server(place.server, HOLD_RR_PORT)?;
        let iperf = self.iperf_server(bulk.server, HOLD_IPERF_PORT)?;

        // The holding client, with a pipe on stdin: closing it ends the hold.
        let argv = [
            "rr-client".to_string(),
            "--connect".into(),
            SocketAddr::new(place.addr, HOLD_RR_PORT).to_string(),
            "--mode".into(),
            "hold".into(),
            "--conns".into(),
            plan.conns.to_string(),
            "--seconds".into(),
            plan.hold_seconds.to_string(),
        ];
        let mut cmd = self.command(place.client_host, place.client, &self.exe, &argv);
        let out_path = self
            .state
            .path()
            .join(format!("hold-{}.out", place.client.tag()));
        let out = File::create(&out_path)?;
        let err = File::create(out_path.with_extension("err"))?;
        cmd.stdin(Stdio::piped()).stdout(out).stderr(err);
        let started = Instant::now();
        let mut holder = cmd.spawn().context("starting the holding rr-client")?;
        let holder_pid = holder.id();
        let deadline = started + Duration::from_secs_f64(plan.hold_seconds + 10.0);
        let opened = loop {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("\"hold-open\"")) {
                break serde_json::from_str::<serde_json::Value>(line)?;
            }
            if let Some(status) = holder.try_wait()? {
                let err =
                    std::fs::read_to_string(out_path.with_extension("err")).unwrap_or_default();
                bail!(
                    "the holding client exited ({status}) before holding: {}",
                    tail(&err)
                );
            }
            if Instant::now() > deadline {
                let _ = holder.kill();
                bail!(
                    "the holding client did not report within {:.0} s",
                    plan.hold_seconds + 10.0
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let held_open = json_f64(&opened, "held").unwrap_or(0.0);
        self.say(format!(
            "{path:?}: {held_open} connections open in {:.1} s",
            json_f64(&opened, "seconds").unwrap_or(0.0)
        ));
        let (rss_server, rss_client) = (vm_rss_kb(rr.pid()), vm_rss_kb(holder_pid));
        if path == Path::Ztrun {
            // Both ztruns while the connections sit idle.
            let window = Duration::from_secs_f64(plan.idle_window);
            std::thread::sleep(Duration::from_secs(2));
            let before = (cpu_ticks(rr.pid()), cpu_ticks(holder_pid));
            std::thread::sleep(window);
            let after = (cpu_ticks(rr.pid()), cpu_ticks(holder_pid));
            let cpu = match (before, after) {
                ((Some(a), Some(b)), (Some(c), Some(d))) => Ok(ticks_percent(
                    c.saturating_sub(a).max(d.saturating_sub(b)),
                    window,
                )),
                _ => Err(anyhow::anyhow!("no /proc/PID/stat of a ztrun")),
            };
            values.push((Metric::IdleConnsCpu, cpu));
            let idle = vm_rss_kb(rr.pid())
                .zip(vm_rss_kb(holder_pid))
                .map(|(a, b)| a.max(b) as f64 / 1024.0)
                .ok_or_else(|| anyhow::anyhow!("no VmRSS sample"));
            values.push((Metric::RssHeldIdle, idle));
        }
        let bulk_result = self.iperf_client(
            path,
            true,
            HOLD_IPERF_PORT,
            1,
            plan.seconds,
            iperf.pid(),
            None,
        );
        let (rss_server2, rss_client2) = (vm_rss_kb(rr.pid()), vm_rss_kb(holder_pid));
        drop(holder.stdin.take());
        let status = wait_with_deadline(&mut holder, Duration::from_secs(120))?;
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        let last = text
            .lines()
            .rev()
            .find(|l| l.contains("\"mode\":\"hold\""))
            .ok_or_else(|| anyhow::anyhow!("the holding client ({status:?}) printed no result"))?;
        let result: serde_json::Value = serde_json::from_str(last)?;
        let alive = json_f64(&result, "alive_after")?;
        let errors = result["errors"].to_string();
        values.push((Metric::Held, Ok(alive)));
        if alive < plan.conns as f64 {
            self.notes.borrow_mut().push(format!(
                "{}: {alive} of {} connections alive after the bulk flow ({held_open} opened; errors {errors})",
                path.label(),
                plan.conns
            ));
        }
        values.push((Metric::BulkAlongside, bulk_result.map(|(gbps, _)| gbps)));
        if path == Path::Ztrun {
            let mb = |a: Option<u64>, b: Option<u64>| {
                a.max(b)
                    .map(|kb| kb as f64 / 1024.0)
                    .ok_or_else(|| anyhow::anyhow!("no VmRSS sample"))
            };
            values.push((Metric::RssHeldServer, mb(rss_server, rss_server2)));
            values.push((Metric::RssHeldClient, mb(rss_client, rss_client2)));
        }
        iperf.stop();
        rr.stop();
        Ok(values)
    }
}

impl Lab<'_> {
    /// Idle sockets and the loopback connect loop (issue 15).
    fn phase_scale(&self, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
        use sockets::SocketKind;
        // Each idle socket costs ztrun up to two descriptors (a wildcard listener: our
        // end and its loopback half): stay under the run's limit.
        let count = plan
            .idle_sockets
            .min((report.nofile as usize).saturating_sub(2_000) / 2)
            .max(1);
        if count < plan.idle_sockets {
            self.notes.borrow_mut().push(format!(
                "idle sockets: {count} of each kind, not {}: the descriptor limit is {}",
                plan.idle_sockets, report.nofile
            ));
        }
        for (kind, metrics) in [
            (
                SocketKind::Listeners,
                [
                    Metric::IdleListenersCpu,
                    Metric::IdleListenersKib,
                    Metric::IdleListenersFds,
                ],
            ),
            (
                SocketKind::Udp,
                [Metric::IdleUdpCpu, Metric::IdleUdpKib, Metric::IdleUdpFds],
            ),
        ] {
            match self.idle_sockets(kind, count, plan) {
                Ok(values) => {
                    for (metric, value) in metrics.into_iter().zip(values) {
                        report.set(metric, Path::Ztrun, Ok(value));
                    }
                }
                Err(e) => report.fail_all(&metrics, Path::Ztrun, &e),
            }
        }
        for (path, on) in [
            (Path::Loopback, On::Native),
            (Path::Ztrun, On::Ztrun(&self.homes.server)),
        ] {
            let argv = [
                "connect-loop".to_string(),
                "--count".into(),
                plan.loop_cycles.to_string(),
                "--seconds".into(),
                "120".into(),
            ];
            let cmd = self.command(self.host1, on, &self.exe, &argv);
            let result = self
                .run_client(
                    "connect-loop",
                    cmd,
                    Duration::from_secs(150),
                    &[],
                    false,
                    &mut |_| {},
                )
                .and_then(|done| last_json_line(&done.stdout));
            match result {
                Ok(json) => {
                    if let Some(e) = json["error"].as_str() {
                        self.notes
                            .borrow_mut()
                            .push(format!("connect loop on {}: {e}", path.label()));
                    }
                    report.set(Metric::LoopCycles, path, json_f64(&json, "cycles"));
                    report.set(Metric::LoopRate, path, json_f64(&json, "rate"));
                }
                Err(e) => report.fail_all(&[Metric::LoopCycles, Metric::LoopRate], path, &e),
            }
        }
        Ok(())
    }

    /// `count` idle sockets of `kind` in one program under ztrun on host 1: ztrun's CPU
    /// (% of a core), and its memory (KiB) and descriptors per socket.
    fn idle_sockets(
        &self,
        kind: sockets::SocketKind,
        count: usize,
        plan: &Plan,
    ) -> anyhow::Result<[f64; 3]> {
        use std::io::{BufRead as _, Write as _};
        let kind_arg = match kind {
            sockets::SocketKind::Listeners => "listeners",
            sockets::SocketKind::Udp => "udp",
        };
        let argv = [
            "hold-sockets".to_string(),
            "--kind".into(),
            kind_arg.into(),
            "--count".into(),
            count.to_string(),
            "--seconds".into(),
            "300".into(),
        ];
        let mut cmd = self.command(self.host1, On::Ztrun(&self.homes.server), &self.exe, &argv);
        let err_log = self.state.path().join(format!("idle-{kind_arg}.err"));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&err_log)?);
        let mut child = cmd.spawn().context("starting hold-sockets")?;
        let pid = child.id();
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let outcome = (|| -> anyhow::Result<[f64; 3]> {
            let wait = |prefix: &str, limit: Duration| -> anyhow::Result<()> {
                let deadline = Instant::now() + limit;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(line) if line.starts_with(prefix) => return Ok(()),
                        Ok(_) => {}
                        Err(_) => bail!(
                            "hold-sockets said no {prefix:?} within {} s: {}",
                            limit.as_secs(),
                            tail(&std::fs::read_to_string(&err_log).unwrap_or_default())
                        ),
                    }
                }
            };
            wait("base", Duration::from_secs(60))?;
            std::thread::sleep(Duration::from_millis(500));
            let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as f64);
            let (rss0, fds0) = (vm_rss_kb(pid), fds()?);
            writeln!(child.stdin.as_mut().context("no stdin")?, "go")?;
            wait("ready", Duration::from_secs(240))?;
            std::thread::sleep(Duration::from_secs(2));
            let window = Duration::from_secs_f64(plan.idle_window);
            let t0 = cpu_ticks(pid);
            std::thread::sleep(window);
            let t1 = cpu_ticks(pid);
            let (rss1, fds1) = (vm_rss_kb(pid), fds()?);
            let cpu = match (t0, t1) {
                (Some(a), Some(b)) => ticks_percent(b.saturating_sub(a), window),
                _ => bail!("no /proc/{pid}/stat"),
            };
            let (Some(rss0), Some(rss1)) = (rss0, rss1) else {
                bail!("no VmRSS of ztrun {pid}");
            };
            let n = count as f64;
            Ok([cpu, rss1.saturating_sub(rss0) as f64 / n, (fds1 - fds0) / n])
        })();
        drop(child.stdin.take());
        if wait_with_deadline(&mut child, Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        outcome
    }
}

/// What both `ztrun`s of a measurement cost: the server's from `before` to `after`, and
/// the client's whole life (it ran for the measurement alone).
fn both_sides(
    before: Option<ZtrunStats>,
    after: Option<ZtrunStats>,
    client: Option<ZtrunStats>,
) -> Option<ZtrunStats> {
    Some(after?.minus(before?).plus(client?))
}

/// One phase of the run: a group of measurements on every path.
type Phase<'l, 'n> = fn(&'l Lab<'n>, &Plan, &mut Report) -> anyhow::Result<()>;

/// Where one path's programs run.
struct Placement<'h, 'n> {
    server: On<'h>,
    client: On<'h>,
    client_host: Host<'n>,
    addr: IpAddr,
}

impl On<'_> {
    fn tag(&self) -> &'static str {
        match self {
            On::Native => "native",
            On::Ztrun(_) => "ztrun",
        }
    }
}
