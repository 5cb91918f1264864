//! The command lines of `ztrun` (here, so that `zt completions` and `zt man` can describe
//! it too) and what both commands set up alike: logging and `--version`.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use clap::Parser;

/// Run a program so that its sockets live on an encrypted virtual network.
///
/// Every process and thread the program starts is on the network too. Without
/// `--nwid` the program reaches loopback only (and the host network with
/// `--fallthrough`).
#[derive(Debug, Parser)]
#[command(name = "ztrun", version = crate::VERSION)]
pub struct Ztrun {
    /// Network to join (16 hex digits); repeat to join several.
    #[arg(long = "nwid", value_name = "NWID")]
    pub nwids: Vec<String>,
    /// State directory for the node identity (default: $ZTRUN_HOME,
    /// $XDG_DATA_HOME/ztrun or ~/.local/share/ztrun).
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// A root to register with: `IP:PORT` (the default root identity) or
    /// `IDENTITY@IP:PORT`; repeat for several. Default: the embedded root on
    /// 127.0.0.1:9993, hosted by the first `ztrun` on this machine.
    #[arg(long = "root", value_name = "ROOT")]
    pub roots: Vec<crate::roots::RootArg>,
    /// Let connections to addresses outside the virtual networks use the host network.
    #[arg(long)]
    pub fallthrough: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
    /// Give the program a node of its own, with a new identity in a temporary home that
    /// goes with it, instead of the home's node shared by every ztrun of that home.
    #[arg(long, conflicts_with_all = ["home", "own_node"])]
    pub ephemeral: bool,
    /// Run the home's node inside this ztrun rather than in the background, for this
    /// program alone (the home must not be in use): for the single program of a
    /// container, or to measure the node with its program. ZTRUN_OWN_NODE=1 in the
    /// environment does the same (unless --ephemeral is given).
    #[arg(long)]
    pub own_node: bool,
    /// Serve the program's virtual listener on PORT on the host side of ztrun too
    /// (`[HOSTADDR:]PORT[/udp]`, default address 0.0.0.0, TCP; in a container, its
    /// interfaces, so that `docker run -p` reaches it); repeat for several. Implies
    /// --own-node.
    #[arg(long = "publish", value_name = "[HOSTADDR:]PORT[/udp]")]
    pub publish: Vec<crate::doors::PublishArg>,
    /// Serve a SOCKS5 proxy (RFC 1928, CONNECT) into the virtual networks on IP:PORT,
    /// e.g. 127.0.0.1:1080: members by address or `.zt` name. No program is needed
    /// then. Implies --own-node.
    #[arg(long, value_name = "IP:PORT")]
    pub socks5: Option<std::net::SocketAddr>,
    /// Serve an HTTP proxy on IP:PORT (loopback only) that tunnels CONNECT requests to
    /// members by address or `.zt` name (`https_proxy=http://IP:PORT`, `curl -p -x`).
    /// No program is needed then. Implies --own-node.
    #[arg(long, value_name = "IP:PORT")]
    pub http_proxy: Option<std::net::SocketAddr>,
    /// Username SOCKS5 clients must give, with the password in $ZTRUN_SOCKS5_PASSWORD;
    /// required when --socks5 is not on a loopback address.
    #[arg(long, value_name = "NAME", requires = "socks5")]
    pub socks5_user: Option<String>,
    /// Program to run, and its arguments.
    #[arg(
        last = true,
        required_unless_present_any = ["socks5", "http_proxy"],
        value_name = "PROGRAM"
    )]
    pub program: Vec<String>,
}

/// Logs to stderr at `default` level unless `RUST_LOG` says otherwise, in colour only
/// when stderr is a terminal (a log file gets no ANSI escape codes).
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
