//! `zt`: identities, roots, controllers and node status.

use std::process::ExitCode;

use clap::Parser;

/// Manage identities, roots, controllers and networks.
#[derive(Debug, Parser)]
#[command(name = "zt", version, about)]
struct Args {}

fn main() -> ExitCode {
    let _args = Args::parse();
    eprintln!("zt: no subcommands are built in this version");
    ExitCode::from(70)
}
