//! `compat-tests`: the compatibility-matrix runner and the benchmark command.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("no subcommand is built yet")
}
