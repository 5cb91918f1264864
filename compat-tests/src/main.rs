//! `compat-tests`: the compatibility-matrix runner (`compat-tests matrix`) and the
//! benchmarks (`compat-tests bench`).
//!
//! ```text
//! compat-tests matrix [--mode ztrun|native] [--list] [--write] [--out PATH] [APP...]
//! compat-tests bench [--quick] [--write] [--out PATH] [--svg PATH] [--perf DIR]
//! compat-tests flood [--rates 10000,100000] [--junk identities,random] [--seconds 10]
//! compat-tests conformance [--mode loopback|net] [--user root|nobody] [--only PREFIX]
//! ```
//!
//! Prints the table to stdout and exits non-zero when any scenario is BROKEN. In ztrun
//! mode a full run (no APP filter) writes `COMPATIBILITY.md` at the workspace root; `--write`
//! forces that, and `--out PATH` writes the same Markdown to PATH instead. A native run
//! writes only where `--out` says: its results are about the scenarios, not about ztrun.
//!
//! `bench` prints the table of measurements per path with ratios to the kernel's veth path
//! and the goals of issue 15; a full run writes `BENCHMARKS.md` and `docs/BENCH.svg` at
//! the workspace root (see the `bench` module). `flood` floods a node and its root with
//! junk handshakes from one test host and measures, on another, how long a new node takes
//! to join and reach the flooded node and the echo round trip of an existing session; it
//! prints a Markdown table (the figures of docs/SECURITY.md, "Floods"). The hidden `rr-server` and `rr-client`
//! subcommands are the request/response programs it runs on the test hosts.
//!
//! `conformance` runs the C probes of `compat-tests/conformance/` natively and under
//! ztrun and prints every difference (see the `conformance` module); it exits 1 when a
//! difference is not in the allowlist of docs/COMPAT.md.

mod bench;
mod conformance;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use compat_tests::matrix::{self, Mode, Options, ZtrunBinaries};

#[derive(Debug, Parser)]
#[command(
    name = "compat-tests",
    about = "Compatibility matrix and benchmarks for ztrun"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run real applications across two test hosts and report WORKS / MARGINAL / BROKEN.
    Matrix(MatrixArgs),
    /// Measure ztrun against the kernel (loopback, veth) on two test hosts, in one run.
    Bench(BenchArgs),
    /// Flood a node and a root with junk handshakes; measure joins and echoes meanwhile.
    Flood(FloodArgs),
    /// A controller with 10,000 members on redb and on PostgreSQL: time to create and
    /// authorize them, RSS, push latency, takeover, configuration size (docs/CONTROLLER.md).
    ControllerBench(ControllerBenchArgs),
    /// Run the C probes natively and under ztrun (loopback and two hosts, root and uid
    /// 65534) and print every difference.
    Conformance(ConformanceArgs),
    /// The benchmark's echo server (run on test hosts by `bench`).
    #[command(hide = true)]
    RrServer {
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// The benchmark's request/response client (run on test hosts by `bench`).
    #[command(hide = true)]
    RrClient(bench::rr::ClientArgs),
    /// Idle sockets by the thousand (run under ztrun by `bench`).
    #[command(hide = true)]
    HoldSockets {
        /// What to open.
        #[arg(long, value_enum)]
        kind: bench::sockets::SocketKind,
        /// How many.
        #[arg(long)]
        count: usize,
        /// The longest they are held.
        #[arg(long, default_value_t = 120.0)]
        seconds: f64,
    },
    /// Loopback connect/close cycles (run natively and under ztrun by `bench`).
    #[command(hide = true)]
    ConnectLoop {
        /// How many cycles.
        #[arg(long, default_value_t = 20_000)]
        count: u64,
        /// The longest the loop runs.
        #[arg(long, default_value_t = 120.0)]
        seconds: f64,
    },
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// A small run (about a minute) that checks everything works; writes no file unless
    /// --write or --out says so.
    #[arg(long)]
    quick: bool,
    /// Write BENCHMARKS.md and docs/BENCH.svg at the workspace root (the default for a
    /// full run).
    #[arg(long)]
    write: bool,
    /// Write nothing (a full run writes BENCHMARKS.md by default).
    #[arg(long, conflicts_with_all = ["write", "out"])]
    no_write: bool,
    /// Write the Markdown to this file instead (the chart goes beside it unless --svg).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Write the SVG chart to this file.
    #[arg(long, value_name = "PATH")]
    svg: Option<PathBuf>,
    /// Record a perf profile (call graphs) of both ztrun processes during the
    /// single-stream iperf3 run over ztrun, into DIR/perf.data.
    #[arg(long, value_name = "DIR")]
    perf: Option<PathBuf>,
    /// The ztrun binary (default: beside this runner, then PATH).
    #[arg(long, value_name = "PATH")]
    ztrun: Option<PathBuf>,
    /// The zt binary (default: beside this runner, then PATH).
    #[arg(long, value_name = "PATH")]
    zt: Option<PathBuf>,
    /// Keep the state directory (logs, homes) under /tmp.
    #[arg(long)]
    keep: bool,
    /// Print each step and command.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Debug, clap::Args)]
struct ControllerBenchArgs {
    /// Members of the network.
    #[arg(long, default_value_t = 10_000)]
    members: u32,
    /// Push-latency samples per store (a real member each).
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// Write the Markdown table to this file too.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// The ztrun binary (default: beside this runner, then PATH).
    #[arg(long, value_name = "PATH")]
    ztrun: Option<PathBuf>,
    /// The zt binary (default: beside this runner, then PATH).
    #[arg(long, value_name = "PATH")]
    zt: Option<PathBuf>,
    /// Print progress.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Debug, clap::Args)]
struct FloodArgs {
    /// Junk HANDSHAKE_INITs per second to the node and to the root (each), one phase per
    /// rate.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    rates: Vec<u32>,
    /// The kinds of junk, one phase per rate and kind.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "identities,random"
    )]
    junk: Vec<bench::flood::Junk>,
    /// Seconds each flood lasts.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// The ztrun binary (default: beside this runner, then PATH).
    #[arg(long, value_name = "PATH")]
    ztrun: Option<PathBuf>,
    /// The zt binary (default: beside this runner, then PATH).
    #[arg(long, value_name = "PATH")]
    zt: Option<PathBuf>,
    /// Keep the state directory (logs, homes) under /tmp.
    #[arg(long)]
    keep: bool,
    /// Print each step and command.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum NetModeArg {
    /// 127.0.0.1 and ::1 on one host.
    Loopback,
    /// Two hosts: a veth LAN natively, the virtual network under ztrun.
    Net,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum UserArg {
    /// uid 0.
    Root,
    /// uid 65534.
    Nobody,
}

#[derive(Debug, clap::Args)]
struct ConformanceArgs {
    /// Only this mode (default: both).
    #[arg(long, value_enum)]
    mode: Option<NetModeArg>,
    /// Only this user (default: both).
    #[arg(long, value_enum)]
    user: Option<UserArg>,
    /// Only the case functions whose name starts with PREFIX (e.g. `sig-`, `opt-get`).
    #[arg(long, value_name = "PREFIX")]
    only: Option<String>,
    /// The ztrun binary (default: beside this runner, then PATH).
    #[arg(long, value_name = "PATH")]
    ztrun: Option<PathBuf>,
    /// The zt binary (default: beside this runner, then PATH).
    #[arg(long, value_name = "PATH")]
    zt: Option<PathBuf>,
    /// Keep the working directory (probes, outputs) under /tmp.
    #[arg(long)]
    keep: bool,
    /// Print progress and commands.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Under ztrun, members behind two NATs (the product).
    Ztrun,
    /// Without ztrun, members on one LAN (the reference that validates the scenarios).
    Native,
}

#[derive(Debug, clap::Args)]
struct MatrixArgs {
    /// How programs are run.
    #[arg(long, value_enum, default_value = "ztrun")]
    mode: ModeArg,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Write COMPATIBILITY.md at the workspace root (the default for a full ztrun run).
    #[arg(long)]
    write: bool,
    /// Write the Markdown table to this file instead.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// The ztrun binary (default: beside this runner, then PATH).
    #[arg(long, value_name = "PATH")]
    ztrun: Option<PathBuf>,
    /// The zt binary (default: beside this runner, then PATH).
    #[arg(long, value_name = "PATH")]
    zt: Option<PathBuf>,
    /// Keep each scenario's directory (configs and logs) under /tmp.
    #[arg(long)]
    keep: bool,
    /// Print each command as it runs.
    #[arg(long, short)]
    verbose: bool,
    /// Scenarios to run (default: all); see --list.
    #[arg(value_name = "APP")]
    apps: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Matrix(args) => match run_matrix(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("compat-tests: {e:#}");
                ExitCode::from(2)
            }
        },
        Commands::Bench(args) => match run_bench(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("compat-tests bench: {e:#}");
                ExitCode::from(2)
            }
        },
        Commands::Flood(args) => match run_flood(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("compat-tests flood: {e:#}");
                ExitCode::from(2)
            }
        },
        Commands::ControllerBench(args) => match run_controller_bench(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("compat-tests controller-bench: {e:#}");
                ExitCode::from(2)
            }
        },
        Commands::Conformance(args) => match run_conformance(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("compat-tests conformance: {e:#}");
                ExitCode::from(2)
            }
        },
        Commands::RrServer { listen } => match bench::rr::serve(listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rr-server: {e:#}");
                ExitCode::from(2)
            }
        },
        Commands::RrClient(args) => match bench::rr::client(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rr-client: {e:#}");
                ExitCode::from(2)
            }
        },
        Commands::HoldSockets {
            kind,
            count,
            seconds,
        } => match bench::sockets::hold(kind, count, seconds) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hold-sockets: {e:#}");
                ExitCode::from(2)
            }
        },
        Commands::ConnectLoop { count, seconds } => {
            match bench::sockets::connect_loop(count, seconds) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("connect-loop: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// When `ztrun`/`zt` are not given and this runner lives in a cargo target directory,
/// build them there first with this runner's profile, so that `cargo run --release -p
/// compat-tests -- bench` measures the `ztrun` of the working tree, never a stale binary
/// left beside the runner (cargo builds only the package it runs).
fn build_binaries_beside_runner(given: &ZtrunBinaries) -> anyhow::Result<()> {
    if given.ztrun.is_some() && given.zt.is_some() {
        return Ok(());
    }
    let exe = std::env::current_exe().context("cannot find this runner's path")?;
    let Some(dir) = exe.parent() else {
        return Ok(());
    };
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("release") => "release",
        Some("debug") => "dev",
        _ => return Ok(()),
    };
    let Some(target_dir) = dir.parent() else {
        return Ok(());
    };
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    if !std::path::Path::new(manifest).is_file() {
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    eprintln!("compat-tests: building ztrun and zt ({profile} profile) beside this runner");
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--profile",
            profile,
            "-p",
            "launcher",
            "--bins",
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .env("CARGO_TARGET_DIR", target_dir)
        .status()
        .context("cannot run cargo to build ztrun")?;
    anyhow::ensure!(
        status.success(),
        "building ztrun failed ({status}); fix the build or pass --ztrun and --zt"
    );
    Ok(())
}

/// Runs the benchmark, prints the table and targets, and writes the files.
fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    let binaries = ZtrunBinaries {
        ztrun: args.ztrun,
        zt: args.zt,
    };
    build_binaries_beside_runner(&binaries)?;
    let options = bench::Options {
        quick: args.quick,
        binaries: binaries.clone(),
        perf: args.perf,
        keep: args.keep,
        verbose: args.verbose,
    };
    let load_before = bench::load_average();
    let report = bench::run(&options)?;
    let machine = format!(
        "{}; load average {load_before} before the run, {} after; {}",
        bench::machine(),
        bench::load_average(),
        bench::source_version(&binaries)
    );
    let date = matrix::utc_date(std::time::SystemTime::now());
    println!("\n{}", report.text_table());
    println!("goals (issue 15):\n{}", report.text_targets());
    for note in report.notes() {
        println!("note: {note}");
    }
    println!(
        "{machine}; open-files limit {}; {date}; {:.0} s{}",
        report.nofile,
        report.elapsed.as_secs_f64(),
        if args.quick { " (quick run)" } else { "" }
    );

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let markdown_path = match (&args.out, args.write, args.no_write, args.quick) {
        (Some(path), _, _, _) => Some(path.clone()),
        (None, true, _, _) | (None, false, false, false) => Some(root.join("BENCHMARKS.md")),
        _ => None,
    };
    let Some(markdown_path) = markdown_path else {
        return Ok(());
    };
    let svg_path = args.svg.unwrap_or_else(|| {
        markdown_path
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("docs/BENCH.svg")
    });
    let chart_link = svg_path
        .strip_prefix(markdown_path.parent().unwrap_or(std::path::Path::new(".")))
        .unwrap_or(&svg_path)
        .display()
        .to_string();
    let command = std::iter::once("compat-tests".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let generated = report.markdown(&machine, &command, &date, &chart_link);
    let old = std::fs::read_to_string(&markdown_path).ok();
    let text = bench::merge_kept(&generated, old.as_deref());
    std::fs::write(&markdown_path, text)
        .with_context(|| format!("writing {}", markdown_path.display()))?;
    if let Some(dir) = svg_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let chart = bench::chart(
        &report,
        &format!("compat-tests bench, {date}; {}", bench::machine()),
    );
    std::fs::write(&svg_path, chart).with_context(|| format!("writing {}", svg_path.display()))?;
    eprintln!(
        "bench: wrote {} and {}",
        markdown_path.display(),
        svg_path.display()
    );
    Ok(())
}

/// Runs the controller benchmark and prints its table.
fn run_controller_bench(args: ControllerBenchArgs) -> anyhow::Result<()> {
    let binaries = ZtrunBinaries {
        ztrun: args.ztrun,
        zt: args.zt,
    };
    build_binaries_beside_runner(&binaries)?;
    let options = bench::controller::Options {
        binaries: binaries.clone(),
        members: args.members,
        samples: args.samples,
        verbose: args.verbose,
    };
    let load_before = bench::load_average();
    let started = Instant::now();
    let report = bench::controller::run(&options)?;
    let footer = format!(
        "{}; load average {load_before} before, {} after; {}; {}; {:.0} s",
        bench::machine(),
        bench::load_average(),
        bench::source_version(&binaries),
        matrix::utc_date(std::time::SystemTime::now()),
        started.elapsed().as_secs_f64()
    );
    let text = format!(
        "{}
{footer}
",
        report.markdown()
    );
    println!("{text}");
    if let Some(out) = args.out {
        std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// Runs the flood measurement and prints its table.
fn run_flood(args: FloodArgs) -> anyhow::Result<()> {
    let binaries = ZtrunBinaries {
        ztrun: args.ztrun,
        zt: args.zt,
    };
    build_binaries_beside_runner(&binaries)?;
    let options = bench::flood::Options {
        binaries: binaries.clone(),
        rates: args.rates,
        kinds: args.junk,
        seconds: args.seconds,
        keep: args.keep,
        verbose: args.verbose,
    };
    let load_before = bench::load_average();
    let started = Instant::now();
    let report = bench::flood::run(&options)?;
    println!("{}", report.markdown());
    for note in &report.notes {
        println!("note: {note}");
    }
    println!(
        "{}; load average {load_before} before the run, {} after; {}; {}; {:.0} s",
        bench::machine(),
        bench::load_average(),
        bench::source_version(&binaries),
        matrix::utc_date(std::time::SystemTime::now()),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs the conformance suite; Ok(false) when a difference is not in the allowlist.
fn run_conformance(args: ConformanceArgs) -> anyhow::Result<bool> {
    use conformance::{Allowlist, NetMode, User};
    let compat_md = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/COMPAT.md");
    let text = std::fs::read_to_string(&compat_md)
        .with_context(|| format!("reading the allowlist in {}", compat_md.display()))?;
    let allow = Allowlist::parse(&text).with_context(|| compat_md.display().to_string())?;
    compat_tests::testnet::require_root();
    let binaries = ZtrunBinaries {
        ztrun: args.ztrun,
        zt: args.zt,
    };
    build_binaries_beside_runner(&binaries)?;
    let modes = match args.mode {
        Some(NetModeArg::Loopback) => vec![NetMode::Loopback],
        Some(NetModeArg::Net) => vec![NetMode::Net],
        None => vec![NetMode::Loopback, NetMode::Net],
    };
    let users = match args.user {
        Some(UserArg::Root) => vec![User::Root],
        Some(UserArg::Nobody) => vec![User::Nobody],
        None => vec![User::Root, User::Nobody],
    };
    let full = args.only.is_none() && args.mode.is_none() && args.user.is_none();
    let options = conformance::Options {
        binaries,
        modes,
        users,
        only: args.only,
        keep: args.keep,
        verbose: args.verbose,
    };
    let started = Instant::now();
    let report = conformance::run(&options)?;
    let ok = conformance::print(&report, &allow, full, &mut std::io::stdout().lock())?;
    println!(
        "{}; {:.0} s",
        matrix::utc_date(std::time::SystemTime::now()),
        started.elapsed().as_secs_f64()
    );
    Ok(ok)
}

/// Runs the matrix; Ok(false) when a scenario is BROKEN.
fn run_matrix(args: MatrixArgs) -> anyhow::Result<bool> {
    if args.list {
        for s in matrix::scenarios() {
            println!("{:<15} {}\n{:<15} {}", s.name, s.title, "", s.summary);
        }
        return Ok(true);
    }
    let scenarios = matrix::select(&args.apps).map_err(|unknown| {
        anyhow::anyhow!("unknown scenario(s) {unknown:?}; `matrix --list` shows them")
    })?;
    compat_tests::testnet::require_root();
    let mode = match args.mode {
        ModeArg::Ztrun => Mode::Ztrun,
        ModeArg::Native => Mode::Native,
    };
    let binaries = ZtrunBinaries {
        ztrun: args.ztrun,
        zt: args.zt,
    };
    if mode == Mode::Ztrun {
        build_binaries_beside_runner(&binaries)?;
    }
    let options = Options {
        mode,
        binaries,
        keep: args.keep,
        verbose: args.verbose,
    };
    let started = Instant::now();
    let rows = matrix::run_all(&scenarios, &options, |row| {
        eprintln!(
            "matrix: {:<15} {:<8} {:>6.1}s {}",
            row.name,
            row.verdict.word(),
            row.elapsed.as_secs_f64(),
            row.notes
        );
    });
    let wall = started.elapsed();
    print!("{}", matrix::table(&rows));
    println!(
        "mode {mode}, {} scenarios, {:.1} s",
        rows.len(),
        wall.as_secs_f64()
    );

    let command = std::iter::once("compat-tests".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let markdown = matrix::markdown(&rows, mode, wall, &command);
    let default_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../COMPATIBILITY.md");
    let target = match (&args.out, args.write, mode) {
        (Some(path), _, _) => Some(path.clone()),
        (None, true, _) => Some(default_path),
        (None, false, Mode::Ztrun) if args.apps.is_empty() => Some(default_path),
        _ => None,
    };
    if let Some(path) = target {
        std::fs::write(&path, markdown).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("matrix: wrote {}", path.display());
    }
    Ok(matrix::all_pass(&rows))
}
