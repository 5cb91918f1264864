//! `compat-tests flood`: does the overlay stay open while a node and its root are flooded
//! with handshake-shaped junk (issue 13 point 7)?
//!
//! ```text
//! cargo run --release -p compat-tests -- flood [--rates 10000,100000] [--seconds 10]
//! ```
//!
//! # What runs where
//!
//! One [`TestNet`] with one LAN (198.18.1.0/24) and four hosts, every program as uid
//! 65534 except the flooder (a thread of this process inside its host):
//!
//! * **root**: `zt root`, flooded;
//! * **node**: the flooded node, a `ztrun` running `rr-server` (the echo server);
//! * **joiner**: a `ztrun` that holds a session with the node from before any flood and
//!   sends one echo request every 10 ms for the whole run (`rr-client --mode series`), and,
//!   once per phase, a *new* node (a `ztrun` with a fresh identity) that must register with
//!   the root, learn the node's identity, handshake with it and get an echo back
//!   (`rr-client --mode first`);
//! * **flooder**: one UDP socket that sends HANDSHAKE_INITs to the node's and the root's
//!   UDP endpoints at the phase's rate *each*, for the phase's duration, cycling through
//!   1024 prepared packets per target. Two kinds of junk ([`Junk`]): **random** (a valid
//!   header with the target's node address and a random source address, then 233 random
//!   bytes, the size of a real initiation: it costs an unprotected responder one X25519
//!   operation before Noise rejects it) and **identities** (a real Noise IK message 1 to the
//!   target's static key from a fresh key pair, whose payload is a junk identity: it costs
//!   an unprotected responder the whole handshake and an identity verification, which
//!   fails). Every send loop is bounded in count and time.
//!
//! Phases: idle, then one per rate and kind. In each, the new node starts one second into the flood;
//! its time from spawning `ztrun` to the first echo is the join time. The echo round trip
//! of the existing session is the median of the joiner's one-second summaries that ended
//! while the flood ran (after its first second). Between phases the run waits a few
//! seconds, so that the responders' "under load" state from one phase has expired before
//! the next.

use std::fs::File;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path as FsPath, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use compat_tests::matrix::{ZtrunBinaries, ZtrunWrap, NWID};
use compat_tests::testnet::{Host, TestNet};

use super::parse::{first_reply_ms, last_json_line, median};
use super::process::{chown_nobody, cpu_ticks, describe, tail, ticks_percent, Server};

/// How to run the flood measurement.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Where `ztrun` and `zt` are.
    pub(crate) binaries: ZtrunBinaries,
    /// Junk initiations per second sent to each target, one phase per rate and kind.
    pub(crate) rates: Vec<u32>,
    /// The kinds of junk.
    pub(crate) kinds: Vec<Junk>,
    /// How long each flood lasts.
    pub(crate) seconds: f64,
    /// Keep the state directory (logs, homes).
    pub(crate) keep: bool,
    /// Print each step.
    pub(crate) verbose: bool,
}

/// The TCP port of the echo server on the virtual network.
const ECHO_PORT: u16 = 7000;
/// The UDP port of the root.
const ROOT_PORT: u16 = ZtrunWrap::ROOT_PORT;
/// Length of a junk initiation: header (14), sender index (4), Noise message 1 with the
/// 133-byte identity (32 + 48 + 149).
const JUNK_LEN: usize = 14 + 4 + 32 + 48 + 133 + 16;
/// The largest rate a phase may ask for (each target).
const MAX_RATE: u32 = 1_000_000;

/// What the flooder sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Junk {
    /// A valid header and random bytes as body.
    Random,
    /// Valid Noise IK message 1s carrying junk identities.
    Identities,
}

impl Junk {
    fn label(self) -> &'static str {
        match self {
            Junk::Random => "random bytes",
            Junk::Identities => "Noise-valid, junk identity",
        }
    }
}

/// One phase's figures.
#[derive(Debug, Clone)]
pub(crate) struct Phase {
    /// Junk initiations per second asked for, each target (0: idle).
    pub(crate) rate: u32,
    /// What was sent.
    pub(crate) kind: Option<Junk>,
    /// Junk datagrams sent to both targets, and over how long.
    pub(crate) sent: u64,
    pub(crate) flood_seconds: f64,
    /// Spawn of a new node's `ztrun` to its first echo from the flooded node.
    pub(crate) join_ms: Result<f64, String>,
    /// Echo round trips of the existing session during the phase: median of the
    /// one-second p50s and the largest one-second p99 (ms), and how many echoes came back.
    pub(crate) echo_p50_ms: Option<f64>,
    pub(crate) echo_p99_ms: Option<f64>,
    pub(crate) echoes: u64,
    /// CPU use of the flooded node's `ztrun` during the phase (percent of one core).
    pub(crate) node_cpu: Option<f64>,
    /// What the flooded node reported doing with initiations during the phase (from its
    /// status.json): received, answered with crypto, answered with a cookie only.
    pub(crate) handshakes: Option<(u64, u64, u64)>,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) phases: Vec<Phase>,
    /// Problems met on the way (a failed step of the existing session, ...).
    pub(crate) notes: Vec<String>,
}

/// A target of the flood: a UDP endpoint, the node address junk is addressed to and the
/// node's X25519 public key (its Noise static key).
#[derive(Debug, Clone, Copy)]
struct Target {
    udp: SocketAddr,
    address: [u8; 5],
    x25519: [u8; 32],
}

/// Runs the measurement; see the module documentation.
pub(crate) fn run(options: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "compat-tests flood makes network namespaces and must run as root"
    );
    for &rate in &options.rates {
        anyhow::ensure!(
            (1..=MAX_RATE).contains(&rate),
            "rate {rate} is outside 1..={MAX_RATE}"
        );
    }
    anyhow::ensure!(
        (1.0..=120.0).contains(&options.seconds),
        "--seconds must be within 1..=120"
    );
    let ztrun = options.binaries.ztrun_path()?;
    let zt = options.binaries.zt_path()?;
    let net = TestNet::new().context("creating the test network")?;
    let lan = net.lan("lan", "198.18.1.0/24")?;
    let root = net.host("root")?;
    let node = net.host("node")?;
    let joiner = net.host("joiner")?;
    let flooder = net.host("flooder")?;
    let root_ip = root.attach(&lan)?.addr;
    node.attach(&lan)?;
    joiner.attach(&lan)?;
    flooder.attach(&lan)?;

    let state = tempfile::Builder::new()
        .prefix("ztflood-")
        .tempdir()
        .context("creating the state directory")?;
    let home = |name: &str| -> anyhow::Result<PathBuf> {
        let dir = state.path().join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        chown_nobody(&dir)?;
        Ok(dir)
    };
    chown_nobody(state.path())?;
    let node_home = home("node")?;
    let steady_home = home("steady")?;
    let wrap = ZtrunWrap {
        ztrun,
        nwid: NWID.into(),
        root: SocketAddr::new(root_ip.into(), ROOT_PORT),
    };
    let addrs = wrap
        .join_overlay(
            &root,
            state.path(),
            &[(node, node_home.as_path()), (joiner, steady_home.as_path())],
            &zt,
        )
        .context("setting up the overlay")?;
    let node_virt = addrs[0].0;
    let echo = SocketAddr::new(node_virt, ECHO_PORT);
    let say = |s: String| {
        if options.verbose {
            eprintln!("flood: {s}");
        }
    };
    let (root_address, root_key) = public_identity(
        &std::fs::read_to_string(state.path().join("root.out")).context("reading root.out")?,
    )?;

    let exe = std::env::current_exe().context("finding this binary")?;
    let wrapped = |host: Host<'_>, home: &FsPath, args: &[String]| -> Command {
        let mut argv: Vec<std::ffi::OsString> = vec![
            wrap.ztrun.clone().into(),
            // The node in the measured process.
            "--own-node".into(),
            "--nwid".into(),
            wrap.nwid.clone().into(),
            "--home".into(),
            home.into(),
            "--root".into(),
            wrap.root.to_string().into(),
            "--".into(),
            exe.clone().into(),
        ];
        argv.extend(args.iter().map(Into::into));
        let mut cmd = host.command_as_user(&argv[0]);
        cmd.args(&argv[1..]);
        say(format!("$ {}", describe(&cmd)));
        cmd
    };
    let start = |name: &str, cmd: Command| -> anyhow::Result<Server> {
        let mut cmd = cmd;
        let log = state.path().join(format!("{name}.log"));
        let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {}", describe(&cmd)))?;
        Ok(Server {
            name: name.into(),
            child,
            log,
            stats: None,
        })
    };

    // The flooded node: the echo server under ztrun.
    let server = start(
        "node",
        wrapped(
            node,
            &node_home,
            &[
                "rr-server".into(),
                "--listen".into(),
                format!("0.0.0.0:{ECHO_PORT}"),
            ],
        ),
    )?;
    wait_for(&server, "rr-server: listening", Duration::from_secs(30))?;
    let (node_address, node_udp) = node_endpoint(&node_home, Duration::from_secs(30))?;
    let (_, node_key) = public_identity(
        &std::fs::read_to_string(node_home.join("identity.public"))
            .context("reading the node's identity.public")?,
    )?;
    say(format!(
        "node {} at {node_udp}, root {} at {}",
        hex(&node_address),
        hex(&root_address),
        wrap.root
    ));
    let targets = [
        Target {
            udp: node_udp,
            address: node_address,
            x25519: node_key,
        },
        Target {
            udp: wrap.root,
            address: root_address,
            x25519: root_key,
        },
    ];

    // The existing session: one echo every 10 ms for the whole run.
    let phases: Vec<(u32, Junk)> = options
        .kinds
        .iter()
        .flat_map(|k| options.rates.iter().map(move |r| (*r, *k)))
        .collect();
    let total = 20.0 + (options.seconds + 8.0) * phases.len() as f64;
    let steady = start(
        "steady",
        wrapped(
            joiner,
            &steady_home,
            &[
                "rr-client".into(),
                "--connect".into(),
                echo.to_string(),
                "--mode".into(),
                "series".into(),
                "--seconds".into(),
                format!("{total}"),
                "--interval-ms".into(),
                "10".into(),
            ],
        ),
    )?;
    wait_for(&steady, "\"mode\":\"second\"", Duration::from_secs(30))?;

    let mut report = Report {
        phases: Vec::new(),
        notes: Vec::new(),
    };
    let new_node = |tag: &str| -> Result<f64, String> {
        let home = home(&format!("new-{tag}")).map_err(|e| format!("{e:#}"))?;
        let cmd = wrapped(
            joiner,
            &home,
            &[
                "rr-client".into(),
                "--connect".into(),
                echo.to_string(),
                "--mode".into(),
                "first".into(),
                "--seconds".into(),
                "20".into(),
            ],
        );
        run_first(cmd).map_err(|e| format!("{e:#}"))
    };

    // Idle.
    std::thread::sleep(Duration::from_secs(2));
    let t0 = unix_ns();
    let ticks0 = cpu_ticks(server.pid());
    let c0 = Instant::now();
    let join_ms = new_node("idle");
    std::thread::sleep(Duration::from_secs(3).saturating_sub(c0.elapsed()));
    let idle_window = c0.elapsed();
    let node_cpu = cpu_percent(ticks0, cpu_ticks(server.pid()), idle_window);
    let (echo_p50_ms, echo_p99_ms, echoes) = echo_between(&steady, t0, unix_ns());
    say(format!(
        "idle: join {join_ms:?} ms, echo p50 {echo_p50_ms:?} ms"
    ));
    report.phases.push(Phase {
        rate: 0,
        kind: None,
        sent: 0,
        flood_seconds: 0.0,
        join_ms,
        echo_p50_ms,
        echo_p99_ms,
        echoes,
        node_cpu,
        handshakes: None,
    });

    for (rate, kind) in phases {
        let before = handshakes(&node_home);
        let duration = Duration::from_secs_f64(options.seconds);
        let flood = flooder
            .spawn(move || send_junk(&targets, kind, rate, duration))
            .context("starting the flooder")?;
        let flood_start = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        let t_a = unix_ns();
        let ticks_a = cpu_ticks(server.pid());
        let c_a = Instant::now();
        let join_ms = new_node(&format!("{rate}-{kind:?}"));
        let (sent, flood_seconds) = match flood.join() {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => bail!("the flooder failed: {e:#}"),
            Err(_) => bail!("the flooder panicked"),
        };
        let t_b = unix_ns();
        let node_cpu = cpu_percent(ticks_a, cpu_ticks(server.pid()), c_a.elapsed());
        // status.json is rewritten every second.
        std::thread::sleep(Duration::from_millis(1500));
        let after = handshakes(&node_home);
        let handshakes = before.zip(after).map(|(b, a)| {
            (
                a.0.saturating_sub(b.0),
                a.1.saturating_sub(b.1),
                a.2.saturating_sub(b.2),
            )
        });
        let (echo_p50_ms, echo_p99_ms, echoes) = echo_between(&steady, t_a, t_b);
        say(format!(
            "{rate}/s {kind:?}: sent {sent} in {flood_seconds:.1} s ({:.1} s after start), join \
             {join_ms:?} ms, echo p50 {echo_p50_ms:?} ms, node CPU {node_cpu:?} %",
            flood_start.elapsed().as_secs_f64()
        ));
        report.phases.push(Phase {
            rate,
            kind: Some(kind),
            sent,
            flood_seconds,
            join_ms,
            echo_p50_ms,
            echo_p99_ms,
            echoes,
            node_cpu,
            handshakes,
        });
        // Let the responders leave their "under load" state before the next phase.
        std::thread::sleep(Duration::from_millis(2500));
    }

    let steady_out = steady.output();
    if let Some(err) = steady_out.lines().find(|l| l.contains("rr-client:")) {
        report
            .notes
            .push(format!("the existing session's client failed: {err}"));
    }
    drop(steady);
    drop(server);
    if options.keep {
        let kept = state.keep();
        eprintln!("flood: kept {}", kept.display());
    }
    net.teardown().context("tearing down the test network")?;
    Ok(report)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn cpu_percent(before: Option<u64>, after: Option<u64>, window: Duration) -> Option<f64> {
    Some(ticks_percent(after?.saturating_sub(before?), window))
}

fn wait_for(server: &Server, text: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let out = server.output();
        if out.contains(text) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} printed no {text:?} within {limit:?}: {}",
                server.name,
                tail(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address and X25519 key of a public identity's text form
/// (`ADDRESS:1:X25519ED25519:SIGNATURE`, docs/PROTOCOL.md section 1), the first line of
/// `text` that is one.
fn public_identity(text: &str) -> anyhow::Result<([u8; 5], [u8; 32])> {
    for line in text.lines() {
        let fields: Vec<&str> = line.trim().split(':').collect();
        if fields.len() < 4 || fields[1] != "1" || fields[2].len() != 128 {
            continue;
        }
        let address = parse_address(fields[0])?;
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(&fields[2][2 * i..2 * i + 2], 16)
                .with_context(|| format!("{line:?} is not an identity"))?;
        }
        return Ok((address, key));
    }
    bail!("no public identity in {:?}", tail(text))
}

fn parse_address(text: &str) -> anyhow::Result<[u8; 5]> {
    anyhow::ensure!(text.len() == 10, "{text:?} is not a node address");
    let mut a = [0u8; 5];
    for (i, b) in a.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .with_context(|| format!("{text:?} is not a node address"))?;
    }
    Ok(a)
}

/// The flooded node's address and UDP endpoint, from its `status.json` (the endpoint the
/// root observed: on one LAN, the node's own).
fn node_endpoint(home: &FsPath, limit: Duration) -> anyhow::Result<([u8; 5], SocketAddr)> {
    let path = home.join("status.json");
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) {
            let address = json.get("address").and_then(serde_json::Value::as_str);
            let observed = json
                .get("observed")
                .and_then(serde_json::Value::as_str)
                .and_then(|s| s.parse::<SocketAddr>().ok());
            if let (Some(a), Some(ep)) = (address, observed) {
                return Ok((parse_address(a)?, ep));
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{} shows no address and observed endpoint within {limit:?}: {text}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The flooded node's handshake counters from its status.json (received, answered with
/// crypto, answered with a cookie), if its `ztrun` reports them.
fn handshakes(home: &FsPath) -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string(home.join("status.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let h = json.get("handshakes")?;
    let n = |k: &str| h.get(k).and_then(serde_json::Value::as_u64);
    Some((n("initiations")?, n("admitted")?, n("cookies")?))
}

/// Runs a `first` client to completion (at most 40 s) and returns the milliseconds from
/// spawning it to its first answered request.
fn run_first(mut cmd: Command) -> anyhow::Result<f64> {
    let (mut out, mut err) = (tempfile::tempfile()?, tempfile::tempfile()?);
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(err.try_clone()?);
    let spawned_at = SystemTime::now();
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", describe(&cmd)))?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(40) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the new node got no echo within 40 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = super::process::read_all(&mut out);
    let stderr = super::process::read_all(&mut err);
    if !status.success() {
        bail!("the new node failed ({status}): {}", tail(&stderr));
    }
    let json = last_json_line(&stdout)?;
    first_reply_ms(&json, spawned_at)
}

/// The existing session's echoes whose one-second summary ended within `from..to` (unix
/// ns), skipping the first second: median of the p50s, largest p99 (ms), echo count.
fn echo_between(steady: &Server, from: u128, to: u128) -> (Option<f64>, Option<f64>, u64) {
    let mut p50s = Vec::new();
    let mut p99 = None::<f64>;
    let mut count = 0u64;
    for line in steady.output().lines() {
        let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let end: Option<u128> = json
            .get("end_unix_ns")
            .and_then(serde_json::Value::as_str)
            .and_then(|s| s.parse().ok());
        let Some(end) = end else { continue };
        if end <= from + 1_000_000_000 || end > to {
            continue;
        }
        let n = json.get("count").and_then(serde_json::Value::as_u64);
        count += n.unwrap_or(0);
        if n.unwrap_or(0) == 0 {
            continue;
        }
        if let Some(p) = json.get("p50_us").and_then(serde_json::Value::as_f64) {
            p50s.push(p / 1000.0);
        }
        if let Some(p) = json.get("p99_us").and_then(serde_json::Value::as_f64) {
            p99 = Some(p99.map_or(p / 1000.0, |x: f64| x.max(p / 1000.0)));
        }
    }
    (median(&p50s), p99, count)
}

/// xorshift64*: junk needs no better randomness.
fn next_u64(rng: &mut u64) -> u64 {
    *rng ^= *rng >> 12;
    *rng ^= *rng << 25;
    *rng ^= *rng >> 27;
    rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// A junk HANDSHAKE_INIT for `target`: a valid header (version 1, type 1, the target's
/// node address, a random valid source address), then a random sender index and, as the
/// Noise message, random bytes ([`Junk::Random`]) or a valid message 1 to the target's key
/// whose payload is a junk identity ([`Junk::Identities`]).
fn junk(target: &Target, kind: Junk, rng: &mut u64) -> anyhow::Result<Vec<u8>> {
    let mut p = Vec::with_capacity(JUNK_LEN);
    p.extend_from_slice(&[1, 1, 0, 0]);
    p.extend_from_slice(&target.address);
    let src = next_u64(rng).to_be_bytes();
    // Not 0x00 or 0xff in the first byte: those addresses are reserved and dropped early.
    p.push(src[0].clamp(1, 0xfe));
    p.extend_from_slice(&src[1..5]);
    p.extend_from_slice(&next_u64(rng).to_be_bytes()[..4]);
    match kind {
        Junk::Random => {
            while p.len() < JUNK_LEN {
                p.extend_from_slice(&next_u64(rng).to_be_bytes());
            }
            p.truncate(JUNK_LEN);
        }
        Junk::Identities => {
            let params: snow::params::NoiseParams = "Noise_IK_25519_ChaChaPoly_BLAKE2s"
                .parse()
                .context("Noise parameters")?;
            let keys =
                snow::Builder::with_resolver(params.clone(), Box::new(JunkResolver(next_u64(rng))))
                    .generate_keypair()
                    .context("a junk key pair")?;
            let mut hs =
                snow::Builder::with_resolver(params, Box::new(JunkResolver(next_u64(rng))))
                    .local_private_key(&keys.private)
                    .and_then(|b| b.remote_public_key(&target.x25519))
                    .and_then(|b| b.prologue(b"ztrun vl1 version 1"))
                    .and_then(|b| b.build_initiator())
                    .context("a junk handshake")?;
            // The identity: the claimed address, the real static key, a junk Ed25519 key
            // and signature (so it fails verification).
            let mut identity = p[9..14].to_vec();
            identity.extend_from_slice(&keys.public);
            identity.extend_from_slice(&[0x42; 32 + 64]);
            let mut msg = vec![0u8; 512];
            let n = hs
                .write_message(&identity, &mut msg)
                .context("writing a junk message 1")?;
            p.extend_from_slice(&msg[..n]);
        }
    }
    Ok(p)
}

/// Snow's primitives with [`next_u64`] as the generator of junk keys.
struct JunkResolver(u64);

struct JunkRandom(u64);

impl snow::types::Random for JunkRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        for chunk in dest.chunks_mut(8) {
            let v = next_u64(&mut self.0).to_be_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

impl snow::resolvers::CryptoResolver for JunkResolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(JunkRandom(self.0 | 1)))
    }
    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        snow::resolvers::DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(
        &self,
        choice: &snow::params::HashChoice,
    ) -> Option<Box<dyn snow::types::Hash>> {
        snow::resolvers::DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(
        &self,
        choice: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        snow::resolvers::DefaultResolver.resolve_cipher(choice)
    }
}

/// Sends junk initiations to every target at `rate` per second each, for `duration`
/// (at most `rate × duration` per target, in 1 ms ticks). Returns the datagrams sent and
/// the seconds it took.
fn send_junk(
    targets: &[Target],
    kind: Junk,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<(u64, f64)> {
    let socket = UdpSocket::bind(SocketAddr::new(IpAddr::from([0u8, 0, 0, 0]), 0))
        .context("binding the flooder's socket")?;
    socket.set_nonblocking(true)?;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let pools = targets
        .iter()
        .map(|t| (0..1024).map(|_| junk(t, kind, &mut rng)).collect())
        .collect::<anyhow::Result<Vec<Vec<Vec<u8>>>>>()?;
    let per_target = (f64::from(rate) * duration.as_secs_f64()) as u64;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut i = 0usize;
    while started.elapsed() < duration && sent < per_target * targets.len() as u64 {
        let due = ((started.elapsed().as_secs_f64() * f64::from(rate)) as u64).min(per_target)
            * targets.len() as u64;
        while sent < due {
            let k = (sent % targets.len() as u64) as usize;
            match socket.send_to(&pools[k][i % pools[k].len()], targets[k].udp) {
                Ok(_) => {}
                // A full socket buffer: the datagram is not sent, try it again next tick.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // Cookie replies or ICMP errors from the targets: carry on.
                Err(_) => {}
            }
            sent += 1;
            i = i.wrapping_add(1);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok((sent, started.elapsed().as_secs_f64()))
}

impl Report {
    /// The table of figures, as Markdown.
    pub(crate) fn markdown(&self) -> String {
        let idle_p50 = self
            .phases
            .iter()
            .find(|p| p.rate == 0)
            .and_then(|p| p.echo_p50_ms);
        let mut s = String::from(
            "| junk HANDSHAKE_INITs per second, to the node and to the root each | junk | junk sent \
             (per second achieved, both targets) | new node: spawn to first echo from the \
             flooded node | existing session: echo p50 (vs idle) | echo p99 | echoes \
             answered | flooded node's `ztrun` CPU | flooded node: initiations received / answered \
             with crypto / with a cookie |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for p in &self.phases {
            let rate = if p.rate == 0 {
                "none (idle)".to_string()
            } else {
                p.rate.to_string()
            };
            let sent = if p.rate == 0 {
                "-".to_string()
            } else {
                format!(
                    "{} ({:.0}/s)",
                    p.sent,
                    p.sent as f64 / p.flood_seconds.max(1e-9)
                )
            };
            let join = match &p.join_ms {
                Ok(ms) => format!("{ms:.0} ms"),
                Err(e) => format!("failed: {e}"),
            };
            let p50 = match (p.echo_p50_ms, idle_p50) {
                (Some(x), Some(i)) if p.rate != 0 => format!("{x:.2} ms ({:.2}x)", x / i),
                (Some(x), _) => format!("{x:.2} ms"),
                (None, _) => "no echo".into(),
            };
            let p99 = p.echo_p99_ms.map_or("-".into(), |x| format!("{x:.2} ms"));
            let cpu = p.node_cpu.map_or("-".into(), |x| format!("{x:.0} %"));
            s.push_str(&format!(
                "| {rate} | {} | {sent} | {join} | {p50} | {p99} | {} | {cpu} | {} |\n",
                p.kind.map_or("-", Junk::label),
                p.echoes,
                p.handshakes
                    .map_or("-".into(), |(r, a, c)| format!("{r} / {a} / {c}"))
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_is_a_header_valid_initiation_for_the_target() {
        let t = Target {
            udp: "198.18.1.2:9993".parse().unwrap(),
            address: [0x89, 0xe9, 0x2c, 0xee, 0xe5],
            x25519: [9; 32],
        };
        let mut rng = 1;
        for kind in [Junk::Random, Junk::Identities] {
            let a = junk(&t, kind, &mut rng).unwrap();
            let b = junk(&t, kind, &mut rng).unwrap();
            // A real initiation is this long: the junk looks like one.
            assert_eq!(a.len(), JUNK_LEN, "{kind:?}");
            assert_eq!(&a[..4], &[1, 1, 0, 0]);
            assert_eq!(&a[4..9], &t.address);
            assert!(a[9] != 0 && a[9] != 0xff);
            assert_ne!(a, b);
        }
    }

    #[test]
    fn the_flooder_sends_what_it_was_asked_for_and_stops_in_time() {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let t = Target {
            udp: sink.local_addr().unwrap(),
            address: [1, 2, 3, 4, 5],
            x25519: [9; 32],
        };
        let (sent, secs) =
            send_junk(&[t, t], Junk::Random, 2000, Duration::from_millis(300)).unwrap();
        assert!(secs < 0.5, "{secs}");
        assert!(sent <= 1200, "{sent}");
        assert!(sent >= 600, "{sent}");
    }

    #[test]
    fn public_identities_give_address_and_key() {
        let line = format!(
            "89e92ceee5:1:{}{}:{}",
            "ab".repeat(32),
            "cd".repeat(32),
            "ef".repeat(64)
        );
        let (a, k) = public_identity(&format!("zt root listening\n{line}\n")).unwrap();
        assert_eq!(a, [0x89, 0xe9, 0x2c, 0xee, 0xe5]);
        assert_eq!(k, [0xab; 32]);
        assert!(public_identity("nothing here").is_err());
    }

    #[test]
    fn addresses_parse_from_hex() {
        assert_eq!(
            parse_address("89e92ceee5").unwrap(),
            [0x89, 0xe9, 0x2c, 0xee, 0xe5]
        );
        assert!(parse_address("89e92ceee").is_err());
        assert!(parse_address("89e92ceeez").is_err());
    }
}
