//! `ztrun`: run a program with its IPv4/IPv6 sockets on a virtual network.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use supervisor::backend::{NoNetwork, Policy};
use supervisor::launch;

/// Run a program so that its sockets live on an encrypted virtual network.
///
/// Every process and thread the program starts is on the network too. Without
/// `--nwid` the program reaches loopback only (and the host network with
/// `--fallthrough`).
#[derive(Debug, Parser)]
#[command(name = "ztrun", version, about, long_about = None)]
struct Args {
    /// Network to join (16 hex digits); repeat to join several.
    #[arg(long = "nwid", value_name = "NWID")]
    nwids: Vec<String>,
    /// State directory for the node identity (default: $ZTRUN_HOME,
    /// $XDG_DATA_HOME/ztrun or ~/.local/share/ztrun).
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Let connections to addresses outside the virtual networks use the host network.
    #[arg(long)]
    fallthrough: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
    /// Program to run, and its arguments.
    #[arg(last = true, required = true, value_name = "PROGRAM")]
    program: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(args.quiet);
    match run(args) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("ztrun: {e:#}");
            // 125, like env(1) and container runtimes: ztrun itself failed.
            ExitCode::from(125)
        }
    }
}

fn init_tracing(quiet: bool) {
    let default = if quiet { "error" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(args: Args) -> anyhow::Result<i32> {
    if let Some(nwid) = args.nwids.first() {
        anyhow::bail!(
            "joining networks is not available in this build yet (asked for {nwid}); \
             run without --nwid to confine the program to loopback"
        );
    }
    let home = launcher::home::resolve(args.home.as_deref())?;
    launcher::home::ensure(&home)?;
    let policy = Policy {
        fallthrough: args.fallthrough,
    };
    let cmd = launch::Command::new(&args.program[0]).args(&args.program[1..]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let status = rt
        .block_on(launch::run(&cmd, policy, Arc::new(NoNetwork)))
        .with_context(|| format!("cannot run `{}`", args.program[0]))?;
    Ok(status.code())
}
