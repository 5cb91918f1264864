//! `zt`: identities, roots, controllers and node status.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use launcher::api::{self, ApiClient, MemberChange, MemberJson, NetworkChange, NetworkJson};
use launcher::{identity, roots};
use zt_core::driver::{spawn_root, Sockets};
use zt_core::{Address, NetworkId, Root, Timing};

/// Manage the identities, roots, controllers and networks that ztrun uses.
///
/// `zt status` shows a running ztrun's node; `zt controller` runs a network controller,
/// and `zt net` and `zt member` manage its networks and members; `zt root` runs a root;
/// `zt id` makes and shows identities.
#[derive(Debug, Parser)]
#[command(name = "zt", version = launcher::VERSION)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show a running ztrun's node: address, networks, peers (direct or relayed) and latency.
    ///
    /// Exits 0 when it shows a node, 3 when no ztrun (or zt controller) runs with that
    /// state directory, 1 otherwise.
    Status {
        /// The ztrun's state directory (default: as ztrun chooses it).
        #[arg(long, value_name = "DIR")]
        home: Option<PathBuf>,
        /// Print JSON: `{"home", "running", "node", "reason"}`, also when no node runs.
        #[arg(long)]
        json: bool,
    },
    /// Node identities.
    #[command(subcommand)]
    Id(IdCommand),
    /// Run a network controller: a node that owns the networks whose IDs start with its
    /// address, with its state in `HOME/controller.redb` and a management API on loopback.
    ///
    /// Without --root it registers with the machine's default root on 127.0.0.1:9993 and,
    /// when no process serves that yet, hosts it (as the first ztrun would) and says so.
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
        /// Keep the state in PostgreSQL (`postgres://USER@HOST/DB`) instead of
        /// `HOME/controller.redb`. Replicas with the same identity and database take turns:
        /// one is on the overlay, the others stand by and take over; all serve the API.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        #[command(subcommand)]
        action: Option<ControllerCommand>,
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
    /// Print a shell completion script for zt or ztrun.
    ///
    /// For example `zt completions bash > ~/.local/share/bash-completion/completions/zt`,
    /// `zt completions zsh > ~/.zfunc/_zt`, or `zt completions fish >
    /// ~/.config/fish/completions/zt.fish`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
        /// The command to complete.
        #[arg(value_enum, default_value_t = Program::Zt)]
        program: Program,
    },
    /// Print the manual page of zt or ztrun (roff), or write every page into a directory.
    ///
    /// `zt man | man -l -` shows it; `zt man --out-dir DIR` writes zt.1, one page per
    /// subcommand (zt-net-create.1, ...) and ztrun.1.
    Man {
        /// The command whose page to print.
        #[arg(value_enum, default_value_t = Program::Zt, conflicts_with = "out_dir")]
        program: Program,
        /// Write all the pages into this directory instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// A command of this package, for `zt completions` and `zt man`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Program {
    /// `zt`.
    Zt,
    /// `ztrun`.
    Ztrun,
}

impl Program {
    fn command(self) -> clap::Command {
        match self {
            Program::Zt => Args::command(),
            Program::Ztrun => launcher::cli::Ztrun::command(),
        }
    }
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

/// What `zt controller` does besides running.
#[derive(Debug, Subcommand)]
enum ControllerCommand {
    /// Print the controller's networks and members as JSON (from `--store`, else from
    /// `HOME/controller.redb`, which no running controller may hold).
    Export {
        /// The controller's home (its identity).
        #[arg(long, value_name = "DIR")]
        home: Option<PathBuf>,
        /// Export from this PostgreSQL database.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
    },
    /// Load an export into an empty store (`--store`, else `HOME/controller.redb`); the
    /// home must hold the exported controller's identity.
    Import {
        /// The controller's home (its identity).
        #[arg(long, value_name = "DIR")]
        home: Option<PathBuf>,
        /// Import into this PostgreSQL database.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// The export (`-`: standard input).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
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
        /// MTU of the virtual Ethernet (1280..=10000, default 9000).
        #[arg(long, value_name = "N")]
        mtu: Option<u16>,
        /// A name for people.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// List the controller's networks, one a line under a header.
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// Print a JSON array of the networks, as the API gives them.
        #[arg(long)]
        json: bool,
    },
    /// Change a network's settings; settings not given keep their value.
    ///
    /// Online members get the new configuration at once.
    Set {
        #[command(flatten)]
        api: ApiArgs,
        /// The network.
        nwid: NetworkId,
        /// Members must be authorized.
        #[arg(long, conflicts_with = "public")]
        private: bool,
        /// Any node that asks is a member.
        #[arg(long)]
        public: bool,
        /// Give members IPv4 addresses from this subnet (`none`: no IPv4). Members keep
        /// the addresses they have; new ones come from the new pool.
        #[arg(long, value_name = "CIDR")]
        ipv4_pool: Option<String>,
        /// IPv6 assignment: a comma-separated list of `rfc4193` and `6plane`, or `none`.
        #[arg(long, value_name = "MODES")]
        ipv6: Option<String>,
        /// MTU of the virtual Ethernet (1280..=10000).
        #[arg(long, value_name = "N")]
        mtu: Option<u16>,
        /// A name for people (`""` removes it).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Delete a network: the members that asked for it are told at once and lose their
    /// addresses on it.
    Delete {
        #[command(flatten)]
        api: ApiArgs,
        /// The network.
        nwid: NetworkId,
    },
}

#[derive(Debug, Subcommand)]
enum MemberCommand {
    /// List a network's members, one a line under a header, with whether each is online
    /// (asked for its configuration within 65 s; running members ask every 30 s) and when
    /// the controller last heard from it.
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// The network.
        nwid: NetworkId,
        /// Print a JSON array of the members, as the API gives them.
        #[arg(long)]
        json: bool,
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
    /// Deauthorize a member: its certificate is revoked and the other members drop its
    /// traffic. The address must be a member (`zt member list` shows them).
    Deauthorize {
        #[command(flatten)]
        api: ApiArgs,
        /// The network.
        nwid: NetworkId,
        /// The node's address.
        node: Address,
    },
    /// Delete a member's record (authorization, name, IPv4 address), deauthorizing it
    /// first. A node that asks to join again appears again, as a newcomer.
    Delete {
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
    // Output piped into a reader that stops early (`zt id show | head -1`) ends zt
    // quietly, as it does any Unix filter, instead of a panic on the failed write.
    launcher::sys::default_sigpipe();
    let args = Args::parse();
    launcher::cli::init_tracing("info");
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zt: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `zt status`'s exit status when no process holds the state directory (LSB's "program
/// is not running").
const NOT_RUNNING: u8 = 3;

fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Status { home, json } => {
            let home = launcher::home::resolve(home.as_deref())?;
            let st = launcher::status::StatusJson::of(&home);
            let code = match (&st.node, st.running) {
                (Some(_), _) => ExitCode::SUCCESS,
                (None, false) => ExitCode::from(NOT_RUNNING),
                (None, true) => ExitCode::from(1),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                match (&st.node, &st.reason) {
                    (Some(r), _) => print!("{}", launcher::status::render(r)),
                    (None, reason) => eprintln!("zt: {}", reason.as_deref().unwrap_or("no status")),
                }
            }
            Ok(code)
        }
        Command::Completions { shell, program } => {
            let mut cmd = program.command();
            let name = cmd.get_name().to_string();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, name, &mut out);
            std::io::stdout()
                .write_all(&out)
                .context("cannot write the completion script")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { program, out_dir } => {
            match out_dir {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    for p in [Program::Zt, Program::Ztrun] {
                        clap_mangen::generate_to(p.command(), &dir).with_context(|| {
                            format!("cannot write manual pages into {}", dir.display())
                        })?;
                    }
                    eprintln!("zt: manual pages written into {}", dir.display());
                }
                None => {
                    let mut out = Vec::new();
                    clap_mangen::Man::new(program.command())
                        .render(&mut out)
                        .context("cannot render the manual page")?;
                    std::io::stdout()
                        .write_all(&out)
                        .context("cannot write the manual page")?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Controller {
            action: Some(ControllerCommand::Export { home, store }),
            ..
        } => {
            let home = launcher::controller::resolve_home(home.as_deref())?;
            let text = launcher::controller::export(&home, store.as_deref())?;
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Controller {
            action: Some(ControllerCommand::Import { home, store, file }),
            ..
        } => {
            let home = launcher::controller::resolve_home(home.as_deref())?;
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let (networks, members) = launcher::controller::import(&home, store.as_deref(), &text)?;
            eprintln!("zt: imported {networks} network(s) with {members} member(s)");
            Ok(ExitCode::SUCCESS)
        }
        Command::Controller {
            home,
            listen,
            roots,
            api,
            reset,
            store,
            action: None,
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
                store,
            };
            rt.block_on(launcher::controller::run(opts, |address, api| {
                // Scripts (and the tests) wait for this line: the API is up.
                println!("{address} {api}");
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Net(cmd) => client_runtime()?
            .block_on(net(cmd))
            .map(|()| ExitCode::SUCCESS),
        Command::Member(cmd) => client_runtime()?
            .block_on(member(cmd))
            .map(|()| ExitCode::SUCCESS),
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
            Ok(ExitCode::SUCCESS)
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
            Ok(ExitCode::SUCCESS)
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
            })?;
            Ok(ExitCode::SUCCESS)
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

/// Rows under a header, each column as wide as its widest cell, two spaces apart (the
/// last column unpadded).
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
    }
    out
}

fn v6_modes(m: &api::V6AssignMode) -> String {
    let mut v6: Vec<&str> = Vec::new();
    if m.rfc4193 {
        v6.push("rfc4193");
    }
    if m.sixplane {
        v6.push("6plane");
    }
    if v6.is_empty() {
        "-".to_string()
    } else {
        v6.join(",")
    }
}

/// `--ipv6 MODES`: a comma-separated list of `rfc4193` and `6plane`, or `none`.
fn parse_v6(modes: &str) -> anyhow::Result<api::V6AssignMode> {
    let mut m = api::V6AssignMode {
        rfc4193: false,
        sixplane: false,
    };
    for word in modes.split(',').map(str::trim) {
        match word {
            "rfc4193" => m.rfc4193 = true,
            "6plane" => m.sixplane = true,
            "none" | "" => {}
            other => {
                anyhow::bail!("--ipv6 {other:?}: expected a list of rfc4193 and 6plane, or none")
            }
        }
    }
    Ok(m)
}

/// `--ipv4-pool CIDR` (`none`: no pool).
fn parse_pool(cidr: &str) -> anyhow::Result<Option<api::Ipv4Pool>> {
    if cidr == "none" {
        return Ok(None);
    }
    api::Ipv4Pool::from_cidr(cidr)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--ipv4-pool {e} (or none)"))
}

fn describe_network(n: &NetworkJson) -> String {
    format!(
        "{} {:<8} {:<16} ipv4 {:<32} ipv6 {:<15} mtu {} members {}/{} authorized",
        n.id,
        if n.private { "private" } else { "public" },
        if n.name.is_empty() { "-" } else { &n.name },
        n.ipv4_pool.map_or("-".to_string(), |p| p.to_string()),
        v6_modes(&n.v6_assign_mode),
        n.mtu,
        n.authorized_member_count,
        n.member_count,
    )
}

const NETWORK_HEADER: [&str; 7] = [
    "NETWORK",
    "NAME",
    "ACCESS",
    "IPV4 POOL",
    "IPV6",
    "MTU",
    "MEMBERS",
];

fn network_row(n: &NetworkJson) -> Vec<String> {
    vec![
        n.id.clone(),
        if n.name.is_empty() {
            "-".into()
        } else {
            n.name.clone()
        },
        if n.private { "private" } else { "public" }.into(),
        n.ipv4_pool.map_or("-".to_string(), |p| p.to_string()),
        v6_modes(&n.v6_assign_mode),
        n.mtu.to_string(),
        format!(
            "{} ({} authorized)",
            n.member_count, n.authorized_member_count
        ),
    ]
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// "12 s ago", "5 min ago", "3 h ago", "2 d ago", or "never".
fn ago(then_ms: Option<u64>, now_ms: u64) -> String {
    let Some(then) = then_ms else {
        return "never".into();
    };
    let s = now_ms.saturating_sub(then) / 1000;
    match s {
        0..120 => format!("{s} s ago"),
        120..7_200 => format!("{} min ago", s / 60),
        7_200..172_800 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

fn describe_member(m: &MemberJson) -> String {
    let ips: Vec<String> = m.ip_assignments.iter().map(|a| a.to_string()).collect();
    let seen = match m.last_request {
        Some(_) => format!("asked {}", ago(m.last_request, unix_ms_now())),
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

const MEMBER_HEADER: [&str; 6] = [
    "MEMBER",
    "AUTHORIZED",
    "ONLINE",
    "LAST SEEN",
    "NAME",
    "ADDRESSES",
];

fn member_row(m: &MemberJson, now_ms: u64) -> Vec<String> {
    let ips: Vec<String> = m.ip_assignments.iter().map(|a| a.to_string()).collect();
    vec![
        m.id.clone(),
        if m.authorized { "yes" } else { "no" }.into(),
        if m.online { "yes" } else { "no" }.into(),
        ago(m.last_request, now_ms),
        m.name.clone().unwrap_or_else(|| "-".into()),
        if ips.is_empty() {
            "-".into()
        } else {
            ips.join(" ")
        },
    ]
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn is_not_found(e: &api::ApiError) -> bool {
    matches!(e, api::ApiError::Status { status: 404, .. })
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
            let pool = ipv4_pool.as_deref().map(parse_pool).transpose()?;
            let v6 = ipv6.as_deref().map(parse_v6).transpose()?;
            let change = NetworkChange {
                name,
                private: Some(!public),
                mtu,
                ipv4_pool: pool,
                v6_assign_mode: v6,
                routes: None,
            };
            let c = client(&api)?;
            let n: NetworkJson = c.post("/controller/network", &change).await?;
            eprintln!("zt: created {}", describe_network(&n));
            println!("{}", n.id);
            Ok(())
        }
        NetCommand::List { api, json } => {
            let c = client(&api)?;
            let list: Vec<NetworkJson> = c.get("/controller/network").await?;
            if json {
                return print_json(&list);
            }
            if list.is_empty() {
                eprintln!(
                    "zt: the controller has no networks yet: create one with `zt net create`"
                );
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list.iter().map(network_row).collect();
            print!("{}", table(&NETWORK_HEADER, &rows));
            Ok(())
        }
        NetCommand::Set {
            api,
            nwid,
            private,
            public,
            ipv4_pool,
            ipv6,
            mtu,
            name,
        } => {
            let change = NetworkChange {
                name,
                private: match (private, public) {
                    (_, true) => Some(false),
                    (true, _) => Some(true),
                    _ => None,
                },
                mtu,
                ipv4_pool: ipv4_pool.as_deref().map(parse_pool).transpose()?,
                v6_assign_mode: ipv6.as_deref().map(parse_v6).transpose()?,
                routes: None,
            };
            if change == NetworkChange::default() {
                anyhow::bail!(
                    "nothing to change: give --name, --public or --private, --mtu, \
                     --ipv4-pool or --ipv6"
                );
            }
            let c = client(&api)?;
            let path = format!("/controller/network/{nwid}");
            // The API creates a network it does not find: a mistyped ID must not.
            if let Err(e) = c.get::<NetworkJson>(&path).await {
                if is_not_found(&e) {
                    anyhow::bail!(
                        "the controller has no network {nwid} (`zt net list` shows its \
                         networks; `zt net create` makes one)"
                    );
                }
                return Err(e.into());
            }
            let n: NetworkJson = c.post(&path, &change).await?;
            println!("changed {}", describe_network(&n));
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
    match cmd {
        MemberCommand::List { api, nwid, json } => {
            let c = client(&api)?;
            let list: Vec<MemberJson> =
                c.get(&format!("/controller/network/{nwid}/member")).await?;
            if json {
                return print_json(&list);
            }
            if list.is_empty() {
                eprintln!(
                    "zt: network {nwid} has no members yet: a node appears here once it asks to \
                     join (ztrun --nwid {nwid} ...)"
                );
                return Ok(());
            }
            let now = unix_ms_now();
            let rows: Vec<Vec<String>> = list.iter().map(|m| member_row(m, now)).collect();
            print!("{}", table(&MEMBER_HEADER, &rows));
            Ok(())
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
            Ok(())
        }
        MemberCommand::Authorize { api, nwid, node } => {
            let c = client(&api)?;
            let m: MemberJson = c
                .post(
                    &format!("/controller/network/{nwid}/member/{node}"),
                    &MemberChange {
                        authorized: Some(true),
                        ..MemberChange::default()
                    },
                )
                .await?;
            let note = if m.last_request.is_none() {
                " (it has not asked to join yet; it is admitted when it does)"
            } else {
                ""
            };
            println!("authorized {node} on {nwid}{note}: {}", describe_member(&m));
            Ok(())
        }
        MemberCommand::Deauthorize { api, nwid, node } => {
            let c = client(&api)?;
            let path = format!("/controller/network/{nwid}/member/{node}");
            // Deauthorizing an address the network never saw would record it: say so
            // instead (a typo, most likely).
            let before: MemberJson = match c.get(&path).await {
                Ok(m) => m,
                Err(e) if is_not_found(&e) => anyhow::bail!(
                    "{node} is not a member of network {nwid}: nothing to deauthorize (check \
                     the address; `zt member list {nwid}` shows the members)"
                ),
                Err(e) => return Err(e.into()),
            };
            let m: MemberJson = c
                .post(
                    &path,
                    &MemberChange {
                        authorized: Some(false),
                        ..MemberChange::default()
                    },
                )
                .await?;
            let what = if !before.authorized {
                "was not authorized: nothing to revoke"
            } else if before.last_request.is_none() {
                "deauthorized (it never asked to join, so it held no certificate)"
            } else {
                "deauthorized (its certificate is revoked; the members drop its traffic)"
            };
            println!("{node} on {nwid} {what}: {}", describe_member(&m));
            Ok(())
        }
        MemberCommand::Delete { api, nwid, node } => {
            let c = client(&api)?;
            let m: MemberJson = c
                .delete(&format!("/controller/network/{nwid}/member/{node}"))
                .await?;
            let revoked = if m.authorized && m.last_request.is_some() {
                " (deauthorized first: its certificate is revoked)"
            } else {
                ""
            };
            println!(
                "deleted member {node} of {nwid}{revoked}: {}",
                describe_member(&m)
            );
            Ok(())
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
