//! `zt`: identities, roots, controllers and node status.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use launcher::api::{self, ApiClient, MemberChange, MemberJson, NetworkChange, NetworkJson};
use launcher::{identity, roots};
use zt_core::driver::{spawn_root, Sockets};
use zt_core::{Address, NetworkId, Root, Timing};

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
    /// Run a network controller: a node that owns the networks whose IDs start with its
    /// address, with its state in `HOME/controller.redb` and a management API on loopback.
    Controller {
        /// The controller's home: identity, database, API token (default: `controller/`
        /// inside the ztrun state directory).
        #[arg(long, value_name = "DIR")]
        home: Option<PathBuf>,
        /// UDP address of the controller node (default: an ephemeral port).
        #[arg(long, value_name = "IP:PORT")]
        listen: Option<SocketAddr>,
        /// A root to register with, as for ztrun (`IP:PORT` or `IDENTITY@IP:PORT`;
        /// repeatable). Default: the embedded root on 127.0.0.1:9993.
        #[arg(long = "root", value_name = "ROOT")]
        roots: Vec<roots::RootArg>,
        /// Where the management API listens (loopback only).
        #[arg(long, value_name = "IP:PORT", default_value_t = api::DEFAULT_API)]
        api: SocketAddr,
        /// Start with no networks: move an existing database aside
        /// (`controller.redb.reset-UNIXTIME`), e.g. when it cannot be read.
        #[arg(long)]
        reset: bool,
    },
    /// Networks of a running controller (through its management API).
    #[command(subcommand)]
    Net(NetCommand),
    /// Members of a controller's network (through its management API).
    #[command(subcommand)]
    Member(MemberCommand),
    /// Run a root: rendezvous for peer discovery, hole punching and relay of last resort.
    Root {
        /// UDP address to listen on; repeat for several (default `0.0.0.0:9993` and `[::]:9993`).
        #[arg(long = "listen", value_name = "ADDR")]
        listen: Vec<SocketAddr>,
        /// Secret identity file of the root (default: the embedded default root identity).
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Print the relay counters on stdout this often, in seconds (0: never), one line
        /// each: `relay packets=N bytes=N handshake_packets=N data_packets=N peers=N`.
        #[arg(long, default_value_t = 0, value_name = "SECS")]
        stats_every: u64,
    },
}

/// How to reach a controller's management API.
#[derive(Debug, Clone, clap::Args)]
struct ApiArgs {
    /// The controller's home, where its API address and token are found (default: as
    /// `zt controller` chooses it).
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// The API address (default: from the controller's home, else 127.0.0.1:9994).
    #[arg(long, value_name = "IP:PORT")]
    api: Option<SocketAddr>,
    /// The API token (default: the controller's authtoken.secret).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

#[derive(Debug, Subcommand)]
enum NetCommand {
    /// Create a network; prints its ID.
    Create {
        #[command(flatten)]
        api: ApiArgs,
        /// Members must be authorized (the default).
        #[arg(long, conflicts_with = "public")]
        private: bool,
        /// Any node that asks is a member.
        #[arg(long)]
        public: bool,
        /// Give members IPv4 addresses from this subnet, e.g. 10.147.17.0/24.
        #[arg(long, value_name = "CIDR")]
        ipv4_pool: Option<String>,
        /// IPv6 assignment: a comma-separated list of `rfc4193` and `6plane`, or `none`
        /// (default: rfc4193).
        #[arg(long, value_name = "MODES")]
        ipv6: Option<String>,
        /// MTU of the virtual Ethernet (1280..=2800, default 2800).
        #[arg(long, value_name = "N")]
        mtu: Option<u16>,
        /// A name for people.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// List the controller's networks.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete a network (its members lose their configuration at their next refresh).
    Delete {
        #[command(flatten)]
        api: ApiArgs,
        /// The network.
        nwid: NetworkId,
    },
}

#[derive(Debug, Subcommand)]
enum MemberCommand {
    /// List a network's members.
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// The network.
        nwid: NetworkId,
    },
    /// Authorize a node on a private network.
    Authorize {
        #[command(flatten)]
        api: ApiArgs,
        /// The network.
        nwid: NetworkId,
        /// The node's address (10 hex digits; ztrun prints it).
        node: Address,
    },
    /// Deauthorize a node: its certificate is revoked and the other members drop its
    /// traffic.
    Deauthorize {
        #[command(flatten)]
        api: ApiArgs,
        /// The network.
        nwid: NetworkId,
        /// The node's address.
        node: Address,
    },
    /// Name a node in DNS: programs under ztrun on the network resolve NAME.NWID.zt and
    /// NAME.zt to its addresses (the controller sends the change to online members).
    Name {
        #[command(flatten)]
        api: ApiArgs,
        /// The network.
        nwid: NetworkId,
        /// The node's address.
        node: Address,
        /// A DNS label (a-z, 0-9, '-'), unique on the network; omit it with --clear.
        #[arg(required_unless_present = "clear")]
        name: Option<String>,
        /// Remove the node's name.
        #[arg(long, conflicts_with = "name")]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
enum IdCommand {
    /// Generate a new identity. Writes the secret form to FILE (mode 0600) and prints the
    /// public form; without FILE prints the secret form. An existing FILE is kept unless
    /// --force is given.
    New {
        /// Where to write the secret identity.
        file: Option<PathBuf>,
        /// Replace FILE if it exists (the identity it held is lost).
        #[arg(long, requires = "file")]
        force: bool,
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
        Command::Controller {
            home,
            listen,
            roots,
            api,
            reset,
        } => {
            let home = launcher::controller::resolve_home(home.as_deref())?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the runtime")?;
            let opts = launcher::controller::Options {
                home,
                listen,
                roots,
                api,
                reset,
            };
            rt.block_on(launcher::controller::run(opts, |address, api| {
                // Scripts (and the tests) wait for this line: the API is up.
                println!("{address} {api}");
            }))
        }
        Command::Net(cmd) => client_runtime()?.block_on(net(cmd)),
        Command::Member(cmd) => client_runtime()?.block_on(member(cmd)),
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
        Command::Id(IdCommand::New { file, force }) => {
            let id = identity::generate()?;
            match file {
                Some(path) => {
                    let secret = id.to_secret_string();
                    let written = if force {
                        launcher::home::write_private(&path, secret.as_bytes())
                    } else {
                        launcher::home::write_private_new(&path, secret.as_bytes())
                    };
                    match written {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => anyhow::bail!(
                            "{} already exists and may hold the identity of a node; \
                             `zt id show {}` shows it. Choose another file, or pass --force \
                             to replace it (its identity is then lost)",
                            path.display(),
                            path.display()
                        ),
                        Err(e) => {
                            return Err(e)
                                .with_context(|| format!("cannot write {}", path.display()))
                        }
                    }
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
                                    // One line per period on stdout, after the identity
                                    // line, for operators and tests to read.
                                    println!(
                                        "relay packets={} bytes={} handshake_packets={} \
                                         data_packets={} peers={}",
                                        relay.packets,
                                        relay.bytes,
                                        relay.handshake_packets,
                                        relay.data_packets,
                                        peers.len()
                                    );
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

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

fn client(a: &ApiArgs) -> anyhow::Result<ApiClient> {
    let home = launcher::controller::resolve_home(a.home.as_deref())?;
    Ok(ApiClient::locate(&home, a.api, a.token.clone())?)
}

fn describe_network(n: &NetworkJson) -> String {
    let mut v6: Vec<&str> = Vec::new();
    if n.v6_assign_mode.rfc4193 {
        v6.push("rfc4193");
    }
    if n.v6_assign_mode.sixplane {
        v6.push("6plane");
    }
    format!(
        "{} {:<8} {:<16} ipv4 {:<32} ipv6 {:<15} mtu {} members {}/{} authorized",
        n.id,
        if n.private { "private" } else { "public" },
        if n.name.is_empty() { "-" } else { &n.name },
        n.ipv4_pool.map_or("-".to_string(), |p| p.to_string()),
        if v6.is_empty() {
            "-".to_string()
        } else {
            v6.join(",")
        },
        n.mtu,
        n.authorized_member_count,
        n.member_count,
    )
}

fn describe_member(m: &MemberJson) -> String {
    let ips: Vec<String> = m.ip_assignments.iter().map(|a| a.to_string()).collect();
    let seen = match m.last_request {
        Some(t) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            format!("asked {} s ago", now.saturating_sub(t) / 1000)
        }
        None => "never asked".to_string(),
    };
    let name = m
        .name
        .as_deref()
        .map_or(String::new(), |n| format!(" name {n}"));
    format!(
        "{} {:<14} {}{name} ({seen})",
        m.id,
        if m.authorized {
            "authorized"
        } else {
            "not authorized"
        },
        if ips.is_empty() {
            "-".to_string()
        } else {
            ips.join(" ")
        }
    )
}

async fn net(cmd: NetCommand) -> anyhow::Result<()> {
    match cmd {
        NetCommand::Create {
            api,
            private: _,
            public,
            ipv4_pool,
            ipv6,
            mtu,
            name,
        } => {
            let pool = ipv4_pool
                .map(|c| {
                    api::Ipv4Pool::from_cidr(&c).map_err(|e| anyhow::anyhow!("--ipv4-pool {e}"))
                })
                .transpose()?;
            let v6 = ipv6
                .map(|modes| {
                    let mut m = api::V6AssignMode {
                        rfc4193: false,
                        sixplane: false,
                    };
                    for word in modes.split(',').map(str::trim) {
                        match word {
                            "rfc4193" => m.rfc4193 = true,
                            "6plane" => m.sixplane = true,
                            "none" | "" => {}
                            other => anyhow::bail!(
                                "--ipv6 {other:?}: expected a list of rfc4193 and 6plane, or none"
                            ),
                        }
                    }
                    Ok(m)
                })
                .transpose()?;
            let change = NetworkChange {
                name,
                private: Some(!public),
                mtu,
                ipv4_pool: pool.map(Some),
                v6_assign_mode: v6,
                routes: None,
            };
            let c = client(&api)?;
            let n: NetworkJson = c.post("/controller/network", &change).await?;
            eprintln!("zt: created {}", describe_network(&n));
            println!("{}", n.id);
            Ok(())
        }
        NetCommand::List { api } => {
            let c = client(&api)?;
            let list: Vec<NetworkJson> = c.get("/controller/network").await?;
            if list.is_empty() {
                eprintln!(
                    "zt: the controller has no networks yet: create one with `zt net create`"
                );
            }
            for n in &list {
                println!("{}", describe_network(n));
            }
            Ok(())
        }
        NetCommand::Delete { api, nwid } => {
            let c = client(&api)?;
            let n: NetworkJson = c.delete(&format!("/controller/network/{nwid}")).await?;
            println!("deleted {}", describe_network(&n));
            Ok(())
        }
    }
}

async fn member(cmd: MemberCommand) -> anyhow::Result<()> {
    let (api, nwid, change) = match cmd {
        MemberCommand::List { api, nwid } => {
            let c = client(&api)?;
            let list: Vec<MemberJson> =
                c.get(&format!("/controller/network/{nwid}/member")).await?;
            if list.is_empty() {
                eprintln!(
                    "zt: network {nwid} has no members yet: a node appears here once it asks to \
                     join (ztrun --nwid {nwid} ...)"
                );
            }
            for m in &list {
                println!("{}", describe_member(m));
            }
            return Ok(());
        }
        MemberCommand::Name {
            api,
            nwid,
            node,
            name,
            clear: _,
        } => {
            let c = client(&api)?;
            let m: MemberJson = c
                .post(
                    &format!("/controller/network/{nwid}/member/{node}"),
                    &MemberChange {
                        name: Some(name.map(|n| n.to_ascii_lowercase())),
                        ..MemberChange::default()
                    },
                )
                .await?;
            match &m.name {
                Some(n) => println!(
                    "named {node} on {nwid} {n} ({n}.{nwid}.zt, {n}.zt): {}",
                    describe_member(&m)
                ),
                None => println!("{node} on {nwid} has no name: {}", describe_member(&m)),
            }
            return Ok(());
        }
        MemberCommand::Authorize { api, nwid, node } => (api, nwid, (node, true)),
        MemberCommand::Deauthorize { api, nwid, node } => (api, nwid, (node, false)),
    };
    let (node, authorized) = change;
    let c = client(&api)?;
    let m: MemberJson = c
        .post(
            &format!("/controller/network/{nwid}/member/{node}"),
            &MemberChange {
                authorized: Some(authorized),
                ..MemberChange::default()
            },
        )
        .await?;
    println!(
        "{} {node} on {nwid}: {}",
        if authorized {
            "authorized"
        } else {
            "deauthorized (its certificate is revoked)"
        },
        describe_member(&m)
    );
    Ok(())
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
