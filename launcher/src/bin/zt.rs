//! `zt`: identities, roots, controllers and node status.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use launcher::{identity, roots};
use zt_core::driver::{spawn_root, Sockets};
use zt_core::{Root, Timing};

/// Manage identities, roots, controllers and networks.
#[derive(Debug, Parser)]
#[command(name = "zt", version, about, long_about = None)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show a running ztrun's node: address, networks, peers (direct or relayed) and latency.
    Status {
        /// The ztrun's state directory (default: as ztrun chooses it).
        #[arg(long, value_name = "DIR")]
        home: Option<PathBuf>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Node identities.
    #[command(subcommand)]
    Id(IdCommand),
    /// Run a root: rendezvous for peer discovery, hole punching and relay of last resort.
    Root {
        /// UDP address to listen on; repeat for several (default 0.0.0.0:9993 and [::]:9993).
        #[arg(long = "listen", value_name = "ADDR")]
        listen: Vec<SocketAddr>,
        /// Secret identity file of the root (default: the embedded default root identity).
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Log relay counters this often, in seconds (0: never).
        #[arg(long, default_value_t = 0, value_name = "SECS")]
        stats_every: u64,
    },
}

#[derive(Debug, Subcommand)]
enum IdCommand {
    /// Generate a new identity. Writes the secret form to FILE (mode 0600) and prints the
    /// public form; without FILE prints the secret form.
    New {
        /// Where to write the secret identity.
        file: Option<PathBuf>,
    },
    /// Show the address and public identity of a secret identity file or state directory.
    Show {
        /// A secret identity file, or a state directory holding identity.secret
        /// (default: the `ztrun` state directory).
        path: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zt: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Status { home, json } => {
            let home = launcher::home::resolve(home.as_deref())?;
            let report = launcher::status::read(&home)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", launcher::status::render(&report));
            }
            Ok(())
        }
        Command::Id(IdCommand::New { file }) => {
            let id = identity::generate()?;
            match file {
                Some(path) => {
                    launcher::home::write_private(&path, id.to_secret_string().as_bytes())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    println!("{}", id.public());
                }
                None => println!("{}", id.to_secret_string()),
            }
            Ok(())
        }
        Command::Id(IdCommand::Show { path }) => {
            let path = match path {
                Some(p) => p,
                None => launcher::home::resolve(None)?,
            };
            let file = if path.is_dir() {
                path.join(identity::SECRET_FILE)
            } else {
                path
            };
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let id = identity::parse(&text, &file)?;
            println!("address:  {}", id.address());
            println!("identity: {}", id.public());
            Ok(())
        }
        Command::Root {
            listen,
            identity: id_file,
            stats_every,
        } => {
            let id = match id_file {
                Some(f) => {
                    let text = std::fs::read_to_string(&f)
                        .with_context(|| format!("cannot read {}", f.display()))?;
                    identity::parse(&text, &f)?
                }
                None => roots::default_root_secret(),
            };
            let listen = if listen.is_empty() {
                vec![
                    "0.0.0.0:9993".parse().expect("valid literal"),
                    "[::]:9993".parse().expect("valid literal"),
                ]
            } else {
                listen
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the runtime")?;
            rt.block_on(async move {
                let sockets = bind_root_sockets(&listen).await?;
                let addrs = sockets.local_addrs();
                let root = Root::new(
                    id.clone(),
                    identity::os_seed()?,
                    Timing::default(),
                    Instant::now(),
                );
                let (handle, task) = spawn_root(root, sockets);
                eprintln!("zt: root {} listening on {addrs:?}", id.address());
                println!("{}", id.public());
                if stats_every > 0 {
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(Duration::from_secs(stats_every)).await;
                            match handle.stats().await {
                                Ok((relay, peers)) => {
                                    tracing::info!(?relay, peers = peers.len(), "root statistics")
                                }
                                Err(_) => break,
                            }
                        }
                    });
                }
                tokio::select! {
                    r = task => r.context("root task failed")?,
                    r = tokio::signal::ctrl_c() => r.context("cannot wait for Ctrl-C")?,
                }
                anyhow::Ok(())
            })
        }
    }
}

async fn bind_root_sockets(listen: &[SocketAddr]) -> anyhow::Result<Sockets> {
    // Bind what can be bound: a host without IPv6 still serves IPv4.
    let mut ok = Vec::new();
    let mut last_err = None;
    for a in listen {
        match std::net::UdpSocket::bind(a) {
            Ok(s) => {
                drop(s);
                ok.push(*a);
            }
            Err(e) => last_err = Some((a, e)),
        }
    }
    if ok.is_empty() {
        let (a, e) = last_err.expect("listen is never empty");
        anyhow::bail!("cannot listen on {a}: {e} (is another root running? choose --listen)");
    }
    Sockets::bind_addrs(&ok)
        .await
        .with_context(|| format!("cannot listen on {ok:?}"))
}
