//! `compat-tests`: the compatibility-matrix runner (`compat-tests matrix`).
//!
//! ```text
//! compat-tests matrix [--mode ztrun|native] [--list] [--write] [--out PATH] [APP...]
//! ```
//!
//! Prints the table to stdout and exits non-zero when any scenario is BROKEN. In ztrun
//! mode a full run (no APP filter) writes `COMPATIBILITY.md` at the workspace root; `--write`
//! forces that, and `--out PATH` writes the same Markdown to PATH instead. A native run
//! writes only where `--out` says: its results are about the scenarios, not about ztrun.

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
    }
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
    let options = Options {
        mode,
        binaries: ZtrunBinaries {
            ztrun: args.ztrun,
            zt: args.zt,
        },
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
